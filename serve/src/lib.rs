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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use kappa_engine::serve::{Changes, CurrentLookup, Feed, KeyRows, Progress, Read, Request, Views};
use kappa_engine::{Offset, PartitionId, Time};
use serde::Serialize;
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
    /// The client that forwards to other processes cannot be built.
    #[error("cannot build the client that forwards reads to the other processes: {0}")]
    Client(#[source] reqwest::Error),
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
    /// In a cluster, every process's front as `http://HOST:PORT`, in process order (this
    /// process's own included); empty for one process. A lookup of a key another process owns
    /// is forwarded to it, and scans and subscriptions read every process.
    pub peers: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { subscriber_buffer: 100_000, max_timeout: Duration::from_secs(60), peers: Vec::new() }
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

/// What every handler shares: one allocation, so that a request's `State` is a pointer copy.
type App = Arc<AppState>;

struct AppState {
    views: Views,
    settings: Settings,
    client: reqwest::Client,
    /// What answers at the latest completed time state of coverage: every read at that time
    /// states the same, so it is rendered once (and, in a cluster, asked of the others once).
    stated: Mutex<Option<Arc<Statement>>>,
}

/// The time an answer is at, whether the view is complete, and the coverage it states.
struct Statement {
    /// The completed time asked for (the cache's key).
    at: Time,
    /// This process's partitions when it was made: a partition met later makes a new one.
    partitions: usize,
    time: Time,
    complete: bool,
    reflected: Map<String, Value>,
    /// `reflected`, rendered.
    rendered: Box<RawValue>,
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
    kappa_engine::install_tls_provider();
    let client = reqwest::Client::builder().tcp_nodelay(true).build().map_err(Error::Client)?;
    let app = router(Arc::new(AppState { views, settings, client, stated: Mutex::new(None) }));
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
        .route("/internal/needed", get(internal_needed))
        .route("/internal/completed/{least}", get(internal_completed))
        .route("/internal/coverage/{at}", get(internal_coverage))
        .route("/internal/rows/{view}/{at}", get(internal_rows))
        .route("/internal/subscribe/{view}/{at}/{resume}", get(internal_subscribe))
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
    /// Forwarded by another process of the cluster: answer here or refuse, never forward again.
    hop: bool,
}

fn parse_params(app: &App, query: Vec<(String, String)>) -> Result<Params, Failure> {
    let mut p = Params {
        fields: Map::new(),
        wait_for: Vec::new(),
        timeout: Duration::from_secs(5),
        limit: 100,
        after: None,
        from: None,
        hop: false,
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
            "hop" => p.hop = true,
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

fn format_bounds<'a>(bounds: impl IntoIterator<Item = &'a (PartitionId, Offset)>) -> String {
    bounds.into_iter().map(|(p, o)| format!("{}:{}:{o}", p.topic, p.partition)).collect::<Vec<_>>().join(",")
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

fn gone() -> Failure {
    Failure(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "the job's workers are gone" }))
}

impl AppState {
    /// Whether this process is one of several.
    fn cluster(&self) -> bool {
        self.settings.peers.len() > 1
    }

    /// The other processes' fronts.
    fn others(&self) -> Vec<String> {
        let (_, me) = self.views.process_of(0);
        self.settings.peers.iter().enumerate().filter(|(i, _)| *i != me).map(|(_, url)| url.clone()).collect()
    }

    /// `GET url` on another process, until `deadline` (and a second more for the answer).
    async fn peer(&self, url: &str, deadline: Instant) -> Result<reqwest::Response, Failure> {
        let unreachable = |e: &dyn std::fmt::Display| {
            Failure(
                StatusCode::BAD_GATEWAY,
                json!({ "error": format!("{url}: {e}; check --serve-peers and that every process of the job is up") }),
            )
        };
        let timeout = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
        let response = self.client.get(url).timeout(timeout).send().await.map_err(|e| unreachable(&e))?;
        Ok(response)
    }

    /// `GET url` on another process, as JSON; a failure status is passed on as it came.
    async fn peer_json(&self, url: String, deadline: Instant) -> Result<Value, Failure> {
        let url = url.as_str();
        let response = self.peer(url, deadline).await?;
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let body = response.bytes().await.map_err(|e| {
            Failure(StatusCode::BAD_GATEWAY, json!({ "error": format!("{url}: the answer broke off: {e}") }))
        })?;
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            Failure(StatusCode::BAD_GATEWAY, json!({ "error": format!("{url}: not a Kappa answer: {e}") }))
        })?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(Failure(status, value))
        }
    }
}

