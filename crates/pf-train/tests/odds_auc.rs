//! Our trainer is as good as scikit-learn's: mean ROC-AUC over 10 seeds on
//! the six Isolation Forest paper datasets in ../shared/datasets, trained
//! through the real pf-train binary straight from the CSV files
//! (`--csv --exclude label`), must be within 0.01 of scikit-learn
//! 1.9.1's (figures printed by tests/python/odds_sklearn_auc.py).

use pf_model::{Encoder, Model, Scorer};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// (dataset, scikit-learn 1.9.1 mean ROC-AUC over seeds 0..9)
const SKLEARN: [(&str, f64); 6] = [
    ("shuttle", 0.997),
    ("breastw", 0.987),
    ("pima", 0.669),
    ("satellite", 0.706),
    ("ionosphere", 0.853),
    ("arrhythmia", 0.809),
];
const SEEDS: u64 = 10;

fn odds_dir() -> PathBuf {
    std::env::var("PF_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
        .join("datasets/iforest-paper/odds")
}

/// The CSV's path, its rows as feature objects and its labels (last
/// column `label`).
fn load(name: &str) -> (PathBuf, Vec<Map<String, Value>>, Vec<bool>) {
    let path = odds_dir().join(format!("{name}.csv"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set PF_SHARED_DIR)", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    assert_eq!(header.last(), Some(&"label"));
    let (mut rows, mut labels) = (Vec::new(), Vec::new());
    for line in lines.filter(|l| !l.is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        let mut features = Map::new();
        for (name, cell) in header.iter().zip(&cells).take(header.len() - 1) {
            let v: f64 = cell.parse().expect("numeric cell");
            features.insert(name.to_string(), Value::from(v));
        }
        labels.push(cells.last().map(|c| c.trim()) == Some("1"));
        rows.push(features);
    }
    (path, rows, labels)
}

/// ROC-AUC of `score` (higher = more anomalous), ties counted as half.
fn roc_auc(score: &[f64], positive: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    let mut rank = vec![0.0; score.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && score[order[j + 1]] == score[order[i]] {
            j += 1;
        }
        for k in i..=j {
            rank[order[k]] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    let n_pos = positive.iter().filter(|&&p| p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    let rank_sum: f64 = rank
        .iter()
        .zip(positive)
        .filter(|(_, &p)| p)
        .map(|(r, _)| r)
        .sum();
    (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

/// Trains on the CSV file itself (`--csv --exclude label`).
fn train(csv: &std::path::Path, seed: u64, out: &PathBuf) {
    let result = Command::new(env!("CARGO_BIN_EXE_pf-train"))
        .args(["--csv", "--exclude", "label", "--contamination", "auto"])
        .args(["--detector", "forest", "--calibration-folds", "0"])
        .args(["--max-lines", "all", "--min-rows", "1", "--metrics", "-"])
        .args(["--seed", &seed.to_string(), "--out"])
        .arg(out)
        .arg(csv)
        .env_remove("PF_CONFIG")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .expect("pf-train starts");
    assert!(
        result.status.success(),
        "pf-train failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
}

#[test]
fn mean_roc_auc_matches_scikit_learn_on_the_paper_datasets() {
    let dir = std::env::temp_dir().join(format!("pf-odds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model_path = dir.join("model.json");
    println!(
        "{:<11} {:>6} {:>4} {:>9} {:>9} {:>7}",
        "dataset", "rows", "d", "pf-train", "sklearn", "diff"
    );
    let mut failures = Vec::new();
    for (name, reference) in SKLEARN {
        let (csv, rows, labels) = load(name);
        let mut total = 0.0;
        for seed in 0..SEEDS {
            train(&csv, seed, &model_path);
            let model = Model::load(&model_path).expect("pf-train wrote a valid model");
            let d = model.features.len();
            let encoder = Encoder::new(&model);
            let scorer = Scorer::new(model.forest.as_ref().expect("a forest model"), d).unwrap();
            let mut table = vec![0f32; rows.len() * d];
            for (row, features) in table.chunks_exact_mut(d).zip(&rows) {
                encoder
                    .encode(features, row, &mut Vec::new())
                    .expect("numeric row");
            }
            let mut scores = vec![0.0; rows.len()];
            scorer.score_samples(&table, &mut scores);
            let anomalous: Vec<f64> = scores.iter().map(|s| -s).collect();
            total += roc_auc(&anomalous, &labels);
        }
        let mean = total / SEEDS as f64;
        let diff = mean - reference;
        println!(
            "{name:<11} {:>6} {:>4} {mean:>9.3} {reference:>9.3} {diff:>+7.3}",
            rows.len(),
            rows[0].len()
        );
        if diff.abs() > 0.01 {
            failures.push(format!("{name}: {mean:.3} vs {reference:.3}"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "mean AUC off by more than 0.01: {failures:?}"
    );
}

#[test]
fn roc_auc_counts_ties_as_half() {
    assert_eq!(roc_auc(&[0.1, 0.9], &[false, true]), 1.0);
    assert_eq!(roc_auc(&[0.9, 0.1], &[false, true]), 0.0);
    assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), 0.5);
}
