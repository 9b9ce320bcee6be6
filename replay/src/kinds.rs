//! The aggregate types of the domain, by their persisted name: how to decode their
//! events (through the upcasters) and how to fold a stream into state. The list comes
//! from the domain ([`hms_domain::visit_aggregates`]), so `verify` and `state` cover every
//! aggregate, new ones included.

use std::sync::OnceLock;

use cqrs_es::persist::EventUpcaster;
use cqrs_es::Aggregate;
use hms_domain::AggregateVisitor;
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

struct Collect(Vec<Kind>);

impl AggregateVisitor for Collect {
    fn visit<A: Aggregate + 'static>(&mut self) {
        self.0.push(Kind {
            aggregate_type: A::TYPE,
            check: check::<A>,
            fold: fold::<A>,
        });
    }
}

fn kinds() -> &'static [Kind] {
    static KINDS: OnceLock<Vec<Kind>> = OnceLock::new();
    KINDS.get_or_init(|| {
        let mut all = Collect(Vec::new());
        hms_domain::visit_aggregates(&mut all);
        all.0
    })
}

pub(crate) fn find(aggregate_type: &str) -> Option<&'static Kind> {
    kinds().iter().find(|k| k.aggregate_type == aggregate_type)
}

pub(crate) fn find_or_err(aggregate_type: &str) -> Result<&'static Kind> {
    find(aggregate_type).ok_or_else(|| ReplayError::UnknownAggregateType {
        given: aggregate_type.to_owned(),
        known: known(),
    })
}

pub(crate) fn known() -> String {
    kinds()
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
    let aggregate = hms_app::usecases::audit::fold_with::<A>(events, upcasters)?;
    Ok(serde_json::to_value(&aggregate)?)
}
