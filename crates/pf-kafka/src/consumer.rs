//! The consume loop and the rebalance handling that keep "committed ⇒ written".

use crate::settings::{Settings, StartAt};
use anyhow::{Context as _, Result};
use pf_record::acks::Acks;
use pf_record::envelope::Envelope;
use pf_record::Flag;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Write out once this much output is buffered, even if messages keep coming.
const CHUNK: usize = 64 * 1024;
/// How long one idle poll waits; also how quickly a stop request is seen.
const IDLE_WAIT: Duration = Duration::from_millis(200);
/// How long shutdown may wait for the final commit and for leaving the group.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);
/// Broker requests made by kafka-tail itself (offset lookups, commits).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the acknowledgement file is read while messages flow.
const ACK_POLL: Duration = Duration::from_millis(200);
/// How long shutdown waits for the last stage to acknowledge what was written.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// What one run did, for the summary line on stderr.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub messages: u64,
    /// Envelopes written (a message holding several lines gives several).
    pub lines: u64,
    /// Lines whose bytes were not UTF-8 and were repaired (and flagged).
    pub repaired: u64,
    /// Whether the final commit of the written lines' offsets succeeded.
    pub committed: bool,
    /// With an acknowledgement file: messages written but not acknowledged
    /// at exit, so not committed (they are read again next time).
    pub unacknowledged: u64,
}

type Partition = (String, i32);

/// Output buffer plus the offsets of what it holds.
struct Sink<W> {
    out: W,
    buf: Vec<u8>,
    /// Next offset per partition for the messages now in `buf`.
    /// (A handful of partitions: a list searched in place, so the hot
    /// path allocates nothing for a partition already present.)
    pending: Vec<(Partition, i64)>,
    /// Next offset per partition for messages already written out.
    written: BTreeMap<Partition, i64>,
    /// Set when a write failed: nothing more is written or stored.
    failed: Option<io::ErrorKind>,
    /// With `--ack-file`: commit only what the last stage acknowledged.
    acks: Option<Acknowledged>,
    summary: Summary,
}

/// What the pipeline's last stage has acknowledged (`pf-sink --ack-file`).
struct Acknowledged {
    path: PathBuf,
    /// First offset written per partition since it was assigned: an
    /// acknowledgement below it predates this assignment and is ignored.
    first: HashMap<Partition, i64>,
    /// Next offset per partition that is both written and acknowledged.
    acked: BTreeMap<Partition, i64>,
    read_at: Option<Instant>,
    reported: bool,
}

impl<W: Write> Sink<W> {
    /// Records that the buffer now holds lines up to `next` - 1 of a partition.
    fn note_pending(&mut self, topic: &str, partition: i32, next: i64) {
        if let Some(acks) = &mut self.acks {
            if !acks
                .first
                .keys()
                .any(|(t, p)| *p == partition && t == topic)
            {
                acks.first.insert((topic.to_string(), partition), next - 1);
            }
        }
        match self
            .pending
            .iter_mut()
            .find(|((t, p), _)| *p == partition && t == topic)
        {
            Some((_, n)) => *n = next,
            None => self.pending.push(((topic.to_string(), partition), next)),
        }
    }

