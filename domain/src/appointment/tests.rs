//! Unit tests of the appointment aggregate and its status machine.

use super::test_support::*;
use super::*;
use crate::permissions::{Operation, PermissionDenied};
use chrono::Duration;
use cqrs_es::test::TestFramework;

fn expect_error(given: Vec<AppointmentEvent>, cmd: AppointmentCommand, err: AppointmentError) {
    TestFramework::<Appointment>::with(())
        .given(given)
        .when(cmd)
        .then_expect_error(err);
}

fn expect_events(
    given: Vec<AppointmentEvent>,
    cmd: AppointmentCommand,
    events: Vec<AppointmentEvent>,
) {
    TestFramework::<Appointment>::with(())
        .given(given)
        .when(cmd)
        .then_expect_events(events);
}

fn checked_in() -> AppointmentEvent {
    AppointmentEvent::AppointmentCheckedIn { at: now() }
}
fn started() -> AppointmentEvent {
    AppointmentEvent::AppointmentStarted { at: now() }
}

#[test]
fn an_appointment_is_scheduled() {
    expect_events(
        vec![],
        schedule_at("2026-01-05T09:00:00+03:00", 30),
        vec![scheduled()],
    );
}

#[test]
fn scheduling_refusals() {
    let cases: Vec<(&str, u32, AppointmentError)> = vec![
        ("2026-01-05T06:45:00+03:00", 15, AppointmentError::InThePast),
        (
            "2026-01-10T09:00:00+03:00",
            30,
            AppointmentError::ClosedThatDay,
        ),
        (
            "2026-01-05T16:45:00+03:00",
            30,
            AppointmentError::OutsideWorkingHours,
        ),
        (
            "2026-01-06T07:45:00+03:00",
            30,
            AppointmentError::OutsideWorkingHours,
        ),
        (
            "2026-01-05T09:10:00+03:00",
            30,
            AppointmentError::NotOnSlotGrid(15),
        ),
        (
            "2026-01-05T09:00:00+03:00",
            20,
            AppointmentError::NotOnSlotGrid(15),
        ),
    ];
    for (start, minutes, err) in cases {
        expect_error(vec![], schedule_at(start, minutes), err);
    }
    expect_error(
        vec![scheduled()],
        schedule_at("2026-01-05T09:00:00+03:00", 30),
        AppointmentError::AlreadyScheduled,
    );
    let with = |f: &dyn Fn(&mut AppointmentCommand)| {
        let mut cmd = schedule_at("2026-01-05T09:00:00+03:00", 30);
        f(&mut cmd);
        cmd
    };
    expect_error(
        vec![],
        with(&|c| {
            if let AppointmentCommand::Schedule { doctor, .. } = c {
                doctor.active = false;
            }
        }),
        AppointmentError::DoctorInactive,
    );
    expect_error(
        vec![],
        with(&|c| {
            if let AppointmentCommand::Schedule { doctor, .. } = c {
                doctor.role = Role::Nurse;
            }
        }),
        AppointmentError::NotADoctor(Role::Nurse),
    );
    expect_error(
        vec![],
        with(&|c| {
            if let AppointmentCommand::Schedule { patient_active, .. } = c {
                *patient_active = false;
            }
        }),
        AppointmentError::PatientInactive,
    );
    expect_error(
        vec![],
        with(&|c| {
            if let AppointmentCommand::Schedule { actor: a, .. } = c {
                *a = actor(Role::Nurse);
            }
        }),
        PermissionDenied {
            role: Role::Nurse,
            operation: Operation::ScheduleAppointment,
        }
        .into(),
    );
}

#[test]
fn the_happy_path_runs_to_completion() {
    expect_events(
        vec![scheduled()],
        AppointmentCommand::CheckIn {
            actor: actor(Role::Nurse),
            now: now(),
        },
        vec![checked_in()],
    );
    expect_events(
        vec![scheduled(), checked_in()],
        AppointmentCommand::Start {
            actor: actor(Role::Doctor),
            now: now(),
        },
        vec![started()],
    );
    expect_events(
        vec![scheduled(), checked_in(), started()],
        AppointmentCommand::Complete {
            actor: actor(Role::Doctor),
            notes: Some(text("BP normal")),
            now: now(),
        },
        vec![AppointmentEvent::AppointmentCompleted {
            notes: Some("BP normal".into()),
            at: now(),
        }],
    );
}

#[test]
fn only_the_appointments_doctor_starts_and_completes_it() {
    let other = Actor {
        user_id: Uuid::from_u128(0xBAD),
        ..actor(Role::Doctor)
    };
    expect_error(
        vec![scheduled(), checked_in()],
        AppointmentCommand::Start {
            actor: other.clone(),
            now: now(),
        },
        AppointmentError::NotTheAppointmentsDoctor,
    );
    expect_error(
        vec![scheduled(), checked_in(), started()],
        AppointmentCommand::Complete {
            actor: other,
            notes: None,
            now: now(),
        },
        AppointmentError::NotTheAppointmentsDoctor,
    );
}

