//! Parity with scikit-learn and shap: a forest fitted by scikit-learn 1.9.1,
//! converted by pipelines/import-sklearn.py, must give the same decision
//! scores and predictions through pf-score, and TreeSHAP values within 1e-9
//! of shap 0.51's TreeExplainer. Also: the old system's shipped 1.2.2
//! pickles (which scikit-learn 1.9 cannot load) convert and score.
//!
//! Needs PF_PYTHON: a python with tests/python/requirements.txt installed
//! (tests/run.sh sets it up with tests/setup-python.sh).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> String {
    std::env::var("PF_PYTHON").unwrap_or_else(|_| {
        panic!(
            "PF_PYTHON is not set: run tests/run.sh, or export PF_PYTHON=$(tests/setup-python.sh)"
        )
    })
}

fn shared_dir() -> PathBuf {
    std::env::var("PF_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("../shared"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .expect("command starts");
    assert!(out.status.success(), "{cmd:?} failed: {}", out.status);
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

fn import(dir: &Path, args: &[&str]) -> PathBuf {
    let out = dir.join("model.json");
    run(Command::new(python())
        .arg(repo().join("pipelines/import-sklearn.py"))
        .args(args)
        .arg("--out")
        .arg(&out));
    out
}

#[test]
fn imported_sklearn_forest_scores_and_explains_like_sklearn_and_shap() {
    let dir = std::env::temp_dir().join(format!("pf-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    run(Command::new(python())
        .arg(repo().join("tests/python/sklearn_reference.py"))
        .arg("--out-dir")
        .arg(&dir));
    let model = import(
        &dir,
        &[
            "--model",
            dir.join("model.pkl").to_str().unwrap(),
            "--scaler",
            dir.join("scaler.pkl").to_str().unwrap(),
            "--features",
            "f0,f1,f2,f3,f4,f5",
        ],
    );
    let scored = lines(&run(Command::new(env!("CARGO_BIN_EXE_pf-score"))
        .arg("--model")
        .arg(&model)
        .arg("--explain-all")
        .arg(dir.join("rows.ndjson"))
        .env_remove("PF_CONFIG")));
    let expected = lines(&std::fs::read_to_string(dir.join("expected.ndjson")).unwrap());
    assert_eq!(scored.len(), expected.len());

    let (mut worst_score, mut worst_shap, mut identical) = (0f64, 0f64, 0usize);
    for (i, (got, want)) in scored.iter().zip(&expected).enumerate() {
        let det = &got["detection"];
        let score = det["score"].as_f64().expect("score");
        let want_score = want["decision"].as_f64().unwrap();
        worst_score = worst_score.max((score - want_score).abs());
        identical += (score == want_score) as usize;
        let predicted = if det["is_anomaly"].as_bool().unwrap() {
            -1
        } else {
            1
        };
        assert_eq!(
            predicted,
            want["predict"].as_i64().unwrap(),
            "row {i}: prediction"
        );
        let contributions = det["contributions"].as_object().expect("contributions");
        for (k, w) in want["shap"].as_array().unwrap().iter().enumerate() {
            let ours = contributions[&format!("f{k}")].as_f64().unwrap();
            worst_shap = worst_shap.max((ours - w.as_f64().unwrap()).abs());
        }
    }
    println!(
        "sklearn parity: {} rows; decision scores identical on {identical}, max |diff| {worst_score:e}; \
         TreeSHAP max |diff| vs shap {worst_shap:e}",
        scored.len()
    );
    assert!(
        worst_score <= 1e-12,
        "decision scores differ by {worst_score}"
    );
    assert!(worst_shap <= 1e-9, "TreeSHAP values differ by {worst_shap}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn old_systems_sklearn_1_2_2_pickles_convert_and_score() {
    let seed = shared_dir().join("seed-models");
    let dir = std::env::temp_dir().join(format!("pf-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = import(
        &dir,
        &[
            "--model",
            seed.join("anomaly_det.pkl").to_str().unwrap(),
            "--scaler",
            seed.join("scaler.pkl").to_str().unwrap(),
            "--features",
            seed.join("selected_features.json").to_str().unwrap(),
            "--old-config",
            seed.join("config.yaml").to_str().unwrap(),
        ],
    );
    let m: Value = serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    assert_eq!(m["forest"]["trees"].as_array().unwrap().len(), 100);
    assert_eq!(m["features"][0]["name"], "service_encoded");
    assert_eq!(m["features"][0]["codes"]["postfix/smtpd"], 0);
    assert_eq!(m["features"][0]["unseen"], 6);

    let records = "{\"features\":{\"service_encoded\":\"postfix/smtpd\",\"event_encoded\":\"connect\",\"hour\":10,\"minute\":5,\"dayofweek\":2,\"msg_len\":60}}\n\
                   {\"features\":{\"service_encoded\":\"postfix/never-seen\",\"event_encoded\":\"x\",\"hour\":3,\"minute\":59,\"dayofweek\":6,\"msg_len\":4000}}\n";
    let mut child = Command::new(env!("CARGO_BIN_EXE_pf-score"))
        .arg("--model")
        .arg(&model)
        .env_remove("PF_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(records.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let scored = lines(std::str::from_utf8(&out.stdout).unwrap());
    assert_eq!(scored.len(), 2);
    for r in &scored {
        assert!(r["detection"]["score"].as_f64().unwrap().is_finite());
    }
    assert_eq!(scored[1]["detection"]["unseen"][0], "service_encoded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("service_encoded 1"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
