//! What a request may do inside the caller's hospital, handed out as capabilities:
//!
//! - [`HospitalScope::open`]: an authenticated hospital user (never a super
//!   administrator: the platform role sees no patient data) with one lease on *their*
//!   hospital's pool for the whole request. Tenant and actor come from the verified
//!   token, never from arguments.
//! - [`HospitalScope::authorize`]: the domain's permission matrix, module and
//!   subscription gating for one operation; it returns [`Authorized`], the only value
//!   that can run commands. A caller that forgets to ask gets nothing to write with.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use hms_domain::access;
use hms_domain::common::HospitalCode;
use hms_domain::hospital::Hospital;
use hms_domain::permissions::Operation;
use hms_domain::{Actor, EventMetadata};
use hms_projections::inline::WrittenInline;
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::Principal;
use crate::commands;
use crate::error::{command_error, unit_error, AppError, DomainErrorCode, Result};
use crate::state::AppState;
use crate::tenancy::{TenancyError, TenantLease};

/// Facts about one request that every event it causes records.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub request_id: String,
    pub client_addr: Option<String>,
}

/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// Optional arguments every mutation accepts.
#[derive(Debug, Clone, Default)]
pub struct MutationOptions {
    /// The version of the record the client last saw; a stale one is a CONFLICT.
    pub expected_version: Option<u64>,
    /// A retry with the same key appends nothing and returns the first answer.
    pub idempotency_key: Option<String>,
}

impl MutationOptions {
    pub fn new(expected_version: Option<i64>, idempotency_key: Option<String>) -> Result<Self> {
        let expected_version = expected_version
            .map(|v| {
                u64::try_from(v)
                    .map_err(|_| AppError::validation("expectedVersion", "must not be negative"))
            })
            .transpose()?;
        if let Some(key) = &idempotency_key {
            if key.is_empty()
                || key.len() > MAX_IDEMPOTENCY_KEY_LEN
                || key.chars().any(char::is_control)
            {
                return Err(AppError::validation(
                    "idempotencyKey",
                    format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} printable characters"),
                ));
            }
        }
        Ok(Self {
            expected_version,
            idempotency_key,
        })
    }
}

/// The authenticated caller inside their own hospital.
pub struct HospitalScope<'a> {
    pub principal: &'a Principal,
    /// The hospital's code inside its own database (its aggregate id, its events'
    /// `tenant`): the directory's code, unless it was restored under another one.
    pub code: HospitalCode,
    /// The code the directory, the token and the other processes know it by.
    pub directory_code: HospitalCode,
    pub lease: TenantLease,
    pub state: &'a AppState,
    pub request: &'a RequestInfo,
}

impl<'a> HospitalScope<'a> {
    /// The caller's hospital, or UNAUTHENTICATED (the hospital was closed after the
    /// token was issued) / FORBIDDEN (super administrators).
    pub async fn open(
        state: &'a AppState,
        principal: &'a Principal,
        request: &'a RequestInfo,
    ) -> Result<HospitalScope<'a>> {
        let tenant = principal.tenant.as_deref().ok_or(AppError::Forbidden)?;
        let code = HospitalCode::parse(tenant).map_err(|_| AppError::Unauthenticated)?;
        let lease = state
            .registry
            .get(code.as_str())
            .await
            .map_err(|e| match e {
                TenancyError::NotFound(_) => AppError::Unauthenticated,
                TenancyError::Busy => AppError::RateLimited,
                other => AppError::internal(other),
            })?;
        let log_identity = HospitalCode::parse(&lease.log_identity).map_err(AppError::internal)?;
        Ok(HospitalScope {
            principal,
            code: log_identity,
            directory_code: code,
            lease,
            state,
            request,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.lease.pool
    }

    pub fn actor(&self) -> Actor {
        Actor {
            user_id: self.principal.user_id,
            username: self.principal.username.clone(),
            role: self.principal.role,
        }
    }

    /// The hospital aggregate as it is now (its stream is short by design).
    pub async fn hospital(&self) -> Result<(Hospital, u64)> {
        self.state
            .auth
            .states()
            .one::<Hospital>(
                self.pool(),
                self.directory_code.as_str(),
                self.code.as_str(),
            )
            .await
            .map_err(crate::error::load_error)
    }

    /// Decides whether the caller may perform `operation` now: role, module and
    /// subscription. Reads are allowed on an expired or suspended hospital; writes not.
    pub async fn authorize(self, operation: Operation) -> Result<Authorized<'a>> {
        let hospital = match self.principal.hospital.take() {
            Some(hospital) => hospital,
            None => self.hospital().await?.0,
        };
        let now = Utc::now();
        access::authorize(&self.actor(), operation, &hospital, now)?;
        Ok(Authorized {
            scope: self,
            hospital,
            operation,
            now,
        })
    }
}

/// Permission to perform one operation in the caller's hospital, at one instant
/// (`now`, the time every event of the request records).
pub struct Authorized<'a> {
    pub scope: HospitalScope<'a>,
    pub hospital: Hospital,
    pub operation: Operation,
    pub now: DateTime<Utc>,
}

