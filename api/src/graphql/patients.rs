//! Patients: registration (the MRN comes from the tenant's `mrn_seq` sequence), demographics,
//! allergies and alerts, death, deactivation and merging of duplicates; search and the
//! record view.
//!
//! Opening a record (`patient(id)`, a patient's `history`) is itself recorded: a
//! `record_access` event is appended, and the read fails if it cannot be, before any data
//! is returned.

use async_graphql::{
    ComplexObject, Context, Enum, InputObject, MaybeUndefined, Object, SimpleObject,
};
use chrono::{DateTime, NaiveDate, Utc};
use hms_domain::access::{LimitedResource, PlanLimitReached};
use hms_domain::common::{BoundedText, Email, Phone};
use hms_domain::patient::{
    Allergy as DomainAllergy, Demographics, EmergencyContact as DomainEmergencyContact, Mrn,
    Patient as PatientAggregate, PatientCommand, PatientError, PatientStatus as DomainStatus,
    MAX_CLINICAL_TEXT_CHARS, MAX_PERSON_NAME_CHARS,
};
use hms_domain::permissions::Operation;
use hms_domain::record_access::{RecordAccess, RecordAccessCommand};
use hms_projections::projectors::search_key;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::error::{ApiError, Result};
use super::pagination::{page_request, Keyset, Page, PageRequest, PageRequestExt};
use super::session::{authorize, Authorized, DomainErrorCode, MutationOptions};
use super::types::check_filter_text;
use super::types::{AddressInput, AddressOut};

/// Longest accepted `search` string.
const MAX_SEARCH_CHARS: usize = 200;
/// Fewest digits a phone search needs (after dropping a leading trunk `0`).
const MIN_PHONE_SEARCH_DIGITS: usize = 4;

// ---------------------------------------------------------------------------------
// Output types

#[derive(Enum, Copy, Clone, Eq, PartialEq, Serialize)]
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

#[derive(Enum, Copy, Clone, Eq, PartialEq, Serialize)]
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

#[derive(Enum, Copy, Clone, Eq, PartialEq, Serialize)]
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
#[graphql(rename_items = "SCREAMING_SNAKE_CASE")]
pub enum PatientStatus {
    Active,
    Inactive,
    Deceased,
    /// A duplicate merged into another record (see `mergedInto`); read-only.
    Merged,
}

impl PatientStatus {
    fn from_stored(raw: &str) -> Result<Self, ApiError> {
        match raw {
            "ACTIVE" => Ok(Self::Active),
            "INACTIVE" => Ok(Self::Inactive),
            "DECEASED" => Ok(Self::Deceased),
            "MERGED" => Ok(Self::Merged),
            other => Err(ApiError::internal(format!(
                "unknown patient status {other:?} in the read model"
            ))),
        }
    }
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

/// A patient as the register shows it now.
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
    pub phone: Option<String>,
    pub email: Option<String>,
    pub address: Option<AddressOut>,
    pub emergency_contact: Option<EmergencyContact>,
    pub blood_type: Option<BloodType>,
    pub allergies: Vec<Allergy>,
    /// Open alerts.
    pub alerts: Vec<PatientAlert>,
    pub status: PatientStatus,
    /// The surviving record, when this one is a merged duplicate.
    pub merged_into: Option<Uuid>,
    pub died_at: Option<DateTime<Utc>>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The record's version, for `expectedVersion`.
    pub version: i64,
    #[graphql(skip)]
    family_key: String,
    #[graphql(skip)]
    given_key: String,
}

#[ComplexObject]
impl Patient {
    /// Every change to the record, from the event log (HOSPITAL_ADMIN). Reading it is
    /// recorded in the access log.
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<AuditEntry>> {
        let auth = authorize(ctx, Operation::ViewAuditTrail).await?;
        // A bad page request is refused before a view is recorded.
        page_request(first, after.clone())?;
        record_patient_view(&auth, self.id, "history").await?;
        audit::history(auth.pool(), "patient", &self.id.to_string(), first, after).await
    }
}