    /// Writes the buffer out, then stores the offsets of what it held.
    fn flush<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> io::Result<()> {
        if let Some(kind) = self.failed {
            return Err(kind.into());
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self
            .out
            .write_all(&self.buf)
            .and_then(|()| self.out.flush());
        if let Err(e) = result {
            // Part of the buffer may be out; none of its offsets are stored,
            // so all of it is delivered again after a restart.
            self.failed = Some(e.kind());
            return Err(e);
        }
        self.buf.clear();
        let mut tpl = TopicPartitionList::with_capacity(self.pending.len());
        for ((topic, partition), next) in self.pending.drain(..) {
            // Fails only for a partition revoked meanwhile; its new owner
            // starts from the last commit, so at worst lines repeat.
            let _ = tpl.add_partition_offset(&topic, partition, Offset::Offset(next));
            self.written.insert((topic, partition), next);
        }
        if self.acks.is_none() {
            let _ = consumer.store_offsets(&tpl);
        }
        Ok(())
    }

    /// Reads the acknowledgement file (at most every [`ACK_POLL`] unless
    /// `now`) and stores, for auto-commit, the offsets that are both written
    /// and acknowledged.
    fn read_acks<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        now: bool,
        reporter: &Reporter,
    ) {
        let Some(state) = &mut self.acks else {
            return;
        };
        if !now && state.read_at.is_some_and(|t| t.elapsed() < ACK_POLL) {
            return;
        }
        state.read_at = Some(Instant::now());
        let acks = match Acks::read(&state.path) {
            Ok(Some(a)) => a,
            Ok(None) => return,
            Err(e) => {
                if !state.reported {
                    state.reported = true;
                    reporter.report(&format!(
                        "cannot read the acknowledgement file: {e}; committing nothing until it is readable"
                    ));
                }
                return;
            }
        };
        let mut tpl = TopicPartitionList::new();
        for (p, &written) in &self.written {
            let (Some(&next), Some(&first)) = (acks.next.get(p), state.first.get(p)) else {
                continue;
            };
            if next < first {
                continue;
            }
            let committable = next.min(written);
            if state.acked.get(p) != Some(&committable) {
                state.acked.insert(p.clone(), committable);
                let _ = tpl.add_partition_offset(&p.0, p.1, Offset::Offset(committable));
            }
        }
        if tpl.count() > 0 {
            let _ = consumer.store_offsets(&tpl);
        }
    }

    /// Messages written but not (yet) acknowledged.
    fn unacknowledged(&self) -> u64 {
        let Some(state) = &self.acks else {
            return 0;
        };
        self.written
            .iter()
            .map(|(p, &written)| {
                let from = state
                    .acked
                    .get(p)
                    .or(state.first.get(p))
                    .copied()
                    .unwrap_or(written);
                u64::try_from(written - from).unwrap_or(0)
            })
            .sum()
    }

    /// Forgets partitions that are no longer ours.
    fn release(&mut self, revoked: &HashSet<Partition>) {
        self.written.retain(|p, _| !revoked.contains(p));
        if let Some(state) = &mut self.acks {
            state.first.retain(|p, _| !revoked.contains(p));
            state.acked.retain(|p, _| !revoked.contains(p));
        }
    }

    /// Synchronously commits what has been written for `only` (or everything).
    fn commit<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        only: Option<&HashSet<Partition>>,
    ) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        let committable = match &self.acks {
            Some(state) => &state.acked,
            None => &self.written,
        };
        for ((topic, partition), next) in committable {
            if only.is_none_or(|set| set.contains(&(topic.clone(), *partition))) {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        consumer.commit(&tpl, CommitMode::Sync)
    }
}

