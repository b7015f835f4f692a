use anyhow::Context;
use clap::Parser;
use pf_cli::{CommonArgs, Fatal, LineErrors, Output, EXIT_INPUT, EXIT_OK};
use pf_model::{describe_rarity, Detector, Grade, Grading, Model, ModelsDir, SeverityPolicy};
use pf_record::json::{write_f64, write_str, write_with_field};
use pf_report::{Anomaly, Contribution, ScoreReport};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// What the report shows of an anomalous record.
#[derive(Deserialize)]
struct ReportView {
    #[serde(default)]
    raw: Option<String>,
    #[serde(default)]
    ts: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

const REPORT_EVERY: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct ScoreRecord {
    #[serde(default)]
    features: Option<Map<String, Value>>,
    #[serde(default)]
    feature_set: Option<String>,
    #[serde(default)]
    detection: Option<IgnoredAny>,
}

struct Scoring {
    loaded: Loaded,
    policy: SeverityPolicy,
    grading: Grading,
    /// Records per feature whose category the model had not seen.
    unseen_counts: std::collections::BTreeMap<String, u64>,
    batch: Batch,
    /// Set when the model came from a models directory: follow its CURRENT.
    watch: Option<Watch>,
    report: Option<Report>,
    pseudonymiser: Option<pf_privacy::Pseudonymiser>,
}

/// The tuning report being gathered (`--report`).
struct Report {
    path: PathBuf,
    scores: ScoreReport,
    written: Instant,
}

/// A model ready to score, and the file it came from.
struct Loaded {
    path: PathBuf,
    detector: Detector,
}

impl Loaded {
    fn open(path: &Path) -> anyhow::Result<Loaded> {
        let model = Model::load(path)?;
        let detector = Detector::new(model).with_context(|| format!("model {}", path.display()))?;
        Ok(Loaded {
            path: path.to_path_buf(),
            detector,
        })
    }

