use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use pf_cli::{ConfigArg, Fatal, EXIT_INPUT, EXIT_OK};
use pf_model::{Detector, Model, ModelsDir, SeverityPolicy};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  pf-models list
  pf-models rollback                      # back to the version before the current one
  pf-models rollback 20261120T020001Z     # to a given version
  pf-models prune --keep 10               # delete all but the newest 10 (never the current)
  pf-models check                         # every version loads; CURRENT names one

The current model is the one models/CURRENT names; pf-score picks up a
change of CURRENT between records without a restart. Every change here is
atomic: CURRENT is replaced with a rename, and a model file is deleted only
when it is neither current nor among the kept ones.

Exit status: 0 on success, 1 if a model does not load (check), 2 on bad
usage, a missing version or no previous version to roll back to.";

/// Manage the versions in a models directory.
#[derive(Parser, Debug)]
#[command(name = "pf-models", version, after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Directory of model versions [default: paths.models_dir].
    #[arg(long, value_name = "DIR", global = true)]
    models_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Versions, oldest first: created, training rows, anomaly % in training, current marker.
    List,
    /// Make an earlier version current (default: the one before the current).
    Rollback {
        /// Version such as 20261120T020001Z (or its file name).
        version: Option<String>,
    },
    /// Delete old versions, keeping the newest N and the current one.
    Prune {
        #[arg(long, value_name = "N")]
        keep: usize,
    },
    /// Load every version and check that CURRENT names one of them.
    Check,
    /// Print the current model's path.
    Current,
    /// Make a version current (the same as rollback VERSION, for any version).
    Activate { version: String },
    /// Try a new model on held-back feature records: exit 0 if its anomaly
    /// rate is within retrain.validation's limits (and those relative to the
    /// current model), 1 if not.
    Validate {
        /// The new model file.
        candidate: PathBuf,
        /// Feature records (NDJSON) that were held back from its training.
        #[arg(long, value_name = "FILE")]
        holdout: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    pf_cli::run("pf-models", || {
        let config = args.config.load().map_err(Fatal::usage)?;
        let dir = ModelsDir::new(
            args.models_dir
                .clone()
                .unwrap_or(config.paths.models_dir.clone()),
        );
        let Some(command) = &args.command else {
            return Err(Fatal::usage(anyhow::anyhow!(
                "a command is needed: list, rollback, prune, check or current (see --help)"
            )));
        };
        match command {
            Command::List => list(&dir).map_err(Fatal::from),
            Command::Rollback { version } => {
                rollback(&dir, version.as_deref()).map_err(Fatal::usage)
            }
            Command::Prune { keep } => prune(&dir, *keep).map_err(Fatal::usage),
            Command::Check => check(&dir).map_err(Fatal::from),
            Command::Activate { version } => rollback(&dir, Some(version)).map_err(Fatal::usage),
            Command::Validate { candidate, holdout } => {
                validate(&dir, &config, candidate, holdout).map_err(Fatal::usage)
            }
            Command::Current => {
                let path = dir.current().map_err(Fatal::usage)?;
                println!("{}", path.display());
                Ok(EXIT_OK)
            }
        }
    })
}

fn version_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default()
        .trim_start_matches("model-")
        .trim_end_matches(".json")
        .to_string()
}

/// The current model's path, only if CURRENT names an existing file.
fn current(dir: &ModelsDir) -> Option<PathBuf> {
    dir.current().ok().filter(|p| p.is_file())
}

