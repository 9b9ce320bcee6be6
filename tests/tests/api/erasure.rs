//! Erasure in an append-only log (crypto-shredding), through the real server: a patient
//! registered, updated, booked, billed and sent to the lab, then erased by two
//! administrators, leaves no personal value in any table of the hospital's database;
//! the record reads `[erased]`; the read models rebuild equal to the live ones; the
//! log still verifies; other patients are untouched.

use hms_domain::Role;
use hms_tests::fixtures::{create_user, hospital_with_staff, next_monday, Staff};
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

/// A hospital whose records may be erased at once (retention 0), with its staff and a
/// second administrator (the approver).
async fn erasure_hospital(app: &TestApp, code: &str) -> (Staff, String) {
    let staff = hospital_with_staff(app, code).await;
    let username = format!("{}_admin2", code.to_ascii_lowercase());
    create_user(app, code, &username, Role::HospitalAdmin).await;
    let second_admin = app.login(Some(code), &username, ADMIN_PASSWORD).await;
    set_privacy(app, &staff.admin, 0).await;
    (staff, second_admin)
}

/// Every read model of the hospital, live and then rebuilt from the log.
async fn live_and_rebuilt(
    app: &TestApp,
    code: &str,
) -> (Vec<(String, i64, String)>, Vec<(String, i64, String)>) {
    let lease = app.state.registry.get(code).await.expect("tenant");
    let runner = &app.state.runner;
    crate::projections::drain(&lease.pool, runner).await;
    let live = crate::projections::checksums(&lease.pool, runner).await;
    let owner = crate::projections::owner_pool(app, code).await;
    for projector in runner.rebuildable() {
        hms_projections::rebuild::rebuild(&owner, projector, true, &mut |_| {})
            .await
            .expect("rebuild");
    }
    (
        live,
        crate::projections::checksums(&lease.pool, runner).await,
    )
}

/// Every text and JSON column of every table of the hospital's database holding `value`.
async fn found_anywhere(app: &TestApp, code: &str, value: &str) -> Vec<String> {
    let mut conn = app.connect(&app.database_for(code)).await;
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
    let (staff, second_admin) = erasure_hospital(&app, CODE).await;
    crate::appointments::set_time_zone(&app, CODE, "Africa/Nairobi").await;
    crate::laboratory::catalogue(&app, &staff.admin).await;

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
    assert!(!found_anywhere(&app, CODE, "Chepkoechkx").await.is_empty());

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
        let found = found_anywhere(&app, CODE, secret).await;
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
    let (live, rebuilt) = live_and_rebuilt(&app, CODE).await;
    assert_eq!(
        live, rebuilt,
        "a rebuild after the erasure gives the same rows"
    );
    crate::replay::replay_ok(&app, &["verify", "--hospital", CODE]).await;
    for secret in SECRETS {
        assert!(
            found_anywhere(&app, CODE, secret).await.is_empty(),
            "{secret} after rebuild"
        );
    }
}