    /// How `policy` grades this model's records; a fallback is reported.
    fn grading(&self, policy: SeverityPolicy) -> Grading {
        let grading = self.detector.grading(policy);
        if let Some(why) = &grading.fallback {
            eprintln!("pf-score: {why}");
        }
        grading
    }
}

/// Hot reload: between batches, at most once a second or at once after
/// SIGHUP, the models directory's CURRENT is read; a new current model is
/// loaded completely before it replaces the old one, and a model that does
/// not load is reported once and not used.
struct Watch {
    dir: ModelsDir,
    last_check: Instant,
    hup: Arc<AtomicBool>,
    refused: Option<PathBuf>,
}

const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Records read while more input was waiting, scored and explained
/// together: the forest and TreeSHAP tables are walked once per block of
/// rows instead of once per record. A batch is finished when it is full or
/// the input goes idle, so a quiet stream still sees each record at once.
#[derive(Default)]
struct Batch {
    records: Vec<Pending>,
    /// Encoded rows of the scorable records, one after another.
    rows: Vec<f32>,
    scores: Vec<f64>,
    /// Rarity and severity of each scored row.
    grades: Vec<Grade>,
    /// Rows to explain, and their SHAP values, one `d`-slice per row.
    explain_rows: Vec<f32>,
    phi: Vec<f64>,
}

/// Rows per batch: large enough for the block-wise walks, small enough to
/// keep a burst's first records from waiting long.
const BATCH_ROWS: usize = 1024;

struct Pending {
    text: String,
    had_detection: bool,
    outcome: Outcome,
}

enum Outcome {
    /// Scorable: its row's index in the batch, its features and the
    /// features whose category the model has not seen.
    Row {
        index: usize,
        features: Map<String, Value>,
        unseen: Vec<usize>,
    },
    Error(String),
}

fn main() -> ExitCode {
    let args = Args::parse();
    pf_cli::run("pf-score", || score(&args))
}

fn score(args: &Args) -> Result<u8, Fatal> {
    let config = args.common.load_config().map_err(Fatal::usage)?;
    let models_dir = ModelsDir::new(
        args.models_dir
            .clone()
            .unwrap_or(config.paths.models_dir.clone()),
    );
    let path = match &args.model {
        Some(p) => p.clone(),
        None => models_dir.current().map_err(Fatal::usage)?,
    };
    let loaded = Loaded::open(&path).map_err(Fatal::usage)?;
    let key_file = match &args.pseudonymise_key {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(p.clone()),
        None => config.privacy.pseudonymise_key_file.clone(),
    };
    let pseudonymiser = key_file
        .map(|p| pf_privacy::Pseudonymiser::from_key_file(&p))
        .transpose()
        .map_err(Fatal::usage)?;
    let watch = match &args.model {
        Some(_) => None,
        None => {
            let hup = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
                .context("cannot install the SIGHUP handler")?;
            Some(Watch {
                dir: models_dir,
                last_check: Instant::now(),
                hup,
                refused: None,
            })
        }
    };
    let policy = SeverityPolicy::from(&config.anomaly);
    let grading = loaded.grading(policy);
    let thresholds = grading.thresholds;
    let det = std::cell::RefCell::new(Scoring {
        loaded,
        policy,
        grading,
        unseen_counts: Default::default(),
        batch: Batch::default(),
        watch,
        report: args.report.as_ref().map(|path| Report {
            path: path.clone(),
            scores: ScoreReport::new(
                pf_report::Thresholds {
                    high: thresholds.high,
                    medium: thresholds.medium,
                    low: thresholds.low,
                },
                args.report_top,
            ),
            written: Instant::now(),
        }),
        pseudonymiser,
    });
    let mut out = Output::default();
    let mut errors = LineErrors::new("pf-score");
    let mut unscorable = 0u64;
    let stats = pf_cli::for_each_record_idle(
        "pf-score",
        &args.common.files,
        &mut out,
        &mut errors,
        |text, number, origin, buf, errors| {
            let record: ScoreRecord = match serde_json::from_str(text) {
                Ok(r) => r,
                Err(e) => return errors.report(origin, number, pf_cli::not_a_record(&e, text)),
            };
            let mut det = det.borrow_mut();
            if det.batch.records.is_empty() {
                det.maybe_reload();
            }
            let wrong_set = match (&record.feature_set, &det.loaded.detector.model.feature_set) {
                (Some(got), Some(want)) if got != want => Some(format!(
                    "record has features of set `{got}` but model {} was trained on set \
                     `{want}`; compute them with `pf-features --features {want}` or score with \
                     a model trained on `{got}`",
                    det.loaded.detector.model.version
                )),
                _ => None,
            };
            let outcome = match (wrong_set, record.features) {
                (Some(problem), _) => {
                    errors.report(origin, number, &problem);
                    Outcome::Error(problem)
                }
                (None, None) => {
                    let problem =
                        "record has no `features` object (run it through pf-features first)";
                    errors.report(origin, number, problem);
                    Outcome::Error(problem.to_string())
                }
                (None, Some(features)) => match det.encode(features) {
                    Ok(outcome) => outcome,
                    Err(problem) => {
                        errors.report(origin, number, format_args!("cannot score: {problem}"));
                        Outcome::Error(problem.to_string())
                    }
                },
            };
            if matches!(outcome, Outcome::Error(_)) {
                unscorable += 1;
            }
            det.batch.records.push(Pending {
                text: text.to_string(),
                had_detection: record.detection.is_some(),
                outcome,
            });
            if det.batch.scores.len() + 1 >= BATCH_ROWS || det.batch.records.len() >= BATCH_ROWS {
                det.finish_batch(args, buf);
            }
        },
        |buf| {
            let mut det = det.borrow_mut();
            det.finish_batch(args, buf);
            det.maybe_reload();
            det.write_report(false);
            Ok(())
        },
    )?;
    det.borrow_mut().write_report(true);
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
    det.borrow().report_unseen();
    Ok(if stats.unreadable > 0 || errors.count > unscorable {
        EXIT_INPUT
    } else {
        EXIT_OK
    })
}

impl Scoring {
    /// Switches to a new current model if there is one (only between batches:
    /// rows already encoded are scored by the model that encoded them).
    fn maybe_reload(&mut self) {
        let Some(watch) = &mut self.watch else {
            return;
        };
        let forced = watch.hup.swap(false, Ordering::Relaxed);
        if !forced && watch.last_check.elapsed() < RELOAD_CHECK {
            return;
        }
        watch.last_check = Instant::now();
        let Ok(path) = watch.dir.current() else {
            return;
        };
        if path == self.loaded.path || watch.refused.as_ref() == Some(&path) {
            return;
        }
        match Loaded::open(&path) {
            Ok(new) => {
                eprintln!(
                    "pf-score: now scoring with model {} (was {})",
                    new.detector.model.version, self.loaded.detector.model.version
                );
                self.grading = new.grading(self.policy);
                self.loaded = new;
                watch.refused = None;
            }
            Err(e) => {
                eprintln!(
                    "pf-score: the new current model {} does not load, still scoring with {}: {e:#}",
                    path.display(),
                    self.loaded.detector.model.version
                );
                watch.refused = Some(path);
            }
        }
    }

