//! How rare a score is among normal traffic.
//!
//! A raw score says little to an admin ("−0.0004"); "1 in 250,000 normal
//! lines scores like this" says what to expect. pf-train scores records it
//! held back from fitting (spread evenly over its window) and keeps their score
//! distribution: percentiles for the common range and, for the rare end
//! where a few thousand rows cannot count directly, an exponential tail fit
//! to the top of the distribution (peaks over a threshold, as in extreme
//! value theory), which extrapolates to 1 in 100,000 and beyond.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Fewest held-back rows a calibration is estimated from.
pub const MIN_ROWS: usize = 200;
/// Share of the held-back rows the exponential tail is fitted to.
const TAIL_SHARE: f64 = 0.01;
/// Fewest rows in the fitted tail.
const MIN_TAIL_ROWS: usize = 50;
pub use pf_record::rarity::MAX_RARITY;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Held-back rows it was estimated on.
    pub rows: u64,
    /// Anomaly (minus the decision score) at every percentile 0..=100.
    pub percentiles: Vec<f64>,
    /// Where the exponential tail starts, the share of held-back rows at
    /// or above it, and its scale (mean excess).
    pub tail_start: f64,
    pub tail_share: f64,
    pub tail_scale: f64,
}

impl Calibration {
    /// From the decision scores of held-back normal rows; `None` with fewer
    /// than [`MIN_ROWS`] rows.
    pub fn fit(scores: &[f64]) -> Option<Calibration> {
        let mut a: Vec<f64> = scores
            .iter()
            .map(|s| -s)
            .filter(|v| v.is_finite())
            .collect();
        let n = a.len();
        if n < MIN_ROWS {
            return None;
        }
        a.sort_unstable_by(f64::total_cmp);
        let at = |q: f64| a[((q * (n - 1) as f64).round() as usize).min(n - 1)];
        let percentiles: Vec<f64> = (0..=100).map(|p| at(p as f64 / 100.0)).collect();
        let k = ((TAIL_SHARE * n as f64).ceil() as usize).max(MIN_TAIL_ROWS);
        let start = a[n - k];
        let first = a.partition_point(|&v| v < start);
        let share = (n - first) as f64 / n as f64;
        let above: Vec<f64> = a[first..]
            .iter()
            .filter(|&&v| v > start)
            .map(|v| v - start)
            .collect();
        let mean_excess = if above.is_empty() {
            0.0
        } else {
            above.iter().sum::<f64>() / above.len() as f64
        };
        // The decay between ten times the tail's share and the tail's start,
        // as a floor: a tail of ties would otherwise make any excess
        // infinitely rare.
        let wider = at((1.0 - 10.0 * share).max(0.0));
        let decay = (start - wider) / std::f64::consts::LN_10;
        let scale = [mean_excess, decay]
            .into_iter()
            .fold(0.0f64, f64::max)
            .max(1e-9);
        Some(Calibration {
            rows: n as u64,
            percentiles,
            tail_start: start,
            tail_share: share,
            tail_scale: if scale > 1e-9 { scale } else { 1.0 },
        })
    }

    pub fn validate(&self) -> Result<()> {
        let sorted = self.percentiles.windows(2).all(|w| w[0] <= w[1]);
        if self.percentiles.len() != 101
            || !sorted
            || self.percentiles.iter().any(|v| !v.is_finite())
            || !self.tail_start.is_finite()
            || !(self.tail_share > 0.0 && self.tail_share <= 1.0)
            || !(self.tail_scale.is_finite() && self.tail_scale > 0.0)
        {
            bail!("the rarity calibration is damaged (101 ascending percentiles and a positive tail expected)");
        }
        Ok(())
    }

    /// Share of normal lines expected to score at or below `score`.
    pub fn share_at_or_below(&self, score: f64) -> f64 {
        let a = -score;
        if a >= self.tail_start {
            return self.tail_share * (-(a - self.tail_start) / self.tail_scale).exp();
        }
        let p = &self.percentiles;
        let i = p.partition_point(|&v| v < a);
        if i == 0 {
            return 1.0;
        }
        // Between percentiles i−1 and i: interpolate the cumulative share.
        let (lo, hi) = (p[i - 1], p[i]);
        let t = if hi > lo { (a - lo) / (hi - lo) } else { 1.0 };
        let below = ((i - 1) as f64 + t) / 100.0;
        (1.0 - below).max(self.tail_share)
    }

    /// "One in N normal lines" scores like this: 1 / share, at most [`MAX_RARITY`].
    pub fn rarity(&self, score: f64) -> f64 {
        (1.0 / self.share_at_or_below(score)).clamp(1.0, MAX_RARITY)
    }

    /// The score at which a line is as rare as one in `rarity` normal lines.
    pub fn score_at_rarity(&self, rarity: f64) -> f64 {
        let share = 1.0 / rarity.max(1.0);
        if share <= self.tail_share {
            return -(self.tail_start + self.tail_scale * (self.tail_share / share).ln());
        }
        let q = (1.0 - share) * 100.0;
        let i = (q.floor() as usize).min(99);
        let t = q - i as f64;
        let p = &self.percentiles;
        -(p[i] + t * (p[i + 1] - p[i])).min(self.tail_start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores of "normal" rows whose anomaly is exponential with scale 2:
    /// the tail fit must recover rarities far beyond what was counted.
    fn exponential_scores(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let u = (i as f64 + 0.5) / n as f64;
                -2.0 * (1.0 / u).ln()
            })
            .collect()
    }

    #[test]
    fn rarity_follows_an_exponential_tail_beyond_the_rows() {
        let c = Calibration::fit(&exponential_scores(20_000)).unwrap();
        c.validate().unwrap();
        for r in [10.0, 1000.0, 1e4, 1e5, 1e7] {
            let s = c.score_at_rarity(r);
            // The true score at rarity r is -2 ln r.
            let truth = -2.0 * f64::ln(r);
            assert!(
                (s - truth).abs() < 0.05 * truth.abs().max(1.0),
                "{r}: {s} vs {truth}"
            );
            assert!((c.rarity(s) / r - 1.0).abs() < 0.02, "{r}: {}", c.rarity(s));
        }
        // Monotone: lower score, rarer.
        let mut last = 0.0;
        for k in 0..200 {
            let r = c.rarity(1.0 - k as f64 * 0.2);
            assert!(r >= last);
            last = r;
        }
        assert_eq!(c.rarity(-1e9), MAX_RARITY);
    }

    #[test]
    fn ties_and_small_inputs() {
        assert!(Calibration::fit(&[0.0; 10]).is_none());
        let mut scores = vec![0.0; 9_990];
        scores.extend([-1.0; 10]);
        let c = Calibration::fit(&scores).unwrap();
        c.validate().unwrap();
        assert!(c.rarity(-5.0) > c.rarity(-1.0) && c.rarity(-1.0) >= c.rarity(0.0));
        assert!(c.rarity(-5.0).is_finite());
    }
}
