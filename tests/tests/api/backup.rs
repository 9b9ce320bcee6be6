//! `hms backup-hospital` and `hms restore-hospital`: a restored hospital is the one
//! backed up (its log verified against the manifest before it is served), works like
//! any other, and a refused restore leaves nothing behind.

use std::io::Read;
use std::path::Path;

use hms_api::config::{Cli, Command};
use hms_app::workers::projection_daemon;
use hms_replay::verify::verify_tenant;
use hms_tests::fixtures::{hospital_with_staff, register_simple};
use hms_tests::{spawn_app, spawn_app_on, TestApp, TestConfig, ADMIN_PASSWORD};
use serde_json::{json, Value};

async fn hms(app: &TestApp, command: Command) -> anyhow::Result<()> {
    hms_api::cli::run(Cli {
        platform: app.config.clone(),
        log_format: Default::default(),
        command: Some(command),
    })
    .await
}

/// A folder of the test's own for backup files, removed with the value.
fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("hms-backup-test-")
        .tempdir()
        .expect("scratch dir")
}

async fn backup(app: &TestApp, code: &str, output: &Path) {
    hms(
        app,
        Command::BackupHospital {
            code: code.into(),
            output: output.to_owned(),
        },
    )
    .await
    .expect("backup");
}

async fn restore(app: &TestApp, input: &Path, as_code: Option<&str>) -> anyhow::Result<()> {
    restore_on(app, input, as_code, None).await
}

async fn restore_on(
    app: &TestApp,
    input: &Path,
    as_code: Option<&str>,
    server: Option<&str>,
) -> anyhow::Result<()> {
    hms(
        app,
        Command::RestoreHospital {
            input: input.to_owned(),
            as_code: as_code.map(str::to_owned),
            server: server.map(str::to_owned),
        },
    )
    .await
}

fn manifest(path: &Path) -> Value {
    let mut archive = tar::Archive::new(std::fs::File::open(path).expect("backup file"));
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path").to_string_lossy() == "manifest.json" {
            let mut json = String::new();
            entry.read_to_string(&mut json).expect("manifest");
            return serde_json::from_str(&json).expect("manifest JSON");
        }
    }
    panic!("no manifest in {}", path.display());
}

/// Rewrites the backup at `from` into `to`, passing each entry's bytes through `change`.
fn rewrite(from: &Path, to: &Path, change: impl Fn(&str, Vec<u8>) -> Vec<u8>) {
    let mut archive = tar::Archive::new(std::fs::File::open(from).expect("backup file"));
    let mut out = tar::Builder::new(std::fs::File::create(to).expect("copy"));
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("bytes");
        let bytes = change(&name, bytes);
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        out.append_data(&mut header, &name, bytes.as_slice())
            .expect("append");
    }
    out.finish().expect("finish");
}

