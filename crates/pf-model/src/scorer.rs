//! Fast scoring: each tree is laid out as a complete binary tree of its own
//! depth, so a row takes exactly `depth` branch-free steps and several rows
//! walk the same tree side by side (their loads overlap instead of waiting on
//! each other). A leaf above the bottom level becomes a chain of nodes that
//! always go left (threshold +inf), ending in a copy of the leaf's path length.
//!
//! Thresholds are stored as the largest `f32` not above the model's `f64`
//! threshold, which makes `x <= t32` equal to `x as f64 <= t` for every `f32`
//! `x`: the leaves are exactly scikit-learn's.

use crate::forest::{score_from_path_sum, Forest, Tree};

/// Rows walking one tree side by side.
const LANES: usize = 16;
/// Rows that every tree passes over before the next tree is fetched.
const BLOCK: usize = 512;
/// Deeper trees would need too much memory in the complete layout; they are
/// walked node by node instead.
const MAX_COMPLETE_DEPTH: u32 = 14;

#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Node {
    threshold: f32,
    feature: u32,
}

#[derive(Debug, Clone)]
enum Layout {
    Complete {
        depth: u32,
        nodes: Vec<Node>,
        leaves: Vec<f64>,
    },
    Walk {
        tree: Tree,
        path_length: Vec<f64>,
    },
}

/// A forest compiled for scoring many rows.
#[derive(Debug, Clone)]
pub struct Scorer {
    n_features: usize,
    trees: Vec<Layout>,
    max_samples: u64,
    offset: f64,
    /// Trees in the three-levels-per-step layout (x86-64 with AVX2 and at
    /// most 8 features); empty otherwise.
    triples: Vec<Triples>,
}

/// Largest `f32` that is not greater than `t`.
pub fn f32_at_or_below(t: f64) -> f32 {
    let r = t as f32;
    if (r as f64) > t {
        r.next_down()
    } else {
        r
    }
}

impl Scorer {
    /// Compiles a forest for rows of `n_features` values; fails if the
    /// forest is not a valid one for that many features.
    pub fn new(forest: &Forest, n_features: usize) -> anyhow::Result<Scorer> {
        forest.validate(n_features)?;
        let trees = forest.trees.iter().map(compile).collect();
        Ok(Scorer {
            n_features,
            trees,
            max_samples: forest.max_samples,
            offset: forest.offset,
            triples: if has_avx2() && n_features <= 8 {
                forest.trees.iter().filter_map(Triples::compile).collect()
            } else {
                Vec::new()
            },
        })
    }

    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Sum over trees of each row's path length. `rows` holds whole rows of
    /// `n_features` values, row after row; `out` gets one value per row.
    pub fn path_sums(&self, rows: &[f32], out: &mut [f64]) {
        let d = self.n_features;
        let n = rows.len() / d;
        assert_eq!(out.len(), n, "one output per row");
        #[cfg(target_arch = "x86_64")]
        if !self.triples.is_empty() && self.triples.len() == self.trees.len() {
            // SAFETY: `triples` is only filled when AVX2 was detected and d <= 8.
            unsafe { path_sums_triples(&self.triples, rows, d, out) };
            return;
        }
        // A block of rows stays in L1 while every tree passes over it, so
        // each tree is fetched once per block rather than once per row.
        for (block, sums) in rows.chunks(d * BLOCK).zip(out.chunks_mut(BLOCK)) {
            sums.fill(0.0);
            for tree in &self.trees {
                match tree {
                    Layout::Complete {
                        depth,
                        nodes,
                        leaves,
                    } => {
                        for (lanes, lane_sums) in
                            block.chunks(d * LANES).zip(sums.chunks_mut(LANES))
                        {
                            walk_complete(*depth, nodes, leaves, lanes, d, lane_sums);
                        }
                    }
                    Layout::Walk { tree, path_length } => {
                        for (row, sum) in block.chunks_exact(d).zip(sums.iter_mut()) {
                            *sum += path_length[tree.leaf(row)];
                        }
                    }
                }
            }
        }
    }

    /// scikit-learn's `score_samples` for each row.
    pub fn score_samples(&self, rows: &[f32], out: &mut [f64]) {
        self.path_sums(rows, out);
        let n_trees = self.trees.len();
        for v in out.iter_mut() {
            *v = score_from_path_sum(*v, n_trees, self.max_samples);
        }
    }

    /// scikit-learn's `decision_function`: negative means anomalous.
    pub fn decision_function(&self, rows: &[f32], out: &mut [f64]) {
        self.score_samples(rows, out);
        for v in out.iter_mut() {
            *v -= self.offset;
        }
    }
}

