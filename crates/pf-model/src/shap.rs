//! Exact path-dependent TreeSHAP (Lundberg et al., "Consistent
//! individualized feature attribution for tree ensembles", algorithm 2), as
//! `shap.TreeExplainer` applies it to an Isolation Forest: each tree's leaf
//! value is its path length (depth + c(leaf samples)), node covers are the
//! training sample counts, and the forest output is the mean over trees. So
//! the values explain the expected path length: a negative value shortened
//! the row's path, i.e. pushed it towards "anomalous".
//!
//! The path bookkeeping follows the published algorithm step by step, in
//! `f64`, so results agree with shap to rounding.

use crate::forest::{Forest, Tree};

#[derive(Debug, Clone, Copy, Default)]
struct PathElement {
    feature: i32,
    zero_fraction: f64,
    one_fraction: f64,
    weight: f64,
}

/// One tree prepared for explaining.
#[derive(Debug, Clone)]
struct ShapTree {
    tree: Tree,
    value: Vec<f64>,
    cover: Vec<f64>,
    max_depth: usize,
}

/// Explains rows of one forest. Reuses its scratch space between rows.
#[derive(Debug, Clone)]
pub struct Explainer {
    trees: Vec<ShapTree>,
    n_features: usize,
    expected_value: f64,
    path: Vec<PathElement>,
}

impl Explainer {
    /// The forest must have passed [`Forest::validate`] for `n_features`.
    pub fn new(forest: &Forest, n_features: usize) -> Explainer {
        let trees: Vec<ShapTree> = forest
            .trees
            .iter()
            .map(|t| ShapTree {
                value: t.leaf_path_lengths(),
                cover: t.n_samples.iter().map(|&n| n as f64).collect(),
                max_depth: t.depths().into_iter().max().unwrap_or(0) as usize,
                tree: t.clone(),
            })
            .collect();
        let n_trees = trees.len().max(1) as f64;
        let expected_value = trees.iter().map(expected_leaf_value).sum::<f64>() / n_trees;
        let deepest = trees.iter().map(|t| t.max_depth).max().unwrap_or(0);
        Explainer {
            trees,
            n_features,
            expected_value,
            path: vec![PathElement::default(); (deepest + 2) * (deepest + 3) / 2],
        }
    }

    /// Mean path length over the training samples (shap's `expected_value`).
    pub fn expected_value(&self) -> f64 {
        self.expected_value
    }

    /// SHAP value of every feature for one row (already cast to `f32`);
    /// they sum to the row's mean path length minus [`Self::expected_value`].
    pub fn explain(&mut self, x: &[f32], phi: &mut [f64]) {
        assert_eq!(phi.len(), self.n_features);
        phi.fill(0.0);
        for t in &self.trees {
            recurse(t, x, phi, &mut self.path, 0, 0, 0, 1.0, 1.0, -1);
        }
        let n_trees = self.trees.len() as f64;
        for v in phi.iter_mut() {
            *v /= n_trees;
        }
    }
}

fn expected_leaf_value(t: &ShapTree) -> f64 {
    let total = t.cover[0];
    (0..t.tree.len())
        .filter(|&i| t.tree.is_leaf(i))
        .map(|i| t.value[i] * t.cover[i] / total)
        .sum()
}

/// `path` is a stack of path segments: the segment for depth `unique_depth`
/// starts at `start` and the next one begins right after it.
#[allow(clippy::too_many_arguments)]
fn recurse(
    t: &ShapTree,
    x: &[f32],
    phi: &mut [f64],
    path: &mut [PathElement],
    node: usize,
    start: usize,
    unique_depth: usize,
    zero_fraction: f64,
    one_fraction: f64,
    feature: i32,
) {
    let parent_start = start;
    let start = if unique_depth == 0 {
        0
    } else {
        parent_start + unique_depth
    };
    if unique_depth > 0 {
        path.copy_within(parent_start..parent_start + unique_depth, start);
    }
    let mut unique_depth = unique_depth;
    extend(
        &mut path[start..],
        unique_depth,
        zero_fraction,
        one_fraction,
        feature,
    );

    let tree = &t.tree;
    if tree.is_leaf(node) {
        let seg = &path[start..=start + unique_depth];
        for i in 1..=unique_depth {
            let w = unwound_sum(seg, unique_depth, i);
            let el = seg[i];
            phi[el.feature as usize] += w * (el.one_fraction - el.zero_fraction) * t.value[node];
        }
        return;
    }

    let split = tree.feature[node];
    let (left, right) = (tree.left[node] as usize, tree.right[node] as usize);
    let (hot, cold) = if (x[split as usize] as f64) <= tree.threshold[node] {
        (left, right)
    } else {
        (right, left)
    };
    let cover = t.cover[node];
    let hot_zero = t.cover[hot] / cover;
    let cold_zero = t.cover[cold] / cover;
    let (mut incoming_zero, mut incoming_one) = (1.0, 1.0);
    let seg = &mut path[start..];
    if let Some(k) = (1..=unique_depth).find(|&k| seg[k].feature == split) {
        incoming_zero = seg[k].zero_fraction;
        incoming_one = seg[k].one_fraction;
        unwind(seg, unique_depth, k);
        unique_depth -= 1;
    }
    let child_start = start;
    recurse(
        t,
        x,
        phi,
        path,
        hot,
        child_start,
        unique_depth + 1,
        hot_zero * incoming_zero,
        incoming_one,
        split,
    );
    recurse(
        t,
        x,
        phi,
        path,
        cold,
        child_start,
        unique_depth + 1,
        cold_zero * incoming_zero,
        0.0,
        split,
    );
}

