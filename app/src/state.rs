//! Start-up: everything a running server (or an admin subcommand, or `hms-replay`)
//! shares, built once.

use std::sync::Arc;
use std::time::Duration;

use hms_projections::{projectors, ProjectionRunner};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;

use crate::auth::budget::RequestBudget;
use crate::auth::{Authenticator, TokenKeys};
use crate::config::PlatformConfig;
use crate::hints::Hints;
use crate::sequences::Sequences;
use crate::tenancy::pools::PoolSettings;
use crate::tenancy::provisioning::Provisioner;
use crate::tenancy::servers::ServerDirectory;
use crate::tenancy::{platform, writer};
use crate::tenancy::{PoolRegistry, Result, TenancyError, TenantDirectory, TenantNaming};

/// The platform as every subcommand sees it: the platform database and the way to
/// tenants. Cheap to clone.
#[derive(Clone)]
pub struct Platform {
    pub control: PgPool,
    /// The platform database's own server (`default`), as the owner role.
    pub server: PgConnectOptions,
    /// Every server hospitals are placed on.
    pub servers: ServerDirectory,
    pub naming: TenantNaming,
    pub directory: TenantDirectory,
    pub registry: PoolRegistry,
    pub runner: ProjectionRunner,
    /// "New events in hospital X" for the other server processes.
    pub hints: Hints,
    /// Numbers from the hospitals' sequences (MRNs), drawn in batches.
    pub sequences: Sequences,
    /// One for the process, so what it learns (the template is current) is shared.
    provisioner: Provisioner,
}

impl Platform {
    /// Connects to (creating and migrating if needed) the platform database.
    pub async fn connect(config: &PlatformConfig) -> Result<Self> {
        let options = platform::parse_url(config.database_url.expose())?;
        let naming = TenantNaming::new(&config.tenant_db_prefix)?;
        let control = platform::open_platform(&options, config.control_pool_size).await?;
        let writer = naming.writer_role();
        let password = config.tenant_role_password.as_ref();
        writer::ensure_role(&mut *control.acquire().await?, &writer, password).await?;
        let directory = TenantDirectory::new(control.clone());
        let servers = ServerDirectory::new(control.clone(), options.clone());
        // Tenant pools serve as the writer; migrations and provisioning use `options`.
        let registry = PoolRegistry::new(
            servers.clone(),
            writer::Credentials::new(writer.clone(), password.cloned()),
            directory.clone(),
            PoolSettings {
                per_tenant: config.tenant_pool_size,
                burst: config.tenant_pool_burst(),
                budget: config.tenant_connection_budget,
                idle_ttl: Duration::from_secs(60),
            },
        )?;
        let runner = ProjectionRunner::new(projectors::all()).with_widener(registry.widener());
        let provisioner = Provisioner::new(
            control.clone(),
            servers.clone(),
            naming.clone(),
            runner.clone(),
        )
        .with_spares(config.spare_databases);
        Ok(Self {
            hints: Hints::new(control.clone(), uuid::Uuid::new_v4()),
            sequences: Sequences::new(),
            control,
            server: options,
            servers,
            naming,
            directory,
            registry,
            runner,
            provisioner,
        })
    }

    pub fn provisioner(&self) -> Provisioner {
        self.provisioner.clone()
    }
}

/// What the HTTP and GraphQL layers share.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<AppStateInner>,
}

pub struct AppStateInner {
    pub platform: Platform,
    pub auth: Authenticator,
    /// What each signed-in principal may cost per minute, shared by every replica.
    pub budget: RequestBudget,
    pub production: bool,
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.inner
    }
}

impl std::ops::Deref for AppStateInner {
    type Target = Platform;
    fn deref(&self) -> &Platform {
        &self.platform
    }
}

impl AppState {
    pub fn new(
        platform: Platform,
        keys: TokenKeys,
        production: bool,
        max_concurrent_hashes: Option<usize>,
        budget_per_minute: Option<u64>,
    ) -> Self {
        let auth = Authenticator::new(platform.control.clone(), platform.registry.clone(), keys)
            .with_max_concurrent_hashes(max_concurrent_hashes);
        let budget = RequestBudget::new(platform.control.clone(), budget_per_minute);
        Self {
            inner: Arc::new(AppStateInner {
                platform,
                auth,
                budget,
                production,
            }),
        }
    }
}

/// The token-signing secret: required in production; in development a random one is
/// made (tokens then do not survive a restart) and that is said once.
pub fn signing_secret(configured: Option<&str>, production: bool) -> Result<Vec<u8>> {
    match configured {
        Some(s) if s.len() >= 32 => Ok(s.as_bytes().to_vec()),
        Some(_) => Err(TenancyError::Config(
            "HMS_JWT_SECRET must be at least 32 bytes".into(),
        )),
        None if production => Err(TenancyError::Config(
            "HMS_JWT_SECRET is required when HMS_ENV=production".into(),
        )),
        None => {
            tracing::warn!("HMS_JWT_SECRET is not set: using a random secret (development only; tokens end with the process)");
            Ok(rand::random::<[u8; 32]>().to_vec())
        }
    }
}
