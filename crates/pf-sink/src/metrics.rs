//! What pf-sink counts for `/metrics`, and the endpoint: its own counts
//! (published by the read loop), the delivery spools' (read live), the
//! other stages' textfiles and the last retraining, put together per scrape.

use pf_alert::spool::Monitor;
use pf_metrics::Samples;
use pf_record::view::ScoredView;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Daemons that get their own `daemon` label; any other is `other`.
const DAEMONS: &[&str] = &[
    "smtpd",
    "postscreen",
    "smtp",
    "lmtp",
    "cleanup",
    "qmgr",
    "pickup",
    "bounce",
    "local",
    "virtual",
    "pipe",
    "error",
    "master",
    "postfix",
    "postsuper",
    "postqueue",
    "anvil",
    "scache",
    "tlsproxy",
    "tlsmgr",
    "verify",
    "dnsblog",
    "sendmail",
    "dovecot",
    "roundcube",
];
const CLASSES: &[&str] = &["auth", "reject", "abuse", "probe"];

/// Distinct kinds counted one by one; records of further kinds (not the
/// parser's: it has fewer) count as `other`.
const MAX_KINDS: usize = 512;

/// pf-sink's own counts, kept by the read loop.
#[derive(Debug, Default, Clone)]
pub struct SinkCounts {
    pub records: u64,
    /// Input lines that were not records (reported on stderr).
    pub rejected: u64,
    /// Lines per kind, with the kind's failure class; the daemon and class
    /// labels are worked out per scrape, not per line.
    pub kinds: std::collections::HashMap<String, (u64, Option<String>)>,
    pub unscorable: u64,
    pub anomalies: BTreeMap<&'static str, u64>,
    pub incident_events: BTreeMap<(&'static str, &'static str), u64>,
    pub open_incidents: usize,
    pub model: Option<String>,
}

impl SinkCounts {
    pub fn note_record(&mut self, record: &ScoredView<'_>) {
        self.records += 1;
        let kind = record.kind.as_deref().unwrap_or("unknown");
        match self.kinds.get_mut(kind) {
            Some((n, _)) => *n += 1,
            None => {
                let failure = record.failure.as_deref().map(str::to_string);
                let kind = if self.kinds.len() < MAX_KINDS {
                    kind
                } else {
                    "other"
                };
                self.kinds.entry(kind.to_string()).or_insert((0, failure)).0 += 1;
            }
        }
        let Some(detection) = &record.detection else {
            return;
        };
        if detection.error.is_some() {
            self.unscorable += 1;
        }
        if detection.is_anomaly == Some(true) {
            *self
                .anomalies
                .entry(severity(detection.severity.as_deref()))
                .or_default() += 1;
        }
        if let Some(model) = detection.model.as_deref() {
            if self.model.as_deref() != Some(model) {
                self.model = Some(model.chars().take(64).collect());
            }
        }
    }

    /// Lines by (daemon, class), from the lines per kind.
    fn lines(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        let mut lines = BTreeMap::new();
        for (kind, (n, failure)) in &self.kinds {
            let daemon = kind.split('.').next().unwrap_or("");
            let daemon =
                DAEMONS
                    .iter()
                    .find(|d| **d == daemon)
                    .copied()
                    .unwrap_or(if kind == "unknown" {
                        "unknown"
                    } else {
                        "other"
                    });
            let class = match failure
                .as_deref()
                .and_then(|f| CLASSES.iter().find(|c| **c == f))
            {
                Some(c) => c,
                None if kind == "unknown" => "unknown",
                None => "routine",
            };
            *lines.entry((daemon, class)).or_default() += n;
        }
        lines
    }

    pub fn note_incident_event(&mut self, event: &pf_incident::IncidentEvent) {
        let severity = severity(Some(event.incident.severity.as_str()));
        *self
            .incident_events
            .entry((event.change.as_str(), severity))
            .or_default() += 1;
    }

    fn samples(&self, into: &mut Samples) {
        let label = [("stage", "pf-sink")];
        let records = self.records as f64;
        let read = records + self.rejected as f64;
        into.add("postfix_anomaly_stage_records_read_total", &label, read);
        into.add(
            "postfix_anomaly_stage_records_written_total",
            &label,
            records,
        );
        let rejected = self.rejected as f64;
        into.add(
            "postfix_anomaly_stage_records_rejected_total",
            &label,
            rejected,
        );
        for ((daemon, class), n) in &self.lines() {
            into.add(
                "postfix_anomaly_lines_total",
                &[("daemon", daemon), ("class", class)],
                *n as f64,
            );
        }
        into.add(
            "postfix_anomaly_unscorable_records_total",
            &[],
            self.unscorable as f64,
        );
        for severity in ["low", "medium", "high"] {
            let n = self.anomalies.get(severity).copied().unwrap_or(0);
            into.add(
                "postfix_anomaly_anomalies_total",
                &[("severity", severity)],
                n as f64,
            );
        }
        for ((event, severity), n) in &self.incident_events {
            into.add(
                "postfix_anomaly_incident_events_total",
                &[("event", event), ("severity", severity)],
                *n as f64,
            );
        }
        into.add(
            "postfix_anomaly_open_incidents",
            &[],
            self.open_incidents as f64,
        );
        if let Some(model) = &self.model {
            into.add("postfix_anomaly_model_info", &[("version", model)], 1.0);
            if let Some(created) = version_time(model) {
                into.add(
                    "postfix_anomaly_model_created_timestamp_seconds",
                    &[],
                    created,
                );
            }
        }
    }
}

