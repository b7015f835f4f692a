//! Metrics in Prometheus's text exposition format (version 0.0.4).
//!
//! Every stage counts what it reads and writes; the stages that are not
//! pf-sink write their counts to `$PF_METRICS_DIR/<stage>.prom` (sample
//! lines only, rewritten atomically every few seconds, as node_exporter's
//! textfile collector reads them), and pf-sink serves them together with
//! its own at `/metrics` ([`serve`]). The families are declared once, in
//! [`FAMILIES`], so each gets one `# HELP`/`# TYPE` however many stages
//! report it. Label values are bounded by construction: stage names, kind
//! classes, severities, destinations, topics and partitions; never an
//! address, user or queue id.

use anyhow::{bail, Context};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The environment variable naming the directory of the stages' textfiles.
pub const DIR_VARIABLE: &str = "PF_METRICS_DIR";
/// How often a stage rewrites its textfile while it runs.
pub const TEXTFILE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
}

/// `(name, type, help)` of every metric the toolkit exposes.
pub const FAMILIES: &[(&str, Type, &str)] = &[
    (
        "postfix_anomaly_stage_records_read_total",
        Type::Counter,
        "Lines or records a stage read (kafka-tail: Kafka messages).",
    ),
    (
        "postfix_anomaly_stage_records_written_total",
        Type::Counter,
        "Records a stage wrote on (pf-sink: to all_detections.jsonl).",
    ),
    (
        "postfix_anomaly_stage_records_rejected_total",
        Type::Counter,
        "Input lines a stage could not use and reported on stderr.",
    ),
    (
        "postfix_anomaly_stage_updated_timestamp_seconds",
        Type::Gauge,
        "When a stage last reported its counts (Unix time).",
    ),
    (
        "postfix_anomaly_kafka_consumer_lag_messages",
        Type::Gauge,
        "Messages in a partition not yet read by kafka-tail (high watermark minus position).",
    ),
    (
        "postfix_anomaly_lines_total",
        Type::Counter,
        "Log lines that reached pf-sink, by the daemon that wrote them and the failure class of their kind (class=unknown: lines the parser did not recognise).",
    ),
    (
        "postfix_anomaly_unscorable_records_total",
        Type::Counter,
        "Records pf-score could not score (detection.error).",
    ),
    (
        "postfix_anomaly_anomalies_total",
        Type::Counter,
        "Anomalous lines by severity.",
    ),
    (
        "postfix_anomaly_incident_events_total",
        Type::Counter,
        "Incident events (opened, escalated, closed) by the incident's severity.",
    ),
    (
        "postfix_anomaly_open_incidents",
        Type::Gauge,
        "Incidents open now.",
    ),
    (
        "postfix_anomaly_model_info",
        Type::Gauge,
        "The model that scored the latest record (always 1; the version is the label).",
    ),
    (
        "postfix_anomaly_model_created_timestamp_seconds",
        Type::Gauge,
        "When the model in use was trained (Unix time).",
    ),
    (
        "postfix_anomaly_retraining_last_run_timestamp_seconds",
        Type::Gauge,
        "When pipelines/retrain.sh last finished (Unix time).",
    ),
    (
        "postfix_anomaly_retraining_last_run_success",
        Type::Gauge,
        "1 if the last retraining published a model, 0 if it failed.",
    ),
    (
        "postfix_anomaly_deliveries_total",
        Type::Counter,
        "Incident events by destination and result: sent, failed (attempts, retried) or refused (kept in the .rejected.jsonl file).",
    ),
    (
        "postfix_anomaly_delivery_spooled_events",
        Type::Gauge,
        "Incident events waiting in a destination's spool.",
    ),
];

/// Samples of known families, written out grouped by family.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    lines: Vec<(usize, String)>,
}

