//! The test catalogue: one stream per test or panel, named by its code, so a code is
//! defined once per hospital (a second definition finds the stream taken). Every change
//! is a new version; orders keep the version they were placed under.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::{LabError, TestDefinition};
use crate::common::{Actor, BoundedText};
use crate::permissions::{ensure_allowed, Operation};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LabTest {
    pub definition: Option<TestDefinition>,
    /// The catalogue version of this entry: 1 when defined, one more per revision.
    pub version: u32,
    pub retired: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LabTestCommand {
    Define {
        actor: Actor,
        definition: TestDefinition,
        now: DateTime<Utc>,
    },
    /// A new version: price, ranges, name, answers. The code stays.
    Revise {
        actor: Actor,
        definition: TestDefinition,
        now: DateTime<Utc>,
    },
    /// No longer orderable; existing orders keep their version.
    Retire {
        actor: Actor,
        reason: BoundedText,
        now: DateTime<Utc>,
    },
    Reinstate {
        actor: Actor,
        now: DateTime<Utc>,
    },
}

impl LabTestCommand {
    pub fn actor(&self) -> &Actor {
        use LabTestCommand as C;
        match self {
            C::Define { actor, .. }
            | C::Revise { actor, .. }
            | C::Retire { actor, .. }
            | C::Reinstate { actor, .. } => actor,
        }
    }

    pub fn operation(&self) -> Operation {
        Operation::ManageLabCatalogue
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LabTestEvent {
    LabTestDefined {
        definition: TestDefinition,
        version: u32,
        at: DateTime<Utc>,
    },
    LabTestRevised {
        definition: TestDefinition,
        version: u32,
        at: DateTime<Utc>,
    },
    LabTestRetired {
        reason: String,
        at: DateTime<Utc>,
    },
    LabTestReinstated {
        at: DateTime<Utc>,
    },
}

impl DomainEvent for LabTestEvent {
    fn event_type(&self) -> String {
        use LabTestEvent as E;
        match self {
            E::LabTestDefined { .. } => "LabTestDefined",
            E::LabTestRevised { .. } => "LabTestRevised",
            E::LabTestRetired { .. } => "LabTestRetired",
            E::LabTestReinstated { .. } => "LabTestReinstated",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

impl LabTest {
    pub fn decide(&self, command: LabTestCommand) -> Result<Vec<LabTestEvent>, LabError> {
        use LabTestCommand as C;
        use LabTestEvent as E;
        ensure_allowed(command.actor(), command.operation())?;
        let event = match command {
            C::Define {
                definition, now, ..
            } => {
                if self.definition.is_some() {
                    return Err(LabError::TestExists(definition.code.to_string()));
                }
                definition.validate()?;
                E::LabTestDefined {
                    definition,
                    version: 1,
                    at: now,
                }
            }
            C::Revise {
                definition, now, ..
            } => {
                let current = self.definition.as_ref().ok_or(LabError::TestNotFound)?;
                if current.code != definition.code {
                    return Err(LabError::CodeChanged);
                }
                definition.validate()?;
                if *current == definition {
                    return Err(LabError::NothingChanged);
                }
                E::LabTestRevised {
                    definition,
                    version: self.version + 1,
                    at: now,
                }
            }
            C::Retire { reason, now, .. } => {
                self.definition.as_ref().ok_or(LabError::TestNotFound)?;
                if self.retired {
                    return Err(LabError::TestRetired);
                }
                E::LabTestRetired {
                    reason: reason.to_string(),
                    at: now,
                }
            }
            C::Reinstate { now, .. } => {
                self.definition.as_ref().ok_or(LabError::TestNotFound)?;
                if !self.retired {
                    return Err(LabError::NothingChanged);
                }
                E::LabTestReinstated { at: now }
            }
        };
        Ok(vec![event])
    }
}

impl Aggregate for LabTest {
    const TYPE: &'static str = "lab_test";
    type Command = LabTestCommand;
    type Event = LabTestEvent;
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
        use LabTestEvent as E;
        match event {
            E::LabTestDefined {
                definition,
                version,
                ..
            }
            | E::LabTestRevised {
                definition,
                version,
                ..
            } => {
                self.definition = Some(definition);
                self.version = version;
            }
            E::LabTestRetired { .. } => self.retired = true,
            E::LabTestReinstated { .. } => self.retired = false,
        }
    }
}
