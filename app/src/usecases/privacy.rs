//! Restricted records and break-glass access.
//!
//! A HOSPITAL_ADMIN (the hospital's privacy officer) restricts a patient's record, with a
//! reason, and may name staff who read it in full. A restricted record is then read in
//! full only by:
//! - its care team: a DOCTOR with an appointment with the patient, or who ordered a lab
//!   test for them; a NURSE who collected a specimen from them, or of the department of
//!   one of their appointments; a LAB_TECHNICIAN while the patient has a lab order — each
//!   within the hospital's care-team window (days before or after today);
//! - the staff named on the record;
//! - a clinician who broke the glass: stated a reason and got access for the hospital's
//!   break-glass duration, every read under it recorded as break-glass.
//!
//! Everyone else with the right to read patients sees that the record exists (the
//! patient's identity) and that it is restricted. Lists never show a restricted record
//! beyond the identity: its readers open the record itself.
//!
//! [`access_to`] (in [`super::restriction`]) decides at the moment of the read: the restriction and the break-glass
//! grant from the write side (the patient's and the grant's streams), the care team from
//! the appointment and lab read models, which every command waits for before it answers.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use hms_domain::break_glass::{
    self as bg, BreakGlass, BreakGlassCommand, BreakGlassReason, ReviewOutcome,
};
use hms_domain::common::BoundedText;
use hms_domain::patient::{Patient, PatientCommand};
use hms_domain::permissions::Operation;
use hms_domain::user::User;
use hms_projections::projectors::BreakGlassRow;
use serde::Serialize;
use uuid::Uuid;

use super::no_nul;
use super::patients::{record_patients_viewed, PatientRecord};
use super::restriction::{access_to, RecordAccess};
use crate::error::{AppError, Result};
use crate::page::{Keyset, Page, PageRequest};
use crate::scope::{Authorized, MutationOptions};

pub const MAX_REASON_CHARS: usize = 500;

// ---------------------------------------------------------------------------------
// Restricting a record

