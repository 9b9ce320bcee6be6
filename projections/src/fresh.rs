//! Rows a catch-up round wrote, handed to the commands of this process that wait on that
//! round to answer with them (docs/adr/0017).
//!
//! A command that answers from a read model appends, waits until the hospital's round
//! has applied its events, then reads its row. The round had that row in hand: it wrote
//! it. A command says which row it will answer with before it appends ([`want`]); a round
//! that writes a wanted row has the statement return it as stored (`to_jsonb`, the same
//! typed mapping as a load) and, once its transaction commits, hands it to the waiting
//! command ([`Wanted::take`]). A row written by another process's round, a round that
//! failed, or a row at an older version than the command's write is not handed over: the
//! command reads it as before. Nothing is kept once the command is answered.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::database_key;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    database: String,
    table: &'static str,
    id: Uuid,
}

/// A wanted row: how many commands wait for it, and the newest version a committed round
/// handed over.
#[derive(Default)]
struct Slot {
    waiters: usize,
    row: Option<(i64, Value)>,
}

/// The rows commands of this process wait for. Entries live while a command holds its
/// [`Wanted`].
static WANTED: LazyLock<Mutex<HashMap<Key, Slot>>> = LazyLock::new(Default::default);

fn wanted() -> MutexGuard<'static, HashMap<Key, Slot>> {
    // Slots are whole values: a poisoned map is still consistent.
    WANTED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Row `id` of `table` in `database`, wanted by a command about to write it.
pub struct Wanted {
    key: Key,
}

/// Says that the caller will answer with row `id` of `table` in the database behind
/// `pool` once a round applied its write: a round of this process that writes the row
/// hands it over.
pub fn want(pool: &PgPool, table: &'static str, id: Uuid) -> Wanted {
    let key = Key {
        database: database_key(pool),
        table,
        id,
    };
    wanted().entry(key.clone()).or_default().waiters += 1;
    Wanted { key }
}

impl Wanted {
    /// The row as a committed round of this process stored it, if one did at `version`
    /// or later.
    pub fn take<R: DeserializeOwned>(&self, version: i64) -> Option<R> {
        let row = {
            let map = wanted();
            let (stored, row) = map.get(&self.key)?.row.as_ref()?;
            (*stored >= version).then(|| row.clone())?
        };
        serde_json::from_value(row).ok()
    }
}

impl Drop for Wanted {
    fn drop(&mut self) {
        let mut map = wanted();
        if let Some(slot) = map.get_mut(&self.key) {
            slot.waiters -= 1;
            if slot.waiters == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// The round under way in this task: its database, and the wanted rows it wrote, held
/// until its transaction commits.
struct Round {
    database: String,
    written: RefCell<Vec<(Key, i64, Value)>>,
}

tokio::task_local! {
    static ROUND: Round;
}

/// Runs `round` (a catch-up of the database behind `pool`) so that the rows it writes can
/// be handed over ([`committed`]).
pub(crate) async fn in_round<F: std::future::Future>(pool: &PgPool, round: F) -> F::Output {
    let round_of = Round {
        database: database_key(pool),
        written: RefCell::new(Vec::new()),
    };
    ROUND.scope(round_of, round).await
}

/// Which of `ids` of `table` a command of this process waits for, in the round under way
/// (none outside a round: a rebuild, a lane of a fan-out).
pub(crate) fn wanted_among(table: &'static str, ids: impl Iterator<Item = Uuid>) -> Vec<Uuid> {
    ROUND
        .try_with(|round| {
            let map = wanted();
            if map.is_empty() {
                return Vec::new();
            }
            let mut key = Key {
                database: round.database.clone(),
                table,
                id: Uuid::nil(),
            };
            let mut found = Vec::new();
            for id in ids {
                key.id = id;
                if map.contains_key(&key) {
                    found.push(id);
                }
            }
            found
        })
        .unwrap_or_default()
}

/// Notes row `id` of `table` as the round's statement stored it (`row`, `to_jsonb`), at
/// the stream's `version`: handed over if the round commits.
pub(crate) fn written(table: &'static str, id: Uuid, version: i64, row: Value) {
    let _ = ROUND.try_with(|round| {
        let key = Key {
            database: round.database.clone(),
            table,
            id,
        };
        round.written.borrow_mut().push((key, version, row));
    });
}

/// The round's transaction committed: its wanted rows go to the commands waiting.
pub(crate) fn committed() {
    let _ = ROUND.try_with(|round| {
        let written = std::mem::take(&mut *round.written.borrow_mut());
        if written.is_empty() {
            return;
        }
        let mut map = wanted();
        for (key, version, row) in written {
            if let Some(slot) = map.get_mut(&key) {
                if slot.row.as_ref().is_none_or(|(v, _)| *v < version) {
                    slot.row = Some((version, row));
                }
            }
        }
    });
}

/// The round's transaction did not commit (or a batch starts afresh): nothing it wrote
/// is handed over.
pub(crate) fn discarded() {
    let _ = ROUND.try_with(|round| round.written.borrow_mut().clear());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(database: &str) -> PgPool {
        PgPool::connect_lazy(&format!("postgres://hms@127.0.0.1:5432/{database}"))
            .expect("a lazy pool")
    }

    #[tokio::test]
    async fn a_wanted_row_is_handed_over_only_once_its_round_commits_at_its_version() {
        let pool = pool("fresh_a");
        let (id, other) = (Uuid::new_v4(), Uuid::new_v4());
        let wanted = want(&pool, "invoices", id);
        in_round(&pool, async {
            assert_eq!(wanted_among("invoices", [id, other].into_iter()), vec![id]);
            written("invoices", id, 4, json!({ "version": 4 }));
            // The transaction did not commit: nothing is handed over.
            discarded();
            committed();
        })
        .await;
        assert!(wanted.take::<Value>(4).is_none());
        in_round(&pool, async {
            written("invoices", id, 5, json!({ "version": 5 }));
            written("invoices", other, 5, json!({ "version": 5 }));
            committed();
        })
        .await;
        assert_eq!(wanted.take::<Value>(5), Some(json!({ "version": 5 })));
        assert!(wanted.take::<Value>(6).is_none(), "older than the write");
        drop(wanted);
        assert!(!wanted_map_holds(&pool, id) && !wanted_map_holds(&pool, other));
    }

    #[tokio::test]
    async fn another_database_and_work_outside_a_round_hand_nothing_over() {
        let (pool, elsewhere) = (pool("fresh_b"), pool("fresh_c"));
        let id = Uuid::new_v4();
        let wanted = want(&pool, "invoices", id);
        // A rebuild or a fan-out lane writes outside a round.
        assert!(wanted_among("invoices", [id].into_iter()).is_empty());
        written("invoices", id, 2, json!({}));
        committed();
        in_round(&elsewhere, async {
            assert!(wanted_among("invoices", [id].into_iter()).is_empty());
            written("invoices", id, 2, json!({}));
            committed();
        })
        .await;
        assert!(wanted.take::<Value>(1).is_none());
    }

    fn wanted_map_holds(pool: &PgPool, id: Uuid) -> bool {
        wanted().contains_key(&Key {
            database: database_key(pool),
            table: "invoices",
            id,
        })
    }
}
