//! The laboratory: a per-hospital test catalogue ([`LabTest`]), lab orders with their
//! specimens and results ([`LabOrder`]), and specimen labels unique in the hospital
//! ([`SpecimenLabelClaim`]).
//!
//! Anchored on how hospital labs work (OpenELIS, SENAITE, OpenEMR's procedure orders) and
//! on FHIR's lab flow (ServiceRequest → Specimen → Observation → DiagnosticReport):
//! - a DOCTOR orders catalogue tests or panels; the order keeps each entry's catalogue
//!   version, so a later price or range change does not touch it;
//! - a NURSE or LAB_TECHNICIAN collects a specimen per specimen type, under a label
//!   unique in the hospital; the lab receives it or rejects it with a reason, and a
//!   rejected specimen is recollected;
//! - a LAB_TECHNICIAN enters results, checked against the test (unit, kind, answers) and
//!   flagged against the reference range for the patient's sex and age on the day of
//!   collection; another technician verifies them (four eyes); an amendment is a new
//!   version with its reason, verified again; nothing is overwritten.

mod catalogue;
mod errors;
mod label;
mod order;
mod values;

pub use catalogue::*;
pub use errors::*;
pub use label::*;
pub use order::*;
pub use values::*;

#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
