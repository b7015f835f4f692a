//! The scoring stage behind `pf-score`: feature records in, each with its
//! `detection` object out, in input order. Records are batched while more
//! input waits (the model's block-wise walks), graded by the severity
//! policy, explained when anomalous, optionally pseudonymised; a models
//! directory's current model is followed without a restart; the tuning
//! report is gathered on the side.

mod failure;

pub use failure::{Failure, Floors};

use anyhow::Context;
use pf_cli::{LineErrors, Origin};
use pf_model::{Detector, Grade, Grading, Model, ModelsDir, SeverityPolicy};
use pf_record::json::{write_f64, write_str, write_with_field};
use pf_report::{Anomaly, Contribution, ScoreReport};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the stage writes besides the scores.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Write only anomalies (severity low or above).
    pub only_anomalies: bool,
    /// Add every feature's contribution to every record.
    pub explain_all: bool,
    /// How many features `top_features` lists.
    pub top: usize,
    /// The least severity of a line where a process says it failed.
    pub failures: Floors,
}

/// Where the model comes from.
pub enum Source {
    /// One model file, used as it is.
    File(PathBuf),
    /// A models directory's current model, followed between batches (at
    /// most once a second, at once when `hup` is set, e.g. by SIGHUP).
    Dir {
        dir: ModelsDir,
        hup: Arc<AtomicBool>,
    },
}

/// The tuning report to gather: its file and how many records it lists.
pub struct ReportSpec {
    pub path: PathBuf,
    pub top: usize,
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

/// What pf-score reads of a record: its features, encoded into the batch's
/// row as they are read ([`pf_model::RowSeed`]), the feature set's name,
/// and whether it was scored before. Everything else is skipped.
struct ScoreRecord<'a> {
    /// `None` when the record has no `features` object (or it is null).
    features: Option<Result<(), pf_model::EncodeError>>,
    feature_set: Option<Cow<'a, str>>,
    had_detection: bool,
    program: Option<Cow<'a, str>>,
    level: Option<Cow<'a, str>>,
}

struct RecordSeed<'s> {
    encoder: &'s pf_model::Encoder,
    row: &'s mut [f32],
    unseen: &'s mut Vec<usize>,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = ScoreRecord<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = ScoreRecord<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a record (a JSON object)")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut record = ScoreRecord {
            features: None,
            feature_set: None,
            had_detection: false,
            program: None,
            level: None,
        };
        while let Some(pf_model::Key(key)) = map.next_key::<pf_model::Key<'de>>()? {
            match key.as_ref() {
                "features" => {
                    // A second `features` member replaces the first, as in a map.
                    self.unseen.clear();
                    record.features = map.next_value_seed(OptionalRow(pf_model::RowSeed {
                        encoder: self.encoder,
                        row: &mut *self.row,
                        unseen: &mut *self.unseen,
                    }))?;
                }
                "feature_set" => record.feature_set = map.next_value()?,
                "program" => record.program = map.next_value::<failure::LenientStr>()?.0,
                "fields" => record.level = map.next_value::<failure::LevelOf>()?.0,
                "detection" => {
                    // Even `null`: it is replaced, not written a second time.
                    map.next_value::<IgnoredAny>()?;
                    record.had_detection = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(record)
    }
}

/// `features: null` reads as no features.
struct OptionalRow<'e>(pf_model::RowSeed<'e>);

impl<'de> DeserializeSeed<'de> for OptionalRow<'_> {
    type Value = Option<Result<(), pf_model::EncodeError>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for OptionalRow<'_> {
    type Value = Option<Result<(), pf_model::EncodeError>>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a `features` object")
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

/// The `features` of an anomalous record, for the values its explanation
/// names (read again from its text: only anomalies need them).
fn feature_values(text: &str) -> Map<String, Value> {
    // The whole record as a map: a `features` member given twice counts
    // with its last value, as it was scored.
    match serde_json::from_str::<Map<String, Value>>(text) {
        Ok(mut record) => match record.remove("features") {
            Some(Value::Object(features)) => features,
            _ => Map::new(),
        },
        Err(_) => Map::new(),
    }
}

pub struct Stage {
    options: Options,
    /// Records that could not be scored (passed on with detection.error).
    pub unscorable: u64,
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
    /// Records scored when it was last written: an idle hook that runs on
    /// while input is quiet does not rewrite an unchanged page.
    written_at: u64,
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
    /// The records' texts, one after another.
    texts: String,
    /// Encoded rows of the scorable records, one after another.
    rows: Vec<f32>,
    scores: Vec<f64>,
    /// Rarity and severity of each scored row.
    grades: Vec<Grade>,
    /// Whether each scored row's record says a process failed; after
    /// grading, the failure only where its floor raised the severity.
    failures: Vec<Option<Failure>>,
    /// Rows to explain, and their SHAP values, one `d`-slice per row.
    explain_rows: Vec<f32>,
    phi: Vec<f64>,
}

/// Rows per batch: large enough for the block-wise walks, small enough to
/// keep a burst's first records from waiting long.
const BATCH_ROWS: usize = 1024;