/// Per partition this process reads, as `topic:partition`, the offset below which records are
/// reflected at `at`.
fn local_reflected(views: &Views, at: Time) -> Map<String, Value> {
    views.reflected(at).into_iter().map(|(p, offset)| (format!("{}:{}", p.topic, p.partition), json!(offset))).collect()
}

/// Per partition `topic:partition`, the offset below which records are reflected at `at`, and
/// the greatest time of any record read: this process's partitions, and in a cluster every
/// process's.
async fn coverage_at(app: &App, at: Time, deadline: Instant) -> Result<(Map<String, Value>, Time), Failure> {
    let mut reflected = local_reflected(&app.views, at);
    let mut greatest = app.views.greatest_time();
    if app.cluster() {
        let others = app.others();
        let answers = futures::future::join_all(
            others.iter().map(|peer| app.peer_json(format!("{peer}/internal/coverage/{at}"), deadline)),
        )
        .await;
        for answer in answers {
            let answer = answer?;
            if let Some(Value::Object(theirs)) = answer.get("reflected") {
                reflected.extend(theirs.clone());
            }
            greatest = greatest.max(answer.get("greatest").and_then(Value::as_u64).unwrap_or(0));
        }
    }
    Ok((reflected, greatest))
}

/// The time an answer states, whether the view is complete, and its coverage. A completed
/// time's coverage does not change (records read later have later times), so the latest one is
/// kept; a complete view's is not (it states the greatest time of any record, which may grow).
async fn stated(app: &App, at: Time, deadline: Instant) -> Result<Arc<Statement>, Failure> {
    let partitions = app.views.partitions();
    let cached = app.stated.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(statement) = cached.filter(|s| s.at == at && s.partitions == partitions) {
        return Ok(statement);
    }
    let (reflected, greatest) = coverage_at(app, at, deadline).await?;
    let complete = at >= Time::MAX - 1;
    let rendered = serde_json::value::to_raw_value(&reflected)
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": e.to_string() })))?;
    let time = if complete { greatest } else { at };
    let statement = Arc::new(Statement { at, partitions, time, complete, reflected, rendered });
    if !complete {
        let mut slot = app.stated.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|s| s.at <= at) {
            *slot = Some(statement.clone());
        }
    }
    Ok(statement)
}

/// A read's answer: the time it is at, and its rows.
#[derive(Serialize)]
struct Answer<'a> {
    view: &'a str,
    time: Time,
    complete: bool,
    reflected: &'a RawValue,
    rows: Vec<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<Option<String>>,
}

/// The answer to a read that timed out: what is reflected now.
async fn timed_out(app: &App, at: Option<Time>, why: &str) -> Failure {
    let at = at.or_else(|| app.views.progress().completed()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut body = json!({ "error": format!("{why}; retry, or give a longer timeout") });
    if let Ok(statement) = stated(app, at, deadline).await {
        body["time"] = json!(statement.time);
        body["complete"] = json!(statement.complete);
        body["reflected"] = Value::Object(statement.reflected.clone());
    }
    Failure(StatusCode::GATEWAY_TIMEOUT, body)
}

/// Waits for the next change of the workers' progress, at most 50 ms, never past `deadline`.
async fn next_change(watch: &mut tokio::sync::watch::Receiver<Progress>, deadline: Instant) -> Result<(), Failure> {
    let wake = deadline.min(Instant::now() + Duration::from_millis(50));
    match tokio::time::timeout_at(wake, watch.changed()).await {
        Ok(Err(_)) => Err(Failure(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "the job stopped" }))),
        _ => Ok(()),
    }
}

