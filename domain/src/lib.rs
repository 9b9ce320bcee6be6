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
//! - [`permissions`]: the role × operation matrix.
//! - [`disclosure`]: which parts of a patient's information each role may read.
//! - [`access`]: subscription and module gating, and [`access::authorize`], the one check
//!   the API makes before dispatching a command.
//! - [`schedule`]: per-doctor and per-patient day schedules that own slot allocation, the
//!   consistency boundary for "no double booking" (ADR 0002).
//! - [`appointment`]: an appointment's status machine and booking rules.
//! - [`billing`]: [`billing::Money`] and the invoice aggregate (lines, discount, tax,
//!   issue, payments, refunds, void).
//! - [`lab`]: the laboratory: test catalogue, orders, specimens, results with reference
//!   ranges and flags, four-eyes verification, amendments.
//! - [`break_glass`]: time-boxed access to a restricted record outside its care team, and
//!   the privacy officer's review of it.
//! - [`patient`]: patients, their medical record numbers ([`patient::Mrn`]), demographics,
//!   allergies and alerts, death, deactivation and merging of duplicates.
//!
//! Persisted identity (`Aggregate::TYPE`, event type names, event versions) never changes
//! once released: add a new version and an upcaster instead.

pub mod access;
pub mod appointment;
pub mod billing;
pub mod break_glass;
pub mod common;
pub mod disclosure;
pub mod hospital;
pub mod lab;
pub mod patient;
#[cfg(test)]
mod permission_walk;
pub mod permissions;
pub mod plan;
#[cfg(test)]
mod properties;
pub mod record_access;
pub mod schedule;
pub mod user;

pub use common::{Actor, EventMetadata, Role};

/// Upcasters for every event whose stored payload shape has changed since it was first
/// written. Both the command path and the read side (`hms-replay`, projections) decode
/// through them, so old event versions arrive as the current ones; stored events are never
/// rewritten.
pub fn upcasters() -> Vec<Box<dyn cqrs_es::persist::EventUpcaster>> {
    let mut all = Vec::new();
    all.extend(patient::upcasters());
    all
}

/// Something done once per aggregate type of the domain.
pub trait AggregateVisitor {
    fn visit<A: cqrs_es::Aggregate + 'static>(&mut self);
}

/// Visits every aggregate of the domain, so that a tool which handles events by their
/// persisted aggregate type (`hms-replay verify` and `state`) covers each one. A new
/// aggregate is added here, next to its module.
pub fn visit_aggregates(visitor: &mut impl AggregateVisitor) {
    visitor.visit::<hospital::Hospital>();
    visitor.visit::<user::User>();
    visitor.visit::<patient::Patient>();
    visitor.visit::<appointment::Appointment>();
    visitor.visit::<schedule::DoctorSchedule>();
    visitor.visit::<schedule::PatientSchedule>();
    visitor.visit::<billing::Invoice>();
    visitor.visit::<record_access::RecordAccess>();
    visitor.visit::<break_glass::BreakGlass>();
    visitor.visit::<lab::LabTest>();
    visitor.visit::<lab::LabOrder>();
    visitor.visit::<lab::SpecimenLabelClaim>();
}
