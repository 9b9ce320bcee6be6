//! Shared support for the black-box tests: a real server on port 0 against real
//! PostgreSQL, with a platform database and tenant prefix of its own, and a small
//! GraphQL client. Every database a test made is dropped when its [`TestApp`] is
//! dropped, also when the test panicked.
//!
//! The server to use comes from `HMS_TEST_DATABASE_URL` (a URL of the server's
//! `postgres` database); `scripts/test` sets it. Set `TEST_LOG=1` to see server logs.

pub mod bench;
pub mod cluster;

pub mod fixtures;
pub mod load;
pub mod process;
pub mod proxy;

use std::sync::Once;

use hms_app::application::{Application, ServeSettings};
use hms_app::auth::password;
use hms_app::config::{Environment, PlatformConfig, Secret};
use hms_app::state::AppState;
use hms_app::tenancy::provisioning::{NewHospital, ProvisionOutcome};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::oneshot;
use uuid::Uuid;

pub const ADMIN_PASSWORD: &str = "correct horse battery";

/// The PostgreSQL server the tests use (its `postgres` database).
pub fn server_url() -> String {
    std::env::var("HMS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Read as the server reads its URLs (the same TLS policy).
pub fn server_options() -> PgConnectOptions {
    hms_app::tenancy::platform::parse_url(&server_url())
        .expect("HMS_TEST_DATABASE_URL is a postgres URL")
        .log_statements(tracing::log::LevelFilter::Trace)
}

fn init_logging() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("info,sqlx=warn")
                .with_test_writer()
                .try_init();
        }
    });
}

/// Knobs for one test's server.
#[derive(Debug, Clone)]
pub struct TestConfig {
    pub tenant_pool_size: u32,
    /// `HMS_TENANT_POOL_MAX` (`None`: the default).
    pub tenant_pool_max: Option<u32>,
    pub tenant_connection_budget: u32,
    pub production: bool,
    /// `HMS_TRUSTED_PROXIES`: peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<String>,
    /// `HMS_MAX_CONCURRENT_PASSWORD_HASHES` (`None`: the default).
    pub max_concurrent_hashes: Option<usize>,
    /// `HMS_REQUEST_BUDGET_PER_MINUTE` (`None`: the default).
    pub request_budget_per_minute: Option<u64>,
    /// `HMS_DRAIN_SECONDS`: how long a stopping server stays up, not ready (none by
    /// default, so that tests end at once).
    pub drain: std::time::Duration,
}

impl Default for TestConfig {
    fn default() -> Self {
        Self {
            tenant_pool_size: 2,
            tenant_pool_max: None,
            tenant_connection_budget: 8,
            production: false,
            trusted_proxies: Vec::new(),
            max_concurrent_hashes: None,
            request_budget_per_minute: None,
            drain: std::time::Duration::ZERO,
        }
    }
}

/// The tests' token-signing secret (32 bytes of `*`, i.e. `[42u8; 32]`), so a test can
/// mint tokens the server accepts.
pub const TEST_JWT_SECRET: &str = "********************************";

pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    pub state: AppState,
    pub config: PlatformConfig,
    /// Prefix of every database this test made.
    pub prefix: String,
    /// Whether dropping this app drops its databases (not for a second replica).
    owns_databases: bool,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// Starts a server with its own platform database and tenant prefix.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestConfig::default()).await
}

pub async fn spawn_app_with(test_config: TestConfig) -> TestApp {
    spawn_platform(server_options(), test_config, true).await
}

/// A server with a platform of its own on another PostgreSQL server (a private
/// cluster, see [`cluster`]); its databases go with that cluster.
pub async fn spawn_app_on(server: PgConnectOptions, test_config: TestConfig) -> TestApp {
    spawn_platform(server, test_config, false).await
}

