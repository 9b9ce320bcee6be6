//! The read side under load, concurrency and failure: a rebuilt read model equals the
//! live one row for row; no event is skipped or applied twice.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, Utc};
use cqrs_es::Aggregate;
use futures::future::join_all;
use hms_app::commands::{self, CommandError};
use hms_domain::appointment::{Appointment, AppointmentCommand, BookingPolicy, DoctorFacts};
use hms_domain::billing::{Invoice, InvoiceCommand, InvoiceNumber, Money, PaymentMethod};
use hms_domain::common::{BoundedText, Currency, HospitalCode, Phone};
use hms_domain::hospital::{Hospital, HospitalCommand, HospitalSettings, InvoicePrefix};
use hms_domain::patient::{
    Allergy, AllergySeverity, Demographics, Mrn, Patient, PatientCommand, Sex,
};
use hms_domain::permissions::Operation;
use hms_domain::record_access::{RecordAccess, RecordAccessCommand};
use hms_domain::{Actor, EventMetadata, Role};
use hms_projections::projectors::{self, InvoiceProjector};
use hms_projections::{ProjectionError, ProjectionRunner, Projector, StoredEvent};
use hms_tests::{spawn_app, spawn_app_with, TestApp, TestConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

fn actor_for(op: Operation) -> Actor {
    let role = op
        .allowed_roles()
        .first()
        .copied()
        .unwrap_or(Role::HospitalAdmin);
    Actor {
        user_id: Uuid::from_u128(role as u128 + 1),
        username: format!("{}_actor", role.as_str().to_lowercase()),
        role,
    }
}

fn metadata(code: &str, actor: &Actor) -> EventMetadata {
    EventMetadata {
        actor: actor.clone(),
        tenant: code.to_owned(),
        request_id: Uuid::new_v4().to_string(),
        client_addr: Some("127.0.0.1".into()),
        at: Utc::now(),
    }
}

fn text(s: &str) -> BoundedText {
    BoundedText::parse("text", s, 200).expect("valid text")
}

fn demographics(i: usize, rng: &mut StdRng) -> Demographics {
    const FAMILY: [&str; 6] = ["Kamau", "Otieno", "Ñúñez", "Smith", "Wanjiru", "Müller"];
    const GIVEN: [&str; 5] = ["Amina", "José", "Wanjiku", "Peter", "Zoë"];
    Demographics {
        given_name: Some(text(GIVEN[rng.gen_range(0..GIVEN.len())])),
        middle_name: None,
        family_name: text(FAMILY[i % FAMILY.len()]),
        date_of_birth: NaiveDate::from_ymd_opt(
            1950 + rng.gen_range(0..60),
            1 + rng.gen_range(0..12),
            1 + rng.gen_range(0..28),
        )
        .expect("valid date"),
        sex: if rng.gen_bool(0.5) {
            Sex::Female
        } else {
            Sex::Male
        },
        phone: Some(
            Phone::parse(
                "phone",
                &format!("+2547{:08}", rng.gen_range(0..100_000_000)),
            )
            .expect("valid phone"),
        ),
        email: None,
        address: None,
        emergency_contact: None,
        blood_type: None,
    }
}

/// Appends `command` (no read-your-writes wait; the tests drive the runner themselves).
async fn append<A>(
    pool: &PgPool,
    code: &str,
    id: &str,
    actor: &Actor,
    command: A::Command,
) -> Result<(), CommandError<A::Error>>
where
    A: Aggregate<Services = ()> + Clone + 'static,
    A::Command: Clone,
{
    commands::append::<A>(pool, id, command, (), &metadata(code, actor)).await
}

/// Appends one access-log entry: `viewer` opened a patient's record.
async fn record_view(pool: &PgPool, code: &str, viewer: &Actor) {
    let command = RecordAccessCommand::RecordPatientView {
        actor: viewer.clone(),
        patient_id: Uuid::new_v4(),
        purpose: "patient".into(),
        now: Utc::now(),
    };
    append::<RecordAccess>(pool, code, &Uuid::new_v4().to_string(), viewer, command)
        .await
        .expect("append");
}

/// An invoice of the workload: id, payments so far (id, amount), issued or not.
type InvoiceState = (Uuid, Vec<(Uuid, i64)>, bool);
/// Builds the next command of an appointment's life.
type AppointmentStep = fn(Actor, DateTime<Utc>) -> AppointmentCommand;

/// A deterministic random workload over every aggregate; returns how many commands
/// were accepted.
async fn random_workload(pool: &PgPool, code: &str, target: usize, seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let hospital = HospitalCode::parse(code).expect("code");
    let currency = Currency::parse("KES").expect("currency");
    let now = Utc::now();
    let mut accepted = 0usize;
    let mut patients: Vec<Uuid> = Vec::new();
    // Invoice id, payments so far (id, amount), and whether it has been issued.
    let mut invoices: Vec<InvoiceState> = Vec::new();
    let mut appointments: Vec<(Uuid, u8)> = Vec::new();
    let doctor = Uuid::new_v4();
    let mut invoice_seq = seed * 100_000;
    // The next Monday, two weeks out: inside the standard working week.
    let mut monday = (now + Duration::days(14)).date_naive();
    while monday.weekday().num_days_from_monday() != 0 {
        monday = monday.succ_opt().expect("date");
    }
    let mut slot = 0u32;
    let policy = BookingPolicy::from(&HospitalSettings::default());

    while accepted < target {
        let roll = rng.gen_range(0..100);
        let ok = if patients.len() < 20 || roll < 15 {
            let id = Uuid::new_v4();
            let actor = actor_for(Operation::RegisterPatient);
            let command = PatientCommand::RegisterPatient {
                actor: actor.clone(),
                patient_id: id,
                mrn: Mrn::new(&hospital, seed * 100_000 + patients.len() as u64 + 1).expect("mrn"),
                hospital: hospital.clone(),
                demographics: demographics(patients.len(), &mut rng),
                allergies: vec![],
                now,
            };
            let ok = append::<Patient>(pool, code, &id.to_string(), &actor, command)
                .await
                .is_ok();
            if ok {
                patients.push(id);
            }
            ok
        } else if roll < 25 {
            let id = patients[rng.gen_range(0..patients.len())];
            let (op, command) = if rng.gen_bool(0.5) {
                let actor = actor_for(Operation::UpdatePatient);
                let d = demographics(rng.gen_range(0..1000), &mut rng);
                (
                    actor.clone(),
                    PatientCommand::UpdateDemographics {
                        actor,
                        demographics: d,
                        now,
                    },
                )
            } else {
                let actor = actor_for(Operation::ManageAllergies);
                let allergy = Allergy {
                    substance: text(["Penicillin", "Latex", "Peanuts"][rng.gen_range(0..3)]),
                    reaction: None,
                    severity: AllergySeverity::Moderate,
                };
                (
                    actor.clone(),
                    PatientCommand::RecordAllergy {
                        actor,
                        allergy,
                        now,
                    },
                )
            };
            append::<Patient>(pool, code, &id.to_string(), &op, command)
                .await
                .is_ok()
        } else if roll < 35 {
            let id = Uuid::new_v4();
            invoice_seq += 1;
            let actor = actor_for(Operation::DraftInvoice);
            let command = InvoiceCommand::DraftInvoice {
                actor: actor.clone(),
                invoice_id: id,
                number: InvoiceNumber::new(&InvoicePrefix::default(), invoice_seq).expect("number"),
                patient_id: patients[rng.gen_range(0..patients.len())],
                appointment_id: None,
                currency,
                now,
            };
            let ok = append::<Invoice>(pool, code, &id.to_string(), &actor, command)
                .await
                .is_ok();
            if ok {
                invoices.push((id, vec![], false));
            }
            ok
        } else if roll < 65 && !invoices.is_empty() {
            let i = rng.gen_range(0..invoices.len());
            let (id, payments, issued) = invoices[i].clone();
            let (actor, command) = if !issued && rng.gen_bool(0.7) {
                let actor = actor_for(Operation::EditInvoice);
                let command = InvoiceCommand::AddLine {
                    actor: actor.clone(),
                    line_id: Uuid::new_v4(),
                    code: text("CONSULT"),
                    description: text("Consultation"),
                    quantity: rng.gen_range(1..4),
                    unit_price: Money::new(rng.gen_range(100..10_000), currency).into(),
                    now,
                };
                (actor, command)
            } else if !issued {
                let actor = actor_for(Operation::IssueInvoice);
                (
                    actor.clone(),
                    InvoiceCommand::Issue {
                        actor,
                        due_date: None,
                        now,
                    },
                )
            } else if payments.is_empty() || rng.gen_bool(0.7) {
                let actor = actor_for(Operation::RecordPayment);
                let amount = rng.gen_range(50..5_000);
                let command = InvoiceCommand::RecordPayment {
                    actor: actor.clone(),
                    payment_id: Uuid::new_v4(),
                    amount: Money::new(amount, currency).into(),
                    method: PaymentMethod::Cash,
                    reference: None,
                    now,
                };
                (actor, command)
            } else {
                let actor = actor_for(Operation::RefundPayment);
                let (payment_id, paid) = payments[rng.gen_range(0..payments.len())];
                let command = InvoiceCommand::RefundPayment {
                    actor: actor.clone(),
                    refund_id: Uuid::new_v4(),
                    payment_id,
                    amount: Money::new(rng.gen_range(1..=paid.max(1)), currency).into(),
                    reason: text("Overcharged"),
                    now,
                };
                (actor, command)
            };
            let payment = match &command {
                InvoiceCommand::RecordPayment {
                    payment_id, amount, ..
                } => Some((*payment_id, amount.minor)),
                _ => None,
            };
            let is_issue = matches!(command, InvoiceCommand::Issue { .. });
            let ok = append::<Invoice>(pool, code, &id.to_string(), &actor, command)
                .await
                .is_ok();
            if ok {
                if let Some(p) = payment {
                    invoices[i].1.push(p);
                }
                invoices[i].2 |= is_issue;
            }
            ok
        } else if roll < 80 {
            // Appointments move through their status machine.
            if appointments.is_empty() || rng.gen_bool(0.4) {
                let id = Uuid::new_v4();
                let actor = actor_for(Operation::ScheduleAppointment);
                let day = monday + Duration::days(i64::from(slot / 36 % 5));
                let minute = 8 * 60 + (slot % 36) * 15;
                slot += 1;
                let start = FixedOffset::east_opt(0)
                    .expect("offset")
                    .from_local_datetime(
                        &day.and_hms_opt(minute / 60, minute % 60, 0).expect("time"),
                    )
                    .single()
                    .expect("start");
                let command = AppointmentCommand::Schedule {
                    actor: actor.clone(),
                    appointment_id: id,
                    patient_id: patients[rng.gen_range(0..patients.len())],
                    doctor_id: doctor,
                    department_id: None,
                    start,
                    minutes: 15,
                    reason: text("Check-up"),
                    policy,
                    doctor: DoctorFacts {
                        active: true,
                        role: Role::Doctor,
                    },
                    patient_active: true,
                    now,
                };
                let ok = append::<Appointment>(pool, code, &id.to_string(), &actor, command)
                    .await
                    .is_ok();
                if ok {
                    appointments.push((id, 0));
                }
                ok
            } else {
                let i = rng.gen_range(0..appointments.len());
                let (id, stage) = appointments[i];
                let (op, command): (Operation, AppointmentStep) = match stage {
                    0 => (Operation::CheckInAppointment, |actor, now| {
                        AppointmentCommand::CheckIn { actor, now }
                    }),
                    1 => (Operation::StartAppointment, |actor, now| {
                        AppointmentCommand::Start { actor, now }
                    }),
                    _ => (Operation::CompleteAppointment, |actor, now| {
                        AppointmentCommand::Complete {
                            actor,
                            notes: Some(BoundedText::parse("notes", "Fine", 2000).expect("notes")),
                            now,
                        }
                    }),
                };
                let actor = actor_for(op);
                let ok = append::<Appointment>(
                    pool,
                    code,
                    &id.to_string(),
                    &actor,
                    command(actor.clone(), now),
                )
                .await
                .is_ok();
                if ok {
                    appointments[i].1 += 1;
                    if appointments[i].1 > 2 {
                        appointments.swap_remove(i);
                    }
                }
                ok
            }
        } else if roll < 82 {
            let actor = actor_for(Operation::ManageDepartments);
            let command = HospitalCommand::AddDepartment {
                actor: actor.clone(),
                department_id: Uuid::new_v4(),
                name: text(&format!("Ward {accepted}")),
                now,
            };
            append::<Hospital>(pool, code, code, &actor, command)
                .await
                .is_ok()
        } else {
            let actor = actor_for(Operation::ViewPatient);
            let command = RecordAccessCommand::RecordPatientView {
                actor: actor.clone(),
                patient_id: patients[rng.gen_range(0..patients.len())],
                purpose: "patient".into(),
                now,
            };
            append::<RecordAccess>(pool, code, &Uuid::new_v4().to_string(), &actor, command)
                .await
                .is_ok()
        };
        if ok {
            accepted += 1;
        }
    }
    accepted
}

use chrono::TimeZone;

/// A checksum of every row of a table, independent of physical order.
pub(crate) async fn table_checksum(conn: &mut PgConnection, table: &str) -> (i64, String) {
    sqlx::query_as(&format!(
        "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
    ))
    .fetch_one(conn)
    .await
    .expect("checksum")
}

pub(crate) async fn checksums(
    pool: &PgPool,
    runner: &ProjectionRunner,
) -> Vec<(String, i64, String)> {
    let mut conn = pool.acquire().await.expect("connection");
    let mut all = Vec::new();
    for projector in runner.rebuildable() {
        for table in projector.tables() {
            let (rows, sum) = table_checksum(&mut conn, table).await;
            all.push(((*table).to_owned(), rows, sum));
        }
    }
    all
}

/// Catches up until every event is indexed. Other tests' transactions never hold this
/// tenant back (see `a_transaction_held_open_in_another_database_does_not_hold_a_tenant_back`),
/// but a busy CI machine can be slow: the bound is generous.
pub(crate) async fn drain(pool: &PgPool, runner: &ProjectionRunner) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        runner.catch_up(pool).await.expect("catch up");
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM audit_index a WHERE a.position = e.position)",
        )
        .fetch_one(pool)
        .await
        .expect("lag");
        if behind == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the read models did not catch up");
}

