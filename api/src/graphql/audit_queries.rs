//! Where the schema's query root finds the audit queries; they live in [`super::audit`].

pub use super::audit::AuditQuery;
