//! Tenant isolation, enumerated from the schema itself: the test reads the schema by
//! introspection over HTTP and calls EVERY query and mutation with a token of hospital A
//! and the ids of hospital B's records, filling the arguments generically from their
//! types. A new operation is therefore covered the day it is added. For each call: no
//! data of B in the answer, only "refusal" codes (never INTERNAL), answers about one of
//! B's records indistinguishable from answers about a random unknown id, and B's event
//! log unchanged at the end.
//!
//! `ISOLATION_TRACE=1` prints every generated call and the start of its answer.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, Utc};
use hms_tests::fixtures::{assert_no_leak, codes, event_count, next_monday};
use hms_tests::{error_code, spawn_app, TestApp, ADMIN_PASSWORD};
use serde_json::{json, Map, Value};
use uuid::Uuid;

const A: &str = "HOSPA";
const B: &str = "HOSPB";
const STAFF_PASSWORD: &str = "isolation staff password";

/// The codes a refused cross-tenant call may answer with.
pub(crate) const REFUSALS: &[&str] = &[
    "NOT_FOUND",
    "VALIDATION",
    "FORBIDDEN",
    "CONFLICT",
    "SUBSCRIPTION_INACTIVE",
    "MODULE_DISABLED",
];

// ----------------------------------------------------------------------------------------
// The schema, as introspection shows it.

const INTROSPECTION: &str = r#"
query Introspect {
  __schema {
    queryType { name }
    mutationType { name }
    types {
      kind
      name
      fields(includeDeprecated: true) {
        name
        args { name defaultValue type { ...TypeRef } }
        type { ...TypeRef }
      }
      inputFields { name defaultValue type { ...TypeRef } }
      enumValues(includeDeprecated: true) { name }
    }
  }
}
fragment TypeRef on __Type {
  kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } }
}"#;

#[derive(Debug, Clone)]
enum TypeRef {
    Named(String),
    List(Box<TypeRef>),
    NonNull(Box<TypeRef>),
}

impl TypeRef {
    fn parse(value: &Value) -> TypeRef {
        match value["kind"].as_str() {
            Some("NON_NULL") => TypeRef::NonNull(Box::new(TypeRef::parse(&value["ofType"]))),
            Some("LIST") => TypeRef::List(Box::new(TypeRef::parse(&value["ofType"]))),
            _ => TypeRef::Named(
                value["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a named type: {value}"))
                    .to_owned(),
            ),
        }
    }

    /// The type as written in a variable definition, e.g. `[WorkingDayInput!]!`.
    fn sdl(&self) -> String {
        match self {
            TypeRef::Named(name) => name.clone(),
            TypeRef::List(inner) => format!("[{}]", inner.sdl()),
            TypeRef::NonNull(inner) => format!("{}!", inner.sdl()),
        }
    }

    fn named(&self) -> &str {
        match self {
            TypeRef::Named(name) => name,
            TypeRef::List(inner) | TypeRef::NonNull(inner) => inner.named(),
        }
    }

    fn required(&self) -> bool {
        matches!(self, TypeRef::NonNull(_))
    }
}

#[derive(Debug, Clone)]
struct InputValue {
    name: String,
    ty: TypeRef,
    has_default: bool,
}

impl InputValue {
    fn parse(value: &Value) -> InputValue {
        InputValue {
            name: value["name"].as_str().expect("a name").to_owned(),
            ty: TypeRef::parse(&value["type"]),
            has_default: !value["defaultValue"].is_null(),
        }
    }

    /// Must be given: non-null without a default.
    fn mandatory(&self) -> bool {
        self.ty.required() && !self.has_default
    }
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    args: Vec<InputValue>,
    ty: TypeRef,
}

#[derive(Debug)]
struct TypeDef {
    kind: String,
    fields: Vec<Field>,
    input_fields: Vec<InputValue>,
    enum_values: Vec<String>,
}

struct Introspected {
    query: Vec<Field>,
    mutation: Vec<Field>,
    types: BTreeMap<String, TypeDef>,
}

