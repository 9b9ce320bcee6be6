//! What a resolver may do inside the caller's hospital, handed out as capabilities:
//!
//! - [`hospital_scope`]: an authenticated hospital user (never a super administrator:
//!   the platform role sees no patient data) with a lease on *their* hospital's pool.
//!   Tenant and actor come from the verified token, never from arguments.
//! - [`HospitalScope::authorize`]: the domain's permission matrix, module and
//!   subscription gating for one operation; it returns [`Authorized`], the only value
//!   that can run commands. A resolver that forgets to ask gets nothing to write with.

use std::future::Future;
use std::time::Duration;

use async_graphql::Context;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use hms_domain::access::{self, AccessError};
use hms_domain::hospital::Hospital;
use hms_domain::permissions::Operation;
use hms_domain::{Actor, EventMetadata};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::error::ApiError;
use super::{principal, request, state};
use crate::auth::Principal;
use crate::commands::{self, CommandError};
use crate::state::AppState;
use crate::tenancy::{TenancyError, TenantLease};

/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;
/// How long a retry waits for the first request with the same key to finish.
const IDEMPOTENCY_WAIT: Duration = Duration::from_secs(10);

/// Optional arguments every mutation accepts.
#[derive(Debug, Clone, Default)]
pub struct MutationOptions {
    /// The version of the record the client last saw; a stale one is a CONFLICT.
    pub expected_version: Option<u64>,
    /// A retry with the same key appends nothing and returns the first answer.
    pub idempotency_key: Option<String>,
}

impl MutationOptions {
    pub fn new(
        expected_version: Option<i64>,
        idempotency_key: Option<String>,
    ) -> Result<Self, ApiError> {
        let expected_version = expected_version
            .map(|v| {
                u64::try_from(v)
                    .map_err(|_| ApiError::validation("expectedVersion", "must not be negative"))
            })
            .transpose()?;
        if let Some(key) = &idempotency_key {
            if key.is_empty()
                || key.len() > MAX_IDEMPOTENCY_KEY_LEN
                || key.chars().any(char::is_control)
            {
                return Err(ApiError::validation(
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
    pub code: &'a str,
    pub lease: TenantLease,
    pub state: &'a AppState,
    request_id: &'a str,
    client_addr: Option<&'a str>,
}

/// The caller's hospital, or UNAUTHENTICATED / FORBIDDEN (super administrators).
pub async fn hospital_scope<'a>(ctx: &Context<'a>) -> Result<HospitalScope<'a>, ApiError> {
    let principal = principal(ctx)?;
    let code = principal.tenant.as_deref().ok_or(ApiError::Forbidden)?;
    let state = state(ctx);
    let lease = state.registry.get(code).await.map_err(|e| match e {
        // The hospital was closed after the token was issued.
        TenancyError::NotFound(_) => ApiError::Unauthenticated,
        TenancyError::Busy => ApiError::RateLimited,
        other => ApiError::internal(other),
    })?;
    let request = request(ctx);
    Ok(HospitalScope {
        principal,
        code,
        lease,
        state,
        request_id: &request.request_id,
        client_addr: request.client_addr.as_deref(),
    })
}

impl<'a> HospitalScope<'a> {
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
    pub async fn hospital(&self) -> Result<(Hospital, u64), ApiError> {
        commands::load::<Hospital>(self.pool(), self.code)
            .await
            .map_err(ApiError::internal)
    }

    /// Decides whether the caller may perform `operation` now: role, module and
    /// subscription. Reads are allowed on an expired or suspended hospital; writes not.
    pub async fn authorize(self, operation: Operation) -> Result<Authorized<'a>, ApiError> {
        let (hospital, _) = self.hospital().await?;
        let now = Utc::now();
        access::authorize(&self.actor(), operation, &hospital, now).map_err(access_error)?;
        Ok(Authorized {
            scope: self,
            hospital,
            operation,
            now,
        })
    }
}

pub fn access_error(e: AccessError) -> ApiError {
    match e {
        AccessError::Forbidden(_) => ApiError::Forbidden,
        AccessError::Subscription(e) => ApiError::SubscriptionInactive(e.to_string()),
        AccessError::Module(e) => ApiError::ModuleDisabled(e.to_string()),
    }
}

/// Permission to perform one operation in the caller's hospital.
pub struct Authorized<'a> {
    pub scope: HospitalScope<'a>,
    pub hospital: Hospital,
    pub operation: Operation,
    pub now: DateTime<Utc>,
}

/// How a domain error reaches the client. Implemented for each aggregate's error type.
pub trait DomainErrorCode: std::error::Error {
    fn to_api_error(&self) -> ApiError;
}

impl<'a> Authorized<'a> {
    pub fn pool(&self) -> &PgPool {
        self.scope.pool()
    }

