//! The pool registry: one small pool per tenant, opened on first use, under a
//! connection budget per database server for the whole process.
//!
//! Invariant: on each server, the sum of `max_connections` over the open pools, the
//! pools still closing (until PostgreSQL no longer lists their backends), the growths
//! waiting for room and the one watcher connection never exceeds that server's budget,
//! so however many hospitals there are, this process never holds more than `budget`
//! connections to one server. A pool is only closed while nobody holds a lease on it,
//! and pools unused for `idle_ttl` are closed by a sweeper.
//!
//! A pool starts with one connection and grows to `per_tenant` when its hospital is busy
//! (a request finds its connections all in use). Every connection to a database not yet
//! used pays for a new backend and its catalog caches (tens of ms of PostgreSQL's time),
//! so a hospital seen rarely costs one such connection, not `per_tenant`, and the budget
//! keeps as many hospitals' connections warm as it has connections. A busy hospital's
//! pool is replaced by a bigger one (the old one closes when its leases end), making room
//! if needed by closing pools nobody used for [`GROWTH_MAY_EVICT`]: the bigger pool is
//! only opened once their backends have exited.
//!
//! A closed connection's backend is listed by PostgreSQL, and counts against its
//! `max_connections`, until it has exited, which takes a moment after the pool has said
//! goodbye (longer on a busy server). So each pool records its connections' backend
//! pids, and a closed pool's connections count against the budget until a server's
//! watcher connection no longer finds them in `pg_stat_activity` (waiting at most
//! [`BACKEND_EXIT_BOUND`]).
//!
//! Whether a hospital is open is the platform database's fact, not this process's: an
//! open pool is re-checked against the directory when its last check is older than
//! [`STATUS_RECHECK`], so a hospital closed through any replica stops being served by
//! every replica within that bound.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::Notify;

use super::directory::{TenantDirectory, TenantRecord};
use super::servers::ServerDirectory;
use super::writer::Credentials;
use super::{Result, TenancyError};

/// A pool unused this long may be closed to let a busy hospital's pool grow.
const GROWTH_MAY_EVICT: Duration = Duration::from_secs(5);

/// How often, and at most how long, a closed pool's backends are looked for until they
/// have exited. Past the bound (a pid reused by another backend, a loaded server slow
/// to end one) they are taken as gone: a longer bound starves cold hospitals of room
/// (measured: with 10 s, sign-ins of a 200-hospital load under a budget of 12 were
/// turned away as busy on a loaded machine).
const BACKEND_EXIT_POLL: Duration = Duration::from_millis(2);
const BACKEND_EXIT_BOUND: Duration = Duration::from_secs(1);

/// What is waited when a server's watcher cannot tell whether backends have exited.
const BACKEND_EXIT_BLIND: Duration = Duration::from_millis(100);

/// A pool grows beyond `per_tenant` (up to `burst`, doubling) only while this fraction
/// of its server's budget stays free after the growth: room for other hospitals to open
/// and grow at once. It never evicts another pool for that.
const BURST_SPARE_DIVISOR: u32 = 4;

/// A pool grown beyond `per_tenant` whose connections were last all in use this long
/// ago shrinks back to `per_tenant`.
const BURST_SHRINK_AFTER: Duration = Duration::from_secs(30);

/// The watcher connection each server's budget holds for `pg_stat_activity`.
const WATCHER_CONNECTIONS: u32 = 1;

/// How long `get` waits for a lease to be released when the budget is exhausted.
const WAIT_FOR_CAPACITY: Duration = Duration::from_secs(10);

/// How stale this process's knowledge that a hospital is open may be: a hospital closed
/// by another replica is refused here within this bound.
pub const STATUS_RECHECK: Duration = Duration::from_secs(2);

/// While the platform database cannot be reached, a hospital this process saw open
/// within this bound keeps being served (its data lives in its own database): no
/// closure can be recorded while the platform is down, so what is missed is only a
/// closure recorded in the bound before the outage, enforced once the platform is back.
/// A hospital not seen open that recently is refused.
pub const PLATFORM_OUTAGE_GRACE: Duration = Duration::from_secs(60);