async fn introspect(app: &TestApp) -> Introspected {
    let response = app.graphql(INTROSPECTION, json!({}), None).await;
    let schema = &response["data"]["__schema"];
    assert!(schema.is_object(), "introspection answers: {response}");
    let mut types = BTreeMap::new();
    for ty in schema["types"].as_array().expect("types") {
        let name = ty["name"].as_str().expect("type name").to_owned();
        let fields = ty["fields"]
            .as_array()
            .map(|fields| {
                fields
                    .iter()
                    .map(|f| Field {
                        name: f["name"].as_str().expect("field name").to_owned(),
                        args: f["args"]
                            .as_array()
                            .expect("args")
                            .iter()
                            .map(InputValue::parse)
                            .collect(),
                        ty: TypeRef::parse(&f["type"]),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let input_fields = ty["inputFields"]
            .as_array()
            .map(|fields| fields.iter().map(InputValue::parse).collect())
            .unwrap_or_default();
        let enum_values = ty["enumValues"]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .map(|v| v["name"].as_str().expect("enum value").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        types.insert(
            name,
            TypeDef {
                kind: ty["kind"].as_str().expect("kind").to_owned(),
                fields,
                input_fields,
                enum_values,
            },
        );
    }
    let root = |key: &str| -> Vec<Field> {
        let name = schema[key]["name"].as_str().expect("root type");
        types[name].fields.clone()
    };
    let query = root("queryType");
    let mutation = root("mutationType");
    Introspected {
        query,
        mutation,
        types,
    }
}

// ----------------------------------------------------------------------------------------
// Hospital B's records.

/// The kinds of record B has, in the order [`BRecords::ids`] lists them.
const KINDS: &[&str] = &[
    "patient",
    "survivor",
    "appointment",
    "invoice",
    "user",
    "department",
    "line",
    "payment",
    "alert",
];

struct BRecords {
    /// Ids by kind (see [`KINDS`]).
    ids: BTreeMap<&'static str, String>,
    /// Strings that only B's data contains.
    markers: Vec<String>,
    /// The caller's (A's) own records of the same kinds, for requests that mix one of
    /// B's ids into otherwise genuine arguments.
    caller_ids: BTreeMap<&'static str, String>,
}

impl BRecords {
    fn id(&self, kind: &str) -> &str {
        &self.ids[kind]
    }
}

fn data_id(response: &Value, field: &str) -> String {
    response["data"][field]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{field}: {response}"))
        .to_owned()
}

/// Fills hospital B through its own admin's token: a department, a doctor, a patient
/// with an alert, an appointment, and an issued, partly paid invoice.
async fn populate_b(app: &TestApp, token: &str) -> BRecords {
    let gql = |query: &'static str, variables: Value| async move {
        let response = app.graphql(query, variables, Some(token)).await;
        assert!(response["errors"].is_null(), "B's setup: {response}");
        response
    };
    gql(
        "mutation($i: UpdateHospitalProfileInput!) { updateHospitalProfile(input: $i) { code } }",
        json!({ "i": { "name": "Hospital HOSPB", "timeZone": "UTC", "currency": "KES" } }),
    )
    .await;
    let department = data_id(
        &gql(
            "mutation { addDepartment(name: \"Quarantine Xylo Ward\") { id } }",
            json!({}),
        )
        .await,
        "addDepartment",
    );
    let doctor = data_id(
        &gql(
            "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
            json!({ "i": {
                "username": "b_secret_doctor", "email": "b.secret.doctor@hospb.example",
                "fullName": "Doctor Bsecretname", "role": "DOCTOR",
                "departmentId": department, "password": STAFF_PASSWORD } }),
        )
        .await,
        "createUser",
    );
    let registered = gql(
        "mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id mrn } }",
        json!({ "i": { "givenName": "Yolandequa", "familyName": "Zanzibarova",
                       "dateOfBirth": "1977-03-04", "sex": "FEMALE", "phone": "+254711998877" } }),
    )
    .await;
    let patient = data_id(&registered, "registerPatient");
    let mrn = registered["data"]["registerPatient"]["mrn"]
        .as_str()
        .expect("mrn")
        .to_owned();
    let survivor = data_id(
        &gql(
            "mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id } }",
            json!({ "i": { "givenName": "Yolandequa", "familyName": "Quixotenko",
                           "dateOfBirth": "1977-03-04", "sex": "FEMALE" } }),
        )
        .await,
        "registerPatient",
    );
    // Alerts are a clinician's business.
    let doctor_token = app.login(Some(B), "b_secret_doctor", STAFF_PASSWORD).await;
    let alerted = app
        .graphql(
            "mutation($i: AddPatientAlertInput!) { addPatientAlert(input: $i) { alerts { id text } } }",
            json!({ "i": { "patientId": patient, "text": "Bsecret alert text" } }),
            Some(&doctor_token),
        )
        .await;
    let alert = alerted["data"]["addPatientAlert"]["alerts"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("alert: {alerted}"))
        .to_owned();
    let appointment = data_id(
        &gql(
            "mutation($i: ScheduleAppointmentInput!) { scheduleAppointment(input: $i) { id } }",
            json!({ "i": { "patientId": patient, "doctorId": doctor, "departmentId": department,
                           "start": format!("{}T09:00:00Z", next_monday()),
                           "reason": "Bsecret consultation" } }),
        )
        .await,
        "scheduleAppointment",
    );
    let invoice = data_id(
        &gql(
            "mutation($i: CreateInvoiceInput!) { createInvoice(input: $i) { id } }",
            json!({ "i": { "patientId": patient, "appointmentId": appointment } }),
        )
        .await,
        "createInvoice",
    );
    let lined = gql(
        "mutation($i: AddInvoiceLineInput!) { addInvoiceLine(input: $i) { lines { id } } }",
        json!({ "i": { "invoiceId": invoice, "code": "CONSULT", "description": "Bsecret consult",
                       "quantity": 1, "unitPriceMinor": 5000 } }),
    )
    .await;
    let line = lined["data"]["addInvoiceLine"]["lines"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("line: {lined}"))
        .to_owned();
    gql(
        "mutation($i: IssueInvoiceInput!) { issueInvoice(input: $i) { id } }",
        json!({ "i": { "invoiceId": invoice } }),
    )
    .await;
    let paid = gql(
        "mutation($i: RecordPaymentInput!) { recordPayment(input: $i) { payments { id } } }",
        json!({ "i": { "invoiceId": invoice, "amountMinor": 1000, "method": "CASH",
                       "reference": "Bsecret receipt" } }),
    )
    .await;
    let payment = paid["data"]["recordPayment"]["payments"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("payment: {paid}"))
        .to_owned();

    let ids: BTreeMap<&'static str, String> = KINDS
        .iter()
        .copied()
        .zip([
            patient,
            survivor,
            appointment,
            invoice,
            doctor,
            department,
            line,
            payment,
            alert,
        ])
        .collect();
    let mut markers: Vec<String> = ids.values().cloned().collect();
    markers.extend(
        [
            B,
            "Hospital HOSPB",
            "hospb_admin",
            "Zanzibarova",
            "Quixotenko",
            "Yolandequa",
            "711998877",
            "b_secret_doctor",
            "Bsecretname",
            "Quarantine Xylo Ward",
            "Bsecret",
            &mrn,
        ]
        .map(str::to_owned),
    );
    BRecords {
        ids,
        markers,
        caller_ids: BTreeMap::new(),
    }
}

// ----------------------------------------------------------------------------------------
// Generic arguments.

/// Which ids go into id-typed arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdChoice {
    /// B's record of the kind the argument's name suggests.
    Suggested,
    /// B's record of one kind, in every id argument.
    Kind(&'static str),
    /// Fresh random ids, one per kind the names suggest: records that exist nowhere
    /// (the counterpart of `Suggested`).
    Random,
    /// One fresh random id in every id argument (the counterpart of `Kind`).
    OneRandom,
    /// The caller's own records, except B's record (or, with `random`, an unknown id)
    /// where the argument names one of `kind`: a real request with one foreign id.
    Mixed { kind: &'static str, random: bool },
}

struct Filler<'a> {
    schema: &'a Introspected,
    b: &'a BRecords,
    operation: &'a str,
    choice: IdChoice,
    /// Whether optional id arguments and fields are filled too.
    optional_ids: bool,
    /// The random ids handed out, by kind, to compare messages without them.
    randoms: BTreeMap<&'static str, String>,
    /// The kinds of record the id arguments name.
    kinds: BTreeSet<&'static str>,
}

/// Whether an argument or input field names a record by id.
fn id_like(name: &str, ty: &str) -> bool {
    ty == "UUID" || name == "id" || name.ends_with("Id")
}

/// The kind of record an id argument's name (or else its operation's name) suggests.
fn suggested_kind(operation: &str, name: &str) -> &'static str {
    let name = name.to_ascii_lowercase();
    let by_name = [
        ("patient", "patient"),
        ("duplicate", "patient"),
        ("survivor", "survivor"),
        ("appointment", "appointment"),
        ("invoice", "invoice"),
        ("doctor", "user"),
        ("actor", "user"),
        ("user", "user"),
        ("department", "department"),
        ("line", "line"),
        ("payment", "payment"),
        ("alert", "alert"),
    ];
    if let Some((_, kind)) = by_name.iter().find(|(word, _)| name.contains(word)) {
        return kind;
    }
    let operation = operation.to_ascii_lowercase();
    by_name
        .iter()
        .find(|(word, _)| operation.contains(word))
        .map_or("patient", |(_, kind)| kind)
}

impl Filler<'_> {
    fn id(&mut self, name: &str) -> Value {
        self.kinds.insert(suggested_kind(self.operation, name));
        match self.choice {
            IdChoice::Random | IdChoice::OneRandom => {
                let kind = if self.choice == IdChoice::Random {
                    suggested_kind(self.operation, name)
                } else {
                    "any"
                };
                json!(self
                    .randoms
                    .entry(kind)
                    .or_insert_with(|| Uuid::new_v4().to_string()))
            }
            IdChoice::Kind(kind) => json!(self.b.id(kind)),
            IdChoice::Mixed { kind, random } => {
                let suggested = suggested_kind(self.operation, name);
                if suggested != kind {
                    json!(self.b.caller_ids[suggested])
                } else if random {
                    json!(self
                        .randoms
                        .entry(kind)
                        .or_insert_with(|| Uuid::new_v4().to_string()))
                } else {
                    json!(self.b.id(kind))
                }
            }
            IdChoice::Suggested => json!(self.b.id(suggested_kind(self.operation, name))),
        }
    }

    fn string(&self, name: &str) -> Value {
        let value = match name {
            "password" | "newPassword" | "currentPassword" | "adminPassword" => {
                "isolation-test-password-1"
            }
            "email" | "contactEmail" | "adminEmail" => "someone@isolation.example",
            "username" | "adminUsername" => "isolation_user",
            "code" | "hospitalCode" => B,
            "currency" => "KES",
            "timeZone" => "UTC",
            "country" => "KE",
            "open" => "08:00",
            "close" => "17:00",
            "phone" | "contactPhone" => "+254700000001",
            "primaryColor" | "accentColor" => "#112233",
            "invoicePrefix" => "INV",
            "search" => "Zanzibarova",
            _ => "Isolation check",
        };
        json!(value)
    }

    /// A value for an argument or input field; `None` leaves an optional one out.
    fn value(&mut self, name: &str, ty: &TypeRef, required: bool) -> Option<Value> {
        match ty {
            TypeRef::NonNull(inner) => self.value(name, inner, true),
            TypeRef::List(inner) => {
                if required {
                    self.value(name, inner, true).map(|v| json!([v]))
                } else {
                    None
                }
            }
            TypeRef::Named(type_name) => {
                let def = &self.schema.types[type_name.as_str()];
                let is_id = id_like(name, type_name);
                match def.kind.as_str() {
                    "INPUT_OBJECT" => {
                        // Optional inputs (filters) are filled too: their id fields are
                        // the point.
                        let mut object = Map::new();
                        for field in &def.input_fields {
                            let field_is_id = id_like(&field.name, field.ty.named());
                            if field.mandatory() || (field_is_id && self.optional_ids) {
                                if let Some(v) = self.value(&field.name, &field.ty, false) {
                                    object.insert(field.name.clone(), v);
                                }
                            }
                        }
                        Some(Value::Object(object))
                    }
                    "ENUM" => required.then(|| json!(def.enum_values[0])),
                    _ if is_id && (required || self.optional_ids) => Some(self.id(name)),
                    // A search for B's patient is worth making.
                    _ if !required && name != "search" => None,
                    _ => Some(self.scalar(name, type_name)),
                }
            }
        }
    }

    fn scalar(&mut self, name: &str, type_name: &str) -> Value {
        let now = Utc::now();
        match type_name {
            "Int" => json!(1),
            "Float" => json!(1.0),
            "Boolean" => json!(false),
            "MinorUnits" => json!(100),
            "JSON" => json!({}),
            "NaiveDate" => match name {
                "dateOfBirth" => json!("1990-01-01"),
                _ => json!(next_monday().to_string()),
            },
            "NaiveTime" => json!("09:00:00"),
            "DateTime" => match name {
                "diedAt" | "at" | "from" => json!((now - Duration::days(1)).to_rfc3339()),
                _ => json!(format!("{}T09:00:00Z", next_monday())),
            },
            _ => self.string(name),
        }
    }
}

/// A selection of every argument-free field, a few levels deep, so that whatever the
/// answer holds is looked at.
fn selection(
    schema: &Introspected,
    type_name: &str,
    depth: usize,
    path: &mut Vec<String>,
) -> String {
    let def = &schema.types[type_name];
    if !matches!(def.kind.as_str(), "OBJECT" | "INTERFACE") {
        return String::new();
    }
    let mut parts = vec!["__typename".to_owned()];
    path.push(type_name.to_owned());
    for field in &def.fields {
        if !field.args.is_empty() {
            continue;
        }
        let named = field.ty.named();
        let kind = schema.types[named].kind.as_str();
        if matches!(kind, "OBJECT" | "INTERFACE" | "UNION") {
            if depth == 0 || path.iter().any(|p| p == named) {
                continue;
            }
            let inner = selection(schema, named, depth - 1, path);
            parts.push(format!("{} {{ {inner} }}", field.name));
        } else {
            parts.push(field.name.clone());
        }
    }
    path.pop();
    parts.join(" ")
}

/// One call of an operation: the document and its variables.
struct Call {
    document: String,
    variables: Value,
    randoms: Vec<String>,
    kinds: BTreeSet<&'static str>,
}

fn call(
    schema: &Introspected,
    b: &BRecords,
    keyword: &str,
    field: &Field,
    choice: IdChoice,
    optional_ids: bool,
) -> Call {
    let mut filler = Filler {
        schema,
        b,
        operation: &field.name,
        choice,
        optional_ids,
        randoms: BTreeMap::new(),
        kinds: BTreeSet::new(),
    };
    let mut definitions = Vec::new();
    let mut arguments = Vec::new();
    let mut variables = Map::new();
    for arg in &field.args {
        let Some(value) = filler.value(&arg.name, &arg.ty, arg.mandatory()) else {
            continue;
        };
        definitions.push(format!("${}: {}", arg.name, arg.ty.sdl()));
        arguments.push(format!("{}: ${}", arg.name, arg.name));
        variables.insert(arg.name.clone(), value);
    }
    let definitions = if definitions.is_empty() {
        String::new()
    } else {
        format!("({})", definitions.join(", "))
    };
    let arguments = if arguments.is_empty() {
        String::new()
    } else {
        format!("({})", arguments.join(", "))
    };
    let inner = selection(schema, field.ty.named(), 3, &mut Vec::new());
    let selected = if inner.is_empty() {
        String::new()
    } else {
        format!(" {{ {inner} }}")
    };
    Call {
        document: format!(
            "{keyword} Isolation{definitions} {{ {}{arguments}{selected} }}",
            field.name
        ),
        variables: Value::Object(variables),
        randoms: filler.randoms.into_values().collect(),
        kinds: filler.kinds,
    }
}

/// Whether the operation names one record by id: a mandatory id somewhere in its
/// arguments (also inside mandatory input fields).
fn names_a_record(schema: &Introspected, field: &Field) -> bool {
    fn mandatory_id(schema: &Introspected, value: &InputValue, depth: usize) -> bool {
        if !value.mandatory() {
            return false;
        }
        let named = value.ty.named();
        if named == "UUID" {
            return true;
        }
        let def = &schema.types[named];
        depth > 0
            && def.kind == "INPUT_OBJECT"
            && def
                .input_fields
                .iter()
                .any(|f| mandatory_id(schema, f, depth - 1))
    }
    field.args.iter().any(|a| mandatory_id(schema, a, 3))
}

/// A response's errors reduced to what a client can tell apart: code and message, with
/// the ids sent replaced by a placeholder.
fn fingerprint(response: &Value, ids: &[&str]) -> Vec<(Option<String>, String)> {
    response["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    let mut message = e["message"].as_str().unwrap_or_default().to_owned();
                    for id in ids {
                        message = message.replace(id, "<id>");
                    }
                    (e["extensions"]["code"].as_str().map(str::to_owned), message)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One role of hospital A walking the whole schema.
struct Walker<'a> {
    app: &'a TestApp,
    schema: &'a Introspected,
    b: &'a BRecords,
    /// Operations that answered NOT_FOUND to some role, by name.
    not_found: BTreeSet<String>,
    /// Platform operations seen (all answered FORBIDDEN).
    platform: BTreeSet<String>,
    calls: usize,
}

impl Walker<'_> {
    async fn send(&mut self, call: &Call, token: &str) -> Value {
        self.calls += 1;
        self.app
            .graphql(&call.document, call.variables.clone(), Some(token))
            .await
    }

    /// The checks every answer must pass.
    fn check(&self, role: &str, operation: &str, call: &Call, response: &Value) {
        let what = format!("{role} → {operation} {}", call.variables);
        let data = response["data"].to_string();
        for marker in &self.b.markers {
            assert!(
                !data.contains(marker.as_str()),
                "{what}: the answer shows B's `{marker}`: {response}"
            );
        }
        if let Some(errors) = response["errors"].as_array() {
            // Errors come from the resolver, not from a document the schema refused:
            // otherwise the call would prove nothing.
            assert!(
                errors.iter().all(|e| e["path"].is_array()),
                "{what}: the generated call is not valid: {response}"
            );
        }
        if std::env::var_os("ISOLATION_TRACE").is_some() {
            let shown: String = response.to_string().chars().take(300).collect();
            println!("{what}\n  {shown}");
        }
        for code in codes(response) {
            let code =
                code.unwrap_or_else(|| panic!("{what}: an error without a code: {response}"));
            assert!(
                REFUSALS.contains(&code.as_str()),
                "{what}: answered {code}: {response}"
            );
        }
        assert_no_leak(&what, response);
    }

    /// Calls `field` with B's ids (`with_b`) and with unknown ids (`with_unknown`) and
    /// asserts a client cannot tell the answers apart; returns the answer to B's ids.
    #[allow(clippy::too_many_arguments)]
    async fn compare(
        &mut self,
        role: &str,
        token: &str,
        keyword: &str,
        field: &Field,
        with_b: IdChoice,
        with_unknown: IdChoice,
        optional_ids: bool,
    ) -> Value {
        let schema = self.schema;
        let b_call = call(schema, self.b, keyword, field, with_b, optional_ids);
        let answer = self.send(&b_call, token).await;
        self.check(role, &field.name, &b_call, &answer);
        let random = call(schema, self.b, keyword, field, with_unknown, optional_ids);
        let unknown = self.send(&random, token).await;
        self.check(role, &field.name, &random, &unknown);
        assert!(
            unknown["data"].is_null() || unknown["data"][&field.name].is_null(),
            "{role} → {}: an unknown id gave data: {unknown}",
            field.name
        );
        let randoms: Vec<&str> = random.randoms.iter().map(String::as_str).collect();
        let b_ids: Vec<&str> = self.b.ids.values().map(String::as_str).collect();
        assert_eq!(
            fingerprint(&answer, &b_ids),
            fingerprint(&unknown, &randoms),
            "{role} → {} ({with_b:?}): B's ids are told apart from unknown ones:\nB's: {answer}\nunknown: {unknown}",
            field.name
        );
        if error_code(&answer) == Some("NOT_FOUND") {
            self.not_found.insert(field.name.clone());
        }
        answer
    }

    async fn walk(&mut self, role: &str, token: &str, every_kind: bool) {
        let schema = self.schema;
        let operations: Vec<(&str, &Field)> = schema
            .query
            .iter()
            .map(|f| ("query", f))
            .chain(schema.mutation.iter().map(|f| ("mutation", f)))
            .filter(|(_, f)| f.name != "login")
            .collect();
        for (keyword, field) in operations {
            if !names_a_record(schema, field) {
                // Lists, searches and creations: B's ids only in optional filters.
                let suggested = call(schema, self.b, keyword, field, IdChoice::Suggested, true);
                let response = self.send(&suggested, token).await;
                self.check(role, &field.name, &suggested, &response);
                if field.ty.named().starts_with("Platform") {
                    // The platform's operations are the super administrator's alone.
                    assert_eq!(
                        error_code(&response),
                        Some("FORBIDDEN"),
                        "{role} → {}: {response}",
                        field.name
                    );
                    self.platform.insert(field.name.clone());
                }
                continue;
            }
            // About a record: B's ids and unknown ids must get the same answer, with and
            // without the optional ids.
            for optional_ids in [true, false] {
                self.compare(
                    role,
                    token,
                    keyword,
                    field,
                    IdChoice::Suggested,
                    IdChoice::Random,
                    optional_ids,
                )
                .await;
            }
            // One of B's ids among the caller's own: each foreign id alone must be
            // enough to refuse, exactly as an unknown id would be.
            let kinds = call(schema, self.b, keyword, field, IdChoice::Suggested, true).kinds;
            if kinds.len() > 1 {
                for kind in kinds {
                    self.compare(
                        role,
                        token,
                        keyword,
                        field,
                        IdChoice::Mixed {
                            kind,
                            random: false,
                        },
                        IdChoice::Mixed { kind, random: true },
                        true,
                    )
                    .await;
                }
            }
            if every_kind {
                for kind in KINDS {
                    self.compare(
                        role,
                        token,
                        keyword,
                        field,
                        IdChoice::Kind(kind),
                        IdChoice::OneRandom,
                        true,
                    )
                    .await;
                }
            }
        }
    }
}

/// Creates an account of `role` in A; returns its id and a token.
async fn create_staff(app: &TestApp, admin: &str, username: &str, role: &str) -> (String, String) {
    let created = app
        .graphql(
            "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
            json!({ "i": { "username": username, "email": format!("{username}@hospa.example"),
                           "fullName": "Isolation Staff", "role": role, "password": STAFF_PASSWORD } }),
            Some(admin),
        )
        .await;
    assert!(created["errors"].is_null(), "{created}");
    let id = data_id(&created, "createUser");
    (id, app.login(Some(A), username, STAFF_PASSWORD).await)
}

/// A's own records of every kind (the same shapes as B's), for mixed requests.
async fn populate_a(
    app: &TestApp,
    admin: &str,
    doctor: &str,
    doctor_id: &str,
) -> BTreeMap<&'static str, String> {
    let gql = |query: &'static str, variables: Value, token: &'static str| async move {
        let token = if token == "doctor" { doctor } else { admin };
        let response = app.graphql(query, variables, Some(token)).await;
        assert!(response["errors"].is_null(), "A's setup: {response}");
        response
    };
    gql(
        "mutation($i: UpdateHospitalProfileInput!) { updateHospitalProfile(input: $i) { code } }",
        json!({ "i": { "name": "Hospital HOSPA", "timeZone": "UTC", "currency": "KES" } }),
        "admin",
    )
    .await;
    let department = data_id(
        &gql(
            "mutation { addDepartment(name: \"A Ward\") { id } }",
            json!({}),
            "admin",
        )
        .await,
        "addDepartment",
    );
    let register = "mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id } }";
    let patient = data_id(
        &gql(
            register,
            json!({ "i": { "familyName": "Aone", "dateOfBirth": "1970-01-01", "sex": "MALE" } }),
            "admin",
        )
        .await,
        "registerPatient",
    );
    let survivor = data_id(
        &gql(
            register,
            json!({ "i": { "familyName": "Atwo", "dateOfBirth": "1970-01-01", "sex": "MALE" } }),
            "admin",
        )
        .await,
        "registerPatient",
    );
    let alerted = gql(
        "mutation($i: AddPatientAlertInput!) { addPatientAlert(input: $i) { alerts { id } } }",
        json!({ "i": { "patientId": patient, "text": "A alert" } }),
        "doctor",
    )
    .await;
    let alert = alerted["data"]["addPatientAlert"]["alerts"][0]["id"]
        .as_str()
        .expect("alert")
        .to_owned();
    let appointment = data_id(
        &gql(
            "mutation($i: ScheduleAppointmentInput!) { scheduleAppointment(input: $i) { id } }",
            json!({ "i": { "patientId": patient, "doctorId": doctor_id, "departmentId": department,
                           "start": format!("{}T10:00:00Z", next_monday()), "reason": "A visit" } }),
            "admin",
        )
        .await,
        "scheduleAppointment",
    );
    let invoice = data_id(
        &gql(
            "mutation($i: CreateInvoiceInput!) { createInvoice(input: $i) { id } }",
            json!({ "i": { "patientId": patient, "appointmentId": appointment } }),
            "admin",
        )
        .await,
        "createInvoice",
    );
    let lined = gql(
        "mutation($i: AddInvoiceLineInput!) { addInvoiceLine(input: $i) { lines { id } } }",
        json!({ "i": { "invoiceId": invoice, "code": "CONSULT", "description": "A consult", "quantity": 1, "unitPriceMinor": 5000 } }),
        "admin",
    )
    .await;
    let line = lined["data"]["addInvoiceLine"]["lines"][0]["id"]
        .as_str()
        .expect("line")
        .to_owned();
    gql(
        "mutation($i: IssueInvoiceInput!) { issueInvoice(input: $i) { id } }",
        json!({ "i": { "invoiceId": invoice } }),
        "admin",
    )
    .await;
    let paid = gql(
        "mutation($i: RecordPaymentInput!) { recordPayment(input: $i) { payments { id } } }",
        json!({ "i": { "invoiceId": invoice, "amountMinor": 1000, "method": "CASH" } }),
        "admin",
    )
    .await;
    let payment = paid["data"]["recordPayment"]["payments"][0]["id"]
        .as_str()
        .expect("payment")
        .to_owned();
    KINDS
        .iter()
        .copied()
        .zip([
            patient,
            survivor,
            appointment,
            invoice,
            doctor_id.to_owned(),
            department,
            line,
            payment,
            alert,
        ])
        .collect()
}

#[tokio::test]
async fn every_operation_of_the_schema_keeps_hospital_b_out_of_reach_of_hospital_a() {
    let app = spawn_app().await;
    let admin_a = app.setup_hospital(A).await;
    let admin_b = app.setup_hospital(B).await;
    let token_a = app.login(Some(A), &admin_a, ADMIN_PASSWORD).await;
    let token_b = app.login(Some(B), &admin_b, ADMIN_PASSWORD).await;
    let mut b = populate_b(&app, &token_b).await;
    let (doctor_a_id, doctor_a) = create_staff(&app, &token_a, "a_doctor", "DOCTOR").await;
    let (_, desk_a) = create_staff(&app, &token_a, "a_desk", "RECEPTIONIST").await;
    let (_, lab_a) = create_staff(&app, &token_a, "a_lab", "LAB_TECHNICIAN").await;
    b.caller_ids = populate_a(&app, &token_a, &doctor_a, &doctor_a_id).await;

    let schema = introspect(&app).await;
    let names: BTreeSet<&str> = schema
        .query
        .iter()
        .chain(&schema.mutation)
        .map(|f| f.name.as_str())
        .collect();
    // The walk below is only as good as the enumeration: the schema must at least have
    // the issue's operations.
    for expected in [
        "login",
        "me",
        "patient",
        "patients",
        "invoice",
        "invoices",
        "appointments",
        "auditTrail",
        "users",
        "registerPatient",
        "createInvoice",
        "recordPayment",
        "scheduleAppointment",
        "createUser",
        "createHospital",
    ] {
        assert!(names.contains(expected), "the schema lacks {expected}");
    }

    let before = event_count(&app, B).await;
    let mut walker = Walker {
        app: &app,
        schema: &schema,
        b: &b,
        not_found: BTreeSet::new(),
        platform: BTreeSet::new(),
        calls: 0,
    };
    walker.walk("A's admin", &token_a, true).await;
    walker.walk("A's doctor", &doctor_a, false).await;
    walker.walk("A's receptionist", &desk_a, false).await;
    walker.walk("A's lab technician", &lab_a, false).await;

    assert_eq!(
        event_count(&app, B).await,
        before,
        "hospital A's calls appended to B's log"
    );
    // Every operation about one record answered NOT_FOUND to a role allowed to ask.
    let about_a_record: BTreeSet<String> = schema
        .query
        .iter()
        .chain(&schema.mutation)
        .filter(|f| f.name != "login" && names_a_record(&schema, f))
        .map(|f| f.name.clone())
        .collect();
    let missing: Vec<&String> = about_a_record.difference(&walker.not_found).collect();
    assert!(
        missing.is_empty(),
        "never answered NOT_FOUND for B's record: {missing:?}"
    );
    assert!(walker.calls > 2 * names.len(), "{} calls", walker.calls);
    for platform in [
        "hospitals",
        "platformStats",
        "createHospital",
        "suspendHospital",
    ] {
        assert!(
            walker.platform.contains(platform),
            "{platform} was not walked as a platform operation"
        );
    }

    // B still sees its own records: the ids used above were real.
    let own = app
        .graphql(
            "query($id: UUID!) { patient(id: $id) { familyName } }",
            json!({ "id": b.id("patient") }),
            Some(&token_b),
        )
        .await;
    assert_eq!(own["data"]["patient"]["familyName"], "Zanzibarova", "{own}");
}

#[tokio::test]
async fn a_hospital_named_in_a_header_or_an_argument_is_ignored() {
    let app = spawn_app().await;
    let admin_a = app.setup_hospital(A).await;
    let admin_b = app.setup_hospital(B).await;
    let token_a = app.login(Some(A), &admin_a, ADMIN_PASSWORD).await;
    let token_b = app.login(Some(B), &admin_b, ADMIN_PASSWORD).await;
    let b = populate_b(&app, &token_b).await;
    let before = event_count(&app, B).await;

    // A's credentials with B's code: the same answer as any failed sign-in.
    let crossed = app.login_response(Some(B), &admin_a, ADMIN_PASSWORD).await;
    assert_eq!(error_code(&crossed), Some("UNAUTHENTICATED"), "{crossed}");
    assert!(crossed["data"].is_null() || crossed["data"]["login"].is_null());
    let unknown = app
        .login_response(Some(B), "nobody_at_all", ADMIN_PASSWORD)
        .await;
    assert_eq!(
        crossed["errors"][0]["message"], unknown["errors"][0]["message"],
        "a known user of another hospital is told apart from an unknown one"
    );

    // Headers naming B change nothing: the token's hospital is the tenant.
    let query = "{ me { hospital { code } } hospital { code name } \
                 patients(first: 100) { nodes { id mrn familyName } } \
                 users(first: 100) { nodes { id username } } }";
    for header in ["x-hospital-code", "x-tenant", "x-hospital", "x-tenant-id"] {
        let response: Value = app
            .http
            .post(format!("{}/graphql", app.address))
            .bearer_auth(&token_a)
            .header(header, B)
            .json(&json!({ "query": query }))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        assert!(response["errors"].is_null(), "{header}: {response}");
        assert_eq!(response["data"]["me"]["hospital"]["code"], A, "{response}");
        assert_eq!(response["data"]["hospital"]["code"], A, "{response}");
        let data = response["data"].to_string();
        for marker in &b.markers {
            assert!(!data.contains(marker.as_str()), "{header}: {response}");
        }
        let by_id: Value = app
            .http
            .post(format!("{}/graphql", app.address))
            .bearer_auth(&token_a)
            .header(header, B)
            .json(
                &json!({ "query": "query($id: UUID!) { patient(id: $id) { id familyName } }",
                           "variables": { "id": b.id("patient") } }),
            )
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        assert_eq!(error_code(&by_id), Some("NOT_FOUND"), "{header}: {by_id}");
    }

    // A hospital code in the request's extensions is not a tenant either.
    let response: Value = app
        .post_graphql(
            json!({ "query": "{ hospital { code } }", "extensions": { "hospitalCode": B, "tenant": B } }),
            Some(&token_a),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(response["data"]["hospital"]["code"], A, "{response}");

    // An unknown argument naming B is a schema error, not a way in.
    let response = app
        .graphql(
            &format!("{{ hospital(code: \"{B}\") {{ code }} }}"),
            json!({}),
            Some(&token_a),
        )
        .await;
    assert!(response["errors"].is_array(), "{response}");
    assert!(!response["data"].to_string().contains(B), "{response}");

    // Platform operations naming B are refused to a hospital administrator.
    let response = app
        .graphql(
            "query($c: String!) { platformHospital(code: $c) { code name } }",
            json!({ "c": B }),
            Some(&token_a),
        )
        .await;
    assert_eq!(error_code(&response), Some("FORBIDDEN"), "{response}");
    let response = app
        .graphql(
            "mutation($i: SuspendHospitalInput!) { suspendHospital(input: $i) { code } }",
            json!({ "i": { "code": B, "reason": "not yours" } }),
            Some(&token_a),
        )
        .await;
    assert_eq!(error_code(&response), Some("FORBIDDEN"), "{response}");

    // B's hospital record is not in A's audit trail.
    let response = app
        .graphql(
            "query($id: String) { auditTrail(filter: { aggregateType: \"hospital\", aggregateId: $id }, first: 100) { nodes { aggregateId payload } } }",
            json!({ "id": B }),
            Some(&token_a),
        )
        .await;
    assert_eq!(
        response["data"]["auditTrail"]["nodes"],
        json!([]),
        "{response}"
    );

    assert_eq!(event_count(&app, B).await, before, "B's log grew");

    // Idempotency keys belong to a hospital: B's key means nothing in A.
    let register = "mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id mrn } }";
    let input = json!({ "familyName": "Keyholder", "dateOfBirth": "1960-06-06", "sex": "MALE",
                        "idempotencyKey": "shared-retry-key" });
    let in_b = app
        .graphql(register, json!({ "i": input }), Some(&token_b))
        .await;
    let b_patient = data_id(&in_b, "registerPatient");
    let after_b = event_count(&app, B).await;
    let in_a = app
        .graphql(register, json!({ "i": input }), Some(&token_a))
        .await;
    let a_patient = data_id(&in_a, "registerPatient");
    assert_ne!(a_patient, b_patient, "A got B's answer for B's key: {in_a}");
    assert!(
        in_a["data"]["registerPatient"]["mrn"]
            .as_str()
            .is_some_and(|m| m.starts_with(A)),
        "{in_a}"
    );
    let other = json!({ "familyName": "Otherinput", "dateOfBirth": "1961-06-06", "sex": "FEMALE",
                        "idempotencyKey": "another-b-key" });
    app.graphql(register, json!({ "i": other }), Some(&token_b))
        .await;
    let after_b = after_b + 1;
    let changed = json!({ "familyName": "Changedinput", "dateOfBirth": "1962-06-06", "sex": "FEMALE",
                          "idempotencyKey": "another-b-key" });
    let in_a = app
        .graphql(register, json!({ "i": changed }), Some(&token_a))
        .await;
    assert!(
        in_a["errors"].is_null(),
        "B's use of a key refuses A's: {in_a}"
    );
    assert_eq!(event_count(&app, B).await, after_b, "B's log grew");
}
