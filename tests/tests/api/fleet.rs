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

struct Fleet {
    platform: ProcessPlatform,
    second: Cluster,
}

impl Fleet {
    fn second_url(&self) -> String {
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
        second: Cluster::primary().expect("a second PostgreSQL server"),
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
    // Refusals, each without the URL's password in what is printed.
    for (args, expected) in [
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
        second_line.contains(&format!("postgres@127.0.0.1:{}", fleet.second.port)),
        "{second_line}"
    );

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
    let cli = hms_replay::Cli::try_parse_from([
        "hms-replay",
        "--database-url",
        &fleet.platform.database_url,
        "--tenant-db-prefix",
        &fleet.platform.prefix,
        "verify",
        "--all",
    ])
    .expect("a command line");
    let mut report = Vec::new();
    let outcome = hms_replay::run(cli, &mut report).await;
    let report = String::from_utf8_lossy(&report);
    assert_eq!(
        outcome.expect("verify runs"),
        hms_replay::Outcome::Clean,
        "{report}"
    );
    for code in ["FLTA", "FLTB", "FLTC", "FLTD"] {
        assert!(report.contains(code), "{code} verified: {report}");
    }
    drop((a, b));
    fleet.platform.cleanup().await;
}
