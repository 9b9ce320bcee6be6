//! Throttling of failed sign-ins, per account and per client address: after
//! `MAX_FAILURES` failures within `WINDOW`, further attempts are refused (RATE_LIMITED)
//! until the window has passed, whether or not the password would have been right.
//!
//! Kept in memory, per server process: with several replicas each enforces its own
//! budget, which still bounds guessing to replicas × MAX_FAILURES per window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per account within the window.
pub const MAX_FAILURES: u32 = 5;
/// Failures allowed per client address: higher, since a hospital's staff often share
/// one address (NAT).
pub const MAX_FAILURES_PER_ADDRESS: u32 = 50;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Entries kept at most; older ones are dropped first (bounds memory under a flood).
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginThrottle {
    /// Whether another attempt under any of `keys` is allowed now.
    pub fn allows(&self, keys: &[String]) -> bool {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter().all(|k| match map.get(k) {
            Some((n, since)) => {
                let limit = if k.starts_with("addr:") {
                    MAX_FAILURES_PER_ADDRESS
                } else {
                    MAX_FAILURES
                };
                *n < limit || since.elapsed() >= WINDOW
            }
            None => true,
        })
    }

    pub fn record_failure(&self, keys: &[String]) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (_, since)| since.elapsed() < WINDOW);
        }
        for key in keys {
            let entry = map.entry(key.clone()).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= WINDOW {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
    }

    pub fn record_success(&self, account_key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(account_key);
    }
}

/// The keys one sign-in attempt counts against.
pub fn keys(hospital: Option<&str>, username: &str, client: Option<&str>) -> (String, Vec<String>) {
    let account = format!(
        "account:{}:{}",
        hospital.unwrap_or("-"),
        username.to_lowercase()
    );
    let mut all = vec![account.clone()];
    if let Some(addr) = client {
        all.push(format!("addr:{addr}"));
    }
    (account, all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_lock_the_account_ignoring_case() {
        let throttle = LoginThrottle::default();
        let (_, k) = keys(Some("DMC001"), "Bob", Some("10.0.0.1"));
        for _ in 0..MAX_FAILURES {
            assert!(throttle.allows(&k));
            throttle.record_failure(&k);
        }
        assert!(!throttle.allows(&k));
        let (_, same_account_other_addr) = keys(Some("DMC001"), "bob", Some("10.0.0.2"));
        assert!(!throttle.allows(&same_account_other_addr));
        let (_, other_account) = keys(Some("DMC001"), "alice", Some("10.0.0.1"));
        assert!(
            throttle.allows(&other_account),
            "another account from the same address still may"
        );
    }

    #[test]
    fn many_failures_from_one_address_lock_the_address() {
        let throttle = LoginThrottle::default();
        for i in 0..MAX_FAILURES_PER_ADDRESS {
            let (_, k) = keys(Some("DMC001"), &format!("user{i}"), Some("10.0.0.9"));
            throttle.record_failure(&k);
        }
        let (_, fresh) = keys(Some("DMC001"), "somebody_new", Some("10.0.0.9"));
        assert!(!throttle.allows(&fresh));
        let (_, elsewhere) = keys(Some("DMC001"), "somebody_new", Some("10.0.0.10"));
        assert!(throttle.allows(&elsewhere));
    }
}