#[test]
fn rescheduling_moves_the_slot_and_remembers_the_old_one() {
    let new_start = local("2026-01-06T10:00:00+03:00");
    let old = scheduled();
    let AppointmentEvent::AppointmentScheduled {
        start,
        end,
        local_date,
        ..
    } = old.clone()
    else {
        panic!("scheduled() is AppointmentScheduled");
    };
    expect_events(
        vec![old],
        AppointmentCommand::Reschedule {
            actor: actor(Role::Receptionist),
            start: new_start,
            minutes: 45,
            policy: policy(),
            now: now(),
        },
        vec![AppointmentEvent::AppointmentRescheduled {
            previous_start: start,
            previous_end: end,
            previous_local_date: local_date,
            start: new_start.with_timezone(&Utc),
            end: (new_start + Duration::minutes(45)).with_timezone(&Utc),
            local_date: new_start.date_naive(),
            at: now(),
        }],
    );
    expect_error(
        vec![scheduled()],
        AppointmentCommand::Reschedule {
            actor: actor(Role::Receptionist),
            start: local("2026-01-04T10:00:00+03:00"),
            minutes: 45,
            policy: policy(),
            now: now(),
        },
        AppointmentError::InThePast,
    );
}

#[test]
fn cancel_and_no_show() {
    let cancelled = AppointmentEvent::AppointmentCancelled {
        reason: "Patient unwell".into(),
        at: now(),
    };
    let cancel = || AppointmentCommand::Cancel {
        actor: actor(Role::Receptionist),
        reason: text("Patient unwell"),
        now: now(),
    };
    expect_events(vec![scheduled()], cancel(), vec![cancelled.clone()]);
    expect_events(vec![scheduled(), checked_in()], cancel(), vec![cancelled]);
    let after_start = now() + Duration::hours(3);
    expect_events(
        vec![scheduled()],
        AppointmentCommand::MarkNoShow {
            actor: actor(Role::Receptionist),
            now: after_start,
        },
        vec![AppointmentEvent::AppointmentNoShow { at: after_start }],
    );
    expect_error(
        vec![scheduled()],
        AppointmentCommand::MarkNoShow {
            actor: actor(Role::Receptionist),
            now: now(),
        },
        AppointmentError::NoShowBeforeStart,
    );
}

/// Every (status, action) pair that the table forbids is refused by the aggregate.
#[test]
fn every_illegal_transition_is_refused() {
    use AppointmentStatus as S;
    let reach = |status: S| -> Vec<AppointmentEvent> {
        let mut events = vec![scheduled()];
        let more: &[AppointmentEvent] = match status {
            S::Scheduled => &[],
            S::CheckedIn => &[AppointmentEvent::AppointmentCheckedIn { at: now() }],
            S::InProgress => &[
                AppointmentEvent::AppointmentCheckedIn { at: now() },
                AppointmentEvent::AppointmentStarted { at: now() },
            ],
            S::Completed => &[
                AppointmentEvent::AppointmentCheckedIn { at: now() },
                AppointmentEvent::AppointmentStarted { at: now() },
                AppointmentEvent::AppointmentCompleted {
                    notes: None,
                    at: now(),
                },
            ],
            S::Cancelled => &[AppointmentEvent::AppointmentCancelled {
                reason: "x".into(),
                at: now(),
            }],
            S::NoShow => &[AppointmentEvent::AppointmentNoShow { at: now() }],
        };
        events.extend_from_slice(more);
        events
    };
    let later = now() + Duration::hours(3);
    let command = |action: AppointmentAction| -> AppointmentCommand {
        match action {
            AppointmentAction::Reschedule => AppointmentCommand::Reschedule {
                actor: actor(Role::Receptionist),
                start: local("2026-01-06T10:00:00+03:00"),
                minutes: 15,
                policy: policy(),
                now: later,
            },
            AppointmentAction::CheckIn => AppointmentCommand::CheckIn {
                actor: actor(Role::Receptionist),
                now: later,
            },
            AppointmentAction::Start => AppointmentCommand::Start {
                actor: actor(Role::Doctor),
                now: later,
            },
            AppointmentAction::Complete => AppointmentCommand::Complete {
                actor: actor(Role::Doctor),
                notes: None,
                now: later,
            },
            AppointmentAction::Cancel => AppointmentCommand::Cancel {
                actor: actor(Role::Receptionist),
                reason: text("x"),
                now: later,
            },
            AppointmentAction::MarkNoShow => AppointmentCommand::MarkNoShow {
                actor: actor(Role::Receptionist),
                now: later,
            },
        }
    };
    let mut illegal = 0;
    for from in AppointmentStatus::ALL {
        for action in AppointmentAction::ALL {
            let result = TestFramework::<Appointment>::with(())
                .given(reach(from))
                .when(command(action))
                .inspect_result();
            match transition(from, action) {
                None => {
                    illegal += 1;
                    assert_eq!(
                        result,
                        Err(AppointmentError::IllegalTransition { from, action }),
                        "{from:?} × {action:?}"
                    );
                }
                Some(_) => assert!(result.is_ok(), "{from:?} × {action:?}: {result:?}"),
            }
        }
    }
    assert_eq!(illegal, 36 - 7, "seven legal transitions, the rest refused");
    expect_error(
        vec![],
        command(AppointmentAction::CheckIn),
        AppointmentError::NotFound,
    );
}
