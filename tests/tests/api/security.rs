//! Cross-cutting security through HTTP: the role matrix (with the domain's own
//! `permissions::allows` as the oracle), a catalogue of bad input (each refused with a
//! clear code, nothing appended, the server still serving), and what production mode
//! hides (introspection, field suggestions).

use hms_domain::permissions::{allows, Operation};
use hms_domain::Role;
use hms_tests::fixtures::{assert_no_leak, codes, event_count, events_after, next_monday};
use hms_tests::{error_code, spawn_app, spawn_app_with, TestApp, TestConfig, ADMIN_PASSWORD};
use serde_json::{json, Value};
use uuid::Uuid;

const STAFF_PASSWORD: &str = "security staff password";

/// Every hospital role, with its GraphQL name.
const ROLES: [(Role, &str); 9] = [
    (Role::HospitalAdmin, "HOSPITAL_ADMIN"),
    (Role::Doctor, "DOCTOR"),
    (Role::Nurse, "NURSE"),
    (Role::Receptionist, "RECEPTIONIST"),
    (Role::Accountant, "ACCOUNTANT"),
    (Role::LabTechnician, "LAB_TECHNICIAN"),
    (Role::Pharmacist, "PHARMACIST"),
    (Role::Radiologist, "RADIOLOGIST"),
    (Role::Staff, "STAFF"),
];

async fn ok(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let response = app.graphql(query, variables, Some(token)).await;
    assert!(response["errors"].is_null(), "{query}: {response}");
    response
}

fn id_at(response: &Value, pointer: &str) -> String {
    response
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} in {response}"))
        .to_owned()
}

/// A patient and an issued invoice of 1,000.00 for them.
async fn patient_and_invoice(app: &TestApp, admin: &str) -> (String, String) {
    let patient = id_at(
        &ok(
            app,
            admin,
            "mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id } }",
            json!({ "i": { "givenName": "Amina", "familyName": "Matrix", "dateOfBirth": "1980-01-02", "sex": "FEMALE" } }),
        )
        .await,
        "/data/registerPatient/id",
    );
    let invoice = id_at(
        &ok(
            app,
            admin,
            "mutation($i: CreateInvoiceInput!) { createInvoice(input: $i) { id } }",
            json!({ "i": { "patientId": patient, "currency": "KES" } }),
        )
        .await,
        "/data/createInvoice/id",
    );
    ok(
        app,
        admin,
        "mutation($i: AddInvoiceLineInput!) { addInvoiceLine(input: $i) { id } }",
        json!({ "i": { "invoiceId": invoice, "code": "CONSULT", "description": "Consultation", "quantity": 1, "unitPriceMinor": 100000 } }),
    )
    .await;
    ok(
        app,
        admin,
        "mutation($i: IssueInvoiceInput!) { issueInvoice(input: $i) { id } }",
        json!({ "i": { "invoiceId": invoice } }),
    )
    .await;
    (patient, invoice)
}

async fn count_events(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(conn)
        .await
        .expect("count events")
}

/// What a role the matrix allows gets from a case: success (`None`), or NOT_FOUND for
/// the cases about unknown records (the permission is checked before the record is
/// looked up), VALIDATION for a wrong current password.
fn allowed_answer(field: &str) -> Option<&'static str> {
    match field {
        "changeUserRole"
        | "changeUserDepartment"
        | "deactivateUser"
        | "reactivateUser"
        | "resetUserPassword"
        | "markPatientDeceased"
        | "deactivatePatient"
        | "mergePatients"
        | "rescheduleAppointment"
        | "checkInAppointment"
        | "startAppointment"
        | "completeAppointment"
        | "cancelAppointment"
        | "markNoShow"
        | "addInvoiceLine"
        | "issueInvoice"
        | "refundPayment"
        | "voidInvoice"
        | "setLabTestInService"
        | "orderLabTests"
        | "collectSpecimen"
        | "receiveSpecimen"
        | "enterLabResult"
        | "verifyLabResults"
        | "amendLabResult"
        | "cancelLabOrder"
        | "billLabOrder"
        | "reviewBreakGlass" => Some("NOT_FOUND"),
        // The record is not restricted: there is no glass to break.
        "breakGlass" => Some("CONFLICT"),
        // No erasure was asked for the patient; the record is not restricted.
        "approvePatientErasure" | "restrictPatientRecord" => Some("CONFLICT"),
        "changePassword" => Some("VALIDATION"),
        _ => None,
    }
}

/// One row of the matrix walk: an operation of the domain and a GraphQL call that needs
/// exactly it.
struct Case {
    operation: Operation,
    field: &'static str,
    document: &'static str,
    variables: Value,
}

fn case(
    operation: Operation,
    field: &'static str,
    document: &'static str,
    variables: Value,
) -> Case {
    Case {
        operation,
        field,
        document,
        variables,
    }
}

