//! `hms-replay` against real databases: verify catches each kind of tampering done with
//! plain SQL at the right position, audit is repeatable and filters, state rebuilds a
//! record as it was. The tool runs in-process through `hms_replay::run`, parsed from an
//! argument list exactly as the binary does.

use chrono::{DateTime, Utc};
use clap::Parser;
use hms_app::commands::execute;
use hms_domain::common::{BoundedText, Email, Username};
use hms_domain::user::{user_id_for, User, UserCommand};
use hms_domain::{Actor, EventMetadata, Role};
use hms_projections::log::{self, LogCursor};
use hms_projections::projectors::seal::{
    chain_hash, recorded_head, SealEncoding, SealError, GENESIS,
};
use hms_replay::verify::{verify_tenant, ProblemKind, TenantReport};
use hms_replay::{Cli, Outcome, ReplayError};
use hms_tests::fixtures::{hospital_with_staff, next_monday, register_simple};
use hms_tests::{spawn_app, TestApp};
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

const HOSPITAL: &str = "RPL001";
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA";

/// Runs `hms-replay ARGS…` against the test's platform; the result and what it printed.
pub(crate) async fn replay(app: &TestApp, args: &[&str]) -> (Result<Outcome, ReplayError>, String) {
    let mut argv = vec![
        "hms-replay",
        "--database-url",
        app.config.database_url.expose(),
        "--tenant-db-prefix",
        &app.config.tenant_db_prefix,
    ];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("a valid command line");
    let mut out = Vec::new();
    let result = hms_replay::run(cli, &mut out).await;
    (result, String::from_utf8(out).expect("utf-8 output"))
}

pub(crate) async fn replay_ok(app: &TestApp, args: &[&str]) -> String {
    let (result, out) = replay(app, args).await;
    assert_eq!(
        result.expect("the tool runs"),
        Outcome::Clean,
        "hms-replay {args:?} reported problems:\n{out}"
    );
    out
}

struct Seeded {
    app: TestApp,
    admin: Actor,
    /// alice, bob, carol
    users: Vec<Uuid>,
}

fn metadata(actor: &Actor, request: &str) -> EventMetadata {
    EventMetadata {
        actor: actor.clone(),
        tenant: HOSPITAL.to_owned(),
        request_id: request.to_owned(),
        client_addr: Some("192.0.2.10".to_owned()),
        at: Utc::now(),
    }
}

async fn user_command(app: &TestApp, id: Uuid, command: UserCommand, meta: &EventMetadata) {
    let lease = app.state.registry.get(HOSPITAL).await.expect("tenant pool");
    execute::<User>(
        &lease.pool,
        &app.state.runner,
        &id.to_string(),
        command,
        (),
        meta,
    )
    .await
    .expect("command succeeds");
}

/// A hospital with its admin, three more users, a password change and a profile
/// update; sealed, its head recorded, and verified clean.
async fn seeded() -> Seeded {
    let app = spawn_app().await;
    let admin_name = app.setup_hospital(HOSPITAL).await;
    let admin_username = Username::parse(&admin_name).expect("username");
    let admin = Actor {
        user_id: user_id_for(&admin_username),
        username: admin_name.clone(),
        role: Role::HospitalAdmin,
    };
    let mut users = Vec::new();
    for (i, (name, role)) in [
        ("alice", Role::Doctor),
        ("bob", Role::Nurse),
        ("carol", Role::Accountant),
    ]
    .into_iter()
    .enumerate()
    {
        let username = Username::parse(name).expect("username");
        let id = user_id_for(&username);
        let create = UserCommand::CreateUser {
            username,
            email: Email::parse(&format!("{name}@hospital.example")).expect("email"),
            full_name: BoundedText::parse("full_name", &format!("{name} Example"), 200)
                .expect("name"),
            role,
            department_id: None,
            password_hash: HASH.to_owned(),
            now: Utc::now(),
        };
        user_command(&app, id, create, &metadata(&admin, &format!("create-{i}"))).await;
        users.push(id);
    }
    let alice = Actor {
        user_id: users[0],
        username: "alice".into(),
        role: Role::Doctor,
    };
    let change = UserCommand::ChangePassword {
        password_hash: HASH.replace("aGFz", "bmV3"),
        now: Utc::now(),
    };
    user_command(&app, users[0], change, &metadata(&alice, "password-1")).await;
    let update = UserCommand::UpdateProfile {
        actor: admin.clone(),
        full_name: BoundedText::parse("full_name", "Robert Example", 200).expect("name"),
        email: Email::parse("robert@hospital.example").expect("email"),
        now: Utc::now(),
    };
    user_command(&app, users[1], update, &metadata(&admin, "profile-1")).await;

    let out = replay_ok(&app, &["seal", "--hospital", HOSPITAL]).await;
    assert!(out.contains("head digest"), "{out}");
    let out = replay_ok(&app, &["verify", "--hospital", HOSPITAL]).await;
    assert!(out.contains(&format!("{HOSPITAL}: OK")), "{out}");
    Seeded { app, admin, users }
}

