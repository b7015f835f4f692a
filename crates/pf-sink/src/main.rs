use anyhow::Context;
use clap::Parser;
use pf_cli::{CommonArgs, Fatal, LineErrors, Output, EXIT_INPUT, EXIT_OK};
use pf_incident::{IncidentEvent, Observation, Policy, Tracker};
use pf_record::acks::Acks;
use pf_record::append::AppendFile;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  kafka-tail | pf-parse | pf-features | pf-score | pf-sink
  pf-parse mail.log | pf-features | pf-score | pf-sink --output-dir /tmp/out --quiet

Appends every scored record to files in the output directory:
  all_detections.jsonl   every record, as it arrived
  anomalies.jsonl        records with detection.is_anomaly = true
  <topic>_logs.json      the parsed record without features and detection,
                         per Kafka topic (postfix_logs.json, mail_login_logs.json);
                         records read from files go to mail_login_logs.json for
                         dovecot/roundcube and to postfix_logs.json otherwise
  incidents.jsonl        one line per incident event: opened, escalated
                         (more severe than before), closed

Anomalous records are grouped into incidents by the entity that explains
them (client address, IPv6 by /64; account; sender; recipient domain;
message; or the kind, for server-wide events), open while anomalies keep
coming within incidents.gap_minutes of event time. One line per incident
event is printed on stdout: severity, event, entity, rarity (1 in 250,000),
anomalous and all lines, span, the features that explain it most and a
sample line (--every-anomaly: one line per anomalous record instead).

Every file (a <topic>_logs.json per kafka.topics) is created at start,
0640 in a 0750 directory, and appended in whole lines; a file moved away by
logrotate is recreated on the next write, so rotation needs no copytruncate.
A last line left unfinished by a pf-sink that was killed mid-write is
removed at the next start (and reported); on Kafka it is read again. Lines that are not JSON records are reported on
stderr with their line number. A write that fails (disk full, read-only)
is reported with the file's name and ends pf-sink with status 1; no file
is left with half a line.

With --ack-file FILE (pipelines/live-detector.sh uses it), each write is
synced to disk and FILE then records how far each Kafka partition is
written; `kafka-tail --ack-file FILE` commits no further, so a message in
flight between the stages when one of them dies is read again.

Exit status: 0 on success, 1 if an input could not be read, a line was not a
record or an output file could not be written, 2 on bad usage or configuration.";

/// Write scored records to the detector's output files and print anomalies.
#[derive(Parser, Debug)]
#[command(name = "pf-sink", version, after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Directory for the output files [default: paths.output_dir].
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Do not print anomalies on stdout.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Activity counters for the status command, rewritten atomically every
    /// few seconds [default: paths.state_dir/detector-stats.json]; `-` for none.
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
    /// After each write of the output files, sync them to disk and record in
    /// FILE how far each Kafka partition is written, for `kafka-tail
    /// --ack-file FILE` to commit no further.
    #[arg(long, value_name = "FILE")]
    ack_file: Option<PathBuf>,
    /// Keep the open incidents in FILE across restarts (rewritten
    /// atomically); without it, incidents start afresh each run.
    #[arg(long, value_name = "FILE")]
    incident_state: Option<PathBuf>,
    /// At the end of the input, close every open incident (for replays of
    /// finished logs; the live detector keeps them open across restarts).
    #[arg(long)]
    close_incidents: bool,
    /// Print one line per anomalous record instead of one per incident event.
    #[arg(long)]
    every_anomaly: bool,
}

/// Write the output files once this much is buffered, even if input never pauses.
const FLUSH_AT: usize = 256 * 1024;
/// While input never pauses, acknowledge at most this often (each one syncs the files).
const ACK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

const FILE_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;

/// The output files, opened on first use.
struct Files {
    dir: PathBuf,
    open: BTreeMap<String, AppendFile>,
}

impl Files {
    fn get(&mut self, name: &str) -> io::Result<&mut AppendFile> {
        if !self.open.contains_key(name) {
            let path = self.dir.join(name);
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
            self.open.insert(name.to_string(), file);
        }
        Ok(self.open.get_mut(name).expect("inserted above"))
    }

    fn flush(&mut self) -> io::Result<()> {
        for file in self.open.values_mut() {
            file.flush()
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.path().display())))?;
        }
        Ok(())
    }

    fn buffered(&mut self) -> usize {
        self.open.values_mut().map(|f| f.buf().len()).sum()
    }

    fn sync(&self) -> io::Result<()> {
        for file in self.open.values() {
            file.sync()
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.path().display())))?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Counts {
    records: u64,
    anomalies: u64,
    by_severity: BTreeMap<String, u64>,
    unscorable: u64,
    /// (minute since the epoch, records, anomalies) for the last hour.
    minutes: std::collections::VecDeque<(u64, u64, u64)>,
}