fn list(dir: &ModelsDir) -> Result<u8> {
    let versions = dir.versions()?;
    if versions.is_empty() {
        eprintln!("pf-models: no model in {}", dir.dir.display());
        return Ok(EXIT_OK);
    }
    let current = current(dir);
    println!(
        "  {:<22} {:<21} {:>9} {:>10} {:>8}",
        "version", "created", "rows", "anomaly %", "size"
    );
    for path in &versions {
        let marker = if Some(path) == current.as_ref() {
            "*"
        } else {
            " "
        };
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let (created, rows, pct) = match summary(path) {
            Ok(s) => s,
            Err(e) => {
                println!("{marker} {:<22} does not load: {e:#}", version_of(path));
                continue;
            }
        };
        println!(
            "{marker} {:<22} {:<21} {:>9} {:>10} {:>7}K",
            version_of(path),
            created,
            rows,
            pct,
            size.div_ceil(1024)
        );
    }
    Ok(EXIT_OK)
}

/// Created time, training rows and training anomaly % from the model file.
fn summary(path: &Path) -> Result<(String, String, String)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let training = &v["training"];
    let text_of = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let pct = match training["anomaly_percentage"].as_f64() {
        Some(p) => format!("{p:.3}"),
        None => "-".into(),
    };
    Ok((text_of(&v["created"]), text_of(&training["rows_used"]), pct))
}

fn rollback(dir: &ModelsDir, version: Option<&str>) -> Result<u8> {
    let versions = dir.versions()?;
    let current = current(dir);
    let target = match version {
        Some(v) => {
            let v = v.trim_start_matches("model-").trim_end_matches(".json");
            versions
                .iter()
                .find(|p| version_of(p) == v)
                .cloned()
                .with_context(|| {
                    format!(
                        "no version {v} in {} (pf-models list shows them)",
                        dir.dir.display()
                    )
                })?
        }
        None => {
            let Some(cur) = &current else {
                bail!(
                    "no current model in {} to roll back from",
                    dir.dir.display()
                );
            };
            let at = versions.iter().position(|p| p == cur).unwrap_or(0);
            if at == 0 {
                bail!(
                    "{} is the oldest version in {}; there is nothing to roll back to (nothing changed)",
                    version_of(cur),
                    dir.dir.display()
                );
            }
            versions[at - 1].clone()
        }
    };
    Model::load(&target).with_context(|| {
        format!(
            "{} does not load, so it was not made current (nothing changed)",
            target.display()
        )
    })?;
    let previous = current.filter(|_| dir.dir.join(pf_model::model::CURRENT).is_file());
    dir.set_current(&target)?;
    eprintln!(
        "pf-models: current model is now {} (was {})",
        version_of(&target),
        previous
            .as_deref()
            .map(version_of)
            .unwrap_or_else(|| "none".into())
    );
    Ok(EXIT_OK)
}

fn prune(dir: &ModelsDir, keep: usize) -> Result<u8> {
    if keep == 0 {
        bail!("--keep must be at least 1");
    }
    let versions = dir.versions()?;
    let current = current(dir);
    let cut = versions.len().saturating_sub(keep);
    let mut removed = 0;
    for path in &versions[..cut] {
        if Some(path) == current.as_ref() {
            continue;
        }
        std::fs::remove_file(path).with_context(|| format!("cannot delete {}", path.display()))?;
        println!("removed {}", version_of(path));
        removed += 1;
    }
    eprintln!(
        "pf-models: removed {removed} version(s); {} left",
        versions.len() - removed
    );
    Ok(EXIT_OK)
}

fn check(dir: &ModelsDir) -> Result<u8> {
    let versions = dir.versions()?;
    if versions.is_empty() {
        bail!("no model in {}", dir.dir.display());
    }
    let mut bad = 0;
    for path in &versions {
        if let Err(e) = Model::load(path) {
            eprintln!("pf-models: {}: {e:#}", path.display());
            bad += 1;
        }
    }
    let current = dir.current()?;
    if !versions.contains(&current) {
        eprintln!(
            "pf-models: CURRENT names {}, which is not a model in {}",
            current.display(),
            dir.dir.display()
        );
        bad += 1;
    }
    if bad > 0 {
        return Ok(EXIT_INPUT);
    }
    eprintln!(
        "pf-models: {} version(s) load; current is {}",
        versions.len(),
        version_of(&current)
    );
    Ok(EXIT_OK)
}

