//! `patients`: the patient register, searchable by name (case- and accent-insensitive
//! prefix), date of birth, phone and MRN; with allergies, alerts and merged/deceased state.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::persist::SerializedEvent;
use cqrs_es::Aggregate;
use hms_domain::common::BoundedText;
use hms_domain::patient::{same_substance, Alert, Allergy, Demographics, Patient, PatientEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{enum_name, fold_rows, search_key};
use crate::rows::{InlineRows, RowSet};
use crate::{Projector, Result, StoredEvent};

pub struct PatientProjector;

/// A row of `patients` (field names are column names), as written here and read by the
/// application layer ([`PatientRow::COLUMNS`], [`PatientRow::find`]).
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
pub struct PatientRow {
    pub id: Uuid,
    pub mrn: String,
    pub given_name: Option<String>,
    pub middle_name: Option<String>,
    pub family_name: String,
    /// Lower-case, accent-free forms for search ([`search_key`]).
    pub given_key: String,
    pub family_key: String,
    pub date_of_birth: NaiveDate,
    pub sex: String,
    pub phone: Option<String>,
    /// Digits only, for phone search regardless of formatting.
    pub phone_digits: Option<String>,
    pub email: Option<String>,
    /// The domain's `Demographics`, whole.
    pub demographics: Value,
    #[sqlx(json)]
    pub allergies: Vec<Allergy>,
    #[sqlx(json)]
    pub alerts: Vec<Alert>,
    /// A [`PatientRecordStatus`] by its stored name.
    pub status: String,
    pub died_at: Option<DateTime<Utc>>,
    pub merged_into: Option<Uuid>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The stream's version: the sequence of the last event folded in.
    pub version: i64,
    /// Whether the record is restricted (lists withhold it beyond the patient's identity).
    pub restricted: bool,
    /// Whether the patient's personal data is erased.
    pub erased: bool,
}

/// Where a record stands in the register (the `status` column, by serde name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PatientRecordStatus {
    Active,
    Inactive,
    Deceased,
    /// A duplicate merged into another record (`merged_into`); read-only.
    Merged,
}

super::stream_row!(PatientRow);

impl PatientRow {
    /// Every column of [`PatientRow`], qualified by the alias `p`, for a `SELECT`.
    pub const COLUMNS: &'static str = "p.id, p.mrn, p.given_name, p.middle_name, p.family_name, \
         p.given_key, p.family_key, p.date_of_birth, p.sex, p.phone, p.phone_digits, p.email, \
         p.demographics, p.allergies, p.alerts, p.status, p.died_at, p.merged_into, \
         p.registered_at, p.updated_at, p.version, p.restricted, p.erased";

    /// The row of patient `id`, if there is one.
    pub async fn find<'e>(
        executor: impl sqlx::PgExecutor<'e>,
        id: Uuid,
    ) -> std::result::Result<Option<Self>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {} FROM patients p WHERE p.id = $1",
            Self::COLUMNS
        ))
        .bind(id)
        .fetch_optional(executor)
        .await
    }
}

impl PatientRow {
    /// What the record shows once the patient's key is destroyed: exactly what the sealed
    /// events read as then (names `[erased]`, contact details none, alerts gone, allergy
    /// reactions `[erased]`), so a rebuild gives the same row.
    fn erase(&mut self, at: DateTime<Utc>) {
        self.erase_personal();
        self.alerts.clear();
        self.erased = true;
        self.updated_at = at;
    }

    /// The sealed fields as they read once the key is gone, and nothing else: what a
    /// merged duplicate's row shows when its survivor is erased (its own events read so).
    fn erase_personal(&mut self) {
        let erased = || BoundedText::parse("text", crate::personal::ERASED, 100).ok();
        crate::personal::erase_present(&mut self.demographics, crate::personal::DEMOGRAPHIC_FIELDS);
        if let Ok(d) = serde_json::from_value::<Demographics>(self.demographics.clone()) {
            let at = self.updated_at;
            self.set_demographics(&d, at);
        }
        for allergy in &mut self.allergies {
            if allergy.reaction.is_some() {
                allergy.reaction = erased();
            }
        }
        for alert in &mut self.alerts {
            if let Some(text) = erased() {
                alert.text = text;
            }
        }
    }

    /// Every column that follows from the demographics.
    fn set_demographics(&mut self, d: &Demographics, at: DateTime<Utc>) {
        self.given_name = d.given_name.as_ref().map(|n| n.as_str().to_owned());
        self.middle_name = d.middle_name.as_ref().map(|n| n.as_str().to_owned());
        self.family_name = d.family_name.as_str().to_owned();
        self.given_key = self
            .given_name
            .as_deref()
            .map(search_key)
            .unwrap_or_default();
        self.family_key = search_key(d.family_name.as_str());
        self.date_of_birth = d.date_of_birth;
        self.sex = enum_name(&d.sex);
        self.phone = d.phone.as_ref().map(|p| p.as_str().to_owned());
        self.phone_digits = self.phone.as_deref().map(digits);
        self.email = d.email.as_ref().map(|e| e.as_str().to_owned());
        self.demographics = serde_json::to_value(d).unwrap_or(Value::Null);
        self.updated_at = at;
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

#[async_trait]
impl Projector for PatientProjector {
    fn name(&self) -> &'static str {
        "patients"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["patients"]
    }

    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }

    /// One read of the rows the batch changes, one write of their last state.
    async fn apply_batch(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> Result<()> {
        fold_rows::<Patient, PatientRow>(
            tx,
            self.name(),
            "patients",
            events,
            // A registration's row is written by its append (docs/adr/0011): loaded,
            // so that the registration is passed over.
            |_| false,
            fold,
        )
        .await?;
        // Duplicates merged into an erased record are erased with it.
        let duplicates: Vec<Uuid> = events
            .iter()
            .filter(|e| e.aggregate_type == "patient" && e.event_type == "PatientErased")
            .flat_map(super::erased_duplicates)
            .collect();
        if duplicates.is_empty() {
            return Ok(());
        }
        let mut rows: RowSet<Uuid, PatientRow> = RowSet::new("patients", "id");
        rows.load(tx, duplicates.clone()).await?;
        for id in duplicates {
            if let Some(row) = rows.get_mut(&id) {
                row.erase_personal();
            }
        }
        rows.store(tx).await
    }
}

/// The row a registration writes inline, in its append's own statement (docs/adr/0011):
/// built by the same code as the projector's, so a rebuild gives the same row, and
/// carrying the stream's version, so the projector passes the registration over.
/// Nothing for any other append.
pub(crate) fn inline(events: &[SerializedEvent]) -> Result<Option<InlineRows>> {
    let rows = super::rows_created_by(
        events,
        Patient::TYPE,
        "PatientRegistered",
        "a registration",
        registered,
    )?;
    if rows.is_empty() {
        return Ok(None);
    }
    InlineRows::of("patients", &rows).map(Some)
}

fn fold(patients: &mut RowSet<Uuid, PatientRow>, id: Uuid, _: &StoredEvent, event: PatientEvent) {
    if let PatientEvent::PatientRegistered { .. } = event {
        if let Some(row) = registered(event) {
            patients.insert(row.id, row);
        }
        return;
    }
    let Some(row) = patients.get_mut(&id) else {
        return;
    };
    apply(row, event);
}

/// A registered patient's row (version 0, set by whoever writes it).
fn registered(event: PatientEvent) -> Option<PatientRow> {
    let PatientEvent::PatientRegistered {
        patient_id,
        mrn,
        demographics,
        allergies,
        alerts,
        registered_at,
    } = event
    else {
        return None;
    };
    let mut row = PatientRow {
        id: patient_id,
        mrn: mrn.as_str().to_owned(),
        given_name: None,
        middle_name: None,
        family_name: String::new(),
        given_key: String::new(),
        family_key: String::new(),
        date_of_birth: demographics.date_of_birth,
        sex: String::new(),
        phone: None,
        phone_digits: None,
        email: None,
        demographics: Value::Null,
        allergies,
        alerts,
        status: enum_name(&PatientRecordStatus::Active),
        died_at: None,
        merged_into: None,
        registered_at,
        updated_at: registered_at,
        version: 0,
        restricted: false,
        erased: false,
    };
    // The same code as every later update fills the demographic columns.
    row.set_demographics(&demographics, registered_at);
    Some(row)
}

/// A later event of the patient's stream, folded onto its row.
fn apply(row: &mut PatientRow, event: PatientEvent) {
    match event {
        PatientEvent::PatientRegistered { .. } => {}
        PatientEvent::PatientDemographicsUpdated { demographics, at } => {
            row.set_demographics(&demographics, at);
        }
        PatientEvent::AllergyRecorded { allergy, at } => {
            // Recording a substance again replaces its earlier entry.
            row.allergies
                .retain(|a| !same_substance(a.substance.as_str(), allergy.substance.as_str()));
            row.allergies.push(allergy);
            row.updated_at = at;
        }
        PatientEvent::AllergyRemoved { substance, at } => {
            row.allergies
                .retain(|a| !same_substance(a.substance.as_str(), &substance));
            row.updated_at = at;
        }
        PatientEvent::AlertAdded { alert, at } => {
            row.alerts.push(alert);
            row.updated_at = at;
        }
        PatientEvent::AlertResolved { alert_id, at } => {
            row.alerts.retain(|a| a.alert_id != alert_id);
            row.updated_at = at;
        }
        PatientEvent::PatientDeceased { died_at, at } => {
            row.status = enum_name(&PatientRecordStatus::Deceased);
            row.died_at = Some(died_at);
            row.updated_at = at;
        }
        PatientEvent::PatientDeactivated { at, .. } => {
            row.status = enum_name(&PatientRecordStatus::Inactive);
            row.updated_at = at;
        }
        PatientEvent::PatientReactivated { at } => {
            row.status = enum_name(&PatientRecordStatus::Active);
            row.updated_at = at;
        }
        PatientEvent::PatientMergedInto {
            survivor_id, at, ..
        } => {
            row.status = enum_name(&PatientRecordStatus::Merged);
            row.merged_into = Some(survivor_id);
            row.updated_at = at;
        }
        PatientEvent::DuplicateAbsorbed { at, .. } => {
            row.updated_at = at;
        }
        PatientEvent::RecordRestricted { at, .. } => {
            row.restricted = true;
            row.updated_at = at;
        }
        PatientEvent::RecordUnrestricted { at, .. } => {
            row.restricted = false;
            row.updated_at = at;
        }
        PatientEvent::ErasureRequested { at, .. } => row.updated_at = at,
        PatientEvent::PatientErased { at, .. } => {
            row.erase(at);
        }
    }
}
