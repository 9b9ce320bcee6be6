//! The benchmarks' client side (`tests/benches/commands.rs`, `fleet.rs`): a release `hms`
//! started as a process, a GraphQL client signed in to a hospital, and a closed-loop load
//! generator that reports requests/s and latency percentiles.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

pub const PASSWORD: &str = "bench password 123";
pub const SECRET: &str = "bench-secret-bench-secret-bench-secret";

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The server binary: `HMS_BENCH_SERVER`, or this workspace's release build (built here).
pub fn server_binary() -> anyhow::Result<String> {
    if let Ok(path) = std::env::var("HMS_BENCH_SERVER") {
        return Ok(path);
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-q", "-p", "hms-api", "--bin", "hms"])
        .current_dir(root)
        .status()
        .context("Failed to build the server")?;
    if !status.success() {
        bail!("building the server failed");
    }
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{root}/target"));
    Ok(format!("{target}/release/hms"))
}

/// `hms ARGS` on the platform database `control_url`, tenant databases named `prefix…`.
pub fn hms(binary: &str, control_url: &str, prefix: &str, args: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command
        .args(args)
        .env("DATABASE_URL", control_url)
        .env("HMS_TENANT_DB_PREFIX", prefix)
        .env("HMS_SPARE_DATABASES", "0")
        .env("HMS_JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    command
}

/// A running `hms serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    /// Its GraphQL endpoint.
    pub url: String,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `command` (an `hms serve`) on a free port and waits for `/healthz`.
    pub async fn start(mut command: Command, http: &reqwest::Client) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = command
            .env("HMS_LISTEN", format!("127.0.0.1:{port}"))
            .spawn()
            .context("Failed to start hms serve")?;
        let base = format!("http://127.0.0.1:{port}");
        let server = Server {
            child,
            url: format!("{base}/graphql"),
            base,
        };
        let started = Instant::now();
        while http
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .is_err()
        {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "the server did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(server)
    }

    /// Peak resident memory of the server process so far, in MB.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        self.memory_mb("VmHWM:")
    }

    /// Resident memory of the server process now, in MB.
    pub fn rss_mb(&self) -> Option<f64> {
        self.memory_mb("VmRSS:")
    }

    fn memory_mb(&self, field: &str) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    pub fn print_memory(&self, when: &str) {
        match (self.rss_mb(), self.peak_rss_mb()) {
            (Some(now), Some(peak)) => {
                println!("server RSS {when}: {now:.0} MB (peak so far {peak:.0} MB)")
            }
            _ => println!("server RSS {when}: unknown"),
        }
    }
}

/// A GraphQL client, signed in or not.
pub struct Api {
    pub http: reqwest::Client,
    pub url: String,
    pub token: String,
}

impl Api {
    pub fn anonymous(http: reqwest::Client, url: &str) -> Api {
        Api {
            http,
            url: url.to_owned(),
            token: String::new(),
        }
    }

    /// `username` of hospital `code` (a super administrator with `None`), signed in.
    pub async fn login(
        http: reqwest::Client,
        url: &str,
        code: Option<&str>,
        username: &str,
    ) -> anyhow::Result<Api> {
        let api = Api::anonymous(http, url);
        let login = api
            .call(
                "mutation($i: LoginInput!) { login(input: $i) { token } }",
                json!({ "i": { "hospitalCode": code, "username": username, "password": PASSWORD } }),
            )
            .await?;
        let token = login["login"]["token"]
            .as_str()
            .context("a token")?
            .to_owned();
        Ok(Api { token, ..api })
    }

    /// One GraphQL call; an answer with errors is an error.
    pub async fn call(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .post(&self.url)
            .json(&json!({ "query": query, "variables": variables }));
        if !self.token.is_empty() {
            request = request.bearer_auth(&self.token);
        }
        let body: Value = request.send().await?.json().await?;
        if !body["errors"].is_null() {
            bail!("{}", body["errors"]);
        }
        Ok(body["data"].clone())
    }
}

/// Registers patient number `n`; returns its id.
pub async fn register(api: &Api, n: u64) -> anyhow::Result<String> {
    let data = api
        .call(
            "mutation($i: RegisterPatientInput!) { registerPatient(input: $i) { id } }",
            json!({ "i": { "givenName": format!("Bench{n}"), "familyName": "Bench",
                           "dateOfBirth": "1980-01-01", "sex": "FEMALE" } }),
        )
        .await?;
    Ok(data["registerPatient"]["id"]
        .as_str()
        .context("a patient id")?
        .to_owned())
}

