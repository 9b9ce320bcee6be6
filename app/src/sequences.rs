//! Numbers from a hospital's sequences (the MRN's `mrn_seq`), drawn in batches: the
//! registrations of one hospital waiting at the same moment share one statement
//! (`SELECT nextval(…) FROM generate_series(1, n)`) instead of one round trip each
//! ([`crate::batching`], one batcher per database).
//!
//! Nothing is cached: each number is drawn from PostgreSQL for a request waiting for it,
//! and the sequence stays the only authority (several replicas draw from it). As with a
//! single `nextval`, a number whose request then fails is not reused (a gap).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use tokio::sync::oneshot;

use crate::batching::Batcher;
use crate::error::AppError;

/// A sequence numbers are drawn from; only the ones named here (the statement names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sequence {
    /// Medical record numbers.
    Mrn,
}

impl Sequence {
    fn statement(self) -> &'static str {
        match self {
            Sequence::Mrn => "SELECT nextval('mrn_seq') FROM generate_series(1, $1::int)",
        }
    }
}

/// Why no number could be drawn; the cause is for the log only.
#[derive(Debug, Clone)]
struct Failed {
    unreachable: bool,
    cause: String,
}

struct Draw {
    pool: PgPool,
    sequence: Sequence,
    answer: oneshot::Sender<Result<i64, Failed>>,
}

/// One database on one server ([`hms_projections::database_key`]).
type DatabaseKey = String;

/// A batcher per database: a database that is slow or unreachable holds up the numbers
/// of its own hospital only, never another's. A database's batcher lives while draws
/// are in flight there and is let go with the last one, so a process that has served
/// thousands of hospitals keeps none for those it is not drawing from (each would hold
/// a parked task).
#[derive(Clone, Default)]
pub struct Sequences {
    batchers: Arc<Mutex<HashMap<DatabaseKey, Arc<Batcher<Draw>>>>>,
}

impl Sequences {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next number of `sequence` in the database behind `pool`.
    pub async fn next(&self, pool: &PgPool, sequence: Sequence) -> Result<i64, AppError> {
        let (answer, drawn) = oneshot::channel();
        // Held until answered (or this request is dropped): the batcher and its queue
        // must outlive the draw.
        let held = self.batcher(pool);
        held.batcher.push(Draw {
            pool: pool.clone(),
            sequence,
            answer,
        });
        let drawn = drawn.await;
        drop(held);
        match drawn {
            Ok(Ok(number)) => Ok(number),
            Ok(Err(Failed {
                unreachable: true,
                cause,
            })) => Err(AppError::unavailable(cause)),
            Ok(Err(Failed { cause, .. })) => Err(AppError::internal(cause)),
            Err(_) => Err(AppError::internal("the sequence batcher stopped")),
        }
    }

    /// Databases with draws in flight (each has a batcher).
    pub fn databases_drawing(&self) -> usize {
        self.lock().len()
    }

    fn batcher(&self, pool: &PgPool) -> Held<'_> {
        let key = hms_projections::database_key(pool);
        let batcher = self
            .lock()
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Batcher::new(draw_all)))
            .clone();
        Held {
            sequences: self,
            key,
            batcher,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DatabaseKey, Arc<Batcher<Draw>>>> {
        // Entries are whole values: a poisoned map is still consistent.
        self.batchers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One draw's hold on its database's batcher; the last hold removes it from the map.
struct Held<'a> {
    sequences: &'a Sequences,
    key: DatabaseKey,
    batcher: Arc<Batcher<Draw>>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let batcher = &self.batcher;
        // Holds are cloned under the same lock, so a count of two (the map's and this
        // one) means no other draw holds the batcher or can be about to.
        let mut batchers = self.sequences.lock();
        if Arc::strong_count(batcher) == 2
            && batchers
                .get(&self.key)
                .is_some_and(|b| Arc::ptr_eq(b, batcher))
        {
            batchers.remove(&self.key);
        }
    }
}

/// One statement per sequence in the batch (all of one database).
async fn draw_all(draws: Vec<Draw>) {
    let mut groups: HashMap<Sequence, Vec<Draw>> = HashMap::new();
    for draw in draws {
        groups.entry(draw.sequence).or_default().push(draw);
    }
    for group in groups.into_values() {
        draw_group(group).await;
    }
}

async fn draw_group(draws: Vec<Draw>) {
    let Some(first) = draws.first() else { return };
    let count = i32::try_from(draws.len()).unwrap_or(i32::MAX);
    let drawn: Result<Vec<i64>, sqlx::Error> = sqlx::query_scalar(first.sequence.statement())
        .bind(count)
        .fetch_all(&first.pool)
        .await;
    match drawn {
        Ok(mut numbers) if numbers.len() == draws.len() => {
            // In the order the requests came.
            numbers.sort_unstable();
            for (draw, number) in draws.into_iter().zip(numbers) {
                let _ = draw.answer.send(Ok(number));
            }
        }
        Ok(numbers) => fail(
            draws,
            Failed {
                unreachable: false,
                cause: format!("drew {} numbers for {} requests", numbers.len(), count),
            },
        ),
        Err(e) => fail(
            draws,
            Failed {
                unreachable: crate::tenancy::platform::is_unreachable(&e),
                cause: e.to_string(),
            },
        ),
    }
}

fn fail(draws: Vec<Draw>, failed: Failed) {
    for draw in draws {
        let _ = draw.answer.send(Err(failed.clone()));
    }
}
