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

impl ShapTree {
    fn new(t: &Tree) -> ShapTree {
        ShapTree {
            value: t.leaf_path_lengths(),
            cover: t.n_samples.iter().map(|&n| n as f64).collect(),
            max_depth: t.depths().into_iter().max().unwrap_or(0) as usize,
            tree: t.clone(),
        }
    }
}

/// Explains rows of one forest. Reuses its scratch space between rows.
#[derive(Debug, Clone)]
pub struct Explainer {
    engine: Engine,
    n_features: usize,
    n_trees: usize,
    expected_value: f64,
}

#[derive(Debug, Clone)]
enum Engine {
    /// Per-leaf tables (up to 64 features): fast.
    Tables {
        trees: Vec<TableTree>,
        scratch: BlockScratch,
    },
    /// The recursive algorithm over the tree, for wider data.
    Recursive {
        trees: Vec<ShapTree>,
        path: Vec<PathElement>,
    },
}

impl Explainer {
    /// The forest must have passed [`Forest::validate`] for `n_features`.
    pub fn new(forest: &Forest, n_features: usize) -> Explainer {
        Self::build(forest, n_features, n_features <= 64, MAX_TABLE_BYTES)
    }

    /// The explainer that walks the tree recursively for every row (the
    /// reference the tables are checked against).
    pub fn recursive(forest: &Forest, n_features: usize) -> Explainer {
        Self::build(forest, n_features, false, 0)
    }

    /// `budget`: most bytes of tables; leaf tables come first, then merged
    /// subtree tables tree by tree while they fit.
    fn build(forest: &Forest, n_features: usize, tables: bool, budget: usize) -> Explainer {
        let trees: Vec<ShapTree> = forest.trees.iter().map(ShapTree::new).collect();
        let n_trees = trees.len().max(1);
        let expected_value = trees.iter().map(expected_leaf_value).sum::<f64>() / n_trees as f64;
        Self::with_engine(trees, n_features, n_trees, expected_value, tables, budget)
    }

    fn with_engine(
        trees: Vec<ShapTree>,
        n_features: usize,
        n_trees: usize,
        expected_value: f64,
        tables: bool,
        budget: usize,
    ) -> Explainer {
        let engine = if tables {
            let narrow = n_features <= 8;
            let mut tables = Vec::with_capacity(trees.len());
            let mut bytes = 0usize;
            for t in &trees {
                let table = TableTree::new(t, narrow);
                bytes += table.table_bytes();
                if bytes > budget {
                    // Very deep trees: the recursive walk needs no tables.
                    return Self::with_engine(trees, n_features, n_trees, expected_value, false, 0);
                }
                tables.push(table);
            }
            // Merged tables only speed things up: the trees that do not fit
            // the budget any more keep their leaf tables alone.
            for table in &mut tables {
                let before = table.table_bytes();
                table.merge_subtrees(narrow);
                bytes += table.table_bytes() - before;
                if bytes > budget {
                    bytes -= table.table_bytes() - before;
                    table.merged.clear();
                    table.merged_at.fill(-1);
                }
            }
            let deepest = tables.iter().map(|t| t.depth).max().unwrap_or(0);
            Engine::Tables {
                trees: tables,
                scratch: BlockScratch {
                    columns: vec![0.0; n_features * BLOCK],
                    failed: vec![0; (deepest + 1) * BLOCK],
                    stack: Vec::new(),
                    acc: vec![Wide::default(); BLOCK],
                    failed8: Vec::new(),
                    nodes: Vec::new(),
                    pext: if narrow { pext_table() } else { Vec::new() },
                    outcomes: vec![0; BLOCK],
                },
            }
        } else {
            let deepest = trees.iter().map(|t| t.max_depth).max().unwrap_or(0);
            Engine::Recursive {
                trees,
                path: vec![PathElement::default(); (deepest + 2) * (deepest + 3) / 2],
            }
        };
        Explainer {
            engine,
            n_features,
            n_trees,
            expected_value,
        }
    }

    /// Memory held by the precomputed tables, in bytes.
    pub fn table_bytes(&self) -> usize {
        match &self.engine {
            Engine::Tables { trees, .. } => trees.iter().map(TableTree::table_bytes).sum(),
            Engine::Recursive { .. } => 0,
        }
    }