/// Per bound of the partitions this process reads, the time it needs ([`Views::needed`]),
/// waiting until `deadline` for records not read yet: `[read here, time or null]` each.
async fn local_needed(views: &Views, bounds: &[(PartitionId, Offset)], deadline: Instant) -> Vec<Option<Option<Time>>> {
    let mut watch = views.watch();
    loop {
        let needed = views.needed(bounds);
        if needed.iter().all(|n| !matches!(n, Some(None))) || Instant::now() >= deadline {
            return needed;
        }
        if next_change(&mut watch, deadline).await.is_err() {
            return needed;
        }
    }
}

/// The least time at which every `(partition, offset)` of `wait_for` is reflected, once each of
/// those records has been read, by this process or (in a cluster) the one that reads it.
async fn needed_time(app: &App, wait_for: &[(PartitionId, Offset)], deadline: Instant) -> Result<Time, Failure> {
    if wait_for.is_empty() {
        return Ok(0);
    }
    let here = app.views.needed(wait_for);
    let elsewhere: Vec<(PartitionId, Offset)> =
        wait_for.iter().zip(&here).filter(|(_, n)| n.is_none()).map(|(b, _)| b.clone()).collect();
    let local = local_needed(&app.views, wait_for, deadline);
    let remote = async {
        let mut need: Time = 0;
        let mut unread: Vec<(PartitionId, Offset)> = Vec::new();
        if elsewhere.is_empty() {
            return Ok((need, unread));
        }
        if !app.cluster() {
            return Ok((need, elsewhere.clone()));
        }
        let ms = deadline.saturating_duration_since(Instant::now()).as_millis();
        let query = format_bounds(&elsewhere);
        let answers =
            futures::future::join_all(app.others().iter().map(|peer| {
                app.peer_json(format!("{peer}/internal/needed?wait_for={query}&timeout={ms}ms"), deadline)
            }))
            .await;
        let answers: Vec<Value> = answers.into_iter().collect::<Result<_, _>>()?;
        for (i, bound) in elsewhere.iter().enumerate() {
            let time = answers.iter().find_map(|a| a["needed"][i]["time"].as_u64());
            match time {
                Some(t) => need = need.max(t),
                None => unread.push(bound.clone()),
            }
        }
        Ok::<_, Failure>((need, unread))
    };
    let (local, remote) = futures::join!(local, remote);
    let (mut need, mut unread) = remote?;
    for (bound, n) in wait_for.iter().zip(local) {
        match n {
            Some(Some(t)) => need = need.max(t),
            Some(None) => unread.push(bound.clone()),
            None => {}
        }
    }
    if unread.is_empty() {
        return Ok(need);
    }
    tokio::time::sleep_until(deadline).await;
    Err(timed_out(app, None, &format!("the job has not read {} yet", format_bounds(&unread))).await)
}

/// Waits until local worker `which` (or every local worker) has completed `least`: the time it
/// has completed; on timeout, the time completed so far.
async fn completed_here(
    views: &Views,
    which: Option<usize>,
    least: Time,
    deadline: Instant,
) -> Result<Time, Option<Time>> {
    let mut watch = views.watch();
    loop {
        let progress: Progress = watch.borrow_and_update().clone();
        let at = match which {
            Some(local) => progress.uppers.get(local).copied().flatten().and_then(|u| u.checked_sub(1)),
            None => progress.completed(),
        };
        if let Some(at) = at.filter(|&at| at >= least) {
            return Ok(at);
        }
        if Instant::now() >= deadline || next_change(&mut watch, deadline).await.is_err() {
            return Err(at);
        }
    }
}

