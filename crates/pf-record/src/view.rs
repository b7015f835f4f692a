//! Borrowed views of a record: the few fields a stage reads, deserialised
//! straight from the line's text without building a map of every field.
//!
//! A stage keeps the line's text and passes it on byte for byte (adding or
//! cutting whole top-level members, see [`crate::json`]), so it only needs
//! what it decides on. Every field here is *lenient*: a value of another
//! type than expected (a number where a string belongs, a string where an
//! object belongs) counts as absent instead of making the whole record
//! unreadable, as a map lookup with `as_str()` would.

use crate::members::Member;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// The parts of a scored record that pf-sink and the incident tracker read.
#[derive(Debug, Default, Deserialize)]
pub struct ScoredView<'a> {
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub raw: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_object")]
    pub source: Option<SourceView<'a>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub ts: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub program: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub failure: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_object")]
    pub fields: Option<FieldsView<'a>>,
    #[serde(borrow, default, deserialize_with = "lenient_object")]
    pub detection: Option<DetectionView<'a>>,
}

impl<'a> ScoredView<'a> {
    pub fn is_anomaly(&self) -> bool {
        self.detection.as_ref().and_then(|d| d.is_anomaly) == Some(true)
    }

    /// The view from a record's members ([`crate::members::members`]),
    /// deserialising only the members it has: the same view as serde gives
    /// from the whole text, without reading `features` a second time.
    pub fn from_members(members: &[Member<'a>]) -> Result<ScoredView<'a>, String> {
        let mut view = ScoredView::default();
        let mut seen = [false; 8];
        for member in members {
            let value = member.value;
            let (slot, parsed) = match &*member.name() {
                "raw" => (0, one(value).map(|Str(v)| view.raw = v)),
                "source" => (1, one(value).map(|Object(v)| view.source = v)),
                "ts" => (2, one(value).map(|Str(v)| view.ts = v)),
                "program" => (3, one(value).map(|Str(v)| view.program = v)),
                "kind" => (4, one(value).map(|Str(v)| view.kind = v)),
                "failure" => (5, one(value).map(|Str(v)| view.failure = v)),
                "fields" => (6, one(value).map(|Object(v)| view.fields = v)),
                "detection" => (7, one(value).map(|Object(v)| view.detection = v)),
                _ => continue,
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(format!("duplicate member `{}`", member.name()));
            }
            parsed.map_err(|e| format!("member `{}`: {e}", member.name()))?;
        }
        Ok(view)
    }
}

/// One member's value, the whole of `value`.
fn one<'a, T: Deserialize<'a>>(value: &'a str) -> serde_json::Result<T> {
    serde_json::from_str(value)
}

/// A member's value read by [`lenient_str`].
struct Str<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient_str(d).map(Str)
    }
}

/// A member's value read by [`lenient_object`].
struct Object<T>(Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient_object(d).map(Object)
    }
}

/// `source`: Kafka coordinates, or the file and line.
#[derive(Debug, Default, Deserialize)]
pub struct SourceView<'a> {
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub topic: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub partition: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub offset: Option<i64>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub file: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub line: Option<i64>,
    /// Set on every line of a multi-line Kafka message but its last.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub more_lines: Option<bool>,
}

impl SourceView<'_> {
    /// `(topic, partition, offset)` of a record read from Kafka.
    pub fn kafka(&self) -> Option<(&str, i64, i64)> {
        Some((self.topic.as_deref()?, self.partition?, self.offset?))
    }
}

/// `detection`, as pf-score writes it.
#[derive(Debug, Default, Deserialize)]
pub struct DetectionView<'a> {
    #[serde(default, deserialize_with = "lenient_bool")]
    pub is_anomaly: Option<bool>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub severity: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "lenient_f64")]
    pub score: Option<f64>,
    #[serde(default, deserialize_with = "lenient_f64")]
    pub rarity: Option<f64>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub model: Option<Cow<'a, str>>,
    /// Present when the record could not be scored.
    #[serde(default)]
    pub error: Option<IgnoredAny>,
    #[serde(borrow, default, deserialize_with = "lenient_objects")]
    pub top_features: Vec<TopFeatureView<'a>>,
}

