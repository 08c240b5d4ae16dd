//! Serving: reading a pipeline's output where the dataflow keeps it.
//!
//! With [`JobOptions::serve`](crate::JobOptions::serve) set, every worker arranges its share of the
//! output by the rows' keys ([`Keyed`]) in a differential-dataflow trace, and answers reads of
//! that trace itself: no second copy of the state, and no coordinator on the read path. The
//! pieces, in the order a read meets them:
//!
//! 1. **Keys** are encoded so that byte order is key order ([`encode_key`]): a point lookup is
//!    a seek, a scan over a key prefix (a user's feed rows) is a seek and a walk. A key's owner
//!    worker is a hash of its fields, *sorted by name* ([`route`]), so any front can route a key
//!    however a client orders its fields; the arrangement exchanges rows by the same hash.
//! 2. **Requests** ([`Request`]) go to the owner worker's inbox; the worker is woken (unparked)
//!    and answers between two dataflow steps, on its own thread, from its trace.
//! 3. **Times.** A worker answers a read at one time `at` that its trace has completed (its upper
//!    lies beyond `at`): the accumulation of every update at or before `at`, never a half-applied
//!    time. A scan asks every worker for the same `at`; a worker whose trace is not there yet
//!    keeps the request until it is. Each worker holds its trace's logical compaction
//!    `retention_ms` behind its upper, so reads and resumed subscriptions may name any time that
//!    recent.
//! 4. **Coverage.** Input operators record, per partition, the least time at which each offset is
//!    reflected ([`Coverage`]): offset `o` is reflected at `at` when every record of its
//!    partition at or before `o` has a time at or before `at`. A read that must reflect given
//!    offsets (read-your-writes) waits for a time at which they all are.
//! 5. **Subscriptions** ([`Request::Subscribe`]) receive a snapshot at a completed time, then each
//!    worker's updates with its progress ([`Changes`]); the front merges workers and releases a
//!    time once every worker has passed it. A subscriber that falls `limit` updates behind is cut
//!    off (its channel closes), never silently thinned.
//!
//! The HTTP front over all this is the `kappa-serve` crate. Design notes:
//! `papers/notes/20261202-serving.md`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::Thread;

use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::implementations::{ValBatcher, ValSpine};
use differential_dataflow::trace::{Navigable, TraceReader};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::progress::Antichain;

use crate::error::{Error, Result};
use crate::pipeline::Row;
use crate::source::{Offset, PartitionId};
use crate::time::Time;
use crate::{Collection, Diff};

/// A key as a served view stores it: its order-preserving encoding, and its owner's hash.
///
/// Ordered by `bytes` first, so the trace is in key order; `route` is a function of the key and
/// only rides along for the exchange.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServedKey {
    /// [`encode_key`] of the key.
    pub bytes: Vec<u8>,
    /// [`route`] of the key.
    pub route: u64,
}

impl ServedKey {
    /// The stored form of `key`.
    pub fn of(key: &Value) -> Self {
        let mut bytes = Vec::with_capacity(32);
        encode_value(key, false, &mut bytes);
        ServedKey { bytes, route: route(key) }
    }
}

/// The order-preserving encoding of a key (a JSON value, by convention an object of the key
/// fields in the order the pipeline's [`Keyed::key`](crate::Keyed::key) writes them).
///
/// Bytes compare as the values do: `null` < booleans < numbers (integers by value) < strings
/// (bytewise) < arrays < objects, element by element; an object field by field, names then
/// values. An object's fields without its closing byte ([`encode_prefix`]) are a byte prefix of
/// every object that starts with those fields.
///
/// ```
/// use kappa_engine::serve::encode_key;
/// use serde_json::json;
/// assert!(encode_key(&json!({"post": 9})) < encode_key(&json!({"post": 10})));
/// assert!(encode_key(&json!({"user": 1, "position": 2})) < encode_key(&json!({"user": 2, "position": 1})));
/// assert!(encode_key(&json!("ab")) < encode_key(&json!("b")));
/// ```
pub fn encode_key(key: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value(key, false, &mut out);
    out
}

/// The encoding of an object's leading `fields` (in key order): a byte prefix of the encoding of
/// every key object that starts with them.
pub fn encode_prefix<'a>(fields: impl IntoIterator<Item = (&'a str, &'a Value)>) -> Vec<u8> {
    let mut out = vec![TAG_OBJECT];
    for (name, value) in fields {
        encode_str(name, &mut out);
        encode_value(value, false, &mut out);
    }
    out
}

