//! Authentication: who is calling, decided from the signed token alone.
//!
//! Every failure to log in answers the same way ([`AuthError::InvalidCredentials`]),
//! whether the hospital, the user or the password was wrong, the account deactivated or
//! the hospital closed, and costs the same argon2 verification, so a caller learns
//! nothing about which part was wrong.

pub mod budget;
pub mod password;
pub mod session;
pub mod throttle;
pub mod token;

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use hms_domain::common::HospitalCode;
use hms_domain::hospital::Hospital;
use hms_domain::user::User;
use hms_domain::Role;
use hms_projections::projectors::StaffRow;
use sqlx::PgPool;
use uuid::Uuid;

use crate::commands::{self, AssumedStream, Assumption, Authority, ReadHead};
use crate::error::AppError;
use crate::tenancy::{PoolRegistry, TenancyError, TenantLease};
pub use token::{Claims, TokenKeys};

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: Uuid,
    pub username: String,
    pub role: Role,
    /// The caller's hospital; `None` for a super administrator.
    pub tenant: Option<String>,
    /// The hospital's aggregate, read with the account in one statement when the token
    /// was checked: the request's first authorization decides on it.
    pub hospital: ReadWithAccount,
    /// Whether the account and hospital above were read for this request or are assumed
    /// from this process's last read (docs/adr/0012).
    pub authority: Authority,
}

/// A hospital aggregate read together with the caller's account, handed out once: the
/// request's first authorization uses it (read a moment before, within the same
/// request); every later one reads the hospital again, so a change made by an earlier
/// field of the request counts.
#[derive(Debug, Clone, Default)]
pub struct ReadWithAccount(Arc<Mutex<Option<Hospital>>>);

impl ReadWithAccount {
    fn new(hospital: Hospital) -> Self {
        Self(Arc::new(Mutex::new(Some(hospital))))
    }

