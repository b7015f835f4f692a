//! The model file: self-describing JSON holding the feature encodings, the
//! optional scaler, the trees and how they were trained. Versions live side
//! by side in a models directory; a one-line `CURRENT` file names the one in
//! use, and without it the newest `model-*.json` is used.

use crate::calibration::Calibration;
use crate::forest::Forest;
use crate::tails::Tails;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "pf-model";
/// Version 2 added the tail model and the rarity calibration; a model
/// holding only a forest is still written as version 1, which older
/// builds read.
pub const FORMAT_VERSION: u32 = 2;
/// Name of the pointer file in a models directory.
pub const CURRENT: &str = "CURRENT";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub format: String,
    pub format_version: u32,
    /// UTC timestamp naming this model, e.g. `20261125T185200Z`.
    pub version: String,
    /// RFC 3339 creation time.
    pub created: String,
    pub features: Vec<FeatureSpec>,
    /// The pf-features set the model was trained on (`seed`, `behavioural`,
    /// ...); records of another set are refused. Absent for models trained
    /// on plain tables or imported from scikit-learn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_set: Option<String>,
    pub scaler: Option<Scaler>,
    /// An Isolation Forest (`pf-train --detector forest`, or imported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forest: Option<Forest>,
    /// The tail model (pf-train's default); exactly one of the two is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tails: Option<Tails>,
    /// How rare each score is among held-back normal records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// How the model was made (free-form: source, rows, seed, ...).
    #[serde(default)]
    pub training: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    pub name: String,
    #[serde(flatten)]
    pub kind: FeatureKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FeatureKind {
    Numeric,
    /// Strings mapped to codes; a category missing from `codes` gets `unseen`.
    Categorical {
        codes: BTreeMap<String, i64>,
        unseen: i64,
    },
}

/// scikit-learn's `StandardScaler` transform: `(x - mean) / scale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaler {
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
}

impl Model {
    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(|f| f.name.as_str())
    }

    /// Everything scoring relies on without further checks.
    pub fn validate(&self) -> Result<()> {
        if self.format != FORMAT {
            bail!(
                "not a pf model: `format` is {:?}, expected {FORMAT:?}",
                self.format
            );
        }
        if !(1..=FORMAT_VERSION).contains(&self.format_version) {
            bail!(
                "model format version {} is not supported by this build (it reads version \
                 {FORMAT_VERSION}); use the pf-score that came with the pf-train that wrote it",
                self.format_version
            );
        }
        let d = self.features.len();
        if d == 0 {
            bail!("the model lists no features");
        }
        let mut names = std::collections::HashSet::new();
        for f in &self.features {
            if !names.insert(f.name.as_str()) {
                bail!("feature `{}` is listed twice", f.name);
            }
        }
        if let Some(s) = &self.scaler {
            if s.mean.len() != d || s.scale.len() != d {
                bail!(
                    "scaler has {} means and {} scales for {d} features",
                    s.mean.len(),
                    s.scale.len()
                );
            }
            if s.mean.iter().chain(&s.scale).any(|v| !v.is_finite()) || s.scale.contains(&0.0) {
                bail!("scaler holds a zero scale or a non-finite number");
            }
        }
        if let Some(c) = &self.calibration {
            c.validate()?;
        }
        match (&self.forest, &self.tails) {
            (Some(forest), None) => forest.validate(d),
            (None, Some(tails)) => tails.validate(d),
            (Some(_), Some(_)) => bail!("the model holds both a forest and a tail model"),
            (None, None) => bail!("the model holds neither a `forest` nor `tails`"),
        }
    }

    /// The contamination that set the detector's offset.
    pub fn contamination(&self) -> Option<crate::forest::Contamination> {
        match (&self.forest, &self.tails) {
            (Some(f), _) => Some(f.contamination),
            (None, Some(t)) => Some(t.contamination),
            (None, None) => None,
        }
    }

    /// The oldest format version that can hold this model.
    pub fn needed_format_version(&self) -> u32 {
        if self.tails.is_some() || self.calibration.is_some() {
            2
        } else {
            1
        }
    }

    /// Reads and validates a model file.
    pub fn load(path: &Path) -> Result<Model> {
        let text = fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read model file {}; train one with pf-train or pass --model/--models-dir",
                path.display()
            )
        })?;
        Model::from_json(&text).with_context(|| format!("model file {}", path.display()))
    }

    /// Parses and validates a model; a model that passes can be scored and
    /// explained without panicking, whatever the file held.
    pub fn from_json(text: &str) -> Result<Model> {
        let model: Model = serde_json::from_str(text)
            .context("not a valid pf model (damaged or not written by pf-train?)")?;
        model.validate().context("inconsistent model")?;
        Ok(model)
    }

    /// Writes the model to `path` atomically (temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut model = std::borrow::Cow::Borrowed(self);
        if self.format_version != self.needed_format_version() {
            model.to_mut().format_version = self.needed_format_version();
        }
        let mut bytes = serde_json::to_vec(&model)?;
        bytes.push(b'\n');
        write_atomically(path, &bytes)
    }
}