/// The owner hash of a key: FNV-1a over its encoding with every object's fields sorted by name,
/// so that it does not depend on the order a client lists fields in. Worker `route % peers` owns
/// the key (timely's exchange does exactly this). Written here rather than taken from a hashing
/// crate because every process of a cluster, and the HTTP front, must compute the same value
/// forever: the function is the contract.
///
/// FNV-1a's low bits are weak (the lowest is the parity of the bytes' low bits, so even and odd
/// post ids would split by parity and ids that are all even would meet on one of two workers),
/// and owners are chosen by the low bits: the hash is finished with MurmurHash3's 64-bit
/// finaliser, which makes every output bit depend on every input bit.
pub fn route(key: &Value) -> u64 {
    let mut bytes = Vec::with_capacity(32);
    encode_value(key, true, &mut bytes);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

const TAG_NULL: u8 = 0x01;
const TAG_FALSE: u8 = 0x02;
const TAG_TRUE: u8 = 0x03;
const TAG_INTEGER: u8 = 0x04;
const TAG_FLOAT: u8 = 0x05;
const TAG_STRING: u8 = 0x06;
const TAG_ARRAY: u8 = 0x07;
const TAG_OBJECT: u8 = 0x08;
const END: u8 = 0x00;

fn encode_str(s: &str, out: &mut Vec<u8>) {
    // 0x00 escaped as 0x00 0xFF and the end as 0x00 0x01: order and prefix-freedom both kept.
    for &b in s.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

fn encode_value(value: &Value, sorted: bool, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(TAG_NULL),
        Value::Bool(false) => out.push(TAG_FALSE),
        Value::Bool(true) => out.push(TAG_TRUE),
        Value::Number(n) => {
            let integer = n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
            match integer {
                Some(i) => {
                    out.push(TAG_INTEGER);
                    out.extend_from_slice(&(i ^ i128::MIN).to_be_bytes());
                }
                None => {
                    let bits = n.as_f64().unwrap_or(0.0).to_bits();
                    let ordered = if bits >> 63 == 1 { !bits } else { bits ^ (1 << 63) };
                    out.push(TAG_FLOAT);
                    out.extend_from_slice(&ordered.to_be_bytes());
                }
            }
        }
        Value::String(s) => {
            out.push(TAG_STRING);
            encode_str(s, out);
        }
        Value::Array(items) => {
            out.push(TAG_ARRAY);
            for item in items {
                encode_value(item, sorted, out);
            }
            out.push(END);
        }
        Value::Object(fields) => {
            out.push(TAG_OBJECT);
            let mut list: Vec<(&String, &Value)> = fields.iter().collect();
            if sorted {
                list.sort_by(|a, b| a.0.cmp(b.0));
            }
            for (name, value) in list {
                encode_str(name, out);
                encode_value(value, sorted, out);
            }
            out.push(END);
        }
    }
}

/// What a read asks of a view.
#[derive(Clone, Debug)]
pub enum Read {
    /// The rows of one key: every key field, in any order.
    Lookup {
        /// The key's fields.
        key: Map<String, Value>,
    },
    /// Rows in key order whose key starts with `prefix` (leading key fields, possibly none),
    /// after the key `after` (a continuation), for at most `limit` keys.
    Scan {
        /// Leading key fields.
        prefix: Map<String, Value>,
        /// Continue after this key (an encoded key, from an earlier answer).
        after: Option<Vec<u8>>,
        /// Keys to return at most.
        limit: usize,
    },
}

/// One key's rows in an answer: the encoded key, and each row's JSON with its multiplicity.
pub type KeyRows = (Vec<u8>, Vec<(Box<RawValue>, Diff)>);

/// A request to one worker.
#[derive(Debug)]
pub enum Request {
    /// Read `view` at time `at` (answered once the worker's trace has completed `at`).
    Read {
        /// The view.
        view: String,
        /// What to read.
        read: Read,
        /// The time to read at.
        at: Time,
        /// Where the answer goes (a closed receiver withdraws the request).
        reply: tokio::sync::oneshot::Sender<Result<Vec<KeyRows>>>,
    },
    /// Subscribe to `view`'s changes after `at` (with a snapshot at `at` unless `resume`).
    Subscribe {
        /// The view.
        view: String,
        /// The completed time the subscription starts from.
        at: Time,
        /// Resume: send only updates after `at` (the client has everything through `at`).
        resume: bool,
        /// The subscription's channel and flow control.
        feed: Feed,
        /// Whether the subscription started (or why not).
        reply: tokio::sync::oneshot::Sender<Result<()>>,
    },
}

/// One worker's message to a subscription.
#[derive(Debug)]
pub struct Changes {
    /// Whether `updates` is the snapshot (every row at the subscription's start, multiplicities
    /// as diffs, all at that time).
    pub snapshot: bool,
    /// Updates `(row, time, diff)`.
    pub updates: Vec<(Box<RawValue>, Time, Diff)>,
    /// Every update of this worker before `upper` has been sent (`Time::MAX`: all of them).
    pub upper: Time,
}

/// A subscription's channel from one worker, with the flow control every worker shares: what
/// the front has not consumed yet, in updates and messages, may not exceed `limit`; a worker
/// that would pass it marks the subscription overflowed and drops its sender.
#[derive(Clone, Debug)]
pub struct Feed {
    /// The channel.
    pub tx: tokio::sync::mpsc::UnboundedSender<Changes>,
    /// Updates and messages sent and not yet consumed (the front subtracts what it takes).
    pub buffered: Arc<AtomicUsize>,
    /// The bound on `buffered`.
    pub limit: usize,
    /// Set by a worker that cut the subscription off.
    pub overflowed: Arc<AtomicBool>,
}

impl Feed {
    /// Sends `changes` unless that passes the limit (what a subscription starts with, its
    /// snapshot and what its worker's trace holds after it, always goes: retention bounds it);
    /// false when the subscription is over (cut off, or the front went away).
    fn send(&self, changes: Changes, start: bool) -> bool {
        if self.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        let weight = changes.updates.len() + 1;
        let before = self.buffered.fetch_add(weight, Ordering::Relaxed);
        if !start && before + weight > self.limit {
            self.overflowed.store(true, Ordering::Relaxed);
            return false;
        }
        self.tx.send(changes).is_ok()
    }
}

/// Per partition, which offsets are reflected at which time (see the [module docs](self)).
#[derive(Clone, Debug, Default)]
pub struct PartitionCoverage {
    /// Every offset below this has been read.
    pub next: Offset,
    /// `(offset, time)`: offsets from `offset` on are reflected only at `time` or later; both
    /// strictly increasing (each is a new greatest time in the partition's offset order).
    marks: VecDeque<(Offset, Time)>,
    /// The greatest time of any record read.
    greatest: Time,
    /// Marks at or before this time were forgotten: offsets they covered are reflected at it.
    floor: Time,
}

impl PartitionCoverage {
    /// The offset below which every record is reflected at `at`.
    pub fn reflected(&self, at: Time) -> Offset {
        self.marks.iter().find(|(_, time)| *time > at).map_or(self.next, |(offset, _)| *offset)
    }
    /// The least time at which every record up to `offset` is reflected, once that record has
    /// been read (`None` before): the greatest time of the records at or before it.
    pub fn needed(&self, offset: Offset) -> Option<Time> {
        if offset >= self.next {
            return None;
        }
        let marked = self.marks.iter().take_while(|(from, _)| *from <= offset).last().map_or(0, |(_, time)| *time);
        Some(marked.max(self.floor))
    }
    fn record(&mut self, offset: Offset, time: Time) {
        if time > self.greatest {
            self.marks.push_back((offset, time));
            self.greatest = time;
        }
        self.next = self.next.max(offset + 1);
    }
    fn forget_through(&mut self, at: Time) {
        while self.marks.front().is_some_and(|&(_, time)| time <= at) {
            self.marks.pop_front();
            self.floor = self.floor.max(at);
        }
    }
}

/// What a process's views reflect: per input partition, [`PartitionCoverage`].
pub type Coverage = BTreeMap<PartitionId, PartitionCoverage>;

/// Where every local worker stands, for the front.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Per local worker, its views' least upper (`Time::MAX`: complete); `None` until the
    /// worker has built its views.
    pub uppers: Vec<Option<Time>>,
}

