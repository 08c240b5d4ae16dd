//! Serving on Tansu: `kappa replay ... --serve ADDR` while the job runs live.
//!
//! - Point lookups and key-order scans equal the batch reference at the time each answer states
//!   (record times computed here by their definition, from the topic's records in offset order).
//! - A read that waits for the offset a producer's delivery report gave always reflects that
//!   record (many trials, three partitions, one of them idle apart from the trials).
//! - A subscription's snapshot and events equal the job's output file, time by time; a
//!   subscriber that does not read is cut off with a resume point, and resuming from it goes on
//!   with exactly the next times.
//! - A cluster of two processes answers any key from either process (forwarding to the owner),
//!   waits for offsets that the other process reads, and scans and subscribes across both.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kappa_connectors::kafka::producer::{produce, AckedProducer, OutgoingRecord};
use kappa_engine::TimeAssigner;
use kappa_examples::generator::{like_records, like_stream, LikeStreamConfig};
use kappa_examples::like_counts::{self, Kind, Like};
use serde_json::Value;

use crate::harness::{free_port, unique, Tansu};

/// A `kappa replay --serve` child: its address, and its stderr so far.
struct Served {
    child: Child,
    base: String,
    stderr: Arc<Mutex<String>>,
    http: reqwest::blocking::Client,
}

impl Served {
    fn start(args: &[&str]) -> Served {
        Served::start_at(&format!("127.0.0.1:{}", free_port()), args)
    }

