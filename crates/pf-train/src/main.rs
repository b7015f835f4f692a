use anyhow::{anyhow, bail, Context};
use clap::Parser;
use pf_cli::{CommonArgs, Fatal, LineErrors, Origin, Output, EXIT_OK};
use pf_config::DetectorKind;
use pf_featurize::{Feature, Unusual};
use pf_model::model::{version_at, FORMAT, FORMAT_VERSION};
use pf_model::sample::{Window, CAPACITY};
use pf_model::table::{Table, TableBuilder};
use pf_model::{
    fit_detector, ColumnSpec, Contamination, FeatureKind, FeatureSpec, Method, Model, ModelsDir,
    Side, TrainParams,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

const EXAMPLES: &str = "\
Examples:
  pf-parse /var/log/mail.log | pf-features | pf-train
  tail -n 100000 /var/log/mail.log | pf-parse | pf-features | pf-train --seed 7
  pf-train --max-lines all --models-dir /var/lib/pf/models features-*.jsonl
  pf-train --out model.json table.jsonl       # any numeric table: {\"features\":{...}}
  pf-train --csv --exclude label --out model.json table.csv

Input: records with a `features` object (pf-features output, or any NDJSON
whose `features` holds numbers and category strings). The feature names
come from --features, else from the first record, in its order.

Output: models/model-<UTC time>.json, written atomically, then made
current (models/CURRENT); older versions are kept. One row is appended to
the training metrics CSV. With too little data nothing is written.

Memory is bounded whatever the input size: at most 100,000 rows are
kept (the last N exactly for N up to that, else a uniform or stratified
sample), see docs/model.md.

Exit status: 0 on success, 1 if input could not be read or there is too
little usable data, 2 on bad usage or configuration.";

/// Train a new anomaly model (the tail model, or an Isolation Forest) from feature records.
#[derive(Parser, Debug)]
#[command(name = "pf-train", version, after_help = EXAMPLES)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// JSON array of the feature names to train on [default: the first record's features].
    #[arg(long, value_name = "FILE")]
    features: Option<PathBuf>,
    /// Train on the last N usable records, or `all` [default: retrain.max_lines, 100000].
    #[arg(long, value_name = "N|all")]
    max_lines: Option<String>,
    /// `tails` (every feature's tail; sees what training never showed) or
    /// `forest` (Isolation Forest) [default: retrain.detector, tails].
    #[arg(long, value_name = "tails|forest")]
    detector: Option<DetectorKind>,
    /// Folds of the cross-fitting that calibrates how rare each score is
    /// (0: none) [default: retrain.calibration_folds, 5].
    #[arg(long, value_name = "K")]
    calibration_folds: Option<usize>,
    /// Forest: number of trees [default: retrain.trees, 100].
    #[arg(long)]
    trees: Option<usize>,
    /// Forest: rows per tree, ψ [default: retrain.max_samples, 1024].
    #[arg(long, value_name = "N")]
    max_samples: Option<usize>,
    /// Expected share of anomalies in the training data, or `auto` [default: retrain.contamination, 0.001].
    #[arg(long, value_name = "FRACTION|auto")]
    contamination: Option<String>,
    /// Seed for a reproducible model [default: from the clock; recorded in the model].
    #[arg(long)]
    seed: Option<u64>,
    /// Directory of model versions [default: paths.models_dir].
    #[arg(long, value_name = "DIR")]
    models_dir: Option<PathBuf>,
    /// Write the model to this file only (no version directory, no CURRENT).
    #[arg(long, value_name = "FILE", conflicts_with = "models_dir")]
    out: Option<PathBuf>,
    /// Add the model to the versions without making it current, and print
    /// its path on stdout (for a check before `pf-models activate`).
    #[arg(long, conflicts_with = "out")]
    no_activate: bool,
    /// Training metrics CSV to append to [default: paths.metrics]; `-` for none.
    #[arg(long, value_name = "FILE")]
    metrics: Option<PathBuf>,
    /// Inputs are CSV tables with a header row (numbers, or strings for
    /// categories; an empty cell is a missing value) instead of NDJSON.
    #[arg(long)]
    csv: bool,
    /// With --csv: leave this column out (e.g. a label); repeatable.
    #[arg(long, value_name = "COLUMN", requires = "csv")]
    exclude: Vec<String>,
    /// Refuse to train on fewer usable rows than this.
    #[arg(long, default_value_t = 100, value_name = "N")]
    min_rows: usize,
}

#[derive(Deserialize)]
struct TrainingRecord {
    #[serde(default)]
    features: Option<Map<String, Value>>,
    #[serde(default)]
    feature_set: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    pf_cli::run("pf-train", || train(&args))
}