#[tokio::test]
async fn every_role_gets_exactly_what_the_permission_matrix_allows() {
    let app = spawn_app().await;
    let code = "MATRIX";
    let admin_name = app.setup_hospital(code).await;
    let admin = app.login(Some(code), &admin_name, ADMIN_PASSWORD).await;
    ok(
        &app,
        &admin,
        "mutation($i: UpdateHospitalProfileInput!) { updateHospitalProfile(input: $i) { code } }",
        json!({ "i": { "name": "Matrix Hospital", "timeZone": "UTC", "currency": "KES" } }),
    )
    .await;
    let department = id_at(
        &ok(
            &app,
            &admin,
            "mutation { addDepartment(name: \"Matrix Ward\") { id } }",
            json!({}),
        )
        .await,
        "/data/addDepartment/id",
    );

    // One account per role (the admin is the hospital's first one).
    let mut tokens: Vec<(Role, &str, String)> =
        vec![(Role::HospitalAdmin, "HOSPITAL_ADMIN", admin.clone())];
    let mut doctor_id = String::new();
    let mut staff_id = String::new();
    for (role, name) in ROLES.iter().skip(1) {
        let username = format!("m_{}", name.to_ascii_lowercase());
        let created = ok(
            &app,
            &admin,
            "mutation($i: CreateUserInput!) { createUser(input: $i) { id role } }",
            json!({ "i": { "username": username, "email": format!("{username}@matrix.example"),
                           "fullName": format!("Matrix {name}"), "role": name, "password": STAFF_PASSWORD } }),
        )
        .await;
        assert_eq!(created["data"]["createUser"]["role"], *name);
        let id = id_at(&created, "/data/createUser/id");
        match role {
            Role::Doctor => doctor_id = id,
            Role::Staff => staff_id = id,
            _ => {}
        }
        let token = app.login(Some(code), &username, STAFF_PASSWORD).await;
        tokens.push((*role, *name, token));
    }
    let (patient, invoice) = patient_and_invoice(&app, &admin).await;
    let monday = next_monday();
    let unknown = || Uuid::new_v4().to_string();
    let past = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();

    let week: Vec<Value> = ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"]
        .map(|d| json!({ "weekday": d, "open": "08:00", "close": "17:00" }))
        .to_vec();
    let mut log = app.connect(&app.database_for(code)).await;
    let mut walked = std::collections::BTreeSet::new();
    for (index, (role, role_name, token)) in tokens.iter().enumerate() {
        let tag = role_name.to_ascii_lowercase();
        // Distinct values per role where an allowed call would otherwise collide.
        let cases = vec![
            case(Operation::ViewStaff, "users", "{ users(first: 5) { nodes { id } } }", json!({})),
            case(Operation::ViewStaff, "user", "query($id: UUID!) { user(id: $id) { id } }", json!({ "id": staff_id })),
            case(
                Operation::CreateUser,
                "createUser",
                "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
                json!({ "i": { "username": format!("new_{tag}"), "email": format!("new_{tag}@matrix.example"),
                               "fullName": "New Hire", "role": "STAFF", "password": STAFF_PASSWORD } }),
            ),
            case(
                Operation::ManageDepartments,
                "addDepartment",
                "mutation($n: String!) { addDepartment(name: $n) { id } }",
                json!({ "n": format!("Ward of {tag}") }),
            ),
            case(
                Operation::ManageDepartments,
                "renameDepartment",
                "mutation($d: UUID!, $n: String!) { renameDepartment(departmentId: $d, name: $n) { id } }",
                json!({ "d": department, "n": format!("Matrix Ward {tag}") }),
            ),
            case(Operation::ManageModules, "disableModule", "mutation { disableModule(module: TELEMEDICINE) { code } }", json!({})),
            case(
                Operation::UpdateHospitalProfile,
                "updateHospitalProfile",
                "mutation($i: UpdateHospitalProfileInput!) { updateHospitalProfile(input: $i) { code } }",
                json!({ "i": { "name": "Matrix Hospital", "timeZone": "UTC", "currency": "KES" } }),
            ),
            case(
                Operation::UpdateHospitalBranding,
                "updateBranding",
                "mutation($i: UpdateBrandingInput!) { updateBranding(input: $i) { code } }",
                json!({ "i": { "primaryColor": "#123456" } }),
            ),
            case(
                Operation::UpdateHospitalSettings,
                "updateHospitalSettings",
                "mutation($i: UpdateHospitalSettingsInput!) { updateHospitalSettings(input: $i) { code } }",
                json!({ "i": { "slotLengthMinutes": 15, "invoicePrefix": "INV", "workingHours":
                    week } }),
            ),
            case(
                Operation::ChangeUserRole,
                "changeUserRole",
                "mutation($u: UUID!) { changeUserRole(userId: $u, role: NURSE) { id } }",
                json!({ "u": unknown() }),
            ),
            case(
                Operation::ChangeUserDepartment,
                "changeUserDepartment",
                "mutation($u: UUID!) { changeUserDepartment(userId: $u) { id } }",
                json!({ "u": unknown() }),
            ),
            case(Operation::DeactivateUser, "deactivateUser", "mutation($u: UUID!) { deactivateUser(userId: $u) { id } }", json!({ "u": unknown() })),
            case(Operation::ReactivateUser, "reactivateUser", "mutation($u: UUID!) { reactivateUser(userId: $u) { id } }", json!({ "u": unknown() })),
            case(
                Operation::ResetUserPassword,
                "resetUserPassword",
                "mutation($u: UUID!) { resetUserPassword(userId: $u, newPassword: \"a brand new password\") { id } }",
                json!({ "u": unknown() }),
            ),
            case(
                Operation::ChangeOwnPassword,
                "changePassword",
                "mutation { changePassword(currentPassword: \"not my password at all\", newPassword: \"another new password\") }",
                json!({}),
            ),
            case(Operation::ViewPatient, "patient", "query($id: UUID!) { patient(id: $id) { id } }", json!({ "id": patient })),
            case(Operation::ViewPatient, "patients", "{ patients(first: 5) { nodes { id } } }", json!({})),
            case(
                Operation::RegisterPatient,
                "registerPatient",
                "mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id } }",
                json!({ "i": { "familyName": format!("Registered By {tag}"), "dateOfBirth": "1991-05-06", "sex": "MALE" } }),
            ),
            case(
                Operation::UpdatePatient,
                "updatePatient",
                "mutation($i: UpdatePatientInput!) { updatePatient(input: $i) { id } }",
                json!({ "i": { "id": patient, "phone": format!("+25470000000{index}") } }),
            ),
            case(
                Operation::ManageAllergies,
                "recordAllergy",
                "mutation($i: RecordAllergyInput!) { recordAllergy(input: $i) { id } }",
                json!({ "i": { "patientId": patient,
                               "allergy": { "substance": format!("Substance {tag}"), "severity": "MILD" } } }),
            ),
            case(
                Operation::ManagePatientAlerts,
                "addPatientAlert",
                "mutation($i: AddPatientAlertInput!) { addPatientAlert(input: $i) { id } }",
                json!({ "i": { "patientId": patient, "text": format!("Alert by {tag}") } }),
            ),
            case(
                Operation::MarkPatientDeceased,
                "markPatientDeceased",
                "mutation($i: MarkPatientDeceasedInput!) { markPatientDeceased(input: $i) { id } }",
                json!({ "i": { "patientId": unknown(), "diedAt": past } }),
            ),
            case(
                Operation::DeactivatePatient,
                "deactivatePatient",
                "mutation($i: DeactivatePatientInput!) { deactivatePatient(input: $i) { id } }",
                json!({ "i": { "patientId": unknown(), "reason": "Moved away" } }),
            ),
            case(
                Operation::MergePatients,
                "mergePatients",
                "mutation($i: MergePatientsInput!) { mergePatients(input: $i) { id } }",
                json!({ "i": { "duplicateId": unknown(), "survivorId": unknown() } }),
            ),
            case(Operation::ViewAppointments, "appointments", "{ appointments(first: 5) { nodes { id } } }", json!({})),
            case(
                Operation::ScheduleAppointment,
                "scheduleAppointment",
                "mutation($i: ScheduleAppointmentInput!) { scheduleAppointment(input: $i) { id } }",
                json!({ "i": { "patientId": patient, "doctorId": doctor_id, "reason": "Check-up",
                               "start": format!("{monday}T{:02}:00:00Z", 8 + index) } }),
            ),
            case(
                Operation::RescheduleAppointment,
                "rescheduleAppointment",
                "mutation($i: RescheduleAppointmentInput!) { rescheduleAppointment(input: $i) { id } }",
                json!({ "i": { "appointmentId": unknown(), "start": format!("{monday}T16:00:00Z") } }),
            ),
            case(
                Operation::CheckInAppointment,
                "checkInAppointment",
                "mutation($i: AppointmentActionInput!) { checkInAppointment(input: $i) { id } }",
                json!({ "i": { "appointmentId": unknown() } }),
            ),
            case(
                Operation::StartAppointment,
                "startAppointment",
                "mutation($i: AppointmentActionInput!) { startAppointment(input: $i) { id } }",
                json!({ "i": { "appointmentId": unknown() } }),
            ),
            case(
                Operation::CompleteAppointment,
                "completeAppointment",
                "mutation($i: CompleteAppointmentInput!) { completeAppointment(input: $i) { id } }",
                json!({ "i": { "appointmentId": unknown(), "notes": "Fine" } }),
            ),
            case(
                Operation::CancelAppointment,
                "cancelAppointment",
                "mutation($i: CancelAppointmentInput!) { cancelAppointment(input: $i) { id } }",
                json!({ "i": { "appointmentId": unknown(), "reason": "Unwell" } }),
            ),
            case(
                Operation::MarkNoShow,
                "markNoShow",
                "mutation($i: AppointmentActionInput!) { markNoShow(input: $i) { id } }",
                json!({ "i": { "appointmentId": unknown() } }),
            ),
            case(Operation::ViewInvoices, "invoices", "{ invoices(first: 5) { nodes { id } } }", json!({})),
            case(Operation::ViewInvoices, "invoice", "query($id: UUID!) { invoice(id: $id) { id } }", json!({ "id": invoice })),
            case(
                Operation::DraftInvoice,
                "createInvoice",
                "mutation($i: CreateInvoiceInput!) { createInvoice(input: $i) { id } }",
                json!({ "i": { "patientId": patient, "currency": "KES" } }),
            ),
            case(
                Operation::EditInvoice,
                "addInvoiceLine",
                "mutation($i: AddInvoiceLineInput!) { addInvoiceLine(input: $i) { id } }",
                json!({ "i": { "invoiceId": unknown(), "code": "LAB", "description": "Blood test", "quantity": 1, "unitPriceMinor": 500 } }),
            ),
            case(
                Operation::IssueInvoice,
                "issueInvoice",
                "mutation($i: IssueInvoiceInput!) { issueInvoice(input: $i) { id } }",
                json!({ "i": { "invoiceId": unknown() } }),
            ),
            case(
                Operation::RecordPayment,
                "recordPayment",
                "mutation($i: RecordPaymentInput!) { recordPayment(input: $i) { id } }",
                json!({ "i": { "invoiceId": invoice, "amountMinor": 100, "method": "CASH" } }),
            ),
            case(
                Operation::RefundPayment,
                "refundPayment",
                "mutation($i: RefundPaymentInput!) { refundPayment(input: $i) { id } }",
                json!({ "i": { "invoiceId": unknown(), "paymentId": unknown(), "amountMinor": 100, "reason": "Overpaid" } }),
            ),
            case(
                Operation::VoidInvoice,
                "voidInvoice",
                "mutation($i: VoidInvoiceInput!) { voidInvoice(input: $i) { id } }",
                json!({ "i": { "invoiceId": unknown(), "reason": "Mistake" } }),
            ),
            case(Operation::ViewLabCatalogue, "labTests", "{ labTests(first: 5) { nodes { code } } }", json!({})),
            case(
                Operation::ManageLabCatalogue,
                "setLabTestInService",
                "mutation($i: SetLabTestInServiceInput!) { setLabTestInService(input: $i) { code } }",
                json!({ "i": { "code": "NO-SUCH-TEST", "inService": true } }),
            ),
            case(Operation::ViewLabResults, "labOrders", "{ labOrders(first: 5) { nodes { id } } }", json!({})),
            case(
                Operation::OrderLabTests,
                "orderLabTests",
                "mutation($i: OrderLabTestsInput!) { orderLabTests(input: $i) { id } }",
                json!({ "i": { "patientId": unknown(), "tests": ["2823-3"] } }),
            ),
            case(
                Operation::CollectSpecimen,
                "collectSpecimen",
                "mutation($i: CollectSpecimenInput!) { collectSpecimen(input: $i) { id } }",
                json!({ "i": { "orderId": unknown(), "specimenType": "SERUM", "label": "M-1" } }),
            ),
            case(
                Operation::ProcessSpecimen,
                "receiveSpecimen",
                "mutation($i: ReceiveSpecimenInput!) { receiveSpecimen(input: $i) { id } }",
                json!({ "i": { "orderId": unknown(), "specimenId": unknown() } }),
            ),
            case(
                Operation::EnterLabResults,
                "enterLabResult",
                "mutation($i: EnterLabResultInput!) { enterLabResult(input: $i) { id } }",
                json!({ "i": { "orderId": unknown(), "itemId": unknown(), "value": { "text": "Clear" } } }),
            ),
            case(
                Operation::VerifyLabResults,
                "verifyLabResults",
                "mutation($i: VerifyLabResultsInput!) { verifyLabResults(input: $i) { id } }",
                json!({ "i": { "orderId": unknown() } }),
            ),
            case(
                Operation::AmendLabResult,
                "amendLabResult",
                "mutation($i: AmendLabResultInput!) { amendLabResult(input: $i) { id } }",
                json!({ "i": { "orderId": unknown(), "itemId": unknown(), "value": { "text": "Clear" }, "reason": "Typo" } }),
            ),
            case(
                Operation::CancelLabOrder,
                "cancelLabOrder",
                "mutation($i: CancelLabOrderInput!) { cancelLabOrder(input: $i) { id } }",
                json!({ "i": { "orderId": unknown(), "reason": "Duplicate" } }),
            ),
            case(
                Operation::PostLabCharges,
                "billLabOrder",
                "mutation($i: BillLabOrderInput!) { billLabOrder(input: $i) { id } }",
                json!({ "i": { "orderId": unknown() } }),
            ),
            case(Operation::ViewLabTurnaround, "labTurnaround", "{ labTurnaround { orders } }", json!({})),
            case(
                Operation::RestrictPatientRecord,
                "restrictPatientRecord",
                "mutation($i: RestrictPatientRecordInput!) { restrictPatientRecord(input: $i) { id } }",
                json!({ "i": { "patientId": patient, "restricted": false, "reason": "Matrix walk" } }),
            ),
            case(
                Operation::BreakGlass,
                "breakGlass",
                "mutation($i: BreakGlassInput!) { breakGlass(input: $i) { grantId } }",
                json!({ "i": { "patientId": patient, "reason": "EMERGENCY_TREATMENT", "note": "Matrix walk" } }),
            ),
            case(
                Operation::ReviewBreakGlass,
                "reviewBreakGlass",
                "mutation($i: ReviewBreakGlassInput!) { reviewBreakGlass(input: $i) { grantId } }",
                json!({ "i": { "grantId": unknown(), "outcome": "JUSTIFIED" } }),
            ),
            case(
                Operation::ViewPatientAccessReport,
                "patientAccessReport",
                "query($p: UUID!) { patientAccessReport(patientId: $p) { mrn } }",
                json!({ "p": patient }),
            ),
            case(
                Operation::ErasePatient,
                "approvePatientErasure",
                "mutation($i: ApprovePatientErasureInput!) { approvePatientErasure(input: $i) { id } }",
                json!({ "i": { "patientId": patient } }),
            ),
            case(Operation::ViewAuditTrail, "auditTrail", "{ auditTrail(first: 5) { nodes { position } } }", json!({})),
            case(Operation::ViewReports, "hospitalStats", "{ hospitalStats { patients } }", json!({})),
            case(
                Operation::RegisterHospital,
                "createHospital",
                "mutation($i: CreateHospitalInput!) { createHospital(input: $i) { code } }",
                json!({ "i": { "code": "SNEAKY1", "name": "Sneaky", "adminUsername": "sneaky", "adminEmail": "s@sneaky.example",
                               "adminName": "Sneaky Admin", "adminPassword": "sneaky password 1" } }),
            ),
            case(
                Operation::AdministerSubscription,
                "suspendHospital",
                "mutation($i: SuspendHospitalInput!) { suspendHospital(input: $i) { code } }",
                json!({ "i": { "code": code, "reason": "Unpaid" } }),
            ),
        ];
        for case in cases {
            walked.insert(case.operation);
            let allowed = allows(*role, case.operation);
            let before = count_events(&mut log).await;
            let response = app
                .graphql(case.document, case.variables.clone(), Some(token))
                .await;
            let what = format!("{role_name} × {:?} ({})", case.operation, case.field);
            assert_no_leak(&what, &response);
            for error in response["errors"].as_array().into_iter().flatten() {
                assert!(
                    error["path"].is_array(),
                    "{what}: the call itself is wrong: {response}"
                );
            }
            let got = codes(&response);
            assert!(
                !got.contains(&Some("INTERNAL".to_owned())),
                "{what}: {response}"
            );
            if allowed {
                assert_eq!(
                    error_code(&response),
                    allowed_answer(case.field),
                    "{what} is allowed by the matrix: {response}"
                );
            } else {
                assert_eq!(
                    error_code(&response),
                    Some("FORBIDDEN"),
                    "{what} is not allowed by the matrix: {response}"
                );
                assert!(
                    response["data"].is_null() || response["data"][case.field].is_null(),
                    "{what}: {response}"
                );
                assert_eq!(
                    count_events(&mut log).await,
                    before,
                    "{what}: a refused call appended events"
                );
            }
        }
    }
    // Every operation a hospital role could be granted is walked; the rest have no
    // hospital-side GraphQL operation (the platform's own take a super administrator).
    let not_walked: Vec<Operation> = Operation::ALL
        .into_iter()
        .filter(|op| !walked.contains(op))
        .collect();
    assert_eq!(
        not_walked,
        vec![
            Operation::ChangePlan,
            Operation::CancelSubscription,
            Operation::UpdateUserProfile
        ],
        "operations without a matrix case"
    );
}

