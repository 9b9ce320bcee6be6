//! Password hashing: argon2id with the OWASP-recommended parameters (19 MiB, t=2, p=1,
//! the argon2 crate's defaults). Hashing is CPU-heavy, so it runs off the async threads.
//!
//! Verifications a caller can start without being signed in (login, and the current
//! password of `changePassword`) go through a [`Hasher`]: at most its bound run at once
//! in the process, and a caller that finds no free permit is refused at once instead of
//! queueing (each verification holds ~19 MiB; unbounded, a flood of sign-ins is an
//! out-of-memory attack).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_CHARS: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")]
    Length,
    #[error("password hashing failed")]
    Hashing,
}

/// Checks the password policy: length only (NIST SP 800-63B: no composition rules).
pub fn check_policy(password: &str) -> Result<(), PasswordError> {
    let n = password.chars().count();
    if (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&n) {
        Ok(())
    } else {
        Err(PasswordError::Length)
    }
}

/// Hashes a new password. Unbounded: for tools and tests; the server hashes through a
/// [`Hasher`].
pub async fn hash(password: String) -> Result<String, PasswordError> {
    check_policy(&password)?;
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|_| PasswordError::Hashing)?
}

fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hashing)
}

/// Verifies `password` against `stored`, or against a fixed dummy hash when there is no
/// account, so that "no such user" costs the same time as "wrong password". Unbounded:
/// for tools and tests; the server verifies through a [`Hasher`].
pub async fn verify(password: String, stored: Option<String>) -> bool {
    let found = stored.is_some();
    let ok = tokio::task::spawn_blocking(move || verify_blocking(&password, stored.as_deref()))
        .await
        .unwrap_or(false);
    ok && found
}

fn verify_blocking(password: &str, stored: Option<&str>) -> bool {
    if password.chars().count() > MAX_PASSWORD_CHARS {
        return false;
    }
    PasswordHash::new(stored.unwrap_or(DUMMY_HASH))
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Concurrent verifications allowed when no bound is configured: twice the cores,
/// between 4 and 32 (32 × 19 MiB ≈ 600 MiB at most).
pub fn default_max_concurrent() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cores).clamp(4, 32)
}

/// The process's bound on concurrent password verifications. Cheap to clone.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<tokio::sync::Semaphore>,
    verifications: Arc<AtomicU64>,
}

/// The right to run one verification, taken before any other work of a sign-in.
pub struct HashPermit {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Hasher {
    /// At most `max` verifications at once (at least 1).
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(max.max(1))),
            verifications: Arc::default(),
        }
    }

    /// A permit, or `None` when the bound is reached (refuse the caller: never queue).
    pub fn try_permit(&self) -> Option<HashPermit> {
        self.permits
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|p| HashPermit { _permit: p })
    }

    /// [`verify`] under `permit`. The permit is held by the blocking task itself, so it
    /// is released when argon2 has finished, also when the caller stopped waiting
    /// (a request timed out or its connection closed).
    pub async fn verify(
        &self,
        permit: HashPermit,
        password: String,
        stored: Option<String>,
    ) -> bool {
        let found = stored.is_some();
        let verifications = self.verifications.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verifications.fetch_add(1, Ordering::Relaxed);
            verify_blocking(&password, stored.as_deref())
        })
        .await
        .unwrap_or(false);
        ok && found
    }

    /// [`hash`] when a permit is free: a new password (an account made, a password
    /// changed, a hospital onboarded) waits for its turn instead of being refused, so
    /// the process never holds more than the bound's worth of argon2 memory, whatever
    /// mix of sign-ins and new passwords arrives.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        check_policy(&password)?;
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PasswordError::Hashing)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hash_blocking(&password)
        })
        .await
        .map_err(|_| PasswordError::Hashing)?
    }

    /// Verifications run so far (for tests and metrics).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }
}

/// argon2id hash of a random password nobody knows, with the default parameters.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$ZHVtbXlzYWx0ZHVtbXk$8Jx3rTQ4N0lS7c7cq3LJ0k1Ww3o9n6u2bX1yE3XcFQ0";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_own_password() {
        let h = hash("correct horse battery".into()).await.expect("hashes");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse battery".into(), Some(h.clone())).await);
        assert!(!verify("wrong horse battery".into(), Some(h)).await);
        assert!(!verify("anything at all".into(), None).await);
    }

    #[tokio::test]
    async fn a_hasher_refuses_beyond_its_bound_until_a_verification_ends() {
        let hasher = Hasher::new(1);
        let first = hasher.try_permit().expect("a permit");
        assert!(hasher.try_permit().is_none());
        assert!(!hasher.verify(first, "anything at all".into(), None).await);
        assert_eq!(hasher.verifications(), 1);
        assert!(
            hasher.try_permit().is_some(),
            "released after the verification"
        );
    }

    #[test]
    fn short_and_huge_passwords_are_refused() {
        assert_eq!(check_policy("short"), Err(PasswordError::Length));
        assert_eq!(check_policy(&"x".repeat(300)), Err(PasswordError::Length));
        assert_eq!(check_policy("long enough pw"), Ok(()));
    }
}
