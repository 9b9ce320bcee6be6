//! The aggregate types of the domain, by their persisted name: how to decode their
//! events (through the upcasters) and how to fold a stream into state. One table, so
//! `verify` and `state` cover a new aggregate as soon as it is listed here.

use cqrs_es::persist::EventUpcaster;
use cqrs_es::Aggregate;
use hms_domain::appointment::Appointment;
use hms_domain::billing::Invoice;
use hms_domain::hospital::Hospital;
use hms_domain::patient::Patient;
use hms_domain::record_access::RecordAccess;
use hms_domain::user::User;
use hms_projections::{ProjectionError, StoredEvent};
use serde_json::Value;

use crate::{ReplayError, Result};

type Upcasters = [Box<dyn EventUpcaster>];

pub(crate) struct Kind {
    pub aggregate_type: &'static str,
    /// Decodes one event with today's code, upcasting older versions first.
    pub check: fn(&StoredEvent, &Upcasters) -> Result<(), ProjectionError>,
    /// Applies events (in sequence order) to a fresh aggregate; the state as JSON.
    pub fold: fn(&[StoredEvent], &Upcasters) -> Result<Value>,
}

const fn kind<A: Aggregate>() -> Kind {
    Kind {
        aggregate_type: A::TYPE,
        check: check::<A>,
        fold: fold::<A>,
    }
}

static KINDS: [Kind; 6] = [
    kind::<Hospital>(),
    kind::<User>(),
    kind::<Patient>(),
    kind::<Appointment>(),
    kind::<Invoice>(),
    kind::<RecordAccess>(),
];

pub(crate) fn find(aggregate_type: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.aggregate_type == aggregate_type)
}

pub(crate) fn find_or_err(aggregate_type: &str) -> Result<&'static Kind> {
    find(aggregate_type).ok_or_else(|| ReplayError::UnknownAggregateType {
        given: aggregate_type.to_owned(),
        known: known(),
    })
}

pub(crate) fn known() -> String {
    KINDS
        .iter()
        .map(|k| k.aggregate_type)
        .collect::<Vec<_>>()
        .join(", ")
}

fn check<A: Aggregate>(
    event: &StoredEvent,
    upcasters: &[Box<dyn EventUpcaster>],
) -> Result<(), ProjectionError> {
    event.decode::<A>(upcasters).map(drop)
}

fn fold<A: Aggregate>(
    events: &[StoredEvent],
    upcasters: &[Box<dyn EventUpcaster>],
) -> Result<Value> {
    let mut aggregate = A::default();
    for event in events {
        aggregate.apply(event.decode::<A>(upcasters)?);
    }
    Ok(serde_json::to_value(&aggregate)?)
}
