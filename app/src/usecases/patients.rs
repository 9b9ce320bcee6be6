//! Patients: registration (the MRN comes from the tenant's `mrn_seq` sequence), demographics,
//! allergies and alerts, death, deactivation and merging of duplicates; search and the
//! record view.
//!
//! Opening a record ([`patient`], a patient's history through [`record_patient_view`]) is
//! itself recorded: a `record_access` event is appended, and the read fails if it cannot
//! be, before any data is returned. A response showing many patients (a page of
//! [`patients`], of appointments, of the audit trail) records them all in one event
//! ([`record_patients_viewed`]).
//!
//! Inputs arrive as the client typed them (text, not yet validated) and are validated
//! here, in the order the fields are listed, so the first error a client sees is the
//! same whatever the transport.

use std::sync::LazyLock;

use chrono::{DateTime, NaiveDate, Utc};
use hms_domain::access::LimitedResource;
use hms_domain::common::{Address, BoundedText, Email, Phone};
use hms_domain::patient::{
    Alert, Allergy, AllergySeverity, BloodType, Demographics, EmergencyContact, Mrn,
    Patient as PatientAggregate, PatientCommand, PatientError, PatientStatus, Sex,
    MAX_CLINICAL_TEXT_CHARS, MAX_PERSON_NAME_CHARS,
};
use hms_domain::record_access::{RecordAccess, RecordAccessCommand, MAX_PATIENTS_PER_VIEW};
use hms_projections::projectors::{search_key, PatientRow};
use serde::{Serialize, Serializer};
use sqlx::PgPool;
use uuid::Uuid;

use super::{optional_text, stored, stored_name};
use crate::error::{AppError, DomainErrorCode, Result};
use crate::page::{Keyset, Page, PageRequest};
use crate::scope::{Authorized, MutationOptions};
use crate::sequences::Sequence;

pub use hms_projections::projectors::PatientRecordStatus;

/// Longest accepted `search` string.
pub const MAX_SEARCH_CHARS: usize = 200;
/// Fewest digits a phone search needs (after dropping a leading trunk `0`).
pub const MIN_PHONE_SEARCH_DIGITS: usize = 4;

// ---------------------------------------------------------------------------------
// The record

/// A patient as the register shows it now.
#[derive(Debug, Clone)]
pub struct PatientRecord {
    pub id: Uuid,
    /// Medical record number, e.g. `DMC001-000123`.
    pub mrn: String,
    pub demographics: Demographics,
    pub allergies: Vec<Allergy>,
    /// Open alerts.
    pub alerts: Vec<Alert>,
    pub status: PatientRecordStatus,
    /// The surviving record, when this one is a merged duplicate.
    pub merged_into: Option<Uuid>,
    pub died_at: Option<DateTime<Utc>>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The record's version, for `expectedVersion`.
    pub version: i64,
    /// Whether the record is restricted to its care team.
    pub restricted: bool,
    /// Whether the caller sees only the patient's identity (a restricted record they may
    /// not read in full; lists always, for a restricted record).
    pub withheld: bool,
    /// Whether the patient's personal data was erased (names read `[erased]`).
    pub erased: bool,
}

