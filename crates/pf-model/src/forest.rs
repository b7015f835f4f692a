//! The Isolation Forest: trees as flat arrays (scikit-learn's layout) and
//! scoring with scikit-learn's exact formulas.
//!
//! Inputs are cast to `f32` before they meet a threshold, and a sample goes
//! left when `x <= threshold`, as in scikit-learn, so an imported model
//! gives bit-for-bit the same leaves.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Euler–Mascheroni constant, as `numpy.euler_gamma`.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// Average path length of an unsuccessful search in a binary search tree of
/// `n` samples: the depth a leaf holding `n` samples stands for.
pub fn average_path_length(n: u64) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

/// `score_samples` from the sum over `n_trees` trees of a row's path
/// lengths: `-2^(-mean path length / c(ψ))`.
pub fn score_from_path_sum(path_sum: f64, n_trees: usize, max_samples: u64) -> f64 {
    let denominator = n_trees as f64 * average_path_length(max_samples);
    let ratio = if denominator != 0.0 {
        path_sum / denominator
    } else {
        1.0
    };
    -(2f64.powf(-ratio))
}

/// One isolation tree; arrays are indexed by node id, the root is node 0.
/// Leaves have `left == right == -1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub feature: Vec<i32>,
    pub threshold: Vec<f64>,
    pub left: Vec<i32>,
    pub right: Vec<i32>,
    /// Training samples that reached the node.
    pub n_samples: Vec<u64>,
}

impl Tree {
    pub fn len(&self) -> usize {
        self.left.len()
    }

    pub fn is_empty(&self) -> bool {
        self.left.is_empty()
    }

    pub fn is_leaf(&self, node: usize) -> bool {
        self.left[node] < 0
    }

    /// Checks the arrays describe a proper tree over `n_features` features,
    /// so scoring can index without further checks.
    pub fn validate(&self, n_features: usize) -> Result<()> {
        let n = self.left.len();
        if n == 0 {
            bail!("tree has no nodes");
        }
        for (name, len) in [
            ("feature", self.feature.len()),
            ("threshold", self.threshold.len()),
            ("right", self.right.len()),
            ("n_samples", self.n_samples.len()),
        ] {
            if len != n {
                bail!("array `{name}` has {len} entries but `left` has {n}");
            }
        }
        let mut parents = vec![0u32; n];
        for i in 0..n {
            let (l, r) = (self.left[i], self.right[i]);
            if (l < 0) != (r < 0) {
                bail!("node {i} has one child only");
            }
            if l < 0 {
                continue;
            }
            let f = self.feature[i];
            if f < 0 || f as usize >= n_features {
                bail!("node {i} splits on feature {f}, but the model has {n_features} features");
            }
            if self.threshold[i].is_nan() {
                bail!("node {i} has a NaN threshold");
            }
            for c in [l, r] {
                let c = c as usize;
                if c >= n || c <= i {
                    bail!("node {i} points to child {c}, which is not a later node of the tree");
                }
                parents[c] += 1;
            }
        }
        if let Some(i) = (1..n).find(|&i| parents[i] != 1) {
            bail!("node {i} has {} parents (must be exactly one)", parents[i]);
        }
        Ok(())
    }

    /// The leaf `x` falls into. `x` is already cast to `f32`.
    pub fn leaf(&self, x: &[f32]) -> usize {
        self.leaf_and_depth(x).0
    }

    /// The leaf `x` falls into and its depth (root 0).
    pub fn leaf_and_depth(&self, x: &[f32]) -> (usize, u32) {
        let (mut node, mut depth) = (0usize, 0u32);
        while self.left[node] >= 0 {
            let f = self.feature[node] as usize;
            node = if (x[f] as f64) <= self.threshold[node] {
                self.left[node] as usize
            } else {
                self.right[node] as usize
            };
            depth += 1;
        }
        (node, depth)
    }

    /// What each leaf adds to a row's path-length sum, computed exactly as
    /// scikit-learn does (`(depth from 1) + c(n) - 1`, which is not always
    /// bit-equal to `depth + c(n)`), so sums and scores match to the bit.
    /// 0 for internal nodes.
    pub fn sklearn_leaf_terms(&self) -> Vec<f64> {
        self.per_leaf(|depth, n| ((depth + 1) as f64 + average_path_length(n)) - 1.0)
    }