#[derive(sqlx::FromRow)]
struct PatientRow {
    id: Uuid,
    mrn: String,
    family_key: String,
    given_key: String,
    demographics: Value,
    allergies: Value,
    alerts: Value,
    status: String,
    merged_into: Option<Uuid>,
    died_at: Option<DateTime<Utc>>,
    registered_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
}

/// The read-model columns of [`PatientRow`].
const PATIENT_COLUMNS: &str =
    "p.id, p.mrn, p.family_key, p.given_key, p.demographics, p.allergies, \
     p.alerts, p.status, p.merged_into, p.died_at, p.registered_at, p.updated_at, p.version";

impl TryFrom<PatientRow> for Patient {
    type Error = ApiError;

    fn try_from(row: PatientRow) -> Result<Self, ApiError> {
        let d: Demographics =
            serde_json::from_value(row.demographics).map_err(ApiError::internal)?;
        let allergies: Vec<DomainAllergy> =
            serde_json::from_value(row.allergies).map_err(ApiError::internal)?;
        let alerts: Vec<hms_domain::patient::Alert> =
            serde_json::from_value(row.alerts).map_err(ApiError::internal)?;
        let given = d.given_name.as_ref().map(ToString::to_string);
        let middle = d.middle_name.as_ref().map(ToString::to_string);
        let full_name = [
            given.as_deref(),
            middle.as_deref(),
            Some(d.family_name.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        Ok(Self {
            id: row.id,
            mrn: row.mrn,
            given_name: given,
            middle_name: middle,
            family_name: d.family_name.to_string(),
            full_name,
            date_of_birth: d.date_of_birth,
            sex: d.sex.into(),
            phone: d.phone.as_ref().map(|p| p.as_str().to_owned()),
            email: d.email.as_ref().map(|e| e.as_str().to_owned()),
            address: d.address.as_ref().map(AddressOut::from),
            emergency_contact: d.emergency_contact.as_ref().map(|c| EmergencyContact {
                name: c.name.to_string(),
                relationship: c.relationship.to_string(),
                phone: c.phone.as_str().to_owned(),
            }),
            blood_type: d.blood_type.map(Into::into),
            allergies: allergies
                .into_iter()
                .map(|a| Allergy {
                    substance: a.substance.to_string(),
                    reaction: a.reaction.map(|r| r.to_string()),
                    severity: a.severity.into(),
                })
                .collect(),
            alerts: alerts
                .into_iter()
                .map(|a| PatientAlert {
                    id: a.alert_id,
                    text: a.text.to_string(),
                })
                .collect(),
            status: PatientStatus::from_stored(&row.status)?,
            merged_into: row.merged_into,
            died_at: row.died_at,
            registered_at: row.registered_at,
            updated_at: row.updated_at,
            version: row.version,
            family_key: row.family_key,
            given_key: row.given_key,
        })
    }
}

/// The patient `id` as the read model shows it, if it exists in this hospital.
pub(crate) async fn find_patient(pool: &PgPool, id: Uuid) -> Result<Option<Patient>, ApiError> {
    let row: Option<PatientRow> = sqlx::query_as(&format!(
        "SELECT {PATIENT_COLUMNS} FROM patients p WHERE p.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(ApiError::internal)?;
    row.map(Patient::try_from).transpose()
}

async fn load_patient(pool: &PgPool, id: Uuid) -> Result<Patient, ApiError> {
    find_patient(pool, id).await?.ok_or(ApiError::NotFound)
}

/// Records that the caller opened patient `patient_id`'s record, for `purpose` (e.g.
/// `patient`, `history`). Each view is a stream of its own, so views never contend. A
/// failure fails the read: an unrecorded view is never served.
pub(crate) async fn record_patient_view(
    auth: &Authorized<'_>,
    patient_id: Uuid,
    purpose: &str,
) -> Result<(), ApiError> {
    let command = RecordAccessCommand::RecordPatientView {
        actor: auth.actor(),
        patient_id,
        purpose: purpose.to_owned(),
        now: auth.now,
    };
    Ok(auth
        .execute::<RecordAccess>(&Uuid::new_v4().to_string(), command, None)
        .await?)
}

// ---------------------------------------------------------------------------------
// Search

/// What a `search` string asks for, decided from its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Search {
    All,
    Mrn(String),
    DateOfBirth(NaiveDate),
    /// The digits a stored phone number must end with.
    Phone(String),
    /// Normalized (search-key) words, each escaped for LIKE.
    Name(Vec<String>),
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn looks_like_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

fn classify(raw: Option<&str>) -> Result<Search, ApiError> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(Search::All);
    };
    check_filter_text("search", raw)?;
    if raw.chars().count() > MAX_SEARCH_CHARS {
        return Err(ApiError::validation(
            "search",
            format!("must be at most {MAX_SEARCH_CHARS} characters"),
        ));
    }
    if let Ok(mrn) = Mrn::parse(&raw.to_uppercase()) {
        return Ok(Search::Mrn(mrn.as_str().to_owned()));
    }
    if looks_like_date(raw) {
        return NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .map(Search::DateOfBirth)
            .map_err(|_| ApiError::validation("search", "is not a valid date (YYYY-MM-DD)"));
    }
    let phone_like = raw
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')'));
    if phone_like && raw.chars().any(|c| c.is_ascii_digit()) {
        let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
        // A national number's trunk prefix (0712…) is not part of the stored +254712….
        let digits = digits.trim_start_matches('0').to_owned();
        if digits.len() < MIN_PHONE_SEARCH_DIGITS {
            return Err(ApiError::validation(
                "search",
                format!("a phone search needs at least {MIN_PHONE_SEARCH_DIGITS} digits"),
            ));
        }
        return Ok(Search::Phone(digits));
    }
    let words: Vec<String> = raw
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .map(|w| escape_like(&search_key(w)))
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        return Ok(Search::All);
    }
    Ok(Search::Name(words))
}