impl PatientRecord {
    /// Given, middle and family names in that order.
    pub fn full_name(&self) -> String {
        let d = &self.demographics;
        [
            d.given_name.as_ref().map(BoundedText::as_str),
            d.middle_name.as_ref().map(BoundedText::as_str),
            Some(d.family_name.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
    }
}

impl TryFrom<PatientRow> for PatientRecord {
    type Error = AppError;

    fn try_from(row: PatientRow) -> Result<Self> {
        Ok(Self {
            id: row.id,
            mrn: row.mrn,
            demographics: serde_json::from_value(row.demographics).map_err(AppError::internal)?,
            allergies: row.allergies,
            alerts: row.alerts,
            status: stored(&row.status)?,
            merged_into: row.merged_into,
            died_at: row.died_at,
            registered_at: row.registered_at,
            updated_at: row.updated_at,
            version: row.version,
            restricted: row.restricted,
            withheld: row.restricted,
            erased: row.erased,
        })
    }
}

/// The patient `id` as the read model shows it, if it exists in this hospital.
pub(crate) async fn find_patient(pool: &PgPool, id: Uuid) -> Result<Option<PatientRecord>> {
    PatientRow::find(pool, id)
        .await?
        .map(PatientRecord::try_from)
        .transpose()
}

async fn load_patient(pool: &PgPool, id: Uuid) -> Result<PatientRecord> {
    find_patient(pool, id).await?.ok_or(AppError::NotFound)
}

/// The record a write answers with, withheld beyond the identity when it is restricted
/// and the writer may not read it in full.
pub(crate) async fn patient_after_write(auth: &Authorized<'_>, id: Uuid) -> Result<PatientRecord> {
    let mut record = load_patient(auth.pool(), id).await?;
    record.withheld = record.restricted
        && !super::restriction::access_to(&auth.scope, id, auth.now)
            .await?
            .full();
    Ok(record)
}

/// Records that the caller opened patient `patient_id`'s record, for `purpose` (e.g.
/// `patient`, `history`). Each view is a stream of its own, so views never contend. A
/// failure fails the read: an unrecorded view is never served. The view is committed
/// before the record is returned; the access log's readers catch it up
/// ([`Authorized::derived_views_current`]), so the read does not wait for it.
pub async fn record_patient_view(
    auth: &Authorized<'_>,
    patient_id: Uuid,
    purpose: &str,
) -> Result<()> {
    let command = RecordAccessCommand::RecordPatientView {
        actor: auth.actor(),
        patient_id,
        purpose: purpose.to_owned(),
        now: auth.now,
    };
    auth.append_new::<RecordAccess>(&Uuid::new_v4().to_string(), command)
        .await
}

/// Records that one response showed patients `patient_ids` (for `purpose`, e.g.
/// `patients:summary`, `auditTrail`): one event for the response, naming each patient
/// once, appended before the response leaves. A failure fails the read. Nothing is
/// recorded for a response that shows no patient.
pub async fn record_patients_viewed(
    auth: &Authorized<'_>,
    patient_ids: impl IntoIterator<Item = Uuid>,
    purpose: &str,
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<Uuid> = patient_ids
        .into_iter()
        .filter(|id| seen.insert(*id))
        .collect();
    for chunk in ids.chunks(MAX_PATIENTS_PER_VIEW) {
        let command = RecordAccessCommand::RecordPatientsViewed {
            actor: auth.actor(),
            patient_ids: chunk.to_vec(),
            purpose: purpose.to_owned(),
            now: auth.now,
        };
        auth.append_new::<RecordAccess>(&Uuid::new_v4().to_string(), command)
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Queries

/// How much of each patient a page of [`patients`] shows, as the access log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Names, MRN, date of birth, sex and status.
    Summary,
    /// More than the summary: contact details or clinical fields.
    Records,
}

impl Listing {
    fn purpose(self) -> &'static str {
        match self {
            Listing::Summary => "patients:summary",
            Listing::Records => "patients:records",
        }
    }
}

/// Patients in name order. `search` is read by its shape: an MRN (`DMC001-000123`), a
/// date of birth (`YYYY-MM-DD`), a phone number (matched on its last digits), or
/// otherwise name prefixes ignoring case and accents (`kam wan` finds Wanjiku Kamau).
/// Merged duplicates appear only when searched by MRN. The page's patients are recorded
/// in the access log (one event for the page) before it is returned.
pub async fn patients(
    auth: &Authorized<'_>,
    search: Option<&str>,
    page: &PageRequest,
    listing: Listing,
) -> Result<Page<PatientRecord>> {
    let search = classify(search)?;
    let found = search_patients(auth.pool(), &search, page).await?;
    record_patients_viewed(
        auth,
        found.items.iter().map(|(_, p)| p.id),
        listing.purpose(),
    )
    .await?;
    Ok(found)
}

/// One patient's record. The view is recorded (who, when, from where; under
/// break-glass, with its reason) before the record is returned. A restricted record the
/// caller may not read in full shows only the patient's identity.
pub async fn patient(auth: &Authorized<'_>, id: Uuid) -> Result<PatientRecord> {
    let mut patient = load_patient(auth.pool(), id).await?;
    // The row says whether the record is restricted (a restriction's command waits for
    // it, a registration writes it); only then is the write side asked who may read it.
    let access = if patient.restricted {
        super::restriction::access_to(&auth.scope, id, auth.now).await?
    } else {
        super::restriction::RecordAccess::Open
    };
    patient.withheld = !access.full();
    let purpose = if access.full() {
        access.purpose("patient")
    } else {
        "patient:identity".to_owned()
    };
    record_patient_view(auth, id, &purpose).await?;
    Ok(patient)
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

fn classify(raw: Option<&str>) -> Result<Search> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(Search::All);
    };
    super::no_nul("search", raw)?;
    if raw.chars().count() > MAX_SEARCH_CHARS {
        return Err(AppError::validation(
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
            .map_err(|_| AppError::validation("search", "is not a valid date (YYYY-MM-DD)"));
    }
    let phone_like = raw
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')'));
    if phone_like && raw.chars().any(|c| c.is_ascii_digit()) {
        let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
        // A national number's trunk prefix (0712…) is not part of the stored +254712….
        let digits = digits.trim_start_matches('0').to_owned();
        if digits.len() < MIN_PHONE_SEARCH_DIGITS {
            return Err(AppError::validation(
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

/// Pages follow the name order: (family key, given key, id).
fn patient_keyset(row: &PatientRow) -> Keyset {
    Keyset {
        key: serde_json::to_string(&[&row.family_key, &row.given_key]).unwrap_or_default(),
        id: row.id.to_string(),
    }
}

fn decode_keyset(keyset: &Keyset) -> Result<(String, String, Uuid)> {
    let bad = || AppError::validation("after", "is not a cursor from this API");
    let [family, given]: [String; 2] = serde_json::from_str(&keyset.key).map_err(|_| bad())?;
    let id = Uuid::parse_str(&keyset.id).map_err(|_| bad())?;
    Ok((family, given, id))
}

/// The statement of [`search_patients`]: parameters $1 MRN, $2 date of birth, $3 phone
/// digits, $4 one name prefix, $5 several, $6-$8 the keyset after which the page
/// starts, $9 the rows to fetch, $10 the status of merged records.
///
/// Pages come in name order straight from `patients_name_order` (migration
/// 20261206000010): a list, or a search by family name, reads a page's rows and stops.
/// One prefix may match either name, and an OR of the two would make PostgreSQL sort
/// every match, so it is two parts merged in order: family names from the ordered index,
/// then given names whose family name does not match (their own index, then sorted;
/// `OFFSET 0` keeps the planner from walking the name index for them, which with
/// correlated names it misjudges as short).
pub fn search_sql(one_prefix: bool) -> &'static str {
    // Built once: the text is the same for every search.
    static ONE_PREFIX: LazyLock<String> = LazyLock::new(|| build_search_sql(true));
    static OTHER: LazyLock<String> = LazyLock::new(|| build_search_sql(false));
    if one_prefix {
        &ONE_PREFIX
    } else {
        &OTHER
    }
}

fn build_search_sql(one_prefix: bool) -> String {
    // Merged duplicates are found by their MRN only (a client holding an old MRN can
    // follow `mergedInto`); other searches show the records in use.
    let filters = "($1::text IS NULL OR p.mrn = $1) \
            AND ($2::date IS NULL OR p.date_of_birth = $2) \
            AND ($3::text IS NULL OR p.phone_digits LIKE '%' || $3) \
            AND ($5::text[] IS NULL OR NOT EXISTS ( \
                   SELECT 1 FROM unnest($5::text[]) w \
                    WHERE (' ' || p.family_key || ' ' || p.given_key) NOT LIKE '% ' || w || '%')) \
            AND ($1::text IS NOT NULL OR p.status <> $10) \
            AND ($6::text IS NULL OR (p.family_key, p.given_key, p.id) > ($6, $7, $8))";
    let order = "ORDER BY p.family_key, p.given_key, p.id LIMIT $9";
    let columns = PatientRow::COLUMNS;
    if one_prefix {
        format!(
            "SELECT * FROM ( \
               (SELECT {columns} FROM patients p \
                 WHERE {filters} AND p.family_key LIKE $4 || '%' {order}) \
               UNION ALL \
               (SELECT * FROM (SELECT {columns} FROM patients p \
                                WHERE {filters} AND p.given_key LIKE $4 || '%' \
                                  AND p.family_key NOT LIKE $4 || '%' OFFSET 0) p {order}) \
             ) p {order}"
        )
    } else {
        format!("SELECT {columns} FROM patients p WHERE {filters} AND $4::text IS NULL {order}")
    }
}

async fn search_patients(
    pool: &PgPool,
    search: &Search,
    page: &PageRequest,
) -> Result<Page<PatientRecord>> {
    let after = page.after.as_ref().map(decode_keyset).transpose()?;
    let (mrn, dob, phone, single, words) = match search {
        Search::All => (None, None, None, None, None),
        Search::Mrn(m) => (Some(m.clone()), None, None, None, None),
        Search::DateOfBirth(d) => (None, Some(*d), None, None, None),
        Search::Phone(p) => (None, None, Some(p.clone()), None, None),
        Search::Name(w) if w.len() == 1 => (None, None, None, w.first().cloned(), None),
        Search::Name(w) => (None, None, None, None, Some(w.clone())),
    };
    let rows: Vec<PatientRow> = sqlx::query_as(search_sql(single.is_some()))
        .bind(mrn)
        .bind(dob)
        .bind(phone)
        .bind(single)
        .bind(words)
        .bind(after.as_ref().map(|a| a.0.clone()))
        .bind(after.as_ref().map(|a| a.1.clone()))
        .bind(after.as_ref().map(|a| a.2))
        .bind(page.fetch_limit())
        .bind(stored_name(&PatientRecordStatus::Merged)?)
        .fetch_all(pool)
        .await?;
    page.page(rows, patient_keyset)
        .try_map(PatientRecord::try_from)
}

// ---------------------------------------------------------------------------------
// Inputs

/// A change to one optional field: keep what is there, clear it, or set a new value.
/// Serialized (for the idempotency check) as null when cleared and as the value when
/// set; a kept field is left out with `skip_serializing_if = "Patch::is_keep"`.
#[derive(Debug, Clone, Default)]
pub enum Patch<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<T> Patch<T> {
    pub fn is_keep(&self) -> bool {
        matches!(self, Patch::Keep)
    }

    /// `self` applied to `current`: keep, clear, or the parsed new value.
    fn apply<C>(
        &self,
        current: Option<C>,
        parse: impl FnOnce(&T) -> Result<Option<C>>,
    ) -> Result<Option<C>> {
        match self {
            Patch::Keep => Ok(current),
            Patch::Clear => Ok(None),
            Patch::Set(v) => parse(v),
        }
    }
}

impl<T: Serialize> Serialize for Patch<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Patch::Keep | Patch::Clear => serializer.serialize_none(),
            Patch::Set(v) => serializer.serialize_some(v),
        }
    }
}

/// A value the transport has already read (an address, whose rules the transport shares
/// with other areas), kept with its outcome so that its error is reported in field
/// order. Serialized as the value; an error is never hashed, as it stops the use case
/// before the idempotency check.
#[derive(Debug)]
pub struct Parsed<T>(pub Result<T>);

impl<T> Parsed<T> {
    fn get(&self) -> Result<T>
    where
        T: Clone,
    {
        match &self.0 {
            Ok(v) => Ok(v.clone()),
            Err(AppError::Validation { field, message }) => {
                Err(AppError::validation(field.clone(), message.clone()))
            }
            Err(e) => Err(AppError::internal(e.to_string())),
        }
    }
}

impl<T: Serialize> Serialize for Parsed<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match &self.0 {
            Ok(v) => v.serialize(serializer),
            Err(_) => serializer.serialize_none(),
        }
    }
}

