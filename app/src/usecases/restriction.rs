//! Who may read a restricted patient record at this moment: the decision every read of
//! patient information asks for ([`access_to`]). The rules are set out in
//! [`super::privacy`]; here they are read: the restriction and the break-glass grant from
//! the write side (the patient's stream, the grant's stream), the care team from the
//! appointment and lab read models, which every command waits for before it answers.

use chrono::{DateTime, Duration, Utc};
use hms_domain::break_glass::{self as bg, BreakGlass, BreakGlassReason};
use hms_domain::common::Role;
use hms_domain::patient::Patient;
use uuid::Uuid;

use super::stored_name;
use crate::error::{AppError, Result};
use crate::scope::{Authorized, HospitalScope};

/// How the caller may read one patient's record at this moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordAccess {
    /// The record is not restricted.
    Open,
    /// Restricted; the caller is on its care team or named on it.
    CareTeam,
    /// Restricted; the caller broke the glass and the grant is open.
    BreakGlass(BreakGlassReason),
    /// Restricted; only the patient's identity.
    Denied,
}

impl RecordAccess {
    pub fn full(self) -> bool {
        !matches!(self, RecordAccess::Denied)
    }

    /// The access-log purpose of a read made under this access: a read under break-glass
    /// says so, with its reason (`break-glass:EMERGENCY_TREATMENT:patient`).
    pub fn purpose(self, purpose: &str) -> String {
        match self {
            RecordAccess::BreakGlass(reason) => format!(
                "break-glass:{}:{purpose}",
                stored_name(&reason).unwrap_or_default()
            ),
            _ => purpose.to_owned(),
        }
    }

    /// [`Self::full`] as a `Result`: FORBIDDEN (restricted) when denied.
    pub fn require_full(self) -> Result<Self> {
        if self.full() {
            Ok(self)
        } else {
            Err(AppError::Restricted)
        }
    }
}

/// How the caller may read patient `patient_id`'s record now. NOT_FOUND for a patient
/// this hospital does not have.
pub async fn access_to(
    scope: &HospitalScope<'_>,
    patient_id: Uuid,
    now: DateTime<Utc>,
) -> Result<RecordAccess> {
    let (patient, _) = crate::commands::load::<Patient>(scope.pool(), &patient_id.to_string())
        .await
        .map_err(crate::error::load_error)?;
    if patient.status.is_none() {
        return Err(AppError::NotFound);
    }
    let Some(restriction) = patient.restriction else {
        return Ok(RecordAccess::Open);
    };
    let actor = scope.actor();
    if restriction.named_users.contains(&actor.user_id) {
        return Ok(RecordAccess::CareTeam);
    }
    if on_care_team(scope, patient_id, actor.user_id, actor.role, now).await? {
        return Ok(RecordAccess::CareTeam);
    }
    let stream = bg::stream_id(actor.user_id, patient_id);
    let (grants, _) = crate::commands::load::<BreakGlass>(scope.pool(), &stream)
        .await
        .map_err(crate::error::load_error)?;
    Ok(match grants.open_at(now) {
        Some(grant) => RecordAccess::BreakGlass(grant.reason),
        None => RecordAccess::Denied,
    })
}

