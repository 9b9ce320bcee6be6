//! The laboratory through the API: from a doctor's order to a verified result on the
//! patient's invoice; every refusal with its code and nothing appended; isolation between
//! hospitals; the read models rebuilt equal to the live ones; `hms-replay verify` clean; the
//! FHIR export. (The role matrix of every laboratory operation is walked in `security.rs`.)

use hms_domain::Role;
use hms_tests::fixtures::{event_count, hospital_with_staff, register_patient, staff, Staff};
use hms_tests::{error_code, spawn_app, TestApp};
use serde_json::{json, Value};
use uuid::Uuid;

const ORDER_FIELDS: &str = "id patientId status priority hasCritical invoiceId version \
    tests { code name catalogueVersion priceMinor currency } specimenTypes \
    specimens { id label specimenType status rejectionReason } \
    results { itemId code name panel status resultVersion valueText numericValue codedValue \
      flag critical unit referenceRange { low high criticalLow criticalHigh } \
      enteredBy verifiedBy amended \
      versions { resultVersion valueText flag amendReason enteredBy verifiedBy } }";

/// Runs mutation `name(input: $input)` answering with a lab order.
async fn order_mutation(app: &TestApp, token: &str, name: &str, input: Value) -> Value {
    let input_type = format!("{}{}Input", name[..1].to_uppercase(), &name[1..]);
    let query =
        format!("mutation($input: {input_type}!) {{ {name}(input: $input) {{ {ORDER_FIELDS} }} }}");
    app.graphql(&query, json!({ "input": input }), Some(token))
        .await
}

async fn order_ok(app: &TestApp, token: &str, name: &str, input: Value) -> Value {
    let response = order_mutation(app, token, name, input).await;
    assert!(response["errors"].is_null(), "{name}: {response}");
    response["data"][name].clone()
}

async fn define_test(app: &TestApp, token: &str, test: Value) -> Value {
    app.graphql(
        "mutation($input: DefineLabTestInput!) { defineLabTest(input: $input) { code catalogueVersion priceMinor version panel members } }",
        json!({ "input": { "test": test } }),
        Some(token),
    )
    .await
}

fn potassium(price: i64) -> Value {
    json!({
        "code": "2823-3", "system": "LOINC", "name": "Potassium", "specimenType": "SERUM",
        "resultKind": "NUMERIC", "unit": "mmol/L", "priceMinor": price, "currency": "KES",
        "referenceRanges": [
            { "low": "3.5", "high": "5.1", "criticalLow": "2.5", "criticalHigh": "6.5" },
            { "maxAgeDays": 30, "low": "3.7", "high": "5.9", "criticalLow": "2.8", "criticalHigh": "7.0" }
        ]
    })
}

/// The catalogue of these tests: potassium and sodium, an electrolytes panel of both,
/// and a coded urine pregnancy test.
pub(crate) async fn catalogue(app: &TestApp, admin: &str) {
    let tests = [
        potassium(50_000),
        json!({
            "code": "2951-2", "system": "LOINC", "name": "Sodium", "specimenType": "SERUM",
            "resultKind": "NUMERIC", "unit": "mmol/L", "priceMinor": 45_000, "currency": "KES",
            "referenceRanges": [{ "low": "135", "high": "145", "criticalLow": "120", "criticalHigh": "160" }]
        }),
        json!({
            "code": "LYTES", "system": "LOCAL", "name": "Electrolytes", "specimenType": "SERUM",
            "members": ["2823-3", "2951-2"], "priceMinor": 120_000, "currency": "KES"
        }),
        json!({
            "code": "UPREG", "system": "LOCAL", "name": "Urine pregnancy test",
            "specimenType": "URINE", "resultKind": "CODED", "priceMinor": 30_000, "currency": "KES",
            "answers": [
                { "code": "POS", "display": "Positive", "abnormal": true },
                { "code": "NEG", "display": "Negative" }
            ]
        }),
    ];
    for test in tests {
        let response = define_test(app, admin, test.clone()).await;
        assert!(response["errors"].is_null(), "{test}: {response}");
        assert_eq!(response["data"]["defineLabTest"]["catalogueVersion"], 1);
    }
}

struct Lab {
    staff: Staff,
    tech: String,
    second_tech: String,
}

async fn lab_hospital(app: &TestApp, code: &str) -> Lab {
    let staff = hospital_with_staff(app, code).await;
    let lower = code.to_ascii_lowercase();
    let tech = staff_token(app, code, &format!("{lower}_lab1"), Role::LabTechnician).await;
    let second_tech = staff_token(app, code, &format!("{lower}_lab2"), Role::LabTechnician).await;
    catalogue(app, &staff.admin).await;
    Lab {
        staff,
        tech,
        second_tech,
    }
}

