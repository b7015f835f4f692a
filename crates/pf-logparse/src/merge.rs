//! Several logs replayed as one stream in event-time order.
//!
//! `mail.log` and Roundcube's `errors.log` cover the same hours; read one
//! after the other, the behavioural windows would see a day of mail and
//! then the same day's webmail logins. Each log is already in time order,
//! so a k-way merge that holds one parsed record per log is enough:
//! streaming, with memory bounded by the number of logs.

use crate::LineParser;
use pf_record::lines::LineReader;
use pf_record::Origin;
use std::io;

/// One log being merged.
pub struct Input<R> {
    name: String,
    lines: LineReader<R>,
    parser: LineParser,
    /// The next record of this log, parsed, waiting for its turn.
    pending: Vec<u8>,
    pending_kind: &'static str,
    /// Its time in µs since the epoch: the line's own, or for a line
    /// without one the time of the line before it, so it stays with its
    /// neighbours.
    at: i64,
    done: bool,
}

/// What the merge read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MergeStats {
    pub lines: u64,
    /// Logs whose reading failed part-way (reported through `on_error`).
    pub unreadable: u64,
}

impl<R: io::BufRead> Input<R> {
    /// `name` goes to each record's `source.file`, with the line number in it.
    pub fn new(name: impl Into<String>, reader: R, limit: usize, parser: LineParser) -> Self {
        Input {
            name: name.into(),
            lines: LineReader::with_limit(reader, limit),
            parser,
            pending: Vec::new(),
            pending_kind: "unknown",
            at: i64::MIN,
            done: false,
        }
    }

    pub fn parser(&self) -> &LineParser {
        &self.parser
    }

    fn advance(&mut self, stats: &mut MergeStats, on_error: &mut impl FnMut(&str, &io::Error)) {
        self.pending.clear();
        match self.lines.next_line() {
            Ok(Some(line)) => {
                stats.lines += 1;
                self.pending_kind =
                    self.parser
                        .process(&line, Origin::File(&self.name), &mut self.pending);
                if let Some(t) = self.parser.last_time() {
                    self.at = t.timestamp_micros();
                }
            }
            Ok(None) => self.done = true,
            Err(e) => {
                on_error(&self.name, &e);
                stats.unreadable += 1;
                self.done = true;
            }
        }
    }
}

/// Writes every record of every input to `out`, earliest event first; on a
/// tie, the input listed first. `out` is given one whole record at a time,
/// with its kind.
pub fn merge<R: io::BufRead>(
    inputs: &mut [Input<R>],
    mut out: impl FnMut(&[u8], &'static str) -> io::Result<()>,
    mut on_error: impl FnMut(&str, &io::Error),
) -> io::Result<MergeStats> {
    let mut stats = MergeStats::default();
    for input in inputs.iter_mut() {
        input.advance(&mut stats, &mut on_error);
    }
    // A handful of logs: a linear scan beats a heap's bookkeeping.
    while let Some(next) = inputs.iter_mut().filter(|i| !i.done).min_by_key(|i| i.at) {
        out(&next.pending, next.pending_kind)?;
        next.advance(&mut stats, &mut on_error);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Zone;
    use chrono::{TimeZone, Utc};

    fn parser() -> LineParser {
        let now = Utc.with_ymd_and_hms(2026, 3, 10, 0, 0, 0).unwrap();
        LineParser::new(Zone::parse("UTC").unwrap(), Some(2026), now)
    }

    fn run(logs: &[(&str, &str)]) -> Vec<serde_json::Value> {
        let mut inputs: Vec<_> = logs
            .iter()
            .map(|(name, text)| {
                Input::new(
                    *name,
                    io::BufReader::new(text.as_bytes()),
                    1 << 20,
                    parser(),
                )
            })
            .collect();
        let mut out = Vec::new();
        merge(
            &mut inputs,
            |r, _| {
                out.extend_from_slice(r);
                Ok(())
            },
            |_, _| {},
        )
        .unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn logs_interleave_by_event_time_keeping_their_line_numbers() {
        let mail = "Mar  2 08:00:00 mx1 postfix/smtpd[1]: connect from a[192.0.2.1]\n\
                    Mar  2 08:00:10 mx1 postfix/smtpd[1]: disconnect from a[192.0.2.1]\n\
                    no timestamp here\n\
                    Mar  2 08:00:30 mx1 postfix/qmgr[2]: ABC: removed\n";
        let webmail = "[02-Mar-2026 08:00:05 +0000]: <s1> FAILED login for u from 192.0.2.9\n\
                       [02-Mar-2026 08:00:20 +0000]: <s1> FAILED login for u from 192.0.2.9\n";
        let recs = run(&[("mail.log", mail), ("errors.log", webmail)]);
        let order: Vec<(String, u64)> = recs
            .iter()
            .map(|r| {
                (
                    r["source"]["file"].as_str().unwrap().to_string(),
                    r["source"]["line"].as_u64().unwrap(),
                )
            })
            .collect();
        let want = [
            ("mail.log", 1),
            ("errors.log", 1),
            ("mail.log", 2),
            ("mail.log", 3),
            ("errors.log", 2),
            ("mail.log", 4),
        ];
        assert_eq!(order, want.map(|(f, l)| (f.to_string(), l)));
    }

    #[test]
    fn ties_keep_the_order_the_logs_were_given() {
        let a = "Mar  2 08:00:00 mx1 postfix/smtpd[1]: connect from a[192.0.2.1]\n";
        let b = "Mar  2 08:00:00 mx2 postfix/smtpd[1]: connect from b[192.0.2.2]\n";
        let recs = run(&[("b.log", b), ("a.log", a)]);
        assert_eq!(recs[0]["host"], "mx2");
        assert_eq!(recs[1]["host"], "mx1");
        assert!(run(&[]).is_empty());
        assert_eq!(run(&[("empty", ""), ("a.log", a)]).len(), 1);
    }
}