    fn start_at(address: &str, args: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kappa"))
            .args(args)
            .args(["--serve", address])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kappa");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (log, pipe) = (stderr.clone(), child.stderr.take().expect("stderr"));
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                log.lock().expect("log").push_str(&(line + "\n"));
            }
        });
        kappa_engine::install_tls_provider();
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        let served = Served { child, base: format!("http://{address}"), stderr, http };
        let started = Instant::now();
        while !served.log().contains("serving ") {
            assert!(started.elapsed() < Duration::from_secs(60), "kappa did not start serving:\n{}", served.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        served
    }

    fn log(&self) -> String {
        self.stderr.lock().expect("log").clone()
    }

    /// GET `path`: status and JSON body.
    fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(format!("{}{path}", self.base)).send().expect("GET");
        let status = response.status().as_u16();
        let body = response.text().expect("body");
        (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}")))
    }

    /// GET `path` until it answers 200 (the first completed time can take a moment).
    fn get_ok(&self, path: &str) -> Value {
        let started = Instant::now();
        loop {
            let (status, body) = self.get(path);
            if status == 200 {
                return body;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{path}: {status} {body}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every record's dataflow time, by definition: per partition, in offset order, its timestamp
/// raised to the partition's watermark (no idle decisions: `--idle-timeout off`).
fn timed(events: &[(i32, Like)], lateness_ms: u64) -> Vec<(u64, Like)> {
    let mut assigners: BTreeMap<i32, TimeAssigner> = BTreeMap::new();
    events
        .iter()
        .map(|(p, like)| (assigners.entry(*p).or_insert_with(|| TimeAssigner::new(lateness_ms)).assign(like.ts), *like))
        .collect()
}

fn reference_at(timed: &[(u64, Like)], at: u64) -> BTreeMap<u64, u64> {
    like_counts::reference(timed.iter().filter(|(t, _)| *t <= at).map(|(_, l)| l))
}

fn rows_of(body: &Value) -> BTreeMap<u64, u64> {
    body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["post"].as_u64().expect("post"), r["likes"].as_u64().expect("likes")))
        .collect()
}

/// Produces `events` in slices while `during` runs, so the job is live the whole time.
fn produce_slowly(brokers: String, topic: String, events: Vec<(i32, Like)>, slices: usize, done: Arc<AtomicBool>) {
    for chunk in events.chunks(events.len().div_ceil(slices).max(1)) {
        produce(&brokers, &topic, like_records(chunk), &|_| ()).expect("produce");
        std::thread::sleep(Duration::from_millis(100));
    }
    done.store(true, Ordering::SeqCst);
}

#[test]
fn served_lookups_and_scans_equal_the_reference_at_the_time_they_state() {
    let tansu = Tansu::shared();
    let topic = unique("served-likes");
    tansu.create_topic(&topic, 3);
    let lateness = 2_000;
    let events = like_stream(&LikeStreamConfig { partitions: 3, seed: 11, ..LikeStreamConfig::new(12_000) });
    let timed = timed(&events, lateness);
    let (history, live) = events.split_at(3_000);
    produce(&tansu.brokers, &topic, like_records(history), &|_| ()).expect("produce history");
    let served = Served::start(&[
        "replay",
        "--pipeline",
        "like-counts",
        "--topic",
        &topic,
        "--brokers",
        &tansu.brokers,
        "--then-live",
        "--lateness-ms",
        &lateness.to_string(),
        "--idle-timeout",
        "off",
        "--output",
        "/dev/null",
    ]);
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (brokers, topic, live, done) = (tansu.brokers.clone(), topic.clone(), live.to_vec(), done.clone());
        std::thread::spawn(move || produce_slowly(brokers, topic, live, 30, done))
    };
    let posts: Vec<u64> = events.iter().map(|(_, l)| l.post).collect();
    let (mut lookups, mut scans, mut times) = (0, 0, std::collections::BTreeSet::new());
    let mut i = 0usize;
    while !done.load(Ordering::SeqCst) || lookups < 50 {
        i += 1;
        let post = posts[(i * 7919) % posts.len()];
        let body = served.get_ok(&format!("/views/like-counts/key?post={post}"));
        let at = body["time"].as_u64().expect("time");
        assert_eq!(body["complete"], false);
        let expected: BTreeMap<u64, u64> = reference_at(&timed, at).into_iter().filter(|(p, _)| *p == post).collect();
        assert_eq!(rows_of(&body), expected, "post {post} at time {at}");
        // Every offset the answer says it reflects holds a record at or before its time.
        for (partition, offset) in body["reflected"].as_object().expect("reflected") {
            let p: i32 = partition.rsplit(':').next().and_then(|p| p.parse().ok()).expect("topic:partition");
            let below =
                events.iter().zip(&timed).filter(|((q, _), _)| *q == p).take(offset.as_u64().expect("offset") as usize);
            assert!(
                below.clone().all(|(_, (t, _))| *t <= at),
                "partition {p}: offsets below {offset} reflected at {at}"
            );
        }
        lookups += 1;
        times.insert(at);
        if i.is_multiple_of(5) {
            // A whole scan, page by page, at the first page's time... each page states its own
            // time, and equals the reference there.
            let mut after = String::new();
            let mut all = BTreeMap::new();
            loop {
                let page = served.get_ok(&format!("/views/like-counts/rows?limit=37{after}"));
                let at = page["time"].as_u64().expect("time");
                let rows = rows_of(&page);
                let first = rows.keys().next().copied();
                let last = rows.keys().last().copied();
                let expected: BTreeMap<u64, u64> = reference_at(&timed, at)
                    .into_iter()
                    .filter(|(p, _)| first.is_some_and(|f| *p >= f) && last.is_some_and(|l| *p <= l))
                    .collect();
                assert_eq!(rows, expected, "a page at time {at} holds the reference's rows of its key range");
                assert!(rows.keys().all(|p| all.keys().last().is_none_or(|l| p > l)), "pages come in key order");
                all.extend(rows);
                match page["next"].as_str() {
                    Some(token) => after = format!("&after={token}"),
                    None => break,
                }
            }
            assert!(!all.is_empty());
            scans += 1;
        }
    }
    producer.join().expect("producer");
    assert!(times.len() > 5, "answers were taken at many times while the job ran live: {times:?}");
    assert!(scans > 3);
    // A prefix scan over a one-field key is a lookup; a field that is not a key field is refused.
    let (status, body) = served.get("/views/like-counts/rows?likes=3");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().expect("error").contains("post"), "{body}");
    let (status, _) = served.get("/views/no-such-view/key?post=1");
    assert_eq!(status, 404);
}

fn like(ts: u64, user: u64, post: u64) -> Like {
    Like { ts, user, post, kind: Kind::Like }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64
}

