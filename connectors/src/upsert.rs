//! What every keyed database output shares: an exactly-once upsert sink over a [`Store`].
//!
//! The sink keeps, for every key touched since its last commit, the key's newest row (or its
//! absence), and hands them to the store to commit in one transaction together with the job's
//! progress (every time below `upper` applied, and no other). Commits come at most every
//! [`COMMIT_EVERY`] while times complete, when [`COMMIT_KEYS`] keys are pending, and at the end. A
//! restarted job reads the progress back ([`Sink::resume`]) and goes on from there; each commit
//! moves the progress only from the value this run last saw (the store checks it in the same
//! transaction), so two runs of one job can never both apply a time.
//!
//! The engine hands such a sink only final times (it cannot take back what it committed; see
//! `kappa_engine::sink`), as it does a Kafka topic.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kappa_engine::{BoxError, Diff, Keyed, Sink, Time};
use serde::Serialize;
use serde_json::Value;

use crate::error::Result;

/// How often progress is committed while times complete (at the end, always).
pub const COMMIT_EVERY: Duration = Duration::from_millis(50);
/// Keys pending before a commit is forced, whatever the clock.
pub const COMMIT_KEYS: usize = 50_000;

/// Key (as JSON text) → the key and its newest row (`None`: the row is gone).
pub type Pending = BTreeMap<String, (Value, Option<Value>)>;

/// A database an [`UpsertSink`] commits to.
pub trait Store: Send + 'static {
    /// A store of the same place, not yet connected (what each worker's sink handle holds).
    fn fresh(&self) -> Self;
    /// Applies `pending` and sets the job's progress to `upper` in one transaction, provided the
    /// progress still is `from` (`None`: this run never read it, so set it unconditionally).
    fn commit(&mut self, pending: Pending, upper: Time, from: Option<Time>) -> Result<()>;
    /// The job's recorded progress (0 if none; recorded as 0 then, so later commits can check it).
    fn progress(&mut self) -> Result<Time>;
}

/// Upserts a pipeline's rows into a [`Store`], exactly once; see the [module docs](self).
pub struct UpsertSink<S, D> {
    /// Behind a mutex only because sinks must be `Sync` and database clients are not; the sink
    /// reaches it through `&mut self` (`get_mut`), never locking.
    store: Mutex<S>,
    pending: Pending,
    /// Every time below this is in `pending` or committed.
    written_upper: Time,
    committed: Option<Time>,
    last_commit: Option<Instant>,
    _rows: std::marker::PhantomData<fn(D)>,
}

impl<S: Store, D> UpsertSink<S, D> {
    /// A sink committing to `store`.
    pub fn new(store: S) -> Self {
        UpsertSink {
            store: Mutex::new(store),
            pending: Pending::new(),
            written_upper: 0,
            committed: None,
            last_commit: None,
            _rows: std::marker::PhantomData,
        }
    }

    fn store(&mut self) -> &mut S {
        self.store.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    fn commit(&mut self, upper: Time) -> Result<()> {
        let (pending, from) = (std::mem::take(&mut self.pending), self.committed);
        self.store().commit(pending, upper, from)?;
        self.committed = Some(upper);
        self.last_commit = Some(Instant::now());
        Ok(())
    }
}

impl<S: Store, D> Clone for UpsertSink<S, D> {
    fn clone(&self) -> Self {
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner()).fresh();
        UpsertSink::new(store)
    }
}

/// Splits Kappa's own option `name=VALUE` off a database URL's query string (the client would
/// refuse it): the URL without it, and the value if it was given and not empty.
pub fn take_param(url: &str, name: &str) -> (String, Option<String>) {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut value = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((key, v)) if key == name && !v.is_empty() => value = Some(v.to_string()),
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    (url, value)
}

/// Stages one time's consolidated updates: retractions first, then insertions, so a key whose row
/// is replaced at this time ends with the new row. A key with two rows at once, or a row with a
/// multiplicity other than 1, cannot be one keyed row: an error.
pub fn stage<D: Serialize + Keyed>(pending: &mut Pending, time: Time, updates: &[(D, Diff)]) -> Result<(), BoxError> {
    let mut inserted = std::collections::BTreeSet::new();
    for insert in [false, true] {
        for (row, diff) in updates.iter().filter(|(_, d)| (*d > 0) == insert) {
            let key = row.key();
            let text = key.to_string();
            if diff.abs() != 1 {
                return Err(format!(
                    "row with key {text} has multiplicity {diff} at time {time}: a keyed output holds one row per key"
                )
                .into());
            }
            if !insert {
                pending.insert(text, (key, None));
            } else if !inserted.insert(text.clone()) {
                return Err(
                    format!("two rows with key {text} at time {time}: a keyed output holds one row per key").into()
                );
            } else {
                pending.insert(text, (key, Some(serde_json::to_value(row)?)));
            }
        }
    }
    Ok(())
}

impl<S: Store, D: Serialize + Keyed + Send + 'static> Sink<D> for UpsertSink<S, D> {
    fn write(&mut self, time: Time, updates: &[(D, Diff)]) -> Result<(), BoxError> {
        stage(&mut self.pending, time, updates)?;
        self.written_upper = time + 1;
        if self.pending.len() >= COMMIT_KEYS {
            self.commit(self.written_upper)?;
        }
        Ok(())
    }

    fn advanced(&mut self, upper: Time) -> Result<(), BoxError> {
        if self.last_commit.is_none_or(|at| at.elapsed() >= COMMIT_EVERY) && self.committed != Some(upper) {
            self.commit(upper)?;
        }
        Ok(())
    }

    fn finish(&mut self, upper: Time) -> Result<(), BoxError> {
        Ok(self.commit(upper.max(self.written_upper))?)
    }

    fn uses_keys(&self) -> bool {
        true
    }

    fn resume(&mut self) -> Result<Time, BoxError> {
        let upper = self.store().progress()?;
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

    #[derive(Serialize)]
    struct Count {
        post: u64,
        n: u64,
    }

    impl Keyed for Count {
        fn key(&self) -> Value {
            serde_json::json!({ "post": self.post })
        }
    }

    #[test]
    fn a_replaced_row_ends_upserted_and_a_retracted_one_deleted() {
        let mut pending = Pending::new();
        let c = |post, n| Count { post, n };
        stage(&mut pending, 1, &[(c(1, 1), 1), (c(2, 1), 1)]).expect("stages");
        stage(&mut pending, 2, &[(c(1, 1), -1), (c(1, 2), 1), (c(2, 1), -1)]).expect("stages");
        let state: Vec<(String, Option<Value>)> = pending.into_iter().map(|(k, (_, row))| (k, row)).collect();
        assert_eq!(
            state,
            vec![
                (r#"{"post":1}"#.into(), Some(serde_json::json!({"post": 1, "n": 2}))),
                (r#"{"post":2}"#.into(), None)
            ]
        );
        let error = stage(&mut Pending::new(), 3, &[(c(1, 1), 1), (c(1, 2), 1)]).expect_err("two rows, one key");
        assert!(error.to_string().contains("two rows with key"), "{error}");
    }
}