fn train(args: &Args) -> Result<u8, Fatal> {
    let config = args.common.load_config().map_err(Fatal::usage)?;
    let r = &config.retrain;
    let window = match args.max_lines.as_deref() {
        None => Window::Last(r.max_lines),
        Some("all") => Window::All,
        Some(n) => match n.parse::<u64>() {
            Ok(n) if n > 0 => Window::Last(n),
            _ => {
                return Err(Fatal::usage(anyhow!(
                    "--max-lines {n:?}: give a positive number of records or `all`"
                )))
            }
        },
    };
    let contamination_text = args
        .contamination
        .clone()
        .unwrap_or_else(|| r.contamination.to_string());
    let contamination: Contamination = contamination_text
        .parse()
        .map_err(|e: String| Fatal::usage(anyhow!("contamination: {e}")))?;
    let params = TrainParams {
        n_trees: args.trees.unwrap_or(r.trees),
        max_samples: args.max_samples.unwrap_or(r.max_samples),
        contamination,
        seed: args.seed.unwrap_or_else(clock_seed),
    };
    if params.n_trees == 0 || params.max_samples == 0 {
        return Err(Fatal::usage(anyhow!(
            "--trees and --max-samples must be at least 1"
        )));
    }
    let names: Option<Vec<String>> = match &args.features {
        Some(p) => Some(read_names(p).map_err(Fatal::usage)?),
        None => None,
    };

    let started = chrono::Utc::now();
    let mut builder: Option<TableBuilder> =
        names.map(|n| TableBuilder::new(n, window, params.seed));
    let mut errors = LineErrors::new("pf-train");
    let mut out = Output::default();
    let mut progress = pf_cli::Progress::new("pf-train", &args.common.files);
    let mut lines = 0u64;
    let mut add = |features: Map<String, Value>,
                   bytes: usize,
                   origin: Origin<'_>,
                   number: u64,
                   errors: &mut LineErrors| {
        lines += 1;
        progress.record(bytes);
        let b = builder.get_or_insert_with(|| {
            TableBuilder::new(features.keys().cloned().collect(), window, params.seed)
        });
        if let Err(e) = b.push(&features) {
            errors.report(
                origin,
                number,
                format_args!("{e}; row left out of training"),
            );
        }
    };
    let mut feature_set_seen: Option<String> = None;
    let unreadable = if args.csv {
        read_csv(&args.common.files, &args.exclude, &mut errors, &mut add)
    } else {
        pf_cli::for_each_record(
            "pf-train",
            &args.common.files,
            &mut out,
            &mut errors,
            |text, number, origin, _buf, errors| match serde_json::from_str::<TrainingRecord>(text)
            {
                Ok(TrainingRecord {
                    features: Some(f),
                    feature_set,
                }) => {
                    if let Some(set) = feature_set {
                        match &feature_set_seen {
                            None => feature_set_seen = Some(set),
                            Some(first) if *first != set => {
                                return errors.report(
                                    origin,
                                    number,
                                    format_args!(
                                        "record is of feature set `{set}` but the first record \
                                         was of `{first}`; row left out of training"
                                    ),
                                )
                            }
                            Some(_) => {}
                        }
                    }
                    add(f, text.len() + 1, origin, number, errors)
                }
                Ok(_) => errors.report(
                    origin,
                    number,
                    "record has no `features` object (run it through pf-features first)",
                ),
                Err(e) => errors.report(origin, number, pf_cli::not_a_record(&e, text)),
            },
        )?
        .unreadable
    };
    progress.finish();
    errors.summary("left out of training");
    let builder = builder
        .ok_or_else(|| anyhow!("no input records: nothing to train on; no model written"))?;
    let table = builder.finish();
    let n = table.n_rows();
    if n < args.min_rows {
        return Err(anyhow!(
            "too little data: {n} usable rows (of {lines} records read); at least {} are needed \
             (--min-rows). No model written",
            args.min_rows
        )
        .into());
    }

    let detector = args.detector.unwrap_or(r.detector);
    let folds = args.calibration_folds.unwrap_or(r.calibration_folds);
    if folds == 1 || folds > 20 {
        return Err(Fatal::usage(anyhow!(
            "--calibration-folds {folds}: give 0 (no calibration) or 2 to 20"
        )));
    }
    let method = match detector {
        DetectorKind::Tails => Method::Tails {
            columns: column_specs(&table.features),
        },
        DetectorKind::Forest => Method::Forest(params.clone()),
    };
    let fit_start = Instant::now();
    let d = table.features.len();
    let fitted = fit_detector(&table.rows, d, &method, contamination, folds)?;
    let training_seconds = fit_start.elapsed().as_secs_f64();
    let finished = chrono::Utc::now();
    let decisions = &fitted.decisions;
    let flagged = decisions.iter().filter(|&&s| s < 0.0).count();

    let mut training = training_metadata(
        &table,
        lines,
        errors.count,
        &params,
        window,
        training_seconds,
        started,
        finished,
    );
    training.insert("detector".into(), json!(detector));
    training.insert("calibration_rows".into(), fitted.calibration_rows.into());
    training.insert("anomalies_found".into(), flagged.into());
    training.insert(
        "anomaly_percentage".into(),
        (100.0 * flagged as f64 / decisions.len().max(1) as f64).into(),
    );
    let mut model = Model {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        version: version_at(finished),
        created: finished.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        features: table.features.clone(),
        feature_set: feature_set_seen,
        scaler: None,
        forest: fitted.forest,
        tails: fitted.tails,
        calibration: fitted.calibration,
        training,
    };
    if model.calibration.is_none() {
        eprintln!(
            "pf-train: warning: no rarity calibration ({n} rows, {folds} folds; it needs at \
             least {} rows and 2 folds); severities of this model will use the raw score \
             cut-offs. Train on more records for calibrated severities",
            pf_model::calibration::MIN_ROWS
        );
    }
    let path = match &args.out {
        Some(path) => {
            model.save(path)?;
            path.clone()
        }
        None => {
            let dir = args
                .models_dir
                .clone()
                .unwrap_or(config.paths.models_dir.clone());
            let dir = ModelsDir::new(dir);
            if args.no_activate {
                let path = dir.add(&mut model)?;
                println!("{}", path.display());
                path
            } else {
                dir.publish(&mut model)?
            }
        }
    };
    let metrics = args.metrics.clone().unwrap_or(config.paths.metrics.clone());
    if metrics.as_os_str() != "-" {
        append_metrics(
            &metrics,
            &model,
            &table,
            decisions,
            flagged,
            training_seconds,
            started,
            finished,
        )
        .with_context(|| {
            format!(
                "model written to {}, but the metrics row was not",
                path.display()
            )
        })?;
    }
    let shape = match &model.forest {
        Some(f) => format!("{} trees, ψ {}", f.trees.len(), f.max_samples),
        None => "tail model".to_string(),
    };
    eprintln!(
        "pf-train: wrote {} ({n} rows of {} kept, {shape}, calibrated on {} out-of-fold \
         scores, {flagged} rows below 0{})",
        path.display(),
        table.rows_seen,
        fitted.calibration_rows,
        if args.out.is_none() && !args.no_activate {
            "; now current"
        } else {
            ""
        }
    );
    Ok(if unreadable > 0 {
        pf_cli::EXIT_INPUT
    } else {
        EXIT_OK
    })
}

