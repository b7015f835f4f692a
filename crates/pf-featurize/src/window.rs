//! Event-time counters with a fixed memory footprint.
//!
//! A [`Window`] counts events in the last few minutes, hours or a day with
//! bucket granularity (a one-hour window is twelve five-minute buckets), so
//! a flood of a million events costs the same memory as one. A
//! [`Distinct`] remembers up to [`DISTINCT_CAP`] values with their last
//! time, enough to answer "how many different users did this address try".
//! Time is the events' own (Unix seconds); the clock is never read, so a
//! replay of history gives the same numbers as the live run did.

use serde::{Deserialize, Serialize};

/// A window's shape: `buckets` buckets of `bucket` seconds each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub bucket: i64,
    pub buckets: usize,
}

impl Span {
    pub const fn seconds(self) -> i64 {
        self.bucket * self.buckets as i64
    }
}

pub const TEN_MINUTES: Span = Span {
    bucket: 60,
    buckets: 10,
};
pub const HOUR: Span = Span {
    bucket: 300,
    buckets: 12,
};
pub const DAY: Span = Span {
    bucket: 3600,
    buckets: 24,
};

/// Counts of events per bucket, newest bucket `head`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    #[serde(rename = "h")]
    head: i64,
    #[serde(rename = "c")]
    counts: Vec<u32>,
}

impl Window {
    /// Adds `n` events at time `t`. Events older than the window are ignored;
    /// out-of-order events inside it land in their own bucket.
    pub fn add(&mut self, span: Span, t: i64, n: u32) {
        let index = t.div_euclid(span.bucket);
        if self.counts.len() != span.buckets {
            self.counts = vec![0; span.buckets];
            self.head = index;
        }
        if index > self.head {
            let steps = (index - self.head).min(span.buckets as i64);
            for k in 0..steps {
                let slot = (index - k).rem_euclid(span.buckets as i64) as usize;
                self.counts[slot] = 0;
            }
            self.head = index;
        } else if index <= self.head - span.buckets as i64 {
            return;
        }
        let slot = index.rem_euclid(span.buckets as i64) as usize;
        self.counts[slot] = self.counts[slot].saturating_add(n);
    }

    /// Events in the window ending at `now`.
    pub fn count(&self, span: Span, now: i64) -> u32 {
        if self.counts.len() != span.buckets {
            return 0;
        }
        let now_index = now.div_euclid(span.bucket);
        let oldest = now_index - span.buckets as i64;
        let mut total = 0u32;
        for k in 0..span.buckets as i64 {
            let index = self.head - k;
            if index <= oldest {
                break;
            }
            if index <= now_index {
                let slot = index.rem_euclid(span.buckets as i64) as usize;
                total = total.saturating_add(self.counts[slot]);
            }
        }
        total
    }
}

/// Most values a [`Distinct`] remembers; beyond it the oldest is forgotten,
/// so a count saturates at this value.
pub const DISTINCT_CAP: usize = 128;

/// Distinct values (as 64-bit hashes) with the time each was last seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Distinct {
    #[serde(rename = "v")]
    seen: Vec<(u64, i64)>,
}

impl Distinct {
    /// Records `value` at `t`, forgetting values not seen within `horizon`
    /// seconds before `t`.
    pub fn add(&mut self, value: u64, t: i64, horizon: i64) {
        self.seen.retain(|&(_, last)| last > t - horizon);
        match self.seen.iter_mut().find(|(v, _)| *v == value) {
            Some(entry) => entry.1 = entry.1.max(t),
            None => {
                if self.seen.len() >= DISTINCT_CAP {
                    if let Some(oldest) = self
                        .seen
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, &(_, last))| last)
                        .map(|(i, _)| i)
                    {
                        self.seen.swap_remove(oldest);
                    }
                }
                self.seen.push((value, t));
            }
        }
    }

    /// Values seen in the `seconds` before `now` (inclusive of `now`).
    pub fn count(&self, now: i64, seconds: i64) -> u32 {
        self.seen
            .iter()
            .filter(|&&(_, last)| last > now - seconds)
            .count() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// FNV-1a: a stable 64-bit hash, so saved state means the same thing to the
/// next build (the standard library's hasher is allowed to change).
pub fn hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0x1f;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_forgets_what_slides_out() {
        let mut w = Window::default();
        w.add(TEN_MINUTES, 1_000, 1);
        w.add(TEN_MINUTES, 1_030, 2);
        assert_eq!(w.count(TEN_MINUTES, 1_030), 3);
        // 9 minutes later both are still inside; 11 minutes later neither.
        assert_eq!(w.count(TEN_MINUTES, 1_000 + 9 * 60), 3);
        assert_eq!(w.count(TEN_MINUTES, 1_000 + 11 * 60), 0);
        w.add(TEN_MINUTES, 1_000 + 11 * 60, 1);
        assert_eq!(w.count(TEN_MINUTES, 1_000 + 11 * 60), 1);
    }

    #[test]
    fn late_events_count_in_their_bucket_and_too_late_ones_not_at_all() {
        let mut w = Window::default();
        w.add(HOUR, 10_000, 1);
        w.add(HOUR, 10_000 - 1_200, 1); // 20 minutes late: inside the hour
        w.add(HOUR, 10_000 - 7_200, 1); // 2 hours late: outside
        assert_eq!(w.count(HOUR, 10_000), 2);
        // A long gap clears everything.
        w.add(HOUR, 10_000 + 86_400, 5);
        assert_eq!(w.count(HOUR, 10_000 + 86_400), 5);
    }

    #[test]
    fn distinct_counts_values_once_and_is_capped() {
        let mut d = Distinct::default();
        for t in 0..10 {
            d.add(hash(&["alice"]), t, 3_600);
        }
        d.add(hash(&["bob"]), 20, 3_600);
        assert_eq!(d.count(20, 3_600), 2);
        assert_eq!(d.count(3_615, 3_600), 1, "alice's last try slid out");
        for i in 0..1_000 {
            d.add(hash(&["user", &i.to_string()]), 100 + i, 86_400);
        }
        assert_eq!(d.count(1_100, 86_400), DISTINCT_CAP as u32);
    }

    #[test]
    fn hash_separates_parts() {
        assert_ne!(hash(&["ab", "c"]), hash(&["a", "bc"]));
        assert_eq!(hash(&["x"]), hash(&["x"]));
    }
}
