//! Many hospitals on one platform: onboarding through `createHospital` (20 at a time,
//! spare databases on), then `registerPatient` from a fixed number of clients spread
//! over a few hospitals and over all of them, in one run; by default over two database
//! servers (the test server and a private cluster started here, with `fsync = off`)
//! and two `hms serve` replicas, each with a budget of 40 connections per server.
//!
//! Run: `cargo bench -p hms-tests --bench fleet` (uses HMS_TEST_DATABASE_URL).
//! - `HMS_BENCH_HOSPITALS` (default 1000), `HMS_BENCH_SECONDS` per load (default 10),
//!   `HMS_BENCH_CLIENTS` (default 32), `HMS_BENCH_FEW` (default 8) hospitals for the
//!   concentrated load; `HMS_BENCH_SERVERS` (1 or 2, default 2) database servers and
//!   `HMS_BENCH_REPLICAS` (default 2) replicas, requests spread round-robin over them;
//!   `HMS_BENCH_SERVER` as for the commands bench.
//!
//! Prints hospitals/s onboarded and errors; for each load requests/s, p50/p99, errors,
//! the ratio of the spread load to the concentrated one, and the most connections the
//! hospital databases had at once on each server (sampled from `pg_stat_activity` every
//! 100 ms); and each replica's peak RSS. With two servers, then a live move
//! (`hms move-hospital`) of one hospital whose log is first filled to
//! `HMS_BENCH_MOVE_EVENTS` (default 100,000) events, under 4 clients writing to it: the
//! writes-held window and total time it prints, and what the clients saw. Also, as the
//! floor under the spread-to-few ratio, raw PostgreSQL (read 10 + append 1) over the few
//! hospital databases through connections kept open and over all of them with a new
//! connection per request (8 clients: the servers' connection limits allow no more).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use hms_tests::cluster::Cluster;
use hms_tests::load::{
    env_or, hms, measure, print_header, register, server_binary, Api, CpuTimes, Measured, Server,
    PASSWORD, RAW_APPEND, RAW_READ,
};
use hms_tests::{drop_databases, server_options};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::Connection;
use uuid::Uuid;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let prefix = format!("hmsfl_{}_", &Uuid::new_v4().simple().to_string()[..8]);
    let result = run(&prefix).await;
    drop_databases(&prefix).await;
    result
}

