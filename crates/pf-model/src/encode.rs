//! From a record's `features` object to the `f32` row the trees see:
//! categories become the model's codes, the scaler (if any) is applied in
//! `f64` as scikit-learn does, then the value is cast to `f32`.

use crate::model::{FeatureKind, Model, Scaler};
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
        Encoder {
            names: model.features.iter().map(|f| f.name.clone()).collect(),
            columns: model
                .features
                .iter()
                .map(|f| match &f.kind {
                    FeatureKind::Numeric => Column::Numeric,
                    FeatureKind::Categorical { codes, unseen } => Column::Categorical {
                        codes: codes.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                        unseen: *unseen,
                    },
                })
                .collect(),
            scaler: model.scaler.clone(),
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
            if !raw.is_finite() {
                return Err(error(format!("{raw} is not a finite number")));
            }
            let scaled = match &self.scaler {
                Some(s) => (raw - s.mean[i]) / s.scale[i],
                None => raw,
            };
            let x = scaled as f32;
            if !x.is_finite() {
                return Err(error(format!(
                    "{raw} is too large for the model (beyond f32 range)"
                )));
            }
            row[i] = x;
        }
        Ok(())
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
