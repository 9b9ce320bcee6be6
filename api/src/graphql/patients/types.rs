//! The GraphQL shapes of patients: enums mirroring the domain's, the record as clients
//! see it, and the mutation inputs with their conversions into the use cases' inputs.

use async_graphql::{Enum, InputObject, MaybeUndefined, SimpleObject};
use chrono::{DateTime, NaiveDate, Utc};
use hms_app::usecases::patients::{self as uc, Parsed, Patch, PatientChange};
use hms_app::AppError;
use hms_domain::common::Address;
use uuid::Uuid;

use crate::graphql::error::ApiError;
use crate::graphql::types::{AddressInput, AddressOut};

// ---------------------------------------------------------------------------------
// Output types

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    remote = "hms_domain::patient::Sex",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum Sex {
    Male,
    Female,
    Intersex,
    Unknown,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(
    remote = "hms_domain::patient::BloodType",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum BloodType {
    APositive,
    ANegative,
    BPositive,
    BNegative,
    AbPositive,
    AbNegative,
    OPositive,
    ONegative,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(
    remote = "hms_domain::patient::AllergySeverity",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum AllergySeverity {
    Mild,
    Moderate,
    Severe,
    LifeThreatening,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(
    remote = "hms_app::usecases::patients::PatientRecordStatus",
    rename_items = "SCREAMING_SNAKE_CASE"
)]
pub enum PatientStatus {
    Active,
    Inactive,
    Deceased,
    /// A duplicate merged into another record (see `mergedInto`); read-only.
    Merged,
}

#[derive(SimpleObject, Clone)]
pub struct EmergencyContact {
    pub name: String,
    pub relationship: String,
    pub phone: String,
}

#[derive(SimpleObject, Clone)]
pub struct Allergy {
    pub substance: String,
    pub reaction: Option<String>,
    pub severity: AllergySeverity,
}

/// A clinical alert shown whenever the record is opened ("fall risk", "DNR").
#[derive(SimpleObject, Clone)]
pub struct PatientAlert {
    pub id: Uuid,
    pub text: String,
}

/// A patient as the register shows it now. Contact details and clinical fields are shown
/// to the roles the disclosure rules allow (README, "Who may do and see what"); to others
/// those fields are null with a FORBIDDEN error.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct Patient {
    pub id: Uuid,
    /// Medical record number, e.g. `DMC001-000123`.
    pub mrn: String,
    pub given_name: Option<String>,
    pub middle_name: Option<String>,
    pub family_name: String,
    /// Given, middle and family names in that order.
    pub full_name: String,
    pub date_of_birth: NaiveDate,
    pub sex: Sex,
    #[graphql(skip)]
    pub phone: Option<String>,
    #[graphql(skip)]
    pub email: Option<String>,
    #[graphql(skip)]
    pub address: Option<AddressOut>,
    #[graphql(skip)]
    pub emergency_contact: Option<EmergencyContact>,
    #[graphql(skip)]
    pub blood_type: Option<BloodType>,
    #[graphql(skip)]
    pub allergies: Vec<Allergy>,
    #[graphql(skip)]
    pub alerts: Vec<PatientAlert>,
    pub status: PatientStatus,
    /// The surviving record, when this one is a merged duplicate.
    pub merged_into: Option<Uuid>,
    pub died_at: Option<DateTime<Utc>>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The record's version, for `expectedVersion`.
    pub version: i64,
    /// Whether the record is restricted to its care team (and staff named on it). Others
    /// see only the patient's identity: the other fields are null with FORBIDDEN
    /// (`restricted: true`) until they break the glass.
    pub restricted: bool,
    /// Whether the patient's personal data was erased: names read `[erased]`, contact
    /// details are null; that a record existed, its events' types and times remain.
    pub erased: bool,
    #[graphql(skip)]
    pub withheld: bool,
}

impl From<uc::PatientRecord> for Patient {
    fn from(p: uc::PatientRecord) -> Self {
        let full_name = p.full_name();
        let d = p.demographics;
        Self {
            restricted: p.restricted,
            erased: p.erased,
            withheld: p.withheld,
            id: p.id,
            mrn: p.mrn,
            given_name: d.given_name.map(|n| n.to_string()),
            middle_name: d.middle_name.map(|n| n.to_string()),
            family_name: d.family_name.to_string(),
            full_name,
            date_of_birth: d.date_of_birth,
            sex: d.sex.into(),
            phone: d.phone.map(|p| p.as_str().to_owned()),
            email: d.email.map(|e| e.as_str().to_owned()),
            address: d.address.as_ref().map(AddressOut::from),
            emergency_contact: d.emergency_contact.map(|c| EmergencyContact {
                name: c.name.to_string(),
                relationship: c.relationship.to_string(),
                phone: c.phone.as_str().to_owned(),
            }),
            blood_type: d.blood_type.map(Into::into),
            allergies: p
                .allergies
                .into_iter()
                .map(|a| Allergy {
                    substance: a.substance.to_string(),
                    reaction: a.reaction.map(|r| r.to_string()),
                    severity: a.severity.into(),
                })
                .collect(),
            alerts: p
                .alerts
                .into_iter()
                .map(|a| PatientAlert {
                    id: a.alert_id,
                    text: a.text.to_string(),
                })
                .collect(),
            status: p.status.into(),
            merged_into: p.merged_into,
            died_at: p.died_at,
            registered_at: p.registered_at,
            updated_at: p.updated_at,
            version: p.version,
        }
    }
}

// ---------------------------------------------------------------------------------
// Inputs

#[derive(InputObject, Clone)]
pub struct EmergencyContactInput {
    pub name: String,
    pub relationship: String,
    pub phone: String,
}

impl From<EmergencyContactInput> for uc::EmergencyContactFields {
    fn from(c: EmergencyContactInput) -> Self {
        Self {
            name: c.name,
            relationship: c.relationship,
            phone: c.phone,
        }
    }
}

#[derive(InputObject, Clone)]
pub struct AllergyInput {
    pub substance: String,
    pub reaction: Option<String>,
    pub severity: AllergySeverity,
}

impl From<AllergyInput> for uc::AllergyFields {
    fn from(a: AllergyInput) -> Self {
        Self {
            substance: a.substance,
            reaction: a.reaction,
            severity: a.severity.into(),
        }
    }
}

/// The address read with the rules every area shares; its error, if any, is reported by
/// the use case in field order.
fn address(input: &AddressInput) -> Parsed<Address> {
    Parsed(input.parse().map_err(|e| match e {
        ApiError::Validation { field, message } => AppError::Validation { field, message },
        other => AppError::internal(format!("reading an address failed: {}", other.code())),
    }))
}

/// `value` as a change to an optional field: undefined keeps, null clears, a value
/// replaces.
fn patch<T, U>(value: MaybeUndefined<T>, f: impl FnOnce(T) -> U) -> Patch<U> {
    match value {
        MaybeUndefined::Undefined => Patch::Keep,
        MaybeUndefined::Null => Patch::Clear,
        MaybeUndefined::Value(v) => Patch::Set(f(v)),
    }
}

#[derive(InputObject)]
pub struct RegisterPatientInput {
    /// Leave out for people with a single name.
    pub given_name: Option<String>,
    pub middle_name: Option<String>,
    pub family_name: String,
    pub date_of_birth: NaiveDate,
    pub sex: Sex,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub address: Option<AddressInput>,
    pub emergency_contact: Option<EmergencyContactInput>,
    pub blood_type: Option<BloodType>,
    #[graphql(default)]
    pub allergies: Vec<AllergyInput>,
    /// A retry with the same key registers nothing new and returns the first answer.
    pub idempotency_key: Option<String>,
}

impl From<RegisterPatientInput> for uc::NewPatient {
    fn from(i: RegisterPatientInput) -> Self {
        Self {
            given_name: i.given_name,
            middle_name: i.middle_name,
            family_name: i.family_name,
            date_of_birth: i.date_of_birth,
            sex: i.sex.into(),
            phone: i.phone,
            email: i.email,
            address: i.address.as_ref().map(address),
            emergency_contact: i.emergency_contact.map(Into::into),
            blood_type: i.blood_type.map(Into::into),
            allergies: i.allergies.into_iter().map(Into::into).collect(),
            idempotency_key: i.idempotency_key,
        }
    }
}

/// Changes to a patient's demographics. Fields left out stay as they are; a nullable
/// field set to `null` is cleared.
#[derive(InputObject)]
pub struct UpdatePatientInput {
    pub id: Uuid,
    pub given_name: MaybeUndefined<String>,
    pub middle_name: MaybeUndefined<String>,
    pub family_name: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub sex: Option<Sex>,
    pub phone: MaybeUndefined<String>,
    pub email: MaybeUndefined<String>,
    pub address: MaybeUndefined<AddressInput>,
    pub emergency_contact: MaybeUndefined<EmergencyContactInput>,
    pub blood_type: MaybeUndefined<BloodType>,
    /// The version last seen; a stale one is a CONFLICT.
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

impl From<UpdatePatientInput> for uc::PatientChanges {
    fn from(i: UpdatePatientInput) -> Self {
        Self {
            id: i.id,
            given_name: patch(i.given_name, |v| v),
            middle_name: patch(i.middle_name, |v| v),
            family_name: i.family_name,
            date_of_birth: i.date_of_birth,
            sex: i.sex.map(Into::into),
            phone: patch(i.phone, |v| v),
            email: patch(i.email, |v| v),
            address: patch(i.address, |a| address(&a)),
            emergency_contact: patch(i.emergency_contact, Into::into),
            blood_type: patch(i.blood_type, Into::into),
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}

#[derive(InputObject)]
pub struct RecordAllergyInput {
    pub patient_id: Uuid,
    pub allergy: AllergyInput,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

impl From<RecordAllergyInput> for PatientChange<uc::AllergyFields> {
    fn from(i: RecordAllergyInput) -> Self {
        Self {
            patient_id: i.patient_id,
            change: i.allergy.into(),
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}

#[derive(InputObject)]
pub struct RemoveAllergyInput {
    pub patient_id: Uuid,
    /// Matched ignoring case.
    pub substance: String,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

impl From<RemoveAllergyInput> for PatientChange<String> {
    fn from(i: RemoveAllergyInput) -> Self {
        Self {
            patient_id: i.patient_id,
            change: i.substance,
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}

#[derive(InputObject)]
pub struct AddPatientAlertInput {
    pub patient_id: Uuid,
    pub text: String,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

impl From<AddPatientAlertInput> for PatientChange<String> {
    fn from(i: AddPatientAlertInput) -> Self {
        Self {
            patient_id: i.patient_id,
            change: i.text,
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}

#[derive(InputObject)]
pub struct ResolvePatientAlertInput {
    pub patient_id: Uuid,
    pub alert_id: Uuid,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

impl From<ResolvePatientAlertInput> for PatientChange<Uuid> {
    fn from(i: ResolvePatientAlertInput) -> Self {
        Self {
            patient_id: i.patient_id,
            change: i.alert_id,
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}

#[derive(InputObject)]
pub struct MarkPatientDeceasedInput {
    pub patient_id: Uuid,
    /// Not in the future, not before the date of birth.
    pub died_at: DateTime<Utc>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

impl From<MarkPatientDeceasedInput> for PatientChange<DateTime<Utc>> {
    fn from(i: MarkPatientDeceasedInput) -> Self {
        Self {
            patient_id: i.patient_id,
            change: i.died_at,
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}

#[derive(InputObject)]
pub struct DeactivatePatientInput {
    pub patient_id: Uuid,
    pub reason: String,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

impl From<DeactivatePatientInput> for PatientChange<String> {
    fn from(i: DeactivatePatientInput) -> Self {
        Self {
            patient_id: i.patient_id,
            change: i.reason,
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}

#[derive(InputObject)]
pub struct ReactivatePatientInput {
    pub patient_id: Uuid,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

impl From<ReactivatePatientInput> for PatientChange<()> {
    fn from(i: ReactivatePatientInput) -> Self {
        Self {
            patient_id: i.patient_id,
            change: (),
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}

#[derive(InputObject)]
pub struct MergePatientsInput {
    /// The duplicate record; it becomes read-only and points to the survivor.
    pub duplicate_id: Uuid,
    /// The record that lives on; it must be active.
    pub survivor_id: Uuid,
    /// The duplicate's version last seen.
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

impl From<MergePatientsInput> for uc::MergePatients {
    fn from(i: MergePatientsInput) -> Self {
        Self {
            duplicate_id: i.duplicate_id,
            survivor_id: i.survivor_id,
            expected_version: i.expected_version,
            idempotency_key: i.idempotency_key,
        }
    }
}
