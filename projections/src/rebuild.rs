//! Rebuilding read models from the log, online.
//!
//! The projector's own code fills fresh copies of its tables in the schema
//! [`REBUILD_SCHEMA`] (its unqualified SQL is pointed there through `search_path`), with a
//! checkpoint of its own, one short transaction per batch — so the API keeps reading the
//! old tables, the rebuild survives an interruption and resumes where it stopped, and no
//! long transaction holds back the live readers. The swap is one transaction:
//! it takes the live projector's lock (pausing it), applies the last few events, replaces
//! the live tables with the rebuilt ones (keeping index names), and hands the rebuild's
//! checkpoint to the live projector.

use sqlx::{PgConnection, PgPool};

use crate::log::LogCursor;
use crate::runner::{self, Target};
use crate::{ProjectionError, Projector, Result};

/// Where rebuilt tables are made before the swap.
pub const REBUILD_SCHEMA: &str = "hms_rebuild";

/// Progress of one rebuild, reported after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildProgress {
    /// Events applied so far in this run.
    pub applied: u64,
    /// The rebuild's checkpoint.
    pub checkpoint: LogCursor,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    pub projector: &'static str,
    /// Events applied by this run (a resumed rebuild counts only the rest).
    pub applied: u64,
    pub resumed: bool,
}

/// Rebuilds one projector's tables from position 0 and swaps them in. With `restart`,
/// an earlier unfinished rebuild is discarded; without it, it is resumed.
pub async fn rebuild(
    pool: &PgPool,
    projector: &dyn Projector,
    restart: bool,
    on_progress: &mut (dyn FnMut(RebuildProgress) + Send),
) -> Result<RebuildReport> {
    if !projector.rebuildable() {
        return Err(ProjectionError::Busy(format!(
            "{} cannot be rebuilt: its table is evidence of the log's integrity",
            projector.name()
        )));
    }
    let resumed = prepare(pool, projector, restart).await?;
    let mut applied = 0u64;
    let mut report_batch = |n: usize, checkpoint: LogCursor| {
        applied += n as u64;
        on_progress(RebuildProgress {
            applied,
            checkpoint,
        });
    };
    let progress =
        runner::catch_up_one(pool, projector, Target::Rebuild, &mut report_batch).await?;
    if progress.busy {
        return Err(ProjectionError::Busy(format!(
            "another process is rebuilding {}",
            projector.name()
        )));
    }
    let tail = swap(pool, projector).await?;
    Ok(RebuildReport {
        projector: projector.name(),
        applied: applied + tail,
        resumed,
    })
}

