//! Hospital administration: the hospital's profile, settings, branding, departments,
//! modules and staff accounts, and the dashboard statistics. The rules live in
//! [`hms_app::usecases::hospital`]; here inputs are parsed and results shaped.
//!
//! - [`types`]: output and input objects, enums mirroring the domain's.
//! - [`query`]: `hospital`, `departments`, `users`, `user`, `hospitalStats`.
//! - [`mutation`]: profile, settings, branding, departments, modules, staff accounts and
//!   the caller's own password.

mod mutation;
mod query;
mod types;

pub use mutation::HospitalMutation;
pub use query::HospitalQuery;
pub use types::{
    BrandingOut, CreateUserInput, DayOfWeek, Department, Hospital, HospitalStats, Module,
    SettingsOut, StaffUser, StatusCount, UpdateBrandingInput, UpdateHospitalProfileInput,
    UpdateHospitalSettingsInput, WorkingDay,
};