impl Seeded {
    /// A connection of the tampering kind: the log is append-only in the database
    /// (tenant migration `append_only_log`) unless the session turns on `hms.log_repair`.
    async fn tenant_db(&self) -> PgConnection {
        let mut db = self.app.connect(&self.app.database_for(HOSPITAL)).await;
        sqlx::query("SET hms.log_repair = 'on'")
            .execute(&mut db)
            .await
            .expect("operator setting");
        db
    }

    /// Rewrites every seal from the events as they are now (what a careful attacker does
    /// after changing events).
    async fn reseal(&self) {
        let mut db = self.tenant_db().await;
        let events = log::read_batch(&mut db, LogCursor::START, 1_000)
            .await
            .expect("the log");
        let mut hash = GENESIS;
        for (i, event) in events.iter().enumerate() {
            hash = chain_hash(&hash, event, SealEncoding::V2);
            sqlx::query("UPDATE event_seals SET chain_hash = $2 WHERE chain_index = $1")
                .bind(i as i64 + 1)
                .bind(hash.as_slice())
                .execute(&mut db)
                .await
                .expect("reseal");
        }
    }

    /// (position, aggregate_type, aggregate_id, sequence, event_type) in commit order.
    async fn log(&self) -> Vec<(i64, String, String, i64, String)> {
        let mut db = self.tenant_db().await;
        sqlx::query_as(
            "SELECT position, aggregate_type, aggregate_id, sequence, event_type FROM events \
              ORDER BY transaction_id, position",
        )
        .fetch_all(&mut db)
        .await
        .expect("read the log")
    }

    async fn position_of(&self, user: Uuid, event_type: &str) -> i64 {
        self.log()
            .await
            .into_iter()
            .find(|e| e.2 == user.to_string() && e.4 == event_type)
            .map(|e| e.0)
            .expect("event exists")
    }

    async fn tamper(&self, sql: &str) {
        let mut db = self.tenant_db().await;
        sqlx::raw_sql(sql)
            .execute(&mut db)
            .await
            .expect("tampering SQL runs");
    }

    async fn report(&self) -> TenantReport {
        verify_tenant(&self.app.state.platform, HOSPITAL)
            .await
            .expect("verify runs")
    }

    /// Verifies through the command line: problems found, exit status non-zero.
    async fn verify_fails(&self) -> String {
        let (result, out) = replay(&self.app, &["verify", "--hospital", HOSPITAL]).await;
        assert!(
            matches!(result, Ok(Outcome::ProblemsFound(n)) if n > 0),
            "verify should fail: {result:?}\n{out}"
        );
        println!("{out}");
        out
    }
}

fn has(report: &TenantReport, position: i64, kind: ProblemKind) -> bool {
    report
        .problems
        .iter()
        .any(|p| p.position == position && p.kind == kind)
}

#[tokio::test]
async fn verify_passes_on_a_clean_platform_and_seals_every_event() {
    let seeded = seeded().await;
    let app = &seeded.app;
    app.setup_hospital("RPL002").await;
    // Provisioning recorded RPL002's first head (a hospital with sealed events and no
    // head is a finding, see item 15), and verify is clean.
    let out = replay_ok(app, &["verify", "--all"]).await;
    assert!(out.contains("RPL002: recorded head 2:"), "{out}");
    let out = replay_ok(app, &["seal", "--all"]).await;
    assert!(out.contains("RPL002:"), "{out}");
    let out = replay_ok(app, &["verify", "--all"]).await;
    assert!(
        out.contains("RPL001: OK") && out.contains("RPL002: OK"),
        "{out}"
    );
    assert!(out.contains("2 hospitals verified, 0 problems"), "{out}");

    // The live runner sealed every event (the seal projector is one of `all()`), and the
    // recorded head is the recomputed one.
    let report = seeded.report().await;
    assert_eq!(report.events, 7, "{report:?}");
    assert_eq!(report.sealed, report.events);
    assert_eq!(report.unsealed_tail, 0);
    let recorded = report.recorded.expect("a recorded head").head;
    assert_eq!(Some(recorded), report.recomputed_head);
    assert!(
        out.contains(&format!("head digest {}", recorded.digest())),
        "{out}"
    );
}

