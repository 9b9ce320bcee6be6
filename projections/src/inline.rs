//! Read-model rows written by an append's own statement (docs/adr/0011).
//!
//! Most read models follow the log: the runner applies committed events in log order and
//! moves each projector's checkpoint in the same transaction. A few rows are needed by the
//! command's own answer at once; waiting for a round to write them costs the command a
//! share of that round on its path. Those rows are written *inline*: built from the events
//! being appended by the projector's own code, and inserted by the append's statement, so
//! they commit with the events or not at all. The runner still passes every event; a
//! projector finds such a row already at the event's version and leaves it (`fold_rows`'s
//! version guard), and a rebuild, which starts from empty tables, writes the same row
//! through the same code.
//!
//! An event that creates its row is inserted. A later event (an invoice's, docs/adr/0013)
//! replaces its row only where that row is at the stream's version before it: the runner
//! may not have brought the row up to date yet, and then folds the event itself.

use cqrs_es::persist::SerializedEvent;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

pub use crate::rows::{InlineRows, InlineWrite};
use crate::{ProjectionError, Result};

/// The rows that an append of `events` (decided, not yet sealed) writes inline: a
/// registration's row of the patient register, or an invoice's row and the payments and
/// lines its change adds. `earlier` are the events of the stream the command was decided
/// on, as loaded (only for streams of a type [`folds_earlier_events`] names). The first set
/// leads: the others are written only with it.
pub fn rows_written_inline(
    earlier: &[SerializedEvent],
    events: &[SerializedEvent],
) -> Result<Vec<InlineRows>> {
    if let Some(registration) = crate::projectors::patients::inline(events)? {
        return Ok(vec![registration]);
    }
    crate::projectors::invoices::inline(earlier, events)
}

/// Whether an append to a stream of `aggregate_type` builds its inline rows from the
/// stream's earlier events too, so the command path keeps them from its load.
pub fn folds_earlier_events(aggregate_type: &str) -> bool {
    aggregate_type == <hms_domain::billing::Invoice as cqrs_es::Aggregate>::TYPE
}

/// The rows an append wrote inline, as PostgreSQL stored them (returned by the append's own
/// statement): what a command answers with, exact at commit, without reading them again.
#[derive(Debug, Clone, Default)]
pub struct WrittenInline(Map<String, Value>);

impl WrittenInline {
    /// From the JSON object the append returns: each table's rows by its name
    /// ([`InlineRows::name`]).
    pub fn parse(json: &str) -> Result<Self> {
        serde_json::from_str(json)
            .map(Self)
            .map_err(|e| ProjectionError::Row(format!("rows written inline do not parse: {e}")))
    }

    /// The rows written to `table` (e.g. `patients`), as its row type.
    pub fn rows<R: DeserializeOwned>(&self, table: &str) -> Result<Vec<R>> {
        match self.0.get(table) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(rows) => Vec::<R>::deserialize(rows).map_err(|e| {
                ProjectionError::Row(format!("a row of {table} written inline does not map: {e}"))
            }),
        }
    }
}
