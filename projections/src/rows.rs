//! Set-based writes for read models kept as one row per key.
//!
//! Writing each event as its own `UPDATE` costs a round trip per event, which caps a
//! projector at a few thousand events per second whatever the database could do. A
//! [`RowSet`] instead holds the rows a batch touches: it loads the existing ones with one
//! `SELECT`, the projector folds the batch's events onto them in memory, in log order, and
//! [`RowSet::store`] writes the outcome with at most three statements (delete, update,
//! insert) however many events there were. Folding events in memory and writing the last
//! state of each row gives the same rows as applying them one at a time; the projectors use
//! this one path for single events too, so the two cannot drift apart.
//!
//! Rows travel as JSON text: a row type's serde field names are the table's column names,
//! and PostgreSQL's `json_populate_recordset(NULL::table, …)` turns them back into typed
//! rows (as plain `json`, which is parsed once, not built into `jsonb` first). The table name stays unqualified, so a rebuild's `search_path` still applies.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::Postgres;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{ProjectionError, Result};

/// What a batch did to one row.
enum Slot<R> {
    /// As loaded; not changed (yet).
    Loaded(R),
    /// Loaded, then changed.
    Changed(R),
    /// Not in the table before this batch.
    New(R),
    /// To be deleted (whether or not it was loaded).
    Removed,
}

/// The rows of one table that a batch reads or writes, by key.
pub(crate) struct RowSet<K, R> {
    table: &'static str,
    key: &'static str,
    rows: HashMap<K, Slot<R>>,
}

