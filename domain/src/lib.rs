//! # hms-domain
//!
//! The business rules of HMS as cqrs-es aggregates, with no IO: no database, web
//! framework, clock or random source is reached from here. Facts from outside (now,
//! generated ids, the next medical record number) arrive inside commands.
//!
//! Layout:
//! - [`common`]: value objects shared by every aggregate (codes, names, emails, roles,
//!   the acting user) and the event metadata that records who did what, when, from where.
//! - [`hospital`]: the one hospital of a tenant database: profile, departments, modules,
//!   subscription.
//! - [`user`]: staff accounts inside one hospital.
//! - [`plan`]: subscription plans and the one table of their limits.
//!
//! Persisted identity (`Aggregate::TYPE`, event type names, event versions) never changes
//! once released: add a new version and an upcaster instead.

pub mod common;
pub mod hospital;
pub mod plan;
pub mod user;

pub use common::{Actor, EventMetadata, Role};

/// Upcasters for every event whose stored payload shape has changed since it was first
/// written. Both the command path and the read side decode through them.
pub fn upcasters() -> Vec<Box<dyn cqrs_es::persist::EventUpcaster>> {
    Vec::new()
}