#[tokio::test]
async fn an_updated_payload_is_detected_at_its_position() {
    let seeded = seeded().await;
    let position = seeded.position_of(seeded.users[2], "UserCreated").await;
    seeded
        .tamper(&format!(
            "UPDATE events SET payload = jsonb_set(payload, '{{UserCreated,role}}', '\"HOSPITAL_ADMIN\"') \
              WHERE position = {position}"
        ))
        .await;
    let report = seeded.report().await;
    assert!(has(&report, position, ProblemKind::Altered), "{report:#?}");
    let others: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::Altered && p.position != position)
        .collect();
    assert!(
        others.is_empty(),
        "only the changed row is named: {others:?}"
    );
    let out = seeded.verify_fails().await;
    assert!(
        out.contains(&format!("position {position}: altered")),
        "{out}"
    );
}

#[tokio::test]
async fn a_deleted_row_is_detected_at_its_position() {
    let seeded = seeded().await;
    let position = seeded.position_of(seeded.users[1], "UserCreated").await;
    seeded
        .tamper(&format!("DELETE FROM events WHERE position = {position}"))
        .await;
    let report = seeded.report().await;
    assert!(has(&report, position, ProblemKind::Deleted), "{report:#?}");
    // bob's stream now starts at #2.
    let bob_update = seeded
        .position_of(seeded.users[1], "UserProfileUpdated")
        .await;
    assert!(
        has(&report, bob_update, ProblemKind::SequenceGap),
        "{report:#?}"
    );
    let out = seeded.verify_fails().await;
    assert!(
        out.contains(&format!("position {position}: deleted")),
        "{out}"
    );
}

#[tokio::test]
async fn a_forged_row_inserted_behind_the_sealer_is_detected_at_its_position() {
    let seeded = seeded().await;
    let copied = seeded.position_of(seeded.users[0], "UserCreated").await;
    let forged_id = Uuid::new_v4();
    // A backdated account: a copy of alice's creation under a new id, filed in the
    // transaction of an early event so that it sorts inside the sealed part of the log.
    let mut db = seeded.tenant_db().await;
    let forged: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata, transaction_id, recorded_at) \
         SELECT aggregate_type, $2, 1, event_type, event_version, \
                jsonb_set(payload, '{UserCreated,username}', '\"mallory\"'), metadata, \
                transaction_id, recorded_at \
           FROM events WHERE position = $1 \
         RETURNING position",
    )
    .bind(copied)
    .bind(forged_id.to_string())
    .fetch_one(&mut db)
    .await
    .expect("forge");
    let report = seeded.report().await;
    assert!(has(&report, forged, ProblemKind::Inserted), "{report:#?}");
    let out = seeded.verify_fails().await;
    assert!(
        out.contains(&format!("position {forged}: inserted")),
        "{out}"
    );
}

#[tokio::test]
async fn a_swapped_pair_of_payloads_is_detected_at_both_positions() {
    let seeded = seeded().await;
    let a = seeded.position_of(seeded.users[0], "UserCreated").await;
    let b = seeded.position_of(seeded.users[2], "UserCreated").await;
    seeded
        .tamper(&format!(
            "UPDATE events AS e SET payload = o.payload FROM events AS o \
              WHERE (e.position, o.position) IN (({a}, {b}), ({b}, {a}))"
        ))
        .await;
    let report = seeded.report().await;
    assert!(has(&report, a, ProblemKind::Altered), "{report:#?}");
    assert!(has(&report, b, ProblemKind::Altered), "{report:#?}");
    seeded.verify_fails().await;
}

#[tokio::test]
async fn a_pair_moved_in_commit_order_is_detected_as_reordered() {
    let seeded = seeded().await;
    let a = seeded.position_of(seeded.users[1], "UserCreated").await;
    let b = seeded.position_of(seeded.users[2], "UserCreated").await;
    // Swap the two rows' places in commit order without touching their content.
    seeded
        .tamper(&format!(
            "UPDATE events AS e SET transaction_id = o.transaction_id FROM events AS o \
              WHERE (e.position, o.position) IN (({a}, {b}), ({b}, {a}))"
        ))
        .await;
    let report = seeded.report().await;
    assert!(has(&report, a, ProblemKind::Reordered), "{report:#?}");
    assert!(
        !report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::Altered),
        "the rows' content is unchanged: {report:#?}"
    );
    seeded.verify_fails().await;
}