async fn spawn_platform(
    server: PgConnectOptions,
    test_config: TestConfig,
    owns_databases: bool,
) -> TestApp {
    init_logging();
    let id = Uuid::new_v4().simple().to_string();
    let prefix = format!("hmst_{}_", &id[..12]);
    let mut control_url = server;
    // `__` cannot occur in a tenant database name (codes have no `_`).
    control_url = control_url.database(&format!("{prefix}_control"));
    let config = PlatformConfig {
        database_url: Secret::new(url_of(&control_url)),
        tenant_db_prefix: prefix.clone(),
        tenant_connection_budget: test_config.tenant_connection_budget,
        tenant_pool_size: test_config.tenant_pool_size,
        tenant_pool_max: test_config.tenant_pool_max,
        control_pool_size: 3,
        spare_databases: 0,
        environment: if test_config.production {
            Environment::Production
        } else {
            Environment::Development
        },
        tenant_role_password: None,
        master_key: None,
        master_key_previous: None,
    };
    start_server(config, prefix, &test_config, owns_databases).await
}

/// Starts a server on `config`'s platform; `owns_databases`: drop them with the app.
async fn start_server(
    config: PlatformConfig,
    prefix: String,
    test_config: &TestConfig,
    owns_databases: bool,
) -> TestApp {
    let settings = ServeSettings {
        jwt_secret: Some(Secret::new(TEST_JWT_SECRET)),
        token_ttl: chrono::Duration::minutes(15),
        production: test_config.production,
        max_concurrent_hashes: test_config.max_concurrent_hashes,
        request_budget_per_minute: test_config.request_budget_per_minute,
        background_work: true,
    };
    let application = Application::build(&config, &settings)
        .await
        .expect("platform starts")
        .without_workers();
    let state = application.state().clone();
    let options = hms_api::http::HttpOptions::new(true, &["https://front.example".to_owned()])
        .and_then(|o| o.with_trusted_proxies(&test_config.trusted_proxies))
        .expect("origins and proxies");
    let draining = options.draining.clone();
    let router = hms_api::http::app(state.clone(), options);
    let plan = hms_api::http::Shutdown {
        drain: test_config.drain,
        ..hms_api::http::Shutdown::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let address = format!("http://{}", listener.local_addr().expect("local addr"));
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = application
            .run(hms_api::http::run(
                listener,
                router,
                async {
                    let _ = rx.await;
                },
                draining,
                plan,
            ))
            .await;
    });
    TestApp {
        address,
        http: reqwest::Client::new(),
        state,
        config,
        prefix,
        owns_databases,
        shutdown: Some(tx),
        server: Some(server),
    }
}

/// The URL form of connect options (the tests' server has no password).
pub(crate) fn url_of(options: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres")
    )
}

impl TestApp {
    /// A second server (another "replica": its own process state) on this app's
    /// platform database and hospitals. Its databases stay when it is dropped.
    pub async fn spawn_replica(&self, test_config: TestConfig) -> TestApp {
        start_server(
            self.config.clone(),
            self.prefix.clone(),
            &test_config,
            false,
        )
        .await
    }

    /// Onboards a hospital the way `hms setup-hospital` does, with admin
    /// `<code lower>_admin` and [`ADMIN_PASSWORD`].
    pub async fn setup_hospital(&self, code: &str) -> String {
        let admin = format!("{}_admin", code.to_ascii_lowercase());
        let hash = password::hash(ADMIN_PASSWORD.to_owned())
            .await
            .expect("hash");
        self.setup_hospital_with_hash(code, &admin, hash).await;
        admin
    }

    pub async fn setup_hospital_with_hash(&self, code: &str, admin: &str, hash: String) {
        let request = NewHospital::parse(
            code,
            &format!("Hospital {code}"),
            "TRIAL",
            admin,
            &format!("{admin}@hospital.example"),
            "First Admin",
            hash,
        )
        .expect("valid hospital");
        let outcome = self
            .state
            .provisioner()
            .provision(&request)
            .await
            .expect("provisioning succeeds");
        assert!(matches!(outcome, ProvisionOutcome::Ready { .. }));
    }

    pub fn database_for(&self, code: &str) -> String {
        format!("{}{}", self.prefix, code.to_ascii_lowercase())
    }

    /// A connection to one of this test's databases (or any on the server).
    pub async fn connect(&self, database: &str) -> PgConnection {
        PgConnection::connect_with(&server_options().database(database))
            .await
            .expect("connect")
    }

