//! Faults in the suite (issue 16): the real `hms` binary against real PostgreSQL, broken
//! on purpose while clients write. Each test prints what it injected and its figures
//! (requests sent, acknowledged, refused by code, unanswered, found afterwards,
//! duplicates), then checks what holds today: no acknowledged write is lost or doubled,
//! a retry with the same idempotency key answers the first result, a failure is a clean
//! error code, and the server recovers without a restart.
//!
//! The writes are `registerPatient`, each with an idempotency key and a family name of its
//! own, so the hospital's event log tells for every request whether it was applied, and
//! how often. Run with `--nocapture` to see the figures of passing tests.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use hms_tests::cluster::Cluster;
use hms_tests::fixtures::assert_no_leak;
use hms_tests::process::{ProcessPlatform, ServerProcess};
use hms_tests::proxy::Proxy;
use hms_tests::ADMIN_PASSWORD;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use tokio::task::JoinHandle;

/// Concurrent writing clients.
const CLIENTS: usize = 8;

/// The server's own bound on a request (it answers 408 past it).
const REQUEST_TIMEOUT: Duration = hms_api::http::REQUEST_TIMEOUT;

/// How long a client waits for an answer: past the server's request timeout, so that a
/// request the server lets hang shows as unanswered instead of stalling the test.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(35);

/// How long the server may take to serve again once a fault is over.
const RECOVERY_BOUND: Duration = Duration::from_secs(30);

/// Every test's server: no per-user request budget, which the load would exhaust.
const SERVE_ENV: &[(&str, &str)] = &[("HMS_REQUEST_BUDGET_PER_MINUTE", "0")];

const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { token } }";
const REGISTER: &str =
    "mutation($input: RegisterPatientInput!) { registerPatient(input: $input) { id familyName } }";
const SEARCH: &str = "query { patients(first: 1) { edges { node { id } } } }";
const ME: &str = "query { me { username hospital { code } } }";

// ----------------------------------------------------------------------------------------
// The tests.

/// `kill -9` of the server while eight clients register patients; a new server on the
/// same platform; every request that got no answer (and a sample of the acknowledged
/// ones) sent again with its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_a_write_load_loses_no_acknowledged_write_and_retries_answer_the_first_result()
{
    const LABEL: &str = "kill -9";
    let platform = Platform::on_shared_server();
    let code = "FLTKILL";
    let admin = platform.setup_hospital(code).await;
    let mut server = platform.serve(SERVE_ENV).await;
    let api = Api::new(&server);
    let token = api.token(Some(code), &admin).await;

    let load = Load::start(&api, &token, "Kill", CLIENTS);
    load.wait_for_acknowledged(load.started, 40, RECOVERY_BOUND)
        .await
        .expect("the load is acknowledged before the kill");
    let pid = server.child.id().expect("the server runs");
    load.stop_sending();
    let in_flight = load.in_flight();
    server.kill().await;
    let sent = load.finish().await;
    println!(
        "[{LABEL}] injected: SIGKILL of hms (pid {pid}) with {in_flight} request(s) in flight"
    );

    // A new process on the same platform; the keys' claims of the dead one go stale.
    let restarted = platform.serve(SERVE_ENV).await;
    let api = Api::new(&restarted);
    print_applied_unacknowledged(LABEL, &sent, &platform.snapshot(code, "Kill").await);
    let mut retried = retry(&api, &token, &sent, 3).await;
    let found = platform
        .found_settled(LABEL, (&api, &token), (code, "Kill"), &sent, &mut retried)
        .await;
    Ledger::new(LABEL, &sent, &retried).check(&found);
}

/// A private PostgreSQL cluster stopped in immediate mode (as a crash) and started again
/// while eight clients write: the same server process serves again, and the figures of
/// the kill -9 test hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_under_load_is_survived_without_restarting_the_server() {
    const LABEL: &str = "PostgreSQL restart";
    let cluster = Cluster::primary().expect("a private PostgreSQL cluster");
    let platform = Platform(ProcessPlatform::on_server(&cluster.options("postgres")));
    let code = "FLTPGRST";
    let admin = platform.setup_hospital(code).await;
    let mut server = platform.serve(SERVE_ENV).await;
    let api = Api::new(&server);
    let token = api.token(Some(code), &admin).await;

    let load = Load::start(&api, &token, "Restart", CLIENTS);
    load.wait_for_acknowledged(load.started, 30, RECOVERY_BOUND)
        .await
        .expect("the load is acknowledged before the restart");
    let down = Instant::now();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster
            .stop_immediately()
            .expect("pg_ctl stop -m immediate");
        std::thread::sleep(Duration::from_secs(2));
        cluster.start().expect("pg_ctl start");
        cluster
    })
    .await
    .expect("restart task");
    let up = Instant::now();
    println!(
        "[{LABEL}] injected: pg_ctl stop -m immediate, 2 s down, start: PostgreSQL gone for {:.1} s under load",
        (up - down).as_secs_f64()
    );
    let recovered = load
        .wait_for_acknowledged(up, 20, RECOVERY_BOUND)
        .await
        .unwrap_or_else(|n| panic!("[{LABEL}] only {n} write(s) acknowledged after the restart"));
    load.stop_sending();
    let sent = load.finish().await;
    println!(
        "[{LABEL}] the same server process acknowledged writes sent after the restart {:.1} s after PostgreSQL was back",
        recovered.as_secs_f64()
    );
    assert!(
        server.child.try_wait().expect("process status").is_none(),
        "the server process is still running"
    );
    assert_eq!(api.readyz().await, 200, "ready again");
    println!("[{LABEL}] causes logged: {:?}", logged_causes(&server));

    print_applied_unacknowledged(LABEL, &sent, &platform.snapshot(code, "Restart").await);
    let mut retried = retry(&api, &token, &sent, 3).await;
    let found = platform
        .found_settled(
            LABEL,
            (&api, &token),
            (code, "Restart"),
            &sent,
            &mut retried,
        )
        .await;
    Ledger::new(LABEL, &sent, &retried).check(&found);
    // The server before the cluster under it (`cluster`, bound last, would go first).
    server.stop().await;
    drop(platform);
    drop(cluster);
}

