//! Kappa's HTTP front over served views.
//!
//! This crate has one job the others do not: speaking HTTP. The engine keeps each output
//! arranged by key on the workers that own the keys and answers reads between dataflow steps
//! ([`kappa_engine::serve`]); this front routes a read to the owner worker (or to every worker, for
//! a scan), waits for the time a read needs, and writes JSON or Server-Sent Events. It holds no
//! state of its own.
//!
//! # Endpoints
//! - `GET /views`: the views, and where each local worker stands.
//! - `GET /views/{view}/key?FIELD=VALUE...`: the rows of one key (every key field given).
//! - `GET /views/{view}/rows?[LEADING FIELD=VALUE...]&limit=N&after=TOKEN`: rows in key order
//!   whose key starts with the given fields, `limit` keys at most (default 100), continuing after
//!   `next` of an earlier answer.
//! - `GET /views/{view}/subscribe[?from=TIME]`: Server-Sent Events: `snapshot` (every row at a
//!   completed time), then one `update` per completed time with updates, each with its time as
//!   the event id; `from` (or the `Last-Event-ID` header) resumes after that time instead of a
//!   snapshot, while the view retains it. A subscriber whose unread updates pass the buffer
//!   receives `closed` with `resume_from`, and the stream ends.
//!
//! A value is read as JSON when it parses (`post=7` is the number 7, `name="7"` the string "7")
//! and as a string otherwise (`page=home`).
//!
//! Every answer states the time it was read at (`time`: it holds every update at or before it)
//! and, per input partition, the offset below which every record is reflected (`reflected`,
//! keyed `topic:partition`). A read may ask to reflect given records: `wait_for=TOPIC:PARTITION:OFFSET,...`
//! (the offsets a producer's delivery reports give) with `timeout=DURATION` (default 5s); the
//! read then waits for a time at which they all are, and answers 504 with the current coverage
//! when the timeout passes first.
//!
//! # Examples
//!
//! ```no_run
//! # fn main() -> Result<(), kappa_serve::Error> {
//! let views = kappa_engine::serve::Views::new(kappa_engine::serve::DEFAULT_RETENTION_MS);
//! let server = kappa_serve::start("127.0.0.1:0", views.clone(), kappa_serve::Settings::default())?;
//! println!("serving on http://{}", server.address());
//! // ... run a job with `JobOptions { serve: Some(views), .. }` ...
//! # Ok(()) }
//! ```
#![forbid(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use kappa_engine::serve::{Changes, Feed, KeyRows, Progress, Read, Request, Views};
use kappa_engine::{Offset, PartitionId, Time};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

/// What can go wrong starting the front.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The address cannot be bound.
    #[error("cannot serve on {address}: {source}; choose a free address with --serve HOST:PORT")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The kernel send buffer of every connection.
const SEND_BUFFER_BYTES: usize = 256 << 10;

/// Settings of the front.
#[derive(Clone, Debug)]
pub struct Settings {
    /// A subscriber may fall this many updates behind before it is cut off.
    pub subscriber_buffer: usize,
    /// The longest `timeout` a read may ask for.
    pub max_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { subscriber_buffer: 100_000, max_timeout: Duration::from_secs(60) }
    }
}

/// A running front: its address; it stops with the process.
pub struct Server {
    address: SocketAddr,
    _runtime: std::thread::JoinHandle<()>,
}

