//! Training data: feature objects in, a numeric table plus learned
//! category encodings out, holding a bounded sample (see [`crate::sample`]).
//!
//! A column's kind is fixed by its first non-null value: numbers make it
//! numeric, strings categorical. Category codes are assigned at the end by
//! frequency in the kept rows (most frequent first, ties by name): rare
//! categories then sit together at one end of the axis, where the random
//! splits isolate them quickly, instead of being scattered by their
//! spelling as an alphabetical code would scatter them. A category never
//! seen in training gets the next code after the rarest.

use crate::encode::{describe, EncodeError};
use crate::model::{FeatureKind, FeatureSpec};
use crate::sample::{Sample, Window};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

/// Largest number of categories per column (codes must be exact in `f32`).
const MAX_CATEGORIES: usize = 1 << 24;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Numeric,
    Categorical,
}

#[derive(Debug, Default)]
struct Column {
    kind: Option<Kind>,
    ids: HashMap<String, u32>,
    labels: Vec<String>,
}

#[derive(Debug)]
pub struct TableBuilder {
    names: Vec<String>,
    columns: Vec<Column>,
    sample: Sample,
    row: Vec<f32>,
}

/// The kept rows, encoded, with what the model needs to encode new rows
/// the same way.
#[derive(Debug)]
pub struct Table {
    pub rows: Vec<f32>,
    pub features: Vec<FeatureSpec>,
    /// Rows offered (accepted ones, before sampling).
    pub rows_seen: u64,
}

impl Table {
    pub fn n_rows(&self) -> usize {
        self.rows.len() / self.features.len().max(1)
    }
}

impl TableBuilder {
    pub fn new(names: Vec<String>, window: Window, seed: u64) -> TableBuilder {
        let d = names.len();
        TableBuilder {
            columns: (0..d).map(|_| Column::default()).collect(),
            names,
            sample: Sample::new(d, window, seed),
            row: vec![0.0; d],
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Adds one record's features; a row with a problem is not added.
    pub fn push(&mut self, features: &Map<String, Value>) -> Result<(), EncodeError> {
        for (i, name) in self.names.iter().enumerate() {
            let error = |problem: String| EncodeError {
                feature: name.clone(),
                problem,
            };
            let column = &mut self.columns[i];
            let value = match features.get(name) {
                None => return Err(error("missing from the record's `features`".into())),
                Some(Value::Null) => {
                    return Err(error(
                        "is null (the record lacked what it is computed from)".into(),
                    ))
                }
                Some(v) => v,
            };
            let kind = *column.kind.get_or_insert(match value {
                Value::String(_) => Kind::Categorical,
                _ => Kind::Numeric,
            });
            self.row[i] = match (kind, value) {
                (Kind::Numeric, Value::Number(n)) => {
                    let v = n.as_f64().unwrap_or(f64::NAN);
                    let x = v as f32;
                    if !v.is_finite() || !x.is_finite() {
                        return Err(error(format!(
                            "{n} is not a finite number within f32 range"
                        )));
                    }
                    x
                }
                (Kind::Numeric, other) => {
                    return Err(error(format!(
                        "expected a number (earlier rows had numbers), found {}",
                        describe(other)
                    )))
                }
                (Kind::Categorical, Value::String(s)) => {
                    let next = column.labels.len();
                    let id = match column.ids.get(s.as_str()) {
                        Some(&id) => id,
                        None if next >= MAX_CATEGORIES => {
                            return Err(error(format!(
                                "more than {MAX_CATEGORIES} distinct categories; is this really categorical?"
                            )))
                        }
                        None => {
                            column.ids.insert(s.clone(), next as u32);
                            column.labels.push(s.clone());
                            next as u32
                        }
                    };
                    id as f32
                }
                (Kind::Categorical, other) => {
                    return Err(error(format!(
                        "expected a category string (earlier rows had strings), found {}",
                        describe(other)
                    )))
                }
            };
        }
        self.sample.push(&self.row);
        Ok(())
    }

    pub fn rows_seen(&self) -> u64 {
        self.sample.seen()
    }

    pub fn finish(self) -> Table {
        let d = self.names.len();
        let rows_seen = self.sample.seen();
        let mut rows = self.sample.into_rows();
        let mut features = Vec::with_capacity(d);
        for (i, (name, column)) in self.names.into_iter().zip(self.columns).enumerate() {
            if column.kind != Some(Kind::Categorical) {
                features.push(FeatureSpec {
                    name,
                    kind: FeatureKind::Numeric,
                });
                continue;
            }
            let mut counts = vec![0u64; column.labels.len()];
            for row in rows.chunks_exact(d) {
                counts[row[i] as usize] += 1;
            }
            let mut order: Vec<usize> = (0..counts.len()).filter(|&id| counts[id] > 0).collect();
            order.sort_by(|&a, &b| {
                counts[b]
                    .cmp(&counts[a])
                    .then(column.labels[a].cmp(&column.labels[b]))
            });
            let mut code_of_id = vec![0f32; counts.len()];
            let mut codes = BTreeMap::new();
            for (code, &id) in order.iter().enumerate() {
                code_of_id[id] = code as f32;
                codes.insert(column.labels[id].clone(), code as i64);
            }
            for row in rows.chunks_exact_mut(d) {
                row[i] = code_of_id[row[i] as usize];
            }
            features.push(FeatureSpec {
                name,
                kind: FeatureKind::Categorical {
                    unseen: codes.len() as i64,
                    codes,
                },
            });
        }
        Table {
            rows,
            features,
            rows_seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn categories_are_coded_by_frequency_and_bad_rows_refused() {
        let mut b = TableBuilder::new(vec!["svc".into(), "n".into()], Window::All, 0);
        for (svc, n) in [
            ("smtpd", 1),
            ("qmgr", 2),
            ("smtpd", 3),
            ("bounce", 4),
            ("smtpd", 5),
            ("qmgr", 6),
        ] {
            b.push(&obj(json!({"svc": svc, "n": n}))).unwrap();
        }
        assert!(b
            .push(&obj(json!({"svc": "x"})))
            .unwrap_err()
            .to_string()
            .contains("`n`: missing"));
        assert!(b.push(&obj(json!({"svc": 3, "n": 1}))).is_err());
        assert!(b.push(&obj(json!({"svc": "x", "n": "7"}))).is_err());
        assert!(b.push(&obj(json!({"svc": "x", "n": null}))).is_err());
        let t = b.finish();
        assert_eq!(t.rows_seen, 6);
        let FeatureKind::Categorical { codes, unseen } = &t.features[0].kind else {
            panic!("svc should be categorical")
        };
        assert_eq!(codes["smtpd"], 0);
        assert_eq!(codes["qmgr"], 1);
        assert_eq!(codes["bounce"], 2);
        assert_eq!(*unseen, 3);
        assert_eq!(t.features[1].kind, FeatureKind::Numeric);
        assert_eq!(&t.rows[..4], &[0.0, 1.0, 1.0, 2.0]);
    }
}