impl Samples {
    /// Adds `name{labels} value`; a name not in [`FAMILIES`] is a bug.
    pub fn add(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let Some(family) = FAMILIES.iter().position(|(n, _, _)| *n == name) else {
            debug_assert!(false, "{name} is not in FAMILIES");
            return;
        };
        let mut line = String::from(name);
        if !labels.is_empty() {
            line.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                let _ = write!(line, "{key}=\"{}\"", escape(value));
            }
            line.push('}');
        }
        let _ = write!(line, " {}", number(value));
        self.lines.push((family, line));
    }

    /// Sample lines of a textfile (from [`Samples::to_textfile`]); lines of
    /// unknown families or not of the form `name[{...}] value` are skipped.
    pub fn add_textfile(&mut self, text: &str) {
        for line in text.lines() {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let Some(family) = FAMILIES
                .iter()
                .position(|(n, _, _)| *n == &line[..name_end])
            else {
                continue;
            };
            let value = line.rsplit(' ').next().unwrap_or("");
            if line.len() > name_end && value.parse::<f64>().is_ok() && !line.contains('\n') {
                self.lines.push((family, line.to_string()));
            }
        }
    }

    /// The sample lines alone, for a stage's textfile.
    pub fn to_textfile(&self) -> String {
        let mut text = String::new();
        for (_, line) in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// The whole exposition: each family with samples once, with its
    /// `# HELP` and `# TYPE`, in [`FAMILIES`] order.
    pub fn exposition(&self) -> String {
        let mut text = String::new();
        for (index, (name, kind, help)) in FAMILIES.iter().enumerate() {
            let mut lines = self.lines.iter().filter(|(f, _)| *f == index).peekable();
            if lines.peek().is_none() {
                continue;
            }
            let kind = match kind {
                Type::Counter => "counter",
                Type::Gauge => "gauge",
            };
            let _ = writeln!(text, "# HELP {name} {help}");
            let _ = writeln!(text, "# TYPE {name} {kind}");
            for (_, line) in lines {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// A stage's counts as samples (`stage` is the tool's name).
pub fn stage_samples(stage: &str, read: u64, written: u64, rejected: u64) -> Samples {
    let mut samples = Samples::default();
    let label = [("stage", stage)];
    samples.add(
        "postfix_anomaly_stage_records_read_total",
        &label,
        read as f64,
    );
    samples.add(
        "postfix_anomaly_stage_records_written_total",
        &label,
        written as f64,
    );
    samples.add(
        "postfix_anomaly_stage_records_rejected_total",
        &label,
        rejected as f64,
    );
    samples.add(
        "postfix_anomaly_stage_updated_timestamp_seconds",
        &label,
        now_seconds().floor(),
    );
    samples
}

pub fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The textfile directory from [`DIR_VARIABLE`], if set.
pub fn textfile_dir() -> Option<PathBuf> {
    std::env::var_os(DIR_VARIABLE)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// A stage's textfile, rewritten at most every [`TEXTFILE_EVERY`].
pub struct Textfile {
    path: PathBuf,
    written: Option<Instant>,
    reported: bool,
}

impl Textfile {
    /// `<dir>/<stage>.prom` when [`DIR_VARIABLE`] is set.
    pub fn for_stage(stage: &str) -> Option<Textfile> {
        let dir = textfile_dir()?;
        Some(Textfile {
            path: dir.join(format!("{stage}.prom")),
            written: None,
            reported: false,
        })
    }

    /// Writes the samples `make` gives, if the last write is old enough (or `now`).
    pub fn maybe_write(&mut self, now: bool, make: impl FnOnce() -> Samples) {
        if !now && self.written.is_some_and(|t| t.elapsed() < TEXTFILE_EVERY) {
            return;
        }
        self.written = Some(Instant::now());
        let text = make().to_textfile();
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = pf_record::atomic::replace_unsynced(&self.path, text.as_bytes(), 0o644) {
            // Metrics are not worth stopping for; say so once.
            if !self.reported {
                self.reported = true;
                eprintln!("cannot write the metrics file {}: {e}", self.path.display());
            }
        }
    }
}

/// A stage's counts, written to its textfile by a thread every
/// [`TEXTFILE_EVERY`] (so an idle stage's file still holds its last
/// counts) and once more when dropped.
pub struct StageReporter {
    shared: Arc<StageShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct StageShared {
    stage: String,
    counts: [AtomicU64; 3],
    stop: Mutex<bool>,
    wake: Condvar,
}

impl StageReporter {
    /// A reporter for `stage` when [`DIR_VARIABLE`] is set.
    pub fn start(stage: &str) -> Option<StageReporter> {
        let mut textfile = Textfile::for_stage(stage)?;
        let shared = Arc::new(StageShared {
            stage: stage.to_string(),
            counts: Default::default(),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("metrics-textfile".into())
                .spawn(move || loop {
                    let stopping = {
                        let stop = shared.stop.lock().unwrap_or_else(|p| p.into_inner());
                        let (stop, _) = shared
                            .wake
                            .wait_timeout_while(stop, TEXTFILE_EVERY, |s| !*s)
                            .unwrap_or_else(|p| p.into_inner());
                        *stop
                    };
                    let [read, written, rejected] =
                        shared.counts.each_ref().map(|c| c.load(Ordering::Relaxed));
                    textfile.maybe_write(true, || {
                        stage_samples(&shared.stage, read, written, rejected)
                    });
                    if stopping {
                        return;
                    }
                })
                .ok()?
        };
        Some(StageReporter {
            shared,
            thread: Some(thread),
        })
    }

    pub fn update(&self, read: u64, written: u64, rejected: u64) {
        for (counter, value) in self.shared.counts.iter().zip([read, written, rejected]) {
            counter.store(value, Ordering::Relaxed);
        }
    }
}

impl Drop for StageReporter {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Every `*.prom` file in `dir` (the other stages' counts) but those of
/// the stages in `skip`.
pub fn read_textfiles(dir: &Path, skip: &[&str], into: &mut Samples) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "prom"))
        .filter(|p| {
            p.file_stem()
                .is_none_or(|stem| !skip.iter().any(|s| stem == *s))
        })
        .collect();
    paths.sort();
    for path in paths {
        if let Ok(text) = std::fs::read_to_string(&path) {
            into.add_textfile(&text);
        }
    }
}

/// Serves `GET /metrics` on `listen` from a thread, answering with
/// `render()`. Only a loopback address unless `allow_remote`: the counts
/// say how a mail server is attacked, which is not for everyone.
pub fn serve(
    listen: &str,
    allow_remote: bool,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> anyhow::Result<SocketAddr> {
    let address: SocketAddr = listen.parse().with_context(|| {
        format!("prometheus.listen {listen:?} is not an address and port such as 127.0.0.1:9187")
    })?;
    if !address.ip().is_loopback() && !allow_remote {
        bail!(
            "prometheus.listen {listen} is not a loopback address: set prometheus.allow_remote: true \
             to serve the metrics to other hosts (and limit who reaches the port), or listen on 127.0.0.1"
        );
    }
    let listener = TcpListener::bind(address)
        .with_context(|| format!("cannot listen on {address} (prometheus.listen)"))?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    // One scrape at a time; a client that stalls is cut off.
                    Ok(stream) => {
                        let _ = answer(stream, &*render);
                    }
                    // Out of descriptors, say: wait rather than spin.
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        })?;
    Ok(bound)
}

fn answer(mut stream: TcpStream, render: &dyn Fn() -> String) -> std::io::Result<()> {
    // The whole request head within 5 s, however slowly it trickles in.
    let deadline = Instant::now() + Duration::from_secs(5);
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 || head.len() > 8192 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(),
        ),
        ("GET" | "HEAD", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "postfix-anomaly: the metrics are at /metrics\n".to_string(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain",
            "not found; try /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        response.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&response)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_appear_once_with_escaped_labels() {
        let mut s = Samples::default();
        s.add(
            "postfix_anomaly_anomalies_total",
            &[("severity", "high")],
            3.0,
        );
        let mut stage = Samples::default();
        stage.add(
            "postfix_anomaly_stage_records_read_total",
            &[("stage", "pf-parse")],
            10.0,
        );
        s.add_textfile(&stage.to_textfile());
        s.add_textfile(
            "postfix_anomaly_stage_records_read_total{stage=\"pf-score\"} 7\nnot_ours 1\ngarbage\n",
        );
        s.add("postfix_anomaly_model_info", &[("version", "a\"b\\c")], 1.0);
        let text = s.exposition();
        assert_eq!(
            text.matches("# TYPE postfix_anomaly_stage_records_read_total counter")
                .count(),
            1
        );
        assert!(text.contains("postfix_anomaly_stage_records_read_total{stage=\"pf-parse\"} 10\n"));
        assert!(text.contains("{stage=\"pf-score\"} 7\n"));
        assert!(!text.contains("not_ours") && !text.contains("garbage"));
        assert!(text.contains("postfix_anomaly_model_info{version=\"a\\\"b\\\\c\"} 1\n"));
        // Families in FAMILIES order: the stage counts before the anomalies.
        assert!(text.find("stage_records_read").unwrap() < text.find("anomalies_total").unwrap());
    }

    #[test]
    fn a_public_address_needs_allow_remote() {
        let err = serve("0.0.0.0:0", false, Arc::new(String::new)).unwrap_err();
        assert!(
            format!("{err:#}").contains("prometheus.allow_remote"),
            "{err:#}"
        );
        let bound = serve("127.0.0.1:0", false, Arc::new(|| "x 1\n".to_string())).unwrap();
        let mut stream = TcpStream::connect(bound).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nx 1\n"), "{reply}");
    }
}

#[cfg(test)]
mod dashboard {
    use super::FAMILIES;
    use std::collections::BTreeSet;

    /// docs/grafana-dashboard.json loads as a dashboard, asks only for
    /// metrics the endpoint serves, and shows every one of them.
    #[test]
    fn the_grafana_dashboard_uses_exactly_the_served_metrics() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/grafana-dashboard.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
        let panels = dashboard["panels"].as_array().expect("panels");
        let ids: BTreeSet<i64> = panels.iter().map(|p| p["id"].as_i64().unwrap()).collect();
        assert_eq!(ids.len(), panels.len(), "panel ids are unique");
        let mut used = BTreeSet::new();
        for panel in panels {
            assert!(panel["gridPos"]["w"].as_i64().unwrap() > 0, "{panel}");
            let targets = panel["targets"]
                .as_array()
                .expect("every panel has queries");
            for target in targets {
                let expr = target["expr"].as_str().unwrap();
                let mut rest = expr;
                while let Some(at) = rest.find("postfix_anomaly_") {
                    let name: String = rest[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    assert!(
                        FAMILIES.iter().any(|(n, _, _)| *n == name),
                        "{name} in {expr:?} is not served"
                    );
                    used.insert(name.clone());
                    rest = &rest[at + name.len()..];
                }
            }
        }
        let served: BTreeSet<String> = FAMILIES.iter().map(|(n, _, _)| n.to_string()).collect();
        assert_eq!(used, served, "the dashboard shows every served metric");
    }
}