#[test]
fn a_read_that_waits_for_a_produced_offset_always_reflects_that_record() {
    let tansu = Tansu::shared();
    let topic = unique("ryw-likes");
    tansu.create_topic(&topic, 3);
    let served = Served::start(&[
        "replay",
        "--pipeline",
        "like-counts",
        "--topic",
        &topic,
        "--brokers",
        &tansu.brokers,
        "--then-live",
        "--output",
        "/dev/null",
    ]);
    // Steady traffic on partitions 0 and 1; partition 2 hears only from the trials.
    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let (brokers, topic, stop) = (tansu.brokers.clone(), topic.clone(), stop.clone());
        std::thread::spawn(move || {
            let producer = AckedProducer::new(&brokers).expect("producer");
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let l = like(now_ms(), i % 97, i % 13);
                let record = OutgoingRecord {
                    partition: (i % 2) as i32,
                    key: l.user.to_string().into_bytes(),
                    value: serde_json::to_vec(&l).expect("json"),
                    timestamp: l.ts as i64,
                };
                producer.send(&topic, &record).expect("produce");
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let producer = AckedProducer::new(&tansu.brokers).expect("producer");
    let mut latencies = Vec::new();
    for trial in 0..40u64 {
        let post = 1_000_000 + trial;
        let l = like(now_ms(), 5_000 + trial, post);
        let record = OutgoingRecord {
            partition: (trial % 3) as i32,
            key: l.user.to_string().into_bytes(),
            value: serde_json::to_vec(&l).expect("json"),
            timestamp: l.ts as i64,
        };
        let started = Instant::now();
        let (partition, offset) = producer.send(&topic, &record).expect("produce");
        let (status, body) = served
            .get(&format!("/views/like-counts/key?post={post}&wait_for={topic}:{partition}:{offset}&timeout=30s"));
        latencies.push(started.elapsed());
        assert_eq!(status, 200, "trial {trial}: {body}\n{}", served.log());
        assert_eq!(rows_of(&body), BTreeMap::from([(post, 1)]), "trial {trial}: the read reflects the like: {body}");
        let reflected = body["reflected"][format!("{topic}:{partition}")].as_u64().expect("coverage of the partition");
        assert!(reflected > offset as u64, "trial {trial}: {body}");
    }
    // A bound that cannot be met in time: 504 with the current coverage.
    let (status, body) =
        served.get(&format!("/views/like-counts/key?post=1&wait_for={topic}:2:999999999&timeout=300ms"));
    assert_eq!(status, 504, "{body}");
    assert!(body["reflected"].is_object(), "{body}");
    stop.store(true, Ordering::SeqCst);
    background.join().expect("background producer");
    latencies.sort();
    eprintln!(
        "produce -> visible (default settings): p50 {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies.last().expect("trials")
    );
}

/// Reads SSE events (`event`, `data`) from `reader` until `until` says stop.
fn read_events(reader: &mut impl BufRead, mut until: impl FnMut(&str, &Value) -> bool) -> Vec<(String, Value)> {
    let (mut events, mut event, mut data) = (Vec::new(), String::new(), String::new());
    let mut line = String::new();
    loop {
        line.clear();
        // The end of the stream, or of the server (killed at the end of a test).
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return events;
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            if !data.is_empty() {
                let value: Value = serde_json::from_str(&data).expect("event data is JSON");
                let stop = until(&event, &value);
                events.push((std::mem::take(&mut event), value));
                data.clear();
                if stop {
                    return events;
                }
            }
        } else if let Some(e) = line.strip_prefix("event:") {
            event = e.trim().to_string();
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        }
    }
}

/// The output file's updates, by time: `row JSON → diff`.
fn file_by_time(path: &std::path::Path) -> BTreeMap<u64, BTreeMap<String, i64>> {
    let mut out: BTreeMap<u64, BTreeMap<String, i64>> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let v: Value = serde_json::from_str(line).expect("output line");
        let entry = out.entry(v["time"].as_u64().expect("time")).or_default();
        *entry.entry(v["data"].to_string()).or_default() += v["diff"].as_i64().expect("diff");
    }
    out
}

