//! Redis output: one hash per output key, deleted when the row goes away, exactly once.
//!
//! A [`RedisHashes`] is the [`Store`] of an [`UpsertSink`]: a commit is
//! one `MULTI`/`EXEC` that deletes the hash of every key whose row went away, replaces the hash
//! of every key whose row changed (one field per row field: strings as they are, anything else as
//! JSON), and sets the job's progress key, all at once. The progress key is `WATCH`ed from the
//! moment it was read, so a commit after another run of the job moved it is refused instead of
//! applying times twice ([`crate::upsert`] has the protocol).
//!
//! Keys: a row keyed `{"post":7}` lives in hash `PREFIX:{"post":7}`; the progress in
//! `kappa-progress:PREFIX`. `PREFIX` is the pipeline's name unless the URL says `?prefix=NAME`.

use kappa_engine::Time;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::upsert::{take_param, Pending, Store, UpsertSink};

/// Where a [`RedisSink`] writes.
#[derive(Clone, Debug)]
pub struct RedisSinkConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// What every key of the output starts with.
    pub prefix: String,
}

impl RedisSinkConfig {
    /// Reads `redis://...[?prefix=NAME]`: the prefix is `default_prefix` unless the URL names one.
    pub fn parse(url: &str, default_prefix: &str) -> Self {
        let (url, prefix) = take_param(url, "prefix");
        let prefix = prefix.unwrap_or_else(|| default_prefix.to_string());
        RedisSinkConfig { url, prefix }
    }

    fn progress_key(&self) -> String {
        format!("kappa-progress:{}", self.prefix)
    }
}

/// Redis hashes as an upsert sink's store; see the [module docs](self).
pub struct RedisHashes {
    config: RedisSinkConfig,
    connection: Option<redis::Connection>,
}

/// Writes a pipeline's rows as Redis hashes, exactly once.
pub type RedisSink<D> = UpsertSink<RedisHashes, D>;

impl RedisHashes {
    /// The hashes `config` names (connecting on first use).
    pub fn new(config: RedisSinkConfig) -> Self {
        RedisHashes { config, connection: None }
    }

    fn failed(&self, what: &str, source: redis::RedisError) -> Error {
        Error::Redis { prefix: self.config.prefix.clone(), what: what.to_string(), source: Box::new(source) }
    }

    fn connection(&mut self) -> Result<&mut redis::Connection> {
        if self.connection.is_none() {
            let connection = redis::Client::open(self.config.url.as_str())
                .and_then(|client| client.get_connection())
                .map_err(|e| self.failed("connecting (is the server up at that URL?)", e))?;
            self.connection = Some(connection);
        }
        Ok(self.connection.as_mut().expect("just connected"))
    }
}

/// A row's fields as hash fields.
fn fields(row: &Value) -> Vec<(String, String)> {
    match row {
        Value::Object(map) => map
            .iter()
            .map(|(name, value)| match value {
                Value::String(text) => (name.clone(), text.clone()),
                other => (name.clone(), other.to_string()),
            })
            .collect(),
        other => vec![("value".to_string(), other.to_string())],
    }
}

impl Store for RedisHashes {
    fn fresh(&self) -> Self {
        RedisHashes::new(self.config.clone())
    }

    fn commit(&mut self, pending: Pending, upper: Time, from: Option<Time>) -> Result<()> {
        let (prefix, progress) = (self.config.prefix.clone(), self.config.progress_key());
        let connection = self.connection()?;
        let failed =
            |what: &str, e| Error::Redis { prefix: prefix.clone(), what: what.to_string(), source: Box::new(e) };
        if from.is_none() {
            // A run that never read the progress (not restartable) still must not write over a
            // key that is not Kappa's progress.
            let now: Option<String> =
                redis::cmd("GET").arg(&progress).query(connection).map_err(|e| failed("reading progress", e))?;
            if let Some(text) = now.filter(|t| t.parse::<Time>().is_err()) {
                return Err(Error::Redis {
                    prefix,
                    what: format!("reading progress: key {progress} holds {text}, not a time; delete it to start over"),
                    source: Box::new(redis::RedisError::from((redis::ErrorKind::Parse, "not a time"))),
                });
            }
        }
        if let Some(from) = from {
            // Under WATCH: EXEC applies nothing if another client touched the progress since.
            redis::cmd("WATCH").arg(&progress).query::<()>(connection).map_err(|e| failed("watching progress", e))?;
            let now: Option<String> =
                redis::cmd("GET").arg(&progress).query(connection).map_err(|e| failed("reading progress", e))?;
            if now.as_deref() != Some(from.to_string().as_str()) {
                let _ = redis::cmd("UNWATCH").query::<()>(connection);
                return Err(Error::Fenced { table: prefix, job: progress, expected: from });
            }
        }
        let mut transaction = redis::pipe();
        transaction.atomic();
        for (key, (_, row)) in &pending {
            let name = format!("{prefix}:{key}");
            transaction.del(&name).ignore();
            if let Some(row) = row {
                transaction.hset_multiple(&name, &fields(row)).ignore();
            }
        }
        transaction.cmd("SET").arg(&progress).arg(upper.to_string());
        let applied: Option<(String,)> = transaction.query(connection).map_err(|e| failed("committing", e))?;
        match (applied, from) {
            (Some(_), _) => Ok(()),
            (None, from) => Err(Error::Fenced { table: prefix, job: progress, expected: from.unwrap_or(0) }),
        }
    }

    fn progress(&mut self) -> Result<Time> {
        let progress = self.config.progress_key();
        let failed = |s: &Self, e| s.failed("reading progress", e);
        let connection = self.connection()?;
        let set: redis::RedisResult<Option<String>> =
            redis::cmd("SET").arg(&progress).arg(0).arg("NX").query(connection);
        let read: redis::RedisResult<String> = set.and_then(|_| redis::cmd("GET").arg(&progress).query(connection));
        let text = read.map_err(|e| failed(self, e))?;
        text.parse().map_err(|_| Error::Redis {
            prefix: self.config.prefix.clone(),
            what: format!("reading progress: key {progress} holds {text}, not a time; delete it to start over"),
            source: Box::new(redis::RedisError::from((redis::ErrorKind::Parse, "not a time"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_names_the_prefix_or_the_pipeline_does() {
        let c = RedisSinkConfig::parse("redis://127.0.0.1:6379/0?prefix=likes", "like-counts");
        assert_eq!((c.url.as_str(), c.prefix.as_str()), ("redis://127.0.0.1:6379/0", "likes"));
        assert_eq!(RedisSinkConfig::parse("redis://h/1", "like-counts").prefix, "like-counts");
        let row = serde_json::json!({"post": 7, "title": "hi", "tags": ["a"]});
        assert_eq!(
            fields(&row),
            // In the row's own field order (serde_json keeps it: served keys scan by it).
            vec![("post".into(), "7".into()), ("title".into(), "hi".into()), ("tags".into(), r#"["a"]"#.into())]
        );
    }
}
