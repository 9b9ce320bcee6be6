//! The super administrator's mutations: onboarding, subscriptions, closing and reopening,
//! and restoring a locked-out hospital administrator.

use async_graphql::{Context, Object};
use hms_app::usecases::platform as uc;

use super::platform_scope;
use super::types::*;
use crate::graphql::error::Result;
use crate::graphql::hospital::StaffUser;
use crate::graphql::MUTATION_FIELD_COST;

#[derive(Default)]
pub struct PlatformMutation;

#[Object]
impl PlatformMutation {
    /// Onboards a hospital exactly as `hms setup-hospital` does: its own database,
    /// its registration and its first administrator. A code in use is a CONFLICT.
    /// Retrying after an interruption completes the first request.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn create_hospital(
        &self,
        ctx: &Context<'_>,
        input: CreateHospitalInput,
    ) -> Result<PlatformHospital> {
        let scope = platform_scope(ctx)?;
        let input = uc::CreateHospital {
            code: input.code,
            name: input.name,
            plan: input.plan.unwrap_or(Plan::Trial).into(),
            admin_username: input.admin_username,
            admin_email: input.admin_email,
            admin_name: input.admin_name,
            admin_password: input.admin_password,
            server: input.server,
        };
        Ok(scope.create_hospital(input).await?.into())
    }

    /// Moves the hospital to a paid plan (from a trial, an active or a past-due
    /// subscription). Modules the plan lacks are switched off.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn change_subscription(
        &self,
        ctx: &Context<'_>,
        input: ChangeSubscriptionInput,
    ) -> Result<PlatformHospital> {
        let scope = platform_scope(ctx)?;
        let period = uc::PaidPeriod {
            code: input.code,
            plan: input.plan.into(),
            cycle: input.cycle.into(),
            period_ends_at: input.period_ends_at,
            expected_version: input.expected_version,
        };
        Ok(scope.change_subscription(period).await?.into())
    }

    /// Suspends the subscription: the hospital's staff still sign in and read, but
    /// every write is refused (SUBSCRIPTION_INACTIVE) until `reactivateHospital`. To
    /// shut a hospital out entirely, use `closeHospital`.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn suspend_hospital(
        &self,
        ctx: &Context<'_>,
        input: SuspendHospitalInput,
    ) -> Result<PlatformHospital> {
        let scope = platform_scope(ctx)?;
        Ok(scope
            .suspend_hospital(&input.code, &input.reason, input.expected_version)
            .await?
            .into())
    }

    /// Lifts a suspension onto a paid plan: writes work again.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn reactivate_hospital(
        &self,
        ctx: &Context<'_>,
        input: ReactivateHospitalInput,
    ) -> Result<PlatformHospital> {
        let scope = platform_scope(ctx)?;
        let period = uc::PaidPeriod {
            code: input.code,
            plan: input.plan.into(),
            cycle: input.cycle.into(),
            period_ends_at: input.period_ends_at,
            expected_version: input.expected_version,
        };
        Ok(scope.reactivate_hospital(period).await?.into())
    }

    /// Cancels the subscription for good: the hospital keeps its history and can still
    /// sign in and read it (e.g. to export), but never writes again.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn cancel_hospital(
        &self,
        ctx: &Context<'_>,
        input: CancelHospitalInput,
    ) -> Result<PlatformHospital> {
        let scope = platform_scope(ctx)?;
        Ok(scope
            .cancel_hospital(&input.code, &input.reason, input.expected_version)
            .await?
            .into())
    }

    /// Closes the hospital (directory status SUSPENDED): nobody can sign in and tokens
    /// already issued stop working, whatever the subscription. The operator's emergency
    /// brake; for unpaid bills use `suspendHospital`, which keeps reads open.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn close_hospital(
        &self,
        ctx: &Context<'_>,
        input: CloseHospitalInput,
    ) -> Result<PlatformHospital> {
        let scope = platform_scope(ctx)?;
        Ok(scope
            .close_hospital(&input.code, &input.reason)
            .await?
            .into())
    }

    /// Reopens a closed hospital: its staff can sign in again (what they may do then
    /// depends on the subscription).
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn reopen_hospital(
        &self,
        ctx: &Context<'_>,
        input: ReopenHospitalInput,
    ) -> Result<PlatformHospital> {
        let scope = platform_scope(ctx)?;
        Ok(scope.reopen_hospital(&input.code).await?.into())
    }

    /// The way back in for a hospital whose administrators are all locked out: the named
    /// HOSPITAL_ADMIN account is reactivated if it was deactivated and given a new
    /// password (its earlier tokens stop working). Recorded in the hospital's log under
    /// the operator; other roles are refused.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn restore_hospital_admin(
        &self,
        ctx: &Context<'_>,
        input: RestoreHospitalAdminInput,
    ) -> Result<StaffUser> {
        let scope = platform_scope(ctx)?;
        let user = scope
            .restore_hospital_admin(&input.code, &input.username, input.new_password)
            .await?;
        Ok(user.into())
    }
}
