//! A destination's queue on disk, and the thread that empties it.
//!
//! pf-sink appends each incident event for a destination to
//! `<spool_dir>/<name>.jsonl` (an `incidents.jsonl` line) and goes on at
//! once; the destination's own thread sends what is there, oldest first,
//! and records in `<name>.offset` how far it got. A receiver that is down
//! only makes the file grow: retries wait 1 s, then twice as long each
//! time, up to the destination's maximum, and whatever is in the file when
//! pf-sink stops is sent on its next start. Once everything is sent the
//! file is emptied. pf-sink syncs the spools before it acknowledges Kafka
//! positions, so an event Kafka will not deliver again is on disk.
//!
//! Delivery is at least once: an event sent just before a crash, whose
//! offset was not yet written, is sent again (webhook receivers deduplicate
//! by fingerprint). A batch the receiver refuses for good (HTTP 400, an
//! unknown recipient) is moved to `<name>.rejected.jsonl` and reported, so
//! one bad event cannot hold up the rest and nothing is thrown away.

use pf_incident::IncidentEvent;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const FILE_MODE: u32 = 0o640;
/// Read at most this much of the spool per batch.
const READ_AT_MOST: u64 = 4 << 20;

/// Why a delivery did not go through.
#[derive(Debug)]
pub enum Failure {
    /// Worth trying again later: the receiver is down, slow or overloaded.
    Retry(String),
    /// The receiver refused these events for good.
    Reject(String),
}

/// Somewhere incident events are sent.
pub trait Destination: Send + 'static {
    /// `webhook`, `mail`: the spool's file name and the word in messages.
    fn name(&self) -> &str;
    /// How many events from the front of `events` go in one delivery (at least one).
    fn batch_len(&self, events: &[IncidentEvent]) -> usize {
        events.len()
    }
    /// Sends these events (as [`Destination::batch_len`] chose them), all or none.
    fn deliver(&mut self, events: &[IncidentEvent]) -> Result<(), Failure>;
    fn batch_max(&self) -> usize;
    /// Least time between two deliveries (the mail rate limit).
    fn min_interval(&self) -> Duration {
        Duration::ZERO
    }
    fn retry_max(&self) -> Duration;
}

/// Which incident events a destination gets.
#[derive(Debug, Clone, Copy)]
pub struct Filter {
    /// [`pf_incident::severity_rank`] of the least severe incident sent.
    pub min_severity: u8,
    /// Whether `closed` events are sent too (the webhook's "resolved").
    pub closed: bool,
}

impl Filter {
    pub fn wants(&self, event: &IncidentEvent) -> bool {
        pf_incident::severity_rank(&event.incident.severity) >= self.min_severity
            && !matches!(
                event.change,
                pf_incident::Change::Member | pf_incident::Change::Resumed
            )
            && (self.closed || event.change != pf_incident::Change::Closed)
    }
}

/// What a spool did since it was opened; read by pf-sink's summary and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events delivered.
    pub sent: AtomicU64,
    /// Delivery attempts that failed and will be retried.
    pub failed: AtomicU64,
    /// Events the receiver refused, moved to the `.rejected.jsonl` file.
    pub rejected: AtomicU64,
}

struct State {
    file: File,
    len: u64,
    offset: u64,
    /// Events between `offset` and `len`.
    queued: u64,
    last_sent: Option<SystemTime>,
    stop: bool,
}

struct Shared {
    name: String,
    dir: PathBuf,
    state: Mutex<State>,
    changed: Condvar,
    counters: Counters,
}

/// One destination's spool and its delivery thread.
pub struct Spool {
    shared: Arc<Shared>,
    filter: Filter,
    worker: Option<JoinHandle<()>>,
}

