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
/// Rows per block in the rank layout. Their ranks (16 bytes a row) and sums
/// outgrow L1, but each tree is fetched once per block and a tree of the
/// rank layout is larger: at ψ = 256, 73 triples of 32 bytes and 585 leaf
/// slots of 8, about 7 KiB.
const RANK_BLOCK: usize = 4096;
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
    /// The rank layout of every tree (x86-64 with AVX2 and POPCNT, at
    /// most 8 features, ranks that fit in 16 bits); `None` otherwise.
    ranked: Option<Ranked>,
}

/// A forest in the rank layout: the cuts that turn rows into ranks, and the
/// trees compiled against them.
#[derive(Debug, Clone)]
struct Ranked {
    cuts: Cuts,
    trees: Vec<Triples>,
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
        let trees: Vec<Layout> = forest.trees.iter().map(compile).collect();
        let ranked = (has_avx2_popcnt() && n_features <= 8)
            .then(|| {
                let cuts = Cuts::new(&trees, n_features)?;
                let trees = forest
                    .trees
                    .iter()
                    .map(|t| Triples::compile(t, &cuts))
                    .collect::<Option<Vec<_>>>()?;
                Some(Ranked { cuts, trees })
            })
            .flatten();
        Ok(Scorer {
            n_features,
            trees,
            max_samples: forest.max_samples,
            offset: forest.offset,
            ranked,
        })
    }

    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Whether rows are compared by rank ([`Triples`]), the fast path.
    #[cfg(test)]
    fn uses_ranks(&self) -> bool {
        self.ranked.is_some()
    }

    /// Sum over trees of each row's path length. `rows` holds whole rows of
    /// `n_features` values, row after row; `out` gets one value per row.
    pub fn path_sums(&self, rows: &[f32], out: &mut [f64]) {
        let d = self.n_features;
        let n = rows.len() / d;
        assert_eq!(out.len(), n, "one output per row");
        #[cfg(target_arch = "x86_64")]
        if let Some(ranked) = &self.ranked {
            // SAFETY: `ranked` is only built when AVX2 and POPCNT were
            // detected and d <= 8, its trees compiled against its cuts.
            unsafe { path_sums_triples(&ranked.trees, &ranked.cuts, rows, d, out) };
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
                // NaN goes right, as with scikit-learn's `x <= t` going
                // left, except along the padding's always-left chains.
                let right = (x > node.threshold) | (x.is_nan() & (node.threshold != f32::INFINITY));
                *i = 2 * *i + 1 + right as u32;
            }
        }
    }
    let first_leaf = nodes.len() as u32;
    for (sum, i) in sums.iter_mut().zip(at.iter()).take(rows) {
        // After `depth` steps every slot is a leaf slot: first_leaf..2^(depth+1) - 1.
        *sum += leaves[(*i - first_leaf) as usize];
    }
}

fn has_avx2_popcnt() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("popcnt")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A tree cut into 3-level subtrees of 7 nodes: one step compares a row with
/// all 7 thresholds at once, and a table turns the 7 outcomes into which of
/// the 8 subtrees below to enter. Leaves keep the complete layout's order.
///
/// Comparisons are on ranks, not on values: each feature's thresholds over
/// the whole forest are sorted once ([`Cuts`]), a row's value becomes the
/// number of thresholds below it, and a threshold becomes its index, so
/// `x > t` is exactly `rank(x) > index(t)`. Ranks fit in 16 bits (100 trees
/// of ψ 256 have at most 25,500 thresholds; a forest with more than 65,534
/// on one feature is walked node by node), so a row's ≤ 8 features fit
/// in one 128-bit register, picking each node's feature is one byte shuffle
/// and the 7 comparisons one instruction — about half the work of comparing
/// `f32`s, whose register needs a costlier cross-lane permute.
#[derive(Debug, Clone)]
struct Triples {
    steps: u32,
    nodes: Vec<Triple>,
    /// Indexed by slot: the first `nodes.len()` slots are the triples'
    /// (unused), so a row's final position (see [`SLOT_BYTES`]) is its
    /// leaf's byte offset in here.
    leaves: Vec<f64>,
}