/// Every connection of the server to PostgreSQL through a proxy that delays them, cuts
/// them all (three times) and refuses new ones for two seconds, while eight clients
/// write: each request succeeds or fails with a clean error code in bounded time,
/// nothing is applied twice or half (every write is in the log once and in the read
/// model), and the pools recover without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_cut_and_delayed_between_server_and_postgresql_leave_nothing_half_applied() {
    const LABEL: &str = "TCP proxy";
    let platform = Platform::on_shared_server();
    let code = "FLTPROXY";
    let (proxy, server, token) = platform.hospital_behind_proxy(code).await;
    let api = Api::new(&server);

    let load = Load::start(&api, &token, "Proxy", CLIENTS);
    load.wait_for_acknowledged(load.started, 30, RECOVERY_BOUND)
        .await
        .expect("the load is acknowledged through the proxy");

    let delay = Duration::from_millis(20);
    proxy.set_delay(delay);
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.set_delay(Duration::ZERO);
    let mut cut = Vec::new();
    for _ in 0..3 {
        cut.push(proxy.cut_all());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    proxy.refuse_new(true);
    cut.push(proxy.cut_all());
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.refuse_new(false);
    let healed = Instant::now();
    println!(
        "[{LABEL}] injected: {} ms per chunk each way for 2 s; all links cut 3 times 500 ms apart \
         ({} links); then all links cut ({}) and new connections refused for 2 s",
        delay.as_millis(),
        cut[..3]
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("+"),
        cut[3],
    );
    let recovered = load
        .wait_for_acknowledged(healed, 20, RECOVERY_BOUND)
        .await
        .unwrap_or_else(|n| panic!("[{LABEL}] only {n} write(s) acknowledged after the faults"));
    load.stop_sending();
    let sent = load.finish().await;
    let stats = proxy.stats();
    println!(
        "[{LABEL}] pools recovered: writes sent after the faults acknowledged {:.1} s after; \
         proxy passed {} connection(s), refused {}",
        recovered.as_secs_f64(),
        stats.accepted,
        stats.refused
    );
    assert_eq!(api.readyz().await, 200, "ready again");
    println!("[{LABEL}] causes logged: {:?}", logged_causes(&server));

    print_applied_unacknowledged(LABEL, &sent, &platform.snapshot(code, "Proxy").await);
    let mut retried = retry(&api, &token, &sent, 3).await;
    let found = platform
        .found_settled(LABEL, (&api, &token), (code, "Proxy"), &sent, &mut retried)
        .await;
    Ledger::new(LABEL, &sent, &retried).check(&found);
}

/// The connection is lost right after PostgreSQL committed a registration's append, its
/// answer never reaching the server. The write stands (it is in the log), so a retry
/// with the same key must answer it, with the same id, and append nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_is_lost_after_commit_is_answered_on_retry_with_the_first_result() {
    const LABEL: &str = "lost answer";
    let platform = Platform::on_shared_server();
    let code = "FLTLOST";
    let (proxy, server, token) = platform.hospital_behind_proxy(code).await;
    let api = Api::new(&server);
    let warm_up = Registration::new("Warm", 0, 0);
    assert!(api.register(&token, &warm_up).await.id().is_some());

    // The event type is among the parameters of the append, and of no statement before
    // it (the family name travels sealed).
    let request = Registration::new("Lost", 0, 1);
    proxy.lose_reply_after(b"PatientRegistered");
    let first = api.register(&token, &request).await;
    let lost = proxy.stats().lost_replies;
    println!(
        "[{LABEL}] injected: the link cut as PostgreSQL answered the append ({lost} answer lost); \
         the request got: {}",
        first.label()
    );
    assert_eq!(lost, 1, "the append's answer was lost");
    assert!(first.id().is_none(), "not acknowledged: {first:?}");
    let logged = platform.found(code, "Lost").await;
    let applied = logged.ids_of(&request.family);
    println!("[{LABEL}] the log holds {} event(s) for it", applied.len());
    assert_eq!(applied.len(), 1, "the append committed");
    assert_clean(LABEL, &first);

    let again = api.register(&token, &request).await;
    println!(
        "[{LABEL}] the retry with the same key got: {}",
        again.label()
    );
    let found = platform.found(code, "Lost").await;
    assert_eq!(found.ids_of(&request.family), applied, "appended once");
    assert_eq!(
        again.id(),
        Some(applied[0].as_str()),
        "the retry answers the write that stands: {again:?}"
    );
}

/// The link to PostgreSQL breaks as a request reads its caller's account and hospital to
/// decide what the caller may do (a process reads them for a caller's first request, and
/// for every query; later writes start from what it read, docs/adr/0012): the database
/// could not be reached, so the answer is UNAVAILABLE (`retryable: true`), as the README
/// says of any database that cannot be reached; the same request sent again succeeds, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_while_a_request_is_authorized_answers_unavailable() {
    const LABEL: &str = "lost answer, authorization";
    let platform = Platform::on_shared_server();
    let code = "FLTAUTHZ";
    let admin = platform.setup_hospital(code).await;
    let proxy = platform.proxy().await;
    // Signed in and warmed up through another server: the one behind the proxy has not
    // read the caller's account, so the request below reads it first.
    let direct = platform.serve(SERVE_ENV).await;
    let token = Api::new(&direct).token(Some(code), &admin).await;
    let warm_up = Registration::new("Warm", 0, 0);
    assert!(Api::new(&direct)
        .register(&token, &warm_up)
        .await
        .id()
        .is_some());
    let server = platform.serve_through(&proxy).await;
    let api = Api::new(&server);

    proxy.lose_reply_after(&stream_parameters("hospital", code));
    let request = Registration::new("Authz", 0, 1);
    let first = api.register(&token, &request).await;
    let lost = proxy.stats().lost_replies;
    println!(
        "[{LABEL}] injected: the link cut as PostgreSQL answered the load of {code}'s stream \
         ({lost} answer lost); the request got: {}",
        first.label()
    );
    println!("[{LABEL}] causes logged: {:?}", logged_causes(&server));
    assert_eq!(lost, 1, "the load's answer was lost");
    assert_clean(LABEL, &first);
    let again = api.register(&token, &request).await;
    let found = platform.found(code, "Authz").await;
    println!(
        "[{LABEL}] the retry with the same key got: {}; events for it: {}",
        again.label(),
        found.ids_of(&request.family).len()
    );
    let id = again.id().expect("the retry succeeds");
    assert_eq!(
        found.ids_of(&request.family),
        [id.to_owned()],
        "appended once"
    );
    assert!(
        first.code().as_deref() == Some("UNAVAILABLE") && first.worth_retrying(),
        "a database that cannot be reached is UNAVAILABLE, retryable: {first:?}"
    );
}

/// A write on assumed rights (docs/adr/0012) that moves the hospital's own stream, whose
/// answer is lost after its guarded append committed: the rights read afterwards show the
/// hospital moved, by this very write. The request is not decided again (that would
/// write twice); the answer is UNAVAILABLE, retryable, and the write stands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_append_whose_answer_is_lost_is_not_decided_again() {
    const LABEL: &str = "lost answer, guarded append";
    let platform = Platform::on_shared_server();
    let code = "FLTGUARD";
    let (proxy, server, token) = platform.hospital_behind_proxy(code).await;
    let api = Api::new(&server);
    // A first write reads the account and the hospital; the next one assumes them.
    assert!(api
        .register(&token, &Registration::new("Warm", 0, 0))
        .await
        .id()
        .is_some());
    const BRANDED: &str = "SELECT count(*) FROM events WHERE aggregate_type = 'hospital' \
                             AND event_type = 'BrandingUpdated'";
    assert_eq!(platform.scalar(code, BRANDED).await, 0);
    let hospital_version = platform
        .scalar(
            code,
            "SELECT max(sequence) FROM events WHERE aggregate_type = 'hospital'",
        )
        .await;
    // The guard's parameters: the hospital's stream and the version assumed. A load of
    // the stream binds the first two only.
    let mut guard = stream_parameters("hospital", code);
    guard.extend_from_slice(&8u32.to_be_bytes());
    guard.extend_from_slice(&hospital_version.to_be_bytes());
    proxy.lose_reply_after(&guard);

    let first = api
        .post(
            "mutation { updateBranding(input: { primaryColor: \"#224466\" }) { code } }",
            json!({}),
            Some(&token),
        )
        .await;
    println!("[{LABEL}] the request got: {}", first.label());
    assert_eq!(
        proxy.stats().lost_replies,
        1,
        "the append's answer was lost"
    );
    assert_clean(LABEL, &first);
    assert!(
        first.code().as_deref() == Some("UNAVAILABLE") && first.worth_retrying(),
        "an append that went unanswered is UNAVAILABLE, retryable: {first:?}"
    );
    assert_eq!(platform.scalar(code, BRANDED).await, 1, "written once");
}