/// Whether the user has a relation of care with the patient within the window.
async fn on_care_team(
    scope: &HospitalScope<'_>,
    patient_id: Uuid,
    user_id: Uuid,
    role: Role,
    now: DateTime<Utc>,
) -> Result<bool> {
    if !matches!(role, Role::Doctor | Role::Nurse | Role::LabTechnician) {
        return Ok(false);
    }
    let (hospital, _) = scope.hospital().await?;
    let window = Duration::days(i64::from(hospital.settings.privacy.care_team_window_days));
    let (from, to) = (now - window, now + window);
    let sql = match role {
        Role::Doctor => {
            "SELECT EXISTS (SELECT 1 FROM appointments WHERE patient_id = $1 AND doctor_id = $2 \
                              AND status NOT IN ('CANCELLED', 'NO_SHOW') \
                              AND start_at BETWEEN $3 AND $4) \
                 OR EXISTS (SELECT 1 FROM lab_orders WHERE patient_id = $1 AND ordered_by = $2 \
                              AND ordered_at BETWEEN $3 AND $4)"
        }
        Role::Nurse => {
            "SELECT EXISTS (SELECT 1 FROM lab_specimens s JOIN lab_orders o ON o.id = s.order_id \
                             WHERE o.patient_id = $1 AND s.collected_by = $2 \
                               AND s.collected_at BETWEEN $3 AND $4) \
                 OR EXISTS (SELECT 1 FROM appointments a JOIN staff u ON u.id = $2 \
                             WHERE a.patient_id = $1 AND a.department_id = u.department_id \
                               AND a.status NOT IN ('CANCELLED', 'NO_SHOW') \
                               AND a.start_at BETWEEN $3 AND $4)"
        }
        _ => {
            "SELECT $2::uuid IS NOT NULL AND EXISTS (SELECT 1 FROM lab_orders \
                             WHERE patient_id = $1 AND ordered_at BETWEEN $3 AND $4)"
        }
    };
    Ok(sqlx::query_scalar(sql)
        .bind(patient_id)
        .bind(user_id)
        .bind(from)
        .bind(to)
        .fetch_one(scope.pool())
        .await?)
}

/// [`access_to`] for a read that needs the whole record: FORBIDDEN (restricted) unless
/// the caller may read it in full.
pub async fn require_full_access(auth: &Authorized<'_>, patient_id: Uuid) -> Result<RecordAccess> {
    access_to(&auth.scope, patient_id, auth.now)
        .await?
        .require_full()
}

/// How the caller may read each restricted record among `patients` (shown together: a
/// list, an order's details). Records that are not restricted are not in the answer:
/// the read model's flag (kept in step by every command) spares them the write-side
/// decision, which [`access_to`] makes for the restricted ones.
pub async fn restricted_accesses(
    scope: &HospitalScope<'_>,
    patients: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, RecordAccess)>> {
    if patients.is_empty() {
        return Ok(Vec::new());
    }
    let restricted: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM patients WHERE id = ANY($1) AND restricted")
            .bind(patients)
            .fetch_all(scope.pool())
            .await?;
    let mut found = Vec::with_capacity(restricted.len());
    for patient in restricted {
        found.push((patient, access_to(scope, patient, now).await?));
    }
    Ok(found)
}

/// Of `patients`, those the caller may not read in full now.
pub async fn denied_among(auth: &Authorized<'_>, patients: &[Uuid]) -> Result<Vec<Uuid>> {
    Ok(restricted_accesses(&auth.scope, patients, auth.now)
        .await?
        .into_iter()
        .filter(|(_, access)| !access.full())
        .map(|(patient, _)| patient)
        .collect())
}

/// Records that a list showed `patients` for `purpose`: those read under break-glass
/// apart, with the break-glass purpose.
pub async fn record_list_viewed(
    auth: &Authorized<'_>,
    patients: impl IntoIterator<Item = Uuid>,
    purpose: &str,
) -> Result<()> {
    let patients: Vec<Uuid> = patients.into_iter().collect();
    let glass: Vec<(Uuid, RecordAccess)> = restricted_accesses(&auth.scope, &patients, auth.now)
        .await?
        .into_iter()
        .filter(|(_, access)| matches!(access, RecordAccess::BreakGlass(_)))
        .collect();
    let plain = patients
        .iter()
        .copied()
        .filter(|p| !glass.iter().any(|(g, _)| g == p));
    super::patients::record_patients_viewed(auth, plain, purpose).await?;
    for (patient, access) in glass {
        super::patients::record_patients_viewed(auth, [patient], &access.purpose(purpose)).await?;
    }
    Ok(())
}
