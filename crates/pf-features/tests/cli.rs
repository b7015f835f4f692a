//! pf-features end to end: the feature object, feature sets, behavioural
//! state across runs, bad input.

use pf_testkit::{run, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_pf-features");
const RECORD: &str = r#"{"raw":"Mar  7 23:59:58 mx postfix/qmgr[9]: 4BCD: removed","ts":"2026-03-07T23:59:58+09:00","program":"postfix/qmgr","kind":"qmgr.removed","parsed":true,"fields":{"queue_id":"4BCD"}}"#;

#[test]
fn adds_the_seed_features_in_order_and_keeps_the_record() {
    let dir = temp_dir("features-basic");
    let r = run(
        BIN,
        &["--features", "seed"],
        format!("{RECORD}\n").as_bytes(),
        &dir,
    );
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
    assert_eq!(out[0]["feature_set"], "seed");

    std::fs::write(dir.join("list.json"), r#"["msg_len","hour"]"#).unwrap();
    let again = run(BIN, &["--features", "list.json"], r.stdout.as_bytes(), &dir);
    let out = again.records();
    assert_eq!(
        out[0]["features"],
        serde_json::json!({"msg_len": 13, "hour": 23}),
        "replaced, not duplicated"
    );
    assert_eq!(again.stdout.matches("\"features\"").count(), 1);
    assert_eq!(again.stdout.matches("\"feature_set\"").count(), 1);
    assert_eq!(again.records()[0]["feature_set"], "list");
    // A `null` left by some other tool is replaced too, not followed by a second member.
    let nulled = r
        .stdout
        .lines()
        .next()
        .unwrap()
        .replacen("\"features\":{", "\"features\":null,\"old\":{", 1)
        .replacen("\"feature_set\":\"seed\"", "\"feature_set\":null", 1);
    let third = run(BIN, &["--features", "list.json"], nulled.as_bytes(), &dir);
    assert_eq!(
        third.stdout.matches("\"features\"").count(),
        1,
        "{}",
        third.stdout
    );
    assert_eq!(third.stdout.matches("\"feature_set\"").count(), 1);
    assert_eq!(third.records()[0]["features"]["hour"], 23);
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
        r.stderr.contains("stdin line 1: not valid JSON"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("stdin line 4:"), "{}", r.stderr);

    std::fs::write(dir.join("list.json"), r#"["hour","colour"]"#).unwrap();
    let r = run(BIN, &["--features", "list.json"], b"", &dir);
    assert_eq!(r.status, 2);
    assert!(
        r.stderr
            .contains("unknown feature `colour`; `pf-features --list` shows the known ones"),
        "{}",
        r.stderr
    );
}

/// SASL failures from one address, `n` of them `step` seconds apart, as
/// pf-parse writes them.
fn failures(n: usize, start: i64, step: i64, ip: &str) -> String {
    (0..n)
        .map(|i| {
            let t = chrono::DateTime::from_timestamp(start + i as i64 * step, 0).unwrap();
            format!(
                "{{\"raw\":\"x\",\"ts\":\"{}\",\"program\":\"postfix/smtpd\",\"kind\":\"smtpd.sasl_auth_failed\",\"failure\":\"auth\",\"fields\":{{\"client_ip\":\"{ip}\"}}}}\n",
                t.to_rfc3339()
            )
        })
        .collect()
}

#[test]
fn the_default_set_is_behavioural_and_counts_in_event_time() {
    let dir = temp_dir("features-behavioural");
    // An hour apart in event time, fed at once: only the event time counts.
    let mut input = failures(30, 1_772_400_000, 10, "203.0.113.9");
    input += &failures(1, 1_772_400_000 + 7_200, 10, "203.0.113.9");
    let r = run(BIN, &[], input.as_bytes(), &dir);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let out = r.records();
    assert_eq!(out[0]["feature_set"], "behavioural");
    assert_eq!(out[29]["features"]["auth_failures_1h_by_ip"], 30);
    assert_eq!(out[30]["features"]["auth_failures_1h_by_ip"], 1);
    let again = run(BIN, &[], input.as_bytes(), &dir);
    assert_eq!(again.stdout, r.stdout, "deterministic for the same input");
}

#[test]
fn state_carries_over_a_restart() {
    let dir = temp_dir("features-state");
    let first = failures(20, 1_772_400_000, 5, "203.0.113.9");
    let second = failures(20, 1_772_400_100, 5, "203.0.113.9");
    let whole = run(BIN, &[], format!("{first}{second}").as_bytes(), &dir);
    let a = run(BIN, &["--state", "state.json"], first.as_bytes(), &dir);
    assert_eq!(a.status, 0, "{}", a.stderr);
    assert!(dir.join("state.json").is_file());
    let b = run(BIN, &["--state", "state.json"], second.as_bytes(), &dir);
    assert_eq!(b.status, 0, "{}", b.stderr);
    assert_eq!(a.stdout + &b.stdout, whole.stdout);
    assert_eq!(b.records()[19]["features"]["auth_failures_1h_by_ip"], 40);

    std::fs::write(dir.join("state.json"), "garbage").unwrap();
    let bad = run(BIN, &["--state", "state.json"], second.as_bytes(), &dir);
    assert_eq!(bad.status, 2);
    assert!(
        bad.stderr
            .contains("not a pf-features state file (remove it"),
        "{}",
        bad.stderr
    );
}

#[test]
fn hostile_input_is_reported_and_the_rest_kept() {
    let dir = temp_dir("features-hostile");
    let good: Vec<String> = (0..3).map(|_| RECORD.to_string()).collect();
    let extra = vec![
        (
            "raw of the wrong type",
            br#"{"raw":7,"kind":"qmgr.removed"}"#.to_vec(),
        ),
        (
            "fields of the wrong type",
            br#"{"raw":"x","fields":"nope"}"#.to_vec(),
        ),
    ];
    let r = pf_testkit::assert_survives_hostile_input(BIN, &[], &good, &extra, 1, &dir);
    let out = r.records();
    assert_eq!(out.len(), 3, "every good record comes out:\n{}", r.stderr);
    assert!(out.iter().all(|o| o["features"].is_object()));
}