/// Takes one row's features, its size in input bytes (for progress), where
/// it came from (input, line) and the error reporter.
type AddRow<'a> = dyn FnMut(Map<String, Value>, usize, Origin<'_>, u64, &mut LineErrors) + 'a;

/// Reads CSV tables (header row first) and hands each row over as a
/// feature object; returns how many inputs could not be read.
fn read_csv(
    files: &[PathBuf],
    exclude: &[String],
    errors: &mut LineErrors,
    add: &mut AddRow<'_>,
) -> u64 {
    let stdin = [PathBuf::from("-")];
    let files = if files.is_empty() { &stdin[..] } else { files };
    let mut unreadable = 0;
    for path in files {
        let (reader, origin): (Box<dyn std::io::Read>, Origin<'_>) = if path.as_os_str() == "-" {
            (Box::new(std::io::stdin()), Origin::Stdin)
        } else {
            match std::fs::File::open(path) {
                Ok(f) => (
                    Box::new(f),
                    Origin::File(path.to_str().unwrap_or("<non-UTF-8 path>")),
                ),
                Err(e) => {
                    eprintln!("pf-train: cannot open {}: {e}; skipping it", path.display());
                    unreadable += 1;
                    continue;
                }
            }
        };
        let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
        let header: Vec<String> = match csv.headers() {
            Ok(h) => h.iter().map(|c| c.trim().to_string()).collect(),
            Err(e) => {
                eprintln!(
                    "pf-train: {}: cannot read the CSV header: {e}",
                    pf_cli::display_origin(origin)
                );
                unreadable += 1;
                continue;
            }
        };
        for row in csv.records() {
            let row = match row {
                Ok(r) => r,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    errors.report(origin, line, format_args!("not a CSV row: {e}"));
                    continue;
                }
            };
            let line = row.position().map_or(0, |p| p.line());
            if row.len() != header.len() {
                errors.report(
                    origin,
                    line,
                    format_args!(
                        "{} cells, but the header has {} columns; row left out",
                        row.len(),
                        header.len()
                    ),
                );
                continue;
            }
            let mut features = Map::new();
            for (name, cell) in header.iter().zip(row.iter()) {
                if exclude.contains(name) {
                    continue;
                }
                let cell = cell.trim();
                let value = if cell.is_empty() {
                    Value::Null
                } else if let Ok(n) = cell.parse::<f64>() {
                    serde_json::Number::from_f64(n)
                        .map_or(Value::String(cell.into()), Value::Number)
                } else {
                    Value::String(cell.into())
                };
                features.insert(name.clone(), value);
            }
            add(
                features,
                row.as_slice().len() + row.len(),
                origin,
                line,
                errors,
            );
        }
    }
    unreadable
}

