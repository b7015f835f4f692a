//! pf-sink's work: the output files (appended in whole lines, reopened
//! after logrotate), the activity counters, the incidents and the alert
//! lines; `main.rs` is the flags and the read loop.

use anyhow::Context;
use pf_incident::{IncidentEvent, Policy, Tracker};
use pf_record::acks::Acks;
use pf_record::append::AppendFile;
use pf_record::members::Member;
use pf_record::view::ScoredView;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Write the output files once this much is buffered, even if input never pauses.
pub const FLUSH_AT: usize = 1024 * 1024;
/// While input never pauses, acknowledge at most this often (each one syncs the files).
pub const ACK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

pub const FILE_MODE: u32 = 0o640;
pub const DIR_MODE: u32 = 0o750;

/// The output files, opened on first use.
pub struct Files {
    dir: PathBuf,
    open: BTreeMap<String, AppendFile>,
    /// Each topic's stream file name.
    topics: BTreeMap<String, String>,
}

impl Files {
    pub fn new(dir: PathBuf) -> Files {
        Files {
            dir,
            open: BTreeMap::new(),
            topics: BTreeMap::new(),
        }
    }

    pub fn get(&mut self, name: &str) -> io::Result<&mut AppendFile> {
        open_file(&self.dir, &mut self.open, name)
    }

    /// The stream file of a record (the file name of a topic looked up once).
    pub fn stream(&mut self, stream: Stream<'_>) -> io::Result<&mut AppendFile> {
        let name = match stream {
            Stream::Topic(topic) => {
                if !self.topics.contains_key(topic) {
                    self.topics.insert(topic.to_string(), topic_file(topic));
                }
                &self.topics[topic]
            }
            Stream::Logins => "mail_login_logs.json",
            Stream::Postfix => "postfix_logs.json",
        };
        open_file(&self.dir, &mut self.open, name)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        for file in self.open.values_mut() {
            file.flush()
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.path().display())))?;
        }
        Ok(())
    }

    pub fn buffered(&mut self) -> usize {
        self.open.values_mut().map(|f| f.buf().len()).sum()
    }

    pub fn sync(&self) -> io::Result<()> {
        for file in self.open.values() {
            file.sync()
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.path().display())))?;
        }
        Ok(())
    }
}

fn open_file<'f>(
    dir: &Path,
    open: &'f mut BTreeMap<String, AppendFile>,
    name: &str,
) -> io::Result<&'f mut AppendFile> {
    if !open.contains_key(name) {
        let path = dir.join(name);
        let file = AppendFile::open(&path, FILE_MODE).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
        })?;
        if file.cut_back() > 0 {
            eprintln!(
                "pf-sink: {} ended in an unfinished line ({} bytes) from a write cut short; \
                 removed it (on Kafka that record was never acknowledged and is read again)",
                path.display(),
                file.cut_back()
            );
        }
        open.insert(name.to_string(), file);
    }
    Ok(open.get_mut(name).expect("inserted above"))
}

pub mod metrics;

#[derive(Default)]
pub struct Counts {
    /// Since the start; what `/metrics` serves.
    pub totals: metrics::SinkCounts,
    /// Anomalies per hour, for the time axis of report.html.
    pub timeline: pf_report::Timeline,
    /// (minute since the epoch, records, anomalies) for the last hour.
    minutes: std::collections::VecDeque<(u64, u64, u64)>,
}

impl Counts {
    pub fn note(&mut self, anomaly: bool) {
        let minute = now_secs() / 60;
        match self.minutes.back_mut() {
            Some((m, records, anomalies)) if *m == minute => {
                *records += 1;
                *anomalies += u64::from(anomaly);
            }
            _ => {
                self.minutes.push_back((minute, 1, u64::from(anomaly)));
                while self
                    .minutes
                    .front()
                    .is_some_and(|(m, _, _)| *m + 60 <= minute)
                {
                    self.minutes.pop_front();
                }
            }
        }
    }