struct Pending {
    /// Where the record's text is in [`Batch::texts`].
    text: std::ops::Range<usize>,
    had_detection: bool,
    outcome: Outcome,
}

enum Outcome {
    /// Scorable: its row's index in the batch, its features and the
    /// features whose category the model has not seen.
    Row {
        index: usize,
        unseen: Vec<usize>,
    },
    Error(String),
}

impl Stage {
    /// Loads the model (and its grading under `policy`); an error here is
    /// a usage error: no model, or one that does not load.
    pub fn new(
        source: Source,
        policy: SeverityPolicy,
        options: Options,
        report: Option<ReportSpec>,
        pseudonymiser: Option<pf_privacy::Pseudonymiser>,
    ) -> anyhow::Result<Stage> {
        let (path, watch) = match source {
            Source::File(path) => (path, None),
            Source::Dir { dir, hup } => (
                dir.current()?,
                Some(Watch {
                    dir,
                    last_check: Instant::now(),
                    hup,
                    refused: None,
                }),
            ),
        };
        let loaded = Loaded::open(&path)?;
        let grading = loaded.grading(policy);
        let thresholds = grading.thresholds;
        Ok(Stage {
            options,
            unscorable: 0,
            loaded,
            policy,
            grading,
            unseen_counts: Default::default(),
            batch: Batch::default(),
            watch,
            report: report.map(|spec| Report {
                path: spec.path,
                scores: ScoreReport::new(
                    pf_report::Thresholds {
                        high: thresholds.high,
                        medium: thresholds.medium,
                        low: thresholds.low,
                    },
                    spec.top,
                ),
                written: Instant::now(),
                written_at: 0,
            }),
            pseudonymiser,
        })
    }

    /// Takes one input line (`number` of `origin`); a line that is not a
    /// record, or a record that cannot be scored, is reported to `errors`.
    /// Finished records are appended to `out`.
    pub fn record(
        &mut self,
        text: &str,
        number: u64,
        origin: Origin<'_>,
        errors: &mut LineErrors,
        out: &mut Vec<u8>,
    ) {
        if let Some(problem) = pf_cli::not_an_object(text) {
            return errors.report(origin, number, problem);
        }
        if self.batch.records.is_empty() {
            self.maybe_reload();
        }
        let encoder = &self.loaded.detector.encoder;
        let d = encoder.names().len();
        let rows = &mut self.batch.rows;
        let start = rows.len();
        rows.resize(start + d, 0.0);
        let mut unseen = Vec::new();
        let mut de = serde_json::Deserializer::from_str(text);
        let parsed = RecordSeed {
            encoder,
            row: &mut rows[start..],
            unseen: &mut unseen,
        }
        .deserialize(&mut de)
        .and_then(|record| de.end().map(|()| record));
        let record = match parsed {
            Ok(r) => r,
            Err(e) => {
                rows.truncate(start);
                return errors.report(origin, number, pf_cli::not_a_record(&e, text));
            }
        };
        let model = &self.loaded.detector.model;
        let wrong_set = match (&record.feature_set, &model.feature_set) {
            (Some(got), Some(want)) if got != want => Some(format!(
                "record has features of set `{got}` but model {} was trained on set \
                 `{want}`; compute them with `pf-features --features {want}` or score with \
                 a model trained on `{got}`",
                model.version
            )),
            _ => None,
        };
        let outcome = match (wrong_set, record.features) {
            (None, Some(Ok(()))) => Outcome::Row {
                index: start / d.max(1),
                unseen,
            },
            (Some(problem), _) => {
                errors.report(origin, number, &problem);
                Outcome::Error(problem)
            }
            (None, None) => {
                let problem = "record has no `features` object (run it through pf-features first)";
                errors.report(origin, number, problem);
                Outcome::Error(problem.to_string())
            }
            (None, Some(Err(problem))) => {
                errors.report(origin, number, format_args!("cannot score: {problem}"));
                Outcome::Error(problem.to_string())
            }
        };
        match outcome {
            Outcome::Error(_) => {
                rows.truncate(start);
                self.unscorable += 1;
            }
            Outcome::Row { .. } => self.batch.failures.push(Failure::of(
                record.program.as_deref(),
                record.level.as_deref(),
            )),
        }
        let texts = &mut self.batch.texts;
        let at = texts.len();
        texts.push_str(text);
        self.batch.records.push(Pending {
            text: at..texts.len(),
            had_detection: record.had_detection,
            outcome,
        });
        if self.batch.rows.len() / d.max(1) + 1 >= BATCH_ROWS
            || self.batch.records.len() >= BATCH_ROWS
        {
            self.finish_batch(out);
        }
    }

    /// Input went idle: finish the batch, follow a new current model, and
    /// rewrite the report if a minute has passed.
    pub fn idle(&mut self, out: &mut Vec<u8>) {
        self.finish_batch(out);
        self.maybe_reload();
        self.write_report(false);
    }

    /// End of input: the last batch, the report, and the unseen-category
    /// summary on stderr.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.finish_batch(out);
        self.write_report(true);
        self.report_unseen();
    }
}

impl Stage {
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