async fn family_names(app: &TestApp, token: &str) -> Vec<String> {
    let response = app
        .graphql(
            "{ patients(first: 100) { edges { node { familyName } } } }",
            json!({}),
            Some(token),
        )
        .await;
    let mut names: Vec<String> = response["data"]["patients"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{response}"))
        .iter()
        .map(|e| {
            e["node"]["familyName"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .filter(|name| !name.starts_with("Zz"))
        .collect();
    names.sort();
    names
}

async fn scratch_databases(app: &TestApp) -> Vec<String> {
    app.databases()
        .await
        .into_iter()
        .filter(|d| d.contains("_restore_"))
        .collect()
}

/// Seals and records the head, as the daemon does, then verifies the whole log.
async fn assert_verified(app: &TestApp, code: &str) {
    projection_daemon::catch_up(&app.state.platform, code).await;
    let report = verify_tenant(&app.state.platform, code)
        .await
        .expect("verify runs");
    assert!(report.problems.is_empty(), "{code}: {:?}", report.problems);
    assert!(report.events > 0 && report.unsealed_tail == 0, "{report:?}");
}

#[tokio::test]
async fn a_restored_hospital_is_the_one_backed_up_and_works_like_any_other() {
    let app = spawn_app().await;
    let staff = hospital_with_staff(&app, "BAKUP").await;
    for name in ["Achebe", "Baldwin", "Cisse"] {
        register_simple(&app, &staff.receptionist, "Pat", name).await;
    }
    // Concurrent writers: positions are taken in one order and committed in another,
    // which the restored log must keep.
    futures::future::join_all((0..12).map(|i| {
        let token = staff.receptionist.clone();
        let app = &app;
        async move { register_simple(app, &token, "Conc", &format!("Zz{i:02}")).await }
    }))
    .await;
    projection_daemon::catch_up(&app.state.platform, "BAKUP").await;
    let scratch = scratch_dir();
    let file = scratch.path().join("bakup.hmsbackup");
    backup(&app, "BAKUP", &file).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .expect("backup file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "a backup is for its owner only: {mode:o}");
    }
    let written = manifest(&file);
    assert_eq!(written["code"], "BAKUP");
    assert!(written["events"].as_i64().unwrap_or(0) >= 9, "{written}");
    assert!(written["head"].as_str().is_some(), "{written}");
    assert_eq!(
        written["head"], written["recorded_head"],
        "sealed before the dump"
    );
    // Written after the backup: not in the restored hospital.
    register_simple(&app, &staff.receptionist, "Pat", "Dumas").await;

    // An existing code is refused; nothing is made.
    let taken = restore(&app, &file, None).await.expect_err("BAKUP exists");
    assert!(taken.to_string().contains("exists already"), "{taken:#}");

    restore_on(&app, &file, Some("BAKDOWN"), Some("default"))
        .await
        .expect("restored as BAKDOWN");
    assert!(scratch_databases(&app).await.is_empty());
    // The restored log is in the original commit order, whatever its transaction ids.
    let commit_order = |database: String| {
        let app = &app;
        async move {
            let mut conn = app.connect(&database).await;
            let positions: Vec<i64> =
                sqlx::query_scalar("SELECT position FROM events ORDER BY transaction_id, position")
                    .fetch_all(&mut conn)
                    .await
                    .expect("log order");
            positions
        }
    };
    let original = commit_order(app.database_for("BAKUP")).await;
    let restored = commit_order(app.database_for("BAKDOWN")).await;
    assert_eq!(original[..restored.len()], restored[..]);
    let admin = app
        .login(Some("BAKDOWN"), "bakup_admin", ADMIN_PASSWORD)
        .await;
    let desk = app
        .login(Some("BAKDOWN"), "bakup_desk", ADMIN_PASSWORD)
        .await;
    assert_eq!(
        family_names(&app, &admin).await,
        ["Achebe", "Baldwin", "Cisse"]
    );
    // New events land after the restored ones and reach the read models.
    register_simple(&app, &desk, "Pat", "Eliot").await;
    assert_eq!(
        family_names(&app, &admin).await,
        ["Achebe", "Baldwin", "Cisse", "Eliot"]
    );
    assert_verified(&app, "BAKDOWN").await;
    assert_verified(&app, "BAKUP").await;
    // The original is untouched by its copy.
    assert_eq!(
        family_names(&app, &staff.admin).await,
        ["Achebe", "Baldwin", "Cisse", "Dumas"]
    );
}

#[tokio::test]
async fn a_damaged_or_altered_backup_is_refused_and_leaves_nothing() {
    let app = spawn_app().await;
    let staff = hospital_with_staff(&app, "BAKBAD").await;
    register_simple(&app, &staff.receptionist, "Pat", "Okafor").await;
    let scratch = scratch_dir();
    let file = scratch.path().join("bad.hmsbackup");
    backup(&app, "BAKBAD", &file).await;
    let databases_before = app.databases().await;

    // A byte of the dump changed: the manifest's digest catches it.
    let damaged = file.with_extension("damaged");
    rewrite(&file, &damaged, |name, mut bytes| {
        if name == "hospital.dump" {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
        }
        bytes
    });
    let error = restore(&app, &damaged, Some("BAKDMG"))
        .await
        .expect_err("damaged");
    assert!(error.to_string().contains("digest"), "{error:#}");

    // A manifest whose head the log does not reproduce: restored, verified, refused.
    let forged = file.with_extension("forged");
    rewrite(&file, &forged, |name, bytes| {
        if name != "manifest.json" {
            return bytes;
        }
        let mut manifest: Value = serde_json::from_slice(&bytes).expect("manifest");
        let head = manifest["head"].as_str().expect("head").to_owned();
        let (front, _) = head.rsplit_once(':').expect("digest");
        manifest["head"] = json!(format!("{front}:{}", "ab".repeat(32)));
        manifest["recorded_head"] = Value::Null;
        serde_json::to_vec(&manifest).expect("json")
    });
    let error = restore(&app, &forged, Some("BAKFRG"))
        .await
        .expect_err("forged head");
    assert!(error.to_string().contains("refused"), "{error:#}");

    // Not a backup at all; a code that is not one.
    let junk = file.with_extension("junk");
    std::fs::write(&junk, b"hello").expect("junk");
    let error = restore(&app, &junk, Some("BAKJNK"))
        .await
        .expect_err("junk");
    assert!(
        error.to_string().contains("not an hms hospital backup"),
        "{error:#}"
    );
    let error = restore(&app, &file, Some("bad code"))
        .await
        .expect_err("code");
    assert!(!error.to_string().is_empty());
    let error = restore_on(&app, &file, Some("BAKSRV"), Some("elsewhere"))
        .await
        .expect_err("no such server");
    assert!(
        error.to_string().contains("unknown database server"),
        "{error:#}"
    );

    assert_eq!(app.databases().await, databases_before, "nothing was left");
    for code in ["BAKDMG", "BAKFRG", "BAKJNK"] {
        let refused = app
            .login_response(Some(code), "bakbad_admin", ADMIN_PASSWORD)
            .await;
        assert!(refused["errors"].is_array(), "{code}: {refused}");
    }
}

/// The other cluster is new: its transaction counter is far behind the shared test
/// server's, so the restored log's transaction ids must be re-based to be read there.
#[tokio::test]
async fn a_backup_restores_onto_another_cluster_whose_transaction_ids_are_behind() {
    let app = spawn_app().await;
    let staff = hospital_with_staff(&app, "BAKMOVE").await;
    for name in ["Adichie", "Bâ", "Coetzee"] {
        register_simple(&app, &staff.receptionist, "Pat", name).await;
    }
    let scratch = scratch_dir();
    let file = scratch.path().join("move.hmsbackup");
    backup(&app, "BAKMOVE", &file).await;

    let cluster = hms_tests::cluster::Cluster::primary().expect("a private cluster");
    let other = spawn_app_on(cluster.options("postgres"), TestConfig::default()).await;
    let behind: i64 = {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect_with(&cluster.options("postgres"))
            .await
            .expect("connect");
        sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
            .fetch_one(&mut conn)
            .await
            .expect("xid")
    };
    println!("the new cluster's transaction counter: {behind}");
    restore(&other, &file, None).await.expect("restored");
    let admin = other
        .login(Some("BAKMOVE"), "bakmove_admin", ADMIN_PASSWORD)
        .await;
    let desk = other
        .login(Some("BAKMOVE"), "bakmove_desk", ADMIN_PASSWORD)
        .await;
    register_simple(&other, &desk, "Pat", "Djebar").await;
    assert_eq!(
        family_names(&other, &admin).await,
        ["Adichie", "Bâ", "Coetzee", "Djebar"]
    );
    assert_verified(&other, "BAKMOVE").await;
    drop(other);
    drop(cluster);
}

/// Positions taken in one order and committed in another (a descent in commit order)
/// survive the re-base: the new ids keep the old commit order exactly, and checkpoints
/// and the audit index move with their events.
#[tokio::test]
async fn rebasing_keeps_the_commit_order_when_positions_interleave() {
    let app = spawn_app().await;
    app.setup_hospital("BAKORD").await;
    let database = app.database_for("BAKORD");
    let mut conn = app.connect(&database).await;
    for statement in [
        "TRUNCATE audit_index",
        "INSERT INTO projection_checkpoints (projector) VALUES ('x'), ('y'), ('z') ON CONFLICT DO NOTHING",
    ] {
        sqlx::query(statement)
            .execute(&mut conn)
            .await
            .expect(statement);
    }
    // The log the hospital was created with is replaced by a synthetic one.
    sqlx::query("SET hms.log_repair = 'on'")
        .execute(&mut conn)
        .await
        .expect("repair");
    sqlx::query("DELETE FROM events")
        .execute(&mut conn)
        .await
        .expect("clear");
    // Commit order (transaction, position): 1, 2, 4, 3, 5 — a descent at 3.
    let log = [
        (9_000_100, 1),
        (9_000_100, 2),
        (9_000_101, 4),
        (9_000_102, 3),
        (9_000_103, 5),
    ];
    for (i, (tx, position)) in log.iter().enumerate() {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                                 payload, metadata, position, transaction_id) \
             OVERRIDING SYSTEM VALUE \
             VALUES ('t', $1, 1, 'E', '1', '{}', '{}', $2, $3::text::xid8)",
        )
        .bind(format!("s{i}"))
        .bind(position)
        .bind(tx.to_string())
        .execute(&mut conn)
        .await
        .expect("event");
        sqlx::query(
            "INSERT INTO audit_index (position, transaction_id, recorded_at, actor_id, actor_username, \
                                      actor_role, aggregate_type, aggregate_id, sequence, event_type, \
                                      event_version) \
             VALUES ($1, $2, now(), gen_random_uuid(), 'u', 'STAFF', 't', $3, 1, 'E', '1')",
        )
        .bind(position)
        .bind(tx)
        .bind(format!("s{i}"))
        .execute(&mut conn)
        .await
        .expect("audit row");
    }
    for (projector, tx, position) in [("x", 9_000_101, 4), ("y", 9_000_102, 3), ("z", 0, 0)] {
        sqlx::query(
            "UPDATE projection_checkpoints SET last_transaction_id = $2::text::xid8, last_position = $3 \
              WHERE projector = $1",
        )
        .bind(projector)
        .bind(tx.to_string())
        .bind(position)
        .execute(&mut conn)
        .await
        .expect("checkpoint");
    }
    sqlx::query("RESET hms.log_repair")
        .execute(&mut conn)
        .await
        .expect("reset");

    let ids = hms_app::tenancy::backup::rebase(&mut conn)
        .await
        .expect("rebased");
    assert_eq!(ids, 2, "two runs of increasing positions");
    let rebased: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT transaction_id::text::bigint, position FROM events ORDER BY transaction_id, position",
    )
    .fetch_all(&mut conn)
    .await
    .expect("log");
    assert_eq!(rebased, [(3, 1), (3, 2), (3, 4), (4, 3), (4, 5)]);
    let checkpoints: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT projector, last_transaction_id::text::bigint, last_position \
           FROM projection_checkpoints WHERE projector IN ('x', 'y', 'z') ORDER BY projector",
    )
    .fetch_all(&mut conn)
    .await
    .expect("checkpoints");
    assert_eq!(
        checkpoints,
        [("x".into(), 3, 4), ("y".into(), 4, 3), ("z".into(), 0, 0)]
    );
    let audit: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT transaction_id, position FROM audit_index ORDER BY transaction_id, position",
    )
    .fetch_all(&mut conn)
    .await
    .expect("audit index");
    assert_eq!(audit, rebased);
}