fn patient_keyset(p: &Patient) -> Keyset {
    Keyset {
        key: serde_json::to_string(&[&p.family_key, &p.given_key]).unwrap_or_default(),
        id: p.id.to_string(),
    }
}

fn decode_keyset(keyset: &Keyset) -> Result<(String, String, Uuid), ApiError> {
    let bad = || ApiError::validation("after", "is not a cursor from this API");
    let [family, given]: [String; 2] = serde_json::from_str(&keyset.key).map_err(|_| bad())?;
    let id = Uuid::parse_str(&keyset.id).map_err(|_| bad())?;
    Ok((family, given, id))
}

async fn search_patients(
    pool: &PgPool,
    search: &Search,
    page: &PageRequest,
) -> Result<Page<Patient>, ApiError> {
    let after = page.after.as_ref().map(decode_keyset).transpose()?;
    let (mrn, dob, phone, single, words) = match search {
        Search::All => (None, None, None, None, None),
        Search::Mrn(m) => (Some(m.clone()), None, None, None, None),
        Search::DateOfBirth(d) => (None, Some(*d), None, None, None),
        Search::Phone(p) => (None, None, Some(p.clone()), None, None),
        Search::Name(w) if w.len() == 1 => (None, None, None, w.first().cloned(), None),
        Search::Name(w) => (None, None, None, None, Some(w.clone())),
    };
    // Merged duplicates are found by their MRN only (a client holding an old MRN can
    // follow `mergedInto`); other searches show the records in use.
    let rows: Vec<PatientRow> = sqlx::query_as(&format!(
        "SELECT {PATIENT_COLUMNS} FROM patients p \
          WHERE ($1::text IS NULL OR p.mrn = $1) \
            AND ($2::date IS NULL OR p.date_of_birth = $2) \
            AND ($3::text IS NULL OR p.phone_digits LIKE '%' || $3) \
            AND ($4::text IS NULL OR p.family_key LIKE $4 || '%' OR p.given_key LIKE $4 || '%') \
            AND ($5::text[] IS NULL OR NOT EXISTS ( \
                   SELECT 1 FROM unnest($5::text[]) w \
                    WHERE (' ' || p.family_key || ' ' || p.given_key) NOT LIKE '% ' || w || '%')) \
            AND ($1::text IS NOT NULL OR p.status <> 'MERGED') \
            AND ($6::text IS NULL OR (p.family_key, p.given_key, p.id) > ($6, $7, $8)) \
          ORDER BY p.family_key, p.given_key, p.id \
          LIMIT $9"
    ))
    .bind(mrn)
    .bind(dob)
    .bind(phone)
    .bind(single)
    .bind(words)
    .bind(after.as_ref().map(|a| a.0.clone()))
    .bind(after.as_ref().map(|a| a.1.clone()))
    .bind(after.as_ref().map(|a| a.2))
    .bind(page.fetch_limit())
    .fetch_all(pool)
    .await
    .map_err(ApiError::internal)?;
    let patients = rows
        .into_iter()
        .map(Patient::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.connection(patients, patient_keyset))
}