impl<K, R> RowSet<K, R>
where
    K: Eq + Hash + Clone + Send + Sync + DeserializeOwned,
    Vec<K>: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
    R: Serialize + DeserializeOwned + Send + Sync,
{
    /// An empty set for `table`, whose primary key is the column `key`.
    pub(crate) fn new(table: &'static str, key: &'static str) -> Self {
        Self {
            table,
            key,
            rows: HashMap::new(),
        }
    }

    /// The table the rows are of.
    pub(crate) fn table(&self) -> &'static str {
        self.table
    }

    /// Loads the rows with these keys (one statement; keys not in the table are skipped).
    pub(crate) async fn load(&mut self, tx: &mut PgConnection, keys: Vec<K>) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let found: Vec<(Value, Value)> = sqlx::query_as(&format!(
            "SELECT to_jsonb(t.{key}), to_jsonb(t) FROM {table} AS t WHERE t.{key} = ANY($1)",
            key = self.key,
            table = self.table
        ))
        .bind(keys)
        .fetch_all(&mut *tx)
        .await?;
        for (key, row) in found {
            let key = self.decode_key(key)?;
            self.keep_loaded(key, row)?;
        }
        Ok(())
    }

    fn decode_key(&self, key: Value) -> Result<K> {
        serde_json::from_value(key).map_err(|e| unmappable(self.table, e))
    }

    /// Keeps a row as a load read it (`to_jsonb`), unless the set holds that key already.
    fn keep_loaded(&mut self, key: K, row: Value) -> Result<()> {
        let row: R = serde_json::from_value(row).map_err(|e| unmappable(self.table, e))?;
        self.rows.entry(key).or_insert(Slot::Loaded(row));
        Ok(())
    }

    /// Loads, of the rows with these keys, those behind the version paired with each (the
    /// newest event a batch holds for the row's stream), in one statement; returns the keys
    /// whose rows are at that version or past it already (their events are in them: a
    /// creating append wrote the row inline, docs/adr/0011). Those rows are not read, so a
    /// batch of registrations reads no register rows. The table has a `version` column.
    pub(crate) async fn load_behind(
        &mut self,
        tx: &mut PgConnection,
        keys: Vec<K>,
        through: Vec<i64>,
    ) -> Result<HashSet<K>> {
        let mut current = HashSet::new();
        if keys.is_empty() {
            return Ok(current);
        }
        let found: Vec<(Value, Option<Value>)> = sqlx::query_as(&format!(
            "SELECT to_jsonb(w.k), CASE WHEN t.version < w.through THEN to_jsonb(t) END \
               FROM unnest($1, $2::bigint[]) AS w(k, through) \
               JOIN {table} AS t ON t.{key} = w.k",
            key = self.key,
            table = self.table
        ))
        .bind(keys)
        .bind(through)
        .fetch_all(&mut *tx)
        .await?;
        for (key, row) in found {
            let key = self.decode_key(key)?;
            match row {
                Some(row) => self.keep_loaded(key, row)?,
                None => {
                    current.insert(key);
                }
            }
        }
        Ok(current)
    }

    /// The row with this key for changing, if it exists (loaded or added in this batch).
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut R> {
        let slot = self.rows.get_mut(key)?;
        if let Slot::Loaded(_) = slot {
            if let Slot::Loaded(row) = std::mem::replace(slot, Slot::Removed) {
                *slot = Slot::Changed(row);
            }
        }
        match slot {
            Slot::Changed(row) | Slot::New(row) => Some(row),
            Slot::Loaded(_) | Slot::Removed => None,
        }
    }

    /// The row with this key as the set holds it now, without marking it changed.
    pub(crate) fn get(&self, key: &K) -> Option<&R> {
        match self.rows.get(key)? {
            Slot::Loaded(row) | Slot::Changed(row) | Slot::New(row) => Some(row),
            Slot::Removed => None,
        }
    }

    /// The keys of the rows the set holds (loaded or new) that satisfy `pred`.
    pub(crate) fn keys_where(&self, pred: impl Fn(&R) -> bool) -> Vec<K> {
        self.rows
            .iter()
            .filter_map(|(k, slot)| match slot {
                Slot::Loaded(r) | Slot::Changed(r) | Slot::New(r) if pred(r) => Some(k.clone()),
                _ => None,
            })
            .collect()
    }

    /// The row with this key as the batch leaves it, taken out of the set (for a fold
    /// done in memory, never stored).
    pub(crate) fn take(&mut self, key: &K) -> Option<R> {
        match self.rows.remove(key)? {
            Slot::Loaded(row) | Slot::Changed(row) | Slot::New(row) => Some(row),
            Slot::Removed => None,
        }
    }

    /// Adds a row. A key that exists already is the caller's bug, reported by the
    /// table's primary key when the batch is stored (as a plain `INSERT` would be).
    pub(crate) fn insert(&mut self, key: K, row: R) {
        match self.rows.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(Slot::New(row));
            }
            // Added again after a removal in this batch: the stored row is replaced.
            Entry::Occupied(mut slot) => {
                slot.insert(Slot::Changed(row));
            }
        }
    }

    /// Deletes the row with this key, whether or not it was loaded.
    pub(crate) fn remove(&mut self, key: K) {
        match self.rows.entry(key) {
            Entry::Occupied(mut slot) => {
                if matches!(slot.get(), Slot::New(_)) {
                    slot.remove();
                } else {
                    slot.insert(Slot::Removed);
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(Slot::Removed);
            }
        }
    }

    /// Writes what the batch did: deletes, then updates of existing rows, then inserts.
    pub(crate) async fn store(self, tx: &mut PgConnection) -> Result<()> {
        self.store_returning(tx, Vec::new()).await.map(drop)
    }

    /// [`store`](Self::store), returning the `wanted` rows it updated or inserted as
    /// PostgreSQL stored them (`to_jsonb`, as [`load`](Self::load) reads them).
    pub(crate) async fn store_returning(
        self,
        tx: &mut PgConnection,
        wanted: Vec<K>,
    ) -> Result<Vec<Value>> {
        let (table, key) = (self.table, self.key);
        let returning = if wanted.is_empty() {
            String::new()
        } else {
            format!(" RETURNING CASE WHEN t.{key} = ANY($2) THEN to_jsonb(t) END")
        };
        let mut stored = Vec::new();
        let mut removed = Vec::new();
        let (mut changed, mut new) = (Vec::new(), Vec::new());
        for (k, slot) in self.rows {
            match slot {
                Slot::Loaded(_) => {}
                Slot::Removed => removed.push(k),
                Slot::Changed(row) => changed.push(row),
                Slot::New(row) => new.push(row),
            }
        }
        if !removed.is_empty() {
            sqlx::query(&format!("DELETE FROM {table} WHERE {key} = ANY($1)"))
                .bind(removed)
                .execute(&mut *tx)
                .await?;
        }
        if !changed.is_empty() {
            let columns = column_names(table, &changed)?;
            let rows = serde_json::to_string(&changed).map_err(|e| unmappable(table, e))?;
            let assignments = columns
                .iter()
                .filter(|c| c.as_str() != key)
                .map(|c| format!("{c} = src.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            let update = format!(
                "UPDATE {table} AS t SET {assignments} \
                   FROM json_populate_recordset(NULL::{table}, $1::json) AS src \
                  WHERE t.{key} = src.{key}{returning}"
            );
            stored.extend(write(tx, &update, rows, &wanted).await?);
        }
        if !new.is_empty() {
            let columns = column_names(table, &new)?.join(", ");
            let rows = serde_json::to_string(&new).map_err(|e| unmappable(table, e))?;
            let insert = format!(
                "INSERT INTO {table} AS t ({columns}) \
                 SELECT {columns} FROM json_populate_recordset(NULL::{table}, $1::json){returning}"
            );
            stored.extend(write(tx, &insert, rows, &wanted).await?);
        }
        Ok(stored)
    }
}

/// Runs a batch's update or insert (`$1`: its rows as JSON); with `wanted` keys (`$2`),
/// returns those rows as stored.
async fn write<K>(
    tx: &mut PgConnection,
    sql: &str,
    rows: String,
    wanted: &Vec<K>,
) -> Result<Vec<Value>>
where
    K: Send + Sync,
    Vec<K>: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
{
    if wanted.is_empty() {
        sqlx::query(sql).bind(rows).execute(&mut *tx).await?;
        return Ok(Vec::new());
    }
    let stored: Vec<Option<Value>> = sqlx::query_scalar(sql)
        .bind(rows)
        .bind(wanted)
        .fetch_all(&mut *tx)
        .await?;
    Ok(stored.into_iter().flatten().collect())
}

/// Rows of a read model to be inserted by another statement (an append writing them
/// inline, docs/adr/0011): the same JSON and the same `json_populate_recordset` as
/// [`RowSet::store`]'s inserts, so both paths give the same typed rows.
#[derive(Debug, Clone)]
pub struct InlineRows {
    /// The table's name; the write goes to the live table (`public.`), never to a
    /// rebuild's copy.
    pub name: &'static str,
    /// The column list, from the row type's field names.
    pub columns: String,
    /// The rows as a JSON array.
    pub rows: String,
    /// Patients whose text the rows hold in the clear, each once: the rows are written
    /// only while each one's key still stands, so an erasure (which destroys the key
    /// first) never leaves a row behind that shows what it erased.
    pub key_owners: Vec<Uuid>,
}

impl InlineRows {
    pub(crate) fn of<R: Serialize>(table: &'static str, rows: &[R]) -> Result<Self> {
        Ok(Self {
            name: table,
            columns: column_names(table, rows)?.join(", "),
            rows: serde_json::to_string(rows).map_err(|e| unmappable(table, e))?,
            key_owners: Vec::new(),
        })
    }

    /// These rows, written only while the keys of `owners` stand.
    pub(crate) fn while_keys_stand(mut self, mut owners: Vec<Uuid>) -> Self {
        owners.sort_unstable();
        owners.dedup();
        self.key_owners = owners;
        self
    }

    /// The condition that every key owner's key stands, with the owners as parameter
    /// `$param`; empty when there are none. Each key row is locked for share, so that a
    /// key destroyed by a transaction committed meanwhile is seen as destroyed, and one
    /// destroyed later waits for this append: the erasure's event then follows it in the
    /// log, and the runner erases the row.
    pub fn keys_stand_sql(&self, param: usize) -> String {
        if self.key_owners.is_empty() {
            return String::new();
        }
        format!(
            "(SELECT count(*) FROM (SELECT 1 FROM patient_keys k \
               WHERE k.patient_id = ANY(${param}::uuid[]) AND k.wrapped_key IS NOT NULL \
               FOR SHARE) s) = cardinality(${param}::uuid[])"
        )
    }

    /// The `INSERT` writing these rows, with the JSON as parameter `$param`, returning
    /// them as stored; `condition`, when not empty, is a `WHERE` clause's condition on the
    /// enclosing statement.
    pub fn insert_sql(&self, param: usize, condition: &str) -> String {
        let (table, columns) = (format!("public.{}", self.name), &self.columns);
        let condition = if condition.is_empty() {
            String::new()
        } else {
            format!(" WHERE {condition}")
        };
        format!(
            "INSERT INTO {table} ({columns}) \
             SELECT {columns} FROM json_populate_recordset(NULL::{table}, ${param}::json){condition} \
             RETURNING *"
        )
    }
}

fn unmappable(table: &str, e: serde_json::Error) -> ProjectionError {
    ProjectionError::Row(format!("a row of {table} does not map to its columns: {e}"))
}

/// The column names of a row type: the keys of its first row as JSON (every row of one
/// type has the same). They come from the row type's field names, never from input.
fn column_names<R: Serialize>(table: &str, rows: &[R]) -> Result<Vec<String>> {
    let first = rows.first().map(serde_json::to_value).transpose();
    match first.map_err(|e| unmappable(table, e))? {
        Some(Value::Object(row)) => Ok(row.keys().cloned().collect()),
        _ => Err(ProjectionError::Row(format!(
            "a row of {table} is not a JSON object"
        ))),
    }
}
