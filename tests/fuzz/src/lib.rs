//! What each fuzz target checks, as plain functions: the targets in
//! `src/bin` hand them AFL's inputs. A panic anywhere is a finding.

use pf_record::{LineReader, Origin, MAX_RECORD_BYTES};
use std::sync::OnceLock;

/// Every line of the input gives exactly one record, which is one valid
/// JSON object on one line.
pub fn line_parser(data: &[u8]) {
    let zone = pf_logparse::time::Zone::parse("UTC").expect("UTC");
    let now = chrono::DateTime::from_timestamp(1_764_000_000, 0).expect("a time");
    let mut parser = pf_logparse::LineParser::new(zone, None, now);
    let mut lines = LineReader::new(data);
    let mut out = Vec::new();
    let mut n = 0;
    while let Ok(Some(line)) = lines.next_line() {
        parser.process(&line, Origin::Stdin, &mut out);
        n += 1;
    }
    let records: Vec<&[u8]> = out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    assert_eq!(records.len(), n, "one record per line");
    for r in records {
        let v: serde_json::Value = serde_json::from_slice(r).expect("a record is JSON");
        assert!(v.is_object(), "a record is an object");
    }
}

/// The NDJSON side of the stages: reading a line as a record for
/// pf-features (and computing features, with state), adding fields, the
/// error wording, pseudonymising it, and the acknowledgement file format.
pub fn ndjson_stages(data: &[u8]) {
    static SETUP: OnceLock<(pf_featurize::FeatureList, pf_privacy::Pseudonymiser)> = OnceLock::new();
    let (list, pseudonymiser) = SETUP.get_or_init(|| {
        (
            pf_featurize::FeatureList::builtin("behavioural").expect("shipped set"),
            pf_privacy::Pseudonymiser::new(b"fuzzing key, sixteen bytes or more").expect("key"),
        )
    });
    // Fresh state per input, so that a finding replays on its own.
    let mut featurizer =
        pf_featurize::Featurizer::new(list.clone(), pf_featurize::behaviour::Behaviour::new());
    let mut lines = LineReader::with_limit(data, MAX_RECORD_BYTES);
    let mut value = Vec::new();
    let mut out = Vec::new();
    while let Ok(Some(line)) = lines.next_line() {
        let Ok(text) = std::str::from_utf8(line.bytes) else { continue };
        match serde_json::from_str::<pf_featurize::RecordView>(text) {
            Ok(view) => {
                value.clear();
                featurizer.write_features(&view, &mut value);
                let features: serde_json::Value =
                    serde_json::from_slice(&value).expect("features are JSON");
                assert!(features.is_object());
                if pf_record::json::write_with_fields(&mut out, text, &[("features", &value)], true).is_ok() {
                    let last = out.split(|&b| b == b'\n').rev().nth(1).unwrap_or(&[]);
                    let _: serde_json::Value = serde_json::from_slice(last).expect("output is JSON");
                }
            }
            Err(e) => {
                let _ = pf_cli::not_a_record(&e, text);
            }
        }
        let pseudonymised = pseudonymiser.record_text(text);
        if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).is_ok() {
            let _: serde_json::Value =
                serde_json::from_str(&pseudonymised).expect("a pseudonymised record is JSON");
        }
        let _ = pf_record::acks::Acks::parse(text);
    }
}

/// Any text as a config file: loads or says why not, never panics.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = pf_config::Config::from_yaml(text) {
            let _ = config.to_lines();
        }
    }
}

/// Any text as a model file: a model that loads can be scored and explained.
pub fn model(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(model) = pf_model::Model::from_json(text) else { return };
    let d = model.feature_names().count();
    let Ok(mut detector) = pf_model::Detector::new(model) else { return };
    let rows: Vec<f32> = (0..2 * d).map(|i| (i as f32) * 0.37 - 1.0).collect();
    let mut scores = vec![0.0; 2];
    detector.decision_function(&rows, &mut scores);
    let mut phi = vec![0.0; 2 * d];
    detector.explain_many(&rows, &mut phi);
    let policy = pf_model::SeverityPolicy::Rarity { low: 1e3, medium: 1e4, high: 1e5 };
    let grading = detector.grading(policy);
    for (score, row) in scores.iter().zip(rows.chunks_exact(d)) {
        let _ = detector.grade(&grading, *score, row);
    }
}
