//! Keyset pagination, independent of how a cursor is spelled on the wire: a page is
//! "the next `size` rows after (sort key, id)", so pages stay stable and cheap however
//! deep the client goes. The API encodes a [`Keyset`] as an opaque cursor.

use serde::{Deserialize, Serialize};

use crate::error::{AppError, Result};

pub const DEFAULT_PAGE_SIZE: i64 = 20;
pub const MAX_PAGE_SIZE: i64 = 100;

/// Where a page ends: the row's sort key (as text) and its id as a tie-breaker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Keyset {
    pub key: String,
    pub id: String,
}

/// A validated page request.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// Rows to return.
    pub size: i64,
    pub after: Option<Keyset>,
}

/// One page of rows, each with the keyset a next page would start after.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<(Keyset, T)>,
    pub has_previous: bool,
    pub has_next: bool,
}

impl<T> Page<T> {
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(|(k, t)| (k, f(t))).collect(),
            has_previous: self.has_previous,
            has_next: self.has_next,
        }
    }

    pub fn try_map<U>(self, mut f: impl FnMut(T) -> Result<U>) -> Result<Page<U>> {
        let items = self
            .items
            .into_iter()
            .map(|(k, t)| f(t).map(|u| (k, u)))
            .collect::<Result<_>>()?;
        Ok(Page {
            items,
            has_previous: self.has_previous,
            has_next: self.has_next,
        })
    }
}

impl PageRequest {
    pub fn new(first: Option<i32>, after: Option<Keyset>) -> Result<Self> {
        let size = match first {
            None => DEFAULT_PAGE_SIZE,
            Some(n) if (1..=MAX_PAGE_SIZE).contains(&i64::from(n)) => i64::from(n),
            Some(_) => {
                return Err(AppError::validation(
                    "first",
                    format!("must be between 1 and {MAX_PAGE_SIZE}"),
                ))
            }
        };
        Ok(Self { size, after })
    }

    /// Rows to fetch: one more than the page, to know whether another page follows.
    /// The `after` cursor of a page ordered by an instant, then a uuid: both, or neither
    /// on the first page; VALIDATION for a cursor of another kind.
    pub fn after_instant_and_id(
        &self,
    ) -> Result<(Option<chrono::DateTime<chrono::Utc>>, Option<uuid::Uuid>)> {
        let Some(k) = &self.after else {
            return Ok((None, None));
        };
        let invalid = || AppError::validation("after", "is not a cursor from this API");
        let at = chrono::DateTime::parse_from_rfc3339(&k.key)
            .map_err(|_| invalid())?
            .with_timezone(&chrono::Utc);
        let id = uuid::Uuid::parse_str(&k.id).map_err(|_| invalid())?;
        Ok((Some(at), Some(id)))
    }

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

    /// The page from up to `fetch_limit` rows in order.
    pub fn page<T>(&self, mut rows: Vec<T>, keyset: impl Fn(&T) -> Keyset) -> Page<T> {
        let has_next = rows.len() as i64 > self.size;
        rows.truncate(usize::try_from(self.size).unwrap_or(0));
        Page {
            items: rows.into_iter().map(|row| (keyset(&row), row)).collect(),
            has_previous: self.after.is_some(),
            has_next,
        }
    }
}
