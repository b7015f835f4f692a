//! From a record's `features` object to the `f32` row the trees see:
//! categories become the model's codes, the scaler (if any) is applied in
//! `f64` as scikit-learn does, then the value is cast to `f32`.

use crate::model::{FeatureKind, FeatureSpec, Model, Scaler};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;

/// Why a record's features could not be turned into a row.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeError {
    pub feature: String,
    pub problem: String,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "feature `{}`: {}", self.feature, self.problem)
    }
}

impl std::error::Error for EncodeError {}

#[derive(Debug, Clone)]
enum Column {
    Numeric,
    Categorical {
        codes: HashMap<String, i64>,
        unseen: i64,
    },
}

#[derive(Debug, Clone)]
pub struct Encoder {
    names: Vec<String>,
    columns: Vec<Column>,
    scaler: Option<Scaler>,
}

impl Encoder {
    pub fn new(model: &Model) -> Encoder {
        Encoder::of_features(&model.features, model.scaler.clone())
    }

    pub fn of_features(features: &[FeatureSpec], scaler: Option<Scaler>) -> Encoder {
        Encoder {
            names: features.iter().map(|f| f.name.clone()).collect(),
            columns: features
                .iter()
                .map(|f| match &f.kind {
                    FeatureKind::Numeric => Column::Numeric,
                    FeatureKind::Categorical { codes, unseen } => Column::Categorical {
                        codes: codes.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                        unseen: *unseen,
                    },
                })
                .collect(),
            scaler,
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Fills `row` (one slot per model feature). Categories the model has
    /// not seen get its reserved code and their feature index is pushed to
    /// `unseen`.
    pub fn encode(
        &self,
        features: &Map<String, Value>,
        row: &mut [f32],
        unseen: &mut Vec<usize>,
    ) -> Result<(), EncodeError> {
        for (i, (name, column)) in self.names.iter().zip(&self.columns).enumerate() {
            let error = |problem: String| EncodeError {
                feature: name.clone(),
                problem,
            };
            let value = features
                .get(name)
                .ok_or_else(|| error("missing from the record's `features`".into()))?;
            let raw = match (column, value) {
                (_, Value::Null) => {
                    return Err(error(
                        "is null (the record lacked what it is computed from)".into(),
                    ))
                }
                (Column::Numeric, Value::Number(n)) => n
                    .as_f64()
                    .ok_or_else(|| error(format!("{n} is not a representable number")))?,
                (Column::Numeric, other) => {
                    return Err(error(format!(
                        "expected a number, found {}",
                        describe(other)
                    )))
                }
                (
                    Column::Categorical {
                        codes,
                        unseen: code,
                    },
                    v,
                ) => {
                    let key = match v {
                        Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
                        Value::Number(n) => std::borrow::Cow::Owned(n.to_string()),
                        Value::Bool(b) => std::borrow::Cow::Owned(b.to_string()),
                        other => {
                            return Err(error(format!(
                                "expected a category (string), found {}",
                                describe(other)
                            )))
                        }
                    };
                    match codes.get(key.as_ref()) {
                        Some(c) => *c as f64,
                        None => {
                            unseen.push(i);
                            *code as f64
                        }
                    }
                }
            };
            self.set(i, raw, row)?;
        }
        Ok(())
    }

    /// Scales feature `i`'s raw value into `row`, refusing what the model
    /// cannot use.
    fn set(&self, i: usize, raw: f64, row: &mut [f32]) -> Result<(), EncodeError> {
        if !raw.is_finite() {
            return Err(self.error(i, format!("{raw} is not a finite number")));
        }
        let scaled = match &self.scaler {
            Some(s) => (raw - s.mean[i]) / s.scale[i],
            None => raw,
        };
        let x = scaled as f32;
        if !x.is_finite() {
            return Err(self.error(
                i,
                format!("{raw} is too large for the model (beyond f32 range)"),
            ));
        }
        row[i] = x;
        Ok(())
    }

    fn error(&self, i: usize, problem: String) -> EncodeError {
        EncodeError {
            feature: self.names[i].clone(),
            problem,
        }
    }
}

/// Deserialises a record's `features` object straight into a row, with
/// what [`Encoder::encode`] makes of the same map, without building the
/// map: values are read as they stream past, categories looked up by their
/// borrowed text, members the model does not use skipped.
pub struct RowSeed<'e> {
    pub encoder: &'e Encoder,
    pub row: &'e mut [f32],
    pub unseen: &'e mut Vec<usize>,
}

/// One feature's value as it was read.
enum Slot {
    /// The value before scaling, and whether it is an unseen category's code.
    Raw(f64, bool),
    Problem(String),
}

impl<'de> serde::de::DeserializeSeed<'de> for RowSeed<'_> {
    /// The row's outcome; a JSON syntax error is the deserialiser's error.
    type Value = Result<(), EncodeError>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RowSeed<'_> {
    type Value = Result<(), EncodeError>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a `features` object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let encoder = self.encoder;
        let n = encoder.names.len();
        // Which features the record gave a usable value; on the stack for
        // the usual few dozen.
        let mut on_stack = [false; 64];
        let mut on_heap;
        let given: &mut [bool] = if n <= on_stack.len() {
            &mut on_stack[..n]
        } else {
            on_heap = vec![false; n];
            &mut on_heap
        };
        // What was wrong with a feature's value (only ever allocated for a bad record).
        let mut problems: Vec<(usize, String)> = Vec::new();
        // pf-features writes the features in the model's order: the next
        // expected name is tried before searching.
        let mut next = 0;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let index = if next < n && same_name(&encoder.names[next], &key) {
                Some(next)
            } else {
                encoder.names.iter().position(|name| *name == key)
            };
            let Some(i) = index else {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            };
            next = i + 1;
            // A name given twice: the last value counts, as in a map.
            if given[i] {
                given[i] = false;
                self.unseen.retain(|&j| j != i);
            }
            problems.retain(|(j, _)| *j != i);
            let read = match encoder.columns[i].read(map.next_value::<Input<'de>>()?) {
                Slot::Raw(raw, unseen) => encoder.set(i, raw, self.row).map(|()| unseen),
                Slot::Problem(problem) => Err(encoder.error(i, problem)),
            };
            match read {
                Ok(unseen) => {
                    given[i] = true;
                    if unseen {
                        self.unseen.push(i);
                    }
                }
                Err(e) => problems.push((i, e.problem)),
            }
        }
        // The first feature in the model's order without a usable value.
        if let Some(i) = given.iter().position(|g| !g) {
            let problem = match problems.iter().position(|(j, _)| *j == i) {
                Some(k) => problems.swap_remove(k).1,
                None => "missing from the record's `features`".into(),
            };
            return Ok(Err(encoder.error(i, problem)));
        }
        self.unseen.sort_unstable();
        Ok(Ok(()))
    }
}

