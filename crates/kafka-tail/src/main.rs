use anyhow::Context;
use clap::Parser;
use pf_cli::{ConfigArg, Fatal, EXIT_OK};
use pf_kafka::{parse_property, Settings, StartAt};
use std::io;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const EXAMPLES: &str = "\
Examples:
  kafka-tail | pf-parse | pf-features | pf-score          # settings from config/config.yaml
  kafka-tail -b kafka1:9092 -G detector -t postfix -t mail_login
  kafka-tail -o beginning -e > backlog.jsonl              # everything retained, then exit
  kafka-tail -o 2026-11-25T08:00:00Z -c 1000              # 1000 messages from 08:00 UTC on
  kafka-tail -X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-512 \\
             -X sasl.username=detector -X sasl.password=@/etc/postfix-anomaly/kafka.secret
  kafka-tail -X 'sasl.password=${KAFKA_PASSWORD}'         # from the environment

Writes one JSON envelope per log line:
  {\"topic\",\"partition\",\"offset\",\"timestamp\",\"key\",\"value\"}
(`timestamp` in ms since the epoch; a message holding several lines gives one
envelope per line; bytes that are not UTF-8 are replaced and the envelope
gets \"flags\":[\"invalid_utf8\"]).

Delivery is at least once: an offset is committed only after its line has
been written to stdout, or with --ack-file only once the pipeline's last
stage has written it (pipelines/live-detector.sh does this). On SIGINT/SIGTERM the current output is written,
offsets are committed, and kafka-tail exits 0. If stdout closes, it exits
without committing what it could not write, so a restart reads it again.
An unreachable broker is retried forever, with messages on stderr.

Secrets never need to be on a command line (where `ps` shows them): a
property value `@FILE` is read from FILE (refused if every user may read
it), `${NAME}` from the environment; both work in kafka.properties too. A
config file holding a secret inline is refused if every user may read it,
and warned about if its group may.

-o applies the first time this process is given a partition; `stored`
(the default) continues from the group's committed offset, or from
`auto.offset.reset` (default `earliest`) for a new group.

Exit status: 0 on success or when stopped by a signal, 1 if stdout could not
be written, 2 on bad usage or configuration.";

/// Consume Kafka topics in a consumer group, one JSON envelope per log line.
#[derive(Parser, Debug)]
#[command(name = "kafka-tail", version, after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Bootstrap brokers, host:port[,host:port] [default: kafka.broker].
    #[arg(short = 'b', value_name = "BROKERS")]
    brokers: Option<String>,
    /// Consumer group [default: kafka.consumer_group].
    #[arg(short = 'G', value_name = "GROUP")]
    group: Option<String>,
    /// Topic to consume; repeat for several [default: kafka.topics].
    #[arg(short = 't', value_name = "TOPIC")]
    topics: Vec<String>,
    /// librdkafka property, after kafka.properties; `key=@FILE` reads the
    /// value from FILE, `key=${NAME}` from the environment variable NAME.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// Start at: beginning, end, stored, or an RFC 3339 time.
    #[arg(short = 'o', value_name = "WHERE", default_value = "stored")]
    offset: String,
    /// Exit once every assigned partition has been read to its end.
    #[arg(short = 'e')]
    exit_at_end: bool,
    /// Exit after N messages.
    #[arg(short = 'c', value_name = "N")]
    count: Option<u64>,
    /// Print the group's lag per partition (committed offset vs. end) and exit.
    #[arg(long)]
    lag: bool,
    /// Commit only what the pipeline's last stage has acknowledged in FILE
    /// (written by `pf-sink --ack-file FILE`), not everything written to
    /// stdout: nothing in flight between the stages is ever committed.
    /// An old FILE is removed at start.
    #[arg(long, value_name = "FILE")]
    ack_file: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    pf_cli::run("kafka-tail", || {
        let settings = settings(&args).map_err(Fatal::usage)?;
        if args.lag {
            return print_lag(&settings);
        }
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&stop))
                .context("cannot install the signal handlers")?;
        }
        let summary = pf_kafka::tail(&settings, io::stdout(), &stop)?;
        eprintln!(
            "kafka-tail: {} messages, {} lines written{}; {}",
            summary.messages,
            summary.lines,
            if summary.repaired > 0 {
                format!(" ({} with invalid UTF-8 repaired)", summary.repaired)
            } else {
                String::new()
            },
            match (summary.committed, summary.unacknowledged) {
                (true, 0) => "offsets committed".to_string(),
                (true, n) => format!(
                    "offsets committed up to what pf-sink acknowledged ({n} message(s) not acknowledged will be read again)"
                ),
                (false, _) =>
                    "final offsets NOT committed (those lines will be read again)".to_string(),
            }
        );
        Ok(EXIT_OK)
    })
}

fn print_lag(settings: &Settings) -> Result<u8, Fatal> {
    let partitions = pf_kafka::group_lag(settings)?;
    println!(
        "{:<24} {:>9} {:>14} {:>14} {:>10}",
        "topic", "partition", "committed", "end", "lag"
    );
    let mut total = 0;
    for (p, start) in &partitions {
        let lag = p.lag(*start);
        total += lag;
        let committed = p.committed.map_or("-".to_string(), |c| c.to_string());
        println!(
            "{:<24} {:>9} {:>14} {:>14} {:>10}",
            p.topic, p.partition, committed, p.end, lag
        );
    }
    println!("group {}: {total} message(s) behind", settings.group);
    Ok(EXIT_OK)
}

fn settings(args: &Args) -> anyhow::Result<Settings> {
    let config = args.config.load()?;
    if let (Some((key, mode)), Some(path)) = (config.exposed_secret(), &config.origin) {
        eprintln!(
            "kafka-tail: warning: {} holds the secret {key} and its group may read it (mode {:04o}); \
             if that group is more than the service, keep the secret in its own file (`{name}: \"@/path/to/file\"`)",
            path.display(),
            mode & 0o7777,
            name = pf_config::secret_key(&key),
        );
    }
    let kafka = config.kafka;
    let mut properties = Vec::new();
    for (key, value) in kafka.properties {
        let value = pf_kafka::resolve_value(&key, &value)
            .with_context(|| format!("kafka.properties.{key} in the config"))?;
        properties.push((key, value));
    }
    for p in &args.properties {
        properties.push(parse_property(p)?);
    }
    Ok(Settings {
        brokers: args.brokers.clone().unwrap_or(kafka.broker),
        group: args.group.clone().unwrap_or(kafka.consumer_group),
        topics: if args.topics.is_empty() {
            kafka.topics
        } else {
            args.topics.clone()
        },
        properties,
        start: args.offset.parse::<StartAt>()?,
        exit_at_end: args.exit_at_end,
        max_messages: args.count,
        ack_file: args.ack_file.clone(),
    })
}
