//! PostgreSQL output: a pipeline's rows upserted into a table keyed by the rows' key fields,
//! exactly once.
//!
//! The sink keeps, for every key touched since its last commit, the key's newest row (or its
//! absence), and commits them in one transaction together with the job's progress row in
//! `kappa_progress` (`job`, `upper`): every time below `upper` is applied, and no other. A run of
//! completed times thus lands at once, and a reader of the table sees the state at one completed
//! time, never half of one. A restarted job reads `upper` back ([`Sink::resume`]) and goes on from
//! there, so a crash neither repeats nor skips a time; each of its commits moves the progress row
//! only from the value it read, so a second run of the same job writing at once fails instead of
//! applying times twice. The engine hands this sink only final times (it cannot take back what it
//! committed; see `kappa_engine::sink`): a restartable job's table holds the times below the
//! resumable frontier, as its Kafka output does.
//!
//! The table is created on the first commit if missing, with one column per field of the first
//! row (JSON integers `bigint`, strings `text`, booleans `boolean`, other numbers
//! `double precision`, anything else `jsonb`) and the key fields as its primary key. An existing
//! table must have exactly those columns, types and primary key, or the job stops with an error
//! saying what differs. Rows reach PostgreSQL as one JSON document per statement
//! (`jsonb_populate_recordset`), so a commit is three statements whatever its size.
//!
//! Why the synchronous `postgres` client: the sink is called on a timely worker thread, which
//! must not block inside an async runtime; `postgres` wraps `tokio-postgres` in exactly that way.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kappa_engine::{BoxError, Diff, Keyed, Sink, Time};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// How often a restartable job's progress is committed while times complete (at the end, always).
const COMMIT_EVERY: Duration = Duration::from_millis(50);
/// Keys pending before a commit is forced, whatever the clock.
const COMMIT_KEYS: usize = 50_000;

/// Where a [`PostgresSink`] writes.
#[derive(Clone, Debug)]
pub struct PostgresSinkConfig {
    /// A libpq-style connection URL, `postgres://user[:password]@host:port/database`.
    pub url: String,
    /// The table (created if missing).
    pub table: String,
    /// The job's name in `kappa_progress` (one job per table).
    pub job: String,
}

impl PostgresSinkConfig {
    /// Reads `postgres://...[?table=NAME]`: the table is `default_table` unless the URL names one.
    pub fn parse(url: &str, default_table: &str, job: &str) -> Result<Self> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut table = default_table.replace('-', "_");
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("table", name)) if !name.is_empty() => table = name.to_string(),
                _ => rest.push(pair),
            }
        }
        let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
        Ok(PostgresSinkConfig { url, table, job: job.to_string() })
    }
}

/// A column of the output table.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Column {
    name: String,
    /// As `information_schema.columns.data_type` spells it.
    sql_type: &'static str,
}

/// The connection and what it learned of the table.
struct Connected {
    client: postgres::Client,
    /// Known once the table exists (or was checked).
    columns: Option<Vec<Column>>,
    keys: Vec<String>,
}

/// Upserts a pipeline's rows into a PostgreSQL table, exactly once; see the [module docs](self).
pub struct PostgresSink<D> {
    config: PostgresSinkConfig,
    /// Behind a mutex only because sinks must be `Sync` and the client is not; the sink reaches it
    /// through `&mut self` (`get_mut`), never locking.
    connected: std::sync::Mutex<Option<Connected>>,
    /// Key (as JSON text) → its newest row (`None`: deleted), since the last commit.
    pending: BTreeMap<String, (Value, Option<Value>)>,
    /// Every time below this is in `pending` or committed.
    written_upper: Time,
    committed: Option<Time>,
    last_commit: Option<Instant>,
    _rows: std::marker::PhantomData<fn(D)>,
}

impl<D> Clone for PostgresSink<D> {
    fn clone(&self) -> Self {
        PostgresSink::new(self.config.clone())
    }
}

impl<D> PostgresSink<D> {
    /// A sink writing to `config.table` (connecting on first use).
    pub fn new(config: PostgresSinkConfig) -> Self {
        PostgresSink {
            config,
            connected: std::sync::Mutex::new(None),
            pending: BTreeMap::new(),
            written_upper: 0,
            committed: None,
            last_commit: None,
            _rows: std::marker::PhantomData,
        }
    }