/// Prints to stderr, each distinct message at most once a minute (a broker
/// that stays down is reported by librdkafka on every reconnect attempt),
/// with the number of repeats left out when it shows again.
struct Reporter {
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

const REPEAT_INTERVAL: Duration = Duration::from_secs(60);

impl Reporter {
    fn report(&self, message: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 256 {
            seen.clear();
        }
        match seen.get_mut(message) {
            Some((at, repeats)) if at.elapsed() < REPEAT_INTERVAL => *repeats += 1,
            Some((at, repeats)) => {
                eprintln!("kafka-tail: {message} (and {repeats} more times in the last minute)");
                *at = Instant::now();
                *repeats = 0;
            }
            None => {
                eprintln!("kafka-tail: {message}");
                seen.insert(message.to_string(), (Instant::now(), 0));
            }
        }
    }
}

struct TailContext<W> {
    sink: Mutex<Sink<W>>,
    start: StartAt,
    /// Partitions this process has been assigned before: `start` applies
    /// only the first time, so a rebalance never rewinds a partition.
    seen: Mutex<HashSet<Partition>>,
    reporter: Reporter,
}

impl<W> TailContext<W> {
    fn sink(&self) -> std::sync::MutexGuard<'_, Sink<W>> {
        self.sink.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<W: Write + Send> ClientContext for TailContext<W> {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        // Errors arrive through `error` as well; only worse is logged here.
        if (level as i32) <= (RDKafkaLogLevel::Critical as i32) {
            self.reporter
                .report(&format!("kafka {facility}: {message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka's "0/1 brokers are down" on the way out means none is.
        if reason.starts_with("0/") {
            return;
        }
        let hint = match error.rdkafka_error_code() {
            Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) => {
                "; still retrying (check -b / kafka.broker and that the broker is up)"
            }
            _ => "; still retrying",
        };
        self.reporter.report(&format!("kafka: {reason}{hint}"));
    }
}

impl<W: Write + Send> ConsumerContext for TailContext<W> {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.set_start_offsets(consumer, tpl);
                let assigned = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                match assigned {
                    Ok(()) => self.reporter.report(&format!("assigned {}", describe(tpl))),
                    Err(e) => self
                        .reporter
                        .report(&format!("could not take partitions {}: {e}", describe(tpl))),
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked: HashSet<Partition> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                {
                    let mut sink = self.sink();
                    // A failed write is reported by the main loop.
                    let _ = sink.flush(consumer);
                    sink.read_acks(consumer, true, &self.reporter);
                    if let Err(e) = sink.commit(consumer, Some(&revoked)) {
                        self.reporter.report(&format!(
                            "could not commit offsets of revoked partitions: {e}; their last lines will be read again by the next owner"
                        ));
                    }
                    sink.release(&revoked);
                }
                let _ = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                self.reporter.report(&format!("released {}", describe(tpl)));
            }
            other => {
                self.reporter
                    .report(&format!("rebalance failed: {other:?}; rejoining the group"));
                let _ = consumer.unassign();
            }
        }
    }
}

impl<W> TailContext<W> {
    fn set_start_offsets<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tpl: &mut TopicPartitionList,
    ) {
        if self.start == StartAt::Stored {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let assigned: Vec<Partition> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        // A partition given back to us after a rebalance continues from the
        // group's commit; if there is none (nothing was read from it yet),
        // the start rule applies again rather than auto.offset.reset.
        let returning: Vec<&Partition> = assigned.iter().filter(|p| seen.contains(*p)).collect();
        let mut uncommitted: HashSet<Partition> = HashSet::new();
        if !returning.is_empty() {
            let mut query = TopicPartitionList::new();
            for (topic, partition) in &returning {
                let _ = query.add_partition(topic, *partition);
            }
            if let Ok(committed) = consumer.committed_offsets(query, REQUEST_TIMEOUT) {
                for e in committed.elements() {
                    if !matches!(e.offset(), Offset::Offset(_)) {
                        uncommitted.insert((e.topic().to_string(), e.partition()));
                    }
                }
            }
        }
        let new: Vec<Partition> = assigned
            .into_iter()
            .filter(|p| seen.insert(p.clone()) || uncommitted.contains(p))
            .collect();
        let fixed = match self.start {
            StartAt::Stored => return,
            StartAt::Beginning => Offset::Beginning,
            StartAt::End => Offset::End,
            StartAt::Time(t) => {
                let mut query = TopicPartitionList::new();
                for (topic, partition) in &new {
                    let _ = query.add_partition_offset(
                        topic,
                        *partition,
                        Offset::Offset(t.timestamp_millis()),
                    );
                }
                match consumer.offsets_for_times(query, REQUEST_TIMEOUT) {
                    Ok(found) => {
                        for e in found.elements() {
                            // No message at or after the time: start at the end.
                            let offset = match e.offset() {
                                Offset::Offset(o) => Offset::Offset(o),
                                _ => Offset::End,
                            };
                            let _ = tpl.set_partition_offset(e.topic(), e.partition(), offset);
                        }
                    }
                    Err(e) => self.reporter.report(&format!(
                        "could not look up offsets for time {t}: {e}; starting from the stored offsets"
                    )),
                }
                return;
            }
        };
        for (topic, partition) in &new {
            let _ = tpl.set_partition_offset(topic, *partition, fixed);
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    let parts: Vec<String> = tpl
        .elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect();
    if parts.is_empty() {
        "no partitions".into()
    } else {
        parts.join(", ")
    }
}

/// Appends one envelope per line of `payload`, with the coordinates of
/// `message` (whose `value` and `flags` are replaced). A trailing newline
/// does not make an extra line; an empty payload is one empty line (never
/// dropped).
fn write_message_lines(
    buf: &mut Vec<u8>,
    message: Envelope<'_>,
    payload: &[u8],
    summary: &mut Summary,
) {
    let body = payload.strip_suffix(b"\n").unwrap_or(payload);
    let last = body.split(|&b| b == b'\n').count() - 1;
    for (i, piece) in body.split(|&b| b == b'\n').enumerate() {
        let mut flags: Vec<Flag> = Vec::new();
        let piece = match piece.strip_suffix(b"\r") {
            Some(p) => {
                flags.push(Flag::Crlf);
                p
            }
            None => piece,
        };
        let piece = if piece.len() > pf_record::MAX_LINE_BYTES {
            flags.push(Flag::Truncated);
            &piece[..pf_record::MAX_LINE_BYTES]
        } else {
            piece
        };
        let value = String::from_utf8_lossy(piece);
        if matches!(value, Cow::Owned(_)) {
            flags.push(Flag::InvalidUtf8);
            summary.repaired += 1;
        }
        Envelope {
            value: &value,
            flags: &flags,
            more_lines: i < last,
            ..message
        }
        .write(buf);
        summary.lines += 1;
    }
}

/// True when every assigned partition has been read to its end, judged
/// from the high watermark of the latest fetch response (kept by
/// librdkafka; no broker request, and no reliance on ListOffsets, which
/// some Kafka-compatible brokers answer loosely). Only asked after a poll
/// found nothing waiting, so a partition whose position is unset has had
/// nothing to deliver since it was fetched.
fn all_at_end<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> bool {
    let (Ok(assignment), Ok(position)) = (consumer.assignment(), consumer.position()) else {
        return false;
    };
    if assignment.count() == 0 {
        return false;
    }
    assignment.elements().iter().all(|e| {
        let Some(high) = fetched_high_watermark(consumer, e.topic(), e.partition()) else {
            return false;
        };
        match position
            .find_partition(e.topic(), e.partition())
            .map(|p| p.offset())
        {
            Some(Offset::Offset(p)) => p >= high,
            _ => true,
        }
    })
}

/// The high watermark librdkafka last saw in a fetch response, if any.
fn fetched_high_watermark<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime, the
    // topic is a NUL-terminated string that outlives the call, and the two
    // out-pointers are to live locals. The call only reads cached state.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

/// Consumes until `stop` is set, `max_messages` is reached, every partition
/// is at its end (`exit_at_end`), or writing to `out` fails. Offsets of
/// written lines are committed before returning.
pub fn tail<W: Write + Send + 'static>(
    settings: &Settings,
    out: W,
    stop: &AtomicBool,
) -> Result<Summary> {
    let mut config = ClientConfig::new();
    for (k, v) in settings.client_properties()? {
        config.set(k, v);
    }
    // Positions left by an earlier run say nothing about this one.
    if let Some(path) = &settings.ack_file {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot remove the old acknowledgement file {}",
                        path.display()
                    )
                })
            }
        }
    }
    let context = TailContext {
        sink: Mutex::new(Sink {
            out,
            buf: Vec::with_capacity(2 * CHUNK),
            pending: Vec::new(),
            written: BTreeMap::new(),
            failed: None,
            acks: settings.ack_file.as_ref().map(|path| Acknowledged {
                path: path.clone(),
                first: HashMap::new(),
                acked: BTreeMap::new(),
                read_at: None,
                reported: false,
            }),
            summary: Summary::default(),
        }),
        start: settings.start,
        seen: Mutex::new(HashSet::new()),
        reporter: Reporter {
            seen: Mutex::new(HashMap::new()),
        },
    };
    let consumer: BaseConsumer<TailContext<W>> = config
        .create_with_context(context)
        .context("invalid Kafka settings (check -X and kafka.properties)")?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .with_context(|| format!("cannot subscribe to {}", settings.topics.join(", ")))?;
    consumer.context().reporter.report(&format!(
        "consuming {} from {} as group {}",
        settings.topics.join(", "),
        settings.brokers,
        settings.group
    ));

    let outcome = consume(settings, &consumer, stop);
    // Committing and leaving the group wait for the broker; if it is gone,
    // librdkafka would wait forever. Everything consumed has been written
    // (or will be delivered again), so after a while give up and exit.
    std::thread::spawn(|| {
        std::thread::sleep(SHUTDOWN_LIMIT);
        eprintln!(
            "kafka-tail: the broker did not answer within {} s while committing and leaving the group; exiting (lines not committed will be read again)",
            SHUTDOWN_LIMIT.as_secs()
        );
        std::process::exit(0);
    });
    let sink_result = {
        let mut sink = consumer.context().sink();
        let flushed = sink.flush(&consumer);
        if sink.acks.is_some() {
            // The later stages drain what was just written; wait for the
            // last one to acknowledge it (not if it cannot: stdout failed).
            let waiting = Instant::now();
            loop {
                sink.read_acks(&consumer, true, &consumer.context().reporter);
                if flushed.is_err() || sink.unacknowledged() == 0 || waiting.elapsed() > ACK_WAIT {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            sink.summary.unacknowledged = sink.unacknowledged();
        }
        let committed = sink.commit(&consumer, None);
        if let Err(e) = &committed {
            consumer.context().reporter.report(&format!(
                "could not commit the final offsets: {e}; the last lines will be read again next time"
            ));
        }
        sink.summary.committed = committed.is_ok();
        flushed.map(|()| sink.summary)
    };
    // Dropping the consumer leaves the group (revoking, which commits again).
    let summary = consumer.context().sink().summary;
    drop(consumer);
    outcome?;
    sink_result.context("cannot write to stdout")?;
    Ok(summary)
}

fn consume<W: Write + Send>(
    settings: &Settings,
    consumer: &BaseConsumer<TailContext<W>>,
    stop: &AtomicBool,
) -> Result<()> {
    let context = consumer.context();
    let mut messages = 0u64;
    let mut idle_at_end = 0;
    let mut textfile = pf_metrics::Textfile::for_stage("kafka-tail");
    while !stop.load(Ordering::Relaxed) {
        // Take what is waiting; only when nothing is, write out and then wait.
        let polled = match consumer.poll(Duration::ZERO) {
            Some(r) => Some(r),
            None => {
                let mut sink = context.sink();
                sink.flush(consumer).context("cannot write to stdout")?;
                sink.read_acks(consumer, false, &context.reporter);
                let summary = sink.summary;
                drop(sink);
                if let Some(textfile) = &mut textfile {
                    textfile.maybe_write(false, || metric_samples(consumer, &summary));
                }
                consumer.poll(IDLE_WAIT)
            }
        };
        let polled_nothing = polled.is_none();
        match polled {
            None => {}
            Some(Ok(msg)) => {
                let mut sink = context.sink();
                if let Some(kind) = sink.failed {
                    return Err(io::Error::from(kind)).context("cannot write to stdout");
                }
                let Sink { buf, summary, .. } = &mut *sink;
                let key = msg.key().map(String::from_utf8_lossy);
                let coordinates = Envelope {
                    topic: msg.topic(),
                    partition: msg.partition(),
                    offset: msg.offset(),
                    timestamp_ms: msg.timestamp().to_millis(),
                    key: key.as_deref(),
                    value: "",
                    flags: &[],
                    more_lines: false,
                };
                write_message_lines(buf, coordinates, msg.payload().unwrap_or(b""), summary);
                summary.messages += 1;
                sink.note_pending(msg.topic(), msg.partition(), msg.offset() + 1);
                if sink.buf.len() >= CHUNK {
                    sink.flush(consumer).context("cannot write to stdout")?;
                    sink.read_acks(consumer, false, &context.reporter);
                }
                messages += 1;
                // A backlog never lets the queue run dry: report from here too.
                if messages & 4095 == 0 {
                    if let Some(textfile) = &mut textfile {
                        // `sink` is held here: its summary, not a second lock.
                        let summary = sink.summary;
                        textfile.maybe_write(false, || metric_samples(consumer, &summary));
                    }
                }
                if settings.max_messages.is_some_and(|max| messages >= max) {
                    return Ok(());
                }
            }
            // Connection trouble is reported by the error callback already.
            Some(Err(e)) if is_connection_error(&e) => {}
            Some(Err(e)) => context
                .reporter
                .report(&format!("kafka: {e}; still retrying")),
        }
        // Two idle polls in a row at the end, so that a fetch response being
        // handed over just as we look cannot end the run early.
        if settings.exit_at_end {
            if polled_nothing && all_at_end(consumer) {
                idle_at_end += 1;
                if idle_at_end >= 2 {
                    return Ok(());
                }
            } else {
                idle_at_end = 0;
            }
        }
        if let Some(kind) = context.sink().failed {
            return Err(io::Error::from(kind)).context("cannot write to stdout");
        }
    }
    Ok(())
}

/// kafka-tail's counts and each assigned partition's lag, for the metrics
/// textfile (from librdkafka's cached watermarks: no broker request).
fn metric_samples<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    summary: &Summary,
) -> pf_metrics::Samples {
    let mut samples = pf_metrics::stage_samples("kafka-tail", summary.messages, summary.lines, 0);
    let (Ok(assignment), Ok(position)) = (consumer.assignment(), consumer.position()) else {
        return samples;
    };
    for e in assignment.elements() {
        let Some(high) = fetched_high_watermark(consumer, e.topic(), e.partition()) else {
            continue;
        };
        let at = match position
            .find_partition(e.topic(), e.partition())
            .map(|p| p.offset())
        {
            Some(Offset::Offset(p)) => p,
            _ => continue,
        };
        let partition = e.partition().to_string();
        samples.add(
            "postfix_anomaly_kafka_consumer_lag_messages",
            &[("topic", e.topic()), ("partition", &partition)],
            (high - at).max(0) as f64,
        );
    }
    samples
}

