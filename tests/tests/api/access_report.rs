//! The patient's access report through the API: every read of the record (through each
//! operation that returns the patient's data) and every write to it or to the patient's
//! appointments, invoices, lab orders and day schedules, with who, when, from where and
//! the request, grouped per UTC day; break-glass reads with their reason; nothing about
//! other patients; reading the report recorded, but not in itself; only the hospital
//! administrator may read it; bad windows, unknown patients and windows with too many
//! accesses refused. `hms-replay access-report` gives the same report and records
//! nothing.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use hms_app::commands;
use hms_app::usecases::access_report::CSV_HEADER;
use hms_domain::record_access::{RecordAccess, RecordAccessCommand};
use hms_domain::Role;
use hms_replay::{Outcome, ReplayError};
use hms_tests::fixtures::{
    admin_actor, event_count, hospital_with_staff, metadata, next_monday, register_patient, staff,
    Staff,
};
use hms_tests::{error_code, spawn_app, TestApp, ADMIN_PASSWORD};
use serde_json::{json, Value};
use uuid::Uuid;

const REPORT: &str = "query($p: UUID!, $from: DateTime, $to: DateTime) { \
    patientAccessReport(patientId: $p, from: $from, to: $to) { \
      patientId mrn patientName from to \
      days { date entries { at who { userId username fullName role department } \
        operation kind breakGlassReason clientAddr requestId } } } }";

/// Runs a GraphQL document with our own request id (so each access can be found in the
/// report) and returns the response, which must hold no error.
async fn call(
    app: &TestApp,
    token: &str,
    request_id: &str,
    query: &str,
    variables: Value,
) -> Value {
    let response: Value = app
        .http
        .post(format!("{}/graphql", app.address))
        .bearer_auth(token)
        .header("x-request-id", request_id)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("request is sent")
        .json()
        .await
        .expect("GraphQL answers JSON");
    assert!(response["errors"].is_null(), "{request_id}: {response}");
    response
}

async fn report(app: &TestApp, token: &str, patient: Uuid, window: Value) -> Value {
    let mut variables = json!({ "p": patient });
    if let (Some(vars), Some(window)) = (variables.as_object_mut(), window.as_object()) {
        vars.extend(window.clone());
    }
    app.graphql(REPORT, variables, Some(token)).await
}