    /// A connection holding projector `name`'s key in an open transaction on hospital
    /// `code`'s database, as another process's round holds it; [`release`] lets it go.
    pub async fn hold_projector(&self, code: &str, name: &str) -> PgConnection {
        let mut held = self.connect(&self.database_for(code)).await;
        sqlx::query("BEGIN")
            .execute(&mut held)
            .await
            .expect("begin");
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("hms.projector.{name}"))
            .execute(&mut held)
            .await
            .expect("lock");
        held
    }

    /// Names of this test's databases that exist now.
    pub async fn databases(&self) -> Vec<String> {
        let mut conn = self.connect("postgres").await;
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY datname",
        )
        .bind(&self.prefix)
        .fetch_all(&mut conn)
        .await
        .expect("list databases");
        rows
    }

    pub async fn post_graphql(&self, body: Value, token: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.address))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request is sent")
    }

    /// Runs a GraphQL document and returns the whole response body.
    pub async fn graphql(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        self.post_graphql(json!({ "query": query, "variables": variables }), token)
            .await
            .json()
            .await
            .expect("GraphQL answers JSON")
    }

    /// Logs in and returns the token, panicking with the response if that fails.
    pub async fn login(&self, hospital: Option<&str>, username: &str, password: &str) -> String {
        let response = self.login_response(hospital, username, password).await;
        response["data"]["login"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("login failed: {response}"))
            .to_owned()
    }

    pub async fn login_response(
        &self,
        hospital: Option<&str>,
        username: &str,
        password: &str,
    ) -> Value {
        self.graphql(
            "mutation($input: LoginInput!) { login(input: $input) { token expiresAt } }",
            json!({ "input": { "hospitalCode": hospital, "username": username, "password": password } }),
            None,
        )
        .await
    }
}

/// Waits (at most 30 s) until a session of `conn`'s database waits for a lock while
/// running a statement that starts with `statement`: how a test knows another session got
/// as far as a lock it holds back.
pub async fn until_waiting_for_a_lock(conn: &mut PgConnection, statement: &str) {
    for _ in 0..1500 {
        let waits: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
              WHERE datname = current_database() AND wait_event_type = 'Lock' \
                AND starts_with(query, $1))",
        )
        .bind(statement)
        .fetch_one(&mut *conn)
        .await
        .expect("pg_stat_activity");
        if waits {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no session ran {statement:?} waiting for a lock within 30 s");
}

/// The `extensions.code` of the first error, if any.
pub fn error_code(response: &Value) -> Option<&str> {
    response["errors"][0]["extensions"]["code"].as_str()
}

impl TestApp {
    /// Asks the server to stop, as SIGTERM does `hms serve`.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Whether the server task has ended.
    pub fn stopped(&self) -> bool {
        self.server.as_ref().is_none_or(|s| s.is_finished())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        if !self.owns_databases {
            return;
        }
        let prefix = self.prefix.clone();
        // Drop runs inside the test's runtime, possibly while unwinding: clean up on a
        // thread of its own with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(drop_databases(&prefix));
        });
        let _ = cleanup.join();
    }
}

/// Drops every database whose name starts with `prefix`, closing any connection to it,
/// and the platform's tenant writer role.
pub async fn drop_databases(prefix: &str) {
    let Ok(mut conn) = PgConnection::connect_with(&server_options()).await else {
        return;
    };
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
            .bind(prefix)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    for name in names {
        let _ = hms_app::tenancy::provisioning::drop_database(&mut conn, &name).await;
    }
    // The platform's tenant writer role, once nothing of it is left.
    if let Ok(naming) = hms_app::tenancy::TenantNaming::new(prefix) {
        let drop_role = format!("DROP ROLE IF EXISTS \"{}\"", naming.writer_role());
        let _ = sqlx::query(&drop_role).execute(&mut conn).await;
    }
    let _ = conn.close().await;
}

/// Ends the transaction of a connection from [`TestApp::hold_projector`]: the other round
/// is over, and its key free.
pub async fn release(held: &mut PgConnection) {
    sqlx::query("ROLLBACK")
        .execute(held)
        .await
        .expect("the other round ends");
}

/// Catches up every projector on `pool`, waiting out another catch-up that holds some of
/// them (this process's daemon, woken by the same writes): one `catch_up` leaves a busy
/// projector to its holder and returns before that holder has committed.
pub async fn settle(runner: &hms_projections::ProjectionRunner, pool: &sqlx::PgPool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let progress = runner.catch_up(pool).await.expect("catch up");
        if progress.iter().all(|p| !p.busy) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "projectors stayed busy: {progress:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