    /// Table lookups a row in a batch costs over all trees (merged subtree
    /// tables plus leaves outside them), and the forest's leaves for
    /// comparison; `None` without tables.
    pub fn lookups_per_row(&self) -> Option<(usize, usize)> {
        let Engine::Tables { trees, .. } = &self.engine else {
            return None;
        };
        let mut lookups = 0;
        for t in trees {
            let mut stack = vec![0usize];
            while let Some(node) = stack.pop() {
                if t.merged_at[node] >= 0 || t.leaf[node] >= 0 {
                    lookups += 1;
                } else {
                    stack.push(t.left[node] as usize);
                    stack.push(t.right[node] as usize);
                }
            }
        }
        Some((lookups, trees.iter().map(|t| t.leaves.len()).sum()))
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
        match &mut self.engine {
            Engine::Tables { .. } => return self.explain_many(x, phi),
            Engine::Recursive { trees, path } => {
                for t in trees.iter() {
                    recurse(t, x, phi, path, 0, 0, 0, 1.0, 1.0, -1);
                }
            }
        }
        let n_trees = self.n_trees as f64;
        for v in phi.iter_mut() {
            *v /= n_trees;
        }
    }

    /// [`Self::explain`] for many rows (`rows` row after row, `phi` one
    /// `n_features` slice per row): each tree's tables are used for a block
    /// of rows while they are in cache.
    pub fn explain_many(&mut self, rows: &[f32], phi: &mut [f64]) {
        let d = self.n_features;
        assert_eq!(rows.len(), phi.len(), "one output per input value");
        match &mut self.engine {
            Engine::Tables { trees, scratch } => {
                phi.fill(0.0);
                for (xs, out) in rows.chunks(d * BLOCK).zip(phi.chunks_mut(d * BLOCK)) {
                    let n = xs.len() / d;
                    for (r, x) in xs.chunks_exact(d).enumerate() {
                        for (f, v) in x.iter().enumerate() {
                            scratch.columns[f * BLOCK + r] = *v;
                        }
                    }
                    scratch.acc.fill(Wide::default());
                    if d <= 8 && n < FEW_ROWS {
                        let longest = trees.iter().map(|t| t.leaf.len()).max().unwrap_or(0);
                        if scratch.nodes.len() < longest {
                            scratch.nodes.resize(longest, 0);
                        }
                        for t in trees.iter() {
                            t.add_rows(
                                xs,
                                d,
                                &mut scratch.acc[..n],
                                &scratch.pext,
                                &mut scratch.nodes,
                            );
                        }
                    } else {
                        for t in trees.iter() {
                            t.add_block(n, d, out, scratch);
                        }
                    }
                    if d <= 8 {
                        for (row, acc) in out.chunks_exact_mut(d).zip(&scratch.acc) {
                            row.copy_from_slice(&acc.0[..d]);
                        }
                    }
                }
                let n_trees = self.n_trees as f64;
                for v in phi.iter_mut() {
                    *v /= n_trees;
                }
            }
            Engine::Recursive { .. } => {
                for (x, p) in rows.chunks_exact(d).zip(phi.chunks_exact_mut(d)) {
                    self.explain(x, p);
                }
            }
        }
    }
}

/// Rows explained together by [`Explainer::explain_many`]: each tree is
/// walked once per block, and each leaf's table serves the whole block
/// while it is in cache (measured best on a 512 KiB L2: the per-row sums
/// then live in L2 while each table is read from L1).
const BLOCK: usize = 2048;
/// Below this many rows, tables are not reused enough to pay for the
/// block walk, and rows go through each tree one at a time.
const FEW_ROWS: usize = 32;

#[derive(Debug, Clone)]
struct BlockScratch {
    /// The block's rows, feature after feature (`columns[f * BLOCK + r]`).
    columns: Vec<f32>,
    /// Per depth of the current path, per row: the features whose splits
    /// the row failed on the way down (`failed8` with at most 8 features).
    failed: Vec<u64>,
    failed8: Vec<u8>,
    stack: Vec<(u32, u32, u32, bool)>,
    /// Narrow forests: per row, 8-wide sums.
    acc: Vec<Wide>,
    /// Per node of one tree: the features whose splits the row failed.
    nodes: Vec<u64>,
    pext: Vec<u8>,
    /// Per row: the outcomes of a merged subtree's splits.
    outcomes: Vec<u8>,
}

/// Above this much table memory the explainer walks trees recursively.
const MAX_TABLE_BYTES: usize = 512 << 20;

/// Leaves whose path has more distinct features than this get no table
/// (2^k entries) and are computed when met.
const MAX_TABLE_FEATURES: usize = 10;

/// A tree prepared for explaining by table lookups.
///
/// Path-dependent TreeSHAP sums, over all leaves, a contribution that
/// depends on the row only through one bit per distinct feature on the
/// leaf's path: does the row follow the path at every split on that
/// feature? With at most a handful of distinct features per path, each
/// leaf's contributions for every bit pattern are computed once, up front,
/// with the same path arithmetic as the recursive algorithm. Explaining a
/// row is then one pass over the nodes (which splits the row fails) and one
/// table entry per leaf.
#[derive(Debug, Clone)]
struct TableTree {
    /// Per node: feature and threshold (internal nodes; rounded down to f32
    /// like the scorer, so `x > t` is exact), children, leaf number or -1.
    feature: Vec<u32>,
    threshold: Vec<f32>,
    left: Vec<u32>,
    right: Vec<u32>,
    leaf: Vec<i32>,
    leaves: Vec<LeafTable>,
    depth: usize,
    /// Internal nodes in order (parents first), for the row-at-a-time pass.
    splits: Vec<Split>,
    /// Node id of each leaf in `leaves`.
    leaf_node: Vec<u32>,
    /// The subtrees explained by one [`Merged`] lookup, and per node the
    /// index of its subtree's table (or -1).
    merged: Vec<Merged>,
    merged_at: Vec<i32>,
}

