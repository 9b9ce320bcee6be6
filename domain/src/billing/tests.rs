//! Unit tests of money and the invoice aggregate.

use super::test_support::*;
use super::*;
use crate::common::{Actor, Role};
use crate::hospital::InvoicePrefix;
use crate::permissions::{Operation, PermissionDenied};
use cqrs_es::test::TestFramework;

fn expect_error(given: Vec<InvoiceEvent>, cmd: InvoiceCommand, err: InvoiceError) {
    TestFramework::<Invoice>::with(())
        .given(given)
        .when(cmd)
        .then_expect_error(err);
}

fn run(given: Vec<InvoiceEvent>, cmd: InvoiceCommand) -> Vec<InvoiceEvent> {
    TestFramework::<Invoice>::with(())
        .given(given)
        .when(cmd)
        .inspect_result()
        .expect("command succeeds")
}

fn usd() -> Currency {
    Currency::parse("USD").expect("valid")
}

/// Drafted, one line of 2 × 1 500.00, issued: total 3 000.00.
fn issued() -> Vec<InvoiceEvent> {
    history(vec![draft(), add_line(1, 2, 150_000), issue()])
}

#[test]
fn a_due_date_before_the_issue_date_is_refused() {
    let drafted = history(vec![draft(), add_line(1, 2, 150_000)]);
    let far_past = NaiveDate::from_ymd_opt(-5000, 1, 1).expect("date");
    TestFramework::<Invoice>::with(())
        .given(drafted)
        .when(InvoiceCommand::Issue {
            actor: accountant(),
            due_date: Some(far_past),
            now: now(),
        })
        .then_expect_error(InvoiceError::Validation(ValidationError::new(
            "due_date",
            "must not be before the issue date",
        )));
}

#[test]
fn money_is_checked() {
    let a = kes_minor(1_050);
    assert_eq!(a.checked_add(kes_minor(50)), Ok(kes_minor(1_100)));
    assert_eq!(
        a.checked_add(Money::new(1, usd())),
        Err(MoneyError::CurrencyMismatch {
            left: kes(),
            right: usd()
        })
    );
    assert_eq!(
        kes_minor(i64::MAX).checked_add(kes_minor(1)),
        Err(MoneyError::Overflow)
    );
    assert_eq!(
        kes_minor(i64::MIN).checked_sub(kes_minor(1)),
        Err(MoneyError::Overflow)
    );
    assert_eq!(
        kes_minor(i64::MAX).checked_mul(2),
        Err(MoneyError::Overflow)
    );
    assert_eq!(kes_minor(1_000).basis_points(1_600), Ok(kes_minor(160)));
    assert_eq!(
        kes_minor(5).basis_points(1_000),
        Ok(kes_minor(1)),
        "0.5 rounds up"
    );
    assert_eq!(kes_minor(4).basis_points(1_000), Ok(kes_minor(0)));
    assert_eq!(kes_minor(-5).basis_points(1_000), Ok(kes_minor(-1)));
    assert_eq!(format!("{}", kes_minor(-1_050)), "-10.50 KES");
    let json = serde_json::to_value(kes_minor(1_050)).expect("json");
    assert_eq!(json, serde_json::json!({"minor": 1050, "currency": "KES"}));
}

#[test]
fn invoice_numbers_are_prefix_and_sequence() {
    assert_eq!(number().as_str(), "INV-000042");
    assert_eq!(
        InvoiceNumber::parse("DMC24-0001234")
            .expect("valid")
            .as_str(),
        "DMC24-0001234"
    );
    for bad in [
        "",
        "INV",
        "INV-12",
        "inv-000042",
        "INV-000000",
        "INV-00004x",
    ] {
        assert!(InvoiceNumber::parse(bad).is_err(), "{bad:?}");
    }
    assert!(InvoiceNumber::new(&InvoicePrefix::default(), 0).is_err());
}