/// A restriction to set or lift, as entered.
#[derive(Debug, Clone, Serialize)]
pub struct RestrictPatientRecord {
    pub patient_id: Uuid,
    /// True restricts (or changes who is named); false lifts the restriction.
    pub restricted: bool,
    pub reason: String,
    /// Staff who read the record in full besides its care team.
    pub named_users: Vec<Uuid>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// Restricts a patient's record (or changes who is named on it), or lifts the
/// restriction. Named staff must be this hospital's.
pub async fn restrict_patient_record(
    auth: &Authorized<'_>,
    input: RestrictPatientRecord,
) -> Result<PatientRecord> {
    auth.require(Operation::RestrictPatientRecord)?;
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    no_nul("reason", &input.reason)?;
    let reason = BoundedText::parse("reason", &input.reason, MAX_REASON_CHARS)?;
    let command = if input.restricted {
        for user in &input.named_users {
            let (named, _) = auth.load::<User>(&user.to_string()).await?;
            if named.id.is_none() {
                return Err(AppError::validation(
                    "namedUsers",
                    format!("{user} is not a user of this hospital"),
                ));
            }
        }
        PatientCommand::Restrict {
            actor: auth.actor(),
            reason,
            named_users: input.named_users.clone(),
            now: auth.now,
        }
    } else {
        if !input.named_users.is_empty() {
            return Err(AppError::validation(
                "namedUsers",
                "name staff only when restricting",
            ));
        }
        PatientCommand::Unrestrict {
            actor: auth.actor(),
            reason,
            now: auth.now,
        }
    };
    let id = input.patient_id;
    auth.idempotent(&options, &input, || async {
        auth.execute::<Patient>(&id.to_string(), command, options.expected_version)
            .await?;
        Ok::<_, AppError>(id.to_string())
    })
    .await?;
    super::patients::patient_after_write(auth, id).await
}

// ---------------------------------------------------------------------------------
// Breaking the glass

/// A break-glass request, as entered.
#[derive(Debug, Clone, Serialize)]
pub struct BreakGlassRequest {
    pub patient_id: Uuid,
    pub reason: BreakGlassReason,
    /// What happened, in the clinician's words (always required).
    pub note: String,
    pub idempotency_key: Option<String>,
}

/// An access granted by breaking the glass.
#[derive(Debug, Clone)]
pub struct BreakGlassGrant {
    pub grant_id: Uuid,
    pub patient_id: Uuid,
    pub reason: BreakGlassReason,
    pub expires_at: DateTime<Utc>,
}

/// Opens a restricted record for the caller for the hospital's break-glass duration.
/// Refused for a record that is not restricted or that the caller may read already.
pub async fn break_glass(
    auth: &Authorized<'_>,
    input: BreakGlassRequest,
) -> Result<BreakGlassGrant> {
    auth.require(Operation::BreakGlass)?;
    let options = MutationOptions::new(None, input.idempotency_key.clone())?;
    no_nul("note", &input.note)?;
    let note = BoundedText::parse("note", &input.note, bg::MAX_BREAK_GLASS_NOTE_CHARS)?;
    match access_to(&auth.scope, input.patient_id, auth.now).await? {
        RecordAccess::Denied => {}
        RecordAccess::Open => {
            return Err(AppError::Conflict(
                "the record is not restricted; there is no glass to break".into(),
            ))
        }
        RecordAccess::CareTeam => {
            return Err(AppError::Conflict(
                "you are on the record's care team or named on it; read it directly".into(),
            ))
        }
        RecordAccess::BreakGlass(_) => {
            return Err(AppError::Conflict(
                "you hold an open break-glass access to this record".into(),
            ))
        }
    }
    let actor = auth.actor();
    let stream = bg::stream_id(actor.user_id, input.patient_id);
    let minutes = u32::from(auth.hospital.settings.privacy.break_glass_minutes);
    let grant_id = auth
        .idempotent_id(&options, &input, || async {
            let grant_id = auth.new_id(&options);
            let command = BreakGlassCommand::Open {
                actor: auth.actor(),
                grant_id,
                patient_id: input.patient_id,
                reason: input.reason,
                note,
                minutes,
                now: auth.now,
            };
            auth.execute::<BreakGlass>(&stream, command, None).await?;
            Ok::<_, AppError>(grant_id)
        })
        .await?;
    let (grants, _) = auth.load::<BreakGlass>(&stream).await?;
    let grant = grants
        .grants
        .iter()
        .find(|g| g.grant_id == grant_id)
        .ok_or_else(|| AppError::internal("the break-glass grant is missing after its command"))?;
    Ok(BreakGlassGrant {
        grant_id,
        patient_id: input.patient_id,
        reason: grant.reason,
        expires_at: grant.expires_at,
    })
}

/// The review queue: break-glass accesses, oldest first; only the unreviewed ones unless
/// `include_reviewed`. The patients shown are recorded (the notes may describe them).
pub async fn break_glass_accesses(
    auth: &Authorized<'_>,
    include_reviewed: bool,
    patient_id: Option<Uuid>,
    page: &PageRequest,
) -> Result<Page<BreakGlassRow>> {
    auth.require(Operation::ReviewBreakGlass)?;
    let (after_at, after_id) = page.after_instant_and_id()?;
    let rows: Vec<BreakGlassRow> = sqlx::query_as(&format!(
        "SELECT {} FROM break_glass_accesses \
          WHERE ($1::timestamptz IS NULL OR (opened_at, grant_id) > ($1, $2::uuid)) \
            AND ($3 OR outcome IS NULL) \
            AND ($4::uuid IS NULL OR patient_id = $4) \
          ORDER BY opened_at, grant_id LIMIT $5",
        BreakGlassRow::COLUMNS
    ))
    .bind(after_at)
    .bind(after_id)
    .bind(include_reviewed)
    .bind(patient_id)
    .bind(page.fetch_limit())
    .fetch_all(auth.pool())
    .await?;
    let found = page.page(rows, |r| Keyset {
        key: r.opened_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        id: r.grant_id.to_string(),
    });
    record_patients_viewed(
        auth,
        found.items.iter().map(|(_, r)| r.patient_id),
        "break-glass review",
    )
    .await?;
    Ok(found)
}

/// A review, as entered.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewBreakGlass {
    pub grant_id: Uuid,
    pub outcome: ReviewOutcome,
    /// Required when not justified.
    pub note: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Records the privacy officer's finding on one break-glass access; final.
pub async fn review_break_glass(
    auth: &Authorized<'_>,
    input: ReviewBreakGlass,
) -> Result<BreakGlassRow> {
    auth.require(Operation::ReviewBreakGlass)?;
    let options = MutationOptions::new(None, input.idempotency_key.clone())?;
    let note = match input.note.as_deref() {
        Some(n) if !n.trim().is_empty() => {
            no_nul("note", n)?;
            Some(BoundedText::parse("note", n, MAX_REASON_CHARS)?)
        }
        _ => None,
    };
    let access = BreakGlassRow::find(auth.pool(), input.grant_id)
        .await?
        .ok_or(AppError::NotFound)?;
    let stream = bg::stream_id(access.user_id, access.patient_id);
    let command = BreakGlassCommand::Review {
        actor: auth.actor(),
        grant_id: input.grant_id,
        outcome: input.outcome,
        note,
        now: auth.now,
    };
    auth.idempotent(&options, &input, || async {
        auth.execute::<BreakGlass>(&stream, command, None).await?;
        Ok::<_, AppError>(input.grant_id.to_string())
    })
    .await?;
    BreakGlassRow::find(auth.pool(), input.grant_id)
        .await?
        .ok_or_else(|| AppError::internal("the reviewed access is missing"))
}

// ---------------------------------------------------------------------------------
// Erasure

/// An erasure asked for, as entered.
#[derive(Debug, Clone, Serialize)]
pub struct ErasePatient {
    pub patient_id: Uuid,
    /// The law or request it rests on (e.g. "GDPR art. 17 request of 2026-11-30").
    pub legal_basis: String,
    pub idempotency_key: Option<String>,
}

/// Asks for a patient's personal data to be erased; a second administrator approves it
/// ([`approve_patient_erasure`]).
pub async fn erase_patient(auth: &Authorized<'_>, input: ErasePatient) -> Result<PatientRecord> {
    auth.require(Operation::ErasePatient)?;
    let options = MutationOptions::new(None, input.idempotency_key.clone())?;
    no_nul("legalBasis", &input.legal_basis)?;
    let legal_basis = BoundedText::parse("legalBasis", &input.legal_basis, MAX_REASON_CHARS)?;
    let id = input.patient_id;
    let command = PatientCommand::RequestErasure {
        actor: auth.actor(),
        legal_basis,
        now: auth.now,
    };
    auth.idempotent(&options, &input, || async {
        auth.execute::<Patient>(&id.to_string(), command, None)
            .await?;
        Ok::<_, AppError>(id.to_string())
    })
    .await?;
    super::patients::patient_after_write(auth, id).await
}

/// An erasure to approve.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovePatientErasure {
    pub patient_id: Uuid,
    pub idempotency_key: Option<String>,
}