/// The summed tables of all leaves of a subtree.
///
/// What a subtree's leaves contribute for a row depends only on which of
/// the features split on above the subtree the row failed there (`k` bits)
/// and on the outcomes of the subtree's own `m` splits. When `k + m` is
/// small, every combination is summed up front, so the block walk stops at
/// the subtree's root and pays one table lookup per row instead of one per
/// leaf.
#[derive(Debug, Clone)]
struct Merged {
    /// Features split on between the root of the tree and the subtree.
    above: u64,
    /// The subtree's splits (feature, threshold): bit `j` of the outcomes
    /// is `x[feature] > threshold` of the `j`-th.
    splits: Vec<(u32, f32)>,
    /// Entry `(pattern << m) | outcomes`, with `pattern` bit `i` set when the
    /// row followed the `i`-th lowest feature of `above` at every split on
    /// it above the subtree. Forests of at most 8 features: 8-wide rows.
    wide: Vec<Wide>,
    /// Wider forests: the features split on in or above the subtree
    /// (ascending), and per entry one value for each.
    features: Vec<u32>,
    values: Vec<f64>,
}

/// Largest `k + m` of a [`Merged`] table (2^MERGE_BITS entries).
const MERGE_BITS: u32 = 8;

#[derive(Debug, Clone, Copy)]
struct Split {
    node: u32,
    feature: u32,
    threshold: f32,
    left: u32,
    right: u32,
}

#[derive(Debug, Clone)]
struct LeafTable {
    /// Distinct features on the path, in the order the recursive
    /// algorithm would hold them (by last split).
    features: Vec<u32>,
    /// `2^k * k` contributions: entry `pattern * k + i` for feature `i`
    /// when bit `j` of `pattern` says the row follows feature `j`'s splits.
    table: Vec<f64>,
    /// For leaves without a table: per feature its zero fraction, and the
    /// leaf value.
    zero: Vec<f64>,
    value: f64,
    /// With at most 8 features: the path's features as a bit mask, and the
    /// table as whole 8-wide rows indexed in feature order (pattern bit j =
    /// the j-th lowest feature of `mask`), so a lookup is one byte-table
    /// step and one vector add.
    mask: u8,
    wide: Vec<Wide>,
}

/// One table row (or one row's sums) in one cache line.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Wide([f64; 8]);

impl Wide {
    #[inline(always)]
    fn add2(&mut self, x: &Wide, y: &Wide) {
        let (a, b, c) = (self.0, x.0, y.0);
        self.0 = [
            a[0] + (b[0] + c[0]),
            a[1] + (b[1] + c[1]),
            a[2] + (b[2] + c[2]),
            a[3] + (b[3] + c[3]),
            a[4] + (b[4] + c[4]),
            a[5] + (b[5] + c[5]),
            a[6] + (b[6] + c[6]),
            a[7] + (b[7] + c[7]),
        ];
    }

    /// Written lane by lane on whole arrays so it compiles to vector adds.
    #[inline(always)]
    fn add(&mut self, other: &Wide) {
        let (a, b) = (self.0, other.0);
        self.0 = [
            a[0] + b[0],
            a[1] + b[1],
            a[2] + b[2],
            a[3] + b[3],
            a[4] + b[4],
            a[5] + b[5],
            a[6] + b[6],
            a[7] + b[7],
        ];
    }
}

/// The bits of `bits` selected by `mask`, packed to the low end.
fn extract(bits: u64, mask: u64) -> u64 {
    let mut out = 0;
    for (j, b) in bits_of(mask).enumerate() {
        out |= ((bits >> b) & 1) << j;
    }
    out
}

/// The low bits of `bits` spread to the positions of `mask`'s bits
/// (the inverse of [`extract`]).
fn deposit(bits: u64, mask: u64) -> u64 {
    let mut out = 0;
    for (j, b) in bits_of(mask).enumerate() {
        out |= ((bits >> j) & 1) << b;
    }
    out
}

/// Positions of the set bits of `mask`, ascending.
fn bits_of(mask: u64) -> impl Iterator<Item = u32> {
    let mut rest = mask;
    std::iter::from_fn(move || {
        (rest != 0).then(|| {
            let b = rest.trailing_zeros();
            rest &= rest - 1;
            b
        })
    })
}

