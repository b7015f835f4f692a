//! The tail model: every feature scored by how far into the tail of its
//! training distribution a value lies, the surprises added up.
//!
//! Why not only the forest: a tree can split only on a feature that varied
//! in its sample, and a value beyond the training range lands in the same
//! leaf as the training maximum. A real server's training window rarely
//! holds every kind of attack, so the features built for them are constant
//! in training and the forest is blind to them. Here a value beyond the
//! largest ever seen is rarer than anything seen, and the further beyond,
//! the rarer; a category never seen is rarer than any seen. The idea is
//! that of ECOD (Li et al., 2022: empirical-CDF tail probabilities summed
//! as negative logs), with three changes for log features: the side that
//! is unusual is declared per feature (a failure count is unusual when
//! high, an hour when rarely seen, a length at either end), values beyond
//! the training range extrapolate instead of saturating, and surprise below
//! a floor (values at least as common as one line in `1/floor`) counts
//! zero, so the many ordinary features of an ordinary line add no noise.
//!
//! Surprise of a value is −ln p, p its smoothed tail probability; the
//! record's decision score is `offset − Σ max(0, surprise − floor)`, so the
//! per-feature terms are an exact explanation: they add up to the score.

use crate::forest::Contamination;
use crate::train::percentile;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Which values of a feature are unusual.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Large values (counts, rates, levels): P(X ≥ x).
    Upper,
    /// Values at either end (lengths, unknown numeric columns).
    Both,
    /// Values seen rarely, wherever they lie (categories, hour of day).
    Rare,
}

/// Distinct training values kept exactly per feature; beyond this the
/// middle of the distribution is thinned (the ends, where the tails are,
/// stay exact), which bounds the model file.
const MAX_KNOTS: usize = 1024;
const EXACT_ENDS: usize = 256;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailColumn {
    pub side: Side,
    /// Distinct training values, ascending.
    pub values: Vec<f64>,
    /// Upper/Both: training rows with a value ≥ `values[i]`. Rare: rows
    /// with a value seen at most as often as `values[i]` (its tail mass).
    pub counts: Vec<u64>,
    /// Upper/Both: how fast surprise grows beyond the training range: one
    /// more nat each time the distance beyond grows by e·`scale`.
    pub scale: f64,
    /// An ordinal level instead: each unit beyond the training range adds
    /// this many nats (ln of how many times rarer a level up is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_per_level: Option<f64>,
    /// Columns of one group are evidence of one thing: only the largest
    /// surprise of the group counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u16>,
}

/// How a column is fitted: its unusual side, evidence group and level step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColumnSpec {
    pub side: Side,
    pub group: Option<u16>,
    pub rarity_per_level: Option<f64>,
}