/// The greatest time every worker of the job (in a cluster, of every process) has completed,
/// once it is at least `least`.
async fn completed_everywhere(app: &App, least: Time, deadline: Instant) -> Result<Time, Failure> {
    let here = completed_here(&app.views, None, least, deadline);
    let elsewhere = async {
        if !app.cluster() {
            return Ok(Vec::new());
        }
        let ms = deadline.saturating_duration_since(Instant::now()).as_millis();
        let urls: Vec<String> =
            app.others().iter().map(|peer| format!("{peer}/internal/completed/{least}?timeout={ms}ms")).collect();
        let answers = futures::future::join_all(urls.into_iter().map(|url| app.peer_json(url, deadline))).await;
        answers.into_iter().map(|a| a.map(|v| v["completed"].as_u64())).collect::<Result<Vec<_>, _>>()
    };
    let (here, elsewhere) = futures::join!(here, elsewhere);
    let mut at = here.map_err(|_| ()).ok();
    for theirs in elsewhere? {
        at = match (at, theirs) {
            (Some(a), Some(b)) if b >= least => Some(a.min(b)),
            _ => None,
        };
    }
    match at {
        Some(at) => Ok(at),
        None => Err(timed_out(app, None, "the view has not completed the time the read needs yet").await),
    }
}

/// Reads `read` at `at` on local worker `local`.
async fn read_on(views: &Views, view: &str, local: usize, read: Read, at: Time) -> Result<Vec<KeyRows>, Failure> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    if !views.send(local, Request::Read { view: view.to_string(), read, at, reply }) {
        return Err(gone());
    }
    match answer.await {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(e)) => Err(bad_request(e.to_string())),
        Err(_) => Err(gone()),
    }
}