    /// The hospital as read with the account, the first time only.
    pub fn take(&self) -> Option<Hospital> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// What reading the rights a request assumed found ([`Authenticator::confirm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// Nothing was assumed (or it was confirmed already).
    NotAssumed,
    /// The account and hospital are where they were assumed: the request's answer stands.
    Held,
    /// Either moved since (the account still grants the token): what the request decided
    /// on them may be stale, and nothing it appended landed. It is to be decided again.
    Moved,
    /// Either moved since, and an append of the request went unanswered: it may have
    /// landed (and moved them itself), so the request is not decided again; the caller
    /// sends it again, with its idempotency key.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("too many failed sign-ins")]
    Throttled,
    #[error("too many sign-ins at once")]
    Busy,
    #[error("not authenticated")]
    Unauthenticated,
    #[error("service temporarily unavailable")]
    Unavailable(#[source] TenancyError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for AuthError {
    fn from(e: sqlx::Error) -> Self {
        if crate::tenancy::platform::is_unreachable(&e) {
            AuthError::Unavailable(TenancyError::Database(e))
        } else {
            AuthError::Internal(e.to_string())
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoginOutcome {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub principal: Principal,
}

/// What login and authentication need to know about an account: a super administrator
/// (platform database) or a staff account (read through the projector's [`StaffRow`]).
#[derive(sqlx::FromRow)]
struct Account {
    id: Uuid,
    username: String,
    active: bool,
    password_hash: String,
    password_changed_at: DateTime<Utc>,
}

impl From<StaffRow> for Account {
    fn from(r: StaffRow) -> Self {
        Self {
            id: r.id,
            username: r.username,
            active: r.active,
            password_hash: r.password_hash,
            password_changed_at: r.password_changed_at,
        }
    }
}

const SUPERADMIN_ACCOUNT: &str =
    "SELECT id, username, active, password_hash, password_changed_at FROM super_admins";

#[derive(Clone)]
pub struct Authenticator {
    control: PgPool,
    registry: PoolRegistry,
    keys: TokenKeys,
    throttle: throttle::LoginThrottle,
    hasher: password::Hasher,
    /// Accounts and hospitals as their streams stand, decoded once per change.
    states: commands::CurrentStates,
}

impl Authenticator {
    pub fn new(control: PgPool, registry: PoolRegistry, keys: TokenKeys) -> Self {
        Self {
            registry,
            keys,
            throttle: throttle::LoginThrottle::new(control.clone()),
            control,
            hasher: password::Hasher::new(password::default_max_concurrent()),
            states: commands::CurrentStates::new(),
        }
    }

    /// Rarely changing streams (accounts, hospitals) read current without decoding
    /// them again on every request.
    pub fn states(&self) -> &commands::CurrentStates {
        &self.states
    }

    /// Bounds the password verifications this process runs at once (`None`: the default).
    pub fn with_max_concurrent_hashes(mut self, max: Option<usize>) -> Self {
        self.hasher = password::Hasher::new(max.unwrap_or_else(password::default_max_concurrent));
        self
    }

    /// Hashes a new password within this process's bound (see [`password::Hasher::hash`]).
    pub async fn hash_password(&self, password: String) -> Result<String, password::PasswordError> {
        self.hasher.hash(password).await
    }

    /// Password verifications run so far by this process.
    pub fn password_verifications(&self) -> u64 {
        self.hasher.verifications()
    }

    pub async fn login(
        &self,
        hospital_code: Option<&str>,
        username: &str,
        password: String,
        client_addr: Option<&str>,
    ) -> Result<LoginOutcome, AuthError> {
        let attempt = throttle::Attempt::new(hospital_code, username, client_addr);
        let permit = self.hasher.try_permit().ok_or(AuthError::Busy)?;
        let claim = self.throttle.claim(&attempt).await?;
        let outcome = self
            .check_credentials(hospital_code, username, password, permit)
            .await;
        match &outcome {
            Ok(_) => claim.succeeded().await,
            Err(AuthError::InvalidCredentials) => claim.failed(),
            Err(_) => claim.abandoned().await,
        }
        outcome
    }

    /// Whether `password` is the signed-in caller's (`stored`: their hash), throttled and
    /// bounded like a sign-in and counted against the same budget.
    pub async fn check_password(
        &self,
        principal: &Principal,
        client_addr: Option<&str>,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, AuthError> {
        let attempt = throttle::Attempt::new(
            principal.tenant.as_deref(),
            &principal.username,
            client_addr,
        );
        let permit = self.hasher.try_permit().ok_or(AuthError::Busy)?;
        let claim = self.throttle.claim(&attempt).await?;
        let ok = self.hasher.verify(permit, password, stored).await;
        if ok {
            claim.succeeded().await;
        } else {
            claim.failed();
        }
        Ok(ok)
    }

    async fn check_credentials(
        &self,
        hospital_code: Option<&str>,
        username: &str,
        password: String,
        permit: password::HashPermit,
    ) -> Result<LoginOutcome, AuthError> {
        let account = match hospital_code {
            None => {
                sqlx::query_as::<_, Account>(&format!(
                    "{SUPERADMIN_ACCOUNT} WHERE lower(username) = lower($1)"
                ))
                .bind(username)
                .fetch_optional(&self.control)
                .await?
            }
            Some(code) => match self.open_tenant(code).await? {
                None => None,
                Some(lease) => StaffRow::find_by_username(&lease.pool, username)
                    .await?
                    .map(Account::from),
            },
        };
        let stored = account.as_ref().map(|a| a.password_hash.clone());
        let verified = self.hasher.verify(permit, password, stored).await;
        let account = match account {
            Some(a) if verified && a.active => a,
            _ => return Err(AuthError::InvalidCredentials),
        };
        let tenant = hospital_code.map(str::to_owned);
        // What the token will name is read from the write side, like every request after.
        let (role, version) = match &tenant {
            None => (
                Role::SuperAdmin,
                account.password_changed_at.timestamp_micros(),
            ),
            Some(code) => {
                let lease = self
                    .open_tenant(code)
                    .await?
                    .ok_or(AuthError::InvalidCredentials)?;
                let (user, _) = self.user_and_hospital(&lease, account.id).await?;
                match (user.active, user.role) {
                    (true, Some(role)) => (role, credentials_version(&user)),
                    _ => return Err(AuthError::InvalidCredentials),
                }
            }
        };
        let (token, expires_at) =
            self.keys
                .issue(account.id, tenant.clone(), role, version, Utc::now());
        Ok(LoginOutcome {
            token,
            expires_at,
            principal: Principal {
                user_id: account.id,
                username: account.username,
                role,
                tenant,
                hospital: ReadWithAccount::default(),
                authority: Authority::confirmed(),
            },
        })
    }

    /// The principal behind a bearer token, with the rights the account has *now*: the
    /// role, status and credentials version come from the write side (the user's own
    /// event stream, current at commit — never a read model that may lag, and never the
    /// token's claims), and the hospital's status from the platform database (re-checked
    /// within [`crate::tenancy::pools::STATUS_RECHECK`]). A deactivation, a password change
    /// or closing the hospital revokes every token issued before it, also after a
    /// reactivation or reopening.
    ///
    /// With `may_assume` (a request whose answer the transport holds until its rights are
    /// confirmed), the account and hospital may be taken from this process's last read of
    /// them instead, checked by every append of the request and read before its answer
    /// leaves if no append did (docs/adr/0012).
    pub async fn authenticate(
        &self,
        bearer: &str,
        may_assume: bool,
    ) -> Result<Principal, AuthError> {
        let claims = self
            .keys
            .verify(bearer)
            .map_err(|_| AuthError::Unauthenticated)?;
        match &claims.tenant {
            None => {
                let account =
                    sqlx::query_as::<_, Account>(&format!("{SUPERADMIN_ACCOUNT} WHERE id = $1"))
                        .bind(claims.sub)
                        .fetch_optional(&self.control)
                        .await?
                        .ok_or(AuthError::Unauthenticated)?;
                if !account.active || account.password_changed_at.timestamp_micros() != claims.ver {
                    return Err(AuthError::Unauthenticated);
                }
                Ok(Principal {
                    user_id: account.id,
                    username: account.username,
                    role: Role::SuperAdmin,
                    tenant: None,
                    hospital: ReadWithAccount::default(),
                    authority: Authority::confirmed(),
                })
            }
            Some(code) => {
                let lease = self
                    .open_tenant(code)
                    .await?
                    .ok_or(AuthError::Unauthenticated)?;
                if lease
                    .tokens_not_before
                    .is_some_and(|t| claims.iat_us < t.timestamp_micros())
                {
                    return Err(AuthError::Unauthenticated);
                }
                let (user, hospital, authority) = self.rights(&lease, &claims, may_assume).await?;
                let role = granted_role(&user, claims.ver).ok_or(AuthError::Unauthenticated)?;
                Ok(Principal {
                    user_id: claims.sub,
                    username: user.username,
                    role,
                    tenant: claims.tenant,
                    hospital: ReadWithAccount::new(hospital),
                    authority,
                })
            }
        }
    }

    /// The caller's account and hospital: as this process last read them, assumed, when
    /// that state grants the token (every append of the request then checks that neither
    /// stream moved, docs/adr/0012); otherwise read from the write side now.
    async fn rights(
        &self,
        lease: &TenantLease,
        claims: &Claims,
        may_assume: bool,
    ) -> Result<(User, Hospital, Authority), AuthError> {
        let user_id = claims.sub.to_string();
        let kept = may_assume
            .then(|| {
                self.states
                    .kept_pair::<User, Hospital>(&lease.code, &user_id, &lease.log_identity)
            })
            .flatten();
        if let Some(((user, user_head), (hospital, hospital_head))) = kept {
            if granted_role(&user, claims.ver).is_some() {
                let assumption = Assumption {
                    streams: [
                        AssumedStream {
                            aggregate_type: User::TYPE,
                            aggregate_id: user_id,
                            head: user_head,
                        },
                        AssumedStream {
                            aggregate_type: Hospital::TYPE,
                            aggregate_id: lease.log_identity.clone(),
                            head: hospital_head,
                        },
                    ],
                    credentials_version: claims.ver,
                };
                return Ok((user, hospital, Authority::assumed(assumption)));
            }
        }
        let (user, hospital) = self.user_and_hospital(lease, claims.sub).await?;
        Ok((user, hospital, Authority::confirmed()))
    }

    /// Reads the caller's account and hospital from the write side when the request
    /// assumed them and nothing confirmed them yet (docs/adr/0012), and tells whether
    /// they are still where they were assumed. UNAUTHENTICATED when the account no longer
    /// grants the token.
    pub async fn confirm(&self, principal: &Principal) -> Result<Confirmation, AppError> {
        let Some(assumption) = principal.authority.assumption() else {
            return Ok(Confirmation::NotAssumed);
        };
        let read = async {
            let code = principal
                .tenant
                .as_deref()
                .ok_or(AuthError::Unauthenticated)?;
            let lease = self
                .open_tenant(code)
                .await?
                .ok_or(AuthError::Unauthenticated)?;
            let ((user, user_head), (_, hospital_head)) =
                self.read_rights(&lease, principal.user_id).await?;
            granted_role(&user, assumption.credentials_version)
                .ok_or(AuthError::Unauthenticated)?;
            Ok([user_head, hospital_head])
        };
        match read.await {
            Ok(heads) => {
                let held = heads
                    .iter()
                    .zip(&assumption.streams)
                    .all(|(head, assumed)| head.is(&assumed.head));
                if held {
                    principal.authority.confirm();
                    Ok(Confirmation::Held)
                } else if principal.authority.unanswered() {
                    Ok(Confirmation::Unknown)
                } else {
                    Ok(Confirmation::Moved)
                }
            }
            Err(AuthError::Unavailable(e)) => Err(e.into()),
            Err(AuthError::Internal(e)) => Err(AppError::internal(e)),
            Err(_) => Err(AppError::Unauthenticated),
        }
    }

    /// The user's account and their hospital as their own event streams have them now.
    async fn user_and_hospital(
        &self,
        lease: &TenantLease,
        id: Uuid,
    ) -> Result<(User, Hospital), AuthError> {
        let ((user, _), (hospital, _)) = self.read_rights(lease, id).await?;
        Ok((user, hospital))
    }

    /// [`Self::user_and_hospital`], with each stream's last event.
    async fn read_rights(
        &self,
        lease: &TenantLease,
        id: Uuid,
    ) -> Result<((User, ReadHead), (Hospital, ReadHead)), AuthError> {
        self.states
            .pair::<User, Hospital>(
                &lease.pool,
                &lease.code,
                &id.to_string(),
                &lease.log_identity,
            )
            .await
            .map_err(|e| match e {
                commands::CommandError::Unavailable(reason) => {
                    AuthError::Unavailable(TenancyError::Unreachable {
                        target: format!("the database of hospital {}", lease.code),
                        reason,
                    })
                }
                other => AuthError::Internal(other.to_string()),
            })
    }

    /// The hospital's pool, or `None` if there is no open hospital with this code.
    async fn open_tenant(&self, code: &str) -> Result<Option<TenantLease>, AuthError> {
        if HospitalCode::parse(code).is_err() {
            return Ok(None);
        }
        match self.registry.get(code).await {
            Ok(lease) => Ok(Some(lease)),
            Err(TenancyError::NotFound(_)) => Ok(None),
            Err(e) => Err(AuthError::Unavailable(e)),
        }
    }
}

/// Stores a new platform super administrator; `false` when the username is taken.
pub async fn create_super_admin(
    control: &PgPool,
    username: &hms_domain::common::Username,
    email: &hms_domain::common::Email,
    password_hash: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO super_admins (id, username, email, password_hash) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(Uuid::new_v4())
    .bind(username.as_str())
    .bind(email.as_str())
    .bind(password_hash)
    .execute(control)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The role an account grants a token carrying credentials version `version`: none when it
/// is deactivated, has no role, or its password changed since.
fn granted_role(user: &User, version: i64) -> Option<Role> {
    match (user.id, user.active, user.role) {
        (Some(_), true, Some(role)) if credentials_version(user) == version => Some(role),
        _ => None,
    }
}

/// The version a staff token carries (see [`token::Claims::ver`]).
fn credentials_version(user: &User) -> i64 {
    i64::try_from(user.credentials_version).unwrap_or(i64::MAX)
}
