//! Fixtures several feature files share: staff and patients made through the command
//! path or the API, event-log probes, and assertions about error responses. Feature
//! files import from here, never from each other.

use chrono::{Datelike, Duration, NaiveDate, Utc, Weekday};
use hms_app::commands;
use hms_domain::common::{BoundedText, Email, HospitalCode, Username};
use hms_domain::patient::{Demographics, Mrn, Patient, PatientCommand, Sex};
use hms_domain::user::{user_id_for, User, UserCommand};
use hms_domain::{Actor, EventMetadata, Role};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{TestApp, ADMIN_PASSWORD};

// ----------------------------------------------------------------------------------------
// Patients and staff through the API.

pub const PATIENT_FIELDS: &str = "id mrn givenName middleName familyName fullName dateOfBirth sex \
    phone email address { line1 city country } emergencyContact { name relationship phone } \
    bloodType allergies { substance reaction severity } alerts { id text } status mergedInto \
    diedAt registeredAt updatedAt version";

/// Signed-in staff of one hospital, by role.
pub struct Staff {
    pub admin: String,
    pub receptionist: String,
    pub nurse: String,
    pub doctor: String,
    pub doctor_id: Uuid,
    pub other_doctor: String,
    pub other_doctor_id: Uuid,
    pub accountant: String,
}

/// Creates a user of `role` in hospital `code` (the way `createUser` does, through the
/// command path) and returns their id.
pub async fn create_user(app: &TestApp, code: &str, username: &str, role: Role) -> Uuid {
    let lease = app.state.registry.get(code).await.expect("tenant");
    let metadata = EventMetadata {
        actor: Actor::system(),
        tenant: code.into(),
        request_id: "test".into(),
        client_addr: None,
        at: chrono::Utc::now(),
    };
    let name = Username::parse(username).expect("valid username");
    let id = user_id_for(&name);
    let hash = hms_app::auth::password::hash(ADMIN_PASSWORD.to_owned())
        .await
        .expect("hash");
    let command = UserCommand::CreateUser {
        username: name,
        email: Email::parse(&format!("{username}@hospital.example")).expect("valid"),
        full_name: BoundedText::parse("full_name", &format!("Dr {username}"), 200).expect("valid"),
        role,
        department_id: None,
        password_hash: hash,
        now: chrono::Utc::now(),
    };
    commands::execute::<User>(
        &lease.pool,
        &app.state.runner,
        &id.to_string(),
        command,
        (),
        &metadata,
    )
    .await
    .expect("user created");
    id
}

/// A hospital with an admin, a receptionist, a nurse, two doctors and an accountant,
/// all signed in.
pub async fn hospital_with_staff(app: &TestApp, code: &str) -> Staff {
    let admin = app.setup_hospital(code).await;
    let lower = code.to_ascii_lowercase();
    let login = |user: String| async move { app.login(Some(code), &user, ADMIN_PASSWORD).await };
    let reception = format!("{lower}_desk");
    let nurse = format!("{lower}_nurse");
    let doctor = format!("{lower}_doc");
    let other_doctor = format!("{lower}_doc2");
    let accountant = format!("{lower}_books");
    create_user(app, code, &reception, Role::Receptionist).await;
    create_user(app, code, &nurse, Role::Nurse).await;
    let doctor_id = create_user(app, code, &doctor, Role::Doctor).await;
    let other_doctor_id = create_user(app, code, &other_doctor, Role::Doctor).await;
    create_user(app, code, &accountant, Role::Accountant).await;
    Staff {
        admin: login(admin).await,
        receptionist: login(reception).await,
        nurse: login(nurse).await,
        doctor: login(doctor).await,
        doctor_id,
        other_doctor: login(other_doctor).await,
        other_doctor_id,
        accountant: login(accountant).await,
    }
}

/// `registerPatient` with the given input; returns the whole response.
pub async fn register(app: &TestApp, token: &str, input: Value) -> Value {
    app.graphql(
        &format!(
            "mutation($input: RegisterPatientInput!) {{ registerPatient(input: $input) {{ {PATIENT_FIELDS} }} }}"
        ),
        json!({ "input": input }),
        Some(token),
    )
    .await
}