/// How the tail model reads each feature: as pf-features' catalogue says
/// for its features (side, evidence group, level step); other categories
/// when rare, other numbers at either end.
fn column_specs(features: &[FeatureSpec]) -> Vec<ColumnSpec> {
    let mut groups: Vec<&'static str> = Vec::new();
    features
        .iter()
        .map(|f| {
            let known = Feature::from_name(&f.name);
            let side = match (&f.kind, known.map(Feature::unusual)) {
                (FeatureKind::Categorical { .. }, _) | (_, Some(Unusual::Rare)) => Side::Rare,
                (_, Some(Unusual::High)) => Side::Upper,
                (_, Some(Unusual::EitherEnd) | None) => Side::Both,
            };
            let group = known.and_then(Feature::evidence_group).map(|g| {
                let id = groups.iter().position(|&x| x == g).unwrap_or_else(|| {
                    groups.push(g);
                    groups.len() - 1
                });
                id as u16
            });
            ColumnSpec {
                side,
                group,
                rarity_per_level: known.and_then(Feature::rarity_per_level),
            }
        })
        .collect()
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn read_names(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read feature list {}", path.display()))?;
    let names: Vec<String> = serde_json::from_str(&text)
        .with_context(|| format!("{} must be a JSON array of feature names", path.display()))?;
    if names.is_empty() {
        bail!("{} lists no features", path.display());
    }
    Ok(names)
}

#[allow(clippy::too_many_arguments)]
fn training_metadata(
    table: &Table,
    lines: u64,
    rejected: u64,
    params: &TrainParams,
    window: Window,
    seconds: f64,
    started: chrono::DateTime<chrono::Utc>,
    finished: chrono::DateTime<chrono::Utc>,
) -> Map<String, Value> {
    let v = json!({
        "source": "pf-train",
        "pf_version": env!("CARGO_PKG_VERSION"),
        "records_read": lines,
        "records_rejected": rejected,
        "rows_accepted": table.rows_seen,
        "rows_used": table.n_rows(),
        "max_lines": match window {
            Window::All => Value::from("all"),
            Window::Last(n) => Value::from(n),
        },
        "sample_capacity": CAPACITY,
        "n_trees": params.n_trees,
        "seed": params.seed,
        "training_seconds": seconds,
        "training_start": started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "training_end": finished.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

const METRICS_HEADER: &str = "timestamp,training_start,contamination,n_estimators,sample_size,\
unique_services,unique_events,training_time,anomalies_found,anomaly_percentage,\
avg_anomaly_score,min_anomaly_score,max_anomaly_score,training_end\n";

#[allow(clippy::too_many_arguments)]
fn append_metrics(
    path: &Path,
    model: &Model,
    table: &Table,
    decisions: &[f64],
    flagged: usize,
    seconds: f64,
    started: chrono::DateTime<chrono::Utc>,
    finished: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let categories = |name: &str| {
        model
            .features
            .iter()
            .find(|f| f.name == name)
            .and_then(|f| match &f.kind {
                FeatureKind::Categorical { codes, .. } => Some(codes.len().to_string()),
                FeatureKind::Numeric => None,
            })
            .unwrap_or_default()
    };
    let n = decisions.len().max(1) as f64;
    let contamination = match model.contamination() {
        Some(Contamination::Auto) => "auto".to_string(),
        Some(Contamination::Fraction(f)) => f.to_string(),
        None => String::new(),
    };
    let row = format!(
        "{},{},{},{},{},{},{},{:.3},{},{:.4},{:.6},{:.6},{:.6},{}\n",
        model.version,
        started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        contamination,
        model.forest.as_ref().map_or(0, |f| f.trees.len()),
        table.n_rows(),
        categories("service_encoded"),
        categories("event_encoded"),
        seconds,
        flagged,
        flagged as f64 * 100.0 / n,
        decisions.iter().sum::<f64>() / n,
        decisions.iter().copied().fold(f64::INFINITY, f64::min),
        decisions.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        finished.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    let fresh = std::fs::metadata(path)
        .map(|m| m.len() == 0)
        .unwrap_or(true);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open metrics file {}", path.display()))?;
    let text = if fresh {
        format!("{METRICS_HEADER}{row}")
    } else {
        row
    };
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot append to {}", path.display()))?;
    Ok(())
}