/// A statement timeout on the hospital's database, and another session holding the event
/// log's lock: a registration waits, runs into the timeout, fails with an error code
/// and appends nothing, while reads that append nothing go on (a patient search records
/// the access in the log, so it fails like a write); once the lock is released the same
/// request (same key) succeeds, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_past_its_statement_timeout_fails_cleanly_and_appends_nothing() {
    const LABEL: &str = "statement timeout";
    let platform = Platform::on_shared_server();
    let code = "FLTSTMT";
    let admin = platform.setup_hospital(code).await;
    let database = platform.database_for(code);
    // Set before the server starts: every connection it makes carries the timeout.
    let mut operator = platform.connect("postgres").await;
    sqlx::query(&format!(
        "ALTER DATABASE {} SET statement_timeout = '1s'",
        quoted(&database)
    ))
    .execute(&mut operator)
    .await
    .expect("set statement_timeout");
    let server = platform.serve(SERVE_ENV).await;
    let api = Api::new(&server);
    let token = api.token(Some(code), &admin).await;
    let warm_up = Registration::new("Warm", 0, 0);
    assert!(api.register(&token, &warm_up).await.id().is_some());
    let events_before = platform.event_count(code).await;

    let mut holder = platform.connect(&database).await;
    let mut lock = holder.begin().await.expect("begin");
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock the event log");
    let locked = Instant::now();
    let keyed = Registration::new("Stmt", 0, 1);
    let (first, took) = timed(api.register(&token, &keyed)).await;
    let unkeyed = Registration::new("Stmt", 0, 2);
    let (unkeyed_outcome, unkeyed_took) = timed(api.register_without_key(&token, &unkeyed)).await;
    let me = api.post(ME, json!({}), Some(&token)).await;
    let search = api.post(SEARCH, json!({}), Some(&token)).await;
    let events_during = platform.event_count(code).await;
    lock.rollback().await.expect("release the lock");
    let held = locked.elapsed();
    holder.close().await.expect("close");

    println!(
        "[{LABEL}] injected: statement_timeout 1 s on {code}'s database; the events table locked \
         (EXCLUSIVE) by another session for {:.1} s",
        held.as_secs_f64()
    );
    println!(
        "[{LABEL}] while locked: keyed write {} in {:.1} s, unkeyed write {} in {:.1} s, \
         `me` {}, a patient search {}; events appended: {}",
        first.label(),
        took.as_secs_f64(),
        unkeyed_outcome.label(),
        unkeyed_took.as_secs_f64(),
        me.label(),
        search.label(),
        events_during - events_before,
    );
    println!("[{LABEL}] causes logged: {:?}", logged_causes(&server));
    assert_clean(LABEL, &search);
    for (outcome, took) in [(&first, took), (&unkeyed_outcome, unkeyed_took)] {
        assert!(
            outcome.code().is_some(),
            "fails with an error code: {outcome:?}"
        );
        assert_clean(LABEL, outcome);
        assert!(
            took < Duration::from_secs(10),
            "fails in bounded time: {took:?}"
        );
    }
    assert_eq!(
        events_during, events_before,
        "nothing appended while locked"
    );
    assert!(me.code().is_none(), "reads go on: {me:?}");

    let again = api.register(&token, &keyed).await;
    let after = platform.found(code, "Stmt").await;
    println!(
        "[{LABEL}] after release: the keyed retry {}; events for it: {}",
        again.label(),
        after.ids_of(&keyed.family).len()
    );
    let id = again
        .id()
        .expect("the retry succeeds once the lock is gone");
    assert_eq!(
        after.ids_of(&keyed.family),
        [id.to_owned()],
        "appended once"
    );
    assert!(
        after.ids_of(&unkeyed.family).is_empty(),
        "the refused write left nothing"
    );
    assert!(after.unsettled.is_empty(), "no claim left behind");
}

/// One hospital's database refuses connections (ALLOW_CONNECTIONS false, its sessions
/// terminated) while another hospital of the same server is under load: the first one's
/// requests fail with a clean error code in bounded time, the other's all succeed, and
/// the first recovers without a restart once its database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hospital_whose_database_refuses_connections_does_not_stop_the_others() {
    const LABEL: &str = "tenant database refused";
    let platform = Platform::on_shared_server();
    let (down, up) = ("FLTDOWN", "FLTUP");
    let down_admin = platform.setup_hospital(down).await;
    let up_admin = platform.setup_hospital(up).await;
    let server = platform.serve(SERVE_ENV).await;
    let api = Api::new(&server);
    let down_token = api.token(Some(down), &down_admin).await;
    let up_token = api.token(Some(up), &up_admin).await;
    let warm_up = Registration::new("Warm", 0, 0);
    assert!(api.register(&down_token, &warm_up).await.id().is_some());

    let database = platform.database_for(down);
    let mut operator = platform.connect("postgres").await;
    let terminated = refuse_connections(&mut operator, &database, true).await;
    let refused_at = Instant::now();
    let load = Load::start(&api, &up_token, "Up", 4);
    let (mut writes, mut reads) = (Vec::new(), Vec::new());
    let mut slowest = Duration::ZERO;
    // Three seconds of requests to the hospital whose database is refused.
    for n in 1.. {
        if refused_at.elapsed() >= Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let request = Registration::new("Down", 0, n);
        let (outcome, took) = timed(api.register(&down_token, &request)).await;
        slowest = slowest.max(took);
        writes.push(Sent::at(request, outcome, refused_at));
        let (read, took) = timed(api.post(SEARCH, json!({}), Some(&down_token))).await;
        slowest = slowest.max(took);
        reads.push(read);
    }
    let (login, took) = timed(api.login(Some(down), &down_admin)).await;
    slowest = slowest.max(took);
    load.stop_sending();
    let up_sent = load.finish().await;
    refuse_connections(&mut operator, &database, false).await;
    let outage = refused_at.elapsed();

    let up_figures = Figures::of(&up_sent);
    println!(
        "[{LABEL}] injected: ALLOW_CONNECTIONS false on {down}'s database, {terminated} session(s) \
         terminated, for {:.1} s",
        outage.as_secs_f64()
    );
    println!(
        "[{LABEL}] {down}: writes {:?}, patient searches {:?}, login {}, slowest {:.1} s",
        count_labels(writes.iter().map(|s| &s.outcome)),
        count_labels(reads.iter()),
        login.label(),
        slowest.as_secs_f64()
    );
    println!("[{LABEL}] {up} meanwhile: {}", up_figures.summary());
    println!("[{LABEL}] causes logged: {:?}", logged_causes(&server));
    for outcome in writes.iter().map(|s| &s.outcome).chain(&reads) {
        assert!(
            outcome.code().is_some(),
            "{down} fails with an error code: {outcome:?}"
        );
        assert_clean(LABEL, outcome);
    }
    assert!(
        login.code().is_some(),
        "the login fails with an error code: {login:?}"
    );
    assert_clean(LABEL, &login);
    assert!(slowest < Duration::from_secs(15), "bounded: {slowest:?}");
    assert!(up_figures.acknowledged > 0, "{up} kept working");
    assert_eq!(
        up_figures.acknowledged,
        up_figures.sent,
        "every write to {up} succeeded: {}",
        up_figures.summary()
    );

    // Back without a restart: the refused writes, sent again with their keys.
    let back = Instant::now();
    let retried = retry(&api, &down_token, &writes, 0).await;
    println!(
        "[{LABEL}] {down} after ALLOW_CONNECTIONS true: {} of {} retried write(s) acknowledged within {:.1} s",
        retried.iter().filter(|(_, o)| o.id().is_some()).count(),
        retried.len(),
        back.elapsed().as_secs_f64()
    );
    let found = platform.found(down, "Down").await;
    Ledger::new(&format!("{LABEL}: {down}"), &writes, &retried).check(&found);
    let found = platform.found(up, "Up").await;
    Ledger::new(&format!("{LABEL}: {up}"), &up_sent, &[]).check(&found);
    api.token(Some(down), &down_admin).await;
}

