//! The detection benchmark as a regression test: the simulated mail domain
//! (tests/traffic/simulate.py) with its ten labelled attack scenarios goes
//! through pf-parse, pf-features, pf-train and pf-score, and the
//! behavioural feature set must keep meeting the targets: every loud
//! scenario ROC-AUC >= 0.95 with >= 90% of its episodes alerted at 0.5%
//! false alarms, slow password spraying ROC-AUC >= 0.8 (figures in
//! docs/detection.md). The simulation and the training seeds are fixed, so
//! the result is the same on every run.
//!
//! Uses the other stages' binaries from the same target directory: build
//! them first (`cargo build --release --bins`, as tests/run.sh does).

use std::path::Path;
use std::process::Command;

#[test]
fn behavioural_features_catch_the_simulated_attacks() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_pf-features"))
        .parent()
        .expect("binary directory");
    for stage in ["pf-parse", "pf-train", "pf-score"] {
        assert!(
            bin_dir.join(stage).is_file(),
            "{} is missing: build every binary first (cargo build --release --bins)",
            bin_dir.join(stage).display()
        );
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg("tests/bench-detection.sh")
        .arg("--check")
        .env("PF_BIN", bin_dir)
        .current_dir(&repo)
        .output()
        .expect("bash runs tests/bench-detection.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "targets missed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("backscatter") && stdout.contains("AUC default"));
    assert!(stderr.contains("all targets met by `default`"));
}