/// Writes `bytes` to `path` so readers see the old or the new file, never
/// a part ([`pf_record::atomic::write_atomically`]).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    pf_record::atomic::write_atomically(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A directory of model versions.
#[derive(Debug, Clone)]
pub struct ModelsDir {
    pub dir: PathBuf,
}

impl ModelsDir {
    pub fn new(dir: impl Into<PathBuf>) -> ModelsDir {
        ModelsDir { dir: dir.into() }
    }

    /// Model files, oldest first (names sort by their UTC timestamp).
    pub fn versions(&self) -> Result<Vec<PathBuf>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", self.dir.display())),
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("model-") && n.ends_with(".json"))
            })
            .collect();
        files.sort_by_cached_key(|p| version_order(p));
        Ok(files)
    }

    /// The model in use: the one `CURRENT` names, else the newest.
    pub fn current(&self) -> Result<PathBuf> {
        let pointer = self.dir.join(CURRENT);
        match fs::read_to_string(&pointer) {
            Ok(name) => {
                let name = name.trim();
                if name.is_empty() || name.contains('/') {
                    bail!(
                        "{} should hold the file name of a model in that directory, not {name:?}",
                        pointer.display()
                    );
                }
                Ok(self.dir.join(name))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.versions()?.pop().ok_or_else(|| {
                    anyhow!(
                        "no model in {}: train one with pf-train (see pipelines/retrain.sh) or \
                         pass --model FILE",
                        self.dir.display()
                    )
                })
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", pointer.display())),
        }
    }

    /// Saves `model` as a new version and makes it current. Returns its path.
    pub fn publish(&self, model: &mut Model) -> Result<PathBuf> {
        let path = self.add(model)?;
        self.set_current(&path)?;
        Ok(path)
    }

    /// Saves `model` as a new version without making it current (a second
    /// version within the same second gets `-2`, `-3`, ...). Returns its path.
    pub fn add(&self, model: &mut Model) -> Result<PathBuf> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create models directory {}", self.dir.display()))?;
        let base = model.version.clone();
        let mut path = self.dir.join(format!("model-{base}.json"));
        let mut n = 2;
        while path.exists() {
            model.version = format!("{base}-{n}");
            path = self.dir.join(format!("model-{}.json", model.version));
            n += 1;
        }
        model.save(&path)?;
        Ok(path)
    }

    pub fn set_current(&self, model_path: &Path) -> Result<()> {
        let name = model_path
            .file_name()
            .ok_or_else(|| anyhow!("{} is not a model file", model_path.display()))?
            .to_string_lossy();
        write_atomically(&self.dir.join(CURRENT), format!("{name}\n").as_bytes())
    }
}

/// Sort key of a model file: its timestamp, then the `-N` suffix that a
/// second model in the same second gets (plain name order would put
/// `X-2` before `X`).
fn version_order(path: &Path) -> (String, u64) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let version = name.trim_start_matches("model-").trim_end_matches(".json");
    match version.rsplit_once('-') {
        Some((base, n)) if n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty() => {
            (base.to_string(), n.parse().unwrap_or(u64::MAX))
        }
        _ => (version.to_string(), 1),
    }
}

/// A version name for a model made at `now`.
pub fn version_at(now: chrono::DateTime<chrono::Utc>) -> String {
    now.format("%Y%m%dT%H%M%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_second_versions_sort_after_the_first() {
        let mut v: Vec<PathBuf> = [
            "model-20261125T191846Z-2.json",
            "model-20261125T191847Z.json",
            "model-20261125T191846Z.json",
            "model-20261125T191846Z-10.json",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        v.sort_by_cached_key(|p| version_order(p));
        let names: Vec<_> = v.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "model-20261125T191846Z.json",
                "model-20261125T191846Z-2.json",
                "model-20261125T191846Z-10.json",
                "model-20261125T191847Z.json"
            ]
        );
    }
}
