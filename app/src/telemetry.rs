//! The figures this process reports, through the `metrics` facade: every metric the
//! application records is named, labelled and described here, so the list an operator
//! reads (`describe`, the README) is the list the code writes. The exporter and the
//! scrape endpoint are the server's (`hms_api::metrics`); without one installed these
//! calls cost next to nothing.
//!
//! Labels are bounded: operations are the schema's root fields, outcomes its error
//! codes, hospitals appear only on the per-hospital lag gauges, and only for hospitals
//! with an open pool in this process (at most the connection budget over the pool size).

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

pub const REQUESTS: &str = "hms_requests_total";
pub const REQUEST_DURATION: &str = "hms_request_duration_seconds";
pub const COMMAND_CONFLICTS: &str = "hms_command_conflicts_total";
pub const KEPT_STATES_ASSUMED: &str = "hms_kept_states_assumed_total";
pub const LOGIN_REFUSALS: &str = "hms_login_refusals_total";
pub const PROJECTION_LAG_EVENTS: &str = "hms_projection_lag_events";
pub const PROJECTION_LAG_SECONDS: &str = "hms_projection_lag_seconds";
pub const DB_CONNECTIONS: &str = "hms_db_connections";
pub const DB_CONNECTION_BUDGET: &str = "hms_db_connection_budget";
pub const TENANT_POOLS_OPEN: &str = "hms_tenant_pools_open";
pub const SERVER_CONNECTIONS: &str = "hms_db_server_connections";
pub const SERVER_CONNECTION_BUDGET: &str = "hms_db_server_connection_budget";
pub const PROVISIONINGS: &str = "hms_provisionings_total";
pub const PROVISIONING_DURATION: &str = "hms_provisioning_duration_seconds";
pub const SPARE_DATABASES: &str = "hms_spare_databases";
pub const SPARES_CHANGED: &str = "hms_spare_databases_changed_total";
pub const SPARE_DURATION: &str = "hms_spare_database_seconds";
pub const RESERVATIONS_RELEASED: &str = "hms_reservation_sweep_releases_total";

/// Registers the help text of every metric (once per process, before the first scrape).
pub fn describe() {
    describe_counter!(
        REQUESTS,
        "GraphQL requests by operation (kind.rootField) and outcome (OK or the first error code)"
    );
    describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "GraphQL request latency by operation"
    );
    describe_counter!(
        COMMAND_CONFLICTS,
        "Appends that lost a version race, by aggregate and resolution: retried by the server, or refused (CONFLICT, the client's expectedVersion was stale or retries ran out)"
    );
    describe_counter!(
        KEPT_STATES_ASSUMED,
        "Commands decided on this process's kept state of their stream without reading it, by aggregate and outcome: confirmed by the append, or read_again (another process wrote the stream, or the command was refused or lost a race on the assumed state)"
    );
    describe_counter!(
        LOGIN_REFUSALS,
        "Sign-ins refused, by reason: invalid_credentials, throttled (too many failures), busy (too many password checks at once)"
    );
    describe_counter!(
        hms_projections::runner::EVENTS_APPLIED,
        "Events applied to read models, by projector (its rate is the catch-up rate)"
    );
    describe_gauge!(
        PROJECTION_LAG_EVENTS,
        "Events not yet applied, per hospital with an open pool and group (read_models: the slowest read model; seal: the log sealer). Counted up to 100000"
    );
    describe_gauge!(
        PROJECTION_LAG_SECONDS,
        metrics::Unit::Seconds,
        "Age of the oldest event not yet applied (0 when none waits), per hospital with an open pool and group; for group=seal it is the age of the oldest unsealed event"
    );
    describe_gauge!(
        DB_CONNECTIONS,
        "Database connections of this process, by pool (platform, tenants) and state (open, in_use)"
    );
    describe_gauge!(
        DB_CONNECTION_BUDGET,
        "Most connections a pool may hold (tenants: all tenant pools together)"
    );
    describe_gauge!(TENANT_POOLS_OPEN, "Tenant pools open in this process");
    describe_gauge!(
        SERVER_CONNECTIONS,
        "Connections of this process to one database server's hospital databases, by server and state (open, in_use)"
    );
    describe_gauge!(
        SERVER_CONNECTION_BUDGET,
        "Most connections this process may hold to one database server's hospital databases"
    );
    describe_counter!(
        PROVISIONINGS,
        "Hospital onboardings run by this process, by outcome"
    );
    describe_histogram!(
        PROVISIONING_DURATION,
        metrics::Unit::Seconds,
        "Time to provision a hospital's database (queueing for the provisioning lock included)"
    );
    describe_gauge!(
        SPARE_DATABASES,
        "Usable spare tenant databases, ready for the next onboarding"
    );
    describe_counter!(
        SPARES_CHANGED,
        "Spare databases created or dropped (change=created|dropped)"
    );
    describe_histogram!(
        SPARE_DURATION,
        metrics::Unit::Seconds,
        "Time to make one spare database (a template copy), averaged over each refill"
    );
    describe_counter!(
        RESERVATIONS_RELEASED,
        "Schedule slots left held by a broken booking and released by the sweep"
    );
}