#[test]
fn totals_apply_discount_then_tax() {
    let lines = vec![InvoiceLine {
        line_id: Uuid::from_u128(1),
        code: text("X"),
        description: text("X"),
        quantity: 3,
        unit_price: kes_minor(1_000),
        amount: kes_minor(3_000),
    }];
    let t = InvoiceTotals::compute(
        kes(),
        &lines,
        Discount::Percent {
            basis_points: 1_000,
        },
        1_600,
    )
    .expect("computes");
    assert_eq!(t.subtotal, kes_minor(3_000));
    assert_eq!(t.discount, kes_minor(300));
    assert_eq!(t.tax, kes_minor(432));
    assert_eq!(t.total, kes_minor(3_132));
    let capped = InvoiceTotals::compute(kes(), &lines, Discount::Amount(kes_minor(9_999)), 0)
        .expect("computes");
    assert_eq!(capped.discount, kes_minor(3_000));
    assert_eq!(capped.total, kes_minor(0));
}

#[test]
fn drafting_and_editing_an_invoice() {
    let drafted = run(vec![], draft());
    assert_eq!(
        drafted,
        vec![InvoiceEvent::InvoiceDrafted {
            invoice_id: INVOICE,
            number: number(),
            patient_id: Uuid::from_u128(0x9A7),
            appointment_id: None,
            currency: kes(),
            at: now(),
        }]
    );
    let added = run(drafted.clone(), add_line(1, 2, 150_000));
    let InvoiceEvent::InvoiceLineAdded { line, totals, .. } = &added[0] else {
        panic!("expected a line: {added:?}");
    };
    assert_eq!(line.amount, kes_minor(300_000));
    assert_eq!(totals.total, kes_minor(300_000));
    let with_line = [drafted.clone(), added].concat();
    TestFramework::<Invoice>::with(())
        .given(with_line.clone())
        .when(InvoiceCommand::RemoveLine {
            actor: accountant(),
            line_id: Uuid::from_u128(1),
            now: now(),
        })
        .then_expect_events(vec![InvoiceEvent::InvoiceLineRemoved {
            line_id: Uuid::from_u128(1),
            totals: InvoiceTotals::zero(kes()),
            at: now(),
        }]);
    let discounted = run(
        with_line.clone(),
        InvoiceCommand::SetDiscount {
            actor: accountant(),
            discount: Discount::Percent { basis_points: 500 },
            now: now(),
        },
    );
    let InvoiceEvent::DiscountSet { totals, .. } = &discounted[0] else {
        panic!("expected a discount");
    };
    assert_eq!(totals.total, kes_minor(285_000));
    let taxed = run(
        with_line,
        InvoiceCommand::SetTax {
            actor: accountant(),
            basis_points: 1_600,
            now: now(),
        },
    );
    let InvoiceEvent::TaxRateSet { totals, .. } = &taxed[0] else {
        panic!("expected tax");
    };
    assert_eq!(totals.total, kes_minor(348_000));
}

#[test]
fn editing_refusals() {
    let drafted = history(vec![draft()]);
    expect_error(drafted.clone(), draft(), InvoiceError::AlreadyDrafted);
    expect_error(vec![], add_line(1, 1, 100), InvoiceError::NotFound);
    expect_error(
        history(vec![draft(), add_line(1, 1, 100)]),
        add_line(1, 1, 100),
        InvoiceError::DuplicateLine(Uuid::from_u128(1)),
    );
    expect_error(
        drafted.clone(),
        InvoiceCommand::RemoveLine {
            actor: accountant(),
            line_id: Uuid::from_u128(9),
            now: now(),
        },
        InvoiceError::LineNotFound(Uuid::from_u128(9)),
    );
    expect_error(
        drafted.clone(),
        add_line(1, 0, 100),
        ValidationError::new("quantity", "must be 1 to 100000").into(),
    );
    expect_error(
        drafted.clone(),
        add_line(1, 1, -100),
        ValidationError::new("unit_price", "must not be negative").into(),
    );
    expect_error(
        drafted.clone(),
        InvoiceCommand::AddLine {
            actor: accountant(),
            line_id: Uuid::from_u128(1),
            code: text("X"),
            description: text("X"),
            quantity: 1,
            unit_price: Money::new(100, usd()).into(),
            now: now(),
        },
        MoneyError::CurrencyMismatch {
            left: kes(),
            right: usd(),
        }
        .into(),
    );
    expect_error(
        drafted.clone(),
        add_line(1, 2, i64::MAX),
        MoneyError::Overflow.into(),
    );
    expect_error(
        drafted.clone(),
        InvoiceCommand::SetDiscount {
            actor: accountant(),
            discount: Discount::Percent {
                basis_points: 10_001,
            },
            now: now(),
        },
        ValidationError::new("discount", "must be at most 100 percent").into(),
    );
    expect_error(
        drafted.clone(),
        InvoiceCommand::SetDiscount {
            actor: accountant(),
            discount: Discount::Amount(kes_minor(-1).into()),
            now: now(),
        },
        ValidationError::new("discount", "must not be negative").into(),
    );
    expect_error(
        drafted.clone(),
        InvoiceCommand::SetTax {
            actor: accountant(),
            basis_points: 20_000,
            now: now(),
        },
        ValidationError::new("tax", "must be at most 100 percent").into(),
    );
    expect_error(
        issued(),
        add_line(2, 1, 100),
        InvoiceError::NotDraft(InvoiceStatus::Issued),
    );
    expect_error(
        issued(),
        InvoiceCommand::SetTax {
            actor: accountant(),
            basis_points: 0,
            now: now(),
        },
        InvoiceError::NotDraft(InvoiceStatus::Issued),
    );
    expect_error(
        drafted,
        InvoiceCommand::SetTax {
            actor: Actor {
                role: Role::Receptionist,
                ..accountant()
            },
            basis_points: 0,
            now: now(),
        },
        PermissionDenied {
            role: Role::Receptionist,
            operation: Operation::EditInvoice,
        }
        .into(),
    );
}