impl Progress {
    /// The greatest time every local worker has completed (`Time::MAX - 1` when all are
    /// complete), if every worker has completed one.
    pub fn completed(&self) -> Option<Time> {
        let least = self.uppers.iter().map(|u| u.unwrap_or(0)).min()?;
        least.checked_sub(1)
    }
}

/// One worker's current rows of one view, shared with the front so that a point lookup at the
/// worker's latest completed time is answered on the front's thread, without a round trip
/// through the worker (see [`CurrentRows`]).
///
/// Built on the first lookup (until then a view costs nothing more), then kept by the view's
/// change stream: every batch of the arrangement is applied whole, under the write lock, so a
/// reader sees the rows after some batch's upper, never part of one.
#[derive(Debug, Default)]
pub struct CurrentRows {
    /// Whether a reader asked for the rows (the worker then builds them).
    wanted: AtomicBool,
    state: RwLock<Current>,
}

#[derive(Debug, Default)]
struct Current {
    built: bool,
    /// Every update before this is applied, none after.
    upper: Time,
    /// The key fields in key order.
    fields: Option<Vec<String>>,
    rows: HashMap<Vec<u8>, Vec<(Box<RawValue>, Diff)>>,
}

impl Current {
    fn apply(&mut self, key: &[u8], row: Box<RawValue>, diff: Diff) {
        let rows = self.rows.entry(key.to_vec()).or_default();
        match rows.iter_mut().position(|(r, _)| r.get() == row.get()) {
            Some(i) => {
                rows[i].1 += diff;
                if rows[i].1 == 0 {
                    rows.swap_remove(i);
                }
            }
            None => rows.push((row, diff)),
        }
        if rows.is_empty() {
            self.rows.remove(key);
        }
    }
}

/// What [`CurrentRows::lookup`] found.
#[derive(Debug)]
pub enum CurrentLookup {
    /// The rows are not built yet (they will be: ask the worker this time).
    NotBuilt,
    /// The key's rows at `at`, the worker's latest completed time (`Time::MAX - 1`: complete).
    Rows {
        /// The time read at.
        at: Time,
        /// The rows with their multiplicities.
        rows: Vec<KeyRows>,
    },
}

impl CurrentRows {
    /// The rows of the key `given` (every key field, any order) at the latest time the rows have
    /// reached, if that is at least `least`; `Ok(None)` when it is not yet.
    pub fn lookup(&self, view: &str, given: &Map<String, Value>, least: Time) -> Result<Option<CurrentLookup>> {
        self.wanted.store(true, Ordering::Relaxed);
        let current = self.state.read().unwrap_or_else(|p| p.into_inner());
        if !current.built {
            return Ok(Some(CurrentLookup::NotBuilt));
        }
        let at = current.upper.saturating_sub(1);
        if current.upper == 0 || at < least {
            return Ok(None);
        }
        let Some(fields) = current.fields.as_ref() else {
            // This worker owns no row yet; the worker's own path says why a key does not fit.
            return Ok(Some(CurrentLookup::NotBuilt));
        };
        if given.len() != fields.len() || given.keys().any(|k| !fields.contains(k)) {
            return Err(Error::Query {
                view: view.to_string(),
                reason: format!(
                    "give every key field ({}); got {}",
                    fields.join(", "),
                    given.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        }
        let mut bytes =
            encode_prefix(fields.iter().filter_map(|k| given.get_key_value(k)).map(|(k, v)| (k.as_str(), v)));
        bytes.push(END);
        let rows = match current.rows.get(&bytes) {
            Some(rows) => vec![(bytes, rows.clone())],
            None => Vec::new(),
        };
        Ok(Some(CurrentLookup::Rows { at, rows }))
    }
}

/// A local worker's inbox, and its thread to unpark.
type Inbox = (std::sync::mpsc::Sender<Request>, Thread);

struct Shared {
    retention_ms: u64,
    names: Mutex<Vec<String>>,
    inboxes: Mutex<Vec<Option<Inbox>>>,
    /// Global index of local worker 0, workers in the cluster, and workers per process.
    placement: Mutex<(usize, usize, usize)>,
    coverage: Mutex<Coverage>,
    /// Per `(view, local worker)`, its current rows.
    current: Mutex<BTreeMap<(String, usize), Arc<CurrentRows>>>,
    progress: tokio::sync::watch::Sender<Progress>,
    stopped: AtomicBool,
}

/// A process's served views: given to a job through
/// [`JobOptions::serve`](crate::JobOptions::serve), read through by a front (`kappa-serve`).
/// Clones share the views.
#[derive(Clone)]
pub struct Views(Arc<Shared>);

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Views").field("names", &self.names()).finish_non_exhaustive()
    }
}

/// Default of the time a served view keeps distinct (`--serve-retention`), ms.
pub const DEFAULT_RETENTION_MS: u64 = 60_000;

impl Views {
    /// Views that keep `retention_ms` of history distinct behind their upper (reads and
    /// subscription resumes may name times that recent).
    pub fn new(retention_ms: u64) -> Self {
        let (progress, _) = tokio::sync::watch::channel(Progress::default());
        Views(Arc::new(Shared {
            retention_ms,
            names: Mutex::default(),
            inboxes: Mutex::default(),
            placement: Mutex::new((0, 1, 1)),
            coverage: Mutex::default(),
            current: Mutex::default(),
            progress,
            stopped: AtomicBool::new(false),
        }))
    }

    /// The served views' names.
    pub fn names(&self) -> Vec<String> {
        lock(&self.0.names).clone()
    }