async fn staff_token(app: &TestApp, code: &str, username: &str, role: Role) -> String {
    staff(app, code, username, role).await
}

fn result_of<'a>(order: &'a Value, code: &str) -> &'a Value {
    order["results"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["code"] == code))
        .unwrap_or_else(|| panic!("{code} in {order}"))
}

fn specimen_of<'a>(order: &'a Value, specimen_type: &str, status: &str) -> &'a Value {
    order["specimens"]
        .as_array()
        .and_then(|s| {
            s.iter()
                .find(|s| s["specimenType"] == specimen_type && s["status"] == status)
        })
        .unwrap_or_else(|| panic!("{specimen_type} {status} in {order}"))
}

/// An order of the electrolytes panel and the pregnancy test, collected and received.
async fn received_order(app: &TestApp, lab: &Lab, patient: Uuid, labels: (&str, &str)) -> Value {
    let order = order_ok(
        app,
        &lab.staff.doctor,
        "orderLabTests",
        json!({ "patientId": patient, "tests": ["LYTES", "UPREG"], "priority": "STAT",
                "clinicalNote": "palpitations" }),
    )
    .await;
    let id = order["id"].as_str().expect("id").to_owned();
    order_ok(
        app,
        &lab.staff.nurse,
        "collectSpecimen",
        json!({ "orderId": id, "specimenType": "SERUM", "label": labels.0 }),
    )
    .await;
    let order = order_ok(
        app,
        &lab.tech,
        "collectSpecimen",
        json!({ "orderId": id, "specimenType": "URINE", "label": labels.1 }),
    )
    .await;
    assert_eq!(order["status"], "COLLECTED");
    for specimen in order["specimens"].as_array().expect("specimens") {
        order_ok(
            app,
            &lab.tech,
            "receiveSpecimen",
            json!({ "orderId": id, "specimenId": specimen["id"] }),
        )
        .await;
    }
    let order = read_order(app, &lab.tech, &id).await;
    assert!(order["errors"].is_null(), "{order}");
    order["data"]["labOrder"].clone()
}

async fn read_order(app: &TestApp, token: &str, id: &str) -> Value {
    app.graphql(
        &format!("query($id: UUID!) {{ labOrder(id: $id) {{ {ORDER_FIELDS} }} }}"),
        json!({ "id": id }),
        Some(token),
    )
    .await
}

fn enter(order: &Value, code: &str, value: Value) -> Value {
    json!({ "orderId": order["id"], "itemId": result_of(order, code)["itemId"], "value": value })
}

