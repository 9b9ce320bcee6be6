//! `hospital_profile` and `departments`.

use async_trait::async_trait;
use hms_domain::hospital::{Hospital, HospitalEvent};
use sqlx::PgConnection;

use crate::{Projector, Result, StoredEvent};

pub struct HospitalProjector;

#[async_trait]
impl Projector for HospitalProjector {
    fn name(&self) -> &'static str {
        "hospital"
    }

    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        if event.aggregate_type != <Hospital as cqrs_es::Aggregate>::TYPE {
            return Ok(());
        }
        match event.decode::<Hospital>(&hms_domain::upcasters())? {
            HospitalEvent::HospitalRegistered {
                code,
                name,
                plan,
                trial_ends_at,
                departments,
                modules,
                registered_at,
            } => {
                let modules: Vec<String> = modules
                    .iter()
                    .map(|m| {
                        serde_json::to_value(m)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    })
                    .collect();
                sqlx::query(
                    "INSERT INTO hospital_profile (code, name, plan, trial_ends_at, modules, registered_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6)",
                )
                .bind(&code)
                .bind(&name)
                .bind(plan.as_str())
                .bind(trial_ends_at)
                .bind(&modules)
                .bind(registered_at)
                .execute(&mut *tx)
                .await?;
                for dept in departments {
                    sqlx::query(
                        "INSERT INTO departments (id, name, active, created_at) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(dept.id)
                    .bind(&dept.name)
                    .bind(dept.active)
                    .bind(registered_at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        Ok(())
    }
}
