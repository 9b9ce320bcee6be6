//! Background work every `hms serve` process runs; each worker calls the application
//! layer, never a resolver.
//!
//! - [`projection_daemon`]: keeps every active hospital's read models moving (hints
//!   from other processes on the platform channel, and a timer).
//! - [`reservation_sweep`]: releases slots a broken booking left held (ADR 0002).
//! - [`replicas`]: heartbeats, so that another process takes over what a dead one left.
//! - [`leases`]: periodic work per hospital done by one replica per period.

pub mod leases;
pub mod projection_daemon;
pub mod replicas;
pub mod reservation_sweep;