/// A hospital whose database refuses connections answers its requests the way the README
/// promises for a database that cannot be reached: UNAVAILABLE, `retryable: true`, like a
/// sign-in there does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_a_hospital_whose_database_is_unreachable_answer_unavailable() {
    const LABEL: &str = "tenant database refused, codes";
    let platform = Platform::on_shared_server();
    let code = "FLTCODES";
    let admin = platform.setup_hospital(code).await;
    let server = platform.serve(SERVE_ENV).await;
    let api = Api::new(&server);
    let token = api.token(Some(code), &admin).await;
    let warm_up = Registration::new("Warm", 0, 0);
    assert!(api.register(&token, &warm_up).await.id().is_some());

    let database = platform.database_for(code);
    let mut operator = platform.connect("postgres").await;
    refuse_connections(&mut operator, &database, true).await;
    let write = api
        .register(&token, &Registration::new("Codes", 0, 1))
        .await;
    let search = api.post(SEARCH, json!({}), Some(&token)).await;
    let me = api.post(ME, json!({}), Some(&token)).await;
    let login = api.login(Some(code), &admin).await;
    refuse_connections(&mut operator, &database, false).await;

    println!(
        "[{LABEL}] with {code}'s database refusing connections: write {}, patient search {}, \
         `me` {}, login {}",
        write.label(),
        search.label(),
        me.label(),
        login.label()
    );
    println!("[{LABEL}] causes logged: {:?}", logged_causes(&server));
    for (what, outcome) in [
        ("a write", &write),
        ("a patient search", &search),
        ("`me`", &me),
        ("a login", &login),
    ] {
        assert_clean(LABEL, outcome);
        assert!(
            outcome.code().as_deref() == Some("UNAVAILABLE") && outcome.worth_retrying(),
            "{what} answers UNAVAILABLE, retryable: {outcome:?}"
        );
    }
}

/// The platform database refuses connections for a while: `/readyz` says so, a login
/// fails with UNAVAILABLE (retryable, nothing of the cause in it), and both work again
/// once it is back, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_fail_cleanly_while_the_platform_database_is_gone_and_work_again_after() {
    const LABEL: &str = "platform database gone";
    let platform = Platform::on_shared_server();
    let code = "FLTPLAT";
    let admin = platform.setup_hospital(code).await;
    let server = platform.serve(SERVE_ENV).await;
    let api = Api::new(&server);
    api.token(Some(code), &admin).await;

    let control = platform.control_database();
    let mut operator = platform.connect("postgres").await;
    let terminated = refuse_connections(&mut operator, &control, true).await;
    let gone = Instant::now();
    let not_ready = until(Duration::from_secs(15), || async {
        api.readyz().await == 503
    })
    .await;
    let (login, took) = timed(api.login(Some(code), &admin)).await;
    let (operator_login, operator_took) = timed(api.login(None, "root_admin")).await;
    // Gone for a second at least, as a brief outage is.
    tokio::time::sleep_until((gone + Duration::from_secs(1)).into()).await;
    refuse_connections(&mut operator, &control, false).await;
    let outage = gone.elapsed();
    let ready = until(RECOVERY_BOUND, || async { api.readyz().await == 200 }).await;
    let (again, again_took) = timed(api.login(Some(code), &admin)).await;

    println!(
        "[{LABEL}] injected: ALLOW_CONNECTIONS false on the platform database, {terminated} \
         session(s) terminated, for {:.1} s",
        outage.as_secs_f64()
    );
    println!(
        "[{LABEL}] /readyz 503 after {}; staff login {} in {:.1} s; operator login {} in {:.1} s",
        seconds(not_ready),
        login.label(),
        took.as_secs_f64(),
        operator_login.label(),
        operator_took.as_secs_f64()
    );
    println!(
        "[{LABEL}] back: /readyz 200 after {}; staff login {} in {:.1} s",
        seconds(ready),
        again.label(),
        again_took.as_secs_f64()
    );
    println!("[{LABEL}] causes logged: {:?}", logged_causes(&server));
    assert!(
        not_ready.is_some(),
        "/readyz answers 503 while the platform database is gone"
    );
    for (what, outcome, took) in [
        ("staff", &login, took),
        ("operator", &operator_login, operator_took),
    ] {
        assert!(
            outcome.code().as_deref() == Some("UNAVAILABLE") && outcome.worth_retrying(),
            "a {what} login fails with UNAVAILABLE, retryable: {outcome:?}"
        );
        assert_clean(LABEL, outcome);
        assert!(
            took < Duration::from_secs(10),
            "fails in bounded time: {took:?}"
        );
    }
    assert!(ready.is_some(), "/readyz answers 200 once it is back");
    assert!(again.code().is_none(), "logins work again: {again:?}");
}