// ---------------------------------------------------------------------------------
// Queries

#[derive(Default)]
pub struct PatientQuery;

#[Object]
impl PatientQuery {
    /// Patients in name order. `search` is read by its shape: an MRN (`DMC001-000123`), a
    /// date of birth (`YYYY-MM-DD`), a phone number (matched on its last digits), or
    /// otherwise name prefixes ignoring case and accents (`kam wan` finds Wanjiku Kamau).
    /// Merged duplicates appear only when searched by MRN.
    async fn patients(
        &self,
        ctx: &Context<'_>,
        search: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<Patient>> {
        let auth = authorize(ctx, Operation::ViewPatient).await?;
        let page = page_request(first, after)?;
        let search = classify(search.as_deref())?;
        search_patients(auth.pool(), &search, &page).await
    }

    /// One patient's record. The view is recorded (who, when, from where) before the
    /// record is returned.
    async fn patient(&self, ctx: &Context<'_>, id: Uuid) -> Result<Patient> {
        let auth = authorize(ctx, Operation::ViewPatient).await?;
        let patient = load_patient(auth.pool(), id).await?;
        record_patient_view(&auth, id, "patient").await?;
        Ok(patient)
    }
}

// ---------------------------------------------------------------------------------
// Inputs

#[derive(InputObject, Serialize, Clone)]
pub struct EmergencyContactInput {
    pub name: String,
    pub relationship: String,
    pub phone: String,
}

impl EmergencyContactInput {
    fn parse(&self) -> Result<DomainEmergencyContact, ApiError> {
        Ok(DomainEmergencyContact {
            name: BoundedText::parse("emergencyContact.name", &self.name, MAX_PERSON_NAME_CHARS)?,
            relationship: BoundedText::parse(
                "emergencyContact.relationship",
                &self.relationship,
                MAX_PERSON_NAME_CHARS,
            )?,
            phone: Phone::parse("emergencyContact.phone", &self.phone)?,
        })
    }
}

#[derive(InputObject, Serialize, Clone)]
pub struct AllergyInput {
    pub substance: String,
    pub reaction: Option<String>,
    pub severity: AllergySeverity,
}

impl AllergyInput {
    fn parse(&self) -> Result<DomainAllergy, ApiError> {
        Ok(DomainAllergy {
            substance: BoundedText::parse("substance", &self.substance, MAX_PERSON_NAME_CHARS)?,
            reaction: optional_text(
                "reaction",
                self.reaction.as_deref(),
                MAX_CLINICAL_TEXT_CHARS,
            )?,
            severity: self.severity.into(),
        })
    }
}

/// Blank optional text counts as absent.
fn optional_text(
    field: &'static str,
    raw: Option<&str>,
    max: usize,
) -> Result<Option<BoundedText>, ApiError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => Ok(Some(BoundedText::parse(field, s, max)?)),
    }
}