/// One 7-node subtree in half a cache line: for each node, the byte
/// shuffle that moves its feature's rank into its lane, and its threshold's
/// rank. The unused eighth lane never goes right.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
struct Triple {
    shuffle: [u8; 16],
    ranks: [i16; 8],
}

/// Rank of a threshold that no row exceeds (the always-left padding).
const NEVER: i16 = i16::MAX;

/// Ranks are stored shifted down by 2^15 so that signed 16-bit comparisons
/// (the only kind SSE has) order all 65,535 of them.
fn biased(rank: usize) -> i16 {
    (rank as i32 - 0x8000) as i16
}

/// Every feature's distinct thresholds across the forest, ascending, and a
/// search tree over them that turns a row's values into ranks.
#[derive(Debug, Clone)]
struct Cuts {
    per_feature: Vec<Vec<f32>>,
    search: Vec<SearchTree>,
}

impl Cuts {
    /// `None` when some feature has too many thresholds for 16-bit ranks;
    /// the scorer then uses the node-by-node layout. (A validated forest
    /// has no NaN threshold.)
    fn new(trees: &[Layout], n_features: usize) -> Option<Cuts> {
        let mut per_feature = vec![Vec::new(); n_features];
        for tree in trees {
            let Layout::Complete { nodes, .. } = tree else {
                return None;
            };
            for node in nodes {
                if node.threshold != f32::INFINITY {
                    per_feature[node.feature as usize].push(node.threshold);
                }
            }
        }
        for cuts in &mut per_feature {
            cuts.sort_by(f32::total_cmp);
            // -0.0 and 0.0 compare equal, so they are one cut.
            cuts.dedup_by(|a, b| a == b);
            // A row's rank is at most cuts.len(); it must stay below NEVER.
            if cuts.len() >= u16::MAX as usize {
                return None;
            }
        }
        let search = per_feature.iter().map(|c| SearchTree::new(c)).collect();
        Some(Cuts {
            per_feature,
            search,
        })
    }

    /// The rank of threshold `t` of `feature`: its index among the cuts.
    fn threshold_rank(&self, feature: usize, t: f32) -> i16 {
        if t == f32::INFINITY {
            return NEVER;
        }
        biased(self.per_feature[feature].partition_point(|&c| c < t))
    }

    /// Each row's rank for each feature: how many cuts lie below its value.
    /// NaN ranks above every cut: it goes right at every real node, as in
    /// scikit-learn (`x <= t` goes left), and left along the padding.
    ///
    /// # Safety
    /// AVX2 and POPCNT must be available, and `d` must be the number of
    /// features the cuts were made for (values are read unchecked).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    unsafe fn block_ranks(&self, block: &[f32], d: usize, out: &mut [RowRanks]) {
        const LOCKSTEP: usize = 8;
        debug_assert_eq!(self.search.len(), d);
        let n = out.len().min(block.len() / d);
        let whole = n - n % LOCKSTEP;
        for (f, search) in self.search.iter().enumerate() {
            let value = |r: usize| *block.get_unchecked(r * d + f);
            for r in (0..whole).step_by(LOCKSTEP) {
                let below = search.ranks(&std::array::from_fn::<_, LOCKSTEP, _>(|k| value(r + k)));
                for (k, below) in below.into_iter().enumerate() {
                    out.get_unchecked_mut(r + k).0[f] = biased(below);
                }
            }
            for r in whole..n {
                out.get_unchecked_mut(r).0[f] = biased(search.ranks(&[value(r)])[0]);
            }
        }
    }
}

/// A static B+ tree over ascending cuts, 8 keys to a node so that one
/// 256-bit compare and a popcount do a node: up to 4,096 cuts take 4 such
/// steps instead of 12 dependent binary-search steps.
///
/// The last layer holds the cuts in nodes of 8 (padded with +inf); each
/// layer above holds, for each group of 8 nodes below, the first keys of
/// nodes 1..=7 of the group (+inf where there is none). How many of a
/// node's keys lie below `x` picks the child to enter; at the bottom, node
/// index × 8 plus that count is how many cuts lie below `x`.
#[derive(Debug, Clone, Default)]
struct SearchTree {
    /// Root layer first.
    layers: Vec<Vec<Keys>>,
}

