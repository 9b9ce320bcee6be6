//! Cursor connections with keyset pagination: a page is "the next `first` rows after
//! (sort key, id)", so pages stay stable and cheap however deep the client goes.

use async_graphql::connection::{Connection, Edge, EmptyFields, OpaqueCursor};
use async_graphql::OutputType;
use serde::{Deserialize, Serialize};

use super::error::ApiError;

pub const DEFAULT_PAGE_SIZE: i64 = 20;
pub const MAX_PAGE_SIZE: i64 = 100;

/// Where a page ends: the row's sort key (as text) and its id as a tie-breaker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Keyset {
    pub key: String,
    pub id: String,
}

pub type Cursor = OpaqueCursor<Keyset>;
pub type Page<T> = Connection<Cursor, T, EmptyFields, EmptyFields>;

/// A validated page request.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// Rows to return.
    pub size: i64,
    pub after: Option<Keyset>,
}

impl PageRequest {
    pub fn new(first: Option<i32>, after: Option<String>) -> Result<Self, ApiError> {
        let size = match first {
            None => DEFAULT_PAGE_SIZE,
            Some(n) if (1..=MAX_PAGE_SIZE).contains(&i64::from(n)) => i64::from(n),
            Some(_) => {
                return Err(ApiError::validation(
                    "first",
                    format!("must be between 1 and {MAX_PAGE_SIZE}"),
                ))
            }
        };
        let after = after
            .map(|raw| {
                <Cursor as async_graphql::connection::CursorType>::decode_cursor(&raw)
                    .map(|c| c.0)
                    .map_err(|_| ApiError::validation("after", "is not a cursor from this API"))
            })
            .transpose()?;
        Ok(Self { size, after })
    }

    /// Rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch_limit(&self) -> i64 {
        self.size + 1
    }

    /// The `after` key and id, or values that sort before everything.
    pub fn after_or(&self, lowest_key: &str) -> (String, String) {
        match &self.after {
            Some(k) => (k.key.clone(), k.id.clone()),
            None => (lowest_key.to_owned(), String::new()),
        }
    }

    /// Builds the connection from up to `fetch_limit` rows in order.
    pub fn connection<T: OutputType>(
        &self,
        mut rows: Vec<T>,
        keyset: impl Fn(&T) -> Keyset,
    ) -> Page<T> {
        let has_next = rows.len() as i64 > self.size;
        rows.truncate(usize::try_from(self.size).unwrap_or(0));
        let mut page = Connection::new(self.after.is_some(), has_next);
        page.edges.extend(
            rows.into_iter()
                .map(|row| Edge::new(OpaqueCursor(keyset(&row)), row)),
        );
        page
    }
}
