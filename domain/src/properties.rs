//! Property tests over random command sequences: the invariants that must hold whatever
//! users do, and "replaying the accepted events gives the same state" (what every load of
//! an aggregate relies on).

use chrono::{DateTime, Duration, FixedOffset, Utc};
use cqrs_es::Aggregate;
use proptest::prelude::*;
use uuid::Uuid;

use crate::appointment::{
    self, transition, Appointment, AppointmentAction, AppointmentCommand, AppointmentError,
    AppointmentStatus,
};
use crate::billing::{
    self, Amount, Discount, Invoice, InvoiceCommand, InvoiceStatus, InvoiceTotals, PaymentMethod,
};
use crate::common::Role;
use crate::hospital::{self, Hospital, HospitalCommand};
use crate::plan::{Module, Plan};
use crate::schedule::{DoctorSchedule, ReleaseReason, ScheduleCommand};

fn replay<A: Aggregate>(events: &[A::Event]) -> A {
    let mut a = A::default();
    for e in events {
        a.apply(e.clone());
    }
    a
}

// ---------------------------------------------------------------- invoices

#[derive(Debug, Clone)]
enum InvoiceOp {
    AddLine { id: u8, quantity: u32, unit: i64 },
    RemoveLine { id: u8 },
    Discount(Discount<Amount>),
    Tax(u32),
    Issue,
    Pay { id: u8, amount: i64 },
    Refund { id: u8, payment: u8, amount: i64 },
    Void,
}

fn invoice_op() -> impl Strategy<Value = InvoiceOp> {
    let kes = billing::test_support::kes_minor;
    prop_oneof![
        3 => (0u8..6, 1u32..5, 0i64..100_000)
            .prop_map(|(id, quantity, unit)| InvoiceOp::AddLine { id, quantity, unit }),
        1 => (0u8..6).prop_map(|id| InvoiceOp::RemoveLine { id }),
        1 => prop_oneof![
            Just(Discount::None),
            (0u32..=10_000).prop_map(|basis_points| Discount::Percent { basis_points }),
            (0i64..200_000).prop_map(move |m| Discount::Amount(kes(m).into())),
        ]
        .prop_map(InvoiceOp::Discount),
        1 => (0u32..=3_000).prop_map(InvoiceOp::Tax),
        2 => Just(InvoiceOp::Issue),
        4 => (0u8..8, -10i64..400_000).prop_map(|(id, amount)| InvoiceOp::Pay { id, amount }),
        3 => (0u8..8, 0u8..8, -10i64..300_000)
            .prop_map(|(id, payment, amount)| InvoiceOp::Refund { id, payment, amount }),
        1 => Just(InvoiceOp::Void),
    ]
}

fn invoice_command(op: &InvoiceOp) -> InvoiceCommand {
    use billing::test_support::*;
    let id = |n: u8| Uuid::from_u128(u128::from(n) + 1);
    match op.clone() {
        InvoiceOp::AddLine {
            id: n,
            quantity,
            unit,
        } => add_line(u128::from(n) + 1, quantity, unit),
        InvoiceOp::RemoveLine { id: n } => InvoiceCommand::RemoveLine {
            actor: accountant(),
            line_id: id(n),
            now: now(),
        },
        InvoiceOp::Discount(discount) => InvoiceCommand::SetDiscount {
            actor: accountant(),
            discount,
            now: now(),
        },
        InvoiceOp::Tax(basis_points) => InvoiceCommand::SetTax {
            actor: accountant(),
            basis_points,
            now: now(),
        },
        InvoiceOp::Issue => issue(),
        InvoiceOp::Pay { id: n, amount } => InvoiceCommand::RecordPayment {
            actor: accountant(),
            payment_id: id(n),
            amount: kes_minor(amount).into(),
            method: [
                PaymentMethod::Cash,
                PaymentMethod::Card,
                PaymentMethod::Insurance,
                PaymentMethod::BankTransfer,
            ][usize::from(n % 4)],
            reference: None,
            now: now(),
        },
        InvoiceOp::Refund {
            id: n,
            payment,
            amount,
        } => refund(u128::from(n) + 1, u128::from(payment) + 1, amount),
        InvoiceOp::Void => InvoiceCommand::VoidInvoice {
            actor: accountant(),
            reason: text("Test"),
            now: now(),
        },
    }
}