/// One entry of `detection.top_features`.
#[derive(Debug, Default, Deserialize)]
pub struct TopFeatureView<'a> {
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub feature: Option<Cow<'a, str>>,
    /// The feature's value as it was scored (a number, a string or null).
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "lenient_f64")]
    pub contribution: Option<f64>,
}

/// The `fields` that features and incidents key on.
#[derive(Debug, Default, Deserialize)]
pub struct FieldsView<'a> {
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub client_ip: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub sasl_username: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub user: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub from: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub to: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub queue_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub status: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub reject_dsn: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub reject_reason: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub message_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub relay_ip: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub level: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub notification_queue_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub session: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    pub instance: Option<Cow<'a, str>>,
}

/// What a lenient field accepts; everything else becomes `None`.
#[derive(Clone, Copy)]
enum Want {
    Str,
    Bool,
    I64,
    F64,
}

enum Scalar<'de> {
    Str(Cow<'de, str>),
    Bool(bool),
    I64(i64),
    F64(f64),
}

struct ScalarVisitor(Want);

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Option<Scalar<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(matches!(self.0, Want::Str).then_some(Scalar::Str(Cow::Borrowed(v))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(matches!(self.0, Want::Str).then(|| Scalar::Str(Cow::Owned(v.to_string()))))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(matches!(self.0, Want::Str).then_some(Scalar::Str(Cow::Owned(v))))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(matches!(self.0, Want::Bool).then_some(Scalar::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(match self.0 {
            Want::I64 => Some(Scalar::I64(v)),
            Want::F64 => Some(Scalar::F64(v as f64)),
            _ => None,
        })
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(match self.0 {
            Want::I64 => i64::try_from(v).ok().map(Scalar::I64),
            Want::F64 => Some(Scalar::F64(v as f64)),
            _ => None,
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(matches!(self.0, Want::F64).then_some(Scalar::F64(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        drain_seq(a).map(|()| None)
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        drain_map(a).map(|()| None)
    }
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut a: A) -> Result<(), A::Error> {
    while a.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut a: A) -> Result<(), A::Error> {
    while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn scalar<'de, D: Deserializer<'de>>(d: D, want: Want) -> Result<Option<Scalar<'de>>, D::Error> {
    d.deserialize_option(ScalarVisitor(want))
}

/// A string, or `None` for any other JSON value.
pub fn lenient_str<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(match scalar(d, Want::Str)? {
        Some(Scalar::Str(s)) => Some(s),
        _ => None,
    })
}

/// `true` or `false`, or `None` for any other JSON value.
pub fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match scalar(d, Want::Bool)? {
        Some(Scalar::Bool(b)) => Some(b),
        _ => None,
    })
}

/// An integer that fits in i64, or `None` for any other JSON value.
pub fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match scalar(d, Want::I64)? {
        Some(Scalar::I64(n)) => Some(n),
        _ => None,
    })
}

/// A number, or `None` for any other JSON value.
pub fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match scalar(d, Want::F64)? {
        Some(Scalar::F64(n)) => Some(n),
        _ => None,
    })
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(a)).map(Some)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        drain_seq(a).map(|()| None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// `Some` whenever the member is there, whatever its value (`null`
/// included): for a stage that must replace a member rather than add a
/// second one of the same name.
pub fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IgnoredAny>, D::Error> {
    IgnoredAny::deserialize(d).map(Some)
}

/// An object read as `T`, or `None` for any other JSON value.
pub fn lenient_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    d.deserialize_option(ObjectVisitor(PhantomData))
}

