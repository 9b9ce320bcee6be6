//! Database names of tenants. A name is built only from a validated [`HospitalCode`]
//! and a validated prefix, and is still quoted wherever it reaches SQL.

use hms_domain::common::HospitalCode;

use super::TenancyError;

/// PostgreSQL truncates identifiers to 63 bytes; names are kept well below that so two
/// codes can never collide after truncation.
const MAX_PREFIX_LEN: usize = 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantNaming {
    prefix: String,
}

impl TenantNaming {
    pub fn new(prefix: &str) -> Result<Self, TenancyError> {
        let valid = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX_LEN
            && prefix.as_bytes()[0].is_ascii_lowercase()
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(Self {
                prefix: prefix.to_owned(),
            })
        } else {
            Err(TenancyError::Config(format!(
                "tenant database prefix {prefix:?} must be 1 to {MAX_PREFIX_LEN} characters of a-z, 0-9 and '_', starting with a letter"
            )))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The role the tenant side runs under ([`super::writer`]): `<prefix>writer`.
    pub fn writer_role(&self) -> String {
        format!("{}writer", self.prefix)
    }

    /// `DMC001` → `<prefix>dmc001`.
    pub fn database_for(&self, code: &HospitalCode) -> String {
        format!("{}{}", self.prefix, code.as_str().to_ascii_lowercase())
    }

    /// The migrated template that new tenant databases are copied from. Codes contain no
    /// `_`, so `<prefix>_template` can never be a tenant's database.
    pub fn template_database(&self) -> String {
        format!("{}_template", self.prefix)
    }

    /// What the names of spare databases (see [`super::spares`]) start with. Codes
    /// contain no `_`, so no tenant database starts with it.
    pub fn spare_prefix(&self) -> String {
        format!("{}_spare_", self.prefix)
    }

    /// A new, random spare database name.
    pub fn new_spare_database(&self) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        format!("{}{}", self.spare_prefix(), &id[..12])
    }

    /// A scratch database for a restore in progress (see [`super::backup`]); renamed to
    /// the hospital's once verified. Codes contain no `_`, so no tenant's name is one.
    pub fn new_restore_database(&self) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        format!("{}_restore_{}", self.prefix, &id[..12])
    }

    /// A `LIKE` pattern matching every database of this platform (tenants and template).
    pub fn like_pattern(&self) -> String {
        format!("{}%", self.prefix.replace('_', "\\_"))
    }
}

/// Quotes an identifier for SQL. Names are validated before they get here; quoting is
/// the second line of defence.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_databases_are_named_from_prefix_and_lower_case_code() {
        let naming = TenantNaming::new("hms_t_").expect("valid prefix");
        let code = HospitalCode::parse("DMC001").expect("valid code");
        assert_eq!(naming.database_for(&code), "hms_t_dmc001");
        assert_eq!(naming.template_database(), "hms_t__template");
    }

    #[test]
    fn names_stay_below_the_identifier_limit() {
        let naming = TenantNaming::new(&"a".repeat(MAX_PREFIX_LEN)).expect("valid prefix");
        let code = HospitalCode::parse(&"Z".repeat(HospitalCode::MAX_LEN)).expect("valid code");
        assert!(naming.database_for(&code).len() < 63);
        assert!(naming.template_database().len() < 63);
        assert!(naming.new_spare_database().len() < 63);
    }

    #[test]
    fn spare_names_are_never_tenant_or_template_names() {
        let naming = TenantNaming::new("hms_t_").expect("valid prefix");
        let spare = naming.new_spare_database();
        assert!(spare.starts_with("hms_t__spare_"), "{spare}");
        assert!(!naming
            .template_database()
            .starts_with(&naming.spare_prefix()));
        assert_ne!(spare, naming.new_spare_database());
        // A tenant name is the prefix and a code of [a-z0-9]: never a `_` after the prefix.
        assert!(spare["hms_t_".len()..].starts_with('_'));
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in ["", "Hms", "1abc", "a-b", "a\"b", &"a".repeat(31)] {
            assert!(TenantNaming::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
