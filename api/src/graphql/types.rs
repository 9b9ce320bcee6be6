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

/// Text used to search or filter: PostgreSQL text cannot hold NUL.
pub fn check_filter_text(field: &str, value: &str) -> Result<(), super::error::ApiError> {
    if value.contains('\0') {
        Err(super::error::ApiError::validation(
            field,
            "must not contain NUL characters",
        ))
    } else {
        Ok(())
    }
}
