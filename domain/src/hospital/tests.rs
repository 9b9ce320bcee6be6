//! Unit tests of the hospital aggregate.

use super::test_support::*;
use super::*;
use crate::access::SubscriptionError;
use crate::common::{Address, CountryCode, Currency, Email, Phone, Role};
use crate::permissions::PermissionDenied;
use chrono::{NaiveTime, Weekday};
use cqrs_es::test::TestFramework;

fn basic() -> Vec<HospitalEvent> {
    history(Plan::Basic, vec![])
}

fn expect_error(given: Vec<HospitalEvent>, cmd: HospitalCommand, err: HospitalError) {
    TestFramework::<Hospital>::with(())
        .given(given)
        .when(cmd)
        .then_expect_error(err);
}

fn doctor() -> Actor {
    Actor {
        user_id: Uuid::from_u128(0xD0C),
        username: "doc".into(),
        role: Role::Doctor,
    }
}

fn profile() -> HospitalProfile {
    HospitalProfile {
        name: text("Downtown Medical Centre"),
        contact_email: Some(Email::parse("info@dmc.example").expect("valid")),
        contact_phone: Some(Phone::parse("phone", "+254 700 000 001").expect("valid")),
        address: Some(Address {
            line1: text("1 Hospital Road"),
            line2: None,
            city: text("Nairobi"),
            region: None,
            postal_code: Some(text("00100")),
            country: CountryCode::parse("KE").expect("valid"),
        }),
        time_zone: TimeZoneName::parse("Africa/Nairobi").expect("valid"),
        currency: Currency::parse("KES").expect("valid"),
    }
}

#[test]
fn registering_a_trial_hospital_starts_a_30_day_trial_with_every_module() {
    TestFramework::<Hospital>::with(())
        .given_no_previous_events()
        .when(register(Plan::Trial, &[(1, "Emergency")]))
        .then_expect_events(vec![HospitalEvent::HospitalRegistered {
            code: "DMC001".into(),
            name: "Downtown Medical Center".into(),
            plan: Plan::Trial,
            trial_ends_at: Some(now() + Duration::days(30)),
            departments: vec![Department {
                id: Uuid::from_u128(1),
                name: "Emergency".into(),
                active: true,
            }],
            modules: Module::ALL.to_vec(),
            registered_at: now(),
        }]);
}

#[test]
fn registering_twice_is_refused() {
    expect_error(
        basic(),
        register(Plan::Basic, &[]),
        HospitalError::AlreadyRegistered,
    );
}

#[test]
fn department_names_must_be_unique_ignoring_case() {
    expect_error(
        vec![],
        register(Plan::Basic, &[(1, "Surgery"), (2, "surgery")]),
        HospitalError::DuplicateDepartment("surgery".into()),
    );
}

#[test]
fn commands_before_registration_are_refused() {
    expect_error(
        vec![],
        HospitalCommand::UpdateProfile {
            actor: admin(),
            profile: profile(),
            now: now(),
        },
        HospitalError::NotRegistered,
    );
    expect_error(
        vec![],
        HospitalCommand::MarkPastDue {
            actor: platform(),
            now: now(),
        },
        HospitalError::NotRegistered,
    );
}

