//! The feature catalogue: every feature pf-features can compute, by name,
//! and the feature sets (named lists of them) under `features/`.
//!
//! Categorical features yield strings; the model (not this crate) turns
//! them into codes, so training and scoring always share one encoding.
//! Time features come from the record's own timestamp, in the offset the
//! log line was written in (pf-parse applied the server's zone), never
//! from the clock. Behavioural features ([`behaviour`]) describe what the
//! record's client address, user, sender and recipient have been doing.

pub mod behaviour;
pub mod partitions;
pub mod window;

use anyhow::{bail, Context, Result};
use behaviour::{Behaviour, Event, Measure, Observed};
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
    #[serde(borrow, default, deserialize_with = "pf_record::view::lenient_str")]
    pub host: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "pf_record::view::lenient_i64")]
    pub pid: Option<i64>,
    #[serde(borrow, default)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "pf_record::view::lenient_str")]
    pub failure: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub fields: Option<FieldsView<'a>>,
    /// Kafka coordinates: which partition's state the record belongs to.
    #[serde(borrow, default, deserialize_with = "pf_record::view::lenient_object")]
    pub source: Option<pf_record::view::SourceView<'a>>,
    /// Present (even as `null`) when an earlier pass already added features:
    /// they are replaced, never added a second time.
    #[serde(default, deserialize_with = "pf_record::view::present")]
    pub features: Option<serde::de::IgnoredAny>,
    #[serde(default, deserialize_with = "pf_record::view::present")]
    pub feature_set: Option<serde::de::IgnoredAny>,
}

pub use pf_record::view::FieldsView;

/// One computed value.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureValue<'a> {
    Number(i64),
    Float(f64),
    Category(Cow<'a, str>),
    /// The record lacks what the feature is computed from (e.g. no `ts`).
    Missing,
}

/// See [`Feature::unusual`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusual {
    High,
    Rare,
    EitherEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    Service,
    Event,
    Hour,
    Minute,
    DayOfWeek,
    MessageLength,
    LogLevel,
    /// What the record's entities have been doing (needs state).
    Behaviour(Measure),
}

impl Feature {
    /// The per-line features of the old system.
    pub const SEED: [Feature; 6] = [
        Feature::Service,
        Feature::Event,
        Feature::Hour,
        Feature::Minute,
        Feature::DayOfWeek,
        Feature::MessageLength,
    ];

    /// Every feature, per-line ones first.
    pub fn all() -> impl Iterator<Item = Feature> {
        Feature::SEED
            .into_iter()
            .chain([Feature::LogLevel])
            .chain(Measure::ALL.into_iter().map(Feature::Behaviour))
    }

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
            Feature::LogLevel => "log_level",
            Feature::Behaviour(m) => m.name(),
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
            Feature::LogLevel => {
                "how grave the daemon said the event is: 0 info, 1 warning, 2 error, 3 fatal, 4 panic"
            }
            Feature::Behaviour(m) => m.description(),
        }
    }

    /// Which of its values are unusual, for a model that scores each
    /// feature's tail: counts and levels when high, categories and times
    /// of day when rarely seen, a message length at either end.
    pub fn unusual(self) -> Unusual {
        match self {
            Feature::Service
            | Feature::Event
            | Feature::Hour
            | Feature::Minute
            | Feature::DayOfWeek => Unusual::Rare,
            Feature::MessageLength => Unusual::EitherEnd,
            Feature::LogLevel | Feature::Behaviour(_) => Unusual::High,
        }
    }

    /// Features that are evidence of one thing: a tail model counts only
    /// the most surprising of a group. The kind, and how rare the kind and
    /// its wording have been so far, all say "this kind of line is rare";
    /// added up they would count one fact three times, and the two
    /// so-far rarities fade while an attack repeats its lines, so a sum
    /// would fall as the attack goes on.
    pub fn evidence_group(self) -> Option<&'static str> {
        match self {
            Feature::Event
            | Feature::Behaviour(Measure::KindRarity)
            | Feature::Behaviour(Measure::TemplateRarity)
            | Feature::Behaviour(Measure::LevelRarity) => Some("kind"),
            _ => None,
        }
    }

    /// For an ordinal level: how many times rarer each level above the
    /// highest seen in training is assumed to be. The daemon's own
    /// severity is such a ladder: a `fatal:` never seen in training is far
    /// rarer than the step from 1 to 3 on a count would say.
    pub fn rarity_per_level(self) -> Option<f64> {
        match self {
            Feature::LogLevel => Some(100.0),
            _ => None,
        }
    }

    pub fn from_name(name: &str) -> Option<Feature> {
        Feature::all().find(|f| f.name() == name)
    }

    pub fn is_behavioural(self) -> bool {
        matches!(self, Feature::Behaviour(_))
    }

    pub fn compute<'a>(
        self,
        r: &'a RecordView<'a>,
        time: Option<&DateTime<FixedOffset>>,
        observed: Option<&Observed>,
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
            Feature::LogLevel => FeatureValue::Number(log_level(r)),
            Feature::Behaviour(m) => match observed {
                Some(o) => {
                    let v = o.get(m);
                    if v.fract() == 0.0 {
                        FeatureValue::Number(v as i64)
                    } else {
                        FeatureValue::Float(v)
                    }
                }
                None => FeatureValue::Missing,
            },
        }
    }
}