#[tokio::test]
async fn an_order_goes_from_the_doctor_to_a_verified_result_on_the_invoice() {
    let app = spawn_app().await;
    let lab = lab_hospital(&app, "LAB001").await;
    let patient = register_patient(&app, "LAB001", "Wanjiru").await;

    // Ordered: the panel expands into its tests; each entry keeps its catalogue version.
    let order = order_ok(
        &app,
        &lab.staff.doctor,
        "orderLabTests",
        json!({ "patientId": patient, "tests": ["LYTES", "UPREG"], "priority": "STAT",
                "clinicalNote": "palpitations" }),
    )
    .await;
    let id = order["id"].as_str().expect("id").to_owned();
    assert_eq!(order["status"], "ORDERED");
    assert_eq!(order["results"].as_array().map(Vec::len), Some(3));
    assert_eq!(result_of(&order, "2823-3")["panel"], "LYTES");
    assert_eq!(result_of(&order, "2823-3")["status"], "PENDING");

    // A later price revision does not touch the order.
    let revised = app
        .graphql(
            "mutation($input: ReviseLabTestInput!) { reviseLabTest(input: $input) { catalogueVersion priceMinor } }",
            json!({ "input": { "test": {
                "code": "LYTES", "system": "LOCAL", "name": "Electrolytes", "specimenType": "SERUM",
                "members": ["2823-3", "2951-2"], "priceMinor": 999_000, "currency": "KES" } } }),
            Some(&lab.staff.admin),
        )
        .await;
    assert_eq!(
        revised["data"]["reviseLabTest"]["catalogueVersion"], 2,
        "{revised}"
    );

    // Specimens: serum by the nurse; urine rejected and taken again.
    order_ok(
        &app,
        &lab.staff.nurse,
        "collectSpecimen",
        json!({ "orderId": id, "specimenType": "SERUM", "label": "s-0001" }),
    )
    .await;
    let order = order_ok(
        &app,
        &lab.tech,
        "collectSpecimen",
        json!({ "orderId": id, "specimenType": "URINE", "label": "U-0001" }),
    )
    .await;
    assert_eq!(order["status"], "COLLECTED");
    let serum = specimen_of(&order, "SERUM", "COLLECTED")["id"].clone();
    assert_eq!(specimen_of(&order, "SERUM", "COLLECTED")["label"], "S-0001");
    let urine = specimen_of(&order, "URINE", "COLLECTED")["id"].clone();
    order_ok(
        &app,
        &lab.tech,
        "receiveSpecimen",
        json!({ "orderId": id, "specimenId": serum }),
    )
    .await;
    let order = order_ok(
        &app,
        &lab.tech,
        "rejectSpecimen",
        json!({ "orderId": id, "specimenId": urine, "reason": "CONTAMINATED" }),
    )
    .await;
    assert_eq!(order["status"], "ORDERED");
    assert_eq!(
        specimen_of(&order, "URINE", "REJECTED")["rejectionReason"],
        "CONTAMINATED"
    );
    let order = order_ok(
        &app,
        &lab.staff.nurse,
        "collectSpecimen",
        json!({ "orderId": id, "specimenType": "URINE", "label": "U-0002" }),
    )
    .await;
    let urine = specimen_of(&order, "URINE", "COLLECTED")["id"].clone();
    let order = order_ok(
        &app,
        &lab.tech,
        "receiveSpecimen",
        json!({ "orderId": id, "specimenId": urine }),
    )
    .await;

    // Results: flagged against the range for the patient; potassium is critical.
    order_ok(
        &app,
        &lab.tech,
        "enterLabResult",
        enter(
            &order,
            "2823-3",
            json!({ "numeric": "6.9", "unit": "mmol/L" }),
        ),
    )
    .await;
    order_ok(
        &app,
        &lab.tech,
        "enterLabResult",
        enter(
            &order,
            "2951-2",
            json!({ "numeric": "140", "unit": "mmol/L" }),
        ),
    )
    .await;
    let order = order_ok(
        &app,
        &lab.tech,
        "enterLabResult",
        enter(&order, "UPREG", json!({ "code": "pos" })),
    )
    .await;
    assert_eq!(order["status"], "IN_PROGRESS");
    assert!(order["hasCritical"].as_bool().expect("flag"));
    let k = result_of(&order, "2823-3");
    assert_eq!(k["flag"], "CRITICAL_HIGH");
    assert_eq!(k["status"], "PRELIMINARY");
    assert_eq!(k["valueText"], "6.9 mmol/L");
    assert_eq!(k["referenceRange"]["high"], "5.1");
    assert_eq!(result_of(&order, "2951-2")["flag"], "NORMAL");
    assert_eq!(result_of(&order, "UPREG")["flag"], "ABNORMAL");
    assert_eq!(result_of(&order, "UPREG")["codedValue"], "POS");

    // The critical result is visible to the ordering doctor at once, and on the
    // patient's record as an alert.
    let critical = app
        .graphql(
            "{ criticalLabResults { nodes { code flag orderId } } }",
            json!({}),
            Some(&lab.staff.doctor),
        )
        .await;
    assert_eq!(
        critical["data"]["criticalLabResults"]["nodes"][0]["code"], "2823-3",
        "{critical}"
    );
    let other = app
        .graphql(
            "{ criticalLabResults { nodes { code } } }",
            json!({}),
            Some(&lab.staff.other_doctor),
        )
        .await;
    assert_eq!(
        other["data"]["criticalLabResults"]["nodes"],
        json!([]),
        "another doctor's orders are not theirs: {other}"
    );
    let alerts = app
        .graphql(
            "query($id: UUID!) { patient(id: $id) { alerts { text } } }",
            json!({ "id": patient }),
            Some(&lab.staff.doctor),
        )
        .await;
    let text = alerts["data"]["patient"]["alerts"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{alerts}"));
    assert!(text.contains("Potassium") && text.contains("6.9"), "{text}");

    // Four eyes: the technician who entered the results cannot verify them.
    let before = event_count(&app, "LAB001").await;
    let own = order_mutation(
        &app,
        &lab.tech,
        "verifyLabResults",
        json!({ "orderId": id }),
    )
    .await;
    assert_eq!(error_code(&own), Some("CONFLICT"), "{own}");
    assert_eq!(event_count(&app, "LAB001").await, before);

    // Another verifies: final, and the order's tests are on a DRAFT invoice at the
    // prices of the catalogue versions they were ordered under.
    let order = order_ok(
        &app,
        &lab.second_tech,
        "verifyLabResults",
        json!({ "orderId": id }),
    )
    .await;
    assert_eq!(order["status"], "VERIFIED");
    assert_eq!(result_of(&order, "2823-3")["status"], "FINAL");
    let invoice_id = order["invoiceId"].as_str().expect("billed").to_owned();
    let invoice_query =
        "query($id: UUID!) { invoice(id: $id) { status currency totalMinor lines { code unitPriceMinor description } } }";
    let invoice = app
        .graphql(
            invoice_query,
            json!({ "id": invoice_id }),
            Some(&lab.staff.accountant),
        )
        .await;
    let invoice = &invoice["data"]["invoice"];
    assert_eq!(invoice["status"], "DRAFT", "{invoice}");
    assert_eq!(invoice["currency"], "KES");
    let mut lines: Vec<(String, i64)> = invoice["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                l["code"].as_str().expect("code").to_owned(),
                l["unitPriceMinor"].as_i64().expect("price"),
            )
        })
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![("LYTES".into(), 120_000), ("UPREG".into(), 30_000)]
    );

    // Billing again changes nothing; accounts see the order, not what it says.
    let billed = app
        .graphql(
            "mutation($i: BillLabOrderInput!) { billLabOrder(input: $i) { id invoiceId results { code } } }",
            json!({ "i": { "orderId": id } }),
            Some(&lab.staff.accountant),
        )
        .await;
    assert_eq!(error_code(&billed), Some("FORBIDDEN"), "{billed}");
    assert_eq!(billed["errors"][0]["path"][1], "results", "{billed}");
    let billed = &billed["data"]["billLabOrder"];
    assert_eq!(billed["invoiceId"], invoice_id.as_str());
    let again = app
        .graphql(
            invoice_query,
            json!({ "id": invoice_id }),
            Some(&lab.staff.accountant),
        )
        .await;
    assert_eq!(again["data"]["invoice"]["totalMinor"], 150_000, "{again}");

    // An amendment is a new version with its reason; verified again, not by its author.
    let amended = order_ok(
        &app,
        &lab.tech,
        "amendLabResult",
        json!({ "orderId": id, "itemId": result_of(&order, "2823-3")["itemId"],
                "value": { "numeric": "5.0", "unit": "mmol/L" },
                "reason": "haemolysis found on review; redrawn specimen result" }),
    )
    .await;
    assert_eq!(amended["status"], "IN_PROGRESS");
    let k = result_of(&amended, "2823-3");
    assert_eq!(k["resultVersion"], 2);
    assert_eq!(k["status"], "PRELIMINARY");
    assert_eq!(k["flag"], "NORMAL");
    assert!(k["amended"].as_bool().expect("amended"));
    let versions = k["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 2, "{k}");
    assert_eq!(versions[0]["valueText"], "6.9 mmol/L");
    assert_eq!(versions[0]["flag"], "CRITICAL_HIGH");
    assert!(versions[0]["verifiedBy"].is_string());
    assert_eq!(
        versions[1]["amendReason"],
        "haemolysis found on review; redrawn specimen result"
    );
    let reverified = order_ok(
        &app,
        &lab.second_tech,
        "verifyLabResults",
        json!({ "orderId": id }),
    )
    .await;
    assert_eq!(reverified["status"], "VERIFIED");
    assert_eq!(reverified["invoiceId"], invoice_id.as_str(), "billed once");

    // The patient's potassium over time, with flags.
    let trend = app
        .graphql(
            "query($p: UUID!) { patientLabResults(patientId: $p, filter: { code: \"2823-3\" }) { nodes { code numericValue flag status } } }",
            json!({ "p": patient }),
            Some(&lab.staff.nurse),
        )
        .await;
    assert_eq!(
        trend["data"]["patientLabResults"]["nodes"],
        json!([{ "code": "2823-3", "numericValue": "5.0", "flag": "NORMAL", "status": "FINAL" }]),
        "{trend}"
    );

    // Turnaround, for the administrator; the worklist by status.
    let turnaround = app
        .graphql(
            "{ labTurnaround { priority orders medianMinutes } }",
            json!({}),
            Some(&lab.staff.admin),
        )
        .await;
    assert_eq!(
        turnaround["data"]["labTurnaround"][0]["priority"], "STAT",
        "{turnaround}"
    );
    assert_eq!(turnaround["data"]["labTurnaround"][0]["orders"], 1);
    let worklist = app
        .graphql(
            "{ labOrders(filter: { status: VERIFIED, specimenType: URINE }) { nodes { id } } }",
            json!({}),
            Some(&lab.tech),
        )
        .await;
    assert_eq!(
        worklist["data"]["labOrders"]["nodes"][0]["id"],
        id.as_str(),
        "{worklist}"
    );

    // The administrator's audit trail shows the results as written: reading events that
    // do not name the patient (a result entered) is recorded under the order's patient.
    let trail = app
        .graphql(
            "{ auditTrail(filter: { aggregateType: \"lab_order\", eventType: \"ResultEntered\" }) { nodes { eventType } } }",
            json!({}),
            Some(&lab.staff.admin),
        )
        .await;
    assert_eq!(
        trail["data"]["auditTrail"]["nodes"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "{trail}"
    );

    // Every read of results was recorded in the patient's access log.
    let lease = app.state.registry.get("LAB001").await.expect("tenant");
    let runner = &app.state.runner;
    crate::projections::drain(&lease.pool, runner).await;
    let purposes: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT purpose FROM patient_access_log WHERE patient_id = $1 ORDER BY purpose",
    )
    .bind(patient)
    .fetch_all(&lease.pool)
    .await
    .expect("access log");
    for purpose in [
        "auditTrail",
        "critical lab results",
        "lab results",
        "lab worklist",
    ] {
        assert!(
            purposes.iter().any(|p| p == purpose),
            "{purpose} in {purposes:?}"
        );
    }

    // Results are not the administrator's to read.
    let admin_read = app
        .graphql(
            "query($id: UUID!) { labOrder(id: $id) { id } }",
            json!({ "id": id }),
            Some(&lab.staff.admin),
        )
        .await;
    assert_eq!(error_code(&admin_read), Some("FORBIDDEN"), "{admin_read}");

    // The read models rebuilt from the log equal the live ones; the log verifies.
    crate::projections::drain(&lease.pool, runner).await;
    let owner = crate::projections::owner_pool(&app, "LAB001").await;
    let projector = hms_projections::projectors::LabProjector;
    let tables = <hms_projections::projectors::LabProjector as hms_projections::Projector>::tables(
        &projector,
    );
    let mut conn = lease.pool.acquire().await.expect("connection");
    let mut live = Vec::new();
    for table in tables {
        live.push(crate::projections::table_checksum(&mut conn, table).await);
    }
    assert!(live.iter().all(|(rows, _)| *rows > 0), "{live:?}");
    hms_projections::rebuild::rebuild(&owner, &projector, true, &mut |_| {})
        .await
        .expect("rebuild");
    let mut rebuilt = Vec::new();
    for table in tables {
        rebuilt.push(crate::projections::table_checksum(&mut conn, table).await);
    }
    assert_eq!(
        live, rebuilt,
        "the lab read models rebuild equal to the live ones"
    );
    crate::replay::replay_ok(&app, &["verify", "--hospital", "LAB001"]).await;

    // The patient's verified results as FHIR R4, from the log.
    let patient_arg = patient.to_string();
    let (outcome, out) = crate::replay::replay(
        &app,
        &[
            "fhir-export",
            "--hospital",
            "LAB001",
            "--patient",
            &patient_arg,
        ],
    )
    .await;
    outcome.expect("the export runs");
    let bundle: Value = serde_json::from_str(&out).expect("a JSON bundle");
    check_fhir_bundle(&bundle);
    let resources: Vec<&Value> = bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["resource"])
        .collect();
    let of = |kind: &str| -> Vec<&Value> {
        resources
            .iter()
            .copied()
            .filter(|r| r["resourceType"] == kind)
            .collect()
    };
    assert_eq!(of("ServiceRequest").len(), 1);
    assert_eq!(of("ServiceRequest")[0]["priority"], "stat");
    assert_eq!(
        of("Specimen").len(),
        3,
        "serum, the rejected urine, the urine taken again"
    );
    assert_eq!(of("DiagnosticReport").len(), 1);
    assert_eq!(of("DiagnosticReport")[0]["status"], "corrected");
    let observations = of("Observation");
    assert_eq!(observations.len(), 3);
    let potassium = observations
        .iter()
        .find(|o| o["code"]["coding"][0]["code"] == "2823-3")
        .expect("potassium");
    assert_eq!(potassium["code"]["coding"][0]["system"], "http://loinc.org");
    assert_eq!(potassium["status"], "corrected");
    assert_eq!(potassium["valueQuantity"]["value"], json!(5.0));
    assert_eq!(
        potassium["valueQuantity"]["system"],
        "http://unitsofmeasure.org"
    );
    assert_eq!(potassium["valueQuantity"]["code"], "mmol/L");
    assert_eq!(potassium["interpretation"][0]["coding"][0]["code"], "N");
    assert_eq!(potassium["referenceRange"][0]["high"]["value"], json!(5.1));
    let pregnancy = observations
        .iter()
        .find(|o| o["valueCodeableConcept"].is_object())
        .expect("the coded result");
    assert_eq!(pregnancy["interpretation"][0]["coding"][0]["code"], "A");
}