#[test]
fn a_subscription_equals_the_output_file_and_a_slow_subscriber_resumes_where_it_was_cut_off() {
    let tansu = Tansu::shared();
    let topic = unique("sse-likes");
    tansu.create_topic(&topic, 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("out.jsonl");
    // Enough updates (about 40,000) that what the slow subscriber leaves unread passes hyper's
    // and the kernel's buffers (a few hundred KB) and then the server's bound.
    let events = like_stream(&LikeStreamConfig { partitions: 3, seed: 5, ..LikeStreamConfig::new(20_000) });
    produce(&tansu.brokers, &topic, like_records(&events[..1_000]), &|_| ()).expect("produce history");
    let served = Served::start(&[
        "replay",
        "--pipeline",
        "like-counts",
        "--topic",
        &topic,
        "--brokers",
        &tansu.brokers,
        "--then-live",
        "--lateness-ms",
        "1000",
        "--idle-timeout",
        "off",
        "--serve-buffer",
        "2000",
        "--output",
        output.to_str().expect("path"),
    ]);
    served.get_ok("/views/like-counts/rows?limit=1");
    kappa_engine::install_tls_provider();
    let streams = reqwest::blocking::Client::builder().timeout(None).build().expect("client");
    let subscribe = |query: &str| {
        let response =
            streams.get(format!("{}/views/like-counts/subscribe{query}", served.base)).send().expect("subscribe");
        assert_eq!(response.status().as_u16(), 200);
        BufReader::new(response)
    };
    let mut reader = subscribe("");
    let mut slow = SlowSubscriber::connect(&served.base["http://".len()..]);
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (brokers, topic, live, done) =
            (tansu.brokers.clone(), topic.clone(), events[1_000..].to_vec(), done.clone());
        std::thread::spawn(move || produce_slowly(brokers, topic, live, 60, done))
    };
    // Read the fast subscription while the live records arrive, until it has been quiet a while
    // after the last of them.
    // The events so far (name, data) and when the last one came.
    type Received = (Vec<(String, Value)>, Instant);
    let received: Arc<Mutex<Received>> = Arc::new(Mutex::new((Vec::new(), Instant::now())));
    {
        let received = received.clone();
        std::thread::spawn(move || {
            read_events(&mut reader, |event, data| {
                let mut r = received.lock().expect("events");
                r.0.push((event.to_string(), data.clone()));
                r.1 = Instant::now();
                false
            })
        });
    }
    producer.join().expect("producer");
    let fast = loop {
        std::thread::sleep(Duration::from_millis(200));
        let r = received.lock().expect("events");
        if r.1.elapsed() > Duration::from_secs(2) {
            break r.0.clone();
        }
    };
    assert!(fast.iter().all(|(event, _)| event != "closed"), "a subscriber that keeps up is never cut off");
    let seen_last =
        fast.iter().rev().find(|(e, _)| e == "update").map_or(0, |(_, d)| d["time"].as_u64().expect("time"));
    let (kind, snapshot) = &fast[0];
    assert_eq!(kind, "snapshot");
    let start = snapshot["time"].as_u64().expect("time");
    // The file, once it has caught up with the last event's time.
    let started = Instant::now();
    let file = loop {
        let file = file_by_time(&output);
        if file.keys().last().is_some_and(|&t| t >= seen_last) {
            break file;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the output file never reached time {seen_last}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut state: BTreeMap<String, i64> = BTreeMap::new();
    for (_, updates) in file.range(..=start) {
        for (row, diff) in updates {
            *state.entry(row.clone()).or_default() += diff;
        }
    }
    state.retain(|_, n| *n != 0);
    let snapshot_rows: BTreeMap<String, i64> = snapshot["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["row"].to_string(), r["count"].as_i64().expect("count")))
        .collect();
    assert_eq!(snapshot_rows, state, "the snapshot is the file's state at time {start}");
    let mut event_times = Vec::new();
    for (kind, data) in &fast[1..] {
        assert_eq!(kind, "update");
        let t = data["time"].as_u64().expect("time");
        let updates: BTreeMap<String, i64> = data["updates"]
            .as_array()
            .expect("updates")
            .iter()
            .map(|u| (u["row"].to_string(), u["diff"].as_i64().expect("diff")))
            .collect();
        assert_eq!(Some(&updates), file.get(&t), "the event at time {t} is the file's updates at {t}");
        event_times.push(t);
    }
    let file_times: Vec<u64> = file.range(start + 1..=seen_last).map(|(t, _)| *t).collect();
    assert_eq!(event_times, file_times, "one event for every time the file has, in order, none missing");

    // The slow subscriber read nothing while all that arrived: it is cut off with a resume
    // point, and resuming from there gives exactly the file's next times.
    let resume_from = slow.read_until_closed();
    let mut resumed = subscribe(&format!("?from={resume_from}"));
    let _ = done;
    let next = read_events(&mut resumed, |event, _| event == "update");
    let (kind, first) = next.last().expect("an event");
    assert_eq!(kind, "update");
    let t = first["time"].as_u64().expect("time");
    assert_eq!(Some(t), file.range(resume_from + 1..).next().map(|(t, _)| *t), "resuming gives the very next time");
}

/// A subscriber that does not read: a raw connection with a small receive buffer, so that the
/// server, not the kernel, holds what it has not read.
struct SlowSubscriber(std::net::TcpStream);

impl SlowSubscriber {
    fn connect(address: &str) -> SlowSubscriber {
        use std::io::Write;
        let address: std::net::SocketAddr = address.parse().expect("address");
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(4096).expect("small receive buffer");
        socket.connect(&address.into()).expect("connect");
        let mut stream: std::net::TcpStream = socket.into();
        write!(stream, "GET /views/like-counts/subscribe HTTP/1.1\r\nHost: {address}\r\n\r\n").expect("request");
        SlowSubscriber(stream)
    }

    /// Reads what the server sent until its `closed` event; returns its `resume_from`.
    fn read_until_closed(&mut self) -> u64 {
        let mut text = Vec::new();
        let mut buf = [0u8; 65536];
        self.0.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        loop {
            let n = self.0.read(&mut buf).expect("the subscription is closed with a resume point, not dropped");
            assert!(n > 0, "the connection ended without a `closed` event");
            text.extend_from_slice(&buf[..n]);
            let s = String::from_utf8_lossy(&text);
            if let Some(at) = s.find("event: closed") {
                if let Some(end) = s[at..].find("\n\n") {
                    let event = &s[at..at + end];
                    let data = event.lines().find_map(|l| l.strip_prefix("data: ")).expect("data");
                    let data: Value = serde_json::from_str(data).expect("json");
                    assert!(data["reason"].as_str().expect("reason").contains("behind"), "{data}");
                    return data["resume_from"].as_u64().expect("resume_from");
                }
            }
        }
    }
}

/// One answer, checked against the reference once every record's offset is known.
struct Answer {
    from: &'static str,
    time: u64,
    post: Option<u64>,
    rows: BTreeMap<u64, u64>,
}

#[test]
fn a_cluster_of_two_processes_answers_any_key_from_either_process() {
    let tansu = Tansu::shared();
    let topic = unique("cluster-served-likes");
    let partitions = 4;
    tansu.create_topic(&topic, partitions);
    let dir = tempfile::tempdir().expect("tempdir");
    let hostfile = dir.path().join("hosts");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).expect("hostfile");
    let fronts = [format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port())];
    let peers = fronts.join(",");
    let processes: Vec<Served> = (0..2)
        .map(|process| {
            let process = process.to_string();
            let args = [
                "replay",
                "--pipeline",
                "like-counts",
                "--topic",
                &topic,
                "--brokers",
                &tansu.brokers,
                "--then-live",
                // Record times by definition only (no idle decisions): steady traffic reaches
                // every partition, so times complete anyway.
                "--idle-timeout",
                "off",
                "--output",
                "/dev/null",
                "--processes",
                "2",
                "--process",
                &process,
                "--hostfile",
                hostfile.to_str().expect("utf-8"),
                "--serve-peers",
                &peers,
            ];
            Served::start_at(&fronts[process.parse::<usize>().expect("index")], &args)
        })
        .collect();
    // Every record produced, with the offset its delivery report gave.
    let produced: Arc<Mutex<Vec<(i32, i64, Like)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let (brokers, topic, stop, produced) = (tansu.brokers.clone(), topic.clone(), stop.clone(), produced.clone());
        std::thread::spawn(move || {
            let producer = AckedProducer::new(&brokers).expect("producer");
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let l = like(now_ms(), i % 97, i % 23);
                let record = OutgoingRecord {
                    partition: (i % partitions as u64) as i32,
                    key: l.user.to_string().into_bytes(),
                    value: serde_json::to_vec(&l).expect("json"),
                    timestamp: l.ts as i64,
                };
                let (partition, offset) = producer.send(&topic, &record).expect("produce");
                produced.lock().expect("produced").push((partition, offset, l));
                i += 1;
                std::thread::sleep(Duration::from_millis(4));
            }
        })
    };
    for served in &processes {
        served.get_ok("/views/like-counts/key?post=0");
    }
    let names = ["process 0", "process 1"];
    let mut answers: Vec<Answer> = Vec::new();
    let (mut forwarded, mut direct) = (0, 0);
    let producer = AckedProducer::new(&tansu.brokers).expect("producer");
    for trial in 0..24u64 {
        // Read-your-writes from either process, for a record that either may read.
        let post = 2_000_000 + trial;
        let l = like(now_ms(), 7_000 + trial, post);
        let record = OutgoingRecord {
            partition: (trial % partitions as u64) as i32,
            key: l.user.to_string().into_bytes(),
            value: serde_json::to_vec(&l).expect("json"),
            timestamp: l.ts as i64,
        };
        let (partition, offset) = producer.send(&topic, &record).expect("produce");
        produced.lock().expect("produced").push((partition, offset, l));
        for reader in [(trial % 2) as usize, 1 - (trial % 2) as usize] {
            let (status, body) = processes[reader]
                .get(&format!("/views/like-counts/key?post={post}&wait_for={topic}:{partition}:{offset}&timeout=30s"));
            assert_eq!(status, 200, "trial {trial} on {}: {body}\n{}", names[reader], processes[reader].log());
            assert_eq!(
                rows_of(&body),
                BTreeMap::from([(post, 1)]),
                "trial {trial}: the read reflects the like: {body}"
            );
            let reflected = body["reflected"].as_object().expect("reflected");
            assert_eq!(reflected.len(), partitions as usize, "the answer states every process's partitions: {body}");
            assert!(reflected[&format!("{topic}:{partition}")].as_u64().expect("offset") > offset as u64, "{body}");
            // The same key asked without forwarding: 421 exactly when the other process owns it.
            let (status, body) = processes[reader].get(&format!("/views/like-counts/key?post={post}&hop=1"));
            match status {
                421 => forwarded += 1,
                200 => {
                    assert_eq!(rows_of(&body), BTreeMap::from([(post, 1)]), "the owner answers itself: {body}");
                    direct += 1
                }
                other => panic!("trial {trial}: hop=1 answered {other}"),
            }
        }

        // Lookups of busy posts and whole scans, from both processes, checked at the end.
        for (i, served) in processes.iter().enumerate() {
            let busy = (trial * 5 + i as u64) % 23;
            let body = served.get_ok(&format!("/views/like-counts/key?post={busy}"));
            let time = body["time"].as_u64().expect("time");
            answers.push(Answer { from: names[i], time, post: Some(busy), rows: rows_of(&body) });
            if trial % 6 == i as u64 {
                let body = served.get_ok("/views/like-counts/rows?limit=10000");
                assert!(body["next"].is_null(), "{body}");
                answers.push(Answer {
                    from: names[i],
                    time: body["time"].as_u64().expect("time"),
                    post: None,
                    rows: rows_of(&body),
                });
            }
        }
    }
    assert!(
        forwarded > 0 && direct > 0,
        "keys of both processes were read from both ({forwarded} forwarded, {direct} direct)"
    );
    // A subscription on process 1 sees both processes' keys: its snapshot and updates, applied in
    // time order, equal the reference at every time it states.
    let response = processes[1]
        .http
        .get(format!("{}/views/like-counts/subscribe", processes[1].base))
        .timeout(Duration::from_secs(120))
        .send()
        .expect("subscribe");
    assert_eq!(response.status().as_u16(), 200);
    let mut reader = BufReader::new(response);
    let mut updates = 0;
    let events = read_events(&mut reader, |event, _| {
        updates += usize::from(event == "update");
        updates >= 15
    });
    stop.store(true, Ordering::SeqCst);
    background.join().expect("background producer");
    for p in &processes {
        assert!(!p.log().contains("panicked"), "{}", p.log());
    }
    // Record times by definition, from each partition's records in offset order.
    let mut records = produced.lock().expect("produced").clone();
    records.sort_by_key(|(p, o, _)| (*p, *o));
    let events_in_order: Vec<(i32, Like)> = records.iter().map(|(p, _, l)| (*p, *l)).collect();
    let timed = timed(&events_in_order, 0);
    for answer in &answers {
        let mut expected = reference_at(&timed, answer.time);
        if let Some(post) = answer.post {
            expected.retain(|p, _| *p == post);
        }
        assert_eq!(answer.rows, expected, "{} at time {}: post {:?}", answer.from, answer.time, answer.post);
    }
    let (kind, snapshot) = &events[0];
    assert_eq!(kind, "snapshot", "{events:?}");
    let mut state: BTreeMap<u64, u64> = BTreeMap::new();
    for row in snapshot["rows"].as_array().expect("rows") {
        assert_eq!(row["count"], 1);
        state.insert(row["row"]["post"].as_u64().expect("post"), row["row"]["likes"].as_u64().expect("likes"));
    }
    let at = snapshot["time"].as_u64().expect("time");
    assert_eq!(state, reference_at(&timed, at), "the snapshot at {at}");
    let mut rows: BTreeMap<String, i64> = BTreeMap::new();
    for row in snapshot["rows"].as_array().expect("rows") {
        rows.insert(row["row"].to_string(), 1);
    }
    for (kind, update) in &events[1..] {
        assert_eq!(kind, "update");
        for u in update["updates"].as_array().expect("updates") {
            *rows.entry(u["row"].to_string()).or_default() += u["diff"].as_i64().expect("diff");
        }
        rows.retain(|_, count| *count != 0);
        let state: BTreeMap<u64, u64> = rows
            .keys()
            .map(|r| serde_json::from_str::<Value>(r).expect("row"))
            .map(|r| (r["post"].as_u64().expect("post"), r["likes"].as_u64().expect("likes")))
            .collect();
        let t = update["time"].as_u64().expect("time");
        assert_eq!(state, reference_at(&timed, t), "the subscription's state at {t}");
    }
}