#[test]
fn the_admin_updates_profile_branding_and_settings() {
    TestFramework::<Hospital>::with(())
        .given(basic())
        .when(HospitalCommand::UpdateProfile {
            actor: admin(),
            profile: profile(),
            now: now(),
        })
        .then_expect_events(vec![HospitalEvent::HospitalProfileUpdated {
            profile: profile(),
            at: now(),
        }]);
    let branding = Branding {
        logo_ref: Some(text("s3://logos/dmc.png")),
        primary_color: Some(HexColor::parse("primary_color", "#0a3d62").expect("valid")),
        accent_color: None,
    };
    TestFramework::<Hospital>::with(())
        .given(basic())
        .when(HospitalCommand::UpdateBranding {
            actor: admin(),
            branding: branding.clone(),
            now: now(),
        })
        .then_expect_events(vec![HospitalEvent::BrandingUpdated {
            branding,
            at: now(),
        }]);
    let hours = WorkingHours::new(
        NaiveTime::from_hms_opt(7, 0, 0).expect("valid"),
        NaiveTime::from_hms_opt(19, 0, 0).expect("valid"),
    )
    .expect("valid");
    let settings = HospitalSettings {
        slot_length: SlotLength::minutes(20).expect("valid"),
        working_week: WorkingWeek::new([Some(hours); 7]),
        invoice_prefix: InvoicePrefix::parse("DMC").expect("valid"),
        privacy: PrivacySettings::new(14, 30, 0).expect("valid"),
    };
    TestFramework::<Hospital>::with(())
        .given(basic())
        .when(HospitalCommand::UpdateSettings {
            actor: admin(),
            settings: settings.clone(),
            now: now(),
        })
        .then_expect_events(vec![HospitalEvent::SettingsUpdated {
            settings,
            at: now(),
        }]);
}

#[test]
fn only_an_admin_changes_the_hospital() {
    expect_error(
        basic(),
        HospitalCommand::UpdateBranding {
            actor: doctor(),
            branding: Branding::default(),
            now: now(),
        },
        PermissionDenied {
            role: Role::Doctor,
            operation: Operation::UpdateHospitalBranding,
        }
        .into(),
    );
}

#[test]
fn an_expired_trial_cannot_change_the_profile_but_can_buy_a_plan() {
    let later = now() + Duration::days(31);
    expect_error(
        history(Plan::Trial, vec![]),
        HospitalCommand::UpdateSettings {
            actor: admin(),
            settings: HospitalSettings::default(),
            now: later,
        },
        SubscriptionError::TrialExpired {
            ended_at: now() + Duration::days(30),
        }
        .into(),
    );
    let period = later + Duration::days(365);
    let trial_modules = Module::ALL.to_vec();
    TestFramework::<Hospital>::with(())
        .given(history(Plan::Trial, vec![]))
        .when(HospitalCommand::ChangePlan {
            actor: platform(),
            plan: Plan::Basic,
            cycle: BillingCycle::Yearly,
            period_ends_at: period,
            now: later,
        })
        .then_expect_events(vec![HospitalEvent::PlanChanged {
            plan: Plan::Basic,
            cycle: BillingCycle::Yearly,
            period_ends_at: period,
            modules: modules_after_plan_change(&trial_modules, Some(Plan::Trial), Plan::Basic),
            at: later,
        }]);
}

#[test]
fn plan_changes_keep_choices_drop_what_the_plan_lacks_and_add_what_it_brings() {
    let basic_without_opd = vec![Module::Appointments, Module::Patients, Module::Billing];
    let pro = modules_after_plan_change(&basic_without_opd, Some(Plan::Basic), Plan::Professional);
    assert!(!pro.contains(&Module::Opd), "the admin switched OPD off");
    assert!(pro.contains(&Module::Laboratory), "new in PROFESSIONAL");
    let down = modules_after_plan_change(&Module::ALL, Some(Plan::Trial), Plan::Basic);
    assert_eq!(
        down,
        vec![
            Module::Appointments,
            Module::Patients,
            Module::Billing,
            Module::Opd
        ]
    );
}

