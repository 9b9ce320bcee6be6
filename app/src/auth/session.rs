//! The signed-in caller as a transport shows it: `login` exchanges credentials for a
//! token, `me` describes the caller of a request. Every kind of login failure answers
//! the same way (INVALID_CREDENTIALS), see [`super::Authenticator`].

use chrono::{DateTime, Utc};
use hms_domain::Role;
use hms_projections::projectors::HospitalProfileRow;
use uuid::Uuid;

use super::{AuthError, Principal};
use crate::error::{AppError, Result};
use crate::state::AppState;
use crate::telemetry::{self, LoginRefusal};
use crate::tenancy::TenancyError;

/// Credentials as entered.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The hospital's code; `None` to sign in as a platform super administrator.
    pub hospital_code: Option<String>,
    pub username: String,
    pub password: String,
}

/// A successful login: a short-lived access token and whom it names.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// Sent back as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub me: Me,
}

/// The caller.
#[derive(Debug, Clone)]
pub struct Me {
    pub id: Uuid,
    pub username: String,
    pub role: Role,
    /// The caller's hospital; `None` for a super administrator.
    pub hospital: Option<HospitalName>,
}

/// A hospital's code and name.
#[derive(Debug, Clone)]
pub struct HospitalName {
    pub code: String,
    pub name: String,
}

/// Exchanges credentials for a short-lived access token. Every kind of failure answers
/// the same way (INVALID_CREDENTIALS), or RATE_LIMITED after too many failures or when
/// too many sign-ins are being checked at once (ADR 0005).
pub async fn login(
    state: &AppState,
    credentials: Credentials,
    client_addr: Option<&str>,
) -> Result<SignedIn> {
    let outcome = state
        .auth
        .login(
            credentials.hospital_code.as_deref(),
            &credentials.username,
            credentials.password,
            client_addr,
        )
        .await
        .map_err(|e| match e {
            AuthError::Throttled => {
                telemetry::login_refused(LoginRefusal::Throttled);
                AppError::RateLimited
            }
            AuthError::Busy => {
                telemetry::login_refused(LoginRefusal::Busy);
                AppError::RateLimited
            }
            AuthError::InvalidCredentials | AuthError::Unauthenticated => {
                telemetry::login_refused(LoginRefusal::InvalidCredentials);
                AppError::InvalidCredentials
            }
            AuthError::Unavailable(e) => e.into(),
            other => AppError::internal(other),
        })?;
    Ok(SignedIn {
        token: outcome.token,
        expires_at: outcome.expires_at,
        me: me(state, &outcome.principal).await?,
    })
}

/// The signed-in user, with their hospital's name.
pub async fn me(state: &AppState, principal: &Principal) -> Result<Me> {
    let hospital = match &principal.tenant {
        None => None,
        Some(code) => Some(hospital_name(state, code).await?),
    };
    Ok(Me {
        id: principal.user_id,
        username: principal.username.clone(),
        role: principal.role,
        hospital,
    })
}

/// The code and name of the hospital `code`, from its own read model.
async fn hospital_name(state: &AppState, code: &str) -> Result<HospitalName> {
    let lease = state.registry.get(code).await.map_err(|e| match e {
        TenancyError::NotFound(_) => AppError::NotFound,
        other => AppError::internal(other),
    })?;
    let row = HospitalProfileRow::load(&lease.pool)
        .await?
        .ok_or(AppError::NotFound)?;
    // The code the user signs in with (the profile keeps the one its log was written
    // under, which differs for a hospital restored under a new code).
    Ok(HospitalName {
        code: code.to_owned(),
        name: row.name,
    })
}
