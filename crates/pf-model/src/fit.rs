//! Fitting the chosen detector on a training table and calibrating it on
//! rows held back from the fit, spread evenly over the table (not its
//! newest part: inputs are often one log after another, so the newest rows
//! would be one program's lines that the fit never saw).

use crate::calibration::{self, Calibration};
use crate::forest::{Contamination, Forest};
use crate::scorer::Scorer;
use crate::tails::{Side, Tails};
use crate::train::{fit_scored, TrainParams};

pub enum Method {
    /// The tail model, with which side of each feature is unusual.
    Tails {
        sides: Vec<Side>,
    },
    Forest(TrainParams),
}

pub struct Fitted {
    pub forest: Option<Forest>,
    pub tails: Option<Tails>,
    /// `None` when too few rows were left to hold back.
    pub calibration: Option<Calibration>,
    /// Decision scores of the rows the detector was fitted on.
    pub decisions: Vec<f64>,
    pub calibration_rows: usize,
}

/// Fits on `rows` (row-major, `d` a row) less a `calibration_share` of
/// them, evenly spread, which calibrate the scores' rarity. With
/// fewer than [`calibration::MIN_ROWS`] rows to hold back, everything is
/// fitted and the model has no calibration.
pub fn fit_detector(
    rows: &[f32],
    d: usize,
    method: &Method,
    contamination: Contamination,
    calibration_share: f64,
) -> anyhow::Result<Fitted> {
    let n = rows.len() / d.max(1);
    let held = (n as f64 * calibration_share).floor() as usize;
    let held = if held >= calibration::MIN_ROWS && n - held >= calibration::MIN_ROWS {
        held
    } else {
        0
    };
    let (fit_rows, calibration_rows) = if held > 0 {
        split_evenly(rows, d, calibration_share)
    } else {
        (rows.to_vec(), Vec::new())
    };
    let held = calibration_rows.len() / d.max(1);
    let (fit_rows, calibration_rows) = (&fit_rows[..], &calibration_rows[..]);
    let mut held_scores = vec![0.0; held];
    let fitted = match method {
        Method::Tails { sides } => {
            let tails = Tails::fit(fit_rows, sides, contamination);
            let mut decisions = vec![0.0; n - held];
            tails.decision_function(fit_rows, &mut decisions);
            tails.decision_function(calibration_rows, &mut held_scores);
            Fitted {
                forest: None,
                tails: Some(tails),
                calibration: None,
                decisions,
                calibration_rows: held,
            }
        }
        Method::Forest(params) => {
            let params = TrainParams {
                contamination,
                ..params.clone()
            };
            let (forest, scores) = fit_scored(fit_rows, d, &params);
            if held > 0 {
                Scorer::new(&forest, d)?.decision_function(calibration_rows, &mut held_scores);
            }
            let decisions = scores.iter().map(|s| s - forest.offset).collect();
            Fitted {
                forest: Some(forest),
                tails: None,
                calibration: None,
                decisions,
                calibration_rows: held,
            }
        }
    };
    Ok(Fitted {
        calibration: Calibration::fit(&held_scores),
        ..fitted
    })
}

/// Row i is held back when ⌊(i+1)·share⌋ > ⌊i·share⌋: a `share` of the
/// rows, one every 1/share.
fn split_evenly(rows: &[f32], d: usize, share: f64) -> (Vec<f32>, Vec<f32>) {
    let mut fit = Vec::with_capacity(rows.len());
    let mut held = Vec::with_capacity((rows.len() as f64 * share) as usize + d);
    for (i, row) in rows.chunks_exact(d).enumerate() {
        let i = i as f64;
        if ((i + 1.0) * share).floor() > (i * share).floor() {
            held.extend_from_slice(row);
        } else {
            fit.extend_from_slice(row);
        }
    }
    (fit, held)
}
