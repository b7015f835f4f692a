//! pf-train end to end: versioned models, CURRENT, metrics, bad input.

use pf_testkit::{feature_records, run, temp_dir};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pf-train");

fn model_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The model's feature names, in order.
fn feature_names(model: &Value) -> Vec<&str> {
    model["features"]
        .as_array()
        .expect("features array")
        .iter()
        .map(|f| f["name"].as_str().expect("feature name"))
        .collect()
}

#[test]
fn writes_a_versioned_model_makes_it_current_and_appends_metrics() {
    let dir = temp_dir("train-versions");
    let data = feature_records(500);
    for _ in 0..2 {
        let r = run(
            BIN,
            &[
                "--models-dir",
                "models",
                "--metrics",
                "m/metrics.csv",
                "--seed",
                "3",
            ],
            data.as_bytes(),
            &dir,
        );
        assert_eq!(r.status, 0, "{}", r.stderr);
    }
    let files = model_files(&dir.join("models"));
    let models: Vec<&String> = files.iter().filter(|f| f.starts_with("model-")).collect();
    let newest = models
        .iter()
        .find(|m| m.ends_with("-2.json"))
        .copied()
        .unwrap_or(models[1]);
    assert_eq!(models.len(), 2, "both versions kept: {files:?}");
    assert!(
        files.iter().all(|f| !f.ends_with(".tmp")),
        "no temp files left: {files:?}"
    );
    let current = std::fs::read_to_string(dir.join("models/CURRENT")).unwrap();
    assert_eq!(current.trim(), newest.as_str(), "newest is current");

    let model: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("models").join(newest)).unwrap())
            .unwrap();
    assert_eq!(model["format"], "pf-model");
    assert_eq!(
        feature_names(&model),
        ["service_encoded", "hour", "msg_len"],
        "first record's order"
    );
    assert_eq!(model["features"][0]["kind"], "categorical");
    assert_eq!(model["features"][0]["unseen"], 4);
    assert!(
        model["tails"]["columns"].is_array(),
        "the default is the tail model"
    );
    assert!(model["forest"].is_null());
    assert_eq!(model["format_version"], 2);
    assert_eq!(model["training"]["seed"], 3);

    let csv = std::fs::read_to_string(dir.join("m/metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "header + one row per training: {csv}");
    assert!(lines[0].starts_with(
        "timestamp,training_start,contamination,n_estimators,sample_size,unique_services"
    ));
    let row: Vec<&str> = lines[2].split(',').collect();
    assert_eq!(row.len(), 14);
    assert_eq!(row[2], "0.001");
    assert_eq!(row[3], "0", "no trees");
    assert_eq!(row[4], "500");
    assert_eq!(row[5], "4", "unique_services");
}

#[test]
fn same_seed_same_model_and_max_lines_keeps_the_newest() {
    let dir = temp_dir("train-seed");
    let mut data = feature_records(300);
    // 50 newer records with a value never seen before.
    for _ in 0..50 {
        data.push_str("{\"features\":{\"service_encoded\":\"late\",\"hour\":1,\"msg_len\":5}}\n");
    }
    let a = run(
        BIN,
        &["--out", "a.json", "--seed", "9", "--metrics", "-"],
        data.as_bytes(),
        &dir,
    );
    let b = run(
        BIN,
        &["--out", "b.json", "--seed", "9", "--metrics", "-"],
        data.as_bytes(),
        &dir,
    );
    assert_eq!(a.status, 0, "{}", a.stderr);
    assert_eq!(b.status, 0);
    let forest = |f: &str| {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap();
        v["forest"].clone()
    };
    assert_eq!(forest("a.json"), forest("b.json"));

    let r = run(
        BIN,
        &[
            "--out",
            "c.json",
            "--max-lines",
            "50",
            "--min-rows",
            "10",
            "--metrics",
            "-",
        ],
        data.as_bytes(),
        &dir,
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let c: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("c.json")).unwrap()).unwrap();
    assert_eq!(
        c["features"][0]["codes"],
        serde_json::json!({"late": 0}),
        "only the last 50 records"
    );
    assert_eq!(c["training"]["rows_used"], 50);
}

#[test]
fn too_little_data_writes_nothing() {
    let dir = temp_dir("train-little");
    let r = run(
        BIN,
        &["--models-dir", "models", "--metrics", "m.csv"],
        feature_records(20).as_bytes(),
        &dir,
    );
    assert_eq!(r.status, 1);
    assert!(
        r.stderr.contains("too little data: 20 usable rows"),
        "{}",
        r.stderr
    );
    assert!(!dir.join("models").exists() || model_files(&dir.join("models")).is_empty());
    assert!(!dir.join("m.csv").exists());
    let r = run(BIN, &["--models-dir", "models"], b"", &dir);
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("no input records"), "{}", r.stderr);
}