#[test]
fn departments_are_added_renamed_deactivated_and_reactivated() {
    let id = Uuid::from_u128(3);
    TestFramework::<Hospital>::with(())
        .given(basic())
        .when(HospitalCommand::AddDepartment {
            actor: admin(),
            department_id: id,
            name: text("Oncology"),
            now: now(),
        })
        .then_expect_events(vec![HospitalEvent::DepartmentAdded {
            department: Department {
                id,
                name: "Oncology".into(),
                active: true,
            },
            at: now(),
        }]);
    // Renaming to another case of its own name is fine.
    TestFramework::<Hospital>::with(())
        .given(basic())
        .when(HospitalCommand::RenameDepartment {
            actor: admin(),
            department_id: Uuid::from_u128(1),
            name: text("SURGERY"),
            now: now(),
        })
        .then_expect_events(vec![HospitalEvent::DepartmentRenamed {
            department_id: Uuid::from_u128(1),
            name: "SURGERY".into(),
            at: now(),
        }]);
    TestFramework::<Hospital>::with(())
        .given(basic())
        .when(HospitalCommand::DeactivateDepartment {
            actor: admin(),
            department_id: Uuid::from_u128(2),
            now: now(),
        })
        .then_expect_events(vec![HospitalEvent::DepartmentDeactivated {
            department_id: Uuid::from_u128(2),
            at: now(),
        }]);
    let deactivated = history(
        Plan::Basic,
        vec![HospitalCommand::DeactivateDepartment {
            actor: admin(),
            department_id: Uuid::from_u128(2),
            now: now(),
        }],
    );
    TestFramework::<Hospital>::with(())
        .given(deactivated.clone())
        .when(HospitalCommand::ReactivateDepartment {
            actor: admin(),
            department_id: Uuid::from_u128(2),
            now: now(),
        })
        .then_expect_events(vec![HospitalEvent::DepartmentReactivated {
            department_id: Uuid::from_u128(2),
            at: now(),
        }]);
    expect_error(
        deactivated,
        HospitalCommand::DeactivateDepartment {
            actor: admin(),
            department_id: Uuid::from_u128(2),
            now: now(),
        },
        HospitalError::DepartmentAlreadyInactive(Uuid::from_u128(2)),
    );
    expect_error(
        basic(),
        HospitalCommand::ReactivateDepartment {
            actor: admin(),
            department_id: Uuid::from_u128(2),
            now: now(),
        },
        HospitalError::DepartmentAlreadyActive(Uuid::from_u128(2)),
    );
}

#[test]
fn department_refusals() {
    let add = |id: u128, name: &str| HospitalCommand::AddDepartment {
        actor: admin(),
        department_id: Uuid::from_u128(id),
        name: text(name),
        now: now(),
    };
    expect_error(
        basic(),
        add(9, "cardiology"),
        HospitalError::DuplicateDepartment("cardiology".into()),
    );
    expect_error(
        basic(),
        add(1, "Oncology"),
        HospitalError::DepartmentIdTaken(Uuid::from_u128(1)),
    );
    expect_error(
        basic(),
        HospitalCommand::RenameDepartment {
            actor: admin(),
            department_id: Uuid::from_u128(1),
            name: text("Cardiology"),
            now: now(),
        },
        HospitalError::DuplicateDepartment("Cardiology".into()),
    );
    expect_error(
        basic(),
        HospitalCommand::RenameDepartment {
            actor: admin(),
            department_id: Uuid::from_u128(42),
            name: text("X-ray"),
            now: now(),
        },
        HospitalError::DepartmentNotFound(Uuid::from_u128(42)),
    );
}

#[test]
fn modules_switch_within_the_plan_and_core_modules_stay_on() {
    let disable = |module| HospitalCommand::DisableModule {
        actor: admin(),
        module,
        now: now(),
    };
    let enable = |module| HospitalCommand::EnableModule {
        actor: admin(),
        module,
        now: now(),
    };
    TestFramework::<Hospital>::with(())
        .given(basic())
        .when(disable(Module::Billing))
        .then_expect_events(vec![HospitalEvent::ModuleDisabled {
            module: Module::Billing,
            at: now(),
        }]);
    let no_billing = history(Plan::Basic, vec![disable(Module::Billing)]);
    TestFramework::<Hospital>::with(())
        .given(no_billing.clone())
        .when(enable(Module::Billing))
        .then_expect_events(vec![HospitalEvent::ModuleEnabled {
            module: Module::Billing,
            at: now(),
        }]);
    expect_error(
        no_billing,
        disable(Module::Billing),
        HospitalError::ModuleAlreadyDisabled(Module::Billing),
    );
    expect_error(
        basic(),
        enable(Module::Billing),
        HospitalError::ModuleAlreadyEnabled(Module::Billing),
    );
    expect_error(
        basic(),
        disable(Module::Patients),
        HospitalError::CoreModule(Module::Patients),
    );
    expect_error(
        basic(),
        enable(Module::Appointments),
        HospitalError::CoreModule(Module::Appointments),
    );
    expect_error(
        basic(),
        enable(Module::Telemedicine),
        ModuleError::NotInPlan {
            module: Module::Telemedicine,
            plan: Plan::Basic,
        }
        .into(),
    );
}

