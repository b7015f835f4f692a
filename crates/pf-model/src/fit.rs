//! Fitting the chosen detector on a training table and calibrating its
//! scores by cross-fitting.
//!
//! Calibration needs scores of normal rows the model did not learn from.
//! Holding back a share of the rows would calibrate on a fifth of them and
//! fit on the rest; instead the rows are cut into `folds` interleaved
//! folds, a model is fitted on all but one fold and scores that fold, so
//! every row gets a score from a model that never saw it, and the model
//! kept is fitted on every row. The folds are interleaved (row i goes to
//! fold i mod k), not blocks of time: inputs are often one log after
//! another, and a block would be one program's lines that the rest never
//! showed.

use crate::calibration::{self, Calibration};
use crate::forest::{Contamination, Forest};
use crate::scorer::Scorer;
use crate::tails::{ColumnSpec, Tails};
use crate::train::{fit_scored, percentile, TrainParams};

pub enum Method {
    /// The tail model, with how each feature is read.
    Tails {
        columns: Vec<ColumnSpec>,
    },
    Forest(TrainParams),
}

pub struct Fitted {
    pub forest: Option<Forest>,
    pub tails: Option<Tails>,
    /// `None` with fewer than [`calibration::MIN_ROWS`] rows or no folds.
    pub calibration: Option<Calibration>,
    /// Decision scores of the training rows under the model kept.
    pub decisions: Vec<f64>,
    /// Rows whose out-of-fold scores the calibration was estimated on.
    pub calibration_rows: usize,
}

/// Fits on `rows` (row-major, `d` a row) and calibrates on out-of-fold
/// scores from `folds` folds (0 or 1: no calibration).
pub fn fit_detector(
    rows: &[f32],
    d: usize,
    method: &Method,
    contamination: Contamination,
    folds: usize,
) -> anyhow::Result<Fitted> {
    let n = rows.len() / d.max(1);
    let (forest, tails, decisions) = fit_one(rows, d, method, contamination)?;
    let mut held_scores = Vec::new();
    if folds >= 2 && n >= calibration::MIN_ROWS.max(folds * 2) {
        for k in 0..folds {
            let (fit_rows, held_rows) = split_fold(rows, d, folds, k);
            let (f, t, _) = fit_one(&fit_rows, d, method, contamination)?;
            let mut scores = vec![0.0; held_rows.len() / d];
            match (&f, &t) {
                (Some(f), _) => Scorer::new(f, d)?.decision_function(&held_rows, &mut scores),
                (None, Some(t)) => t.decision_function(&held_rows, &mut scores),
                (None, None) => {}
            }
            // Out-of-fold scores are on each fold model's own offset; put
            // them on the kept model's scale through their anomaly below
            // the fold's offset.
            let shift = offset_of(&f, &t) - offset_of(&forest, &tails);
            held_scores.extend(scores.iter().map(|s| s - shift));
        }
    }
    let mut tails = tails;
    let mut decisions = decisions;
    if let (Some(t), Contamination::Fraction(share), false) = (
        &mut tails,
        contamination,
        held_scores.len() < calibration::MIN_ROWS,
    ) {
        // The tail model's cut-off from out-of-fold scores: a `share` of
        // rows it never saw score below 0, so with the default rarities 0
        // is about where `low` starts. (The forest keeps scikit-learn's
        // in-sample offset.)
        let shift = percentile(&mut held_scores.clone(), 100.0 * share);
        t.offset -= shift;
        for s in held_scores.iter_mut().chain(decisions.iter_mut()) {
            *s -= shift;
        }
    }
    Ok(Fitted {
        calibration_rows: held_scores.len(),
        calibration: Calibration::fit(&held_scores),
        forest,
        tails,
        decisions,
    })
}

type Parts = (Option<Forest>, Option<Tails>, Vec<f64>);

fn fit_one(
    rows: &[f32],
    d: usize,
    method: &Method,
    contamination: Contamination,
) -> anyhow::Result<Parts> {
    Ok(match method {
        Method::Tails { columns } => {
            let (tails, decisions) = Tails::fit_scored(rows, columns, contamination);
            (None, Some(tails), decisions)
        }
        Method::Forest(params) => {
            let params = TrainParams {
                contamination,
                ..params.clone()
            };
            let (forest, scores) = fit_scored(rows, d, &params);
            let decisions = scores.iter().map(|s| s - forest.offset).collect();
            (Some(forest), None, decisions)
        }
    })
}

/// The constant a model's decision score adds (tail model) or subtracts
/// (forest) to its raw anomaly measure.
fn offset_of(forest: &Option<Forest>, tails: &Option<Tails>) -> f64 {
    match (forest, tails) {
        (Some(f), _) => -f.offset,
        (None, Some(t)) => t.offset,
        (None, None) => 0.0,
    }
}

/// Rows not in fold `k`, and the rows of fold `k` (row i is in fold i mod `folds`).
fn split_fold(rows: &[f32], d: usize, folds: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
    let mut fit = Vec::with_capacity(rows.len());
    let mut held = Vec::with_capacity(rows.len() / folds + d);
    for (i, row) in rows.chunks_exact(d).enumerate() {
        if i % folds == k {
            held.extend_from_slice(row);
        } else {
            fit.extend_from_slice(row);
        }
    }
    (fit, held)
}
