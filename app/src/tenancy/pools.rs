//! The pool registry: one small pool per tenant, opened on first use, under one
//! connection budget for the whole process.
//!
//! Invariant: the sum of `max_connections` over the open pools never exceeds the
//! budget, so however many hospitals there are, this process never holds more than
//! `budget` tenant connections. A pool is closed (and its connections returned) before
//! a new one takes its place, and a pool is only closed while nobody holds a lease on
//! it. Pools unused for `idle_ttl` are closed by a sweeper.
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
use super::{Result, TenancyError};

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

#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Connections per tenant pool.
    pub per_tenant: u32,
    /// Connections all tenant pools may hold together.
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
    pub pool: PgPool,
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
}

impl Entry {
    fn leased(&self) -> bool {
        Arc::strong_count(&self.db) > 1
    }
}

struct Inner {
    server: PgConnectOptions,
    directory: TenantDirectory,
    settings: PoolSettings,
    open: Mutex<HashMap<String, Entry>>,
    released: Arc<Notify>,
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
    /// `server` carries host, port and credentials; the database is chosen per tenant.
    pub fn new(
        server: PgConnectOptions,
        directory: TenantDirectory,
        settings: PoolSettings,
    ) -> Result<Self> {
        if settings.per_tenant == 0 || settings.budget < settings.per_tenant {
            return Err(TenancyError::Config(format!(
                "the tenant connection budget ({}) must hold at least one pool of {} connections",
                settings.budget, settings.per_tenant
            )));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                server,
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

    /// How many tenant pools are open now.
    pub fn open_pools(&self) -> usize {
        self.open_map().len()
    }

    /// The tenant connections now, over every open pool, against the budget.
    pub fn usage(&self) -> PoolUsage {
        let open = self.open_map();
        let mut usage = PoolUsage {
            pools: open.len(),
            budget: self.inner.settings.budget,
            ..PoolUsage::default()
        };
        for entry in open.values() {
            let connections = entry.db.pool.size();
            usage.connections += connections;
            usage.in_use += connections.saturating_sub(entry.db.pool.num_idle() as u32);
        }
        usage
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

            if let Some(entry) = self.touch(code) {
                if entry.checked_at.elapsed() < STATUS_RECHECK {
                    return Ok(self.lease(entry.db, entry.tokens_not_before));
                }
                return self.recheck(code, entry).await;
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
            match self.reserve(&record, record.tokens_not_before) {
                Step::Ready(db) => return Ok(self.lease(db, record.tokens_not_before)),
                Step::Close(victim) => {
                    victim.pool.close().await;
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
    /// hospital is `NotFound`.
    async fn recheck(&self, code: &str, seen: Touched) -> Result<TenantLease> {
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
                return Ok(self.lease(db, tokens_not_before));
            }
            Err(e) => return Err(e),
        };
        let record = record.filter(|r| r.is_open() && r.database_name == db.database_name);
        let Some(record) = record else {
            let removed = {
                let mut open = self.open_map();
                match open.get(code) {
                    Some(entry) if Arc::ptr_eq(&entry.db, &db) => open.remove(code),
                    _ => None,
                }
            };
            if let Some(entry) = removed {
                tracing::info!(code, "hospital closed: its pool is dropped in this process");
                // Closing waits for connections in use; no request waits for that.
                tokio::spawn(async move { entry.db.pool.close().await });
            }
            return Err(TenancyError::NotFound(code.to_owned()));
        };
        if let Some(entry) = self.open_map().get_mut(code) {
            if Arc::ptr_eq(&entry.db, &db) {
                entry.checked_at = Instant::now();
                entry.tokens_not_before = record.tokens_not_before;
            }
        }
        Ok(self.lease(db, record.tokens_not_before))
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

    /// Under the lock: open a pool if the budget allows, else pick the least recently
    /// used unleased pool to close, else wait.
    fn reserve(&self, record: &TenantRecord, tokens_not_before: Option<DateTime<Utc>>) -> Step {
        let code = record.code.as_str();
        let database_name = record.database_name.as_str();
        let settings = &self.inner.settings;
        let mut open = self.open_map();
        if let Some(entry) = open.get_mut(code) {
            entry.last_used = Instant::now();
            return Step::Ready(entry.db.clone());
        }
        let capacity = (settings.budget / settings.per_tenant) as usize;
        if open.len() < capacity {
            let pool = PgPoolOptions::new()
                .max_connections(settings.per_tenant)
                .min_connections(0)
                .acquire_timeout(Duration::from_secs(10))
                .idle_timeout(settings.idle_ttl)
                .connect_lazy_with(self.inner.server.clone().database(database_name));
            let db = Arc::new(TenantDb {
                code: code.to_owned(),
                log_identity: record.log_identity().to_owned(),
                database_name: database_name.to_owned(),
                pool,
            });
            open.insert(
                code.to_owned(),
                Entry {
                    db: db.clone(),
                    last_used: Instant::now(),
                    checked_at: Instant::now(),
                    tokens_not_before,
                },
            );
            return Step::Ready(db);
        }
        let victim = open
            .iter()
            .filter(|(_, e)| !e.leased())
            .min_by_key(|(_, e)| e.last_used)
            .map(|(k, _)| k.clone());
        match victim.and_then(|k| open.remove(&k)) {
            Some(entry) => Step::Close(entry.db),
            None => Step::Wait,
        }
    }

    /// Closes pools that nobody used for `idle_ttl`. Returns how many were closed.
    pub async fn evict_idle(&self) -> usize {
        let ttl = self.inner.settings.idle_ttl;
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
        for db in &victims {
            db.pool.close().await;
        }
        victims.len()
    }

    /// Forgets a tenant's pool (after it was suspended or dropped), closing it once the
    /// current leases end.
    pub async fn forget(&self, code: &str) {
        let removed = self.open_map().remove(code);
        if let Some(entry) = removed {
            entry.db.pool.close().await;
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