    /// Scores, grades and explains the batch and appends its records, in
    /// input order, to `out`.
    fn finish_batch(&mut self, out: &mut Vec<u8>) {
        let options = self.options;
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
        for (grade, failure) in batch.grades.iter_mut().zip(batch.failures.iter_mut()) {
            (grade.severity, *failure) = options.failures.apply(*failure, grade.severity);
        }
        // Explain the rows that need it, all at once.
        let mut explained = vec![usize::MAX; n];
        batch.explain_rows.clear();
        let mut k = 0;
        for (i, grade) in batch.grades.iter().enumerate() {
            if grade.is_anomaly() || options.explain_all {
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
        for pending in batch.records.drain(..) {
            detection.clear();
            let mut text = Cow::Borrowed(&batch.texts[pending.text.clone()]);
            if let Some(p) = &self.pseudonymiser {
                if let Cow::Owned(changed) = p.record_text(&text) {
                    text = Cow::Owned(changed);
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
                Outcome::Row { index, unseen } => {
                    let phi = (explained[*index] != usize::MAX).then(|| {
                        let at = explained[*index] * d;
                        &batch.phi[at..at + d]
                    });
                    let values = (batch.grades[*index].is_anomaly() && phi.is_some())
                        .then(|| feature_values(&text));
                    let score = batch.scores[*index];
                    if let Some(report) = &mut self.report {
                        report.scores.add(score);
                        let grade = batch.grades[*index];
                        if let (true, Some(phi)) = (grade.is_anomaly(), phi) {
                            let view: ReportView =
                                serde_json::from_str(&text).unwrap_or(ReportView {
                                    raw: None,
                                    ts: None,
                                    kind: None,
                                });
                            if let Some(ts) = &view.ts {
                                report.scores.add_anomaly_at(ts, grade.severity);
                            }
                            if report.scores.wants(score) {
                                let names = self.loaded.detector.encoder.names();
                                report.scores.offer(Anomaly {
                                    score,
                                    ts: view.ts.unwrap_or_default(),
                                    kind: view.kind.unwrap_or_default(),
                                    raw: view.raw.unwrap_or_default(),
                                    top_features: top_order(phi, options.top)
                                        .map(|i| Contribution {
                                            feature: names[i].clone(),
                                            value: values
                                                .as_ref()
                                                .and_then(|v| v.get(&names[i]))
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
                        (batch.grades[*index], batch.failures[*index]),
                        phi,
                        values.as_ref(),
                        unseen,
                        &mut detection,
                    )
                }
            };
            if is_anomaly || !options.only_anomalies {
                // The text parsed as a JSON object before, so this cannot fail.
                let _ =
                    write_with_field(out, &text, "detection", &detection, pending.had_detection);
            }
        }
        batch.rows.clear();
        batch.failures.clear();
        batch.scores.clear();
        batch.texts.clear();
        self.batch = batch;
    }

    /// Writes the detection object; returns whether the record is an anomaly.
    fn write_detection(
        &mut self,
        score: f64,
        (grade, floored): (Grade, Option<Failure>),
        phi: Option<&[f64]>,
        values: Option<&Map<String, Value>>,
        unseen: &[usize],
        out: &mut Vec<u8>,
    ) -> bool {
        let options = self.options;
        let is_anomaly = grade.is_anomaly();
        let severity = grade.severity;
        out.extend_from_slice(b"{\"score\":");
        write_f64(out, score);
        if let Some(rarity) = grade.rarity {
            out.extend_from_slice(b",\"rarity\":");
            write_f64(out, rarity.round());
        }
        out.extend_from_slice(if is_anomaly {
            b",\"is_anomaly\":true"
        } else {
            b",\"is_anomaly\":false"
        });
        out.extend_from_slice(b",\"severity\":");
        write_str(out, severity);
        if let Some(failure) = floored {
            out.extend_from_slice(b",\"severity_floor\":");
            write_str(out, failure.name());
        }
        let names = self.loaded.detector.encoder.names();
        if let (true, Some(phi)) = (is_anomaly, phi) {
            out.extend_from_slice(b",\"top_features\":[");
            for (k, i) in top_order(phi, options.top).enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"feature\":");
                write_str(out, &names[i]);
                out.extend_from_slice(b",\"value\":");
                match values.and_then(|v| v.get(&names[i])) {
                    Some(v) => out.extend_from_slice(v.to_string().as_bytes()),
                    None => out.extend_from_slice(b"null"),
                }
                out.extend_from_slice(b",\"contribution\":");
                write_f64(out, phi[i]);
                out.push(b'}');
            }
            out.push(b']');
        }
        if let (true, Some(phi)) = (options.explain_all, phi) {
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
        let scored = report.scores.scored();
        if !at_end && (report.written.elapsed() < REPORT_EVERY || scored == report.written_at) {
            return;
        }
        report.written = Instant::now();
        report.written_at = scored;
        let title = format!(
            "model {}, {} records",
            self.loaded.detector.model.version,
            report.scores.scored()
        );
        let incidents = report
            .path
            .parent()
            .map(|dir| pf_report::incident_rows(&dir.join(pf_report::INCIDENTS_FILE)))
            .unwrap_or_default();
        let page = report.scores.render(&title, &incidents);
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
