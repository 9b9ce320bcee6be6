//! The laboratory over GraphQL: the test catalogue, orders, specimens, results,
//! verification, the worklist, a patient's results over time, critical results and
//! turnaround. The rules and the reads live in [`hms_app::usecases::lab`]; here inputs
//! are parsed and results shaped.
//!
//! - [`types`]: the GraphQL types and inputs, and their conversions.
//! - [`query`]: the catalogue, the worklist, an order (with specimens, results, versions
//!   and history), a patient's results, critical results, turnaround.
//! - [`mutation`]: catalogue changes, ordering, specimens, results, verification,
//!   amendment, cancellation and billing.

mod mutation;
mod query;
mod types;

pub use mutation::LabMutation;
pub use query::LabQuery;