/// An emergency contact as typed.
#[derive(Debug, Clone, Serialize)]
pub struct EmergencyContactFields {
    pub name: String,
    pub relationship: String,
    pub phone: String,
}

impl EmergencyContactFields {
    fn parse(&self) -> Result<EmergencyContact> {
        Ok(EmergencyContact {
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

/// An allergy as typed.
#[derive(Debug, Clone, Serialize)]
pub struct AllergyFields {
    pub substance: String,
    pub reaction: Option<String>,
    pub severity: AllergySeverity,
}

impl AllergyFields {
    fn parse(&self) -> Result<Allergy> {
        Ok(Allergy {
            substance: BoundedText::parse("substance", &self.substance, MAX_PERSON_NAME_CHARS)?,
            reaction: optional_text(
                "reaction",
                self.reaction.as_deref(),
                MAX_CLINICAL_TEXT_CHARS,
            )?,
            severity: self.severity,
        })
    }
}

fn optional_phone(raw: Option<&str>) -> Result<Option<Phone>> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => Ok(Some(Phone::parse("phone", s)?)),
    }
}

fn optional_email(raw: Option<&str>) -> Result<Option<Email>> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => Ok(Some(
            Email::parse(s).map_err(|e| AppError::validation("email", e.message))?,
        )),
    }
}

