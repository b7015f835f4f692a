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
const LANES: usize = 8;
/// Rows that every tree passes over before the next tree is fetched.
const BLOCK: usize = 512;
/// Deeper trees would need too much memory in the complete layout; they are
/// walked node by node instead.
const MAX_COMPLETE_DEPTH: u32 = 14;

#[derive(Debug, Clone, Copy)]
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

fn compile(tree: &Tree) -> Layout {
    let path_length = tree.sklearn_leaf_terms();
    let depth = tree.depths().into_iter().max().unwrap_or(0);
    if depth > MAX_COMPLETE_DEPTH {
        return Layout::Walk {
            tree: tree.clone(),
            path_length,
        };
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
    Layout::Complete {
        depth,
        nodes,
        leaves,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
