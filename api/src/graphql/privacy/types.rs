//! The GraphQL shape of restricted records and break-glass access.

use async_graphql::{Enum, InputObject, SimpleObject};
use chrono::{DateTime, Utc};
use hms_app::usecases::privacy as uc;
use hms_app::usecases::stored;
use hms_domain::break_glass as domain;
use hms_projections::projectors::BreakGlassRow;
use uuid::Uuid;

use crate::graphql::error::{ApiError, Result};

/// Why the glass was broken.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    remote = "hms_domain::break_glass::BreakGlassReason",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum BreakGlassReason {
    EmergencyTreatment,
    PatientCannotConsent,
    UrgentConsultation,
    ContinuityOfCare,
    Other,
}

/// The privacy officer's finding.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    remote = "hms_domain::break_glass::ReviewOutcome",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum ReviewOutcome {
    Justified,
    NotJustified,
}

/// An access opened by breaking the glass.
#[derive(SimpleObject, Clone, Debug)]
pub struct BreakGlassGrant {
    pub grant_id: Uuid,
    pub patient_id: Uuid,
    pub reason: BreakGlassReason,
    /// The record can be read in full until then; every read is recorded as break-glass.
    pub expires_at: DateTime<Utc>,
}

impl From<uc::BreakGlassGrant> for BreakGlassGrant {
    fn from(g: uc::BreakGlassGrant) -> Self {
        Self {
            grant_id: g.grant_id,
            patient_id: g.patient_id,
            reason: g.reason.into(),
            expires_at: g.expires_at,
        }
    }
}

/// A break-glass access with its review, as the privacy officer's queue shows it.
#[derive(SimpleObject, Clone, Debug)]
pub struct BreakGlassAccess {
    pub grant_id: Uuid,
    pub patient_id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub role: String,
    pub reason: BreakGlassReason,
    pub note: String,
    pub opened_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Null until reviewed.
    pub outcome: Option<ReviewOutcome>,
    pub review_note: Option<String>,
    pub reviewer_username: Option<String>,
    pub reviewed_at: Option<DateTime<Utc>>,
}

impl TryFrom<BreakGlassRow> for BreakGlassAccess {
    type Error = ApiError;

    fn try_from(r: BreakGlassRow) -> Result<Self> {
        Ok(Self {
            grant_id: r.grant_id,
            patient_id: r.patient_id,
            user_id: r.user_id,
            username: r.username,
            role: r.role,
            reason: stored::<domain::BreakGlassReason>(&r.reason)?.into(),
            note: r.note,
            opened_at: r.opened_at,
            expires_at: r.expires_at,
            outcome: r
                .outcome
                .as_deref()
                .map(stored::<domain::ReviewOutcome>)
                .transpose()?
                .map(Into::into),
            review_note: r.review_note,
            reviewer_username: r.reviewer_username,
            reviewed_at: r.reviewed_at,
        })
    }
}

#[derive(InputObject)]
pub struct RestrictPatientRecordInput {
    pub patient_id: Uuid,
    /// True restricts the record (or changes who is named); false lifts the restriction.
    pub restricted: bool,
    pub reason: String,
    /// Staff who read the record in full besides its care team.
    #[graphql(default)]
    pub named_users: Vec<Uuid>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct BreakGlassInput {
    pub patient_id: Uuid,
    pub reason: BreakGlassReason,
    /// What happened, in your words: required.
    pub note: String,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct ReviewBreakGlassInput {
    pub grant_id: Uuid,
    pub outcome: ReviewOutcome,
    /// Required when not justified.
    pub note: Option<String>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct ErasePatientInput {
    pub patient_id: Uuid,
    /// What the erasure rests on.
    pub legal_basis: String,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct ApprovePatientErasureInput {
    pub patient_id: Uuid,
    pub idempotency_key: Option<String>,
}
