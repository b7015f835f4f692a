//! pf-models: list, rollback, prune and check on a real models directory.

use pf_testkit::{run, temp_dir};
use std::path::{Path, PathBuf};

const BIN: &str = env!("CARGO_BIN_EXE_pf-models");

/// A models dir with three versions of the shipped default model.
fn models(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let current = std::fs::read_to_string(repo.join("CURRENT")).unwrap();
    let text = std::fs::read_to_string(repo.join(current.trim())).unwrap();
    let mut model: serde_json::Value = serde_json::from_str(&text).unwrap();
    std::fs::create_dir_all(dir.join("models")).unwrap();
    for version in ["20260101T020000Z", "20260108T020000Z", "20260115T020000Z"] {
        model["version"] = version.into();
        std::fs::write(
            dir.join(format!("models/model-{version}.json")),
            model.to_string(),
        )
        .unwrap();
    }
    std::fs::write(dir.join("models/CURRENT"), "model-20260115T020000Z.json\n").unwrap();
    dir
}

fn current(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("models/CURRENT"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn list_marks_the_current_version() {
    let dir = models("pf-models-list");
    let r = run(BIN, &["list"], b"", &dir);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", r.stdout);
    assert!(lines[3].starts_with("* 20260115T020000Z"), "{}", r.stdout);
    assert!(lines[1].starts_with("  20260101T020000Z"));
}

#[test]
fn rollback_to_previous_and_named_versions() {
    let dir = models("pf-models-rollback");
    let r = run(BIN, &["rollback"], b"", &dir);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(current(&dir), "model-20260108T020000Z.json");
    let r = run(BIN, &["rollback"], b"", &dir);
    assert_eq!(r.status, 0);
    assert_eq!(current(&dir), "model-20260101T020000Z.json");
    // Nothing older: an error, and nothing changes.
    let r = run(BIN, &["rollback"], b"", &dir);
    assert_eq!(r.status, 2);
    assert!(r.stderr.contains("nothing to roll back to"), "{}", r.stderr);
    assert_eq!(current(&dir), "model-20260101T020000Z.json");
    // By name, forward again.
    let r = run(BIN, &["rollback", "20260115T020000Z"], b"", &dir);
    assert_eq!(r.status, 0);
    assert_eq!(current(&dir), "model-20260115T020000Z.json");
    let r = run(BIN, &["rollback", "19990101T000000Z"], b"", &dir);
    assert_eq!(r.status, 2);
    assert!(
        r.stderr.contains("no version 19990101T000000Z"),
        "{}",
        r.stderr
    );
    // A version that does not load is never made current.
    std::fs::write(dir.join("models/model-20250101T000000Z.json"), "{}").unwrap();
    let r = run(BIN, &["rollback", "20250101T000000Z"], b"", &dir);
    assert_eq!(r.status, 2);
    assert_eq!(current(&dir), "model-20260115T020000Z.json");
}

#[test]
fn prune_keeps_the_newest_and_the_current() {
    let dir = models("pf-models-prune");
    std::fs::write(dir.join("models/CURRENT"), "model-20260101T020000Z.json\n").unwrap();
    let r = run(BIN, &["prune", "--keep", "1"], b"", &dir);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let mut left: Vec<String> = std::fs::read_dir(dir.join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "CURRENT",
            "model-20260101T020000Z.json",
            "model-20260115T020000Z.json"
        ]
    );
    let r = run(BIN, &["prune", "--keep", "0"], b"", &dir);
    assert_eq!(r.status, 2);
}

#[test]
fn check_finds_a_corrupt_model() {
    let dir = models("pf-models-check");
    let r = run(BIN, &["check"], b"", &dir);
    assert_eq!(r.status, 0, "{}", r.stderr);
    std::fs::write(
        dir.join("models/model-20260108T020000Z.json"),
        "{ truncated",
    )
    .unwrap();
    let r = run(BIN, &["check"], b"", &dir);
    assert_eq!(r.status, 1);
    assert!(
        r.stderr.contains("model-20260108T020000Z.json"),
        "{}",
        r.stderr
    );
}