fn optional_phone(raw: Option<&str>) -> Result<Option<Phone>, ApiError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => Ok(Some(Phone::parse("phone", s)?)),
    }
}

fn optional_email(raw: Option<&str>) -> Result<Option<Email>, ApiError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => Ok(Some(
            Email::parse(s).map_err(|e| ApiError::validation("email", e.message))?,
        )),
    }
}

fn person_name(field: &'static str, raw: &str) -> Result<BoundedText, ApiError> {
    Ok(BoundedText::parse(field, raw, MAX_PERSON_NAME_CHARS)?)
}

#[derive(InputObject, Serialize)]
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

impl RegisterPatientInput {
    fn demographics(&self) -> Result<Demographics, ApiError> {
        Ok(Demographics {
            given_name: optional_text(
                "givenName",
                self.given_name.as_deref(),
                MAX_PERSON_NAME_CHARS,
            )?,
            middle_name: optional_text(
                "middleName",
                self.middle_name.as_deref(),
                MAX_PERSON_NAME_CHARS,
            )?,
            family_name: person_name("familyName", &self.family_name)?,
            date_of_birth: self.date_of_birth,
            sex: self.sex.into(),
            phone: optional_phone(self.phone.as_deref())?,
            email: optional_email(self.email.as_deref())?,
            address: self.address.as_ref().map(AddressInput::parse).transpose()?,
            emergency_contact: self
                .emergency_contact
                .as_ref()
                .map(EmergencyContactInput::parse)
                .transpose()?,
            blood_type: self.blood_type.map(Into::into),
        })
    }
}

/// Changes to a patient's demographics. Fields left out stay as they are; a nullable
/// field set to `null` is cleared.
#[derive(InputObject, Serialize)]
pub struct UpdatePatientInput {
    pub id: Uuid,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub given_name: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub middle_name: MaybeUndefined<String>,
    pub family_name: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub sex: Option<Sex>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub phone: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub email: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub address: MaybeUndefined<AddressInput>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub emergency_contact: MaybeUndefined<EmergencyContactInput>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub blood_type: MaybeUndefined<BloodType>,
    /// The version last seen; a stale one is a CONFLICT.
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// `patch` applied to `current`: undefined keeps, null clears, a value replaces.
fn patch<T, R>(
    current: Option<T>,
    patch: &MaybeUndefined<R>,
    parse: impl FnOnce(&R) -> Result<Option<T>, ApiError>,
) -> Result<Option<T>, ApiError> {
    match patch {
        MaybeUndefined::Undefined => Ok(current),
        MaybeUndefined::Null => Ok(None),
        MaybeUndefined::Value(v) => parse(v),
    }
}

impl UpdatePatientInput {
    fn apply(&self, current: Demographics) -> Result<Demographics, ApiError> {
        let name = |field: &'static str| {
            move |s: &String| optional_text(field, Some(s), MAX_PERSON_NAME_CHARS)
        };
        Ok(Demographics {
            given_name: patch(current.given_name, &self.given_name, name("givenName"))?,
            middle_name: patch(current.middle_name, &self.middle_name, name("middleName"))?,
            family_name: match &self.family_name {
                Some(f) => person_name("familyName", f)?,
                None => current.family_name,
            },
            date_of_birth: self.date_of_birth.unwrap_or(current.date_of_birth),
            sex: self.sex.map_or(current.sex, Into::into),
            phone: patch(current.phone, &self.phone, |s| optional_phone(Some(s)))?,
            email: patch(current.email, &self.email, |s| optional_email(Some(s)))?,
            address: patch(current.address, &self.address, |a| a.parse().map(Some))?,
            emergency_contact: patch(current.emergency_contact, &self.emergency_contact, |c| {
                c.parse().map(Some)
            })?,
            blood_type: patch(current.blood_type, &self.blood_type, |b| {
                Ok(Some((*b).into()))
            })?,
        })
    }
}