impl Authorized<'_> {
    pub fn pool(&self) -> &PgPool {
        self.scope.pool()
    }

    /// A use case checks that it was handed permission for its own operation: anything
    /// else is a wiring mistake in the transport, reported as INTERNAL.
    pub fn require(&self, operation: Operation) -> Result<()> {
        if self.operation == operation {
            Ok(())
        } else {
            Err(AppError::internal(format!(
                "a use case needing {operation} was called with permission for {}",
                self.operation
            )))
        }
    }

    pub fn code(&self) -> &HospitalCode {
        &self.scope.code
    }

    pub fn actor(&self) -> Actor {
        self.scope.actor()
    }

    pub fn state(&self) -> &AppState {
        self.scope.state
    }

    pub fn metadata(&self) -> EventMetadata {
        EventMetadata {
            actor: self.actor(),
            tenant: self.scope.code.as_str().to_owned(),
            request_id: self.scope.request.request_id.clone(),
            client_addr: self.scope.request.client_addr.clone(),
            at: self.now,
        }
    }

    /// Runs `command` on aggregate `id` and waits until the read models show it. Returns
    /// the version its events left the stream at (`None`: an earlier attempt of this
    /// request appended them), which an answer read from the read models must show.
    pub async fn execute<A>(
        &self,
        id: &str,
        command: A::Command,
        expected_version: Option<u64>,
    ) -> Result<Option<u64>>
    where
        A: Aggregate<Services = ()> + Clone + 'static,
        A::Command: Clone,
        A::Error: DomainErrorCode + Send + Sync + 'static,
    {
        let version = commands::execute_expecting::<A>(
            self.pool(),
            &self.scope.state.runner,
            id,
            command,
            (),
            &self.metadata(),
            expected_version,
        )
        .await
        .map_err(command_error)?;
        self.notify();
        Ok(version)
    }

    /// Runs `command` on the new aggregate `id` (a fresh id) and returns once its events
    /// and the rows its answer reads are committed, with those rows as stored: a
    /// registration writes its row of the patient register in its append (docs/adr/0011);
    /// the other read models follow. `None`: nothing was written inline, and the read
    /// models show the command (as after [`Self::execute`]).
    pub async fn create<A>(&self, id: &str, command: A::Command) -> Result<Option<WrittenInline>>
    where
        A: Aggregate<Services = ()> + Clone + 'static,
        A::Command: Clone,
        A::Error: DomainErrorCode + Send + Sync + 'static,
    {
        let written = commands::create::<A>(
            self.pool(),
            &self.scope.state.runner,
            id,
            command,
            (),
            &self.metadata(),
        )
        .await
        .map_err(command_error)?;
        self.notify();
        Ok(written)
    }

    /// Makes the derived read models (the audit index, the access log) show every event
    /// committed before now, the caller's own included: commands that answer from rows
    /// written inline and recorded views do not wait for them (docs/adr/0011). Should they
    /// not catch up in time, the read goes on with what they show.
    pub async fn derived_views_current(&self) {
        if let Err(error) = commands::wait_for_log(
            self.pool(),
            &self.scope.state.runner,
            commands::READ_YOUR_WRITES_TIMEOUT,
        )
        .await
        {
            tracing::warn!(%error, "the read models are behind the log; reading what they show");
        }
    }

    /// Runs `decide` on `streams` as one unit: every event it decides is appended in one
    /// statement, or none is; then waits until the read models show them
    /// ([`commands::together`]).
    pub async fn together<F, Fut>(&self, streams: commands::Streams, decide: F) -> Result<()>
    where
        F: FnMut(commands::Unit) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        commands::together(
            self.pool(),
            &self.scope.state.runner,
            &self.metadata(),
            streams,
            decide,
        )
        .await
        .map_err(unit_error)?;
        self.notify();
        Ok(())
    }

    /// As [`Self::together`], for a unit answered from the rows its append writes
    /// inline (a booking's appointment): returned at commit, or `None` when it wrote none
    /// and waited for the read models instead ([`commands::together_inline`]).
    pub async fn together_inline<F, Fut>(
        &self,
        streams: commands::Streams,
        decide: F,
    ) -> Result<Option<WrittenInline>>
    where
        F: FnMut(commands::Unit) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let written = commands::together_inline(
            self.pool(),
            &self.scope.state.runner,
            &self.metadata(),
            streams,
            decide,
        )
        .await
        .map_err(unit_error)?;
        self.notify();
        Ok(written)
    }

    /// Runs `command` on the new aggregate `id` (a fresh id) and returns once its events
    /// are committed, without waiting for the read models: for records of what happened
    /// that no answer reads back (e.g. the access log).
    pub async fn append_new<A>(&self, id: &str, command: A::Command) -> Result<()>
    where
        A: Aggregate<Services = ()> + Clone + 'static,
        A::Command: Clone,
        A::Error: DomainErrorCode + Send + Sync + 'static,
    {
        commands::append_new::<A>(self.pool(), id, command, (), &self.metadata())
            .await
            .map_err(command_error)?;
        self.notify();
        Ok(())
    }

    /// Other server processes learn of new events from this hint.
    pub fn notify(&self) {
        self.scope
            .state
            .hints
            .notify(self.scope.directory_code.as_str());
    }

    /// The current state and version of aggregate `id`.
    pub async fn load<A>(&self, id: &str) -> Result<(A, u64)>
    where
        A: Aggregate + 'static,
    {
        commands::load::<A>(self.pool(), id)
            .await
            .map_err(crate::error::load_error)
    }

    /// An id for a record this request creates: derived from the idempotency key when
    /// there is one, so that a retry after a crash addresses the same stream.
    pub fn new_id(&self, options: &MutationOptions) -> Uuid {
        match &options.idempotency_key {
            Some(key) => Uuid::new_v5(
                &self.scope.principal.user_id,
                format!("{}:{key}", self.operation).as_bytes(),
            ),
            None => Uuid::new_v4(),
        }
    }
}
