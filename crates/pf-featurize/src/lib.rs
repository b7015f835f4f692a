//! The feature catalogue: every feature pf-features can compute, by name.
//!
//! Categorical features yield strings; the model (not this crate) turns
//! them into codes, so training and scoring always share one encoding.
//! Time features come from the record's own timestamp, in the offset the
//! log line was written in (pf-parse applied the server's zone), never
//! from the clock.

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Datelike, FixedOffset, Timelike};
use serde::Deserialize;
use std::borrow::Cow;
use std::path::Path;

/// The parts of a record features are computed from.
#[derive(Debug, Default, Deserialize)]
pub struct RecordView<'a> {
    #[serde(borrow, default)]
    pub raw: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub ts: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub program: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub kind: Option<Cow<'a, str>>,
    /// Present when an earlier pass already added features.
    #[serde(default)]
    pub features: Option<serde::de::IgnoredAny>,
}

/// One computed value.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureValue<'a> {
    Number(i64),
    Category(Cow<'a, str>),
    /// The record lacks what the feature is computed from (e.g. no `ts`).
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    Service,
    Event,
    Hour,
    Minute,
    DayOfWeek,
    MessageLength,
}

impl Feature {
    pub const ALL: [Feature; 6] = [
        Feature::Service,
        Feature::Event,
        Feature::Hour,
        Feature::Minute,
        Feature::DayOfWeek,
        Feature::MessageLength,
    ];

    /// The name in feature lists and in the `features` object (the old
    /// system's names are kept so its feature files still work).
    pub fn name(self) -> &'static str {
        match self {
            Feature::Service => "service_encoded",
            Feature::Event => "event_encoded",
            Feature::Hour => "hour",
            Feature::Minute => "minute",
            Feature::DayOfWeek => "dayofweek",
            Feature::MessageLength => "msg_len",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Feature::Service => "the program (postfix/smtpd, dovecot, roundcube, ...); categorical",
            Feature::Event => "the parsed event kind (smtpd.reject, ...); categorical",
            Feature::Hour => "hour of the event, 0-23, in the log's own zone",
            Feature::Minute => "minute of the event, 0-59",
            Feature::DayOfWeek => "day of the week of the event, Monday = 0 ... Sunday = 6",
            Feature::MessageLength => {
                "characters in the message after the syslog header (the whole line if none)"
            }
        }
    }

    pub fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }

    pub fn compute<'a>(
        self,
        r: &'a RecordView<'a>,
        time: Option<&DateTime<FixedOffset>>,
    ) -> FeatureValue<'a> {
        match self {
            Feature::Service => {
                FeatureValue::Category(Cow::Borrowed(r.program.as_deref().unwrap_or("unknown")))
            }
            Feature::Event => {
                FeatureValue::Category(Cow::Borrowed(r.kind.as_deref().unwrap_or("unknown")))
            }
            Feature::Hour => time.map_or(FeatureValue::Missing, |t| {
                FeatureValue::Number(t.hour() as i64)
            }),
            Feature::Minute => time.map_or(FeatureValue::Missing, |t| {
                FeatureValue::Number(t.minute() as i64)
            }),
            Feature::DayOfWeek => time.map_or(FeatureValue::Missing, |t| {
                FeatureValue::Number(t.weekday().num_days_from_monday() as i64)
            }),
            Feature::MessageLength => match r.raw.as_deref() {
                Some(raw) => FeatureValue::Number(message_of(raw).chars().count() as i64),
                None => FeatureValue::Missing,
            },
        }
    }
}

/// The message part of a log line: what follows the first `": "` (syslog
/// timestamps contain `:` but never `": "`), or the whole line.
pub fn message_of(raw: &str) -> &str {
    raw.find(": ").map_or(raw, |i| &raw[i + 2..])
}

/// The features to compute, in output order.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureList {
    pub features: Vec<Feature>,
}

impl FeatureList {
    /// The old system's six features.
    pub fn default_set() -> FeatureList {
        FeatureList {
            features: Feature::ALL.to_vec(),
        }
    }

    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<FeatureList> {
        if names.is_empty() {
            bail!("the feature list is empty");
        }
        let mut features = Vec::new();
        for name in names {
            let name = name.as_ref();
            let f = Feature::from_name(name).with_context(|| {
                format!(
                    "unknown feature `{name}`; known features: {}",
                    Feature::ALL.map(|f| f.name()).join(", ")
                )
            })?;
            if features.contains(&f) {
                bail!("feature `{name}` is listed twice");
            }
            features.push(f);
        }
        Ok(FeatureList { features })
    }

    /// Reads a JSON array of names, like `features/selected_features.json`.
    pub fn load(path: &Path) -> Result<FeatureList> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read feature list {}", path.display()))?;
        let names: Vec<String> = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} must be a JSON array of feature names, e.g. [\"hour\", \"msg_len\"]",
                path.display()
            )
        })?;
        FeatureList::from_names(&names).with_context(|| format!("in {}", path.display()))
    }

    /// Appends the `features` object `{...}` for the record.
    pub fn write_features(&self, r: &RecordView<'_>, out: &mut Vec<u8>) {
        let time =
            r.ts.as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        out.push(b'{');
        for (i, f) in self.features.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            pf_record::json::write_str(out, f.name());
            out.push(b':');
            match f.compute(r, time.as_ref()) {
                FeatureValue::Number(n) => pf_record::json::write_i64(out, n),
                FeatureValue::Category(c) => pf_record::json::write_str(out, &c),
                FeatureValue::Missing => out.extend_from_slice(b"null"),
            }
        }
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(json: &str, list: &FeatureList) -> serde_json::Value {
        let view: RecordView = serde_json::from_str(json).unwrap();
        let mut out = Vec::new();
        list.write_features(&view, &mut out);
        serde_json::from_slice::<serde_json::Value>(&out).unwrap()
    }

    #[test]
    fn the_old_six_from_a_parsed_record() {
        let rec = r#"{"raw":"Mar  2 08:15:03 mx1 postfix/smtpd[1]: connect from a[192.0.2.1]","ts":"2026-03-02T23:15:03-05:00","program":"postfix/smtpd","kind":"smtpd.connect"}"#;
        let f = features(rec, &FeatureList::default_set());
        assert_eq!(
            f,
            serde_json::json!({"service_encoded":"postfix/smtpd","event_encoded":"smtpd.connect",
                "hour":23,"minute":15,"dayofweek":0,"msg_len":25})
        );
    }

    #[test]
    fn missing_timestamp_gives_null_not_the_clock() {
        let f = features(
            r#"{"raw":"garbage","kind":"unknown"}"#,
            &FeatureList::default_set(),
        );
        assert_eq!(f["hour"], serde_json::Value::Null);
        assert_eq!(f["service_encoded"], "unknown");
        assert_eq!(f["msg_len"], 7);
    }

    #[test]
    fn lists_are_checked() {
        assert!(FeatureList::from_names(&["hour", "nope"])
            .unwrap_err()
            .to_string()
            .contains("known features"));
        assert!(FeatureList::from_names(&["hour", "hour"]).is_err());
        let l = FeatureList::from_names(&["msg_len", "hour"]).unwrap();
        assert_eq!(l.features, vec![Feature::MessageLength, Feature::Hour]);
    }
}
