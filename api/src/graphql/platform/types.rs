//! The platform operator's view as GraphQL types: mirrors of the domain's enums and the
//! use cases' results, and the inputs of the platform mutations.

use async_graphql::{Enum, InputObject, SimpleObject};
use chrono::{DateTime, Utc};
use hms_app::usecases::platform as uc;

/// A subscription plan.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "hms_domain::plan::Plan")]
pub enum Plan {
    /// Free for 30 days, everything at a small scale.
    Trial,
    Basic,
    Professional,
    Enterprise,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "hms_domain::hospital::BillingCycle")]
pub enum BillingCycle {
    Monthly,
    Yearly,
}

/// The state of a hospital's subscription (its own event log). Only TRIAL (until it
/// expires), ACTIVE and PAST_DUE may write; every state may read.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "hms_domain::hospital::SubscriptionStatus")]
pub enum SubscriptionStatus {
    Trial,
    Active,
    /// A renewal failed: still writes, during the grace period.
    PastDue,
    /// Read-only until the platform reactivates it.
    Suspended,
    /// Read-only for good; the history is kept.
    Cancelled,
}

/// Whether a hospital is reachable at all (the platform directory), independent of its
/// subscription.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "hms_app::tenancy::TenantStatus")]
pub enum TenantStatus {
    /// Being created; not reachable yet.
    Provisioning,
    /// Open: staff sign in (what they may do then depends on the subscription).
    Active,
    /// Closed by the platform operator: nobody signs in.
    Suspended,
    /// Closed for good.
    Cancelled,
}