/// Events written before sealing existed carry personal data in clear: they stay readable,
/// and erasing such a patient erases every read model (the old events keep what they hold:
/// the documented limit).
#[tokio::test]
async fn a_legacy_patient_in_clear_stays_readable_and_is_erased_from_the_read_models() {
    const LEGACY: &str = "ERS002";
    let app = spawn_app().await;
    let (staff, second_admin) = erasure_hospital(&app, LEGACY).await;
    // A registration as an earlier release wrote it: the same event, in clear.
    let template = ok(
        &app,
        &staff.receptionist,
        "mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id } }",
        json!({ "i": { "givenName": "Template", "familyName": "Record", "dateOfBirth": "1980-01-01",
                        "sex": "MALE" } }),
    )
    .await;
    let template = template["registerPatient"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut conn = app.connect(&app.database_for(LEGACY)).await;
    let (version, metadata): (String, Value) = sqlx::query_as(
        "SELECT event_version, metadata FROM events WHERE aggregate_type = 'patient' AND aggregate_id = $1",
    )
    .bind(&template)
    .fetch_one(&mut conn)
    .await
    .expect("the template's event");
    let legacy = uuid::Uuid::new_v4();
    let payload = json!({ "PatientRegistered": {
        "patient_id": legacy, "mrn": format!("{LEGACY}-009999"),
        "demographics": { "given_name": "Olderecordxyz", "middle_name": null,
                          "family_name": "Plaintextxyz", "date_of_birth": "1975-05-05", "sex": "FEMALE",
                          "phone": "+254733445566", "email": null, "address": null,
                          "emergency_contact": null, "blood_type": null },
        "allergies": [], "alerts": [], "registered_at": chrono::Utc::now() } });
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('patient', $1, 1, 'PatientRegistered', $2, $3, $4)",
    )
    .bind(legacy.to_string())
    .bind(&version)
    .bind(&payload)
    .bind(&metadata)
    .execute(&mut conn)
    .await
    .expect("a legacy event");
    let lease = app.state.registry.get(LEGACY).await.expect("tenant");
    crate::projections::drain(&lease.pool, &app.state.runner).await;

    let read = ok(
        &app,
        &staff.doctor,
        "query($id: UUID!) { patient(id: $id) { familyName phone } }",
        json!({ "id": legacy }),
    )
    .await;
    assert_eq!(
        read["patient"]["familyName"], "Plaintextxyz",
        "legacy events read"
    );
    ok(
        &app,
        &staff.receptionist,
        "mutation($i: UpdatePatientInput!) { updatePatient(input: $i) { id } }",
        json!({ "i": { "id": legacy, "phone": "+254733000001" } }),
    )
    .await;
    ok(
        &app,
        &staff.admin,
        "mutation($i: ErasePatientInput!) { erasePatient(input: $i) { id } }",
        json!({ "i": { "patientId": legacy, "legalBasis": "the patient's request" } }),
    )
    .await;
    let erased = ok(
        &app,
        &second_admin,
        "mutation($i: ApprovePatientErasureInput!) { approvePatientErasure(input: $i) { familyName phone erased } }",
        json!({ "i": { "patientId": legacy } }),
    )
    .await;
    assert_eq!(erased["approvePatientErasure"]["familyName"], "[erased]");
    assert!(erased["approvePatientErasure"]["phone"].is_null());

    // The read models hold nothing of it, live or rebuilt; the new phone was sealed and is
    // gone everywhere; the old event keeps what an earlier release wrote in clear.
    let (live, rebuilt) = live_and_rebuilt(&app, LEGACY).await;
    assert_eq!(
        live, rebuilt,
        "live equals rebuilt after erasing a legacy record"
    );
    let in_read_models: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM patients WHERE demographics::text LIKE '%Plaintextxyz%' \
            OR family_name = 'Plaintextxyz' OR phone IS NOT NULL AND id = $1",
    )
    .bind(legacy)
    .fetch_one(&mut conn)
    .await
    .expect("read model");
    assert_eq!(in_read_models, 0);
    let new_phone: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE payload::text LIKE '%733000001%'")
            .fetch_one(&mut conn)
            .await
            .expect("events");
    assert_eq!(
        new_phone, 0,
        "written after the upgrade: sealed, then erased"
    );
    let old_event: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE payload::text LIKE '%Plaintextxyz%'")
            .fetch_one(&mut conn)
            .await
            .expect("events");
    assert_eq!(old_event, 1, "a legacy event is not rewritten");
    crate::replay::replay_ok(&app, &["verify", "--hospital", LEGACY]).await;
}