/// `PEXT[(mask << 8) | bits]`: the bits of `bits` selected by `mask`,
/// packed to the low end (x86's `pext`, which is slow on some CPUs).
fn pext_table() -> Vec<u8> {
    let mut t = vec![0u8; 1 << 16];
    for mask in 0..256usize {
        for bits in 0..256usize {
            t[(mask << 8) | bits] = extract(bits as u64, mask as u64) as u8;
        }
    }
    t
}

impl TableTree {
    fn new(t: &ShapTree, narrow: bool) -> TableTree {
        let tree = &t.tree;
        let n = tree.len();
        let mut out = TableTree {
            feature: vec![0; n],
            threshold: vec![f32::INFINITY; n],
            left: vec![0; n],
            right: vec![0; n],
            leaf: vec![-1; n],
            leaves: Vec::new(),
            depth: t.max_depth,
            splits: Vec::new(),
            leaf_node: Vec::new(),
            merged: Vec::new(),
            merged_at: vec![-1; n],
        };
        // Walk every root-to-leaf path, keeping (feature, zero fraction)
        // in the order of each feature's last split.
        let mut stack: Vec<(usize, Vec<(u32, f64)>)> = vec![(0, Vec::new())];
        while let Some((node, path)) = stack.pop() {
            if tree.is_leaf(node) {
                out.leaf[node] = out.leaves.len() as i32;
                out.leaves
                    .push(LeafTable::new(&path, t.value[node], narrow));
                continue;
            }
            let f = tree.feature[node] as u32;
            let (l, r) = (tree.left[node] as usize, tree.right[node] as usize);
            out.feature[node] = f;
            out.threshold[node] = crate::scorer::f32_at_or_below(tree.threshold[node]);
            out.left[node] = l as u32;
            out.right[node] = r as u32;
            for child in [r, l] {
                let ratio = t.cover[child] / t.cover[node];
                let mut p = path.clone();
                let incoming = match p.iter().position(|e| e.0 == f) {
                    Some(k) => p.remove(k).1,
                    None => 1.0,
                };
                p.push((f, ratio * incoming));
                stack.push((child, p));
            }
        }
        for node in 0..n {
            if out.leaf[node] < 0 {
                out.splits.push(Split {
                    node: node as u32,
                    feature: out.feature[node],
                    threshold: out.threshold[node],
                    left: out.left[node],
                    right: out.right[node],
                });
            }
        }
        out.leaf_node = vec![0; out.leaves.len()];
        for node in 0..n {
            if out.leaf[node] >= 0 {
                out.leaf_node[out.leaf[node] as usize] = node as u32;
            }
        }
        out
    }

    /// Chooses the subtrees to merge (the highest ones whose table stays
    /// within [`MERGE_BITS`]) and sums their leaves' tables.
    fn merge_subtrees(&mut self, narrow: bool) {
        let n = self.leaf.len();
        // Internal nodes under each node; children come after parents.
        let mut inside = vec![0u32; n];
        for node in (0..n).rev() {
            if self.leaf[node] < 0 {
                let (l, r) = (self.left[node] as usize, self.right[node] as usize);
                inside[node] = 1 + inside[l] + inside[r];
            }
        }
        let mut stack = vec![(0usize, 0u64)];
        while let Some((node, above)) = stack.pop() {
            // A single leaf keeps its own table: merging it would only copy it.
            if inside[node] > 0 && above.count_ones() + inside[node] <= MERGE_BITS {
                self.merged_at[node] = self.merged.len() as i32;
                let merged = self.merge(node, above, narrow);
                self.merged.push(merged);
            } else if self.leaf[node] < 0 {
                let above = above | 1 << self.feature[node];
                stack.push((self.right[node] as usize, above));
                stack.push((self.left[node] as usize, above));
            }
        }
    }