/// `a == b`, inline: feature names are short, and a call to `memcmp` per
/// feature of every record was a tenth of pf-score's time.
#[inline]
fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut words_a = a.chunks_exact(8);
    let mut words_b = b.chunks_exact(8);
    let word = |w: &[u8]| u64::from_ne_bytes(w.try_into().unwrap_or([0; 8]));
    for (x, y) in (&mut words_a).zip(&mut words_b) {
        if word(x) != word(y) {
            return false;
        }
    }
    words_a
        .remainder()
        .iter()
        .zip(words_b.remainder())
        .all(|(x, y)| x == y)
}

impl Column {
    fn read(&self, value: Input<'_>) -> Slot {
        let key: std::borrow::Cow<'_, str> = match (self, value) {
            (_, Input::Null) => {
                return Slot::Problem("is null (the record lacked what it is computed from)".into())
            }
            (Column::Numeric, Input::Int(n)) => return Slot::Raw(n as f64, false),
            (Column::Numeric, Input::UInt(n)) => return Slot::Raw(n as f64, false),
            (Column::Numeric, Input::Float(x)) => return Slot::Raw(x, false),
            (Column::Numeric, other) => {
                return Slot::Problem(format!("expected a number, found {}", other.describe()))
            }
            (Column::Categorical { .. }, Input::Str(s)) => s,
            (Column::Categorical { .. }, Input::Bool(b)) => b.to_string().into(),
            (Column::Categorical { .. }, Input::Int(n)) => n.to_string().into(),
            (Column::Categorical { .. }, Input::UInt(n)) => n.to_string().into(),
            (Column::Categorical { .. }, Input::Float(x)) => Value::from(x).to_string().into(),
            (Column::Categorical { .. }, other) => {
                return Slot::Problem(format!(
                    "expected a category (string), found {}",
                    other.describe()
                ))
            }
        };
        let Column::Categorical { codes, unseen } = self else {
            unreachable!("numeric columns returned above");
        };
        match codes.get(key.as_ref()) {
            Some(c) => Slot::Raw(*c as f64, false),
            None => Slot::Raw(*unseen as f64, true),
        }
    }
}