#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
struct Keys([f32; 8]);

impl SearchTree {
    fn new(cuts: &[f32]) -> SearchTree {
        let node = |keys: &[f32]| {
            let mut k = [f32::INFINITY; 8];
            k[..keys.len()].copy_from_slice(keys);
            Keys(k)
        };
        if cuts.is_empty() {
            return SearchTree::default();
        }
        let mut layers = vec![cuts.chunks(8).map(node).collect::<Vec<_>>()];
        // The first key under each node of the layer last built.
        let mut firsts: Vec<f32> = cuts.chunks(8).map(|c| c[0]).collect();
        while firsts.len() > 1 {
            layers.push(firsts.chunks(8).map(|g| node(&g[1..])).collect());
            firsts = firsts.chunks(8).map(|g| g[0]).collect();
        }
        layers.reverse();
        SearchTree { layers }
    }

    /// How many cuts lie below each `x`, all of them for NaN; the searches
    /// run side by side so that their loads overlap.
    ///
    /// # Safety
    /// AVX2 and POPCNT must be available.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    #[inline]
    unsafe fn ranks<const N: usize>(&self, x: &[f32; N]) -> [usize; N] {
        use std::arch::x86_64::*;
        const NODE: usize = std::mem::size_of::<Keys>();
        // min(NaN, +inf) is +inf, above every cut (cuts are finite) and
        // below none of the +inf padding keys: NaN ranks cuts.len().
        let inf = _mm256_set1_ps(f32::INFINITY);
        let xs: [__m256; N] = std::array::from_fn(|k| _mm256_min_ps(_mm256_set1_ps(x[k]), inf));
        // Byte offsets of each search's node in the current layer.
        let mut at = [0usize; N];
        for layer in &self.layers {
            let base = layer.as_ptr() as *const u8;
            for (at, x) in at.iter_mut().zip(xs) {
                // In range: the root layer is one node, and a count never
                // passes a node's last real child (the keys after it are +inf).
                let keys = _mm256_load_ps(base.add(*at) as *const f32);
                let below = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(keys, x));
                *at = *at * 8 + below.count_ones() as usize * NODE;
            }
        }
        at.map(|at| at / NODE)
    }
}

/// A row's feature ranks, as one 128-bit load.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(16))]
struct RowRanks([i16; 8]);

/// Triples are stored as an 8-ary heap (the children of triple `i` are
/// `8i + 1 ..= 8i + 8`), so a step is `at = 8 * at + CHILD[outcomes]` on
/// positions: one table load and one address computation on the chain
/// from one step's comparisons to the next step's loads.
///
/// `CHILD[m]` is the position, from `8 * at`, of the child a row enters
/// given the byte mask `m` of the 16-bit comparisons: bits `2k` and `2k + 1`
/// are both set when the row went right at node `k` (BFS order). Indexing
/// by the wide mask saves narrowing it; only 128 entries are ever read.
const fn child_table() -> [u16; 1 << 16] {
    let mut t = [0u16; 1 << 16];
    let mut m = 0;
    while m < (1 << 16) {
        let b0 = m & 1;
        let n1 = 1 + b0;
        let b1 = (m >> (2 * n1)) & 1;
        let n2 = 3 + 2 * b0 + b1;
        let b2 = (m >> (2 * n2)) & 1;
        let child = b0 * 4 + b1 * 2 + b2;
        t[m] = ((1 + child) * SLOT_BYTES) as u16;
        m += 1;
    }
    t
}
static CHILD: [u16; 1 << 16] = child_table();

/// A row's position `at` in a tree is its slot's byte offset in
/// [`Triples::leaves`], slot × 8. The leaf a row ends in is then at
/// `leaves + at` and a triple at `nodes + 4 * at`: each one addressing mode,
/// with no shift between the last step and the leaf's load.
const SLOT_BYTES: usize = std::mem::size_of::<f64>();