// ----------------------------------------------------------------------------------------
// Bad input.

async fn raw_post(
    app: &TestApp,
    body: impl Into<reqwest::Body>,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/graphql", app.address))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("sent")
}

/// A refusal before GraphQL: the status, and a body without internals.
async fn assert_refused(what: &str, response: reqwest::Response, statuses: &[u16]) {
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    assert!(
        statuses.contains(&status),
        "{what}: status {status}: {body}"
    );
    for leak in ["src/", ".rs:", "panicked", "backtrace", "SELECT", "INSERT"] {
        assert!(
            !body.contains(leak),
            "{what}: the body leaks `{leak}`: {body}"
        );
    }
}

/// A GraphQL answer with exactly `code` in its first error and no data for `field`.
fn assert_code(what: &str, response: &Value, code: &str, field: Option<&str>) {
    assert_no_leak(what, response);
    assert_eq!(error_code(response), Some(code), "{what}: {response}");
    if let Some(field) = field {
        assert!(
            response["data"].is_null() || response["data"][field].is_null(),
            "{what}: {response}"
        );
    }
}

async fn assert_still_serving(app: &TestApp, token: &str) {
    let health = app
        .http
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let me = app
        .graphql("{ me { username } }", json!({}), Some(token))
        .await;
    assert!(me["data"]["me"]["username"].is_string(), "{me}");
}

