//! pf-features end to end: the feature object, feature lists, bad input.

use pf_testkit::{run, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_pf-features");
const RECORD: &str = r#"{"raw":"Mar  7 23:59:58 mx postfix/qmgr[9]: 4BCD: removed","ts":"2026-03-07T23:59:58+09:00","program":"postfix/qmgr","kind":"qmgr.removed","parsed":true,"fields":{"queue_id":"4BCD"}}"#;

#[test]
fn adds_the_configured_features_in_order_and_keeps_the_record() {
    let dir = temp_dir("features-basic");
    let r = run(BIN, &[], format!("{RECORD}\n").as_bytes(), &dir);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let out = r.records();
    assert_eq!(out[0]["fields"]["queue_id"], "4BCD");
    let f = out[0]["features"].as_object().unwrap();
    let names: Vec<&str> = f.keys().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "service_encoded",
            "event_encoded",
            "hour",
            "minute",
            "dayofweek",
            "msg_len"
        ]
    );
    assert_eq!(f["service_encoded"], "postfix/qmgr");
    assert_eq!(f["event_encoded"], "qmgr.removed");
    assert_eq!(f["hour"], 23, "the record's own zone, not UTC");
    assert_eq!(f["dayofweek"], 5, "Saturday");
    assert_eq!(f["msg_len"], "4BCD: removed".len());

    std::fs::write(dir.join("list.json"), r#"["msg_len","hour"]"#).unwrap();
    let again = run(BIN, &["--features", "list.json"], r.stdout.as_bytes(), &dir);
    let out = again.records();
    assert_eq!(
        out[0]["features"],
        serde_json::json!({"msg_len": 13, "hour": 23}),
        "replaced, not duplicated"
    );
    assert_eq!(again.stdout.matches("\"features\"").count(), 1);
}

#[test]
fn bad_lines_are_reported_and_a_bad_list_is_a_usage_error() {
    let dir = temp_dir("features-bad");
    let r = run(
        BIN,
        &[],
        format!("{{broken\n\n{RECORD}\n[1,2]\n").as_bytes(),
        &dir,
    );
    assert_eq!(r.status, 1);
    assert_eq!(r.records().len(), 1);
    assert!(
        r.stderr.contains("stdin line 1: not a JSON record"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("stdin line 4:"), "{}", r.stderr);

    std::fs::write(dir.join("list.json"), r#"["hour","colour"]"#).unwrap();
    let r = run(BIN, &["--features", "list.json"], b"", &dir);
    assert_eq!(r.status, 2);
    assert!(
        r.stderr
            .contains("unknown feature `colour`; known features: service_encoded"),
        "{}",
        r.stderr
    );
}