/// What [`measure`] saw.
pub struct Measured {
    pub ok: usize,
    pub errors: usize,
    pub elapsed: Duration,
    /// Latencies of successful requests, sorted.
    pub latencies: Vec<Duration>,
    pub first_error: Option<String>,
}

impl Measured {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p` quantile of the latencies, in ms.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        self.latencies[i].as_secs_f64() * 1000.0
    }

    /// One table row (see [`print_header`]), with the ratio to `against` when given.
    pub fn print(&self, name: &str, clients: usize, against: Option<f64>) {
        let ratio = against.map_or("-".into(), |base| {
            format!("{:.1} %", 100.0 * self.rate() / base)
        });
        println!(
            "{name:<30} {clients:>7} {:>9.0} {:>9.1} {:>9.1} {:>7} {ratio:>8}",
            self.rate(),
            self.percentile(0.50),
            self.percentile(0.99),
            self.errors
        );
        if let Some(e) = &self.first_error {
            println!(
                "    first error: {}",
                e.chars().take(200).collect::<String>()
            );
        }
    }
}

/// The header of [`Measured::print`]'s rows; `ratio` names the last column.
pub fn print_header(ratio: &str) {
    println!(
        "{:<30} {:>7} {:>9} {:>9} {:>9} {:>7} {:>8}",
        "workload", "clients", "req/s", "p50 ms", "p99 ms", "errors", ratio
    );
}

/// Runs `op` from `clients` concurrent loops for `duration`.
pub async fn measure<F, Fut>(clients: usize, duration: Duration, op: F) -> Measured
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                let mut first_error = None;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match op().await {
                        Ok(()) => latencies.push(t.elapsed()),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let mut all = Measured {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        first_error: None,
    };
    for task in tasks {
        if let Ok((latencies, errors, first_error)) = task.await {
            all.latencies.extend(latencies);
            all.errors += errors;
            if all.first_error.is_none() {
                all.first_error = first_error;
            }
        }
    }
    all.elapsed = started.elapsed();
    all.ok = all.latencies.len();
    all.latencies.sort();
    all
}

/// CPU seconds used by the server processes, this process, and everything else on the
/// machine (PostgreSQL, in a benchmark run), from `/proc`.
pub struct CpuTimes {
    pub server: f64,
    pub bench: f64,
    pub rest: f64,
}

impl CpuTimes {
    pub fn now(server_pids: &[u32]) -> CpuTimes {
        let ticks = 100.0; // USER_HZ on Linux
        let process = |path: String| -> f64 {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|stat| {
                    // Fields after the command name (which may hold spaces): utime is the
                    // 12th, stime the 13th after ") ".
                    let rest = stat.rsplit_once(") ")?.1.to_owned();
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    let utime: f64 = fields.get(11)?.parse().ok()?;
                    let stime: f64 = fields.get(12)?.parse().ok()?;
                    Some((utime + stime) / ticks)
                })
                .unwrap_or(0.0)
        };
        let busy = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| {
                let line = stat.lines().next()?.to_owned();
                let v: Vec<f64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                // user nice system idle iowait irq softirq steal
                Some((v.iter().sum::<f64>() - v.get(3)? - v.get(4)?) / ticks)
            })
            .unwrap_or(0.0);
        let server = server_pids
            .iter()
            .map(|pid| process(format!("/proc/{pid}/stat")))
            .sum::<f64>();
        let bench = process("/proc/self/stat".to_owned());
        CpuTimes {
            server,
            bench,
            rest: busy - server - bench,
        }
    }

    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            server: self.server - earlier.server,
            bench: self.bench - earlier.bench,
            rest: self.rest - earlier.rest,
        }
    }

    /// `    CPU per request: <server> … ms, this bench … ms, the rest (PostgreSQL) … ms`.
    pub fn print_per_request(&self, requests: usize, server: &str) {
        let per_request = |seconds: f64| 1000.0 * seconds / requests.max(1) as f64;
        println!(
            "    CPU per request: {server} {:.2} ms, this bench {:.2} ms, the rest (PostgreSQL) {:.2} ms",
            per_request(self.server),
            per_request(self.bench),
            per_request(self.rest)
        );
    }
}

/// Raw PostgreSQL's minimal command, as the benches compare against it: read a stream of 10
/// rows of `bench_raw` ...
pub const RAW_READ: &str = "SELECT * FROM bench_raw WHERE stream = 'read' ORDER BY sequence";
/// ... then append one row in a transaction (the new stream's name is the parameter).
pub const RAW_APPEND: &str = "INSERT INTO bench_raw VALUES ($1, 1, '{\"k\": 1}')";
