//! Minimum necessary (issue 11, items 6–8): what each role reads of a patient, the access
//! log of lists, and what one request and one user may cost.

use hms_domain::disclosure::Disclosure;
use hms_domain::Role;
use hms_tests::fixtures::{hospital_with_staff, next_monday, register, staff, Staff};
use hms_tests::{error_code, spawn_app_with, TestApp, TestConfig};
use serde_json::{json, Value};

/// The fields of a patient each kind of information covers.
const PATIENT_FIELDS: &[(&str, Disclosure)] = &[
    ("phone", Disclosure::Contact),
    ("email", Disclosure::Contact),
    ("address", Disclosure::Contact),
    ("emergencyContact", Disclosure::Contact),
    ("bloodType", Disclosure::Clinical),
    ("allergies", Disclosure::Clinical),
    ("alerts", Disclosure::Clinical),
];

const APPOINTMENT_FIELDS: &[(&str, Disclosure)] = &[
    ("patientId", Disclosure::Identity),
    ("reason", Disclosure::VisitReason),
    ("notes", Disclosure::ConsultationNotes),
];

/// The selection of `field` (objects need subfields).
fn select(field: &str) -> String {
    match field {
        "address" => "address { city }".to_owned(),
        "emergencyContact" => "emergencyContact { name }".to_owned(),
        "allergies" => "allergies { substance }".to_owned(),
        "alerts" => "alerts { text }".to_owned(),
        other => other.to_owned(),
    }
}

