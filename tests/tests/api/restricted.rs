//! Restricted records and break-glass through the API: the care team and the staff named
//! read a restricted record in full, anyone else sees only who the patient is until they
//! break the glass with a reason; every read under break-glass is recorded as such; the
//! privacy officer reviews each access, once.

use hms_tests::fixtures::{event_count, hospital_with_staff, register_patient, user_id};
use hms_tests::{error_code, spawn_app, TestApp};
use serde_json::{json, Value};
use uuid::Uuid;

const PATIENT: &str =
    "query($id: UUID!) { patient(id: $id) { id fullName restricted phone alerts { text } } }";

async fn read(app: &TestApp, token: &str, patient: Uuid) -> Value {
    app.graphql(PATIENT, json!({ "id": patient }), Some(token))
        .await
}

/// Whether the response shows the whole record (no error, `alerts` a list).
fn full(response: &Value) -> bool {
    response["errors"].is_null() && response["data"]["patient"]["alerts"].is_array()
}

/// The response shows the patient's identity and withholds the rest as restricted.
fn identity_only(response: &Value) -> bool {
    response["data"]["patient"]["fullName"].is_string()
        && response["data"]["patient"]["restricted"] == true
        && response["data"]["patient"]["alerts"].is_null()
        && response["errors"]
            .as_array()
            .is_some_and(|e| e.iter().all(|e| e["extensions"]["restricted"] == true))
}

async fn restrict(app: &TestApp, admin: &str, input: Value) -> Value {
    app.graphql(
        "mutation($i: RestrictPatientRecordInput!) { restrictPatientRecord(input: $i) { id restricted version } }",
        json!({ "i": input }),
        Some(admin),
    )
    .await
}

async fn break_glass(app: &TestApp, token: &str, input: Value) -> Value {
    app.graphql(
        "mutation($i: BreakGlassInput!) { breakGlass(input: $i) { grantId patientId reason expiresAt } }",
        json!({ "i": input }),
        Some(token),
    )
    .await
}

