//! `login` and `me`.

use async_graphql::{Context, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::{ApiError, Result};
use super::types::{HospitalRef, Role};
use super::{principal, state};
use hms_app::auth::AuthError;

#[derive(InputObject)]
pub struct LoginInput {
    /// The hospital's code; leave out to sign in as a platform super administrator.
    pub hospital_code: Option<String>,
    pub username: String,
    pub password: String,
}

#[derive(SimpleObject)]
pub struct LoginPayload {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub me: Me,
}

#[derive(SimpleObject, Clone)]
pub struct Me {
    pub id: Uuid,
    pub username: String,
    pub role: Role,
    /// The caller's hospital; null for a super administrator.
    pub hospital: Option<HospitalRef>,
}

#[derive(Default)]
pub struct AuthQuery;

#[Object]
impl AuthQuery {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> Result<Me> {
        let principal = principal(ctx)?;
        let hospital = match &principal.tenant {
            None => None,
            Some(code) => Some(hospital_ref(ctx, code).await?),
        };
        Ok(Me {
            id: principal.user_id,
            username: principal.username.clone(),
            role: principal.role.into(),
            hospital,
        })
    }
}

#[derive(Default)]
pub struct AuthMutation;

#[Object]
impl AuthMutation {
    /// Exchanges credentials for a short-lived access token. Every kind of failure
    /// answers the same way.
    async fn login(&self, ctx: &Context<'_>, input: LoginInput) -> Result<LoginPayload> {
        let state = state(ctx);
        let outcome = state
            .auth
            .login(
                input.hospital_code.as_deref(),
                &input.username,
                input.password,
                super::request(ctx).info.client_addr.as_deref(),
            )
            .await
            .map_err(|e| match e {
                AuthError::Throttled => ApiError::RateLimited,
                AuthError::InvalidCredentials | AuthError::Unauthenticated => {
                    ApiError::InvalidCredentials
                }
                other => ApiError::internal(other),
            })?;
        let p = &outcome.principal;
        let hospital = match &p.tenant {
            None => None,
            Some(code) => Some(hospital_ref(ctx, code).await?),
        };
        Ok(LoginPayload {
            token: outcome.token,
            expires_at: outcome.expires_at,
            me: Me {
                id: p.user_id,
                username: p.username.clone(),
                role: p.role.into(),
                hospital,
            },
        })
    }
}

async fn hospital_ref(ctx: &Context<'_>, code: &str) -> Result<HospitalRef, ApiError> {
    let lease = state(ctx).registry.get(code).await.map_err(|e| match e {
        hms_app::tenancy::TenancyError::NotFound(_) => ApiError::NotFound,
        other => ApiError::internal(other),
    })?;
    let (code, name): (String, String) =
        sqlx::query_as("SELECT code, name FROM hospital_profile LIMIT 1")
            .fetch_optional(&lease.pool)
            .await
            .map_err(ApiError::internal)?
            .ok_or(ApiError::NotFound)?;
    Ok(HospitalRef { code, name })
}
