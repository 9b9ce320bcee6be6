//! The events of the patient aggregate, with their persisted names and versions, and the
//! upcasters that read older versions of them.

use chrono::{DateTime, Utc};
use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{Alert, Allergy, Demographics, Mrn};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PatientEvent {
    /// Version 2.0 (see the module docs and [`upcasters`]).
    PatientRegistered {
        patient_id: Uuid,
        mrn: Mrn,
        demographics: Demographics,
        allergies: Vec<Allergy>,
        alerts: Vec<Alert>,
        registered_at: DateTime<Utc>,
    },
    PatientDemographicsUpdated {
        demographics: Demographics,
        at: DateTime<Utc>,
    },
    AllergyRecorded {
        allergy: Allergy,
        at: DateTime<Utc>,
    },
    AllergyRemoved {
        substance: String,
        at: DateTime<Utc>,
    },
    AlertAdded {
        alert: Alert,
        at: DateTime<Utc>,
    },
    AlertResolved {
        alert_id: Uuid,
        at: DateTime<Utc>,
    },
    PatientDeceased {
        died_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    PatientDeactivated {
        reason: String,
        at: DateTime<Utc>,
    },
    PatientReactivated {
        at: DateTime<Utc>,
    },
    RecordRestricted {
        reason: String,
        named_users: Vec<Uuid>,
        at: DateTime<Utc>,
    },
    RecordUnrestricted {
        reason: String,
        at: DateTime<Utc>,
    },
    ErasureRequested {
        legal_basis: String,
        requested_by: Uuid,
        at: DateTime<Utc>,
    },
    /// The patient's personal data is erased: their key is destroyed right after, and
    /// every sealed value of theirs reads as erased from then on.
    PatientErased {
        legal_basis: String,
        requested_by: Uuid,
        approved_by: Uuid,
        /// Duplicates merged into this record: erased with it (their keys too).
        #[serde(default)]
        duplicates: Vec<Uuid>,
        at: DateTime<Utc>,
    },
    PatientMergedInto {
        survivor_id: Uuid,
        survivor_mrn: Mrn,
        at: DateTime<Utc>,
    },
    DuplicateAbsorbed {
        duplicate_id: Uuid,
        duplicate_mrn: Mrn,
        at: DateTime<Utc>,
    },
}

pub const PATIENT_REGISTERED: &str = "PatientRegistered";

impl DomainEvent for PatientEvent {
    fn event_type(&self) -> String {
        use PatientEvent as E;
        match self {
            E::PatientRegistered { .. } => PATIENT_REGISTERED,
            E::PatientDemographicsUpdated { .. } => "PatientDemographicsUpdated",
            E::AllergyRecorded { .. } => "AllergyRecorded",
            E::AllergyRemoved { .. } => "AllergyRemoved",
            E::AlertAdded { .. } => "AlertAdded",
            E::AlertResolved { .. } => "AlertResolved",
            E::RecordRestricted { .. } => "RecordRestricted",
            E::RecordUnrestricted { .. } => "RecordUnrestricted",
            E::ErasureRequested { .. } => "ErasureRequested",
            E::PatientErased { .. } => "PatientErased",
            E::PatientDeceased { .. } => "PatientDeceased",
            E::PatientDeactivated { .. } => "PatientDeactivated",
            E::PatientReactivated { .. } => "PatientReactivated",
            E::PatientMergedInto { .. } => "PatientMergedInto",
            E::DuplicateAbsorbed { .. } => "DuplicateAbsorbed",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            PatientEvent::PatientRegistered { .. } => "2.0",
            _ => "1.0",
        }
        .to_owned()
    }
}

/// Split a v1 `full_name` into (given names, family name): the family name is the last
/// word; a single word is a family name alone.
fn split_full_name(full_name: &str) -> (Option<String>, String) {
    let trimmed = full_name.trim();
    match trimmed.rsplit_once(char::is_whitespace) {
        Some((given, family)) => (Some(given.trim().to_owned()), family.to_owned()),
        None => (None, trimmed.to_owned()),
    }
}

/// `PatientRegistered` 1.0 → 2.0 on the serialized payload (`{"PatientRegistered": {..}}`,
/// serde's external tagging). A payload of another shape passes through untouched and then
/// fails to decode loudly, which `hms-replay verify` reports.
fn upcast_patient_registered_v1(payload: Value) -> Value {
    let Value::Object(mut outer) = payload else {
        return payload;
    };
    let v1 = match outer.remove(PATIENT_REGISTERED) {
        Some(Value::Object(v1)) => v1,
        Some(other) => {
            outer.insert(PATIENT_REGISTERED.to_owned(), other);
            return Value::Object(outer);
        }
        None => return Value::Object(outer),
    };
    let mut v1: Map<String, Value> = v1;
    let full_name = v1
        .remove("full_name")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let (given_name, family_name) = split_full_name(&full_name);
    let sex = match v1.remove("sex").as_ref().and_then(Value::as_str) {
        Some("M") => "MALE",
        Some("F") => "FEMALE",
        _ => "UNKNOWN",
    };
    let demographics = json!({
        "given_name": given_name,
        "middle_name": null,
        "family_name": family_name,
        "date_of_birth": v1.remove("date_of_birth").unwrap_or(Value::Null),
        "sex": sex,
        "phone": v1.remove("phone").unwrap_or(Value::Null),
        "email": null,
        "address": null,
        "emergency_contact": null,
        "blood_type": null,
    });
    v1.insert("demographics".to_owned(), demographics);
    v1.insert("allergies".to_owned(), json!([]));
    v1.insert("alerts".to_owned(), json!([]));
    outer.insert(PATIENT_REGISTERED.to_owned(), Value::Object(v1));
    Value::Object(outer)
}

/// The upcasters of the patient aggregate's events.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![Box::new(SemanticVersionEventUpcaster::new(
        PATIENT_REGISTERED,
        "2.0",
        Box::new(upcast_patient_registered_v1),
    ))]
}