/// The platform database refuses connections for five seconds (past the two seconds
/// within which a hospital's status is re-checked when the platform is up): tokens
/// issued before keep working for the hospital's own data, which lives in its own
/// database, and each write is in its log once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_tokens_keep_working_while_the_platform_database_is_gone() {
    const LABEL: &str = "platform database gone, tokens";
    let platform = Platform::on_shared_server();
    let code = "FLTTOKEN";
    let admin = platform.setup_hospital(code).await;
    let server = platform.serve(SERVE_ENV).await;
    let api = Api::new(&server);
    let token = api.token(Some(code), &admin).await;
    let warm_up = Registration::new("Warm", 0, 0);
    assert!(api.register(&token, &warm_up).await.id().is_some());

    let control = platform.control_database();
    let mut operator = platform.connect("postgres").await;
    let terminated = refuse_connections(&mut operator, &control, true).await;
    let gone = Instant::now();
    let (mut writes, mut reads) = (Vec::new(), Vec::new());
    let mut first_failure = None;
    for n in 1.. {
        if gone.elapsed() >= Duration::from_secs(5) {
            break;
        }
        let request = Registration::new("Token", 0, n);
        let sent_at = Instant::now();
        let (outcome, took) = timed(api.register(&token, &request)).await;
        let (read, _) = timed(api.post(SEARCH, json!({}), Some(&token))).await;
        if first_failure.is_none() && (outcome.code().is_some() || read.code().is_some()) {
            first_failure = Some(sent_at - gone);
        }
        writes.push(Sent {
            request,
            outcome,
            sent_at,
            took,
        });
        reads.push(read);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    refuse_connections(&mut operator, &control, false).await;
    let outage = gone.elapsed();
    println!(
        "[{LABEL}] injected: ALLOW_CONNECTIONS false on the platform database, {terminated} \
         session(s) terminated, for {:.1} s",
        outage.as_secs_f64()
    );
    println!(
        "[{LABEL}] with a token issued before: writes {:?}, reads {:?}; the first failure {} after it was gone",
        count_labels(writes.iter().map(|s| &s.outcome)),
        count_labels(reads.iter()),
        seconds(first_failure),
    );
    println!("[{LABEL}] causes logged: {:?}", logged_causes(&server));
    for outcome in writes.iter().map(|s| &s.outcome).chain(&reads) {
        assert_clean(LABEL, outcome);
    }
    let figures = Figures::of(&writes);
    assert_eq!(
        figures.acknowledged,
        figures.sent,
        "every write with an existing token succeeds: {}",
        figures.summary()
    );
    assert!(
        reads.iter().all(|r| r.code().is_none()),
        "every read with an existing token succeeds: {:?}",
        count_labels(reads.iter())
    );
    let found = platform.found(code, "Token").await;
    Ledger::new(LABEL, &writes, &[]).check(&found);
}

// ----------------------------------------------------------------------------------------
// The platform under test.

/// A [`ProcessPlatform`] whose databases are dropped when the test ends, also when it
/// fails.
struct Platform(ProcessPlatform);

impl Deref for Platform {
    type Target = ProcessPlatform;
    fn deref(&self) -> &ProcessPlatform {
        &self.0
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, possibly while unwinding: clean up on a
        // thread of its own with a runtime of its own.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("cleanup runtime");
                runtime.block_on(self.0.cleanup());
            });
        });
    }
}

impl Platform {
    fn on_shared_server() -> Self {
        Self(ProcessPlatform::new())
    }

    /// A hospital made with `hms setup-hospital`, on the ENTERPRISE plan (no patient
    /// limit, so none is counted); returns its administrator's username.
    async fn setup_hospital(&self, code: &str) -> String {
        let admin = format!("{}_admin", code.to_ascii_lowercase());
        self.run(&[
            "setup-hospital",
            "--name",
            &format!("Hospital {code}"),
            "--code",
            code,
            "--plan",
            "ENTERPRISE",
            "--admin-username",
            &admin,
            "--admin-email",
            &format!("{admin}@hospital.example"),
            "--admin-password",
            ADMIN_PASSWORD,
        ])
        .await;
        admin
    }

    /// `hms serve` reaching PostgreSQL (the platform database and every hospital's)
    /// through `proxy` only, without TLS, so that the proxy sees the statements.
    async fn serve_through(&self, proxy: &Proxy) -> ServerProcess {
        let url = format!(
            "postgres://{}@127.0.0.1:{}/{}?sslmode=disable",
            self.server.get_username(),
            proxy.port,
            self.control_database()
        );
        let mut env = SERVE_ENV.to_vec();
        env.push(("DATABASE_URL", &url));
        self.serve(&env).await
    }

    /// A proxy in front of the PostgreSQL server, for [`Self::serve_through`].
    async fn proxy(&self) -> Proxy {
        Proxy::start(self.server_address().await)
            .await
            .expect("proxy starts")
    }

    /// Hospital `code`, set up, served by a server that reaches PostgreSQL through a proxy:
    /// the proxy, the server, and the hospital administrator's token.
    async fn hospital_behind_proxy(&self, code: &str) -> (Proxy, ServerProcess, String) {
        let admin = self.setup_hospital(code).await;
        let proxy = self.proxy().await;
        let server = self.serve_through(&proxy).await;
        let token = Api::new(&server).token(Some(code), &admin).await;
        (proxy, server, token)
    }

    /// The PostgreSQL server's address, for a proxy in front of it.
    async fn server_address(&self) -> SocketAddr {
        let target = format!("{}:{}", self.server.get_host(), self.server.get_port());
        let mut addresses = tokio::net::lookup_host(&target)
            .await
            .expect("resolve the database server");
        addresses.next().expect("an address of the database server")
    }

    async fn connect(&self, database: &str) -> PgConnection {
        PgConnection::connect_with(&self.server.clone().database(database))
            .await
            .unwrap_or_else(|e| panic!("connect to {database}: {e}"))
    }

    /// What hospital `code`'s database holds now of the writes whose family names start
    /// with `tag`.
    async fn snapshot(&self, code: &str, tag: &str) -> Found {
        let mut conn = self.connect(&self.database_for(code)).await;
        let found = Found::read(&mut conn, tag).await;
        conn.close().await.expect("close");
        found
    }

    /// A count (or other number) hospital `code`'s database gives for `sql`.
    async fn scalar(&self, code: &str, sql: &str) -> i64 {
        let mut conn = self.connect(&self.database_for(code)).await;
        let found = sqlx::query_scalar(sql)
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        conn.close().await.expect("close");
        found
    }

    /// Events in hospital `code`'s log, of every kind.
    async fn event_count(&self, code: &str) -> i64 {
        self.scalar(code, "SELECT count(*) FROM events").await
    }

    /// [`Self::snapshot`], once the read model has caught up with the log (or after 30 s).
    async fn found(&self, code: &str, tag: &str) -> Found {
        let mut conn = self.connect(&self.database_for(code)).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = Found::read(&mut conn, tag).await;
            if found.rows == found.total || Instant::now() >= deadline {
                conn.close().await.expect("close");
                return found;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// [`Self::found`], once the claims of `sent` are settled. A claim stays unsettled
    /// when its write committed but the answer could not be recorded (the link was cut
    /// just then); by design the next retry with its key records it (ADR 0004), so that
    /// retry, which its client would make, is made here and added to `retried`.
    async fn found_settled(
        &self,
        label: &str,
        (api, token): (&Api, &str),
        (code, tag): (&str, &str),
        sent: &[Sent],
        retried: &mut Vec<(Registration, Outcome)>,
    ) -> Found {
        let found = self.found(code, tag).await;
        let unsettled = found.unsettled_of(sent);
        if unsettled.is_empty() {
            return found;
        }
        println!(
            "[{label}] {} claim(s) unsettled (the answer not recorded): sent again with their keys",
            unsettled.len()
        );
        let settled = retry(api, token, &unsettled, 1).await;
        retried.retain(|(r, _)| !settled.iter().any(|(s, _)| s.key == r.key));
        retried.extend(settled);
        self.found(code, tag).await
    }
}

/// Makes `database` refuse (or accept again) new connections; when refusing, also ends
/// the sessions it has. Returns how many were ended.
async fn refuse_connections(operator: &mut PgConnection, database: &str, refuse: bool) -> i64 {
    sqlx::query(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS {}",
        quoted(database),
        !refuse
    ))
    .execute(&mut *operator)
    .await
    .expect("ALTER DATABASE … ALLOW_CONNECTIONS");
    if !refuse {
        return 0;
    }
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
          WHERE datname = $1 AND pid <> pg_backend_pid()) t",
    )
    .bind(database)
    .fetch_one(operator)
    .await
    .expect("terminate sessions")
}

