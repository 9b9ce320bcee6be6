//! Reading a patient's record is itself recorded: each view is a one-event stream
//! (`record_access/<uuid>`), so views are part of the tamper-evident log, never contend
//! with each other, and never lengthen the patient's own stream. A response that shows
//! many patients at once (a page of a list or of the audit trail) is one event naming
//! them all, so a page costs one append.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::Actor;

#[derive(Debug, Clone, PartialEq)]
pub enum RecordAccessCommand {
    RecordPatientView {
        actor: Actor,
        patient_id: Uuid,
        /// What was read, e.g. `patient`, `patientAsOf`, `history`.
        purpose: String,
        now: DateTime<Utc>,
    },
    /// Several patients' information in one response, e.g. a page of `patients`.
    RecordPatientsViewed {
        actor: Actor,
        /// Each patient once; at most [`MAX_PATIENTS_PER_VIEW`].
        patient_ids: Vec<Uuid>,
        /// The operation and what it showed, e.g. `patients:summary`, `auditTrail`.
        purpose: String,
        now: DateTime<Utc>,
    },
}

/// The most patients one recorded view may name: a page of any list is smaller.
pub const MAX_PATIENTS_PER_VIEW: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RecordAccessEvent {
    PatientRecordViewed {
        patient_id: Uuid,
        viewer_id: Uuid,
        viewer_username: String,
        viewer_role: crate::Role,
        purpose: String,
        at: DateTime<Utc>,
    },
    PatientRecordsViewed {
        patient_ids: Vec<Uuid>,
        viewer_id: Uuid,
        viewer_username: String,
        viewer_role: crate::Role,
        purpose: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for RecordAccessEvent {
    fn event_type(&self) -> String {
        match self {
            RecordAccessEvent::PatientRecordViewed { .. } => "PatientRecordViewed",
            RecordAccessEvent::PatientRecordsViewed { .. } => "PatientRecordsViewed",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordAccessError {
    #[error("this access was recorded already")]
    AlreadyRecorded,
    #[error("a recorded view names between 1 and {MAX_PATIENTS_PER_VIEW} distinct patients")]
    PatientCount,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordAccess {
    pub recorded: bool,
}

impl Aggregate for RecordAccess {
    const TYPE: &'static str = "record_access";
    type Command = RecordAccessCommand;
    type Event = RecordAccessEvent;
    type Error = RecordAccessError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if self.recorded {
            return Err(RecordAccessError::AlreadyRecorded);
        }
        let event = match command {
            RecordAccessCommand::RecordPatientView {
                actor,
                patient_id,
                purpose,
                now,
            } => RecordAccessEvent::PatientRecordViewed {
                patient_id,
                viewer_id: actor.user_id,
                viewer_username: actor.username,
                viewer_role: actor.role,
                purpose,
                at: now,
            },
            RecordAccessCommand::RecordPatientsViewed {
                actor,
                patient_ids,
                purpose,
                now,
            } => {
                let distinct: std::collections::HashSet<_> = patient_ids.iter().collect();
                if patient_ids.is_empty()
                    || patient_ids.len() > MAX_PATIENTS_PER_VIEW
                    || distinct.len() != patient_ids.len()
                {
                    return Err(RecordAccessError::PatientCount);
                }
                RecordAccessEvent::PatientRecordsViewed {
                    patient_ids,
                    viewer_id: actor.user_id,
                    viewer_username: actor.username,
                    viewer_role: actor.role,
                    purpose,
                    at: now,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, _event: Self::Event) {
        self.recorded = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn view() -> RecordAccessCommand {
        RecordAccessCommand::RecordPatientView {
            actor: Actor {
                user_id: Uuid::from_u128(7),
                username: "dr_who".into(),
                role: crate::Role::Doctor,
            },
            patient_id: Uuid::from_u128(1),
            purpose: "patient".into(),
            now: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_view_is_recorded_with_who_and_what() {
        TestFramework::<RecordAccess>::with(())
            .given_no_previous_events()
            .when(view())
            .then_expect_events(vec![RecordAccessEvent::PatientRecordViewed {
                patient_id: Uuid::from_u128(1),
                viewer_id: Uuid::from_u128(7),
                viewer_username: "dr_who".into(),
                viewer_role: crate::Role::Doctor,
                purpose: "patient".into(),
                at: DateTime::UNIX_EPOCH,
            }]);
    }

    fn page_view(patient_ids: Vec<Uuid>) -> RecordAccessCommand {
        RecordAccessCommand::RecordPatientsViewed {
            actor: Actor {
                user_id: Uuid::from_u128(7),
                username: "dr_who".into(),
                role: crate::Role::Doctor,
            },
            patient_ids,
            purpose: "patients:summary".into(),
            now: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_page_of_patients_is_one_event_naming_each() {
        let ids = vec![Uuid::from_u128(1), Uuid::from_u128(2)];
        TestFramework::<RecordAccess>::with(())
            .given_no_previous_events()
            .when(page_view(ids.clone()))
            .then_expect_events(vec![RecordAccessEvent::PatientRecordsViewed {
                patient_ids: ids,
                viewer_id: Uuid::from_u128(7),
                viewer_username: "dr_who".into(),
                viewer_role: crate::Role::Doctor,
                purpose: "patients:summary".into(),
                at: DateTime::UNIX_EPOCH,
            }]);
    }

    #[test]
    fn a_page_view_names_some_patients_each_once_and_not_too_many() {
        for ids in [
            vec![],
            vec![Uuid::from_u128(1), Uuid::from_u128(1)],
            (0..=MAX_PATIENTS_PER_VIEW as u128)
                .map(Uuid::from_u128)
                .collect(),
        ] {
            TestFramework::<RecordAccess>::with(())
                .given_no_previous_events()
                .when(page_view(ids))
                .then_expect_error(RecordAccessError::PatientCount);
        }
    }

    #[test]
    fn a_recorded_view_is_never_rewritten() {
        let first = TestFramework::<RecordAccess>::with(())
            .given_no_previous_events()
            .when(view())
            .inspect_result()
            .expect("recorded");
        TestFramework::<RecordAccess>::with(())
            .given(first)
            .when(view())
            .then_expect_error(RecordAccessError::AlreadyRecorded);
    }
}
