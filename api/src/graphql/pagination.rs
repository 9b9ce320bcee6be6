//! Cursor connections over the application's keyset pages: a cursor is an opaque
//! encoding of [`Keyset`] (sort key and id), decoded once here.

use async_graphql::connection::{Connection, CursorType, Edge, EmptyFields, OpaqueCursor};
use async_graphql::OutputType;

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