/// A pool on hospital `code`'s database as the server's tenant role, of the test's
/// tenant pool size (the server's own pools start with one connection and grow).
async fn tenant_pool(app: &TestApp, code: &str) -> PgPool {
    app.setup_hospital(code).await;
    let lease = app.state.registry.get(code).await.expect("tenant");
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(app.config.tenant_pool_size)
        .connect_with((*lease.pool.connect_options()).clone())
        .await
        .expect("tenant pool")
}

/// A pool on hospital `code`'s database as its owner, as `hms-replay` connects: a
/// rebuild swaps tables, which the server's tenant role may not.
pub(crate) async fn owner_pool(app: &TestApp, code: &str) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(3)
        .connect_with(hms_tests::server_options().database(&app.database_for(code)))
        .await
        .expect("owner pool")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_model_rebuilt_from_the_log_equals_the_live_one() {
    let app = spawn_app().await;
    let pool = tenant_pool(&app, "RBD001").await;
    let owner = owner_pool(&app, "RBD001").await;
    let runner = &app.state.runner;
    // Four writers at once, with the runner catching up while they write.
    let writers = (0..4u64).map(|seed| random_workload(&pool, "RBD001", 1_300, seed));
    let catching_up = async {
        for _ in 0..20 {
            let _ = runner.catch_up(&pool).await;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let (accepted, ()) = tokio::join!(join_all(writers), catching_up);
    assert!(accepted.iter().sum::<usize>() >= 5_000, "{accepted:?}");
    drain(&pool, runner).await;
    let live = checksums(&pool, runner).await;
    assert!(
        live.iter()
            .any(|(t, rows, _)| t == "appointments" && *rows > 100),
        "{live:?}"
    );
    assert!(
        live.iter()
            .any(|(t, rows, _)| t == "invoice_payments" && *rows > 100),
        "{live:?}"
    );

    for projector in runner.rebuildable() {
        hms_projections::rebuild::rebuild(&owner, projector, true, &mut |_| {})
            .await
            .expect("rebuild");
    }
    let rebuilt = checksums(&pool, runner).await;
    assert_eq!(live, rebuilt, "a rebuild from the log gives the same rows");

    // The index names survive the swap (later migrations may name them).
    let names: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_indexes WHERE indexname IN ('patients_mrn', 'staff_username')",
    )
    .fetch_one(&pool)
    .await
    .expect("indexes");
    assert_eq!(names, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_a_transaction_held_open_is_neither_skipped_nor_applied_twice() {
    // Room for a fanned-out catch-up: the backlog behind the held transaction is large.
    let (app, pool) = roomy_tenant_pool("HLD001").await;
    let runner = &app.state.runner;
    runner.catch_up(&pool).await.expect("initial catch-up");

    // A writer that takes its position first but commits last.
    let mut held = pool.begin().await.expect("begin");
    let viewer = actor_for(Operation::ViewPatient);
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('record_access', $1, 1, 'PatientRecordViewed', '1.0', $2, $3)",
    )
    .bind(Uuid::new_v4().to_string())
    .bind(serde_json::json!({ "PatientRecordViewed": {
        "patient_id": Uuid::new_v4(), "viewer_id": viewer.user_id, "viewer_username": viewer.username,
        "viewer_role": "DOCTOR", "purpose": "patient", "at": Utc::now() } }))
    .bind(serde_json::to_value(metadata("HLD001", &viewer).to_map()).expect("metadata"))
    .execute(&mut *held)
    .await
    .expect("held insert");

    // Eight writers commit behind it while the runner keeps running: more than a
    // batch, so that the catch-up after the commit fans out.
    let writers = (0..8).map(|_| {
        let pool = pool.clone();
        let viewer = viewer.clone();
        async move {
            for _ in 0..150 {
                record_view(&pool, "HLD001", &viewer).await;
            }
        }
    });
    let runner_loop = async {
        for _ in 0..4 {
            runner.catch_up(&pool).await.expect("catch up while held");
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    };
    tokio::join!(join_all(writers), runner_loop);
    let applied_while_held: i64 = sqlx::query_scalar("SELECT count(*) FROM patient_access_log")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(
        applied_while_held, 0,
        "nothing passes a transaction still in flight"
    );

    held.commit().await.expect("commit");
    drain(&pool, runner).await;
    let (events, indexed, distinct, views): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM audit_index), \
                (SELECT count(DISTINCT position) FROM audit_index), (SELECT count(*) FROM patient_access_log)",
    )
    .fetch_one(&pool)
    .await
    .expect("counts");
    assert_eq!(
        (indexed, distinct),
        (events, events),
        "every event indexed exactly once"
    );
    assert_eq!(views, 1_201, "the held event and the 1,200 behind it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_held_open_in_another_database_does_not_hold_a_tenant_back() {
    let app = spawn_app().await;
    let pool = tenant_pool(&app, "ISO001").await;
    let other = tenant_pool(&app, "ISO002").await;
    let runner = &app.state.runner;
    runner.catch_up(&pool).await.expect("initial catch-up");

    // Another hospital's long transaction (a rebuild, a migration, a stuck client) and
    // one on the platform database, both holding a transaction id.
    let mut held_elsewhere = other.begin().await.expect("begin");
    sqlx::query("UPDATE projection_checkpoints SET updated_at = now()")
        .execute(&mut *held_elsewhere)
        .await
        .expect("write in the other tenant");
    let mut held_on_platform = app.state.platform.control.begin().await.expect("begin");
    let platform_xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(&mut *held_on_platform)
        .await
        .expect("xid on the platform");

    record_view(&pool, "ISO001", &actor_for(Operation::ViewPatient)).await;
    let (transaction_id, position): (i64, i64) = sqlx::query_as(
        "SELECT transaction_id::text::bigint, position FROM events ORDER BY position DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("head");
    assert!(
        transaction_id > platform_xid.parse::<i64>().expect("xid"),
        "the write commits behind both held transactions"
    );
    runner
        .catch_up_read_side_through(
            &pool,
            hms_projections::LogCursor {
                transaction_id,
                position,
            },
            std::time::Duration::from_secs(5),
        )
        .await
        .expect("this hospital's read side is not held back by other databases");
    let views: i64 = sqlx::query_scalar("SELECT count(*) FROM patient_access_log")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(views, 1);
    held_elsewhere.rollback().await.expect("rollback");
    held_on_platform.rollback().await.expect("rollback");
}

/// The invoice projector, failing on one event after having applied the ones before it
/// in the same batch: a crash mid-batch.
struct FailingAt {
    inner: InvoiceProjector,
    position: i64,
}

#[async_trait]
impl Projector for FailingAt {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn tables(&self) -> &'static [&'static str] {
        self.inner.tables()
    }
    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &StoredEvent,
    ) -> hms_projections::Result<()> {
        if event.position == self.position {
            return Err(ProjectionError::Busy("simulated crash".into()));
        }
        self.inner.apply(tx, event).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_fails_mid_batch_resumes_without_doubling_anything() {
    let app = spawn_app().await;
    let pool = tenant_pool(&app, "CRS001").await;
    let owner = owner_pool(&app, "CRS001").await;
    app.state
        .runner
        .catch_up(&pool)
        .await
        .expect("initial catch-up");
    random_workload(&pool, "CRS001", 400, 7).await;
    let crash_at: i64 = sqlx::query_scalar(
        "SELECT position FROM events WHERE event_type = 'PaymentRecorded' ORDER BY transaction_id, position OFFSET 5 LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("a payment to crash on");

    let crashing = ProjectionRunner::new(vec![Box::new(FailingAt {
        inner: InvoiceProjector,
        position: crash_at,
    })]);
    let failed = crashing.catch_up(&pool).await;
    assert!(failed.is_err(), "the simulated crash is reported");
    let (failing, error): (Option<i64>, Option<String>) =
        sqlx::query_as("SELECT failing_position, last_error FROM projection_checkpoints WHERE projector = 'invoices'")
            .fetch_one(&pool)
            .await
            .expect("checkpoint");
    assert_eq!(
        failing,
        Some(crash_at),
        "the failure is visible on the checkpoint"
    );
    assert!(error.is_some_and(|e| e.contains("simulated crash")));

    // Restarted with the real projector: it resumes from its checkpoint.
    let runner = ProjectionRunner::new(projectors::all());
    drain(&pool, &runner).await;
    let mut conn = pool.acquire().await.expect("conn");
    let live = table_checksum(&mut conn, "invoices").await;
    let live_payments = table_checksum(&mut conn, "invoice_payments").await;
    drop(conn);
    hms_projections::rebuild::rebuild(&owner, &InvoiceProjector, true, &mut |_| {})
        .await
        .expect("rebuild");
    let mut conn = pool.acquire().await.expect("conn");
    assert_eq!(
        live,
        table_checksum(&mut conn, "invoices").await,
        "no total doubled or lost"
    );
    assert_eq!(
        live_payments,
        table_checksum(&mut conn, "invoice_payments").await
    );
    let cleared: Option<i64> = sqlx::query_scalar(
        "SELECT failing_position FROM projection_checkpoints WHERE projector = 'invoices'",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("checkpoint");
    assert_eq!(cleared, None, "moving past the event clears the failure");
}

/// Writes, behind the command path's back, a copy of a demographics update as the first
/// event of a new stream, with `actor_id` in its metadata.
async fn insert_with_actor_id(pool: &PgPool, actor_id: &str) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT aggregate_type, gen_random_uuid()::text, 1, event_type, event_version, payload, \
                jsonb_set(metadata, '{actor_id}', to_jsonb($1::text)) \
           FROM events WHERE event_type = 'PatientDemographicsUpdated' LIMIT 1",
    )
    .bind(actor_id)
    .execute(pool)
    .await
    .expect("an event with an odd actor id");
}

/// The tenant pool of a server whose tenant pools have room for a fanned-out catch-up.
async fn roomy_tenant_pool(code: &str) -> (TestApp, PgPool) {
    let app = spawn_app_with(TestConfig {
        tenant_pool_size: 4,
        tenant_connection_budget: 12,
        ..TestConfig::default()
    })
    .await;
    let pool = tenant_pool(&app, code).await;
    (app, pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_caught_up_in_lanes_isolates_a_failure_and_ends_equal_to_a_rebuild() {
    let (app, pool) = roomy_tenant_pool("LAN001").await;
    let owner = owner_pool(&app, "LAN001").await;
    app.state.runner.catch_up(&pool).await.expect("initial");
    // A backlog of several full batches, nothing projected yet.
    join_all((11..13u64).map(|seed| random_workload(&pool, "LAN001", 3_000, seed))).await;
    // An event written behind the command path's back, with an actor id that is no
    // uuid: the audit index stores no actor for it, and stops for nothing.
    insert_with_actor_id(&pool, "not-a-uuid").await;
    let backlog: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM audit_index a WHERE a.position = e.position)",
    )
    .fetch_one(&pool)
    .await
    .expect("backlog");
    assert!(backlog > 6_000, "{backlog}");
    // Past the first shared batch and the first fanned-out one: mid-fan-out.
    let crash_at: i64 = sqlx::query_scalar(
        "SELECT position FROM (SELECT position, event_type, \
                                      row_number() OVER (ORDER BY transaction_id, position) AS n \
                                 FROM events) AS e \
          WHERE event_type = 'PaymentRecorded' AND n > 5500 ORDER BY n LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("a payment to crash on");

    // Every projector, with the invoices one failing partway through the backlog.
    let mut crashing: Vec<Box<dyn Projector>> = projectors::all()
        .into_iter()
        .filter(|p| p.name() != "invoices")
        .collect();
    crashing.push(Box::new(FailingAt {
        inner: InvoiceProjector,
        position: crash_at,
    }));
    let failed = ProjectionRunner::new(crashing).catch_up(&pool).await;
    assert!(failed.is_err(), "the failure is reported");
    let checkpoints: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT projector, events_applied, failing_position FROM projection_checkpoints ORDER BY projector",
    )
    .fetch_all(&pool)
    .await
    .expect("checkpoints");
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .expect("events");
    for (projector, applied, failing) in &checkpoints {
        if projector == "invoices" {
            assert_eq!(*failing, Some(crash_at), "stopped at its own event");
            assert!(*applied < total, "{projector}: {applied} of {total}");
        } else {
            assert_eq!(*failing, None, "{projector}");
            assert_eq!(*applied, total, "{projector}: every event, once");
        }
    }
    let unattributed: Vec<(Option<Uuid>, String)> =
        sqlx::query_as("SELECT actor_id, actor_username FROM audit_index WHERE actor_id IS NULL")
            .fetch_all(&pool)
            .await
            .expect("audit rows");
    assert_eq!(
        unattributed.len(),
        1,
        "only the odd event lacks an actor id"
    );

    // Restarted with the real projectors: the same rows as a rebuild from the log.
    let runner = &app.state.runner;
    drain(&pool, runner).await;
    // Another odd event, alone in its catch-up (a short run is copied checked at once).
    insert_with_actor_id(&pool, "also-no-uuid").await;
    drain(&pool, runner).await;
    let unattributed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_index WHERE actor_id IS NULL")
            .fetch_one(&pool)
            .await
            .expect("audit rows");
    assert_eq!(
        unattributed, 2,
        "the second odd event is indexed without an actor id"
    );
    let live = checksums(&pool, runner).await;
    for projector in runner.rebuildable() {
        hms_projections::rebuild::rebuild(&owner, projector, true, &mut |_| {})
            .await
            .expect("rebuild");
    }
    assert_eq!(live, checksums(&pool, runner).await);
    let versions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM invoices i \
          WHERE i.version <> (SELECT max(sequence) FROM events e \
                               WHERE e.aggregate_type = 'invoice' AND e.aggregate_id = i.id::text)",
    )
    .fetch_one(&pool)
    .await
    .expect("versions");
    assert_eq!(versions, 0, "each invoice row carries its stream's version");
}

/// A round takes every projector's lock at once, or none; a projector another process
/// holds is left to it, and the rest are brought up to date (one at a time) meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_held_by_another_process_is_left_to_it_while_the_others_catch_up() {
    let app = spawn_app().await;
    let pool = tenant_pool(&app, "LCK001").await;
    let runner = &app.state.runner;
    runner.catch_up(&pool).await.expect("initial catch-up");

    // Another process's round on the access log: its transaction holds the key.
    let mut other = app.hold_projector("LCK001", "patient_access_log").await;
    let viewer = actor_for(Operation::ViewPatient);
    for _ in 0..3 {
        record_view(&pool, "LCK001", &viewer).await;
    }
    let progress = runner.catch_up(&pool).await.expect("catch up");
    let held = progress
        .iter()
        .find(|p| p.projector == "patient_access_log")
        .expect("the access log's progress");
    assert!(
        held.busy,
        "the held projector is reported busy: {progress:?}"
    );
    let counts = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT (SELECT count(*) FROM patient_access_log), \
                    (SELECT count(*) FROM audit_index WHERE aggregate_type = 'record_access')",
        )
        .fetch_one(&pool)
        .await
        .expect("counts")
    };
    assert_eq!(
        counts().await,
        (0, 3),
        "the held read model is untouched; the audit index has the three views"
    );

    hms_tests::release(&mut other).await;
    hms_tests::settle(runner, &pool).await;
    assert_eq!(counts().await, (3, 3), "each view applied once");
}