/// A pooled connection idle at least this long is pinged before it is handed out.
///
/// sqlx pings every connection it hands out by default: a round trip, and a wake-up of
/// the backend, for each use. On the write path a request takes a connection four or
/// five times (authorization, MRN, append, read-your-writes round, answer), and on two
/// cores these wake-ups are what the CPU goes to (ADR 0006). A connection in steady use
/// was working a moment ago; one that sat idle may have been cut (a server restart, a
/// dropped link), and is checked. One cut while briefly idle fails its statement as
/// unreachable, which answers as any request in flight at that moment does: retryable,
/// nothing written.
pub const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// Options every pool the serving path uses starts from (tenants', the platform's, and
/// each server's watcher, which polls every few ms while a pool closes): the acquire
/// ping only after [`PING_WHEN_IDLE_FOR`].
pub fn serving_pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Connections a busy tenant's pool grows to (a pool starts with one).
    pub per_tenant: u32,
    /// Connections a very busy tenant's pool may grow to beyond `per_tenant`, while its
    /// server's budget keeps [`BURST_SPARE_DIVISOR`]⁻¹ of it free for other hospitals.
    pub burst: u32,
    /// Connections the tenant pools on one server may hold together, unless the server
    /// has a budget of its own (`hms servers add --budget`).
    pub budget: u32,
    /// Close a pool nobody used for this long.
    pub idle_ttl: Duration,
}

/// What [`PoolRegistry::usage`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolUsage {
    pub pools: usize,
    /// Connections open over all tenant pools, and of those the ones in use.
    pub connections: u32,
    pub in_use: u32,
    pub budget: u32,
}

/// An open tenant database.
#[derive(Debug)]
pub struct TenantDb {
    pub code: String,
    /// The hospital's code inside its own database ([`super::TenantRecord::log_identity`]).
    pub log_identity: String,
    pub database_name: String,
    /// The database server it is on.
    pub server: String,
    pub pool: PgPool,
    /// The pool's `max_connections`: what it takes of its server's budget.
    connections: u32,
    /// The backends of the connections this pool opened.
    backends: Arc<Mutex<Vec<Backend>>>,
}

/// One backend a pool's connection talks to: its pid, and a moment of the server's
/// clock when it was already running. A pid alone is not enough: Linux reuses pids
/// (32,768 by default), and a server forking backends for many hospitals soon gives a
/// long-lived pool's old pid to another backend, which must not count as this one.
#[derive(Debug, Clone, Copy)]
struct Backend {
    pid: i32,
    running_at: DateTime<Utc>,
}