async fn run(prefix: &str) -> anyhow::Result<()> {
    let binary = server_binary()?;
    let hospitals: usize = env_or("HMS_BENCH_HOSPITALS", 1000);
    let seconds: u64 = env_or("HMS_BENCH_SECONDS", 10);
    let clients: usize = env_or("HMS_BENCH_CLIENTS", 32);
    let few: usize = env_or::<usize>("HMS_BENCH_FEW", 8).min(hospitals);
    let second_server = env_or::<usize>("HMS_BENCH_SERVERS", 2) >= 2;
    let replicas: usize = env_or::<usize>("HMS_BENCH_REPLICAS", 2).max(1);
    let server = server_options();
    let control_url = format!(
        "postgres://{}@{}:{}/{prefix}_control",
        server.get_username(),
        server.get_host(),
        server.get_port()
    );

    let status = hms(
        &binary,
        &control_url,
        prefix,
        &[
            "create-superadmin",
            "--username",
            "operator",
            "--email",
            "operator@bench.example",
            "--password",
            PASSWORD,
        ],
    )
    .status()?;
    anyhow::ensure!(status.success(), "hms create-superadmin failed");
    let mut watched: Vec<(String, PgConnectOptions)> = vec![("default".into(), server_options())];
    let cluster = if second_server {
        let cluster = Cluster::primary()?;
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
        let status = hms(
            &binary,
            &control_url,
            prefix,
            &["servers", "add", "second", &url, "--capacity", "100000"],
        )
        .status()?;
        anyhow::ensure!(status.success(), "hms servers add failed");
        watched.push(("second".into(), cluster.options("postgres")));
        Some(cluster)
    } else {
        None
    };

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    // At most 80 connections per database server, all replicas together.
    let budget = (80 / replicas).to_string();
    let mut servers = Vec::new();
    for _ in 0..replicas {
        let mut serve = hms(&binary, &control_url, prefix, &["serve"]);
        serve
            .env("HMS_SPARE_DATABASES", "4")
            .env("HMS_TENANT_CONNECTION_BUDGET", &budget)
            .env("HMS_REQUEST_BUDGET_PER_MINUTE", "1000000000000");
        servers.push(Server::start(serve, &http).await?);
    }
    println!(
        "{} database server(s), {replicas} replica(s), a budget of {budget} connections per server each",
        watched.len()
    );
    let server = &servers[0];
    let operator = Arc::new(Api::login(http.clone(), &server.url, None, "operator").await?);

    // Onboarding, 20 at a time.
    let codes: Vec<String> = (0..hospitals).map(|h| format!("FLEET{h:05}")).collect();
    let started = Instant::now();
    let failures: Vec<String> = stream::iter(codes.clone())
        .map(|code| {
            let operator = operator.clone();
            async move {
                operator
                    .call(
                        "mutation($i: CreateHospitalInput!) { createHospital(input: $i) { code } }",
                        json!({ "i": { "code": code, "name": format!("Fleet {code}"), "plan": "ENTERPRISE",
                                       "adminUsername": "bench_admin", "adminEmail": "admin@bench.example",
                                       "adminName": "Bench Admin", "adminPassword": PASSWORD } }),
                    )
                    .await
                    .err()
                    .map(|e| format!("{code}: {e}"))
            }
        })
        .buffer_unordered(20)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    let took = started.elapsed().as_secs_f64();
    println!(
        "onboarded {} hospitals in {took:.1} s ({:.1} hospitals/s), {} error(s)",
        hospitals - failures.len(),
        (hospitals - failures.len()) as f64 / took,
        failures.len()
    );
    if let Some(first) = failures.first() {
        println!(
            "    first error: {}",
            first.chars().take(300).collect::<String>()
        );
    }
    print_memory(&servers, "after onboarding");

    // One signed-in administrator per hospital (not measured); the server verifies a
    // few passwords at once and turns the rest away, so sign-ins are retried.
    let sign_in = |code: String| {
        let http = http.clone();
        let url = server.url.clone();
        async move {
            let mut attempt = 0;
            loop {
                match Api::login(http.clone(), &url, Some(&code), "bench_admin").await {
                    Err(e) if attempt < 50 && e.to_string().contains("RATE_LIMITED") => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => return other,
                }
            }
        }
    };
    let signed_in: Vec<Api> = stream::iter(codes.iter().cloned())
        .map(sign_in)
        .buffered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<Api>>>()?;
    // The same tokens on every replica: apis[replica][hospital].
    let apis: Vec<Vec<Arc<Api>>> = servers
        .iter()
        .map(|s| {
            signed_in
                .iter()
                .map(|a| {
                    Arc::new(Api {
                        http: a.http.clone(),
                        url: s.url.clone(),
                        token: a.token.clone(),
                    })
                })
                .collect()
        })
        .collect();
    let apis = Arc::new(apis);
    print_memory(&servers, "after signing in to every hospital");

    let duration = Duration::from_secs(seconds);
    let serial = Arc::new(AtomicU64::new(1));
    let load = |spread: usize| {
        let apis = apis.clone();
        let serial = serial.clone();
        move || {
            let s = serial.fetch_add(1, Ordering::Relaxed);
            // A different hospital for every request, in an order that does not repeat a
            // short cycle (7919 is prime, so all `spread` hospitals are visited).
            let replica = &apis[s as usize % apis.len()];
            let api = replica[(s.wrapping_mul(7919) % spread as u64) as usize].clone();
            async move { register(&api, s).await.map(drop) }
        }
    };
    print_header("vs few");
    let mut rows: Vec<(String, Measured, u32)> = Vec::new();
    // Rotating order: few, all, few, all.
    for (round, spread) in [few, hospitals, few, hospitals].into_iter().enumerate() {
        let mut watches = Vec::new();
        for (_, options) in &watched {
            watches.push(ConnectionWatch::start(options.clone(), prefix).await?);
        }
        let pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();
        let cpu = CpuTimes::now(&pids);
        let measured = measure(clients, duration, load(spread)).await;
        let cpu = CpuTimes::now(&pids).since(&cpu);
        let mut per_server = Vec::new();
        for ((name, _), watch) in watched.iter().zip(watches) {
            per_server.push(format!("{name} {}", watch.stop().await));
        }
        let peak = per_server
            .iter()
            .filter_map(|p| p.rsplit(' ').next()?.parse::<u32>().ok())
            .max()
            .unwrap_or(0);
        let few_rate = rows
            .iter()
            .filter(|(name, _, _)| name.starts_with("few"))
            .map(|(_, m, _)| m.rate())
            .next_back();
        let name = if spread == few {
            format!("few: {spread} hospitals")
        } else {
            format!("all: {spread} hospitals")
        };
        measured.print(&name, clients, if spread == few { None } else { few_rate });
        println!(
            "    round {round}: at most {} connections to hospital databases",
            per_server.join(", ")
        );
        cpu.print_per_request(measured.ok, "replicas");
        rows.push((name, measured, peak));
    }
    let rate = |prefix: &str| {
        let rates: Vec<f64> = rows
            .iter()
            .filter(|(n, _, _)| n.starts_with(prefix))
            .map(|(_, m, _)| m.rate())
            .collect();
        rates.iter().sum::<f64>() / rates.len().max(1) as f64
    };
    println!(
        "registerPatient over {hospitals} hospitals: {:.0} req/s, {:.1} % of the same load over {few} ({:.0} req/s); \
         at most {} connections to one server's hospital databases",
        rate("all"),
        100.0 * rate("all") / rate("few"),
        rate("few"),
        rows.iter().map(|(_, _, c)| *c).max().unwrap_or(0)
    );
    raw_floor(
        prefix,
        &watched,
        &codes,
        few,
        duration,
        rate("few"),
        rate("all"),
    )
    .await?;
    if let Some(cluster) = &cluster {
        let events: i64 = env_or("HMS_BENCH_MOVE_EVENTS", 100_000);
        move_under_load(
            &binary,
            &control_url,
            prefix,
            cluster,
            &codes[0],
            &apis[0][0],
            events,
        )
        .await?;
    }
    print_memory(&servers, "at the end");
    drop(servers);
    drop(cluster);
    Ok(())
}