impl Counts {
    fn note(&mut self, anomaly: bool) {
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
    fn stats_json(&self) -> String {
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
            self.records,
            self.anomalies,
            minutes.join(",")
        )
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How often the stats file is rewritten while records flow.
const STATS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    let args = Args::parse();
    pf_cli::run("pf-sink", || {
        let config = args.common.load_config().map_err(Fatal::usage)?;
        let dir = args
            .output_dir
            .clone()
            .unwrap_or(config.paths.output_dir.clone());
        create_dir(&dir)
            .with_context(|| format!("cannot create the output directory {}", dir.display()))
            .map_err(Fatal::usage)?;
        let stats_file = match &args.stats {
            Some(p) if p.as_os_str() == "-" => None,
            Some(p) => Some(p.clone()),
            None => Some(config.paths.state_dir.join("detector-stats.json")),
        };
        if let Some(dir) = stats_file.as_deref().and_then(Path::parent) {
            if !dir.as_os_str().is_empty() {
                create_dir(dir)
                    .with_context(|| format!("cannot create the state directory {}", dir.display()))
                    .map_err(Fatal::usage)?;
            }
        }
        let mut stats_written = std::time::Instant::now();
        let mut files = Files {
            dir: dir.clone(),
            open: BTreeMap::new(),
        };
        // Every output file exists from the start, empty on a quiet day, so
        // `tail -F`, logrotate and file checks find it.
        let at_start = [
            "all_detections.jsonl".to_string(),
            "anomalies.jsonl".into(),
            INCIDENTS_FILE.into(),
        ]
        .into_iter()
        .chain(config.kafka.topics.iter().map(|t| topic_file(t)));
        for name in at_start {
            files.get(&name).map_err(anyhow::Error::from)?;
        }
        let policy = Policy {
            gap_micros: (config.incidents.gap_minutes * 60e6) as i64,
            samples: config.incidents.samples,
        };
        let tracker = std::cell::RefCell::new(
            load_incidents(args.incident_state.as_deref(), policy).map_err(Fatal::usage)?,
        );
        let incidents_saved = std::cell::Cell::new(std::time::Instant::now());
        let alerts = !args.quiet;
        let colour = alerts && io::stdout().is_terminal();
        let counts = std::cell::RefCell::new(Counts::default());
        let acked_at = std::cell::Cell::new(std::time::Instant::now());
        // Once a write failed, nothing more is written or acknowledged.
        let failed = std::cell::Cell::new(false);
        // (positions, changed since last written)
        let acks = std::cell::RefCell::new((Acks::default(), false));
        let mut out = Output::default();
        let mut errors = LineErrors::new("pf-sink");
        let files_cell = std::cell::RefCell::new(&mut files);
        let stats = pf_cli::for_each_record_idle(
            "pf-sink",
            &args.common.files,
            &mut out,
            &mut errors,
            |text, number, origin, alert_buf, errors| {
                let record: Map<String, Value> = match serde_json::from_str(text) {
                    Ok(r) => r,
                    Err(e) => return errors.report(origin, number, pf_cli::not_a_record(&e, text)),
                };
                if let Some(source) = record.get("source") {
                    let mut acks = acks.borrow_mut();
                    if acks.0.note_source(source) {
                        acks.1 = true;
                    }
                }
                let mut files = files_cell.borrow_mut();
                let events = tracker
                    .borrow_mut()
                    .observe(&Observation::from_record(&record));
                let mut written = write_incidents(
                    &events,
                    &mut files,
                    (alerts && !args.every_anomaly).then_some((&mut *alert_buf, colour)),
                );
                if written.is_ok() {
                    written = route(
                        text,
                        record,
                        &mut files,
                        &mut counts.borrow_mut(),
                        (alerts && args.every_anomaly).then_some((alert_buf, colour)),
                    );
                }
                // Input that never pauses still gets written (and acknowledged).
                if written.is_ok() && files.buffered() >= FLUSH_AT {
                    written = files.flush();
                    if let (Ok(()), Some(path)) = (&written, &args.ack_file) {
                        if acked_at.get().elapsed() >= ACK_EVERY {
                            acked_at.set(std::time::Instant::now());
                            written = acknowledge(path, &files, &mut acks.borrow_mut());
                        }
                    }
                }
                if let Err(e) = written {
                    stop_on_write_error(&e);
                }
            },
            |_| {
                if let Err(e) = files_cell.borrow_mut().flush() {
                    failed.set(true);
                    return Err(e);
                }
                if let Some(path) = &args.ack_file {
                    acknowledge(path, &files_cell.borrow(), &mut acks.borrow_mut())?;
                }
                if let Some(path) = &args.incident_state {
                    if incidents_saved.get().elapsed() >= ACK_EVERY {
                        incidents_saved.set(std::time::Instant::now());
                        save_incidents(path, &tracker.borrow(), false)?;
                    }
                }
                if let Some(path) = &stats_file {
                    if stats_written.elapsed() >= STATS_EVERY {
                        stats_written = std::time::Instant::now();
                        write_stats(path, &counts.borrow());
                    }
                }
                Ok(())
            },
        );
        if let Some(path) = &stats_file {
            write_stats(path, &counts.borrow());
        }
        let counts = counts.into_inner();
        let mut tracker = tracker.into_inner();
        let mut flushed = Ok(());
        if args.close_incidents && stats.is_ok() && !failed.get() {
            let events = tracker.close_all();
            flushed = write_incidents(
                &events,
                &mut files_cell.borrow_mut(),
                (alerts && !args.every_anomaly).then_some((out.buf(), colour)),
            );
        }
        let mut flushed = flushed.and_then(|()| files_cell.borrow_mut().flush());
        if let (Some(path), Ok(()), false) = (&args.ack_file, &flushed, failed.get()) {
            flushed = acknowledge(path, &files_cell.borrow(), &mut acks.borrow_mut());
        }
        if let (Some(path), Ok(()), false) = (&args.incident_state, &flushed, failed.get()) {
            flushed = save_incidents(path, &tracker, true);
        }
        out.flush().context("cannot write the alert lines")?;
        let stats = stats?;
        flushed.context("cannot write the output files")?;
        errors.summary("were not records and were skipped");
        eprintln!(
            "pf-sink: {} records, {} anomalies{}{}; files in {}",
            counts.records,
            counts.anomalies,
            if counts.by_severity.is_empty() {
                String::new()
            } else {
                let parts: Vec<String> = counts
                    .by_severity
                    .iter()
                    .map(|(s, n)| format!("{n} {s}"))
                    .collect();
                format!(" ({})", parts.join(", "))
            },
            if counts.unscorable > 0 {
                format!(", {} unscorable", counts.unscorable)
            } else {
                String::new()
            },
            dir.display()
        );
        Ok(if stats.unreadable > 0 || errors.count > 0 {
            EXIT_INPUT
        } else {
            EXIT_OK
        })
    })
}

const INCIDENTS_FILE: &str = "incidents.jsonl";

/// The saved open incidents, or none when there is no state file yet.
fn load_incidents(path: Option<&Path>, policy: Policy) -> anyhow::Result<Tracker> {
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
fn save_incidents(path: &Path, tracker: &Tracker, sync: bool) -> io::Result<()> {
    let json = tracker.to_json();
    let written = if sync {
        pf_record::atomic::write_private_atomically(path, json.as_bytes(), FILE_MODE)
    } else {
        pf_record::atomic::replace_unsynced(path, json.as_bytes(), FILE_MODE)
    };
    written.map_err(|e| io::Error::new(e.kind(), format!("cannot save {}: {e}", path.display())))
}

/// Appends incident events to incidents.jsonl and their alert lines.
fn write_incidents(
    events: &[IncidentEvent],
    files: &mut Files,
    alert: Option<(&mut Vec<u8>, bool)>,
) -> io::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let file = files.get(INCIDENTS_FILE)?;
    for event in events {
        push_line(file.buf(), &event.to_json().to_string());
    }
    if let Some((buf, colour)) = alert {
        for event in events {
            push_line(buf, &event.alert_line(colour));
        }
    }
    Ok(())
}

/// Ends pf-sink at once when an output file cannot be written: reading on
/// would only drop records. Nothing after the last acknowledgement is
/// acknowledged, so Kafka delivers it again; a part-written line was cut back.
fn stop_on_write_error(e: &io::Error) -> ! {
    eprintln!("pf-sink: error: cannot write the output files: {e}");
    std::process::exit(i32::from(EXIT_INPUT));
}

/// Syncs the output files and records the written Kafka positions, if
/// they moved: what kafka-tail may commit.
fn acknowledge(path: &Path, files: &Files, acks: &mut (Acks, bool)) -> io::Result<()> {
    if !acks.1 {
        return Ok(());
    }
    files.sync()?;
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

/// The stats are a convenience for `status.sh`: a failure is reported, not fatal.
fn write_stats(path: &Path, counts: &Counts) {
    if let Err(e) = pf_record::atomic::write_atomically(path, counts.stats_json().as_bytes()) {
        eprintln!("pf-sink: cannot write {}: {e}", path.display());
    }
}

fn create_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Appends one record to its files and, for an anomaly, an alert line.
fn route(
    text: &str,
    mut record: Map<String, Value>,
    files: &mut Files,
    counts: &mut Counts,
    alert: Option<(&mut Vec<u8>, bool)>,
) -> io::Result<()> {
    counts.records += 1;
    let detection = record.get("detection");
    let is_anomaly = detection
        .and_then(|d| d.get("is_anomaly"))
        .and_then(Value::as_bool)
        == Some(true);
    counts.note(is_anomaly);
    if detection.is_some_and(|d| d.get("error").is_some()) {
        counts.unscorable += 1;
    }
    push_line(files.get("all_detections.jsonl")?.buf(), text);
    if is_anomaly {
        counts.anomalies += 1;
        let severity = detection
            .and_then(|d| d.get("severity"))
            .and_then(Value::as_str)
            .unwrap_or("low")
            .to_string();
        *counts.by_severity.entry(severity).or_default() += 1;
        push_line(files.get("anomalies.jsonl")?.buf(), text);
        if let Some((buf, colour)) = alert {
            write_alert(buf, &record, colour);
        }
    }
    let stream = stream_file(&record);
    record.remove("features");
    record.remove("detection");
    let parsed = serde_json::to_string(&record).map_err(io::Error::other)?;
    push_line(files.get(&stream)?.buf(), &parsed);
    Ok(())
}

fn push_line(buf: &mut Vec<u8>, text: &str) {
    buf.extend_from_slice(text.as_bytes());
    buf.push(b'\n');
}

/// `<topic>_logs.json`, or for records read from files the old system's
/// split: logins (Dovecot, Roundcube) apart from Postfix.
fn stream_file(record: &Map<String, Value>) -> String {
    let topic = record
        .get("source")
        .and_then(|s| s.get("topic"))
        .and_then(Value::as_str);
    match topic {
        Some(t) if !t.is_empty() => topic_file(t),
        _ => match record.get("program").and_then(Value::as_str) {
            Some("dovecot" | "roundcube") => topic_file("mail_login"),
            _ => topic_file("postfix"),
        },
    }
}

/// `<topic>_logs.json`, with anything but letters, digits, `-` and `_` as `_`.
fn topic_file(topic: &str) -> String {
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
fn write_alert(buf: &mut Vec<u8>, record: &Map<String, Value>, colour: bool) {
    use std::fmt::Write as _;
    let detection = record.get("detection");
    let severity = detection
        .and_then(|d| d.get("severity"))
        .and_then(Value::as_str)
        .unwrap_or("low");
    let score = detection
        .and_then(|d| d.get("score"))
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN);
    let text_of = |key: &str| record.get(key).and_then(Value::as_str).unwrap_or("-");
    let mut line = String::new();
    let (on, off) = match (colour, severity) {
        (true, "high") => ("\x1b[1;31m", "\x1b[0m"),
        (true, "medium") => ("\x1b[33m", "\x1b[0m"),
        (true, _) => ("\x1b[36m", "\x1b[0m"),
        (false, _) => ("", ""),
    };
    let _ = write!(line, "{on}{:<6}{off} ", severity.to_uppercase());
    // How rare, in words ("1 in 250,000"), when the model is calibrated.
    if let Some(rarity) = detection
        .and_then(|d| d.get("rarity"))
        .and_then(Value::as_f64)
    {
        let _ = write!(line, "{:<14} ", pf_record::rarity::describe(rarity));
    }
    let _ = write!(
        line,
        "{score:>8.4}  {}  {}  ",
        text_of("ts"),
        text_of("kind")
    );
    if let Some(top) = detection
        .and_then(|d| d.get("top_features"))
        .and_then(Value::as_array)
    {
        let parts: Vec<String> = top
            .iter()
            .map(|f| {
                let name = f.get("feature").and_then(Value::as_str).unwrap_or("?");
                let value = match f.get("value") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => "null".into(),
                };
                let contribution = f
                    .get("contribution")
                    .and_then(Value::as_f64)
                    .unwrap_or(f64::NAN);
                format!("{name}={value} ({contribution:+.3})")
            })
            .collect();
        line.push_str(&parts.join(", "));
    }
    line.push_str("  | ");
    // The raw line is attacker-controlled: no terminal control characters.
    line.extend(
        text_of("raw")
            .chars()
            .map(|c| if c.is_control() { '?' } else { c }),
    );
    line.push('\n');
    buf.extend_from_slice(line.as_bytes());
}
