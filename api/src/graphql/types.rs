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