    fn failed(&self, what: &str, source: postgres::Error) -> Error {
        Error::Postgres { table: self.config.table.clone(), what: what.to_string(), source: Box::new(source) }
    }

    fn slot(&mut self) -> &mut Option<Connected> {
        self.connected.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    fn connect(&mut self) -> Result<&mut Connected> {
        if self.slot().is_none() {
            let mut client = postgres::Client::connect(&self.config.url, postgres::NoTls)
                .map_err(|e| self.failed("connecting (is the server up, and the URL's user allowed in?)", e))?;
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS kappa_progress (job text PRIMARY KEY, upper numeric(20) NOT NULL)",
                )
                .map_err(|e| self.failed("creating kappa_progress", e))?;
            *self.slot() = Some(Connected { client, columns: None, keys: Vec::new() });
        }
        Ok(self.slot().as_mut().expect("just connected"))
    }

    /// Creates the table for rows shaped like `row` keyed by `key`, or checks the existing one.
    fn ensure_table(&mut self, row: &Value, key: &Value) -> Result<()> {
        if self.slot().as_ref().is_some_and(|c| c.columns.is_some()) {
            return Ok(());
        }
        let table = self.config.table.clone();
        let shape = |what: String| Error::TableMismatch { table: table.clone(), reason: what };
        let (Value::Object(fields), Value::Object(key_fields)) = (row, key) else {
            return Err(shape(format!(
                "a row must be a JSON object and its key an object of some of its fields; got row {row} with key {key}"
            )));
        };
        let columns: Vec<Column> =
            fields.iter().map(|(name, value)| Column { name: name.clone(), sql_type: sql_type(value) }).collect();
        let keys: Vec<String> = key_fields.keys().cloned().collect();
        if let Some(missing) = keys.iter().find(|k| !fields.contains_key(*k)) {
            return Err(shape(format!("key field `{missing}` is not a field of the row {row}")));
        }
        let connected = self.connect()?;
        let existing: Vec<(String, String)> = connected
            .client
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                &[&table],
            )
            .map_err(|e| Error::Postgres {
                table: table.clone(),
                what: "reading its columns".into(),
                source: e.into(),
            })?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if existing.is_empty() {
            let definition: Vec<String> =
                columns.iter().map(|c| format!("{} {}", quote(&c.name), c.sql_type)).collect();
            let primary: Vec<String> = keys.iter().map(|k| quote(k)).collect();
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))",
                quote(&table),
                definition.join(", "),
                primary.join(", ")
            );
            connected.client.batch_execute(&sql).map_err(|e| Error::Postgres {
                table: table.clone(),
                what: "creating it".into(),
                source: e.into(),
            })?;
        } else {
            let mut want: Vec<(String, String)> =
                columns.iter().map(|c| (c.name.clone(), c.sql_type.to_string())).collect();
            let mut have = existing.clone();
            want.sort();
            have.sort();
            if want != have {
                return Err(shape(format!(
                    "it has columns {} but the output's rows need {}; drop the table (or name another with \
                     ?table=NAME) to let kappa create it",
                    describe(&existing),
                    describe(&columns.iter().map(|c| (c.name.clone(), c.sql_type.to_string())).collect::<Vec<_>>())
                )));
            }
            let primary: Vec<String> = connected
                .client
                .query(
                    "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
                     AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(quote_ident($1)) AND i.indisprimary",
                    &[&table],
                )
                .map_err(|e| Error::Postgres {
                    table: table.clone(),
                    what: "reading its primary key".into(),
                    source: e.into(),
                })?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let (mut want_keys, mut have_keys) = (keys.clone(), primary.clone());
            want_keys.sort();
            have_keys.sort();
            if want_keys != have_keys {
                return Err(shape(format!(
                    "its primary key is ({}) but the output is keyed by ({}); drop the table to let kappa create it",
                    primary.join(", "),
                    keys.join(", ")
                )));
            }
        }
        let connected = self.slot().as_mut().expect("connected above");
        connected.columns = Some(columns);
        connected.keys = keys;
        Ok(())
    }

    /// Commits what is pending, with progress `upper`, in one transaction.
    fn commit(&mut self, upper: Time) -> Result<()> {
        if let Some((key, (_, row))) = self.pending.iter().find(|(_, (_, row))| row.is_some()) {
            let (key, row) = (serde_json::from_str(key).unwrap_or(Value::Null), row.clone().expect("found Some"));
            self.ensure_table(&row, &key)?;
        }
        let table = self.config.table.clone();
        let job = self.config.job.clone();
        let pending = std::mem::take(&mut self.pending);
        let resumed_from = self.committed;
        let connected = self.connect()?;
        let failed = |what: &str, e: postgres::Error| Error::Postgres {
            table: table.clone(),
            what: what.to_string(),
            source: Box::new(e),
        };
        let mut tx = connected.client.transaction().map_err(|e| failed("starting a transaction", e))?;
        if let Some(columns) = connected.columns.as_ref() {
            let (mut upserts, mut deletes) = (Vec::new(), Vec::new());
            for (_, (key, row)) in pending {
                match row {
                    Some(row) => upserts.push(row),
                    None => deletes.push(key),
                }
            }
            let name = quote(&table);
            let keys: Vec<String> = connected.keys.iter().map(|k| quote(k)).collect();
            if !deletes.is_empty() {
                let matching: Vec<String> = keys.iter().map(|k| format!("{name}.{k} = d.{k}")).collect();
                let sql = format!(
                    "DELETE FROM {name} USING jsonb_populate_recordset(NULL::{name}, $1::text::jsonb) AS d WHERE {}",
                    matching.join(" AND ")
                );
                tx.execute(&sql, &[&Value::Array(deletes).to_string()]).map_err(|e| failed("deleting rows", e))?;
            }
            if !upserts.is_empty() {
                let others: Vec<String> = columns
                    .iter()
                    .filter(|c| !connected.keys.contains(&c.name))
                    .map(|c| format!("{0} = EXCLUDED.{0}", quote(&c.name)))
                    .collect();
                let conflict = if others.is_empty() {
                    "DO NOTHING".to_string()
                } else {
                    format!("DO UPDATE SET {}", others.join(", "))
                };
                let sql = format!(
                    "INSERT INTO {name} SELECT * FROM jsonb_populate_recordset(NULL::{name}, $1::text::jsonb) \
                     ON CONFLICT ({}) {conflict}",
                    keys.join(", ")
                );
                tx.execute(&sql, &[&Value::Array(upserts).to_string()]).map_err(|e| failed("upserting rows", e))?;
            }
        } else if pending.values().any(|(_, row)| row.is_none()) {
            // Deletes before the table exists (a retraction of a row never written): nothing to do.
        }
        match resumed_from {
            // A restartable run goes on from the progress it read: it commits only if that is still
            // the recorded progress, so a second run of the job (or an older one still alive) can
            // never apply times twice.
            Some(from) => {
                let moved = tx
                    .execute(
                        "UPDATE kappa_progress SET upper = $2::text::numeric WHERE job = $1 AND upper = $3::text::numeric",
                        &[&job, &upper.to_string(), &from.to_string()],
                    )
                    .map_err(|e| failed("recording progress", e))?;
                if moved != 1 {
                    return Err(Error::Fenced { table, job, expected: from });
                }
            }
            None => {
                tx.execute(
                    "INSERT INTO kappa_progress (job, upper) VALUES ($1, $2::text::numeric) \
                     ON CONFLICT (job) DO UPDATE SET upper = EXCLUDED.upper",
                    &[&job, &upper.to_string()],
                )
                .map_err(|e| failed("recording progress", e))?;
            }
        }
        tx.commit().map_err(|e| failed("committing", e))?;
        self.committed = Some(upper);
        self.last_commit = Some(Instant::now());
        Ok(())
    }
}

