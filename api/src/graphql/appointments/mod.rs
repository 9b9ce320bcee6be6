//! Appointments over GraphQL: booking, rescheduling and the status machine; lists by
//! doctor, patient, department, status and time, and a doctor's day.
//!
//! The rules, the booking process manager (doctor's and patient's day schedules, ADR
//! 0002) and every read live in [`hms_app::usecases::appointments`]; here inputs are
//! parsed, one use case runs, and its result is shaped.

mod mutation;
mod query;
mod types;

pub use mutation::AppointmentMutation;
pub use query::AppointmentQuery;
pub use types::{
    Appointment, AppointmentActionInput, AppointmentFilter, AppointmentStatus,
    CancelAppointmentInput, CompleteAppointmentInput, DoctorDay, RescheduleAppointmentInput,
    ScheduleAppointmentInput,
};
