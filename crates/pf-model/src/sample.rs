//! Which training rows to keep, in bounded memory.
//!
//! * `--max-lines N` with N up to [`CAPACITY`]: exactly the last N rows (a ring).
//! * `--max-lines all`: a uniform reservoir of [`CAPACITY`] rows over everything.
//! * `--max-lines N` with N above [`CAPACITY`]: a stratified sample of the
//!   last N rows: the stream is cut into blocks of N/[`STRATA`] rows, each
//!   keeps a uniform reservoir of [`CAPACITY`]/[`STRATA`] rows, and the
//!   blocks (or the part of the oldest block) inside the window are used.
//!
//! So memory never exceeds about [`CAPACITY`] rows however long the input.

use crate::rng::Rng;
use std::collections::VecDeque;

/// Rows held at most: the default `--max-lines`, so `all` over any input
/// needs the memory the default needs (2.4 MB for 6 features). The trees
/// use ψ × trees rows (25,600 by default); the rest sharpens the offset.
pub const CAPACITY: usize = 100_000;
pub const STRATA: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Last(u64),
    All,
}

#[derive(Debug)]
pub struct Sample {
    d: usize,
    mode: Mode,
    rng: Rng,
    seen: u64,
}

/// Rows are stored flat (`d` values after another), never one allocation each.
#[derive(Debug)]
enum Mode {
    /// `next` is the slot the next row overwrites once the ring is full.
    Ring {
        cap: usize,
        rows: Vec<f32>,
        next: usize,
    },
    Reservoir {
        rows: Vec<f32>,
    },
    Strata {
        window: u64,
        block: u64,
        per_block: usize,
        blocks: VecDeque<Block>,
    },
}

#[derive(Debug)]
struct Block {
    first: u64,
    seen: u64,
    positions: Vec<u64>,
    rows: Vec<f32>,
}

impl Sample {
    pub fn new(d: usize, window: Window, seed: u64) -> Sample {
        let mode = match window {
            Window::Last(n) if n as usize <= CAPACITY => Mode::Ring {
                cap: n as usize,
                rows: Vec::new(),
                next: 0,
            },
            Window::All => Mode::Reservoir { rows: Vec::new() },
            Window::Last(n) => Mode::Strata {
                window: n,
                block: n.div_ceil(STRATA as u64),
                per_block: CAPACITY / STRATA,
                blocks: VecDeque::new(),
            },
        };
        Sample {
            d,
            mode,
            rng: Rng::new(seed ^ 0x5EED),
            seen: 0,
        }
    }

    /// Rows offered so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    pub fn push(&mut self, row: &[f32]) {
        let d = self.d;
        debug_assert_eq!(row.len(), d);
        let pos = self.seen;
        self.seen += 1;
        match &mut self.mode {
            Mode::Ring { cap, rows, next } => {
                if *cap == 0 {
                    return;
                }
                if rows.len() < *cap * d {
                    rows.extend_from_slice(row);
                } else {
                    rows[*next * d..(*next + 1) * d].copy_from_slice(row);
                    *next = (*next + 1) % *cap;
                }
            }
            Mode::Reservoir { rows } => {
                if rows.len() < CAPACITY * d {
                    rows.extend_from_slice(row);
                } else {
                    let j = self.rng.below(pos + 1) as usize;
                    if j < CAPACITY {
                        rows[j * d..(j + 1) * d].copy_from_slice(row);
                    }
                }
            }
            Mode::Strata {
                window,
                block,
                per_block,
                blocks,
            } => {
                if blocks.back().is_none_or(|b| b.seen == *block) {
                    blocks.push_back(Block {
                        first: pos,
                        seen: 0,
                        positions: Vec::new(),
                        rows: Vec::new(),
                    });
                    // Drop blocks that ended before the window can reach.
                    while blocks
                        .front()
                        .is_some_and(|b| b.first + *block + *window <= pos + 1)
                    {
                        blocks.pop_front();
                    }
                }
                let Some(b) = blocks.back_mut() else { return };
                if b.positions.len() < *per_block {
                    b.positions.push(pos);
                    b.rows.extend_from_slice(row);
                } else {
                    let j = self.rng.below(b.seen + 1) as usize;
                    if j < *per_block {
                        b.positions[j] = pos;
                        b.rows[j * d..(j + 1) * d].copy_from_slice(row);
                    }
                }
                b.seen += 1;
            }
        }
    }

    /// The kept rows, row after row (oldest first where order is known).
    pub fn into_rows(mut self) -> Vec<f32> {
        let d = self.d;
        match self.mode {
            Mode::Ring { mut rows, next, .. } => {
                rows.rotate_left(next * d);
                rows
            }
            Mode::Reservoir { rows } => rows,
            Mode::Strata {
                window,
                block,
                per_block,
                blocks,
            } => {
                let start = self.seen.saturating_sub(window);
                let mut out = Vec::new();
                for b in &blocks {
                    let mut keep: Vec<usize> = (0..b.positions.len())
                        .filter(|&k| b.positions[k] >= start)
                        .collect();
                    // A block still filling kept every row so far; thin it to
                    // the rate of the full blocks so it is not over-weighted.
                    if b.seen < block {
                        let want =
                            ((b.seen as f64) * per_block as f64 / block as f64).ceil() as usize;
                        for i in 0..want.min(keep.len()) {
                            let j = i + self.rng.below((keep.len() - i) as u64) as usize;
                            keep.swap(i, j);
                        }
                        keep.truncate(want);
                        keep.sort_unstable();
                    }
                    for k in keep {
                        out.extend_from_slice(&b.rows[k * d..(k + 1) * d]);
                    }
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_exactly_the_last_n_rows() {
        let mut s = Sample::new(1, Window::Last(3), 0);
        for i in 0..10 {
            s.push(&[i as f32]);
        }
        assert_eq!(s.into_rows(), vec![7.0, 8.0, 9.0]);
    }

    #[test]
    fn all_keeps_a_capacity_sized_uniform_sample() {
        let mut s = Sample::new(1, Window::All, 2);
        let total = CAPACITY * 10;
        for i in 0..total {
            s.push(&[i as f32]);
        }
        let rows = s.into_rows();
        assert_eq!(rows.len(), CAPACITY, "no more rows than the capacity");
        let mean = rows.iter().map(|&v| v as f64).sum::<f64>() / rows.len() as f64;
        let mid = total as f64 / 2.0;
        assert!(
            (mean - mid).abs() < total as f64 * 0.01,
            "uniform over all: {mean} vs {mid}"
        );
    }

    #[test]
    fn strata_sample_only_the_window_and_stay_bounded() {
        let window = (CAPACITY * 3) as u64;
        let mut s = Sample::new(1, Window::Last(window), 1);
        let total = CAPACITY as u64 * 5;
        for i in 0..total {
            s.push(&[i as f32]);
        }
        let rows = s.into_rows();
        assert!(rows.len() <= CAPACITY + CAPACITY / STRATA);
        assert!(rows.len() > CAPACITY * 9 / 10);
        let start = (total - window) as f32;
        assert!(rows.iter().all(|&v| v >= start));
        // Spread over the whole window, not just its end.
        let mean = rows.iter().map(|&v| v as f64).sum::<f64>() / rows.len() as f64;
        let mid = (start as f64 + total as f64) / 2.0;
        assert!((mean - mid).abs() < window as f64 * 0.02, "{mean} vs {mid}");
    }
}