    /// Where the local workers stand now.
    pub fn progress(&self) -> Progress {
        self.0.progress.borrow().clone()
    }

    /// A receiver that wakes whenever a local worker's upper moves.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<Progress> {
        self.0.progress.subscribe()
    }

    /// A copy of the coverage.
    pub fn coverage(&self) -> Coverage {
        lock(&self.0.coverage).clone()
    }

    /// Per partition, the offset below which every record is reflected at `at`.
    pub fn reflected(&self, at: Time) -> BTreeMap<PartitionId, Offset> {
        lock(&self.0.coverage).iter().map(|(p, c)| (p.clone(), c.reflected(at))).collect()
    }

    /// How many partitions this process has read.
    pub fn partitions(&self) -> usize {
        lock(&self.0.coverage).len()
    }

    /// The greatest time of any record read (what a complete view's answers are as of).
    pub fn greatest_time(&self) -> Time {
        lock(&self.0.coverage).values().map(|c| c.greatest).max().unwrap_or(0)
    }

    /// The global index of the worker that owns `key`, and whether it runs in this process
    /// (then its local index).
    pub fn owner(&self, key: &Value) -> (usize, Option<usize>) {
        let (first, peers, per_process) = *lock(&self.0.placement);
        let worker = (route(key) % peers.max(1) as u64) as usize;
        (worker, (first..first + per_process).contains(&worker).then(|| worker - first))
    }

    /// The process that runs global worker `worker`, and this process's index (timely places
    /// workers `p * w .. (p + 1) * w` in process `p`).
    pub fn process_of(&self, worker: usize) -> (usize, usize) {
        let (first, _, per_process) = *lock(&self.0.placement);
        (worker / per_process.max(1), first / per_process.max(1))
    }

    /// Per bound `(partition, offset)`: `None` when this process does not read the partition;
    /// else the least time at which the record and every one before it are reflected, once read
    /// ([`PartitionCoverage::needed`]).
    pub fn needed(&self, bounds: &[(PartitionId, Offset)]) -> Vec<Option<Option<Time>>> {
        let coverage = lock(&self.0.coverage);
        bounds.iter().map(|(p, offset)| coverage.get(p).map(|c| c.needed(*offset))).collect()
    }

    /// Local worker `local`'s current rows of `view`, for lookups at its latest completed time.
    pub fn current(&self, view: &str, local: usize) -> Option<Arc<CurrentRows>> {
        lock(&self.0.current).get(&(view.to_string(), local)).cloned()
    }

    /// Number of local workers that serve.
    pub fn local_workers(&self) -> usize {
        lock(&self.0.inboxes).len()
    }

    /// Sends `request` to local worker `local`, waking it; false if it is gone.
    pub fn send(&self, local: usize, request: Request) -> bool {
        let inboxes = lock(&self.0.inboxes);
        match inboxes.get(local).and_then(Option::as_ref) {
            Some((tx, thread)) => {
                let sent = tx.send(request).is_ok();
                thread.unpark();
                sent
            }
            None => false,
        }
    }

    /// Tells the workers to stop serving once their job is done.
    pub fn stop(&self) {
        self.0.stopped.store(true, Ordering::Relaxed);
        for (_, thread) in lock(&self.0.inboxes).iter().flatten() {
            thread.unpark();
        }
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn stopped(&self) -> bool {
        self.0.stopped.load(Ordering::Relaxed)
    }

    /// The retention, ms.
    pub fn retention_ms(&self) -> u64 {
        self.0.retention_ms
    }

    /// Registers the calling thread as local worker `local` (of global index `global` among
    /// `peers`, `per_process` in each process), and returns its end of the inbox.
    pub(crate) fn worker(&self, local: usize, global: usize, peers: usize, per_process: usize) -> WorkerServer {
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let mut inboxes = lock(&self.0.inboxes);
            if inboxes.len() <= local {
                inboxes.resize_with(local + 1, || None);
            }
            inboxes[local] = Some((tx, std::thread::current()));
        }
        if local == 0 {
            *lock(&self.0.placement) = (global, peers, per_process);
        }
        self.0.progress.send_modify(|p| {
            if p.uppers.len() <= local {
                p.uppers.resize(local + 1, None);
            }
        });
        WorkerServer { views: self.clone(), local, inbox: rx, pending: Vec::new(), published: None, registered: false }
    }

    pub(crate) fn add_name(&self, name: &str) {
        let mut names = lock(&self.0.names);
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }

    /// A writer of coverage for one input operator's partitions.
    pub(crate) fn coverage_writer(
        &self,
        partitions: &[PartitionId],
        restored: &[Option<(Offset, Time)>],
    ) -> CoverageWriter {
        let mut coverage = lock(&self.0.coverage);
        for (p, restored) in partitions.iter().zip(restored) {
            let entry = coverage.entry(p.clone()).or_default();
            if let Some((next, time)) = *restored {
                // Offsets before the restored position are reflected once the restored state's
                // latest time is.
                entry.marks.push_back((0, time));
                entry.greatest = time;
                entry.next = next;
            }
        }
        CoverageWriter { views: self.clone(), partitions: partitions.to_vec(), batch: Vec::new() }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An input operator's records, as coverage: `(partition index, offset, time)` per poll.
pub(crate) struct CoverageWriter {
    views: Views,
    partitions: Vec<PartitionId>,
    batch: Vec<(usize, Offset, Time)>,
}

impl CoverageWriter {
    pub(crate) fn record(&mut self, index: usize, offset: Offset, time: Time) {
        self.batch.push((index, offset, time));
    }
    /// Publishes what was recorded since the last flush.
    pub(crate) fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut coverage = lock(&self.views.0.coverage);
        for (index, offset, time) in self.batch.drain(..) {
            if let Some(entry) = coverage.get_mut(&self.partitions[index]) {
                entry.record(offset, time);
            }
        }
    }
}

/// A worker's served view, without its row type.
pub(crate) trait ServedView {
    fn name(&self) -> &str;
    /// The trace's upper (`Time::MAX` when complete).
    fn upper(&mut self) -> Time;
    /// Lets the trace compact what lies `retention` behind its upper.
    fn maintain(&mut self, retention_ms: u64);
    fn read(&mut self, read: &Read, at: Time) -> Result<Vec<KeyRows>>;
    fn subscribe(&mut self, at: Time, resume: bool, feed: Feed) -> Result<()>;
    /// The view's current rows, shared with the front.
    fn current(&self) -> Arc<CurrentRows>;
    /// Builds the current rows from the trace, if asked for and not built yet.
    fn build_current(&mut self);
}

type Trace<D> = TraceAgent<ValSpine<ServedKey, D, Time, Diff>>;

struct Subscription {
    /// Updates at or after this go out from the change stream; earlier ones were read from the
    /// trace when the subscription started.
    start: Time,
    feed: Feed,
    pending: Vec<(Box<RawValue>, Time, Diff)>,
    sent_upper: Time,
}

struct View<D: Row> {
    name: String,
    trace: Trace<D>,
    /// The key fields in key order, learned from the first row this worker owns.
    fields: Rc<RefCell<Option<Vec<String>>>>,
    subscriptions: Rc<RefCell<Vec<Subscription>>>,
    since: Time,
    current: Arc<CurrentRows>,
}

/// Arranges `collection` by its rows' keys on every worker and registers the arrangement as the
/// served view `name`.
pub(crate) fn serve<'scope, D: Row>(
    name: &str,
    collection: Collection<'scope, D>,
    served: &Rc<RefCell<Vec<Box<dyn ServedView>>>>,
) {
    let keyed = collection.map(|row| (ServedKey::of(&row.key()), row));
    let pact = Exchange::new(|update: &((ServedKey, D), Time, Diff)| (update.0).0.route);
    let arranged = arrange_core::<_, _, ValBatcher<ServedKey, D, Time, Diff>, ValSpine<ServedKey, D, Time, Diff>>(
        keyed.inner,
        pact,
        &format!("Serve {name}"),
        ValBatcher::new,
    );
    let fields: Rc<RefCell<Option<Vec<String>>>> = Rc::default();
    let subscriptions: Rc<RefCell<Vec<Subscription>>> = Rc::default();
    let current = Arc::new(CurrentRows::default());
    let (learn, subs, rows) = (fields.clone(), subscriptions.clone(), current.clone());
    arranged.stream.sink(Pipeline, &format!("Serve {name} changes"), move |(input, frontier)| {
        let mut subs = subs.borrow_mut();
        input.for_each(|_, spans| {
            // Once built, the current rows take every batch after their upper, whole.
            let mut state = rows.state.write().unwrap_or_else(|p| p.into_inner());
            for span in spans.drain(..) {
                let upper = span.upper().elements().first().copied().unwrap_or(Time::MAX);
                let lower = span.lower().elements().first().copied().unwrap_or(Time::MAX);
                let keeping = state.built && lower >= state.upper;
                if keeping {
                    state.upper = upper;
                }
                let Some(batch) = span.inner else { continue };
                let mut cursor = batch.cursor();
                let learning = learn.borrow().is_none();
                if subs.is_empty() && !learning && !keeping {
                    continue;
                }
                while cursor.key_valid(&batch) {
                    while cursor.val_valid(&batch) {
                        let row: &D = cursor.val(&batch);
                        if learn.borrow().is_none() {
                            *learn.borrow_mut() = field_names(&row.key());
                        }
                        let mut json = None;
                        if !subs.is_empty() {
                            cursor.map_times(&batch, |time, diff| {
                                for sub in subs.iter_mut().filter(|s| *time >= s.start) {
                                    let raw = json.get_or_insert_with(|| to_raw(row)).clone();
                                    sub.pending.push((raw, *time, *diff));
                                }
                            });
                        }
                        if keeping {
                            let mut net: Diff = 0;
                            cursor.map_times(&batch, |_, diff| net += *diff);
                            if net != 0 {
                                if state.fields.is_none() {
                                    state.fields = learn.borrow().clone();
                                }
                                let key: &ServedKey = cursor.key(&batch);
                                state.apply(&key.bytes, json.take().unwrap_or_else(|| to_raw(row)), net);
                            }
                        }
                        cursor.step_val(&batch);
                    }
                    cursor.step_key(&batch);
                }
            }
        });
        let upper = frontier.frontier().first().copied().unwrap_or(Time::MAX);
        subs.retain_mut(|sub| {
            if upper < sub.start || (upper == sub.sent_upper && sub.pending.is_empty()) {
                return true;
            }
            sub.sent_upper = upper;
            let updates = std::mem::take(&mut sub.pending);
            sub.feed.send(Changes { snapshot: false, updates, upper }, false) && upper != Time::MAX
        });
    });
    served.borrow_mut().push(Box::new(View {
        name: name.to_string(),
        trace: arranged.trace,
        fields,
        subscriptions,
        since: 0,
        current,
    }));
}

fn to_raw<D: Serialize>(row: &D) -> Box<RawValue> {
    serde_json::value::to_raw_value(row).unwrap_or_else(|e| {
        serde_json::value::to_raw_value(&format!("unserializable row: {e}")).expect("a string serializes")
    })
}

fn field_names(key: &Value) -> Option<Vec<String>> {
    match key {
        Value::Object(fields) => Some(fields.keys().cloned().collect()),
        _ => Some(Vec::new()),
    }
}

impl<D: Row> View<D> {
    fn query_error(&self, reason: impl Into<String>) -> Error {
        Error::Query { view: self.name.clone(), reason: reason.into() }
    }