/// The structure FHIR R4 requires of the resources the export makes, and that every
/// reference inside the bundle resolves to one of its entries.
fn check_fhir_bundle(bundle: &Value) {
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "collection");
    let entries = bundle["entry"].as_array().expect("entries");
    let ids: std::collections::HashSet<String> = entries
        .iter()
        .map(|e| {
            let r = &e["resource"];
            format!(
                "{}/{}",
                r["resourceType"].as_str().expect("type"),
                r["id"].as_str().expect("id")
            )
        })
        .collect();
    fn references(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("reference", Value::String(r)) => found.push(r.clone()),
                        _ => references(v, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| references(v, found)),
            _ => {}
        }
    }
    let coded = |concept: &Value, what: &str| {
        let codings = concept["coding"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: {concept}"));
        assert!(!codings.is_empty(), "{what}");
        for c in codings {
            assert!(
                c["system"].is_string() && c["code"].is_string(),
                "{what}: {c}"
            );
        }
    };
    for entry in entries {
        let r = &entry["resource"];
        let kind = r["resourceType"].as_str().expect("type");
        assert_eq!(
            entry["fullUrl"].as_str(),
            Some(format!("urn:uuid:{}", r["id"].as_str().expect("id")).as_str())
        );
        match kind {
            "ServiceRequest" => {
                assert!(r["status"].is_string() && r["intent"] == "order", "{r}");
                coded(&r["code"], "ServiceRequest.code");
                assert!(r["subject"]["reference"].is_string());
            }
            "Specimen" => {
                coded(&r["type"], "Specimen.type");
                assert!(r["subject"]["reference"].is_string());
            }
            "Observation" => {
                assert!(r["status"].is_string(), "{r}");
                coded(&r["code"], "Observation.code");
                coded(&r["category"][0], "Observation.category");
                assert!(r["subject"]["reference"].is_string());
            }
            "DiagnosticReport" => {
                assert!(r["status"].is_string(), "{r}");
                coded(&r["code"], "DiagnosticReport.code");
                assert!(!r["result"].as_array().expect("results").is_empty());
            }
            "Patient" | "Practitioner" => {}
            other => panic!("unexpected resource {other}"),
        }
        let mut found = Vec::new();
        references(r, &mut found);
        for reference in found {
            assert!(
                ids.contains(&reference),
                "{kind} refers to {reference} outside the bundle"
            );
        }
    }
}

