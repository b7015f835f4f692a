//! Growing an Isolation Forest the way scikit-learn does: ψ = min(256, n)
//! rows per tree drawn without replacement, depth limit ceil(log2 ψ), at each
//! node features drawn until one is not constant, and a threshold uniform
//! between that feature's minimum and maximum in the node.

use crate::forest::{Contamination, Forest, Tree};
use crate::rng::Rng;
use crate::scorer::Scorer;

/// scikit-learn treats a feature as constant in a node when its range is at
/// most this.
const FEATURE_THRESHOLD: f32 = 1e-7;

#[derive(Debug, Clone)]
pub struct TrainParams {
    pub n_trees: usize,
    /// ψ upper bound; the actual ψ is min(this, rows).
    pub max_samples: usize,
    pub contamination: Contamination,
    pub seed: u64,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            n_trees: 100,
            max_samples: 256,
            contamination: Contamination::Fraction(0.001),
            seed: 0,
        }
    }
}

/// Fits a forest to `rows` (row after row of `d` values, already `f32`).
/// The offset is computed on the same rows. Needs at least one row.
pub fn fit(rows: &[f32], d: usize, params: &TrainParams) -> Forest {
    fit_scored(rows, d, params).0
}

/// [`fit`], also returning `score_samples` of every training row.
pub fn fit_scored(rows: &[f32], d: usize, params: &TrainParams) -> (Forest, Vec<f64>) {
    let n = rows.len() / d;
    assert!(n > 0 && d > 0, "fit needs at least one row and one feature");
    let psi = params.max_samples.clamp(1, n);
    let max_depth = (psi.max(2) as f64).log2().ceil() as u32;
    let mut rng = Rng::new(params.seed);
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut trees = Vec::with_capacity(params.n_trees);
    let mut builder = Builder::new(d, psi);
    for _ in 0..params.n_trees {
        let mut tree_rng = rng.fork();
        // Partial Fisher–Yates: the first ψ entries become a uniform sample
        // without replacement. `order` stays a permutation, so the next tree
        // can shuffle on from it.
        for i in 0..psi {
            let j = i + tree_rng.below((n - i) as u64) as usize;
            order.swap(i, j);
        }
        builder.load(rows, &order[..psi]);
        trees.push(builder.grow(max_depth, &mut tree_rng));
    }
    let mut forest = Forest {
        max_samples: psi as u64,
        offset: -0.5,
        contamination: params.contamination,
        trees,
    };
    let scorer = Scorer::new(&forest, d).expect("a freshly grown forest is valid");
    let mut scores = vec![0.0; n];
    scorer.score_samples(rows, &mut scores);
    if let Contamination::Fraction(c) = params.contamination {
        forest.offset = percentile(&mut scores.clone(), 100.0 * c);
    }
    (forest, scores)
}

/// numpy's default (linear) percentile; sorts `values`.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let pos = q / 100.0 * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let t = pos - lo as f64;
    let (a, b) = (values[lo], values[hi]);
    // numpy's _lerp, which is exact at both ends.
    if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    }
}

/// Scratch space for growing one tree from ψ rows, reused across trees.
struct Builder {
    d: usize,
    /// The tree's sample, column after column (a node's values of one
    /// feature are then contiguous after partitioning `index`).
    columns: Vec<f32>,
    psi: usize,
    index: Vec<u32>,
    features: Vec<usize>,
}

impl Builder {
    fn new(d: usize, psi: usize) -> Builder {
        Builder {
            d,
            columns: vec![0.0; d * psi],
            psi,
            index: Vec::with_capacity(psi),
            features: (0..d).collect(),
        }
    }

    fn load(&mut self, rows: &[f32], sample: &[u32]) {
        let (d, psi) = (self.d, self.psi);
        for (k, &r) in sample.iter().enumerate() {
            let row = &rows[r as usize * d..(r as usize + 1) * d];
            for (f, &v) in row.iter().enumerate() {
                self.columns[f * psi + k] = v;
            }
        }
        self.index.clear();
        self.index.extend(0..psi as u32);
    }

    fn grow(&mut self, max_depth: u32, rng: &mut Rng) -> Tree {
        let mut tree = Tree {
            feature: Vec::new(),
            threshold: Vec::new(),
            left: Vec::new(),
            right: Vec::new(),
            n_samples: Vec::new(),
        };
        // (node id, start, end, depth); children are filled in when popped.
        let mut stack = vec![(new_node(&mut tree, self.psi), 0usize, self.psi, 0u32)];
        while let Some((node, start, end, depth)) = stack.pop() {
            let n = end - start;
            if n < 2 || depth >= max_depth {
                continue;
            }
            let Some((feature, threshold)) = self.draw_split(start, end, rng) else {
                continue;
            };
            let column = &self.columns[feature * self.psi..(feature + 1) * self.psi];
            let slice = &mut self.index[start..end];
            let mut lo = 0;
            for i in 0..slice.len() {
                if column[slice[i] as usize] as f64 <= threshold {
                    slice.swap(lo, i);
                    lo += 1;
                }
            }
            let mid = start + lo;
            let left = new_node(&mut tree, mid - start);
            let right = new_node(&mut tree, end - mid);
            tree.feature[node] = feature as i32;
            tree.threshold[node] = threshold;
            tree.left[node] = left as i32;
            tree.right[node] = right as i32;
            stack.push((right, mid, end, depth + 1));
            stack.push((left, start, mid, depth + 1));
        }
        renumber_depth_first(tree)
    }

