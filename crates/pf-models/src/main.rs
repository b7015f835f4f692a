use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use pf_cli::{ConfigArg, Fatal, EXIT_INPUT, EXIT_OK};
use pf_model::{Model, ModelsDir};
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    pf_cli::run("pf-models", || {
        let config = args.config.load().map_err(Fatal::usage)?;
        let dir = ModelsDir::new(args.models_dir.clone().unwrap_or(config.paths.models_dir));
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
    dir.set_current(&target)?;
    eprintln!(
        "pf-models: current model is now {} (was {})",
        version_of(&target),
        current
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
