//! Patients through the API: registration with MRNs, search, updates, allergies and
//! alerts, death, deactivation, merging, the access log, and each refusal.

use hms_tests::fixtures::{hospital_with_staff, register, register_simple, PATIENT_FIELDS};
use hms_tests::{error_code, spawn_app, TestApp};
use serde_json::{json, Value};
use uuid::Uuid;

fn field(response: &Value) -> Option<&str> {
    response["errors"][0]["extensions"]["field"].as_str()
}

async fn mutate(app: &TestApp, token: &str, name: &str, input_type: &str, input: Value) -> Value {
    app.graphql(
        &format!(
            "mutation($input: {input_type}!) {{ {name}(input: $input) {{ {PATIENT_FIELDS} }} }}"
        ),
        json!({ "input": input }),
        Some(token),
    )
    .await
}

async fn search(app: &TestApp, token: &str, search: &str) -> Vec<String> {
    let response = app
        .graphql(
            "query($s: String) { patients(search: $s, first: 50) { edges { node { familyName } } } }",
            json!({ "s": search }),
            Some(token),
        )
        .await;
    response["data"]["patients"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("search {search:?}: {response}"))
        .iter()
        .map(|e| {
            e["node"]["familyName"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// A registration offers the new patient's data key in the statement that appends the
/// event (one round trip); an id whose key is stored already — here destroyed, as an
/// erasure leaves it — is sealed with the stored key instead, and so refused as erased,
/// with nothing appended.
#[tokio::test]
async fn a_registration_stores_its_key_with_its_event_and_an_erased_id_is_refused() {
    use chrono::Utc;
    use hms_app::commands::{self, CommandError};
    use hms_domain::common::HospitalCode;
    use hms_domain::patient::{Mrn, Patient, PatientCommand};
    use hms_tests::fixtures::{admin_actor, demographics, metadata};

    let app = spawn_app().await;
    app.setup_hospital("KEY001").await;
    let lease = app.state.registry.get("KEY001").await.expect("tenant");
    let pool = &lease.pool;
    let hospital = HospitalCode::parse("KEY001").expect("code");
    let registration = |id: Uuid, n: u64| PatientCommand::RegisterPatient {
        actor: admin_actor("KEY001"),
        patient_id: id,
        mrn: Mrn::new(&hospital, n).expect("mrn"),
        hospital: hospital.clone(),
        demographics: demographics("Keyholder"),
        allergies: vec![],
        now: Utc::now(),
    };
    let meta = metadata("KEY001", admin_actor("KEY001"));

    let fresh = Uuid::new_v4();
    commands::append_new::<Patient>(pool, &fresh.to_string(), registration(fresh, 1), (), &meta)
        .await
        .expect("registered");
    let (keys, sealed): (i64, bool) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM patient_keys WHERE patient_id = $1 AND wrapped_key IS NOT NULL), \
                (SELECT bool_and(payload::text NOT LIKE '%Keyholder%') FROM events WHERE aggregate_id = $2)",
    )
    .bind(fresh)
    .bind(fresh.to_string())
    .fetch_one(pool)
    .await
    .expect("key and event");
    assert_eq!(
        (keys, sealed),
        (1, true),
        "one key stored, the name sealed under it"
    );
    let (patient, version) = commands::load::<Patient>(pool, &fresh.to_string())
        .await
        .expect("loaded");
    assert_eq!(version, 1);
    assert_eq!(
        patient
            .demographics
            .map(|d| d.family_name.as_str().to_owned()),
        Some("Keyholder".to_owned()),
        "opened with the key stored by the append"
    );

    let erased = Uuid::new_v4();
    sqlx::query("INSERT INTO patient_keys (patient_id, destroyed_at) VALUES ($1, now())")
        .bind(erased)
        .execute(pool)
        .await
        .expect("a destroyed key");
    let refused = commands::append_new::<Patient>(
        pool,
        &erased.to_string(),
        registration(erased, 2),
        (),
        &meta,
    )
    .await;
    assert!(
        matches!(refused, Err(CommandError::Erased(_))),
        "{refused:?}"
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(erased.to_string())
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(events, 0);
}

/// The append of a registration takes the log, then the key table (its key is stored by
/// the same statement). Chosen as a deadlock's victim — here another transaction holds
/// the key table and then wants the log — it is sent again, not failed: nothing of it was
/// written.
#[tokio::test]
async fn a_registration_chosen_to_break_a_deadlock_is_sent_again() {
    use chrono::Utc;
    use hms_app::commands;
    use hms_domain::common::HospitalCode;
    use hms_domain::patient::{Mrn, Patient, PatientCommand};
    use hms_tests::fixtures::{admin_actor, demographics, metadata};
    use sqlx::{Connection, PgConnection};

    let app = spawn_app().await;
    app.setup_hospital("DLK001").await;
    let lease = app.state.registry.get("DLK001").await.expect("tenant");
    let pool = lease.pool.clone();
    let hospital = HospitalCode::parse("DLK001").expect("code");
    let registration = |id: Uuid, n: u64| PatientCommand::RegisterPatient {
        actor: admin_actor("DLK001"),
        patient_id: id,
        mrn: Mrn::new(&hospital, n).expect("mrn"),
        hospital: hospital.clone(),
        demographics: demographics("Deadlocked"),
        allergies: vec![],
        now: Utc::now(),
    };
    let meta = metadata("DLK001", admin_actor("DLK001"));
    // A first registration prepares the statement on the pool's connection: a prepared
    // statement takes its locks in plan order (the log, then the key table); its very
    // first parse takes the key table first, and would just wait below.
    let first = Uuid::new_v4();
    commands::append_new::<Patient>(&pool, &first.to_string(), registration(first, 1), (), &meta)
        .await
        .expect("registered");
    let id = Uuid::new_v4();
    let registration = registration(id, 2);

    let owner = hms_tests::server_options().database(&lease.database_name);
    let mut other = PgConnection::connect_with(&owner).await.expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut other)
        .await
        .expect("begin");
    sqlx::query("LOCK TABLE patient_keys IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut other)
        .await
        .expect("the key table");
    let append = tokio::spawn(async move {
        commands::append_new::<Patient>(&pool, &id.to_string(), registration, (), &meta).await
    });
    let mut watch = PgConnection::connect_with(&owner).await.expect("connect");
    hms_tests::until_waiting_for_a_lock(&mut watch, "WITH offered AS").await;
    // The append holds the log and waits for the keys; this transaction now waits for the
    // log. The append has waited longer, so its deadlock check runs first and aborts it:
    // the log is then this transaction's.
    let log = sqlx::query("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut other)
        .await;
    assert!(log.is_ok(), "the append was the deadlock's victim: {log:?}");
    sqlx::query("COMMIT")
        .execute(&mut other)
        .await
        .expect("commit");
    let appended = append.await.expect("the append's task");
    assert!(appended.is_ok(), "sent again and appended: {appended:?}");
    let (events, keys): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events WHERE aggregate_id = $1), \
                (SELECT count(*) FROM patient_keys WHERE patient_id = $2)",
    )
    .bind(id.to_string())
    .bind(id)
    .fetch_one(&mut watch)
    .await
    .expect("count");
    assert_eq!((events, keys), (1, 1), "appended once, with its key");
}

/// MRNs drawn by registrations at the same moment (in batches, one statement for those
/// waiting together) are distinct and leave no gap; a database without the sequence
/// fails its own draws only, and a hospital whose sequence is held up delays no other.
#[tokio::test]
async fn concurrent_registrations_draw_distinct_mrns_without_gaps() {
    use hms_app::sequences::Sequence;
    let app = spawn_app().await;
    let staff = hospital_with_staff(&app, "DMC001").await;
    let desk = staff.receptionist.as_str();
    let registrations = (0..24).map(|i| {
        let app = &app;
        async move { register_simple(app, desk, &format!("Racer{i}"), "Concurrent").await }
    });
    futures::future::join_all(registrations).await;
    let response = app
        .graphql(
            "query { patients(first: 50) { edges { node { mrn } } } }",
            json!({}),
            Some(desk),
        )
        .await;
    let mut mrns: Vec<String> = response["data"]["patients"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{response}"))
        .iter()
        .map(|e| e["node"]["mrn"].as_str().expect("mrn").to_owned())
        .collect();
    mrns.sort_unstable();
    let expected: Vec<String> = (1..=24).map(|n| format!("DMC001-{n:06}")).collect();
    assert_eq!(mrns, expected);

    let lease = app.state.registry.get("DMC001").await.expect("tenant");
    let control = app.state.control.clone();
    let draws = [&lease.pool, &control, &lease.pool].map(|pool| {
        let sequences = app.state.sequences.clone();
        async move { sequences.next(pool, Sequence::Mrn).await }
    });
    let [a, platform, b] = futures::future::join_all(draws)
        .await
        .try_into()
        .expect("three answers");
    let (a, b) = (a.expect("drawn"), b.expect("drawn"));
    assert_eq!((a.min(b), a.max(b)), (25, 26));
    assert!(platform.is_err(), "the platform database has no MRNs");

    // A hospital whose sequence cannot be drawn from (an ALTER SEQUENCE holds its lock
    // here) holds up its own registrations only: another hospital's numbers keep coming.
    app.setup_hospital("DMC002").await;
    let other = app.state.registry.get("DMC002").await.expect("tenant");
    let mut locker = app.connect(&app.database_for("DMC001")).await;
    sqlx::query("BEGIN")
        .execute(&mut locker)
        .await
        .expect("begin");
    sqlx::query("ALTER SEQUENCE mrn_seq INCREMENT BY 1")
        .execute(&mut locker)
        .await
        .expect("locked");
    let stuck = tokio::spawn({
        let (sequences, pool) = (app.state.sequences.clone(), lease.pool.clone());
        async move { sequences.next(&pool, Sequence::Mrn).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let elsewhere = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        app.state.sequences.next(&other.pool, Sequence::Mrn),
    )
    .await
    .expect("not held up by another hospital")
    .expect("drawn");
    assert_eq!(elsewhere, 1);
    assert!(!stuck.is_finished(), "the locked hospital waits");
    // Only a database with a draw in flight keeps a batcher.
    assert_eq!(app.state.sequences.databases_drawing(), 1);
    sqlx::query("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("unlocked");
    assert_eq!(stuck.await.expect("joined").expect("drawn"), 27);
    assert_eq!(app.state.sequences.databases_drawing(), 0);
}

#[tokio::test]
async fn patients_are_registered_with_mrns_found_by_search_and_their_views_are_logged() {
    let app = spawn_app().await;
    let staff = hospital_with_staff(&app, "DMC001").await;
    let desk = staff.receptionist.as_str();

    let response = register(
        &app,
        desk,
        json!({
            "givenName": "Wanjiku",
            "familyName": "Núñez",
            "dateOfBirth": "1990-04-01",
            "sex": "FEMALE",
            "phone": "+254 712 345 678",
            "email": "wanjiku@example.com",
            "address": { "line1": "1 Moi Avenue", "city": "Nairobi", "country": "KE" },
            "emergencyContact": { "name": "Njeri", "relationship": "Sister", "phone": "+254712000000" },
            "bloodType": "O_POSITIVE",
            "allergies": [{ "substance": "Penicillin", "reaction": "Hives", "severity": "SEVERE" }]
        }),
    )
    .await;
    let patient = &response["data"]["registerPatient"];
    assert_eq!(patient["mrn"], "DMC001-000001", "{response}");
    assert_eq!(patient["fullName"], "Wanjiku Núñez");
    assert_eq!(patient["phone"], "+254712345678");
    assert_eq!(patient["status"], "ACTIVE");
    assert_eq!(patient["address"]["country"], "KE");
    // The front desk records what the patient reports but reads nothing clinical back:
    // those fields are null, each with FORBIDDEN at its path.
    assert!(patient["bloodType"].is_null(), "{response}");
    assert!(patient["allergies"].is_null(), "{response}");
    assert!(patient["alerts"].is_null(), "{response}");
    let withheld: Vec<(String, String, String)> = response["errors"]
        .as_array()
        .expect("errors for the withheld fields")
        .iter()
        .map(|e| {
            (
                e["path"][1].as_str().unwrap_or_default().to_owned(),
                e["extensions"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e["extensions"]["withheld"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let clinical = |f: &str| (f.to_owned(), "FORBIDDEN".to_owned(), "Clinical".to_owned());
    assert_eq!(
        withheld,
        [
            clinical("bloodType"),
            clinical("allergies"),
            clinical("alerts")
        ],
        "{response}"
    );
    assert_eq!(patient["version"], 1);
    let id = patient["id"].as_str().expect("id").to_owned();

    let second = register_simple(&app, desk, "Otieno", "Kamau").await;
    let third = register_simple(&app, desk, "Amina", "Kamara").await;
    let mrns = app
        .graphql(
            "query { patients(first: 10) { edges { node { mrn familyName } } } }",
            json!({}),
            Some(desk),
        )
        .await;
    let mrns: Vec<&str> = mrns["data"]["patients"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["mrn"].as_str().expect("mrn"))
        .collect();
    assert_eq!(
        mrns,
        ["DMC001-000003", "DMC001-000002", "DMC001-000001"],
        "name order: Kamara, Kamau, Núñez"
    );

    // Search by the shape of the string.
    assert_eq!(search(&app, desk, "nunez").await, ["Núñez"]);
    assert_eq!(search(&app, desk, "NÚÑ").await, ["Núñez"]);
    assert_eq!(search(&app, desk, "kama").await, ["Kamara", "Kamau"]);
    assert_eq!(search(&app, desk, "kam otie").await, ["Kamau"]);
    assert_eq!(search(&app, desk, "Otieno Kamau").await, ["Kamau"]);
    assert_eq!(search(&app, desk, "wanj").await, ["Núñez"]);
    assert_eq!(search(&app, desk, "1990-04-01").await, ["Núñez"]);
    assert_eq!(search(&app, desk, "0712 345 678").await, ["Núñez"]);
    assert_eq!(search(&app, desk, "dmc001-000002").await, ["Kamau"]);
    assert!(search(&app, desk, "zzz").await.is_empty());
    assert!(
        search(&app, desk, "%").await.is_empty(),
        "LIKE wildcards are literal"
    );
    let bad = app
        .graphql(
            "{ patients(search: \"1990-13-45\") { edges { node { id } } } }",
            json!({}),
            Some(desk),
        )
        .await;
    assert_eq!(error_code(&bad), Some("VALIDATION"), "{bad}");

    // Keyset pages: one at a time, in order, and the end is known.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app
            .graphql(
                "query($after: String) { patients(first: 1, after: $after) { edges { cursor node { familyName } } pageInfo { hasNextPage endCursor } } }",
                json!({ "after": after }),
                Some(desk),
            )
            .await;
        let connection = &page["data"]["patients"];
        seen.push(connection["edges"][0]["node"]["familyName"].clone());
        if connection["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = connection["pageInfo"]["endCursor"]
            .as_str()
            .map(str::to_owned);
    }
    assert_eq!(seen, [json!("Kamara"), json!("Kamau"), json!("Núñez")]);
    let bad_cursor = app
        .graphql(
            "{ patients(after: \"garbage\") { edges { cursor } } }",
            json!({}),
            Some(desk),
        )
        .await;
    assert_eq!(error_code(&bad_cursor), Some("VALIDATION"));
    assert_eq!(field(&bad_cursor), Some("after"));

    // Every page of the list was recorded, as summaries (one event per page, naming
    // its patients); the searches that found nobody recorded nothing.
    let mut db = app.connect(&app.database_for("DMC001")).await;
    let pages: Vec<Value> = sqlx::query_scalar(
        "SELECT payload->'PatientRecordsViewed' FROM events \
          WHERE aggregate_type = 'record_access' ORDER BY transaction_id, position",
    )
    .fetch_all(&mut db)
    .await
    .expect("access events");
    let listed = |page: &Value| page["patient_ids"].as_array().map_or(0, Vec::len);
    assert_eq!(
        pages.iter().map(listed).collect::<Vec<_>>(),
        // patients(first: 10), ten searches with hits, three pages of one.
        [3, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        "{pages:?}"
    );
    for page in &pages {
        assert_eq!(page["purpose"], "patients:summary", "{page}");
        assert_eq!(page["viewer_username"], "dmc001_desk", "{page}");
    }

    // Opening a record is logged before it is shown, and a nurse reads its clinical
    // fields.
    let read = app
        .graphql(
            &format!("query($id: UUID!) {{ patient(id: $id) {{ {PATIENT_FIELDS} }} }}"),
            json!({ "id": id }),
            Some(&staff.nurse),
        )
        .await;
    assert_eq!(read["data"]["patient"]["familyName"], "Núñez", "{read}");
    assert_eq!(read["data"]["patient"]["bloodType"], "O_POSITIVE", "{read}");
    assert_eq!(
        read["data"]["patient"]["allergies"][0]["severity"], "SEVERE",
        "{read}"
    );
    assert!(read["errors"].is_null(), "{read}");
    // The view is in the log when the record is returned (the access log's read model
    // follows it, docs/adr/0011).
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT v->>'viewer_username', v->>'viewer_role', v->>'purpose' \
           FROM events, jsonb_extract_path(payload, 'PatientRecordViewed') v \
          WHERE aggregate_type = 'record_access' AND v->>'patient_id' = $1 \
            AND v->>'viewer_role' = 'NURSE'",
    )
    .bind(&id)
    .fetch_all(&mut db)
    .await
    .expect("access log");
    assert_eq!(
        rows,
        [(
            "dmc001_nurse".to_owned(),
            "NURSE".to_owned(),
            "patient".to_owned()
        )]
    );

    // An unknown id (or one of another hospital) is NOT_FOUND and logs nothing.
    let missing = app
        .graphql(
            "query($id: UUID!) { patient(id: $id) { id } }",
            json!({ "id": Uuid::new_v4() }),
            Some(&staff.nurse),
        )
        .await;
    assert_eq!(error_code(&missing), Some("NOT_FOUND"));
    let logged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'record_access' \
            AND event_type = 'PatientRecordViewed'",
    )
    .fetch_one(&mut db)
    .await
    .expect("count");
    assert_eq!(logged, 1);

    // Roles: the matrix decides who sees and who registers.
    let input = json!({ "familyName": "X", "dateOfBirth": "2000-01-01", "sex": "UNKNOWN" });
    for (who, token) in [("accountant", &staff.accountant), ("doctor", &staff.doctor)] {
        let refused = register(&app, token, input.clone()).await;
        assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{who}: {refused}");
    }
    let anonymous = app
        .graphql("{ patients { edges { cursor } } }", json!({}), None)
        .await;
    assert_eq!(error_code(&anonymous), Some("UNAUTHENTICATED"));
    let accountant_reads = search(&app, &staff.accountant, "kamau").await;
    assert_eq!(accountant_reads, ["Kamau"]);

    // The admin reads the record's history; that read is logged too.
    let history = app
        .graphql(
            "query($id: UUID!) { patient(id: $id) { history { edges { node { eventType actor { username } } } } } }",
            json!({ "id": second }),
            Some(&staff.admin),
        )
        .await;
    assert_eq!(
        history["data"]["patient"]["history"]["edges"][0]["node"],
        json!({ "eventType": "PatientRegistered", "actor": { "username": "dmc001_desk" } }),
        "{history}"
    );
    // Views are in the log when a record is shown; the access log's table follows.
    let lease = app.state.registry.get("DMC001").await.expect("tenant");
    crate::projections::drain(&lease.pool, &app.state.runner).await;
    let purposes: Vec<String> = sqlx::query_scalar(
        "SELECT purpose FROM patient_access_log \
          WHERE patient_id = $1::uuid AND purpose NOT LIKE 'patients:%' ORDER BY purpose",
    )
    .bind(&second)
    .fetch_all(&mut db)
    .await
    .expect("access log");
    assert_eq!(purposes, ["history", "patient"]);
    let nurse_history = app
        .graphql(
            "query($id: UUID!) { patient(id: $id) { history { edges { cursor } } } }",
            json!({ "id": third }),
            Some(&staff.nurse),
        )
        .await;
    assert_eq!(
        error_code(&nurse_history),
        Some("FORBIDDEN"),
        "{nurse_history}"
    );
}

#[tokio::test]
async fn registration_and_updates_refuse_bad_input_field_by_field() {
    let app = spawn_app().await;
    let staff = hospital_with_staff(&app, "DMC001").await;
    let desk = staff.receptionist.as_str();
    let base = json!({ "familyName": "Kamau", "dateOfBirth": "1990-04-01", "sex": "MALE" });
    let with = |key: &str, value: Value| {
        let mut input = base.clone();
        input[key] = value;
        input
    };
    let future = (chrono::Utc::now().date_naive() + chrono::Duration::days(2)).to_string();
    let cases = [
        ("familyName", with("familyName", json!("   "))),
        ("familyName", with("familyName", json!("x".repeat(101)))),
        ("givenName", with("givenName", json!("a\u{7}b"))),
        ("phone", with("phone", json!("call me"))),
        ("email", with("email", json!("not-an-email"))),
        ("dateOfBirth", with("dateOfBirth", json!(future))),
        ("dateOfBirth", with("dateOfBirth", json!("1800-01-01"))),
        (
            "address.country",
            with(
                "address",
                json!({ "line1": "1 Road", "city": "Nairobi", "country": "Kenya" }),
            ),
        ),
        (
            "emergencyContact.phone",
            with(
                "emergencyContact",
                json!({ "name": "A", "relationship": "B", "phone": "12" }),
            ),
        ),
        (
            "idempotencyKey",
            with("idempotencyKey", json!("k".repeat(200))),
        ),
    ];
    for (expected, input) in cases {
        let response = register(&app, desk, input.clone()).await;
        assert_eq!(
            error_code(&response),
            Some("VALIDATION"),
            "{input}: {response}"
        );
        assert_eq!(field(&response), Some(expected), "{input}: {response}");
    }
    let duplicate_allergy = register(
        &app,
        desk,
        with(
            "allergies",
            json!([
                { "substance": "Latex", "severity": "MILD" },
                { "substance": "LATEX", "severity": "SEVERE" }
            ]),
        ),
    )
    .await;
    assert_eq!(error_code(&duplicate_allergy), Some("CONFLICT"));

    // Nothing was registered by the refusals.
    assert!(search(&app, desk, "").await.is_empty());
    let id = register_simple(&app, desk, "Otieno", "Kamau").await;

    // Updates: only the given fields change; null clears; versions are checked.
    let updated = mutate(
        &app,
        desk,
        "updatePatient",
        "UpdatePatientInput",
        json!({ "id": id, "phone": "0712-000-111", "email": "otieno@example.com", "expectedVersion": 1 }),
    )
    .await;
    let p = &updated["data"]["updatePatient"];
    assert_eq!(p["phone"], "0712000111", "{updated}");
    assert_eq!(p["givenName"], "Otieno");
    assert_eq!(p["dateOfBirth"], "1985-06-15");
    assert_eq!(p["version"], 2);
    let cleared = mutate(
        &app,
        desk,
        "updatePatient",
        "UpdatePatientInput",
        json!({ "id": id, "email": null, "givenName": "Otieno Juma" }),
    )
    .await;
    let p = &cleared["data"]["updatePatient"];
    assert_eq!(p["email"], Value::Null, "{cleared}");
    assert_eq!(p["phone"], "0712000111");
    assert_eq!(p["fullName"], "Otieno Juma Kamau");
    assert_eq!(p["version"], 3);
    let stale = mutate(
        &app,
        desk,
        "updatePatient",
        "UpdatePatientInput",
        json!({ "id": id, "sex": "FEMALE", "expectedVersion": 2 }),
    )
    .await;
    assert_eq!(error_code(&stale), Some("CONFLICT"), "{stale}");
    let bad = mutate(
        &app,
        desk,
        "updatePatient",
        "UpdatePatientInput",
        json!({ "id": id, "dateOfBirth": future }),
    )
    .await;
    assert_eq!(field(&bad), Some("dateOfBirth"), "{bad}");
    let missing = mutate(
        &app,
        desk,
        "updatePatient",
        "UpdatePatientInput",
        json!({ "id": Uuid::new_v4(), "sex": "FEMALE" }),
    )
    .await;
    assert_eq!(error_code(&missing), Some("NOT_FOUND"), "{missing}");
    let forbidden = mutate(
        &app,
        &staff.doctor,
        "updatePatient",
        "UpdatePatientInput",
        json!({ "id": id, "sex": "FEMALE" }),
    )
    .await;
    assert_eq!(error_code(&forbidden), Some("FORBIDDEN"));

    // A retried registration with the same key registers once and answers the same.
    let input = json!({ "familyName": "Retry", "dateOfBirth": "1970-01-01", "sex": "MALE", "idempotencyKey": "reg-1" });
    let first = register(&app, desk, input.clone()).await;
    let again = register(&app, desk, input).await;
    assert_eq!(
        first["data"]["registerPatient"]["id"],
        again["data"]["registerPatient"]["id"]
    );
    assert_eq!(search(&app, desk, "retry").await.len(), 1);
    let reused = register(
        &app,
        desk,
        json!({ "familyName": "Other", "dateOfBirth": "1970-01-01", "sex": "MALE", "idempotencyKey": "reg-1" }),
    )
    .await;
    assert_eq!(field(&reused), Some("idempotencyKey"), "{reused}");
}

#[tokio::test]
async fn allergies_alerts_death_deactivation_and_merging_follow_the_rules() {
    let app = spawn_app().await;
    let staff = hospital_with_staff(&app, "DMC001").await;
    let desk = staff.receptionist.as_str();
    let nurse = staff.nurse.as_str();
    let id = register_simple(&app, desk, "Otieno", "Kamau").await;

    // Allergies: once per substance, removed ignoring case; NURSE yes, RECEPTIONIST no.
    let allergy = |substance: &str| json!({ "patientId": id, "allergy": { "substance": substance, "severity": "LIFE_THREATENING" } });
    let recorded = mutate(
        &app,
        nurse,
        "recordAllergy",
        "RecordAllergyInput",
        allergy("Peanuts"),
    )
    .await;
    assert_eq!(
        recorded["data"]["recordAllergy"]["allergies"][0]["severity"], "LIFE_THREATENING",
        "{recorded}"
    );
    let again = mutate(
        &app,
        nurse,
        "recordAllergy",
        "RecordAllergyInput",
        allergy("PEANUTS"),
    )
    .await;
    assert_eq!(error_code(&again), Some("CONFLICT"));
    let desk_try = mutate(
        &app,
        desk,
        "recordAllergy",
        "RecordAllergyInput",
        allergy("Dust"),
    )
    .await;
    assert_eq!(error_code(&desk_try), Some("FORBIDDEN"));
    let removed = mutate(
        &app,
        nurse,
        "removeAllergy",
        "RemoveAllergyInput",
        json!({ "patientId": id, "substance": "peanuts" }),
    )
    .await;
    assert_eq!(
        removed["data"]["removeAllergy"]["allergies"],
        json!([]),
        "{removed}"
    );
    let not_there = mutate(
        &app,
        nurse,
        "removeAllergy",
        "RemoveAllergyInput",
        json!({ "patientId": id, "substance": "peanuts" }),
    )
    .await;
    assert_eq!(field(&not_there), Some("substance"), "{not_there}");

    // Alerts.
    let added = mutate(
        &app,
        nurse,
        "addPatientAlert",
        "AddPatientAlertInput",
        json!({ "patientId": id, "text": "Fall risk" }),
    )
    .await;
    let alert_id = added["data"]["addPatientAlert"]["alerts"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{added}"))
        .to_owned();
    let resolved = mutate(
        &app,
        nurse,
        "resolvePatientAlert",
        "ResolvePatientAlertInput",
        json!({ "patientId": id, "alertId": alert_id }),
    )
    .await;
    assert_eq!(resolved["data"]["resolvePatientAlert"]["alerts"], json!([]));
    let unknown_alert = mutate(
        &app,
        nurse,
        "resolvePatientAlert",
        "ResolvePatientAlertInput",
        json!({ "patientId": id, "alertId": alert_id }),
    )
    .await;
    assert_eq!(error_code(&unknown_alert), Some("NOT_FOUND"));

    // Death: DOCTOR only, never in the future, recorded once.
    let now = chrono::Utc::now();
    let deceased =
        |at: chrono::DateTime<chrono::Utc>| json!({ "patientId": id, "diedAt": at.to_rfc3339() });
    let by_nurse = mutate(
        &app,
        nurse,
        "markPatientDeceased",
        "MarkPatientDeceasedInput",
        deceased(now),
    )
    .await;
    assert_eq!(error_code(&by_nurse), Some("FORBIDDEN"));
    let future = mutate(
        &app,
        &staff.doctor,
        "markPatientDeceased",
        "MarkPatientDeceasedInput",
        deceased(now + chrono::Duration::days(1)),
    )
    .await;
    assert_eq!(field(&future), Some("diedAt"), "{future}");
    let died_at = now - chrono::Duration::hours(1);
    let dead = mutate(
        &app,
        &staff.doctor,
        "markPatientDeceased",
        "MarkPatientDeceasedInput",
        deceased(died_at),
    )
    .await;
    assert_eq!(
        dead["data"]["markPatientDeceased"]["status"], "DECEASED",
        "{dead}"
    );
    assert!(dead["data"]["markPatientDeceased"]["diedAt"].is_string());
    let twice = mutate(
        &app,
        &staff.doctor,
        "markPatientDeceased",
        "MarkPatientDeceasedInput",
        deceased(died_at),
    )
    .await;
    assert_eq!(error_code(&twice), Some("CONFLICT"));

    // Deactivation: HOSPITAL_ADMIN; only an active patient; reactivation.
    let other = register_simple(&app, desk, "Amina", "Odhiambo").await;
    let deactivate = json!({ "patientId": other, "reason": "Moved away" });
    let by_desk = mutate(
        &app,
        desk,
        "deactivatePatient",
        "DeactivatePatientInput",
        deactivate.clone(),
    )
    .await;
    assert_eq!(error_code(&by_desk), Some("FORBIDDEN"));
    let off = mutate(
        &app,
        &staff.admin,
        "deactivatePatient",
        "DeactivatePatientInput",
        deactivate.clone(),
    )
    .await;
    assert_eq!(
        off["data"]["deactivatePatient"]["status"], "INACTIVE",
        "{off}"
    );
    let off_again = mutate(
        &app,
        &staff.admin,
        "deactivatePatient",
        "DeactivatePatientInput",
        deactivate,
    )
    .await;
    assert_eq!(error_code(&off_again), Some("CONFLICT"));
    let on = mutate(
        &app,
        &staff.admin,
        "reactivatePatient",
        "ReactivatePatientInput",
        json!({ "patientId": other }),
    )
    .await;
    assert_eq!(on["data"]["reactivatePatient"]["status"], "ACTIVE", "{on}");

    // Merging: the duplicate points to the survivor and becomes read-only.
    let survivor = register_simple(&app, desk, "Juma", "Mwangi").await;
    let duplicate = register_simple(&app, desk, "Juma", "Mwangi").await;
    let merge = |dup: &str, surv: &str| json!({ "duplicateId": dup, "survivorId": surv });
    let by_desk = mutate(
        &app,
        desk,
        "mergePatients",
        "MergePatientsInput",
        merge(&duplicate, &survivor),
    )
    .await;
    assert_eq!(error_code(&by_desk), Some("FORBIDDEN"));
    let into_self = mutate(
        &app,
        &staff.admin,
        "mergePatients",
        "MergePatientsInput",
        merge(&survivor, &survivor),
    )
    .await;
    assert_eq!(field(&into_self), Some("survivorId"), "{into_self}");
    let into_dead = mutate(
        &app,
        &staff.admin,
        "mergePatients",
        "MergePatientsInput",
        merge(&duplicate, &id),
    )
    .await;
    assert_eq!(
        error_code(&into_dead),
        Some("CONFLICT"),
        "the survivor must be active"
    );
    let unknown = mutate(
        &app,
        &staff.admin,
        "mergePatients",
        "MergePatientsInput",
        merge(&Uuid::new_v4().to_string(), &survivor),
    )
    .await;
    assert_eq!(error_code(&unknown), Some("NOT_FOUND"));
    let merged = mutate(
        &app,
        &staff.admin,
        "mergePatients",
        "MergePatientsInput",
        merge(&duplicate, &survivor),
    )
    .await;
    assert_eq!(
        merged["data"]["mergePatients"]["id"],
        survivor.as_str(),
        "{merged}"
    );
    assert_eq!(merged["data"]["mergePatients"]["status"], "ACTIVE");
    let old = app
        .graphql(
            "query($id: UUID!) { patient(id: $id) { status mergedInto mrn } }",
            json!({ "id": duplicate }),
            Some(desk),
        )
        .await;
    assert_eq!(old["data"]["patient"]["status"], "MERGED");
    assert_eq!(old["data"]["patient"]["mergedInto"], survivor.as_str());
    let update_old = mutate(
        &app,
        desk,
        "updatePatient",
        "UpdatePatientInput",
        json!({ "id": duplicate, "sex": "FEMALE" }),
    )
    .await;
    assert_eq!(error_code(&update_old), Some("CONFLICT"), "{update_old}");
    assert!(
        update_old["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&survivor)),
        "the refusal names the survivor: {update_old}"
    );
    let twice = mutate(
        &app,
        &staff.admin,
        "mergePatients",
        "MergePatientsInput",
        merge(&duplicate, &survivor),
    )
    .await;
    assert_eq!(error_code(&twice), Some("CONFLICT"));
    // A name search shows the survivor only; the old MRN still finds the duplicate.
    assert_eq!(search(&app, desk, "mwangi").await, ["Mwangi"]);
    let old_mrn = old["data"]["patient"]["mrn"].as_str().expect("mrn");
    assert_eq!(search(&app, desk, old_mrn).await, ["Mwangi"]);

    let mut db = app.connect(&app.database_for("DMC001")).await;
    let events: Vec<(String, String)> = sqlx::query_as(
        "SELECT aggregate_id, event_type FROM events WHERE event_type IN ('PatientMergedInto', 'DuplicateAbsorbed') \
          ORDER BY position",
    )
    .fetch_all(&mut db)
    .await
    .expect("events");
    assert_eq!(
        events,
        [
            (duplicate.clone(), "PatientMergedInto".to_owned()),
            (survivor.clone(), "DuplicateAbsorbed".to_owned())
        ]
    );
}

/// A one-word search matches family or given names: the page order (family, given, id)
/// holds across both, a patient matching by both names comes once, and keyset pages
/// continue where the last ended.
#[tokio::test]
async fn a_name_search_pages_through_family_and_given_name_matches_in_name_order() {
    let app = spawn_app().await;
    let staff = hospital_with_staff(&app, "DMC001").await;
    let desk = staff.receptionist.as_str();
    for (given, family) in [
        ("Kato", "Zulu"),
        ("Otieno", "Kamau"),
        ("Kamande", "Kariuki"),
        ("Amina", "Kamara"),
        ("Kanini", "Odhiambo"),
        ("Wanjiku", "Njoroge"),
        ("Akinyi", "Kamau"),
    ] {
        register_simple(&app, desk, given, family).await;
    }
    let expected = [
        "Kamara Amina",
        "Kamau Akinyi",
        "Kamau Otieno",
        "Kariuki Kamande",
        "Odhiambo Kanini",
        "Zulu Kato",
    ];
    for first in [1, 2, 50] {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = app
                .graphql(
                    "query($first: Int, $after: String) { patients(search: \"KA\", first: $first, after: $after) { \
                       edges { node { familyName givenName } } pageInfo { hasNextPage endCursor } } }",
                    json!({ "first": first, "after": after }),
                    Some(desk),
                )
                .await;
            let connection = &page["data"]["patients"];
            let edges = connection["edges"]
                .as_array()
                .unwrap_or_else(|| panic!("{page}"));
            assert!(edges.len() <= first, "{page}");
            seen.extend(edges.iter().map(|e| {
                format!(
                    "{} {}",
                    e["node"]["familyName"].as_str().unwrap_or_default(),
                    e["node"]["givenName"].as_str().unwrap_or_default()
                )
            }));
            if connection["pageInfo"]["hasNextPage"] != true {
                break;
            }
            after = connection["pageInfo"]["endCursor"]
                .as_str()
                .map(str::to_owned);
        }
        assert_eq!(seen, expected, "pages of {first}");
    }
}
