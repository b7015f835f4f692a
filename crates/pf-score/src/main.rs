use anyhow::Context;
use clap::Parser;
use pf_cli::{CommonArgs, Fatal, LineErrors, Output, EXIT_INPUT, EXIT_OK};
use pf_detect::{Floors, Options, ReportSpec, Source, Stage};
use pf_model::{ModelsDir, SeverityPolicy};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const EXAMPLES: &str = "\
Examples:
  pf-parse /var/log/mail.log | pf-features | pf-score --only-anomalies
  kafka-tail | pf-parse | pf-features | pf-score --models-dir /var/lib/pf/models
  pf-score --model models/model-20261125T185200Z.json --explain-all rows.jsonl

Adds `detection` to every record: `score` (the model's decision score;
lower = more anomalous), `rarity` (one in how many normal lines scores like
this, from the model's calibration), `severity` (high / medium / low / none:
by rarity, anomaly.rarity 100,000 / 10,000 / 1,000 by default, or by raw
score cut-offs when the config sets anomaly.threshold), `is_anomaly`,
`model`, and for anomalies `top_features`: the three features that
contributed most (tail model: minus each feature's surprise in nats, the
contributions plus the model's offset add up to the score; forest: exact
TreeSHAP values in tree-depth units; negative = towards anomalous). A record that cannot be
scored (no `features`, a null or non-numeric value) is reported on stderr
with its line number and passes on with `detection.error` (with
--only-anomalies it is only reported).

With a models directory (not --model), a new current model (its CURRENT
changed by pf-train, pf-models rollback or a restore) is picked up between
records without a restart, within a second or at once on SIGHUP; it is
loaded completely first, and one that does not load is reported and not
used. `detection.model` names the version that scored each record.

Exit status: 0 on success, 1 if an input could not be read or a line was
not a JSON record, 2 on bad usage, configuration or model.";

/// Score feature records with the anomaly model and explain anomalies.
#[derive(Parser, Debug)]
#[command(name = "pf-score", version, after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Directory of model versions; its current model is used [default: paths.models_dir].
    #[arg(long, value_name = "DIR")]
    models_dir: Option<PathBuf>,
    /// Use this model file instead of a directory's current model.
    #[arg(long, value_name = "FILE", conflicts_with = "models_dir")]
    model: Option<PathBuf>,
    /// Output only anomalies (severity low or above).
    #[arg(long)]
    only_anomalies: bool,
    /// Add `contributions` (every feature's contribution) to every record, anomalous or not.
    #[arg(long)]
    explain_all: bool,
    /// How many features `top_features` lists.
    #[arg(long, default_value_t = 3, value_name = "N")]
    top: usize,
    /// Write a tuning report to FILE (self-contained HTML with an SVG
    /// histogram of the scores, the thresholds, counts per severity and the
    /// most anomalous records); rewritten at exit and, on long runs, at most
    /// every minute while input is idle.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// How many of the most anomalous records the report lists.
    #[arg(long, default_value_t = 50, value_name = "N", requires = "report")]
    report_top: usize,
    /// Replace user names, e-mail addresses and client addresses in the
    /// output and the report with stable pseudonyms keyed by FILE (at least
    /// 16 bytes, not world-readable) [default: privacy.pseudonymise_key_file].
    /// `-` turns it off.
    #[arg(long, value_name = "FILE")]
    pseudonymise_key: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    pf_cli::run("pf-score", || score(&args))
}

fn score(args: &Args) -> Result<u8, Fatal> {
    let config = args.common.load_config().map_err(Fatal::usage)?;
    let source = match &args.model {
        Some(path) => Source::File(path.clone()),
        None => {
            let dir = args
                .models_dir
                .clone()
                .unwrap_or(config.paths.models_dir.clone());
            let hup = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
                .context("cannot install the SIGHUP handler")?;
            Source::Dir {
                dir: ModelsDir::new(dir),
                hup,
            }
        }
    };
    let key_file = match &args.pseudonymise_key {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(p.clone()),
        None => config.privacy.pseudonymise_key_file.clone(),
    };
    let pseudonymiser = key_file
        .map(|p| pf_privacy::Pseudonymiser::from_key_file(&p))
        .transpose()
        .map_err(Fatal::usage)?;
    let options = Options {
        only_anomalies: args.only_anomalies,
        explain_all: args.explain_all,
        top: args.top,
        failures: Floors::from(&config.anomaly.failures),
    };
    let report = args.report.as_ref().map(|path| ReportSpec {
        path: path.clone(),
        top: args.report_top,
    });
    let stage = Stage::new(
        source,
        SeverityPolicy::from(&config.anomaly),
        options,
        report,
        pseudonymiser,
    )
    .map_err(Fatal::usage)?;
    let stage = std::cell::RefCell::new(stage);
    let mut out = Output::default();
    let mut errors = LineErrors::new("pf-score");
    let stats = pf_cli::for_each_record_idle(
        "pf-score",
        &args.common.files,
        &mut out,
        &mut errors,
        |text, number, origin, buf, errors| {
            stage.borrow_mut().record(text, number, origin, errors, buf)
        },
        |buf| {
            stage.borrow_mut().idle(buf);
            Ok(())
        },
    )?;
    let mut stage = stage.into_inner();
    stage.finish(out.buf());
    out.flush().context("cannot write to standard output")?;
    let unscorable = stage.unscorable;
    if unscorable > 0 {
        eprintln!(
            "pf-score: {unscorable} record(s) could not be scored (marked with detection.error)"
        );
    }
    if errors.count > unscorable {
        eprintln!(
            "pf-score: {} input line(s) skipped (not records)",
            errors.count - unscorable
        );
    }
    Ok(if stats.unreadable > 0 || errors.count > unscorable {
        EXIT_INPUT
    } else {
        EXIT_OK
    })
}
