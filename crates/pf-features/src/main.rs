use anyhow::{anyhow, Context};
use clap::Parser;
use pf_cli::{CommonArgs, Fatal, LineErrors, Output, EXIT_INPUT, EXIT_OK};
use pf_featurize::behaviour::Behaviour;
use pf_featurize::partitions::Partitioned;
use pf_featurize::{Feature, FeatureList, Featurizer, RecordView};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const EXAMPLES: &str = "\
Examples:
  pf-parse /var/log/mail.log | pf-features | pf-score
  pf-features --features seed records.jsonl
  pf-features --features my-features.json records.jsonl
  pf-features --state /var/lib/postfix-anomaly/features-state.json
  pf-features --list

Adds a `features` object to every record (replacing an earlier one), with
the features of the set in its order, and `feature_set` naming the set.
Categorical features are strings; the model encodes them. A feature the
record cannot give (e.g. no `ts` for `hour`) is null, and pf-score reports
such records instead of guessing.

Behavioural features (auth_failures_10m_by_ip, ...) remember what each
client address, user, sender and recipient did before, in the records' own
time: feed records in time order. With --state the memory is loaded at
start (if the file exists) and saved at exit and every minute while input
is idle, so a restart does not blind the detector.

Lines that are not JSON objects are reported on stderr with their line
number and skipped.

Exit status: 0 on success, 1 if an input could not be read or a line was
not a record, 2 on bad usage or configuration.";

/// Add feature vectors to pf records.
#[derive(Parser, Debug)]
#[command(name = "pf-features", version, after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Feature set: a JSON array of feature names, or the name of a set in
    /// the features directory (`seed`, `behavioural`) [default:
    /// paths.features from the config].
    #[arg(long, value_name = "FILE|NAME")]
    features: Option<String>,
    /// Load behavioural state from FILE at start (if it exists) and save it
    /// there (atomically) at exit and every minute of idle input.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Keep the behavioural state of records read from Kafka per partition
    /// in DIR, a directory every instance of the consumer group reaches, so
    /// that it follows a partition to the instance that takes it over
    /// (saved at exit and every minute of idle input) [default:
    /// kafka.partition_state_dir].
    #[arg(long, value_name = "DIR")]
    partition_state: Option<PathBuf>,
    /// Print the features that can be computed, and exit.
    #[arg(long)]
    list: bool,
}

const SAVE_EVERY: Duration = Duration::from_secs(60);

/// The feature set: `--features` as a file, else as a set name looked up
/// beside the configured list; without it the configured list. A shipped
/// set (`seed`, `behavioural`) whose file is not there is used as built in.
fn choose_features(given: Option<&str>, configured: &Path) -> anyhow::Result<FeatureList> {
    let path = match given {
        Some(given) => {
            let path = PathBuf::from(given);
            if path.is_file() || given.contains('/') || given.ends_with(".json") {
                return FeatureList::load(&path);
            }
            configured
                .parent()
                .unwrap_or(Path::new("."))
                .join(format!("{given}.json"))
        }
        None => configured.to_path_buf(),
    };
    if path.is_file() {
        return FeatureList::load(&path);
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    FeatureList::builtin(stem).ok_or_else(|| {
        anyhow!(
            "feature set {} does not exist; give --features with a JSON list of feature names \
             or a shipped set (seed, behavioural), or fix paths.features in the config",
            path.display()
        )
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    pf_cli::run("pf-features", || {
        if args.list {
            for f in Feature::all() {
                println!("{:<34} {}", f.name(), f.description());
            }
            return Ok(EXIT_OK);
        }
        let config = args.common.load_config().map_err(Fatal::usage)?;
        let list = choose_features(args.features.as_deref(), &config.paths.features)
            .context("choosing the features")
            .map_err(Fatal::usage)?;
        let behaviour = match &args.state {
            Some(path) if path.exists() => Behaviour::load(path).map_err(Fatal::usage)?,
            _ => Behaviour::new(),
        };
        let set_name = {
            let mut v = Vec::new();
            pf_record::json::write_str(&mut v, &list.name);
            v
        };
        let mut featurizer = Featurizer::new(list, behaviour);
        let partition_state = args
            .partition_state
            .clone()
            .or(config.kafka.partition_state_dir.clone())
            .filter(|_| featurizer.list.is_stateful());
        if let Some(dir) = &partition_state {
            featurizer.partitions = Some(Partitioned::open(dir).map_err(Fatal::usage)?);
        }
        let save = |featurizer: &mut Featurizer| -> anyhow::Result<()> {
            if let Some(parts) = &mut featurizer.partitions {
                parts.save()?;
            }
            match &args.state {
                Some(path) if featurizer.list.is_stateful() => featurizer.behaviour.save(path),
                _ => Ok(()),
            }
        };

        let mut out = Output::default();
        let mut errors = LineErrors::new("pf-features");
        let mut value = Vec::with_capacity(512);
        let mut last_save = Instant::now();
        // Records came since the last save (the idle hook also runs every
        // second while input is quiet: an unchanged state is not rewritten).
        let unsaved = std::cell::Cell::new(false);
        let featurizer_cell = std::cell::RefCell::new(&mut featurizer);
        let stats = pf_cli::for_each_record_idle(
            "pf-features",
            &args.common.files,
            &mut out,
            &mut errors,
            |text, number, origin, buf, errors| {
                let view: RecordView = match pf_cli::read_record(text) {
                    Ok(v) => v,
                    Err(problem) => return errors.report(origin, number, problem),
                };
                unsaved.set(true);
                let replace = view.features.is_some() || view.feature_set.is_some();
                value.clear();
                featurizer_cell
                    .borrow_mut()
                    .write_features(&view, &mut value);
                let fields: [(&str, &[u8]); 2] = [("features", &value), ("feature_set", &set_name)];
                if let Err(e) = pf_record::json::write_with_fields(buf, text, &fields, replace) {
                    errors.report(origin, number, e);
                }
            },
            |_| {
                if unsaved.get() && last_save.elapsed() >= SAVE_EVERY {
                    last_save = Instant::now();
                    match save(&mut featurizer_cell.borrow_mut()) {
                        Ok(()) => unsaved.set(false),
                        Err(e) => eprintln!("pf-features: {e:#}; will try again"),
                    }
                }
                Ok(())
            },
        )?;
        errors.summary("skipped (not records)");
        save(&mut featurizer)
            .context("saving the behavioural state at exit")
            .map_err(Fatal::usage)?;
        Ok(if stats.unreadable > 0 || errors.count > 0 {
            EXIT_INPUT
        } else {
            EXIT_OK
        })
    })
}