#[test]
fn bad_rows_are_reported_with_line_numbers_and_left_out() {
    let dir = temp_dir("train-bad");
    let mut data = feature_records(200);
    data.push_str("not json\n");
    data.push_str("{\"kind\":\"x\"}\n");
    data.push_str(
        "{\"features\":{\"service_encoded\":\"dovecot\",\"hour\":\"ten\",\"msg_len\":3}}\n",
    );
    data.push_str("{\"features\":{\"service_encoded\":\"dovecot\",\"hour\":null,\"msg_len\":3}}\n");
    data.push_str("{\"features\":{\"service_encoded\":\"dovecot\",\"hour\":1e39,\"msg_len\":3}}\n");
    let r = run(
        BIN,
        &["--out", "m.json", "--metrics", "-"],
        data.as_bytes(),
        &dir,
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    for needle in [
        "stdin line 201: text, not a record",
        "stdin line 202: record has no `features`",
        "stdin line 203: feature `hour`: expected a number",
        "stdin line 204: feature `hour`: is null",
        "stdin line 205: feature `hour`: 1e+39 is not a finite number",
        "5 input line(s) left out of training",
    ] {
        assert!(
            r.stderr.contains(needle),
            "missing {needle:?} in:\n{}",
            r.stderr
        );
    }
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("m.json")).unwrap()).unwrap();
    assert_eq!(m["training"]["rows_used"], 200);
}

#[test]
fn usage_errors_exit_2() {
    let dir = temp_dir("train-usage");
    for args in [
        &["--max-lines", "lots"][..],
        &["--contamination", "0.9"],
        &["--trees", "0"],
    ] {
        let r = run(BIN, args, b"", &dir);
        assert_eq!(r.status, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.starts_with("pf-train: error:"), "{}", r.stderr);
    }
}

#[test]
fn trains_on_a_csv_table_and_reports_bad_rows() {
    let dir = temp_dir("train-csv");
    let mut csv = String::from("size,proto,label\n");
    for i in 0..150 {
        csv.push_str(&format!(
            "{},{},0\n",
            100 + i % 37,
            ["smtp", "esmtp"][i % 2]
        ));
    }
    csv.push_str("12,smtp\n"); // line 152: a cell short
    csv.push_str("nan,smtp,0\n"); // line 153: not a finite number
    std::fs::write(dir.join("t.csv"), csv).unwrap();
    let r = run(
        BIN,
        &[
            "--csv",
            "--exclude",
            "label",
            "--out",
            "m.json",
            "--metrics",
            "-",
            "t.csv",
        ],
        b"",
        &dir,
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("t.csv line 152: 2 cells, but the header has 3"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("t.csv line 153: feature `size`"),
        "{}",
        r.stderr
    );
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("m.json")).unwrap()).unwrap();
    assert_eq!(
        feature_names(&m),
        ["size", "proto"],
        "label excluded, header order kept"
    );
    assert_eq!(m["features"][1]["kind"], "categorical");
    assert_eq!(m["training"]["rows_used"], 150);
}

#[test]
fn hostile_input_is_reported_and_left_out() {
    let dir = temp_dir("train-hostile");
    let good: Vec<String> = feature_records(200).lines().map(str::to_string).collect();
    let extra = vec![(
        "features of the wrong shape",
        br#"{"features":["hour",3]}"#.to_vec(),
    )];
    let r = pf_testkit::assert_survives_hostile_input(
        BIN,
        &["--out", "m.json", "--metrics", "-"],
        &good,
        &extra,
        0,
        &dir,
    );
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("m.json")).unwrap()).unwrap();
    assert_eq!(m["training"]["rows_used"], 200, "{}", r.stderr);
}

/// Training into a models directory that cannot be written (here a
/// read-only mount; permissions alone do not stop root) fails with the
/// directory named and leaves the current model exactly as it was.
#[test]
fn an_unwritable_models_directory_leaves_the_current_model_untouched() {
    let dir = temp_dir("train-readonly");
    let data = feature_records(300);
    let first = run(
        BIN,
        &["--models-dir", "models", "--metrics", "-"],
        data.as_bytes(),
        &dir,
    );
    assert_eq!(first.status, 0, "{}", first.stderr);
    let script = format!(
        "mkdir -p ro copy && mount -t tmpfs tmpfs ro && cp -a models ro/ && \
         mount -o remount,ro ro && {BIN} --models-dir ro/models --metrics -; rc=$?; \
         cp -a ro/models copy/; exit $rc"
    );
    let Some(r) = pf_testkit::run_with_private_mounts(&script, data.as_bytes(), &dir) else {
        return;
    };
    assert_ne!(r.status, 0, "training must fail:\n{}", r.stderr);
    assert!(
        r.stderr.contains("ro/models"),
        "the directory is named:\n{}",
        r.stderr
    );
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
    assert_eq!(
        model_files(&dir.join("copy/models")),
        model_files(&dir.join("models")),
        "no file added or removed"
    );
    for name in model_files(&dir.join("models")) {
        assert_eq!(
            std::fs::read(dir.join("copy/models").join(&name)).unwrap(),
            std::fs::read(dir.join("models").join(&name)).unwrap(),
            "{name} changed"
        );
    }
}
