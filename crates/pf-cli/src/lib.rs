//! What every pf-* command does the same way, so the binaries stay thin:
//!
//! * inputs are file arguments, or stdin when there are none (`-` also means stdin);
//! * records go to stdout as NDJSON, buffered and flushed whenever input goes idle;
//! * diagnostics go to stderr prefixed with the tool name;
//! * exit codes: 0 success, 1 some input could not be read or written,
//!   2 bad usage or configuration. A closed stdout (`| head`) ends the tool quietly with 0.

use anyhow::Result;
use pf_config::Config;
pub use pf_record::Origin;
use pf_record::{Line, LineReader, MAX_RECORD_BYTES};
use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const EXIT_OK: u8 = 0;
pub const EXIT_INPUT: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// Flattened into every command that reads records: input files and the configuration file.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Input files; stdin when none is given (`-` also reads stdin).
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
}

impl CommonArgs {
    pub fn load_config(&self) -> Result<Config> {
        self.config.load()
    }
}

/// The configuration options alone, for commands without input files.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// Configuration file [default: config/config.yaml if present, else built-in defaults].
    #[arg(long = "config", value_name = "FILE", env = "PF_CONFIG")]
    pub path: Option<PathBuf>,
    /// Print the effective configuration as key=value lines (secrets hidden) and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl ConfigArg {
    /// Loads the configuration; with `--print-config`, prints it and exits
    /// (like `--help`), so scripts can read settings without parsing YAML.
    pub fn load(&self) -> Result<Config> {
        let config = Config::load(self.path.as_deref())?;
        if self.print_config {
            let mut out = io::stdout().lock();
            for line in config.to_lines() {
                let _ = writeln!(out, "{line}");
            }
            let _ = out.flush();
            std::process::exit(i32::from(EXIT_OK));
        }
        Ok(config)
    }
}

