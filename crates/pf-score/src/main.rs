use anyhow::Context;
use clap::Parser;
use pf_cli::{CommonArgs, Fatal, LineErrors, Output, EXIT_INPUT, EXIT_OK};
use pf_config::Thresholds;
use pf_model::{Encoder, Explainer, Model, ModelsDir, Scorer};
use pf_record::json::{write_f64, write_str, write_with_field};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  pf-parse /var/log/mail.log | pf-features | pf-score --only-anomalies
  kafka-tail | pf-parse | pf-features | pf-score --models-dir /var/lib/pf/models
  pf-score --model models/model-20261125T185200Z.json --explain-all rows.jsonl

Adds `detection` to every record: `score` (the model's decision score;
negative = anomalous), `is_anomaly` (score < anomaly.threshold.low),
`severity` (high / medium / low / none from anomaly.threshold), `model`,
and for anomalies `top_features`: the three features with the lowest
exact TreeSHAP contributions, with their values (contributions are in
tree-depth units: a negative one made the record's average isolation
path shorter, i.e. pushed it towards anomalous). A record that cannot be
scored (no `features`, a null or non-numeric value) is reported on stderr
with its line number and passes on with `detection.error` (with
--only-anomalies it is only reported).

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
    /// Output only anomalies (records with score below anomaly.threshold.low).
    #[arg(long)]
    only_anomalies: bool,
    /// Add `contributions` (every feature's TreeSHAP value) to every record, anomalous or not.
    #[arg(long)]
    explain_all: bool,
    /// How many features `top_features` lists.
    #[arg(long, default_value_t = 3, value_name = "N")]
    top: usize,
}

#[derive(Deserialize)]
struct ScoreRecord {
    #[serde(default)]
    features: Option<Map<String, Value>>,
    #[serde(default)]
    detection: Option<IgnoredAny>,
}

struct Detector {
    model: Model,
    encoder: Encoder,
    scorer: Scorer,
    explainer: Explainer,
    thresholds: Thresholds,
    row: Vec<f32>,
    phi: Vec<f64>,
    unseen: Vec<usize>,
    unseen_counts: Vec<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    pf_cli::run("pf-score", || score(&args))
}

fn load_model(args: &Args, models_dir: PathBuf) -> anyhow::Result<(PathBuf, Model)> {
    let path = match &args.model {
        Some(p) => p.clone(),
        None => ModelsDir::new(models_dir).current()?,
    };
    let model = Model::load(&path)?;
    Ok((path, model))
}

fn score(args: &Args) -> Result<u8, Fatal> {
    let config = args.common.load_config().map_err(Fatal::usage)?;
    let models_dir = args
        .models_dir
        .clone()
        .unwrap_or(config.paths.models_dir.clone());
    let (path, model) = load_model(args, models_dir).map_err(Fatal::usage)?;
    let d = model.features.len();
    let scorer = Scorer::new(&model.forest, d)
        .with_context(|| format!("model {}", path.display()))
        .map_err(Fatal::usage)?;
    let mut det = Detector {
        encoder: Encoder::new(&model),
        explainer: Explainer::new(&model.forest, d),
        scorer,
        thresholds: config.anomaly.threshold,
        row: vec![0.0; d],
        phi: vec![0.0; d],
        unseen: Vec::new(),
        unseen_counts: vec![0; d],
        model,
    };
    let mut out = Output::default();
    let mut errors = LineErrors::new("pf-score");
    let mut unscorable = 0u64;
    let mut detection = Vec::with_capacity(512);
    let stats = pf_cli::for_each_record(
        "pf-score",
        &args.common.files,
        &mut out,
        &mut errors,
        |text, number, origin, buf, errors| {
            let record: ScoreRecord = match serde_json::from_str(text) {
                Ok(r) => r,
                Err(e) => {
                    return errors.report(origin, number, format_args!("not a JSON record: {e}"))
                }
            };
            detection.clear();
            let keep = match &record.features {
                None => {
                    unscorable += 1;
                    let problem =
                        "record has no `features` object (run it through pf-features first)";
                    errors.report(origin, number, problem);
                    det.write_error(problem, &mut detection);
                    !args.only_anomalies
                }
                Some(features) => match det.detect(features, args, &mut detection) {
                    Ok(is_anomaly) => is_anomaly || !args.only_anomalies,
                    Err(problem) => {
                        unscorable += 1;
                        errors.report(origin, number, format_args!("cannot score: {problem}"));
                        det.write_error(&problem.to_string(), &mut detection);
                        !args.only_anomalies
                    }
                },
            };
            if keep {
                if let Err(e) = write_with_field(
                    buf,
                    text,
                    "detection",
                    &detection,
                    record.detection.is_some(),
                ) {
                    errors.report(origin, number, e);
                }
            }
        },
    )?;
    if unscorable > 0 {
        eprintln!(
            "pf-score: {unscorable} record(s) could not be scored (marked with detection.error)"
        );
    }
    det.report_unseen();
    Ok(if stats.unreadable > 0 || errors.count > unscorable {
        EXIT_INPUT
    } else {
        EXIT_OK
    })
}