/// The column type of a JSON value.
fn sql_type(value: &Value) -> &'static str {
    match value {
        Value::Number(n) if n.is_i64() => "bigint",
        // Beyond i64: exact in numeric.
        Value::Number(n) if n.is_u64() => "numeric",
        Value::Number(_) => "double precision",
        Value::String(_) => "text",
        Value::Bool(_) => "boolean",
        _ => "jsonb",
    }
}

/// An SQL identifier, quoted.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn describe(columns: &[(String, String)]) -> String {
    let parts: Vec<String> = columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
    format!("({})", parts.join(", "))
}

impl<D: Serialize + Keyed + Send + 'static> Sink<D> for PostgresSink<D> {
    fn write(&mut self, time: Time, updates: &[(D, Diff)]) -> std::result::Result<(), BoxError> {
        // Retractions first, then insertions: a key's row replaced at this time is upserted.
        let mut inserted: BTreeMap<String, ()> = BTreeMap::new();
        for pass in [false, true] {
            for (row, diff) in updates.iter().filter(|(_, d)| (*d > 0) == pass) {
                let key = row.key();
                let key_text = key.to_string();
                if diff.abs() != 1 {
                    return Err(format!(
                        "row with key {key_text} has multiplicity {diff} at time {time}: a table keyed by the \
                         output's key holds one row per key"
                    )
                    .into());
                }
                if pass {
                    if inserted.insert(key_text.clone(), ()).is_some() {
                        return Err(format!(
                            "two rows with key {key_text} at time {time}: a table keyed by the output's key holds \
                             one row per key"
                        )
                        .into());
                    }
                    self.pending.insert(key_text, (key, Some(serde_json::to_value(row)?)));
                } else {
                    self.pending.insert(key_text, (key, None));
                }
            }
        }
        self.written_upper = time + 1;
        if self.pending.len() >= COMMIT_KEYS {
            self.commit(self.written_upper)?;
        }
        Ok(())
    }

    fn advanced(&mut self, upper: Time) -> std::result::Result<(), BoxError> {
        if self.last_commit.is_none_or(|at| at.elapsed() >= COMMIT_EVERY) && self.committed != Some(upper) {
            self.commit(upper)?;
        }
        Ok(())
    }

    fn finish(&mut self, upper: Time) -> std::result::Result<(), BoxError> {
        Ok(self.commit(upper.max(self.written_upper))?)
    }

    fn uses_keys(&self) -> bool {
        true
    }

    fn resume(&mut self) -> std::result::Result<Time, BoxError> {
        let job = self.config.job.clone();
        let table = self.config.table.clone();
        let connected = self.connect()?;
        let failed = |e| Error::Postgres { table: table.clone(), what: "reading progress".into(), source: Box::new(e) };
        connected
            .client
            .execute("INSERT INTO kappa_progress (job, upper) VALUES ($1, 0) ON CONFLICT (job) DO NOTHING", &[&job])
            .map_err(failed)?;
        let row = connected
            .client
            .query_opt("SELECT upper::text FROM kappa_progress WHERE job = $1", &[&job])
            .map_err(failed)?;
        let upper = match row {
            Some(row) => {
                let text: String = row.get(0);
                text.parse().map_err(|_| format!("kappa_progress holds upper {text} for job {job}, not a time"))?
            }
            None => 0,
        };
        self.pending.clear();
        self.written_upper = upper;
        self.committed = Some(upper);
        Ok(upper)
    }

    fn durable_upper(&self) -> Option<Time> {
        self.committed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_names_the_table_or_the_pipeline_does() {
        let c = PostgresSinkConfig::parse("postgres://u@h:5432/db?table=likes", "like-counts", "j").expect("parses");
        assert_eq!((c.url.as_str(), c.table.as_str()), ("postgres://u@h:5432/db", "likes"));
        let c = PostgresSinkConfig::parse("postgres://u@h/db?sslmode=disable", "like-counts", "j").expect("parses");
        assert_eq!((c.url.as_str(), c.table.as_str()), ("postgres://u@h/db?sslmode=disable", "like_counts"));
    }

    #[test]
    fn json_values_map_to_column_types() {
        let row = serde_json::json!({"a": 1, "b": "x", "c": true, "d": 1.5, "e": [1], "f": u64::MAX});
        let types: Vec<&str> = row.as_object().expect("object").values().map(sql_type).collect();
        assert_eq!(types, ["bigint", "text", "boolean", "double precision", "jsonb", "numeric"]);
        assert_eq!(quote(r#"we"ird"#), r#""we""ird""#);
    }
}