    /// Encodes a record's features into the batch.
    fn encode(&mut self, features: Map<String, Value>) -> Result<Outcome, pf_model::EncodeError> {
        let d = self.loaded.detector.encoder.names().len();
        let rows = &mut self.batch.rows;
        let start = rows.len();
        rows.resize(start + d, 0.0);
        let mut unseen = Vec::new();
        if let Err(e) =
            self.loaded
                .detector
                .encoder
                .encode(&features, &mut rows[start..], &mut unseen)
        {
            rows.truncate(start);
            return Err(e);
        }
        Ok(Outcome::Row {
            index: start / d,
            features,
            unseen,
        })
    }

    /// Scores and explains the batch and appends its records, in input
    /// order, to `out`.
    fn finish_batch(&mut self, args: &Args, out: &mut Vec<u8>) {
        if self.batch.records.is_empty() {
            return;
        }
        let d = self.loaded.detector.encoder.names().len();
        let mut batch = std::mem::take(&mut self.batch);
        let n = batch.rows.len() / d;
        batch.scores.resize(n, 0.0);
        self.loaded
            .detector
            .decision_function(&batch.rows, &mut batch.scores);
        batch.grades.clear();
        let detector = &self.loaded.detector;
        batch.grades.extend(
            batch
                .scores
                .iter()
                .zip(batch.rows.chunks_exact(d))
                .map(|(&score, row)| detector.grade(&self.grading, score, row)),
        );
        // Explain the rows that need it, all at once.
        let mut explained = vec![usize::MAX; n];
        batch.explain_rows.clear();
        let mut k = 0;
        for (i, grade) in batch.grades.iter().enumerate() {
            if grade.is_anomaly() || args.explain_all {
                explained[i] = k;
                batch
                    .explain_rows
                    .extend_from_slice(&batch.rows[i * d..(i + 1) * d]);
                k += 1;
            }
        }
        batch.phi.resize(k * d, 0.0);
        if k > 0 {
            self.loaded
                .detector
                .explain_many(&batch.explain_rows, &mut batch.phi);
        }
        let mut detection = Vec::with_capacity(512);
        for mut pending in batch.records.drain(..) {
            detection.clear();
            if let Some(p) = &self.pseudonymiser {
                if let Cow::Owned(text) = p.record_text(&pending.text) {
                    pending.text = text;
                }
            }
            let is_anomaly = match &pending.outcome {
                Outcome::Error(problem) => {
                    self.write_error(problem, &mut detection);
                    if let Some(report) = &mut self.report {
                        report.scores.add_unscorable();
                    }
                    false
                }
                Outcome::Row {
                    index,
                    features,
                    unseen,
                } => {
                    let phi = (explained[*index] != usize::MAX).then(|| {
                        let at = explained[*index] * d;
                        &batch.phi[at..at + d]
                    });
                    let score = batch.scores[*index];
                    if let Some(report) = &mut self.report {
                        report.scores.add(score);
                        if let (true, Some(phi)) = (batch.grades[*index].is_anomaly(), phi) {
                            if report.scores.wants(score) {
                                let names = self.loaded.detector.encoder.names();
                                let view: ReportView = serde_json::from_str(&pending.text)
                                    .unwrap_or(ReportView {
                                        raw: None,
                                        ts: None,
                                        kind: None,
                                    });
                                report.scores.offer(Anomaly {
                                    score,
                                    ts: view.ts.unwrap_or_default(),
                                    kind: view.kind.unwrap_or_default(),
                                    raw: view.raw.unwrap_or_default(),
                                    top_features: top_order(phi, args.top)
                                        .map(|i| Contribution {
                                            feature: names[i].clone(),
                                            value: features
                                                .get(&names[i])
                                                .map_or("null".into(), Value::to_string),
                                            contribution: phi[i],
                                        })
                                        .collect(),
                                });
                            }
                        }
                    }
                    self.write_detection(
                        batch.scores[*index],
                        batch.grades[*index],
                        phi,
                        features,
                        unseen,
                        args,
                        &mut detection,
                    )
                }
            };
            if is_anomaly || !args.only_anomalies {
                // The text parsed as a JSON object before, so this cannot fail.
                let _ = write_with_field(
                    out,
                    &pending.text,
                    "detection",
                    &detection,
                    pending.had_detection,
                );
            }
        }
        batch.rows.clear();
        batch.scores.clear();
        self.batch = batch;
    }