impl Server {
    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

#[derive(Clone)]
struct App {
    views: Views,
    settings: Settings,
}

/// Binds `address` and serves `views` from a runtime thread of its own.
pub fn start(address: &str, views: Views, settings: Settings) -> Result<Server, Error> {
    let bind = |source| Error::Bind { address: address.to_string(), source };
    let listener = std::net::TcpListener::bind(address).map_err(bind)?;
    listener.set_nonblocking(true).map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kappa-serve")
        .enable_all()
        .build()
        .map_err(bind)?;
    let app = router(App { views, settings });
    let thread = std::thread::Builder::new()
        .name("kappa-serve".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => {
                        let listener = listener.tap_io(|stream| {
                            // Answers are small and latency counts: no Nagle delay.
                            let _ = stream.set_nodelay(true);
                            // A fixed send buffer instead of the kernel's autotuned one (up to
                            // 4 MB): what a slow subscriber has not read then waits in the
                            // subscription's own bounded buffer, where the server sees it and
                            // can cut the subscriber off with a resume point.
                            let _ = socket2::SockRef::from(&*stream).set_send_buffer_size(SEND_BUFFER_BYTES);
                        });
                        if let Err(e) = axum::serve(listener, app).await {
                            tracing::error!("serving stopped: {e}");
                        }
                    }
                    Err(e) => tracing::error!("serving stopped: {e}"),
                }
            })
        })
        .map_err(bind)?;
    Ok(Server { address: bound, _runtime: thread })
}

fn router(app: App) -> Router {
    Router::new()
        .route("/views", get(list))
        .route("/views/{view}/key", get(lookup))
        .route("/views/{view}/rows", get(scan))
        .route("/views/{view}/subscribe", get(subscribe))
        .with_state(app)
}

/// A failed read: a status and a JSON body saying what to do.
struct Failure(StatusCode, Value);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

fn bad_request(reason: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, json!({ "error": reason.into() }))
}

async fn list(State(app): State<App>) -> Json<Value> {
    let progress = app.views.progress();
    Json(json!({
        "views": app.views.names(),
        "completed": progress.completed(),
        "workers": progress.uppers,
        "retention_ms": app.views.retention_ms(),
    }))
}

/// The parameters every read takes, and the key fields.
struct Params {
    fields: Map<String, Value>,
    wait_for: Vec<(PartitionId, Offset)>,
    timeout: Duration,
    limit: usize,
    after: Option<Vec<u8>>,
    from: Option<Time>,
}

fn parse_params(app: &App, query: Vec<(String, String)>) -> Result<Params, Failure> {
    let mut p = Params {
        fields: Map::new(),
        wait_for: Vec::new(),
        timeout: Duration::from_secs(5),
        limit: 100,
        after: None,
        from: None,
    };
    for (name, value) in query {
        match name.as_str() {
            "wait_for" => {
                for bound in value.split(',').filter(|b| !b.is_empty()) {
                    p.wait_for.push(parse_bound(bound)?);
                }
            }
            "timeout" => {
                let timeout = humantime::parse_duration(&value)
                    .map_err(|e| bad_request(format!("timeout={value}: {e}; give a duration such as 500ms or 2s")))?;
                p.timeout = timeout.min(app.settings.max_timeout);
            }
            "limit" => {
                p.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad_request(format!("limit={value}: give a positive number of keys")))?
                    .min(10_000);
            }
            "after" => {
                p.after = Some(from_hex(&value).ok_or_else(|| bad_request("after: give `next` of an earlier answer"))?)
            }
            "from" => p.from = Some(value.parse().map_err(|_| bad_request(format!("from={value}: give a time (ms)")))?),
            _ => {
                let parsed = serde_json::from_str(&value).unwrap_or(Value::String(value));
                p.fields.insert(name, parsed);
            }
        }
    }
    Ok(p)
}

