//! Numbers from a hospital's sequences (the MRN's `mrn_seq`), drawn in batches: the
//! registrations waiting at the same moment share one statement
//! (`SELECT nextval(…) FROM generate_series(1, n)`) instead of one round trip each
//! ([`crate::batching`]).
//!
//! Nothing is cached: each number is drawn from PostgreSQL for a request waiting for it,
//! and the sequence stays the only authority (several replicas draw from it). As with a
//! single `nextval`, a number whose request then fails is not reused (a gap).

use std::collections::HashMap;
use std::sync::Arc;

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

#[derive(Clone)]
pub struct Sequences {
    queued: Arc<Batcher<Draw>>,
}

impl Default for Sequences {
    fn default() -> Self {
        Self::new()
    }
}

impl Sequences {
    pub fn new() -> Self {
        Self {
            queued: Arc::new(Batcher::new(draw_all)),
        }
    }

    /// The next number of `sequence` in the database behind `pool`.
    pub async fn next(&self, pool: &PgPool, sequence: Sequence) -> Result<i64, AppError> {
        let (answer, drawn) = oneshot::channel();
        self.queued.push(Draw {
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
}

/// One statement per database and sequence in the batch, run side by side (one slow
/// database does not hold up another's numbers).
async fn draw_all(draws: Vec<Draw>) {
    let mut groups: HashMap<(String, u16, String, Sequence), Vec<Draw>> = HashMap::new();
    for draw in draws {
        let options = draw.pool.connect_options();
        let key = (
            options.get_host().to_owned(),
            options.get_port(),
            options.get_database().unwrap_or_default().to_owned(),
            draw.sequence,
        );
        groups.entry(key).or_default().push(draw);
    }
    futures::future::join_all(groups.into_values().map(draw_group)).await;
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