#[tokio::test]
async fn a_chain_sealed_under_the_v1_encoding_still_verifies_after_the_upgrade() {
    let seeded = seeded().await;
    // Turn the hospital into one sealed before encoding v2: every seal, and the head the
    // platform recorded, as the v1 sealer made them; the chain switches after them.
    let mut db = seeded.tenant_db().await;
    let events = log::read_batch(&mut db, LogCursor::START, 1_000)
        .await
        .expect("the log");
    let mut hash = GENESIS;
    for (i, event) in events.iter().enumerate() {
        hash = chain_hash(&hash, event, SealEncoding::V1);
        sqlx::query("UPDATE event_seals SET chain_hash = $2 WHERE chain_index = $1")
            .bind(i as i64 + 1)
            .bind(hash.as_slice())
            .execute(&mut db)
            .await
            .expect("reseal");
    }
    sqlx::raw_sql(&format!(
        "DELETE FROM event_seal_encodings; \
         INSERT INTO event_seal_encodings VALUES (1, 1), ({}, 2);",
        events.len() + 1
    ))
    .execute(&mut db)
    .await
    .expect("encodings");
    sqlx::query("UPDATE tenant_log_heads SET chain_hash = $2 WHERE code = $1")
        .bind(HOSPITAL)
        .bind(hash.as_slice())
        .execute(&seeded.app.state.platform.control)
        .await
        .expect("head");
    let report = seeded.report().await;
    assert!(report.problems.is_empty(), "{report:#?}");

    // New events are sealed under v2 after the old ones; the mixed chain verifies.
    let update = UserCommand::UpdateProfile {
        actor: seeded.admin.clone(),
        full_name: BoundedText::parse("full_name", "Carol Example", 200).expect("name"),
        email: Email::parse("carol@hospital.example").expect("email"),
        now: Utc::now(),
    };
    user_command(
        &seeded.app,
        seeded.users[2],
        update,
        &metadata(&seeded.admin, "profile-2"),
    )
    .await;
    replay_ok(&seeded.app, &["seal", "--hospital", HOSPITAL]).await;
    let out = replay_ok(&seeded.app, &["verify", "--hospital", HOSPITAL]).await;
    assert!(out.contains(&format!("{HOSPITAL}: OK")), "{out}");
    let report = seeded.report().await;
    assert_eq!(report.sealed, events.len() as u64 + 1, "{report:#?}");

    // Tampering is still found in the part sealed under v1.
    let early = seeded.position_of(seeded.users[1], "UserCreated").await;
    seeded
        .tamper(&format!(
            "UPDATE events SET payload = jsonb_set(payload, '{{UserCreated,email}}', '\"eve@example.com\"') \
              WHERE position = {early}"
        ))
        .await;
    let report = seeded.report().await;
    assert!(has(&report, early, ProblemKind::Altered), "{report:#?}");
}

#[tokio::test]
async fn a_truncated_tail_is_detected_against_the_recorded_head() {
    let seeded = seeded().await;
    let log = seeded.log().await;
    let head = log.last().expect("events").0;
    let cut: Vec<i64> = log.iter().rev().take(2).map(|e| e.0).collect();
    // A careful attacker removes the events and their seals, so the seals alone still
    // form a perfect chain: only the head kept in the platform database tells.
    seeded
        .tamper(&format!(
            "DELETE FROM events WHERE position IN ({0}, {1}); \
             DELETE FROM event_seals WHERE position IN ({0}, {1});",
            cut[0], cut[1]
        ))
        .await;
    let report = seeded.report().await;
    assert!(has(&report, head, ProblemKind::Truncated), "{report:#?}");
    let out = seeded.verify_fails().await;
    assert!(
        out.contains(&format!("position {head}: truncated")),
        "{out}"
    );
    // Recording a new head over the cut log is refused.
    let (result, _) = replay(&seeded.app, &["seal", "--hospital", HOSPITAL]).await;
    assert!(
        matches!(result, Err(ReplayError::Seal(_))),
        "seal must refuse: {result:?}"
    );
}

