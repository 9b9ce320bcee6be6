//! Audit through the API: the trail in commit order with filters and paging, a patient
//! as of an instant, and the access log of who read a record.

use hms_domain::Role;
use hms_tests::fixtures::{register_patient, rename_patient, staff, user_id};
use hms_tests::{error_code, spawn_app, ADMIN_PASSWORD};
use serde_json::{json, Value};
use uuid::Uuid;

const TRAIL: &str = "query($filter: AuditTrailFilter, $first: Int, $after: String) { \
    auditTrail(filter: $filter, first: $first, after: $after) { \
      edges { cursor node { position recordedAt actor { id username role } aggregateType \
        aggregateId sequence eventType eventVersion payload metadata } } \
      pageInfo { hasNextPage endCursor } } }";

fn nodes(response: &Value) -> Vec<Value> {
    response["data"]["auditTrail"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no trail: {response}"))
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

fn event_types(nodes: &[Value]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| n["eventType"].as_str().expect("type").to_owned())
        .collect()
}

#[tokio::test]
async fn the_audit_trail_shows_who_did_what_in_commit_order() {
    let app = spawn_app().await;
    let admin_name = app.setup_hospital("AUD001").await;
    let admin = app.login(Some("AUD001"), &admin_name, ADMIN_PASSWORD).await;
    let accountant = staff(&app, "AUD001", "acc.audit", Role::Accountant).await;
    let patient = register_patient(&app, "AUD001", "Mwangi").await.to_string();

    let draft = app
        .graphql(
            "mutation($input: CreateInvoiceInput!) { createInvoice(input: $input) { id } }",
            json!({ "input": { "patientId": patient, "currency": "KES" } }),
            Some(&accountant),
        )
        .await;
    let invoice = draft["data"]["createInvoice"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{draft}"))
        .to_owned();
    for (code, price) in [("A", 100), ("B", 200)] {
        let added = app
            .graphql(
                "mutation($input: AddInvoiceLineInput!) { addInvoiceLine(input: $input) { id } }",
                json!({ "input": { "invoiceId": invoice, "code": code, "description": code,
                                   "quantity": 1, "unitPriceMinor": price } }),
                Some(&accountant),
            )
            .await;
        assert!(added["errors"].is_null(), "{added}");
    }

    // Only administrators read the trail.
    let refused = app.graphql(TRAIL, json!({}), Some(&accountant)).await;
    assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{refused}");

    // The whole log, in commit order: the hospital's set-up first, our invoice last.
    let all = app
        .graphql(TRAIL, json!({ "first": 100 }), Some(&admin))
        .await;
    let everything = nodes(&all);
    assert_eq!(everything[0]["aggregateType"], "hospital", "{all}");
    let tail = event_types(&everything[everything.len() - 3..]);
    assert_eq!(
        tail,
        ["InvoiceDrafted", "InvoiceLineAdded", "InvoiceLineAdded"]
    );
    // Password hashes never leave the server.
    let text = all.to_string();
    assert!(text.contains("UserCreated"), "the trail has user events");
    assert!(!text.contains("$argon2"), "a password hash leaked: {text}");

    // Filters: one record; one actor; one event type; a time window.
    let invoice_filter = json!({ "aggregateType": "invoice", "aggregateId": invoice });
    let of_invoice = app
        .graphql(TRAIL, json!({ "filter": invoice_filter }), Some(&admin))
        .await;
    let of_invoice = nodes(&of_invoice);
    assert_eq!(
        event_types(&of_invoice),
        ["InvoiceDrafted", "InvoiceLineAdded", "InvoiceLineAdded"]
    );
    let sequences: Vec<i64> = of_invoice
        .iter()
        .map(|n| n["sequence"].as_i64().expect("sequence"))
        .collect();
    assert_eq!(sequences, [1, 2, 3]);
    assert_eq!(of_invoice[0]["actor"]["username"], "acc.audit");
    assert_eq!(of_invoice[0]["actor"]["role"], "ACCOUNTANT");
    assert_eq!(of_invoice[0]["actor"]["id"], user_id("acc.audit"));
    assert_eq!(
        of_invoice[1]["payload"]["InvoiceLineAdded"]["line"]["code"],
        "A"
    );
    let positions: Vec<i64> = of_invoice
        .iter()
        .map(|n| n["position"].as_i64().expect("position"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

    let by_actor = app
        .graphql(
            TRAIL,
            json!({ "filter": { "actorId": user_id("acc.audit") } }),
            Some(&admin),
        )
        .await;
    let by_actor = nodes(&by_actor);
    assert_eq!(by_actor.len(), 3, "{by_actor:?}");
    assert!(by_actor
        .iter()
        .all(|n| n["actor"]["username"] == "acc.audit"));

    let by_type = app
        .graphql(
            TRAIL,
            json!({ "filter": { "eventType": "InvoiceLineAdded" } }),
            Some(&admin),
        )
        .await;
    assert_eq!(nodes(&by_type).len(), 2);

    let second_at = of_invoice[1]["recordedAt"].clone();
    let window = app
        .graphql(
            TRAIL,
            json!({ "filter": { "aggregateType": "invoice", "from": second_at } }),
            Some(&admin),
        )
        .await;
    assert_eq!(
        event_types(&nodes(&window)),
        ["InvoiceLineAdded", "InvoiceLineAdded"]
    );
    let before = app
        .graphql(
            TRAIL,
            json!({ "filter": { "aggregateType": "invoice", "to": second_at } }),
            Some(&admin),
        )
        .await;
    assert_eq!(event_types(&nodes(&before)), ["InvoiceDrafted"]);

    // Paging one entry at a time gives the same entries, in the same order.
    let mut paged = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = app
            .graphql(
                TRAIL,
                json!({ "filter": invoice_filter, "first": 1, "after": after }),
                Some(&admin),
            )
            .await;
        paged.extend(nodes(&page));
        let info = &page["data"]["auditTrail"]["pageInfo"];
        if info["hasNextPage"] != true {
            break;
        }
        after = info["endCursor"].clone();
    }
    assert_eq!(paged, of_invoice);

    for (variables, field) in [
        (json!({ "first": 101 }), "first"),
        (json!({ "first": 0 }), "first"),
        (json!({ "after": "not a cursor" }), "after"),
    ] {
        let refused = app.graphql(TRAIL, variables.clone(), Some(&admin)).await;
        assert_eq!(
            error_code(&refused),
            Some("VALIDATION"),
            "{variables}: {refused}"
        );
        assert_eq!(
            refused["errors"][0]["extensions"]["field"], field,
            "{variables}: {refused}"
        );
    }
}

const AS_OF: &str = "query($id: UUID!, $at: DateTime!) { patientAsOf(id: $id, at: $at) { \
    id at version lastChangedAt record } }";
const ACCESS_LOG: &str = "query($id: UUID!, $first: Int, $after: String) { \
    patientAccessLog(patientId: $id, first: $first, after: $after) { \
      edges { node { id patientId viewer { id username role } purpose clientAddr requestId viewedAt } } \
      pageInfo { hasNextPage endCursor } } }";

#[tokio::test]
async fn a_patient_as_of_an_instant_and_the_views_of_the_record() {
    let app = spawn_app().await;
    let admin_name = app.setup_hospital("AUD002").await;
    let admin = app.login(Some("AUD002"), &admin_name, ADMIN_PASSWORD).await;
    let other = app.setup_hospital("AUD003").await;
    let other = app.login(Some("AUD003"), &other, ADMIN_PASSWORD).await;
    let receptionist = staff(&app, "AUD002", "rec.audit", Role::Receptionist).await;
    let id = register_patient(&app, "AUD002", "Achieng").await;
    rename_patient(&app, "AUD002", id, "Achieng-Odhiambo").await;

    let trail = app
        .graphql(
            TRAIL,
            json!({ "filter": { "aggregateType": "patient", "aggregateId": id.to_string() } }),
            Some(&admin),
        )
        .await;
    let events = nodes(&trail);
    assert_eq!(
        event_types(&events),
        ["PatientRegistered", "PatientDemographicsUpdated"],
        "{trail}"
    );
    let registered_at = events[0]["recordedAt"].clone();
    let updated_at = events[1]["recordedAt"].clone();

    let as_of = |at: Value| {
        let app = &app;
        let admin = &admin;
        async move {
            app.graphql(
                AS_OF,
                json!({ "id": id.to_string(), "at": at }),
                Some(admin),
            )
            .await
        }
    };
    let before = as_of(registered_at.clone()).await;
    let before = &before["data"]["patientAsOf"];
    assert_eq!(before["version"], 1, "{before}");
    assert_eq!(before["lastChangedAt"], registered_at);
    assert_eq!(before["record"]["demographics"]["family_name"], "Achieng");
    assert_eq!(before["record"]["status"], "ACTIVE");
    let after = as_of(updated_at.clone()).await;
    let after = &after["data"]["patientAsOf"];
    assert_eq!(after["version"], 2, "{after}");
    assert_eq!(
        after["record"]["demographics"]["family_name"],
        "Achieng-Odhiambo"
    );
    assert_eq!(after["record"]["mrn"], before["record"]["mrn"]);
    let not_yet = as_of(json!("2000-01-01T00:00:00Z")).await;
    assert!(not_yet["errors"].is_null(), "{not_yet}");
    assert_eq!(not_yet["data"]["patientAsOf"], Value::Null);

    // Unknown, malformed, foreign, or not allowed.
    let unknown = app
        .graphql(
            AS_OF,
            json!({ "id": Uuid::new_v4(), "at": updated_at }),
            Some(&admin),
        )
        .await;
    assert_eq!(error_code(&unknown), Some("NOT_FOUND"), "{unknown}");
    let malformed = app
        .graphql(AS_OF, json!({ "id": "42", "at": updated_at }), Some(&admin))
        .await;
    assert!(malformed["errors"].is_array(), "{malformed}");
    assert_eq!(malformed["data"], Value::Null, "{malformed}");
    let foreign = app
        .graphql(
            AS_OF,
            json!({ "id": id.to_string(), "at": updated_at }),
            Some(&other),
        )
        .await;
    assert_eq!(error_code(&foreign), Some("NOT_FOUND"), "{foreign}");
    let desk = app
        .graphql(
            AS_OF,
            json!({ "id": id.to_string(), "at": updated_at }),
            Some(&receptionist),
        )
        .await;
    assert_eq!(error_code(&desk), Some("FORBIDDEN"), "{desk}");

    // The reads that returned the patient's data are in its access log, oldest first:
    // the page of the trail that carried its events, then the two records as of an
    // instant; nothing else is.
    let log = app
        .graphql(ACCESS_LOG, json!({ "id": id.to_string() }), Some(&admin))
        .await;
    let entries: Vec<Value> = log["data"]["patientAccessLog"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{log}"))
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    let purposes: Vec<&str> = entries
        .iter()
        .map(|e| e["purpose"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        purposes,
        ["auditTrail", "patientAsOf", "patientAsOf"],
        "{log}"
    );
    for entry in &entries {
        assert_eq!(entry["patientId"], id.to_string());
        assert_eq!(entry["viewer"]["username"], admin_name.as_str());
        assert_eq!(entry["viewer"]["role"], "HOSPITAL_ADMIN");
        assert!(entry["requestId"].is_string(), "{entry}");
        assert!(entry["viewedAt"].is_string(), "{entry}");
    }
    let first = app
        .graphql(
            ACCESS_LOG,
            json!({ "id": id.to_string(), "first": 1 }),
            Some(&admin),
        )
        .await;
    let info = &first["data"]["patientAccessLog"]["pageInfo"];
    assert_eq!(info["hasNextPage"], true, "{first}");
    let second = app
        .graphql(
            ACCESS_LOG,
            json!({ "id": id.to_string(), "first": 1, "after": info["endCursor"] }),
            Some(&admin),
        )
        .await;
    assert_eq!(
        second["data"]["patientAccessLog"]["edges"][0]["node"],
        entries[1]
    );
    assert_eq!(
        second["data"]["patientAccessLog"]["pageInfo"]["hasNextPage"],
        true
    );
    // The views are in the trail too, as events of their own.
    let views = app
        .graphql(
            TRAIL,
            json!({ "filter": { "eventType": "PatientRecordViewed" } }),
            Some(&admin),
        )
        .await;
    assert_eq!(nodes(&views).len(), 2, "{views}");

    let foreign_log = app
        .graphql(ACCESS_LOG, json!({ "id": id.to_string() }), Some(&other))
        .await;
    assert_eq!(error_code(&foreign_log), Some("NOT_FOUND"), "{foreign_log}");
    let desk_log = app
        .graphql(
            ACCESS_LOG,
            json!({ "id": id.to_string() }),
            Some(&receptionist),
        )
        .await;
    assert_eq!(error_code(&desk_log), Some("FORBIDDEN"), "{desk_log}");
    let too_big = app
        .graphql(
            ACCESS_LOG,
            json!({ "id": id.to_string(), "first": 101 }),
            Some(&admin),
        )
        .await;
    assert_eq!(error_code(&too_big), Some("VALIDATION"), "{too_big}");
}

/// A registration answers from the row its append writes and does not wait for the audit
/// index (docs/adr/0011); a reader of the trail catches the index up first, so the caller
/// still sees their own write there.
#[tokio::test]
async fn the_trail_shows_a_registration_made_while_the_audit_index_was_held() {
    let app = spawn_app().await;
    let admin_name = app.setup_hospital("AUD004").await;
    let admin = app.login(Some("AUD004"), &admin_name, ADMIN_PASSWORD).await;

    // Another process's round holds the audit index.
    let held = app.hold_projector("AUD004", "audit_index").await;

    let registered = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        app.graphql(
            "mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id version familyName } }",
            json!({ "i": { "givenName": "Neema", "familyName": "Otieno",
                           "dateOfBirth": "1990-01-02", "sex": "FEMALE" } }),
            Some(&admin),
        ),
    )
    .await
    .expect("a registration does not wait for the audit index");
    let patient = registered["data"]["registerPatient"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{registered}"))
        .to_owned();
    assert_eq!(
        registered["data"]["registerPatient"]["version"], 1,
        "{registered}"
    );
    assert_eq!(
        registered["data"]["registerPatient"]["familyName"],
        "Otieno"
    );

    let reading = app.graphql(
        TRAIL,
        json!({ "filter": { "aggregateType": "patient", "aggregateId": patient } }),
        Some(&admin),
    );
    let trail = read_after_release(held, reading, "the trail").await;
    assert_eq!(
        event_types(&nodes(&trail)),
        ["PatientRegistered"],
        "the caller's own registration is in the trail: {trail}"
    );
}

/// A change that waits for its read model (a patient's update, a payment) waits for the
/// read models its answer reads, not for the audit index or the access log (docs/adr/0018):
/// with both held by another process's round it still answers, at its new version; the
/// trail's reader catches the index up first and shows the change.
#[tokio::test]
async fn a_change_waits_for_its_own_read_model_and_not_for_the_audit_index() {
    let app = spawn_app().await;
    let admin_name = app.setup_hospital("AUD006").await;
    let admin = app.login(Some("AUD006"), &admin_name, ADMIN_PASSWORD).await;
    let id = register_patient(&app, "AUD006", "Achieng").await;

    let held = app.hold_projector("AUD006", "audit_index").await;
    let mut access_held = app.hold_projector("AUD006", "patient_access_log").await;

    let updated = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        app.graphql(
            "mutation($i: UpdatePatientInput!) { updatePatient(input: $i) { id version phone } }",
            json!({ "i": { "id": id, "phone": "+254 711 000 111" } }),
            Some(&admin),
        ),
    )
    .await
    .expect("a change does not wait for the audit index");
    assert_eq!(updated["data"]["updatePatient"]["version"], 2, "{updated}");
    assert_eq!(
        updated["data"]["updatePatient"]["phone"], "+254711000111",
        "{updated}"
    );
    // The read model the answer came from shows the change to every reader at once.
    let read = app
        .graphql(
            "query($id: UUID!) { patient(id: $id) { version phone } }",
            json!({ "id": id }),
            Some(&admin),
        )
        .await;
    assert_eq!(read["data"]["patient"]["version"], 2, "{read}");

    sqlx::query("ROLLBACK")
        .execute(&mut access_held)
        .await
        .expect("release");
    let reading = app.graphql(
        TRAIL,
        json!({ "filter": { "aggregateType": "patient", "aggregateId": id } }),
        Some(&admin),
    );
    let trail = read_after_release(held, reading, "the trail").await;
    assert_eq!(
        event_types(&nodes(&trail)),
        ["PatientRegistered", "PatientDemographicsUpdated"],
        "the caller's own change is in the trail: {trail}"
    );
}

/// Opening a record commits its view before answering but does not wait for the access
/// log's read model (docs/adr/0011); the access log's readers catch it up first.
#[tokio::test]
async fn a_view_made_while_the_access_log_was_held_is_in_the_access_log() {
    let app = spawn_app().await;
    let admin_name = app.setup_hospital("AUD005").await;
    let admin = app.login(Some("AUD005"), &admin_name, ADMIN_PASSWORD).await;
    let id = register_patient(&app, "AUD005", "Wanjiru").await;

    // Another process's round holds the access log.
    let held = app.hold_projector("AUD005", "patient_access_log").await;

    let opened = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        app.graphql(
            "query($id: UUID!) { patient(id: $id) { id } }",
            json!({ "id": id }),
            Some(&admin),
        ),
    )
    .await
    .expect("opening a record does not wait for the access log's read model");
    assert_eq!(opened["data"]["patient"]["id"], id.to_string(), "{opened}");

    let reading = app.graphql(ACCESS_LOG, json!({ "id": id }), Some(&admin));
    let log = read_after_release(held, reading, "the access log").await;
    let purposes: Vec<&str> = log["data"]["patientAccessLog"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{log}"))
        .iter()
        .filter_map(|e| e["node"]["purpose"].as_str())
        .collect();
    assert_eq!(
        purposes,
        ["patient"],
        "the caller's own view is there: {log}"
    );
}

/// Runs `read` while `held` holds a projector: it must still be waiting after 300 ms (for
/// that read model to reach the log); then the key is released and its answer returned.
async fn read_after_release(
    mut held: sqlx::PgConnection,
    read: impl std::future::Future<Output = Value>,
    what: &str,
) -> Value {
    tokio::pin!(read);
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), &mut read)
            .await
            .is_err(),
        "{what} waits for its read model to reach the log"
    );
    hms_tests::release(&mut held).await;
    read.await
}
