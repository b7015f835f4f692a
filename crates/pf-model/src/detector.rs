//! A loaded model ready to score, explain and grade records, whatever it
//! holds: the tail model (pf-train's default) or an Isolation Forest
//! (`pf-train --detector forest`, or imported from scikit-learn).

use crate::calibration::{Calibration, MAX_RARITY};
use crate::encode::Encoder;
use crate::model::Model;
use crate::scorer::Scorer;
use crate::shap::Explainer;
use crate::tails::Tails;
use anyhow::{anyhow, Result};

enum Scoring {
    Forest {
        scorer: Scorer,
        explainer: Box<Explainer>,
    },
    Tails(Tails),
}

pub struct Detector {
    pub model: Model,
    pub encoder: Encoder,
    scoring: Scoring,
}

/// Severity cut-offs on the decision score: below `high` is high, and so on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreThresholds {
    pub high: f64,
    pub medium: f64,
    pub low: f64,
}

impl Default for ScoreThresholds {
    /// The old system's cut-offs, on scikit-learn's decision-function scale.
    fn default() -> Self {
        ScoreThresholds {
            high: -0.1,
            medium: -0.05,
            low: 0.0,
        }
    }
}

impl ScoreThresholds {
    pub fn severity(&self, score: f64) -> &'static str {
        if score < self.high {
            "high"
        } else if score < self.medium {
            "medium"
        } else if score < self.low {
            "low"
        } else {
            "none"
        }
    }
}

/// How severities are decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SeverityPolicy {
    /// Raw score cut-offs (the old system's `anomaly.threshold`).
    Scores(ScoreThresholds),
    /// Expected false-alarm rates: a line is `low` when at most one in
    /// `low` normal lines scores like it, and so on.
    Rarity { low: f64, medium: f64, high: f64 },
}

impl From<&pf_config::Anomaly> for SeverityPolicy {
    /// Raw `anomaly.threshold` cut-offs win when the config sets them (the
    /// old system's config migrates as it is), else `anomaly.rarity`.
    fn from(a: &pf_config::Anomaly) -> SeverityPolicy {
        match a.threshold {
            Some(t) => SeverityPolicy::Scores(ScoreThresholds {
                high: t.high,
                medium: t.medium,
                low: t.low,
            }),
            None => SeverityPolicy::Rarity {
                low: a.rarity.low,
                medium: a.rarity.medium,
                high: a.rarity.high,
            },
        }
    }
}

/// Rarity cut-offs: one in `low` normal lines, and so on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RarityCuts {
    pub low: f64,
    pub medium: f64,
    pub high: f64,
}

impl RarityCuts {
    pub fn severity(&self, rarity: f64) -> &'static str {
        if rarity >= self.high {
            "high"
        } else if rarity >= self.medium {
            "medium"
        } else if rarity >= self.low {
            "low"
        } else {
            "none"
        }
    }
}

/// How one model's records are graded under a policy, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Grading {
    /// Score cut-offs: the policy's own, or (rarity policy) the scores at
    /// which the calibration reaches each rarity, for the report's
    /// histogram.
    pub thresholds: ScoreThresholds,
    /// Rarity policy on a calibrated model: severities come from rarity.
    pub rarity: Option<RarityCuts>,
    /// Set when a rarity policy had to fall back to raw cut-offs.
    pub fallback: Option<String>,
}

/// One record's verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grade {
    pub rarity: Option<f64>,
    pub severity: &'static str,
}

impl Grade {
    pub fn is_anomaly(&self) -> bool {
        self.severity != "none"
    }
}

impl Detector {
    pub fn new(model: Model) -> Result<Detector> {
        let d = model.features.len();
        let scoring = match (&model.tails, &model.forest) {
            (Some(tails), _) => Scoring::Tails(tails.clone().compiled()),
            (None, Some(forest)) => Scoring::Forest {
                scorer: Scorer::new(forest, d)?,
                explainer: Box::new(Explainer::new(forest, d)),
            },
            (None, None) => {
                return Err(anyhow!("the model holds neither a forest nor a tail model"))
            }
        };
        Ok(Detector {
            encoder: Encoder::new(&model),
            model,
            scoring,
        })
    }

    /// Decision scores (negative = anomalous) of row-major `rows`.
    pub fn decision_function(&self, rows: &[f32], out: &mut [f64]) {
        match &self.scoring {
            Scoring::Forest { scorer, .. } => scorer.decision_function(rows, out),
            Scoring::Tails(t) => t.decision_function(rows, out),
        }
    }

    /// Per-feature contributions, `d` a row: exact TreeSHAP values of the
    /// forest's path length, or the tail model's terms, which add up to
    /// the score with the model's offset. Negative = towards anomalous.
    pub fn explain_many(&mut self, rows: &[f32], phi: &mut [f64]) {
        match &mut self.scoring {
            Scoring::Forest { explainer, .. } => explainer.explain_many(rows, phi),
            Scoring::Tails(t) => t.explain_many(rows, phi),
        }
    }

    pub fn calibration(&self) -> Option<&Calibration> {
        self.model.calibration.as_ref()
    }

    /// "One in N normal lines" for a record's score and row, when the model
    /// is calibrated: the calibration's rarity of the score, or for the
    /// tail model the union bound of its most surprising feature where
    /// that says rarer (far in the tail, beyond what the held-back rows
    /// could show).
    pub fn rarity(&self, score: f64, row: &[f32]) -> Option<f64> {
        let c = self.calibration()?;
        let mut rarity = c.rarity(score);
        if let Scoring::Tails(t) = &self.scoring {
            rarity = rarity.max(t.bound_rarity(row));
        }
        Some(rarity.min(MAX_RARITY))
    }

    /// Rarity and severity of a record.
    pub fn grade(&self, grading: &Grading, score: f64, row: &[f32]) -> Grade {
        let rarity = self.rarity(score, row);
        let severity = match (grading.rarity, rarity) {
            (Some(cuts), Some(r)) => cuts.severity(r),
            _ => grading.thresholds.severity(score),
        };
        Grade { rarity, severity }
    }

    pub fn grading(&self, policy: SeverityPolicy) -> Grading {
        match (policy, self.calibration()) {
            (SeverityPolicy::Scores(t), _) => Grading {
                thresholds: t,
                rarity: None,
                fallback: None,
            },
            (SeverityPolicy::Rarity { low, medium, high }, Some(c)) => Grading {
                thresholds: ScoreThresholds {
                    high: c.score_at_rarity(high),
                    medium: c.score_at_rarity(medium),
                    low: c.score_at_rarity(low),
                },
                rarity: Some(RarityCuts { low, medium, high }),
                fallback: None,
            },
            (SeverityPolicy::Rarity { .. }, None) => Grading {
                thresholds: ScoreThresholds::default(),
                rarity: None,
                fallback: Some(format!(
                    "model {} has no rarity calibration (imported, or trained before calibration \
                     existed), so severities use the raw score cut-offs high < -0.1, \
                     medium < -0.05, low < 0; retrain it with pf-train, or set \
                     anomaly.threshold in the config",
                    self.model.version
                )),
            },
        }
    }
}