    fn merge(&self, root: usize, above: u64, narrow: bool) -> Merged {
        // Splits in depth-first order: (node, outcome bit).
        let mut splits = Vec::new();
        let mut bit_of = std::collections::HashMap::new();
        let mut features = above;
        let mut stack = vec![root];
        while let Some(node) = stack.pop() {
            if self.leaf[node] < 0 {
                bit_of.insert(node, splits.len());
                splits.push((self.feature[node], self.threshold[node]));
                features |= 1 << self.feature[node];
                stack.push(self.right[node] as usize);
                stack.push(self.left[node] as usize);
            }
        }
        let (k, m) = (above.count_ones(), splits.len() as u32);
        let entries = 1usize << (k + m);
        // Narrow: 8-wide rows. Wide: per entry, the values of `features`
        // (every leaf's features are among them) in ascending order.
        let mut wide = vec![Wide::default(); if narrow { entries } else { 0 }];
        let listed: Vec<u32> = if narrow {
            Vec::new()
        } else {
            bits_of(features).collect()
        };
        let mut values = vec![0.0; if narrow { 0 } else { entries * listed.len() }];
        let mut dense = vec![0.0; 64];
        for entry in 0..entries {
            let (pattern, outcomes) = (entry >> m, entry & ((1 << m) - 1));
            let failed_above = above & !deposit(pattern as u64, above);
            let mut walk = vec![(root, failed_above)];
            while let Some((node, failed)) = walk.pop() {
                let leaf = self.leaf[node];
                if leaf >= 0 {
                    let l = &self.leaves[leaf as usize];
                    if narrow {
                        let followed = !(failed as u8) & l.mask;
                        wide[entry].add(&l.wide[extract(followed as u64, l.mask as u64) as usize]);
                    } else {
                        let k = l.features.len();
                        let mut pattern = 0usize;
                        for (j, &f) in l.features.iter().enumerate() {
                            pattern |= ((((failed >> f) & 1) ^ 1) as usize) << j;
                        }
                        let row = &l.table[pattern * k..(pattern + 1) * k];
                        for (&f, v) in l.features.iter().zip(row) {
                            dense[f as usize] += v;
                        }
                    }
                    continue;
                }
                let bit = 1u64 << self.feature[node];
                let right = (outcomes >> bit_of[&node]) & 1 == 1;
                let (to_left, to_right) = if right { (bit, 0) } else { (0, bit) };
                walk.push((self.right[node] as usize, failed | to_right));
                walk.push((self.left[node] as usize, failed | to_left));
            }
            if !narrow {
                let n = listed.len();
                for (v, &f) in values[entry * n..(entry + 1) * n].iter_mut().zip(&listed) {
                    *v = std::mem::take(&mut dense[f as usize]);
                }
            }
        }
        Merged {
            above,
            splits,
            wide,
            features: listed,
            values,
        }
    }

    fn table_bytes(&self) -> usize {
        let leaves: usize = self
            .leaves
            .iter()
            .map(|l| l.wide.len() * std::mem::size_of::<Wide>() + l.table.len() * 8)
            .sum();
        let merged: usize = self
            .merged
            .iter()
            .map(|m| m.wide.len() * std::mem::size_of::<Wide>() + m.values.len() * 8)
            .sum();
        leaves + merged
    }

    /// Narrow forests (every leaf has an 8-wide table): adds this tree's
    /// (unscaled) SHAP values of each row of `xs` to its `acc` entry, one
    /// row at a time so the sums stay in registers while the tree's tables
    /// stay in cache for the whole block.
    fn add_rows(&self, xs: &[f32], d: usize, acc: &mut [Wide], pext: &[u8], failed: &mut [u64]) {
        for (x, out) in xs.chunks_exact(d).zip(acc.iter_mut()) {
            failed[0] = 0;
            for s in &self.splits {
                let f = failed[s.node as usize];
                let bit = 1u64 << s.feature;
                let right = x[s.feature as usize] > s.threshold;
                // Children come after their parent (checked by Tree::validate).
                failed[s.left as usize] = f | if right { bit } else { 0 };
                failed[s.right as usize] = f | if right { 0 } else { bit };
            }
            let mut sum = Wide::default();
            for (l, &node) in self.leaves.iter().zip(&self.leaf_node) {
                let followed = !(failed[node as usize] as u8) & l.mask;
                sum.add(&l.wide[pext[((l.mask as usize) << 8) | followed as usize] as usize]);
            }
            out.add(&sum);
        }
    }

    /// Adds this tree's (unscaled) SHAP values for the `n` rows of the
    /// block in `scratch.columns` to `phi` (row after row, `d` each).
    fn add_block(&self, n: usize, d: usize, phi: &mut [f64], scratch: &mut BlockScratch) {
        if d <= 8 {
            let mut failed = std::mem::take(&mut scratch.failed8);
            self.walk_block::<u8>(n, d, phi, scratch, &mut failed);
        } else {
            let mut failed = std::mem::take(&mut scratch.failed);
            self.walk_block::<u64>(n, d, phi, scratch, &mut failed);
        }
    }