    /// `value(depth, samples)` for each leaf, 0 for internal nodes.
    fn per_leaf(&self, value: impl Fn(u32, u64) -> f64) -> Vec<f64> {
        let depth = self.depths();
        (0..self.len())
            .map(|i| {
                if self.is_leaf(i) {
                    value(depth[i], self.n_samples[i])
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Depth of every node (root 0).
    pub fn depths(&self) -> Vec<u32> {
        let mut depth = vec![0u32; self.len()];
        for i in 0..self.len() {
            if self.left[i] >= 0 {
                depth[self.left[i] as usize] = depth[i] + 1;
                depth[self.right[i] as usize] = depth[i] + 1;
            }
        }
        depth
    }

    /// Path length each leaf stands for: its depth plus the average path
    /// length of the samples it holds (0 for internal nodes).
    pub fn leaf_path_lengths(&self) -> Vec<f64> {
        self.per_leaf(|depth, n| depth as f64 + average_path_length(n))
    }
}

/// What fixes the decision threshold: scikit-learn's `contamination`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Contamination {
    /// offset = -0.5, as in the original paper.
    Auto,
    /// offset = this quantile of the training scores.
    Fraction(f64),
}

impl Serialize for Contamination {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Contamination::Auto => s.serialize_str("auto"),
            Contamination::Fraction(f) => s.serialize_f64(*f),
        }
    }
}

impl<'de> Deserialize<'de> for Contamination {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) if t == "auto" => Ok(Contamination::Auto),
            Raw::Num(f) if f > 0.0 && f <= 0.5 => Ok(Contamination::Fraction(f)),
            _ => Err(serde::de::Error::custom(
                "contamination must be \"auto\" or a number in (0, 0.5]",
            )),
        }
    }
}

impl std::str::FromStr for Contamination {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "auto" {
            return Ok(Contamination::Auto);
        }
        match s.parse::<f64>() {
            Ok(f) if f > 0.0 && f <= 0.5 => Ok(Contamination::Fraction(f)),
            _ => Err(format!(
                "`{s}` is not a contamination: give `auto` or a fraction in (0, 0.5], e.g. 0.001"
            )),
        }
    }
}

/// The trees plus what turns path lengths into scikit-learn's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forest {
    /// ψ, the number of samples each tree was grown from (`max_samples_`).
    pub max_samples: u64,
    /// `decision_function = score_samples - offset`.
    pub offset: f64,
    pub contamination: Contamination,
    pub trees: Vec<Tree>,
}

impl Forest {
    pub fn validate(&self, n_features: usize) -> Result<()> {
        if self.trees.is_empty() {
            bail!("the forest has no trees");
        }
        if self.max_samples == 0 {
            bail!("max_samples must be at least 1");
        }
        if !self.offset.is_finite() {
            bail!("offset is not a finite number");
        }
        for (i, t) in self.trees.iter().enumerate() {
            t.validate(n_features)
                .map_err(|e| anyhow::anyhow!("tree {i}: {e}"))?;
        }
        Ok(())
    }

    /// Turns the sum of path lengths over all trees into `score_samples`.
    pub fn score_from_path_sum(&self, path_sum: f64) -> f64 {
        score_from_path_sum(path_sum, self.trees.len(), self.max_samples)
    }

    /// `score_samples` for one row already cast to `f32` (reference
    /// implementation; [`crate::Scorer`] is the fast one).
    pub fn score_samples(&self, x: &[f32]) -> f64 {
        let mut sum = 0.0;
        for t in &self.trees {
            let (node, depth) = t.leaf_and_depth(x);
            sum += ((depth + 1) as f64 + average_path_length(t.n_samples[node])) - 1.0;
        }
        self.score_from_path_sum(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_path_length_matches_sklearn_values() {
        assert_eq!(average_path_length(0), 0.0);
        assert_eq!(average_path_length(1), 0.0);
        assert_eq!(average_path_length(2), 1.0);
        // Printed by scikit-learn 1.9.1: _average_path_length(np.array([256])), ([3]).
        assert!((average_path_length(256) - 10.244_770_920_119_917).abs() < 1e-12);
        assert!((average_path_length(3) - 1.207_392_357_589_623).abs() < 1e-12);
    }

    fn stump() -> Tree {
        Tree {
            feature: vec![0, -1, -1],
            threshold: vec![0.5, 0.0, 0.0],
            left: vec![1, -1, -1],
            right: vec![2, -1, -1],
            n_samples: vec![3, 1, 2],
        }
    }

    #[test]
    fn leaf_goes_left_on_equal_and_path_lengths_add_leaf_size_term() {
        let t = stump();
        assert_eq!(t.leaf(&[0.5]), 1);
        assert_eq!(t.leaf(&[0.6]), 2);
        assert_eq!(t.leaf_path_lengths(), vec![0.0, 1.0, 2.0]);
    }

    #[test]
    fn validation_rejects_broken_trees() {
        let mut t = stump();
        t.left[0] = 0;
        assert!(t.validate(1).is_err());
        let mut t = stump();
        t.feature[0] = 3;
        assert!(t.validate(1).is_err());
        let mut t = stump();
        t.n_samples.pop();
        assert!(t.validate(1).is_err());
        assert!(stump().validate(1).is_ok());
    }

    #[test]
    fn contamination_parses_auto_and_fractions_only() {
        assert_eq!("auto".parse::<Contamination>(), Ok(Contamination::Auto));
        assert_eq!(
            "0.001".parse::<Contamination>(),
            Ok(Contamination::Fraction(0.001))
        );
        assert!("0.7".parse::<Contamination>().is_err());
        assert!("x".parse::<Contamination>().is_err());
    }
}