/// Approves an erasure asked for by another administrator, once the retention period
/// after the patient's last contact has passed: the erasure is recorded in the patient's
/// log, then the patient's key is destroyed. From then on every sealed value of theirs
/// reads as erased (read models, the audit trail, `patientAsOf`, exports, rebuilds); the
/// events and their seals stay as they were. Approving an erased record again destroys
/// the key if an earlier attempt stopped before it.
pub async fn approve_patient_erasure(
    auth: &Authorized<'_>,
    input: ApprovePatientErasure,
) -> Result<PatientRecord> {
    auth.require(Operation::ErasePatient)?;
    let options = MutationOptions::new(None, input.idempotency_key.clone())?;
    let id = input.patient_id;
    let (patient, _) = auth.load::<Patient>(&id.to_string()).await?;
    if patient.status.is_none() {
        return Err(AppError::NotFound);
    }
    // The record's key, and those of the duplicates merged into it.
    let owners: Vec<Uuid> = std::iter::once(id)
        .chain(patient.absorbed.iter().copied())
        .collect();
    let destroy = || async {
        let mut conn = auth.pool().acquire().await?;
        for owner in &owners {
            if hms_projections::personal::destroy_key(&mut conn, *owner).await? {
                tracing::info!(patient = %owner, "patient key destroyed: personal data erased");
            }
        }
        Ok::<_, AppError>(())
    };
    if patient.erased {
        // An earlier approval recorded the erasure: make sure the key is gone.
        destroy().await?;
    } else {
        let retention_ends = last_contact(auth, id).await?
            + Duration::days(i64::from(auth.hospital.settings.privacy.retention_days));
        let command = PatientCommand::ApproveErasure {
            actor: auth.actor(),
            retention_ends,
            now: auth.now,
        };
        // Decided on the record as it stands, then the key goes first: from that moment
        // nothing personal of the patient can be written or read, by any replica. Should
        // the erasure then fail to be recorded, approving again records it.
        patient.decide(command.clone()).map_err(|e| {
            use crate::error::DomainErrorCode;
            e.to_app_error()
        })?;
        destroy().await?;
        auth.idempotent(&options, &input, || async {
            auth.execute::<Patient>(&id.to_string(), command, None)
                .await?;
            Ok::<_, AppError>(id.to_string())
        })
        .await?;
    }
    super::patients::patient_after_write(auth, id).await
}

/// The patient's last contact with the hospital: the latest change to their own record
/// (registration, demographics, alerts), to one of their appointments (one still ahead
/// counts from its start: care goes on; a cancelled or missed one from its booking), lab
/// orders or invoices (payments included). Asking for the erasure is not a contact.
async fn last_contact(auth: &Authorized<'_>, patient_id: Uuid) -> Result<DateTime<Utc>> {
    let last: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT greatest( \
            (SELECT registered_at FROM patients WHERE id = $1), \
            (SELECT max(created_at) FROM appointments WHERE patient_id = $1), \
            (SELECT max(start_at) FROM appointments WHERE patient_id = $1 \
                AND status NOT IN ('CANCELLED', 'NO_SHOW')), \
            (SELECT max(updated_at) FROM appointments WHERE patient_id = $1 \
                AND status NOT IN ('CANCELLED', 'NO_SHOW')), \
            (SELECT max(updated_at) FROM lab_orders WHERE patient_id = $1), \
            (SELECT max(updated_at) FROM invoices WHERE patient_id = $1), \
            (SELECT max(recorded_at) FROM events WHERE aggregate_type = 'patient' \
                AND aggregate_id = $1::text \
                AND event_type NOT IN ('ErasureRequested', 'PatientErased')))",
    )
    .bind(patient_id)
    .fetch_one(auth.pool())
    .await?;
    Ok(last.unwrap_or(auth.now))
}
