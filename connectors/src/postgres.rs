//! PostgreSQL output: a pipeline's rows upserted into a table keyed by the rows' key fields,
//! exactly once.
//!
//! A [`PostgresTable`] is the [`Store`] of an [`UpsertSink`]: it
//! commits a run of completed times in one transaction together with the job's progress row in
//! `kappa_progress` (`job`, `upper`), so a reader of the table sees the state at one completed
//! time, never half of one, and a restart neither repeats nor skips a time
//! ([`crate::upsert`] has the protocol).
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

use kappa_engine::Time;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::upsert::{take_param, Pending, Store, UpsertSink};

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
        let (url, table) = take_param(url, "table");
        let table = table.unwrap_or_else(|| default_table.replace('-', "_"));
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

/// A PostgreSQL table as an upsert sink's store; see the [module docs](self).
pub struct PostgresTable {
    config: PostgresSinkConfig,
    connected: Option<Connected>,
}

/// Upserts a pipeline's rows into a PostgreSQL table, exactly once.
pub type PostgresSink<D> = UpsertSink<PostgresTable, D>;

impl PostgresTable {
    /// The table `config` names (connecting on first use).
    pub fn new(config: PostgresSinkConfig) -> Self {
        PostgresTable { config, connected: None }
    }

    fn slot(&mut self) -> &mut Option<Connected> {
        &mut self.connected
    }

    fn failed(&self, what: &str, source: postgres::Error) -> Error {
        Error::Postgres { table: self.config.table.clone(), what: what.to_string(), source: Box::new(source) }
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

    fn apply(&mut self, pending: Pending, upper: Time, resumed_from: Option<Time>) -> Result<()> {
        if let Some((key, (_, row))) = pending.iter().find(|(_, (_, row))| row.is_some()) {
            let (key, row) = (serde_json::from_str(key).unwrap_or(Value::Null), row.clone().expect("found Some"));
            self.ensure_table(&row, &key)?;
        }
        let table = self.config.table.clone();
        let job = self.config.job.clone();
        let connected = self.connect()?;
        let failed = |what: &str, e: postgres::Error| Error::Postgres {
            table: table.clone(),
            what: what.to_string(),
            source: Box::new(e),
        };
        let name = quote(&table);
        let (mut upserts, mut deletes) = (Vec::new(), Vec::new());
        for (_, (key, row)) in pending {
            match row {
                Some(row) => upserts.push(row),
                None => deletes.push(key),
            }
        }
        // Deletes match on the key fields, which every key object names: no need to know the
        // table's other columns (a restarted run may delete before it upserts anything). A table
        // that does not exist yet holds nothing to delete.
        let delete_keys: Vec<String> = match deletes.first() {
            Some(Value::Object(fields)) => fields.keys().map(|k| quote(k)).collect(),
            _ => Vec::new(),
        };
        let exists = connected.columns.is_some() || {
            let row = connected
                .client
                .query_one("SELECT to_regclass(quote_ident($1)) IS NOT NULL", &[&table])
                .map_err(|e| failed("looking the table up", e))?;
            row.get::<_, bool>(0)
        };
        let mut tx = connected.client.transaction().map_err(|e| failed("starting a transaction", e))?;
        if exists && !delete_keys.is_empty() {
            let matching: Vec<String> = delete_keys.iter().map(|k| format!("{name}.{k} = d.{k}")).collect();
            let sql = format!(
                "DELETE FROM {name} USING jsonb_populate_recordset(NULL::{name}, $1::text::jsonb) AS d WHERE {}",
                matching.join(" AND ")
            );
            tx.execute(&sql, &[&Value::Array(deletes).to_string()]).map_err(|e| failed("deleting rows", e))?;
        }
        if let (Some(columns), false) = (connected.columns.as_ref(), upserts.is_empty()) {
            let keys: Vec<String> = connected.keys.iter().map(|k| quote(k)).collect();
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

impl Store for PostgresTable {
    fn fresh(&self) -> Self {
        PostgresTable::new(self.config.clone())
    }

    fn commit(&mut self, pending: Pending, upper: Time, from: Option<Time>) -> Result<()> {
        self.apply(pending, upper, from)
    }

    fn progress(&mut self) -> Result<Time> {
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
            .query_one("SELECT upper::text FROM kappa_progress WHERE job = $1", &[&job])
            .map_err(failed)?;
        let text: String = row.get(0);
        text.parse().map_err(|_| Error::TableMismatch {
            table: "kappa_progress".into(),
            reason: format!("it holds upper {text} for job {job}, not a time; delete that row to start over"),
        })
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