fn person_name(field: &'static str, raw: &str) -> Result<BoundedText> {
    Ok(BoundedText::parse(field, raw, MAX_PERSON_NAME_CHARS)?)
}

/// A patient to register, as typed.
#[derive(Debug, Serialize)]
pub struct NewPatient {
    /// Left out for people with a single name.
    pub given_name: Option<String>,
    pub middle_name: Option<String>,
    pub family_name: String,
    pub date_of_birth: NaiveDate,
    pub sex: Sex,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub address: Option<Parsed<Address>>,
    pub emergency_contact: Option<EmergencyContactFields>,
    pub blood_type: Option<BloodType>,
    pub allergies: Vec<AllergyFields>,
    /// A retry with the same key registers nothing new and returns the first answer.
    pub idempotency_key: Option<String>,
}

impl NewPatient {
    fn demographics(&self) -> Result<Demographics> {
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
            sex: self.sex,
            phone: optional_phone(self.phone.as_deref())?,
            email: optional_email(self.email.as_deref())?,
            address: self.address.as_ref().map(Parsed::get).transpose()?,
            emergency_contact: self
                .emergency_contact
                .as_ref()
                .map(EmergencyContactFields::parse)
                .transpose()?,
            blood_type: self.blood_type,
        })
    }
}

/// Changes to a patient's demographics. Fields left out ([`Patch::Keep`], `None`) stay
/// as they are.
#[derive(Debug, Serialize)]
pub struct PatientChanges {
    pub id: Uuid,
    #[serde(skip_serializing_if = "Patch::is_keep")]
    pub given_name: Patch<String>,
    #[serde(skip_serializing_if = "Patch::is_keep")]
    pub middle_name: Patch<String>,
    pub family_name: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub sex: Option<Sex>,
    #[serde(skip_serializing_if = "Patch::is_keep")]
    pub phone: Patch<String>,
    #[serde(skip_serializing_if = "Patch::is_keep")]
    pub email: Patch<String>,
    #[serde(skip_serializing_if = "Patch::is_keep")]
    pub address: Patch<Parsed<Address>>,
    #[serde(skip_serializing_if = "Patch::is_keep")]
    pub emergency_contact: Patch<EmergencyContactFields>,
    #[serde(skip_serializing_if = "Patch::is_keep")]
    pub blood_type: Patch<BloodType>,
    /// The version last seen; a stale one is a CONFLICT.
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

impl PatientChanges {
    fn apply(&self, current: Demographics) -> Result<Demographics> {
        let name = |field: &'static str| {
            move |s: &String| optional_text(field, Some(s), MAX_PERSON_NAME_CHARS)
        };
        Ok(Demographics {
            given_name: self
                .given_name
                .apply(current.given_name, name("givenName"))?,
            middle_name: self
                .middle_name
                .apply(current.middle_name, name("middleName"))?,
            family_name: match &self.family_name {
                Some(f) => person_name("familyName", f)?,
                None => current.family_name,
            },
            date_of_birth: self.date_of_birth.unwrap_or(current.date_of_birth),
            sex: self.sex.unwrap_or(current.sex),
            phone: self
                .phone
                .apply(current.phone, |s| optional_phone(Some(s)))?,
            email: self
                .email
                .apply(current.email, |s| optional_email(Some(s)))?,
            address: self.address.apply(current.address, |a| a.get().map(Some))?,
            emergency_contact: self
                .emergency_contact
                .apply(current.emergency_contact, |c| c.parse().map(Some))?,
            blood_type: self
                .blood_type
                .apply(current.blood_type, |b| Ok(Some(*b)))?,
        })
    }
}

