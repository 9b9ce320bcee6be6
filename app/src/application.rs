//! A serving process, built once and shared by `hms serve` and the tests: the platform
//! connection, the authenticator and the background workers (pool idle sweeper,
//! projection daemon with the reservation sweep, spare refiller). The transport is the
//! caller's: [`Application::run`] keeps the workers running while the given server
//! future runs, then stops them and closes every pool.

use std::future::Future;
use std::time::Duration;

use crate::auth::TokenKeys;
use crate::config::{PlatformConfig, Secret};
use crate::state::{signing_secret, AppState, Platform};
use crate::tenancy::Result;
use crate::workers::replicas;

/// How often the projection daemon visits recently active hospitals.
const PROJECTION_TICK: Duration = Duration::from_secs(5);
/// How often the spare databases are topped up.
const SPARE_REFILL_PERIOD: Duration = Duration::from_secs(30);

/// What a serving process needs beyond the platform settings.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Token-signing secret; required in production, random in development.
    pub jwt_secret: Option<Secret>,
    /// Lifetime of an access token.
    pub token_ttl: chrono::Duration,
    /// No GraphiQL, no introspection, no suggestions; a signing secret is required.
    pub production: bool,
    /// Password hashes (argon2, ~19 MiB each) this process computes at once; more
    /// concurrent sign-ins are refused (RATE_LIMITED). `None`: twice the cores, 4 to 32.
    pub max_concurrent_hashes: Option<usize>,
    /// Query-cost units each signed-in principal may spend per minute (all replicas
    /// together); beyond it, RATE_LIMITED. `None`: the default; `Some(0)`: no budget.
    pub request_budget_per_minute: Option<u64>,
    /// Runs the projection daemon (sealing, catch-up after other processes' writes,
    /// reservation sweeps) and the spare refiller. A replica without them leaves that
    /// work to the others (see [`crate::workers::replicas`]).
    pub background_work: bool,
}

pub struct Application {
    state: AppState,
    workers: bool,
    background_work: bool,
}

impl Application {
    /// Connects to the platform (creating and migrating its database if needed).
    pub async fn build(config: &PlatformConfig, settings: &ServeSettings) -> Result<Self> {
        let secret = signing_secret(
            settings.jwt_secret.as_ref().map(Secret::expose),
            settings.production,
        )?;
        let platform = Platform::connect(config).await?;
        let ttl = settings
            .token_ttl
            .clamp(chrono::Duration::minutes(1), chrono::Duration::hours(24));
        let keys = TokenKeys::new(&secret, ttl);
        Ok(Self {
            state: AppState::new(
                platform,
                keys,
                settings.production,
                settings.max_concurrent_hashes,
                settings.request_budget_per_minute,
            ),
            workers: true,
            background_work: settings.background_work,
        })
    }

    /// Serves without the background workers: for tests that drive catch-up, sweeps
    /// and refills themselves and must not race a worker doing the same.
    pub fn without_workers(mut self) -> Self {
        self.workers = false;
        self
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Runs the workers while `serve` runs; when it ends (shutdown or failure), stops
    /// them and closes the tenant pools and the platform pool.
    pub async fn run<E>(self, serve: impl Future<Output = Result<(), E>>) -> Result<(), E> {
        let state = self.state;
        let replica = state.hints.replica();
        let mut workers = Vec::new();
        if self.workers {
            workers.push(state.registry.spawn_idle_sweeper());
            workers.push(replicas::spawn_heartbeat(
                state.control.clone(),
                replica,
                self.background_work,
            ));
            if self.background_work {
                workers.push(crate::workers::projection_daemon::spawn(
                    state.platform.clone(),
                    PROJECTION_TICK,
                ));
                workers.push(
                    state
                        .provisioner()
                        .spawn_spare_refiller(SPARE_REFILL_PERIOD),
                );
            }
        }
        let served = serve.await;
        for worker in workers {
            worker.abort();
        }
        if self.workers {
            // The others take over this replica's hints at once instead of after a
            // silence.
            replicas::leave(&state.control, replica).await;
        }
        state.registry.close_all().await;
        state.control.close().await;
        served
    }
}