impl Spool {
    /// Opens (or creates) the destination's spool in `dir` and starts its thread.
    pub fn start<D: Destination>(dir: &Path, filter: Filter, destination: D) -> io::Result<Spool> {
        let name = destination.name().to_string();
        let state = open_state(dir, &name)?;
        let shared = Arc::new(Shared {
            name,
            dir: dir.to_path_buf(),
            state: Mutex::new(state),
            changed: Condvar::new(),
            counters: Counters::default(),
        });
        let worker = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("deliver-{}", shared.name))
                .spawn(move || deliver_forever(&shared, destination))?
        };
        Ok(Spool {
            shared,
            filter,
            worker: Some(worker),
        })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Events waiting to be sent.
    pub fn queued(&self) -> u64 {
        self.lock().queued
    }

    /// A handle on the counts for another thread (the metrics endpoint).
    pub fn monitor(&self) -> Monitor {
        Monitor(Arc::clone(&self.shared))
    }

    /// Appends the event if the destination wants it, and wakes the thread.
    pub fn push(&self, event: &IncidentEvent) -> io::Result<()> {
        if !self.filter.wants(event) {
            return Ok(());
        }
        let mut line = event.to_json().to_string();
        line.push('\n');
        let mut state = self.lock();
        // One write of a whole line; a short write would leave the rest.
        if let Err(e) = state.file.write_all(line.as_bytes()) {
            let len = state.len;
            let _ = state.file.set_len(len);
            return Err(self.error(e, "cannot append to"));
        }
        state.len += line.len() as u64;
        state.queued += 1;
        drop(state);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Makes what was pushed durable (before Kafka positions are acknowledged).
    pub fn sync(&self) -> io::Result<()> {
        let state = self.lock();
        state
            .file
            .sync_data()
            .map_err(|e| self.error(e, "cannot sync"))
    }

    /// Waits until everything is sent or `limit` has passed; true when empty.
    pub fn drain(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut state = self.lock();
        while state.queued > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = match self.shared.changed.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    pub fn path(&self) -> PathBuf {
        spool_path(&self.shared.dir, &self.shared.name)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    fn error(&self, e: io::Error, what: &str) -> io::Error {
        io::Error::new(e.kind(), format!("{what} {}: {e}", self.path().display()))
    }
}

/// A spool's name and counts, readable from any thread.
#[derive(Clone)]
pub struct Monitor(Arc<Shared>);

impl Monitor {
    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn counters(&self) -> &Counters {
        &self.0.counters
    }

    pub fn queued(&self) -> u64 {
        lock(&self.0).queued
    }
}

impl Drop for Spool {
    /// Tells the thread to stop between attempts, without waiting for one in
    /// flight: a receiver that hangs must not hold pf-sink's exit, and what
    /// was not committed is sent again on the next start.
    fn drop(&mut self) {
        lock(&self.shared).stop = true;
        self.shared.changed.notify_all();
        if let Some(worker) = self.worker.take() {
            if worker.is_finished() {
                let _ = worker.join();
            }
        }
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

fn spool_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.jsonl"))
}

fn offset_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.offset"))
}

/// Holds an exclusive lock on the spool file for as long as `file` is
/// open: two pf-sinks delivering from one spool would send its events
/// twice and cut each other's offsets.
fn lock_file(file: &File, path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this process holds open.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        return Err(io::Error::new(
            e.kind(),
            format!(
                "{} is in use by another pf-sink (it holds the spool's lock): \
                 give each pf-sink instance its own delivery.spool_dir",
                path.display()
            ),
        ));
    }
    Err(io::Error::new(
        e.kind(),
        format!("cannot lock {}: {e}", path.display()),
    ))
}

fn open_state(dir: &Path, name: &str) -> io::Result<State> {
    use std::os::unix::fs::DirBuilderExt;
    let context =
        |e: io::Error, what: &Path| io::Error::new(e.kind(), format!("{}: {e}", what.display()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|e| context(e, dir))?;
    let path = spool_path(dir, name);
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(|e| context(e, &path))?;
    lock_file(&file, &path)?;
    let bytes = std::fs::read(&path).map_err(|e| context(e, &path))?;
    // A line cut short by a crash was never acknowledged: Kafka sends its
    // record again and the event is made again.
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole < bytes.len() {
        file.set_len(whole as u64).map_err(|e| context(e, &path))?;
    }
    let (mut offset, last_sent) = read_offset(&offset_path(dir, name));
    // The file was emptied after the offset was last written, or the
    // offset points into the middle of a line: start from a line start.
    if offset > whole as u64 || (offset > 0 && bytes[offset as usize - 1] != b'\n') {
        offset = 0;
    }
    let queued = bytes[offset as usize..whole]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64;
    Ok(State {
        file,
        len: whole as u64,
        offset,
        queued,
        last_sent,
        stop: false,
    })
}

/// `<offset> <unix seconds of the last delivery>`; missing or unreadable: the start.
fn read_offset(path: &Path) -> (u64, Option<SystemTime>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut words = text.split_whitespace();
    let offset = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let last_sent = words
        .next()
        .and_then(|w| w.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map(|s| UNIX_EPOCH + Duration::from_secs(s));
    (offset, last_sent)
}

fn write_offset(shared: &Shared, state: &State) {
    let seconds = state
        .last_sent
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let path = offset_path(&shared.dir, &shared.name);
    let text = format!("{} {seconds}\n", state.offset);
    if let Err(e) = pf_record::atomic::write_private_atomically(&path, text.as_bytes(), FILE_MODE) {
        // An old offset must not outlive the lines it counted (after the
        // file was emptied it could skip new ones): without it, everything
        // spooled is sent again, nothing skipped.
        let _ = std::fs::remove_file(&path);
        eprintln!(
            "pf-sink: {}: cannot write {}: {e} (delivered events may be sent again)",
            shared.name,
            path.display()
        );
    }
}

/// The next batch: up to `max` whole lines from the offset, each with its
/// size in the file.
fn read_batch(state: &State, max: usize) -> io::Result<Vec<(String, u64)>> {
    let want = (state.len - state.offset).min(READ_AT_MOST);
    let mut bytes = vec![0; want as usize];
    state.file.read_exact_at(&mut bytes, state.offset)?;
    let mut lines = Vec::new();
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if lines.len() == max || line.last() != Some(&b'\n') {
            break;
        }
        let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
        lines.push((text, line.len() as u64));
    }
    if lines.is_empty() && state.len > state.offset {
        // One line longer than a whole read: take it alone.
        let mut line = Vec::new();
        let mut at = state.offset;
        let mut chunk = vec![0; 1 << 16];
        while at < state.len {
            let n = state.file.read_at(&mut chunk, at)?;
            if n == 0 {
                break;
            }
            match chunk[..n].iter().position(|&b| b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&chunk[..i]);
                    break;
                }
                None => line.extend_from_slice(&chunk[..n]),
            }
            at += n as u64;
        }
        let size = line.len() as u64 + 1;
        lines.push((String::from_utf8_lossy(&line).into_owned(), size));
    }
    Ok(lines)
}