#[test]
fn issuing_freezes_the_totals() {
    let events = history(vec![draft(), add_line(1, 2, 150_000)]);
    let total = kes_minor(300_000);
    TestFramework::<Invoice>::with(())
        .given(events)
        .when(issue())
        .then_expect_events(vec![InvoiceEvent::InvoiceIssued {
            totals: InvoiceTotals {
                subtotal: total,
                discount: kes_minor(0),
                tax: kes_minor(0),
                total,
            },
            balance: total,
            due_date: None,
            status: InvoiceStatus::Issued,
            at: now(),
        }]);
    expect_error(history(vec![draft()]), issue(), InvoiceError::NoLines);
    expect_error(
        history(vec![draft(), add_line(1, 1, 0)]),
        issue(),
        InvoiceError::NothingToBill,
    );
    expect_error(
        issued(),
        issue(),
        InvoiceError::NotDraft(InvoiceStatus::Issued),
    );
}

#[test]
fn payments_move_the_balance_and_the_status() {
    TestFramework::<Invoice>::with(())
        .given(issued())
        .when(pay(10, 100_000))
        .then_expect_events(vec![InvoiceEvent::PaymentRecorded {
            payment_id: Uuid::from_u128(10),
            amount: kes_minor(100_000),
            method: PaymentMethod::Cash,
            reference: None,
            paid_total: kes_minor(100_000),
            balance: kes_minor(200_000),
            status: InvoiceStatus::PartiallyPaid,
            at: now(),
        }]);
    let partly = [issued(), history_after(&issued(), vec![pay(10, 100_000)])].concat();
    TestFramework::<Invoice>::with(())
        .given(partly.clone())
        .when(pay(11, 200_000))
        .then_expect_events(vec![InvoiceEvent::PaymentRecorded {
            payment_id: Uuid::from_u128(11),
            amount: kes_minor(200_000),
            method: PaymentMethod::Cash,
            reference: None,
            paid_total: kes_minor(300_000),
            balance: kes_minor(0),
            status: InvoiceStatus::Paid,
            at: now(),
        }]);
    expect_error(
        partly.clone(),
        pay(11, 200_001),
        InvoiceError::Overpayment {
            amount: kes_minor(200_001),
            balance: kes_minor(200_000),
        },
    );
    expect_error(
        partly.clone(),
        pay(10, 1),
        InvoiceError::DuplicatePayment(Uuid::from_u128(10)),
    );
    expect_error(partly, pay(12, 0), InvoiceError::NonPositiveAmount);
    expect_error(
        history(vec![draft(), add_line(1, 1, 100)]),
        pay(10, 100),
        InvoiceError::NotPayable(InvoiceStatus::Draft),
    );
    let paid = [issued(), history_after(&issued(), vec![pay(10, 300_000)])].concat();
    expect_error(
        paid,
        pay(11, 1),
        InvoiceError::NotPayable(InvoiceStatus::Paid),
    );
    expect_error(
        issued(),
        InvoiceCommand::RecordPayment {
            actor: accountant(),
            payment_id: Uuid::from_u128(10),
            amount: Money::new(100, usd()).into(),
            method: PaymentMethod::Card,
            reference: None,
            now: now(),
        },
        MoneyError::CurrencyMismatch {
            left: kes(),
            right: usd(),
        }
        .into(),
    );
}