impl ColumnSpec {
    pub fn side(side: Side) -> ColumnSpec {
        ColumnSpec {
            side,
            group: None,
            rarity_per_level: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tails {
    /// Training rows the columns were counted on.
    pub rows: u64,
    /// Surprise (nats) a feature must exceed to count: ln 10 by default.
    pub floor: f64,
    pub columns: Vec<TailColumn>,
    pub contamination: Contamination,
    /// Decision score = offset − total surprise above the floors.
    pub offset: f64,
    /// Each column's surprises worked out ahead ([`Tails::compiled`]);
    /// empty: computed per value.
    #[serde(skip)]
    tables: Vec<Table>,
}

/// A column's surprise at each of its knots, so scoring a value is a
/// search and no logarithm (the same arithmetic as
/// [`TailColumn::surprise`], done once).
#[derive(Debug, Clone, PartialEq, Default)]
struct Table {
    /// Rare: at `values[i]`. Upper/Both: the upper tail at the first knot ≥ x.
    at: Vec<f64>,
    /// Both: the lower tail at the first knot > x (one more: none above).
    lower: Vec<f64>,
    never: f64,
}

impl Table {
    fn new(c: &TailColumn, rows: u64) -> Table {
        let n1 = (rows + 1) as f64;
        let tail = |count: u64| -((count + 1) as f64 / n1).min(1.0).ln();
        let lower = match c.side {
            Side::Both => (0..=c.counts.len())
                .map(|i| tail(rows.saturating_sub(c.counts.get(i).copied().unwrap_or(0))))
                .collect(),
            _ => Vec::new(),
        };
        Table {
            at: c.counts.iter().map(|&k| tail(k)).collect(),
            lower,
            never: n1.ln(),
        }
    }

    fn surprise(&self, c: &TailColumn, x: f64) -> f64 {
        let (Some(&min), Some(&max)) = (c.values.first(), c.values.last()) else {
            return 0.0;
        };
        if x.is_nan() {
            return self.never;
        }
        match c.side {
            Side::Rare => match c.values.binary_search_by(|v| v.total_cmp(&x)) {
                Ok(i) => self.at[i],
                Err(_) => self.never,
            },
            Side::Upper | Side::Both => {
                let upper = if x > max {
                    self.never + c.beyond(x - max)
                } else {
                    self.at[c.values.partition_point(|&v| v < x)]
                };
                if c.side == Side::Upper {
                    return upper;
                }
                let lower = if x < min {
                    self.never + c.beyond(min - x)
                } else {
                    self.lower[c.values.partition_point(|&v| v <= x)]
                };
                upper.max(lower)
            }
        }
    }
}

/// Default surprise floor: values at least as common as 1 line in 10 count zero.
pub const DEFAULT_FLOOR: f64 = std::f64::consts::LN_10;

impl TailColumn {
    fn fit(values: &mut [f64], spec: ColumnSpec) -> TailColumn {
        let side = spec.side;
        values.sort_unstable_by(f64::total_cmp);
        let n = values.len();
        let median = values.get(n / 2).copied().unwrap_or(0.0);
        let mut distinct: Vec<(f64, u64)> = Vec::new();
        for &v in values.iter() {
            match distinct.last_mut() {
                Some((last, c)) if *last == v => *c += 1,
                _ => distinct.push((v, 1)),
            }
        }
        let mut counts = Vec::with_capacity(distinct.len());
        match side {
            Side::Upper | Side::Both => {
                let mut at_or_above = n as u64;
                for &(_, c) in &distinct {
                    counts.push(at_or_above);
                    at_or_above -= c;
                }
            }
            Side::Rare => {
                // Tail mass of a value: rows of values seen at most as often.
                let mut by_count: Vec<u64> = distinct.iter().map(|&(_, c)| c).collect();
                by_count.sort_unstable();
                let mut mass = Vec::with_capacity(by_count.len());
                let mut total = 0;
                for &c in &by_count {
                    total += c;
                    mass.push(total);
                }
                for &(_, c) in &distinct {
                    let last_at_most = by_count.partition_point(|&k| k <= c) - 1;
                    counts.push(mass[last_at_most]);
                }
            }
        }
        let mut values: Vec<f64> = distinct.iter().map(|&(v, _)| v).collect();
        if side != Side::Rare && values.len() > MAX_KNOTS {
            let keep = thin(values.len());
            values = keep.iter().map(|&i| values[i]).collect();
            counts = keep.iter().map(|&i| counts[i]).collect();
        }
        let scale = match (values.first(), values.last()) {
            (Some(&min), Some(&max)) if side != Side::Rare => {
                let spread = (max - median).max(median - min);
                let integral = distinct.iter().all(|&(v, _)| v.fract() == 0.0);
                if spread > 0.0 {
                    spread
                } else if integral {
                    1.0
                } else {
                    max.abs().max(1.0) * 1e-3
                }
            }
            _ => 1.0,
        };
        TailColumn {
            side,
            values,
            counts,
            scale,
            nats_per_level: spec.rarity_per_level.map(f64::ln).filter(|n| *n > 0.0),
            group: spec.group,
        }
    }

    /// Surprise added by a distance beyond the training range.
    fn beyond(&self, distance: f64) -> f64 {
        match self.nats_per_level {
            Some(nats) => nats * distance,
            None => (distance / self.scale).ln_1p(),
        }
    }

    /// −ln of the value's smoothed tail probability among `rows` training
    /// rows; beyond the training range it keeps growing with the distance.
    pub fn surprise(&self, x: f64, rows: u64) -> f64 {
        let n1 = (rows + 1) as f64;
        let never = n1.ln();
        let (Some(&min), Some(&max)) = (self.values.first(), self.values.last()) else {
            return 0.0;
        };
        if x.is_nan() {
            return never;
        }
        let tail = |count: u64| -((count + 1) as f64 / n1).min(1.0).ln();
        match self.side {
            Side::Rare => match self.values.binary_search_by(|v| v.total_cmp(&x)) {
                Ok(i) => tail(self.counts[i]),
                Err(_) => never,
            },
            Side::Upper | Side::Both => {
                let upper = if x > max {
                    never + self.beyond(x - max)
                } else {
                    let i = self.values.partition_point(|&v| v < x);
                    tail(self.counts[i])
                };
                if self.side == Side::Upper {
                    return upper;
                }
                let lower = if x < min {
                    never + self.beyond(min - x)
                } else {
                    // Rows ≤ x = rows − rows > x.
                    let i = self.values.partition_point(|&v| v <= x);
                    let above = self.counts.get(i).copied().unwrap_or(0);
                    tail(rows.saturating_sub(above))
                };
                upper.max(lower)
            }
        }
    }
}

/// Indices of the knots kept from `len` distinct values: both ends exactly,
/// the middle evenly thinned.
fn thin(len: usize) -> Vec<usize> {
    let middle = MAX_KNOTS - 2 * EXACT_ENDS;
    let mut keep: Vec<usize> = (0..EXACT_ENDS).collect();
    let span = len - 2 * EXACT_ENDS;
    keep.extend((0..middle).map(|k| EXACT_ENDS + k * span / middle));
    keep.extend(len - EXACT_ENDS..len);
    keep.dedup();
    keep
}

impl Tails {
    /// Fits one column per feature from `rows` (row-major, `specs.len()`
    /// values a row) and sets the offset so that a `contamination` share of
    /// the training rows score below 0 (`auto`: 1 in 1,000). Returns the
    /// model and the training rows' decision scores.
    pub fn fit_scored(
        rows: &[f32],
        specs: &[ColumnSpec],
        contamination: Contamination,
    ) -> (Tails, Vec<f64>) {
        let d = specs.len();
        let n = rows.len() / d.max(1);
        let mut column = Vec::with_capacity(n);
        let columns = specs
            .iter()
            .enumerate()
            .map(|(j, &spec)| {
                column.clear();
                column.extend(rows.chunks_exact(d).map(|r| r[j] as f64));
                TailColumn::fit(&mut column, spec)
            })
            .collect();
        let mut tails = Tails {
            rows: n as u64,
            floor: DEFAULT_FLOOR,
            columns,
            contamination,
            offset: 0.0,
            tables: Vec::new(),
        };
        let mut totals = vec![0.0; n];
        tails.decision_function(rows, &mut totals);
        let share = match contamination {
            Contamination::Fraction(f) => f,
            Contamination::Auto => 0.001,
        };
        // totals are −surprise; the offset puts `share` of them below 0.
        tails.offset = -percentile(&mut totals.clone(), 100.0 * share);
        for t in &mut totals {
            *t += tails.offset;
        }
        (tails, totals)
    }

    pub fn validate(&self, d: usize) -> Result<()> {
        if self.columns.len() != d {
            bail!(
                "the tail model has {} columns for {d} features",
                self.columns.len()
            );
        }
        if !(self.floor.is_finite() && self.floor >= 0.0 && self.offset.is_finite()) {
            bail!("the tail model's floor or offset is not a finite number");
        }
        for (j, c) in self.columns.iter().enumerate() {
            let sorted = c.values.windows(2).all(|w| w[0] < w[1]);
            if c.values.is_empty()
                || c.values.len() != c.counts.len()
                || !sorted
                || c.values.iter().any(|v| !v.is_finite())
                || !(c.scale.is_finite() && c.scale > 0.0)
                || c.nats_per_level
                    .is_some_and(|n| !(n.is_finite() && n > 0.0))
                || c.counts.iter().any(|&k| k > self.rows)
            {
                bail!("tail column {j} is damaged (values unsorted, counts out of range or a bad scale)");
            }
        }
        Ok(())
    }

    /// Each feature's contribution to the score of one row: minus its
    /// surprise above the floor (0 or negative; negative = anomalous). In
    /// a group only the most surprising feature (the first of equals)
    /// keeps its contribution; the others add nothing beyond it.
    pub fn explain(&self, row: &[f32], phi: &mut [f64]) {
        if self.tables.len() == self.columns.len() {
            for (((c, t), &x), p) in self
                .columns
                .iter()
                .zip(&self.tables)
                .zip(row)
                .zip(phi.iter_mut())
            {
                *p = -(t.surprise(c, x as f64) - self.floor).max(0.0);
            }
        } else {
            for ((c, &x), p) in self.columns.iter().zip(row).zip(phi.iter_mut()) {
                *p = -(c.surprise(x as f64, self.rows) - self.floor).max(0.0);
            }
        }
        for (j, c) in self.columns.iter().enumerate() {
            let Some(g) = c.group else { continue };
            for (k, other) in self.columns.iter().enumerate().skip(j + 1) {
                if other.group != Some(g) {
                    continue;
                }
                // Keep the more negative; on a tie the earlier one.
                if phi[k] < phi[j] {
                    phi[j] = 0.0;
                    break;
                }
                phi[k] = 0.0;
            }
        }
    }

    /// The model with each column's surprises worked out ahead, for
    /// scoring many rows (the scores are the same to the bit).
    pub fn compiled(mut self) -> Tails {
        self.tables = self
            .columns
            .iter()
            .map(|c| Table::new(c, self.rows))
            .collect();
        self
    }

    /// Decision scores of `rows`: offset plus the contributions.
    pub fn decision_function(&self, rows: &[f32], out: &mut [f64]) {
        let d = self.columns.len();
        let mut phi = vec![0.0; d];
        for (row, o) in rows.chunks_exact(d).zip(out) {
            self.explain(row, &mut phi);
            *o = self.offset + phi.iter().sum::<f64>();
        }
    }

    /// How rare the row is at least, by its most surprising ordinal level
    /// (`nats_per_level` columns: the daemon's own severity): a level above
    /// any seen in training is rarer by the level's stated factor, and with
    /// d features a normal line has some column that surprising with
    /// probability at most d · e^−surprise (the union bound). Far in the
    /// tail, beyond what the held-back rows can show, this says how rare a
    /// `fatal:` or `panic:` never seen before is. Other columns are left to
    /// the calibration: beyond their training range only the
    /// extrapolation speaks, and drift makes that too eager for a bound.
    pub fn bound_rarity(&self, row: &[f32]) -> f64 {
        let most = self
            .columns
            .iter()
            .zip(row)
            .filter(|(c, _)| c.nats_per_level.is_some())
            .map(|(c, &x)| c.surprise(x as f64, self.rows))
            .fold(0.0, f64::max);
        (most.exp() / self.columns.len().max(1) as f64).max(1.0)
    }

    pub fn explain_many(&self, rows: &[f32], phi: &mut [f64]) {
        let d = self.columns.len();
        for (row, p) in rows.chunks_exact(d).zip(phi.chunks_exact_mut(d)) {
            self.explain(row, p);
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn compiled_tables_give_the_same_surprises() {
        let specs = [
            ColumnSpec::side(Side::Upper),
            ColumnSpec::side(Side::Both),
            ColumnSpec::side(Side::Rare),
        ];
        let n = 5000;
        let rows: Vec<f32> = (0..n)
            .flat_map(|i| {
                let i = i as f32;
                [
                    (i % 7.0).powi(2),
                    (i * 0.37).sin() * 100.0,
                    (i % 13.0).floor(),
                ]
            })
            .collect();
        let (plain, _) = Tails::fit_scored(&rows, &specs, Contamination::Fraction(0.01));
        let compiled = plain.clone().compiled();
        let probes: Vec<f32> = (-400..400)
            .map(|k| k as f32 * 0.5)
            .chain([f32::NAN, f32::MAX, -f32::MAX, 1e-30])
            .collect();
        for x in &probes {
            let row = [*x, *x, *x];
            let (mut a, mut b) = (vec![0.0f64; 3], vec![0.0f64; 3]);
            plain.explain(&row, &mut a);
            compiled.explain(&row, &mut b);
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{x}"
            );
        }
    }

    use super::*;

    fn column(values: &[f64], side: Side) -> TailColumn {
        TailColumn::fit(&mut values.to_vec(), ColumnSpec::side(side))
    }

    #[test]
    fn beyond_the_training_range_keeps_growing() {
        // A feature that never varied in training (a failure count, all 0).
        let c = column(&[0.0; 1000], Side::Upper);
        let s = |x| c.surprise(x, 1000);
        assert_eq!(s(0.0), 0.0);
        assert!(s(1.0) > (1001f64).ln() - 1e-9);
        assert!(s(6.0) > s(1.0) && s(40.0) > s(6.0) && s(1e6) > s(40.0));
    }

    #[test]
    fn upper_tail_is_monotone_and_smoothed() {
        let mut v: Vec<f64> = (0..900).map(|_| 0.0).collect();
        v.extend((0..90).map(|_| 1.0));
        v.extend((0..10).map(|_| 5.0));
        let c = column(&v, Side::Upper);
        let s = |x| c.surprise(x, 1000);
        // P(X >= 1) = 100/1000, smoothed (100+1)/(1000+1).
        assert!((s(1.0) - -(101.0f64 / 1001.0).ln()).abs() < 1e-12);
        // Between two values: the tail of the next one up.
        assert_eq!(s(3.0), s(5.0));
        assert!(s(0.5) <= s(1.0) && s(1.0) < s(5.0) && s(5.0) < s(5.5));
        assert_eq!(s(-3.0), 0.0);
    }

    #[test]
    fn both_sides_and_rare_values() {
        let v: Vec<f64> = (0..1000).map(|i| 100.0 + (i % 50) as f64).collect();
        let c = column(&v, Side::Both);
        assert!(c.surprise(10.0, 1000) > c.surprise(99.0, 1000));
        assert!(c.surprise(99.0, 1000) > c.surprise(125.0, 1000));
        assert!(c.surprise(200.0, 1000) > c.surprise(150.0, 1000));
        // Rare: hour 3 seen once is more surprising than hour 10, never-seen more still.
        let mut hours = vec![10.0; 990];
        hours.extend([3.0; 1]);
        hours.extend([22.0; 9]);
        let h = column(&hours, Side::Rare);
        let s = |x| h.surprise(x, 1000);
        assert!(s(10.0) < 1e-3 && s(22.0) < s(3.0) && s(3.0) < s(4.0));
        assert_eq!(s(4.0), (1001f64).ln());
    }

    #[test]
    fn contributions_add_up_to_the_score_and_unseen_is_rarest() {
        let mut rows = Vec::new();
        for i in 0..2000 {
            rows.extend([(i % 3) as f32, 0.0, (i % 24) as f32]);
        }
        let (t, _) = Tails::fit_scored(
            &rows,
            &[Side::Rare, Side::Upper, Side::Rare].map(ColumnSpec::side),
            Contamination::Fraction(0.01),
        );
        t.validate(3).unwrap();
        let probe = [7.0f32, 40.0, 5.0, 1.0, 6.0, 5.0];
        let mut scores = [0.0; 2];
        t.decision_function(&probe, &mut scores);
        let mut phi = [0.0; 3];
        t.explain(&probe[..3], &mut phi);
        assert!((t.offset + phi.iter().sum::<f64>() - scores[0]).abs() < 1e-12);
        assert!(phi[0] < 0.0 && phi[1] < phi[0] && phi[2] == 0.0);
        assert!(scores[0] < scores[1] && scores[1] < 0.0);
    }

    #[test]
    fn a_group_counts_its_most_surprising_feature_once_and_levels_step() {
        let mut rows = Vec::new();
        for i in 0..1000 {
            rows.extend([(i % 2) as f32, (i % 2) as f32, 0.0]);
        }
        let grouped = ColumnSpec {
            side: Side::Upper,
            group: Some(0),
            rarity_per_level: None,
        };
        let level = ColumnSpec {
            side: Side::Upper,
            group: None,
            rarity_per_level: Some(100.0),
        };
        let (t, _) = Tails::fit_scored(&rows, &[grouped, grouped, level], Contamination::Auto);
        let mut phi = [0.0; 3];
        t.explain(&[5.0, 9.0, 0.0], &mut phi);
        assert_eq!(phi[0], 0.0, "the smaller of the group adds nothing");
        assert!(phi[1] < 0.0);
        // Ties: the first keeps it.
        t.explain(&[9.0, 9.0, 0.0], &mut phi);
        assert!(phi[0] < 0.0 && phi[1] == 0.0);
        // Two levels above the highest seen: 2 ln 100 more than "never seen".
        t.explain(&[0.0, 0.0, 2.0], &mut phi);
        let never = (1001f64).ln() - t.floor;
        assert!((-phi[2] - (never + 2.0 * 100f64.ln())).abs() < 1e-9);
    }

    #[test]
    fn many_distinct_values_are_thinned_but_the_ends_stay_exact() {
        let v: Vec<f64> = (0..50_000).map(|i| i as f64 * 0.5).collect();
        let c = column(&v, Side::Both);
        assert!(c.values.len() <= MAX_KNOTS);
        let exact = column(&v[..1000], Side::Both);
        assert_eq!(exact.values.len(), 1000);
        assert_eq!(c.values.last(), v.last());
        let top = c.surprise(v[49_990], 50_000);
        assert!((top - -(11.0f64 / 50_001.0).ln()).abs() < 1e-12);
    }
}
