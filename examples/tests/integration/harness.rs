//! Real servers for the integration tests: a Tansu broker and moto's S3 server on free loopback
//! ports. `scripts/test` starts one of each and exports their addresses; run alone, each test
//! starts its own.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
}

impl Tansu {
    /// The broker `scripts/test` started (`KAPPA_TEST_BROKERS`), or a new one.
    pub fn shared() -> Tansu {
        match std::env::var("KAPPA_TEST_BROKERS") {
            Ok(brokers) if !brokers.is_empty() => Tansu { child: None, brokers },
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
        let port = free_port();
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
        Tansu { child: Some(child), brokers: format!("127.0.0.1:{port}") }
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

/// Runs the `kappa` binary with `args` (and extra environment), returning its output.
pub fn kappa(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kappa"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run kappa")
}

/// Runs `kappa` and panics with its stderr unless it succeeds.
pub fn kappa_ok(args: &[&str], env: &[(&str, String)]) -> Output {
    let out = kappa(args, env);
    assert!(out.status.success(), "kappa {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    out
}
