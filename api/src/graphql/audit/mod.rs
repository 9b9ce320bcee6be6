//! Audit over GraphQL, read from the event log itself: the `auditTrail` query and the
//! `history` field of every record type (entries in commit order; the audit index finds
//! them, the payload comes from `events`), `patientAsOf` (a patient record as it stood
//! at an instant, its reading recorded in the access log) and `patientAccessLog` (who
//! opened a patient's record). All need `ViewAuditTrail`.
//!
//! The rules and every read live in [`hms_app::usecases::audit`]; here inputs are
//! parsed and results shaped. Secrets (password hashes) never leave the server: they
//! are removed from every payload there.

mod query;
mod types;

pub use query::{history, AuditQuery};
pub use types::{AuditActor, AuditEntry, AuditTrailFilter, PatientAccessEntry, PatientAsOf};
