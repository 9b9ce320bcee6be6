//! Idempotency keys: a retried mutation with the same key and input appends nothing new
//! and answers with what the first attempt produced. The key is claimed in the tenant
//! database (table `idempotency_keys`), so every server process sees the same claim.

use std::future::Future;
use std::time::Duration;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{AppError, Result};
use crate::scope::{Authorized, MutationOptions};

/// How long a retry waits for the first request with the same key to finish.
const IDEMPOTENCY_WAIT: Duration = Duration::from_secs(10);

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
        let hash = {
            let bytes = serde_json::to_vec(input).map_err(AppError::internal)?;
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
        .map_err(AppError::from)?
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
                    .map_err(AppError::from)?;
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
            .map_err(AppError::from)?;
            match row {
                Some((op, h, _)) if op != operation || h != hash => {
                    return Err(AppError::validation(
                        "idempotencyKey",
                        "this key was used for a different request",
                    )
                    .into())
                }
                Some((_, _, Some(result))) => return Ok(result),
                // The first request failed and released the key: run it now.
                None => return Box::pin(self.idempotent(options, input, work)).await,
                Some((_, _, None)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(AppError::Conflict(
                            "a request with this idempotency key is still in progress".into(),
                        )
                        .into());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}