/// Reads `read` at `at` on every local worker, keys in key order.
async fn read_local(app: &App, view: &str, read: &Read, at: Time) -> Result<Vec<KeyRows>, Failure> {
    let reads = (0..app.views.local_workers()).map(|local| read_on(&app.views, view, local, read.clone(), at));
    let mut keys: Vec<KeyRows> = Vec::new();
    for answer in futures::future::join_all(reads).await {
        keys.extend(answer?);
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(keys)
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
    RawQuery(raw): RawQuery,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, Failure> {
    known_view(&app, &view)?;
    let p = parse_params(&app, query)?;
    if p.fields.is_empty() {
        return Err(bad_request("give the key's fields as FIELD=VALUE parameters"));
    }
    let deadline = Instant::now() + p.timeout;
    let (worker, local) = app.views.owner(&Value::Object(p.fields.clone()));
    let Some(local) = local else {
        let (process, _) = app.views.process_of(worker);
        return match app.settings.peers.get(process).filter(|_| app.cluster() && !p.hop) {
            // The owner's process answers: it waits for what the read needs and states the time.
            Some(peer) => {
                let url = format!("{peer}/views/{view}/key?{}&hop=1", raw.unwrap_or_default());
                let response = app.peer(&url, deadline).await?;
                let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let body = response.bytes().await.map_err(|e| {
                    Failure(StatusCode::BAD_GATEWAY, json!({ "error": format!("{url}: the answer broke off: {e}") }))
                })?;
                Ok((status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
            }
            None => Err(Failure(
                StatusCode::MISDIRECTED_REQUEST,
                json!({
                    "error": format!(
                        "the key is owned by worker {worker}, in process {process}; ask that process, or start every \
                         process with --serve-peers so that any of them answers"
                    ),
                    "process": process,
                }),
            )),
        };
    };
    let need = needed_time(&app, &p.wait_for, deadline).await?;
    let (keys, at) = match current_lookup(&app, &view, local, &p.fields, need, deadline).await? {
        Some(found) => found,
        None => {
            // The owner's current rows are not built yet: the owner reads its trace.
            let at = match completed_here(&app.views, Some(local), need, deadline).await {
                Ok(at) => at,
                Err(at) => {
                    return Err(timed_out(&app, at, "the view does not reflect every record asked for yet").await)
                }
            };
            (read_on(&app.views, &view, local, Read::Lookup { key: p.fields }, at).await?, at)
        }
    };
    let statement = stated(&app, at, deadline).await?;
    Ok(Json(Answer {
        view: &view,
        time: statement.time,
        complete: statement.complete,
        reflected: &statement.rendered,
        rows: rows_json(&keys),
        next: None,
    })
    .into_response())
}

/// A lookup in the owner's current rows ([`kappa_engine::serve::CurrentRows`]), on this thread:
/// the rows and the time they are at, once that is at least `need`; `None` when they are not
/// built yet (the first lookup asks the worker to build them).
async fn current_lookup(
    app: &App,
    view: &str,
    local: usize,
    fields: &Map<String, Value>,
    need: Time,
    deadline: Instant,
) -> Result<Option<(Vec<KeyRows>, Time)>, Failure> {
    let Some(current) = app.views.current(view, local) else { return Ok(None) };
    let mut watch = app.views.watch();
    loop {
        watch.borrow_and_update();
        match current.lookup(view, fields, need) {
            Ok(Some(CurrentLookup::Rows { at, rows })) => return Ok(Some((rows, at))),
            Ok(Some(CurrentLookup::NotBuilt)) => return Ok(None),
            Ok(None) if Instant::now() >= deadline => {
                return Err(timed_out(app, None, "the view does not reflect every record asked for yet").await)
            }
            Ok(None) => next_change(&mut watch, deadline).await?,
            Err(e) => return Err(bad_request(e.to_string())),
        }
    }
}

/// An answer's keys, as they travel between processes: `[hex key, [[row, count], ...]]`.
type WireKeys = Vec<(String, Vec<(Box<RawValue>, kappa_engine::Diff)>)>;

async fn scan(
    State(app): State<App>,
    Path(view): Path<String>,
    RawQuery(raw): RawQuery,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, Failure> {
    known_view(&app, &view)?;
    let p = parse_params(&app, query)?;
    let deadline = Instant::now() + p.timeout;
    let need = needed_time(&app, &p.wait_for, deadline).await?;
    let at = completed_everywhere(&app, need, deadline).await?;
    let read = Read::Scan { prefix: p.fields.clone(), after: p.after.clone(), limit: p.limit };
    let mut keys = read_local(&app, &view, &read, at).await?;
    if app.cluster() {
        let raw = raw.unwrap_or_default();
        let urls: Vec<String> =
            app.others().iter().map(|peer| format!("{peer}/internal/rows/{view}/{at}?{raw}")).collect();
        for answer in futures::future::join_all(urls.into_iter().map(|url| app.peer_json(url, deadline))).await {
            let wire: WireKeys = serde_json::from_value(answer?["keys"].take()).map_err(|e| {
                Failure(StatusCode::BAD_GATEWAY, json!({ "error": format!("another process's rows: {e}") }))
            })?;
            for (key, rows) in wire {
                let key = from_hex(&key).ok_or_else(|| {
                    Failure(StatusCode::BAD_GATEWAY, json!({ "error": "another process's rows: a key is not hex" }))
                })?;
                keys.push((key, rows));
            }
        }
        keys.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let more = keys.len() > p.limit;
    keys.truncate(p.limit);
    let next = if more || keys.len() == p.limit { keys.last().map(|k| to_hex(&k.0)) } else { None };
    let statement = stated(&app, at, deadline).await?;
    Ok(Json(Answer {
        view: &view,
        time: statement.time,
        complete: statement.complete,
        reflected: &statement.rendered,
        rows: rows_json(&keys),
        next: Some(next),
    })
    .into_response())
}

/// `/internal/needed?wait_for=...&timeout=...`: for a process that does not read these
/// partitions, [`local_needed`] here: `{"needed": [{"here": bool, "time": T or null}, ...]}`.
async fn internal_needed(
    State(app): State<App>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, Failure> {
    let p = parse_params(&app, query)?;
    let needed = local_needed(&app.views, &p.wait_for, Instant::now() + p.timeout).await;
    let needed: Vec<Value> = needed.into_iter().map(|n| json!({ "here": n.is_some(), "time": n.flatten() })).collect();
    Ok(Json(json!({ "needed": needed })))
}

/// `/internal/completed/{least}?timeout=...`: the time every local worker has completed, once it
/// is at least `least` (or what it is at the timeout).
async fn internal_completed(
    State(app): State<App>,
    Path(least): Path<Time>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, Failure> {
    let p = parse_params(&app, query)?;
    let completed =
        completed_here(&app.views, None, least, Instant::now() + p.timeout).await.map_or_else(|at| at, Some);
    Ok(Json(json!({ "completed": completed })))
}

/// `/internal/coverage/{at}`: this process's partitions reflected at `at`.
async fn internal_coverage(State(app): State<App>, Path(at): Path<Time>) -> Json<Value> {
    Json(json!({ "reflected": local_reflected(&app.views, at), "greatest": app.views.greatest_time() }))
}

/// `/internal/rows/{view}/{at}?...`: a scan of the local workers at `at`.
async fn internal_rows(
    State(app): State<App>,
    Path((view, at)): Path<(String, Time)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, Failure> {
    known_view(&app, &view)?;
    let p = parse_params(&app, query)?;
    let read = Read::Scan { prefix: p.fields, after: p.after, limit: p.limit };
    let keys = read_local(&app, &view, &read, at).await?;
    let wire: Vec<Value> = keys.iter().map(|(key, rows)| json!([to_hex(key), rows])).collect();
    Ok(Json(json!({ "keys": wire })))
}

/// Starts a subscription to `view` on every local worker, sharing `buffered` and `overflowed`.
async fn subscribe_local(
    app: &App,
    view: &str,
    at: Time,
    resume: bool,
    buffered: &Arc<AtomicUsize>,
    overflowed: &Arc<AtomicBool>,
) -> Result<Vec<tokio::sync::mpsc::UnboundedReceiver<Changes>>, Failure> {
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
        if !app.views.send(local, Request::Subscribe { view: view.to_string(), at, resume, feed, reply }) {
            return Err(gone());
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
            Err(_) => return Err(gone()),
        }
    }
    Ok(receivers)
}

/// One line of `/internal/subscribe`: one local worker's [`Changes`]; `start` marks what the
/// subscription starts with (exempt from the buffer bound, as on the worker).
#[derive(serde::Deserialize)]
struct WireChanges {
    w: usize,
    start: bool,
    snapshot: bool,
    updates: Vec<(Box<RawValue>, Time, kappa_engine::Diff)>,
    upper: Time,
}

/// `/internal/subscribe/{view}/{at}/{resume}`: the local workers' changes as JSON lines
/// ([`WireChanges`]), ending with `{"closed": "overflowed" | "stopped"}`.
async fn internal_subscribe(
    State(app): State<App>,
    Path((view, at, resume)): Path<(String, Time, bool)>,
) -> Result<Response, Failure> {
    known_view(&app, &view)?;
    let buffered = Arc::new(AtomicUsize::new(0));
    let overflowed = Arc::new(AtomicBool::new(false));
    let receivers = subscribe_local(&app, &view, at, resume, &buffered, &overflowed).await?;
    let starts = if resume { 1 } else { 2 };
    let streams = receivers.into_iter().enumerate().map(|(w, rx)| {
        stream::unfold((rx, 0usize), move |(mut rx, seen)| async move {
            let changes = rx.recv().await?;
            Some(((w, seen < starts, changes), (rx, seen + 1)))
        })
        .boxed()
    });
    let lines = stream::select_all(streams).map(move |(w, start, changes)| {
        buffered.fetch_sub(changes.updates.len() + 1, Ordering::Relaxed);
        let line = json!({
            "w": w, "start": start, "snapshot": changes.snapshot, "updates": changes.updates, "upper": changes.upper,
        });
        Ok::<_, Infallible>(axum::body::Bytes::from(line.to_string() + "\n"))
    });
    let end = stream::once(async move {
        let reason = if overflowed.load(Ordering::Relaxed) { "overflowed" } else { "stopped" };
        Ok::<_, Infallible>(axum::body::Bytes::from(json!({ "closed": reason }).to_string() + "\n"))
    });
    let body = axum::body::Body::from_stream(lines.chain(end));
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// Starts a subscription on another process and feeds its workers' changes into receivers of
/// their own, with this subscription's flow control.
async fn subscribe_remote(
    app: &App,
    peer: &str,
    view: &str,
    at: Time,
    resume: bool,
    buffered: &Arc<AtomicUsize>,
    overflowed: &Arc<AtomicBool>,
) -> Result<Vec<tokio::sync::mpsc::UnboundedReceiver<Changes>>, Failure> {
    let url = format!("{peer}/internal/subscribe/{view}/{at}/{resume}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let timeout = |e: &dyn std::fmt::Display| {
        Failure(StatusCode::BAD_GATEWAY, json!({ "error": format!("{url}: {e}; check --serve-peers") }))
    };
    let mut response = app.client.get(&url).send().await.map_err(|e| timeout(&e))?;
    if !response.status().is_success() {
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let body =
            tokio::time::timeout_at(deadline, response.bytes()).await.ok().and_then(Result::ok).unwrap_or_default();
        return Err(Failure(status, serde_json::from_slice(&body).unwrap_or_else(|_| json!({ "error": url }))));
    }
    let workers = app.views.local_workers();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..workers).map(|_| tokio::sync::mpsc::unbounded_channel()).unzip();
    let (buffered, overflowed, limit) = (buffered.clone(), overflowed.clone(), app.settings.subscriber_buffer);
    tokio::spawn(async move {
        let mut pending: Vec<u8> = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if line.starts_with(b"{\"closed\"") {
                    if line.windows(10).any(|w| w == b"overflowed") {
                        overflowed.store(true, Ordering::Relaxed);
                    }
                    return;
                }
                let Ok(wire) = serde_json::from_slice::<WireChanges>(&line) else {
                    tracing::warn!("{url}: a line that is not a subscription's changes; ending the subscription");
                    return;
                };
                let weight = wire.updates.len() + 1;
                let before = buffered.fetch_add(weight, Ordering::Relaxed);
                if !wire.start && before + weight > limit {
                    overflowed.store(true, Ordering::Relaxed);
                    return;
                }
                let changes = Changes { snapshot: wire.snapshot, updates: wire.updates, upper: wire.upper };
                if senders.get(wire.w).is_none_or(|tx| tx.send(changes).is_err()) {
                    return;
                }
            }
        }
    });
    Ok(receivers)
}

/// A subscription's merge of every worker's changes (local workers', and in a cluster the
/// other processes' through [`subscribe_remote`]).
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
    // A subscription starts at a time every worker of the job has completed: the resume point,
    // or one that reflects `wait_for`.
    let at = match p.from {
        Some(from) => {
            completed_everywhere(&app, from, deadline).await?;
            from
        }
        None => {
            let need = needed_time(&app, &p.wait_for, deadline).await?;
            completed_everywhere(&app, need, deadline).await?
        }
    };
    let resume = p.from.is_some();
    let buffered = Arc::new(AtomicUsize::new(0));
    let overflowed = Arc::new(AtomicBool::new(false));
    let mut receivers = subscribe_local(&app, &view, at, resume, &buffered, &overflowed).await?;
    if app.cluster() {
        for peer in app.others() {
            receivers.extend(subscribe_remote(&app, &peer, &view, at, resume, &buffered, &overflowed).await?);
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
