//! The record that flows through every stage.
//!
//! A stage deserialises what it needs, adds its own part and writes the
//! record back out; everything it does not know travels in [`Record::extra`]
//! untouched, so the original line and its Kafka coordinates reach the end
//! of the pipeline.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One log event. See `docs/records.md` for every field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The original log line, exactly (lossily decoded if it was not UTF-8).
    pub raw: String,
    /// Where the line came from.
    #[serde(default, skip_serializing_if = "Source::is_empty")]
    pub source: Source,
    /// Event time, RFC 3339 with offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Normalised program: `postfix/<daemon>`, `dovecot`, `roundcube`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u64>,
    /// Stable event name such as `smtpd.reject`; `unknown` when not recognised.
    #[serde(default = "unknown_kind")]
    pub kind: String,
    /// True exactly when `kind` is not `unknown`.
    #[serde(default)]
    pub parsed: bool,
    /// Failure class of the kind (`auth`, `reject`, `abuse`, `probe`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// What the message holds, snake_case keys, numbers as JSON numbers.
    #[serde(default)]
    pub fields: Map<String, Value>,
    /// Problems with the input line itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
    /// Every other field, passed through untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn unknown_kind() -> String {
    "unknown".to_string()
}

/// Where a line came from: Kafka coordinates, a file and line, or stdin's line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Source {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based line number in `file`, or in stdin when `file` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Source {
    pub fn is_empty(&self) -> bool {
        *self == Source::default()
    }
}

/// Which input a line was read from, for `source`: a named file or stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    Stdin,
    File(&'a str),
}

/// A problem with the input line, reported on the record rather than by dropping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// Bytes that were not UTF-8 were replaced with U+FFFD.
    InvalidUtf8,
    /// The line held NUL bytes.
    NulBytes,
    /// The line ended in CRLF; the CR was removed.
    Crlf,
    /// The line was longer than the limit and was cut.
    Truncated,
    /// The line looked like JSON but did not parse; it was treated as text.
    BadJson,
    /// The line was empty or only whitespace.
    Empty,
    /// The line names a forwarded client (`X-Forwarded-For`, `X-Real-IP`)
    /// sent by a peer that is not a trusted proxy: `client_ip` is the peer,
    /// the claim is in `fields.forwarded_for`.
    UntrustedForwarded,
}

impl Flag {
    pub const ALL: [Flag; 7] = [
        Flag::InvalidUtf8,
        Flag::NulBytes,
        Flag::Crlf,
        Flag::Truncated,
        Flag::BadJson,
        Flag::Empty,
        Flag::UntrustedForwarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Flag::InvalidUtf8 => "invalid_utf8",
            Flag::NulBytes => "nul_bytes",
            Flag::Crlf => "crlf",
            Flag::Truncated => "truncated",
            Flag::BadJson => "bad_json",
            Flag::Empty => "empty",
            Flag::UntrustedForwarded => "untrusted_forwarded",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let line = r#"{"raw":"x","source":{"topic":"postfix","partition":0,"offset":7,"key":null},"kind":"unknown","parsed":false,"fields":{},"features":{"a":1},"zzz":[1,2]}"#;
        let rec: Record = serde_json::from_str(line).unwrap();
        assert_eq!(rec.source.topic.as_deref(), Some("postfix"));
        assert_eq!(rec.extra["zzz"], serde_json::json!([1, 2]));
        let again: Value = serde_json::to_value(&rec).unwrap();
        let orig: Value = serde_json::from_str(line).unwrap();
        assert_eq!(again, orig);
    }

    #[test]
    fn flag_names_match_serde() {
        for f in Flag::ALL {
            assert_eq!(serde_json::to_value(f).unwrap(), Value::from(f.as_str()));
        }
    }
}
