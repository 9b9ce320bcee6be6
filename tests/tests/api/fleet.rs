//! A fleet of database servers (`hms servers …`): hospitals placed on the platform's own
//! server and on a second PostgreSQL server (a private cluster of the test's own), served
//! by two `hms serve` processes, migrated and verified over both.

use clap::Parser;
use hms_tests::cluster::Cluster;
use hms_tests::process::ProcessPlatform;
use serde_json::json;
use sqlx::{Connection, PgConnection};

const PASSWORD: &str = "plum kettle orbit 4711";
/// The second server's URL carries a password (trust authentication ignores it): it
/// must never be printed.
const SECRET_IN_URL: &str = "fleet-secret-pw-93";

// The second server refuses connections without TLS (`Cluster::primary_with_tls`), so
// every path that reaches it — pools, provisioning, spares, `hms-replay`, and a move's
// `pg_dump`/`pg_restore` — is shown to use TLS with the URL's certificate check.

struct Fleet {
    platform: ProcessPlatform,
    second: Cluster,
}

impl Fleet {
    fn second_url(&self) -> String {
        format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            self.second_url_without_tls(),
            self.second.ca_file().display()
        )
    }

    fn second_url_without_tls(&self) -> String {
        format!(
            "postgres://postgres:{SECRET_IN_URL}@127.0.0.1:{}/postgres",
            self.second.port
        )
    }

    /// `hms ARGS`: (success, stdout + stderr).
    async fn hms(&self, args: &[&str]) -> (bool, String) {
        let output = self
            .platform
            .command(args)
            .output()
            .await
            .expect("hms runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !text.contains(SECRET_IN_URL),
            "hms {args:?} printed the server's password: {text}"
        );
        (output.status.success(), text)
    }

    async fn setup(&self, code: &str, server: Option<&str>) -> (bool, String) {
        let admin = format!("{}_admin", code.to_ascii_lowercase());
        let email = format!("{admin}@fleet.example");
        let mut args = vec![
            "setup-hospital",
            "--name",
            "Fleet Hospital",
            "--code",
            code,
            "--admin-username",
            &admin,
            "--admin-email",
            &email,
            "--admin-password",
            PASSWORD,
        ];
        if let Some(server) = server {
            args.extend(["--server", server]);
        }
        self.hms(&args).await
    }

    /// Databases of this platform on the second server.
    /// `hms move-hospital MOVA --to second --stop-after STEP`.
    async fn move_mova_pausing_after(&self, step: &str) -> (bool, String) {
        self.hms(&[
            "move-hospital",
            "MOVA",
            "--to",
            "second",
            "--stop-after",
            step,
        ])
        .await
    }

    async fn on_second(&self) -> Vec<String> {
        let mut conn = PgConnection::connect_with(&self.second.options("postgres"))
            .await
            .expect("connect to the second server");
        sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY datname",
        )
        .bind(&self.platform.prefix)
        .fetch_all(&mut conn)
        .await
        .expect("list")
    }

    /// `hms-replay verify --all`, which must find every log intact: its report.
    async fn verify_all(&self) -> String {
        let cli = hms_replay::Cli::try_parse_from([
            "hms-replay",
            "--database-url",
            &self.platform.database_url,
            "--tenant-db-prefix",
            &self.platform.prefix,
            "verify",
            "--all",
        ])
        .expect("a command line");
        let mut report = Vec::new();
        let outcome = hms_replay::run(cli, &mut report).await;
        let report = String::from_utf8_lossy(&report).into_owned();
        assert_eq!(
            outcome.expect("verify runs"),
            hms_replay::Outcome::Clean,
            "{report}"
        );
        report
    }

    /// The server the directory places `code` on.
    async fn server_of(&self, code: &str) -> String {
        let mut conn = PgConnection::connect_with(
            &self
                .platform
                .server
                .clone()
                .database(&self.platform.control_database()),
        )
        .await
        .expect("connect");
        sqlx::query_scalar("SELECT db_server FROM tenants WHERE code = $1")
            .bind(code)
            .fetch_one(&mut conn)
            .await
            .expect("a tenant")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hospitals_on_two_database_servers_are_placed_served_migrated_and_verified() {
    let fleet = Fleet {
        platform: ProcessPlatform::new(),
        second: Cluster::primary_with_tls().expect("a second PostgreSQL server"),
    };
    let result = tokio::spawn(run(fleet)).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn run(fleet: Fleet) {
    // The platform exists once a command ran; the second server is added to it.
    let (ok, out) = fleet.hms(&["servers", "list"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("default"), "{out}");
    let url = fleet.second_url();
    let (ok, out) = fleet
        .hms(&[
            "servers",
            "add",
            "second",
            &url,
            "--capacity",
            "10",
            "--budget",
            "2",
        ])
        .await;
    assert!(ok, "{out}");
    // Refusals, each without the URL's password in what is printed. On this machine a
    // server is reached without TLS unless the URL asks (which the second one refuses),
    // and a certificate is checked against the URL's CA, not any CA.
    let without_tls = fleet.second_url_without_tls();
    let unverifiable = format!("{without_tls}?sslmode=verify-full");
    for (args, expected) in [
        (
            vec!["servers", "add", "third", without_tls.as_str()],
            "no encryption",
        ),
        (
            vec!["servers", "add", "third", unverifiable.as_str()],
            "certificate",
        ),
        (
            vec!["servers", "add", "second", url.as_str()],
            "exists already",
        ),
        (
            vec!["servers", "add", "Bad_Name", url.as_str()],
            "not a server name",
        ),
        (
            vec![
                "servers",
                "add",
                "third",
                "mysql://root:fleet-secret-pw-93@db/x",
            ],
            "postgres://",
        ),
        (
            vec![
                "servers",
                "add",
                "third",
                "postgres://postgres:fleet-secret-pw-93@127.0.0.1:1/postgres",
            ],
            "cannot reach",
        ),
        (vec!["servers", "remove", "default"], "cannot be removed"),
        (
            vec!["servers", "remove", "nosuch"],
            "unknown database server",
        ),
    ] {
        let (ok, out) = fleet.hms(&args).await;
        assert!(!ok, "hms {args:?} should be refused: {out}");
        assert!(out.contains(expected), "hms {args:?}: {out}");
    }
    let (_, listed) = fleet.hms(&["servers", "list"]).await;
    let second_line = listed
        .lines()
        .find(|l| l.starts_with("second"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        second_line.contains(&format!("postgres@127.0.0.1:{}", fleet.second.port))
            && second_line.contains("verify-full"),
        "{second_line}"
    );
    let default_line = listed
        .lines()
        .find(|l| l.starts_with("default"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(default_line.contains(" off "), "{default_line}");

    // Placement: by name, then by policy (the platform's own server has far more room),
    // then around a draining server.
    let (ok, out) = fleet.setup("FLTA", Some("second")).await;
    assert!(ok, "{out}");
    let (ok, out) = fleet.setup("FLTB", None).await;
    assert!(ok, "{out}");
    assert_eq!(fleet.server_of("FLTA").await, "second");
    assert_eq!(fleet.server_of("FLTB").await, "default");
    let (ok, out) = fleet.hms(&["servers", "drain", "default"]).await;
    assert!(ok, "{out}");
    let (ok, out) = fleet.setup("FLTC", None).await;
    assert!(ok, "{out}");
    assert_eq!(fleet.server_of("FLTC").await, "second");
    let (ok, out) = fleet.setup("FLTX", Some("default")).await;
    assert!(!ok && out.contains("draining"), "{out}");
    let (ok, out) = fleet.setup("FLTY", Some("nosuch")).await;
    assert!(!ok && out.contains("unknown database server"), "{out}");
    let (ok, out) = fleet.hms(&["servers", "drain", "default", "--undo"]).await;
    assert!(ok, "{out}");
    let on_second = fleet.on_second().await;
    for code in ["flta", "fltc"] {
        assert!(
            on_second.contains(&fleet.platform.database_for(code)),
            "{code} on the second server: {on_second:?}"
        );
    }
    assert!(!on_second.contains(&fleet.platform.database_for("fltb")));
    let (ok, out) = fleet.hms(&["tenants"]).await;
    assert!(ok, "{out}");
    let line = |code: &str| {
        out.lines()
            .find(|l| l.starts_with(code))
            .unwrap_or_else(|| panic!("{code} listed: {out}"))
            .to_owned()
    };
    assert!(line("FLTA").contains(" second "), "{out}");
    assert!(line("FLTB").contains(" default "), "{out}");
    let (ok, out) = fleet.hms(&["servers", "remove", "second"]).await;
    assert!(!ok && out.contains("2 hospital(s)"), "{out}");

    // Two replicas, each with a pool of one connection per hospital: the second server's
    // budget of 2 holds one of its hospitals' pools and the watcher per replica.
    let (ok, out) = fleet
        .hms(&[
            "create-superadmin",
            "--username",
            "operator",
            "--email",
            "operator@fleet.example",
            "--password",
            PASSWORD,
        ])
        .await;
    assert!(ok, "{out}");
    let env = [("HMS_TENANT_POOL_SIZE", "1")];
    let a = fleet.platform.serve(&env).await;
    let b = fleet.platform.serve(&env).await;
    let operator = a.login(None, "operator", PASSWORD).await;
    let created = b.graphql("mutation($i: CreateHospitalInput!) { createHospital(input: $i) { code databaseServer } }",
        json!({ "i": { "code": "FLTD", "name": "Fleet D", "adminUsername": "fltd_admin",
                       "adminEmail": "fltd@fleet.example", "adminName": "D Admin",
                       "adminPassword": PASSWORD, "server": "second" } }),
        Some(&b.login(None, "operator", PASSWORD).await),
    )
    .await;
    assert_eq!(
        created["data"]["createHospital"]["databaseServer"], "second",
        "{created}"
    );
    let refused = a
        .graphql(
            "mutation($i: CreateHospitalInput!) { createHospital(input: $i) { code } }",
            json!({ "i": { "code": "FLTZ", "name": "Fleet Z", "adminUsername": "fltz_admin",
                       "adminEmail": "fltz@fleet.example", "adminName": "Z Admin",
                       "adminPassword": PASSWORD, "server": "nosuch" } }),
            Some(&operator),
        )
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "VALIDATION",
        "{refused}"
    );
    assert_eq!(
        refused["errors"][0]["extensions"]["field"], "server",
        "{refused}"
    );

    // Every hospital, through either replica: a patient registered on one is read on the
    // other.
    for code in ["FLTA", "FLTB", "FLTC", "FLTD"] {
        let admin = format!("{}_admin", code.to_ascii_lowercase());
        let token_a = a.login(Some(code), &admin, PASSWORD).await;
        let registered = a.graphql("mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id } }",
            json!({ "i": { "givenName": "Placed", "familyName": code, "dateOfBirth": "1970-05-05", "sex": "MALE" } }),
            Some(&token_a),
        )
        .await;
        let id = registered["data"]["registerPatient"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{code}: {registered}"))
            .to_owned();
        let token_b = b.login(Some(code), &admin, PASSWORD).await;
        let read = b
            .graphql(
                "query($id: UUID!) { patient(id: $id) { familyName } }",
                json!({ "id": id }),
                Some(&token_b),
            )
            .await;
        assert_eq!(
            read["data"]["patient"]["familyName"], code,
            "{code}: {read}"
        );
    }
    // Each replica holds at most its budget of connections on the second server.
    let mut conn = PgConnection::connect_with(&fleet.second.options("postgres"))
        .await
        .expect("connect");
    let connections: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE starts_with(datname, $1)")
            .bind(&fleet.platform.prefix)
            .fetch_one(&mut conn)
            .await
            .expect("count");
    assert!(
        connections <= 4,
        "two replicas with a budget of 2 on the second server hold {connections} connections there"
    );

    // Migration and verification cover both servers.
    let (ok, out) = fleet.hms(&["migrate"]).await;
    assert!(ok, "{out}");
    for code in ["flta", "fltc", "fltd"] {
        let name = format!("second/{}", fleet.platform.database_for(code));
        assert!(out.contains(&name), "{name} migrated: {out}");
    }
    assert!(out.contains(&fleet.platform.database_for("fltb")), "{out}");
    assert!(out.contains(" 0 failed"), "{out}");
    let report = fleet.verify_all().await;
    for code in ["FLTA", "FLTB", "FLTC", "FLTD"] {
        assert!(report.contains(code), "{code} verified: {report}");
    }
    drop((a, b));
    fleet.platform.cleanup().await;
}

/// `hms move-hospital`: interrupted after the copy and aborted, then moved under a write
/// load through two replicas, paused while writes are held (commands answer UNAVAILABLE)
/// and resumed: every acknowledged write is on the new server once, the log verifies,
/// the read models equal a rebuild, and the old database is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hospital_moves_to_another_server_under_load_and_loses_nothing() {
    let fleet = Fleet {
        platform: ProcessPlatform::new(),
        second: Cluster::primary_with_tls().expect("a second PostgreSQL server"),
    };
    let result = tokio::spawn(run_move(fleet)).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

const REGISTER: &str = "mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id } }";

/// Registers one patient of family `family` through the server at `address`: its id,
/// or the error's code.
async fn register(address: &str, token: &str, family: &str, given: &str) -> Result<String, String> {
    let answer = hms_tests::process::graphql_at(
        address,
        REGISTER,
        json!({ "i": { "givenName": given, "familyName": family,
                       "dateOfBirth": "1980-01-02", "sex": "FEMALE" } }),
        Some(token),
    )
    .await;
    match answer["data"]["registerPatient"]["id"].as_str() {
        Some(id) => Ok(id.to_owned()),
        None => Err(answer["errors"][0]["extensions"]["code"]
            .as_str()
            .map_or_else(|| answer.to_string(), str::to_owned)),
    }
}

async fn run_move(fleet: Fleet) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let url = fleet.second_url();
    let (ok, out) = fleet.hms(&["servers", "add", "second", &url]).await;
    assert!(ok, "{out}");
    // On a plan without a patient limit: the load registers hundreds.
    let (ok, out) = fleet
        .hms(&[
            "setup-hospital",
            "--name",
            "Moving Hospital",
            "--code",
            "MOVA",
            "--plan",
            "ENTERPRISE",
            "--admin-username",
            "mova_admin",
            "--admin-email",
            "mova@fleet.example",
            "--admin-password",
            PASSWORD,
        ])
        .await;
    assert!(ok, "{out}");
    // The write load below runs as fast as the servers answer; the request budget would
    // turn it away (RATE_LIMITED), which is not what this test is about.
    let unthrottled = [("HMS_REQUEST_BUDGET_PER_MINUTE", "1000000000000")];
    let a = fleet.platform.serve(&unthrottled).await;
    let b = fleet.platform.serve(&unthrottled).await;
    let token_a = a.login(Some("MOVA"), "mova_admin", PASSWORD).await;
    let token_b = b.login(Some("MOVA"), "mova_admin", PASSWORD).await;
    let mut acknowledged = Vec::new();
    for n in 0..20 {
        let id = register(&a.address, &token_a, "Loaded", &format!("seed{n}"))
            .await
            .expect("a patient");
        acknowledged.push(id);
    }

    // Refusals: an unknown server, the hospital's own, nothing to resume or abort.
    for (args, expected) in [
        (
            vec!["move-hospital", "MOVA", "--to", "nosuch"],
            "unknown database server",
        ),
        (
            vec!["move-hospital", "MOVA", "--to", "default"],
            "on default already",
        ),
        (vec!["move-hospital", "MOVA"], "not being moved"),
        (vec!["move-hospital", "MOVA", "--abort"], "not being moved"),
        (vec!["move-hospital", "NOSUCH", "--to", "second"], "NOSUCH"),
    ] {
        let (ok, out) = fleet.hms(&args).await;
        assert!(!ok && out.contains(expected), "hms {args:?}: {out}");
    }

    // Interrupted once the copy is made, and aborted: the copy goes, the hospital is
    // served where it was.
    let (ok, out) = fleet.move_mova_pausing_after("copied").await;
    assert!(ok && out.contains("paused"), "{out}");
    assert_eq!(
        fleet.on_second().await.len(),
        1,
        "the copy is on the second server"
    );
    let (ok, out) = fleet.hms(&["move-hospital", "MOVA", "--to", "third"]).await;
    assert!(!ok && out.contains("being moved to second"), "{out}");
    acknowledged.push(
        register(&b.address, &token_b, "Loaded", "during-copy")
            .await
            .expect("served"),
    );
    let (ok, out) = fleet.hms(&["move-hospital", "MOVA", "--abort"]).await;
    assert!(ok && out.contains("aborted"), "{out}");
    assert!(fleet.on_second().await.is_empty(), "the copy is dropped");
    assert_eq!(fleet.server_of("MOVA").await, "default");

    // Interrupted while writes are held, and aborted: writes are taken again. The hold
    // begins while an append is in flight, holding the log (an append with a new
    // patient's key locks the log, then the key table): the hold waits for it, and does
    // not hold the key table the append takes next (that was a deadlock).
    let source = fleet
        .platform
        .server
        .clone()
        .database(&fleet.platform.database_for("mova"));
    let mut writer = PgConnection::connect_with(&source).await.expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut writer)
        .await
        .expect("begin");
    sqlx::query("LOCK TABLE events IN ROW EXCLUSIVE MODE")
        .execute(&mut writer)
        .await
        .expect("the log, as an append takes it");
    let in_flight = async {
        let mut watch = PgConnection::connect_with(&source).await.expect("connect");
        hms_tests::until_waiting_for_a_lock(
            &mut watch,
            "CREATE OR REPLACE TRIGGER hms_writes_held",
        )
        .await;
        // Shorter than the deadlock check's second: the key table must be free now.
        sqlx::query("SET LOCAL lock_timeout = '300ms'")
            .execute(&mut writer)
            .await
            .expect("set");
        let keys = sqlx::query("LOCK TABLE patient_keys IN ROW EXCLUSIVE MODE")
            .execute(&mut writer)
            .await;
        sqlx::query("COMMIT")
            .execute(&mut writer)
            .await
            .expect("commit");
        keys
    };
    let ((ok, out), keys) = tokio::join!(fleet.move_mova_pausing_after("held"), in_flight);
    assert!(
        keys.is_ok(),
        "the append in flight takes the key table: {keys:?}"
    );
    assert!(ok && out.contains("paused"), "{out}");
    let held = register(&b.address, &token_b, "Refused", "held-then-aborted").await;
    assert_eq!(held, Err("UNAVAILABLE".to_owned()), "{held:?}");
    let (ok, out) = fleet.hms(&["move-hospital", "MOVA", "--abort"]).await;
    assert!(ok && out.contains("aborted"), "{out}");
    acknowledged.push(
        register(&b.address, &token_b, "Loaded", "after-abort")
            .await
            .expect("writes are taken again"),
    );
    assert!(fleet.on_second().await.is_empty(), "the copy is dropped");

    // A write load through both replicas for the whole move; refusals are retried.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (w, (server, token)) in [
        (&a, &token_a),
        (&b, &token_b),
        (&a, &token_a),
        (&b, &token_b),
    ]
    .into_iter()
    .enumerate()
    {
        let stop = stop.clone();
        let (address, token) = (server.address.clone(), token.clone());
        workers.push(tokio::spawn(async move {
            let (mut ids, mut refusals) = (Vec::new(), Vec::new());
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                match register(&address, &token, "Loaded", &format!("w{w}n{n}")).await {
                    Ok(id) => ids.push(id),
                    Err(code) => {
                        refusals.push(code);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
                n += 1;
            }
            (ids, refusals)
        }));
    }
    // A transaction of another database keeps the source cluster's xmin back through
    // the copy (as other work on a shared server does): the hospital's read models and
    // seals, which wait only for its own transactions, move past that xmin, and the copy
    // must reach as far as they do, or the rounds would bring events they applied already.
    let mut pin = PgConnection::connect_with(&hms_tests::server_options().database("postgres"))
        .await
        .expect("connect");
    sqlx::query("BEGIN").execute(&mut pin).await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut pin)
        .await
        .expect("an xid");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (ok, out) = fleet.move_mova_pausing_after("held").await;
    sqlx::query("ROLLBACK")
        .execute(&mut pin)
        .await
        .expect("rollback");
    assert!(ok && out.contains("writes held on the source"), "{out}");
    // While held, a command is told to retry.
    let held = register(&a.address, &token_a, "Refused", "while-held").await;
    assert_eq!(held, Err("UNAVAILABLE".to_owned()), "{held:?}");
    // Resumed, and interrupted once switched: the new server serves, the source is kept
    // until the move is resumed once more.
    let (ok, out) = fleet
        .hms(&["move-hospital", "MOVA", "--stop-after", "switched"])
        .await;
    assert!(
        ok && out.contains("switched: the directory names the new server"),
        "{out}"
    );
    assert_eq!(fleet.server_of("MOVA").await, "second");
    let (ok, out) = fleet.hms(&["move-hospital", "MOVA", "--abort"]).await;
    assert!(!ok && out.contains("on second already"), "{out}");
    let (ok, out) = fleet.hms(&["move-hospital", "MOVA"]).await;
    assert!(ok && out.contains("moved from default to second"), "{out}");
    assert!(out.contains("the source database is dropped"), "{out}");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let mut refusals = Vec::new();
    let mut loaded = 0;
    for worker in workers {
        let (ids, refused) = worker.await.expect("a worker");
        loaded += ids.len();
        acknowledged.extend(ids);
        refusals.extend(refused);
    }
    assert!(loaded > 20, "the load went on through the move: {loaded}");
    assert!(
        refusals.iter().all(|code| code == "UNAVAILABLE"),
        "refusals are retryable: {refusals:?}"
    );
    assert_eq!(fleet.server_of("MOVA").await, "second");
    let database = fleet.platform.database_for("mova");
    assert_eq!(fleet.on_second().await, vec![database.clone()]);
    let mut here = PgConnection::connect_with(&fleet.platform.server.clone().database("postgres"))
        .await
        .expect("connect");
    let left: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&database)
            .fetch_one(&mut here)
            .await
            .expect("look");
    assert!(!left, "the source database is dropped");

    // Every acknowledged write, once, on the new server, read through either replica.
    let owner = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(fleet.second.options(&database))
        .await
        .expect("the moved database");
    let runner = hms_projections::runner::ProjectionRunner::new(hms_projections::projectors::all());
    crate::projections::drain(&owner, &runner).await;
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM patients WHERE family_name = 'Loaded' ORDER BY id",
    )
    .fetch_all(&owner)
    .await
    .expect("patients");
    let mut expected = acknowledged.clone();
    expected.sort();
    let missing: Vec<&String> = expected.iter().filter(|id| !stored.contains(id)).collect();
    let extra: Vec<&String> = stored.iter().filter(|id| !expected.contains(id)).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && stored.len() == expected.len(),
        "every acknowledged patient once, nothing else: {} stored, {} acknowledged, missing {missing:?}, not acknowledged {extra:?}",
        stored.len(),
        expected.len()
    );
    for (server, token) in [(&a, &token_a), (&b, &token_b)] {
        let read = server
            .graphql(
                "query($id: UUID!) { patient(id: $id) { familyName } }",
                json!({ "id": acknowledged.last() }),
                Some(token),
            )
            .await;
        assert_eq!(read["data"]["patient"]["familyName"], "Loaded", "{read}");
    }
    // Those reads recorded views, which the read models follow (docs/adr/0011).
    crate::projections::drain(&owner, &runner).await;
    let live = crate::projections::checksums(&owner, &runner).await;
    for projector in runner.rebuildable() {
        hms_projections::rebuild::rebuild(&owner, projector, true, &mut |_| {})
            .await
            .expect("rebuild");
    }
    assert_eq!(live, crate::projections::checksums(&owner, &runner).await);
    owner.close().await;
    fleet.verify_all().await;
    drop((a, b));
    fleet.platform.cleanup().await;
}