/// Takes `bytes` holding `events` off the front of the spool.
fn commit(shared: &Shared, bytes: u64, events: u64, delivered: bool) {
    let mut state = lock(shared);
    state.offset += bytes;
    state.queued = state.queued.saturating_sub(events);
    if delivered {
        state.last_sent = Some(SystemTime::now());
    }
    if state.offset >= state.len {
        // Emptied durably before the offset says 0, or a power cut brings
        // back the delivered lines with offset 0 (sent again, not lost).
        match state.file.set_len(0).and_then(|()| state.file.sync_data()) {
            Ok(()) => {
                state.len = 0;
                state.offset = 0;
                state.queued = 0;
            }
            Err(e) => eprintln!(
                "pf-sink: {}: cannot empty {}: {e}",
                shared.name,
                spool_path(&shared.dir, &shared.name).display()
            ),
        }
    }
    write_offset(shared, &state);
    drop(state);
    shared.changed.notify_all();
}

/// Waits for `time` unless told to stop; false when stopping.
fn pause(shared: &Shared, time: Duration) -> bool {
    let deadline = Instant::now() + time;
    let mut state = lock(shared);
    loop {
        if state.stop {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        state = match shared.changed.wait_timeout(state, deadline - now) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}

fn deliver_forever<D: Destination>(shared: &Shared, mut destination: D) {
    let mut backoff = Duration::from_secs(1);
    let mut failing_since: Option<Instant> = None;
    loop {
        let lines = {
            let mut state = lock(shared);
            loop {
                if state.stop {
                    return;
                }
                if state.offset < state.len {
                    break;
                }
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
            let since = state
                .last_sent
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or(Duration::MAX);
            let interval = destination.min_interval();
            if since < interval {
                drop(state);
                if !pause(shared, interval - since) {
                    return;
                }
                continue;
            }
            match read_batch(&state, destination.batch_max()) {
                Ok(batch) => batch,
                Err(e) => {
                    drop(state);
                    let path = spool_path(&shared.dir, &shared.name);
                    let problem = format!("cannot read {}: {e}", path.display());
                    if !retry_later(shared, &mut backoff, destination.retry_max(), &problem) {
                        return;
                    }
                    continue;
                }
            }
        };
        let mut events = Vec::with_capacity(lines.len());
        let mut sizes = Vec::with_capacity(lines.len());
        for (line, size) in &lines {
            match IncidentEvent::from_json(line) {
                Ok(event) => {
                    events.push(event);
                    sizes.push(*size);
                }
                Err(e) if events.is_empty() => {
                    // Not an event pf-sink wrote: set aside, not retried.
                    reject(
                        shared,
                        std::slice::from_ref(line),
                        &format!("not an incident event: {e}"),
                    );
                    commit(shared, *size, 1, false);
                    break;
                }
                // Sent first, then set aside on the next round.
                Err(_) => break,
            }
        }
        if events.is_empty() {
            continue;
        }
        let n = destination.batch_len(&events).clamp(1, events.len());
        events.truncate(n);
        sizes.truncate(n);
        match destination.deliver(&events) {
            Ok(()) => {
                let sent = events.len();
                shared
                    .counters
                    .sent
                    .fetch_add(sent as u64, Ordering::Relaxed);
                if let Some(since) = failing_since.take() {
                    eprintln!(
                        "pf-sink: {}: delivering again after {} s of failures",
                        shared.name,
                        since.elapsed().as_secs()
                    );
                }
                backoff = Duration::from_secs(1);
                commit(shared, sizes.iter().sum(), sent as u64, true);
            }
            Err(Failure::Reject(reason)) => {
                let refused: Vec<String> = lines[..events.len()]
                    .iter()
                    .map(|(l, _)| l.clone())
                    .collect();
                reject(shared, &refused, &reason);
                commit(shared, sizes.iter().sum(), events.len() as u64, false);
            }
            Err(Failure::Retry(reason)) => {
                shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                failing_since.get_or_insert_with(Instant::now);
                let queued = lock(shared).queued;
                let path = spool_path(&shared.dir, &shared.name);
                let problem = format!("{reason}; {queued} events wait in {}", path.display());
                if !retry_later(shared, &mut backoff, destination.retry_max(), &problem) {
                    return;
                }
            }
        }
    }
}

/// Says what failed, waits `backoff` (false: told to stop meanwhile) and
/// doubles it, up to `max`.
fn retry_later(shared: &Shared, backoff: &mut Duration, max: Duration, problem: &str) -> bool {
    eprintln!(
        "pf-sink: {}: {problem}; trying again in {} s",
        shared.name,
        backoff.as_secs()
    );
    let go_on = pause(shared, *backoff);
    *backoff = (*backoff * 2).min(max);
    go_on
}

/// Keeps refused events in `<name>.rejected.jsonl` and says so.
fn reject(shared: &Shared, lines: &[String], reason: &str) {
    shared
        .counters
        .rejected
        .fetch_add(lines.len() as u64, Ordering::Relaxed);
    let path = shared.dir.join(format!("{}.rejected.jsonl", shared.name));
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    let kept = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_data()));
    match kept {
        Ok(()) => eprintln!(
            "pf-sink: {}: the receiver refused {} events: {reason}; they are kept in {}",
            shared.name,
            lines.len(),
            path.display()
        ),
        Err(e) => eprintln!(
            "pf-sink: {}: the receiver refused {} events: {reason}; cannot keep them in {}: {e}",
            shared.name,
            lines.len(),
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_leave_out_the_events_for_bans() {
        let filter = Filter {
            min_severity: 0,
            closed: false,
        };
        let event = |change: &str| {
            IncidentEvent::from_json(&format!(
                r#"{{"event":"{change}","id":"1","entity":"client","key":"192.0.2.1","first_seen":"","last_seen":"","anomalies":1,"lines":1,"severity":"high","rarity":1.0,"top_features":[],"samples":[],"records":{{}}}}"#
            ))
            .unwrap()
        };
        let wanted: Vec<bool> = ["opened", "escalated", "closed", "member", "resumed"]
            .into_iter()
            .map(|c| filter.wants(&event(c)))
            .collect();
        assert_eq!(wanted, [true, true, false, false, false]);
    }

    #[test]
    fn a_spool_cut_short_by_a_crash_reopens_at_a_line_start() {
        let dir = std::env::temp_dir().join(format!("pf-alert-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x.jsonl"), "{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
        // Emptied after the offset was written: the offset is past the end.
        std::fs::write(dir.join("x.offset"), "99999 1700000000\n").unwrap();
        let state = open_state(&dir, "x").unwrap();
        assert_eq!((state.len, state.offset, state.queued), (16, 0, 2));
        assert_eq!(
            state.last_sent,
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(
            std::fs::read(dir.join("x.jsonl")).unwrap().len(),
            16,
            "the cut line is gone"
        );
        drop(state);
        // An offset inside a line starts over rather than send half a line.
        std::fs::write(dir.join("x.offset"), "3 0\n").unwrap();
        let state = open_state(&dir, "x").unwrap();
        assert_eq!((state.offset, state.queued, state.last_sent), (0, 2, None));
        drop(state);
        std::fs::write(dir.join("x.offset"), "8 0\n").unwrap();
        let state = open_state(&dir, "x").unwrap();
        assert_eq!((state.offset, state.queued), (8, 1));
        let batch = read_batch(&state, 10).unwrap();
        assert_eq!(batch, [("{\"b\":2}".to_string(), 8)]);
    }

    #[test]
    fn a_spool_in_use_is_refused_until_its_holder_lets_go() {
        let dir = std::env::temp_dir().join(format!("pf-alert-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let held = open_state(&dir, "webhook").unwrap();
        let err = open_state(&dir, "webhook")
            .err()
            .expect("a second holder is refused");
        let text = err.to_string();
        assert!(
            text.contains("webhook.jsonl is in use by another pf-sink"),
            "{text}"
        );
        assert!(text.contains("delivery.spool_dir"), "{text}");
        // Another destination's spool in the same directory is its own.
        assert!(open_state(&dir, "mail").is_ok());
        drop(held);
        assert!(open_state(&dir, "webhook").is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