/// A member name, borrowed from the text unless it holds escapes (serde's
/// own `Cow<str>` always copies: one allocation per feature per record).
pub struct Key<'a>(pub std::borrow::Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A feature value as a row needs it, borrowed where it can be.
enum Input<'a> {
    Null,
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Str(std::borrow::Cow<'a, str>),
    Array,
    Object,
}

impl Input<'_> {
    fn describe(&self) -> &'static str {
        match self {
            Input::Null => "null",
            Input::Bool(_) => "a boolean",
            Input::Int(_) | Input::UInt(_) | Input::Float(_) => "a number",
            Input::Str(_) => "a string",
            Input::Array => "an array",
            Input::Object => "an object",
        }
    }
}

impl<'de> serde::Deserialize<'de> for Input<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Input<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Input<'de>, E> {
                Ok(Input::Null)
            }
            fn visit_none<E>(self) -> Result<Input<'de>, E> {
                Ok(Input::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Input<'de>, E> {
                Ok(Input::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Input<'de>, E> {
                Ok(Input::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Input<'de>, E> {
                Ok(Input::UInt(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Input<'de>, E> {
                Ok(Input::Float(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Input<'de>, E> {
                Ok(Input::Str(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Input<'de>, E> {
                Ok(Input::Str(std::borrow::Cow::Owned(v.to_string())))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Input<'de>, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Input::Array)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Input<'de>, A::Error> {
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Input::Object)
            }
        }
        d.deserialize_any(V)
    }
}

pub fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeSeed;

    fn encoder(scaler: Option<Scaler>) -> Encoder {
        let codes: std::collections::BTreeMap<String, i64> = [
            ("postfix/smtpd".to_string(), 0),
            ("7".to_string(), 1),
            ("true".to_string(), 2),
        ]
        .into();
        let features = vec![
            FeatureSpec {
                name: "service".into(),
                kind: FeatureKind::Categorical { codes, unseen: 3 },
            },
            FeatureSpec {
                name: "hour".into(),
                kind: FeatureKind::Numeric,
            },
            FeatureSpec {
                name: "rate".into(),
                kind: FeatureKind::Numeric,
            },
        ];
        Encoder::of_features(&features, scaler)
    }

    /// The streaming seed and the map-based encoder agree on every input:
    /// rows, unseen categories and error messages.
    #[test]
    fn the_row_seed_encodes_as_the_map_does() {
        let scaled = Scaler {
            mean: vec![0.0, 10.0, 1.0],
            scale: vec![1.0, 2.0, 0.5],
        };
        for e in [encoder(None), encoder(Some(scaled))] {
            for features in [
                r#"{"service":"postfix/smtpd","hour":3,"rate":0.25}"#,
                r#"{"rate":-1e300,"hour":18446744073709551615,"service":"nobody","x":[1,{"a":2}]}"#,
                r#"{"service":7,"hour":-4,"rate":1.5,"service":true}"#,
                r#"{"service":"post\u0066ix/smtpd","hour":1,"rate":2}"#,
                r#"{"serv\u0069ce":"postfix/smtpd","ho\"ur":1,"hour":1,"rate":2}"#,
                r#"{"service":1.5,"hour":1,"rate":2}"#,
                r#"{"service":"postfix/smtpd","hour":null,"rate":2}"#,
                r#"{"service":"postfix/smtpd","hour":"3","rate":2}"#,
                r#"{"service":[1],"hour":1,"rate":2}"#,
                r#"{"service":"postfix/smtpd","rate":2}"#,
                r#"{"service":"postfix/smtpd","hour":1,"rate":1e300}"#,
                r#"{"service":[1],"hour":1,"rate":2,"service":"postfix/smtpd"}"#,
                r#"{"service":"x","hour":"a","rate":2,"hour":5,"service":"nobody"}"#,
                r#"{"rate":1e300,"hour":null,"service":"postfix/smtpd"}"#,
                r#"{}"#,
            ] {
                let map: Map<String, Value> = serde_json::from_str(features).unwrap();
                let (mut want_row, mut want_unseen) = (vec![0f32; 3], Vec::new());
                let want = e.encode(&map, &mut want_row, &mut want_unseen);
                let (mut row, mut unseen) = (vec![0f32; 3], Vec::new());
                let mut de = serde_json::Deserializer::from_str(features);
                let got = RowSeed {
                    encoder: &e,
                    row: &mut row,
                    unseen: &mut unseen,
                }
                .deserialize(&mut de)
                .unwrap();
                assert_eq!(got, want, "{features}");
                if want.is_ok() {
                    assert_eq!((row, unseen), (want_row, want_unseen), "{features}");
                }
            }
        }
    }
}
