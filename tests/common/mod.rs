//! Starts the real `spool` binary for integration tests and gives rdkafka clients for it.
#![allow(dead_code)]

pub mod amqp;
pub mod raw;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

/// A running broker process with its own data directory.
pub struct Spool {
    child: Option<Child>,
    pub port: u16,
    /// The AMQP listener's port.
    pub amqp_port: u16,
    /// The HTTP listener's port.
    pub http_port: u16,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    extra: Vec<String>,
}

/// Ports listeners are given: below the kernel's ephemeral range (32768 and up on Linux), so
/// no client connection's local port can take one between this choice and the broker's bind,
/// or while a broker restarts on it.
const LISTENER_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free port for a listener. Ports are handed out in turn from a start that depends on the
/// process, so tests running at once never get the same one; a port in use is skipped.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);
    let span = u32::from(LISTENER_PORTS.end - LISTENER_PORTS.start);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        std::sync::atomic::Ordering::Relaxed,
        std::sync::atomic::Ordering::Relaxed,
    );
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % span;
        let port = LISTENER_PORTS.start + n as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Spool {
    pub fn start() -> Spool {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Spool {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Spool {
            child: None,
            port: free_port(),
            amqp_port: free_port(),
            http_port: free_port(),
            data_dir: tmp.path().join("data"),
            _tmp: Some(tmp),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.launch();
        s
    }

    /// Starts the process again on the same port and data directory.
    pub fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_extension("log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_spool"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--kafka-addr")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--amqp-addr")
            .arg(format!("127.0.0.1:{}", self.amqp_port))
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning spool");
        self.child = Some(child);
        // Ready once every listener accepts (they are bound one after another).
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in [self.port, self.amqp_port, self.http_port] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                let exited = self.child.as_mut().unwrap().try_wait().unwrap();
                assert!(
                    exited.is_none() && Instant::now() < deadline,
                    "broker did not listen on {port} ({exited:?}): {}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The AMQP URI of the default user.
    pub fn amqp_uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// `GET path` over plain HTTP/1.1: the status code and the body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        self.http("GET", path, None)
    }

    /// `POST path` with a JSON body: the status code and the body.
    pub fn http_post(&self, path: &str, json: &str) -> (u16, String) {
        self.http("POST", path, Some(json))
    }

    /// Any request over plain HTTP/1.1, with an optional JSON body: the status and the body.
    pub fn http(&self, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
        http_to(self.http_port, method, path, json)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            c.wait().unwrap();
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Pauses the process (SIGSTOP), as a long GC pause or a frozen VM would.
    pub fn pause(&self) {
        unsafe { libc::kill(self.pid(), libc::SIGSTOP) };
    }

    /// Resumes a paused process (SIGCONT).
    pub fn resume(&self) {
        unsafe { libc::kill(self.pid(), libc::SIGCONT) };
    }

    /// The broker's process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// SIGTERM, then waits up to `limit` for the process to end: its exit status and how long
    /// it took, or `None` (the process is then killed) when it did not end in time.
    pub fn terminate(&mut self, limit: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let mut c = self.child.take()?;
        let sent = Instant::now();
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        while sent.elapsed() < limit {
            if let Some(status) = c.try_wait().unwrap() {
                return Some((status, sent.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
        c.wait().unwrap();
        None
    }

    /// CPU time the broker has used so far (user + system), from /proc.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// Makes one actor panic (`POST /debug/faults`, served by debug builds).
    pub fn crash(&self, fault: &str) {
        let (status, body) = self.http_post("/debug/faults", fault);
        assert_eq!(status, 204, "crashing {fault}: {body}");
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Any request to the HTTP listener on `port` over plain HTTP/1.1, with an optional JSON body:
/// the status and the body.
pub fn http_to(port: u16, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("HTTP listener");
    let body = json.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: spool\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "30000");
    c
}

/// Creates a topic with rdkafka's admin client and checks that it was created.
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        client_config(bootstrap).create().unwrap();
    let res = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    res[0].as_ref().unwrap();
}

pub fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut c = client_config(bootstrap);
    c.set("linger.ms", "5");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("producer")
}

/// Reads `count` messages of one partition starting at `from` (fails after 30 s of silence),
/// with librdkafka checking every batch's CRC.
pub fn consume(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    from: Offset,
    count: usize,
) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", "spool-tests")
        .set("enable.auto.commit", "false")
        .set("check.crcs", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, from).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    while out.len() < count {
        match consumer.poll(Duration::from_secs(30)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(e)) => panic!("consume error: {e}"),
            None => panic!("no message within 30 s; got {} of {count}", out.len()),
        }
    }
    out
}

pub fn value(m: &OwnedMessage) -> String {
    String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap()
}

/// The body of a chunked HTTP/1.1 response.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

/// Checks an HTTP error answer: the status, and a JSON body `{"error_code": status, "message"}`.
pub fn assert_json_error(what: &str, (status, body): (u16, String), want: u16) {
    assert_eq!(status, want, "{what}: {body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"));
    assert_eq!(v["error_code"], want, "{what}: {body}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

/// Runs `tests/python/<script>` with `arg` against `spool`; fails with its output and the
/// broker's log unless it exits 0 and prints `done`.
pub fn run_python_client(spool: &Spool, script: &str, arg: &str, done: &str) {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(path)
        .arg(arg)
        .output()
        .expect("python3 runs (install the packages with .ci/run)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(done),
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nbroker log:\n{}",
        spool.log()
    );
}
