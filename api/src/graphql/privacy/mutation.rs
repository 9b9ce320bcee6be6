//! Restricting records, breaking the glass, reviewing break-glass accesses.

use async_graphql::{Context, Object};
use hms_app::usecases::privacy as uc;
use hms_domain::permissions::Operation;

use super::types::{
    ApprovePatientErasureInput, BreakGlassAccess, BreakGlassGrant, BreakGlassInput,
    ErasePatientInput, RestrictPatientRecordInput, ReviewBreakGlassInput,
};
use crate::graphql::error::Result;
use crate::graphql::patients::Patient;
use crate::graphql::session::authorize;
use crate::graphql::MUTATION_FIELD_COST;

#[derive(Default)]
pub struct PrivacyMutation;

#[Object]
impl PrivacyMutation {
    /// Restricts a patient's record to its care team and the staff named, or lifts the
    /// restriction (HOSPITAL_ADMIN, with a reason).
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn restrict_patient_record(
        &self,
        ctx: &Context<'_>,
        input: RestrictPatientRecordInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::RestrictPatientRecord).await?;
        let input = uc::RestrictPatientRecord {
            patient_id: input.patient_id,
            restricted: input.restricted,
            reason: input.reason,
            named_users: input.named_users,
            expected_version: input.expected_version,
            idempotency_key: input.idempotency_key,
        };
        Ok(uc::restrict_patient_record(&auth, input).await?.into())
    }

    /// Opens a restricted record you are not on the care team of, for the hospital's
    /// break-glass duration. State why; every read under it is recorded as break-glass and
    /// the privacy officer reviews it.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn break_glass(
        &self,
        ctx: &Context<'_>,
        input: BreakGlassInput,
    ) -> Result<BreakGlassGrant> {
        let auth = authorize(ctx, Operation::BreakGlass).await?;
        let input = uc::BreakGlassRequest {
            patient_id: input.patient_id,
            reason: input.reason.into(),
            note: input.note,
            idempotency_key: input.idempotency_key,
        };
        Ok(uc::break_glass(&auth, input).await?.into())
    }

    /// Records the privacy officer's finding on a break-glass access; final.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn review_break_glass(
        &self,
        ctx: &Context<'_>,
        input: ReviewBreakGlassInput,
    ) -> Result<BreakGlassAccess> {
        let auth = authorize(ctx, Operation::ReviewBreakGlass).await?;
        let input = uc::ReviewBreakGlass {
            grant_id: input.grant_id,
            outcome: input.outcome.into(),
            note: input.note,
            idempotency_key: input.idempotency_key,
        };
        BreakGlassAccess::try_from(uc::review_break_glass(&auth, input).await?)
    }

    /// Asks for a patient's personal data to be erased (HOSPITAL_ADMIN, with its legal
    /// basis); a second administrator approves it.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn erase_patient(&self, ctx: &Context<'_>, input: ErasePatientInput) -> Result<Patient> {
        let auth = authorize(ctx, Operation::ErasePatient).await?;
        let input = uc::ErasePatient {
            patient_id: input.patient_id,
            legal_basis: input.legal_basis,
            idempotency_key: input.idempotency_key,
        };
        Ok(uc::erase_patient(&auth, input).await?.into())
    }

    /// Approves another administrator's erasure request once the retention period after
    /// the patient's last contact has passed: the patient's key is destroyed and their
    /// personal data reads as `[erased]` everywhere from then on.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn approve_patient_erasure(
        &self,
        ctx: &Context<'_>,
        input: ApprovePatientErasureInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::ErasePatient).await?;
        let input = uc::ApprovePatientErasure {
            patient_id: input.patient_id,
            idempotency_key: input.idempotency_key,
        };
        Ok(uc::approve_patient_erasure(&auth, input).await?.into())
    }
}