#[inline]
fn walk_complete(
    depth: u32,
    nodes: &[Node],
    leaves: &[f64],
    block: &[f32],
    d: usize,
    sums: &mut [f64],
) {
    let rows = (block.len() / d).min(LANES).min(sums.len());
    let mut at = [0u32; LANES];
    for _ in 0..depth {
        for (r, i) in at.iter_mut().enumerate().take(rows) {
            // SAFETY: after k < depth steps a slot is at most 2^(k+1) - 2 <
            // 2^depth - 1 = nodes.len(); `Scorer::new` validated every
            // feature index against `d`, and r < rows, so r * d + feature <
            // block.len().
            unsafe {
                let node = *nodes.get_unchecked(*i as usize);
                let x = *block.get_unchecked(r * d + node.feature as usize);
                *i = 2 * *i + 1 + (x > node.threshold) as u32;
            }
        }
    }
    let first_leaf = nodes.len() as u32;
    for (sum, i) in sums.iter_mut().zip(at.iter()).take(rows) {
        // After `depth` steps every slot is a leaf slot: first_leaf..2^(depth+1) - 1.
        *sum += leaves[(*i - first_leaf) as usize];
    }
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A tree cut into 3-level subtrees of 7 nodes: one step compares a row's
/// values with all 7 thresholds at once (the row's ≤ 8 features sit in one
/// register, so picking each node's feature is a shuffle, not a memory
/// load), and a table turns the 7 outcomes into which of the 8 subtrees
/// below to enter. Leaves keep the complete layout's order.
#[derive(Debug, Clone)]
struct Triples {
    steps: u32,
    nodes: Vec<Triple>,
    leaves: Vec<f64>,
}

/// One 7-node subtree in one cache line.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Triple {
    thresholds: [f32; 8],
    features: [u32; 8],
}

/// Which of the 8 grandchildren of a 7-node subtree (BFS order) a row
/// reaches, from the bitmask of "went right" at each node.
const fn triple_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut m = 0;
    while m < 256 {
        let b0 = m & 1;
        let n1 = 1 + b0;
        let b1 = (m >> n1) & 1;
        let n2 = 3 + 2 * b0 + b1;
        let b2 = (m >> n2) & 1;
        t[m] = (b0 * 4 + b1 * 2 + b2) as u8;
        m += 1;
    }
    t
}
static TRIPLE: [u8; 256] = triple_table();

impl Triples {
    fn compile(tree: &Tree) -> Option<Triples> {
        let Layout::Complete {
            depth,
            nodes,
            leaves,
        } = compile_to_depth(tree, None)?
        else {
            return None;
        };
        let steps = depth.div_ceil(3).max(1);
        let Layout::Complete { nodes, leaves, .. } = (if steps * 3 == depth {
            Layout::Complete {
                depth,
                nodes,
                leaves,
            }
        } else {
            compile_to_depth(tree, Some(steps * 3))?
        }) else {
            return None;
        };
        let mut triples = Vec::new();
        for g in 0..steps {
            for s in 0..(1usize << (3 * g)) {
                let mut t = [f32::INFINITY; 8];
                let mut f = [0u32; 8];
                for l in 0..3 {
                    for p in 0..(1usize << l) {
                        let complete = (1usize << (3 * g as usize + l)) - 1 + (s << l) + p;
                        let k = (1 << l) - 1 + p;
                        t[k] = nodes[complete].threshold;
                        f[k] = nodes[complete].feature;
                    }
                }
                triples.push(Triple {
                    thresholds: t,
                    features: f,
                });
            }
        }
        Some(Triples {
            steps,
            nodes: triples,
            leaves,
        })
    }
}

/// Scores with the [`Triples`] layout, four rows at a time per tree.
///
/// # Safety
/// The CPU must support AVX2 and `d` must be at most 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn path_sums_triples(trees: &[Triples], rows: &[f32], d: usize, out: &mut [f64]) {
    use std::arch::x86_64::*;
    const ROWS: usize = 8;
    let mut padded = vec![[0f32; 8]; BLOCK.min(out.len())];
    for (block, sums) in rows.chunks(d * BLOCK).zip(out.chunks_mut(BLOCK)) {
        let n = sums.len();
        for (p, row) in padded.iter_mut().zip(block.chunks_exact(d)) {
            p[..d].copy_from_slice(row);
        }
        sums.fill(0.0);
        let full = n - n % ROWS;
        for tree in trees {
            for r in (0..full).step_by(ROWS) {
                let mut x = [_mm256_setzero_ps(); ROWS];
                for (k, x) in x.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(padded[r + k].as_ptr());
                }
                let mut at = [0usize; ROWS];
                let mut group = 0usize;
                for step in 0..tree.steps {
                    for (k, at) in at.iter_mut().enumerate() {
                        *at = triple_step(tree, group + *at, x[k]) + *at * 8;
                    }
                    group += 1 << (3 * step);
                }
                for k in 0..ROWS {
                    sums[r + k] += tree.leaves[at[k]];
                }
            }
        }
        // The last few rows (or the single row pf-score scores at a time):
        // eight trees side by side instead of eight rows.
        for r in full..n {
            let x = _mm256_loadu_ps(padded[r].as_ptr());
            for chunk in trees.chunks(ROWS) {
                let mut at = [0usize; ROWS];
                let mut group = [0usize; ROWS];
                let steps = chunk.iter().map(|t| t.steps).max().unwrap_or(0);
                for step in 0..steps {
                    for (k, tree) in chunk.iter().enumerate() {
                        if step < tree.steps {
                            at[k] = triple_step(tree, group[k] + at[k], x) + at[k] * 8;
                            group[k] += 1 << (3 * step);
                        }
                    }
                }
                for (k, tree) in chunk.iter().enumerate() {
                    sums[r] += tree.leaves[at[k]];
                }
            }
        }
    }
}