/// Every entry of a report, in order.
fn entries(report: &Value) -> Vec<Value> {
    report["data"]["patientAccessReport"]["days"]
        .as_array()
        .unwrap_or_else(|| panic!("a report: {report}"))
        .iter()
        .flat_map(|d| d["entries"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The entries made by request `request_id`.
fn by_request<'a>(entries: &'a [Value], request_id: &str) -> Vec<&'a Value> {
    entries
        .iter()
        .filter(|e| e["requestId"] == request_id)
        .collect()
}

/// The one entry of request `request_id` for `operation`; asserts its kind and who.
fn assert_entry(entries: &[Value], request_id: &str, operation: &str, kind: &str, user: &str) {
    let found: Vec<&Value> = by_request(entries, request_id)
        .into_iter()
        .filter(|e| e["operation"] == operation)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {operation} by {request_id} in {entries:#?}"
    );
    let e = found[0];
    assert_eq!(e["kind"], kind, "{e}");
    assert_eq!(e["who"]["username"], user, "{e}");
    assert!(e["who"]["userId"].is_string(), "{e}");
    assert!(e["who"]["role"].is_string(), "{e}");
    assert_eq!(e["clientAddr"], "127.0.0.1", "{e}");
}

fn instant(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap_or_else(|| panic!("a time: {value}")))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// A hospital with the shared staff, a lab technician, a doctor in the Tropical Medicine
/// department, and a potassium test in the catalogue.
struct Ward {
    staff: Staff,
    tech: String,
    cardiologist: String,
}

async fn ward(app: &TestApp, code: &str) -> Ward {
    let team = hospital_with_staff(app, code).await;
    let lower = code.to_ascii_lowercase();
    let tech = staff(app, code, &format!("{lower}_lab"), Role::LabTechnician).await;
    let admin = &team.admin;
    let department = call(
        app,
        admin,
        "setup-dept",
        "mutation { addDepartment(name: \"Tropical Medicine\") { id } }",
        json!({}),
    )
    .await["data"]["addDepartment"]["id"]
        .clone();
    let cardiologist = format!("{lower}_cardio");
    call(
        app,
        admin,
        "setup-user",
        "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
        json!({ "i": { "username": cardiologist, "email": format!("{cardiologist}@hospital.example"),
                       "fullName": "Grace Wambui", "role": "DOCTOR", "departmentId": department,
                       "password": ADMIN_PASSWORD } }),
    )
    .await;
    call(
        app,
        admin,
        "setup-test",
        "mutation($input: DefineLabTestInput!) { defineLabTest(input: $input) { code } }",
        json!({ "input": { "test": {
            "code": "2823-3", "system": "LOINC", "name": "Potassium", "specimenType": "SERUM",
            "resultKind": "NUMERIC", "unit": "mmol/L", "priceMinor": 50_000, "currency": "KES",
            "referenceRanges": [{ "low": "3.5", "high": "5.1", "criticalLow": "2.5", "criticalHigh": "6.5" }]
        } } }),
    )
    .await;
    let cardiologist = app.login(Some(code), &cardiologist, ADMIN_PASSWORD).await;
    Ward {
        staff: team,
        tech,
        cardiologist,
    }
}

/// Records a read of `patient` at `at` through the command path, as the access log
/// would hold a read made then (the break-glass path records its reads the same way,
/// with a purpose `break-glass:<REASON>:<purpose>`).
async fn record_read_at(
    app: &TestApp,
    code: &str,
    patient: Uuid,
    purpose: &str,
    at: DateTime<Utc>,
) {
    let lease = app.state.registry.get(code).await.expect("tenant");
    let mut metadata = metadata(code, admin_actor(code));
    metadata.request_id = "bg-1".into();
    metadata.client_addr = Some("198.51.100.9".into());
    metadata.at = at;
    let command = RecordAccessCommand::RecordPatientView {
        actor: admin_actor(code),
        patient_id: patient,
        purpose: purpose.to_owned(),
        now: at,
    };
    commands::execute::<RecordAccess>(
        &lease.pool,
        &app.state.runner,
        &Uuid::new_v4().to_string(),
        command,
        (),
        &metadata,
    )
    .await
    .expect("view recorded");
}

async fn drain(app: &TestApp, code: &str) {
    let lease = app.state.registry.get(code).await.expect("tenant");
    crate::projections::drain(&lease.pool, &app.state.runner).await;
}

#[tokio::test]
async fn every_access_to_the_record_is_in_the_report_with_its_operation_and_kind() {
    let app = spawn_app().await;
    let code = "ACR001";
    let w = ward(&app, code).await;
    let s = &w.staff;
    let lower = code.to_ascii_lowercase();
    let (desk, doctor, nurse, books, admin) = (
        s.receptionist.as_str(),
        s.doctor.as_str(),
        s.nurse.as_str(),
        s.accountant.as_str(),
        s.admin.as_str(),
    );

    // Writes: registration, a booking, an invoice, a lab order through to a (critical)
    // result.
    let register = "mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id mrn } }";
    let registered = call(
        &app,
        desk,
        "w-register",
        register,
        json!({ "i": { "givenName": "Akinyi", "familyName": "Achieng", "dateOfBirth": "1984-02-03", "sex": "FEMALE" } }),
    )
    .await;
    let patient: Uuid = registered["data"]["registerPatient"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("patient id");
    let mrn = registered["data"]["registerPatient"]["mrn"].clone();
    let other: Uuid = call(
        &app,
        desk,
        "w-register-other",
        register,
        json!({ "i": { "givenName": "Baraka", "familyName": "Barasa", "dateOfBirth": "1979-05-06", "sex": "MALE" } }),
    )
    .await["data"]["registerPatient"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("other id");
    let day = next_monday();
    let appointment = call(
        &app,
        desk,
        "w-book",
        "mutation($i: ScheduleAppointmentInput!) { scheduleAppointment(input: $i) { id } }",
        json!({ "i": { "patientId": patient, "doctorId": s.doctor_id, "start": format!("{day}T09:00:00Z"),
                       "durationMinutes": 30, "reason": "Palpitations" } }),
    )
    .await["data"]["scheduleAppointment"]["id"]
        .clone();
    let invoice = call(
        &app,
        books,
        "w-invoice",
        "mutation($i: CreateInvoiceInput!) { createInvoice(input: $i) { id } }",
        json!({ "i": { "patientId": patient, "currency": "KES" } }),
    )
    .await["data"]["createInvoice"]["id"]
        .clone();
    let order = call(
        &app,
        doctor,
        "w-order",
        "mutation($i: OrderLabTestsInput!) { orderLabTests(input: $i) { id results { itemId } } }",
        json!({ "i": { "patientId": patient, "tests": ["2823-3"], "priority": "STAT" } }),
    )
    .await["data"]["orderLabTests"]
        .clone();
    let order_id = order["id"].clone();
    let specimen = call(
        &app,
        nurse,
        "w-collect",
        "mutation($i: CollectSpecimenInput!) { collectSpecimen(input: $i) { specimens { id } } }",
        json!({ "i": { "orderId": order_id, "specimenType": "SERUM", "label": "ACR-0001" } }),
    )
    .await["data"]["collectSpecimen"]["specimens"][0]["id"]
        .clone();
    call(
        &app,
        &w.tech,
        "w-receive",
        "mutation($i: ReceiveSpecimenInput!) { receiveSpecimen(input: $i) { id } }",
        json!({ "i": { "orderId": order_id, "specimenId": specimen } }),
    )
    .await;
    call(
        &app,
        &w.tech,
        "w-result",
        "mutation($i: EnterLabResultInput!) { enterLabResult(input: $i) { id } }",
        json!({ "i": { "orderId": order_id, "itemId": order["results"][0]["itemId"],
                       "value": { "numeric": "6.9", "unit": "mmol/L" } } }),
    )
    .await;

    // Reads through every operation that returns the patient's data.
    let id = json!({ "id": patient });
    let p = json!({ "p": patient });
    let reads: Vec<(&str, &str, &str, Value)> = vec![
        ("r-patient", w.cardiologist.as_str(), "query($id: UUID!) { patient(id: $id) { id familyName } }", id.clone()),
        ("r-search", doctor, "{ patients(search: \"achieng\") { nodes { id mrn familyName } } }", json!({})),
        ("r-as-of", admin, "query($id: UUID!, $at: DateTime!) { patientAsOf(id: $id, at: $at) { version } }",
            json!({ "id": patient, "at": Utc::now() })),
        ("r-history", admin, "query($id: UUID!) { patient(id: $id) { history { nodes { eventType } } } }", id.clone()),
        ("r-appointments", doctor, "query($p: UUID!) { appointments(filter: { patientId: $p }) { nodes { id patientId } } }", p.clone()),
        ("r-appointment", doctor, "query($id: UUID!) { appointment(id: $id) { id patientId reason } }",
            json!({ "id": appointment })),
        ("r-day", doctor, "query($d: UUID!, $day: NaiveDate!) { doctorSchedule(doctorId: $d, day: $day) { appointments { id patientId } } }",
            json!({ "d": s.doctor_id, "day": day })),
        ("r-invoices", books, "query($p: UUID!) { invoices(filter: { patientId: $p }) { nodes { id patientId } } }", p.clone()),
        ("r-invoice", books, "query($id: UUID!) { invoice(id: $id) { id patientId } }", json!({ "id": invoice })),
        ("r-lab-orders", w.tech.as_str(), "query($p: UUID!) { labOrders(filter: { patientId: $p }) { nodes { id patientId } } }", p.clone()),
        ("r-lab-order", doctor, "query($id: UUID!) { labOrder(id: $id) { id patientId } }", json!({ "id": order_id })),
        ("r-lab-results", doctor, "query($p: UUID!) { patientLabResults(patientId: $p) { nodes { code } } }", p.clone()),
        ("r-critical", doctor, "{ criticalLabResults { nodes { code patientId } } }", json!({})),
        ("r-trail", admin, "query($id: String!) { auditTrail(filter: { aggregateType: \"patient\", aggregateId: $id }) { nodes { eventType } } }",
            json!({ "id": patient.to_string() })),
        ("r-other", doctor, "query($id: UUID!) { patient(id: $id) { id } }", json!({ "id": other })),
    ];
    for (request_id, token, query, variables) in reads {
        call(&app, token, request_id, query, variables).await;
    }
    // A break-glass read two days ago, as the break-glass path records it.
    let two_days_ago = Utc::now() - Duration::days(2);
    record_read_at(
        &app,
        code,
        patient,
        "break-glass:EMERGENCY_TREATMENT:patient",
        two_days_ago,
    )
    .await;
    drain(&app, code).await;

    let first = call(&app, admin, "r-report-1", REPORT, json!({ "p": patient })).await;
    let report = &first["data"]["patientAccessReport"];
    assert_eq!(report["patientId"], patient.to_string());
    assert_eq!(report["mrn"], mrn);
    assert_eq!(report["patientName"], "Akinyi Achieng");
    assert_eq!(
        instant(&report["to"]) - instant(&report["from"]),
        Duration::days(366)
    );
    let all = entries(&first);

    // Reads, each with the purpose its operation records.
    let desk_user = format!("{lower}_desk");
    let doctor_user = format!("{lower}_doc");
    let admin_user = format!("{lower}_admin");
    let books_user = format!("{lower}_books");
    let tech_user = format!("{lower}_lab");
    let cardio_user = format!("{lower}_cardio");
    for (request_id, operation, user) in [
        ("r-patient", "patient", &cardio_user),
        ("r-search", "patients:summary", &doctor_user),
        ("r-as-of", "patientAsOf", &admin_user),
        ("r-history", "patient", &admin_user),
        ("r-history", "history", &admin_user),
        ("r-appointments", "appointments", &doctor_user),
        ("r-appointment", "appointments", &doctor_user),
        ("r-day", "appointments", &doctor_user),
        ("r-invoices", "invoices", &books_user),
        ("r-invoice", "invoice", &books_user),
        ("r-lab-orders", "lab worklist", &tech_user),
        ("r-lab-order", "lab order", &doctor_user),
        ("r-lab-results", "lab results", &doctor_user),
        ("r-critical", "critical lab results", &doctor_user),
        ("r-trail", "auditTrail", &admin_user),
    ] {
        assert_entry(&all, request_id, operation, "READ", user);
    }
    let read = by_request(&all, "r-patient")[0];
    assert_eq!(read["who"]["fullName"], "Grace Wambui", "{read}");
    assert_eq!(read["who"]["role"], "DOCTOR", "{read}");
    assert_eq!(read["who"]["department"], "Tropical Medicine", "{read}");

    // Writes, each as its event, with the actor's name and role.
    for (request_id, operation, user) in [
        ("w-register", "PatientRegistered", &desk_user),
        ("w-book", "AppointmentScheduled", &desk_user),
        // The patient's day schedule; the doctor's names no patient.
        ("w-book", "SlotReserved", &desk_user),
        ("w-invoice", "InvoiceDrafted", &books_user),
        ("w-order", "LabOrderPlaced", &doctor_user),
        ("w-collect", "SpecimenCollected", &format!("{lower}_nurse")),
        ("w-receive", "SpecimenReceived", &tech_user),
        ("w-result", "ResultEntered", &tech_user),
    ] {
        assert_entry(&all, request_id, operation, "WRITE", user);
    }
    let registration = by_request(&all, "w-register")[0];
    assert_eq!(
        registration["who"]["fullName"],
        format!("Dr {desk_user}"),
        "{registration}"
    );
    assert_eq!(registration["who"]["role"], "RECEPTIONIST");
    assert_eq!(registration["who"]["department"], Value::Null);
    // The specimen label's claim and the views themselves are not writes to the record.
    assert_eq!(by_request(&all, "w-collect").len(), 1, "{all:#?}");
    assert!(
        all.iter()
            .all(|e| e["kind"] != "WRITE"
                || !e["operation"].as_str().unwrap_or("").contains("Viewed")),
        "{all:#?}"
    );

    // The break-glass read: its reason, its operation, on its own day.
    let glass = by_request(&all, "bg-1");
    assert_eq!(glass.len(), 1, "{all:#?}");
    assert_eq!(glass[0]["kind"], "BREAK_GLASS");
    assert_eq!(glass[0]["breakGlassReason"], "EMERGENCY_TREATMENT");
    assert_eq!(glass[0]["operation"], "patient");
    assert_eq!(glass[0]["clientAddr"], "198.51.100.9");
    assert!(all
        .iter()
        .filter(|e| e["kind"] != "BREAK_GLASS")
        .all(|e| e["breakGlassReason"].is_null()));

    // Grouped per UTC day, days and entries in time order.
    let days = report["days"].as_array().expect("days");
    assert!(days.len() >= 2, "{report}");
    assert_eq!(
        days[0]["date"],
        two_days_ago.date_naive().to_string(),
        "{report}"
    );
    assert_eq!(days[0]["entries"].as_array().map(Vec::len), Some(1));
    let mut last = instant(&report["from"]);
    for day in days {
        let date: NaiveDate = day["date"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .expect("date");
        for entry in day["entries"].as_array().expect("entries") {
            let at = instant(&entry["at"]);
            assert_eq!(at.date_naive(), date, "{entry}");
            assert!(at >= last, "{entry} after {last}");
            last = at;
        }
    }
    assert!(last < instant(&report["to"]));

    // Nothing about the other patient; the report does not list its own reading.
    assert!(by_request(&all, "r-other").is_empty(), "{all:#?}");
    assert!(by_request(&all, "w-register-other").is_empty(), "{all:#?}");
    assert!(by_request(&all, "r-report-1").is_empty(), "{all:#?}");

    // Reading it is recorded, and the next report shows it.
    drain(&app, code).await;
    let second = call(&app, admin, "r-report-2", REPORT, json!({ "p": patient })).await;
    assert_entry(
        &entries(&second),
        "r-report-1",
        "access report",
        "READ",
        &admin_user,
    );

    // The window: [from, to).
    let recent = report_ok(
        &app,
        admin,
        patient,
        json!({ "from": Utc::now() - Duration::days(1) }),
    )
    .await;
    assert!(by_request(&recent, "bg-1").is_empty());
    assert!(!by_request(&recent, "w-register").is_empty());
    let old = report_ok(
        &app,
        admin,
        patient,
        json!({ "to": Utc::now() - Duration::days(1) }),
    )
    .await;
    assert_eq!(
        old.iter()
            .map(|e| e["requestId"].clone())
            .collect::<Vec<_>>(),
        [json!("bg-1")]
    );
}

async fn report_ok(app: &TestApp, token: &str, patient: Uuid, window: Value) -> Vec<Value> {
    let response = report(app, token, patient, window).await;
    assert!(response["errors"].is_null(), "{response}");
    entries(&response)
}

#[tokio::test]
async fn only_the_administrator_reads_it_and_bad_requests_are_refused() {
    let app = spawn_app().await;
    let staff = hospital_with_staff(&app, "ACR002").await;
    let patient = register_patient(&app, "ACR002", "Njeri").await;
    let foreign_admin = app.setup_hospital("ACR003").await;
    let foreign_admin = app
        .login(Some("ACR003"), &foreign_admin, ADMIN_PASSWORD)
        .await;
    let before = event_count(&app, "ACR002").await;

    for token in [
        &staff.doctor,
        &staff.nurse,
        &staff.receptionist,
        &staff.accountant,
    ] {
        let refused = report(&app, token, patient, json!({})).await;
        assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{refused}");
        assert!(refused["data"].is_null(), "{refused}");
    }
    let unknown = report(&app, &staff.admin, Uuid::new_v4(), json!({})).await;
    assert_eq!(error_code(&unknown), Some("NOT_FOUND"), "{unknown}");
    let foreign = report(&app, &foreign_admin, patient, json!({})).await;
    assert_eq!(error_code(&foreign), Some("NOT_FOUND"), "{foreign}");

    let now = Utc::now();
    for (window, field) in [
        (json!({ "from": now, "to": now }), "to"),
        (
            json!({ "from": now, "to": now - Duration::seconds(1) }),
            "to",
        ),
        (json!({ "from": now + Duration::days(1) }), "to"),
        (
            json!({ "from": now - Duration::days(400), "to": now }),
            "from",
        ),
        (json!({ "from": now - Duration::days(367) }), "from"),
        (json!({ "to": "1200-01-01T00:00:00Z" }), "to"),
    ] {
        let refused = report(&app, &staff.admin, patient, window.clone()).await;
        assert_eq!(
            error_code(&refused),
            Some("VALIDATION"),
            "{window}: {refused}"
        );
        assert_eq!(
            refused["errors"][0]["extensions"]["field"], field,
            "{window}: {refused}"
        );
    }
    // Nothing refused was recorded as a read.
    assert_eq!(event_count(&app, "ACR002").await, before);

    let ok = report(
        &app,
        &staff.admin,
        patient,
        json!({ "from": now - Duration::days(366), "to": now }),
    )
    .await;
    assert!(ok["errors"].is_null(), "{ok}");
    assert_eq!(
        event_count(&app, "ACR002").await,
        before + 1,
        "the reading is recorded"
    );
}

#[tokio::test]
async fn a_window_with_too_many_accesses_is_refused_not_cut_short() {
    let app = spawn_app().await;
    let staff = hospital_with_staff(&app, "ACR004").await;
    let patient = register_patient(&app, "ACR004", "Mutua").await;
    // 10,001 reads ten days ago, straight into the access log (the read model).
    let owner = crate::projections::owner_pool(&app, "ACR004").await;
    sqlx::query(
        "INSERT INTO patient_access_log (id, patient_id, viewer_id, viewer_username, viewer_role, \
             purpose, client_addr, request_id, viewed_at) \
         SELECT gen_random_uuid(), $1, $2, 'acr004_admin', 'HOSPITAL_ADMIN', 'patient', NULL, \
                'bulk-' || n, now() - interval '10 days' + n * interval '1 millisecond' \
           FROM generate_series(1, 10001) AS n",
    )
    .bind(patient)
    .bind(Uuid::new_v4())
    .execute(&owner)
    .await
    .expect("bulk reads");
    owner.close().await;

    let refused = report(&app, &staff.admin, patient, json!({})).await;
    assert_eq!(error_code(&refused), Some("VALIDATION"), "{refused}");
    assert_eq!(refused["errors"][0]["extensions"]["field"], "from");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("narrower")),
        "{refused}"
    );
    let narrower = report_ok(
        &app,
        &staff.admin,
        patient,
        json!({ "from": Utc::now() - Duration::days(1) }),
    )
    .await;
    assert!(narrower.iter().all(|e| e["requestId"] != "bulk-1"));
    assert!(
        narrower
            .iter()
            .any(|e| e["operation"] == "PatientRegistered"),
        "{narrower:#?}"
    );
}

/// An entry as both forms can be compared: the instant, then the text of every field.
fn comparable(at: &Value, fields: [&Value; 9]) -> (DateTime<Utc>, Vec<String>) {
    (instant(at), fields.iter().map(|v| v.to_string()).collect())
}

#[tokio::test]
async fn the_operators_tool_gives_the_same_report_and_records_nothing() {
    let app = spawn_app().await;
    let code = "ACR005";
    let staff = hospital_with_staff(&app, code).await;
    let patient = register_patient(&app, code, "Chebet").await;
    call(
        &app,
        &staff.doctor,
        "r-tool",
        "query($id: UUID!) { patient(id: $id) { id } }",
        json!({ "id": patient }),
    )
    .await;
    record_read_at(
        &app,
        code,
        patient,
        "break-glass:URGENT_CONSULTATION:lab results",
        Utc::now() - Duration::days(3),
    )
    .await;
    drain(&app, code).await;
    let window = json!({ "from": Utc::now() - Duration::days(30), "to": Utc::now() });
    let api = report_ok(&app, &staff.admin, patient, window.clone()).await;
    let api: Vec<_> = api
        .iter()
        .map(|e| {
            let w = &e["who"];
            comparable(
                &e["at"],
                [
                    &w["userId"],
                    &w["username"],
                    &w["fullName"],
                    &w["role"],
                    &w["department"],
                    &e["operation"],
                    &e["kind"],
                    &e["breakGlassReason"],
                    &e["requestId"],
                ],
            )
        })
        .collect();
    assert_eq!(api.len(), 3, "{api:?}");

    let before = event_count(&app, code).await;
    let (from, to) = (
        window["from"].as_str().expect("from"),
        window["to"].as_str().expect("to"),
    );
    let patient_arg = patient.to_string();
    let args = |format: &'static str| {
        vec![
            "access-report",
            "--hospital",
            code,
            "--patient",
            patient_arg.as_str(),
            "--from",
            from,
            "--to",
            to,
            "--format",
            format,
        ]
    };
    let json_out = crate::replay::replay_ok(&app, &args("json")).await;
    let document: Value = serde_json::from_str(&json_out).expect("JSON");
    assert_eq!(document["hospital"], code);
    assert_eq!(document["patient_id"], patient.to_string());
    let tool: Vec<_> = document["days"]
        .as_array()
        .expect("days")
        .iter()
        .flat_map(|d| d["entries"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            let w = &e["who"];
            comparable(
                &e["at"],
                [
                    &w["user_id"],
                    &w["username"],
                    &w["full_name"],
                    &w["role"],
                    &w["department"],
                    &e["operation"],
                    &e["kind"],
                    &e["break_glass_reason"],
                    &e["request_id"],
                ],
            )
        })
        .collect();
    assert_eq!(tool, api);

    // CSV: the header, then a row per entry, each starting with its day.
    let csv = crate::replay::replay_ok(&app, &args("csv")).await;
    let rows: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(rows[0], CSV_HEADER);
    assert_eq!(rows.len(), api.len() + 1, "{csv}");
    for (row, (at, _)) in rows[1..].iter().zip(&api) {
        assert!(row.starts_with(&format!("{},", at.date_naive())), "{row}");
    }
    assert!(
        rows[1].contains(",lab results,BREAK_GLASS,URGENT_CONSULTATION,"),
        "{csv}"
    );
    // To a file, complete under its final name only.
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("report.csv");
    let file_arg = file.to_string_lossy().into_owned();
    let mut to_file = args("csv");
    to_file.extend_from_slice(&["--output", file_arg.as_str()]);
    assert_eq!(crate::replay::replay_ok(&app, &to_file).await, "");
    assert_eq!(
        std::fs::read_to_string(&file).expect("the report file"),
        csv
    );
    assert!(!dir.path().join("report.csv.partial").exists());

    // The operator's reading is not recorded.
    assert_eq!(event_count(&app, code).await, before);

    let unknown = Uuid::new_v4().to_string();
    let (result, _) = crate::replay::replay(
        &app,
        &[
            "access-report",
            "--hospital",
            code,
            "--patient",
            unknown.as_str(),
        ],
    )
    .await;
    assert!(
        matches!(result, Err(ReplayError::NotFound(_))),
        "{result:?}"
    );
    let (result, _) = crate::replay::replay(
        &app,
        &[
            "access-report",
            "--hospital",
            code,
            "--patient",
            patient_arg.as_str(),
            "--from",
            to,
            "--to",
            from,
        ],
    )
    .await;
    match result {
        Err(e @ ReplayError::InvalidArgument { .. }) => {
            assert!(e.to_string().starts_with("--to: "), "{e}");
        }
        other => panic!("expected an invalid argument: {other:?}"),
    }
    let (result, _) = crate::replay::replay(
        &app,
        &[
            "access-report",
            "--hospital",
            code,
            "--patient",
            patient_arg.as_str(),
            "--from",
            "2000-01-01",
        ],
    )
    .await;
    assert!(
        matches!(result, Err(ReplayError::InvalidArgument { ref flag, .. }) if flag == "from"),
        "{result:?}"
    );
    assert!(!matches!(result, Ok(Outcome::Clean)));
}