    /// Draws features without replacement until one varies in the node;
    /// `None` when all are constant.
    fn draw_split(&mut self, start: usize, end: usize, rng: &mut Rng) -> Option<(usize, f64)> {
        let d = self.d;
        for drawn in 0..d {
            let k = drawn + rng.below((d - drawn) as u64) as usize;
            self.features.swap(drawn, k);
            let f = self.features[drawn];
            let column = &self.columns[f * self.psi..(f + 1) * self.psi];
            let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
            for &i in &self.index[start..end] {
                let v = column[i as usize];
                min = min.min(v);
                max = max.max(v);
            }
            if max <= min + FEATURE_THRESHOLD {
                continue;
            }
            let (lo, hi) = (min as f64, max as f64);
            let mut threshold = lo + (hi - lo) * rng.next_f64();
            if threshold >= hi {
                threshold = lo;
            }
            return Some((f, threshold));
        }
        None
    }
}

fn new_node(tree: &mut Tree, n: usize) -> usize {
    tree.feature.push(-1);
    tree.threshold.push(0.0);
    tree.left.push(-1);
    tree.right.push(-1);
    tree.n_samples.push(n as u64);
    tree.left.len() - 1
}

/// Children were appended in pairs as nodes were split; renumber in
/// depth-first pre-order (scikit-learn's order) so files read naturally.
fn renumber_depth_first(tree: Tree) -> Tree {
    let n = tree.len();
    let mut order = Vec::with_capacity(n);
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        order.push(i);
        if tree.left[i] >= 0 {
            stack.push(tree.right[i] as usize);
            stack.push(tree.left[i] as usize);
        }
    }
    let mut new_id = vec![0i32; n];
    for (new, &old) in order.iter().enumerate() {
        new_id[old] = new as i32;
    }
    let map = |c: i32| if c < 0 { -1 } else { new_id[c as usize] };
    Tree {
        feature: order.iter().map(|&i| tree.feature[i]).collect(),
        threshold: order.iter().map(|&i| tree.threshold[i]).collect(),
        left: order.iter().map(|&i| map(tree.left[i])).collect(),
        right: order.iter().map(|&i| map(tree.right[i])).collect(),
        n_samples: order.iter().map(|&i| tree.n_samples[i]).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..n * d)
            .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
            .collect()
    }

    #[test]
    fn trees_have_sklearn_shape_and_are_reproducible() {
        let rows = data(1000, 3, 1);
        let params = TrainParams {
            seed: 5,
            ..TrainParams::default()
        };
        let a = fit(&rows, 3, &params);
        let b = fit(&rows, 3, &params);
        assert_eq!(a, b);
        let c = fit(&rows, 3, &TrainParams { seed: 6, ..params });
        assert_ne!(a, c);
        assert_eq!(a.trees.len(), 100);
        assert_eq!(a.max_samples, 256);
        for t in &a.trees {
            t.validate(3).unwrap();
            assert_eq!(t.n_samples[0], 256);
            assert!(t.depths().into_iter().max().unwrap() <= 8);
            for i in 0..t.len() {
                if !t.is_leaf(i) {
                    let (l, r) = (t.left[i] as usize, t.right[i] as usize);
                    assert_eq!(t.n_samples[l] + t.n_samples[r], t.n_samples[i]);
                    assert!(t.n_samples[l] > 0 && t.n_samples[r] > 0);
                }
            }
        }
    }

    #[test]
    fn contamination_sets_the_share_of_training_rows_flagged() {
        let rows = data(5000, 2, 2);
        let forest = fit(
            &rows,
            2,
            &TrainParams {
                contamination: Contamination::Fraction(0.05),
                ..TrainParams::default()
            },
        );
        let scorer = Scorer::new(&forest, 2).expect("valid forest");
        let mut out = vec![0.0; 5000];
        scorer.decision_function(&rows, &mut out);
        let flagged = out.iter().filter(|&&s| s < 0.0).count();
        assert!((240..=260).contains(&flagged), "{flagged}");
    }

    #[test]
    fn outlier_scores_lower_than_inliers() {
        let mut rows = data(2000, 2, 3);
        rows.extend_from_slice(&[8.0, 8.0]);
        let forest = fit(&rows, 2, &TrainParams::default());
        let scorer = Scorer::new(&forest, 2).expect("valid forest");
        let mut out = vec![0.0; 2];
        scorer.decision_function(&[8.0, 8.0, 0.0, 0.0], &mut out);
        assert!(out[0] < 0.0 && out[1] > 0.0, "{out:?}");
    }

    #[test]
    fn constant_data_gives_single_leaf_trees() {
        let rows = vec![1.0f32; 300];
        let forest = fit(&rows, 1, &TrainParams::default());
        assert!(forest.trees.iter().all(|t| t.len() == 1));
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        assert_eq!(percentile(&mut v, 50.0), 2.5);
        assert_eq!(percentile(&mut v, 0.0), 1.0);
        assert_eq!(percentile(&mut v, 100.0), 4.0);
        // np.percentile([1,2,3,4], 10) == 1.3
        assert!((percentile(&mut v, 10.0) - 1.3).abs() < 1e-12);
    }
}