    /// `{"updated":...,"last_hour":{"records":N,"anomalies":M},"since_start":{...},"minutes":[...]}`
    pub fn stats_json(&self) -> String {
        let now = now_secs();
        let recent = self.minutes.iter().filter(|(m, _, _)| m + 60 > now / 60);
        let (records, anomalies) = recent.fold((0, 0), |(r, a), (_, r2, a2)| (r + r2, a + a2));
        let minutes: Vec<String> = self
            .minutes
            .iter()
            .map(|(m, r, a)| format!("[{},{r},{a}]", m * 60))
            .collect();
        format!(
            "{{\"updated\":{now},\"last_hour\":{{\"records\":{records},\"anomalies\":{anomalies}}},\"since_start\":{{\"records\":{},\"anomalies\":{}}},\"minutes\":[{}]}}\n",
            self.totals.records,
            self.anomalies(),
            minutes.join(",")
        )
    }

    pub fn anomalies(&self) -> u64 {
        self.totals.anomalies.values().sum()
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How often the stats file is rewritten while records flow.
pub const STATS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

pub const INCIDENTS_FILE: &str = "incidents.jsonl";
/// The same events as one syslog-style line each, for fail2ban and `grep`.
pub const INCIDENTS_LOG: &str = "incidents.log";

/// Where incident events go besides the files: the syslog socket, and
/// the spooled destinations (webhook, mail), each sent by its own thread.
pub struct Deliveries {
    pub syslog: Option<pf_alert::SyslogSender>,
    pub spools: Vec<pf_alert::spool::Spool>,
    host: String,
    tag: String,
}

impl Deliveries {
    /// The configured destinations; with `enabled` false none (a replay:
    /// old incidents must not reach the live receivers or their spools).
    pub fn new(config: &pf_config::Config, enabled: bool) -> anyhow::Result<Deliveries> {
        let host = pf_alert::host_name();
        let spool_dir = config.delivery.spool_dir(&config.paths);
        let mut deliveries = Deliveries {
            syslog: None,
            spools: Vec::new(),
            host,
            tag: config.delivery.syslog.tag.clone(),
        };
        if enabled {
            deliveries.syslog = pf_alert::SyslogSender::new(&config.delivery.syslog);
            deliveries.spools =
                pf_alert::start_spools(&config.delivery, &spool_dir, &deliveries.host)?;
        }
        Ok(deliveries)
    }

    /// A refused datagram is reported, not fatal: the files have the event.
    /// A spool that cannot be written is fatal, as an output file is.
    fn send(&mut self, event: &IncidentEvent) -> io::Result<()> {
        if let Some(syslog) = &mut self.syslog {
            if let Err(e) = syslog.send(event) {
                eprintln!(
                    "pf-sink: cannot send incident {} to the syslog socket {}: {e} (it is in {INCIDENTS_LOG})",
                    event.incident.id,
                    syslog.path().display()
                );
            }
        }
        for spool in &self.spools {
            spool.push(event)?;
        }
        Ok(())
    }

    /// Makes the spooled events durable, before Kafka positions are acknowledged.
    pub fn sync(&self) -> io::Result<()> {
        self.spools.iter().try_for_each(|s| s.sync())
    }

    /// Gives the delivery threads up to `limit` to send what is spooled.
    pub fn drain(&self, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        for spool in &self.spools {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !spool.drain(left) {
                eprintln!(
                    "pf-sink: {}: {} events not yet delivered stay in {} and are sent on the next start",
                    spool.name(),
                    spool.queued(),
                    spool.path().display()
                );
            }
        }
    }

    /// `; webhook: 5 sent, 2 failed attempts, 0 waiting` for the summary line.
    pub fn summary(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let mut text = String::new();
        if let Some(syslog) = &self.syslog {
            let c = &syslog.counters;
            text.push_str(&format!(
                "; syslog: {} sent, {} failed",
                c.sent.load(Relaxed),
                c.failed.load(Relaxed)
            ));
        }
        for spool in &self.spools {
            let c = spool.counters();
            text.push_str(&format!(
                "; {}: {} sent, {} failed attempts, {} refused, {} waiting",
                spool.name(),
                c.sent.load(Relaxed),
                c.failed.load(Relaxed),
                c.rejected.load(Relaxed),
                spool.queued()
            ));
        }
        text
    }
}

/// The saved open incidents, or none when there is no state file yet.
pub fn load_incidents(path: Option<&Path>, policy: Policy) -> anyhow::Result<Tracker> {
    let Some(path) = path else {
        return Ok(Tracker::new(policy));
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Tracker::from_json(&text, policy).with_context(|| {
            format!(
                "{} is not a saved incident state; move it away to start with no open incidents",
                path.display()
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Tracker::new(policy)),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Rewrites the state file whole (synced at the end, not on every save:
/// what a power cut loses, Kafka's redelivery brings back).
pub fn save_incidents(path: &Path, tracker: &Tracker, sync: bool) -> io::Result<()> {
    let json = tracker.to_json();
    let written = if sync {
        pf_record::atomic::write_private_atomically(path, json.as_bytes(), FILE_MODE)
    } else {
        pf_record::atomic::replace_unsynced(path, json.as_bytes(), FILE_MODE)
    };
    written.map_err(|e| io::Error::new(e.kind(), format!("cannot save {}: {e}", path.display())))
}

/// Appends incident events to incidents.jsonl and incidents.log, hands
/// them to the deliveries, and prints the alert lines of the changes shown.
pub fn write_incidents(
    events: &[IncidentEvent],
    files: &mut Files,
    deliveries: &mut Deliveries,
    counts: &mut Counts,
    alert: Option<(&mut Vec<u8>, bool, &[pf_incident::Change])>,
) -> io::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    for event in events {
        counts.totals.note_incident_event(event);
    }
    let file = files.get(INCIDENTS_FILE)?;
    for event in events {
        push_line(file.buf(), &event.to_json().to_string());
    }
    let now = chrono::Local::now();
    let log = files.get(INCIDENTS_LOG)?;
    for event in events {
        push_line(
            log.buf(),
            &pf_alert::log_line(event, now, &deliveries.host, &deliveries.tag),
        );
    }
    for event in events {
        deliveries.send(event)?;
    }
    if let Some((buf, colour, shown)) = alert {
        for event in events.iter().filter(|e| shown.contains(&e.change)) {
            push_line(buf, &event.alert_line(colour));
        }
    }
    Ok(())
}

/// Syncs the output files and records the written Kafka positions, if
/// they moved: what kafka-tail may commit.
///
/// The order is what makes a restart safe: the files and spools first, then
/// the incident state (`save_state`: what it says was taken is on disk),
/// then the positions.
pub fn acknowledge(
    path: &Path,
    files: &Files,
    deliveries: &Deliveries,
    acks: &mut (Acks, bool),
    save_state: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    if !acks.1 {
        return Ok(());
    }
    files.sync()?;
    deliveries.sync()?;
    save_state()?;
    acks.0.write(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot write the acknowledgement file {}: {e}",
                path.display()
            ),
        )
    })?;
    acks.1 = false;
    Ok(())
}

/// pf-score's report.html, when there is one in the output directory.
pub const REPORT_FILE: &str = "report.html";

/// Brings the incidents part of report.html up to date with
/// incidents.jsonl: pf-score wrote the page before pf-sink had the last
/// events (it ends first). A failure is reported, not fatal.
pub fn refresh_report(dir: &Path, timeline: &pf_report::Timeline) {
    let rows = pf_report::incident_rows(&dir.join(INCIDENTS_FILE));
    let report = dir.join(REPORT_FILE);
    if let Err(e) = pf_report::refresh_incidents(&report, timeline, &rows) {
        eprintln!(
            "pf-sink: cannot update the incidents in {}: {e}",
            report.display()
        );
    }
}

/// The stats are a convenience for `status.sh`: a failure is reported, not fatal.
pub fn write_stats(path: &Path, counts: &Counts) {
    if let Err(e) = pf_record::atomic::write_atomically(path, counts.stats_json().as_bytes()) {
        eprintln!("pf-sink: cannot write {}: {e}", path.display());
    }
}

pub fn create_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Appends one record to its files and, for an anomaly, an alert line.
/// The stream file gets the record without `features` and `detection`,
/// cut out of its text: every other byte passes through as it came.
pub fn route(
    text: &str,
    members: &[Member<'_>],
    record: &ScoredView<'_>,
    files: &mut Files,
    counts: &mut Counts,
    alert: Option<(&mut Vec<u8>, bool)>,
) -> io::Result<()> {
    counts.totals.note_record(record);
    let is_anomaly = record.is_anomaly();
    counts.note(is_anomaly);
    push_line(files.get(ALL_DETECTIONS)?.buf(), text);
    if is_anomaly {
        if let Some(ts) = record.ts.as_deref() {
            let severity = record
                .detection
                .as_ref()
                .and_then(|d| d.severity.as_deref())
                .unwrap_or("low");
            counts.timeline.add(ts, severity);
        }
        push_line(files.get(ANOMALIES)?.buf(), text);
        if let Some((buf, colour)) = alert {
            write_alert(buf, record, colour);
        }
    }
    let stream = files.stream(stream_of(record))?;
    pf_record::members::write_without(stream.buf(), members, &["features", "detection"]);
    Ok(())
}

pub const ALL_DETECTIONS: &str = "all_detections.jsonl";
pub const ANOMALIES: &str = "anomalies.jsonl";

pub fn push_line(buf: &mut Vec<u8>, text: &str) {
    buf.extend_from_slice(text.as_bytes());
    buf.push(b'\n');
}

/// The stream file of a record: `<topic>_logs.json` for a record read
/// from Kafka, else the old system's split of files: logins (Dovecot,
/// Roundcube) apart from Postfix.
pub enum Stream<'r> {
    Topic(&'r str),
    Logins,
    Postfix,
}

pub fn stream_of<'r>(record: &'r ScoredView<'_>) -> Stream<'r> {
    let topic = record.source.as_ref().and_then(|s| s.topic.as_deref());
    match topic {
        Some(t) if !t.is_empty() => Stream::Topic(t),
        _ => match record.program.as_deref() {
            Some("dovecot" | "roundcube") => Stream::Logins,
            _ => Stream::Postfix,
        },
    }
}

/// `<topic>_logs.json`, with anything but letters, digits, `-` and `_` as `_`.
pub fn topic_file(topic: &str) -> String {
    let stream: String = topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{stream}_logs.json")
}

/// `HIGH   1 in 250,000   -9.1234  2026-03-02T08:15:03+01:00  smtpd.reject  hour=3 (-0.061), ...  | raw`
pub fn write_alert(buf: &mut Vec<u8>, record: &ScoredView<'_>, colour: bool) {
    use std::fmt::Write as _;
    let detection = record.detection.as_ref();
    let severity = detection
        .and_then(|d| d.severity.as_deref())
        .unwrap_or("low");
    let score = detection.and_then(|d| d.score).unwrap_or(f64::NAN);
    let text_of = |v: &Option<Cow<'_, str>>| v.as_deref().unwrap_or("-").to_string();
    let mut line = String::new();
    let (on, off) = match (colour, severity) {
        (true, "high") => ("\x1b[1;31m", "\x1b[0m"),
        (true, "medium") => ("\x1b[33m", "\x1b[0m"),
        (true, _) => ("\x1b[36m", "\x1b[0m"),
        (false, _) => ("", ""),
    };
    let _ = write!(line, "{on}{:<6}{off} ", severity.to_uppercase());
    // How rare, in words ("1 in 250,000"), when the model is calibrated.
    if let Some(rarity) = detection.and_then(|d| d.rarity) {
        let _ = write!(line, "{:<14} ", pf_record::rarity::describe(rarity));
    }
    let _ = write!(
        line,
        "{score:>8.4}  {}  {}  ",
        text_of(&record.ts),
        text_of(&record.kind)
    );
    if let Some(detection) = detection {
        let parts: Vec<String> = detection
            .top_features
            .iter()
            .map(|f| {
                let name = f.feature.as_deref().unwrap_or("?");
                let value = match &f.value {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => "null".into(),
                };
                let contribution = f.contribution.unwrap_or(f64::NAN);
                format!("{name}={value} ({contribution:+.3})")
            })
            .collect();
        line.push_str(&parts.join(", "));
    }
    line.push_str("  | ");
    // The raw line is attacker-controlled: no terminal control characters.
    line.extend(
        text_of(&record.raw)
            .chars()
            .map(|c| if c.is_control() { '?' } else { c }),
    );
    line.push('\n');
    buf.extend_from_slice(line.as_bytes());
}