/// One GraphQL request answered.
pub fn request(operation: &str, outcome: &str, elapsed: Duration) {
    counter!(REQUESTS, "operation" => operation.to_owned(), "outcome" => outcome.to_owned())
        .increment(1);
    histogram!(REQUEST_DURATION, "operation" => operation.to_owned()).record(elapsed.as_secs_f64());
}

/// An append lost a version race on `aggregate`; `retried` when the server decides
/// again on fresh state, else the client gets CONFLICT.
pub fn command_conflict(aggregate: &str, retried: bool) {
    let resolution = if retried { "retried" } else { "refused" };
    counter!(COMMAND_CONFLICTS, "aggregate" => aggregate.to_owned(), "resolution" => resolution)
        .increment(1);
}

/// A command decided on a kept state it did not read (docs/adr/0016): the append
/// `confirmed` it, or it was decided again on a read.
pub fn kept_state_assumed(aggregate: &str, confirmed: bool) {
    let outcome = if confirmed { "confirmed" } else { "read_again" };
    counter!(KEPT_STATES_ASSUMED, "aggregate" => aggregate.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// Why a sign-in was refused.
#[derive(Debug, Clone, Copy)]
pub enum LoginRefusal {
    InvalidCredentials,
    Throttled,
    Busy,
}

pub fn login_refused(reason: LoginRefusal) {
    let reason = match reason {
        LoginRefusal::InvalidCredentials => "invalid_credentials",
        LoginRefusal::Throttled => "throttled",
        LoginRefusal::Busy => "busy",
    };
    counter!(LOGIN_REFUSALS, "reason" => reason).increment(1);
}

/// The lag of one hospital's projectors, as last measured.
pub fn projection_lag(hospital: &str, lag: &hms_projections::Lag) {
    let labels = [
        ("hospital", hospital.to_owned()),
        ("group", lag.group.to_owned()),
    ];
    gauge!(PROJECTION_LAG_EVENTS, &labels).set(lag.events as f64);
    gauge!(PROJECTION_LAG_SECONDS, &labels).set(lag.seconds);
}

/// A pool's connections now, against what it may hold.
pub fn connections(pool: &'static str, open: u32, in_use: u32, budget: u32) {
    gauge!(DB_CONNECTIONS, "pool" => pool, "state" => "open").set(f64::from(open));
    gauge!(DB_CONNECTIONS, "pool" => pool, "state" => "in_use").set(f64::from(in_use));
    gauge!(DB_CONNECTION_BUDGET, "pool" => pool).set(f64::from(budget));
}

/// The tenant connections to database server `server` (`hms servers list`).
pub fn server_connections(server: &str, open: u32, in_use: u32, budget: u32) {
    let server = server.to_owned();
    gauge!(SERVER_CONNECTIONS, "server" => server.clone(), "state" => "open").set(f64::from(open));
    gauge!(SERVER_CONNECTIONS, "server" => server.clone(), "state" => "in_use")
        .set(f64::from(in_use));
    gauge!(SERVER_CONNECTION_BUDGET, "server" => server).set(f64::from(budget));
}

pub fn tenant_pools_open(open: usize) {
    gauge!(TENANT_POOLS_OPEN).set(open as f64);
}

/// One onboarding finished (`outcome`: ready, resumed, refused, failed).
pub fn provisioned(outcome: &'static str, elapsed: Duration) {
    counter!(PROVISIONINGS, "outcome" => outcome).increment(1);
    histogram!(PROVISIONING_DURATION).record(elapsed.as_secs_f64());
}

pub fn spare_databases(usable: usize) {
    gauge!(SPARE_DATABASES).set(usable as f64);
}

pub fn spares_changed(created: usize, dropped: usize) {
    counter!(SPARES_CHANGED, "change" => "created").increment(created as u64);
    counter!(SPARES_CHANGED, "change" => "dropped").increment(dropped as u64);
}

/// A refill made `created` spares in `elapsed`.
pub fn spares_made(created: usize, elapsed: Duration) {
    let each = elapsed.as_secs_f64() / created.max(1) as f64;
    let spare_seconds = histogram!(SPARE_DURATION);
    for _ in 0..created {
        spare_seconds.record(each);
    }
}

pub fn reservations_released(count: usize) {
    counter!(RESERVATIONS_RELEASED).increment(count as u64);
}
