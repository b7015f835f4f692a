use anyhow::anyhow;
use clap::Parser;
use pf_cli::{CommonArgs, Fatal, Output, EXIT_INPUT, EXIT_OK};
use pf_logparse::proxy::TrustedProxies;
use pf_logparse::time::Zone;
use pf_logparse::LineParser;
use std::collections::BTreeMap;
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  pf-parse /var/log/mail.log > records.jsonl
  tail -F /var/log/mail.log | pf-parse | pf-features | pf-score
  journalctl -u postfix -o json -f | pf-parse --timezone Europe/Berlin
  kafka-tail | pf-parse --stats
  pf-parse --year 2023 old-mail.log.1

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
        let mut parser =
            LineParser::new(zone, args.year, chrono::Utc::now()).with_trusted_proxies(proxies);
        let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut out = Output::default();
        let stats = pf_cli::for_each_line(
            "pf-parse",
            &args.common.files,
            &mut out,
            |line, origin, buf| {
                let kind = parser.process(line, origin, buf);
                if args.stats {
                    *kinds.entry(kind).or_default() += 1;
                }
            },
        )?;
        if args.stats {
            print_stats(&kinds, stats.lines);
        }
        if let Some(problems) = parser.counts.describe() {
            eprintln!(
                "pf-parse: {} lines read; passed on marked: {problems}",
                parser.counts.lines
            );
        }
        Ok(if stats.unreadable > 0 {
            EXIT_INPUT
        } else {
            EXIT_OK
        })
    })
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