#[tokio::test]
async fn a_restricted_record_is_read_by_its_care_team_and_through_the_glass_only() {
    let app = spawn_app().await;
    let staff = hospital_with_staff(&app, "RST001").await;
    crate::laboratory::catalogue(&app, &staff.admin).await;
    crate::appointments::set_time_zone(&app, "RST001", "Africa/Nairobi").await;
    let patient = register_patient(&app, "RST001", "Achieng").await;
    let other_patient = register_patient(&app, "RST001", "Mutua").await;

    // The doctor orders a test for the patient: on the care team. The nurse is named.
    let ordered = app
        .graphql(
            "mutation($i: OrderLabTestsInput!) { orderLabTests(input: $i) { id } }",
            json!({ "i": { "patientId": patient, "tests": ["2823-3"] } }),
            Some(&staff.doctor),
        )
        .await;
    assert!(ordered["errors"].is_null(), "{ordered}");
    let nurse_id = user_id("rst001_nurse");

    // Only the administrator restricts, with a reason; a restricted record says so.
    let by_doctor = restrict(
        &app,
        &staff.doctor,
        json!({ "patientId": patient, "restricted": true, "reason": "staff member" }),
    )
    .await;
    assert_eq!(error_code(&by_doctor), Some("FORBIDDEN"), "{by_doctor}");
    let no_reason = restrict(
        &app,
        &staff.admin,
        json!({ "patientId": patient, "restricted": true, "reason": " " }),
    )
    .await;
    assert_eq!(error_code(&no_reason), Some("VALIDATION"), "{no_reason}");
    let stranger = restrict(
        &app,
        &staff.admin,
        json!({ "patientId": patient, "restricted": true, "reason": "staff member",
                "namedUsers": [Uuid::new_v4()] }),
    )
    .await;
    assert_eq!(error_code(&stranger), Some("VALIDATION"), "{stranger}");
    let restricted = restrict(
        &app,
        &staff.admin,
        json!({ "patientId": patient, "restricted": true, "reason": "staff member",
                "namedUsers": [nurse_id] }),
    )
    .await;
    assert_eq!(
        restricted["data"]["restrictPatientRecord"]["restricted"], true,
        "{restricted}"
    );

    // The care team and the named nurse read it in full; another doctor sees who the
    // patient is, and that the record is restricted; lab results are refused.
    assert!(full(&read(&app, &staff.doctor, patient).await));
    assert!(full(&read(&app, &staff.nurse, patient).await));
    let outside = read(&app, &staff.other_doctor, patient).await;
    assert!(identity_only(&outside), "{outside}");
    let results = app
        .graphql(
            "query($p: UUID!) { patientLabResults(patientId: $p) { nodes { code } } }",
            json!({ "p": patient }),
            Some(&staff.other_doctor),
        )
        .await;
    assert_eq!(error_code(&results), Some("FORBIDDEN"), "{results}");
    assert_eq!(results["errors"][0]["extensions"]["restricted"], true);
    // Outside the care team, one cannot join it by ordering or booking oneself; the lab
    // worklist shows that an order exists, not what it says.
    let order = app
        .graphql(
            "mutation($i: OrderLabTestsInput!) { orderLabTests(input: $i) { id } }",
            json!({ "i": { "patientId": patient, "tests": ["2823-3"] } }),
            Some(&staff.other_doctor),
        )
        .await;
    assert_eq!(error_code(&order), Some("FORBIDDEN"), "{order}");
    assert_eq!(order["errors"][0]["extensions"]["restricted"], true);
    let self_booked = app
        .graphql(
            "mutation($i: ScheduleAppointmentInput!) { scheduleAppointment(input: $i) { id } }",
            json!({ "i": { "patientId": patient, "doctorId": staff.other_doctor_id,
                           "start": crate::appointments::nairobi(hms_tests::fixtures::next_monday(), 11, 0),
                           "durationMinutes": 30, "reason": "a pretext" } }),
            Some(&staff.other_doctor),
        )
        .await;
    assert_eq!(error_code(&self_booked), Some("FORBIDDEN"), "{self_booked}");
    let worklist = app
        .graphql(
            "query($p: UUID!) { labOrders(filter: { patientId: $p }) { nodes { id clinicalNote tests { code } } } }",
            json!({ "p": patient }),
            Some(&staff.other_doctor),
        )
        .await;
    let listed = &worklist["data"]["labOrders"]["nodes"][0];
    assert!(listed["id"].is_string(), "{worklist}");
    assert!(
        listed["tests"].is_null() && listed["clinicalNote"].is_null(),
        "{worklist}"
    );
    assert_eq!(
        worklist["errors"][0]["extensions"]["restricted"], true,
        "{worklist}"
    );

    // A visit's reason is the patient's record too: withheld from the other doctor.
    let booked = app
        .graphql(
            "mutation($i: ScheduleAppointmentInput!) { scheduleAppointment(input: $i) { id reason } }",
            json!({ "i": { "patientId": patient, "doctorId": staff.doctor_id,
                           "start": crate::appointments::nairobi(hms_tests::fixtures::next_monday(), 10, 0),
                           "durationMinutes": 30, "reason": "sensitive visit" } }),
            Some(&staff.receptionist),
        )
        .await;
    let appointment = booked["data"]["scheduleAppointment"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{booked}"))
        .to_owned();
    let visit = "query($id: UUID!) { appointment(id: $id) { id reason } }";
    // The booking's answer shows and withholds exactly what a read of it does
    // (docs/adr/0017: the answer may be the row the round handed over).
    let read_back = app
        .graphql(
            visit,
            json!({ "id": appointment }),
            Some(&staff.receptionist),
        )
        .await;
    assert_eq!(
        read_back["data"]["appointment"], booked["data"]["scheduleAppointment"],
        "{read_back} against {booked}"
    );
    assert_eq!(
        read_back["errors"][0]["extensions"], booked["errors"][0]["extensions"],
        "{read_back} against {booked}"
    );
    let seen = app
        .graphql(visit, json!({ "id": appointment }), Some(&staff.doctor))
        .await;
    assert_eq!(
        seen["data"]["appointment"]["reason"], "sensitive visit",
        "{seen}"
    );
    let hidden = app
        .graphql(
            visit,
            json!({ "id": appointment }),
            Some(&staff.other_doctor),
        )
        .await;
    assert!(
        hidden["data"]["appointment"]["reason"].is_null(),
        "{hidden}"
    );
    assert_eq!(
        hidden["errors"][0]["extensions"]["restricted"], true,
        "{hidden}"
    );

    // Other records are not affected.
    assert!(full(&read(&app, &staff.other_doctor, other_patient).await));
    // Lists show a restricted record's identity only, to everyone.
    let listed = app
        .graphql(
            "{ patients(search: \"achieng\") { nodes { id restricted phone } } }",
            json!({}),
            Some(&staff.doctor),
        )
        .await;
    assert_eq!(
        listed["data"]["patients"]["nodes"][0]["restricted"], true,
        "{listed}"
    );
    assert_eq!(
        listed["errors"][0]["extensions"]["restricted"], true,
        "{listed}"
    );

    // Breaking the glass: clinical roles only, with a reason and a note.
    let desk = break_glass(
        &app,
        &staff.receptionist,
        json!({ "patientId": patient, "reason": "EMERGENCY_TREATMENT", "note": "x" }),
    )
    .await;
    assert_eq!(error_code(&desk), Some("FORBIDDEN"), "{desk}");
    let before = event_count(&app, "RST001").await;
    let silent = break_glass(
        &app,
        &staff.other_doctor,
        json!({ "patientId": patient, "reason": "EMERGENCY_TREATMENT", "note": "  " }),
    )
    .await;
    assert_eq!(error_code(&silent), Some("VALIDATION"), "{silent}");
    assert_eq!(
        event_count(&app, "RST001").await,
        before,
        "a refusal appends nothing"
    );
    let on_team = break_glass(
        &app,
        &staff.doctor,
        json!({ "patientId": patient, "reason": "EMERGENCY_TREATMENT", "note": "seen in ER" }),
    )
    .await;
    assert_eq!(error_code(&on_team), Some("CONFLICT"), "{on_team}");
    let unrestricted = break_glass(
        &app,
        &staff.other_doctor,
        json!({ "patientId": other_patient, "reason": "EMERGENCY_TREATMENT", "note": "ER" }),
    )
    .await;
    assert_eq!(
        error_code(&unrestricted),
        Some("CONFLICT"),
        "{unrestricted}"
    );
    let opened_at = chrono::Utc::now();
    let grant = break_glass(
        &app,
        &staff.other_doctor,
        json!({ "patientId": patient, "reason": "EMERGENCY_TREATMENT",
                "note": "collapsed in the waiting room; history needed" }),
    )
    .await;
    let grant = &grant["data"]["breakGlass"];
    let expires: chrono::DateTime<chrono::Utc> = grant["expiresAt"]
        .as_str()
        .expect("expiry")
        .parse()
        .expect("instant");
    let minutes = (expires - opened_at).num_minutes();
    assert!((59..=60).contains(&minutes), "60-minute grant: {grant}");
    let again = break_glass(
        &app,
        &staff.other_doctor,
        json!({ "patientId": patient, "reason": "EMERGENCY_TREATMENT", "note": "again" }),
    )
    .await;
    assert_eq!(error_code(&again), Some("CONFLICT"), "{again}");

    // Under the grant the record and its results are readable, and recorded as such.
    assert!(full(&read(&app, &staff.other_doctor, patient).await));
    let results = app
        .graphql(
            "query($p: UUID!) { patientLabResults(patientId: $p) { nodes { code } } }",
            json!({ "p": patient }),
            Some(&staff.other_doctor),
        )
        .await;
    assert!(results["errors"].is_null(), "{results}");
    // A list read under the grant is recorded as break-glass too.
    let visits = app
        .graphql(
            "query($p: UUID!) { appointments(filter: { patientId: $p }) { nodes { reason } } }",
            json!({ "p": patient }),
            Some(&staff.other_doctor),
        )
        .await;
    assert_eq!(
        visits["data"]["appointments"]["nodes"][0]["reason"], "sensitive visit",
        "{visits}"
    );
    let lease = app.state.registry.get("RST001").await.expect("tenant");
    crate::projections::drain(&lease.pool, &app.state.runner).await;
    let purposes: Vec<String> = sqlx::query_scalar(
        "SELECT purpose FROM patient_access_log WHERE patient_id = $1 AND viewer_id = $2 \
          ORDER BY viewed_at",
    )
    .bind(patient)
    .bind(staff.other_doctor_id)
    .fetch_all(&lease.pool)
    .await
    .expect("access log");
    assert_eq!(
        purposes,
        vec![
            "patient:identity",
            "lab worklist",
            "appointments",
            "break-glass:EMERGENCY_TREATMENT:patient",
            "break-glass:EMERGENCY_TREATMENT:lab results",
            "break-glass:EMERGENCY_TREATMENT:appointments"
        ],
        "{purposes:?}"
    );

    // The privacy officer's queue, and a final review.
    let queue = "query($all: Boolean!) { breakGlassAccesses(includeReviewed: $all) { nodes { grantId username reason note outcome } } }";
    let pending = app
        .graphql(queue, json!({ "all": false }), Some(&staff.admin))
        .await;
    let nodes = &pending["data"]["breakGlassAccesses"]["nodes"];
    assert_eq!(nodes.as_array().map(Vec::len), Some(1), "{pending}");
    assert_eq!(nodes[0]["reason"], "EMERGENCY_TREATMENT");
    assert_eq!(nodes[0]["username"], "rst001_doc2");
    let denied = app
        .graphql(queue, json!({ "all": false }), Some(&staff.doctor))
        .await;
    assert_eq!(error_code(&denied), Some("FORBIDDEN"), "{denied}");
    let review = "mutation($i: ReviewBreakGlassInput!) { reviewBreakGlass(input: $i) { outcome reviewNote reviewerUsername } }";
    let unexplained = app
        .graphql(
            review,
            json!({ "i": { "grantId": grant["grantId"], "outcome": "NOT_JUSTIFIED" } }),
            Some(&staff.admin),
        )
        .await;
    assert_eq!(
        error_code(&unexplained),
        Some("VALIDATION"),
        "{unexplained}"
    );
    let reviewed = app
        .graphql(
            review,
            json!({ "i": { "grantId": grant["grantId"], "outcome": "JUSTIFIED",
                           "note": "confirmed with the ER log" } }),
            Some(&staff.admin),
        )
        .await;
    assert_eq!(
        reviewed["data"]["reviewBreakGlass"]["outcome"], "JUSTIFIED",
        "{reviewed}"
    );
    let twice = app
        .graphql(
            review,
            json!({ "i": { "grantId": grant["grantId"], "outcome": "NOT_JUSTIFIED", "note": "x" } }),
            Some(&staff.admin),
        )
        .await;
    assert_eq!(error_code(&twice), Some("CONFLICT"), "{twice}");
    let pending = app
        .graphql(queue, json!({ "all": false }), Some(&staff.admin))
        .await;
    assert_eq!(
        pending["data"]["breakGlassAccesses"]["nodes"],
        json!([]),
        "{pending}"
    );
    let all = app
        .graphql(queue, json!({ "all": true }), Some(&staff.admin))
        .await;
    assert_eq!(
        all["data"]["breakGlassAccesses"]["nodes"][0]["outcome"], "JUSTIFIED",
        "{all}"
    );

    // Lifting the restriction opens the record to every reader again.
    let lifted = restrict(
        &app,
        &staff.admin,
        json!({ "patientId": patient, "restricted": false, "reason": "left the hospital" }),
    )
    .await;
    assert_eq!(
        lifted["data"]["restrictPatientRecord"]["restricted"], false,
        "{lifted}"
    );
    assert!(
        full(&read(&app, &staff.accountant, patient).await) || {
            // The accountant reads no clinical field whatever the restriction.
            let r = read(&app, &staff.accountant, patient).await;
            r["data"]["patient"]["restricted"] == false
                && r["errors"][0]["extensions"]["withheld"] == "Clinical"
        }
    );

    // Another hospital cannot restrict, break into or review this one's records.
    let other = hospital_with_staff(&app, "RST002").await;
    let foreign = restrict(
        &app,
        &other.admin,
        json!({ "patientId": patient, "restricted": true, "reason": "x" }),
    )
    .await;
    assert_eq!(error_code(&foreign), Some("NOT_FOUND"), "{foreign}");
    let foreign = break_glass(
        &app,
        &other.doctor,
        json!({ "patientId": patient, "reason": "OTHER", "note": "x" }),
    )
    .await;
    assert_eq!(error_code(&foreign), Some("NOT_FOUND"), "{foreign}");
    let foreign = app
        .graphql(
            review,
            json!({ "i": { "grantId": grant["grantId"], "outcome": "JUSTIFIED" } }),
            Some(&other.admin),
        )
        .await;
    assert_eq!(error_code(&foreign), Some("NOT_FOUND"), "{foreign}");
}