/// The daemon's visit reads the log once and lends the read to its second round (the
/// derived views and the sealer, docs/adr/0018). When that round starts behind the first
/// (a reader held the audit index meanwhile), the read is widened to cover it, or, when
/// it is far behind, left alone: either way one visit brings every projector to the
/// log's head, each event applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_whose_derived_views_start_behind_brings_everything_to_the_head_once() {
    let app = spawn_app().await;
    let pool = tenant_pool(&app, "LND001").await;
    let runner = &app.state.runner;
    runner.catch_up(&pool).await.expect("initial catch-up");
    let viewer = actor_for(Operation::ViewPatient);
    let counts = || async {
        sqlx::query_as::<_, (i64, i64, i64)>(
            "SELECT (SELECT count(*) FROM patient_access_log), \
                    (SELECT count(*) FROM audit_index WHERE aggregate_type = 'record_access'), \
                    (SELECT count(DISTINCT position) FROM audit_index)",
        )
        .fetch_one(&pool)
        .await
        .expect("counts")
    };
    let all_at_head = || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT bool_and((c.last_transaction_id, c.last_position) = \
                             (SELECT transaction_id, position FROM events \
                               ORDER BY transaction_id DESC, position DESC LIMIT 1)) \
               FROM projection_checkpoints c WHERE c.projector = ANY($1)",
        )
        .bind(runner.projector_names())
        .fetch_one(&pool)
        .await
        .expect("checkpoints")
    };

    // A few events behind (the read is widened), then many more than half a batch (it
    // is not).
    let mut views = 0;
    for (held_for, then) in [(3, 4), (600, 5)] {
        let mut reader = app.hold_projector("LND001", "audit_index").await;
        for _ in 0..held_for {
            record_view(&pool, "LND001", &viewer).await;
        }
        runner
            .catch_up(&pool)
            .await
            .expect("catch up, the audit index held");
        hms_tests::release(&mut reader).await;
        for _ in 0..then {
            record_view(&pool, "LND001", &viewer).await;
        }
        views += held_for + then;

        let progress = runner.catch_up(&pool).await.expect("one visit");
        assert!(
            progress.iter().all(|p| !p.busy),
            "nothing held: {progress:?}"
        );
        let (logged, indexed, distinct) = counts().await;
        assert_eq!(
            (logged, indexed),
            (views, views),
            "each view applied once, after {held_for} held"
        );
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .expect("events");
        assert_eq!(distinct, events, "every event indexed, none twice");
        assert!(
            all_at_head().await,
            "every projector at the head after one visit"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patients_balance_fed_by_many_invoices_loses_no_update_under_200_concurrent_commands() {
    let app = spawn_app().await;
    let pool = tenant_pool(&app, "BAL001").await;
    let runner = &app.state.runner;
    let currency = Currency::parse("KES").expect("currency");
    let hospital = HospitalCode::parse("BAL001").expect("code");
    let patient = Uuid::new_v4();
    let clerk = actor_for(Operation::RegisterPatient);
    let mut rng = StdRng::seed_from_u64(1);
    commands::execute::<Patient>(
        &pool,
        runner,
        &patient.to_string(),
        PatientCommand::RegisterPatient {
            actor: clerk.clone(),
            patient_id: patient,
            mrn: Mrn::new(&hospital, 1).expect("mrn"),
            hospital: hospital.clone(),
            demographics: demographics(0, &mut rng),
            allergies: vec![],
            now: Utc::now(),
        },
        (),
        &metadata("BAL001", &clerk),
    )
    .await
    .expect("patient");

    // Ten issued invoices of 100,000 each.
    let accountant = actor_for(Operation::RecordPayment);
    let mut invoices = Vec::new();
    for n in 1..=10u64 {
        let id = Uuid::new_v4();
        let steps = [
            InvoiceCommand::DraftInvoice {
                actor: actor_for(Operation::DraftInvoice),
                invoice_id: id,
                number: InvoiceNumber::new(&InvoicePrefix::default(), n).expect("number"),
                patient_id: patient,
                appointment_id: None,
                currency,
                now: Utc::now(),
            },
            InvoiceCommand::AddLine {
                actor: actor_for(Operation::EditInvoice),
                line_id: Uuid::new_v4(),
                code: text("SURGERY"),
                description: text("Surgery"),
                quantity: 1,
                unit_price: Money::new(100_000, currency).into(),
                now: Utc::now(),
            },
            InvoiceCommand::Issue {
                actor: actor_for(Operation::IssueInvoice),
                due_date: None,
                now: Utc::now(),
            },
        ];
        for step in steps {
            append::<Invoice>(&pool, "BAL001", &id.to_string(), &accountant, step)
                .await
                .expect("invoice step");
        }
        invoices.push(id);
    }

    // 200 payments of 100 at once, through the real command path (each waits for its
    // read models), retried on optimistic-concurrency conflicts.
    let invoices = Arc::new(invoices);
    let payments = (0..200usize).map(|i| {
        let pool = pool.clone();
        let invoices = invoices.clone();
        let accountant = accountant.clone();
        async move {
            let id = invoices[i % invoices.len()].to_string();
            loop {
                let command = InvoiceCommand::RecordPayment {
                    actor: accountant.clone(),
                    payment_id: Uuid::new_v4(),
                    amount: Money::new(100, currency).into(),
                    method: PaymentMethod::Card,
                    reference: None,
                    now: Utc::now(),
                };
                match commands::execute::<Invoice>(
                    &pool,
                    runner,
                    &id,
                    command,
                    (),
                    &metadata("BAL001", &accountant),
                )
                .await
                {
                    Ok(_) => return,
                    Err(CommandError::Conflict | CommandError::Contended) => {
                        tokio::task::yield_now().await
                    }
                    Err(e) => panic!("payment failed: {e}"),
                }
            }
        }
    });
    join_all(payments).await;
    drain(&pool, runner).await;

    let (balance, paid, rows): (i64, i64, i64) = sqlx::query_as(
        "SELECT sum(i.balance_minor)::bigint, sum(i.paid_minor)::bigint, \
                (SELECT count(*) FROM invoice_payments p WHERE p.kind = 'PAYMENT') \
           FROM invoices i WHERE i.patient_id = $1",
    )
    .bind(patient)
    .fetch_one(&pool)
    .await
    .expect("balance");
    assert_eq!(rows, 200, "every payment is in the read model once");
    assert_eq!(paid, 200 * 100);
    assert_eq!(
        balance,
        10 * 100_000 - 200 * 100,
        "the patient's balance lost no update"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hms_replay_rebuild_while_commands_arrive_ends_equal_to_a_full_replay() {
    let app = spawn_app().await;
    let pool = tenant_pool(&app, "RBL001").await;
    let owner = owner_pool(&app, "RBL001").await;
    let runner = &app.state.runner;
    random_workload(&pool, "RBL001", 600, 11).await;
    drain(&pool, runner).await;

    // The rebuild runs through the operator's tool while writers keep going.
    let rebuild = async {
        use clap::Parser;
        let cli = hms_replay::Cli::try_parse_from([
            "hms-replay",
            "--database-url",
            app.config.database_url.expose(),
            "--tenant-db-prefix",
            &app.prefix,
            "rebuild",
            "--hospital",
            "RBL001",
            "--quiet",
        ])
        .expect("arguments");
        let mut out = Vec::new();
        hms_replay::run(cli, &mut out).await.expect("rebuild");
        String::from_utf8(out).expect("utf-8")
    };
    let writers = async {
        let accepted = random_workload(&pool, "RBL001", 300, 12).await;
        // Keep the live runner going too, as the server would.
        runner.catch_up(&pool).await.expect("live catch-up");
        accepted
    };
    let (report, accepted) = tokio::join!(rebuild, writers);
    assert!(accepted >= 300);
    assert!(report.contains("tables swapped"), "{report}");
    drain(&pool, runner).await;
    let after_online_rebuild = checksums(&pool, runner).await;

    for projector in runner.rebuildable() {
        hms_projections::rebuild::rebuild(&owner, projector, true, &mut |_| {})
            .await
            .expect("full replay");
    }
    assert_eq!(after_online_rebuild, checksums(&pool, runner).await);
}

/// Item 16 of the authority issue: a reader inside one long transaction (a catch-up
/// batch, a rebuild) reads the horizon again and again. PostgreSQL keeps the first copy
/// of `pg_stat_activity` for the whole transaction, so without clearing it a transaction
/// begun afterwards in another database could not be placed there and held this
/// hospital's reader back; one begun in this hospital's database must still hold it.
#[tokio::test]
async fn the_horizon_read_again_in_one_transaction_places_transactions_begun_in_between() {
    let app = spawn_app().await;
    let pool = tenant_pool(&app, "HZN001").await;
    let mut reader = pool.begin().await.expect("begin");
    let first = hms_projections::log::read_horizon(&mut reader)
        .await
        .expect("first horizon");

    // After the first read: a transaction on the platform database, then one writing to
    // this hospital's database, both holding a transaction id.
    let mut elsewhere = app.state.platform.control.begin().await.expect("begin");
    let elsewhere_xid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&mut *elsewhere)
        .await
        .expect("xid on the platform");
    let mut writer = pool.begin().await.expect("begin");
    let writer_xid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&mut *writer)
        .await
        .expect("xid in the hospital");
    assert!(first <= elsewhere_xid && elsewhere_xid < writer_xid);
    // A transaction that takes an id and commits after both, so the snapshot's xmax
    // passes them and lists them as in flight (a transaction at or above xmax is not
    // listed, and xmax alone would stop the reader there, whatever other tests do).
    let mut later = app.state.platform.control.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *later)
        .await
        .expect("xid");
    later.commit().await.expect("commit");

    let second = hms_projections::log::read_horizon(&mut reader)
        .await
        .expect("second horizon");
    println!(
        "first {first}, platform transaction {elsewhere_xid}, hospital writer {writer_xid}, second {second}"
    );
    assert!(
        second <= writer_xid,
        "the writer in this hospital's database holds the horizon back: {second} > {writer_xid}"
    );
    assert!(
        second > elsewhere_xid,
        "the transaction in another database does not hold the horizon back: \
         {second} <= {elsewhere_xid}"
    );
    writer.rollback().await.expect("rollback");
    elsewhere.rollback().await.expect("rollback");
    reader.rollback().await.expect("rollback");
}

/// Item 16, the standby half: on a hot standby `pg_current_snapshot()` lists none of the
/// primary's transactions in flight and `pg_stat_activity` shows none of its sessions, so
/// the horizon falls back to the snapshot's xmin there. A transaction open on the primary
/// (before a later one that committed) holds a standby reader back; once it commits, the
/// horizon passes it. Runs a primary and a streaming standby of the test's own.
#[tokio::test]
async fn on_a_hot_standby_a_transaction_open_on_the_primary_holds_the_horizon_back() {
    use sqlx::Connection;
    let primary = hms_tests::cluster::Cluster::primary().expect("a primary cluster");
    let standby = hms_tests::cluster::Cluster::standby_of(&primary).expect("a standby");
    let connect = |options: sqlx::postgres::PgConnectOptions| async move {
        PgConnection::connect_with(&options).await.expect("connect")
    };
    let mut primary_conn = connect(primary.options("postgres")).await;
    sqlx::query("CREATE TABLE t (x int)")
        .execute(&mut primary_conn)
        .await
        .expect("table");

    // A writer in flight, then a later transaction that commits.
    let mut writer = connect(primary.options("postgres")).await;
    let mut open = writer.begin().await.expect("begin");
    let writer_xid: i64 =
        sqlx::query_scalar("INSERT INTO t VALUES (1) RETURNING pg_current_xact_id()::text::bigint")
            .fetch_one(&mut *open)
            .await
            .expect("writer");
    let later_xid: i64 =
        sqlx::query_scalar("INSERT INTO t VALUES (2) RETURNING pg_current_xact_id()::text::bigint")
            .fetch_one(&mut primary_conn)
            .await
            .expect("later");
    assert!(writer_xid < later_xid);

    let mut standby_conn = connect(standby.options("postgres")).await;
    wait_for_replay(&mut primary_conn, &mut standby_conn).await;
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut standby_conn)
        .await
        .expect("recovery");
    assert!(in_recovery);
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&mut standby_conn)
        .await
        .expect("rows");
    assert_eq!(
        visible, 1,
        "the later transaction's row reached the standby"
    );
    let held = hms_projections::log::read_horizon(&mut standby_conn)
        .await
        .expect("horizon on the standby");
    println!("writer {writer_xid}, later {later_xid}, standby horizon {held}");
    assert!(
        held <= writer_xid,
        "the primary's open transaction holds the standby back: {held} > {writer_xid}"
    );

    open.commit().await.expect("commit");
    sqlx::query("INSERT INTO t VALUES (3)")
        .execute(&mut primary_conn)
        .await
        .expect("after");
    wait_for_replay(&mut primary_conn, &mut standby_conn).await;
    let passed = hms_projections::log::read_horizon(&mut standby_conn)
        .await
        .expect("horizon on the standby");
    assert!(
        passed > later_xid,
        "once committed, the horizon passes both: {passed} <= {later_xid}"
    );
}

