//! The default model sees what training never showed: values beyond the
//! training range and categories never seen raise the anomaly, the further
//! beyond the more, and every detection carries its rarity, with
//! contributions that add up to the score.

use pf_testkit::{run, temp_dir};
use serde_json::{json, Value};

const SCORE: &str = env!("CARGO_BIN_EXE_pf-score");

/// pf-train sits next to pf-score (tests/run.sh builds every binary first).
fn train_bin() -> std::path::PathBuf {
    std::path::Path::new(SCORE).with_file_name("pf-train")
}

/// A server's training window: common kinds, a rarer reject now and then
/// with a warning, a failed login or two, and no failure count above 2.
fn training_rows() -> String {
    let kinds = [
        "smtpd.connect",
        "smtpd.disconnect",
        "qmgr.queued",
        "smtp.delivery",
    ];
    (0..5000)
        .map(|i| {
            let rare = i % 97 == 0;
            let failures: u64 = [0, 0, 0, 1, 2][(i / 97) % 5] * u64::from(rare);
            let record = json!({"features": {
                "event_encoded": if rare { "smtpd.reject" } else { kinds[i % kinds.len()] },
                "log_level": u8::from(rare),
                "auth_failures_1h_by_ip": failures,
                "msg_len": 60 + (i * 7919) % 90,
            }});
            format!("{record}\n")
        })
        .collect()
}

/// The default model (pf-train without options) of the training rows, as `dir/model.json`.
fn train_default_model(dir: &std::path::Path) {
    let train = run(
        train_bin().to_str().expect("utf-8 path"),
        &["--out", "model.json", "--metrics", "-"],
        training_rows().as_bytes(),
        dir,
    );
    assert_eq!(train.status, 0, "{}", train.stderr);
}

fn probe(kind: &str, level: u8, failures: u64) -> String {
    let record = json!({"features": {
        "event_encoded": kind, "log_level": level, "auth_failures_1h_by_ip": failures,
        "msg_len": 100}});
    format!("{record}\n")
}

#[test]
fn unseen_values_and_categories_raise_the_score_and_carry_a_rarity() {
    let dir = temp_dir("novelty");
    train_default_model(&dir);
    let model: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("model.json")).unwrap()).unwrap();
    assert!(
        model["tails"].is_object(),
        "the default detector is the tail model"
    );
    assert!(model["calibration"].is_object(), "and it is calibrated");
    let offset = model["tails"]["offset"].as_f64().unwrap();

    let input: String = [
        probe("smtpd.connect", 0, 0),
        probe("smtpd.connect", 0, 1),
        probe("smtpd.connect", 0, 6),
        probe("smtpd.connect", 0, 40),
        probe("postfix.warning", 1, 0),
        probe("postfix.fatal", 3, 0),
    ]
    .concat();
    let scored = run(
        SCORE,
        &["--model", "model.json", "--explain-all"],
        input.as_bytes(),
        &dir,
    );
    assert_eq!(scored.status, 0, "{}", scored.stderr);
    let out = scored.records();
    let det = |i: usize| &out[i]["detection"];
    let score = |i: usize| det(i)["score"].as_f64().unwrap();
    // Failures beyond anything in training: the more, the rarer.
    assert!(score(0) > score(1) && score(1) > score(2) && score(2) > score(3));
    assert_eq!(det(0)["severity"], "none");
    // A kind never seen scores below any seen one, and says why.
    assert!(score(4) < score(0));
    assert!(det(4)["contributions"]["event_encoded"].as_f64().unwrap() < 0.0);
    assert_eq!(det(4)["unseen"][0], "event_encoded");
    // A fatal error two levels above anything in training is high.
    assert_eq!(det(5)["severity"], "high", "{}", det(5));
    assert_eq!(det(5)["top_features"][0]["feature"], "log_level");
    // Rarity grows with the anomaly.
    let rarity = |i: usize| det(i)["rarity"].as_f64().unwrap();
    assert!(rarity(3) > rarity(2) && rarity(2) >= rarity(0) && rarity(5) > rarity(3));
    // Contributions plus the offset are the score.
    for i in 0..out.len() {
        let sum: f64 = det(i)["contributions"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((offset + sum - score(i)).abs() < 1e-6, "record {i}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_old_raw_thresholds_win_when_a_config_sets_them() {
    let dir = temp_dir("novelty-raw");
    train_default_model(&dir);
    // Raw cut-offs far below any score: nothing is an anomaly, whatever its rarity.
    std::fs::write(
        dir.join("raw.yaml"),
        "anomaly:\n  threshold:\n    high: -1000\n    medium: -900\n    low: -800\n",
    )
    .unwrap();
    let scored = run(
        SCORE,
        &["--config", "raw.yaml", "--model", "model.json"],
        probe("postfix.fatal", 3, 40).as_bytes(),
        &dir,
    );
    assert_eq!(scored.status, 0, "{}", scored.stderr);
    assert_eq!(scored.records()[0]["detection"]["severity"], "none");
    std::fs::remove_dir_all(&dir).ok();
}
