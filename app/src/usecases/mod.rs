//! The use cases, one module per area. Each takes typed input with its caller (a
//! capability from [`crate::scope`], or [`platform::PlatformScope`]) and returns domain
//! or read-model types; the transports only parse input and map errors.

pub mod access_report;
pub mod appointments;
pub mod audit;
pub mod billing;
pub mod booking;
pub mod hospital;
pub mod lab;
pub mod patients;
pub mod platform;
pub mod privacy;
pub mod restriction;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{AppError, Result};

/// Parses a stored enum name (`PAST_DUE`) with the type's serde names: the one way an
/// enum's stored text becomes its value.
pub fn stored<T: DeserializeOwned>(raw: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(raw.to_owned()))
        .map_err(|e| AppError::internal(format!("unexpected stored value {raw:?}: {e}")))
}

/// The stored name of an enum value (its serde name), the inverse of [`stored`].
pub fn stored_name<T: Serialize>(value: &T) -> Result<String> {
    match serde_json::to_value(value).map_err(AppError::internal)? {
        serde_json::Value::String(name) => Ok(name),
        other => Err(AppError::internal(format!(
            "{other} is not stored as a name"
        ))),
    }
}

/// PostgreSQL text cannot hold NUL: refused as VALIDATION on `field`.
pub fn no_nul(field: &str, text: &str) -> Result<()> {
    if text.contains('\0') {
        Err(AppError::validation(
            field,
            "must not contain NUL characters",
        ))
    } else {
        Ok(())
    }
}

/// Required text of at most `max` characters, trimmed: VALIDATION on `field` otherwise.
pub(crate) fn text(
    field: &'static str,
    raw: &str,
    max: usize,
) -> Result<hms_domain::common::BoundedText> {
    no_nul(field, raw)?;
    Ok(hms_domain::common::BoundedText::parse(field, raw, max)?)
}

/// Optional text: blank is none; otherwise as [`text`].
pub(crate) fn optional_text(
    field: &'static str,
    raw: Option<&str>,
    max: usize,
) -> Result<Option<hms_domain::common::BoundedText>> {
    match raw {
        Some(s) if !s.trim().is_empty() => Ok(Some(text(field, s, max)?)),
        _ => Ok(None),
    }
}