/// How many clients the raw comparison runs: the replicas' pools may hold 80 connections
/// per server by then, and the test server allows 100.
const RAW_CLIENTS: usize = 8;

/// Raw PostgreSQL doing what a command minimally does (read a 10-row stream, append one
/// row in a transaction) in the same hospital databases, in the same run: over the `few`
/// hospitals through connections kept open, and over all of them with a new connection
/// per request, which is what a load spread over more databases than a server's
/// connection budget mostly meets (a backend serves one database). Their ratio is the
/// floor under the spread-to-few ratio above.
async fn raw_floor(
    prefix: &str,
    watched: &[(String, PgConnectOptions)],
    codes: &[String],
    few: usize,
    duration: Duration,
    api_few: f64,
    api_all: f64,
) -> anyhow::Result<()> {
    let control = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(server_options().database(&format!("{prefix}_control")))
        .await?;
    let placed: Vec<(String, String, String)> =
        sqlx::query_as("SELECT code, database_name, db_server FROM tenants WHERE code = ANY($1)")
            .bind(codes)
            .fetch_all(&control)
            .await?;
    control.close().await;
    // Each hospital database as its owner, in the order of `codes`.
    let mut databases = Vec::new();
    for code in codes {
        let (_, database, server) = placed
            .iter()
            .find(|(c, _, _)| c == code)
            .ok_or_else(|| anyhow::anyhow!("{code} is not in the directory"))?;
        let (_, options) = watched
            .iter()
            .find(|(name, _)| name == server)
            .ok_or_else(|| anyhow::anyhow!("{code} is on an unknown server {server}"))?;
        databases.push(options.clone().database(database));
    }
    let failed: Vec<String> = stream::iter(databases.clone())
        .map(|options| async move {
            let mut conn = sqlx::PgConnection::connect_with(&options).await?;
            sqlx::raw_sql(
                "CREATE TABLE bench_raw (stream text, sequence bigint, payload jsonb, \
                 PRIMARY KEY (stream, sequence)); \
                 INSERT INTO bench_raw SELECT 'read', n, '{\"k\": 1}' FROM generate_series(1, 10) n",
            )
            .execute(&mut conn)
            .await?;
            conn.close().await?;
            anyhow::Ok(())
        })
        .buffer_unordered(RAW_CLIENTS)
        .filter_map(|r| async move { r.err().map(|e| e.to_string()) })
        .collect()
        .await;
    anyhow::ensure!(failed.is_empty(), "raw set-up failed: {failed:?}");

    async fn read_and_append(conn: &mut sqlx::PgConnection, s: u64) -> anyhow::Result<()> {
        sqlx::query(RAW_READ).fetch_all(&mut *conn).await?;
        let mut tx = conn.begin().await?;
        sqlx::query(RAW_APPEND)
            .bind(format!("w{s}"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
    let serial = Arc::new(AtomicU64::new(1));
    // Over the few, through pools kept open (the clients share them).
    let mut pools = Vec::new();
    for options in &databases[..few] {
        pools.push(
            PgPoolOptions::new()
                .max_connections(RAW_CLIENTS.div_ceil(few) as u32)
                .connect_with(options.clone())
                .await?,
        );
    }
    let pools = Arc::new(pools);
    let warm = {
        let (pools, serial) = (pools.clone(), serial.clone());
        measure(RAW_CLIENTS, duration, move || {
            let (pools, s) = (pools.clone(), serial.fetch_add(1, Ordering::Relaxed));
            async move {
                let pool = &pools[(s.wrapping_mul(7919) % pools.len() as u64) as usize];
                read_and_append(&mut *pool.acquire().await?, s).await
            }
        })
        .await
    };
    for pool in pools.iter() {
        pool.close().await;
    }
    // Over all of them, a new connection per request.
    let databases = Arc::new(databases);
    let cold = {
        let (databases, serial) = (databases.clone(), serial.clone());
        measure(RAW_CLIENTS, duration, move || {
            let (databases, s) = (databases.clone(), serial.fetch_add(1, Ordering::Relaxed));
            async move {
                let options = &databases[(s.wrapping_mul(7919) % databases.len() as u64) as usize];
                let mut conn = sqlx::PgConnection::connect_with(options).await?;
                read_and_append(&mut conn, s).await?;
                conn.close().await?;
                Ok(())
            }
        })
        .await
    };
    warm.print(
        &format!("raw: {few} hospitals, kept open"),
        RAW_CLIENTS,
        None,
    );
    cold.print(
        &format!("raw: {}, new connections", databases.len()),
        RAW_CLIENTS,
        Some(warm.rate()),
    );
    println!(
        "the floor: raw over {} hospitals with a new connection each is {:.1} % of raw over {few} \
         (registerPatient: {:.1} %)",
        databases.len(),
        100.0 * cold.rate() / warm.rate().max(f64::MIN_POSITIVE),
        100.0 * api_all / api_few.max(f64::MIN_POSITIVE)
    );
    Ok(())
}

/// `hms move-hospital` of hospital `code`, its log first filled to `events` events,
/// while 4 clients register patients in it: what the move printed (writes held, total
/// time) and what the clients saw.
async fn move_under_load(
    binary: &str,
    control_url: &str,
    prefix: &str,
    cluster: &Cluster,
    code: &str,
    api: &Arc<Api>,
    events: i64,
) -> anyhow::Result<()> {
    let control = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(server_options().database(&format!("{prefix}_control")))
        .await?;
    let (from, database): (String, String) =
        sqlx::query_as("SELECT db_server, database_name FROM tenants WHERE code = $1")
            .bind(code)
            .fetch_one(&control)
            .await?;
    control.close().await;
    let (owner, to) = if from == "default" {
        (server_options(), "second")
    } else {
        (cluster.options("postgres"), "default")
    };
    let mut owner = sqlx::PgConnection::connect_with(&owner.database(&database)).await?;
    let filled = hms_tests::bench::fill_log(&mut owner, events).await?;
    drop(owner);
    println!("move: hospital {code} ({filled} events) from {from} to {to}, 4 clients registering patients in it");

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            let (api, stop) = (api.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut refused, mut n) = (0u64, 0u64, c << 32);
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    match register(&api, n).await {
                        Ok(_) => ok += 1,
                        Err(_) => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    let mut command = hms(
        binary,
        control_url,
        prefix,
        &["move-hospital", code, "--to", to],
    );
    command.stdout(std::process::Stdio::piped());
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut refused) = (0, 0);
    for client in clients {
        let (o, r) = client.await?;
        ok += o;
        refused += r;
    }
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        println!("    {line}");
    }
    anyhow::ensure!(
        output.status.success(),
        "hms move-hospital failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("    meanwhile: {ok} patients registered, {refused} refusals (retried)");
    Ok(())
}

fn print_memory(servers: &[Server], when: &str) {
    for (i, server) in servers.iter().enumerate() {
        server.print_memory(&format!("{when} (replica {i})"));
    }
}

/// Samples how many sessions the platform's hospital databases have, every 100 ms.
struct ConnectionWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u32>,
}

impl ConnectionWatch {
    async fn start(server: PgConnectOptions, prefix: &str) -> anyhow::Result<ConnectionWatch> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(server)
            .await?;
        let stop = Arc::new(AtomicBool::new(false));
        let pattern = format!("{prefix}%");
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut peak = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let n: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM pg_stat_activity \
                          WHERE datname LIKE $1 AND datname NOT LIKE '%\\_control'",
                    )
                    .bind(&pattern)
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(0);
                    peak = peak.max(n as u32);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                pool.close().await;
                peak
            })
        };
        Ok(ConnectionWatch { stop, task })
    }

    async fn stop(self) -> u32 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or(0)
    }
}
