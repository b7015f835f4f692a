//! pipelines/retrain.sh, the cron job: trains from the configured logs,
//! logs to logs/retraining.log, and on failure exits non-zero leaving the
//! current model in place.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn retrain(dir: &Path, args: &[&str]) -> (bool, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_pf-train")).parent().unwrap();
    for tool in ["pf-parse", "pf-features", "pf-models"] {
        assert!(
            bin.join(tool).is_file(),
            "{tool} not built: run cargo test --workspace"
        );
    }
    let out = Command::new(repo().join("pipelines/retrain.sh"))
        .args(args)
        .env("PF_BIN", bin)
        .env_remove("PF_CONFIG")
        .current_dir(dir)
        .output()
        .expect("retrain.sh runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn trains_from_the_configured_logs_and_keeps_the_model_on_failure() {
    let dir = pf_testkit::temp_dir("retrain-script");
    let tiny = dir.join("tiny.log");
    let sample = repo().join("pipelines/sample/mail.log");
    std::fs::write(
        &tiny,
        std::fs::read_to_string(&sample)
            .unwrap()
            .lines()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let config = dir.join("config.yaml");
    let write_config_with = |postfix_log: &Path, extra: &str| {
        std::fs::write(
            &config,
            format!(
                "paths:\n  models_dir: {d}/models\n  logs_dir: {d}/logs\n  metrics: {d}/metrics.csv\n  postfix_log: {}\n  roundcube_log: {d}/missing.log\n{extra}",
                postfix_log.display(),
                d = dir.display()
            ),
        )
        .unwrap();
    };
    let write_config = |postfix_log: &Path| write_config_with(postfix_log, "");
    write_config(&sample);
    let (ok, stderr) = retrain(&dir, &["2000", "--config", config.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("cannot read") && stderr.contains("missing.log"),
        "{stderr}"
    );
    let current = std::fs::read_to_string(dir.join("models/CURRENT")).unwrap();
    // 2000 lines, of which every tenth feature record is held back.
    assert!(
        stderr.contains("1800 rows of 1800 kept"),
        "MAX_LINES not applied: {stderr}"
    );
    assert!(stderr.contains("validation: accepted"), "{stderr}");
    let log = std::fs::read_to_string(dir.join("logs/retraining.log")).unwrap();
    assert!(log.contains("retrain.sh: done"), "{log}");
    assert!(
        log.lines().all(|l| l.len() > 21 && l.as_bytes()[4] == b'-'),
        "lines start with a timestamp: {log}"
    );

    // Too little data: non-zero, the model stays, the log says why.
    write_config(&tiny);
    let (ok, stderr) = retrain(&dir, &["--config", config.to_str().unwrap()]);
    assert!(!ok, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.join("models/CURRENT")).unwrap(),
        current
    );
    let log = std::fs::read_to_string(dir.join("logs/retraining.log")).unwrap();
    assert!(
        log.contains("too little data") && log.contains("FAILED"),
        "{log}"
    );

    // A model far more eager than the current one is rejected and kept aside.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    write_config_with(
        &sample,
        // (raw score cut-offs, so the contamination sets how eager it is)
        "retrain:\n  detector: forest\n  contamination: 0.2\n  validation:\n    max_rate: 0.1\n\
         anomaly:\n  threshold:\n    high: -0.1\n    medium: -0.05\n    low: 0\n",
    );
    let (ok, stderr) = retrain(&dir, &["--config", config.to_str().unwrap()]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("validation: rejected") && stderr.contains("max_rate"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("models/CURRENT")).unwrap(),
        current
    );
    let rejected = std::fs::read_dir(dir.join("models"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("rejected-")
        })
        .count();
    assert_eq!(
        rejected, 1,
        "the rejected model is kept as rejected-<version>.json"
    );

    // A second good model is validated against the current one and taken.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    write_config(&sample);
    let (ok, stderr) = retrain(&dir, &["--config", config.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("validation: accepted") && stderr.contains("; current "),
        "{stderr}"
    );
    assert_ne!(
        std::fs::read_to_string(dir.join("models/CURRENT")).unwrap(),
        current
    );

    // No readable log at all.
    write_config(&dir.join("nope.log"));
    let (ok, stderr) = retrain(&dir, &["--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("none of the logs is readable"), "{stderr}");
}
