//! `patients`: the patient register, searchable by name (case- and accent-insensitive
//! prefix), date of birth, phone and MRN; with allergies, alerts and merged/deceased state.

use async_trait::async_trait;
use hms_domain::patient::{Demographics, Patient, PatientEvent};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{enum_name, json, search_key};
use crate::{Projector, Result, StoredEvent};

pub struct PatientProjector;

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// The columns every demographics change rewrites, in bind order after the id.
const DEMOGRAPHIC_COLUMNS: &str =
    "given_name = $2, middle_name = $3, family_name = $4, given_key = $5, \
     family_key = $6, date_of_birth = $7, sex = $8, phone = $9, phone_digits = $10, email = $11, \
     demographics = $12, updated_at = $13";

#[async_trait]
impl Projector for PatientProjector {
    fn name(&self) -> &'static str {
        "patients"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["patients"]
    }

    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        if event.aggregate_type != <Patient as cqrs_es::Aggregate>::TYPE {
            return Ok(());
        }
        let id = super::uuid_id(self.name(), event)?;
        match event.decode::<Patient>(&hms_domain::upcasters())? {
            PatientEvent::PatientRegistered {
                patient_id,
                mrn,
                demographics,
                allergies,
                alerts,
                registered_at,
            } => {
                // The row starts with the identity and lists; the demographic columns are
                // written by the same code as every later update.
                sqlx::query(
                    "INSERT INTO patients (id, mrn, family_name, family_key, date_of_birth, sex, demographics, \
                         allergies, alerts, status, registered_at, updated_at) \
                     VALUES ($1, $2, '', '', $3, '', '{}', $4, $5, 'ACTIVE', $6, $6)",
                )
                .bind(patient_id)
                .bind(mrn.as_str())
                .bind(demographics.date_of_birth)
                .bind(json(&allergies))
                .bind(json(&alerts))
                .bind(registered_at)
                .execute(&mut *tx)
                .await?;
                write_demographics(tx, patient_id, &demographics, registered_at).await?;
            }
            PatientEvent::PatientDemographicsUpdated { demographics, at } => {
                write_demographics(tx, id, &demographics, at).await?;
            }
            PatientEvent::AllergyRecorded { allergy, at } => {
                // Recording a substance again replaces its earlier entry.
                sqlx::query(
                    "UPDATE patients SET allergies = (SELECT coalesce(jsonb_agg(a), '[]') FROM jsonb_array_elements(allergies) a \
                         WHERE lower(a->>'substance') <> lower($2)) || jsonb_build_array($3::jsonb), updated_at = $4 \
                      WHERE id = $1",
                )
                .bind(id)
                .bind(allergy.substance.as_str())
                .bind(json(&allergy))
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            PatientEvent::AllergyRemoved { substance, at } => {
                sqlx::query(
                    "UPDATE patients SET allergies = (SELECT coalesce(jsonb_agg(a), '[]') FROM jsonb_array_elements(allergies) a \
                         WHERE lower(a->>'substance') <> lower($2)), updated_at = $3 WHERE id = $1",
                )
                .bind(id)
                .bind(&substance)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            PatientEvent::AlertAdded { alert, at } => {
                sqlx::query("UPDATE patients SET alerts = alerts || jsonb_build_array($2::jsonb), updated_at = $3 WHERE id = $1")
                    .bind(id)
                    .bind(json(&alert))
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
            PatientEvent::AlertResolved { alert_id, at } => {
                sqlx::query(
                    "UPDATE patients SET alerts = (SELECT coalesce(jsonb_agg(a), '[]') FROM jsonb_array_elements(alerts) a \
                         WHERE a->>'alert_id' <> $2), updated_at = $3 WHERE id = $1",
                )
                .bind(id)
                .bind(alert_id.to_string())
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            PatientEvent::PatientDeceased { died_at, at } => {
                sqlx::query("UPDATE patients SET status = 'DECEASED', died_at = $2, updated_at = $3 WHERE id = $1")
                    .bind(id)
                    .bind(died_at)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
            PatientEvent::PatientDeactivated { at, .. } => {
                set_status(tx, id, "INACTIVE", at).await?
            }
            PatientEvent::PatientReactivated { at } => set_status(tx, id, "ACTIVE", at).await?,
            PatientEvent::PatientMergedInto {
                survivor_id, at, ..
            } => {
                sqlx::query("UPDATE patients SET status = 'MERGED', merged_into = $2, updated_at = $3 WHERE id = $1")
                    .bind(id)
                    .bind(survivor_id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
            PatientEvent::DuplicateAbsorbed { at, .. } => {
                sqlx::query("UPDATE patients SET updated_at = $2 WHERE id = $1")
                    .bind(id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        Ok(())
    }
}

async fn write_demographics(
    tx: &mut PgConnection,
    id: Uuid,
    d: &Demographics,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let given = d.given_name.as_ref().map(|n| n.as_str().to_owned());
    let phone = d.phone.as_ref().map(|p| p.as_str().to_owned());
    sqlx::query(&format!(
        "UPDATE patients SET {DEMOGRAPHIC_COLUMNS} WHERE id = $1"
    ))
    .bind(id)
    .bind(&given)
    .bind(d.middle_name.as_ref().map(|n| n.as_str()))
    .bind(d.family_name.as_str())
    .bind(given.as_deref().map(search_key).unwrap_or_default())
    .bind(search_key(d.family_name.as_str()))
    .bind(d.date_of_birth)
    .bind(enum_name(&d.sex))
    .bind(&phone)
    .bind(phone.as_deref().map(digits))
    .bind(d.email.as_ref().map(|e| e.as_str()))
    .bind(serde_json::to_value(d).unwrap_or(Value::Null))
    .bind(at)
    .execute(tx)
    .await?;
    Ok(())
}

async fn set_status(
    tx: &mut PgConnection,
    id: Uuid,
    status: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    sqlx::query("UPDATE patients SET status = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(status)
        .bind(at)
        .execute(tx)
        .await?;
    Ok(())
}