/// The paths (under the root field) that came back FORBIDDEN, with what was withheld,
/// in path order.
fn withheld(response: &Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = response["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            assert_eq!(e["extensions"]["code"], "FORBIDDEN", "{response}");
            let path: Vec<String> = e["path"]
                .as_array()
                .expect("a field error has a path")
                .iter()
                .skip(1)
                .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
                .collect();
            (
                path.join("."),
                e["extensions"]["withheld"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

/// Checks the record at `root` in `response` field by field against the rules for
/// `role`: the fields it may read carry data, the others are null with FORBIDDEN naming
/// what was withheld, and nothing else is refused. Returns how many fields it checked.
fn assert_disclosed(
    response: &Value,
    root: &str,
    fields: &[(&str, Disclosure)],
    role: Role,
) -> usize {
    let mut expected = Vec::new();
    for (field, kind) in fields {
        let value = &response["data"][root][field];
        if kind.allows(role) {
            assert!(!value.is_null(), "{role} reads {field}: {response}");
        } else {
            // Present, as null: the field answered, with its reason in `errors`.
            let record = response["data"][root].as_object();
            assert!(
                record.is_some_and(|r| r.contains_key(*field) && value.is_null()),
                "{role} must not read {field}, which answers null: {response}"
            );
            expected.push((field.to_string(), format!("{kind:?}")));
        }
    }
    expected.sort();
    assert_eq!(withheld(response), expected, "{role}: {response}");
    fields.len()
}

/// Record-access events appended to hospital `code` so far, as (purpose, patient ids).
async fn access_events(app: &TestApp, code: &str) -> Vec<(String, Vec<String>)> {
    let mut db = app.connect(&app.database_for(code)).await;
    let rows: Vec<Value> = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_type = 'record_access' \
          ORDER BY transaction_id, position",
    )
    .fetch_all(&mut db)
    .await
    .expect("access events");
    rows.iter()
        .map(|p| {
            let (_, body) = p.as_object().and_then(|o| o.iter().next()).expect("event");
            let ids = match body.get("patient_ids") {
                Some(ids) => ids
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|i| i.as_str().expect("id").to_owned())
                    .collect(),
                None => vec![body["patient_id"].as_str().expect("id").to_owned()],
            };
            (body["purpose"].as_str().expect("purpose").to_owned(), ids)
        })
        .collect()
}

/// A patient with every field filled, and a completed appointment with notes.
async fn patient_with_a_visit(app: &TestApp, staff: &Staff) -> (String, String) {
    let registered = register(
        app,
        &staff.receptionist,
        json!({
            "givenName": "Amani", "familyName": "Wekesa", "dateOfBirth": "1979-02-03", "sex": "MALE",
            "phone": "+254 722 000 111", "email": "amani@example.com",
            "address": { "line1": "4 Tom Mboya St", "city": "Nairobi", "country": "KE" },
            "emergencyContact": { "name": "Zawadi", "relationship": "Wife", "phone": "+254722000222" },
            "bloodType": "B_NEGATIVE",
            "allergies": [{ "substance": "Latex", "severity": "MODERATE" }]
        }),
    )
    .await;
    let patient = registered["data"]["registerPatient"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{registered}"))
        .to_owned();
    let alert = app
        .graphql(
            "mutation($i: AddPatientAlertInput!) { addPatientAlert(input: $i) { id } }",
            json!({ "i": { "patientId": patient, "text": "DNR" } }),
            Some(&staff.doctor),
        )
        .await;
    assert!(alert["errors"].is_null(), "{alert}");
    let booked = app
        .graphql(
            "mutation($i: ScheduleAppointmentInput!) { scheduleAppointment(input: $i) { id } }",
            json!({ "i": { "patientId": patient, "doctorId": staff.doctor_id,
                           "start": format!("{}T10:00:00Z", next_monday()), "reason": "Chest pain" } }),
            Some(&staff.receptionist),
        )
        .await;
    let appointment = booked["data"]["scheduleAppointment"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{booked}"))
        .to_owned();
    for (mutation, input, token) in [
        (
            "checkInAppointment",
            "AppointmentActionInput",
            &staff.receptionist,
        ),
        ("startAppointment", "AppointmentActionInput", &staff.doctor),
    ] {
        let done = app
            .graphql(
                &format!("mutation($i: {input}!) {{ {mutation}(input: $i) {{ id }} }}"),
                json!({ "i": { "appointmentId": appointment } }),
                Some(token),
            )
            .await;
        assert!(done["errors"].is_null(), "{mutation}: {done}");
    }
    let completed = app
        .graphql(
            "mutation($i: CompleteAppointmentInput!) { completeAppointment(input: $i) { id } }",
            json!({ "i": { "appointmentId": appointment, "notes": "Suspected angina; ECG ordered." } }),
            Some(&staff.doctor),
        )
        .await;
    assert!(completed["errors"].is_null(), "{completed}");
    (patient, appointment)
}

#[tokio::test]
async fn each_role_reads_exactly_the_patient_information_the_disclosure_rules_allow() {
    let app = spawn_app_with(TestConfig::default()).await;
    let staff = hospital_with_staff(&app, "PRV001").await;
    let (patient, appointment) = patient_with_a_visit(&app, &staff).await;
    let mut tokens: Vec<(Role, String)> = vec![
        (Role::HospitalAdmin, staff.admin.clone()),
        (Role::Doctor, staff.doctor.clone()),
        (Role::Nurse, staff.nurse.clone()),
        (Role::Receptionist, staff.receptionist.clone()),
        (Role::Accountant, staff.accountant.clone()),
    ];
    for (name, role) in [
        ("prv001_lab", Role::LabTechnician),
        ("prv001_pharm", Role::Pharmacist),
        ("prv001_rad", Role::Radiologist),
        ("prv001_porter", Role::Staff),
    ] {
        tokens.push((role, staff_token(&app, name, role).await));
    }

    let patient_query = format!(
        "query($id: UUID!) {{ patient(id: $id) {{ familyName {} }} }}",
        PATIENT_FIELDS
            .iter()
            .map(|(f, _)| select(f))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let appointment_query = format!(
        "query($id: UUID!) {{ appointment(id: $id) {{ start status {} }} }}",
        APPOINTMENT_FIELDS
            .iter()
            .map(|(f, _)| *f)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut checked = 0;
    for (role, token) in &tokens {
        // The record: the fields the rules give this role come back with data, the others
        // null with FORBIDDEN naming what was withheld.
        let read = app
            .graphql(&patient_query, json!({ "id": patient }), Some(token))
            .await;
        if hms_domain::permissions::allows(*role, hms_domain::permissions::Operation::ViewPatient) {
            assert_eq!(
                read["data"]["patient"]["familyName"], "Wekesa",
                "{role}: {read}"
            );
            checked += assert_disclosed(&read, "patient", PATIENT_FIELDS, *role);
        } else {
            assert_eq!(error_code(&read), Some("FORBIDDEN"), "{role}: {read}");
            assert!(read["data"].is_null(), "{role}: {read}");
        }

        // The appointment: which patient, why, and what the doctor wrote.
        let read = app
            .graphql(
                &appointment_query,
                json!({ "id": appointment }),
                Some(token),
            )
            .await;
        if hms_domain::permissions::allows(
            *role,
            hms_domain::permissions::Operation::ViewAppointments,
        ) {
            assert_eq!(
                read["data"]["appointment"]["status"], "COMPLETED",
                "{role}: {read}"
            );
            checked += assert_disclosed(&read, "appointment", APPOINTMENT_FIELDS, *role);
        } else {
            assert_eq!(error_code(&read), Some("FORBIDDEN"), "{role}: {read}");
        }
    }
    // Roles × fields that reached a field check: 8 roles read patients (7 fields), 6
    // read appointments (3 fields).
    assert_eq!(checked, 8 * 7 + 6 * 3);

    // The rules cover lists too: the porter (STAFF) sees the day's schedule but not
    // whose it is; the accountant sees whose, but not why.
    let list = "{ appointments(first: 10) { nodes { start patientId reason } } }";
    let porter = &tokens.last().expect("porter").1;
    let read = app.graphql(list, json!({}), Some(porter)).await;
    assert!(
        read["data"]["appointments"]["nodes"][0]["start"].is_string(),
        "{read}"
    );
    assert_eq!(
        withheld(&read),
        [
            ("nodes.0.patientId".to_owned(), "Identity".to_owned()),
            ("nodes.0.reason".to_owned(), "VisitReason".to_owned())
        ],
        "{read}"
    );
    let read = app.graphql(list, json!({}), Some(&staff.accountant)).await;
    assert_eq!(
        read["data"]["appointments"]["nodes"][0]["patientId"],
        patient.as_str()
    );
    assert_eq!(
        withheld(&read),
        [("nodes.0.reason".to_owned(), "VisitReason".to_owned())],
        "{read}"
    );

    // A pharmacist may record an allergy but not resolve a DNR alert: that is the care
    // team's call.
    let pharmacist = &tokens
        .iter()
        .find(|(r, _)| *r == Role::Pharmacist)
        .expect("pharmacist")
        .1;
    let allergy = app
        .graphql(
            "mutation($i: RecordAllergyInput!) { recordAllergy(input: $i) { id } }",
            json!({ "i": { "patientId": patient, "allergy": { "substance": "Aspirin", "severity": "MILD" } } }),
            Some(pharmacist),
        )
        .await;
    assert!(allergy["errors"].is_null(), "{allergy}");
    let alerts = app
        .graphql(
            "query($id: UUID!) { patient(id: $id) { alerts { id } } }",
            json!({ "id": patient }),
            Some(pharmacist),
        )
        .await;
    let alert_id = alerts["data"]["patient"]["alerts"][0]["id"].clone();
    let resolve = app
        .graphql(
            "mutation($i: ResolvePatientAlertInput!) { resolvePatientAlert(input: $i) { id } }",
            json!({ "i": { "patientId": patient, "alertId": alert_id } }),
            Some(pharmacist),
        )
        .await;
    assert_eq!(error_code(&resolve), Some("FORBIDDEN"), "{resolve}");
}

async fn staff_token(app: &TestApp, username: &str, role: Role) -> String {
    staff(app, "PRV001", username, role).await
}

#[tokio::test]
async fn a_response_that_shows_patients_is_one_access_log_append_naming_each() {
    let app = spawn_app_with(TestConfig::default()).await;
    let staff = hospital_with_staff(&app, "PRV002").await;
    let (patient, _) = patient_with_a_visit(&app, &staff).await;
    let mut registered = vec![patient.clone()];
    for i in 0..4 {
        let response = register(
            &app,
            &staff.receptionist,
            json!({ "familyName": format!("Listed{i}"), "dateOfBirth": "1990-01-01", "sex": "FEMALE" }),
        )
        .await;
        registered.push(
            response["data"]["registerPatient"]["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    let before = access_events(&app, "PRV002").await.len();

    // A page of summaries: one event naming the five.
    let page = app
        .graphql(
            "{ patients(first: 100) { edges { node { id fullName mrn dateOfBirth status } } } }",
            json!({}),
            Some(&staff.nurse),
        )
        .await;
    assert_eq!(
        page["data"]["patients"]["edges"].as_array().map(Vec::len),
        Some(5),
        "{page}"
    );
    for (token, query) in [
        // Asking for clinical fields is recorded as such, through a fragment too.
        (
            &staff.nurse,
            "{ patients(first: 2) { nodes { ...chart } } } \
             fragment chart on Patient { id allergies { substance } }",
        ),
        // A search that finds nobody shows nobody and records nothing.
        (
            &staff.nurse,
            "{ patients(search: \"zzzz\") { nodes { id } } }",
        ),
        // Appointments: the schedule alone is not about patients; with the reason it is.
        (&staff.nurse, "{ appointments { nodes { start status } } }"),
        (&staff.nurse, "{ appointments { nodes { start reason } } }"),
        // The audit trail's page of patient events names their patients; its page of
        // the access log's own events names nobody again.
        (
            &staff.admin,
            "{ auditTrail(filter: { aggregateType: \"patient\" }, first: 100) \
               { nodes { aggregateId payload } } }",
        ),
        (
            &staff.admin,
            "{ auditTrail(filter: { aggregateType: \"record_access\" }, first: 100) \
               { nodes { payload } } }",
        ),
    ] {
        let response = app.graphql(query, json!({}), Some(token)).await;
        assert!(response["errors"].is_null(), "{query}: {response}");
    }

    let events = access_events(&app, "PRV002").await;
    let new: Vec<(String, Vec<String>)> = events[before..].to_vec();
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };
    let purposes: Vec<&str> = new.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        purposes,
        [
            "patients:summary",
            "patients:records",
            "appointments",
            "auditTrail"
        ],
        "{new:?}"
    );
    assert_eq!(sorted(new[0].1.clone()), sorted(registered.clone()));
    assert_eq!(new[1].1.len(), 2);
    assert_eq!(new[2].1, std::slice::from_ref(&patient));
    assert_eq!(sorted(new[3].1.clone()), sorted(registered));
}

#[tokio::test]
async fn complexity_counts_page_sizes_and_each_user_has_one_budget_across_replicas() {
    let app = spawn_app_with(TestConfig {
        request_budget_per_minute: Some(1_000),
        ..TestConfig::default()
    })
    .await;
    let staff = hospital_with_staff(&app, "PRV003").await;
    let patient = register(
        &app,
        &staff.receptionist,
        json!({ "familyName": "Budget", "dateOfBirth": "1990-01-01", "sex": "FEMALE" }),
    )
    .await;
    assert!(
        patient["data"]["registerPatient"]["id"].is_string(),
        "{patient}"
    );
    let count_events = || async {
        let mut db = app.connect(&app.database_for("PRV003")).await;
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
            .fetch_one(&mut db)
            .await
            .expect("count")
    };

    // A history under every node of a 100-row page is refused before anything runs,
    // and so are many aliases of one page.
    let before = count_events().await;
    for (what, query) in [
        (
            "history per node",
            "{ patients(first: 100) { nodes { id history(first: 5) { nodes { eventType } } } } }"
                .to_owned(),
        ),
        (
            "aliased pages",
            (0..4)
                .map(|i| {
                    format!(
                        "p{i}: patients(first: 100) {{ nodes {{ id fullName mrn dateOfBirth sex status phone email \
                         address {{ line1 line2 city region postalCode country }} }} }} "
                    )
                })
                .collect::<String>(),
        ),
    ] {
        let query = if query.starts_with('{') { query } else { format!("{{ {query} }}") };
        let refused = app.graphql(&query, json!({}), Some(&staff.admin)).await;
        assert_eq!(error_code(&refused), Some("VALIDATION"), "{what}: {refused}");
        assert!(
            refused["errors"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("complex"),
            "{what}: {refused}"
        );
        assert!(refused["data"].is_null(), "{what}: {refused}");
    }
    assert_eq!(count_events().await, before, "a refused request appended");

    // The budget (1,000 units a minute) is one per user, whichever replica serves.
    // Stay inside one minute.
    let second = chrono::Utc::now().timestamp() % 60;
    if second > 40 {
        tokio::time::sleep(std::time::Duration::from_secs((61 - second) as u64)).await;
    }
    let replica = app
        .spawn_replica(TestConfig {
            request_budget_per_minute: Some(1_000),
            ..TestConfig::default()
        })
        .await;
    // Costs 10 (root field) + 100 × 2 (`nodes` and `id` per node) = 210.
    let page = "{ patients(first: 100) { nodes { id } } }";
    let mut served = 0;
    let mut refused = None;
    for i in 0..10 {
        let server = if i % 2 == 0 { &app } else { &replica };
        let response = server.graphql(page, json!({}), Some(&staff.nurse)).await;
        match error_code(&response) {
            None => served += 1,
            Some("RATE_LIMITED") => {
                refused = Some(response);
                break;
            }
            other => panic!("{other:?}: {response}"),
        }
    }
    assert_eq!(served, 4, "4 × 210 fit in 1,000; the fifth does not");
    let refused = refused.expect("refused");
    assert!(refused["data"].is_null(), "{refused}");
    // Refused on the other replica too, and refused requests are not charged: a cheap
    // one still fits.
    for server in [&app, &replica] {
        let again = server.graphql(page, json!({}), Some(&staff.nurse)).await;
        assert_eq!(error_code(&again), Some("RATE_LIMITED"), "{again}");
    }
    let cheap = replica
        .graphql("{ me { id } }", json!({}), Some(&staff.nurse))
        .await;
    assert!(cheap["errors"].is_null(), "{cheap}");
    // Another user of the same hospital has a budget of their own.
    let other = app.graphql(page, json!({}), Some(&staff.doctor)).await;
    assert!(other["errors"].is_null(), "{other}");

    // Charges arriving together (one statement for the batch) hold the same limit: of
    // eight pages sent at once by a fresh user, exactly four fit, whatever the batches.
    let second = chrono::Utc::now().timestamp() % 60;
    if second > 50 {
        tokio::time::sleep(std::time::Duration::from_secs((61 - second) as u64)).await;
    }
    let answers = futures::future::join_all(
        (0..8).map(|_| app.graphql(page, json!({}), Some(&staff.other_doctor))),
    )
    .await;
    let codes: Vec<Option<&str>> = answers.iter().map(error_code).collect();
    assert_eq!(
        codes.iter().filter(|c| c.is_none()).count(),
        4,
        "{answers:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == Some("RATE_LIMITED")).count(),
        4,
        "{answers:?}"
    );
}

#[tokio::test]
async fn under_a_large_budget_each_replica_charges_a_grant_at_a_time_and_the_limit_still_holds() {
    // 64,000 units a minute: each process charges grants of 1,000 (a sixty-fourth).
    let config = || TestConfig {
        request_budget_per_minute: Some(64_000),
        ..TestConfig::default()
    };
    let app = spawn_app_with(config()).await;
    let staff = hospital_with_staff(&app, "PRV004").await;
    let replica = app.spawn_replica(config()).await;
    // Stay inside one minute.
    let second = chrono::Utc::now().timestamp() % 60;
    if second > 30 {
        tokio::time::sleep(std::time::Duration::from_secs((61 - second) as u64)).await;
    }
    let spent = || async {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT sum(spent)::bigint FROM request_budgets \
             WHERE principal = $1 AND window_start = date_trunc('minute', now())",
        )
        .bind(staff.doctor_id)
        .fetch_one(&app.state.platform.control)
        .await
        .expect("spent")
        .unwrap_or(0)
    };
    let served = |response: &Value| match error_code(response) {
        None => true,
        Some("RATE_LIMITED") => false,
        other => panic!("{other:?}: {response}"),
    };

    // A cheap request (11 units) is charged a whole grant; the next ones spend it without
    // a statement of their own, and the other replica charges a grant of its own.
    let me = "{ me { id } }";
    assert!(served(
        &app.graphql(me, json!({}), Some(&staff.doctor)).await
    ));
    assert_eq!(spent().await, 1_000);
    for _ in 0..20 {
        assert!(served(
            &app.graphql(me, json!({}), Some(&staff.doctor)).await
        ));
    }
    assert_eq!(spent().await, 1_000, "21 × 11 units spent from the grant");
    assert!(served(
        &replica.graphql(me, json!({}), Some(&staff.doctor)).await
    ));
    assert_eq!(spent().await, 2_000);

    // Pages of 210 units through both replicas until each has been refused: the
    // counter never passes the limit, and what is left unserved is at most what each
    // replica holds unspent (less than a page each) and what the counter has left (less
    // than a page). A replica refused stays refused: the counter only grows.
    let page = "{ patients(first: 100) { nodes { id } } }";
    let (mut pages, mut refused) = (0, [false, false]);
    for i in 0..800 {
        if refused == [true, true] {
            break;
        }
        let server = if i % 2 == 0 { &app } else { &replica };
        if served(&server.graphql(page, json!({}), Some(&staff.doctor)).await) {
            assert!(!refused[i % 2], "served after a refusal");
            pages += 1;
        } else {
            refused[i % 2] = true;
        }
    }
    assert_eq!(refused, [true, true], "{pages} pages served");
    let units = 22 * 11 + pages * 210;
    assert!(units <= 64_000, "{pages} pages served");
    assert!(units > 64_000 - 3 * 210, "{pages} pages served");
    assert!(spent().await <= 64_000);
}
