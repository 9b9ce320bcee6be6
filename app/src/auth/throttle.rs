//! Throttling of password guesses (sign-in, and the current password of
//! `changePassword`), shared by every replica through the platform database. See
//! docs/adr/0005-login-throttling.md.
//!
//! Every attempt first *claims* a place in three counters, atomically and before any
//! password is hashed (`login_attempts`, one row per scope and key, counting failures
//! plus attempts in flight within a fixed window):
//!
//! - **pair** (account, client address): at most [`MAX_FAILURES`] per [`WINDOW`]. This is
//!   the budget that stops guessing; it costs an attacker only their own address.
//! - **address**: at most [`MAX_FAILURES_PER_ADDRESS`] across all accounts (credential
//!   stuffing from one address; higher, as a hospital's staff often share one address).
//! - **account**: at most [`ACCOUNT_LOCK_FAILURES`] from all addresses together. Since one
//!   address brings at most `MAX_FAILURES`, reaching it needs many addresses: strong
//!   evidence of a distributed attack.
//!
//! The address and account limits do not apply to an address the account signed in
//! from within [`KNOWN_ADDRESS_FOR`] (`login_known_addresses`): an attacker elsewhere
//! cannot lock the administrator out of their usual place of work. The pair limit always
//! applies. A claim over a limit is rolled back (it counts nothing) and refused; a
//! failed attempt keeps its claim as the failure; a successful one clears the pair and
//! gives back its claim on the others; one that could not be decided (an internal error)
//! gives back all three.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::AuthError;

/// Failures allowed per account and client address within the window.
pub const MAX_FAILURES: u32 = 5;
/// Failures allowed per client address (all accounts) within the window.
pub const MAX_FAILURES_PER_ADDRESS: u32 = 50;
/// Failures per account (all addresses) within the window after which the account
/// accepts attempts only from addresses it signed in from before.
pub const ACCOUNT_LOCK_FAILURES: u32 = 25;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// How long a successful sign-in makes its address known to the account.
pub const KNOWN_ADDRESS_FOR: Duration = Duration::from_secs(90 * 24 * 3600);
/// Expired rows are purged after about this many claims of a process.
const PURGE_EVERY: u64 = 500;

/// Who tries, from where: the keys one attempt counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    account: String,
    address: String,
}

impl Attempt {
    /// `hospital` `None`: a platform super administrator. Names that cannot belong to an
    /// account (their format is invalid) share one key per hospital, so that invented
    /// names neither fill the table nor open fresh budgets.
    pub fn new(hospital: Option<&str>, username: &str, client_addr: Option<&str>) -> Self {
        let hospital = match hospital {
            None => "-".to_owned(),
            Some(code) if hms_domain::common::HospitalCode::parse(code).is_ok() => code.to_owned(),
            Some(_) => "~invalid".to_owned(),
        };
        let valid_username = (3..=64).contains(&username.len())
            && username
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        let username = if valid_username {
            username.to_ascii_lowercase()
        } else {
            "~invalid".to_owned()
        };
        Self {
            account: format!("{hospital}:{username}"),
            address: address_key(client_addr),
        }
    }

    fn pair(&self) -> String {
        format!("{}|{}", self.account, self.address)
    }
}

/// The throttling key of a client address: IPv4 as is, IPv6 by its /64 (one subscriber
/// commonly holds a whole /64), anything else (no address) as `unknown`.
fn address_key(client_addr: Option<&str>) -> String {
    match client_addr.and_then(|a| a.parse::<IpAddr>().ok()) {
        Some(ip) => match ip.to_canonical() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let net = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", std::net::Ipv6Addr::from(net))
            }
        },
        None => "unknown".to_owned(),
    }
}

/// The throttle's counters, in the platform database. Cheap to clone.
#[derive(Clone)]
pub struct LoginThrottle {
    control: PgPool,
    claims: Arc<AtomicU64>,
}

/// What one claim returned: its counts, whether the address is known to the account, and
/// the database time it was made at.
#[derive(sqlx::FromRow)]
struct Counts {
    pair: i32,
    address: i32,
    account: i32,
    known: bool,
    at: DateTime<Utc>,
}

impl LoginThrottle {
    pub fn new(control: PgPool) -> Self {
        Self {
            control,
            claims: Arc::default(),
        }
    }