/// The parameters that name one stream in a load of streams, as they travel in its Bind
/// message: `commands::read_streams_sql` binds each stream's type, then its id (text as
/// is, after its length), as a request loads its user and hospital (`CurrentStates::pair`).
fn stream_parameters(aggregate_type: &str, aggregate_id: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for text in [aggregate_type, aggregate_id] {
        let length = u32::try_from(text.len()).expect("a short parameter");
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend_from_slice(text.as_bytes());
    }
    bytes
}

fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// What a hospital's database holds of one test's writes.
#[derive(Debug)]
struct Found {
    /// The ids of the `PatientRegistered` events, by family name.
    events: HashMap<String, Vec<String>>,
    /// `PatientRegistered` events in all.
    total: usize,
    /// Family names of the read model's rows, by id.
    read_model: HashMap<String, String>,
    rows: usize,
    /// Idempotency keys claimed and never settled.
    unsettled: Vec<String>,
}

impl Found {
    async fn read(conn: &mut PgConnection, tag: &str) -> Self {
        // The family name is sealed in the log (personal data): opened as readers do.
        let mut logged: Vec<(String, serde_json::Value)> = sqlx::query_as(
            "SELECT aggregate_id, payload FROM events \
              WHERE aggregate_type = 'patient' AND event_type = 'PatientRegistered'",
        )
        .fetch_all(&mut *conn)
        .await
        .expect("read the log");
        let patients: Vec<uuid::Uuid> = logged
            .iter_mut()
            .flat_map(|(_, payload)| hms_projections::personal::sealed_patients(payload))
            .collect();
        let keys = hms_projections::personal::Keys::load(&mut *conn, patients)
            .await
            .expect("the patients' keys");
        let events: Vec<(String, Option<String>)> = logged
            .into_iter()
            .map(|(id, mut payload)| {
                let record = hms_projections::personal::Record {
                    aggregate_type: "patient",
                    aggregate_id: &id,
                    sequence: 1,
                    event_type: "PatientRegistered",
                };
                keys.unseal(record, &mut payload).expect("opens");
                let family = payload["PatientRegistered"]["demographics"]["family_name"]
                    .as_str()
                    .map(str::to_owned);
                (id, family)
            })
            .collect();
        let rows: Vec<(uuid::Uuid, String)> =
            sqlx::query_as("SELECT id, family_name FROM patients")
                .fetch_all(&mut *conn)
                .await
                .expect("read the read model");
        let unsettled: Vec<String> =
            sqlx::query_scalar("SELECT key FROM idempotency_keys WHERE result IS NULL")
                .fetch_all(&mut *conn)
                .await
                .expect("read the claims");
        let mut by_family: HashMap<String, Vec<String>> = HashMap::new();
        for (id, family) in events {
            let family = family.expect("a PatientRegistered event names a family");
            if family.starts_with(tag) {
                by_family.entry(family).or_default().push(id);
            }
        }
        let read_model: HashMap<String, String> = rows
            .into_iter()
            .filter(|(_, family)| family.starts_with(tag))
            .map(|(id, family)| (id.to_string(), family))
            .collect();
        Self {
            total: by_family.values().map(Vec::len).sum(),
            rows: read_model.len(),
            events: by_family,
            read_model,
            unsettled,
        }
    }

    /// The requests of `sent` whose claims are unsettled.
    fn unsettled_of(&self, sent: &[Sent]) -> Vec<Sent> {
        sent.iter()
            .filter(|s| self.unsettled.contains(&s.request.key))
            .cloned()
            .collect()
    }

    fn ids_of(&self, family: &str) -> Vec<String> {
        self.events.get(family).cloned().unwrap_or_default()
    }
}

// ----------------------------------------------------------------------------------------
// The clients.

/// The API of one `hms serve`, as a client with a bounded wait sees it.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    address: String,
}

/// What one request got back.
#[derive(Debug, Clone)]
enum Outcome {
    /// A GraphQL answer without errors.
    Answered(Value),
    /// A GraphQL answer with errors (the whole body, for the leak check).
    Refused(Value),
    /// An HTTP status other than 200.
    Status(u16, String),
    /// No answer: the connection failed, or the client gave up waiting.
    NoAnswer(&'static str),
}

impl Api {
    fn new(server: &ServerProcess) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(CLIENT_TIMEOUT)
                .build()
                .expect("HTTP client"),
            address: server.address.clone(),
        }
    }

    async fn post(&self, query: &str, variables: Value, token: Option<&str>) -> Outcome {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.address))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Outcome::NoAnswer(why_unanswered(&e)),
        };
        let status = response.status().as_u16();
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => return Outcome::NoAnswer(why_unanswered(&e)),
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(body) if status == 200 && body["errors"].is_array() => Outcome::Refused(body),
            Ok(body) if status == 200 => Outcome::Answered(body),
            _ => Outcome::Status(status, text),
        }
    }

    async fn login(&self, hospital: Option<&str>, username: &str) -> Outcome {
        self.post(
            LOGIN,
            json!({ "input": { "hospitalCode": hospital, "username": username, "password": ADMIN_PASSWORD } }),
            None,
        )
        .await
    }

    /// Signs in, panicking with the answer if that fails.
    async fn token(&self, hospital: Option<&str>, username: &str) -> String {
        match self.login(hospital, username).await {
            Outcome::Answered(body) => body["data"]["login"]["token"]
                .as_str()
                .unwrap_or_else(|| panic!("login: {body}"))
                .to_owned(),
            other => panic!("login failed: {other:?}"),
        }
    }

    async fn register(&self, token: &str, request: &Registration) -> Outcome {
        self.post(
            REGISTER,
            json!({ "input": request.input(true) }),
            Some(token),
        )
        .await
    }

    async fn register_without_key(&self, token: &str, request: &Registration) -> Outcome {
        self.post(
            REGISTER,
            json!({ "input": request.input(false) }),
            Some(token),
        )
        .await
    }

    /// `/readyz`'s status (0: no answer).
    async fn readyz(&self) -> u16 {
        match self
            .http
            .get(format!("{}/readyz", self.address))
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        }
    }
}

fn why_unanswered(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection refused"
    } else {
        "connection lost"
    }
}

impl Outcome {
    /// The id a registration was acknowledged with.
    fn id(&self) -> Option<&str> {
        match self {
            Outcome::Answered(body) => body["data"]["registerPatient"]["id"].as_str(),
            _ => None,
        }
    }