/// Registers a minimal patient and returns its id.
pub async fn register_simple(app: &TestApp, token: &str, given: &str, family: &str) -> String {
    let response = register(
        app,
        token,
        json!({ "givenName": given, "familyName": family, "dateOfBirth": "1985-06-15", "sex": "MALE" }),
    )
    .await;
    response["data"]["registerPatient"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("registered: {response}"))
        .to_owned()
}

// ----------------------------------------------------------------------------------------
// Staff and patients through the command path.

pub fn metadata(code: &str, actor: Actor) -> EventMetadata {
    EventMetadata {
        actor,
        tenant: code.to_owned(),
        request_id: "test".into(),
        client_addr: None,
        at: Utc::now(),
    }
}

/// The hospital's first administrator, as an actor.
pub fn admin_actor(code: &str) -> Actor {
    let username = format!("{}_admin", code.to_ascii_lowercase());
    Actor {
        user_id: user_id_for(&Username::parse(&username).expect("valid")),
        username,
        role: Role::HospitalAdmin,
    }
}

/// Creates a user with `role` (password [`ADMIN_PASSWORD`]) and returns their token.
pub async fn staff(app: &TestApp, code: &str, username: &str, role: Role) -> String {
    let lease = app.state.registry.get(code).await.expect("tenant");
    let name = Username::parse(username).expect("valid username");
    let id = user_id_for(&name).to_string();
    let hash = hms_app::auth::password::hash(ADMIN_PASSWORD.to_owned())
        .await
        .expect("hash");
    let command = UserCommand::CreateUser {
        username: name,
        email: Email::parse(&format!("{username}@hospital.example")).expect("email"),
        full_name: BoundedText::parse("full_name", username, 100).expect("name"),
        role,
        department_id: None,
        password_hash: hash,
        now: Utc::now(),
    };
    commands::execute::<User>(
        &lease.pool,
        &app.state.runner,
        &id,
        command,
        (),
        &metadata(code, admin_actor(code)),
    )
    .await
    .expect("user created");
    app.login(Some(code), username, ADMIN_PASSWORD).await
}

pub fn user_id(username: &str) -> String {
    user_id_for(&Username::parse(username).expect("valid")).to_string()
}

pub fn demographics(family_name: &str) -> Demographics {
    Demographics {
        given_name: Some(BoundedText::parse("given_name", "Amina", 100).expect("valid")),
        middle_name: None,
        family_name: BoundedText::parse("family_name", family_name, 100).expect("valid"),
        date_of_birth: NaiveDate::from_ymd_opt(1990, 4, 12).expect("date"),
        sex: Sex::Female,
        phone: None,
        email: None,
        address: None,
        emergency_contact: None,
        blood_type: None,
    }
}

/// Registers a patient directly through the command path and returns their id.
pub async fn register_patient(app: &TestApp, code: &str, family_name: &str) -> Uuid {
    let lease = app.state.registry.get(code).await.expect("tenant");
    let sequence: i64 = sqlx::query_scalar("SELECT nextval('mrn_seq')")
        .fetch_one(&lease.pool)
        .await
        .expect("mrn sequence");
    let hospital = HospitalCode::parse(code).expect("code");
    let id = Uuid::new_v4();
    let command = PatientCommand::RegisterPatient {
        actor: admin_actor(code),
        patient_id: id,
        mrn: Mrn::new(&hospital, u64::try_from(sequence).expect("positive")).expect("mrn"),
        hospital,
        demographics: demographics(family_name),
        allergies: vec![],
        now: Utc::now(),
    };
    commands::execute::<Patient>(
        &lease.pool,
        &app.state.runner,
        &id.to_string(),
        command,
        (),
        &metadata(code, admin_actor(code)),
    )
    .await
    .expect("patient registered");
    id
}

/// Changes a patient's family name directly through the command path.
pub async fn rename_patient(app: &TestApp, code: &str, id: Uuid, family_name: &str) {
    let lease = app.state.registry.get(code).await.expect("tenant");
    let command = PatientCommand::UpdateDemographics {
        actor: admin_actor(code),
        demographics: demographics(family_name),
        now: Utc::now(),
    };
    commands::execute::<Patient>(
        &lease.pool,
        &app.state.runner,
        &id.to_string(),
        command,
        (),
        &metadata(code, admin_actor(code)),
    )
    .await
    .expect("patient updated");
}

// ----------------------------------------------------------------------------------------
// The event log and error responses.

