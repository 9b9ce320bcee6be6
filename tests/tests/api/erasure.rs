//! Erasure in an append-only log (crypto-shredding), through the real server: a patient
//! registered, updated, booked, billed and sent to the lab, then erased by two
//! administrators, leaves no personal value in any table of the hospital's database;
//! the record reads `[erased]`; the read models rebuild equal to the live ones; the
//! log still verifies; other patients are untouched.

use hms_domain::Role;
use hms_tests::fixtures::{create_user, hospital_with_staff, next_monday};
use hms_tests::{error_code, spawn_app, TestApp, ADMIN_PASSWORD};
use serde_json::{json, Value};

const CODE: &str = "ERS001";

/// The personal values of the erased patient: none may remain anywhere.
const SECRETS: &[&str] = &[
    "Zawadikiprop",
    "Chepkoechkx",
    "+254711223344",
    "254711223344",
    "+254799887766",
    "254799887766",
    "zawadi.chepkoech@example.org",
    "Ngong Roadxyz",
    "Kipchumbaxyz",
    "swollen lipsxyz",
    "wanders at nightxyz",
    "recurring migrainexyz",
    "felt better, cancelledxyz",
    "suspected hyperkalaemiaxyz",
];

async fn ok(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let response = app.graphql(query, variables, Some(token)).await;
    assert!(response["errors"].is_null(), "{query}: {response}");
    response["data"].clone()
}

async fn set_privacy(app: &TestApp, admin: &str, retention_days: i32) {
    let week: Vec<Value> = ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"]
        .map(|d| json!({ "weekday": d, "open": "08:00", "close": "17:00" }))
        .to_vec();
    ok(
        app,
        admin,
        "mutation($i: UpdateHospitalSettingsInput!) { updateHospitalSettings(input: $i) { code } }",
        json!({ "i": { "slotLengthMinutes": 30, "invoicePrefix": "INV", "workingHours": week,
                       "retentionDays": retention_days } }),
    )
    .await;
}

/// Every text and JSON column of every table of the hospital's database holding `value`.
async fn found_anywhere(app: &TestApp, value: &str) -> Vec<String> {
    let mut conn = app.connect(&app.database_for(CODE)).await;
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
          WHERE table_schema = 'public' \
            AND data_type IN ('text', 'jsonb', 'json', 'character varying')",
    )
    .fetch_all(&mut conn)
    .await
    .expect("columns");
    let mut found = Vec::new();
    for (table, column) in columns {
        let hits: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM public.\"{table}\" WHERE position($1 in \"{column}\"::text) > 0"
        ))
        .bind(value)
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{table}.{column}: {e}"));
        if hits > 0 {
            found.push(format!("{table}.{column}"));
        }
    }
    found
}