impl Triples {
    /// The path length of the leaf slot a row reached, from its position
    /// after the last step.
    #[inline]
    fn leaf(&self, at: usize) -> f64 {
        let slot = at / SLOT_BYTES;
        debug_assert!(slot >= self.nodes.len() && slot < self.leaves.len());
        // SAFETY: `steps` steps from slot 0 end in a child of a last-level
        // triple: slot 8 * nodes.len() at most, = leaves.len() - 1.
        unsafe { *((self.leaves.as_ptr() as *const u8).add(at) as *const f64) }
    }

    fn compile(tree: &Tree, cuts: &Cuts) -> Option<Triples> {
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
                let mut triple = Triple {
                    shuffle: [0; 16],
                    ranks: [NEVER; 8],
                };
                for l in 0..3 {
                    for p in 0..(1usize << l) {
                        let node = nodes[(1usize << (3 * g as usize + l)) - 1 + (s << l) + p];
                        let k = (1 << l) - 1 + p;
                        let f = node.feature as u8;
                        triple.shuffle[2 * k] = 2 * f;
                        triple.shuffle[2 * k + 1] = 2 * f + 1;
                        triple.ranks[k] = cuts.threshold_rank(f as usize, node.threshold);
                    }
                }
                triples.push(triple);
            }
        }
        let mut slots = vec![f64::NAN; triples.len()];
        slots.extend(leaves);
        Some(Triples {
            steps,
            nodes: triples,
            leaves: slots,
        })
    }
}

/// Scores with the [`Triples`] layout: block by block, the block's ranks
/// once, then every tree over the block's rows.
///
/// # Safety
/// The CPU must support AVX2 and POPCNT, `d` must be at most 8 and `trees`
/// compiled against `cuts`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
unsafe fn path_sums_triples(
    trees: &[Triples],
    cuts: &Cuts,
    rows: &[f32],
    d: usize,
    out: &mut [f64],
) {
    use std::arch::x86_64::*;
    const ROWS: usize = 8;
    const _: () = assert!(ROWS.is_multiple_of(PIPELINED_ROWS));
    let mut ranks = vec![RowRanks::default(); RANK_BLOCK.min(out.len())];
    for (block, sums) in rows.chunks(d * RANK_BLOCK).zip(out.chunks_mut(RANK_BLOCK)) {
        let n = sums.len();
        cuts.block_ranks(block, d, &mut ranks);
        sums.fill(0.0);
        let full = n - n % ROWS;
        for tree in trees {
            if tree.steps == 3 {
                three_steps_pipelined(tree, &ranks[..full], &mut sums[..full]);
                continue;
            }
            for r in (0..full).step_by(ROWS) {
                let mut at = [0usize; ROWS];
                let x: [__m128i; ROWS] = std::array::from_fn(|k| {
                    _mm_load_si128(ranks.get_unchecked(r + k).0.as_ptr() as *const __m128i)
                });
                for _ in 0..tree.steps {
                    for (at, x) in at.iter_mut().zip(x) {
                        *at = triple_step(tree, *at, x);
                    }
                }
                for (k, at) in at.iter().enumerate() {
                    *sums.get_unchecked_mut(r + k) += tree.leaf(*at);
                }
            }
        }
        // The last few rows (or the single row pf-score scores at a time):
        // several trees side by side instead of several rows.
        for r in full..n {
            let x = _mm_load_si128(ranks[r].0.as_ptr() as *const __m128i);
            for chunk in trees.chunks(ROWS) {
                let mut at = [0usize; ROWS];
                let steps = chunk.iter().map(|t| t.steps).max().unwrap_or(0);
                for step in 0..steps {
                    for (at, tree) in at.iter_mut().zip(chunk) {
                        if step < tree.steps {
                            *at = triple_step(tree, *at, x);
                        }
                    }
                }
                for (at, tree) in at.iter().zip(chunk) {
                    sums[r] += tree.leaf(*at);
                }
            }
        }
    }
}

