//! GraphQL mirrors of domain types. The domain stays free of async-graphql; `remote`
//! keeps each mirror in step with its domain enum at compile time.

use async_graphql::{Enum, SimpleObject};

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "hms_domain::Role", rename_items = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    #[graphql(name = "SUPERADMIN")]
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

#[derive(SimpleObject, Clone)]
pub struct HospitalRef {
    pub code: String,
    pub name: String,
}

/// Earliest and latest years the API accepts in dates and instants: far inside what
/// PostgreSQL stores, so a value is refused here as VALIDATION instead of failing (or,
/// worse, being written) further down.
pub const MIN_YEAR: i32 = 1900;
pub const MAX_YEAR: i32 = 9999;

pub fn check_instant(
    field: &str,
    value: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, super::error::ApiError> {
    use chrono::Datelike;
    check_year(field, value.year())?;
    Ok(value)
}

pub fn check_date(
    field: &str,
    value: chrono::NaiveDate,
) -> Result<chrono::NaiveDate, super::error::ApiError> {
    use chrono::Datelike;
    check_year(field, value.year())?;
    Ok(value)
}

fn check_year(field: &str, year: i32) -> Result<(), super::error::ApiError> {
    if (MIN_YEAR..=MAX_YEAR).contains(&year) {
        Ok(())
    } else {
        Err(super::error::ApiError::validation(
            field,
            format!("must be between the years {MIN_YEAR} and {MAX_YEAR}"),
        ))
    }
}

const MAX_ADDRESS_LINE_CHARS: usize = 200;
const MAX_CITY_CHARS: usize = 100;
const MAX_POSTAL_CODE_CHARS: usize = 20;

/// A postal address (of a hospital or a patient).
#[derive(async_graphql::SimpleObject, Clone)]
#[graphql(name = "Address")]
pub struct AddressOut {
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

impl From<&hms_domain::common::Address> for AddressOut {
    fn from(a: &hms_domain::common::Address) -> Self {
        Self {
            line1: a.line1.to_string(),
            line2: a.line2.as_ref().map(ToString::to_string),
            city: a.city.to_string(),
            region: a.region.as_ref().map(ToString::to_string),
            postal_code: a.postal_code.as_ref().map(ToString::to_string),
            country: a.country.as_str().to_owned(),
        }
    }
}

#[derive(async_graphql::InputObject, serde::Serialize, Clone)]
pub struct AddressInput {
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2, e.g. KE.
    pub country: String,
}

impl AddressInput {
    /// The domain's address; errors name the field as `address.<field>`.
    pub fn parse(&self) -> Result<hms_domain::common::Address, super::error::ApiError> {
        use hms_domain::common::{BoundedText, CountryCode};
        let optional = |field: &'static str, value: &Option<String>, max: usize| {
            value
                .as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| BoundedText::parse(field, v, max))
                .transpose()
        };
        Ok(hms_domain::common::Address {
            line1: BoundedText::parse("address.line1", &self.line1, MAX_ADDRESS_LINE_CHARS)?,
            line2: optional("address.line2", &self.line2, MAX_ADDRESS_LINE_CHARS)?,
            city: BoundedText::parse("address.city", &self.city, MAX_CITY_CHARS)?,
            region: optional("address.region", &self.region, MAX_CITY_CHARS)?,
            postal_code: optional(
                "address.postalCode",
                &self.postal_code,
                MAX_POSTAL_CODE_CHARS,
            )?,
            country: CountryCode::parse(&self.country)
                .map_err(|e| super::error::ApiError::validation("address.country", e.message))?,
        })
    }
}