/// Creates the fresh tables (empty copies of the live ones, with their indexes) and the
/// rebuild checkpoint, unless a resumable rebuild is there. Returns whether it resumes.
async fn prepare(pool: &PgPool, projector: &dyn Projector, restart: bool) -> Result<bool> {
    let checkpoint = Target::Rebuild.checkpoint_name(projector.name());
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {REBUILD_SCHEMA}"))
        .execute(&mut *tx)
        .await?;
    let existing: Option<i64> = sqlx::query_scalar(
        "SELECT last_position FROM public.projection_checkpoints WHERE projector = $1",
    )
    .bind(&checkpoint)
    .fetch_optional(&mut *tx)
    .await?;
    let resume = existing.is_some() && !restart;
    if !resume {
        for table in projector.tables() {
            sqlx::query(&format!("DROP TABLE IF EXISTS {REBUILD_SCHEMA}.{table}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!(
                "CREATE TABLE {REBUILD_SCHEMA}.{table} (LIKE public.{table} INCLUDING ALL)"
            ))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM public.projection_checkpoints WHERE projector = $1")
            .bind(&checkpoint)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO public.projection_checkpoints (projector) VALUES ($1)")
            .bind(&checkpoint)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(resume)
}

/// Replaces the live tables with the rebuilt ones in one transaction, after applying
/// whatever arrived since the last batch. Returns how many events that was.
async fn swap(pool: &PgPool, projector: &dyn Projector) -> Result<u64> {
    let live = Target::Live.checkpoint_name(projector.name());
    let rebuilt = Target::Rebuild.checkpoint_name(projector.name());
    runner::ensure_checkpoint(pool, &live).await?;
    let mut tx = pool.begin().await?;
    // Readers hold only brief locks; don't wait forever on a stuck one.
    sqlx::query("SET LOCAL lock_timeout = '30s'")
        .execute(&mut *tx)
        .await?;
    // Pause the live projector (it waits on this lock or skips its turn).
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(Target::Live.lock_key(projector.name()))
        .execute(&mut *tx)
        .await?;
    let mut tail = 0u64;
    loop {
        let (n, _) =
            runner::apply_batch(&mut tx, projector, Target::Rebuild, runner::BATCH_SIZE).await?;
        tail += n as u64;
        if n == 0 {
            break;
        }
    }
    sqlx::query("SET LOCAL search_path = public")
        .execute(&mut *tx)
        .await?;
    for table in projector.tables() {
        replace_table(&mut tx, table).await?;
    }
    sqlx::query(
        "UPDATE public.projection_checkpoints AS live \
            SET last_transaction_id = r.last_transaction_id, last_position = r.last_position, \
                events_applied = r.events_applied, updated_at = now(), \
                failing_position = NULL, last_error = NULL \
           FROM public.projection_checkpoints AS r \
          WHERE live.projector = $1 AND r.projector = $2",
    )
    .bind(&live)
    .bind(&rebuilt)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM public.projection_checkpoints WHERE projector = $1")
        .bind(&rebuilt)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(tail)
}

/// `public.<table>` := `hms_rebuild.<table>`, with the live table's index names, so later
/// migrations that name an index still find it.
async fn replace_table(tx: &mut PgConnection, table: &str) -> Result<()> {
    let indexes = |schema: &'static str| {
        sqlx::query_as::<_, (String, String)>(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2",
        )
        .bind(schema)
        .bind(table.to_owned())
    };
    let old: Vec<(String, String)> = indexes("public").fetch_all(&mut *tx).await?;
    let new: Vec<(String, String)> = indexes(REBUILD_SCHEMA).fetch_all(&mut *tx).await?;
    sqlx::query(&format!("DROP TABLE public.{table}"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "ALTER TABLE {REBUILD_SCHEMA}.{table} SET SCHEMA public"
    ))
    .execute(&mut *tx)
    .await?;
    for (old_name, old_def) in &old {
        let wanted = index_shape(old_def);
        let Some((new_name, _)) = new.iter().find(|(_, def)| index_shape(def) == wanted) else {
            continue;
        };
        if new_name != old_name {
            sqlx::query(&format!(
                "ALTER INDEX public.\"{new_name}\" RENAME TO \"{old_name}\""
            ))
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

/// An index definition without its name and schema: `CREATE UNIQUE INDEX x ON s.t USING
/// btree (lower(username))` → `CREATE UNIQUE INDEX ON t USING btree (lower(username))`.
fn index_shape(def: &str) -> String {
    let Some((head, rest)) = def.split_once(" ON ") else {
        return def.to_owned();
    };
    let head = head.rsplit_once(' ').map_or(head, |(kind, _name)| kind);
    let rest = rest
        .split_once('.')
        .filter(|(schema, _)| !schema.contains(' '))
        .map_or(rest, |(_, table)| table);
    format!("{head} ON {rest}")
}

#[cfg(test)]
mod tests {
    use super::index_shape;

    #[test]
    fn index_shapes_ignore_name_and_schema() {
        assert_eq!(
            index_shape("CREATE UNIQUE INDEX staff_username ON public.staff USING btree (lower(username))"),
            index_shape("CREATE UNIQUE INDEX staff_lower_idx ON hms_rebuild.staff USING btree (lower(username))"),
        );
        assert_ne!(
            index_shape("CREATE INDEX a ON public.staff USING btree (role)"),
            index_shape("CREATE INDEX a ON public.staff USING btree (department_id)"),
        );
    }
}