    pub fn actor(&self) -> Actor {
        self.scope.actor()
    }

    pub fn metadata(&self) -> EventMetadata {
        EventMetadata {
            actor: self.actor(),
            tenant: self.scope.code.to_owned(),
            request_id: self.scope.request_id.to_owned(),
            client_addr: self.scope.client_addr.map(str::to_owned),
            at: self.now,
        }
    }

    /// Runs `command` on aggregate `id` and waits until the read models show it.
    pub async fn execute<A>(
        &self,
        id: &str,
        command: A::Command,
        expected_version: Option<u64>,
    ) -> Result<(), ApiError>
    where
        A: Aggregate<Services = ()> + 'static,
        A::Error: DomainErrorCode,
    {
        commands::execute_expecting::<A>(
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
        // Other server processes learn of the new events from this hint.
        crate::projection_daemon::notify(&self.scope.state.control, self.scope.code).await;
        Ok(())
    }

    /// The current state and version of aggregate `id`.
    pub async fn load<A>(&self, id: &str) -> Result<(A, u64), ApiError>
    where
        A: Aggregate + 'static,
    {
        commands::load::<A>(self.pool(), id)
            .await
            .map_err(ApiError::internal)
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

    /// [`Self::idempotent`] for work that creates a record and answers with its id.
    pub async fn idempotent_id<F, Fut>(
        &self,
        options: &MutationOptions,
        input: &impl serde::Serialize,
        work: F,
    ) -> Result<Uuid, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Uuid, ApiError>>,
    {
        let id = self
            .idempotent(options, input, || async {
                work().await.map(|id| id.to_string())
            })
            .await?;
        Uuid::parse_str(&id).map_err(ApiError::internal)
    }

    /// Runs `work` once per idempotency key: a retry with the same key and input returns
    /// the first answer (the id `work` produced) without running it again; the same key
    /// with other input is refused. Without a key, `work` just runs.
    pub async fn idempotent<F, Fut>(
        &self,
        options: &MutationOptions,
        input: &impl serde::Serialize,
        work: F,
    ) -> Result<String, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, ApiError>>,
    {
        let Some(key) = &options.idempotency_key else {
            return work().await;
        };
        let operation = self.operation.to_string();
        let hash = {
            let bytes = serde_json::to_vec(input).map_err(ApiError::internal)?;
            hex::encode(Sha256::digest(&bytes))
        };
        let actor = self.scope.principal.user_id;
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (actor_id, key, operation, request_hash) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(actor)
        .bind(key)
        .bind(&operation)
        .bind(&hash)
        .execute(self.pool())
        .await
        .map_err(ApiError::internal)?
        .rows_affected()
            == 1;
        if claimed {
            return match work().await {
                Ok(result) => {
                    sqlx::query(
                        "UPDATE idempotency_keys SET result = $3, completed_at = now() WHERE actor_id = $1 AND key = $2",
                    )
                    .bind(actor)
                    .bind(key)
                    .bind(&result)
                    .execute(self.pool())
                    .await
                    .map_err(ApiError::internal)?;
                    Ok(result)
                }
                Err(e) => {
                    // Nothing to replay: let a retry try again.
                    let _ = sqlx::query("DELETE FROM idempotency_keys WHERE actor_id = $1 AND key = $2 AND result IS NULL")
                        .bind(actor)
                        .bind(key)
                        .execute(self.pool())
                        .await;
                    Err(e)
                }
            };
        }
        let deadline = tokio::time::Instant::now() + IDEMPOTENCY_WAIT;
        loop {
            let row: Option<(String, String, Option<String>)> = sqlx::query_as(
                "SELECT operation, request_hash, result FROM idempotency_keys WHERE actor_id = $1 AND key = $2",
            )
            .bind(actor)
            .bind(key)
            .fetch_optional(self.pool())
            .await
            .map_err(ApiError::internal)?;
            match row {
                Some((op, h, _)) if op != operation || h != hash => {
                    return Err(ApiError::validation(
                        "idempotencyKey",
                        "this key was used for a different request",
                    ))
                }
                Some((_, _, Some(result))) => return Ok(result),
                // The first request failed and released the key: run it now.
                None => return Box::pin(self.idempotent(options, input, work)).await,
                Some((_, _, None)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(ApiError::Conflict(
                            "a request with this idempotency key is still in progress".into(),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

/// Maps a command failure to what the client sees.
pub fn command_error<E: DomainErrorCode>(e: CommandError<E>) -> ApiError {
    match e {
        CommandError::Rejected(e) => e.to_api_error(),
        CommandError::Conflict => ApiError::Conflict(
            "the record was changed by someone else; reload and try again".into(),
        ),
        CommandError::Store(e) => ApiError::internal(e),
        CommandError::Projection(e) => ApiError::internal(e),
    }
}