/// One change to patient `patient_id`'s record (`change`: what the mutation carries),
/// with the mutation options.
#[derive(Debug, Serialize)]
pub struct PatientChange<T> {
    pub patient_id: Uuid,
    pub change: T,
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
}

impl<T> PatientChange<T> {
    fn options(&self) -> Result<MutationOptions> {
        MutationOptions::new(self.expected_version, self.idempotency_key.clone())
    }
}

/// A duplicate record and the record it is merged into.
#[derive(Debug, Serialize)]
pub struct MergePatients {
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

/// Runs one command on patient `id` (once per idempotency key) and returns the record
/// as the read model now shows it.
async fn patient_command(
    auth: &Authorized<'_>,
    options: &MutationOptions,
    input: &impl Serialize,
    id: Uuid,
    command: PatientCommand,
) -> Result<PatientRecord> {
    auth.idempotent(options, input, || async {
        auth.execute::<PatientAggregate>(&id.to_string(), command, options.expected_version)
            .await?;
        Ok::<_, AppError>(id.to_string())
    })
    .await?;
    patient_after_write(auth, id).await
}

/// Registers a patient and issues the next medical record number of the hospital.
/// The plan's patient limit counts the records in use (not merged duplicates).
pub async fn register_patient(auth: &Authorized<'_>, input: NewPatient) -> Result<PatientRecord> {
    let options = MutationOptions::new(None, input.idempotency_key.clone())?;
    let demographics = input.demographics()?;
    let allergies = input
        .allergies
        .iter()
        .map(AllergyFields::parse)
        .collect::<Result<Vec<_>>>()?;
    let hospital = auth.code().clone();
    // The row the registration's append stored, when it wrote one (docs/adr/0011).
    let stored = std::sync::Mutex::new(None);
    let id = auth
        .idempotent_id(&options, &input, || async {
            // Counted only under a limit, and only up to it: a registration must not
            // cost a scan of every patient.
            if let Some(limit) = auth.hospital.capacity_of(LimitedResource::Patients) {
                let count: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM (SELECT 1 FROM patients WHERE status <> $1 LIMIT $2) p",
                )
                .bind(stored_name(&PatientRecordStatus::Merged)?)
                .bind(i64::from(limit))
                .fetch_one(auth.pool())
                .await?;
                auth.hospital
                    .ensure_capacity(
                        LimitedResource::Patients,
                        u32::try_from(count).unwrap_or(u32::MAX),
                    )
                    .map_err(AppError::from)?;
            }
            let seq = auth
                .state()
                .sequences
                .next(auth.pool(), Sequence::Mrn)
                .await?;
            let seq = u64::try_from(seq).map_err(AppError::internal)?;
            let mrn = Mrn::new(&hospital, seq).map_err(AppError::internal)?;
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
            let written = auth
                .create::<PatientAggregate>(&patient_id.to_string(), command)
                .await?;
            *stored.lock().unwrap_or_else(|e| e.into_inner()) = written;
            Ok::<_, AppError>(patient_id)
        })
        .await?;
    let stored = stored.into_inner().unwrap_or_else(|e| e.into_inner());
    let row = stored
        .map(|rows| rows.rows::<PatientRow>("patients"))
        .transpose()?
        .and_then(|rows| rows.into_iter().find(|row| row.id == id));
    match row {
        // A new record is not restricted: the row as stored is the answer.
        Some(row) if !row.restricted => PatientRecord::try_from(row),
        // A retry answered from the first attempt, or nothing written inline.
        _ => patient_after_write(auth, id).await,
    }
}