const REGISTER: &str = "mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id } }";
const PAY: &str = "mutation($i: RecordPaymentInput!) { recordPayment(input: $i) { id paidMinor } }";
const ADD_LINE: &str =
    "mutation($i: AddInvoiceLineInput!) { addInvoiceLine(input: $i) { id totalMinor } }";

#[tokio::test]
async fn bad_input_gets_a_clear_code_appends_nothing_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let code = "BADIN";
    let admin_name = app.setup_hospital(code).await;
    let token = app.login(Some(code), &admin_name, ADMIN_PASSWORD).await;
    let (patient, invoice) = patient_and_invoice(&app, &token).await;
    let draft = id_at(
        &ok(
            &app,
            &token,
            "mutation($i: CreateInvoiceInput!) { createInvoice(input: $i) { id } }",
            json!({ "i": { "patientId": patient, "currency": "KES" } }),
        )
        .await,
        "/data/createInvoice/id",
    );
    let before = event_count(&app, code).await;
    let t = Some(token.as_str());

    // Not JSON, not a GraphQL request, a batch.
    assert_refused(
        "malformed JSON",
        raw_post(&app, "{\"query\": \"{ me { id } }\"", t).await,
        &[400],
    )
    .await;
    assert_refused(
        "not JSON at all",
        raw_post(&app, "\u{0}\u{1}garbage", t).await,
        &[400],
    )
    .await;
    assert_refused("an empty body", raw_post(&app, "", t).await, &[400]).await;
    // Without a query the document is empty: a GraphQL error, or a 400.
    for body in [
        "{\"variables\": {}}",
        "{\"query\": 42}",
        "{\"query\": null}",
        "[]",
    ] {
        let response = raw_post(&app, body, t).await;
        if response.status() == 200 {
            let answer: Value = response.json().await.expect("json");
            assert_code(body, &answer, "VALIDATION", None);
        } else {
            assert_refused(body, response, &[400]).await;
        }
    }
    let batch: Vec<Value> = (0..100)
        .map(|i| json!({ "query": format!("query Q{i} {{ me {{ id }} }}") }))
        .collect();
    let response = raw_post(&app, Value::Array(batch).to_string(), t).await;
    let status = response.status().as_u16();
    if status == 200 {
        // Capped rather than refused: far fewer answers than requests.
        let answers: Value = response.json().await.expect("json");
        let served = answers.as_array().map_or(1, Vec::len);
        assert!(served <= 10, "a batch of 100 was served in full: {answers}");
    } else {
        assert_refused("a batch of 100", response, &[400, 413, 422]).await;
    }

    // Wrong types.
    let response = app
        .graphql(
            REGISTER,
            json!({ "i": { "familyName": 42, "dateOfBirth": true, "sex": "ROBOT" } }),
            t,
        )
        .await;
    assert_code(
        "wrong variable types",
        &response,
        "VALIDATION",
        Some("registerPatient"),
    );
    let response = app
        .graphql(
            "query($id: UUID!) { patient(id: $id) { id } }",
            json!({ "id": 42 }),
            t,
        )
        .await;
    assert_code(
        "a number for a uuid",
        &response,
        "VALIDATION",
        Some("patient"),
    );
    let response = app
        .graphql("{ patient(id: [1, 2]) { id } }", json!({}), t)
        .await;
    assert_code(
        "a list for a uuid",
        &response,
        "VALIDATION",
        Some("patient"),
    );
    let response = app
        .graphql(REGISTER, json!({ "i": "not an object" }), t)
        .await;
    assert_code(
        "a string for an input object",
        &response,
        "VALIDATION",
        Some("registerPatient"),
    );

    // A 1 MB string: the body limit is 1 MiB, so a name of 1 MiB cannot even be sent.
    let mib = "x".repeat(1024 * 1024);
    let body = json!({ "query": REGISTER, "variables": { "i": { "familyName": mib, "dateOfBirth": "1990-01-01", "sex": "MALE" } } });
    assert_refused(
        "a 1 MiB name",
        raw_post(&app, body.to_string(), t).await,
        &[413],
    )
    .await;
    // Just under the limit it reaches the resolver, which refuses the long name.
    let long = "y".repeat(900 * 1024);
    let response = app
        .graphql(
            REGISTER,
            json!({ "i": { "familyName": long, "dateOfBirth": "1990-01-01", "sex": "MALE" } }),
            t,
        )
        .await;
    assert_code(
        "a 900 KiB name",
        &response,
        "VALIDATION",
        Some("registerPatient"),
    );
    assert_eq!(
        response["errors"][0]["extensions"]["field"], "familyName",
        "{response:.300}"
    );
    assert!(
        response.to_string().len() < 10_000,
        "the error echoes the long name back"
    );
    let response = app
        .graphql(
            "mutation($n: String!) { addDepartment(name: $n) { id } }",
            json!({ "n": "z".repeat(900 * 1024) }),
            t,
        )
        .await;
    assert_code(
        "a 900 KiB department name",
        &response,
        "VALIDATION",
        Some("addDepartment"),
    );

    // A 10 MB body.
    let ten = format!(
        "{{\"query\": \"{{ me {{ id }} }}\", \"variables\": {{ \"x\": \"{}\" }} }}",
        "a".repeat(10 * 1024 * 1024)
    );
    assert_refused("a 10 MiB body", raw_post(&app, ten, t).await, &[413]).await;

    // Invalid ids and dates.
    for bad in [
        "not-a-uuid",
        "",
        "123e4567-e89b-12d3-a456-42661417400",
        "123e4567-e89b-12d3-a456-4266141740000",
        "' OR 1=1 --",
    ] {
        let response = app
            .graphql(
                "query($id: UUID!) { patient(id: $id) { id } }",
                json!({ "id": bad }),
                t,
            )
            .await;
        assert_code(
            &format!("patient(id: {bad:?})"),
            &response,
            "VALIDATION",
            Some("patient"),
        );
        let response = app
            .graphql(
                &format!("{{ invoice(id: {}) {{ id }} }}", json!(bad)),
                json!({}),
                t,
            )
            .await;
        assert_code(
            &format!("inline invoice(id: {bad:?})"),
            &response,
            "VALIDATION",
            Some("invoice"),
        );
    }
    for bad in [
        "1990-02-30",
        "yesterday",
        "1990-13-01",
        "90-01-01",
        "1990-01-01T00:00:00Z",
    ] {
        let response = app
            .graphql(
                REGISTER,
                json!({ "i": { "familyName": "Datebad", "dateOfBirth": bad, "sex": "MALE" } }),
                t,
            )
            .await;
        assert_code(
            &format!("dateOfBirth {bad:?}"),
            &response,
            "VALIDATION",
            Some("registerPatient"),
        );
    }
    let tomorrow = (chrono::Utc::now().date_naive() + chrono::Duration::days(2)).to_string();
    let response = app
        .graphql(
            REGISTER,
            json!({ "i": { "familyName": "Unborn", "dateOfBirth": tomorrow, "sex": "MALE" } }),
            t,
        )
        .await;
    assert_code(
        "a date of birth in the future",
        &response,
        "VALIDATION",
        Some("registerPatient"),
    );
    for bad in [
        "2026-13-01T09:00:00Z",
        "next monday",
        "2026-01-01 09:00",
        "1700000000",
    ] {
        let response = app
            .graphql(
                "query($id: UUID!, $at: DateTime!) { patientAsOf(id: $id, at: $at) { version } }",
                json!({ "id": patient, "at": bad }),
                t,
            )
            .await;
        assert_code(
            &format!("at {bad:?}"),
            &response,
            "VALIDATION",
            Some("patientAsOf"),
        );
    }

    // Negative, zero, fractional and huge amounts.
    for bad in [
        json!(-100),
        json!(0),
        json!(10.5),
        json!("ten"),
        json!(9_007_199_254_740_992_i64),
        json!(1e30),
        json!(i64::MIN),
    ] {
        let response = app
            .graphql(
                PAY,
                json!({ "i": { "invoiceId": invoice, "amountMinor": bad, "method": "CASH" } }),
                t,
            )
            .await;
        assert_code(
            &format!("payment of {bad}"),
            &response,
            "VALIDATION",
            Some("recordPayment"),
        );
        if bad == json!(0) {
            // A free line is a legitimate line.
            continue;
        }
        let response = app
            .graphql(ADD_LINE, json!({ "i": { "invoiceId": draft, "code": "X", "description": "Bad price", "quantity": 1, "unitPriceMinor": bad } }), t)
            .await;
        assert_code(
            &format!("unit price of {bad}"),
            &response,
            "VALIDATION",
            Some("addInvoiceLine"),
        );
    }
    // More than the balance (1,000.00 owed).
    let response = app
        .graphql(
            PAY,
            json!({ "i": { "invoiceId": invoice, "amountMinor": 100_001, "method": "CASH" } }),
            t,
        )
        .await;
    assert!(
        matches!(error_code(&response), Some("VALIDATION" | "CONFLICT")),
        "a payment above the balance: {response}"
    );
    assert_no_leak("a payment above the balance", &response);
    // Quantities out of range, and a line whose amount overflows.
    for (quantity, price) in [
        (0, 100),
        (-1, 100),
        (100_001, 100),
        (100_000, 9_007_199_254_740_991_i64),
        (2_147_483_647, 1),
    ] {
        let response = app
            .graphql(ADD_LINE, json!({ "i": { "invoiceId": draft, "code": "X", "description": "Many", "quantity": quantity, "unitPriceMinor": price } }), t)
            .await;
        assert_code(
            &format!("{quantity} × {price}"),
            &response,
            "VALIDATION",
            Some("addInvoiceLine"),
        );
    }
    let response = app
        .graphql(ADD_LINE, json!({ "i": { "invoiceId": draft, "code": "X", "description": "Many", "quantity": 4_294_967_296_i64, "unitPriceMinor": 1 } }), t)
        .await;
    assert_code(
        "a quantity beyond Int",
        &response,
        "VALIDATION",
        Some("addInvoiceLine"),
    );

    // A 50-level deep query (valid otherwise: introspection's `ofType` nests freely).
    let deep = format!(
        "{{ __type(name: \"Patient\") {}name{} }}",
        "{ ofType ".repeat(50),
        " }".repeat(50)
    );
    let response = app.graphql(&deep, json!({}), t).await;
    assert_code("a 50-level deep query", &response, "VALIDATION", None);
    let message = response["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        message.contains("deep") || message.contains("depth"),
        "{response}"
    );
    assert!(response["data"].is_null(), "{response}");
    // The same through the application's own fields.
    let deep = format!(
        "{{ me {} id {} }}",
        "{ hospital ".repeat(50),
        "}".repeat(50)
    );
    let response = app.graphql(&deep, json!({}), t).await;
    assert_code(
        "a 50-level deep query of fields",
        &response,
        "VALIDATION",
        None,
    );

    // 1,000 aliases of one field.
    let aliases: String = (0..1000).map(|i| format!("a{i}: me {{ id }} ")).collect();
    let response = app.graphql(&format!("{{ {aliases} }}"), json!({}), t).await;
    assert_code("1,000 aliases", &response, "VALIDATION", None);
    let message = response["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(message.contains("complex"), "{response}");
    assert!(response["data"].is_null(), "{response}");
    let aliases: String = (0..1000)
        .map(|i| format!("a{i}: addDepartment(name: \"Alias {i}\") {{ id }} "))
        .collect();
    let response = app
        .graphql(&format!("mutation {{ {aliases} }}"), json!({}), t)
        .await;
    assert_code("1,000 aliased mutations", &response, "VALIDATION", None);

    // Unknown operations.
    let response = app.graphql("{ doesNotExist }", json!({}), t).await;
    assert_code("an unknown query", &response, "VALIDATION", None);
    let response = app
        .graphql("mutation { dropAllTables(confirm: true) }", json!({}), t)
        .await;
    assert_code("an unknown mutation", &response, "VALIDATION", None);
    let response: Value = app
        .post_graphql(
            json!({ "query": "query Mine { me { id } }", "operationName": "Theirs" }),
            t,
        )
        .await
        .json()
        .await
        .expect("json");
    assert_code("an unknown operation name", &response, "VALIDATION", None);
    let response = app
        .graphql("subscription { me { id } }", json!({}), t)
        .await;
    assert_code("a subscription", &response, "VALIDATION", None);
    let response = app.graphql("{ me { id } ", json!({}), t).await;
    assert_code("a syntax error", &response, "VALIDATION", None);

    // SQL in strings is data.
    let response = app
        .graphql(
            "query($s: String) { patients(search: $s) { nodes { id } } }",
            json!({ "s": "'; DROP TABLE events; --" }),
            t,
        )
        .await;
    assert!(response["errors"].is_null(), "{response}");
    let response = app
        .graphql("{ auditTrail(filter: { aggregateType: \"patient' OR '1'='1\" }, first: 5) { nodes { position } } }", json!({}), t)
        .await;
    assert!(response["errors"].is_null(), "{response}");
    assert_eq!(
        response["data"]["auditTrail"]["nodes"],
        json!([]),
        "{response}"
    );
    // Page sizes out of range.
    for first in [-1, 101, 1_000_000] {
        let response = app
            .graphql(
                &format!("{{ patients(first: {first}) {{ nodes {{ id }} }} }}"),
                json!({}),
                t,
            )
            .await;
        assert_code(
            &format!("first: {first}"),
            &response,
            "VALIDATION",
            Some("patients"),
        );
    }
    let response = app
        .graphql(
            "{ patients(first: 5, after: \"not a cursor\") { nodes { id } } }",
            json!({}),
            t,
        )
        .await;
    assert_code("a forged cursor", &response, "VALIDATION", Some("patients"));

    assert_eq!(
        events_after(&app, code, before).await,
        Vec::<String>::new(),
        "bad input appended events"
    );
    assert_still_serving(&app, &token).await;
    // The matching good input still works afterwards.
    let response = app
        .graphql(
            PAY,
            json!({ "i": { "invoiceId": invoice, "amountMinor": 100, "method": "CASH" } }),
            t,
        )
        .await;
    assert_eq!(
        response["data"]["recordPayment"]["paidMinor"], 100,
        "{response}"
    );

    // Field suggestions are a development aid: on here, off in production (below).
    for (what, query, suggests) in TYPOS {
        let response = app.graphql(query, json!({}), t).await;
        assert_code(what, &response, "VALIDATION", None);
        if suggests {
            assert!(
                response.to_string().contains("Did you mean"),
                "{what}: {response}"
            );
        }
    }
}