/// The `curl` lines of the README's "Serving results", run as written against a job started as
/// its first line says (only the address, the brokers and the topic are this test's).
#[test]
fn the_readmes_curl_examples_work_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README");
    let section = readme.split("### Serving results").nth(1).expect("a Serving results section");
    let block = section.split("```sh").nth(1).and_then(|b| b.split("```").next()).expect("a sh block");
    let lines: Vec<&str> = block.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let job: Vec<&str> = lines[0].trim_end_matches('&').split_whitespace().collect();
    assert_eq!(job[..2], ["kappa", "replay"], "the block starts the job: {}", lines[0]);
    let curls: Vec<&str> = lines[1..].to_vec();
    assert!(curls.len() >= 5 && curls.iter().all(|l| l.starts_with("curl ")), "{curls:?}");

    let tansu = Tansu::shared();
    let topic = unique("readme-likes");
    tansu.create_topic(&topic, 4);
    let events = like_stream(&LikeStreamConfig { partitions: 4, seed: 3, ..LikeStreamConfig::new(4_000) });
    produce(&tansu.brokers, &topic, like_records(&events), &|_| ()).expect("produce");
    let address = format!("127.0.0.1:{}", free_port());
    let mut args: Vec<String> = vec!["replay".into()];
    let mut words = job[2..].iter();
    while let Some(word) = words.next() {
        match *word {
            "--brokers" => {
                words.next();
                args.extend(["--brokers".into(), tansu.brokers.clone()]);
            }
            "--serve" => {
                words.next();
            }
            other => args.push(other.to_string()),
        }
    }
    args.extend(["--topic".into(), topic.clone()]);
    let served = Served::start_at(&address, &args.iter().map(String::as_str).collect::<Vec<_>>());
    served.get_ok("/views/like-counts/key?post=0");
    let mut next = String::new();
    for line in curls {
        let command = line.split(" # ").next().expect("command").trim();
        let command = command
            .replace("localhost:8080", &address)
            .replace("wait_for=likes:", &format!("wait_for={topic}:"))
            .replace("NEXT", &next);
        let streaming = command.contains("/subscribe");
        let command = if streaming { command.replacen("curl ", "curl --max-time 3 ", 1) } else { command };
        let out = Command::new("sh").args(["-c", &command]).output().expect("run curl");
        let body = String::from_utf8_lossy(&out.stdout).to_string();
        if streaming {
            // curl ends the stream at --max-time (exit 28); the events are what counts.
            assert!(body.starts_with("event: snapshot") || body.starts_with("event:snapshot"), "{command}: {body}");
            continue;
        }
        assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
        let value: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{command}: not JSON ({e}): {body}"));
        assert!(value.get("error").is_none(), "{command}: {value}");
        if let Some(token) = value["next"].as_str() {
            next = token.to_string();
        }
        if command.contains("wait_for=") {
            assert!(value["rows"].is_array(), "{command}: {value}");
        }
    }
    assert!(!next.is_empty(), "a scan gave a continuation for the NEXT line");
}
