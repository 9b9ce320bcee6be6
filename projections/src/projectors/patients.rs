//! `patients`: the patient register, searchable by name (case- and accent-insensitive
//! prefix), date of birth, phone and MRN; with allergies, alerts and merged/deceased state.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use hms_domain::patient::{same_substance, Alert, Allergy, Demographics, Patient, PatientEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{enum_name, fold_rows, search_key};
use crate::rows::RowSet;
use crate::{Projector, Result, StoredEvent};

pub struct PatientProjector;

/// A row of `patients` (field names are column names).
#[derive(Serialize, Deserialize)]
struct PatientRow {
    id: Uuid,
    mrn: String,
    given_name: Option<String>,
    middle_name: Option<String>,
    family_name: String,
    /// Lower-case, accent-free forms for search ([`search_key`]).
    given_key: String,
    family_key: String,
    date_of_birth: NaiveDate,
    sex: String,
    phone: Option<String>,
    /// Digits only, for phone search regardless of formatting.
    phone_digits: Option<String>,
    email: Option<String>,
    demographics: Value,
    allergies: Vec<Allergy>,
    alerts: Vec<Alert>,
    status: String,
    died_at: Option<DateTime<Utc>>,
    merged_into: Option<Uuid>,
    registered_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// The stream's version: the sequence of the last event folded in.
    version: i64,
}

super::stream_row!(PatientRow);

impl PatientRow {
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
            |e| matches!(e, PatientEvent::PatientRegistered { .. }),
            fold,
        )
        .await
    }
}

fn fold(patients: &mut RowSet<Uuid, PatientRow>, id: Uuid, _: &StoredEvent, event: PatientEvent) {
    if let PatientEvent::PatientRegistered {
        patient_id,
        mrn,
        demographics,
        allergies,
        alerts,
        registered_at,
    } = event
    {
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
            status: "ACTIVE".into(),
            died_at: None,
            merged_into: None,
            registered_at,
            updated_at: registered_at,
            version: 0,
        };
        // The same code as every later update fills the demographic columns.
        row.set_demographics(&demographics, registered_at);
        patients.insert(patient_id, row);
        return;
    }
    let Some(row) = patients.get_mut(&id) else {
        return;
    };
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
            row.status = "DECEASED".into();
            row.died_at = Some(died_at);
            row.updated_at = at;
        }
        PatientEvent::PatientDeactivated { at, .. } => {
            row.status = "INACTIVE".into();
            row.updated_at = at;
        }
        PatientEvent::PatientReactivated { at } => {
            row.status = "ACTIVE".into();
            row.updated_at = at;
        }
        PatientEvent::PatientMergedInto {
            survivor_id, at, ..
        } => {
            row.status = "MERGED".into();
            row.merged_into = Some(survivor_id);
            row.updated_at = at;
        }
        PatientEvent::DuplicateAbsorbed { at, .. } => {
            row.updated_at = at;
        }
    }
}
