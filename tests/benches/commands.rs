//! The write path against raw PostgreSQL, in one run: the release `hms` server over
//! HTTP/GraphQL at 1, 16 and 64 concurrent clients, next to what a command minimally does
//! in PostgreSQL (read a 10-event stream, then BEGIN / INSERT one row / COMMIT) from this
//! process with a pool of the same size as the clients, set up as the server's pools
//! (`serving_pool_options`: no ping before a connection in steady use).
//!
//! Run: `cargo bench -p hms-tests --bench commands` (uses HMS_TEST_DATABASE_URL).
//! - `HMS_BENCH_SERVER`: the `hms` binary to measure (default: this workspace's, built
//!   with `cargo build --release -p hms-api --bin hms`). The bench talks to it only over
//!   the CLI and HTTP, so an older build can be measured the same way.
//! - `HMS_BENCH_SECONDS` (default 5) per workload and concurrency; `HMS_BENCH_CLIENTS`
//!   (default `1,16,64`); `HMS_BENCH_INVOICES` (default 200) issued invoices to pay;
//!   `HMS_BENCH_WORKLOADS` (default all): which of `register`, `pay`, `schedule`, `read`,
//!   `search`, `floor` run, comma-separated (raw always runs: the ratios are to it).
//!
//! Workloads, in rotating order at each concurrency: raw, the API's floor (`{ __typename }`
//! without a token, then with one: what HTTP and GraphQL cost, then what signing in adds,
//! the token, the budget and the rights read from the write side, before any use case
//! runs), `registerPatient` (new stream),
//! `recordPayment` on a random issued invoice (existing stream), `scheduleAppointment`
//! (the booking process manager), `patient(id)`, `patients(search)` and the same search
//! as bare SQL. Then a hot case (64 clients paying one invoice: success rate and whether
//! the paid amount equals the sum of successful payments) and `registerPatient` from 64
//! clients spread over 16 hospitals, twice: while their pools open, then warm.
//!
//! Prints requests/s, p50/p99 latency and errors per workload, the ratio to raw at the
//! same concurrency, and the server's peak RSS.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hms_app::tenancy::pools::serving_pool_options;
use hms_app::usecases::patients::search_sql;
use hms_tests::load::{
    env_or, hms, measure, print_header, register, server_binary, Api, CpuTimes, Server, PASSWORD,
    RAW_APPEND, RAW_READ,
};
use hms_tests::{drop_databases, server_options};
use serde_json::json;
use uuid::Uuid;

const CODE: &str = "BENCH01";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let prefix = format!("hmsbc_{}_", &Uuid::new_v4().simple().to_string()[..8]);
    let result = run(&prefix).await;
    drop_databases(&prefix).await;
    result
}