    /// Writes the detection object; returns whether the record is an anomaly.
    fn write_detection(
        &mut self,
        score: f64,
        grade: Grade,
        phi: Option<&[f64]>,
        features: &Map<String, Value>,
        unseen: &[usize],
        args: &Args,
        out: &mut Vec<u8>,
    ) -> bool {
        let is_anomaly = grade.is_anomaly();
        let severity = grade.severity;
        out.extend_from_slice(b"{\"score\":");
        write_f64(out, score);
        if let Some(rarity) = grade.rarity {
            out.extend_from_slice(b",\"rarity\":");
            write_f64(out, rarity.round());
            out.extend_from_slice(b",\"rarity_text\":");
            write_str(out, &describe_rarity(rarity));
        }
        out.extend_from_slice(if is_anomaly {
            b",\"is_anomaly\":true"
        } else {
            b",\"is_anomaly\":false"
        });
        out.extend_from_slice(b",\"severity\":");
        write_str(out, severity);
        let names = self.loaded.detector.encoder.names();
        if let (true, Some(phi)) = (is_anomaly, phi) {
            out.extend_from_slice(b",\"top_features\":[");
            for (k, i) in top_order(phi, args.top).enumerate() {
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
                write_f64(out, phi[i]);
                out.push(b'}');
            }
            out.push(b']');
        }
        if let (true, Some(phi)) = (args.explain_all, phi) {
            out.extend_from_slice(b",\"contributions\":{");
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, name);
                out.push(b':');
                write_f64(out, phi[i]);
            }
            out.push(b'}');
        }
        if !unseen.is_empty() {
            out.extend_from_slice(b",\"unseen\":[");
            for (k, &i) in unseen.iter().enumerate() {
                *self.unseen_counts.entry(names[i].clone()).or_default() += 1;
                if k > 0 {
                    out.push(b',');
                }
                write_str(out, &names[i]);
            }
            out.push(b']');
        }
        out.extend_from_slice(b",\"model\":");
        write_str(out, &self.loaded.detector.model.version);
        out.push(b'}');
        is_anomaly
    }

    /// Rewrites the report file: at the end, or when a minute has passed.
    fn write_report(&mut self, at_end: bool) {
        let Some(report) = &mut self.report else {
            return;
        };
        if !at_end && report.written.elapsed() < REPORT_EVERY {
            return;
        }
        report.written = Instant::now();
        let title = format!(
            "model {}, {} records",
            self.loaded.detector.model.version,
            report.scores.scored()
        );
        let page = report.scores.render(&title);
        // Log lines and user names: as private as the other outputs.
        if let Err(e) =
            pf_record::atomic::write_private_atomically(&report.path, page.as_bytes(), 0o640)
        {
            eprintln!(
                "pf-score: cannot write the report {}: {e}; check the directory exists and is \
                 writable",
                report.path.display()
            );
        }
    }

    fn write_error(&self, problem: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"error\":");
        write_str(out, problem);
        out.extend_from_slice(b",\"model\":");
        write_str(out, &self.loaded.detector.model.version);
        out.push(b'}');
    }

    fn report_unseen(&self) {
        let parts: Vec<String> = self
            .unseen_counts
            .iter()
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

/// Feature indices by contribution, most anomalous (lowest) first.
fn top_order(phi: &[f64], top: usize) -> impl Iterator<Item = usize> {
    let mut order: Vec<usize> = (0..phi.len()).collect();
    order.sort_by(|&a, &b| phi[a].total_cmp(&phi[b]));
    order.into_iter().take(top)
}