fn severity(value: Option<&str>) -> &'static str {
    match value {
        Some("high") => "high",
        Some("medium") => "medium",
        _ => "low",
    }
}

/// A model version such as `20261125T185200Z` (or `...Z-2`) as Unix time.
fn version_time(version: &str) -> Option<f64> {
    let stamp = version.split('-').next()?;
    let time = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").ok()?;
    Some(time.and_utc().timestamp() as f64)
}

/// The last `retrain.sh: done` or `FAILED` line of the retraining log:
/// (Unix time, success).
fn last_retraining(log: &Path) -> Option<(f64, bool)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))
        .ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    text.lines().rev().find_map(|line| {
        let (stamp, rest) = line.split_once(' ')?;
        let success = if rest.starts_with("retrain.sh: done") {
            true
        } else if rest.starts_with("retrain.sh: FAILED") {
            false
        } else {
            return None;
        };
        let time = chrono::DateTime::parse_from_rfc3339(stamp).ok()?;
        Some((time.timestamp() as f64, success))
    })
}

/// Starts the endpoint of `prometheus.listen`, if set; says where on stderr.
pub fn start(
    config: &pf_config::Config,
    deliveries: &crate::Deliveries,
) -> anyhow::Result<Option<Arc<Mutex<SinkCounts>>>> {
    let Some(listen) = &config.prometheus.listen else {
        return Ok(None);
    };
    let counts = Arc::new(Mutex::new(SinkCounts::default()));
    let endpoint = Endpoint {
        counts: Arc::clone(&counts),
        spools: deliveries.spools.iter().map(|s| s.monitor()).collect(),
        syslog: deliveries.syslog.as_ref().map(|s| Arc::clone(&s.counters)),
        textfiles: Some(
            pf_metrics::textfile_dir().unwrap_or_else(|| config.paths.state_dir.join("metrics")),
        ),
        retraining_log: config.paths.logs_dir.join("retraining.log"),
    };
    let address = pf_metrics::serve(
        listen,
        config.prometheus.allow_remote,
        Arc::new(move || endpoint.render()),
    )?;
    eprintln!("pf-sink: metrics at http://{address}/metrics");
    Ok(Some(counts))
}

/// Hands the read loop's counts to the endpoint.
pub fn publish(
    shared: &Option<Arc<Mutex<SinkCounts>>>,
    counts: &SinkCounts,
    open: usize,
    rejected: u64,
) {
    if let Some(shared) = shared {
        let mut published = shared.lock().unwrap_or_else(|p| p.into_inner());
        *published = counts.clone();
        published.open_incidents = open;
        published.rejected = rejected;
    }
}

/// What a scrape puts together.
pub struct Endpoint {
    pub counts: Arc<Mutex<SinkCounts>>,
    pub spools: Vec<Monitor>,
    pub syslog: Option<Arc<pf_alert::spool::Counters>>,
    pub textfiles: Option<PathBuf>,
    pub retraining_log: PathBuf,
}

impl Endpoint {
    pub fn render(&self) -> String {
        let mut samples = Samples::default();
        if let Some(dir) = &self.textfiles {
            // pf-sink's own counts come from itself, not its textfile.
            pf_metrics::read_textfiles(dir, &["pf-sink"], &mut samples);
        }
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        counts.samples(&mut samples);
        use std::sync::atomic::Ordering::Relaxed;
        let mut deliveries = Vec::new();
        if let Some(c) = &self.syslog {
            deliveries.push((
                "syslog",
                c.sent.load(Relaxed),
                c.failed.load(Relaxed),
                0,
                None,
            ));
        }
        for spool in &self.spools {
            let c = spool.counters();
            deliveries.push((
                spool.name(),
                c.sent.load(Relaxed),
                c.failed.load(Relaxed),
                c.rejected.load(Relaxed),
                Some(spool.queued()),
            ));
        }
        for (name, sent, failed, refused, queued) in deliveries {
            for (result, n) in [("sent", sent), ("failed", failed), ("refused", refused)] {
                samples.add(
                    "postfix_anomaly_deliveries_total",
                    &[("destination", name), ("result", result)],
                    n as f64,
                );
            }
            if let Some(queued) = queued {
                samples.add(
                    "postfix_anomaly_delivery_spooled_events",
                    &[("destination", name)],
                    queued as f64,
                );
            }
        }
        if let Some((time, success)) = last_retraining(&self.retraining_log) {
            samples.add(
                "postfix_anomaly_retraining_last_run_timestamp_seconds",
                &[],
                time,
            );
            samples.add(
                "postfix_anomaly_retraining_last_run_success",
                &[],
                if success { 1.0 } else { 0.0 },
            );
        }
        samples.exposition()
    }
}