fn parse_bound(bound: &str) -> Result<(PartitionId, Offset), Failure> {
    let bad = || bad_request(format!("wait_for={bound}: give TOPIC:PARTITION:OFFSET, e.g. likes:0:1234"));
    let (rest, offset) = bound.rsplit_once(':').ok_or_else(bad)?;
    let (topic, partition) = rest.rsplit_once(':').ok_or_else(bad)?;
    let partition = partition.parse().map_err(|_| bad())?;
    let offset = offset.parse().map_err(|_| bad())?;
    Ok((PartitionId::new(topic, partition), offset))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// Per partition `topic:partition`, the offset below which records are reflected at `at`.
fn reflected(views: &Views, at: Time) -> Map<String, Value> {
    views.reflected(at).into_iter().map(|(p, offset)| (format!("{}:{}", p.topic, p.partition), json!(offset))).collect()
}

/// The time an answer states: `at`, or for a complete view the time of its latest record.
fn stated_time(views: &Views, at: Time) -> (Time, bool) {
    if at >= Time::MAX - 1 {
        (views.greatest_time(), true)
    } else {
        (at, false)
    }
}

/// Waits for a time that the workers `which` have completed and at which `wait_for` is
/// reflected, until `deadline`.
async fn wait_for_time(
    views: &Views,
    which: Option<usize>,
    wait_for: &[(PartitionId, Offset)],
    deadline: Instant,
) -> Result<Time, Failure> {
    let mut watch = views.watch();
    loop {
        let progress: Progress = watch.borrow_and_update().clone();
        let at = match which {
            Some(local) => progress.uppers.get(local).copied().flatten().and_then(|u| u.checked_sub(1)),
            None => progress.completed(),
        };
        if let Some(at) = at.filter(|&at| views.reflects(wait_for, at)) {
            return Ok(at);
        }
        let changed =
            tokio::time::timeout_at(deadline.min(Instant::now() + Duration::from_millis(50)), watch.changed());
        match changed.await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Failure(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "the job stopped" }))),
            Err(_) if Instant::now() >= deadline => {
                let at = at.unwrap_or(0);
                let (time, complete) = stated_time(views, at);
                return Err(Failure(
                    StatusCode::GATEWAY_TIMEOUT,
                    json!({
                        "error": "the view does not reflect every record asked for yet; retry, or give a longer timeout",
                        "time": time,
                        "complete": complete,
                        "reflected": reflected(views, at),
                    }),
                ));
            }
            Err(_) => {}
        }
    }
}

/// Reads `read` at `at` on local worker `local`.
async fn read_on(views: &Views, view: &str, local: usize, read: Read, at: Time) -> Result<Vec<KeyRows>, Failure> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    if !views.send(local, Request::Read { view: view.to_string(), read, at, reply }) {
        return Err(Failure(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "the job's workers are gone" })));
    }
    match answer.await {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(e)) => Err(bad_request(e.to_string())),
        Err(_) => Err(Failure(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "the job's workers are gone" }))),
    }
}

fn known_view(app: &App, view: &str) -> Result<(), Failure> {
    let names = app.views.names();
    if names.iter().any(|n| n == view) {
        return Ok(());
    }
    Err(Failure(
        StatusCode::NOT_FOUND,
        json!({ "error": format!("no view `{view}`; GET /views lists them"), "views": names }),
    ))
}

fn rows_json(keys: &[KeyRows]) -> Vec<&RawValue> {
    let mut rows = Vec::new();
    for (_, key_rows) in keys {
        for (row, count) in key_rows {
            for _ in 0..(*count).max(0) {
                rows.push(row.as_ref());
            }
        }
    }
    rows
}