    /// The block walk with `M` bits per row for "failed" features: a byte
    /// when there are at most 8 features (so the per-node pass over the
    /// block is narrow and vectorises), else 64 bits.
    fn walk_block<M: FailedMask>(
        &self,
        n: usize,
        d: usize,
        phi: &mut [f64],
        scratch: &mut BlockScratch,
        failed: &mut Vec<M>,
    ) {
        let BlockScratch {
            columns,
            stack,
            acc,
            pext,
            outcomes,
            ..
        } = scratch;
        let need = (self.depth + 1) * BLOCK;
        if failed.len() < need {
            failed.resize(need, M::default());
        }
        failed[..n].fill(M::default());
        stack.clear();
        stack.push((0, 0, 0, false));
        while let Some((node, depth, parent, right_child)) = stack.pop() {
            let (node, depth) = (node as usize, depth as usize);
            if node != 0 {
                let p = parent as usize;
                let f = self.feature[p] as usize;
                let t = self.threshold[p];
                let bit = M::bit(f as u32);
                let (above, here) = failed.split_at_mut(depth * BLOCK);
                let above = &above[(depth - 1) * BLOCK..(depth - 1) * BLOCK + n];
                let x = &columns[f * BLOCK..f * BLOCK + n];
                for ((out, &up), &v) in here[..n].iter_mut().zip(above).zip(x) {
                    // Failing means going the other way than this child.
                    let cold = (v > t) != right_child;
                    *out = up | M::select(cold, bit);
                }
            }
            if let Ok(merged) = usize::try_from(self.merged_at[node]) {
                let mg = &self.merged[merged];
                let outcomes = &mut outcomes[..n];
                outcomes.fill(0);
                for (j, &(f, t)) in mg.splits.iter().enumerate() {
                    let x = &columns[f as usize * BLOCK..f as usize * BLOCK + n];
                    for (o, &v) in outcomes.iter_mut().zip(x) {
                        *o |= ((v > t) as u8) << j;
                    }
                }
                let m = mg.splits.len();
                let ups = &failed[depth * BLOCK..depth * BLOCK + n];
                if !mg.wide.is_empty() {
                    let above = mg.above as u8;
                    let base = (above as usize) << 8;
                    for ((sum, &up), &o) in acc.iter_mut().zip(ups).zip(outcomes.iter()) {
                        let pattern = pext[base | (!up.low_byte() & above) as usize] as usize;
                        sum.add(&mg.wide[(pattern << m) | o as usize]);
                    }
                } else {
                    let k = mg.features.len();
                    for (r, (&up, &o)) in ups.iter().zip(outcomes.iter()).enumerate() {
                        let pattern = extract(!up.bits(), mg.above) as usize;
                        let entry = (pattern << m) | o as usize;
                        let out = &mut phi[r * d..(r + 1) * d];
                        for (&f, v) in mg
                            .features
                            .iter()
                            .zip(&mg.values[entry * k..(entry + 1) * k])
                        {
                            out[f as usize] += v;
                        }
                    }
                }
                continue;
            }
            let leaf = self.leaf[node];
            if leaf < 0 {
                let (left, right) = (self.left[node] as usize, self.right[node] as usize);
                let (ll, rl) = (self.leaf[left], self.leaf[right]);
                if ll >= 0 && rl >= 0 {
                    let (a, b) = (&self.leaves[ll as usize], &self.leaves[rl as usize]);
                    if !a.wide.is_empty() && !b.wide.is_empty() {
                        // Two sibling leaves: one pass, one update of each
                        // row's sums, no per-child masks written.
                        let f = self.feature[node] as usize;
                        let t = self.threshold[node];
                        let bit = 1u8 << f;
                        let x = &columns[f * BLOCK..f * BLOCK + n];
                        let up = &failed[depth * BLOCK..depth * BLOCK + n];
                        let (base_a, base_b) = ((a.mask as usize) << 8, (b.mask as usize) << 8);
                        for ((sum, &up), &v) in acc.iter_mut().zip(up).zip(x) {
                            let up = up.low_byte();
                            let right = (v > t) as u8;
                            let failed_left = up | (right.wrapping_neg() & bit);
                            let failed_right = up | ((right ^ 1).wrapping_neg() & bit);
                            let ra =
                                &a.wide[pext[base_a | (!failed_left & a.mask) as usize] as usize];
                            let rb =
                                &b.wide[pext[base_b | (!failed_right & b.mask) as usize] as usize];
                            sum.add2(ra, rb);
                        }
                        continue;
                    }
                }
                let next = depth as u32 + 1;
                stack.push((self.right[node], next, node as u32, true));
                stack.push((self.left[node], next, node as u32, false));
                continue;
            }
            let l = &self.leaves[leaf as usize];
            let k = l.features.len();
            if k == 0 {
                continue;
            }
            let rows_failed = &failed[depth * BLOCK..depth * BLOCK + n];
            if !l.wide.is_empty() {
                let base = (l.mask as usize) << 8;
                for (sum, &failed) in acc.iter_mut().zip(rows_failed) {
                    let followed = !failed.low_byte() & l.mask;
                    let row = &l.wide[pext[base | followed as usize] as usize];
                    sum.add(row);
                }
                continue;
            }
            for (r, &failed) in rows_failed.iter().enumerate() {
                let mut pattern = 0usize;
                for (j, &f) in l.features.iter().enumerate() {
                    pattern |= (!failed.has(f) as usize) << j;
                }
                let out = &mut phi[r * d..(r + 1) * d];
                if l.table.is_empty() {
                    let one: Vec<f64> = (0..k).map(|j| ((pattern >> j) & 1) as f64).collect();
                    let mut c = vec![0.0; k];
                    leaf_contributions(&l.zero, &one, l.value, &mut c);
                    for (&f, v) in l.features.iter().zip(c) {
                        out[f as usize] += v;
                    }
                } else {
                    let entries = &l.table[pattern * k..(pattern + 1) * k];
                    for (&f, v) in l.features.iter().zip(entries) {
                        out[f as usize] += v;
                    }
                }
            }
        }
        let taken = std::mem::take(failed);
        M::put_back(scratch, taken);
    }
}

