//! A line where a process says it failed (`fatal:`, `panic:`) is at least
//! `anomaly.failures`' severity whatever the model scores: here a model
//! trained on a server that logs the same fatal error every so often, so
//! the model alone takes it for normal.

use pf_testkit::{run, temp_dir};
use serde_json::{json, Value};

const SCORE: &str = env!("CARGO_BIN_EXE_pf-score");

fn train_bin() -> std::path::PathBuf {
    std::path::Path::new(SCORE).with_file_name("pf-train")
}

/// One line in 25 is the server's recurring fatal error.
fn training_rows() -> String {
    let kinds = ["smtpd.connect", "smtpd.disconnect", "qmgr.queued"];
    (0..5000)
        .map(|i| {
            let fatal = i % 25 == 0;
            let record = json!({"features": {
                "event_encoded": if fatal { "postfix.fatal" } else { kinds[i % kinds.len()] },
                "log_level": if fatal { 3 } else { 0 },
                "msg_len": 60 + (i * 7919) % 90,
            }});
            format!("{record}\n")
        })
        .collect()
}

fn line(program: &str, fields: Value, kind: &str, level: u8) -> String {
    let record = json!({"program": program, "kind": kind, "fields": fields, "features": {
        "event_encoded": kind, "log_level": level, "msg_len": 100}});
    format!("{record}\n")
}

fn score(dir: &std::path::Path, config: Option<&str>, input: &str) -> Vec<Value> {
    let mut args = vec!["--model", "model.json"];
    if let Some(c) = config {
        std::fs::write(dir.join("failures.yaml"), c).unwrap();
        args.extend(["--config", "failures.yaml"]);
    }
    let scored = run(SCORE, &args, input.as_bytes(), dir);
    assert_eq!(scored.status, 0, "{}", scored.stderr);
    scored
        .records()
        .into_iter()
        .map(|r| r["detection"].clone())
        .collect()
}

#[test]
fn failures_are_at_least_their_floor_whatever_the_model_says() {
    let dir = temp_dir("failures");
    let train = run(
        train_bin().to_str().expect("utf-8 path"),
        &["--out", "model.json", "--metrics", "-"],
        training_rows().as_bytes(),
        &dir,
    );
    assert_eq!(train.status, 0, "{}", train.stderr);
    let input = [
        line(
            "postfix/smtp",
            json!({"level": "fatal"}),
            "postfix.fatal",
            3,
        ),
        line("dovecot", json!({"level": "Panic"}), "dovecot.warning", 3),
        line(
            "postfix/sendmail",
            json!({"level": "fatal"}),
            "postfix.fatal",
            3,
        ),
        line(
            "postfix/smtp",
            json!({"level": "warning"}),
            "postfix.fatal",
            3,
        ),
        line("postfix/smtp", json!("not an object"), "postfix.fatal", 3),
        line("postfix/smtp", json!({"level": 3}), "postfix.fatal", 3),
    ]
    .concat();

    // The model alone: the recurring fatal error is ordinary.
    let off = "anomaly:\n  failures:\n    daemon: none\n    command: none\n";
    let model_only = score(&dir, Some(off), &input);
    for d in &model_only {
        assert_eq!(d["severity"], "none", "{d}");
        assert!(d.get("severity_floor").is_none(), "{d}");
    }

    // The defaults: a daemon's failure is high, a command's is left to the
    // model; the score and rarity stay the model's.
    let floored = score(&dir, None, &input);
    assert_eq!(floored[0]["severity"], "high", "{}", floored[0]);
    assert_eq!(floored[0]["severity_floor"], "daemon_failure");
    assert_eq!(floored[0]["is_anomaly"], true);
    assert!(
        floored[0]["top_features"].is_array(),
        "explained as any anomaly"
    );
    assert_eq!(floored[0]["score"], model_only[0]["score"]);
    assert_eq!(floored[0]["rarity"], model_only[0]["rarity"]);
    assert_eq!(
        floored[1]["severity"], "high",
        "Dovecot's Panic: {}",
        floored[1]
    );
    // A command's failure (sendmail) is the model's by default; the level
    // decides, not the kind; a `fields` or level of the wrong type is no
    // failure and the record is still scored.
    for d in &floored[2..] {
        assert_eq!(d["severity"], "none", "{d}");
        assert!(d["score"].is_number(), "{d}");
    }

    // Floors from the config.
    let set = "anomaly:\n  failures:\n    daemon: low\n    command: medium\n";
    let configured = score(&dir, Some(set), &input);
    assert_eq!(configured[0]["severity"], "low");
    assert_eq!(configured[2]["severity"], "medium", "{}", configured[2]);
    assert_eq!(configured[2]["severity_floor"], "command_failure");
    std::fs::remove_dir_all(&dir).ok();
}