/// Changes a patient's demographics (only the fields given). The change is computed
/// from the record as it is now, so it is guarded by that state's version when the
/// client sends none.
pub async fn update_patient(auth: &Authorized<'_>, input: PatientChanges) -> Result<PatientRecord> {
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let (current, version) = auth.load::<PatientAggregate>(&input.id.to_string()).await?;
    if let Some(PatientStatus::Merged { survivor_id }) = current.status {
        return Err(PatientError::Merged { survivor_id }.to_app_error());
    }
    let demographics = input.apply(current.demographics.ok_or(AppError::NotFound)?)?;
    // Without an expected version from the client, the version of the state just
    // loaded guards against a lost update.
    let options = MutationOptions {
        expected_version: Some(options.expected_version.unwrap_or(version)),
        ..options
    };
    let command = PatientCommand::UpdateDemographics {
        actor: auth.actor(),
        demographics,
        now: auth.now,
    };
    patient_command(auth, &options, &input, input.id, command).await
}

/// Records an allergy (one entry per substance).
pub async fn record_allergy(
    auth: &Authorized<'_>,
    input: PatientChange<AllergyFields>,
) -> Result<PatientRecord> {
    let options = input.options()?;
    let command = PatientCommand::RecordAllergy {
        actor: auth.actor(),
        allergy: input.change.parse()?,
        now: auth.now,
    };
    patient_command(auth, &options, &input, input.patient_id, command).await
}