/// 0 info, 1 warning, 2 error, 3 fatal, 4 panic: from `fields.level`
/// (Postfix, Dovecot), else the kind's name (`roundcube.error`).
fn log_level(r: &RecordView<'_>) -> i64 {
    let level = r
        .fields
        .as_ref()
        .and_then(|f| f.level.as_deref())
        .or_else(|| r.kind.as_deref().and_then(|k| k.rsplit('.').next()))
        .unwrap_or("");
    match level.to_ascii_lowercase().as_str() {
        "warning" | "warn" => 1,
        "error" | "err" => 2,
        "fatal" | "crit" | "critical" => 3,
        "panic" | "alert" | "emerg" => 4,
        _ => 0,
    }
}

/// The message part of a log line: what follows the first `": "` (syslog
/// timestamps contain `:` but never `": "`), or the whole line.
pub fn message_of(raw: &str) -> &str {
    raw.find(": ").map_or(raw, |i| &raw[i + 2..])
}

/// A named feature list: the model's inputs in their order. The name (the
/// file's stem: `seed`, `behavioural`, ...) travels with every record as
/// `feature_set` and is stored in the model, so a model is never fed
/// vectors of another set.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureList {
    pub name: String,
    pub features: Vec<Feature>,
}

impl FeatureList {
    /// The old system's six features, the `seed` set.
    pub fn seed() -> FeatureList {
        FeatureList {
            name: "seed".into(),
            features: Feature::SEED.to_vec(),
        }
    }

    pub fn from_names<S: AsRef<str>>(name: &str, names: &[S]) -> Result<FeatureList> {
        if names.is_empty() {
            bail!("the feature list is empty");
        }
        let mut features = Vec::new();
        for feature in names {
            let feature = feature.as_ref();
            let f = Feature::from_name(feature).with_context(|| {
                format!("unknown feature `{feature}`; `pf-features --list` shows the known ones")
            })?;
            if features.contains(&f) {
                bail!("feature `{feature}` is listed twice");
            }
            features.push(f);
        }
        Ok(FeatureList {
            name: name.to_string(),
            features,
        })
    }

    /// Reads a JSON array of names, like `features/behavioural.json`; the
    /// set is named after the file.
    pub fn load(path: &Path) -> Result<FeatureList> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read feature list {}", path.display()))?;
        let names: Vec<String> = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} must be a JSON array of feature names, e.g. [\"hour\", \"msg_len\"]",
                path.display()
            )
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "custom".into());
        FeatureList::from_names(&name, &names).with_context(|| format!("in {}", path.display()))
    }

    /// The sets shipped in `features/`, compiled in so the tools work
    /// without the directory: `seed` and `behavioural` (the default).
    pub fn builtin(name: &str) -> Option<FeatureList> {
        let text = match name {
            "seed" => include_str!("../../../features/seed.json"),
            "behavioural" => include_str!("../../../features/behavioural.json"),
            _ => return None,
        };
        let names: Vec<String> = serde_json::from_str(text).ok()?;
        FeatureList::from_names(name, &names).ok()
    }

    /// Whether computing the list needs [`Behaviour`] state.
    pub fn is_stateful(&self) -> bool {
        self.features.iter().any(|f| f.is_behavioural())
    }
}

/// Computes a list's features record after record, keeping the state the
/// behavioural ones need.
#[derive(Debug)]
pub struct Featurizer {
    pub list: FeatureList,
    pub behaviour: Behaviour,
    /// State per Kafka partition, when the instances of a group share it.
    pub partitions: Option<partitions::Partitioned>,
    /// Each feature's `"name":` (after the first, `,"name":`), written once.
    keys: Vec<Vec<u8>>,
}

