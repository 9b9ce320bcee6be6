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

/// One database on one server.
type DatabaseKey = (String, u16, String);

/// A batcher per database: a database that is slow or unreachable holds up the numbers
/// of its own hospital only, never another's.
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
        self.batcher(pool).push(Draw {
            pool: pool.clone(),
            sequence,
            answer,
        });
        match drawn.await {
            Ok(Ok(number)) => Ok(number),
            Ok(Err(Failed {
                unreachable: true,
                cause,
            })) => Err(AppError::unavailable(cause)),
            Ok(Err(Failed { cause, .. })) => Err(AppError::internal(cause)),
            Err(_) => Err(AppError::internal("the sequence batcher stopped")),
        }
    }

    fn batcher(&self, pool: &PgPool) -> Arc<Batcher<Draw>> {
        let options = pool.connect_options();
        let key = (
            options.get_host().to_owned(),
            options.get_port(),
            options.get_database().unwrap_or_default().to_owned(),
        );
        self.batchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert_with(|| Arc::new(Batcher::new(draw_all)))
            .clone()
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
