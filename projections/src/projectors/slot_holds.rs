//! `slot_holds`: the slots held on doctors' and patients' day schedules (ADR 0002).

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::Aggregate;
use hms_domain::schedule::{DoctorSchedule, PatientSchedule, ScheduleEvent};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::rows::RowSet;
use crate::{Projector, Result, StoredEvent};

pub struct SlotHoldProjector;

/// A row of `slot_holds` (field names are column names).
#[derive(Serialize, Deserialize)]
struct HoldRow {
    id: String,
    schedule_type: String,
    schedule_id: String,
    owner_id: Uuid,
    local_date: NaiveDate,
    appointment_id: Uuid,
    start_at: DateTime<Utc>,
    end_at: DateTime<Utc>,
    reserved_at: DateTime<Utc>,
}

/// The key of one appointment's hold on one schedule stream.
fn hold_id(event: &StoredEvent, appointment_id: Uuid) -> String {
    format!(
        "{}/{}/{appointment_id}",
        event.aggregate_type, event.aggregate_id
    )
}

#[async_trait]
impl Projector for SlotHoldProjector {
    fn name(&self) -> &'static str {
        "slot_holds"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["slot_holds"]
    }

    async fn apply(&self, tx: &mut PgConnection, event: &StoredEvent) -> Result<()> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }

    /// Holds are only added and removed, never changed: one write per batch, no read.
    async fn apply_batch(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> Result<()> {
        let upcasters = hms_domain::upcasters();
        let mut holds = RowSet::<String, HoldRow>::new("slot_holds", "id");
        for event in events {
            // Both schedule types share one event type.
            let decoded = if event.aggregate_type == DoctorSchedule::TYPE {
                event.decode::<DoctorSchedule>(&upcasters)?
            } else if event.aggregate_type == PatientSchedule::TYPE {
                event.decode::<PatientSchedule>(&upcasters)?
            } else {
                continue;
            };
            match decoded {
                ScheduleEvent::SlotReserved {
                    owner_id,
                    date,
                    appointment_id,
                    start,
                    end,
                    at,
                } => {
                    let id = hold_id(event, appointment_id);
                    let row = HoldRow {
                        id: id.clone(),
                        schedule_type: event.aggregate_type.clone(),
                        schedule_id: event.aggregate_id.clone(),
                        owner_id,
                        local_date: date,
                        appointment_id,
                        start_at: start,
                        end_at: end,
                        reserved_at: at,
                    };
                    holds.insert(id, row);
                }
                ScheduleEvent::SlotReleased { appointment_id, .. } => {
                    holds.remove(hold_id(event, appointment_id));
                }
            }
        }
        holds.store(tx).await
    }
}
