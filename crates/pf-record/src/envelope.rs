//! The kafka-tail envelope: one Kafka message's log line with its coordinates.
//!
//! ```json
//! {"topic":"postfix","partition":0,"offset":42,"timestamp":1764097200000,"key":null,"value":"Nov 25 ..."}
//! ```
//!
//! `timestamp` is the message's Kafka timestamp in milliseconds since the
//! epoch (`null` when the producer set none); `key` is the message key as
//! text or `null`. `flags` appears only when the value had to be repaired
//! (`invalid_utf8`, `crlf`); `"more_lines":true` only on the lines of a
//! multi-line message before its last. `pf-parse` recognises an envelope by `topic` plus
//! a string `value` and moves the coordinates into the record's `source`.

use crate::json::{write_i64, write_str};
use crate::Flag;

/// The envelope keys that `pf-parse` moves into `source`.
pub const COORDINATES: [&str; 6] = [
    "topic",
    "partition",
    "offset",
    "timestamp",
    "key",
    "more_lines",
];

/// One line of one Kafka message.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<&'a str>,
    pub value: &'a str,
    pub flags: &'a [Flag],
    /// More lines of the same message follow (written only when true), so
    /// the message is not complete until the line without it.
    pub more_lines: bool,
}

impl Envelope<'_> {
    /// Appends the envelope as one JSON line (with the trailing newline).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"topic\":");
        write_str(out, self.topic);
        out.extend_from_slice(b",\"partition\":");
        write_i64(out, i64::from(self.partition));
        out.extend_from_slice(b",\"offset\":");
        write_i64(out, self.offset);
        out.extend_from_slice(b",\"timestamp\":");
        match self.timestamp_ms {
            Some(ms) => write_i64(out, ms),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"key\":");
        match self.key {
            Some(k) => write_str(out, k),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"value\":");
        write_str(out, self.value);
        if !self.flags.is_empty() {
            out.extend_from_slice(b",\"flags\":[");
            for (i, f) in self.flags.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, f.as_str());
            }
            out.push(b']');
        }
        if self.more_lines {
            out.extend_from_slice(b",\"more_lines\":true");
        }
        out.extend_from_slice(b"}\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_valid_json_with_every_key() {
        let mut out = Vec::new();
        Envelope {
            topic: "postfix",
            partition: 3,
            offset: 42,
            timestamp_ms: Some(1_764_097_200_000),
            key: None,
            value: "a \"quoted\"\tline",
            flags: &[Flag::InvalidUtf8],
            more_lines: false,
        }
        .write(&mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["topic"], "postfix");
        assert_eq!(v["partition"], 3);
        assert_eq!(v["offset"], 42);
        assert_eq!(v["timestamp"], 1_764_097_200_000i64);
        assert!(v["key"].is_null());
        assert_eq!(v["value"], "a \"quoted\"\tline");
        assert_eq!(v["flags"], serde_json::json!(["invalid_utf8"]));
    }

    #[test]
    fn no_flags_key_when_the_value_was_clean() {
        let mut out = Vec::new();
        Envelope {
            topic: "t",
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: Some("k"),
            value: "",
            flags: &[],
            more_lines: false,
        }
        .write(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("flags").is_none());
        assert!(v["timestamp"].is_null());
        assert_eq!(v["key"], "k");
    }
}
