//! A specimen label (the barcode on the tube) belongs to one specimen in the hospital: one
//! stream per label, claimed once. Collecting a specimen claims its label first, so two
//! orders cannot take the same barcode even when they are collected at the same moment.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{LabError, SpecimenLabel};
use crate::common::Actor;
use crate::permissions::{ensure_allowed, Operation};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpecimenLabelClaim {
    pub order_id: Option<Uuid>,
    pub specimen_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SpecimenLabelCommand {
    Claim {
        actor: Actor,
        label: SpecimenLabel,
        order_id: Uuid,
        specimen_id: Uuid,
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SpecimenLabelEvent {
    SpecimenLabelClaimed {
        label: SpecimenLabel,
        order_id: Uuid,
        specimen_id: Uuid,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for SpecimenLabelEvent {
    fn event_type(&self) -> String {
        "SpecimenLabelClaimed".to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

impl SpecimenLabelClaim {
    /// Claims the label for a specimen. Claiming it again for the same specimen changes
    /// nothing (a retried collection); for any other specimen it is refused.
    pub fn decide(
        &self,
        command: SpecimenLabelCommand,
    ) -> Result<Vec<SpecimenLabelEvent>, LabError> {
        let SpecimenLabelCommand::Claim {
            actor,
            label,
            order_id,
            specimen_id,
            now,
        } = command;
        ensure_allowed(&actor, Operation::CollectSpecimen)?;
        match self.specimen_id {
            Some(claimed) if claimed == specimen_id => Ok(Vec::new()),
            Some(_) => Err(LabError::LabelTaken(label.to_string())),
            None => Ok(vec![SpecimenLabelEvent::SpecimenLabelClaimed {
                label,
                order_id,
                specimen_id,
                at: now,
            }]),
        }
    }
}

impl Aggregate for SpecimenLabelClaim {
    const TYPE: &'static str = "lab_specimen_label";
    type Command = SpecimenLabelCommand;
    type Event = SpecimenLabelEvent;
    type Error = LabError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let SpecimenLabelEvent::SpecimenLabelClaimed {
            order_id,
            specimen_id,
            ..
        } = event;
        self.order_id = Some(order_id);
        self.specimen_id = Some(specimen_id);
    }
}