fn extend(m: &mut [PathElement], depth: usize, zero: f64, one: f64, feature: i32) {
    m[depth] = PathElement {
        feature,
        zero_fraction: zero,
        one_fraction: one,
        weight: if depth == 0 { 1.0 } else { 0.0 },
    };
    let l1 = (depth + 1) as f64;
    for i in (0..depth).rev() {
        m[i + 1].weight += one * m[i].weight * (i + 1) as f64 / l1;
        m[i].weight = zero * m[i].weight * (depth - i) as f64 / l1;
    }
}

fn unwind(m: &mut [PathElement], depth: usize, index: usize) {
    let one = m[index].one_fraction;
    let zero = m[index].zero_fraction;
    let mut next = m[depth].weight;
    let l1 = (depth + 1) as f64;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let tmp = m[i].weight;
            m[i].weight = next * l1 / ((i + 1) as f64 * one);
            next = tmp - m[i].weight * zero * (depth - i) as f64 / l1;
        } else {
            m[i].weight = m[i].weight * l1 / (zero * (depth - i) as f64);
        }
    }
    for i in index..depth {
        m[i].feature = m[i + 1].feature;
        m[i].zero_fraction = m[i + 1].zero_fraction;
        m[i].one_fraction = m[i + 1].one_fraction;
    }
}

fn unwound_sum(m: &[PathElement], depth: usize, index: usize) -> f64 {
    let one = m[index].one_fraction;
    let zero = m[index].zero_fraction;
    let mut next = m[depth].weight;
    let mut total = 0.0;
    let l1 = (depth + 1) as f64;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let tmp = next * l1 / ((i + 1) as f64 * one);
            total += tmp;
            next = m[i].weight - tmp * zero * ((depth - i) as f64 / l1);
        } else if zero != 0.0 {
            total += (m[i].weight / zero) / ((depth - i) as f64 / l1);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forest::Contamination;

    /// Brute force: exact Shapley values of the game v(S) = expected leaf
    /// value when the features in S follow x and the others follow the
    /// training covers.
    fn brute_force(forest: &Forest, x: &[f32], n_features: usize) -> Vec<f64> {
        fn v(t: &Tree, value: &[f64], node: usize, x: &[f32], s: u32) -> f64 {
            if t.is_leaf(node) {
                return value[node];
            }
            let f = t.feature[node] as usize;
            let (l, r) = (t.left[node] as usize, t.right[node] as usize);
            if s & (1 << f) != 0 {
                let next = if (x[f] as f64) <= t.threshold[node] {
                    l
                } else {
                    r
                };
                v(t, value, next, x, s)
            } else {
                let n = t.n_samples[node] as f64;
                (t.n_samples[l] as f64 * v(t, value, l, x, s)
                    + t.n_samples[r] as f64 * v(t, value, r, x, s))
                    / n
            }
        }
        let fact = |k: usize| (1..=k).map(|i| i as f64).product::<f64>();
        let mut phi = vec![0.0; n_features];
        for t in &forest.trees {
            let value = t.leaf_path_lengths();
            for (i, p) in phi.iter_mut().enumerate() {
                for s in 0u32..(1 << n_features) {
                    if s & (1 << i) != 0 {
                        continue;
                    }
                    let k = s.count_ones() as usize;
                    let w = fact(k) * fact(n_features - k - 1) / fact(n_features);
                    *p += w * (v(t, &value, 0, x, s | (1 << i)) - v(t, &value, 0, x, s));
                }
            }
        }
        phi.iter().map(|p| p / forest.trees.len() as f64).collect()
    }

    #[test]
    fn matches_brute_force_shapley_values_with_repeated_features() {
        let mut rng = crate::rng::Rng::new(3);
        let d = 4;
        let rows: Vec<f32> = (0..300 * d).map(|_| rng.next_f64() as f32 * 10.0).collect();
        let params = crate::train::TrainParams {
            n_trees: 5,
            max_samples: 64,
            contamination: Contamination::Auto,
            seed: 9,
        };
        let forest = crate::train::fit(&rows, d, &params);
        let mut explainer = Explainer::new(&forest, d);
        let mut phi = vec![0.0; d];
        for row in rows.chunks(d).take(20) {
            explainer.explain(row, &mut phi);
            let want = brute_force(&forest, row, d);
            for (a, b) in phi.iter().zip(&want) {
                assert!((a - b).abs() < 1e-9, "{phi:?} vs {want:?}");
            }
            // Local accuracy: values add up to the row's mean path length.
            let mean_path: f64 = forest
                .trees
                .iter()
                .map(|t| t.leaf_path_lengths()[t.leaf(row)])
                .sum::<f64>()
                / forest.trees.len() as f64;
            let total: f64 = phi.iter().sum::<f64>() + explainer.expected_value();
            assert!((total - mean_path).abs() < 1e-9);
        }
    }
}