fn is_connection_error(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::{AllBrokersDown, BrokerTransportFailure};
    matches!(
        e.rdkafka_error_code(),
        Some(AllBrokersDown | BrokerTransportFailure)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(payload: &[u8]) -> (Vec<serde_json::Value>, Summary) {
        let mut buf = Vec::new();
        let mut summary = Summary::default();
        let coordinates = Envelope {
            topic: "postfix",
            partition: 1,
            offset: 7,
            timestamp_ms: Some(1000),
            key: Some("k"),
            value: "",
            flags: &[],
            more_lines: false,
        };
        write_message_lines(&mut buf, coordinates, payload, &mut summary);
        let values = buf
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        (values, summary)
    }

    #[test]
    fn one_envelope_per_line_of_a_message() {
        let (v, s) = lines(b"first line\nsecond line\n");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0]["value"], "first line");
        assert_eq!(v[1]["value"], "second line");
        assert!(v.iter().all(|e| e["offset"] == 7 && e["partition"] == 1));
        assert_eq!(v[0]["more_lines"], true, "the message goes on");
        assert!(v[1].get("more_lines").is_none(), "its last line");
        assert_eq!(s.lines, 2);
    }

    #[test]
    fn a_huge_line_is_cut_and_flagged() {
        let mut payload = vec![b'x'; 3 << 20];
        payload.extend_from_slice(b"\nnext");
        let (v, _) = lines(&payload);
        assert_eq!(
            v[0]["value"].as_str().map(str::len),
            Some(pf_record::MAX_LINE_BYTES)
        );
        assert_eq!(v[0]["flags"], serde_json::json!(["truncated"]));
        assert_eq!(v[1]["value"], "next");
    }

    #[test]
    fn empty_message_is_one_empty_line_not_dropped() {
        let (v, _) = lines(b"");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["value"], "");
    }

    #[test]
    fn invalid_utf8_is_replaced_and_flagged() {
        let (v, s) = lines(b"bad \xff byte\r\n");
        assert_eq!(v[0]["value"], "bad \u{fffd} byte");
        assert_eq!(v[0]["flags"], serde_json::json!(["crlf", "invalid_utf8"]));
        assert_eq!(s.repaired, 1);
    }
}