/// Rows per group in [`three_steps_pipelined`]: three groups in flight hold
/// 12 row positions, as many as the registers keep without spilling.
const PIPELINED_ROWS: usize = 4;

/// A 3-step tree (the usual depth for ψ = 256) over whole groups of 4 rows,
/// software-pipelined: while one group takes its third step, the next takes
/// its second and the one after its first. The 12 steps in flight do not
/// wait on each other, so the loads of one overlap the table lookups of the
/// others instead of each row's three steps running back to back.
///
/// # Safety
/// AVX2 must be available, `tree.steps == 3`, and `ranks` and `sums` of the
/// same length, a multiple of 4.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn three_steps_pipelined(tree: &Triples, ranks: &[RowRanks], sums: &mut [f64]) {
    use std::arch::x86_64::*;
    const P: usize = PIPELINED_ROWS;
    debug_assert!(ranks.len().is_multiple_of(P) && sums.len() == ranks.len());
    let groups = ranks.len() / P;
    let load = |g: usize| -> [__m128i; P] {
        std::array::from_fn(|k| {
            _mm_load_si128(ranks.get_unchecked(g * P + k).0.as_ptr() as *const __m128i)
        })
    };
    // Each group's ranks are loaded once and stay in registers for its
    // three steps, leaving the load slots to the tree's nodes.
    let step = |at: [usize; P], x: &[__m128i; P]| -> [usize; P] {
        std::array::from_fn(|k| triple_step(tree, at[k], x[k]))
    };
    let finish = |g: usize, at: [usize; P], x: &[__m128i; P], sums: &mut [f64]| {
        for (k, at) in step(at, x).into_iter().enumerate() {
            *sums.get_unchecked_mut(g * P + k) += tree.leaf(at);
        }
    };
    if groups < 2 {
        for g in 0..groups {
            let x = load(g);
            finish(g, step(step([0; P], &x), &x), &x, sums);
        }
        return;
    }
    // One pipeline stage at group g: group g - 2 takes its last step, g - 1
    // its second, g its first.
    let stage = |g: usize,
                 two: [usize; P],
                 x2: &[__m128i; P],
                 one: [usize; P],
                 x1: &[__m128i; P],
                 x0: &[__m128i; P],
                 sums: &mut [f64]| {
        finish(g - 2, two, x2, sums);
        (step(one, x1), step([0; P], x0))
    };
    let (mut xa, mut xb) = (load(0), load(1));
    let mut two = step(step([0; P], &xa), &xa);
    let mut one = step([0; P], &xb);
    let mut g = 2;
    // Three stages per pass, so the three groups' registers trade roles
    // without being moved.
    while g + 3 <= groups {
        let xc = load(g);
        (two, one) = stage(g, two, &xa, one, &xb, &xc, sums);
        xa = load(g + 1);
        (two, one) = stage(g + 1, two, &xb, one, &xc, &xa, sums);
        xb = load(g + 2);
        (two, one) = stage(g + 2, two, &xc, one, &xa, &xb, sums);
        g += 3;
    }
    while g < groups {
        let xc = load(g);
        (two, one) = stage(g, two, &xa, one, &xb, &xc, sums);
        (xa, xb) = (xb, xc);
        g += 1;
    }
    finish(groups - 2, two, &xa, sums);
    finish(groups - 1, step(one, &xb), &xb, sums);
}