impl Featurizer {
    pub fn new(list: FeatureList, behaviour: Behaviour) -> Featurizer {
        let keys = list
            .features
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut key = if i > 0 { vec![b','] } else { Vec::new() };
                pf_record::json::write_str(&mut key, f.name());
                key.push(b':');
                key
            })
            .collect();
        Featurizer {
            list,
            behaviour,
            partitions: None,
            keys,
        }
    }

    /// Appends the `features` object `{...}` for the record (and updates
    /// the behavioural state with it).
    pub fn write_features(&mut self, r: &RecordView<'_>, out: &mut Vec<u8>) {
        let time =
            r.ts.as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        let observed = if self.list.is_stateful() {
            let f = r.fields.as_ref();
            let event = Event {
                time: time.map(|t| t.timestamp()),
                kind: r.kind.as_deref().unwrap_or("unknown"),
                message: r.raw.as_deref().map(message_of),
                failure: r.failure.as_deref(),
                client_ip: f.and_then(|f| f.client_ip.as_deref()),
                user: f
                    .and_then(|f| f.sasl_username.as_deref().or(f.user.as_deref()))
                    .filter(|u| !u.is_empty()),
                from: f.and_then(|f| f.from.as_deref()),
                to: f.and_then(|f| f.to.as_deref()),
                queue_id: f.and_then(|f| f.queue_id.as_deref()),
                status: f.and_then(|f| f.status.as_deref()),
                reject_dsn: f.and_then(|f| f.reject_dsn.as_deref()),
                reject_reason: f.and_then(|f| f.reject_reason.as_deref()),
                message_id: f.and_then(|f| f.message_id.as_deref()),
                relay_ip: f.and_then(|f| f.relay_ip.as_deref()),
                notification_queue_id: f.and_then(|f| f.notification_queue_id.as_deref()),
                session: f.and_then(|f| f.session.as_deref()),
                program: r.program.as_deref(),
                instance: f.and_then(|f| f.instance.as_deref()),
                level: log_level(r),
                process: r
                    .pid
                    .map(|pid| behaviour::process_key(r.host.as_deref().unwrap_or(""), pid)),
            };
            let kafka = r.source.as_ref().and_then(|s| s.kafka());
            let state = match (&mut self.partitions, kafka) {
                (Some(parts), Some((topic, partition, offset))) => {
                    parts.state(topic, partition, offset)
                }
                _ => &mut self.behaviour,
            };
            Some(state.observe(&event))
        } else {
            None
        };
        out.push(b'{');
        for (f, key) in self.list.features.iter().zip(&self.keys) {
            out.extend_from_slice(key);
            match f.compute(r, time.as_ref(), observed.as_ref()) {
                FeatureValue::Number(n) => pf_record::json::write_i64(out, n),
                FeatureValue::Float(v) => pf_record::json::write_f64(out, v),
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
        Featurizer::new(list.clone(), Behaviour::new()).write_features(&view, &mut out);
        serde_json::from_slice::<serde_json::Value>(&out).unwrap()
    }

    #[test]
    fn the_old_six_from_a_parsed_record() {
        let rec = r#"{"raw":"Mar  2 08:15:03 mx1 postfix/smtpd[1]: connect from a[192.0.2.1]","ts":"2026-03-02T23:15:03-05:00","program":"postfix/smtpd","kind":"smtpd.connect"}"#;
        let f = features(rec, &FeatureList::seed());
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
            &FeatureList::seed(),
        );
        assert_eq!(f["hour"], serde_json::Value::Null);
        assert_eq!(f["service_encoded"], "unknown");
        assert_eq!(f["msg_len"], 7);
    }

    #[test]
    fn shipped_sets_are_valid() {
        let seed = FeatureList::builtin("seed").unwrap();
        assert_eq!(seed, FeatureList::seed());
        let b = FeatureList::builtin("behavioural").unwrap();
        assert!(b.is_stateful() && !seed.is_stateful());
        assert!(FeatureList::builtin("nope").is_none());
    }

    #[test]
    fn lists_are_checked() {
        assert!(FeatureList::from_names("t", &["hour", "nope"])
            .unwrap_err()
            .to_string()
            .contains("pf-features --list"));
        assert!(FeatureList::from_names("t", &["hour", "hour"]).is_err());
        let l = FeatureList::from_names("t", &["msg_len", "hour"]).unwrap();
        assert_eq!(l.features, vec![Feature::MessageLength, Feature::Hour]);
    }
}
