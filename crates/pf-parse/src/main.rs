use anyhow::anyhow;
use clap::Parser;
use pf_cli::{CommonArgs, Fatal, Output, EXIT_INPUT, EXIT_OK};
use pf_logparse::merge::{merge, Input};
use pf_logparse::proxy::TrustedProxies;
use pf_logparse::time::Zone;
use pf_logparse::{LineParser, ProblemCounts};
use std::collections::BTreeMap;
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  pf-parse /var/log/mail.log > records.jsonl
  tail -F /var/log/mail.log | pf-parse | pf-features | pf-score
  journalctl -u postfix -o json -f | pf-parse --timezone Europe/Berlin
  kafka-tail | pf-parse --stats
  pf-parse --year 2023 old-mail.log.1
  pf-parse --merge /var/log/mail.log /var/log/roundcube/errors.log

With --merge, the files are read side by side and their records written in
event-time order (each file must be in time order, as logs are; a line
without a timestamp stays after the line before it; ties go to the file
named first), streaming, one record per file in memory; source.file and
source.line still say where each line came from.

Each input line (raw syslog text, a kafka-tail envelope, a `journalctl -o json`
entry, or an earlier record) gives exactly one output record; lines that are
not understood come out with \"kind\":\"unknown\",\"parsed\":false.

At exit, a summary on stderr counts the lines passed on marked (not
recognised, cut at 1 MiB, not UTF-8, NUL bytes, broken JSON).

Exit status: 0 on success (marked lines included), 1 if an input could not
be read, 2 on bad usage or configuration.";

/// Parse Postfix, Dovecot and Roundcube log lines into NDJSON records.
#[derive(Parser, Debug)]
#[command(name = "pf-parse", version, after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Zone for timestamps without one: `local`, an IANA name, `UTC` or `+05:30`
    /// [default: parse.timezone from the config, else local].
    #[arg(long, value_name = "ZONE")]
    timezone: Option<String>,
    /// Year for timestamps without one [default: inferred from the clock, never in the future].
    #[arg(long, value_name = "YEAR")]
    year: Option<i32>,
    /// Print a table of record counts per kind on stderr at the end.
    #[arg(long)]
    stats: bool,
    /// Interleave the files by event time instead of reading one after the other.
    #[arg(long)]
    merge: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    pf_cli::run("pf-parse", || {
        let config = args.common.load_config().map_err(Fatal::usage)?;
        let zone_text = args
            .timezone
            .clone()
            .or(config.parse.timezone.clone())
            .unwrap_or_else(|| "local".into());
        let zone = Zone::parse(&zone_text)
            .map_err(|e| Fatal::usage(anyhow!("--timezone/parse.timezone: {e}")))?;
        let proxies =
            TrustedProxies::parse(config.parse.trusted_proxies.iter().map(String::as_str))
                .map_err(|e| Fatal::usage(anyhow!("parse.trusted_proxies: {e}")))?;
        let new_parser = || {
            LineParser::new(zone.clone(), args.year, chrono::Utc::now())
                .with_trusted_proxies(proxies.clone())
        };
        let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut count = |kind| {
            if args.stats {
                *kinds.entry(kind).or_default() += 1;
            }
        };
        let mut out = Output::default();
        let (stats, problems) = if args.merge {
            merge_files(&args.common.files, new_parser, &mut out, &mut count)?
        } else {
            let mut parser = new_parser();
            let stats = pf_cli::for_each_line(
                "pf-parse",
                &args.common.files,
                &mut out,
                |line, origin, buf| count(parser.process(line, origin, buf)),
            )?;
            (stats, parser.counts)
        };
        if args.stats {
            print_stats(&kinds, stats.lines);
        }
        if let Some(described) = problems.describe() {
            eprintln!(
                "pf-parse: {} lines read; passed on marked: {described}",
                problems.lines
            );
        }
        Ok(if stats.unreadable > 0 {
            EXIT_INPUT
        } else {
            EXIT_OK
        })
    })
}

/// `--merge`: every file read side by side, records in event-time order.
fn merge_files(
    files: &[std::path::PathBuf],
    new_parser: impl Fn() -> LineParser,
    out: &mut Output,
    count: &mut impl FnMut(&'static str),
) -> anyhow::Result<(pf_cli::InputStats, ProblemCounts)> {
    let mut stats = pf_cli::InputStats::default();
    let mut inputs = Vec::new();
    for path in files {
        let Some((reader, origin)) = pf_cli::open_input("pf-parse", path) else {
            stats.unreadable += 1;
            continue;
        };
        inputs.push(Input::new(
            pf_cli::display_origin(origin),
            std::io::BufReader::with_capacity(64 * 1024, reader),
            pf_record::MAX_RECORD_BYTES,
            new_parser(),
        ));
    }
    let merged = merge(
        &mut inputs,
        |record, kind| {
            count(kind);
            out.buf().extend_from_slice(record);
            out.maybe_write()
        },
        |name, e| eprintln!("pf-parse: error reading {name}: {e}; going on with the other files"),
    )?;
    out.flush()?;
    stats.lines = merged.lines;
    stats.unreadable += merged.unreadable;
    let mut problems = ProblemCounts::default();
    for input in &inputs {
        problems.add(&input.parser().counts);
    }
    Ok((stats, problems))
}

fn print_stats(kinds: &BTreeMap<&'static str, u64>, total: u64) {
    let mut rows: Vec<_> = kinds.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    eprintln!("{:>10}  {:>6}  kind", "records", "share");
    for (kind, n) in rows {
        eprintln!(
            "{:>10}  {:>5.1}%  {}",
            n,
            *n as f64 * 100.0 / total.max(1) as f64,
            kind
        );
    }
    eprintln!("{:>10}  {:>5.1}%  total", total, 100.0);
}