/// One 3-level step of the row with ranks `x` from the triple at position
/// `at`: the position of the triple (or, after the last step, the
/// leaf slot) it enters.
///
/// # Safety
/// AVX2 must be available and `at` the position of one of `tree.nodes`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn triple_step(tree: &Triples, at: usize, x: std::arch::x86_64::__m128i) -> usize {
    use std::arch::x86_64::*;
    let triple_bytes = std::mem::size_of::<Triple>() / SLOT_BYTES * at;
    let node = (tree.nodes.as_ptr() as *const u8).add(triple_bytes) as *const Triple;
    let shuffle = _mm_load_si128((*node).shuffle.as_ptr() as *const __m128i);
    let ranks = _mm_load_si128((*node).ranks.as_ptr() as *const __m128i);
    let right = _mm_cmpgt_epi16(_mm_shuffle_epi8(x, shuffle), ranks);
    // A 16-bit mask: in range.
    let m = _mm_movemask_epi8(right) as usize;
    8 * at + *CHILD.get_unchecked(m) as usize
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
        // ψ 20, 256 and 1003 (all 1003 rows) give trees of up to 2, 3 and
        // 4 steps in the rank layout; 10 features take the fallback.
        for (d, psi, steps) in [(6, 256, 3), (3, 20, 2), (4, 1024, 4), (10, 256, 0)] {
            let rows: Vec<f32> = (0..1003 * d)
                .map(|_| (rng.next_f64() * 50.0).floor() as f32)
                .collect();
            let params = crate::train::TrainParams {
                max_samples: psi,
                ..Default::default()
            };
            let forest = crate::train::fit(&rows, d, &params);
            let scorer = Scorer::new(&forest, d).unwrap();
            if let Some(ranked) = &scorer.ranked {
                let deepest = ranked.trees.iter().map(|t| t.steps).max();
                assert_eq!(deepest, Some(steps), "d {d}, psi {psi}");
            } else {
                assert!(d > 8 || !has_avx2_popcnt(), "d {d} should use ranks");
            }
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

    /// Training rows whose columns differ in scale: small integers, values
    /// around 1e-3, values up to ±1e6, so thresholds span many exponents.
    fn mixed_scale_rows(seed: u64, n: usize, d: usize) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n * d)
            .map(|i| match i % d % 4 {
                0 => rng.below(5) as f32 - 2.0,
                1 => (rng.next_f64() * 1e-3) as f32,
                2 => (rng.next_f64() * 2e6 - 1e6) as f32,
                _ => rng.below(3) as f32,
            })
            .collect()
    }

    /// Rows made of the forest's own thresholds, the values just above and
    /// below them, signed zeros, infinities and NaN: the rank comparisons
    /// must send every one down the same path as the model's `f64` ones.
    #[test]
    fn rank_comparisons_agree_with_the_model_at_every_threshold() {
        let d = 4;
        let rows = mixed_scale_rows(9, 2000, d);
        let forest = crate::train::fit(&rows, d, &Default::default());
        let scorer = Scorer::new(&forest, d).unwrap();
        assert_eq!(scorer.uses_ranks(), has_avx2_popcnt());
        let mut values = vec![0.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
        for tree in &forest.trees {
            for (node, &t) in tree.threshold.iter().enumerate() {
                if !tree.is_leaf(node) {
                    let t32 = f32_at_or_below(t);
                    values.extend([t32, t32.next_up(), t32.next_down(), t as f32]);
                }
            }
        }
        let probe: Vec<f32> = (0..values.len() * 3)
            .flat_map(|i| (0..d).map(move |f| (i, f)))
            .map(|(i, f)| values[(i * (f + 1) * 7919 + f * 31) % values.len()])
            .collect();
        let n = probe.len() / d;
        assert!(n > RANK_BLOCK, "more than one block of rows");
        // Lengths that leave every count of groups of 4 rows over after the
        // pipelined passes of three, and a tail of single rows.
        let lengths = [n, n - 1, 1, 9].into_iter().chain((16..=72).step_by(8));
        for len in lengths.chain([RANK_BLOCK + 13]) {
            let mut got = vec![0.0; len];
            scorer.score_samples(&probe[..len * d], &mut got);
            for (i, row) in probe[..len * d].chunks(d).enumerate() {
                assert_eq!(got[i], forest.score_samples(row), "row {row:?}");
            }
        }
    }

    /// The invariant the rank layout rests on, checked at every cut of a
    /// trained forest: `rank(x) > rank(t)` exactly when `x > t` (or x is NaN).
    #[test]
    fn a_rank_exceeds_a_thresholds_rank_exactly_when_the_value_exceeds_it() {
        let d = 3;
        let rows = mixed_scale_rows(4, 3000, d);
        if !has_avx2_popcnt() {
            return;
        }
        let forest = crate::train::fit(&rows, d, &Default::default());
        let trees: Vec<Layout> = forest.trees.iter().map(compile).collect();
        let cuts = Cuts::new(&trees, d).unwrap();
        let special = [0.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
        for (f, fcuts) in cuts.per_feature.iter().enumerate() {
            assert!(!fcuts.is_empty(), "feature {f} has no cuts");
            let mut probes: Vec<f32> = special.to_vec();
            for &c in fcuts {
                probes.extend([c, c.next_up(), c.next_down()]);
            }
            let rows: Vec<f32> = probes
                .iter()
                .flat_map(|&x| (0..d).map(move |g| if g == f { x } else { 0.0 }))
                .collect();
            let mut block = vec![RowRanks::default(); probes.len()];
            // SAFETY: checked above.
            unsafe { cuts.block_ranks(&rows, d, &mut block) };
            let ranks: Vec<i16> = block.iter().map(|r| r.0[f]).collect();
            for &t in fcuts {
                let rt = cuts.threshold_rank(f, t);
                for (&x, &rx) in probes.iter().zip(&ranks) {
                    assert_eq!(rx > rt, x > t || x.is_nan(), "feature {f}, x {x}, t {t}");
                    assert!(rx < NEVER, "nothing passes the padding");
                }
            }
        }
    }

    /// The search tree counts the cuts below a value exactly, for sizes
    /// around every layer boundary (8, 64, 512 and 4096 cuts).
    #[test]
    fn search_tree_counts_cuts_below_like_a_binary_search() {
        if !has_avx2_popcnt() {
            return;
        }
        let mut rng = crate::rng::Rng::new(8);
        for n in [
            0, 1, 2, 7, 8, 9, 63, 64, 65, 511, 512, 513, 1500, 4095, 4096, 4097,
        ] {
            let mut cuts: Vec<f32> = (0..n)
                .map(|_| (rng.next_f64() * 2e3 - 1e3) as f32)
                .collect();
            cuts.sort_by(f32::total_cmp);
            cuts.dedup();
            let tree = SearchTree::new(&cuts);
            let mut probes = vec![
                f32::INFINITY,
                f32::NEG_INFINITY,
                0.0,
                -0.0,
                1e9,
                -1e9,
                f32::NAN,
            ];
            for &c in &cuts {
                probes.extend([c, c.next_up(), c.next_down()]);
            }
            for chunk in probes.chunks(8) {
                let mut x = [0.0f32; 8];
                x[..chunk.len()].copy_from_slice(chunk);
                // SAFETY: checked above.
                let got = unsafe { tree.ranks(&x) };
                for (x, got) in x.iter().zip(got) {
                    let want = if x.is_nan() {
                        cuts.len()
                    } else {
                        cuts.partition_point(|c| c < x)
                    };
                    assert_eq!(got, want, "{n} cuts, x {x}");
                }
            }
        }
    }

    /// More distinct thresholds on one feature than 16-bit ranks can order:
    /// the scorer falls back to walking node by node, with the same scores.
    #[test]
    fn forests_with_too_many_thresholds_for_ranks_still_score_exactly() {
        let mut rng = crate::rng::Rng::new(3);
        let rows: Vec<f32> = (0..8192).map(|_| rng.next_f64() as f32).collect();
        let params = crate::train::TrainParams {
            n_trees: 10,
            max_samples: 8192,
            ..Default::default()
        };
        let forest = crate::train::fit(&rows, 1, &params);
        let scorer = Scorer::new(&forest, 1).unwrap();
        assert!(!scorer.uses_ranks());
        let mut probe = rows[..500].to_vec();
        probe.extend([f32::NAN, -0.0, 0.0, f32::INFINITY, f32::NEG_INFINITY]);
        let mut got = vec![0.0; probe.len()];
        scorer.score_samples(&probe, &mut got);
        for (i, x) in probe.iter().enumerate() {
            assert_eq!(got[i], forest.score_samples(&[*x]), "x = {x}");
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