/// Typos, and whether development mode suggests the right name for them.
const TYPOS: [(&str, &str, bool); 6] = [
    ("a field typo", "{ patiens(first: 1) { nodes { id } } }", true),
    ("a nested field typo", "{ me { usernam } }", true),
    ("an argument typo", "{ patients(firstt: 5) { nodes { id } } }", true),
    ("an enum typo", "mutation { enableModule(module: LABORATRY) { code } }", false),
    ("a type typo", "query($i: RegisterPatientInputt!) { registerPatient(input: $i) { id } }", false),
    ("an input field typo", "mutation { registerPatient(input: { familyNam: \"X\", dateOfBirth: \"1990-01-01\", sex: MALE }) { id } }", false),
];

#[tokio::test]
async fn production_hides_the_schema_and_field_suggestions() {
    let app = spawn_app_with(TestConfig {
        production: true,
        ..TestConfig::default()
    })
    .await;
    let code = "PRODHOSP";
    let admin_name = app.setup_hospital(code).await;
    let token = app.login(Some(code), &admin_name, ADMIN_PASSWORD).await;
    let t = Some(token.as_str());

    for (what, query) in [
        (
            "__schema",
            "{ __schema { types { name fields { name } } } }",
        ),
        (
            "__schema roots",
            "{ __schema { queryType { name } mutationType { name } } }",
        ),
        (
            "__type",
            "{ __type(name: \"Patient\") { name fields { name } } }",
        ),
        (
            "__type of a root",
            "{ __type(name: \"MutationRoot\") { fields { name args { name } } } }",
        ),
    ] {
        for caller in [None, t] {
            let response = app.graphql(query, json!({}), caller).await;
            let data = response["data"].to_string();
            assert!(
                !data.contains("familyName")
                    && !data.contains("registerPatient")
                    && !data.contains("\"name\":\"Patient\"")
                    && !data.contains("QueryRoot")
                    && !data.contains("MutationRoot"),
                "{what}: production shows the schema: {response}"
            );
            assert!(
                response["data"].is_null()
                    || response["data"]["__schema"].is_null()
                        && response["data"]["__type"].is_null(),
                "{what}: {response}"
            );
        }
    }

    for (what, query, _) in TYPOS {
        let response = app.graphql(query, json!({}), t).await;
        assert!(response["errors"].is_array(), "{what}: {response}");
        assert_no_leak(what, &response);
        let text = response.to_string();
        assert!(
            !text.contains("Did you mean"),
            "{what}: production suggests fields: {response}"
        );
        assert_eq!(
            error_code(&response),
            Some("VALIDATION"),
            "{what}: {response}"
        );
    }

    // The API itself works as usual.
    let me = app.graphql("{ me { username } }", json!({}), t).await;
    assert_eq!(me["data"]["me"]["username"], admin_name.as_str(), "{me}");
}

