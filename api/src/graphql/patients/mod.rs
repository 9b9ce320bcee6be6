//! Patients over GraphQL: registration (the MRN comes from the tenant's `mrn_seq`
//! sequence), demographics, allergies and alerts, death, deactivation and merging of
//! duplicates; search and the record view. The rules live in
//! [`hms_app::usecases::patients`]; here inputs are parsed and results shaped.
//!
//! Opening a record (`patient(id)`, a patient's `history`) is itself recorded: a
//! `record_access` event is appended, and the read fails if it cannot be, before any data
//! is returned.
//!
//! - [`types`] holds the GraphQL types and their conversions from and to the use cases'.
//! - [`query`] holds [`PatientQuery`] (and a patient's `history`).
//! - [`mutation`] holds [`PatientMutation`].

mod mutation;
mod query;
mod types;

pub use mutation::PatientMutation;
pub use query::PatientQuery;
pub use types::{
    AddPatientAlertInput, Allergy, AllergyInput, AllergySeverity, BloodType,
    DeactivatePatientInput, EmergencyContact, EmergencyContactInput, MarkPatientDeceasedInput,
    MergePatientsInput, Patient, PatientAlert, PatientStatus, ReactivatePatientInput,
    RecordAllergyInput, RegisterPatientInput, RemoveAllergyInput, ResolvePatientAlertInput, Sex,
    UpdatePatientInput,
};