async fn lookup(
    State(app): State<App>,
    Path(view): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, Failure> {
    known_view(&app, &view)?;
    let p = parse_params(&app, query)?;
    if p.fields.is_empty() {
        return Err(bad_request("give the key's fields as FIELD=VALUE parameters"));
    }
    let (worker, local) = app.views.owner(&Value::Object(p.fields.clone()));
    let Some(local) = local else {
        return Err(Failure(
            StatusCode::MISDIRECTED_REQUEST,
            json!({ "error": format!("the key is owned by worker {worker}, in another process; ask that process") }),
        ));
    };
    let deadline = Instant::now() + p.timeout;
    let at = wait_for_time(&app.views, Some(local), &p.wait_for, deadline).await?;
    let keys = read_on(&app.views, &view, local, Read::Lookup { key: p.fields }, at).await?;
    let (time, complete) = stated_time(&app.views, at);
    Ok(Json(json!({
        "view": view,
        "time": time,
        "complete": complete,
        "reflected": reflected(&app.views, at),
        "rows": rows_json(&keys),
    })))
}

async fn scan(
    State(app): State<App>,
    Path(view): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, Failure> {
    known_view(&app, &view)?;
    let p = parse_params(&app, query)?;
    let deadline = Instant::now() + p.timeout;
    let at = wait_for_time(&app.views, None, &p.wait_for, deadline).await?;
    let workers = app.views.local_workers();
    let reads = (0..workers).map(|local| {
        let read = Read::Scan { prefix: p.fields.clone(), after: p.after.clone(), limit: p.limit };
        read_on(&app.views, &view, local, read, at)
    });
    let mut keys: Vec<KeyRows> = Vec::new();
    for answer in futures::future::join_all(reads).await {
        keys.extend(answer?);
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    let more = keys.len() > p.limit;
    keys.truncate(p.limit);
    let next = if more || keys.len() == p.limit { keys.last().map(|k| to_hex(&k.0)) } else { None };
    let (time, complete) = stated_time(&app.views, at);
    Ok(Json(json!({
        "view": view,
        "time": time,
        "complete": complete,
        "reflected": reflected(&app.views, at),
        "rows": rows_json(&keys),
        "next": next,
    })))
}

/// A subscription's merge of every local worker's changes.
struct Merge {
    view: String,
    receivers: Vec<tokio::sync::mpsc::UnboundedReceiver<Changes>>,
    buffered: Arc<AtomicUsize>,
    overflowed: Arc<AtomicBool>,
    uppers: Vec<Time>,
    snapshot_parts: usize,
    snapshot: Vec<(Box<RawValue>, i64)>,
    snapshot_time: Time,
    pending: BTreeMap<Time, Vec<(Box<RawValue>, isize)>>,
    /// The latest time the client has completely.
    sent: Time,
    done: bool,
}

impl Merge {
    /// The next events to send, waiting for workers as needed; `None` at the end.
    async fn next_events(&mut self) -> Option<Vec<Event>> {
        if self.done {
            return None;
        }
        loop {
            let mut events = Vec::new();
            let frontier = self.uppers.iter().copied().min().unwrap_or(Time::MAX);
            if self.snapshot_parts == self.receivers.len() {
                self.snapshot_parts = usize::MAX;
                let rows: Vec<Value> =
                    self.snapshot.drain(..).map(|(row, count)| json!({ "row": row, "count": count })).collect();
                let data = json!({ "view": self.view, "time": self.snapshot_time, "rows": rows });
                events
                    .push(Event::default().event("snapshot").id(self.snapshot_time.to_string()).data(data.to_string()));
            }
            if self.snapshot_parts == usize::MAX || self.snapshot_parts == 0 && self.receivers.is_empty() {
                while let Some(entry) = self.pending.first_entry() {
                    if *entry.key() >= frontier {
                        break;
                    }
                    let (time, updates) = entry.remove_entry();
                    let updates: Vec<Value> =
                        updates.into_iter().map(|(row, diff)| json!({ "row": row, "diff": diff })).collect();
                    let data = json!({ "time": time, "updates": updates });
                    events.push(Event::default().event("update").id(time.to_string()).data(data.to_string()));
                    self.sent = time;
                }
                if frontier != Time::MAX && frontier > 0 {
                    self.sent = self.sent.max(frontier - 1);
                }
                if frontier == Time::MAX {
                    events.push(Event::default().event("end").data(json!({ "complete": true }).to_string()));
                    self.done = true;
                    return Some(events);
                }
            }
            if !events.is_empty() {
                return Some(events);
            }
            // Wait for any worker's next message.
            let next = futures::future::select_all(
                self.receivers.iter_mut().enumerate().map(|(i, rx)| Box::pin(async move { (i, rx.recv().await) })),
            );
            let ((worker, message), _, _) = next.await;
            match message {
                Some(changes) => {
                    self.buffered.fetch_sub(changes.updates.len() + 1, Ordering::Relaxed);
                    if changes.snapshot {
                        self.snapshot.extend(changes.updates.into_iter().map(|(row, _, count)| (row, count as i64)));
                        self.snapshot_parts += 1;
                    } else {
                        for (row, time, diff) in changes.updates {
                            self.pending.entry(time).or_default().push((row, diff));
                        }
                    }
                    self.uppers[worker] = self.uppers[worker].max(changes.upper);
                }
                None => {
                    self.done = true;
                    let reason = if self.overflowed.load(Ordering::Relaxed) {
                        "the subscriber fell too far behind (its buffer is full); reconnect with from=resume_from"
                    } else {
                        "the job stopped serving"
                    };
                    let data = json!({ "reason": reason, "resume_from": self.sent });
                    return Some(vec![Event::default().event("closed").data(data.to_string())]);
                }
            }
        }
    }
}

async fn subscribe(
    State(app): State<App>,
    Path(view): Path<String>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Failure> {
    known_view(&app, &view)?;
    let mut p = parse_params(&app, query)?;
    if p.from.is_none() {
        if let Some(id) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
            p.from = Some(id.parse().map_err(|_| bad_request("Last-Event-ID: give a time (ms)"))?);
        }
    }
    let deadline = Instant::now() + p.timeout;
    let at = match p.from {
        Some(from) => {
            // Wait until every worker has completed the resume point.
            let mut watch = app.views.watch();
            loop {
                if watch.borrow_and_update().completed().is_some_and(|c| c >= from) {
                    break from;
                }
                if tokio::time::timeout_at(deadline, watch.changed()).await.is_err() {
                    return Err(Failure(
                        StatusCode::GATEWAY_TIMEOUT,
                        json!({ "error": format!("time {from} is not completed yet") }),
                    ));
                }
            }
        }
        None => wait_for_time(&app.views, None, &p.wait_for, deadline).await?,
    };
    let resume = p.from.is_some();
    let buffered = Arc::new(AtomicUsize::new(0));
    let overflowed = Arc::new(AtomicBool::new(false));
    let mut receivers = Vec::new();
    let mut started = Vec::new();
    for local in 0..app.views.local_workers() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let feed = Feed {
            tx,
            buffered: buffered.clone(),
            limit: app.settings.subscriber_buffer,
            overflowed: overflowed.clone(),
        };
        let (reply, ok) = tokio::sync::oneshot::channel();
        if !app.views.send(local, Request::Subscribe { view: view.clone(), at, resume, feed, reply }) {
            return Err(Failure(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "the job's workers are gone" })));
        }
        receivers.push(rx);
        started.push(ok);
    }
    for ok in started {
        match ok.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(Failure(
                    StatusCode::GONE,
                    json!({ "error": e.to_string(), "retention_ms": app.views.retention_ms() }),
                ))
            }
            Err(_) => {
                return Err(Failure(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "the job's workers are gone" })))
            }
        }
    }
    let workers = receivers.len();
    let merge = Merge {
        view,
        receivers,
        buffered,
        overflowed,
        uppers: vec![at + 1; workers],
        snapshot_parts: if resume { usize::MAX } else { 0 },
        snapshot: Vec::new(),
        snapshot_time: at,
        pending: BTreeMap::new(),
        sent: at,
        done: false,
    };
    let events = stream::unfold(merge, |mut merge| async move {
        let events = merge.next_events().await?;
        Some((stream::iter(events.into_iter().map(Ok)), merge))
    })
    .flatten();
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_parse_topic_partition_offset() {
        let (p, o) = parse_bound("my:topic:3:1234").map_err(|f| f.1).expect("parses");
        assert_eq!((p.topic.as_str(), p.partition, o), ("my:topic", 3, 1234));
        assert!(parse_bound("likes:1234").is_err());
        assert!(parse_bound("likes:x:1").is_err());
    }

    #[test]
    fn continuation_tokens_round_trip() {
        let key = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(from_hex(&to_hex(&key)), Some(key));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
