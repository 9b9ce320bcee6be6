//! The hospital administration mutations: each parses its input, runs one use case of
//! [`hms_app::usecases::hospital`] and shapes the answer.

use async_graphql::{Context, Object};
use hms_app::usecases::hospital as uc;
use hms_domain::common::{BoundedText, Currency, Email, Phone};
use hms_domain::hospital::{
    Branding, HexColor, HospitalProfile, HospitalSettings, InvoicePrefix, PrivacySettings,
    SlotLength, TimeZoneName, MAX_LOGO_REF_CHARS, MAX_NAME_CHARS,
};
use hms_domain::permissions::Operation;
use uuid::Uuid;

use super::types::{
    CreateUserInput, Department, Hospital, Module, StaffUser, UpdateBrandingInput,
    UpdateHospitalProfileInput, UpdateHospitalSettingsInput,
};
use crate::graphql::error::{ApiError, Result};
use crate::graphql::session::{authorize, MutationOptions};
use crate::graphql::types::{AddressInput, Role};
use crate::graphql::MUTATION_FIELD_COST;

#[derive(Default)]
pub struct HospitalMutation;

#[Object]
impl HospitalMutation {
    /// Changes the hospital's name, contacts, address, time zone and currency.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn update_hospital_profile(
        &self,
        ctx: &Context<'_>,
        input: UpdateHospitalProfileInput,
    ) -> Result<Hospital> {
        let auth = authorize(ctx, Operation::UpdateHospitalProfile).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let profile = HospitalProfile {
            name: BoundedText::parse("name", &input.name, MAX_NAME_CHARS)?,
            contact_email: input
                .contact_email
                .as_deref()
                .map(Email::parse)
                .transpose()?,
            contact_phone: input
                .contact_phone
                .as_deref()
                .map(|p| Phone::parse("contactPhone", p))
                .transpose()?,
            address: input
                .address
                .as_ref()
                .map(AddressInput::parse)
                .transpose()?,
            time_zone: TimeZoneName::parse(&input.time_zone)?,
            currency: Currency::parse(&input.currency)?,
        };
        Ok(uc::update_profile(&auth, profile, &options, &input)
            .await?
            .into())
    }

    /// Changes the slot length, invoice prefix and opening hours.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn update_hospital_settings(
        &self,
        ctx: &Context<'_>,
        input: UpdateHospitalSettingsInput,
    ) -> Result<Hospital> {
        let auth = authorize(ctx, Operation::UpdateHospitalSettings).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let minutes = u32::try_from(input.slot_length_minutes)
            .map_err(|_| ApiError::validation("slotLengthMinutes", "must be positive"))?;
        let days: Vec<uc::WorkingDay> = input.working_hours.iter().map(Into::into).collect();
        let current = auth.hospital.settings.privacy;
        let settings = HospitalSettings {
            slot_length: SlotLength::minutes(minutes)?,
            working_week: uc::working_week(&days)?,
            invoice_prefix: InvoicePrefix::parse(&input.invoice_prefix)?,
            privacy: PrivacySettings::new(
                input
                    .care_team_window_days
                    .map_or(current.care_team_window_days.into(), i64::from),
                input
                    .break_glass_minutes
                    .map_or(current.break_glass_minutes.into(), i64::from),
                input
                    .retention_days
                    .map_or(current.retention_days.into(), i64::from),
            )?,
        };
        Ok(uc::update_settings(&auth, settings, &options, &input)
            .await?
            .into())
    }

    /// Changes the logo reference and colours.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn update_branding(
        &self,
        ctx: &Context<'_>,
        input: UpdateBrandingInput,
    ) -> Result<Hospital> {
        let auth = authorize(ctx, Operation::UpdateHospitalBranding).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let color = |field: &'static str, v: &Option<String>| {
            v.as_deref().map(|c| HexColor::parse(field, c)).transpose()
        };
        let branding = Branding {
            logo_ref: input
                .logo_ref
                .as_deref()
                .map(|l| BoundedText::parse("logoRef", l, MAX_LOGO_REF_CHARS))
                .transpose()?,
            primary_color: color("primaryColor", &input.primary_color)?,
            accent_color: color("accentColor", &input.accent_color)?,
        };
        Ok(uc::update_branding(&auth, branding, &options, &input)
            .await?
            .into())
    }

    /// Adds a department; names are unique ignoring case.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn add_department(
        &self,
        ctx: &Context<'_>,
        name: String,
        idempotency_key: Option<String>,
    ) -> Result<Department> {
        let auth = authorize(ctx, Operation::ManageDepartments).await?;
        Ok(uc::add_department(&auth, &name, idempotency_key)
            .await?
            .into())
    }

    /// Renames a department.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn rename_department(
        &self,
        ctx: &Context<'_>,
        department_id: Uuid,
        name: String,
        expected_version: Option<i64>,
    ) -> Result<Department> {
        let auth = authorize(ctx, Operation::ManageDepartments).await?;
        Ok(
            uc::rename_department(&auth, department_id, &name, expected_version)
                .await?
                .into(),
        )
    }

    /// Deactivates a department (its history stays).
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn deactivate_department(
        &self,
        ctx: &Context<'_>,
        department_id: Uuid,
    ) -> Result<Department> {
        let auth = authorize(ctx, Operation::ManageDepartments).await?;
        Ok(uc::deactivate_department(&auth, department_id)
            .await?
            .into())
    }

    /// Reactivates a department.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn reactivate_department(
        &self,
        ctx: &Context<'_>,
        department_id: Uuid,
    ) -> Result<Department> {
        let auth = authorize(ctx, Operation::ManageDepartments).await?;
        Ok(uc::reactivate_department(&auth, department_id)
            .await?
            .into())
    }

    /// Switches a module on, within what the plan allows.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn enable_module(&self, ctx: &Context<'_>, module: Module) -> Result<Hospital> {
        let auth = authorize(ctx, Operation::ManageModules).await?;
        Ok(uc::enable_module(&auth, module.into()).await?.into())
    }

    /// Switches a module off (appointments and patients are always on).
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn disable_module(&self, ctx: &Context<'_>, module: Module) -> Result<Hospital> {
        let auth = authorize(ctx, Operation::ManageModules).await?;
        Ok(uc::disable_module(&auth, module.into()).await?.into())
    }

    /// Creates a staff account. Usernames are unique in the hospital, ignoring case.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn create_user(&self, ctx: &Context<'_>, input: CreateUserInput) -> Result<StaffUser> {
        let auth = authorize(ctx, Operation::CreateUser).await?;
        Ok(uc::create_user(&auth, input.into()).await?.into())
    }

    /// Gives a staff account another role (the hospital keeps at least one active admin).
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn change_user_role(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        role: Role,
        expected_version: Option<i64>,
    ) -> Result<StaffUser> {
        let auth = authorize(ctx, Operation::ChangeUserRole).await?;
        Ok(
            uc::change_user_role(&auth, user_id, role.into(), expected_version)
                .await?
                .into(),
        )
    }

    /// Moves a staff account to another department (or none).
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn change_user_department(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        department_id: Option<Uuid>,
    ) -> Result<StaffUser> {
        let auth = authorize(ctx, Operation::ChangeUserDepartment).await?;
        Ok(uc::change_user_department(&auth, user_id, department_id)
            .await?
            .into())
    }

    /// Deactivates a staff account: it can no longer sign in, and its tokens stop working.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn deactivate_user(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        expected_version: Option<i64>,
    ) -> Result<StaffUser> {
        let auth = authorize(ctx, Operation::DeactivateUser).await?;
        Ok(uc::deactivate_user(&auth, user_id, expected_version)
            .await?
            .into())
    }

    /// Reactivates a staff account.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn reactivate_user(&self, ctx: &Context<'_>, user_id: Uuid) -> Result<StaffUser> {
        let auth = authorize(ctx, Operation::ReactivateUser).await?;
        Ok(uc::reactivate_user(&auth, user_id).await?.into())
    }

    /// Sets a new password for a staff account; its earlier tokens stop working.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn reset_user_password(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        new_password: String,
    ) -> Result<StaffUser> {
        let auth = authorize(ctx, Operation::ResetUserPassword).await?;
        Ok(uc::reset_user_password(&auth, user_id, new_password)
            .await?
            .into())
    }

    /// Changes the caller's own password; every earlier token of the caller stops working.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> Result<bool> {
        let auth = authorize(ctx, Operation::ChangeOwnPassword).await?;
        uc::change_password(&auth, current_password, new_password).await?;
        Ok(true)
    }
}