#[test]
fn the_subscription_follows_its_lifecycle() {
    let p = platform();
    let period = now() + Duration::days(30);
    let past_due = history(
        Plan::Basic,
        vec![HospitalCommand::MarkPastDue {
            actor: p.clone(),
            now: now(),
        }],
    );
    TestFramework::<Hospital>::with(())
        .given(past_due.clone())
        .when(HospitalCommand::RenewSubscription {
            actor: p.clone(),
            period_ends_at: period,
            now: now(),
        })
        .then_expect_events(vec![HospitalEvent::SubscriptionRenewed {
            period_ends_at: period,
            at: now(),
        }]);
    TestFramework::<Hospital>::with(())
        .given(past_due)
        .when(HospitalCommand::SuspendSubscription {
            actor: p.clone(),
            reason: text("unpaid"),
            now: now(),
        })
        .then_expect_events(vec![HospitalEvent::SubscriptionSuspended {
            reason: "unpaid".into(),
            at: now(),
        }]);
    let suspended = history(
        Plan::Professional,
        vec![HospitalCommand::SuspendSubscription {
            actor: p.clone(),
            reason: text("unpaid"),
            now: now(),
        }],
    );
    let mut modules = Plan::Professional.limits().modules.to_vec();
    modules.sort();
    TestFramework::<Hospital>::with(())
        .given(suspended.clone())
        .when(HospitalCommand::ReactivateSubscription {
            actor: p.clone(),
            plan: Plan::Professional,
            cycle: BillingCycle::Monthly,
            period_ends_at: period,
            now: now(),
        })
        .then_expect_events(vec![HospitalEvent::SubscriptionReactivated {
            plan: Plan::Professional,
            cycle: BillingCycle::Monthly,
            period_ends_at: period,
            modules,
            at: now(),
        }]);
    TestFramework::<Hospital>::with(())
        .given(suspended)
        .when(HospitalCommand::CancelSubscription {
            actor: platform(),
            reason: text("closing"),
            now: now(),
        })
        .then_expect_events(vec![HospitalEvent::SubscriptionCancelled {
            reason: "closing".into(),
            at: now(),
        }]);
}

