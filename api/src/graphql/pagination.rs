//! Cursor connections over the application's keyset pages: a cursor is an opaque
//! encoding of [`Keyset`] (sort key and id), decoded once here.

use async_graphql::connection::{Connection, CursorType, Edge, EmptyFields, OpaqueCursor};
use async_graphql::{Context, Lookahead, OutputType};

use super::error::ApiError;
pub use hms_app::page::{Keyset, PageRequest, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

pub type Cursor = OpaqueCursor<Keyset>;
pub type Page<T> = Connection<Cursor, T, EmptyFields, EmptyFields>;

/// A page request from GraphQL's `first` and `after`.
pub fn page_request(first: Option<i32>, after: Option<String>) -> Result<PageRequest, ApiError> {
    Ok(PageRequest::new(first, decode_cursor(after)?)?)
}

/// The keyset inside an `after` cursor, or VALIDATION.
pub fn decode_cursor(after: Option<String>) -> Result<Option<Keyset>, ApiError> {
    after
        .map(|raw| {
            Cursor::decode_cursor(&raw)
                .map(|c| c.0)
                .map_err(|_| ApiError::validation("after", "is not a cursor from this API"))
        })
        .transpose()
}

/// The connection for one page of the application's rows.
pub fn connection<T: OutputType>(page: hms_app::page::Page<T>) -> Page<T> {
    let mut out = Connection::new(page.has_previous, page.has_next);
    out.edges.extend(
        page.items
            .into_iter()
            .map(|(keyset, row)| Edge::new(OpaqueCursor(keyset), row)),
    );
    out
}

/// Whether the selection `look` asks for any of `fields` (aliases and fragments included):
/// what a response will show, known before it is read.
pub fn selects(look: &Lookahead<'_>, fields: &[&str]) -> bool {
    fields.iter().any(|f| look.field(f).exists())
}

/// [`selects`] on the nodes of the connection being resolved (through `edges { node }`
/// or `nodes`).
pub fn nodes_select(ctx: &Context<'_>, fields: &[&str]) -> bool {
    let look = ctx.look_ahead();
    selects(&look.field("edges").field("node"), fields) || selects(&look.field("nodes"), fields)
}

/// A field that records an access in the log and reads it, for each node it is
/// selected on (`history`), costs this much more than its page.
pub const RECORD_READ_COST: usize = 200;

/// The complexity of a page: the nodes it may return (`first`, or the default page
/// size) times what each costs (`child_complexity`, the selection under the field).
pub fn page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let size = first.map_or(DEFAULT_PAGE_SIZE, |n| i64::from(n).clamp(1, MAX_PAGE_SIZE));
    usize::try_from(size)
        .unwrap_or(1)
        .saturating_mul(child_complexity.max(1))
}