/// Removes a recorded allergy; `change` is the substance, matched ignoring case.
pub async fn remove_allergy(
    auth: &Authorized<'_>,
    input: PatientChange<String>,
) -> Result<PatientRecord> {
    let options = input.options()?;
    let command = PatientCommand::RemoveAllergy {
        actor: auth.actor(),
        substance: BoundedText::parse("substance", &input.change, MAX_PERSON_NAME_CHARS)?,
        now: auth.now,
    };
    patient_command(auth, &options, &input, input.patient_id, command).await
}

/// Adds a clinical alert (`change`: its text) shown whenever the record is opened.
pub async fn add_patient_alert(
    auth: &Authorized<'_>,
    input: PatientChange<String>,
) -> Result<PatientRecord> {
    let options = input.options()?;
    let command = PatientCommand::AddAlert {
        actor: auth.actor(),
        alert_id: auth.new_id(&options),
        text: BoundedText::parse("text", &input.change, MAX_CLINICAL_TEXT_CHARS)?,
        now: auth.now,
    };
    patient_command(auth, &options, &input, input.patient_id, command).await
}

/// Resolves (removes) the clinical alert `change`.
pub async fn resolve_patient_alert(
    auth: &Authorized<'_>,
    input: PatientChange<Uuid>,
) -> Result<PatientRecord> {
    let options = input.options()?;
    let command = PatientCommand::ResolveAlert {
        actor: auth.actor(),
        alert_id: input.change,
        now: auth.now,
    };
    patient_command(auth, &options, &input, input.patient_id, command).await
}

/// Records the patient's death at `change` (DOCTOR); not in the future, not before the
/// date of birth.
pub async fn mark_patient_deceased(
    auth: &Authorized<'_>,
    input: PatientChange<DateTime<Utc>>,
) -> Result<PatientRecord> {
    let options = input.options()?;
    let command = PatientCommand::MarkDeceased {
        actor: auth.actor(),
        died_at: input.change,
        now: auth.now,
    };
    patient_command(auth, &options, &input, input.patient_id, command).await
}

/// Deactivates an active patient (`change`: the reason): no new appointments or
/// invoices until reactivated.
pub async fn deactivate_patient(
    auth: &Authorized<'_>,
    input: PatientChange<String>,
) -> Result<PatientRecord> {
    let options = input.options()?;
    let command = PatientCommand::DeactivatePatient {
        actor: auth.actor(),
        reason: BoundedText::parse("reason", &input.change, MAX_CLINICAL_TEXT_CHARS)?,
        now: auth.now,
    };
    patient_command(auth, &options, &input, input.patient_id, command).await
}

/// Reactivates an inactive patient.
pub async fn reactivate_patient(
    auth: &Authorized<'_>,
    input: PatientChange<()>,
) -> Result<PatientRecord> {
    let options = input.options()?;
    let command = PatientCommand::ReactivatePatient {
        actor: auth.actor(),
        now: auth.now,
    };
    patient_command(auth, &options, &input, input.patient_id, command).await
}

/// Merges a duplicate record into its survivor and returns the survivor. The
/// duplicate is written first (it becomes read-only, pointing to the survivor), then
/// the survivor records what it absorbed; running the merge again finishes one that
/// was cut off half-way.
pub async fn merge_patients(auth: &Authorized<'_>, input: MergePatients) -> Result<PatientRecord> {
    let options = MutationOptions::new(input.expected_version, input.idempotency_key.clone())?;
    let (duplicate_id, survivor_id) = (input.duplicate_id, input.survivor_id);
    if duplicate_id == survivor_id {
        return Err(PatientError::CannotMergeIntoSelf.to_app_error());
    }
    let (duplicate, _) = auth
        .load::<PatientAggregate>(&duplicate_id.to_string())
        .await?;
    let (survivor, _) = auth
        .load::<PatientAggregate>(&survivor_id.to_string())
        .await?;
    let (Some(duplicate_mrn), Some(survivor_mrn)) = (duplicate.mrn.clone(), survivor.mrn.clone())
    else {
        return Err(AppError::NotFound);
    };
    auth.idempotent(&options, &input, || async {
        let first_half_done = duplicate.status == Some(PatientStatus::Merged { survivor_id });
        let second_half_done = survivor.absorbed.contains(&duplicate_id);
        if first_half_done && second_half_done {
            return Err(AppError::Conflict(format!(
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
    patient_after_write(auth, survivor_id).await
}

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