    /// The fields of `given` in key order: all of them (`whole`) or leading ones.
    fn ordered<'a>(&self, given: &'a Map<String, Value>, whole: bool) -> Result<Option<Vec<(&'a str, &'a Value)>>> {
        let fields = self.fields.borrow();
        let Some(fields) = fields.as_ref() else {
            // This worker owns no row yet: nothing can match.
            return Ok(None);
        };
        let n = given.len();
        let expected = if whole { &fields[..] } else { &fields[..n.min(fields.len())] };
        if n > fields.len() || given.keys().any(|k| !expected.contains(k)) || (whole && n != fields.len()) {
            let what = if whole { "every key field" } else { "leading key fields" };
            return Err(self.query_error(format!(
                "give {what} ({}); got {}",
                fields.join(", "),
                given.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(Some(expected.iter().filter_map(|k| given.get_key_value(k)).map(|(k, v)| (k.as_str(), v)).collect()))
    }
}

impl<D: Row> ServedView for View<D> {
    fn name(&self) -> &str {
        &self.name
    }

    fn upper(&mut self) -> Time {
        let mut upper = Antichain::new();
        self.trace.read_upper(&mut upper);
        upper.elements().first().copied().unwrap_or(Time::MAX)
    }

    fn maintain(&mut self, retention_ms: u64) {
        let upper = self.upper();
        let since = upper.saturating_sub(retention_ms.max(1)).max(self.since);
        if since > self.since {
            self.since = since;
            self.trace.set_logical_compaction(Antichain::from_elem(since).borrow());
            self.trace.set_physical_compaction(Antichain::from_elem(since).borrow());
        }
    }

    fn read(&mut self, read: &Read, at: Time) -> Result<Vec<KeyRows>> {
        if at < self.since {
            return Err(self.query_error(format!("time {at} is no longer kept (kept from {})", self.since)));
        }
        let (start, prefix, limit, exact) = match read {
            Read::Lookup { key } => match self.ordered(key, true)? {
                Some(fields) => {
                    let mut bytes = encode_prefix(fields);
                    bytes.push(END);
                    (bytes.clone(), bytes, 1, true)
                }
                None => return Ok(Vec::new()),
            },
            Read::Scan { prefix, after, limit } => match self.ordered(prefix, false)? {
                Some(fields) => {
                    let bytes = if prefix.is_empty() { Vec::new() } else { encode_prefix(fields) };
                    let start = match after {
                        Some(after) if after.as_slice() >= bytes.as_slice() => after.clone(),
                        _ => bytes.clone(),
                    };
                    (start, bytes, *limit, false)
                }
                None => return Ok(Vec::new()),
            },
        };
        let after = match read {
            Read::Scan { after: Some(after), .. } => Some(after.clone()),
            _ => None,
        };
        let batches = self.trace.batches_through(Antichain::new().borrow()).unwrap_or_default();
        let (mut cursor, storage) = cursor_list(batches);
        cursor.seek_key(&storage, &ServedKey { bytes: start, route: 0 });
        let mut out: Vec<KeyRows> = Vec::new();
        while cursor.key_valid(&storage) && out.len() < limit {
            let key: &ServedKey = cursor.key(&storage);
            if exact && key.bytes != prefix || !key.bytes.starts_with(&prefix) {
                break;
            }
            if after.as_ref().is_some_and(|a| key.bytes <= *a) {
                cursor.step_key(&storage);
                continue;
            }
            let mut rows = Vec::new();
            while cursor.val_valid(&storage) {
                let mut count: Diff = 0;
                cursor.map_times(&storage, |time, diff| {
                    if *time <= at {
                        count += *diff;
                    }
                });
                if count != 0 {
                    rows.push((to_raw(cursor.val(&storage)), count));
                }
                cursor.step_val(&storage);
            }
            if !rows.is_empty() {
                out.push((key.bytes.clone(), rows));
            }
            cursor.step_key(&storage);
        }
        Ok(out)
    }

    fn current(&self) -> Arc<CurrentRows> {
        self.current.clone()
    }

    fn build_current(&mut self) {
        if !self.current.wanted.load(Ordering::Relaxed) {
            return;
        }
        let upper = self.upper();
        let mut state = self.current.state.write().unwrap_or_else(|p| p.into_inner());
        if state.built {
            return;
        }
        // Everything in the trace: every update before its upper (the change stream applies
        // only batches from there on).
        let batches = self.trace.batches_through(Antichain::new().borrow()).unwrap_or_default();
        let (mut cursor, storage) = cursor_list(batches);
        while cursor.key_valid(&storage) {
            while cursor.val_valid(&storage) {
                let mut net: Diff = 0;
                cursor.map_times(&storage, |time, diff| {
                    if *time < upper {
                        net += *diff;
                    }
                });
                if net != 0 {
                    let (key, row): (&ServedKey, &D) = (cursor.key(&storage), cursor.val(&storage));
                    let key = key.bytes.clone();
                    state.apply(&key, to_raw(row), net);
                }
                cursor.step_val(&storage);
            }
            cursor.step_key(&storage);
        }
        state.fields = self.fields.borrow().clone();
        state.upper = upper;
        state.built = true;
    }

    fn subscribe(&mut self, at: Time, resume: bool, feed: Feed) -> Result<()> {
        if at < self.since {
            return Err(self.query_error(format!("time {at} is no longer kept (kept from {})", self.since)));
        }
        let upper = self.upper();
        let batches = self.trace.batches_through(Antichain::new().borrow()).unwrap_or_default();
        let (mut cursor, storage) = cursor_list(batches);
        let (mut snapshot, mut since) = (Vec::new(), Vec::new());
        while cursor.key_valid(&storage) {
            while cursor.val_valid(&storage) {
                let row: &D = cursor.val(&storage);
                let mut count: Diff = 0;
                let mut json = None;
                cursor.map_times(&storage, |time, diff| {
                    if *time <= at {
                        count += *diff;
                    } else if *time < upper {
                        since.push((json.get_or_insert_with(|| to_raw(row)).clone(), *time, *diff));
                    }
                });
                if count != 0 && !resume {
                    snapshot.push((to_raw(row), at, count));
                }
                cursor.step_val(&storage);
            }
            cursor.step_key(&storage);
        }
        since.sort_by_key(|u| u.1);
        if !resume && !feed.send(Changes { snapshot: true, updates: snapshot, upper: at.saturating_add(1) }, true) {
            return Ok(());
        }
        if !feed.send(Changes { snapshot: false, updates: since, upper }, true) || upper == Time::MAX {
            return Ok(());
        }
        self.subscriptions.borrow_mut().push(Subscription {
            start: upper,
            feed,
            pending: Vec::new(),
            sent_upper: upper,
        });
        Ok(())
    }
}

/// A worker's end of the views: its inbox, and the requests waiting for their time.
pub(crate) struct WorkerServer {
    views: Views,
    local: usize,
    inbox: std::sync::mpsc::Receiver<Request>,
    pending: Vec<Request>,
    published: Option<Time>,
    /// Whether the views' current rows are registered with the front.
    registered: bool,
}

impl WorkerServer {
    /// Whether the views were told to stop.
    pub(crate) fn stopped(&self) -> bool {
        self.views.stopped()
    }

    /// Answers what can be answered, publishes the worker's upper, lets traces compact.
    pub(crate) fn serve(&mut self, served: &mut [Box<dyn ServedView>]) {
        let retention = self.views.retention_ms();
        for view in served.iter_mut() {
            view.maintain(retention);
            view.build_current();
        }
        if !self.registered && !served.is_empty() {
            self.registered = true;
            let mut current = lock(&self.views.0.current);
            for view in served.iter() {
                current.insert((view.name().to_string(), self.local), view.current());
            }
        }
        let upper = served.iter_mut().map(|v| v.upper()).min().unwrap_or(Time::MAX);
        while let Ok(request) = self.inbox.try_recv() {
            self.pending.push(request);
        }
        let mut waiting = Vec::new();
        for request in self.pending.drain(..) {
            match request {
                Request::Read { view, read, at, reply } => {
                    if reply.is_closed() {
                        continue;
                    }
                    if at >= upper {
                        waiting.push(Request::Read { view, read, at, reply });
                        continue;
                    }
                    let answer = match served.iter_mut().find(|v| v.name() == view) {
                        Some(v) => v.read(&read, at),
                        None => Err(Error::Query { view, reason: "no such view".into() }),
                    };
                    let _ = reply.send(answer);
                }
                Request::Subscribe { view, at, resume, feed, reply } => {
                    if feed.tx.is_closed() {
                        continue;
                    }
                    if at >= upper {
                        waiting.push(Request::Subscribe { view, at, resume, feed, reply });
                        continue;
                    }
                    let started = match served.iter_mut().find(|v| v.name() == view) {
                        Some(v) => v.subscribe(at, resume, feed),
                        None => Err(Error::Query { view, reason: "no such view".into() }),
                    };
                    let _ = reply.send(started);
                }
            }
        }
        self.pending = waiting;
        if self.published != Some(upper) {
            self.published = Some(upper);
            let local = self.local;
            self.views.0.progress.send_modify(|p| p.uppers[local] = Some(upper));
            if upper != Time::MAX {
                // What no later read can ask about (reads are at completed times, and those
                // only move on).
                let keep_from = self.views.progress().completed().unwrap_or(0).saturating_sub(retention);
                for c in lock(&self.views.0.coverage).values_mut() {
                    c.forget_through(keep_from);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Input, InputInfo, Inputs, Job, Keyed, Pipeline};
    use crate::{ClusterConfig, JobOptions, MemorySink, MemorySource, Record, Retention};
    use serde_json::json;

    #[derive(Clone)]
    struct WordCounts;

    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
    struct WordCount {
        word: String,
        records: u64,
    }

    impl Keyed for WordCount {
        fn key(&self) -> Value {
            json!({ "word": self.word })
        }
    }

    fn word(record: &Record) -> std::result::Result<(String, u64, Diff), std::str::Utf8Error> {
        let text = std::str::from_utf8(record.value.as_deref().unwrap_or(b""))?;
        Ok((text.to_string(), record.timestamp.unwrap_or(0) as u64, 1))
    }

    const WORDS: Input<String, std::str::Utf8Error> =
        Input { name: "words", topic: "words", about: "words", decode: word, retention: Retention::Collapse };

    impl Pipeline for WordCounts {
        type Output = WordCount;
        fn name(&self) -> &str {
            "word-counts"
        }
        fn about(&self) -> &str {
            "per word, its records"
        }
        fn inputs(&self) -> Vec<InputInfo> {
            vec![WORDS.info()]
        }
        fn build<'s>(&self, inputs: &mut Inputs<'s, '_>) -> Result<Collection<'s, WordCount>> {
            let words = inputs.read(&WORDS)?;
            Ok(words.count().map(|(word, n)| WordCount { word, records: n as u64 }))
        }
    }

    fn read(views: &Views, local: usize, read: Read, at: Time) -> Result<Vec<KeyRows>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        assert!(views.send(local, Request::Read { view: "word-counts".into(), read, at, reply }));
        answer.blocking_recv().expect("the worker answers")
    }

    fn rows(keys: &[KeyRows]) -> Vec<String> {
        keys.iter().flat_map(|(_, rows)| rows.iter().map(|(r, n)| format!("{}x{n}", r.get()))).collect()
    }

    #[test]
    fn every_worker_serves_its_keys_at_a_completed_time_and_scans_merge_in_key_order() {
        let words: Vec<(i64, &str)> =
            (0..400).map(|i| (i * 10, ["apple", "banana", "cherry", "date", "elder"][i as usize % 5])).collect();
        let source = MemorySource::single("words", words).with_batch(7);
        let views = Views::new(1_000_000);
        let job_views = views.clone();
        let job = std::thread::spawn(move || {
            Job::new(WordCounts)
                .source("words", source)
                .sink(MemorySink::new())
                .cluster(ClusterConfig::threads(2))
                .options(JobOptions { serve: Some(job_views), ..JobOptions::default() })
                .run()
        });
        // The inputs end; the workers go on serving the final state.
        let started = std::time::Instant::now();
        while views.progress().completed() != Some(Time::MAX - 1) {
            assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", views.progress());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(views.names(), vec!["word-counts".to_string()]);
        let key = json!({"word": "cherry"});
        let (_, local) = views.owner(&key);
        let local = local.expect("one process owns every key");
        let Value::Object(key) = key else { unreachable!() };
        let found = read(&views, local, Read::Lookup { key: key.clone() }, Time::MAX - 1).expect("lookup");
        assert_eq!(rows(&found), vec![r#"{"word":"cherry","records":80}x1"#]);
        let other = read(&views, 1 - local, Read::Lookup { key }, Time::MAX - 1).expect("lookup");
        assert!(other.is_empty(), "only the owner holds the key");
        // At time 100: records at 0..=100, i.e. 11 of them.
        let early = read(
            &views,
            local,
            Read::Lookup { key: json!({"word": "apple"}).as_object().cloned().unwrap_or_default() },
            100,
        );
        let (_, apple_owner) = views.owner(&json!({"word": "apple"}));
        if apple_owner == Some(local) {
            assert_eq!(rows(&early.expect("lookup")), vec![r#"{"word":"apple","records":3}x1"#]);
        }
        // A scan: every worker's page, merged in key order.
        let mut all: Vec<KeyRows> = Vec::new();
        for w in 0..views.local_workers() {
            all.extend(
                read(&views, w, Read::Scan { prefix: Map::new(), after: None, limit: 10 }, Time::MAX - 1)
                    .expect("scan"),
            );
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(rows(&all).len(), 5);
        assert!(rows(&all)[0].starts_with(r#"{"word":"apple""#) && rows(&all)[4].starts_with(r#"{"word":"elder""#));
        // A field that is not a key field is refused, naming the key fields.
        let bad = read(
            &views,
            local,
            Read::Lookup { key: json!({"records": 1}).as_object().cloned().unwrap_or_default() },
            Time::MAX - 1,
        );
        assert!(bad.expect_err("not a key field").to_string().contains("word"));
        // The current rows, built on the first lookup, answer as the trace does.
        for w in ["apple", "banana", "cherry", "date", "elder", "fig"] {
            let key = json!({ "word": w }).as_object().cloned().unwrap_or_default();
            let (_, Some(owner)) = views.owner(&Value::Object(key.clone())) else { unreachable!() };
            let current = views.current("word-counts", owner).expect("registered");
            let started = std::time::Instant::now();
            let found = loop {
                match current.lookup("word-counts", &key, 0).expect("lookup") {
                    Some(CurrentLookup::Rows { at, rows }) => break (at, rows),
                    _ => {
                        assert!(started.elapsed() < std::time::Duration::from_secs(30));
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                }
            };
            assert_eq!(found.0, Time::MAX - 1, "complete");
            let traced = read(&views, owner, Read::Lookup { key }, Time::MAX - 1).expect("lookup");
            assert_eq!(rows(&found.1), rows(&traced), "{w}");
        }
        let current = views.current("word-counts", 0).expect("registered");
        let wrong = current.lookup("word-counts", json!({"records": 1}).as_object().expect("object"), 0);
        assert!(wrong.expect_err("not a key field").to_string().contains("word"));
        views.stop();
        job.join().expect("job thread").expect("job runs");
    }

    #[test]
    fn keys_sort_by_value_and_prefixes_are_byte_prefixes() {
        let keys = [
            json!({"user": -3, "position": 1}),
            json!({"user": 1, "position": 1}),
            json!({"user": 1, "position": 2}),
            json!({"user": 1, "position": 10}),
            json!({"user": 2, "position": 0}),
            json!({"user": u64::MAX, "position": 0}),
        ];
        let encoded: Vec<_> = keys.iter().map(encode_key).collect();
        assert!(encoded.windows(2).all(|w| w[0] < w[1]), "{encoded:?}");
        let user_one = encode_prefix([("user", &json!(1))]);
        let within: Vec<_> = encoded.iter().filter(|e| e.starts_with(&user_one)).collect();
        assert_eq!(within.len(), 3);
        assert!(encode_key(&json!("a\u{0}b")) < encode_key(&json!("a\u{1}")));
        assert!(encode_key(&json!("ab")) > encode_key(&json!("a")));
    }

    #[test]
    fn route_ignores_field_order_but_not_values() {
        let a: Value = serde_json::from_str(r#"{"user": 1, "position": 2}"#).expect("json");
        let b: Value = serde_json::from_str(r#"{"position": 2, "user": 1}"#).expect("json");
        assert_eq!(route(&a), route(&b));
        assert_ne!(route(&a), route(&json!({"user": 1, "position": 3})));
    }

    #[test]
    fn owners_do_not_follow_the_parity_or_the_stride_of_ids() {
        // Even ids, and ids that are multiples of 4, spread over 2 and 4 workers alike.
        for (stride, peers) in [(2u64, 2u64), (4, 4), (2, 4), (1, 2)] {
            let mut owned = vec![0u32; peers as usize];
            for i in 0..4_000u64 {
                owned[(route(&json!({ "post": i * stride })) % peers) as usize] += 1;
            }
            let fair = 4_000 / peers as u32;
            assert!(owned.iter().all(|&n| n > fair * 9 / 10 && n < fair * 11 / 10), "stride {stride}: {owned:?}");
        }
    }

    #[test]
    fn coverage_reflects_an_offset_once_every_earlier_record_is() {
        let mut c = PartitionCoverage::default();
        for (offset, time) in [(0, 100), (1, 90), (2, 150), (3, 120), (4, 200)] {
            c.record(offset, time);
        }
        assert_eq!(c.reflected(99), 0);
        assert_eq!(c.reflected(100), 2, "offset 1 (time 90) comes after offset 0 (time 100)");
        assert_eq!(c.reflected(160), 4);
        assert_eq!(c.reflected(200), 5);
        c.forget_through(150);
        assert_eq!(c.reflected(160), 4);
    }

    #[test]
    fn the_time_an_offset_needs_is_the_least_at_which_it_is_reflected() {
        let mut c = PartitionCoverage::default();
        let records = [(0, 100), (1, 90), (2, 150), (3, 120), (4, 200)];
        for (offset, time) in records {
            c.record(offset, time);
        }
        // Against the definition: the least `at` with `reflected(at) > offset`.
        for (offset, _) in records {
            let least = (0..=300).find(|&at| c.reflected(at) > offset);
            assert_eq!(c.needed(offset), least, "offset {offset}");
        }
        assert_eq!(c.needed(5), None, "not read yet");
        // Forgotten marks leave a bound that is still reached (it was completed).
        c.forget_through(160);
        assert_eq!(c.needed(1), Some(160));
        assert_eq!(c.needed(4), Some(200));
    }
}