/// Anomalies among the held-back records that a model could score.
#[derive(Debug, Default)]
struct Tally {
    scored: u64,
    unscorable: u64,
    anomalies: u64,
}

impl Tally {
    fn rate(&self) -> f64 {
        self.anomalies as f64 / self.scored.max(1) as f64
    }

    fn describe(&self) -> String {
        format!(
            "{}/{} anomalous ({:.2}%){}",
            self.anomalies,
            self.scored,
            100.0 * self.rate(),
            if self.unscorable > 0 {
                format!(", {} unscorable", self.unscorable)
            } else {
                String::new()
            }
        )
    }
}

/// How many held-back records the model scores as anomalies, with the
/// severity cut-offs the config gives for that model.
fn tally(
    model: Model,
    records: &[serde_json::Map<String, Value>],
    policy: SeverityPolicy,
) -> Result<Tally> {
    let d = model.features.len();
    let detector = Detector::new(model)?;
    let grading = detector.grading(policy);
    let encoder = &detector.encoder;
    let mut row = vec![0f32; d];
    let mut unseen = Vec::new();
    let mut score = [0.0];
    let mut t = Tally::default();
    for features in records {
        unseen.clear();
        if encoder.encode(features, &mut row, &mut unseen).is_err() {
            t.unscorable += 1;
            continue;
        }
        detector.decision_function(&row, &mut score);
        t.scored += 1;
        t.anomalies += u64::from(detector.grade(&grading, score[0], &row).is_anomaly());
    }
    Ok(t)
}

fn validate(
    dir: &ModelsDir,
    config: &pf_config::Config,
    candidate: &Path,
    holdout: &Path,
) -> Result<u8> {
    let limits = config.retrain.validation;
    let policy = SeverityPolicy::from(&config.anomaly);
    let new = Model::load(candidate).with_context(|| {
        format!(
            "rejected: the new model {} does not load",
            candidate.display()
        )
    })?;
    let text = std::fs::read_to_string(holdout)
        .with_context(|| format!("cannot read the held-back records {}", holdout.display()))?;
    let records: Vec<serde_json::Map<String, Value>> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|mut v| match v.get_mut("features").map(Value::take) {
            Some(Value::Object(m)) => Some(m),
            _ => None,
        })
        .collect();
    let new_version = new.version.clone();
    let new_tally = tally(new, &records, policy)?;
    let current = current(dir).filter(|p| p.as_path() != candidate);
    let old = current.as_deref().and_then(|p| Model::load(p).ok());
    let old_tally = match &old {
        Some(m) => Some(tally(m.clone(), &records, policy)?),
        None => None,
    };
    let mut report = format!(
        "new model {} on {} held-back records: {}",
        new_version,
        records.len(),
        new_tally.describe()
    );
    if let (Some(m), Some(t)) = (&old, &old_tally) {
        report.push_str(&format!("; current {}: {}", m.version, t.describe()));
    }
    let mut problems = Vec::new();
    if new_tally.scored == 0 {
        problems.push("it could score none of the held-back records".to_string());
    } else {
        if new_tally.rate() > limits.max_rate {
            problems.push(format!(
                "its anomaly rate {:.2}% is above retrain.validation.max_rate {:.2}%",
                100.0 * new_tally.rate(),
                100.0 * limits.max_rate
            ));
        }
        if let Some(t) = old_tally.as_ref().filter(|t| t.scored > 0) {
            let ratio = new_tally.rate() / t.rate().max(0.001);
            if ratio > limits.max_ratio {
                problems.push(format!(
                    "its anomaly rate is {ratio:.1} times the current model's (retrain.validation.max_ratio {})",
                    limits.max_ratio
                ));
            }
        }
    }
    if problems.is_empty() {
        println!("accepted: {report}");
        Ok(EXIT_OK)
    } else {
        println!("rejected: {report}: {}", problems.join("; "));
        Ok(EXIT_INPUT)
    }
}