/// Waits until the standby has replayed everything the primary has written so far.
async fn wait_for_replay(primary: &mut PgConnection, standby: &mut PgConnection) {
    let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&mut *primary)
        .await
        .expect("lsn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let done: bool =
            sqlx::query_scalar("SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)")
                .bind(&lsn)
                .fetch_one(&mut *standby)
                .await
                .expect("replay position");
        if done {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the standby did not replay {lsn}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The command path's stream read and the catch-up's log read run on a cached generic
/// plan, not planned afresh per call (planning had cost them more than running), and that
/// plan is a scan of the right index, also when it is made on a new hospital's log of a
/// few events: a plan is kept until the next ANALYZE, and a sequential scan cached while
/// the log was small would be paid on every request as it grows.
#[tokio::test]
async fn the_stream_and_log_reads_keep_a_generic_plan_on_their_index() {
    let app = spawn_app().await;
    let pool = tenant_pool(&app, "PLAN01").await;
    let mut conn = pool.acquire().await.expect("connection");
    let admin: String =
        sqlx::query_scalar("SELECT aggregate_id FROM events WHERE aggregate_type = 'user'")
            .fetch_one(&mut *conn)
            .await
            .expect("the admin's stream");
    let streams = commands::read_streams_sql(2);
    for _ in 0..8 {
        sqlx::query(&streams)
            .bind("hospital")
            .bind("PLAN01")
            .bind(0i64)
            .bind("user")
            .bind(&admin)
            .bind(0i64)
            .fetch_all(&mut *conn)
            .await
            .expect("stream read");
        hms_projections::log::read_batch(&mut conn, hms_projections::LogCursor::START, 100)
            .await
            .expect("log read");
    }
    let plans: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements \
          WHERE statement LIKE '%FROM public.events%' \
            AND statement NOT LIKE '%pg_prepared_statements%'",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("prepared statements");
    assert_eq!(plans.len(), 2, "{plans:?}");
    for (statement, generic, custom) in &plans {
        assert!(
            *generic >= 3 && *custom <= 5,
            "{generic} generic and {custom} custom plans for {statement}"
        );
    }
    // What keeps those plans on the indexes (migration 20261206000020): a new hospital's
    // log has no statistics yet (the planner then assumes at least ten pages), and gets
    // its first only at a thousand events.
    let (tuples, options): (f32, Vec<String>) = sqlx::query_as(
        "SELECT reltuples, coalesce(reloptions, '{}') FROM pg_class WHERE oid = 'public.events'::regclass",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("the log's statistics");
    assert!(
        tuples < 0.0,
        "a new hospital's log was analyzed: {tuples} rows"
    );
    assert!(
        options.contains(&"autovacuum_analyze_threshold=1000".to_owned()),
        "{options:?}"
    );
    // The generic plans themselves, on this log of a few events.
    for (sql, types, values, index) in [
        (
            streams.clone(),
            "(text, text, bigint, text, text, bigint)",
            format!("('hospital', 'PLAN01', 0, 'user', '{admin}', 0)"),
            "events_pkey",
        ),
        (
            plans
                .iter()
                .map(|p| p.0.clone())
                .find(|s| s.contains("LIMIT"))
                .expect("the log read"),
            "(text, bigint, bigint)",
            "('0', 0, 100)".to_owned(),
            "events_log_order",
        ),
    ] {
        let prepare =
            format!("PREPARE p{types} AS {sql}; SET plan_cache_mode = force_generic_plan");
        sqlx::raw_sql(&prepare)
            .execute(&mut *conn)
            .await
            .expect("prepare");
        let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN EXECUTE p{values}"))
            .fetch_all(&mut *conn)
            .await
            .expect("explain");
        let plan = plan.join("\n");
        assert!(
            plan.contains(&format!("Scan using {index} on events"))
                && !plan.contains("Seq Scan on events"),
            "{plan}"
        );
        sqlx::raw_sql("DEALLOCATE p; RESET plan_cache_mode")
            .execute(&mut *conn)
            .await
            .expect("deallocate");
    }
}

/// A registration's row of the patient register is written by its append (docs/adr/0011):
/// there at commit while no round can run, identical to what the projector writes, passed
/// over (not written again) when the runner reaches the registration, and folded on by
/// later events; an append that fails writes no row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_writes_its_row_in_its_append_and_the_runner_passes_it_over() {
    let app = spawn_app().await;
    let pool = tenant_pool(&app, "INL001").await;
    let owner = owner_pool(&app, "INL001").await;
    let runner = &app.state.runner;
    hms_tests::settle(runner, &pool).await;
    let hospital = HospitalCode::parse("INL001").expect("code");
    let clerk = actor_for(Operation::RegisterPatient);
    let mut rng = StdRng::seed_from_u64(7);
    let patient = Uuid::new_v4();
    let register = |mrn: u64, demographics: Demographics| PatientCommand::RegisterPatient {
        actor: clerk.clone(),
        patient_id: patient,
        mrn: Mrn::new(&hospital, mrn).expect("mrn"),
        hospital: hospital.clone(),
        demographics,
        allergies: vec![],
        now: Utc::now(),
    };

    // No round can apply the register meanwhile: another process's round holds it.
    let mut held = app.hold_projector("INL001", "patients").await;
    let first = demographics(0, &mut rng);
    let family = first.family_name.as_str().to_owned();
    let returned: Vec<projectors::PatientRow> = commands::create::<Patient>(
        &pool,
        runner,
        &patient.to_string(),
        register(1, first),
        (),
        &metadata("INL001", &clerk),
    )
    .await
    .expect("registered")
    .expect("rows written inline")
    .rows("patients")
    .expect("patient rows");
    let row = projectors::PatientRow::find(&pool, patient)
        .await
        .expect("read")
        .expect("the row is there when the registration returns");
    let as_json = |row: &projectors::PatientRow| serde_json::to_value(row).expect("json");
    assert_eq!(
        returned.iter().map(as_json).collect::<Vec<_>>(),
        [as_json(&row)],
        "the append returns the row as stored"
    );
    assert_eq!(
        (row.version, row.family_name.as_str()),
        (1, family.as_str())
    );
    // The row as stored, with the transaction that wrote it.
    let stored = || async {
        sqlx::query_as::<_, (String, String)>(
            "SELECT xmin::text, to_jsonb(p)::text FROM patients p WHERE id = $1",
        )
        .bind(patient)
        .fetch_one(&pool)
        .await
        .expect("row")
    };
    let written = stored().await;

    hms_tests::release(&mut held).await;
    hms_tests::settle(runner, &pool).await;
    let passed = stored().await;
    assert_eq!(passed, written, "the runner passed the registration over");
    let indexed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_index WHERE aggregate_id = $1")
            .bind(patient.to_string())
            .fetch_one(&pool)
            .await
            .expect("audit index");
    assert_eq!(indexed, 1, "the derived read models follow the log");

    // A later event folds onto the row written inline.
    let renamed = demographics(1, &mut rng);
    let new_family = renamed.family_name.as_str().to_owned();
    commands::execute::<Patient>(
        &pool,
        runner,
        &patient.to_string(),
        PatientCommand::UpdateDemographics {
            actor: clerk.clone(),
            demographics: renamed,
            now: Utc::now(),
        },
        (),
        &metadata("INL001", &clerk),
    )
    .await
    .expect("updated");
    let row = projectors::PatientRow::find(&pool, patient)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(
        (row.version, row.family_name.as_str()),
        (2, new_family.as_str())
    );

    // The register equals its rebuild from the log.
    let live = table_checksum(&mut pool.acquire().await.expect("conn"), "patients").await;
    hms_projections::rebuild::rebuild(
        &owner,
        runner.projector("patients").expect("the register"),
        true,
        &mut |_| {},
    )
    .await
    .expect("rebuild");
    let rebuilt = table_checksum(&mut pool.acquire().await.expect("conn"), "patients").await;
    assert_eq!(rebuilt, live, "the rebuilt register equals the live one");

    // An append that fails writes no row: the stream exists, so registering it again is a
    // conflict, and the row deleted meanwhile stays absent.
    sqlx::query("DELETE FROM patients WHERE id = $1")
        .bind(patient)
        .execute(&owner)
        .await
        .expect("delete");
    let again = commands::create::<Patient>(
        &pool,
        runner,
        &patient.to_string(),
        register(2, demographics(2, &mut rng)),
        (),
        &metadata("INL001", &clerk),
    )
    .await;
    assert!(matches!(again, Err(CommandError::Conflict)), "{again:?}");
    let row = projectors::PatientRow::find(&pool, patient)
        .await
        .expect("read");
    assert!(row.is_none(), "no row without its event: {row:?}");
}
