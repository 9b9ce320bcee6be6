//! Changing patients: each resolver authorizes one operation and runs one use case.

use async_graphql::{Context, Object};
use hms_app::usecases::patients as uc;
use hms_domain::permissions::Operation;

use super::types::{
    AddPatientAlertInput, DeactivatePatientInput, MarkPatientDeceasedInput, MergePatientsInput,
    Patient, ReactivatePatientInput, RecordAllergyInput, RegisterPatientInput, RemoveAllergyInput,
    ResolvePatientAlertInput, UpdatePatientInput,
};
use crate::graphql::error::Result;
use crate::graphql::session::authorize;
use crate::graphql::MUTATION_FIELD_COST;

#[derive(Default)]
pub struct PatientMutation;

#[Object]
impl PatientMutation {
    /// Registers a patient and issues the next medical record number of the hospital.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn register_patient(
        &self,
        ctx: &Context<'_>,
        input: RegisterPatientInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::RegisterPatient).await?;
        Ok(uc::register_patient(&auth, input.into()).await?.into())
    }

    /// Changes a patient's demographics (only the fields given).
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn update_patient(
        &self,
        ctx: &Context<'_>,
        input: UpdatePatientInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::UpdatePatient).await?;
        Ok(uc::update_patient(&auth, input.into()).await?.into())
    }

    /// Records an allergy (one entry per substance).
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn record_allergy(
        &self,
        ctx: &Context<'_>,
        input: RecordAllergyInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::ManageAllergies).await?;
        Ok(uc::record_allergy(&auth, input.into()).await?.into())
    }

    /// Removes a recorded allergy.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn remove_allergy(
        &self,
        ctx: &Context<'_>,
        input: RemoveAllergyInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::ManageAllergies).await?;
        Ok(uc::remove_allergy(&auth, input.into()).await?.into())
    }

    /// Adds a clinical alert shown whenever the record is opened.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn add_patient_alert(
        &self,
        ctx: &Context<'_>,
        input: AddPatientAlertInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::ManagePatientAlerts).await?;
        Ok(uc::add_patient_alert(&auth, input.into()).await?.into())
    }

    /// Resolves (removes) a clinical alert.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn resolve_patient_alert(
        &self,
        ctx: &Context<'_>,
        input: ResolvePatientAlertInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::ManagePatientAlerts).await?;
        Ok(uc::resolve_patient_alert(&auth, input.into()).await?.into())
    }

    /// Records the patient's death (DOCTOR).
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn mark_patient_deceased(
        &self,
        ctx: &Context<'_>,
        input: MarkPatientDeceasedInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::MarkPatientDeceased).await?;
        Ok(uc::mark_patient_deceased(&auth, input.into()).await?.into())
    }

    /// Deactivates an active patient: no new appointments or invoices until reactivated.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn deactivate_patient(
        &self,
        ctx: &Context<'_>,
        input: DeactivatePatientInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::DeactivatePatient).await?;
        Ok(uc::deactivate_patient(&auth, input.into()).await?.into())
    }

    /// Reactivates an inactive patient.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn reactivate_patient(
        &self,
        ctx: &Context<'_>,
        input: ReactivatePatientInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::DeactivatePatient).await?;
        Ok(uc::reactivate_patient(&auth, input.into()).await?.into())
    }

    /// Merges a duplicate record into its survivor and returns the survivor. The
    /// duplicate is written first (it becomes read-only, pointing to the survivor), then
    /// the survivor records what it absorbed; running the merge again finishes one that
    /// was cut off half-way.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn merge_patients(
        &self,
        ctx: &Context<'_>,
        input: MergePatientsInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::MergePatients).await?;
        Ok(uc::merge_patients(&auth, input.into()).await?.into())
    }
}