impl TenantDb {
    /// A lazily connected pool of `connections` to one hospital's database, recording
    /// its connections' backend pids.
    fn open(
        code: &str,
        log_identity: &str,
        database_name: &str,
        server: &str,
        options: PgConnectOptions,
        connections: u32,
        idle_ttl: Duration,
    ) -> Self {
        let backends = Arc::new(Mutex::new(Vec::new()));
        let recorded = backends.clone();
        let pool = serving_pool_options()
            .max_connections(connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .idle_timeout(idle_ttl)
            .after_connect(move |conn, _| {
                let recorded = recorded.clone();
                Box::pin(async move {
                    let (pid, running_at): (i32, DateTime<Utc>) =
                        sqlx::query_as("SELECT pg_backend_pid(), now()")
                            .fetch_one(conn)
                            .await?;
                    recorded
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Backend { pid, running_at });
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        Self {
            code: code.to_owned(),
            log_identity: log_identity.to_owned(),
            database_name: database_name.to_owned(),
            server: server.to_owned(),
            pool,
            connections,
            backends,
        }
    }
}

/// Closes `pool` and every connection it holds.
///
/// sqlx's `Pool::close` can return with one connection left idle in the closed pool: a
/// connection being given back (its on-release ping runs while the pool closes) is
/// queued as idle after `close` made its last pass (sqlx-core 0.8.6, `PoolInner::close`).
/// Its backend then sits idle until the pool value is dropped, counted against the
/// server's budget for nothing (measured: 8-19 such backends, each for the whole
/// [`BACKEND_EXIT_BOUND`], in a 200-hospital fleet bench). Once `close` has returned,
/// every connection is idle or closed, so a second pass closes what is left. (The
/// registry also drops a closed pool before waiting for its backends: with the second
/// pass alone 4 such waits remained in the same bench, with both none.)
pub async fn close_pool(pool: &PgPool) {
    pool.close().await;
    if pool.size() > 0 {
        pool.close().await;
    }
}

/// A tenant's pool, held for the duration of one piece of work. While any lease is
/// alive, the pool stays open.
#[derive(Debug)]
pub struct TenantLease {
    db: Option<Arc<TenantDb>>,
    released: Arc<Notify>,
    /// Access tokens issued before this instant are refused (the hospital was closed
    /// then), as the directory said at most [`STATUS_RECHECK`] ago.
    pub tokens_not_before: Option<DateTime<Utc>>,
}

impl Deref for TenantLease {
    type Target = TenantDb;
    fn deref(&self) -> &TenantDb {
        self.db
            .as_deref()
            .unwrap_or_else(|| unreachable!("a lease holds its db until dropped"))
    }
}

impl Drop for TenantLease {
    fn drop(&mut self) {
        // Drop the Arc first, so a waiter woken below sees the pool as unleased.
        drop(self.db.take());
        self.released.notify_waiters();
    }
}

struct Entry {
    db: Arc<TenantDb>,
    last_used: Instant,
    /// When the directory last said this hospital is open.
    checked_at: Instant,
    tokens_not_before: Option<DateTime<Utc>>,
    /// A bigger pool is waiting for evicted pools' backends to exit.
    growing: bool,
    /// When a request last found every connection of the pool in use.
    last_saturated: Instant,
}

impl Entry {
    fn leased(&self) -> bool {
        Arc::strong_count(&self.db) > 1
    }
}

struct Inner {
    servers: ServerDirectory,
    credentials: Credentials,
    /// Each server's address (as the writer) and budget, once read.
    server_slots: Mutex<HashMap<String, ServerSlot>>,
    /// Connections that count against a server's budget outside `open`: pools taken out
    /// of it and still closing, and growths waiting for room. Locked after `open` when
    /// both are.
    held: Mutex<HashMap<String, u32>>,
    directory: TenantDirectory,
    settings: PoolSettings,
    open: Mutex<HashMap<String, Entry>>,
    released: Arc<Notify>,
}

#[derive(Clone)]
struct ServerSlot {
    options: PgConnectOptions,
    budget: u32,
    /// One connection to the server's `postgres` database, opened on first need and
    /// kept, to see in `pg_stat_activity` when closed backends have exited.
    watcher: PgPool,
}

#[derive(Clone)]
pub struct PoolRegistry {
    inner: Arc<Inner>,
}

/// What `touch` saw of an open pool.
struct Touched {
    db: Arc<TenantDb>,
    checked_at: Instant,
    tokens_not_before: Option<DateTime<Utc>>,
}

enum Step {
    Ready(Arc<TenantDb>),
    Close(Arc<TenantDb>),
    Wait,
}

impl PoolRegistry {
    /// Tenant pools connect with `credentials` to the server `servers` names for each.
    pub fn new(
        servers: ServerDirectory,
        credentials: Credentials,
        directory: TenantDirectory,
        settings: PoolSettings,
    ) -> Result<Self> {
        if settings.per_tenant == 0 || settings.budget < settings.per_tenant + WATCHER_CONNECTIONS {
            return Err(TenancyError::Config(format!(
                "the tenant connection budget ({}) must hold at least one pool of {} connections and the watcher",
                settings.budget, settings.per_tenant
            )));
        }
        if settings.burst < settings.per_tenant {
            return Err(TenancyError::Config(format!(
                "a busy hospital's pool may grow to {} connections, fewer than its usual {}",
                settings.burst, settings.per_tenant
            )));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                servers,
                credentials,
                server_slots: Mutex::new(HashMap::new()),
                held: Mutex::new(HashMap::new()),
                directory,
                settings,
                open: Mutex::new(HashMap::new()),
                released: Arc::new(Notify::new()),
            }),
        })
    }

    fn open_map(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent (every
        // mutation is a single insert or remove), so a poisoned lock is still usable.
        self.inner.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Codes of the hospitals whose pools are open (the recently active ones).
    pub fn open_codes(&self) -> Vec<String> {
        self.open_map().keys().cloned().collect()
    }

    /// The connections hospital `code`'s open pool may hold (it grows when busy), if open.
    pub fn pool_connections(&self, code: &str) -> Option<u32> {
        self.open_map().get(code).map(|e| e.db.connections)
    }

    /// How many tenant pools are open now.
    pub fn open_pools(&self) -> usize {
        self.open_map().len()
    }

    /// The tenant connections now, over every open pool, against the budgets of the
    /// servers this process has used (the configured budget before any).
    pub fn usage(&self) -> PoolUsage {
        let by_server = self.usage_by_server();
        let mut usage = PoolUsage::default();
        for (_, u) in &by_server {
            usage.pools += u.pools;
            usage.connections += u.connections;
            usage.in_use += u.in_use;
            usage.budget += u.budget;
        }
        if by_server.is_empty() {
            usage.budget = self.inner.settings.budget;
        }
        usage
    }

    /// [`PoolRegistry::usage`] per database server this process has used, by name.
    pub fn usage_by_server(&self) -> Vec<(String, PoolUsage)> {
        let mut by_server: std::collections::BTreeMap<String, PoolUsage> = self
            .slots()
            .iter()
            .map(|(name, slot)| {
                let usage = PoolUsage {
                    budget: slot.budget,
                    ..PoolUsage::default()
                };
                (name.clone(), usage)
            })
            .collect();
        for entry in self.open_map().values() {
            let usage = by_server.entry(entry.db.server.clone()).or_default();
            let connections = entry.db.pool.size();
            usage.pools += 1;
            usage.connections += connections;
            usage.in_use += connections.saturating_sub(entry.db.pool.num_idle() as u32);
        }
        by_server.into_iter().collect()
    }

    /// A lease on the pool of an open hospital. Unknown, unfinished and closed hospitals
    /// are `NotFound`; callers answer those the same way as a wrong id.
    pub async fn get(&self, code: &str) -> Result<TenantLease> {
        let deadline = Instant::now() + WAIT_FOR_CAPACITY;
        let mut looked_up = None;
        loop {
            let released = self.inner.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();

            if let Some(mut entry) = self.touch(code) {
                entry.db = self.grow_if_busy(code, entry.db);
                if entry.checked_at.elapsed() < STATUS_RECHECK {
                    return Ok(self.lease(entry.db, entry.tokens_not_before));
                }
                match self.recheck(code, entry).await? {
                    Some(lease) => return Ok(lease),
                    // Moved to another server or database: opened again where it is now.
                    None => continue,
                }
            }
            let record = match looked_up.take() {
                Some(r) => r,
                None => self
                    .inner
                    .directory
                    .get(code)
                    .await?
                    .filter(|r| r.is_open())
                    .ok_or_else(|| TenancyError::NotFound(code.to_owned()))?,
            };
            let slot = self.server_slot(&record.db_server).await?;
            match self.reserve(&record, &slot, record.tokens_not_before) {
                Step::Ready(db) => return Ok(self.lease(db, record.tokens_not_before)),
                Step::Close(victim) => {
                    self.close_retired(victim).await;
                    looked_up = Some(record);
                }
                Step::Wait => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero()
                        || tokio::time::timeout(remaining, released).await.is_err()
                    {
                        return Err(TenancyError::Busy);
                    }
                    looked_up = Some(record);
                }
            }
        }
    }

    /// Asks the directory again whether an open pool's hospital is still open: if so the
    /// check is renewed; if it was closed (by any replica) the pool is dropped here and the
    /// hospital is `NotFound`; if it was moved (`hms move-hospital`) the pool is dropped
    /// and `None` says to open the hospital where it is now.
    async fn recheck(&self, code: &str, seen: Touched) -> Result<Option<TenantLease>> {
        let Touched {
            db,
            checked_at,
            tokens_not_before,
        } = seen;
        let record = match self.inner.directory.get(code).await {
            Ok(record) => record,
            Err(TenancyError::Database(e))
                if super::platform::is_unreachable(&e)
                    && checked_at.elapsed() < PLATFORM_OUTAGE_GRACE =>
            {
                tracing::warn!(code, error = %e, "platform database unreachable: serving the hospital on its status seen {:?} ago", checked_at.elapsed());
                return Ok(Some(self.lease(db, tokens_not_before)));
            }
            Err(e) => return Err(e),
        };
        let record = record.filter(|r| r.is_open());
        let moved = record
            .as_ref()
            .is_some_and(|r| r.database_name != db.database_name || r.db_server != db.server);
        let record = record.filter(|_| !moved);
        let Some(record) = record else {
            let removed = {
                let mut open = self.open_map();
                match open.get(code) {
                    Some(entry) if Arc::ptr_eq(&entry.db, &db) => open.remove(code),
                    _ => None,
                }
            };
            if let Some(entry) = removed {
                if moved {
                    tracing::info!(code, "hospital moved: its pool here is dropped");
                } else {
                    tracing::info!(code, "hospital closed: its pool is dropped in this process");
                }
                // Closing waits for connections in use; no request waits for that.
                self.retire(&entry.db);
                let registry = self.clone();
                tokio::spawn(async move { registry.close_retired(entry.db).await });
            }
            if moved {
                return Ok(None);
            }
            return Err(TenancyError::NotFound(code.to_owned()));
        };
        if let Some(entry) = self.open_map().get_mut(code) {
            if Arc::ptr_eq(&entry.db, &db) {
                entry.checked_at = Instant::now();
                entry.tokens_not_before = record.tokens_not_before;
            }
        }
        Ok(Some(self.lease(db, record.tokens_not_before)))
    }

    fn lease(&self, db: Arc<TenantDb>, tokens_not_before: Option<DateTime<Utc>>) -> TenantLease {
        TenantLease {
            db: Some(db),
            released: self.inner.released.clone(),
            tokens_not_before,
        }
    }

    fn touch(&self, code: &str) -> Option<Touched> {
        let mut open = self.open_map();
        let entry = open.get_mut(code)?;
        entry.last_used = Instant::now();
        Some(Touched {
            db: entry.db.clone(),
            checked_at: entry.checked_at,
            tokens_not_before: entry.tokens_not_before,
        })
    }

    /// Server `name`'s address (as the writer) and budget, read once per process (a
    /// server's address never changes while hospitals are on it).
    async fn server_slot(&self, name: &str) -> Result<ServerSlot> {
        let known = self.slots().get(name).cloned();
        if let Some(slot) = known {
            return Ok(slot);
        }
        let options = self.inner.servers.options(name).await?;
        let budget = self
            .inner
            .servers
            .connection_budget(name)
            .await?
            .unwrap_or(self.inner.settings.budget)
            .max(self.inner.settings.per_tenant + WATCHER_CONNECTIONS);
        let options = self.inner.credentials.on(&options);
        let watcher = serving_pool_options()
            .max_connections(WATCHER_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(2))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(options.clone().database("postgres"));
        let slot = ServerSlot {
            options,
            budget,
            watcher,
        };
        self.slots().insert(name.to_owned(), slot.clone());
        Ok(slot)
    }

    /// Under the lock: open a pool if its server's budget allows, else pick the least
    /// recently used unleased pool on that server to close, else wait.
    fn reserve(
        &self,
        record: &TenantRecord,
        slot: &ServerSlot,
        tokens_not_before: Option<DateTime<Utc>>,
    ) -> Step {
        let code = record.code.as_str();
        let database_name = record.database_name.as_str();
        let mut open = self.open_map();
        if let Some(entry) = open.get_mut(code) {
            entry.last_used = Instant::now();
            return Step::Ready(entry.db.clone());
        }
        let server = record.db_server.as_str();
        if self.reserved_on(&open, server) < slot.budget {
            let db = Arc::new(TenantDb::open(
                code,
                record.log_identity(),
                database_name,
                server,
                slot.options.clone().database(database_name),
                1,
                self.inner.settings.idle_ttl,
            ));
            open.insert(
                code.to_owned(),
                Entry {
                    db: db.clone(),
                    last_used: Instant::now(),
                    checked_at: Instant::now(),
                    tokens_not_before,
                    growing: false,
                    last_saturated: Instant::now(),
                },
            );
            return Step::Ready(db);
        }
        let victim = open
            .iter()
            .filter(|(_, e)| e.db.server == server && !e.leased())
            .min_by_key(|(_, e)| e.last_used)
            .map(|(k, _)| k.clone());
        match victim.and_then(|k| open.remove(&k)) {
            Some(entry) => {
                self.retire(&entry.db);
                Step::Close(entry.db)
            }
            None => Step::Wait,
        }
    }

    /// Connections counted against `server`'s budget: the open pools', the ones held
    /// outside `open` (closing pools, waiting growths) and the watcher's.
    fn reserved_on(&self, open: &HashMap<String, Entry>, server: &str) -> u32 {
        let open: u32 = open
            .values()
            .filter(|e| e.db.server == server)
            .map(|e| e.db.connections)
            .sum();
        open + self.held_map().get(server).copied().unwrap_or(0) + WATCHER_CONNECTIONS
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, ServerSlot>> {
        self.inner
            .server_slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn held_map(&self) -> MutexGuard<'_, HashMap<String, u32>> {
        self.inner.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `connections` on `server` as held outside `open`.
    fn hold(&self, server: &str, connections: u32) {
        *self.held_map().entry(server.to_owned()).or_default() += connections;
    }

    /// Returns `connections` held on `server` to its budget and wakes those waiting.
    fn unhold(&self, server: &str, connections: u32) {
        if let Some(n) = self.held_map().get_mut(server) {
            *n = n.saturating_sub(connections);
        }
        self.inner.released.notify_waiters();
    }

    /// Counts a pool just taken out of `open` as closing.
    fn retire(&self, db: &TenantDb) {
        self.hold(&db.server, db.connections);
    }

    /// Closes a retired pool once its leases have ended (a closed pool refuses new
    /// acquisitions, and a request that took the pool before it was replaced still uses
    /// it) and returns its connections to the budget once their backends have exited.
    async fn close_retired(&self, db: Arc<TenantDb>) {
        loop {
            let released = self.inner.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if Arc::strong_count(&db) == 1 {
                break;
            }
            // A lease wakes this when it ends; the timeout only guards a missed wake-up.
            let _ = tokio::time::timeout(Duration::from_secs(1), released).await;
        }
        close_pool(&db.pool).await;
        let (code, server, connections) = (db.code.clone(), db.server.clone(), db.connections);
        let backends = db
            .backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // The last handle: dropping it drops the pool, and with it the socket of any
        // connection sqlx still left idle in it, whose backend then exits too.
        drop(db);
        self.await_backends_exit(&code, &server, &backends).await;
        self.unhold(&server, connections);
    }

    /// Waits until PostgreSQL no longer lists `backends` of hospital `code`'s closed
    /// pool on `server` (see the module's documentation), at most
    /// [`BACKEND_EXIT_BOUND`].
    async fn await_backends_exit(&self, code: &str, server: &str, backends: &[Backend]) {
        let (pids, running_at): (Vec<i32>, Vec<DateTime<Utc>>) =
            backends.iter().map(|b| (b.pid, b.running_at)).unzip();
        if pids.is_empty() {
            return;
        }
        let Some(watcher) = self.slots().get(server).map(|s| s.watcher.clone()) else {
            tokio::time::sleep(BACKEND_EXIT_BLIND).await;
            return;
        };
        let deadline = Instant::now() + BACKEND_EXIT_BOUND;
        loop {
            // A backend that started after the moment recorded is another one that was
            // given the same pid. Each listed one says what it is doing, for the
            // warning below (state, wait and for how long; never the statement).
            let listed: std::result::Result<Vec<String>, sqlx::Error> = sqlx::query_scalar(
                "SELECT format('%s %s/%s for %s ms', a.pid, coalesce(a.state, '-'), \
                               coalesce(a.wait_event, '-'), \
                               round(extract(epoch FROM now() - a.state_change) * 1000)) \
                   FROM pg_stat_activity a \
                   JOIN unnest($1::int[], $2::timestamptz[]) AS b(pid, running_at) \
                     ON a.pid = b.pid AND a.backend_start <= b.running_at",
            )
            .bind(&pids)
            .bind(&running_at)
            .fetch_all(&watcher)
            .await;
            match listed {
                Ok(listed) if listed.is_empty() => return,
                Ok(_) if Instant::now() < deadline => tokio::time::sleep(BACKEND_EXIT_POLL).await,
                Ok(listed) => {
                    tracing::warn!(code, backends = %listed.join(", "), "closed backends still listed after {BACKEND_EXIT_BOUND:?}; counted as gone");
                    return;
                }
                Err(e) => {
                    tracing::warn!(server, error = %e, "cannot see whether closed backends exited");
                    tokio::time::sleep(BACKEND_EXIT_BLIND).await;
                    return;
                }
            }
        }
    }

    /// When every connection of `db`'s pool is in use and it may grow, [`Self::grow`]s
    /// it. Returns the pool to use.
    fn grow_if_busy(&self, code: &str, db: Arc<TenantDb>) -> Arc<TenantDb> {
        let saturated = db.pool.size() >= db.connections && db.pool.num_idle() == 0;
        if !saturated {
            return db;
        }
        if let Some(entry) = self.open_map().get_mut(code) {
            entry.last_saturated = Instant::now();
        }
        if db.connections < self.inner.settings.burst {
            self.grow(code, db)
        } else {
            db
        }
    }

    /// A wider pool for the hospital whose pool `pool` is, for a projection backlog
    /// (the runner's [`hms_projections::runner::Widener`]).
    pub fn widener(&self) -> hms_projections::runner::Widener {
        let registry = self.clone();
        Arc::new(move |pool: &PgPool| {
            let options = pool.connect_options();
            let database = options.get_database()?;
            let (code, db) = registry
                .open_map()
                .iter()
                .find(|(_, e)| e.db.database_name == database)
                .map(|(code, e)| (code.clone(), e.db.clone()))?;
            let grown = registry.grow(&code, db);
            (grown.connections > 1).then(|| hms_projections::runner::WiderPool {
                pool: grown.pool.clone(),
                guard: Box::new(grown),
            })
        })
    }

    /// Replaces `db`'s pool by one of `per_tenant` connections if its server's budget has
    /// room for both while the old one finishes its work, closing pools unused for
    /// [`GROWTH_MAY_EVICT`] to make it. With room at hand the bigger pool is returned;
    /// when pools had to be closed it replaces the old one once their backends have
    /// exited, and the old one is returned meanwhile.
    fn grow(&self, code: &str, db: Arc<TenantDb>) -> Arc<TenantDb> {
        let per_tenant = self.inner.settings.per_tenant;
        let Some(budget) = self.slots().get(&db.server).map(|slot| slot.budget) else {
            return db;
        };
        let mut open = self.open_map();
        match open.get(code) {
            Some(entry) if Arc::ptr_eq(&entry.db, &db) && !entry.growing => {}
            // Growing already, replaced meanwhile (grown by another request) or closed.
            Some(entry) => return entry.db.clone(),
            None => return db,
        }
        if db.connections >= per_tenant {
            return self.burst(&mut open, code, db, budget);
        }
        let needed = (self.reserved_on(&open, &db.server) + per_tenant).saturating_sub(budget);
        let mut evictable: Vec<(&String, &Entry)> = open
            .iter()
            .filter(|(k, e)| {
                k.as_str() != code
                    && e.db.server == db.server
                    && !e.leased()
                    && e.last_used.elapsed() >= GROWTH_MAY_EVICT
            })
            .collect();
        evictable.sort_by_key(|(_, e)| e.last_used);
        let mut freed = 0;
        let mut victims = Vec::new();
        for (k, e) in evictable {
            if freed >= needed {
                break;
            }
            freed += e.db.connections;
            victims.push(k.clone());
        }
        if freed < needed {
            return db;
        }
        let evicted: Vec<Arc<TenantDb>> = victims
            .iter()
            .filter_map(|k| open.remove(k).map(|e| e.db))
            .collect();
        for victim in &evicted {
            self.retire(victim);
        }
        tracing::debug!(
            code,
            connections = per_tenant,
            evicted = evicted.len(),
            "a busy hospital's pool grows"
        );
        if evicted.is_empty() {
            return self.install_grown(&mut open, code, &db, per_tenant);
        }
        // The bigger pool is counted now and opened once the evicted pools are gone.
        if let Some(entry) = open.get_mut(code) {
            entry.growing = true;
        }
        self.hold(&db.server, per_tenant);
        drop(open);
        let registry = self.clone();
        let growing = db.clone();
        tokio::spawn(async move {
            let db = growing;
            for victim in evicted {
                registry.close_retired(victim).await;
            }
            let mut open = registry.open_map();
            let installed = open.get(&db.code).is_some_and(|e| Arc::ptr_eq(&e.db, &db));
            if installed {
                registry.install_grown(&mut open, &db.code, &db, per_tenant);
            }
            if let Some(entry) = open.get_mut(&db.code) {
                entry.growing = false;
            }
            drop(open);
            registry.unhold(&db.server, per_tenant);
        });
        db
    }

    /// Under the `open` lock, `db` being the hospital's pool there: grows a pool of
    /// `per_tenant` or more connections (doubling, up to `burst`) when its server's
    /// budget, counting the old pool until it has closed, keeps its spare after the
    /// growth; otherwise returns it as it is.
    fn burst(
        &self,
        open: &mut HashMap<String, Entry>,
        code: &str,
        db: Arc<TenantDb>,
        budget: u32,
    ) -> Arc<TenantDb> {
        let target = (db.connections * 2).min(self.inner.settings.burst);
        let spare = budget / BURST_SPARE_DIVISOR;
        if target <= db.connections || self.reserved_on(open, &db.server) + target + spare > budget
        {
            return db;
        }
        tracing::debug!(
            code,
            connections = target,
            "a very busy hospital's pool grows"
        );
        self.install_grown(open, code, &db, target)
    }

    /// Under the `open` lock: puts a pool of `connections` in place of `old` (which
    /// closes once its leases end) and returns it.
    fn install_grown(
        &self,
        open: &mut HashMap<String, Entry>,
        code: &str,
        old: &Arc<TenantDb>,
        connections: u32,
    ) -> Arc<TenantDb> {
        let grown = Arc::new(TenantDb::open(
            &old.code,
            &old.log_identity,
            &old.database_name,
            &old.server,
            (*old.pool.connect_options()).clone(),
            connections,
            self.inner.settings.idle_ttl,
        ));
        if let Some(entry) = open.get_mut(code) {
            entry.db = grown.clone();
        }
        self.retire(old);
        let registry = self.clone();
        let old = old.clone();
        tokio::spawn(async move { registry.close_retired(old).await });
        grown
    }

    /// Closes pools that nobody used for `idle_ttl`, and shrinks pools grown beyond
    /// `per_tenant` that have not needed it for [`BURST_SHRINK_AFTER`]. Returns how
    /// many were closed.
    pub async fn evict_idle(&self) -> usize {
        let ttl = self.inner.settings.idle_ttl;
        self.shrink_bursts(BURST_SHRINK_AFTER);
        let victims: Vec<Arc<TenantDb>> = {
            let mut open = self.open_map();
            let codes: Vec<String> = open
                .iter()
                .filter(|(_, e)| !e.leased() && e.last_used.elapsed() >= ttl)
                .map(|(k, _)| k.clone())
                .collect();
            codes
                .into_iter()
                .filter_map(|k| open.remove(&k).map(|e| e.db))
                .collect()
        };
        let closed = victims.len();
        for db in victims {
            self.retire(&db);
            self.close_retired(db).await;
        }
        closed
    }

    /// Puts a pool of `per_tenant` in place of each grown-beyond one whose connections
    /// were last all in use `quiet_for` ago or longer (the old one closes once its
    /// leases end). The sweeper passes [`BURST_SHRINK_AFTER`].
    pub fn shrink_bursts(&self, quiet_for: Duration) {
        let per_tenant = self.inner.settings.per_tenant;
        let mut open = self.open_map();
        let quiet: Vec<(String, Arc<TenantDb>)> = open
            .iter()
            .filter(|(_, e)| {
                e.db.connections > per_tenant
                    && !e.growing
                    && e.last_saturated.elapsed() >= quiet_for
            })
            .map(|(k, e)| (k.clone(), e.db.clone()))
            .collect();
        for (code, db) in quiet {
            tracing::debug!(
                code,
                connections = per_tenant,
                "a quiet hospital's pool shrinks"
            );
            self.install_grown(&mut open, &code, &db, per_tenant);
        }
    }

    /// Forgets a tenant's pool (after it was suspended or dropped), closing it once the
    /// current leases end.
    pub async fn forget(&self, code: &str) {
        let removed = self.open_map().remove(code);
        if let Some(entry) = removed {
            // Requests in flight finish on it; nobody waits for that.
            self.retire(&entry.db);
            let registry = self.clone();
            tokio::spawn(async move { registry.close_retired(entry.db).await });
        }
    }

    /// Closes every pool (at shutdown).
    pub async fn close_all(&self) {
        let all: Vec<Entry> = self.open_map().drain().map(|(_, e)| e).collect();
        for entry in all {
            entry.db.pool.close().await;
        }
    }

    /// Runs the idle sweeper until the registry is dropped everywhere else.
    pub fn spawn_idle_sweeper(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let period = (self.inner.settings.idle_ttl / 2).max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let registry = PoolRegistry { inner };
                let closed = registry.evict_idle().await;
                if closed > 0 {
                    tracing::debug!(closed, "closed idle tenant pools");
                }
            }
        })
    }
}
