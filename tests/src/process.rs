//! The real `hms` binary as a child process, for what only a process shows: its log
//! lines, its subcommands, how it dies. `scripts/test` builds the binary before the
//! tests run; `HMS_SERVER_BIN` names another one.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::{drop_databases, server_options, url_of};

/// Where the `hms` binary is: `HMS_SERVER_BIN`, else beside this test binary's
/// `deps/` folder (the same profile's `target/<profile>/hms`).
pub fn hms_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HMS_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let binary = profile.join("hms");
    assert!(
        binary.exists(),
        "{} is missing: build it first (`cargo build -p hms-api --bin hms`, as scripts/test does) or set HMS_SERVER_BIN",
        binary.display()
    );
    binary
}

/// A platform of its own (database prefix and control database), served by `hms`
/// processes started on it. Its databases are dropped with it (call [`Self::cleanup`]).
pub struct ProcessPlatform {
    pub prefix: String,
    pub database_url: String,
    pub jwt_secret: String,
    pub log_dir: PathBuf,
    /// The PostgreSQL server that holds the platform's databases.
    pub server: PgConnectOptions,
}

/// One running `hms serve`.
pub struct ServerProcess {
    pub address: String,
    pub child: Child,
    pub log: PathBuf,
}

impl ProcessPlatform {
    /// A platform on the shared test server.
    pub fn new() -> Self {
        Self::on_server(&server_options())
    }

    /// A platform on another server, e.g. a private [`crate::cluster::Cluster`] that a
    /// test may stop (its options; the database is ignored). Its databases go with that
    /// server: [`Self::cleanup`] drops databases on the shared test server only.
    pub fn on_server(server: &PgConnectOptions) -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let prefix = format!("hmsp_{}_", &id[..12]);
        let control = server.clone().database(&format!("{prefix}_control"));
        let log_dir = std::env::temp_dir().join(format!("{prefix}logs"));
        std::fs::create_dir_all(&log_dir).expect("log directory");
        Self {
            database_url: url_of(&control),
            jwt_secret: format!("{id}{id}"),
            log_dir,
            prefix,
            server: server.clone(),
        }
    }

    /// The platform ("control") database's name.
    pub fn control_database(&self) -> String {
        format!("{}_control", self.prefix)
    }

    /// The name of hospital `code`'s database.
    pub fn database_for(&self, code: &str) -> String {
        format!("{}{}", self.prefix, code.to_ascii_lowercase())
    }

    /// `hms ARGS` with this platform's environment (JSON logs), not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(hms_binary());
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.database_url)
            .env("HMS_TENANT_DB_PREFIX", &self.prefix)
            .env("HMS_SPARE_DATABASES", "0")
            .env("HMS_JWT_SECRET", &self.jwt_secret)
            .env("HMS_LOG_FORMAT", "json")
            .env("HMS_DRAIN_SECONDS", "0")
            .env("RUST_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs `hms ARGS` to the end; panics with its output unless it succeeds. Returns
    /// (stdout, stderr).
    pub async fn run(&self, args: &[&str]) -> (String, String) {
        let output = self.command(args).output().await.expect("hms runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "hms {args:?} failed: {stdout}\n{stderr}"
        );
        (stdout, stderr)
    }

    /// Starts `hms serve` on a free port, its standard error in a file of its own, and
    /// waits until it is ready.
    pub async fn serve(&self, extra_env: &[(&str, &str)]) -> ServerProcess {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = self.log_dir.join(format!("serve-{port}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = self.command(&["serve"]);
        command
            .env("HMS_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let child = command.spawn().expect("hms serve starts");
        let address = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..600 {
            if let Ok(r) = client.get(format!("{address}/readyz")).send().await {
                if r.status().is_success() {
                    return ServerProcess {
                        address,
                        child,
                        log,
                    };
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "hms serve did not become ready: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Drops every database of this platform (when it is on the shared test server)
    /// and its logs.
    pub async fn cleanup(&self) {
        let shared = server_options();
        if self.server.get_host() == shared.get_host()
            && self.server.get_port() == shared.get_port()
        {
            drop_databases(&self.prefix).await;
        }
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

impl Default for ProcessPlatform {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerProcess {
    /// SIGTERM, then waits for the process to end.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }

    /// SIGKILL (`kill -9`): the process ends at once, nothing of it runs after. Waits
    /// for it to be gone.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL is sent");
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One GraphQL request to this process; the whole answer.
    pub async fn graphql(
        &self,
        query: &str,
        variables: serde_json::Value,
        token: Option<&str>,
    ) -> serde_json::Value {
        graphql_at(&self.address, query, variables, token).await
    }

    /// A token for `username` of hospital `code` (a super administrator with `None`).
    pub async fn login(&self, code: Option<&str>, username: &str, password: &str) -> String {
        let answer = self
            .graphql(
                "mutation($i: LoginInput!) { login(input: $i) { token } }",
                serde_json::json!({ "i": { "hospitalCode": code, "username": username, "password": password } }),
                None,
            )
            .await;
        answer["data"]["login"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("sign-in of {username} to {code:?}: {answer}"))
            .to_owned()
    }
}

/// One GraphQL request to the server at `address` (`http://host:port`); the whole answer.
pub async fn graphql_at(
    address: &str,
    query: &str,
    variables: serde_json::Value,
    token: Option<&str>,
) -> serde_json::Value {
    let mut request = reqwest::Client::new()
        .post(format!("{address}/graphql"))
        .json(&serde_json::json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("a JSON answer")
}