#[derive(InputObject, Serialize)]
pub struct RecordAllergyInput {
    pub patient_id: Uuid,
    pub allergy: AllergyInput,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject, Serialize)]
pub struct RemoveAllergyInput {
    pub patient_id: Uuid,
    /// Matched ignoring case.
    pub substance: String,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject, Serialize)]
pub struct AddPatientAlertInput {
    pub patient_id: Uuid,
    pub text: String,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject, Serialize)]
pub struct ResolvePatientAlertInput {
    pub patient_id: Uuid,
    pub alert_id: Uuid,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject, Serialize)]
pub struct MarkPatientDeceasedInput {
    pub patient_id: Uuid,
    /// Not in the future, not before the date of birth.
    pub died_at: DateTime<Utc>,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject, Serialize)]
pub struct DeactivatePatientInput {
    pub patient_id: Uuid,
    pub reason: String,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject, Serialize)]
pub struct ReactivatePatientInput {
    pub patient_id: Uuid,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject, Serialize)]
pub struct MergePatientsInput {
    /// The duplicate record; it becomes read-only and points to the survivor.
    pub duplicate_id: Uuid,
    /// The record that lives on; it must be active.
    pub survivor_id: Uuid,
    /// The duplicate's version last seen.
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

// ---------------------------------------------------------------------------------
// Mutations

#[derive(Default)]
pub struct PatientMutation;

/// Runs one command on patient `id` (once per idempotency key) and returns the record
/// as the read model now shows it.
async fn patient_command(
    auth: &Authorized<'_>,
    options: &MutationOptions,
    input: &impl Serialize,
    id: Uuid,
    command: PatientCommand,
) -> Result<Patient, ApiError> {
    auth.idempotent(options, input, || async {
        auth.execute::<PatientAggregate>(&id.to_string(), command, options.expected_version)
            .await?;
        Ok::<_, ApiError>(id.to_string())
    })
    .await?;
    load_patient(auth.pool(), id).await
}

fn limit_error(e: PlanLimitReached) -> ApiError {
    ApiError::Conflict(format!(
        "the {} plan allows {} patients; upgrade the plan to register more",
        e.plan, e.limit
    ))
}

#[Object]
impl PatientMutation {
    /// Registers a patient and issues the next medical record number of the hospital.
    async fn register_patient(
        &self,
        ctx: &Context<'_>,
        input: RegisterPatientInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::RegisterPatient).await?;
        let options = MutationOptions::new(None, input.idempotency_key.clone())?;
        let demographics = input.demographics()?;
        let allergies = input
            .allergies
            .iter()
            .map(AllergyInput::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let hospital = auth.scope.code.clone();
        let id = auth
            .idempotent_id(&options, &input, || async {
                let count: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM patients WHERE status <> 'MERGED'")
                        .fetch_one(auth.pool())
                        .await
                        .map_err(ApiError::internal)?;
                auth.hospital
                    .ensure_capacity(
                        LimitedResource::Patients,
                        u32::try_from(count).unwrap_or(u32::MAX),
                    )
                    .map_err(limit_error)?;
                let seq: i64 = sqlx::query_scalar("SELECT nextval('mrn_seq')")
                    .fetch_one(auth.pool())
                    .await
                    .map_err(ApiError::internal)?;
                let seq = u64::try_from(seq).map_err(ApiError::internal)?;
                let mrn = Mrn::new(&hospital, seq).map_err(ApiError::internal)?;
                let patient_id = auth.new_id(&options);
                let command = PatientCommand::RegisterPatient {
                    actor: auth.actor(),
                    patient_id,
                    mrn,
                    hospital: hospital.clone(),
                    demographics,
                    allergies,
                    now: auth.now,
                };
                auth.execute::<PatientAggregate>(&patient_id.to_string(), command, Some(0))
                    .await?;
                Ok::<_, ApiError>(patient_id)
            })
            .await?;
        load_patient(auth.pool(), id).await
    }