    /// Claims a place for `attempt` in its three counters, or refuses it
    /// ([`AuthError::Throttled`]) without counting anything.
    pub async fn claim(&self, attempt: &Attempt) -> Result<Claim, AuthError> {
        if self.claims.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1 {
            self.spawn_purge();
        }
        let mut tx = self.control.begin().await?;
        // One statement: the three rows are locked in the same order (pair, address,
        // account) by every claim, so concurrent claims queue on a row and never deadlock.
        let counts: Counts = sqlx::query_as(
            "WITH claimed AS ( \
                 INSERT INTO login_attempts AS a (scope, key, window_start, attempts) \
                 VALUES ('pair', $1, now(), 1), ('address', $2, now(), 1), ('account', $3, now(), 1) \
                 ON CONFLICT (scope, key) DO UPDATE SET \
                     window_start = CASE WHEN a.window_start <= now() - make_interval(secs => $4) \
                                         THEN now() ELSE a.window_start END, \
                     attempts = CASE WHEN a.window_start <= now() - make_interval(secs => $4) \
                                     THEN 1 ELSE a.attempts + 1 END \
                 RETURNING scope, attempts) \
             SELECT \
                 (SELECT attempts FROM claimed WHERE scope = 'pair') AS pair, \
                 (SELECT attempts FROM claimed WHERE scope = 'address') AS address, \
                 (SELECT attempts FROM claimed WHERE scope = 'account') AS account, \
                 EXISTS (SELECT 1 FROM login_known_addresses \
                         WHERE account = $3 AND address = $2 \
                           AND last_success > now() - make_interval(secs => $5)) AS known, \
                 now() AS at",
        )
        .bind(attempt.pair())
        .bind(&attempt.address)
        .bind(&attempt.account)
        .bind(WINDOW.as_secs_f64())
        .bind(KNOWN_ADDRESS_FOR.as_secs_f64())
        .fetch_one(&mut *tx)
        .await?;
        let over = |n: i32, limit: u32| i64::from(n) > i64::from(limit);
        let refused = over(counts.pair, MAX_FAILURES)
            || (!counts.known
                && (over(counts.address, MAX_FAILURES_PER_ADDRESS)
                    || over(counts.account, ACCOUNT_LOCK_FAILURES)));
        if refused {
            tx.rollback().await?;
            tracing::info!(
                account = %attempt.account,
                address = %attempt.address,
                pair = counts.pair,
                per_address = counts.address,
                per_account = counts.account,
                known = counts.known,
                "password attempt throttled"
            );
            return Err(AuthError::Throttled);
        }
        tx.commit().await?;
        Ok(Claim {
            control: self.control.clone(),
            attempt: attempt.clone(),
            at: counts.at,
        })
    }

    /// Deletes counters whose window has passed and addresses no longer known, in the
    /// background (a failure only delays it).
    fn spawn_purge(&self) {
        let control = self.control.clone();
        tokio::spawn(async move {
            let purged = sqlx::query(
                "WITH a AS (DELETE FROM login_attempts \
                            WHERE window_start <= now() - make_interval(secs => $1)) \
                 DELETE FROM login_known_addresses \
                 WHERE last_success <= now() - make_interval(secs => $2)",
            )
            .bind(WINDOW.as_secs_f64())
            .bind(KNOWN_ADDRESS_FOR.as_secs_f64())
            .execute(&control)
            .await;
            if let Err(e) = purged {
                tracing::warn!(error = %e, "purging expired sign-in counters failed");
            }
        });
    }
}

/// A claimed attempt; say how it ended. Dropped without a word (the request was
/// cancelled), it stays counted as a failure.
#[must_use = "settle the claim with succeeded, failed or abandoned"]
pub struct Claim {
    control: PgPool,
    attempt: Attempt,
    /// When it was claimed: a give-back touches only counters whose window began by then.
    at: DateTime<Utc>,
}

impl Claim {
    /// The password was right: forgets the pair's failures, gives back the claim on the
    /// address and the account, and makes the address known to the account.
    pub async fn succeeded(self) {
        let result = async {
            let mut tx = self.control.begin().await?;
            sqlx::query("DELETE FROM login_attempts WHERE scope = 'pair' AND key = $1")
                .bind(self.attempt.pair())
                .execute(&mut *tx)
                .await?;
            self.give_back(&mut tx, &["address", "account"]).await?;
            sqlx::query(
                "INSERT INTO login_known_addresses (account, address, last_success) \
                 VALUES ($1, $2, now()) \
                 ON CONFLICT (account, address) DO UPDATE SET last_success = now()",
            )
            .bind(&self.attempt.account)
            .bind(&self.attempt.address)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "recording a successful sign-in failed");
        }
    }

    /// The password was wrong: the claim stays, as the failure.
    pub fn failed(self) {}

    /// Nothing was decided (an internal error): gives back all three claims.
    pub async fn abandoned(self) {
        let result = async {
            let mut tx = self.control.begin().await?;
            self.give_back(&mut tx, &["pair", "address", "account"])
                .await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "giving back a sign-in claim failed");
        }
    }

    async fn give_back(
        &self,
        tx: &mut sqlx::PgConnection,
        scopes: &[&str],
    ) -> Result<(), sqlx::Error> {
        let pair = self.attempt.pair();
        for scope in scopes {
            let key = match *scope {
                "pair" => pair.as_str(),
                "address" => self.attempt.address.as_str(),
                _ => self.attempt.account.as_str(),
            };
            sqlx::query(
                "UPDATE login_attempts SET attempts = GREATEST(attempts - 1, 0) \
                 WHERE scope = $1 AND key = $2 AND window_start <= $3",
            )
            .bind(scope)
            .bind(key)
            .bind(self.at)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_ignore_case_and_group_impossible_names_and_ipv6_neighbours() {
        let a = Attempt::new(Some("DMC001"), "Bob", Some("10.0.0.1"));
        assert_eq!(a, Attempt::new(Some("DMC001"), "bob", Some("10.0.0.1")));
        assert_eq!(a.pair(), "DMC001:bob|10.0.0.1");
        assert_eq!(
            Attempt::new(Some("DMC001"), "x\0y z", None).account,
            "DMC001:~invalid"
        );
        assert_eq!(
            Attempt::new(Some("dmc001"), "bob", None).account,
            "~invalid:bob"
        );
        assert_eq!(Attempt::new(None, "root", None).account, "-:root");
        assert_eq!(
            address_key(Some("2001:db8:1:2:aaaa::1")),
            address_key(Some("2001:db8:1:2:bbbb::9"))
        );
        assert_eq!(address_key(Some("2001:db8:1:2::1")), "2001:db8:1:2::/64");
        assert_eq!(address_key(Some("::ffff:192.0.2.1")), "192.0.2.1");
        assert_eq!(address_key(Some("nonsense")), "unknown");
    }
}