#[test]
fn illegal_subscription_changes_are_refused() {
    let p = platform();
    let period = now() + Duration::days(30);
    let cancelled = history(
        Plan::Basic,
        vec![HospitalCommand::CancelSubscription {
            actor: p.clone(),
            reason: text("closing"),
            now: now(),
        }],
    );
    let illegal = |from, action| HospitalError::IllegalSubscriptionChange { from, action };
    expect_error(
        cancelled.clone(),
        HospitalCommand::ChangePlan {
            actor: platform(),
            plan: Plan::Enterprise,
            cycle: BillingCycle::Monthly,
            period_ends_at: period,
            now: now(),
        },
        illegal(SubscriptionStatus::Cancelled, "moved to another plan"),
    );
    expect_error(
        cancelled.clone(),
        HospitalCommand::CancelSubscription {
            actor: p.clone(),
            reason: text("again"),
            now: now(),
        },
        illegal(SubscriptionStatus::Cancelled, "cancelled"),
    );
    expect_error(
        cancelled,
        HospitalCommand::SuspendSubscription {
            actor: p.clone(),
            reason: text("x"),
            now: now(),
        },
        illegal(SubscriptionStatus::Cancelled, "suspended"),
    );
    expect_error(
        history(Plan::Trial, vec![]),
        HospitalCommand::MarkPastDue {
            actor: p.clone(),
            now: now(),
        },
        illegal(SubscriptionStatus::Trial, "marked past due"),
    );
    expect_error(
        history(Plan::Trial, vec![]),
        HospitalCommand::RenewSubscription {
            actor: p.clone(),
            period_ends_at: period,
            now: now(),
        },
        illegal(SubscriptionStatus::Trial, "renewed"),
    );
    expect_error(
        basic(),
        HospitalCommand::ReactivateSubscription {
            actor: p.clone(),
            plan: Plan::Basic,
            cycle: BillingCycle::Monthly,
            period_ends_at: period,
            now: now(),
        },
        illegal(SubscriptionStatus::Active, "reactivated"),
    );
    let suspended = history(
        Plan::Basic,
        vec![HospitalCommand::SuspendSubscription {
            actor: p.clone(),
            reason: text("x"),
            now: now(),
        }],
    );
    expect_error(
        suspended.clone(),
        HospitalCommand::ChangePlan {
            actor: platform(),
            plan: Plan::Basic,
            cycle: BillingCycle::Monthly,
            period_ends_at: period,
            now: now(),
        },
        illegal(SubscriptionStatus::Suspended, "moved to another plan"),
    );
    expect_error(
        suspended.clone(),
        HospitalCommand::ReactivateSubscription {
            actor: p.clone(),
            plan: Plan::Trial,
            cycle: BillingCycle::Monthly,
            period_ends_at: period,
            now: now(),
        },
        HospitalError::TrialIsNotAPaidPlan,
    );
    expect_error(
        suspended,
        HospitalCommand::ReactivateSubscription {
            actor: p.clone(),
            plan: Plan::Basic,
            cycle: BillingCycle::Monthly,
            period_ends_at: now(),
            now: now(),
        },
        HospitalError::PeriodEndNotInFuture,
    );
    expect_error(
        basic(),
        HospitalCommand::ChangePlan {
            actor: platform(),
            plan: Plan::Trial,
            cycle: BillingCycle::Monthly,
            period_ends_at: period,
            now: now(),
        },
        HospitalError::TrialIsNotAPaidPlan,
    );
    expect_error(
        basic(),
        HospitalCommand::RenewSubscription {
            actor: p,
            period_ends_at: now() - Duration::days(1),
            now: now(),
        },
        HospitalError::PeriodEndNotInFuture,
    );
    expect_error(
        basic(),
        HospitalCommand::SuspendSubscription {
            actor: admin(),
            reason: text("x"),
            now: now(),
        },
        PermissionDenied {
            role: Role::HospitalAdmin,
            operation: Operation::AdministerSubscription,
        }
        .into(),
    );
}

#[test]
fn value_objects_of_the_hospital_validate() {
    assert!(TimeZoneName::parse("Africa/Nairobi").is_ok());
    assert!(TimeZoneName::parse("America/Argentina/Buenos_Aires").is_ok());
    assert!(TimeZoneName::parse("Etc/GMT+3").is_ok());
    for bad in ["", "/Nairobi", "Africa//Nairobi", "Africa/Nai robi", "1/2"] {
        assert!(TimeZoneName::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        HexColor::parse("c", "#a1b2c3").expect("valid").as_str(),
        "#A1B2C3"
    );
    assert!(HexColor::parse("c", "a1b2c3").is_err());
    assert!(HexColor::parse("c", "#a1b2cz").is_err());
    assert!(InvoicePrefix::parse("INV2").is_ok());
    for bad in ["", "inv", "2INV", "ABCDEFGHIJK", "IN-V"] {
        assert!(InvoicePrefix::parse(bad).is_err(), "{bad:?}");
    }
    assert!(SlotLength::minutes(15).is_ok());
    for bad in [0, 3, 7, 245] {
        assert!(SlotLength::minutes(bad).is_err(), "{bad}");
    }
    assert!(serde_json::from_str::<SlotLength>("7").is_err());
    let t = |h| NaiveTime::from_hms_opt(h, 0, 0).expect("valid");
    assert!(WorkingHours::new(t(9), t(9)).is_err());
    let week = WorkingWeek::standard();
    assert!(week.on(Weekday::Sat).is_none());
    let mon = week.on(Weekday::Mon).expect("open on mondays");
    assert!(mon.contains(t(8), t(17)));
    assert!(!mon.contains(t(7), t(9)));
    assert!(!mon.contains(t(16), t(18)));
}
