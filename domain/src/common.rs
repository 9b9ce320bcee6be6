//! Value objects shared by every aggregate. Each one validates in `parse`, and its fields
//! are private, so an invalid value cannot be built.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A rejected input value: which field, and why, in words fit for an end user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A hospital's code, e.g. `DMC001`: an upper-case letter followed by 2–15 upper-case
/// letters or digits. It names the tenant database, so the pattern is strict and checked
/// before any SQL is built from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HospitalCode(String);

impl HospitalCode {
    pub const MAX_LEN: usize = 16;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let bytes = raw.as_bytes();
        let valid = (3..=Self::MAX_LEN).contains(&bytes.len())
            && bytes[0].is_ascii_uppercase()
            && bytes[1..]
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationError::new(
                "code",
                "must be 3 to 16 characters: an upper-case letter (A-Z) followed by upper-case letters or digits",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HospitalCode {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<HospitalCode> for String {
    fn from(value: HospitalCode) -> Self {
        value.0
    }
}

impl fmt::Display for HospitalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A trimmed, non-empty piece of text of bounded length (names, titles, descriptions).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BoundedText(String);

impl BoundedText {
    pub fn parse(
        field: &'static str,
        raw: &str,
        max_chars: usize,
    ) -> Result<Self, ValidationError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(ValidationError::new(field, "must not be empty"));
        }
        if trimmed.chars().count() > max_chars {
            return Err(ValidationError::new(
                field,
                format!("must be at most {max_chars} characters"),
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(ValidationError::new(
                field,
                "must not contain control characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BoundedText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A login name: 3–64 characters of letters, digits, `.`, `_`, `-`. Unique within a
/// hospital regardless of case, so it is compared through [`Username::normalized`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let raw = raw.trim();
        let valid = (3..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationError::new(
                "username",
                "must be 3 to 64 characters of letters, digits, '.', '_' or '-'",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-insensitive form that uniqueness is decided on.
    pub fn normalized(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An e-mail address, checked for shape only (one `@`, a dotted domain, no spaces).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let raw = raw.trim();
        let invalid = || ValidationError::new("email", "is not a valid e-mail address");
        if raw.len() > 254 || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = raw.split_once('@').ok_or_else(invalid)?;
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@')
            && !domain.contains("..");
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err(invalid());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The roles of the system. `SuperAdmin` is a platform role: it lives in the platform
/// database, never inside a hospital, and never sees patient data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    #[serde(rename = "SUPERADMIN")]
    SuperAdmin,
    HospitalAdmin,
    Doctor,
    Nurse,
    Receptionist,
    Accountant,
    LabTechnician,
    Pharmacist,
    Radiologist,
    Staff,
}

impl Role {
    pub const ALL: [Role; 10] = [
        Role::SuperAdmin,
        Role::HospitalAdmin,
        Role::Doctor,
        Role::Nurse,
        Role::Receptionist,
        Role::Accountant,
        Role::LabTechnician,
        Role::Pharmacist,
        Role::Radiologist,
        Role::Staff,
    ];

    /// The roles a hospital account may hold (everything but the platform role).
    pub fn is_hospital_role(self) -> bool {
        self != Role::SuperAdmin
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::SuperAdmin => "SUPERADMIN",
            Role::HospitalAdmin => "HOSPITAL_ADMIN",
            Role::Doctor => "DOCTOR",
            Role::Nurse => "NURSE",
            Role::Receptionist => "RECEPTIONIST",
            Role::Accountant => "ACCOUNTANT",
            Role::LabTechnician => "LAB_TECHNICIAN",
            Role::Pharmacist => "PHARMACIST",
            Role::Radiologist => "RADIOLOGIST",
            Role::Staff => "STAFF",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == raw)
            .ok_or_else(|| ValidationError::new("role", format!("unknown role '{raw}'")))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The user on whose behalf a command runs. Commands carry it so that decisions that
/// depend on who acts (permissions, "an admin cannot deactivate themselves") are made
/// in the domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub user_id: Uuid,
    pub username: String,
    pub role: Role,
}

impl Actor {
    /// The actor for work done by the platform itself (provisioning, migrations).
    pub fn system() -> Self {
        Self {
            user_id: Uuid::nil(),
            username: "system".to_owned(),
            role: Role::SuperAdmin,
        }
    }
}

/// Who did it, when, from where: stored beside every event (not in its payload), as the
/// string map that cqrs-es persists. Keys are persisted identity: never rename them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    pub actor: Actor,
    pub tenant: String,
    pub request_id: String,
    pub client_addr: Option<String>,
    pub at: DateTime<Utc>,
}

impl EventMetadata {
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            ("actor_id".to_owned(), self.actor.user_id.to_string()),
            ("actor_username".to_owned(), self.actor.username.clone()),
            ("actor_role".to_owned(), self.actor.role.as_str().to_owned()),
            ("tenant".to_owned(), self.tenant.clone()),
            ("request_id".to_owned(), self.request_id.clone()),
            ("at".to_owned(), self.at.to_rfc3339()),
        ]);
        if let Some(addr) = &self.client_addr {
            map.insert("client_addr".to_owned(), addr.clone());
        }
        map
    }
}

/// A telephone number: an optional leading `+` and 7–15 digits. Spaces, dashes, dots and
/// parentheses are accepted on input and dropped, so one number has one stored form and
/// read models can search it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Phone(String);

impl Phone {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ValidationError> {
        let raw = raw.trim();
        let (plus, rest) = match raw.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let mut digits = String::with_capacity(rest.len() + 1);
        if plus {
            digits.push('+');
        }
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => {
                    return Err(ValidationError::new(
                        field,
                        "may contain only digits, spaces, '-', '.', '(', ')' and a leading '+'",
                    ))
                }
            }
        }
        let count = digits.trim_start_matches('+').len();
        if !(7..=15).contains(&count) {
            return Err(ValidationError::new(field, "must have 7 to 15 digits"));
        }
        Ok(Self(digits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ISO 3166-1 alpha-2 country code (shape only: two upper-case letters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CountryCode(String);

impl CountryCode {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let raw = raw.trim();
        if raw.len() == 2 && raw.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationError::new(
                "country",
                "must be a two-letter ISO country code such as KE or US",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The longest line of a postal address.
pub const MAX_ADDRESS_LINE_CHARS: usize = 200;

/// A postal address. Every part is already a validated value, so the fields are public:
/// an invalid address cannot be assembled from them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub line1: BoundedText,
    pub line2: Option<BoundedText>,
    pub city: BoundedText,
    pub region: Option<BoundedText>,
    pub postal_code: Option<BoundedText>,
    pub country: CountryCode,
}

/// An ISO 4217 currency code (shape only: three upper-case letters). `Copy`, so that
/// [`crate::billing::Money`] can be too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        match raw.trim().as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err(ValidationError::new(
                "currency",
                "must be a three-letter ISO currency code such as KES or USD",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII letters get in through `parse`, so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl TryFrom<String> for Currency {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hospital_codes_follow_the_strict_pattern() {
        for ok in ["DMC001", "ABC", "A1234567890BCDEF"] {
            assert!(HospitalCode::parse(ok).is_ok(), "{ok} should be accepted");
        }
        let long = "A".repeat(200);
        for bad in [
            "",
            "AB",
            "dmc001",
            "1ABC",
            "DMC-01",
            "ÄBC",
            "x'; DROP DATABASE postgres; --",
            "A1234567890BCDEFG",
            long.as_str(),
            "DMC 01",
        ] {
            assert!(
                HospitalCode::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn usernames_compare_case_insensitively() {
        let a = Username::parse("Dmc_Admin").expect("valid");
        assert_eq!(a.normalized(), "dmc_admin");
        assert!(Username::parse("no spaces").is_err());
        assert!(Username::parse("ab").is_err());
    }

    #[test]
    fn emails_are_checked_for_shape() {
        assert!(Email::parse("admin@dmc.example").is_ok());
        for bad in ["", "a", "a@b", "@b.c", "a@.b", "a b@c.d", "a@b..c"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn bounded_text_is_trimmed_and_bounded() {
        assert_eq!(
            BoundedText::parse("name", "  Downtown ", 10)
                .expect("valid")
                .as_str(),
            "Downtown"
        );
        assert!(BoundedText::parse("name", "   ", 10).is_err());
        assert!(BoundedText::parse("name", "x".repeat(11).as_str(), 10).is_err());
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
            let json = serde_json::to_string(&role).expect("serializes");
            assert_eq!(json, format!("\"{}\"", role.as_str()));
        }
    }

    #[test]
    fn phones_keep_digits_and_a_leading_plus() {
        assert_eq!(
            Phone::parse("phone", " +254 (712) 345-678 ")
                .expect("valid")
                .as_str(),
            "+254712345678"
        );
        for bad in [
            "",
            "12345",
            "+1 555 CALL NOW",
            "1".repeat(16).as_str(),
            "++254712345678",
        ] {
            assert!(
                Phone::parse("phone", bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn currencies_and_countries_are_upper_case_codes() {
        assert_eq!(Currency::parse("KES").expect("valid").as_str(), "KES");
        for bad in ["", "kes", "KE", "KESS", "K1S"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let json = serde_json::to_string(&Currency::parse("USD").expect("valid")).expect("json");
        assert_eq!(json, "\"USD\"");
        assert!(serde_json::from_str::<Currency>("\"usd\"").is_err());
        assert!(CountryCode::parse("KE").is_ok());
        assert!(CountryCode::parse("Kenya").is_err());
    }
}