impl Detector {
    /// Writes the detection object; returns whether the record is an anomaly.
    fn detect(
        &mut self,
        features: &Map<String, Value>,
        args: &Args,
        out: &mut Vec<u8>,
    ) -> Result<bool, pf_model::EncodeError> {
        self.unseen.clear();
        self.encoder
            .encode(features, &mut self.row, &mut self.unseen)?;
        let mut score = [0.0];
        self.scorer.decision_function(&self.row, &mut score);
        let score = score[0];
        let t = self.thresholds;
        let is_anomaly = score < t.low;
        let severity = if score < t.high {
            "high"
        } else if score < t.medium {
            "medium"
        } else if score < t.low {
            "low"
        } else {
            "none"
        };
        out.extend_from_slice(b"{\"score\":");
        write_f64(out, score);
        out.extend_from_slice(if is_anomaly {
            b",\"is_anomaly\":true"
        } else {
            b",\"is_anomaly\":false"
        });
        out.extend_from_slice(b",\"severity\":");
        write_str(out, severity);
        let names = self.encoder.names();
        if is_anomaly || args.explain_all {
            self.explainer.explain(&self.row, &mut self.phi);
        }
        if is_anomaly {
            let mut order: Vec<usize> = (0..names.len()).collect();
            order.sort_by(|&a, &b| self.phi[a].total_cmp(&self.phi[b]));
            out.extend_from_slice(b",\"top_features\":[");
            for (k, &i) in order.iter().take(args.top).enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"feature\":");
                write_str(out, &names[i]);
                out.extend_from_slice(b",\"value\":");
                match features.get(&names[i]) {
                    Some(v) => out.extend_from_slice(v.to_string().as_bytes()),
                    None => out.extend_from_slice(b"null"),
                }
                out.extend_from_slice(b",\"contribution\":");
                write_f64(out, self.phi[i]);
                out.push(b'}');
            }
            out.push(b']');
        }
        if args.explain_all {
            out.extend_from_slice(b",\"contributions\":{");
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, name);
                out.push(b':');
                write_f64(out, self.phi[i]);
            }
            out.push(b'}');
        }
        if !self.unseen.is_empty() {
            out.extend_from_slice(b",\"unseen\":[");
            for (k, &i) in self.unseen.iter().enumerate() {
                self.unseen_counts[i] += 1;
                if k > 0 {
                    out.push(b',');
                }
                write_str(out, &names[i]);
            }
            out.push(b']');
        }
        out.extend_from_slice(b",\"model\":");
        write_str(out, &self.model.version);
        out.push(b'}');
        Ok(is_anomaly)
    }

    fn write_error(&self, problem: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"error\":");
        write_str(out, problem);
        out.extend_from_slice(b",\"model\":");
        write_str(out, &self.model.version);
        out.push(b'}');
    }

    fn report_unseen(&self) {
        let parts: Vec<String> = self
            .encoder
            .names()
            .iter()
            .zip(&self.unseen_counts)
            .filter(|(_, &n)| n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        if !parts.is_empty() {
            eprintln!(
                "pf-score: categories not seen in training (scored with the model's reserved code): {}",
                parts.join(", ")
            );
        }
    }
}