fn check_invoice_invariants(inv: &Invoice) -> Result<(), TestCaseError> {
    let (Some(totals), Some(paid), Some(refunded), Some(balance), Some(status)) =
        (inv.totals, inv.paid, inv.refunded, inv.balance, inv.status)
    else {
        return Err(TestCaseError::fail("a drafted invoice has all its figures"));
    };
    prop_assert_eq!(
        balance.minor(),
        totals.total.minor() - paid.minor() + refunded.minor(),
        "balance = total − paid + refunded"
    );
    prop_assert!(refunded.minor() >= 0 && refunded.minor() <= paid.minor());
    prop_assert!(
        paid.minor() - refunded.minor() <= totals.total.minor(),
        "no over-payment"
    );
    prop_assert!(balance.minor() >= 0);
    let paid_sum: i64 = inv.payments.iter().map(|p| p.amount.minor()).sum();
    let refunded_sum: i64 = inv.payments.iter().map(|p| p.refunded.minor()).sum();
    prop_assert_eq!(paid_sum, paid.minor());
    prop_assert_eq!(refunded_sum, refunded.minor());
    for p in &inv.payments {
        prop_assert!(
            p.refunded.minor() <= p.amount.minor(),
            "refund ≤ its payment"
        );
    }
    match status {
        InvoiceStatus::Draft => {
            prop_assert!(inv.payments.is_empty());
            let recomputed = InvoiceTotals::compute(
                billing::test_support::kes(),
                &inv.lines,
                inv.discount.unwrap_or(Discount::None),
                inv.tax_basis_points,
            );
            prop_assert_eq!(Ok(totals), recomputed, "event totals match the lines");
        }
        InvoiceStatus::Void => prop_assert!(inv.payments.is_empty()),
        _ => prop_assert_eq!(
            status,
            InvoiceStatus::after_money_moved(totals.total, paid, refunded)
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn invoice_balance_is_total_minus_paid_plus_refunded(
        ops in prop::collection::vec(invoice_op(), 0..40)
    ) {
        let mut inv = Invoice::default();
        let mut accepted = Vec::new();
        for e in inv.decide(billing::test_support::draft()).map_err(|e| TestCaseError::fail(e.to_string()))? {
            inv.apply(e.clone());
            accepted.push(e);
        }
        for op in &ops {
            let before = inv.clone();
            match inv.decide(invoice_command(op)) {
                Ok(events) => {
                    for e in events {
                        inv.apply(e.clone());
                        accepted.push(e);
                    }
                }
                Err(_) => prop_assert_eq!(&inv, &before, "a refused command changes nothing"),
            }
            check_invoice_invariants(&inv)?;
            if before.status != Some(InvoiceStatus::Draft) {
                prop_assert_eq!(&inv.lines, &before.lines, "no edits after issuing");
                prop_assert_eq!(inv.totals, before.totals);
            }
            if before.status == Some(InvoiceStatus::Void) {
                prop_assert_eq!(&inv, &before, "void is final");
            }
        }
        prop_assert_eq!(replay::<Invoice>(&accepted), inv);
    }
}

// ---------------------------------------------------------------- appointments

fn rank(status: AppointmentStatus) -> u8 {
    match status {
        AppointmentStatus::Scheduled => 0,
        AppointmentStatus::CheckedIn => 1,
        AppointmentStatus::InProgress => 2,
        _ => 3,
    }
}

fn appointment_command(
    action: AppointmentAction,
    role: Role,
    at: DateTime<Utc>,
    start: DateTime<FixedOffset>,
) -> AppointmentCommand {
    use appointment::test_support::{actor, policy, text};
    let actor = actor(role);
    match action {
        AppointmentAction::Reschedule => AppointmentCommand::Reschedule {
            actor,
            start,
            minutes: 30,
            policy: policy(),
            now: at,
        },
        AppointmentAction::CheckIn => AppointmentCommand::CheckIn { actor, now: at },
        AppointmentAction::Start => AppointmentCommand::Start { actor, now: at },
        AppointmentAction::Complete => AppointmentCommand::Complete {
            actor,
            notes: None,
            now: at,
        },
        AppointmentAction::Cancel => AppointmentCommand::Cancel {
            actor,
            reason: text("x"),
            now: at,
        },
        AppointmentAction::MarkNoShow => AppointmentCommand::MarkNoShow { actor, now: at },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_appointment_status_machine_never_reaches_an_illegal_state(
        steps in prop::collection::vec(
            (
                prop::sample::select(AppointmentAction::ALL.to_vec()),
                // Mostly a role the matrix allows for the action, so runs get far.
                (prop::bool::weighted(0.85), any::<prop::sample::Index>()),
                0i64..240,
                0i64..40,
            ),
            0..30,
        )
    ) {
        use appointment::test_support::*;
        let mut appt = Appointment::default();
        let mut accepted = Vec::new();
        for e in appt
            .decide(schedule_at("2026-01-05T09:00:00+03:00", 30))
            .map_err(|e| TestCaseError::fail(e.to_string()))?
        {
            appt.apply(e.clone());
            accepted.push(e);
        }
        let mut clock = now();
        let mut seen_in_progress = false;
        let mut reached = std::collections::HashSet::new();
        for (action, (allowed, pick), minutes_later, slot) in steps {
            clock += Duration::minutes(minutes_later);
            let candidates: &[Role] = if allowed {
                appointment_command(action, Role::Staff, clock, local("2026-01-06T08:00:00+03:00"))
                    .operation()
                    .allowed_roles()
            } else {
                &Role::ALL
            };
            let role = *pick.get(candidates);
            // Candidate new starts on the 15-minute grid of the next days.
            let start = local("2026-01-06T08:00:00+03:00") + Duration::minutes(slot * 15);
            let from = appt.status.ok_or_else(|| TestCaseError::fail("scheduled"))?;
            let before = appt.clone();
            match appt.decide(appointment_command(action, role, clock, start)) {
                Ok(events) => {
                    let to = transition(from, action);
                    prop_assert!(to.is_some(), "{:?} × {:?} was accepted", from, action);
                    for e in events {
                        appt.apply(e.clone());
                        accepted.push(e);
                    }
                    prop_assert_eq!(appt.status, to);
                }
                Err(err) => {
                    prop_assert_eq!(&appt, &before, "a refused command changes nothing");
                    if transition(from, action).is_none() {
                        prop_assert!(
                            matches!(err, AppointmentError::IllegalTransition { .. })
                                || matches!(err, AppointmentError::Forbidden(_)),
                            "{:?}", err
                        );
                    }
                }
            }
            let to = appt.status.ok_or_else(|| TestCaseError::fail("status"))?;
            prop_assert!(rank(to) >= rank(from), "never backwards: {:?} → {:?}", from, to);
            if from.is_terminal() {
                prop_assert_eq!(to, from, "terminal states are final");
            }
            seen_in_progress |= to == AppointmentStatus::InProgress;
            reached.insert(to);
            if to == AppointmentStatus::Completed {
                prop_assert!(seen_in_progress, "completed only after being in progress");
            }
        }
        prop_assert_eq!(replay::<Appointment>(&accepted), appt);
        REACHED.with(|r| r.borrow_mut().extend(reached));
    }
}

thread_local! {
    /// Statuses the property run reached, so a test can check the runs got far.
    static REACHED: std::cell::RefCell<std::collections::HashSet<AppointmentStatus>> =
        std::cell::RefCell::new(std::collections::HashSet::new());
}

#[test]
fn the_appointment_property_reaches_every_status() {
    the_appointment_status_machine_never_reaches_an_illegal_state();
    let reached = REACHED.with(|r| r.borrow().clone());
    for status in AppointmentStatus::ALL {
        assert!(reached.contains(&status), "no run reached {status:?}");
    }
}

// ---------------------------------------------------------------- schedules

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_schedule_never_holds_two_overlapping_bookings(
        ops in prop::collection::vec((any::<bool>(), 0u8..10, 0i64..36, 1u32..8), 0..40)
    ) {
        let clerk = appointment::test_support::actor(Role::Receptionist);
        let doctor = Uuid::from_u128(0xD0C);
        let day_start: DateTime<FixedOffset> =
            DateTime::parse_from_rfc3339("2026-01-05T08:00:00+03:00")
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut schedule = DoctorSchedule::default();
        let mut accepted = Vec::new();
        for (reserve, appt, slot, length) in ops {
            let appointment_id = Uuid::from_u128(u128::from(appt) + 1);
            let command = if reserve {
                ScheduleCommand::Reserve {
                    actor: clerk.clone(),
                    owner_id: doctor,
                    appointment_id,
                    start: day_start + Duration::minutes(slot * 15),
                    minutes: length * 15,
                    now: appointment::test_support::now(),
                }
            } else {
                ScheduleCommand::Release {
                    actor: clerk.clone(),
                    appointment_id,
                    reason: ReleaseReason::Cancelled,
                    now: appointment::test_support::now(),
                }
            };
            if let Ok(events) = schedule.decide(command) {
                for e in events {
                    schedule.apply(e.clone());
                    accepted.push(e);
                }
            }
            for (i, a) in schedule.bookings.iter().enumerate() {
                for b in &schedule.bookings[i + 1..] {
                    let disjoint = a.end <= b.start || b.end <= a.start;
                    prop_assert!(disjoint, "{:?} overlaps {:?}", a, b);
                    prop_assert_ne!(a.appointment_id, b.appointment_id);
                }
            }
        }
        prop_assert_eq!(replay::<DoctorSchedule>(&accepted), schedule);
    }
}

// ---------------------------------------------------------------- hospital

fn hospital_command() -> impl Strategy<Value = HospitalCommand> {
    use hospital::test_support::*;
    let when = |days: i64| now() + Duration::days(days);
    prop_oneof![
        (
            prop::sample::select(Module::ALL.to_vec()),
            any::<bool>(),
            0i64..60
        )
            .prop_map(move |(module, on, d)| if on {
                HospitalCommand::EnableModule {
                    actor: admin(),
                    module,
                    now: when(d),
                }
            } else {
                HospitalCommand::DisableModule {
                    actor: admin(),
                    module,
                    now: when(d),
                }
            }),
        (prop::sample::select(Plan::ALL.to_vec()), 0i64..60).prop_map(move |(plan, d)| {
            HospitalCommand::ChangePlan {
                actor: admin(),
                plan,
                cycle: hospital::BillingCycle::Monthly,
                period_ends_at: when(d + 30),
                now: when(d),
            }
        }),
        (0i64..60).prop_map(move |d| HospitalCommand::MarkPastDue {
            actor: platform(),
            now: when(d)
        }),
        (0i64..60).prop_map(move |d| HospitalCommand::RenewSubscription {
            actor: platform(),
            period_ends_at: when(d + 30),
            now: when(d),
        }),
        (0i64..60).prop_map(move |d| HospitalCommand::SuspendSubscription {
            actor: platform(),
            reason: text("x"),
            now: when(d),
        }),
        (prop::sample::select(Plan::ALL.to_vec()), 0i64..60).prop_map(move |(plan, d)| {
            HospitalCommand::ReactivateSubscription {
                actor: platform(),
                plan,
                cycle: hospital::BillingCycle::Yearly,
                period_ends_at: when(d + 365),
                now: when(d),
            }
        }),
        (0i64..60).prop_map(move |d| HospitalCommand::CancelSubscription {
            actor: platform(),
            reason: text("x"),
            now: when(d),
        }),
        (
            0u128..4,
            prop::sample::select(vec!["Oncology", "oncology", "Surgery", "ICU"]),
            any::<bool>(),
            0i64..60
        )
            .prop_map(move |(id, name, add, d)| if add {
                HospitalCommand::AddDepartment {
                    actor: admin(),
                    department_id: Uuid::from_u128(id),
                    name: text(name),
                    now: when(d),
                }
            } else {
                HospitalCommand::RenameDepartment {
                    actor: admin(),
                    department_id: Uuid::from_u128(id),
                    name: text(name),
                    now: when(d),
                }
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hospital_rules_hold_and_replay_matches(
        plan in prop::sample::select(Plan::ALL.to_vec()),
        commands in prop::collection::vec(hospital_command(), 0..30)
    ) {
        use hospital::test_support::*;
        let mut h = Hospital::default();
        let mut accepted = Vec::new();
        let register = register(plan, &[(1, "Surgery")]);
        for cmd in std::iter::once(register).chain(commands) {
            if let Ok(events) = h.decide(cmd) {
                for e in events {
                    h.apply(e.clone());
                    accepted.push(e);
                }
            }
            let current = h.plan.ok_or_else(|| TestCaseError::fail("registered"))?;
            for m in &h.modules {
                prop_assert!(current.allows(*m), "{:?} enabled outside {}", m, current);
            }
            for core in Module::ALL.into_iter().filter(|m| m.is_core()) {
                prop_assert!(h.modules.contains(&core), "core module {:?} is off", core);
            }
            let mut names: Vec<String> =
                h.departments.iter().map(|d| d.name.to_lowercase()).collect();
            names.sort();
            names.dedup();
            prop_assert_eq!(names.len(), h.departments.len(), "department names are unique");
        }
        prop_assert_eq!(replay::<Hospital>(&accepted), h);
    }
}