    fn errors(&self) -> Vec<Value> {
        match self {
            Outcome::Refused(body) => body["errors"].as_array().cloned().unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// The first error's code.
    fn code(&self) -> Option<String> {
        self.errors().first().map(|e| {
            e["extensions"]["code"]
                .as_str()
                .unwrap_or("(no code)")
                .to_owned()
        })
    }

    /// No answer, or one that does not rule out success if sent again: what a client
    /// retries.
    fn worth_retrying(&self) -> bool {
        match self {
            Outcome::Answered(_) => false,
            Outcome::Refused(body) => {
                let error = &body["errors"][0]["extensions"];
                error["retryable"] == true
                    || matches!(error["code"].as_str(), Some("INTERNAL" | "RATE_LIMITED"))
            }
            Outcome::Status(..) | Outcome::NoAnswer(_) => true,
        }
    }

    /// For the figures: `OK`, the error code, `HTTP <status>` or why there was no answer.
    fn label(&self) -> String {
        match self {
            Outcome::Answered(_) => "OK".into(),
            Outcome::Refused(_) => self.code().unwrap_or_default(),
            Outcome::Status(status, _) => format!("HTTP {status}"),
            Outcome::NoAnswer(why) => format!("no answer ({why})"),
        }
    }
}

/// A failure is clean: an error with a code and nothing of SQL, connections or the
/// code's insides in it, or an HTTP status below 500.
fn assert_clean(label: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Refused(body) => {
            for error in body["errors"].as_array().into_iter().flatten() {
                assert!(
                    error["extensions"]["code"].is_string(),
                    "[{label}] an error without a code: {error}"
                );
            }
            assert_no_leak(label, body);
        }
        Outcome::Status(status, text) => {
            assert!(*status < 500, "[{label}] HTTP {status}: {text}");
        }
        Outcome::Answered(_) | Outcome::NoAnswer(_) => {}
    }
}

/// The causes the server logged for its INTERNAL and UNAVAILABLE answers, each once and
/// shortened: what the client was not told.
fn logged_causes(server: &ServerProcess) -> Vec<String> {
    let mut causes: Vec<String> = Vec::new();
    for line in server.log_text().lines() {
        let Ok(line) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let answered = match line["message"].as_str() {
            Some("internal error") => "INTERNAL",
            Some("a database is unreachable") => "UNAVAILABLE",
            _ => continue,
        };
        let cause = line["error"].as_str().unwrap_or_default();
        let first_line = cause.lines().next().unwrap_or_default();
        let cause = format!(
            "{answered}: {}",
            first_line.chars().take(160).collect::<String>()
        );
        if !causes.contains(&cause) {
            causes.push(cause);
        }
    }
    causes
}

async fn timed<T>(request: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let outcome = request.await;
    (outcome, started.elapsed())
}

/// Polls `check` until it holds; returns how long that took (`None`: not within `bound`).
async fn until<F, Fut>(bound: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < bound {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn seconds(took: Option<Duration>) -> String {
    took.map_or_else(
        || "never".to_owned(),
        |d| format!("{:.1} s", d.as_secs_f64()),
    )
}

fn count_labels<'a>(outcomes: impl Iterator<Item = &'a Outcome>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for outcome in outcomes {
        *counts.entry(outcome.label()).or_default() += 1;
    }
    counts
}

/// One client's registration: its key and family name are its own.
#[derive(Debug, Clone)]
struct Registration {
    key: String,
    family: String,
}

impl Registration {
    fn new(tag: &str, client: usize, n: usize) -> Self {
        Self {
            key: format!("{}-{client}-{n}", tag.to_ascii_lowercase()),
            family: format!("{tag}C{client}N{n}"),
        }
    }

    fn input(&self, keyed: bool) -> Value {
        let mut input = json!({
            "givenName": "Fault",
            "familyName": self.family,
            "dateOfBirth": "1980-02-29",
            "sex": "FEMALE",
        });
        if keyed {
            input["idempotencyKey"] = json!(self.key);
        }
        input
    }
}

/// A request a load client sent, and what it got.
#[derive(Debug, Clone)]
struct Sent {
    request: Registration,
    outcome: Outcome,
    sent_at: Instant,
    took: Duration,
}

impl Sent {
    fn at(request: Registration, outcome: Outcome, sent_at: Instant) -> Self {
        Self {
            request,
            outcome,
            sent_at,
            took: Duration::ZERO,
        }
    }
}

/// Clients registering patients as fast as they are answered, until told to stop.
struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
    sent: Arc<Mutex<Vec<Sent>>>,
    clients: Vec<JoinHandle<()>>,
}

/// A client gives up after this many requests, so a test's load stays bounded.
const MAX_REQUESTS_PER_CLIENT: usize = 2_000;

impl Load {
    fn start(api: &Api, token: &str, tag: &'static str, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..clients)
            .map(|client| {
                let (api, token) = (api.clone(), token.to_owned());
                let (stop, in_flight, sent) = (stop.clone(), in_flight.clone(), sent.clone());
                tokio::spawn(async move {
                    for n in 0..MAX_REQUESTS_PER_CLIENT {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let request = Registration::new(tag, client, n);
                        in_flight.fetch_add(1, Ordering::SeqCst);
                        let sent_at = Instant::now();
                        let outcome = api.register(&token, &request).await;
                        let took = sent_at.elapsed();
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        let failed = outcome.id().is_none();
                        sent.lock().expect("load record").push(Sent {
                            request,
                            outcome,
                            sent_at,
                            took,
                        });
                        if failed {
                            // As a real client would, rather than spin on a failure.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                })
            })
            .collect();
        Self {
            started: Instant::now(),
            stop,
            in_flight,
            sent,
            clients,
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until `n` requests sent at or after `since` are acknowledged; returns how
    /// long after `since` the first of them was, or how many there were by `bound`.
    async fn wait_for_acknowledged(
        &self,
        since: Instant,
        n: usize,
        bound: Duration,
    ) -> Result<Duration, usize> {
        let deadline = since.max(Instant::now()) + bound;
        loop {
            let (count, first) = {
                let sent = self.sent.lock().expect("load record");
                let acknowledged = sent
                    .iter()
                    .filter(|s| s.sent_at >= since && s.outcome.id().is_some());
                let first = acknowledged.clone().map(|s| s.sent_at + s.took).min();
                (acknowledged.count(), first)
            };
            if count >= n {
                return Ok(first.map_or(Duration::ZERO, |at| at - since));
            }
            if Instant::now() >= deadline {
                return Err(count);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// No new requests from now on; those in flight go on.
    fn stop_sending(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits for the requests in flight and returns every request sent.
    async fn finish(self) -> Vec<Sent> {
        self.stop_sending();
        for client in self.clients {
            client.await.expect("a load client");
        }
        let sent = self.sent.lock().expect("load record").clone();
        sent
    }
}

/// Prints how many of the requests of `sent` that were not acknowledged are in the log
/// all the same (`before`: read before they are sent again): their retries must answer
/// what was applied.
fn print_applied_unacknowledged(label: &str, sent: &[Sent], before: &Found) {
    let unacknowledged: Vec<&Sent> = sent.iter().filter(|s| s.outcome.id().is_none()).collect();
    let applied = unacknowledged
        .iter()
        .filter(|s| !before.ids_of(&s.request.family).is_empty())
        .count();
    println!(
        "[{label}] before the retries: {applied} of the {} request(s) not acknowledged are in the log",
        unacknowledged.len()
    );
}

/// Sends again, with the same key and input, every request of `sent` that was not
/// acknowledged and every `every`-th one that was (0: none), eight at a time; each until
/// it is acknowledged or refused for good, within [`RECOVERY_BOUND`].
async fn retry(
    api: &Api,
    token: &str,
    sent: &[Sent],
    every: usize,
) -> Vec<(Registration, Outcome)> {
    let mut acknowledged = 0;
    let requests: Vec<Registration> = sent
        .iter()
        .filter(|s| {
            if s.outcome.id().is_none() {
                return true;
            }
            acknowledged += 1;
            every != 0 && (acknowledged - 1) % every == 0
        })
        .map(|s| s.request.clone())
        .collect();
    stream::iter(requests)
        .map(|request| async move {
            let deadline = Instant::now() + RECOVERY_BOUND;
            loop {
                let outcome = api.register(token, &request).await;
                if !outcome.worth_retrying() || Instant::now() >= deadline {
                    return (request, outcome);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .buffer_unordered(CLIENTS)
        .collect()
        .await
}

// ----------------------------------------------------------------------------------------
// The figures and the checks.

/// Counts of what requests got.
struct Figures {
    sent: usize,
    acknowledged: usize,
    /// By label: error code, HTTP status or why unanswered.
    failed: BTreeMap<String, usize>,
    slowest: Duration,
}

impl Figures {
    fn of(sent: &[Sent]) -> Self {
        Self {
            sent: sent.len(),
            acknowledged: sent.iter().filter(|s| s.outcome.id().is_some()).count(),
            failed: count_labels(sent.iter().map(|s| &s.outcome).filter(|o| o.id().is_none())),
            slowest: sent.iter().map(|s| s.took).max().unwrap_or_default(),
        }
    }

    fn summary(&self) -> String {
        format!(
            "sent {}, acknowledged {}, failed {:?}, slowest {:.1} s",
            self.sent,
            self.acknowledged,
            self.failed,
            self.slowest.as_secs_f64()
        )
    }
}

/// One test's requests, with their retries: what was promised to the clients.
struct Ledger<'a> {
    label: &'a str,
    sent: &'a [Sent],
    retried: HashMap<String, Outcome>,
}

impl<'a> Ledger<'a> {
    fn new(label: &'a str, sent: &'a [Sent], retried: &[(Registration, Outcome)]) -> Self {
        Self {
            label,
            sent,
            retried: retried
                .iter()
                .map(|(r, o)| (r.key.clone(), o.clone()))
                .collect(),
        }
    }

    /// Prints the figures, then checks them against what the database holds: every
    /// failure clean and bounded; every write acknowledged (first or on retry) in the log
    /// exactly once, with the id it was answered with, and in the read model; no write
    /// applied twice; every retry of an acknowledged write answered its first id; every
    /// write that was not acknowledged acknowledged on retry; no claim left unsettled.
    fn check(&self, found: &Found) {
        let label = self.label;
        let figures = Figures::of(self.sent);
        let mut answers: HashMap<&str, String> = HashMap::new();
        let (mut retried_acknowledged, mut same_answer) = (0, 0);
        let (mut retried_unanswered, mut acknowledged_on_retry) = (0, 0);
        let mut wrong_answers = Vec::new();
        let mut never_acknowledged = Vec::new();
        for sent in self.sent {
            let family = sent.request.family.as_str();
            let retry = self.retried.get(&sent.request.key);
            match (sent.outcome.id(), retry) {
                (Some(first), Some(again)) => {
                    retried_acknowledged += 1;
                    if again.id() == Some(first) {
                        same_answer += 1;
                    } else {
                        wrong_answers.push(format!(
                            "{}: {first} then {}",
                            sent.request.key,
                            again.label()
                        ));
                    }
                    answers.insert(family, first.to_owned());
                }
                (Some(first), None) => {
                    answers.insert(family, first.to_owned());
                }
                (None, retry) => {
                    retried_unanswered += 1;
                    match retry.and_then(Outcome::id) {
                        Some(id) => {
                            acknowledged_on_retry += 1;
                            answers.insert(family, id.to_owned());
                        }
                        // Its events (if any) tell a write that stands from one that
                        // never happened.
                        None => never_acknowledged.push(format!(
                            "{}: {} then {}, in the log as {:?}",
                            sent.request.key,
                            sent.outcome.label(),
                            retry.map_or_else(|| "not retried".into(), Outcome::label),
                            found.ids_of(family)
                        )),
                    }
                }
            }
        }
        let duplicated: Vec<(&String, &Vec<String>)> = found
            .events
            .iter()
            .filter(|(_, ids)| ids.len() > 1)
            .collect();
        let mut lost = Vec::new();
        for (family, id) in &answers {
            let ids = found.ids_of(family);
            if ids != [id.clone()] || found.read_model.get(id).map(String::as_str) != Some(family) {
                lost.push(format!(
                    "{family}: answered {id}, log {ids:?}, read model {:?}",
                    found.read_model.get(id)
                ));
            }
        }
        let strays: Vec<&String> = found
            .events
            .keys()
            .filter(|family| !answers.contains_key(family.as_str()))
            .collect();

        println!("[{label}] load: {}", figures.summary());
        println!(
            "[{label}] retried with the same key: {retried_unanswered} not acknowledged \
             ({acknowledged_on_retry} then acknowledged), {retried_acknowledged} acknowledged \
             ({same_answer} answered the first id)"
        );
        println!(
            "[{label}] found afterwards: {} PatientRegistered event(s) for {} acknowledged \
             write(s), {} read-model row(s); {} duplicated, {} acknowledged but missing or \
             different, {} not acknowledged but applied, {} claim(s) unsettled",
            found.total,
            answers.len(),
            found.rows,
            duplicated.len(),
            lost.len(),
            strays.len(),
            found.unsettled.len()
        );

        for sent in self.sent {
            assert_clean(label, &sent.outcome);
            assert!(
                sent.took <= REQUEST_TIMEOUT + Duration::from_secs(2),
                "[{label}] {} took {:?}, past the request timeout",
                sent.request.key,
                sent.took
            );
        }
        for outcome in self.retried.values() {
            assert_clean(label, outcome);
        }
        assert!(
            duplicated.is_empty(),
            "[{label}] applied twice: {duplicated:?}"
        );
        assert!(
            lost.is_empty(),
            "[{label}] acknowledged writes lost: {lost:?}"
        );
        assert!(
            wrong_answers.is_empty(),
            "[{label}] retries answered otherwise than the first time: {wrong_answers:?}"
        );
        assert!(
            never_acknowledged.is_empty(),
            "[{label}] writes never acknowledged: {never_acknowledged:?}"
        );
        assert!(
            strays.is_empty(),
            "[{label}] applied without an answer: {strays:?}"
        );
        assert_eq!(
            found.rows, found.total,
            "[{label}] the read model agrees with the log"
        );
        assert!(
            found.unsettled.is_empty(),
            "[{label}] claims left unsettled: {:?}",
            found.unsettled
        );
    }
}