#[tokio::test]
async fn audit_output_is_byte_identical_twice_redacted_and_filters_work() {
    let seeded = seeded().await;
    let app = &seeded.app;
    let all = ["audit", "--hospital", HOSPITAL, "--format", "jsonl"];
    let first = replay_ok(app, &all).await;
    let second = replay_ok(app, &all).await;
    assert_eq!(first, second);
    let lines: Vec<Value> = first
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 7);
    let positions: Vec<i64> = seeded.log().await.iter().map(|e| e.0).collect();
    let exported: Vec<i64> = lines
        .iter()
        .map(|l| l["position"].as_i64().expect("position"))
        .collect();
    assert_eq!(exported, positions, "commit order");
    assert_eq!(lines[2]["actor"]["role"], "HOSPITAL_ADMIN");
    assert_eq!(
        lines[2]["payload"]["UserCreated"]["password_hash"],
        "[REDACTED]"
    );
    assert!(lines[2]["summary"]
        .as_str()
        .expect("summary")
        .starts_with("User created: "));

    // No format ever shows a password hash.
    for format in ["table", "jsonl", "csv", "fhir"] {
        let out = replay_ok(app, &["audit", "--hospital", HOSPITAL, "--format", format]).await;
        assert!(!out.contains("argon2"), "{format} leaks a hash:\n{out}");
    }

    // Filters.
    let by_actor = replay_ok(
        app,
        &[
            "audit",
            "--hospital",
            HOSPITAL,
            "--format",
            "jsonl",
            "--actor",
            "ALICE",
        ],
    )
    .await;
    assert_eq!(by_actor.lines().count(), 1, "{by_actor}");
    assert!(by_actor.contains("PasswordChanged"));
    let admin_id = seeded.admin.user_id.to_string();
    let by_actor_id = replay_ok(
        app,
        &[
            "audit",
            "--hospital",
            HOSPITAL,
            "--format",
            "jsonl",
            "--actor",
            &admin_id,
        ],
    )
    .await;
    assert_eq!(by_actor_id.lines().count(), 4, "{by_actor_id}");
    let by_type = replay_ok(
        app,
        &[
            "audit",
            "--hospital",
            HOSPITAL,
            "--format",
            "jsonl",
            "--type",
            "UserCreated",
        ],
    )
    .await;
    assert_eq!(by_type.lines().count(), 4, "{by_type}");
    let bob = format!("user/{}", seeded.users[1]);
    let by_record = replay_ok(
        app,
        &[
            "audit",
            "--hospital",
            HOSPITAL,
            "--format",
            "csv",
            "--aggregate",
            &bob,
        ],
    )
    .await;
    assert_eq!(
        by_record.lines().count(),
        3,
        "header and two events: {by_record}"
    );
    assert!(by_record.starts_with("position,recorded_at,"));
    let recorded: Vec<String> = lines
        .iter()
        .map(|l| l["recorded_at"].as_str().expect("time").to_owned())
        .collect();
    let windowed = replay_ok(
        app,
        &[
            "audit",
            "--hospital",
            HOSPITAL,
            "--format",
            "jsonl",
            "--since",
            &recorded[2],
            "--until",
            &recorded[6],
        ],
    )
    .await;
    let expected = recorded
        .iter()
        .filter(|t| **t >= recorded[2] && **t < recorded[6])
        .count();
    assert_eq!(windowed.lines().count(), expected, "{windowed}");

    // FHIR: AuditEvent resources with the actor and the record.
    let fhir = replay_ok(app, &["audit", "--hospital", HOSPITAL, "--format", "fhir"]).await;
    let line = fhir.lines().nth(2).expect("a line");
    assert!(
        line.starts_with(r#"{"resourceType":"AuditEvent","#),
        "{line}"
    );
    let event: Value = serde_json::from_str(line).expect("json");
    assert_eq!(event["resourceType"], "AuditEvent");
    assert_eq!(event["action"], "C");
    assert_eq!(event["agent"][0]["who"]["identifier"]["value"], admin_id);
    assert_eq!(
        event["agent"][0]["role"][0]["coding"][0]["code"],
        "HOSPITAL_ADMIN"
    );
    assert_eq!(
        event["entity"][0]["what"]["identifier"]["value"],
        lines[2]["aggregate_id"]
    );

    // --output writes the same bytes as stdout, under the final name only when done.
    let dir = std::env::temp_dir().join(format!("hms-replay-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("trail.jsonl");
    let path = file.to_str().expect("utf-8 path");
    let printed = replay_ok(
        app,
        &[
            "audit",
            "--hospital",
            HOSPITAL,
            "--format",
            "jsonl",
            "--output",
            path,
        ],
    )
    .await;
    assert!(printed.is_empty());
    assert_eq!(std::fs::read_to_string(&file).expect("export"), first);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn state_as_of_before_and_after_an_update_gives_the_two_versions() {
    let seeded = seeded().await;
    let app = &seeded.app;
    let carol = seeded.users[2];
    let mut db = seeded.tenant_db().await;
    let between: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&mut db)
        .await
        .expect("now");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let update = UserCommand::UpdateProfile {
        actor: seeded.admin.clone(),
        full_name: BoundedText::parse("full_name", "Caroline Example", 200).expect("name"),
        email: Email::parse("caroline@hospital.example").expect("email"),
        now: Utc::now(),
    };
    user_command(app, carol, update, &metadata(&seeded.admin, "profile-2")).await;

    let aggregate = format!("user/{carol}");
    let state = |out: String| -> Value { serde_json::from_str(&out).expect("state JSON") };
    let before = state(
        replay_ok(
            app,
            &[
                "state",
                "--hospital",
                HOSPITAL,
                "--aggregate",
                &aggregate,
                "--as-of",
                &between.to_rfc3339(),
            ],
        )
        .await,
    );
    let after = state(
        replay_ok(
            app,
            &[
                "state",
                "--hospital",
                HOSPITAL,
                "--aggregate",
                &aggregate,
                "--as-of",
                &Utc::now().to_rfc3339(),
            ],
        )
        .await,
    );
    assert_eq!(before["state"]["full_name"], "carol Example");
    assert_eq!(before["sequence"], 1);
    assert_eq!(after["state"]["full_name"], "Caroline Example");
    assert_eq!(after["state"]["email"], "caroline@hospital.example");
    assert_eq!(after["sequence"], 2);
    let first = state(
        replay_ok(
            app,
            &[
                "state",
                "--hospital",
                HOSPITAL,
                "--aggregate",
                &aggregate,
                "--at-sequence",
                "1",
            ],
        )
        .await,
    );
    assert_eq!(first["state"], before["state"]);

    // The hospital record works the same way; an unknown type is one clear error.
    let hospital = format!("hospital/{HOSPITAL}");
    let out = replay_ok(
        app,
        &[
            "state",
            "--hospital",
            HOSPITAL,
            "--aggregate",
            &hospital,
            "--at-sequence",
            "1",
        ],
    )
    .await;
    assert_eq!(state(out)["state"]["code"], HOSPITAL);
    let (result, _) = replay(
        app,
        &[
            "state",
            "--hospital",
            HOSPITAL,
            "--aggregate",
            "ward/1",
            "--at-sequence",
            "1",
        ],
    )
    .await;
    let error = result.expect_err("unknown type").to_string();
    assert!(error.contains("unknown aggregate type 'ward'"), "{error}");
}

/// Item 13 of the authority issue: a hospital that has booked an appointment has schedule
/// streams (`doctor_schedule`, `patient_schedule`); `verify` must know every aggregate
/// of the domain and pass, and `state` must rebuild a schedule.
#[tokio::test]
async fn verify_and_state_cover_every_aggregate_including_schedules() {
    const CODE: &str = "RPL009";
    let app = spawn_app().await;
    let staff = hospital_with_staff(&app, CODE).await;
    let patient = register_simple(&app, &staff.receptionist, "Wanjiku", "Kamau").await;
    let start = format!("{}T10:00:00Z", next_monday());
    let booked = app
        .graphql(
            "mutation($input: ScheduleAppointmentInput!) { scheduleAppointment(input: $input) { id } }",
            json!({ "input": { "patientId": patient, "doctorId": staff.doctor_id, "start": start,
                               "durationMinutes": 30, "reason": "Check-up" } }),
            Some(&staff.receptionist),
        )
        .await;
    assert!(
        booked["data"]["scheduleAppointment"]["id"].is_string(),
        "booked: {booked}"
    );
    let mut conn = app.connect(&app.database_for(CODE)).await;
    let types: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT aggregate_type FROM events ORDER BY 1")
            .fetch_all(&mut conn)
            .await
            .expect("aggregate types");
    for expected in ["appointment", "doctor_schedule", "patient_schedule"] {
        assert!(
            types.iter().any(|t| t == expected),
            "{expected} in {types:?}"
        );
    }

    let out = replay_ok(&app, &["verify", "--hospital", CODE]).await;
    assert!(out.contains("OK"), "verify: {out}");

    let schedule: String = sqlx::query_scalar(
        "SELECT aggregate_id FROM events WHERE aggregate_type = 'doctor_schedule' LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await
    .expect("a doctor's schedule");
    let aggregate = format!("doctor_schedule/{schedule}");
    let out = replay_ok(
        &app,
        &[
            "state",
            "--hospital",
            CODE,
            "--aggregate",
            &aggregate,
            "--at-sequence",
            "1",
        ],
    )
    .await;
    let state: Value = serde_json::from_str(&out).expect("state is JSON");
    assert_eq!(state["aggregate_type"], "doctor_schedule", "{out}");
    assert_eq!(state["sequence"], 1, "{out}");
}

/// The problems of a report as (position, kind), in order.
fn findings(report: &TenantReport) -> Vec<(i64, ProblemKind)> {
    report
        .problems
        .iter()
        .map(|p| (p.position, p.kind))
        .collect()
}

/// Item 14 of the authority issue: a seal row changed by hand used to be reported as two
/// altered events (its own and the next). The seal after it links from the hash the
/// event gives, so it is the seal that changed: one `seal-chain-broken`, at the seal.
#[tokio::test]
async fn a_seal_row_changed_by_hand_is_reported_at_the_seal_and_not_against_its_events() {
    let seeded = seeded().await;
    let middle = seeded.position_of(seeded.users[1], "UserCreated").await;
    let head = seeded.log().await.last().expect("events").0;
    for (name, position) in [("a seal in the middle", middle), ("the head seal", head)] {
        let mut db = seeded.tenant_db().await;
        let original: Vec<u8> =
            sqlx::query_scalar("SELECT chain_hash FROM event_seals WHERE position = $1")
                .bind(position)
                .fetch_one(&mut db)
                .await
                .expect("the seal");
        seeded
            .tamper(&format!(
                "UPDATE event_seals SET chain_hash = sha256('forged'::bytea) WHERE position = {position}"
            ))
            .await;
        let report = seeded.report().await;
        println!("{name}: {:?}", findings(&report));
        assert_eq!(
            findings(&report),
            vec![(position, ProblemKind::SealChainBroken)],
            "{name}: {report:#?}"
        );
        let out = seeded.verify_fails().await;
        assert!(
            out.contains(&format!("position {position}: seal-chain-broken")),
            "{out}"
        );
        sqlx::query("UPDATE event_seals SET chain_hash = $2 WHERE position = $1")
            .bind(position)
            .bind(original)
            .execute(&mut db)
            .await
            .expect("restore the seal");
        assert!(seeded.report().await.problems.is_empty());
    }
}

/// Item 14: a seal row deleted used to add a false `inserted` for its untouched event
/// (and a `seal-chain-broken` at the next seal). The next seal names the event and links
/// through it, or (for the head) the events still recompute to the recorded head: one
/// `seal-chain-broken`, at the removed seal's event.
#[tokio::test]
async fn a_seal_row_deleted_is_reported_at_the_seal_and_not_as_an_inserted_event() {
    let seeded = seeded().await;
    let middle = seeded.position_of(seeded.users[1], "UserCreated").await;
    let head = seeded.log().await.last().expect("events").0;
    for (name, position) in [("a seal in the middle", middle), ("the head seal", head)] {
        let mut db = seeded.tenant_db().await;
        let (index, prev, hash): (i64, Option<i64>, Vec<u8>) = sqlx::query_as(
            "SELECT chain_index, prev_position, chain_hash FROM event_seals WHERE position = $1",
        )
        .bind(position)
        .fetch_one(&mut db)
        .await
        .expect("the seal");
        seeded
            .tamper(&format!(
                "DELETE FROM event_seals WHERE position = {position}"
            ))
            .await;
        let report = seeded.report().await;
        println!("{name}: {:?}", findings(&report));
        assert_eq!(
            findings(&report),
            vec![(position, ProblemKind::SealChainBroken)],
            "{name}: {report:#?}"
        );
        let out = seeded.verify_fails().await;
        assert!(
            out.contains(&format!("position {position}: seal-chain-broken")),
            "{out}"
        );
        sqlx::query("INSERT INTO event_seals VALUES ($1, $2, $3, $4)")
            .bind(index)
            .bind(position)
            .bind(prev)
            .bind(hash)
            .execute(&mut db)
            .await
            .expect("restore the seal");
        assert!(seeded.report().await.problems.is_empty());
    }
}

/// Item 15 of the authority issue: with the platform's head row deleted, events and
/// seals rewritten together used to verify OK, and the server then recorded the forged
/// head. Sealed events without a recorded head are now a finding, and neither the server
/// nor `seal` records a head over them unless an operator says so.
#[tokio::test]
async fn a_missing_head_is_a_finding_and_no_head_is_recorded_over_the_rewritten_chain() {
    let seeded = seeded().await;
    let app = &seeded.app;
    let control = &app.state.platform.control;
    sqlx::query("DELETE FROM tenant_log_heads WHERE code = $1")
        .bind(HOSPITAL)
        .execute(control)
        .await
        .expect("delete the head");
    let bob = seeded.position_of(seeded.users[1], "UserCreated").await;
    seeded
        .tamper(&format!(
            "UPDATE events SET payload = jsonb_set(payload, '{{UserCreated,email}}', '\"eve@example.com\"') \
              WHERE position = {bob}"
        ))
        .await;
    seeded.reseal().await;
    let head = seeded.log().await.last().expect("events").0;

    let report = seeded.report().await;
    println!("{:?}", findings(&report));
    assert_eq!(
        findings(&report),
        vec![(head, ProblemKind::HeadMissing)],
        "{report:#?}"
    );
    let out = seeded.verify_fails().await;
    assert!(
        out.contains(&format!("position {head}: head-missing")),
        "{out}"
    );

    // `seal` refuses to bless the chain, and so does the server after a catch-up.
    let (result, _) = replay(app, &["seal", "--hospital", HOSPITAL]).await;
    assert!(
        matches!(
            result,
            Err(ReplayError::Seal(SealError::HeadMissing { .. }))
        ),
        "seal must refuse: {result:?}"
    );
    hms_app::workers::projection_daemon::catch_up(&app.state.platform, HOSPITAL).await;
    assert_eq!(
        recorded_head(control, HOSPITAL).await.expect("read"),
        None,
        "the server recorded a head over a chain nobody can check"
    );

    // An operator who vouches for the log records it, warned.
    let out = replay_ok(
        app,
        &["seal", "--hospital", HOSPITAL, "--accept-missing-head"],
    )
    .await;
    assert!(out.contains("WARNING"), "{out}");
    let out = replay_ok(app, &["verify", "--hospital", HOSPITAL]).await;
    assert!(out.contains(&format!("{HOSPITAL}: OK")), "{out}");
}

/// Item 15, part two: the log is append-only in the database. Through the server's own
/// tenant pool, UPDATE, DELETE and TRUNCATE of the events, the seals and their encodings
/// fail for want of the privilege; as the owner they meet the trigger, and only an
/// owner's session that turned on `hms.log_repair` may.
#[tokio::test]
async fn the_servers_tenant_pool_cannot_update_or_delete_the_event_log() {
    const CODE: &str = "RPL010";
    let app = spawn_app().await;
    app.setup_hospital(CODE).await;
    let lease = app.state.registry.get(CODE).await.expect("tenant pool");
    let owner = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(hms_tests::server_options().database(&app.database_for(CODE)))
        .await
        .expect("owner pool");
    let count = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM event_seals)",
        )
        .fetch_one(&lease.pool)
        .await
        .expect("count")
    };
    let before = count().await;
    assert!(before > 0);
    for sql in [
        "UPDATE events SET payload = '{}'::jsonb",
        "DELETE FROM events",
        "TRUNCATE events",
        "UPDATE event_seals SET chain_hash = sha256('x'::bytea)",
        "DELETE FROM event_seals",
        "DELETE FROM event_seal_encodings",
    ] {
        let result = sqlx::query(sql).execute(&lease.pool).await;
        println!("{sql}: {result:?}");
        // The server's role lacks the privilege (see `authority::the_tenant_side_…`);
        // the owner meets the trigger.
        let error = result.expect_err(sql).to_string();
        assert!(error.contains("permission denied"), "{sql}: {error}");
        let result = sqlx::query(sql).execute(&owner).await;
        let error = result.expect_err(sql).to_string();
        assert!(error.contains("append-only"), "{sql}: {error}");
    }
    assert_eq!(count().await, before);
    replay_ok(&app, &["verify", "--hospital", CODE]).await;

    // Only an owner's deliberate repair session may.
    let mut tx = owner.begin().await.expect("begin");
    sqlx::query("SET LOCAL hms.log_repair = 'on'")
        .execute(&mut *tx)
        .await
        .expect("operator setting");
    sqlx::query("UPDATE events SET payload = payload")
        .execute(&mut *tx)
        .await
        .expect("an operator's repair session may");
    tx.rollback().await.expect("rollback");
}