/// One 3-level step: which of the 8 subtrees below `node` the row `x` enters.
///
/// # Safety
/// AVX2 must be available and `node` an index into `tree.nodes`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn triple_step(tree: &Triples, node: usize, x: std::arch::x86_64::__m256) -> usize {
    use std::arch::x86_64::*;
    // In range: the caller's index is below 8^step within the step's group.
    let node = tree.nodes.get_unchecked(node);
    let t = _mm256_loadu_ps(node.thresholds.as_ptr());
    let f = _mm256_loadu_si256(node.features.as_ptr() as *const __m256i);
    let v = _mm256_permutevar8x32_ps(x, f);
    let m = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(v, t)) as usize;
    *TRIPLE.get_unchecked(m) as usize
}

fn compile(tree: &Tree) -> Layout {
    compile_to_depth(tree, None).unwrap_or_else(|| Layout::Walk {
        path_length: tree.sklearn_leaf_terms(),
        tree: tree.clone(),
    })
}

/// The complete layout, padded to `at_least` levels if given; `None` when
/// the tree is too deep for it.
fn compile_to_depth(tree: &Tree, at_least: Option<u32>) -> Option<Layout> {
    let path_length = tree.sklearn_leaf_terms();
    let depth = tree
        .depths()
        .into_iter()
        .max()
        .unwrap_or(0)
        .max(at_least.unwrap_or(0));
    if depth > MAX_COMPLETE_DEPTH {
        return None;
    }
    let internal = (1usize << depth) - 1;
    let mut nodes = vec![
        Node {
            threshold: f32::INFINITY,
            feature: 0,
        };
        internal
    ];
    let mut leaves = vec![0.0; 1usize << depth];
    // (model node, slot in the complete layout, depth of the slot)
    let mut stack = vec![(0usize, 0usize, 0u32)];
    while let Some((node, slot, level)) = stack.pop() {
        if tree.is_leaf(node) {
            // Always-left chain down to the bottom level.
            let mut s = slot;
            for _ in level..depth {
                s = 2 * s + 1;
            }
            leaves[s - internal] = path_length[node];
        } else {
            nodes[slot] = Node {
                threshold: f32_at_or_below(tree.threshold[node]),
                feature: tree.feature[node] as u32,
            };
            stack.push((tree.left[node] as usize, 2 * slot + 1, level + 1));
            stack.push((tree.right[node] as usize, 2 * slot + 2, level + 1));
        }
    }
    Some(Layout::Complete {
        depth,
        nodes,
        leaves,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_single_row_and_reference_scores_are_identical() {
        let mut rng = crate::rng::Rng::new(5);
        for (d, psi) in [(6, 256), (3, 20), (10, 256)] {
            let rows: Vec<f32> = (0..1003 * d)
                .map(|_| (rng.next_f64() * 50.0).floor() as f32)
                .collect();
            let params = crate::train::TrainParams {
                max_samples: psi,
                ..Default::default()
            };
            let forest = crate::train::fit(&rows, d, &params);
            let scorer = Scorer::new(&forest, d).unwrap();
            let mut batch = vec![0.0; 1003];
            scorer.score_samples(&rows, &mut batch);
            for (i, row) in rows.chunks(d).enumerate() {
                let mut one = [0.0];
                scorer.score_samples(row, &mut one);
                assert_eq!(one[0], batch[i], "row {i}, d {d}");
                assert_eq!(one[0], forest.score_samples(row), "row {i}, d {d}");
            }
        }
    }

    #[test]
    fn rounding_threshold_down_keeps_comparisons_exact() {
        for t in [0.1f64, -0.1, 1e-40, 3.4e38, 1e300, -1e300, 0.0, 2.5] {
            let t32 = f32_at_or_below(t);
            assert!(t32 as f64 <= t);
            let above = t32.next_up();
            assert!(above as f64 > t || above.is_infinite(), "{t}");
            for x in [t32, above, t32.next_down()] {
                assert_eq!(x <= t32, (x as f64) <= t, "x={x} t={t}");
            }
        }
    }
}