/// Per-row sets of features, as bits.
trait FailedMask: Copy + Default + std::ops::BitOr<Output = Self> {
    fn bit(feature: u32) -> Self;
    fn select(on: bool, bit: Self) -> Self;
    fn has(self, feature: u32) -> bool;
    fn low_byte(self) -> u8;
    fn bits(self) -> u64;
    fn put_back(scratch: &mut BlockScratch, v: Vec<Self>);
}

impl FailedMask for u8 {
    fn bit(feature: u32) -> u8 {
        1 << feature
    }
    fn select(on: bool, bit: u8) -> u8 {
        (on as u8).wrapping_neg() & bit
    }
    fn has(self, feature: u32) -> bool {
        (self >> feature) & 1 != 0
    }
    fn low_byte(self) -> u8 {
        self
    }
    fn bits(self) -> u64 {
        self as u64
    }
    fn put_back(scratch: &mut BlockScratch, v: Vec<u8>) {
        scratch.failed8 = v;
    }
}

impl FailedMask for u64 {
    fn bit(feature: u32) -> u64 {
        1 << feature
    }
    fn select(on: bool, bit: u64) -> u64 {
        (on as u64).wrapping_neg() & bit
    }
    fn has(self, feature: u32) -> bool {
        (self >> feature) & 1 != 0
    }
    fn low_byte(self) -> u8 {
        self as u8
    }
    fn bits(self) -> u64 {
        self
    }
    fn put_back(scratch: &mut BlockScratch, v: Vec<u64>) {
        scratch.failed = v;
    }
}

impl LeafTable {
    fn new(path: &[(u32, f64)], value: f64, narrow: bool) -> LeafTable {
        let k = path.len();
        let features: Vec<u32> = path.iter().map(|e| e.0).collect();
        let zero: Vec<f64> = path.iter().map(|e| e.1).collect();
        let mut table = Vec::new();
        let mut wide = Vec::new();
        let mut mask = 0u8;
        if narrow {
            for &f in &features {
                mask |= 1 << f;
            }
            // Rank of each path feature among the mask's bits.
            let rank: Vec<u32> = features
                .iter()
                .map(|&f| (mask as u32 & ((1u32 << f) - 1)).count_ones())
                .collect();
            wide = vec![Wide::default(); 1 << k];
            let mut one = vec![0.0; k];
            let mut c = vec![0.0; k];
            for (pattern, row) in wide.iter_mut().enumerate() {
                for (o, &r) in one.iter_mut().zip(&rank) {
                    *o = ((pattern >> r) & 1) as f64;
                }
                leaf_contributions(&zero, &one, value, &mut c);
                for (&f, v) in features.iter().zip(&c) {
                    row.0[f as usize] = *v;
                }
            }
        } else if k <= MAX_TABLE_FEATURES {
            table = vec![0.0; (1 << k) * k];
            let mut one = vec![0.0; k];
            for pattern in 0..(1usize << k) {
                for (j, o) in one.iter_mut().enumerate() {
                    *o = ((pattern >> j) & 1) as f64;
                }
                leaf_contributions(
                    &zero,
                    &one,
                    value,
                    &mut table[pattern * k..(pattern + 1) * k],
                );
            }
        }
        LeafTable {
            features,
            table,
            zero,
            value,
            mask,
            wide,
        }
    }
}

