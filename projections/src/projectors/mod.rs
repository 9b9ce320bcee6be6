//! The read models. Each projector owns its tables and nothing else.

mod hospital;
mod staff;

pub use hospital::HospitalProjector;
pub use staff::StaffProjector;

use crate::Projector;

/// Every projector of a tenant database, in the order they are run.
pub fn all() -> Vec<Box<dyn Projector>> {
    vec![Box::new(HospitalProjector), Box::new(StaffProjector)]
}