#[tokio::test]
async fn bad_laboratory_input_is_refused_with_a_clear_error_and_appends_nothing() {
    let app = spawn_app().await;
    let lab = lab_hospital(&app, "LAB002").await;
    let patient = register_patient(&app, "LAB002", "Otieno").await;
    let order = received_order(&app, &lab, patient, ("S-1", "U-1")).await;
    let id = order["id"].as_str().expect("id").to_owned();

    let refused = |response: &Value, code: &str, field: Option<&str>| {
        assert_eq!(error_code(response), Some(code), "{response}");
        if let Some(field) = field {
            assert_eq!(
                response["errors"][0]["extensions"]["field"].as_str(),
                Some(field),
                "{response}"
            );
        }
    };
    let before = event_count(&app, "LAB002").await;

    // A value in the wrong unit, of the wrong kind, an answer the test does not have.
    let wrong_unit = order_mutation(
        &app,
        &lab.tech,
        "enterLabResult",
        enter(
            &order,
            "2823-3",
            json!({ "numeric": "4.2", "unit": "mg/dL" }),
        ),
    )
    .await;
    refused(&wrong_unit, "VALIDATION", Some("unit"));
    assert!(wrong_unit["errors"][0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("mmol/L")));
    let wrong_kind = order_mutation(
        &app,
        &lab.tech,
        "enterLabResult",
        enter(&order, "2823-3", json!({ "code": "POS" })),
    )
    .await;
    refused(&wrong_kind, "VALIDATION", Some("value"));
    let not_a_number = order_mutation(
        &app,
        &lab.tech,
        "enterLabResult",
        enter(
            &order,
            "2823-3",
            json!({ "numeric": "4,2", "unit": "mmol/L" }),
        ),
    )
    .await;
    refused(&not_a_number, "VALIDATION", Some("value"));
    let unknown_answer = order_mutation(
        &app,
        &lab.tech,
        "enterLabResult",
        enter(&order, "UPREG", json!({ "code": "MAYBE" })),
    )
    .await;
    refused(&unknown_answer, "VALIDATION", Some("value"));
    let two_values = order_mutation(
        &app,
        &lab.tech,
        "enterLabResult",
        enter(
            &order,
            "UPREG",
            json!({ "code": "POS", "text": "positive" }),
        ),
    )
    .await;
    refused(&two_values, "VALIDATION", Some("value"));

    // An unknown test, an unknown patient, an empty order.
    let unknown_test = order_mutation(
        &app,
        &lab.staff.doctor,
        "orderLabTests",
        json!({ "patientId": patient, "tests": ["NOPE-1"] }),
    )
    .await;
    refused(&unknown_test, "VALIDATION", Some("tests"));
    assert!(unknown_test["errors"][0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("NOPE-1")));
    let unknown_patient = order_mutation(
        &app,
        &lab.staff.doctor,
        "orderLabTests",
        json!({ "patientId": Uuid::new_v4(), "tests": ["2823-3"] }),
    )
    .await;
    refused(&unknown_patient, "NOT_FOUND", None);
    let empty = order_mutation(
        &app,
        &lab.staff.doctor,
        "orderLabTests",
        json!({ "patientId": patient, "tests": [] }),
    )
    .await;
    refused(&empty, "VALIDATION", Some("tests"));

    // A specimen label already on another specimen, of this order or another.
    let other = order_ok(
        &app,
        &lab.staff.doctor,
        "orderLabTests",
        json!({ "patientId": patient, "tests": ["2823-3"] }),
    )
    .await;
    let after_other = event_count(&app, "LAB002").await;
    let duplicate = order_mutation(
        &app,
        &lab.staff.nurse,
        "collectSpecimen",
        json!({ "orderId": other["id"], "specimenType": "SERUM", "label": "s-1" }),
    )
    .await;
    refused(&duplicate, "CONFLICT", None);
    assert!(duplicate["errors"][0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("S-1")));
    // A specimen type the order does not need.
    let no_urine = order_mutation(
        &app,
        &lab.staff.nurse,
        "collectSpecimen",
        json!({ "orderId": other["id"], "specimenType": "URINE", "label": "U-77" }),
    )
    .await;
    refused(&no_urine, "VALIDATION", Some("specimenType"));
    assert_eq!(event_count(&app, "LAB002").await, after_other);

    // Verification by the technician who entered the result.
    order_ok(
        &app,
        &lab.tech,
        "enterLabResult",
        enter(
            &order,
            "2823-3",
            json!({ "numeric": "4.2", "unit": "mmol/L" }),
        ),
    )
    .await;
    let entered = event_count(&app, "LAB002").await;
    let same = order_mutation(
        &app,
        &lab.tech,
        "verifyLabResults",
        json!({ "orderId": id }),
    )
    .await;
    refused(&same, "CONFLICT", None);
    assert!(same["errors"][0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("other than the one who entered")));
    // Cancelling an order with results; rejecting without the note OTHER needs.
    let cancel = order_mutation(
        &app,
        &lab.staff.doctor,
        "cancelLabOrder",
        json!({ "orderId": id, "reason": "duplicate" }),
    )
    .await;
    refused(&cancel, "CONFLICT", None);
    let urine = specimen_of(&order, "URINE", "RECEIVED")["id"].clone();
    let no_note = order_mutation(
        &app,
        &lab.tech,
        "rejectSpecimen",
        json!({ "orderId": id, "specimenId": urine, "reason": "OTHER" }),
    )
    .await;
    refused(&no_note, "VALIDATION", Some("note"));
    assert_eq!(event_count(&app, "LAB002").await, entered);
    let _ = before;

    // The catalogue refuses a bad definition and a second definition of a code.
    let bad_ranges = define_test(
        &app,
        &lab.staff.admin,
        json!({ "code": "GLU", "system": "LOCAL", "name": "Glucose", "specimenType": "PLASMA",
                "resultKind": "NUMERIC", "unit": "mmol/L", "priceMinor": 100,
                "currency": "KES", "referenceRanges": [{ "low": "7", "high": "3" }] }),
    )
    .await;
    refused(&bad_ranges, "VALIDATION", Some("referenceRanges"));
    let twice = define_test(&app, &lab.staff.admin, potassium(1)).await;
    refused(&twice, "CONFLICT", None);
    let not_loinc = define_test(
        &app,
        &lab.staff.admin,
        json!({ "code": "GLU", "system": "LOINC", "name": "Glucose", "specimenType": "PLASMA",
                "resultKind": "NUMERIC", "unit": "mmol/L", "priceMinor": 100, "currency": "KES" }),
    )
    .await;
    refused(&not_loinc, "VALIDATION", Some("code"));
    let bad_unit = define_test(
        &app,
        &lab.staff.admin,
        json!({ "code": "GLU", "system": "LOCAL", "name": "Glucose", "specimenType": "PLASMA",
                "resultKind": "NUMERIC", "unit": "mmol L", "priceMinor": 100, "currency": "KES" }),
    )
    .await;
    refused(&bad_unit, "VALIDATION", Some("unit"));
    assert_eq!(event_count(&app, "LAB002").await, entered);

    // A retired test cannot be ordered.
    let retired = app
        .graphql(
            "mutation { setLabTestInService(input: { code: \"UPREG\", inService: false, reason: \"kit withdrawn\" }) { retired } }",
            json!({}),
            Some(&lab.staff.admin),
        )
        .await;
    assert_eq!(
        retired["data"]["setLabTestInService"]["retired"], true,
        "{retired}"
    );
    let retired_order = order_mutation(
        &app,
        &lab.staff.doctor,
        "orderLabTests",
        json!({ "patientId": patient, "tests": ["UPREG"] }),
    )
    .await;
    refused(&retired_order, "VALIDATION", Some("tests"));

    // With the module switched off, the laboratory is closed; reads included. A later
    // root field of the very request that switches it off is refused too: only the
    // request's first authorization decides on the hospital read with the account.
    let disabled = app
        .graphql(
            "mutation { disableModule(module: LABORATORY) { code } \
                        setLabTestInService(input: { code: \"UPREG\", inService: false, reason: \"kit withdrawn\" }) { retired } }",
            json!({}),
            Some(&lab.staff.admin),
        )
        .await;
    assert_eq!(error_code(&disabled), Some("MODULE_DISABLED"), "{disabled}");
    assert_eq!(
        disabled["errors"][0]["path"][0], "setLabTestInService",
        "{disabled}"
    );
    assert_eq!(
        disabled["errors"].as_array().map(Vec::len),
        Some(1),
        "{disabled}"
    );
    let closed = order_mutation(
        &app,
        &lab.staff.doctor,
        "orderLabTests",
        json!({ "patientId": patient, "tests": ["2823-3"] }),
    )
    .await;
    refused(&closed, "MODULE_DISABLED", None);
    let worklist = app
        .graphql("{ labOrders { nodes { id } } }", json!({}), Some(&lab.tech))
        .await;
    refused(&worklist, "MODULE_DISABLED", None);
}