    /// Changes a patient's demographics (only the fields given).
    async fn update_patient(
        &self,
        ctx: &Context<'_>,
        input: UpdatePatientInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::UpdatePatient).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let (current, version) = auth.load::<PatientAggregate>(&input.id.to_string()).await?;
        if let Some(DomainStatus::Merged { survivor_id }) = current.status {
            return Err(ApiError::from(
                PatientError::Merged { survivor_id }.to_app_error(),
            ));
        }
        let demographics = input.apply(current.demographics.ok_or(ApiError::NotFound)?)?;
        // The change is computed from the state just loaded: without an expected version
        // from the client, that state's version guards against a lost update.
        let options = MutationOptions {
            expected_version: Some(options.expected_version.unwrap_or(version)),
            ..options
        };
        let command = PatientCommand::UpdateDemographics {
            actor: auth.actor(),
            demographics,
            now: auth.now,
        };
        patient_command(&auth, &options, &input, input.id, command).await
    }

    /// Records an allergy (one entry per substance).
    async fn record_allergy(
        &self,
        ctx: &Context<'_>,
        input: RecordAllergyInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::ManageAllergiesAndAlerts).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let command = PatientCommand::RecordAllergy {
            actor: auth.actor(),
            allergy: input.allergy.parse()?,
            now: auth.now,
        };
        patient_command(&auth, &options, &input, input.patient_id, command).await
    }

    /// Removes a recorded allergy.
    async fn remove_allergy(
        &self,
        ctx: &Context<'_>,
        input: RemoveAllergyInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::ManageAllergiesAndAlerts).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let command = PatientCommand::RemoveAllergy {
            actor: auth.actor(),
            substance: BoundedText::parse("substance", &input.substance, MAX_PERSON_NAME_CHARS)
                .map_err(ApiError::from)?,
            now: auth.now,
        };
        patient_command(&auth, &options, &input, input.patient_id, command).await
    }

    /// Adds a clinical alert shown whenever the record is opened.
    async fn add_patient_alert(
        &self,
        ctx: &Context<'_>,
        input: AddPatientAlertInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::ManageAllergiesAndAlerts).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let command = PatientCommand::AddAlert {
            actor: auth.actor(),
            alert_id: auth.new_id(&options),
            text: BoundedText::parse("text", &input.text, MAX_CLINICAL_TEXT_CHARS)
                .map_err(ApiError::from)?,
            now: auth.now,
        };
        patient_command(&auth, &options, &input, input.patient_id, command).await
    }

    /// Resolves (removes) a clinical alert.
    async fn resolve_patient_alert(
        &self,
        ctx: &Context<'_>,
        input: ResolvePatientAlertInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::ManageAllergiesAndAlerts).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let command = PatientCommand::ResolveAlert {
            actor: auth.actor(),
            alert_id: input.alert_id,
            now: auth.now,
        };
        patient_command(&auth, &options, &input, input.patient_id, command).await
    }

    /// Records the patient's death (DOCTOR).
    async fn mark_patient_deceased(
        &self,
        ctx: &Context<'_>,
        input: MarkPatientDeceasedInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::MarkPatientDeceased).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let command = PatientCommand::MarkDeceased {
            actor: auth.actor(),
            died_at: input.died_at,
            now: auth.now,
        };
        patient_command(&auth, &options, &input, input.patient_id, command).await
    }

    /// Deactivates an active patient: no new appointments or invoices until reactivated.
    async fn deactivate_patient(
        &self,
        ctx: &Context<'_>,
        input: DeactivatePatientInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::DeactivatePatient).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let command = PatientCommand::DeactivatePatient {
            actor: auth.actor(),
            reason: BoundedText::parse("reason", &input.reason, MAX_CLINICAL_TEXT_CHARS)
                .map_err(ApiError::from)?,
            now: auth.now,
        };
        patient_command(&auth, &options, &input, input.patient_id, command).await
    }

    /// Reactivates an inactive patient.
    async fn reactivate_patient(
        &self,
        ctx: &Context<'_>,
        input: ReactivatePatientInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::DeactivatePatient).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let command = PatientCommand::ReactivatePatient {
            actor: auth.actor(),
            now: auth.now,
        };
        patient_command(&auth, &options, &input, input.patient_id, command).await
    }

    /// Merges a duplicate record into its survivor and returns the survivor. The
    /// duplicate is written first (it becomes read-only, pointing to the survivor), then
    /// the survivor records what it absorbed; running the merge again finishes one that
    /// was cut off half-way.
    async fn merge_patients(
        &self,
        ctx: &Context<'_>,
        input: MergePatientsInput,
    ) -> Result<Patient> {
        let auth = authorize(ctx, Operation::MergePatients).await?;
        let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
        let (duplicate_id, survivor_id) = (input.duplicate_id, input.survivor_id);
        if duplicate_id == survivor_id {
            return Err(ApiError::from(
                PatientError::CannotMergeIntoSelf.to_app_error(),
            ));
        }
        let (duplicate, _) = auth
            .load::<PatientAggregate>(&duplicate_id.to_string())
            .await?;
        let (survivor, _) = auth
            .load::<PatientAggregate>(&survivor_id.to_string())
            .await?;
        let (Some(duplicate_mrn), Some(survivor_mrn)) =
            (duplicate.mrn.clone(), survivor.mrn.clone())
        else {
            return Err(ApiError::NotFound);
        };
        auth.idempotent(&options, &input, || async {
            let first_half_done = duplicate.status == Some(DomainStatus::Merged { survivor_id });
            let second_half_done = survivor.absorbed.contains(&duplicate_id);
            if first_half_done && second_half_done {
                return Err(ApiError::Conflict(format!(
                    "patient {duplicate_id} was already merged into {survivor_id}"
                )));
            }
            if !first_half_done {
                let command = PatientCommand::MergeInto {
                    actor: auth.actor(),
                    survivor_id,
                    survivor_mrn,
                    survivor_active: survivor.is_active(),
                    now: auth.now,
                };
                auth.execute::<PatientAggregate>(
                    &duplicate_id.to_string(),
                    command,
                    options.expected_version,
                )
                .await?;
            }
            let command = PatientCommand::AbsorbDuplicate {
                actor: auth.actor(),
                duplicate_id,
                duplicate_mrn,
                now: auth.now,
            };
            auth.execute::<PatientAggregate>(&survivor_id.to_string(), command, None)
                .await?;
            Ok(survivor_id.to_string())
        })
        .await?;
        load_patient(auth.pool(), survivor_id).await
    }
}

// ---------------------------------------------------------------------------------
// Errors

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_string_is_read_by_its_shape() {
        assert_eq!(classify(None).ok(), Some(Search::All));
        assert_eq!(classify(Some("  ")).ok(), Some(Search::All));
        assert_eq!(
            classify(Some("dmc001-000042")).ok(),
            Some(Search::Mrn("DMC001-000042".into()))
        );
        assert_eq!(
            classify(Some("1990-04-01")).ok(),
            NaiveDate::from_ymd_opt(1990, 4, 1).map(Search::DateOfBirth)
        );
        assert!(classify(Some("1990-02-30")).is_err());
        assert_eq!(
            classify(Some("0712 345-678")).ok(),
            Some(Search::Phone("712345678".into()))
        );
        assert_eq!(
            classify(Some("+254 712 345 678")).ok(),
            Some(Search::Phone("254712345678".into()))
        );
        assert!(classify(Some("12")).is_err());
        assert_eq!(
            classify(Some("Ñúñez, Wan")).ok(),
            Some(Search::Name(vec!["nunez".into(), "wan".into()]))
        );
        assert_eq!(
            classify(Some("50%_off")).ok(),
            Some(Search::Name(vec!["50\\%\\_off".into()]))
        );
    }
}