async fn run(prefix: &str) -> anyhow::Result<()> {
    let binary = server_binary()?;
    let seconds: u64 = env_or("HMS_BENCH_SECONDS", 5);
    let invoices: usize = env_or("HMS_BENCH_INVOICES", 200);
    let clients: Vec<usize> = std::env::var("HMS_BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let server = server_options();
    let control_url = format!(
        "postgres://{}@{}:{}/{prefix}_control",
        server.get_username(),
        server.get_host(),
        server.get_port()
    );

    let setup = |code: &str| {
        let status = hms(
            &binary,
            &control_url,
            prefix,
            &[
                "setup-hospital",
                "--name",
                &format!("Bench Hospital {code}"),
                "--code",
                code,
                "--plan",
                "ENTERPRISE",
                "--admin-username",
                "bench_admin",
                "--admin-email",
                "admin@bench.example",
                "--admin-password",
                PASSWORD,
            ],
        )
        .status()
        .context("Failed to run hms")?;
        anyhow::ensure!(status.success(), "hms setup-hospital {code} failed");
        anyhow::Ok(())
    };
    // Every hospital is onboarded before the server starts: onboarding is not measured.
    let codes: Vec<String> = std::iter::once(CODE.to_owned())
        .chain((2..=16).map(|h| format!("BENCH{h:02}")))
        .collect();
    for code in &codes {
        setup(code)?;
    }

    // One user per hospital sends everything here, thousands of requests a second: far
    // beyond what the per-user budget allows a person. The budget is still charged (its
    // statement is part of every request's cost); only its limit is out of reach.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let mut serve = hms(&binary, &control_url, prefix, &["serve"]);
    serve.env("HMS_REQUEST_BUDGET_PER_MINUTE", "1000000000000");
    let server = Server::start(serve, &http).await?;
    let api = Arc::new(Api::login(http.clone(), &server.url, Some(CODE), "bench_admin").await?);

    // Set-up: patients to bill, search and book, issued invoices to pay, doctors to book
    // (one patient per doctor, so concurrent bookings rarely share a schedule).
    let patient = register(&api, 0).await?;
    let mut invoice_ids = Vec::with_capacity(invoices);
    for _ in 0..invoices {
        invoice_ids.push(issued_invoice(&api, &patient).await?);
    }
    let invoice_ids = Arc::new(invoice_ids);
    let mut pairs = Vec::with_capacity(DOCTORS);
    for d in 0..DOCTORS {
        pairs.push((
            doctor(&api, d).await?,
            register(&api, 1_000_000 + d as u64).await?,
        ));
    }
    let pairs = Arc::new(pairs);
    server.print_memory("after set-up (logins and 64 password hashes)");

    // Raw PostgreSQL on the same tenant database, through a pool set up as the server's.
    let tenant_db = format!("{prefix}{}", CODE.to_ascii_lowercase());
    let max_clients = clients.iter().copied().max().unwrap_or(16) as u32;
    let raw = serving_pool_options()
        .max_connections(max_clients)
        .connect_with(server_options().database(&tenant_db))
        .await?;
    sqlx::query(
        "CREATE TABLE bench_raw (stream text, sequence bigint, payload jsonb, \
         PRIMARY KEY (stream, sequence))",
    )
    .execute(&raw)
    .await?;
    for sequence in 1..=10i64 {
        sqlx::query("INSERT INTO bench_raw VALUES ('read', $1, '{\"k\": 1}')")
            .bind(sequence)
            .execute(&raw)
            .await?;
    }

    let duration = Duration::from_secs(seconds);
    print_header("vs raw");
    let serial = Arc::new(AtomicU64::new(1));
    let bookings = Arc::new(AtomicU64::new(0));
    let mut single_64 = None;
    for (round, &n) in clients.iter().enumerate() {
        // Rotating order: no workload always runs first (on a cold cache) or last.
        let mut order: Vec<Workload> = Workload::ALL.into_iter().filter(|w| w.chosen()).collect();
        let len = order.len();
        order.rotate_left(round % len);
        let mut results = Vec::new();
        for workload in order {
            let cpu = CpuTimes::now(&[server.child.id()]);
            let r = match workload {
                Workload::Raw => {
                    let pool = raw.clone();
                    let serial = serial.clone();
                    measure(n, duration, move || {
                        let pool = pool.clone();
                        let s = serial.fetch_add(1, Ordering::Relaxed) as i64;
                        async move {
                            sqlx::query(RAW_READ).fetch_all(&pool).await?;
                            let mut tx = pool.begin().await?;
                            sqlx::query(RAW_APPEND)
                                .bind(format!("w{s}"))
                                .execute(&mut *tx)
                                .await?;
                            tx.commit().await?;
                            Ok(())
                        }
                    })
                    .await
                }
                Workload::Floor | Workload::FloorSignedIn => {
                    let api = match workload {
                        Workload::Floor => Arc::new(Api::anonymous(http.clone(), &server.url)),
                        _ => api.clone(),
                    };
                    measure(n, duration, move || {
                        let api = api.clone();
                        async move { api.call("{ __typename }", json!({})).await.map(drop) }
                    })
                    .await
                }
                Workload::Register => {
                    let api = api.clone();
                    let serial = serial.clone();
                    measure(n, duration, move || {
                        let api = api.clone();
                        let s = serial.fetch_add(1, Ordering::Relaxed);
                        async move { register(&api, s).await.map(drop) }
                    })
                    .await
                }
                Workload::Pay => {
                    let api = api.clone();
                    let ids = invoice_ids.clone();
                    let serial = serial.clone();
                    measure(n, duration, move || {
                        let api = api.clone();
                        let id = ids
                            [serial.fetch_add(7919, Ordering::Relaxed) as usize % ids.len()]
                        .clone();
                        async move { pay(&api, &id).await }
                    })
                    .await
                }
                Workload::Schedule => {
                    let api = api.clone();
                    let pairs = pairs.clone();
                    let bookings = bookings.clone();
                    measure(n, duration, move || {
                        let api = api.clone();
                        let pairs = pairs.clone();
                        let b = bookings.fetch_add(1, Ordering::Relaxed) as usize;
                        async move { book(&api, &pairs, b).await }
                    })
                    .await
                }
                Workload::Search => {
                    let api = api.clone();
                    measure(n, duration, move || {
                        let api = api.clone();
                        async move {
                            api.call(
                                "{ patients(search: \"Bench\", first: 20) { edges { node { id mrn fullName } } } }",
                                json!({}),
                            )
                            .await
                            .map(drop)
                        }
                    })
                    .await
                }
                Workload::SearchSql => {
                    let pool = raw.clone();
                    measure(n, duration, move || {
                        let pool = pool.clone();
                        async move {
                            // The server's own statement and parameters for this search.
                            sqlx::query(search_sql(true))
                                .bind(None::<String>)
                                .bind(None::<chrono::NaiveDate>)
                                .bind(None::<String>)
                                .bind("bench")
                                .bind(None::<Vec<String>>)
                                .bind(None::<String>)
                                .bind(None::<String>)
                                .bind(None::<Uuid>)
                                .bind(21_i64)
                                .bind("MERGED")
                                .fetch_all(&pool)
                                .await?;
                            Ok(())
                        }
                    })
                    .await
                }
                Workload::Read => {
                    let api = api.clone();
                    let id = patient.clone();
                    measure(n, duration, move || {
                        let api = api.clone();
                        let id = id.clone();
                        async move {
                            api.call(
                                "query($id: UUID!) { patient(id: $id) { id mrn fullName } }",
                                json!({ "id": id }),
                            )
                            .await
                            .map(drop)
                        }
                    })
                    .await
                }
            };
            results.push((workload, r, CpuTimes::now(&[server.child.id()]).since(&cpu)));
        }
        let raw_rate = results
            .iter()
            .find(|(w, _, _)| *w == Workload::Raw)
            .map(|(_, r, _)| r.rate());
        results.sort_by_key(|(w, _, _)| *w);
        for (workload, r, cpu) in &results {
            let against = match workload {
                Workload::Raw | Workload::SearchSql => None,
                _ => raw_rate,
            };
            r.print(workload.name(), n, against);
            // Raw PostgreSQL and the bare search run in this process: "this bench".
            cpu.print_per_request(r.ok, "server");
            if *workload == Workload::Register && n == 64 {
                single_64 = Some(r.rate());
            }
        }
        server.print_memory(&format!("after {n} clients"));
    }

    // The raw pool's connections count against the server's max_connections (100 by
    // default): give them back before 16 hospitals' pools open.
    raw.close().await;

    // The hot case: 64 clients paying one invoice, 4 payments each.
    let hot = issued_invoice(&api, &patient).await?;
    let ok = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let api = api.clone();
            let hot = hot.clone();
            let ok = ok.clone();
            tokio::spawn(async move {
                for _ in 0..4 {
                    if pay(&api, &hot).await.is_ok() {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    let succeeded = ok.load(Ordering::Relaxed);
    let invoice = api
        .call(
            "query($id: UUID!) { invoice(id: $id) { paidMinor } }",
            json!({ "id": hot }),
        )
        .await?;
    let paid = invoice["invoice"]["paidMinor"].as_i64().unwrap_or(-1);
    println!(
        "hot invoice, 64 clients x 4 payments: {succeeded}/256 succeeded ({:.1} %), paid {paid} \
         minor units, {}",
        succeeded as f64 / 2.56,
        if paid == succeeded as i64 {
            "exact"
        } else {
            "NOT EXACT"
        }
    );

    // Spread: 64 clients over 16 hospitals (4 each), registering patients.
    let mut apis = vec![api.clone()];
    for code in &codes[1..] {
        apis.push(Arc::new(
            Api::login(http.clone(), &server.url, Some(code), "bench_admin").await?,
        ));
    }
    let apis = Arc::new(apis);
    // Twice: the first run opens and grows fifteen hospitals' pools (new backends plan
    // their statements afresh) while the one hospital at 64 clients was measured on a
    // pool its earlier workloads had warmed; the second compares like with like.
    for phase in ["pools opening", "warm"] {
        let cpu = CpuTimes::now(&[server.child.id()]);
        let r = {
            let serial = serial.clone();
            let apis = apis.clone();
            measure(64, duration, move || {
                let s = serial.fetch_add(1, Ordering::Relaxed);
                let api = apis[s as usize % apis.len()].clone();
                async move { register(&api, s).await.map(drop) }
            })
            .await
        };
        r.print("registerPatient, 16 hospitals", 64, single_64);
        CpuTimes::now(&[server.child.id()])
            .since(&cpu)
            .print_per_request(r.ok, "server");
        if let Some(single) = single_64 {
            println!(
                "    16 hospitals x 4 clients ({phase}): {:.0} req/s against {single:.0} in one hospital at 64",
                r.rate()
            );
        }
    }
    server.print_memory("at the end");
    Ok(())
}

/// Doctors (and as many patients) the booking workload spreads over.
const DOCTORS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Workload {
    Raw,
    Floor,
    FloorSignedIn,
    Register,
    Pay,
    Schedule,
    Read,
    Search,
    SearchSql,
}

impl Workload {
    const ALL: [Workload; 9] = [
        Workload::Raw,
        Workload::Floor,
        Workload::FloorSignedIn,
        Workload::Register,
        Workload::Pay,
        Workload::Schedule,
        Workload::Read,
        Workload::Search,
        Workload::SearchSql,
    ];

    /// Whether `HMS_BENCH_WORKLOADS` (absent: all) names this workload.
    fn chosen(self) -> bool {
        let key = match self {
            Workload::Raw => return true,
            Workload::Floor | Workload::FloorSignedIn => "floor",
            Workload::Register => "register",
            Workload::Pay => "pay",
            Workload::Schedule => "schedule",
            Workload::Read => "read",
            Workload::Search | Workload::SearchSql => "search",
        };
        std::env::var("HMS_BENCH_WORKLOADS")
            .map(|chosen| chosen.split(',').any(|c| c.trim() == key))
            .unwrap_or(true)
    }

    fn name(self) -> &'static str {
        match self {
            Workload::Raw => "raw: read 10 + append 1",
            Workload::Floor => "floor: { __typename }",
            Workload::FloorSignedIn => "  the same, signed in",
            Workload::Register => "registerPatient",
            Workload::Pay => "recordPayment (random invoice)",
            Workload::Schedule => "scheduleAppointment",
            Workload::Read => "patient(id)",
            Workload::Search => "patients(search)",
            Workload::SearchSql => "  same search, bare SQL",
        }
    }
}

async fn doctor(api: &Api, n: usize) -> anyhow::Result<String> {
    let data = api
        .call(
            "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
            json!({ "i": { "username": format!("doctor{n}"), "email": format!("doctor{n}@bench.example"),
                           "fullName": format!("Doctor {n}"), "role": "DOCTOR", "password": PASSWORD } }),
        )
        .await?;
    Ok(data["createUser"]["id"]
        .as_str()
        .context("a doctor id")?
        .to_owned())
}

/// Books appointment `n`: doctor `n % DOCTORS` with their patient, in that doctor's next
/// free slot (15 minutes, 08:00 to 17:00 UTC on weekdays, from a week ahead).
async fn book(api: &Api, pairs: &[(String, String)], n: usize) -> anyhow::Result<()> {
    const SLOTS_PER_DAY: usize = 36;
    let (doctor, patient) = &pairs[n % pairs.len()];
    let k = n / pairs.len();
    let mut day = chrono::Utc::now().date_naive() + chrono::Duration::days(7);
    let mut weekdays = k / SLOTS_PER_DAY;
    loop {
        use chrono::Datelike;
        if day.weekday().number_from_monday() <= 5 {
            if weekdays == 0 {
                break;
            }
            weekdays -= 1;
        }
        day += chrono::Duration::days(1);
    }
    let minutes = 8 * 60 + 15 * (k % SLOTS_PER_DAY);
    let start = format!("{day}T{:02}:{:02}:00Z", minutes / 60, minutes % 60);
    api.call(
        "mutation($i: ScheduleAppointmentInput!) { scheduleAppointment(input: $i) { id } }",
        json!({ "i": { "patientId": patient, "doctorId": doctor, "start": start, "reason": "Bench" } }),
    )
    .await
    .map(drop)
}

async fn issued_invoice(api: &Api, patient: &str) -> anyhow::Result<String> {
    let created = api
        .call(
            "mutation($i: CreateInvoiceInput!) { createInvoice(input: $i) { id } }",
            json!({ "i": { "patientId": patient, "currency": "KES" } }),
        )
        .await?;
    let id = created["createInvoice"]["id"]
        .as_str()
        .context("an invoice id")?
        .to_owned();
    api.call(
        "mutation($i: AddInvoiceLineInput!) { addInvoiceLine(input: $i) { id } }",
        json!({ "i": { "invoiceId": id, "code": "CONSULT", "description": "Consultation",
                       "quantity": 1, "unitPriceMinor": 1_000_000_000 } }),
    )
    .await?;
    api.call(
        "mutation($i: IssueInvoiceInput!) { issueInvoice(input: $i) { id } }",
        json!({ "i": { "invoiceId": id } }),
    )
    .await?;
    Ok(id)
}

async fn pay(api: &Api, invoice: &str) -> anyhow::Result<()> {
    api.call(
        "mutation($i: RecordPaymentInput!) { recordPayment(input: $i) { id } }",
        json!({ "i": { "invoiceId": invoice, "amountMinor": 1, "method": "CASH" } }),
    )
    .await
    .map(drop)
}