/// The master key is rotated by rewrapping the patients' keys: a server with only the new
/// key then reads and writes sealed data; production refuses to start without a key.
#[tokio::test]
async fn the_master_key_rotates_by_rewrapping_and_is_required_in_production() {
    use base64::Engine as _;
    use hms_projections::personal::Keyring;
    let b64 = |byte: u8| base64::engine::general_purpose::STANDARD.encode([byte; 32]);
    let (old, new) = (b64(7), b64(9));
    let old_id = Keyring::from_base64(&old, &[])
        .expect("key")
        .current_id()
        .to_owned();
    let new_id = Keyring::from_base64(&new, &[])
        .expect("key")
        .current_id()
        .to_owned();
    let platform = hms_tests::process::ProcessPlatform::new();
    let run = |env: Vec<(&'static str, String)>, args: Vec<&'static str>| {
        let mut command = platform.command(&args);
        for (k, v) in env {
            command.env(k, v);
        }
        async move { command.output().await.expect("hms runs") }
    };
    let setup = run(
        vec![("HMS_MASTER_KEY", old.clone())],
        vec![
            "setup-hospital",
            "--name",
            "Rotation General",
            "--code",
            "ROT001",
            "--admin-username",
            "rotadmin",
            "--admin-email",
            "admin@rotation.example",
            "--admin-password",
            "plum kettle orbit 4711",
        ],
    )
    .await;
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );

    const LOGIN: &str = "mutation($i: LoginInput!) { login(input: $i) { token } }";
    let login = json!({ "i": { "hospitalCode": "ROT001", "username": "rotadmin", "password": "plum kettle orbit 4711" } });
    let mut server = platform.serve(&[("HMS_MASTER_KEY", old.as_str())]).await;
    let token = server.graphql(LOGIN, login.clone(), None).await["data"]["login"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let registered = server.graphql(
        "mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id } }",
        json!({ "i": { "givenName": "Rotating", "familyName": "Keyholder", "dateOfBirth": "1990-01-01", "sex": "FEMALE" } }),
        Some(&token),
    )
    .await;
    let patient = registered["data"]["registerPatient"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{registered}"))
        .to_owned();
    server.stop().await;
    let key_of = |platform: &hms_tests::process::ProcessPlatform| {
        let options = hms_tests::server_options().database(&platform.database_for("ROT001"));
        async move {
            let mut conn: sqlx::PgConnection = sqlx::Connection::connect_with(&options)
                .await
                .expect("tenant database");
            sqlx::query_scalar::<_, String>("SELECT master_key_id FROM patient_keys")
                .fetch_all(&mut conn)
                .await
                .expect("keys")
        }
    };
    assert_eq!(key_of(&platform).await, vec![old_id.clone()]);

    // Rotate: the new key current, the old one still accepted; then only the new one.
    let rotated = run(
        vec![
            ("HMS_MASTER_KEY", new.clone()),
            ("HMS_MASTER_KEY_PREVIOUS", old.clone()),
        ],
        vec!["rotate-master-key"],
    )
    .await;
    let out = String::from_utf8_lossy(&rotated.stdout);
    assert!(
        rotated.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert!(out.contains("ROT001: 1 key(s) rewrapped"), "{out}");
    assert_eq!(key_of(&platform).await, vec![new_id]);
    let mut server = platform.serve(&[("HMS_MASTER_KEY", new.as_str())]).await;
    let token = server.graphql(LOGIN, login, None).await["data"]["login"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    // A command loads the sealed registration: it opens under the rewrapped key.
    let updated = server
        .graphql(
            "mutation($i: UpdatePatientInput!) { updatePatient(input: $i) { familyName phone } }",
            json!({ "i": { "id": patient, "phone": "+254711000222" } }),
            Some(&token),
        )
        .await;
    assert_eq!(
        updated["data"]["updatePatient"]["familyName"], "Keyholder",
        "{updated}"
    );
    server.stop().await;

    // Production does not start without a master key.
    let refused = run(vec![("HMS_ENV", "production".into())], vec!["tenants"]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("HMS_MASTER_KEY is required in production"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    platform.cleanup().await;
}

/// Erasing a record erases the duplicates merged into it: their keys go with its key, and
/// their rows read as erased, live and rebuilt.
#[tokio::test]
async fn erasing_a_record_erases_the_duplicates_merged_into_it() {
    const MERGED: &str = "ERS003";
    let app = spawn_app().await;
    let (staff, second_admin) = erasure_hospital(&app, MERGED).await;
    let register = |given: &'static str, phone: &'static str| {
        let app = &app;
        let desk = staff.receptionist.clone();
        async move {
            let r = ok(
                app,
                &desk,
                "mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id } }",
                json!({ "i": { "givenName": given, "familyName": "Duplicatexyz", "dateOfBirth": "1960-06-06",
                                "sex": "MALE", "phone": phone } }),
            )
            .await;
            r["registerPatient"]["id"].as_str().expect("id").to_owned()
        }
    };
    let survivor = register("Survivorxyz", "+254722000001").await;
    let duplicate = register("Duplicatedxyz", "+254722000002").await;
    ok(
        &app,
        &staff.nurse,
        "mutation($i: AddPatientAlertInput!) { addPatientAlert(input: $i) { id } }",
        json!({ "i": { "patientId": duplicate, "text": "duplicate alertxyz" } }),
    )
    .await;
    ok(
        &app,
        &staff.admin,
        "mutation($i: MergePatientsInput!) { mergePatients(input: $i) { id } }",
        json!({ "i": { "duplicateId": duplicate, "survivorId": survivor } }),
    )
    .await;
    ok(
        &app,
        &staff.admin,
        "mutation($i: ErasePatientInput!) { erasePatient(input: $i) { id } }",
        json!({ "i": { "patientId": survivor, "legalBasis": "the patient's request" } }),
    )
    .await;
    ok(
        &app,
        &second_admin,
        "mutation($i: ApprovePatientErasureInput!) { approvePatientErasure(input: $i) { erased } }",
        json!({ "i": { "patientId": survivor } }),
    )
    .await;
    let lease = app.state.registry.get(MERGED).await.expect("tenant");
    crate::projections::drain(&lease.pool, &app.state.runner).await;
    let dup = ok(
        &app,
        &staff.doctor,
        "query($id: UUID!) { patient(id: $id) { givenName familyName phone alerts { text } } }",
        json!({ "id": duplicate }),
    )
    .await;
    assert_eq!(dup["patient"]["familyName"], "[erased]", "{dup}");
    assert!(dup["patient"]["phone"].is_null());
    assert_eq!(dup["patient"]["alerts"][0]["text"], "[erased]");
    let (live, rebuilt) = live_and_rebuilt(&app, MERGED).await;
    assert_eq!(
        live, rebuilt,
        "live equals rebuilt after erasing a merged record"
    );
    let mut found = Vec::new();
    for secret in [
        "Duplicatedxyz",
        "Survivorxyz",
        "Duplicatexyz",
        "254722000002",
        "duplicate alertxyz",
    ] {
        let tables = found_anywhere(&app, MERGED, secret).await;
        if !tables.is_empty() {
            found.push((secret, tables));
        }
    }
    assert!(found.is_empty(), "{found:?}");
    crate::replay::replay_ok(&app, &["verify", "--hospital", MERGED]).await;
}
