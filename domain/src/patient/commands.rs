//! The commands of the patient aggregate and the permission each one needs.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Allergy, Demographics, Mrn};
use crate::common::{Actor, BoundedText, HospitalCode};
use crate::permissions::Operation;

#[derive(Debug, Clone, PartialEq)]
pub enum PatientCommand {
    RegisterPatient {
        actor: Actor,
        patient_id: Uuid,
        /// Formatted by the caller from the tenant's sequence ([`Mrn::new`]).
        mrn: Mrn,
        /// The tenant's hospital; the MRN must have been issued by it.
        hospital: HospitalCode,
        demographics: Demographics,
        allergies: Vec<Allergy>,
        now: DateTime<Utc>,
    },
    UpdateDemographics {
        actor: Actor,
        demographics: Demographics,
        now: DateTime<Utc>,
    },
    RecordAllergy {
        actor: Actor,
        allergy: Allergy,
        now: DateTime<Utc>,
    },
    RemoveAllergy {
        actor: Actor,
        substance: BoundedText,
        now: DateTime<Utc>,
    },
    AddAlert {
        actor: Actor,
        alert_id: Uuid,
        text: BoundedText,
        now: DateTime<Utc>,
    },
    ResolveAlert {
        actor: Actor,
        alert_id: Uuid,
        now: DateTime<Utc>,
    },
    /// The alert a critical lab result raises, by the technician who entered it; the
    /// care team resolves it like any alert. Raising the same alert again changes nothing.
    RaiseCriticalResultAlert {
        actor: Actor,
        alert_id: Uuid,
        text: BoundedText,
        now: DateTime<Utc>,
    },
    MarkDeceased {
        actor: Actor,
        died_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    DeactivatePatient {
        actor: Actor,
        reason: BoundedText,
        now: DateTime<Utc>,
    },
    ReactivatePatient {
        actor: Actor,
        now: DateTime<Utc>,
    },
    /// Restricts the record (or changes who is named on it): only its care team and the
    /// named staff read it in full; anyone else must break the glass.
    Restrict {
        actor: Actor,
        reason: BoundedText,
        /// Staff who read the record in full besides its care team.
        named_users: Vec<Uuid>,
        now: DateTime<Utc>,
    },
    Unrestrict {
        actor: Actor,
        reason: BoundedText,
        now: DateTime<Utc>,
    },
    /// The first administrator asks for the patient's personal data to be erased.
    RequestErasure {
        actor: Actor,
        legal_basis: BoundedText,
        now: DateTime<Utc>,
    },
    /// A second administrator approves; refused until `retention_ends` (the last contact
    /// plus the hospital's retention period), looked up by the caller.
    ApproveErasure {
        actor: Actor,
        retention_ends: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    /// Sent to the duplicate. `survivor_active` is looked up by the caller.
    MergeInto {
        actor: Actor,
        survivor_id: Uuid,
        survivor_mrn: Mrn,
        survivor_active: bool,
        now: DateTime<Utc>,
    },
    /// Sent to the survivor after [`PatientCommand::MergeInto`] succeeded.
    AbsorbDuplicate {
        actor: Actor,
        duplicate_id: Uuid,
        duplicate_mrn: Mrn,
        now: DateTime<Utc>,
    },
}

impl PatientCommand {
    pub fn actor(&self) -> &Actor {
        use PatientCommand as C;
        match self {
            C::RegisterPatient { actor, .. }
            | C::UpdateDemographics { actor, .. }
            | C::RecordAllergy { actor, .. }
            | C::RemoveAllergy { actor, .. }
            | C::AddAlert { actor, .. }
            | C::ResolveAlert { actor, .. }
            | C::RaiseCriticalResultAlert { actor, .. }
            | C::Restrict { actor, .. }
            | C::Unrestrict { actor, .. }
            | C::RequestErasure { actor, .. }
            | C::ApproveErasure { actor, .. }
            | C::MarkDeceased { actor, .. }
            | C::DeactivatePatient { actor, .. }
            | C::ReactivatePatient { actor, .. }
            | C::MergeInto { actor, .. }
            | C::AbsorbDuplicate { actor, .. } => actor,
        }
    }

    pub fn operation(&self) -> Operation {
        use PatientCommand as C;
        match self {
            C::RegisterPatient { .. } => Operation::RegisterPatient,
            C::UpdateDemographics { .. } => Operation::UpdatePatient,
            C::RecordAllergy { .. } | C::RemoveAllergy { .. } => Operation::ManageAllergies,
            C::AddAlert { .. } | C::ResolveAlert { .. } => Operation::ManagePatientAlerts,
            C::RaiseCriticalResultAlert { .. } => Operation::EnterLabResults,
            C::Restrict { .. } | C::Unrestrict { .. } => Operation::RestrictPatientRecord,
            C::RequestErasure { .. } | C::ApproveErasure { .. } => Operation::ErasePatient,
            C::MarkDeceased { .. } => Operation::MarkPatientDeceased,
            C::DeactivatePatient { .. } | C::ReactivatePatient { .. } => {
                Operation::DeactivatePatient
            }
            C::MergeInto { .. } | C::AbsorbDuplicate { .. } => Operation::MergePatients,
        }
    }
}
