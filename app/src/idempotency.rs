//! Idempotency keys: a retried mutation with the same key and input appends nothing new
//! and answers with what the first attempt produced. The key is claimed in the tenant
//! database (table `idempotency_keys`), so every server process sees the same claim.
//!
//! A claim is a lease (docs/adr/0004): the attempt that owns it renews `claimed_at` while
//! its work runs, so a claim left behind by a request that died (kill -9, a client that
//! went away, the request timeout) goes stale after [`CLAIM_LEASE`] and a retry takes it
//! over. Every event the work appends carries the claim's run id (metadata
//! [`RUN_METADATA_KEY`]), and the command path skips a command whose stream already holds
//! an event of the same run ([`crate::commands`]): re-running the work after a takeover
//! appends nothing twice and computes the first attempt's answer, whether or not that
//! attempt got as far as committing. The run id is derived from the actor, the key and
//! the input, so the same holds for a retry after an attempt that failed, e.g. because
//! its connection was lost after its append committed.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{AppError, Result};
use crate::scope::{Authorized, MutationOptions};

/// How long a retry waits for the first request with the same key to finish.
const IDEMPOTENCY_WAIT: Duration = Duration::from_secs(10);

/// A claim not renewed for this long belongs to an attempt that is gone.
pub const CLAIM_LEASE: Duration = Duration::from_secs(10);

/// How often a live attempt renews its claim (well inside the lease).
const HEARTBEAT: Duration = Duration::from_secs(2);

/// The event-metadata key that names the run of keyed work that appended the event.
pub const RUN_METADATA_KEY: &str = "idempotency_run";

tokio::task_local! {
    /// The run of keyed work being executed, for the command path.
    static RUN: Uuid;
}

/// The run of keyed work the current task is executing, if any: its commands stamp their
/// events with it and skip streams that already hold an event of it.
pub fn current_run() -> Option<Uuid> {
    RUN.try_with(|run| *run).ok()
}

/// The run of keyed work for one (actor, key, input): the same for every attempt, so an
/// attempt whose writes committed but whose answer was lost (the connection dropped
/// after the commit) is recognised by the next one as its own work.
fn run_for(actor: Uuid, key: &str, request_hash: &str) -> Uuid {
    let name = format!("{actor}\u{1f}{key}\u{1f}{request_hash}");
    Uuid::new_v5(&RUN_NAMESPACE, name.as_bytes())
}

/// Namespace of the run ids derived by [`run_for`].
const RUN_NAMESPACE: Uuid = Uuid::from_u128(0x6f2b_1c0e_8d3a_4e57_9a41_2c7d_5b90_e318);

