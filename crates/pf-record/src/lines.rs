//! Bounded line reading shared by every stage.
//!
//! Log lines are attacker-controlled, so a line is never allowed to grow
//! without bound: bytes past [`MAX_LINE_BYTES`] are skipped and the line is
//! flagged as truncated instead of exhausting memory.

use std::io::{self, BufRead};

/// Longest log line kept, in bytes (1 MiB). Longer lines are cut here and flagged.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Longest NDJSON record a stage accepts (16 MiB): a record holds its log
/// line up to twice (`raw` and a field), and JSON escaping of control
/// characters can make each copy six times longer, so a record made from a
/// line of [`MAX_LINE_BYTES`] always fits. Longer records are reported and
/// skipped.
pub const MAX_RECORD_BYTES: usize = 16 << 20;

/// One input line, without its terminator.
#[derive(Debug)]
pub struct Line<'a> {
    /// The bytes of the line, without `\n` (a trailing `\r` is also removed
    /// and reported through `had_cr`).
    pub bytes: &'a [u8],
    /// 1-based line number within its input.
    pub number: u64,
    /// The line was longer than the limit and was cut.
    pub truncated: bool,
    /// The line ended in CRLF.
    pub had_cr: bool,
}

/// Reads lines from any `BufRead`, bounded in length.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    number: u64,
    max: usize,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, MAX_LINE_BYTES)
    }

    pub fn with_limit(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            buf: Vec::with_capacity(1024),
            number: 0,
            max,
        }
    }

    /// True when the reader holds no buffered input, so the next call to
    /// [`next_line`](Self::next_line) may block. Stages flush their output
    /// at that moment: low latency when input is idle, big writes when busy.
    pub fn is_drained(&self) -> bool
    where
        R: BufferedInput,
    {
        self.inner.buffered_len() == 0
    }

    /// Reads the next line; `Ok(None)` at end of input.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let mut truncated = false;
        let mut saw_any = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                break;
            }
            saw_any = true;
            let (chunk, found) = match memchr::memchr(b'\n', available) {
                Some(i) => (&available[..i], Some(i)),
                None => (available, None),
            };
            let room = self.max.saturating_sub(self.buf.len());
            if chunk.len() > room {
                truncated = true;
                self.buf.extend_from_slice(&chunk[..room]);
            } else {
                self.buf.extend_from_slice(chunk);
            }
            match found {
                Some(i) => {
                    self.inner.consume(i + 1);
                    break;
                }
                None => {
                    let n = available.len();
                    self.inner.consume(n);
                }
            }
        }
        if !saw_any {
            return Ok(None);
        }
        self.number += 1;
        let mut had_cr = false;
        if self.buf.last() == Some(&b'\r') && !truncated {
            self.buf.pop();
            had_cr = true;
        }
        Ok(Some(Line {
            bytes: &self.buf,
            number: self.number,
            truncated,
            had_cr,
        }))
    }
}

/// Input whose internal buffer can be inspected, to know when a read would block.
pub trait BufferedInput {
    fn buffered_len(&self) -> usize;
}

impl<R> BufferedInput for io::BufReader<R> {
    fn buffered_len(&self) -> usize {
        self.buffer().len()
    }
}

impl BufferedInput for &[u8] {
    fn buffered_len(&self) -> usize {
        self.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], max: usize) -> Vec<(Vec<u8>, u64, bool, bool)> {
        let mut r = LineReader::with_limit(input, max);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            out.push((l.bytes.to_vec(), l.number, l.truncated, l.had_cr));
        }
        out
    }

    #[test]
    fn splits_and_numbers_lines() {
        let got = all(b"a\r\n\nlast", 100);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (b"a".to_vec(), 1, false, true));
        assert_eq!(got[1], (b"".to_vec(), 2, false, false));
        assert_eq!(got[2], (b"last".to_vec(), 3, false, false));
    }

    #[test]
    fn long_lines_are_cut_and_the_next_line_survives() {
        let mut input = vec![b'x'; 50];
        input.extend_from_slice(b"\nok\n");
        let got = all(&input, 10);
        assert_eq!(got[0].0.len(), 10);
        assert!(got[0].2);
        assert_eq!(got[1], (b"ok".to_vec(), 2, false, false));
    }
}
