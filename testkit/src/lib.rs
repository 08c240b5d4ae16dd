//! Real servers and real processes for integration tests: a Tansu broker, moto's S3 server, a
//! PostgreSQL cluster and a Redis server on free loopback ports, a consumer that reads a topic back as a `read_committed` client sees it,
//! and a job runner that SIGKILLs a binary at chosen moments and starts it again.
//!
//! Why a crate of its own: the integration tests of `kappa-examples` and of the template pipeline
//! (`template/`, a user's crate in miniature) both start the same servers and kill the same kind
//! of job; this is the one place that knows how. It is test support only: nothing ships with it.
//!
//! `scripts/test` starts one broker and one S3 server and exports their addresses
//! (`KAPPA_TEST_BROKERS`, `KAPPA_TEST_S3_ENDPOINT`, `KAPPA_TANSU_BIN`); run alone, a test starts
//! its own ([`Tansu::shared`], [`Moto::shared`]).
#![forbid(missing_docs)]
#![allow(clippy::unwrap_used)] // test support: a failure is a panic with a message

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("local addr").port()
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening on port {port}: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on port {port} within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A unique name for a topic, bucket prefix or directory within this test run.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn tansu_binary() -> PathBuf {
    if let Ok(path) = std::env::var("KAPPA_TANSU_BIN") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = PathBuf::from(home).join(".cache/kappa-tools/tansu-0.6.0/bin/tansu");
    assert!(
        cached.exists(),
        "Tansu 0.6.0 not found at {}: run scripts/test (it installs Tansu), or set KAPPA_TANSU_BIN",
        cached.display()
    );
    cached
}

/// A Tansu broker with in-memory storage.
pub struct Tansu {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub brokers: String,
    /// How it was started, to restart it the same way.
    storage: String,
    env: Vec<(String, String)>,
}

impl Tansu {
    /// The broker `scripts/test` started (`KAPPA_TEST_BROKERS`), or a new one.
    pub fn shared() -> Tansu {
        match std::env::var("KAPPA_TEST_BROKERS") {
            Ok(brokers) if !brokers.is_empty() => {
                Tansu { child: None, brokers, storage: String::new(), env: Vec::new() }
            }
            _ => Tansu::start(),
        }
    }

    /// Starts a broker of its own on a free port.
    pub fn start() -> Tansu {
        Self::start_with_storage("memory://tansu/", &[])
    }

    /// Starts a broker of its own storing into `storage` (e.g. `s3://bucket/`, with `env` naming
    /// the S3 endpoint and credentials).
    pub fn start_with_storage(storage: &str, env: &[(&str, String)]) -> Tansu {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let port = free_port();
        let child = Self::spawn(port, storage, &env);
        Tansu { child: Some(child), brokers: format!("127.0.0.1:{port}"), storage: storage.to_string(), env }
    }

    fn spawn(port: u16, storage: &str, env: &[(String, String)]) -> Child {
        let url = format!("tcp://127.0.0.1:{port}");
        let mut cmd = Command::new(tansu_binary());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", storage])
            .env_remove("STORAGE_ENGINE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu broker");
        wait_for_port(port, "tansu", &mut child);
        child
    }

    /// Stops the broker (SIGKILL), waits `down`, and starts it again on the same port and storage.
    pub fn restart(&mut self, down: Duration) {
        let mut child = self.child.take().expect("only a broker this test started can be restarted");
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(down);
        let port: u16 = self.brokers.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        self.child = Some(Self::spawn(port, &self.storage, &self.env));
    }