/// An array's objects read as `T` (other elements left out); empty for
/// any other JSON value.
pub fn lenient_objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    struct Objects<T>(PhantomData<T>);
    struct Element<T>(Option<T>);
    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Element<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            lenient_object(d).map(Element)
        }
    }
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Objects<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            let mut all = Vec::new();
            while let Some(Element(e)) = a.next_element::<Element<T>>()? {
                all.extend(e);
            }
            Ok(all)
        }
        fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
            drain_map(a).map(|()| Vec::new())
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_option(Objects(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_the_wrong_type_count_as_absent() {
        let text = r#"{"raw":7,"source":"x","ts":"2026-01-01T00:00:00Z","kind":["a"],
            "fields":{"client_ip":{"a":[1,{"b":2}]},"user":"bob","queue_id":null},
            "detection":{"is_anomaly":"yes","severity":"high","score":-1,"rarity":"many",
              "top_features":[{"feature":"f","contribution":0.5,"value":3},7,{"feature":2}]},
            "extra":{"deep":[[[]]]}}"#;
        let v: ScoredView = serde_json::from_str(text).unwrap();
        assert!(v.raw.is_none() && v.source.is_none() && v.kind.is_none());
        assert_eq!(v.ts.as_deref(), Some("2026-01-01T00:00:00Z"));
        let f = v.fields.as_ref().unwrap();
        assert!(f.client_ip.is_none() && f.queue_id.is_none());
        assert_eq!(f.user.as_deref(), Some("bob"));
        let d = v.detection.as_ref().unwrap();
        assert_eq!((d.is_anomaly, d.score, d.rarity), (None, Some(-1.0), None));
        assert!(!v.is_anomaly());
        assert_eq!(d.top_features.len(), 2);
        assert_eq!(d.top_features[0].feature.as_deref(), Some("f"));
        assert_eq!(d.top_features[0].value, Some(serde_json::json!(3)));
        assert!(d.top_features[1].feature.is_none());
    }

    #[test]
    fn reading_the_members_gives_the_view_serde_gives() {
        let texts = [
            r#"{"raw":"r \"q\"","source":{"topic":"postfix","partition":2,"offset":9},"ts":"t",
               "program":"postfix","kind":"smtpd.reject","failure":"reject",
               "fields":{"client_ip":"192.0.2.1","level":"warning"},"features":{"a":1,"b":[2,{"c":null}]},
               "detection":{"is_anomaly":true,"severity":"high","score":-0.5,"rarity":2e5,"model":"m",
                 "top_features":[{"feature":"a","value":"x","contribution":-0.25}]},"extra":[1]}"#,
            r#"{"raw":7,"k\u0069nd":"escaped name","detection":{"error":"unscorable"}}"#,
            r#"{}"#,
        ];
        for text in texts {
            let members = crate::members::members(text).unwrap();
            let ours = ScoredView::from_members(&members).unwrap();
            let serde: ScoredView = serde_json::from_str(text).unwrap();
            assert_eq!(format!("{ours:?}"), format!("{serde:?}"), "{text}");
        }
        let twice = crate::members::members(r#"{"kind":"a","kind":"b"}"#).unwrap();
        let err = ScoredView::from_members(&twice).unwrap_err();
        assert_eq!(err, "duplicate member `kind`");
        assert!(serde_json::from_str::<ScoredView>(r#"{"kind":"a","kind":"b"}"#).is_err());
        let bad = crate::members::members(r#"{"source":{"partition":1,"partition":2}}"#).unwrap();
        assert!(ScoredView::from_members(&bad)
            .unwrap_err()
            .starts_with("member `source`: duplicate field"));
    }

    #[test]
    fn escaped_strings_and_big_numbers() {
        let text =
            r#"{"kind":"a\"b","source":{"topic":"t","partition":18446744073709551615,"offset":3}}"#;
        let v: ScoredView = serde_json::from_str(text).unwrap();
        assert_eq!(v.kind.as_deref(), Some("a\"b"));
        let s = v.source.unwrap();
        assert_eq!((s.partition, s.offset), (None, Some(3)));
        assert!(s.kafka().is_none());
        assert!(serde_json::from_str::<ScoredView>(r#"{"kind":"x""#).is_err());
    }
}
