use anyhow::Context;
use clap::Parser;
use pf_cli::{CommonArgs, Fatal, LineErrors, Output, EXIT_INPUT, EXIT_OK};
use pf_incident::{Change, Policy};
use pf_record::acks::Acks;
use pf_record::view::ScoredView;
use pf_sink::{
    acknowledge, create_dir, load_incidents, route, save_incidents, topic_file, write_incidents,
    write_stats, Counts, Deliveries, Files, ACK_EVERY, FLUSH_AT, INCIDENTS_FILE, INCIDENTS_LOG,
    STATS_EVERY,
};
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
                         (more severe than before), closed, member (an
                         address of a campaign reported for a ban) and
                         resumed (back after a pause, for a ban's renewal)
  incidents.log          the same events as syslog-style lines
                         (`<time> <host> postfix-anomaly[pid]: opened high
                         client=203.0.113.7 kind=... id=...`), which
                         contrib/fail2ban's filter reads; delivery.syslog
                         sends the same line to the syslog socket

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
    /// Write the files only: no syslog, webhook, mail or /metrics (a replay
    /// uses it, so old incidents never reach the live receivers or spools).
    #[arg(long)]
    no_deliveries: bool,
    /// The incident events printed on stdout (all are written to the files):
    /// `closed` alone gives one line per incident, as it ended.
    #[arg(
        long,
        value_name = "EVENTS",
        value_delimiter = ',',
        default_value = "opened,escalated,closed",
        value_parser = parse_change
    )]
    print: Vec<Change>,
}

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
        let mut files = Files::new(dir.clone());
        // Every output file exists from the start, empty on a quiet day, so
        // `tail -F`, logrotate and file checks find it.
        let at_start = [
            "all_detections.jsonl".to_string(),
            "anomalies.jsonl".into(),
            INCIDENTS_FILE.into(),
            INCIDENTS_LOG.into(),
        ]
        .into_iter()
        .chain(config.kafka.topics.iter().map(|t| topic_file(t)));
        for name in at_start {
            files.get(&name).map_err(anyhow::Error::from)?;
        }
        let policy = Policy {
            gap_micros: (config.incidents.gap_minutes * 60e6) as i64,
            samples: config.incidents.samples,
            campaign_after: config.incidents.campaign_after,
            hold_micros: (config.incidents.hold_seconds * 1e6) as i64,
            max_gap_micros: (config.incidents.max_gap_minutes * 60e6) as i64,
        };
        let tracker = std::cell::RefCell::new(
            load_incidents(args.incident_state.as_deref(), policy).map_err(Fatal::usage)?,
        );
        let deliveries = Deliveries::new(&config, !args.no_deliveries).map_err(Fatal::usage)?;
        let metrics = match args.no_deliveries {
            true => None,
            false => pf_sink::metrics::start(&config, &deliveries).map_err(Fatal::usage)?,
        };
        let deliveries = std::cell::RefCell::new(deliveries);
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
        let rejected = std::cell::Cell::new(0u64);
        let files_cell = std::cell::RefCell::new(&mut files);
        // Since when input has been idle: the first idle call after records
        // notes the time (no clock read per record).
        let idle_since = std::cell::Cell::new(std::time::Instant::now());
        let records_came = std::cell::Cell::new(false);
        // The incident state changed since it was last saved.
        let unsaved = std::cell::Cell::new(false);
        let stats = pf_cli::for_each_record_idle(
            "pf-sink",
            &args.common.files,
            &mut out,
            &mut errors,
            |text, number, origin, alert_buf, errors| {
                records_came.set(true);
                unsaved.set(true);
                let read = pf_cli::read_members(text).and_then(|members| {
                    let record = ScoredView::from_members(&members).and_then(scored)?;
                    Ok((members, record))
                });
                let (members, record) = match read {
                    Ok(read) => read,
                    Err(problem) => {
                        errors.report(origin, number, problem);
                        rejected.set(errors.count);
                        return;
                    }
                };
                if let Some(source) = &record.source {
                    let mut acks = acks.borrow_mut();
                    if acks.0.note_source(source) {
                        acks.1 = true;
                    }
                }
                let mut files = files_cell.borrow_mut();
                let events = tracker.borrow_mut().observe_record(&record);
                let mut written = write_incidents(
                    &events,
                    &mut files,
                    &mut deliveries.borrow_mut(),
                    &mut counts.borrow_mut(),
                    (alerts && !args.every_anomaly).then_some((
                        &mut *alert_buf,
                        colour,
                        &args.print[..],
                    )),
                );
                if written.is_ok() {
                    written = route(
                        text,
                        &members,
                        &record,
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
                            written = acknowledge(
                                path,
                                &files,
                                &deliveries.borrow(),
                                &mut acks.borrow_mut(),
                                || save_incidents_before_ack(&args, &tracker.borrow()),
                            );
                        }
                    }
                }
                if let Err(e) = written {
                    stop_on_write_error(&e);
                }
            },
            |alert_buf| {
                if records_came.replace(false) {
                    idle_since.set(std::time::Instant::now());
                }
                let idle_for = idle_since.get().elapsed().as_micros();
                let held = tracker
                    .borrow_mut()
                    .release_when_idle(i64::try_from(idle_for).unwrap_or(i64::MAX));
                if !held.is_empty() {
                    unsaved.set(true);
                }
                let written = write_incidents(
                    &held,
                    &mut files_cell.borrow_mut(),
                    &mut deliveries.borrow_mut(),
                    &mut counts.borrow_mut(),
                    (alerts && !args.every_anomaly).then_some((alert_buf, colour, &args.print[..])),
                );
                let written = written.and_then(|()| files_cell.borrow_mut().flush());
                if let Err(e) = written {
                    failed.set(true);
                    return Err(e);
                }
                if let Some(path) = &args.ack_file {
                    acknowledge(
                        path,
                        &files_cell.borrow(),
                        &deliveries.borrow(),
                        &mut acks.borrow_mut(),
                        || save_incidents_before_ack(&args, &tracker.borrow()),
                    )?;
                } else if let Some(path) = &args.incident_state {
                    if unsaved.get() && incidents_saved.get().elapsed() >= ACK_EVERY {
                        incidents_saved.set(std::time::Instant::now());
                        unsaved.set(false);
                        save_incidents(path, &tracker.borrow(), false)?;
                    }
                }
                pf_sink::metrics::publish(
                    &metrics,
                    &counts.borrow().totals,
                    tracker.borrow().open_count(),
                    rejected.get(),
                );
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
        let mut counts = counts.into_inner();
        let mut tracker = tracker.into_inner();
        let mut flushed = Ok(());
        if args.close_incidents && stats.is_ok() && !failed.get() {
            let events = tracker.close_all();
            flushed = write_incidents(
                &events,
                &mut files_cell.borrow_mut(),
                &mut deliveries.borrow_mut(),
                &mut counts,
                (alerts && !args.every_anomaly).then_some((out.buf(), colour, &args.print[..])),
            );
        }
        pf_sink::metrics::publish(&metrics, &counts.totals, tracker.open_count(), errors.count);
        // Files and spools on disk, then the incident state, then the positions.
        let mut flushed = flushed.and_then(|()| files_cell.borrow_mut().flush());
        if let (Ok(()), false) = (&flushed, failed.get()) {
            flushed = files_cell
                .borrow()
                .sync()
                .and_then(|()| deliveries.borrow().sync());
        }
        if let (Some(path), Ok(()), false) = (&args.incident_state, &flushed, failed.get()) {
            flushed = save_incidents(path, &tracker, true);
        }
        if let (Some(path), Ok(()), false) = (&args.ack_file, &flushed, failed.get()) {
            flushed = acknowledge(
                path,
                &files_cell.borrow(),
                &deliveries.borrow(),
                &mut acks.borrow_mut(),
                || Ok(()),
            );
        }
        out.flush().context("cannot write the alert lines")?;
        if flushed.is_ok() && !failed.get() {
            pf_sink::refresh_report(&dir, &counts.timeline);
        }
        let deliveries = deliveries.into_inner();
        if flushed.is_ok() && !failed.get() {
            deliveries.drain(std::time::Duration::from_secs_f64(
                config.delivery.drain_seconds,
            ));
        }
        let stats = stats?;
        flushed.context("cannot write the output files")?;
        errors.summary("were not records and were skipped");
        eprintln!(
            "pf-sink: {} records, {} anomalies{}{}; files in {}{}",
            counts.totals.records,
            counts.anomalies(),
            if counts.totals.anomalies.is_empty() {
                String::new()
            } else {
                let parts: Vec<String> = counts
                    .totals
                    .anomalies
                    .iter()
                    .map(|(s, n)| format!("{n} {s}"))
                    .collect();
                format!(" ({})", parts.join(", "))
            },
            if counts.totals.unscorable > 0 {
                format!(", {} unscorable", counts.totals.unscorable)
            } else {
                String::new()
            },
            dir.display(),
            deliveries.summary()
        );
        Ok(if stats.unreadable > 0 || errors.count > 0 {
            EXIT_INPUT
        } else {
            EXIT_OK
        })
    })
}