#[tokio::test]
async fn another_hospitals_orders_specimens_and_tests_are_not_found() {
    let app = spawn_app().await;
    let lab = lab_hospital(&app, "LAB003").await;
    let patient = register_patient(&app, "LAB003", "Kamau").await;
    let order = received_order(&app, &lab, patient, ("S-9", "U-9")).await;
    let id = order["id"].as_str().expect("id").to_owned();
    let specimen = specimen_of(&order, "SERUM", "RECEIVED")["id"].clone();
    let item = result_of(&order, "2823-3")["itemId"].clone();

    let other = hospital_with_staff(&app, "LAB004").await;
    let other_tech = staff_token(&app, "LAB004", "lab004_lab1", Role::LabTechnician).await;
    let before = event_count(&app, "LAB003").await;

    let read = read_order(&app, &other_tech, &id).await;
    assert_eq!(error_code(&read), Some("NOT_FOUND"), "{read}");
    let test = app
        .graphql(
            "{ labTest(code: \"2823-3\") { code } }",
            json!({}),
            Some(&other.admin),
        )
        .await;
    assert_eq!(error_code(&test), Some("NOT_FOUND"), "{test}");
    let attempts = [
        (
            &other_tech,
            "receiveSpecimen",
            json!({ "orderId": id, "specimenId": specimen }),
        ),
        (
            &other_tech,
            "enterLabResult",
            json!({ "orderId": id, "itemId": item, "value": { "numeric": "4", "unit": "mmol/L" } }),
        ),
        (&other_tech, "verifyLabResults", json!({ "orderId": id })),
        (
            &other.nurse,
            "collectSpecimen",
            json!({ "orderId": id, "specimenType": "SERUM", "label": "X-1" }),
        ),
        (
            &other.doctor,
            "cancelLabOrder",
            json!({ "orderId": id, "reason": "x" }),
        ),
        (&other.accountant, "billLabOrder", json!({ "orderId": id })),
        (
            &other.doctor,
            "orderLabTests",
            json!({ "patientId": patient, "tests": ["2823-3"] }),
        ),
    ];
    for (token, name, input) in attempts {
        let response = order_mutation(&app, token, name, input).await;
        assert_eq!(
            error_code(&response),
            Some("NOT_FOUND"),
            "{name}: {response}"
        );
    }
    let trend = app
        .graphql(
            "query($p: UUID!) { patientLabResults(patientId: $p) { nodes { code } } }",
            json!({ "p": patient }),
            Some(&other.doctor),
        )
        .await;
    assert_eq!(error_code(&trend), Some("NOT_FOUND"), "{trend}");
    let worklist = app
        .graphql(
            "{ labOrders { nodes { id } } }",
            json!({}),
            Some(&other_tech),
        )
        .await;
    assert_eq!(
        worklist["data"]["labOrders"]["nodes"],
        json!([]),
        "{worklist}"
    );
    assert_eq!(event_count(&app, "LAB003").await, before);
}