/// One leaf's contribution to each distinct feature of its path, given the
/// features' zero fractions (share of training samples that took the path
/// at that feature's splits) and one fractions (1 if the row did, else 0):
/// the leaf case of the recursive algorithm.
fn leaf_contributions(zero: &[f64], one: &[f64], value: f64, out: &mut [f64]) {
    let k = zero.len();
    let mut m = vec![PathElement::default(); k + 1];
    extend(&mut m, 0, 1.0, 1.0, -1);
    for j in 0..k {
        extend(&mut m, j + 1, zero[j], one[j], j as i32);
    }
    for (i, o) in out.iter_mut().enumerate() {
        let w = unwound_sum(&m, k, i + 1);
        *o = w * (one[i] - zero[i]) * value;
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
    fn tables_agree_with_the_recursive_algorithm() {
        // 6 features: 8-wide tables and byte masks; 10: compact tables and
        // 64-bit masks.
        // ψ 1024 with 12 features: paths with more distinct features than a
        // merged table takes, so some leaves keep their own tables.
        for (d, psi) in [(6usize, 256), (10, 256), (12, 1024)] {
            let mut rng = crate::rng::Rng::new(11);
            // Integer-valued columns give repeated thresholds and ties.
            let rows: Vec<f32> = (0..3000 * d)
                .map(|i| {
                    if i % 3 == 0 {
                        rng.below(5) as f32
                    } else {
                        rng.next_f64() as f32 * 100.0
                    }
                })
                .collect();
            let params = crate::train::TrainParams {
                max_samples: psi,
                ..Default::default()
            };
            let forest = crate::train::fit(&rows, d, &params);
            let mut fast = Explainer::new(&forest, d);
            let mut slow = Explainer::recursive(&forest, d);
            assert!(matches!(slow.engine, Engine::Recursive { .. }));
            let Engine::Tables { trees, .. } = &fast.engine else {
                panic!("d {d}: no tables");
            };
            let merged: usize = trees.iter().map(|t| t.merged.len()).sum();
            let (lookups, leaves) = fast.lookups_per_row().expect("tables");
            assert!(merged > 0 && lookups > merged);
            // The block walk must really take merged subtrees.
            assert!(
                lookups * 2 < leaves,
                "d {d}: {lookups} merged tables for {leaves} leaves"
            );
            let mut a = vec![0.0; d];
            let mut b = vec![0.0; d];
            let sample = &rows[..200 * d];
            let mut many = vec![0.0; sample.len()];
            fast.explain_many(sample, &mut many);
            for (row, m) in sample.chunks(d).zip(many.chunks(d)) {
                fast.explain(row, &mut a);
                slow.explain(row, &mut b);
                for i in 0..d {
                    assert!((a[i] - b[i]).abs() < 1e-12, "d {d}: {a:?} vs {b:?}");
                    assert!(
                        (a[i] - m[i]).abs() < 1e-12,
                        "d {d}: one row {a:?} vs a block {m:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_tight_table_budget_leaves_some_trees_unmerged_with_the_same_values() {
        let d = 6;
        let mut rng = crate::rng::Rng::new(4);
        let rows: Vec<f32> = (0..2000 * d)
            .map(|_| rng.next_f64() as f32 * 100.0)
            .collect();
        let forest = crate::train::fit(&rows, d, &crate::train::TrainParams::default());
        let tables = |e: &Explainer| match &e.engine {
            Engine::Tables { trees, .. } => trees
                .iter()
                .map(|t| (t.merged.len(), t.table_bytes()))
                .collect::<Vec<_>>(),
            Engine::Recursive { .. } => panic!("no tables"),
        };
        let full = Explainer::new(&forest, d);
        let leaves_only: usize = match &full.engine {
            Engine::Tables { trees, .. } => trees
                .iter()
                .flat_map(|t| &t.leaves)
                .map(|l| l.wide.len() * std::mem::size_of::<Wide>())
                .sum(),
            Engine::Recursive { .. } => unreachable!(),
        };
        let budget = leaves_only + (full.table_bytes() - leaves_only) / 2;
        let mut tight = Explainer::build(&forest, d, true, budget);
        let trees = tables(&tight);
        assert!(tight.table_bytes() <= budget);
        assert!(trees.iter().any(|t| t.0 > 0), "no tree merged");
        assert!(trees.iter().any(|t| t.0 == 0), "every tree merged");
        let mut slow = Explainer::recursive(&forest, d);
        let sample = &rows[..100 * d];
        let mut many = vec![0.0; sample.len()];
        tight.explain_many(sample, &mut many);
        let mut want = vec![0.0; d];
        for (row, got) in sample.chunks(d).zip(many.chunks(d)) {
            slow.explain(row, &mut want);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-12, "{got:?} vs {want:?}");
            }
        }
        // Below the leaf tables themselves: the recursive algorithm.
        let none = Explainer::build(&forest, d, true, leaves_only - 1);
        assert!(matches!(none.engine, Engine::Recursive { .. }));
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
        // A block (merged subtree tables) and single rows (leaf tables).
        let block = &rows[..2 * FEW_ROWS * d];
        let mut many = vec![0.0; block.len()];
        explainer.explain_many(block, &mut many);
        for (row, phi) in block.chunks(d).zip(many.chunks(d)) {
            let want = brute_force(&forest, row, d);
            for (a, b) in phi.iter().zip(&want) {
                assert!((a - b).abs() < 1e-9, "block: {phi:?} vs {want:?}");
            }
        }
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