/// A failure that decides the exit code.
#[derive(Debug)]
pub struct Fatal {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Fatal {
    pub fn usage(error: anyhow::Error) -> Fatal {
        Fatal {
            code: EXIT_USAGE,
            error,
        }
    }
}

impl From<anyhow::Error> for Fatal {
    fn from(error: anyhow::Error) -> Fatal {
        Fatal {
            code: EXIT_INPUT,
            error,
        }
    }
}

/// Runs a command body and maps its outcome to an exit code, printing the
/// error chain (`what failed: why`) on stderr.
pub fn run(tool: &str, body: impl FnOnce() -> Result<u8, Fatal>) -> ExitCode {
    match body() {
        Ok(code) => ExitCode::from(code),
        Err(f) if is_broken_pipe(&f.error) => ExitCode::from(EXIT_OK),
        Err(f) => {
            eprintln!("{tool}: error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Buffered NDJSON output to stdout.
pub struct Output {
    buf: Vec<u8>,
    out: io::Stdout,
    /// Lines written to stdout so far (for the stage's metrics).
    lines_written: u64,
}

/// Write to stdout in chunks of about this size when input is busy.
const OUTPUT_CHUNK: usize = 64 * 1024;

impl Default for Output {
    fn default() -> Self {
        widen_pipes();
        Output {
            buf: Vec::with_capacity(OUTPUT_CHUNK * 2),
            out: io::stdout(),
            lines_written: 0,
        }
    }
}

impl Output {
    /// The buffer records are appended to (one complete line at a time).
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Writes out the buffer if it has grown past one chunk.
    pub fn maybe_write(&mut self) -> io::Result<()> {
        if self.buf.len() >= OUTPUT_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let mut lock = self.out.lock();
            lock.write_all(&self.buf)?;
            lock.flush()?;
            self.lines_written += memchr::memchr_iter(b'\n', &self.buf).count() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Pipes of 1 MiB (Linux's default limit for an unprivileged process)
/// instead of 64 KiB between the stages: a stage that writes 1 KiB records
/// by the 64 KiB chunk otherwise waits for its reader after every chunk,
/// and the whole pipeline runs at the pace of those hand-overs.
fn widen_pipes() {
    #[cfg(target_os = "linux")]
    for fd in [0, 1] {
        // SAFETY: fcntl on a descriptor the process holds; on anything but
        // a pipe (or above the limit) it fails and changes nothing.
        unsafe {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
        }
    }
}

/// How often the idle hook runs while stdin has nothing to read.
pub const IDLE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether `fd` has input (or its end, or an error to read) within
/// `timeout`; anything poll cannot say counts as readable, so the caller
/// goes on to its blocking read.
fn wait_readable(fd: i32, timeout: std::time::Duration) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one pollfd on the stack, its count 1; poll writes only `revents`.
    let ready = unsafe { libc::poll(&mut poll, 1, millis) };
    ready != 0
}

/// Totals of one run over the inputs.
#[derive(Debug, Default, Clone, Copy)]
pub struct InputStats {
    pub lines: u64,
    /// Inputs that could not be opened or read (reported on stderr as they happen).
    pub unreadable: u64,
}

/// Reads every line of every input in order and hands it to `each`, which
/// appends its output to the buffer. Output is written when the buffer
/// fills and whenever the input has nothing more buffered (so a live
/// `tail -f` sees each record at once). Unreadable files are reported and
/// skipped; the return value counts them.
pub fn for_each_line(
    tool: &str,
    files: &[PathBuf],
    out: &mut Output,
    each: impl FnMut(&Line<'_>, Origin<'_>, &mut Vec<u8>),
) -> Result<InputStats> {
    for_each_line_idle(tool, files, out, each, |_| Ok(()))
}

/// [`for_each_line`], also calling `idle` whenever the input has nothing
/// more buffered (and at the end), before the output is written: for stages
/// that batch records (`idle` appends the batch's output to the buffer it
/// is given) or keep output files of their own.
pub fn for_each_line_idle(
    tool: &str,
    files: &[PathBuf],
    out: &mut Output,
    each: impl FnMut(&Line<'_>, Origin<'_>, &mut Vec<u8>),
    idle: impl FnMut(&mut Vec<u8>) -> io::Result<()>,
) -> Result<InputStats> {
    // Log lines are cut at MAX_LINE_BYTES by the parser, which also reads
    // JSON input (envelopes, records) that may hold a line of that size.
    read_lines(
        tool,
        files,
        MAX_RECORD_BYTES,
        out,
        &Cell::new(0),
        each,
        idle,
    )
}

/// `rejected` counts the lines the stage reported as unusable, for its
/// metrics textfile (written when `PF_METRICS_DIR` is set).
fn read_lines(
    tool: &str,
    files: &[PathBuf],
    limit: usize,
    out: &mut Output,
    rejected: &Cell<u64>,
    mut each: impl FnMut(&Line<'_>, Origin<'_>, &mut Vec<u8>),
    mut idle: impl FnMut(&mut Vec<u8>) -> io::Result<()>,
) -> Result<InputStats> {
    let mut stats = InputStats::default();
    let reporter = pf_metrics::StageReporter::start(tool);
    let report = |stats: &InputStats, out: &Output| {
        if let Some(reporter) = &reporter {
            reporter.update(stats.lines, out.lines_written, rejected.get());
        }
    };
    let stdin_only = [PathBuf::from("-")];
    let files = if files.is_empty() {
        &stdin_only[..]
    } else {
        files
    };
    for path in files {
        let Some((reader, origin)) = open_input(tool, path) else {
            stats.unreadable += 1;
            continue;
        };
        let mut lines =
            LineReader::with_limit(BufReader::with_capacity(OUTPUT_CHUNK, reader), limit);
        loop {
            if lines.is_drained() {
                idle(out.buf())?;
                out.flush()?;
                report(&stats, out);
                // While stdin stays quiet the hook runs again every
                // IDLE_EVERY: time-driven work (a held incident's report,
                // an acknowledgement) need not wait for the next line.
                while origin == Origin::Stdin && !wait_readable(0, IDLE_EVERY) {
                    idle(out.buf())?;
                    out.flush()?;
                    report(&stats, out);
                }
            }
            match lines.next_line() {
                Ok(Some(line)) => {
                    stats.lines += 1;
                    each(&line, origin, out.buf());
                    out.maybe_write()?;
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!(
                        "{tool}: error reading {}: {e}; going on with the next input",
                        display_origin(origin)
                    );
                    stats.unreadable += 1;
                    break;
                }
            }
        }
    }
    idle(out.buf())?;
    out.flush()?;
    report(&stats, out);
    drop(reporter);
    Ok(stats)
}

/// Opens one input argument (`-` is stdin) with the origin its records
/// name; one that cannot be opened is reported on stderr and is `None`.
pub fn open_input<'p>(tool: &str, path: &'p Path) -> Option<(Box<dyn Read>, Origin<'p>)> {
    if path.as_os_str() == "-" {
        return Some((Box::new(io::stdin()), Origin::Stdin));
    }
    match File::open(path) {
        Ok(f) => Some((Box::new(f), Origin::File(path_str(path)))),
        Err(e) => {
            eprintln!("{tool}: cannot open {}: {e}; skipping it", path.display());
            None
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or("<non-UTF-8 path>")
}

pub fn display_origin(o: Origin<'_>) -> String {
    match o {
        Origin::Stdin => "stdin".into(),
        Origin::File(f) => f.into(),
    }
}

/// Problems with single input lines, reported on stderr with where they
/// were: the first [`LineErrors::SHOWN`] in full, then only counted, with a
/// total at the end, so a flood of bad lines cannot drown the terminal.
#[derive(Debug)]
pub struct LineErrors {
    tool: &'static str,
    pub count: u64,
}

impl LineErrors {
    pub const SHOWN: u64 = 20;

    pub fn new(tool: &'static str) -> LineErrors {
        LineErrors { tool, count: 0 }
    }

    pub fn report(&mut self, origin: Origin<'_>, line: u64, problem: impl std::fmt::Display) {
        self.count += 1;
        if self.count <= Self::SHOWN {
            eprintln!(
                "{}: {} line {line}: {problem}",
                self.tool,
                display_origin(origin)
            );
        } else if self.count == Self::SHOWN + 1 {
            eprintln!(
                "{}: more problem lines; only counting them from now on",
                self.tool
            );
        }
    }

    /// Prints the total if anything was reported.
    pub fn summary(&self, what: &str) {
        if self.count > 0 {
            eprintln!("{}: {} input line(s) {what}", self.tool, self.count);
        }
    }
}

/// [`for_each_line`] for NDJSON stages: hands over each non-blank line as
/// text; lines that are not UTF-8 are reported to `errors` and skipped.
pub fn for_each_record(
    tool: &str,
    files: &[PathBuf],
    out: &mut Output,
    errors: &mut LineErrors,
    each: impl FnMut(&str, u64, Origin<'_>, &mut Vec<u8>, &mut LineErrors),
) -> Result<InputStats> {
    for_each_record_idle(tool, files, out, errors, each, |_| Ok(()))
}

/// [`for_each_record`] with an `idle` hook as in [`for_each_line_idle`].
pub fn for_each_record_idle(
    tool: &str,
    files: &[PathBuf],
    out: &mut Output,
    errors: &mut LineErrors,
    mut each: impl FnMut(&str, u64, Origin<'_>, &mut Vec<u8>, &mut LineErrors),
    idle: impl FnMut(&mut Vec<u8>) -> io::Result<()>,
) -> Result<InputStats> {
    let rejected = Cell::new(0);
    read_lines(
        tool,
        files,
        MAX_RECORD_BYTES,
        out,
        &rejected,
        |line, origin, buf| {
            record_line(line, origin, buf, errors, &mut each);
            rejected.set(errors.count);
        },
        idle,
    )
}

fn record_line(
    line: &Line<'_>,
    origin: Origin<'_>,
    buf: &mut Vec<u8>,
    errors: &mut LineErrors,
    each: &mut impl FnMut(&str, u64, Origin<'_>, &mut Vec<u8>, &mut LineErrors),
) {
    match std::str::from_utf8(line.bytes) {
        _ if line.truncated => errors.report(
            origin,
            line.number,
            format_args!(
                "longer than {} MiB; skipped (a record made by pf-parse is never this long)",
                MAX_RECORD_BYTES >> 20
            ),
        ),
        Ok(text) if text.trim().is_empty() => {}
        Ok(text) => each(text, line.number, origin, buf, errors),
        Err(e) => errors.report(
            origin,
            line.number,
            format_args!("not UTF-8 ({e}); a record must be a UTF-8 JSON object"),
        ),
    }
}

/// Reads one record line as `T` (usually a borrowed view of the fields a
/// stage needs); a line that is not a JSON object is refused, with why in
/// words. (serde would read an array into a struct field by field.)
pub fn read_record<'a, T: serde::Deserialize<'a>>(text: &'a str) -> Result<T, String> {
    if let Some(what) = not_an_object(text) {
        return Err(what);
    }
    serde_json::from_str(text).map_err(|e| not_a_record(&e, text))
}

/// One record line's top-level members, for a stage that reads a few of
/// them and passes the rest on as text; refused as [`read_record`] refuses.
pub fn read_members(text: &str) -> Result<Vec<pf_record::members::Member<'_>>, String> {
    if let Some(what) = not_an_object(text) {
        return Err(what);
    }
    pf_record::members::members(text).map_err(|e| format!("{e}{}", nan_hint(text)))
}

fn nan_hint(text: &str) -> &'static str {
    if ["NaN", "Infinity", "inf"].iter().any(|w| text.contains(w)) {
        " (NaN and Infinity are not JSON numbers)"
    } else {
        ""
    }
}

/// Why `text` cannot be a record when it does not even begin as a JSON
/// object (serde would read an array into a struct field by field).
pub fn not_an_object(text: &str) -> Option<String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return None;
    }
    let what = match trimmed.as_bytes().first() {
        Some(b'[') => "a JSON array",
        Some(b'"') => "a JSON string",
        Some(b'-' | b'0'..=b'9') => "a number",
        _ => "text",
    };
    Some(format!(
        "{what}, not a record (each line must be one JSON object)"
    ))
}

/// Why a line is not a record, in words: what was wrong and what a record
/// looks like, from the JSON parser's error.
pub fn not_a_record(error: &serde_json::Error, text: &str) -> String {
    if let Some(what) = not_an_object(text) {
        return what;
    }
    use serde_json::error::Category;
    match error.classify() {
        Category::Data => format!("a field has the wrong type or shape: {error}"),
        Category::Eof => format!("the JSON object is cut short: {error}"),
        Category::Syntax | Category::Io => format!("not valid JSON: {error}{}", nan_hint(text)),
    }
}

/// Progress of a long read on stderr, only when stderr is a terminal: a bar
/// when the inputs' total size is known (all regular files), else a running
/// count. Redrawn at most every 64k records.
#[derive(Debug)]
pub struct Progress {
    tool: &'static str,
    enabled: bool,
    total_bytes: Option<u64>,
    bytes: u64,
    records: u64,
}

impl Progress {
    pub fn new(tool: &'static str, files: &[PathBuf]) -> Progress {
        use std::io::IsTerminal;
        let total_bytes = if files.is_empty() || files.iter().any(|f| f.as_os_str() == "-") {
            None
        } else {
            files
                .iter()
                .map(|f| {
                    std::fs::metadata(f)
                        .ok()
                        .filter(|m| m.is_file())
                        .map(|m| m.len())
                })
                .sum()
        };
        Progress {
            tool,
            enabled: io::stderr().is_terminal(),
            total_bytes,
            bytes: 0,
            records: 0,
        }
    }

    /// One more record of `bytes` input bytes.
    pub fn record(&mut self, bytes: usize) {
        self.records += 1;
        self.bytes += bytes as u64;
        if self.enabled && self.records.is_multiple_of(1 << 16) {
            self.draw();
        }
    }

    fn draw(&self) {
        match self.total_bytes {
            Some(total) if total > 0 => {
                let share = (self.bytes as f64 / total as f64).min(1.0);
                let filled = (share * 30.0) as usize;
                eprint!(
                    "\r{}: [{}{}] {:>3.0}% {} records",
                    self.tool,
                    "#".repeat(filled),
                    ".".repeat(30 - filled),
                    share * 100.0,
                    self.records
                );
            }
            _ => eprint!("\r{}: {} records read", self.tool, self.records),
        }
    }

    /// Ends the progress line, if one was drawn.
    pub fn finish(&mut self) {
        if self.enabled && self.records >= 1 << 16 {
            self.bytes = self.total_bytes.unwrap_or(self.bytes);
            self.draw();
            eprintln!();
        }
    }
}