/// A hospital as the platform operator sees it: no patient data, only the directory,
/// the subscription and counts.
#[derive(SimpleObject, Clone, Debug)]
pub struct PlatformHospital {
    pub code: String,
    pub name: String,
    /// Reachability (directory); see `subscription` for read-only states.
    pub status: TenantStatus,
    /// Why the operator closed the hospital, while it is closed.
    pub closed_reason: Option<String>,
    /// Who closed it, while it is closed.
    pub closed_by: Option<String>,
    pub plan: Plan,
    /// The PostgreSQL server holding the hospital's database ("default": the
    /// platform's own).
    pub database_server: String,
    pub database_name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The subscription as of `statistics.refreshedAt`; null until first refreshed.
    pub subscription: Option<PlatformSubscription>,
    /// Activity counts; null until first refreshed.
    pub statistics: Option<HospitalStatistics>,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct PlatformSubscription {
    pub status: SubscriptionStatus,
    pub plan: Plan,
    pub cycle: Option<BillingCycle>,
    pub trial_ends_at: Option<DateTime<Utc>>,
    pub period_ends_at: Option<DateTime<Utc>>,
    /// The reason given for a suspension or cancellation.
    pub reason: Option<String>,
    /// Whether the hospital may write now (an expired trial may not).
    pub can_write: bool,
    /// The hospital record's version: pass it as `expectedVersion` to a subscription
    /// change to be sure nobody changed the hospital since.
    pub version: i64,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct HospitalStatistics {
    /// Staff accounts, active or not.
    pub users: i64,
    pub active_users: i64,
    /// Patients, not counting records merged into another.
    pub patients: i64,
    pub appointments: i64,
    pub invoices: i64,
    /// Money collected, per currency.
    pub revenue: Vec<CurrencyRevenue>,
    /// When the hospital's log last grew.
    pub last_activity_at: Option<DateTime<Utc>>,
    /// When these figures were read from the hospital's database.
    pub refreshed_at: DateTime<Utc>,
}

/// Money in one currency, in minor units (cents).
#[derive(SimpleObject, Clone, Debug)]
pub struct CurrencyRevenue {
    pub currency: String,
    pub paid_minor: i64,
    pub refunded_minor: i64,
    /// Paid minus refunded.
    pub net_minor: i64,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct TenantStatusCount {
    pub status: TenantStatus,
    pub count: i64,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct PlanCount {
    pub plan: Plan,
    pub count: i64,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct SubscriptionStatusCount {
    pub status: SubscriptionStatus,
    pub count: i64,
}

/// Figures across all hospitals, from the platform database only.
#[derive(SimpleObject, Clone, Debug)]
pub struct PlatformStats {
    /// Every hospital in the directory, in any state.
    pub hospitals: i64,
    pub by_status: Vec<TenantStatusCount>,
    pub by_plan: Vec<PlanCount>,
    /// Over hospitals with figures.
    pub by_subscription_status: Vec<SubscriptionStatusCount>,
    pub users: i64,
    pub active_users: i64,
    pub patients: i64,
    pub appointments: i64,
    pub invoices: i64,
    /// Per currency, summed over hospitals.
    pub revenue: Vec<CurrencyRevenue>,
    /// Hospitals whose figures were never read yet (not in the totals).
    pub hospitals_without_statistics: i64,
    /// The oldest figures in the totals.
    pub oldest_statistics_at: Option<DateTime<Utc>>,
}

impl From<uc::PlatformHospital> for PlatformHospital {
    fn from(h: uc::PlatformHospital) -> Self {
        Self {
            code: h.code,
            name: h.name,
            status: h.status.into(),
            closed_reason: h.closed_reason,
            closed_by: h.closed_by,
            plan: h.plan.into(),
            database_server: h.database_server,
            database_name: h.database_name,
            created_at: h.created_at,
            updated_at: h.updated_at,
            subscription: h.subscription.map(|s| PlatformSubscription {
                status: s.status.into(),
                plan: s.plan.into(),
                cycle: s.cycle.map(Into::into),
                trial_ends_at: s.trial_ends_at,
                period_ends_at: s.period_ends_at,
                reason: s.reason,
                can_write: s.can_write,
                version: s.version,
            }),
            statistics: h.statistics.map(|s| HospitalStatistics {
                users: s.users,
                active_users: s.active_users,
                patients: s.patients,
                appointments: s.appointments,
                invoices: s.invoices,
                revenue: s.revenue.into_iter().map(Into::into).collect(),
                last_activity_at: s.last_activity_at,
                refreshed_at: s.refreshed_at,
            }),
        }
    }
}

impl From<uc::CurrencyRevenue> for CurrencyRevenue {
    fn from(r: uc::CurrencyRevenue) -> Self {
        Self {
            currency: r.currency,
            paid_minor: r.paid_minor,
            refunded_minor: r.refunded_minor,
            net_minor: r.net_minor,
        }
    }
}

impl From<uc::PlatformStats> for PlatformStats {
    fn from(s: uc::PlatformStats) -> Self {
        Self {
            hospitals: s.hospitals,
            by_status: s
                .by_status
                .into_iter()
                .map(|(status, count)| TenantStatusCount {
                    status: status.into(),
                    count,
                })
                .collect(),
            by_plan: s
                .by_plan
                .into_iter()
                .map(|(plan, count)| PlanCount {
                    plan: plan.into(),
                    count,
                })
                .collect(),
            by_subscription_status: s
                .by_subscription_status
                .into_iter()
                .map(|(status, count)| SubscriptionStatusCount {
                    status: status.into(),
                    count,
                })
                .collect(),
            users: s.users,
            active_users: s.active_users,
            patients: s.patients,
            appointments: s.appointments,
            invoices: s.invoices,
            revenue: s.revenue.into_iter().map(Into::into).collect(),
            hospitals_without_statistics: s.hospitals_without_statistics,
            oldest_statistics_at: s.oldest_statistics_at,
        }
    }
}

#[derive(InputObject)]
pub struct CreateHospitalInput {
    /// 3 to 16 characters: an upper-case letter, then upper-case letters or digits. It
    /// names the hospital's database and never changes.
    pub code: String,
    pub name: String,
    /// TRIAL when left out.
    pub plan: Option<Plan>,
    pub admin_username: String,
    pub admin_email: String,
    pub admin_name: String,
    /// The first administrator's password (10 to 256 characters); only its hash is kept.
    pub admin_password: String,
    /// The database server to place it on (a name from `hms servers list`); left out,
    /// the server with the most room for its capacity that is not draining.
    pub server: Option<String>,
}

#[derive(InputObject)]
pub struct ChangeSubscriptionInput {
    pub code: String,
    /// A paid plan.
    pub plan: Plan,
    pub cycle: BillingCycle,
    /// End of the paid period; one cycle from now when left out.
    pub period_ends_at: Option<DateTime<Utc>>,
    /// The hospital's `subscription.version` last seen; a stale one is a CONFLICT.
    pub expected_version: Option<i64>,
}

#[derive(InputObject)]
pub struct SuspendHospitalInput {
    pub code: String,
    pub reason: String,
    pub expected_version: Option<i64>,
}

#[derive(InputObject)]
pub struct ReactivateHospitalInput {
    pub code: String,
    /// A paid plan.
    pub plan: Plan,
    pub cycle: BillingCycle,
    /// End of the paid period; one cycle from now when left out.
    pub period_ends_at: Option<DateTime<Utc>>,
    pub expected_version: Option<i64>,
}

#[derive(InputObject)]
pub struct CancelHospitalInput {
    pub code: String,
    pub reason: String,
    pub expected_version: Option<i64>,
}

#[derive(InputObject)]
pub struct CloseHospitalInput {
    pub code: String,
    pub reason: String,
}

#[derive(InputObject)]
pub struct ReopenHospitalInput {
    pub code: String,
}

#[derive(InputObject)]
pub struct RestoreHospitalAdminInput {
    /// The hospital's code.
    pub code: String,
    /// A HOSPITAL_ADMIN account of that hospital.
    pub username: String,
    /// 10 to 256 characters.
    pub new_password: String,
}
