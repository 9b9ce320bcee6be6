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
//! Only an event that creates its row may be written inline: a later event folds onto a
//! row the runner may not have brought up to date yet.

use cqrs_es::persist::SerializedEvent;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

pub use crate::rows::InlineRows;
use crate::{ProjectionError, Result};

/// The rows that an append of `events` (decided, not yet sealed) writes inline: a
/// registration's row of the patient register, a booking's row of the appointments.
pub fn rows_written_inline(events: &[SerializedEvent]) -> Result<Vec<InlineRows>> {
    Ok(crate::projectors::patients::inline(events)?
        .into_iter()
        .chain(crate::projectors::appointments::inline(events)?)
        .collect())
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

    /// Whether any row was written (an inline write's own condition may have held none
    /// back while the events landed).
    pub fn wrote_any(&self) -> bool {
        self.0
            .values()
            .any(|rows| rows.as_array().is_some_and(|rows| !rows.is_empty()))
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
