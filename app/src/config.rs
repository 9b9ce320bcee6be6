//! Platform settings shared by every process (`hms` and `hms-replay`). Every flag can
//! also be set from the environment, and secrets are never printed (their `Debug` is
//! redacted).

use std::fmt;
use std::net::IpAddr;

use clap::{Args, ValueEnum};

/// Settings every subcommand needs: where the platform lives.
#[derive(Debug, Clone, Args)]
pub struct PlatformConfig {
    /// The platform database. Its server also holds the tenant databases by default.
    #[arg(
        long,
        env = "DATABASE_URL",
        global = true,
        default_value = "postgres://postgres@127.0.0.1:5432/hms_control",
        hide_env_values = true
    )]
    pub database_url: Secret,
    /// Prefix of tenant database names, so several platforms (or test runs) can share
    /// one PostgreSQL server. Lower-case letters, digits and '_'.
    #[arg(
        long,
        env = "HMS_TENANT_DB_PREFIX",
        global = true,
        default_value = "hms_t_"
    )]
    pub tenant_db_prefix: String,
    /// Connections all tenant pools of this process may hold together.
    #[arg(
        long,
        env = "HMS_TENANT_CONNECTION_BUDGET",
        global = true,
        default_value_t = 60
    )]
    pub tenant_connection_budget: u32,
    /// Connections of one tenant's pool.
    #[arg(long, env = "HMS_TENANT_POOL_SIZE", global = true, default_value_t = 3)]
    pub tenant_pool_size: u32,
    /// Connections a very busy tenant's pool may grow to while a quarter of the budget
    /// stays free (default: 8, or the pool size if larger).
    #[arg(long, env = "HMS_TENANT_POOL_MAX", global = true)]
    pub tenant_pool_max: Option<u32>,
    /// Spare tenant databases to keep ready (copies of the template made ahead of time,
    /// renamed when a hospital is onboarded, so onboarding does not wait for
    /// `CREATE DATABASE`). `hms serve` refills them in the background; 0 turns them off
    /// (and the server drops any left over). Use the same value in every process of a
    /// platform.
    #[arg(long, env = "HMS_SPARE_DATABASES", global = true, default_value_t = 2)]
    pub spare_databases: u32,
    /// Connections of the platform database's pool.
    #[arg(
        long,
        env = "HMS_CONTROL_POOL_SIZE",
        global = true,
        default_value_t = 5
    )]
    pub control_pool_size: u32,
    #[arg(long, env = "HMS_ENV", global = true, value_enum, default_value_t = Environment::Development)]
    pub environment: Environment,
    /// Password of the role the tenant databases are served under (`<prefix>writer`,
    /// which may append to the event log but never rewrite it), when the PostgreSQL
    /// server asks for one. Used when the role is created and whenever a tenant pool
    /// connects.
    #[arg(
        long,
        env = "HMS_TENANT_ROLE_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub tenant_role_password: Option<Secret>,
    /// The master key that wraps every patient's data key (base64 of 32 bytes, e.g.
    /// `openssl rand -base64 32`). Required in production; elsewhere a public
    /// development key stands in.
    #[arg(long, env = "HMS_MASTER_KEY", global = true, hide_env_values = true)]
    pub master_key: Option<Secret>,
    /// Earlier master keys, comma-separated, still accepted for unwrapping while
    /// `hms rotate-master-key` rewraps the data keys under the current one.
    #[arg(
        long,
        env = "HMS_MASTER_KEY_PREVIOUS",
        global = true,
        hide_env_values = true
    )]
    pub master_key_previous: Option<Secret>,
}

/// Connections a very busy tenant's pool may grow to unless configured.
const DEFAULT_TENANT_POOL_MAX: u32 = 8;

impl PlatformConfig {
    /// What a very busy tenant's pool may grow to (`HMS_TENANT_POOL_MAX`); a configured
    /// value below the pool size is refused when the registry is made.
    pub fn tenant_pool_burst(&self) -> u32 {
        self.tenant_pool_max
            .unwrap_or(DEFAULT_TENANT_POOL_MAX.max(self.tenant_pool_size))
    }

    /// The master keys this configuration names: refused in production without one.
    pub fn keyring(&self) -> Result<hms_projections::personal::Keyring, String> {
        use hms_projections::personal::Keyring;
        match &self.master_key {
            Some(key) => {
                let previous: Vec<String> = self
                    .master_key_previous
                    .as_ref()
                    .map(|p| p.expose().split(',').map(str::to_owned).collect())
                    .unwrap_or_default();
                Keyring::from_base64(key.expose(), &previous)
                    .map_err(|e| format!("HMS_MASTER_KEY: {e}"))
            }
            None if self.environment == Environment::Production => {
                Err("HMS_MASTER_KEY is required in production (base64 of 32 random bytes)".into())
            }
            None => Ok(Keyring::development()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

/// A string that never shows up in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Networks whose connections may name the client in `X-Forwarded-For` (reverse
/// proxies, load balancers): `HMS_TRUSTED_PROXIES`, a comma-separated list of CIDRs or
/// single addresses. Empty by default: the connection's peer is the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn parse(list: &[String]) -> Result<Self, String> {
        list.iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(IpNet::parse)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }
}

/// An address and prefix length, e.g. `10.0.0.0/8`, `2001:db8::/32`, `127.0.0.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let invalid = || format!("invalid network {raw:?}: expected an address or CIDR");
        let (addr, prefix) = match raw.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (raw, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| invalid())?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.trim().parse::<u8>().map_err(|_| invalid())?,
        };
        if prefix > max {
            return Err(invalid());
        }
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` of `bits` bits of `a` and `b` agree.
fn prefix_eq(a: u128, b: u128, prefix: u8, bits: u32) -> bool {
    let prefix = u32::from(prefix);
    if prefix == 0 {
        return true;
    }
    let shift = bits - prefix;
    (a >> shift) == (b >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses_only() {
        let list = TrustedProxies::parse(&[
            "10.0.0.0/8".into(),
            " 192.0.2.7 ".into(),
            "2001:db8::/32".into(),
            "".into(),
        ])
        .expect("parses");
        let ip = |s: &str| s.parse::<IpAddr>().expect("an address");
        assert!(list.contains(ip("10.200.3.4")));
        assert!(list.contains(ip("192.0.2.7")));
        assert!(list.contains(ip("::ffff:10.1.1.1")), "IPv4-mapped IPv6");
        assert!(list.contains(ip("2001:db8:1::5")));
        assert!(!list.contains(ip("11.0.0.1")));
        assert!(!list.contains(ip("192.0.2.8")));
        assert!(!list.contains(ip("2001:db9::1")));
        assert!(TrustedProxies::parse(&["0.0.0.0/0".into()])
            .expect("parses")
            .contains(ip("203.0.113.9")));
        assert!(TrustedProxies::parse(&[]).expect("parses").is_empty());
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/x", "::1/129"] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
    }
}