    /// Creates `topic` with `partitions` partitions, with Tansu's own command.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let out = Command::new(tansu_binary())
            .args(["topic", "create", "--broker", &format!("tcp://{}", self.brokers)])
            .args(["--partitions", &partitions.to_string(), topic])
            .output()
            .expect("run tansu topic create");
        assert!(out.status.success(), "tansu topic create failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A PostgreSQL server: the temporary cluster `scripts/test` started (`KAPPA_TEST_POSTGRES`), or
/// one of this test's own, made with the machine's `initdb` and stopped on drop.
pub struct Postgres {
    /// `postgres://kappa@127.0.0.1:PORT/postgres`.
    pub url: String,
    /// The cluster's directory, when this test started it.
    dir: Option<PathBuf>,
}

impl Postgres {
    /// The server `scripts/test` started, or a new one.
    pub fn shared() -> Postgres {
        match std::env::var("KAPPA_TEST_POSTGRES") {
            Ok(url) if !url.is_empty() => Postgres { url, dir: None },
            _ => Postgres::start(),
        }
    }

    fn bin(name: &str) -> PathBuf {
        let dirs = std::env::var("KAPPA_PG_BIN").into_iter().chain(["/usr/local/bin".to_string()]);
        let globbed = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin").display().to_string());
        dirs.chain(globbed).map(|d| PathBuf::from(d).join(name)).find(|p| p.exists()).unwrap_or_else(|| {
            panic!("PostgreSQL's `{name}` not found: run scripts/test, install postgresql, or set KAPPA_PG_BIN")
        })
    }

    /// `command` run as the postgres user when this process is root (initdb refuses root).
    fn as_postgres(program: PathBuf) -> Command {
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
        if root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    /// Starts a cluster of its own on a free port.
    pub fn start() -> Postgres {
        let dir = std::env::temp_dir().join(unique("kappa-postgres"));
        std::fs::create_dir_all(&dir).expect("create the cluster directory");
        let _ = Command::new("chown").arg("postgres").arg(&dir).status();
        let data = dir.join("data");
        let out = Self::as_postgres(Self::bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "kappa", "--auth=trust"])
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", dir.display());
        let out = Self::as_postgres(Self::bin("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("postgres.log"))
            .args(["-w", "-o", &options, "start"])
            .output()
            .expect("run pg_ctl");
        assert!(out.status.success(), "PostgreSQL did not start: {}", String::from_utf8_lossy(&out.stderr));
        Postgres { url: format!("postgres://kappa@127.0.0.1:{port}/postgres"), dir: Some(dir) }
    }

    /// A client of the server's `postgres` database.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to PostgreSQL")
    }

    /// A new empty database of its own (so tests never share tables), as a URL.
    pub fn database(&self) -> String {
        let name = unique("kappa").replace('-', "_");
        self.client().batch_execute(&format!("CREATE DATABASE {name}")).expect("create a database");
        let base = self.url.rsplit_once('/').map_or(self.url.as_str(), |(base, _)| base);
        format!("{base}/{name}")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = Self::as_postgres(Self::bin("pg_ctl"))
                .arg("-D")
                .arg(dir.join("data"))
                .args(["stop", "-m", "immediate"])
                .output();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A Redis server: the one `scripts/test` started (`KAPPA_TEST_REDIS`), or one of this test's own
/// (`redis-server` on a free port, nothing saved), stopped on drop.
pub struct Redis {
    child: Option<Child>,
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
}

impl Redis {
    /// The server `scripts/test` started, or a new one.
    pub fn shared() -> Redis {
        match std::env::var("KAPPA_TEST_REDIS") {
            Ok(url) if !url.is_empty() => Redis { child: None, url },
            _ => Redis::start(),
        }
    }

    /// Starts a server of its own on a free port.
    pub fn start() -> Redis {
        let port = free_port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server: run scripts/test (it installs it), or apt-get install -y redis-server");
        wait_for_port(port, "redis-server", &mut child);
        Redis { child: Some(child), url: format!("redis://127.0.0.1:{port}") }
    }

    /// A connection to it (tests keep apart by key prefix).
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection()).expect("connect to Redis")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// moto's S3 server.
pub struct Moto {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// The server `scripts/test` started (`KAPPA_TEST_S3_ENDPOINT`), or a new one.
    pub fn shared() -> Moto {
        match std::env::var("KAPPA_TEST_S3_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => Moto { child: None, endpoint },
            _ => Moto::start(),
        }
    }

    /// Starts a server of its own on a free port.
    pub fn start() -> Moto {
        let port = free_port();
        let mut child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server: run scripts/test (it installs moto), or pip install 'moto[server]'");
        wait_for_port(port, "moto_server", &mut child);
        Moto { child: Some(child), endpoint: format!("http://127.0.0.1:{port}") }
    }

    /// Creates `bucket` (moto accepts unsigned requests).
    pub fn create_bucket(&self, bucket: &str) {
        use std::io::{Read, Write};
        let address = self.endpoint.trim_start_matches("http://");
        let mut stream = TcpStream::connect(address).expect("connect to moto");
        write!(stream, "PUT /{bucket} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .expect("send create-bucket");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read create-bucket response");
        assert!(response.starts_with("HTTP/1.1 200"), "create bucket failed: {response}");
    }

    /// Environment for a client of this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP forwarder in front of a server that can go down and come back: while down its port is
/// closed and every open connection is cut, as when the server behind it is stopped and
/// restarted. The server keeps its state (moto's would be lost by a real restart).
pub struct Outages {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Connections cut by outages.
    pub cut: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Outages {
    /// Forwards a free loopback port to `target` (`host:port`).
    pub fn start(target: &str) -> Outages {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (up, generation, cut) =
            (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (up2, gen2, cut2, target) = (up.clone(), generation.clone(), cut.clone(), target.to_string());
        std::thread::spawn(move || {
            let mut listener = Some(listener);
            loop {
                if !up2.load(SeqCst) {
                    listener = None; // the port is closed: connections are refused
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let l = listener.get_or_insert_with(|| {
                    let l = TcpListener::bind(("127.0.0.1", port)).expect("rebind proxy port");
                    l.set_nonblocking(true).expect("nonblocking");
                    l
                });
                l.set_nonblocking(true).expect("nonblocking");
                match l.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(&target) else { continue };
                        let my_gen = gen2.load(SeqCst);
                        for (mut from, mut to) in
                            [(client.try_clone().expect("clone"), server.try_clone().expect("clone")), (server, client)]
                        {
                            let (gen3, cut3) = (gen2.clone(), cut2.clone());
                            std::thread::spawn(move || {
                                use std::io::{Read, Write};
                                from.set_nonblocking(false).ok();
                                from.set_read_timeout(Some(Duration::from_millis(50))).ok();
                                let mut buf = [0u8; 64 * 1024];
                                loop {
                                    if gen3.load(SeqCst) != my_gen {
                                        cut3.fetch_add(1, SeqCst);
                                        let _ = from.shutdown(std::net::Shutdown::Both);
                                        let _ = to.shutdown(std::net::Shutdown::Both);
                                        return;
                                    }
                                    match from.read(&mut buf) {
                                        Ok(0) => {
                                            let _ = to.shutdown(std::net::Shutdown::Write);
                                            return;
                                        }
                                        Ok(n) => {
                                            if to.write_all(&buf[..n]).is_err() {
                                                return;
                                            }
                                        }
                                        Err(e)
                                            if matches!(
                                                e.kind(),
                                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                            ) => {}
                                        Err(_) => return,
                                    }
                                }
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Outages { port, up, generation, cut }
    }

    /// The forwarded endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Takes the server away for `down`: closes the port, cuts every connection, then reopens.
    pub fn outage(&self, down: Duration) {
        use std::sync::atomic::Ordering::SeqCst;
        self.up.store(false, SeqCst);
        self.generation.fetch_add(1, SeqCst);
        std::thread::sleep(down);
        self.up.store(true, SeqCst);
    }
}

/// Every record of `topic` as `(key, value)` strings, partition by partition in offset order,
/// read as a `read_committed` consumer sees them.
pub fn consume_committed(brokers: &str, topic: &str) -> Vec<(String, Option<String>)> {
    let consumer: rdkafka::consumer::BaseConsumer = kappa_connectors::kafka::client_config(brokers)
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let partitions = kappa_connectors::kafka::admin::partitions(brokers, topic).expect("output topic exists");
    let mut out = Vec::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).expect("watermarks");
        if high <= low {
            continue;
        }
        let mut assignment = rdkafka::TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition, rdkafka::Offset::Offset(low)).expect("assign");
        consumer.assign(&assignment).expect("assign");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => out.push((
                    String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
                )),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => panic!("consuming {topic}: {e}"),
                None => assert!(Instant::now() < deadline, "timed out reading {topic}"),
            }
        }
    }
    out
}

/// One restartable job run as an operator would: the same command again after every crash.
pub struct Job {
    /// The program (a test's `env!("CARGO_BIN_EXE_<name>")`).
    pub binary: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

impl Job {
    /// Starts the program (stdout discarded, stderr piped).
    pub fn spawn(&self) -> Child {
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.args).stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.spawn().expect("start the job's program")
    }

    /// Runs the job to completion, killing it with SIGKILL after each of `kills` delays and
    /// starting it again; see [`run_killed_when`](Self::run_killed_when). Returns the stderr of
    /// every run.
    pub fn run_with_kills(&self, kills: &[Duration], input_complete: &dyn Fn() -> bool) -> Vec<String> {
        let conditions: Vec<Box<dyn Fn(Duration) -> bool>> = kills
            .iter()
            .map(|&d| Box::new(move |elapsed: Duration| elapsed >= d) as Box<dyn Fn(Duration) -> bool>)
            .collect();
        self.run_killed_when(&conditions, input_complete)
    }

    /// Runs the job to completion, killing run `i` with SIGKILL as soon as `kill_when[i]` holds
    /// (given how long that run has been going), then starting it again. Returns the stderr of
    /// every run.
    ///
    /// The input may still be arriving (a producer thread): `input_complete` says whether it all
    /// is in the broker. A job that exits when idle may end on its own before the last records
    /// arrive (a producer stalled on a loaded machine for longer than the idle time): a run that
    /// ends while the input was incomplete when it started is started again, as an operator
    /// reruns a finished job over more input, which goes on exactly where it ended. Only a run
    /// started after the input was complete ends the loop.
    pub fn run_killed_when(
        &self,
        kill_when: &[Box<dyn Fn(Duration) -> bool>],
        input_complete: &dyn Fn() -> bool,
    ) -> Vec<String> {
        let mut logs = Vec::new();
        let mut kills = kill_when.iter();
        loop {
            assert!(logs.len() < kill_when.len() + 20, "{} never ended: {:?}", self.binary.display(), self.args);
            let complete = input_complete();
            let condition = kills.next();
            let mut child = self.spawn();
            let started = Instant::now();
            let finished = loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    break Some(status);
                }
                if condition.is_some_and(|kill| kill(started.elapsed())) {
                    child.kill().expect("SIGKILL the job");
                    let _ = child.wait();
                    break None;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "{} ran for two minutes: {:?}",
                    self.binary.display(),
                    self.args
                );
                std::thread::sleep(Duration::from_millis(10));
            };
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().expect("piped"), &mut stderr).expect("stderr");
            if let Some(status) = finished {
                assert!(status.success(), "{} {} failed:\n{stderr}", self.binary.display(), self.args.join(" "));
                if complete {
                    logs.push(stderr);
                    return logs;
                }
                // Ended before all its input had arrived: run it again over what came since.
                std::thread::sleep(Duration::from_millis(50));
            }
            logs.push(stderr);
        }
    }
}

impl Job {
    /// Runs the job in the background, starting it again whenever it fails, until it succeeds.
    pub fn run_until_success(self) -> std::thread::JoinHandle<Vec<String>> {
        std::thread::spawn(move || {
            let mut logs = Vec::new();
            for _ in 0..5 {
                let out = {
                    let mut cmd = Command::new(&self.binary);
                    cmd.args(&self.args);
                    for (k, v) in &self.env {
                        cmd.env(k, v);
                    }
                    cmd.output().expect("run the job's program")
                };
                logs.push(String::from_utf8_lossy(&out.stderr).into_owned());
                if out.status.success() {
                    return logs;
                }
            }
            panic!("the job failed five times:\n{}", logs.join("\n---\n"));
        })
    }
}

/// Complete checkpoints (their `MANIFEST`s) under a `file://` checkpoint location's directory,
/// oldest first.
pub fn manifests(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries.filter_map(Result::ok).map(|e| e.path().join("MANIFEST")).filter(|m| m.exists()).collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}