// ----------------------------------------------------------------------------------------
// Values at the edges: NUL characters (PostgreSQL text cannot hold them), keys larger
// than an index entry, instants and dates outside PostgreSQL's range, extreme integers.

/// Sends requests and collects what went wrong, so one run reports every finding.
struct Prober<'a> {
    app: &'a TestApp,
    failures: Vec<String>,
}

impl Prober<'_> {
    /// Sends a request and returns the answer, insisting on a JSON answer (a dropped
    /// connection means a panic), no leak, no INTERNAL, and a first error code among
    /// `expected` ("success" for none).
    async fn probe(
        &mut self,
        token: &str,
        what: &str,
        query: &str,
        variables: Value,
        expected: &[&str],
    ) -> Value {
        let response = match self
            .app
            .http
            .post(format!("{}/graphql", self.app.address))
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => {
                self.failures
                    .push(format!("{what}: the server dropped the request: {e}"));
                return Value::Null;
            }
        };
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let Ok(answer) = serde_json::from_str::<Value>(&body) else {
            self.failures
                .push(format!("{what}: status {status}, not JSON: {body:.300}"));
            return Value::Null;
        };
        assert_no_leak(what, &answer);
        let code = error_code(&answer).unwrap_or("success");
        if !expected.contains(&code) {
            self.failures.push(format!(
                "{what}: expected one of {expected:?}, got {code}: {answer:.400}"
            ));
        }
        answer
    }
}

/// A string of `len` random letters (incompressible enough for an index entry).
fn random_text(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(b'a' + rng.gen_range(0..26u8)))
        .collect()
}

const DEPARTMENT: &str = "mutation($n: String!) { addDepartment(name: $n) { id } }";
const SEARCH: &str = "query($s: String) { patients(search: $s, first: 5) { nodes { id } } }";
const AUDIT: &str =
    "query($f: AuditTrailFilter) { auditTrail(filter: $f, first: 5) { nodes { position } } }";
const SCHEDULE: &str =
    "mutation($i: ScheduleAppointmentInput!) { scheduleAppointment(input: $i) { id } }";