/// Rows in a hospital's event store.
pub async fn event_count(app: &TestApp, code: &str) -> i64 {
    let mut conn = app.connect(&app.database_for(code)).await;
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut conn)
        .await
        .expect("count events")
}

/// The events of a hospital's log after the first `count`, as
/// `aggregate_type/event_type payload`, to show what a call appended.
pub async fn events_after(app: &TestApp, code: &str, count: i64) -> Vec<String> {
    let mut conn = app.connect(&app.database_for(code)).await;
    sqlx::query_scalar(
        "SELECT aggregate_type || '/' || event_type || ' ' || payload::text FROM events \
         ORDER BY position OFFSET $1",
    )
    .bind(count)
    .fetch_all(&mut conn)
    .await
    .expect("read events")
}

/// Fragments that betray SQL or a stack trace in a client-facing message: SQL keywords
/// as SQL writes them (an English "update" is fine), the rest in any case.
const SQL_LEAKS: &[&str] = &[
    "SELECT ",
    "INSERT INTO",
    "UPDATE ",
    "DELETE FROM",
    " WHERE ",
    "SQLSTATE",
    "relation \"",
    "src/",
    ".rs:",
];
const LEAKS_ANY_CASE: &[&str] = &[
    "constraint",
    "duplicate key",
    "violates",
    "sqlx",
    "postgres",
    "panicked",
    "backtrace",
];

/// Panics when any error of `response` carries SQL, a constraint name or a stack
/// trace; `what` names the call in the failure.
pub fn assert_no_leak(what: &str, response: &Value) {
    let Some(errors) = response["errors"].as_array() else {
        return;
    };
    for error in errors {
        let text = error.to_string();
        let lower = text.to_lowercase();
        for leak in SQL_LEAKS {
            assert!(
                !text.contains(leak),
                "{what}: an error leaks `{leak}`: {error}"
            );
        }
        for leak in LEAKS_ANY_CASE {
            assert!(
                !lower.contains(leak),
                "{what}: an error leaks `{leak}`: {error}"
            );
        }
    }
}

/// Every error code of a response, in order (`None` for an error without one).
pub fn codes(response: &Value) -> Vec<Option<String>> {
    response["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["extensions"]["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A Monday at least a week ahead (the default working week is Monday to Friday).
pub fn next_monday() -> NaiveDate {
    let mut day = Utc::now().date_naive() + Duration::days(7);
    while day.weekday() != Weekday::Mon {
        day += Duration::days(1);
    }
    day
}

// ----------------------------------------------------------------------------------------
// The platform operator.

/// The super administrator's username in tests.
pub const SUPER_ADMIN: &str = "root_admin";

/// Creates the super administrator the way `hms create-superadmin` does and signs in.
pub async fn super_admin(app: &TestApp) -> String {
    let cli = hms_api::config::Cli {
        platform: app.config.clone(),
        log_format: Default::default(),
        command: Some(hms_api::config::Command::CreateSuperadmin {
            username: SUPER_ADMIN.into(),
            email: "root@hms.example".into(),
            password: hms_api::config::Secret::new(ADMIN_PASSWORD),
        }),
    };
    hms_api::cli::run(cli).await.expect("super admin created");
    app.login(None, SUPER_ADMIN, ADMIN_PASSWORD).await
}

/// Takes the last event of stream `aggregate_type`/`aggregate_id` out of the log behind
/// the system's back, as a restore to an earlier point would, through `owner` (a
/// connection to the hospital's database as its owner): the append-only guard is off for
/// that one statement only.
pub async fn take_last_event_out(
    owner: &mut sqlx::PgConnection,
    aggregate_type: &str,
    aggregate_id: &str,
) {
    let trigger = |on: bool| {
        format!(
            "ALTER TABLE events {} TRIGGER events_append_only",
            if on { "ENABLE" } else { "DISABLE" }
        )
    };
    sqlx::query(&trigger(false))
        .execute(&mut *owner)
        .await
        .expect("append-only guard off");
    let removed = sqlx::query(
        "DELETE FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
           AND sequence = (SELECT max(sequence) FROM events \
                            WHERE aggregate_type = $1 AND aggregate_id = $2)",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .execute(&mut *owner)
    .await
    .expect("the last event taken out");
    assert_eq!(removed.rows_affected(), 1, "one event taken out");
    sqlx::query(&trigger(true))
        .execute(&mut *owner)
        .await
        .expect("append-only guard on");
}