/// pf-sink takes pf-score's output: a record without its `detection`
/// object was never scored (and its other fields were never checked).
fn scored(record: ScoredView<'_>) -> Result<ScoredView<'_>, String> {
    match record.detection {
        Some(_) => Ok(record),
        None => Err(
            "not a scored record: no `detection` object (pf-sink takes what \
                     pf-score writes: ... | pf-score | pf-sink)"
                .into(),
        ),
    }
}

fn parse_change(word: &str) -> Result<Change, String> {
    match word {
        "opened" => Ok(Change::Opened),
        "escalated" => Ok(Change::Escalated),
        "closed" => Ok(Change::Closed),
        "member" => Ok(Change::Member),
        "resumed" => Ok(Change::Resumed),
        _ => Err(format!(
            "{word:?}: the events are opened, escalated, closed, member and resumed"
        )),
    }
}

/// The incident state is saved (synced) before Kafka positions are
/// acknowledged: whatever Kafka will not deliver again is in the state, so a
/// restart cannot open an incident a second time.
fn save_incidents_before_ack(args: &Args, tracker: &pf_incident::Tracker) -> io::Result<()> {
    match &args.incident_state {
        Some(path) => save_incidents(path, tracker, true),
        None => Ok(()),
    }
}

/// Ends pf-sink at once when an output file cannot be written: reading on
/// would only drop records. Nothing after the last acknowledgement is
/// acknowledged, so Kafka delivers it again; a part-written line was cut back.
fn stop_on_write_error(e: &io::Error) -> ! {
    eprintln!("pf-sink: error: cannot write the output files: {e}");
    std::process::exit(i32::from(EXIT_INPUT));
}