/// The events of running `commands` after `given`.
fn history_after(given: &[InvoiceEvent], commands: Vec<InvoiceCommand>) -> Vec<InvoiceEvent> {
    let mut inv = Invoice::default();
    for e in given {
        inv.apply(e.clone());
    }
    let mut out = Vec::new();
    for cmd in commands {
        for e in inv.decide(cmd).expect("command succeeds") {
            inv.apply(e.clone());
            out.push(e);
        }
    }
    out
}

#[test]
fn refunds_never_exceed_what_was_paid() {
    let paid = [issued(), history_after(&issued(), vec![pay(10, 300_000)])].concat();
    TestFramework::<Invoice>::with(())
        .given(paid.clone())
        .when(refund(20, 10, 50_000))
        .then_expect_events(vec![InvoiceEvent::PaymentRefunded {
            refund_id: Uuid::from_u128(20),
            payment_id: Uuid::from_u128(10),
            amount: kes_minor(50_000),
            reason: "Overcharged".into(),
            refunded_total: kes_minor(50_000),
            balance: kes_minor(50_000),
            status: InvoiceStatus::PartiallyPaid,
            at: now(),
        }]);
    let all_back = history_after(&paid, vec![refund(20, 10, 300_000)]);
    let InvoiceEvent::PaymentRefunded {
        status, balance, ..
    } = &all_back[0]
    else {
        panic!("expected a refund");
    };
    assert_eq!(*status, InvoiceStatus::Refunded);
    assert_eq!(*balance, kes_minor(300_000));
    expect_error(
        paid.clone(),
        refund(20, 10, 300_001),
        InvoiceError::RefundExceedsPayment {
            refundable: kes_minor(300_000),
        },
    );
    let part = [
        paid.clone(),
        history_after(&paid, vec![refund(20, 10, 100_000)]),
    ]
    .concat();
    expect_error(
        part.clone(),
        refund(21, 10, 200_001),
        InvoiceError::RefundExceedsPayment {
            refundable: kes_minor(200_000),
        },
    );
    expect_error(
        part,
        refund(20, 10, 1),
        InvoiceError::DuplicateRefund(Uuid::from_u128(20)),
    );
    expect_error(
        paid.clone(),
        refund(20, 99, 1),
        InvoiceError::PaymentNotFound(Uuid::from_u128(99)),
    );
    expect_error(paid, refund(20, 10, 0), InvoiceError::NonPositiveAmount);
}

#[test]
fn only_an_invoice_without_payments_is_voided() {
    let void = || InvoiceCommand::VoidInvoice {
        actor: accountant(),
        reason: text("Wrong patient"),
        now: now(),
    };
    let voided = InvoiceEvent::InvoiceVoided {
        reason: "Wrong patient".into(),
        status: InvoiceStatus::Void,
        at: now(),
    };
    TestFramework::<Invoice>::with(())
        .given(history(vec![draft()]))
        .when(void())
        .then_expect_events(vec![voided.clone()]);
    TestFramework::<Invoice>::with(())
        .given(issued())
        .when(void())
        .then_expect_events(vec![voided.clone()]);
    let partly = [issued(), history_after(&issued(), vec![pay(10, 1)])].concat();
    expect_error(partly.clone(), void(), InvoiceError::HasPayments);
    let refunded = [
        partly.clone(),
        history_after(&partly, vec![refund(20, 10, 1)]),
    ]
    .concat();
    expect_error(refunded, void(), InvoiceError::HasPayments);
    let mut gone = history(vec![draft()]);
    gone.push(voided);
    expect_error(
        gone.clone(),
        void(),
        InvoiceError::NotVoidable(InvoiceStatus::Void),
    );
    expect_error(
        gone.clone(),
        pay(10, 1),
        InvoiceError::NotPayable(InvoiceStatus::Void),
    );
    expect_error(
        gone,
        add_line(5, 1, 1),
        InvoiceError::NotDraft(InvoiceStatus::Void),
    );
    expect_error(vec![], void(), InvoiceError::NotFound);
}