const APPOINTMENTS: &str =
    "query($f: AppointmentFilter) { appointments(filter: $f, first: 5) { nodes { id } } }";
const DAY: &str = "query($d: UUID!, $day: NaiveDate!) { doctorSchedule(doctorId: $d, day: $day) { day appointments { id } } }";
const AS_OF: &str =
    "query($id: UUID!, $at: DateTime!) { patientAsOf(id: $id, at: $at) { version } }";

#[tokio::test]
async fn values_at_the_edges_are_refused_cleanly_and_never_poison_the_log() {
    let app = spawn_app().await;
    let code = "EDGES";
    let admin_name = app.setup_hospital(code).await;
    let token = app.login(Some(code), &admin_name, ADMIN_PASSWORD).await;
    let t = token.as_str();
    ok(
        &app,
        t,
        "mutation($i: UpdateHospitalProfileInput!) { updateHospitalProfile(input: $i) { code } }",
        json!({ "i": { "name": "Edge Hospital", "timeZone": "UTC", "currency": "KES" } }),
    )
    .await;
    let doctor_id = id_at(
        &ok(
            &app,
            t,
            "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
            json!({ "i": { "username": "edge_doctor", "email": "edge.doctor@edge.example",
                           "fullName": "Edge Doctor", "role": "DOCTOR", "password": STAFF_PASSWORD } }),
        )
        .await,
        "/data/createUser/id",
    );
    let doctor = app.login(Some(code), "edge_doctor", STAFF_PASSWORD).await;
    let (patient, invoice) = patient_and_invoice(&app, t).await;
    let draft = id_at(
        &ok(
            &app,
            t,
            "mutation($i: CreateInvoiceInput!) { createInvoice(input: $i) { id } }",
            json!({ "i": { "patientId": patient, "currency": "KES" } }),
        )
        .await,
        "/data/createInvoice/id",
    );
    ok(
        &app,
        t,
        ADD_LINE,
        json!({ "i": { "invoiceId": draft, "code": "X", "description": "Item", "quantity": 1, "unitPriceMinor": 100 } }),
    )
    .await;
    let appointment = id_at(
        &ok(
            &app,
            t,
            SCHEDULE,
            json!({ "i": { "patientId": patient, "doctorId": doctor_id, "start": format!("{}T10:00:00Z", next_monday()), "reason": "Edge" } }),
        )
        .await,
        "/data/scheduleAppointment/id",
    );
    let before = event_count(&app, code).await;
    let v = ["VALIDATION"];
    let mut prober = Prober {
        app: &app,
        failures: Vec::new(),
    };
    let patient_input = |family: &str, dob: &str| json!({ "i": { "familyName": family, "dateOfBirth": dob, "sex": "MALE" } });

    // NUL characters.
    prober
        .probe(
            t,
            "NUL in a family name",
            REGISTER,
            patient_input("Nul\u{0}Name", "1990-01-01"),
            &v,
        )
        .await;
    prober.probe(t,
        "NUL in a given name",
        REGISTER,
        json!({ "i": { "givenName": "\u{0}", "familyName": "Given", "dateOfBirth": "1990-01-01", "sex": "MALE" } }),
        &v,
    )
    .await;
    prober
        .probe(
            t,
            "NUL in a department name",
            DEPARTMENT,
            json!({ "n": "Ward\u{0}" }),
            &v,
        )
        .await;
    prober.probe(t,
        "NUL in a line description",
        ADD_LINE,
        json!({ "i": { "invoiceId": draft, "code": "X", "description": "Line\u{0}", "quantity": 1, "unitPriceMinor": 100 } }),
        &v,
    )
    .await;
    prober.probe(t,
        "NUL in a payment reference",
        PAY,
        json!({ "i": { "invoiceId": invoice, "amountMinor": 100, "method": "CASH", "reference": "R\u{0}" } }),
        &v,
    )
    .await;
    prober.probe(t,
        "NUL in an idempotency key",
        REGISTER,
        json!({ "i": { "familyName": "Keyed", "dateOfBirth": "1990-01-01", "sex": "MALE", "idempotencyKey": "k\u{0}" } }),
        &v,
    )
    .await;
    prober
        .probe(
            t,
            "NUL in a search",
            SEARCH,
            json!({ "s": "ab\u{0}c" }),
            &["success", "VALIDATION"],
        )
        .await;
    prober
        .probe(
            t,
            "NUL in an audit filter",
            AUDIT,
            json!({ "f": { "eventType": "\u{0}", "aggregateId": "\u{0}" } }),
            &["success", "VALIDATION"],
        )
        .await;
    let login = app
        .graphql(
            "mutation($i: LoginInput!) { login(input: $i) { token } }",
            json!({ "i": { "hospitalCode": format!("{code}\u{0}"), "username": "x\u{0}", "password": "p\u{0}assword12" } }),
            None,
        )
        .await;
    assert!(
        matches!(error_code(&login), Some("UNAUTHENTICATED" | "VALIDATION")),
        "NUL in a login: {login}"
    );

    // Keys and searches larger than an index entry.
    prober.probe(t,
        "a 100 KB idempotency key",
        REGISTER,
        json!({ "i": { "familyName": "Longkey", "dateOfBirth": "1990-01-01", "sex": "MALE", "idempotencyKey": random_text(100_000) } }),
        &v,
    )
    .await;
    prober
        .probe(
            t,
            "a 200 KB search",
            SEARCH,
            json!({ "s": random_text(200_000) }),
            &["success", "VALIDATION"],
        )
        .await;
    prober.probe(t,
        "a 200 KB audit filter",
        AUDIT,
        json!({ "f": { "aggregateId": random_text(200_000), "eventType": random_text(200_000) } }),
        &["success", "VALIDATION"],
    )
    .await;

    // Instants and dates far outside PostgreSQL's range (4713 BC to 294276 AD) or
    // chrono's arithmetic.
    for (what, dob) in [
        ("5000 BC", "-5000-01-01"),
        ("year 262143", "+262143-12-31"),
        ("year 0", "0000-01-01"),
    ] {
        prober
            .probe(
                t,
                &format!("born {what}"),
                REGISTER,
                patient_input("Ancient", dob),
                &v,
            )
            .await;
    }
    for start in [
        "+262143-12-31T23:00:00Z",
        "-262143-01-01T09:00:00Z",
        "-5000-01-05T09:00:00Z",
    ] {
        prober.probe(t,
            &format!("booking at {start}"),
            SCHEDULE,
            json!({ "i": { "patientId": patient, "doctorId": doctor_id, "start": start, "durationMinutes": 120, "reason": "Edge" } }),
            &v,
        )
        .await;
    }
    for minutes in [-30, 0, 7, 2_147_483_647] {
        prober.probe(t,
            &format!("a booking of {minutes} minutes"),
            SCHEDULE,
            json!({ "i": { "patientId": patient, "doctorId": doctor_id, "start": format!("{}T09:00:00Z", next_monday()),
                           "durationMinutes": minutes, "reason": "Edge" } }),
            &v,
        )
        .await;
    }
    for (from, to) in [
        ("-5000-01-01T00:00:00Z", "+262143-12-31T23:59:59Z"),
        ("-262143-01-01T00:00:00Z", "-262143-01-02T00:00:00Z"),
        ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"),
    ] {
        prober
            .probe(
                t,
                &format!("appointments {from}..{to}"),
                APPOINTMENTS,
                json!({ "f": { "from": from, "to": to } }),
                &["success", "VALIDATION"],
            )
            .await;
        prober
            .probe(
                t,
                &format!("invoices {from}..{to}"),
                "query($f: InvoiceFilter) { invoices(filter: $f, first: 5) { nodes { id } } }",
                json!({ "f": { "from": from, "to": to } }),
                &["success", "VALIDATION"],
            )
            .await;
        prober
            .probe(
                t,
                &format!("audit {from}..{to}"),
                AUDIT,
                json!({ "f": { "from": from, "to": to } }),
                &["success", "VALIDATION"],
            )
            .await;
    }
    for day in [
        "+262143-12-31",
        "-262143-01-01",
        "-5000-01-01",
        "0001-01-01",
    ] {
        prober
            .probe(
                t,
                &format!("the doctor's day {day}"),
                DAY,
                json!({ "d": doctor_id, "day": day }),
                &["success", "VALIDATION"],
            )
            .await;
    }
    for at in [
        "-262143-01-01T00:00:00Z",
        "-5000-01-01T00:00:00Z",
        "+262143-12-31T23:59:59Z",
    ] {
        prober
            .probe(
                t,
                &format!("patientAsOf {at}"),
                AS_OF,
                json!({ "id": patient, "at": at }),
                &["success", "VALIDATION"],
            )
            .await;
    }
    prober
        .probe(
            &doctor,
            "died 5000 BC",
            "mutation($i: MarkPatientDeceasedInput!) { markPatientDeceased(input: $i) { id } }",
            json!({ "i": { "patientId": patient, "diedAt": "-5000-01-01T00:00:00Z" } }),
            &v,
        )
        .await;

    // Extreme integers.
    for bad in [
        json!({ "percentBasisPoints": -1 }),
        json!({ "percentBasisPoints": 10_001 }),
        json!({ "percentBasisPoints": 2_147_483_647 }),
        json!({ "fixedAmountMinor": -1 }),
        json!({ "percentBasisPoints": 100, "fixedAmountMinor": 100 }),
    ] {
        let mut input = bad.clone();
        input["invoiceId"] = json!(draft);
        prober
            .probe(
                t,
                &format!("discount {bad}"),
                "mutation($i: SetInvoiceDiscountInput!) { setInvoiceDiscount(input: $i) { id } }",
                json!({ "i": input }),
                &v,
            )
            .await;
    }
    for points in [-1, 10_001, 2_147_483_647] {
        prober
            .probe(
                t,
                &format!("tax of {points}"),
                "mutation($i: SetInvoiceTaxInput!) { setInvoiceTax(input: $i) { id } }",
                json!({ "i": { "invoiceId": draft, "basisPoints": points } }),
                &v,
            )
            .await;
    }
    for minutes in [-5, 0, 2_147_483_647] {
        prober.probe(t,
            &format!("slots of {minutes} minutes"),
            "mutation($i: UpdateHospitalSettingsInput!) { updateHospitalSettings(input: $i) { code } }",
            json!({ "i": { "slotLengthMinutes": minutes, "invoicePrefix": "INV", "workingHours": [] } }),
            &v,
        )
        .await;
    }
    for version in [-1, 2_147_483_647] {
        prober.probe(t,
            &format!("expectedVersion {version}"),
            "mutation($i: UpdatePatientInput!) { updatePatient(input: $i) { id } }",
            json!({ "i": { "id": patient, "phone": "+254700000009", "expectedVersion": version } }),
            &["VALIDATION", "CONFLICT"],
        )
        .await;
    }
    prober.probe(t,
        "a page of 1,000 history entries",
        "query($id: UUID!) { invoice(id: $id) { history(first: 1000) { nodes { position } } } }",
            json!({ "id": invoice }),
        &v,
    )
    .await;
    prober.probe(t, "a 10,000-digit phone", REGISTER,
        json!({ "i": { "familyName": "Phone", "dateOfBirth": "1990-01-01", "sex": "MALE", "phone": format!("+{}", "7".repeat(10_000)) } }), &v).await;

    // Cursors of one list in another.
    let users = ok(
        &app,
        t,
        "{ users(first: 1) { pageInfo { endCursor } } }",
        json!({}),
    )
    .await;
    let cursor = users["data"]["users"]["pageInfo"]["endCursor"].clone();
    for list in [
        "patients",
        "invoices",
        "appointments",
        "auditTrail",
        "users",
    ] {
        prober
            .probe(
                t,
                &format!("a users cursor in {list}"),
                &format!(
                    "query($c: String) {{ {list}(first: 5, after: $c) {{ edges {{ cursor }} }} }}"
                ),
                json!({ "c": cursor }),
                &["success", "VALIDATION"],
            )
            .await;
    }

    prober
        .probe(
            t,
            "a booking in 2020",
            SCHEDULE,
            json!({ "i": { "patientId": patient, "doctorId": doctor_id, "start": "2020-01-06T09:00:00Z", "reason": "Edge" } }),
            &v,
        )
        .await;
    prober
        .probe(
            t,
            "moved to 5000 BC",
            "mutation($i: RescheduleAppointmentInput!) { rescheduleAppointment(input: $i) { id } }",
            json!({ "i": { "appointmentId": appointment, "start": "-5000-01-05T09:00:00Z" } }),
            &v,
        )
        .await;
    prober
        .probe(
            t,
            "re-dated to 5000 BC",
            "mutation($i: UpdatePatientInput!) { updatePatient(input: $i) { id } }",
            json!({ "i": { "id": patient, "dateOfBirth": "-5000-01-01" } }),
            &v,
        )
        .await;

    // The last: a due date PostgreSQL cannot store.
    prober
        .probe(
            t,
            "due 5000 BC",
            "mutation($i: IssueInvoiceInput!) { issueInvoice(input: $i) { id } }",
            json!({ "i": { "invoiceId": draft, "dueDate": "-5000-01-01" } }),
            &v,
        )
        .await;

    // Nothing refused reached the log. Reads record who saw which patient (an invoice
    // read before its `history` argument was refused, say): those are not writes.
    let appended: Vec<String> = events_after(&app, code, before)
        .await
        .into_iter()
        .filter(|e| !e.starts_with("record_access/"))
        .collect();
    if !appended.is_empty() {
        prober
            .failures
            .push(format!("refused values appended events: {appended:#?}"));
    }
    // The log and its projections still work: writes of every kind read back.
    assert_still_serving(&app, t).await;
    let fresh = prober
        .probe(
            t,
            "a patient afterwards",
            REGISTER,
            patient_input("Aftermath", "1990-01-01"),
            &["success"],
        )
        .await;
    if let Some(id) = fresh.pointer("/data/registerPatient/id").cloned() {
        prober
            .probe(
                t,
                "reading it back",
                "query($id: UUID!) { patient(id: $id) { id } }",
                json!({ "id": id }),
                &["success"],
            )
            .await;
    }
    prober
        .probe(
            t,
            "a payment afterwards",
            PAY,
            json!({ "i": { "invoiceId": invoice, "amountMinor": 100, "method": "CASH" } }),
            &["success"],
        )
        .await;
    prober
        .probe(
            t,
            "an invoice afterwards",
            "mutation($i: CreateInvoiceInput!) { createInvoice(input: $i) { id } }",
            json!({ "i": { "patientId": patient, "currency": "KES" } }),
            &["success"],
        )
        .await;
    let failures = prober.failures;
    assert!(
        failures.is_empty(),
        "{} findings:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
