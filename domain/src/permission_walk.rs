//! Every role × every command that carries an actor, through the aggregates themselves:
//! an aggregate refuses with `Forbidden` exactly when the matrix says no. Together with
//! the grid test in [`crate::permissions`], this shows the matrix is both right and applied.

use chrono::Duration;
use uuid::Uuid;

use crate::appointment::{self, Appointment, AppointmentCommand, AppointmentError};
use crate::billing::{self, Discount, Invoice, InvoiceCommand, InvoiceError, PaymentMethod};
use crate::common::{Actor, BoundedText, Currency, Email, Role};
use crate::hospital::{
    self, BillingCycle, Branding, Hospital, HospitalCommand, HospitalError, HospitalProfile,
    HospitalSettings, TimeZoneName,
};
use crate::patient::{self, Patient, PatientCommand, PatientError};
use crate::permissions::allows;
use crate::plan::{Module, Plan};
use crate::schedule::{DoctorSchedule, ReleaseReason, ScheduleCommand, ScheduleError};
use crate::user::{User, UserCommand, UserError, UserEvent};
use cqrs_es::Aggregate;

/// Named commands, each built for a given actor.
type Cases<C> = Vec<(&'static str, Box<dyn Fn(Actor) -> C>)>;

fn actor(role: Role) -> Actor {
    Actor {
        // The appointment's doctor, so DOCTOR is not refused for other reasons first.
        user_id: appointment::test_support::DOCTOR,
        username: "walker".into(),
        role,
    }
}

/// Run `make(actor)` for every role against the state built from `given`; check that
/// `is_forbidden` holds exactly when the matrix denies the command's operation.
fn walk<A, C, E>(
    given: &[A::Event],
    commands: Cases<C>,
    operation: impl Fn(&C) -> crate::permissions::Operation,
    decide: impl Fn(&A, C) -> Result<Vec<A::Event>, E>,
    is_forbidden: impl Fn(&E) -> bool,
) -> usize
where
    A: Aggregate,
    E: std::fmt::Debug,
{
    let mut state = A::default();
    for e in given {
        state.apply(e.clone());
    }
    let mut checked = 0;
    for (name, make) in &commands {
        for role in Role::ALL {
            let command = make(actor(role));
            let op = operation(&command);
            let result = decide(&state, command);
            let forbidden = matches!(&result, Err(e) if is_forbidden(e));
            assert_eq!(forbidden, !allows(role, op), "{name} as {role}: {result:?}");
            checked += 1;
        }
    }
    checked
}

fn text(s: &str) -> BoundedText {
    BoundedText::parse("text", s, 200).expect("valid")
}

#[test]
fn hospital_commands_enforce_the_matrix() {
    use hospital::test_support::{history, now};
    let given = history(Plan::Professional, vec![]);
    let period = now() + Duration::days(30);
    let commands: Cases<HospitalCommand> = vec![
        (
            "UpdateProfile",
            Box::new(|actor| HospitalCommand::UpdateProfile {
                actor,
                profile: HospitalProfile {
                    name: text("DMC"),
                    contact_email: None,
                    contact_phone: None,
                    address: None,
                    time_zone: TimeZoneName::utc(),
                    currency: Currency::parse("KES").expect("valid"),
                },
                now: now(),
            }),
        ),
        (
            "UpdateBranding",
            Box::new(|actor| HospitalCommand::UpdateBranding {
                actor,
                branding: Branding::default(),
                now: now(),
            }),
        ),
        (
            "UpdateSettings",
            Box::new(|actor| HospitalCommand::UpdateSettings {
                actor,
                settings: HospitalSettings::default(),
                now: now(),
            }),
        ),
        (
            "AddDepartment",
            Box::new(|actor| HospitalCommand::AddDepartment {
                actor,
                department_id: Uuid::from_u128(50),
                name: text("ICU"),
                now: now(),
            }),
        ),
        (
            "RenameDepartment",
            Box::new(|actor| HospitalCommand::RenameDepartment {
                actor,
                department_id: Uuid::from_u128(1),
                name: text("Theatre"),
                now: now(),
            }),
        ),
        (
            "DeactivateDepartment",
            Box::new(|actor| HospitalCommand::DeactivateDepartment {
                actor,
                department_id: Uuid::from_u128(1),
                now: now(),
            }),
        ),
        (
            "ReactivateDepartment",
            Box::new(|actor| HospitalCommand::ReactivateDepartment {
                actor,
                department_id: Uuid::from_u128(1),
                now: now(),
            }),
        ),
        (
            "EnableModule",
            Box::new(|actor| HospitalCommand::EnableModule {
                actor,
                module: Module::Ipd,
                now: now(),
            }),
        ),
        (
            "DisableModule",
            Box::new(|actor| HospitalCommand::DisableModule {
                actor,
                module: Module::Billing,
                now: now(),
            }),
        ),
        (
            "ChangePlan",
            Box::new(move |actor| HospitalCommand::ChangePlan {
                actor,
                plan: Plan::Enterprise,
                cycle: BillingCycle::Yearly,
                period_ends_at: period,
                now: now(),
            }),
        ),
        (
            "MarkPastDue",
            Box::new(|actor| HospitalCommand::MarkPastDue { actor, now: now() }),
        ),
        (
            "RenewSubscription",
            Box::new(move |actor| HospitalCommand::RenewSubscription {
                actor,
                period_ends_at: period,
                now: now(),
            }),
        ),
        (
            "SuspendSubscription",
            Box::new(|actor| HospitalCommand::SuspendSubscription {
                actor,
                reason: text("x"),
                now: now(),
            }),
        ),
        (
            "ReactivateSubscription",
            Box::new(move |actor| HospitalCommand::ReactivateSubscription {
                actor,
                plan: Plan::Basic,
                cycle: BillingCycle::Monthly,
                period_ends_at: period,
                now: now(),
            }),
        ),
        (
            "CancelSubscription",
            Box::new(|actor| HospitalCommand::CancelSubscription {
                actor,
                reason: text("x"),
                now: now(),
            }),
        ),
    ];
    let n = walk::<Hospital, _, _>(
        &given,
        commands,
        HospitalCommand::operation,
        |h, c| h.decide(c),
        |e| matches!(e, HospitalError::Forbidden(_)),
    );
    assert_eq!(n, 15 * Role::ALL.len());
}

#[test]
fn user_commands_enforce_the_matrix() {
    let now = hospital::test_support::now();
    let given = vec![UserEvent::UserCreated {
        user_id: Uuid::from_u128(0x123),
        username: "nina".into(),
        email: "nina@dmc.example".into(),
        full_name: "Nina".into(),
        role: Role::Nurse,
        department_id: None,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        created_at: now,
    }];
    let commands: Cases<UserCommand> = vec![
        (
            "ResetPassword",
            Box::new(move |actor| UserCommand::ResetPassword {
                actor,
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                now,
            }),
        ),
        (
            "ChangeRole",
            Box::new(move |actor| UserCommand::ChangeRole {
                actor,
                role: Role::Doctor,
                active_admin_count: 2,
                now,
            }),
        ),
        (
            "ChangeDepartment",
            Box::new(move |actor| UserCommand::ChangeDepartment {
                actor,
                department_id: None,
                now,
            }),
        ),
        (
            "UpdateProfile",
            Box::new(move |actor| UserCommand::UpdateProfile {
                actor,
                full_name: text("Nina N"),
                email: Email::parse("n@dmc.example").expect("valid"),
                now,
            }),
        ),
        (
            "DeactivateUserChecked",
            Box::new(move |actor| UserCommand::DeactivateUserChecked {
                actor,
                active_admin_count: 2,
                now,
            }),
        ),
    ];
    walk::<User, _, _>(
        &given,
        commands,
        UserCommand::operation,
        |u, c| u.decide(c),
        |e| matches!(e, UserError::Forbidden(_)),
    );
}

#[test]
fn patient_commands_enforce_the_matrix() {
    use patient::test_support::{demographics, mrn, now, registered};
    use patient::{Allergy, AllergySeverity};
    let given = vec![registered(1)];
    let allergy = || Allergy {
        substance: text("Latex"),
        reaction: None,
        severity: AllergySeverity::Mild,
    };
    let commands: Cases<PatientCommand> = vec![
        (
            "RegisterPatient",
            Box::new(|actor| PatientCommand::RegisterPatient {
                actor,
                patient_id: Uuid::from_u128(1),
                mrn: mrn(1),
                hospital: crate::common::HospitalCode::parse("DMC001").expect("valid"),
                demographics: demographics(),
                allergies: vec![],
                now: now(),
            }),
        ),
        (
            "UpdateDemographics",
            Box::new(|actor| PatientCommand::UpdateDemographics {
                actor,
                demographics: demographics(),
                now: now(),
            }),
        ),
        (
            "RecordAllergy",
            Box::new(move |actor| PatientCommand::RecordAllergy {
                actor,
                allergy: allergy(),
                now: now(),
            }),
        ),
        (
            "RemoveAllergy",
            Box::new(|actor| PatientCommand::RemoveAllergy {
                actor,
                substance: text("Latex"),
                now: now(),
            }),
        ),
        (
            "AddAlert",
            Box::new(|actor| PatientCommand::AddAlert {
                actor,
                alert_id: Uuid::from_u128(5),
                text: text("Fall risk"),
                now: now(),
            }),
        ),
        (
            "ResolveAlert",
            Box::new(|actor| PatientCommand::ResolveAlert {
                actor,
                alert_id: Uuid::from_u128(5),
                now: now(),
            }),
        ),
        (
            "MarkDeceased",
            Box::new(|actor| PatientCommand::MarkDeceased {
                actor,
                died_at: now(),
                now: now(),
            }),
        ),
        (
            "DeactivatePatient",
            Box::new(|actor| PatientCommand::DeactivatePatient {
                actor,
                reason: text("x"),
                now: now(),
            }),
        ),
        (
            "ReactivatePatient",
            Box::new(|actor| PatientCommand::ReactivatePatient { actor, now: now() }),
        ),
        (
            "MergeInto",
            Box::new(|actor| PatientCommand::MergeInto {
                actor,
                survivor_id: Uuid::from_u128(2),
                survivor_mrn: mrn(2),
                survivor_active: true,
                now: now(),
            }),
        ),
        (
            "AbsorbDuplicate",
            Box::new(|actor| PatientCommand::AbsorbDuplicate {
                actor,
                duplicate_id: Uuid::from_u128(3),
                duplicate_mrn: mrn(3),
                now: now(),
            }),
        ),
    ];
    walk::<Patient, _, _>(
        &given,
        commands,
        PatientCommand::operation,
        |p, c| p.decide(c),
        |e| matches!(e, PatientError::Forbidden(_)),
    );
}

#[test]
fn appointment_and_schedule_commands_enforce_the_matrix() {
    use appointment::test_support::{local, now, policy, schedule_at, scheduled, text};
    let later = now() + Duration::hours(6);
    let commands: Cases<AppointmentCommand> = vec![
        (
            "Schedule",
            Box::new(|actor| match schedule_at("2026-01-05T10:00:00+03:00", 30) {
                AppointmentCommand::Schedule {
                    appointment_id,
                    patient_id,
                    doctor_id,
                    department_id,
                    start,
                    minutes,
                    reason,
                    policy,
                    doctor,
                    patient_active,
                    now,
                    ..
                } => AppointmentCommand::Schedule {
                    actor,
                    appointment_id,
                    patient_id,
                    doctor_id,
                    department_id,
                    start,
                    minutes,
                    reason,
                    policy,
                    doctor,
                    patient_active,
                    now,
                },
                other => other,
            }),
        ),
        (
            "Reschedule",
            Box::new(|actor| AppointmentCommand::Reschedule {
                actor,
                start: local("2026-01-06T10:00:00+03:00"),
                minutes: 30,
                policy: policy(),
                now: now(),
            }),
        ),
        (
            "CheckIn",
            Box::new(|actor| AppointmentCommand::CheckIn { actor, now: now() }),
        ),
        (
            "Start",
            Box::new(|actor| AppointmentCommand::Start { actor, now: now() }),
        ),
        (
            "Complete",
            Box::new(|actor| AppointmentCommand::Complete {
                actor,
                notes: None,
                now: now(),
            }),
        ),
        (
            "Cancel",
            Box::new(|actor| AppointmentCommand::Cancel {
                actor,
                reason: text("x"),
                now: now(),
            }),
        ),
        (
            "MarkNoShow",
            Box::new(move |actor| AppointmentCommand::MarkNoShow { actor, now: later }),
        ),
    ];
    // Schedule is checked on an empty stream, the rest on a scheduled appointment.
    let mut commands = commands;
    let schedule = commands.remove(0);
    walk::<Appointment, _, _>(
        &[],
        vec![schedule],
        AppointmentCommand::operation,
        |a, c| a.decide(c),
        |e| matches!(e, AppointmentError::Forbidden(_)),
    );
    walk::<Appointment, _, _>(
        &[scheduled()],
        commands,
        AppointmentCommand::operation,
        |a, c| a.decide(c),
        |e| matches!(e, AppointmentError::Forbidden(_)),
    );

    // Schedules: reserving needs ScheduleAppointment; releasing needs the permission of
    // the act that releases.
    let reserve_op = |c: &ScheduleCommand| match c {
        ScheduleCommand::Reserve { .. } => crate::permissions::Operation::ScheduleAppointment,
        ScheduleCommand::Release { reason, .. } => match reason {
            ReleaseReason::Cancelled => crate::permissions::Operation::CancelAppointment,
            ReleaseReason::NoShow => crate::permissions::Operation::MarkNoShow,
            ReleaseReason::Rescheduled => crate::permissions::Operation::RescheduleAppointment,
            ReleaseReason::Compensation => crate::permissions::Operation::ScheduleAppointment,
        },
    };
    let reserved = {
        let s = DoctorSchedule::default();
        let cmd = ScheduleCommand::Reserve {
            actor: actor(Role::Receptionist),
            owner_id: appointment::test_support::DOCTOR,
            appointment_id: Uuid::from_u128(1),
            start: local("2026-01-05T09:00:00+03:00"),
            minutes: 30,
            now: now(),
        };
        s.decide(cmd).expect("reserves")
    };
    let mut commands: Cases<ScheduleCommand> = vec![(
        "Reserve",
        Box::new(|actor| ScheduleCommand::Reserve {
            actor,
            owner_id: appointment::test_support::DOCTOR,
            appointment_id: Uuid::from_u128(2),
            start: local("2026-01-05T10:00:00+03:00"),
            minutes: 30,
            now: now(),
        }),
    )];
    for reason in [
        ReleaseReason::Cancelled,
        ReleaseReason::NoShow,
        ReleaseReason::Rescheduled,
        ReleaseReason::Compensation,
    ] {
        commands.push((
            "Release",
            Box::new(move |actor| ScheduleCommand::Release {
                actor,
                appointment_id: Uuid::from_u128(1),
                reason,
                now: now(),
            }),
        ));
    }
    walk::<DoctorSchedule, _, _>(
        &reserved,
        commands,
        reserve_op,
        |s, c| s.decide(c),
        |e| matches!(e, ScheduleError::Forbidden(_)),
    );
}

#[test]
fn invoice_commands_enforce_the_matrix() {
    use billing::test_support::{add_line, draft, history, issue, kes_minor, now, pay, refund};
    let with_actor = |mut cmd: InvoiceCommand, who: Actor| {
        match &mut cmd {
            InvoiceCommand::DraftInvoice { actor, .. }
            | InvoiceCommand::AddLine { actor, .. }
            | InvoiceCommand::RemoveLine { actor, .. }
            | InvoiceCommand::SetDiscount { actor, .. }
            | InvoiceCommand::SetTax { actor, .. }
            | InvoiceCommand::Issue { actor, .. }
            | InvoiceCommand::RecordPayment { actor, .. }
            | InvoiceCommand::RefundPayment { actor, .. }
            | InvoiceCommand::VoidInvoice { actor, .. }
            | InvoiceCommand::OpenForCharges { actor, .. }
            | InvoiceCommand::PostCharges { actor, .. } => *actor = who,
        }
        cmd
    };
    let draft_state = history(vec![draft(), add_line(1, 1, 1_000)]);
    let edits: Cases<InvoiceCommand> = vec![
        ("DraftInvoice", Box::new(move |a| with_actor(draft(), a))),
        (
            "AddLine",
            Box::new(move |a| with_actor(add_line(2, 1, 5), a)),
        ),
        (
            "RemoveLine",
            Box::new(move |a| InvoiceCommand::RemoveLine {
                actor: a,
                line_id: Uuid::from_u128(1),
                now: now(),
            }),
        ),
        (
            "SetDiscount",
            Box::new(move |a| InvoiceCommand::SetDiscount {
                actor: a,
                discount: Discount::Amount(kes_minor(10).into()),
                now: now(),
            }),
        ),
        (
            "SetTax",
            Box::new(move |a| InvoiceCommand::SetTax {
                actor: a,
                basis_points: 100,
                now: now(),
            }),
        ),
        ("Issue", Box::new(move |a| with_actor(issue(), a))),
        (
            "PostCharges",
            Box::new(move |a| InvoiceCommand::PostCharges {
                actor: a,
                charges: vec![billing::ChargeLine {
                    line_id: Uuid::from_u128(3),
                    code: BoundedText::parse("c", "718-7", 32).expect("valid"),
                    description: BoundedText::parse("d", "Haemoglobin", 32).expect("valid"),
                    unit_price: kes_minor(500),
                }],
                now: now(),
            }),
        ),
        (
            "VoidInvoice",
            Box::new(move |a| InvoiceCommand::VoidInvoice {
                actor: a,
                reason: BoundedText::parse("r", "x", 10).expect("valid"),
                now: now(),
            }),
        ),
    ];
    let open: Cases<InvoiceCommand> = vec![(
        "OpenForCharges",
        Box::new(move |a| match draft() {
            InvoiceCommand::DraftInvoice {
                invoice_id,
                number,
                patient_id,
                currency,
                now,
                ..
            } => InvoiceCommand::OpenForCharges {
                actor: a,
                invoice_id,
                number,
                patient_id,
                currency,
                now,
            },
            other => other,
        }),
    )];
    walk::<Invoice, _, _>(
        &[],
        open,
        InvoiceCommand::operation,
        |i, c| i.decide(c),
        |e| matches!(e, InvoiceError::Forbidden(_)),
    );
    walk::<Invoice, _, _>(
        &draft_state,
        edits,
        InvoiceCommand::operation,
        |i, c| i.decide(c),
        |e| matches!(e, InvoiceError::Forbidden(_)),
    );
    let paid_state = history(vec![draft(), add_line(1, 1, 1_000), issue(), pay(10, 400)]);
    let money: Cases<InvoiceCommand> = vec![
        (
            "RecordPayment",
            Box::new(move |a| InvoiceCommand::RecordPayment {
                actor: a,
                payment_id: Uuid::from_u128(11),
                amount: kes_minor(100).into(),
                method: PaymentMethod::Insurance,
                reference: None,
                now: now(),
            }),
        ),
        (
            "RefundPayment",
            Box::new(move |a| with_actor(refund(20, 10, 100), a)),
        ),
    ];
    walk::<Invoice, _, _>(
        &paid_state,
        money,
        InvoiceCommand::operation,
        |i, c| i.decide(c),
        |e| matches!(e, InvoiceError::Forbidden(_)),
    );
}
