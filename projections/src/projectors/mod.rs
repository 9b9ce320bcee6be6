//! The read models. Each projector owns its tables and nothing else.

mod hospital;
mod staff;

pub use hospital::HospitalProjector;
pub use staff::StaffProjector;

use crate::Projector;

/// The persisted name of a unit-variant enum (its serde form), e.g. `Module::Billing` →
/// `BILLING`: read models store the same spelling the events carry.
pub(crate) fn enum_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Every projector of a tenant database, in the order they are run.
pub fn all() -> Vec<Box<dyn Projector>> {
    vec![Box::new(HospitalProjector), Box::new(StaffProjector)]
}