/// What identifies a retry: the SHA-256 of the input's serialized form.
pub fn request_hash(input: &impl serde::Serialize) -> Result<String> {
    let bytes = serde_json::to_vec(input).map_err(AppError::internal)?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// The claim of one (actor, key), as another attempt finds it.
#[derive(sqlx::FromRow)]
struct Claim {
    operation: String,
    request_hash: String,
    result: Option<String>,
    owner: Option<Uuid>,
    stale: bool,
}

impl Authorized<'_> {
    /// [`Self::idempotent`] for work that creates a record and answers with its id.
    pub async fn idempotent_id<F, Fut, E>(
        &self,
        options: &MutationOptions,
        input: &impl serde::Serialize,
        work: F,
    ) -> Result<Uuid, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Uuid, E>>,
        E: From<AppError>,
    {
        let id = self
            .idempotent(options, input, || async {
                work().await.map(|id| id.to_string())
            })
            .await?;
        Ok(Uuid::parse_str(&id).map_err(AppError::internal)?)
    }

    /// Runs `work` once per idempotency key: a retry with the same key and input returns
    /// the first answer (the id `work` produced) without running it again; the same key
    /// with other input is refused. Without a key, `work` just runs. `work`'s error is
    /// the caller's own (anything an application error converts into).
    ///
    /// `work` must derive the ids of what it creates from the key
    /// ([`Authorized::new_id`]) and issue at most one command per stream that matters: a
    /// takeover re-runs it, and the command path skips every stream the run reached.
    pub async fn idempotent<F, Fut, E>(
        &self,
        options: &MutationOptions,
        input: &impl serde::Serialize,
        work: F,
    ) -> Result<String, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, E>>,
        E: From<AppError>,
    {
        let Some(key) = &options.idempotency_key else {
            return work().await;
        };
        let operation = self.operation.to_string();
        let hash = request_hash(input)?;
        let actor = self.scope.principal.user_id;
        let deadline = tokio::time::Instant::now() + IDEMPOTENCY_WAIT;
        let mut pause = Duration::from_millis(10);
        loop {
            let owner = Uuid::new_v4();
            let fresh: Option<Uuid> = sqlx::query_scalar(
                "INSERT INTO idempotency_keys (actor_id, key, operation, request_hash, run_id, owner, claimed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, now()) ON CONFLICT DO NOTHING RETURNING run_id",
            )
            .bind(actor)
            .bind(key)
            .bind(&operation)
            .bind(&hash)
            .bind(run_for(actor, key, &hash))
            .bind(owner)
            .fetch_optional(self.pool())
            .await
            .map_err(AppError::from)?;
            if let Some(run) = fresh {
                return self.run_claimed(key, run, owner, work).await;
            }
            let claim: Option<Claim> = sqlx::query_as(
                "SELECT operation, request_hash, result, owner, claimed_at < now() - make_interval(secs => $3) AS stale \
                   FROM idempotency_keys WHERE actor_id = $1 AND key = $2",
            )
            .bind(actor)
            .bind(key)
            .bind(CLAIM_LEASE.as_secs_f64())
            .fetch_optional(self.pool())
            .await
            .map_err(AppError::from)?;
            match claim {
                // The first request failed and released the key: claim it now.
                None => continue,
                Some(c) if c.operation != operation || c.request_hash != hash => {
                    return Err(AppError::validation(
                        "idempotencyKey",
                        "this key was used for a different request",
                    )
                    .into())
                }
                Some(Claim {
                    result: Some(result),
                    ..
                }) => return Ok(result),
                Some(Claim {
                    owner: previous,
                    stale: true,
                    ..
                }) => {
                    // The attempt that holds the claim stopped renewing it: it is gone.
                    // Take the claim over (keeping its run) and finish its work.
                    let taken: Option<Uuid> = sqlx::query_scalar(
                        "UPDATE idempotency_keys SET owner = $3, claimed_at = now() \
                          WHERE actor_id = $1 AND key = $2 AND result IS NULL \
                            AND owner IS NOT DISTINCT FROM $4 \
                            AND claimed_at < now() - make_interval(secs => $5) \
                         RETURNING run_id",
                    )
                    .bind(actor)
                    .bind(key)
                    .bind(owner)
                    .bind(previous)
                    .bind(CLAIM_LEASE.as_secs_f64())
                    .fetch_optional(self.pool())
                    .await
                    .map_err(AppError::from)?;
                    if let Some(run) = taken {
                        tracing::warn!(
                            operation,
                            "took over the stale claim of an idempotency key; finishing its work"
                        );
                        return self.run_claimed(key, run, owner, work).await;
                    }
                    // Someone else took it over first: wait for their answer.
                }
                Some(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(AppError::Contended(
                    "a request with this idempotency key is still in progress; try again".into(),
                )
                .into());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Runs `work` as `owner` of the claim on `key` (run `run`), renewing the claim while
    /// it runs, and records the answer (or releases the claim when the work failed).
    async fn run_claimed<F, Fut, E>(
        &self,
        key: &str,
        run: Uuid,
        owner: Uuid,
        work: F,
    ) -> Result<String, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, E>>,
        E: From<AppError>,
    {
        let actor = self.scope.principal.user_id;
        let outcome = {
            let work = RUN.scope(run, work());
            tokio::pin!(work);
            tokio::select! {
                outcome = &mut work => outcome,
                never = self.renew_claim(key, owner) => match never {},
            }
        };
        match outcome {
            Ok(result) => {
                let recorded = sqlx::query(
                    "UPDATE idempotency_keys SET result = $3, completed_at = now(), owner = NULL \
                      WHERE actor_id = $1 AND key = $2 AND result IS NULL",
                )
                .bind(actor)
                .bind(key)
                .bind(&result)
                .execute(self.pool())
                .await;
                if let Err(e) = recorded {
                    // The work is done and stands: answer it. A retry finds the claim
                    // stale, re-runs the work (every command of the run is skipped) and
                    // records the same answer.
                    tracing::warn!(error = %e, "could not record the answer of an idempotency key");
                }
                Ok(result)
            }
            Err(e) => {
                // Let a retry try again. It runs as the same run (see [`run_for`]): had
                // this attempt's append committed while its answer was lost, the retry
                // finds the event as its own and answers it instead of appending again.
                let _ = sqlx::query(
                    "DELETE FROM idempotency_keys \
                      WHERE actor_id = $1 AND key = $2 AND owner = $3 AND result IS NULL",
                )
                .bind(actor)
                .bind(key)
                .bind(owner)
                .execute(self.pool())
                .await;
                Err(e)
            }
        }
    }

    /// Renews the claim of `owner` on `key` until dropped (when the work ends, or with the
    /// request when it is cut off).
    async fn renew_claim(&self, key: &str, owner: Uuid) -> Infallible {
        let actor = self.scope.principal.user_id;
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let renewed = sqlx::query(
                "UPDATE idempotency_keys SET claimed_at = now() \
                  WHERE actor_id = $1 AND key = $2 AND owner = $3 AND result IS NULL",
            )
            .bind(actor)
            .bind(key)
            .bind(owner)
            .execute(self.pool())
            .await;
            if let Err(e) = renewed {
                tracing::warn!(error = %e, "could not renew the claim of an idempotency key");
            }
        }
    }
}