#[tokio::test]
async fn an_erased_patient_leaves_no_personal_value_and_the_log_still_verifies() {
    let app = spawn_app().await;
    let staff = hospital_with_staff(&app, CODE).await;
    crate::appointments::set_time_zone(&app, CODE, "Africa/Nairobi").await;
    crate::laboratory::catalogue(&app, &staff.admin).await;
    create_user(&app, CODE, "ers001_admin2", Role::HospitalAdmin).await;
    let second_admin = app.login(Some(CODE), "ers001_admin2", ADMIN_PASSWORD).await;
    set_privacy(&app, &staff.admin, 0).await;

    // Registered with names, contacts, an address, an allergy and an alert.
    let registered = ok(
        &app,
        &staff.receptionist,
        "mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id } }",
        json!({ "i": {
            "givenName": "Zawadikiprop", "familyName": "Chepkoechkx", "dateOfBirth": "1988-02-03",
            "sex": "FEMALE", "phone": "+254 711 223 344", "email": "zawadi.chepkoech@example.org",
            "address": { "line1": "12 Ngong Roadxyz", "city": "Nairobi", "country": "KE" },
            "emergencyContact": { "name": "Kipchumbaxyz", "relationship": "Brother", "phone": "+254712000000" },
            "allergies": [{ "substance": "Penicillin", "reaction": "swollen lipsxyz", "severity": "SEVERE" }] } }),
    )
    .await;
    let patient = registered["registerPatient"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let other = ok(
        &app,
        &staff.receptionist,
        "mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id } }",
        json!({ "i": { "givenName": "Baraka", "familyName": "Mwangi", "dateOfBirth": "1970-01-01",
                        "sex": "MALE", "phone": "+254 700 000 111" } }),
    )
    .await;
    let other = other["registerPatient"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // Updated; an alert; booked and cancelled; billed; a lab order with a note.
    ok(
        &app,
        &staff.receptionist,
        "mutation($i: UpdatePatientInput!) { updatePatient(input: $i) { id } }",
        json!({ "i": { "id": patient, "phone": "+254 799 887 766" } }),
    )
    .await;
    ok(
        &app,
        &staff.nurse,
        "mutation($i: AddPatientAlertInput!) { addPatientAlert(input: $i) { id } }",
        json!({ "i": { "patientId": patient, "text": "wanders at nightxyz" } }),
    )
    .await;
    let day = next_monday();
    let booked = ok(
        &app,
        &staff.receptionist,
        "mutation($i: ScheduleAppointmentInput!) { scheduleAppointment(input: $i) { id } }",
        json!({ "i": { "patientId": patient, "doctorId": staff.doctor_id,
                        "start": crate::appointments::nairobi(day, 9, 0), "durationMinutes": 30,
                        "reason": "recurring migrainexyz" } }),
    )
    .await;
    let appointment = booked["scheduleAppointment"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    ok(
        &app,
        &staff.receptionist,
        "mutation($i: CancelAppointmentInput!) { cancelAppointment(input: $i) { id } }",
        json!({ "i": { "appointmentId": appointment, "reason": "felt better, cancelledxyz" } }),
    )
    .await;
    let invoice = ok(
        &app,
        &staff.accountant,
        "mutation($i: CreateInvoiceInput!) { createInvoice(input: $i) { id } }",
        json!({ "i": { "patientId": patient, "appointmentId": appointment } }),
    )
    .await;
    ok(
        &app,
        &staff.accountant,
        "mutation($i: AddInvoiceLineInput!) { addInvoiceLine(input: $i) { id } }",
        json!({ "i": { "invoiceId": invoice["createInvoice"]["id"], "code": "CONS",
                        "description": "Consultation", "quantity": 1, "unitPriceMinor": 150000 } }),
    )
    .await;
    ok(
        &app,
        &staff.doctor,
        "mutation($i: OrderLabTestsInput!) { orderLabTests(input: $i) { id } }",
        json!({ "i": { "patientId": patient, "tests": ["2823-3"],
                        "clinicalNote": "suspected hyperkalaemiaxyz" } }),
    )
    .await;

    // Nothing personal is in the log in clear: only in the read models, for now.
    let mut conn = app.connect(&app.database_for(CODE)).await;
    let in_clear: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE payload::text LIKE '%Chepkoechkx%' \
            OR payload::text LIKE '%recurring migrainexyz%' OR payload::text LIKE '%799 887%'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("events");
    assert_eq!(in_clear, 0, "personal data is sealed in the log");
    assert!(!found_anywhere(&app, "Chepkoechkx").await.is_empty());

    // Erasure takes two administrators, a legal basis, and the retention period.
    let erase = "mutation($i: ErasePatientInput!) { erasePatient(input: $i) { id erased } }";
    let approve =
        "mutation($i: ApprovePatientErasureInput!) { approvePatientErasure(input: $i) { id erased familyName fullName } }";
    let by_doctor = app
        .graphql(
            erase,
            json!({ "i": { "patientId": patient, "legalBasis": "GDPR art. 17" } }),
            Some(&staff.doctor),
        )
        .await;
    assert_eq!(error_code(&by_doctor), Some("FORBIDDEN"), "{by_doctor}");
    let unasked = app
        .graphql(
            approve,
            json!({ "i": { "patientId": patient } }),
            Some(&second_admin),
        )
        .await;
    assert_eq!(error_code(&unasked), Some("CONFLICT"), "{unasked}");
    let no_basis = app
        .graphql(
            erase,
            json!({ "i": { "patientId": patient, "legalBasis": "" } }),
            Some(&staff.admin),
        )
        .await;
    assert_eq!(error_code(&no_basis), Some("VALIDATION"), "{no_basis}");
    let asked = ok(
        &app,
        &staff.admin,
        erase,
        json!({ "i": { "patientId": patient, "legalBasis": "GDPR art. 17: the patient's request of 2026-12-01" } }),
    )
    .await;
    assert_eq!(asked["erasePatient"]["erased"], false);
    let alone = app
        .graphql(
            approve,
            json!({ "i": { "patientId": patient } }),
            Some(&staff.admin),
        )
        .await;
    assert_eq!(error_code(&alone), Some("CONFLICT"), "four eyes: {alone}");
    set_privacy(&app, &staff.admin, 3653).await;
    let kept = app
        .graphql(
            approve,
            json!({ "i": { "patientId": patient } }),
            Some(&second_admin),
        )
        .await;
    assert_eq!(
        error_code(&kept),
        Some("CONFLICT"),
        "inside retention: {kept}"
    );
    assert!(kept["errors"][0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("must be kept until")));
    set_privacy(&app, &staff.admin, 0).await;
    let erased = ok(
        &app,
        &second_admin,
        approve,
        json!({ "i": { "patientId": patient } }),
    )
    .await;
    assert_eq!(erased["approvePatientErasure"]["erased"], true);
    assert_eq!(erased["approvePatientErasure"]["familyName"], "[erased]");

    // The record reads [erased]; nothing more can be recorded for it.
    let read = ok(
        &app,
        &staff.doctor,
        "query($id: UUID!) { patient(id: $id) { familyName givenName phone email erased allergies { substance reaction } alerts { text } } }",
        json!({ "id": patient }),
    )
    .await;
    let p = &read["patient"];
    assert_eq!(p["familyName"], "[erased]");
    assert_eq!(p["givenName"], "[erased]");
    assert!(p["phone"].is_null() && p["email"].is_null(), "{p}");
    assert_eq!(p["allergies"][0]["substance"], "Penicillin");
    assert_eq!(p["allergies"][0]["reaction"], "[erased]");
    assert_eq!(p["alerts"], json!([]));
    let update = app
        .graphql(
            "mutation($i: UpdatePatientInput!) { updatePatient(input: $i) { id } }",
            json!({ "i": { "id": patient, "familyName": "Again" } }),
            Some(&staff.receptionist),
        )
        .await;
    assert_eq!(error_code(&update), Some("CONFLICT"), "{update}");
    let as_of = ok(
        &app,
        &staff.admin,
        "query($id: UUID!, $at: DateTime!) { patientAsOf(id: $id, at: $at) { record } }",
        json!({ "id": patient, "at": chrono::Utc::now().to_rfc3339() }),
    )
    .await;
    assert_eq!(
        as_of["patientAsOf"]["record"]["demographics"]["family_name"], "[erased]",
        "{as_of}"
    );

    // No personal value of theirs is left in any table.
    let lease = app.state.registry.get(CODE).await.expect("tenant");
    crate::projections::drain(&lease.pool, &app.state.runner).await;
    for secret in SECRETS {
        let found = found_anywhere(&app, secret).await;
        assert!(found.is_empty(), "{secret} remains in {found:?}");
    }
    // The other patient is untouched.
    let untouched = ok(
        &app,
        &staff.doctor,
        "query($id: UUID!) { patient(id: $id) { familyName phone erased } }",
        json!({ "id": other }),
    )
    .await;
    assert_eq!(untouched["patient"]["familyName"], "Mwangi");
    assert_eq!(untouched["patient"]["phone"], "+254700000111");

    // Rebuilt from the log, every read model equals the live one; the log verifies.
    let runner = &app.state.runner;
    let owner = crate::projections::owner_pool(&app, CODE).await;
    let mut live = Vec::new();
    for projector in runner.rebuildable() {
        for table in projector.tables() {
            live.push((
                *table,
                crate::projections::table_checksum(&mut conn, table).await,
            ));
        }
    }
    for projector in runner.rebuildable() {
        hms_projections::rebuild::rebuild(&owner, projector, true, &mut |_| {})
            .await
            .expect("rebuild");
    }
    let mut rebuilt = Vec::new();
    for projector in runner.rebuildable() {
        for table in projector.tables() {
            rebuilt.push((
                *table,
                crate::projections::table_checksum(&mut conn, table).await,
            ));
        }
    }
    assert_eq!(
        live, rebuilt,
        "a rebuild after the erasure gives the same rows"
    );
    crate::replay::replay_ok(&app, &["verify", "--hospital", CODE]).await;
    for secret in SECRETS {
        assert!(
            found_anywhere(&app, secret).await.is_empty(),
            "{secret} after rebuild"
        );
    }
}
