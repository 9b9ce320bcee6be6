//! Signed, short-lived access tokens (HS256). A token names the tenant and the user and
//! nothing the server trusts beyond that: the caller's role, status and rights are read
//! from the write side on every request (see [`super::Authenticator::authenticate`]). It
//! also carries the account's credentials version at issue time (bumped by a password
//! change or a deactivation), so those revoke every token issued before, for good, and
//! the instant it was issued, so closing a hospital revokes the tokens issued before the
//! closure even after the hospital reopens.

use chrono::{DateTime, Duration, Utc};
use hms_domain::Role;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const ISSUER: &str = "hms";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: Uuid,
    /// The hospital code; `None` for a super administrator.
    pub tenant: Option<String>,
    /// The role at issue time: informational only, never used to decide.
    pub role: Role,
    /// The account's credentials version when the token was issued: for staff, the
    /// `credentials_version` of the user's stream; for a super administrator, the
    /// instant their password last changed, in microseconds.
    pub ver: i64,
    pub iat: i64,
    /// The issue instant in microseconds (`iat` is whole seconds).
    pub iat_us: i64,
    pub exp: i64,
    pub iss: String,
}

#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid or expired token")]
pub struct InvalidToken;

impl TokenKeys {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl,
        }
    }

    pub fn issue(
        &self,
        user: Uuid,
        tenant: Option<String>,
        role: Role,
        credentials_version: i64,
        now: DateTime<Utc>,
    ) -> (String, DateTime<Utc>) {
        let expires = now + self.ttl;
        let claims = Claims {
            sub: user,
            tenant,
            role,
            ver: credentials_version,
            iat: now.timestamp(),
            iat_us: now.timestamp_micros(),
            exp: expires.timestamp(),
            iss: ISSUER.to_owned(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            // Encoding a plain struct with an HMAC key cannot fail.
            .unwrap_or_default();
        (token, expires)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, InvalidToken> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|_| InvalidToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_a_forged_one_does_not() {
        let keys = TokenKeys::new(&[7u8; 32], Duration::minutes(5));
        let now = Utc::now();
        let (token, _) = keys.issue(Uuid::nil(), Some("DMC001".into()), Role::Doctor, 0, now);
        let claims = keys.verify(&token).expect("valid");
        assert_eq!(claims.tenant.as_deref(), Some("DMC001"));
        let other = TokenKeys::new(&[8u8; 32], Duration::minutes(5));
        assert!(other.verify(&token).is_err());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let keys = TokenKeys::new(&[7u8; 32], Duration::minutes(5));
        let then = Utc::now() - Duration::hours(1);
        let (token, _) = keys.issue(Uuid::nil(), None, Role::SuperAdmin, 0, then);
        assert!(keys.verify(&token).is_err());
    }
}
