//! `cargo bench -p pf-model`: scoring, explaining and training speed on one
//! core with the shape (100 trees, ψ = 256, 6 features).

use pf_model::rng::Rng;
use pf_model::{fit, Contamination, Explainer, Scorer, TrainParams};
use std::time::Instant;

fn data(n: usize, d: usize, seed: u64) -> Vec<f32> {
    // Log-like columns: small categorical codes, hour, minute, weekday and a
    // heavy-tailed length, plus a little noise so splits are not trivial.
    let mut rng = Rng::new(seed);
    let mut rows = Vec::with_capacity(n * d);
    for _ in 0..n {
        for f in 0..d {
            let v = match f % 6 {
                0 => rng.below(8) as f64,
                1 => rng.below(40) as f64,
                2 => rng.below(24) as f64,
                3 => rng.below(60) as f64,
                4 => rng.below(7) as f64,
                _ => 20.0 + (1.0 / (1.0 - rng.next_f64() * 0.999)).powf(1.5) * 40.0,
            };
            rows.push(v as f32);
        }
    }
    rows
}

fn best_of<F: FnMut()>(runs: usize, mut f: F) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let d = 6;
    let train_rows = data(1_000_000, d, 1);
    let params = TrainParams {
        n_trees: 100,
        max_samples: 256,
        contamination: Contamination::Fraction(0.001),
        seed: 42,
    };
    let mut forest = None;
    let train_secs = best_of(3, || forest = Some(fit(&train_rows, d, &params)));
    let forest = forest.expect("trained");
    println!(
        "train   1,000,000 rows x {d} features, 100 trees, psi 256 (incl. offset over all rows): {train_secs:.3} s"
    );

    stats(&forest);
    let rows = data(2_000_000, d, 2);
    let scorer = Scorer::new(&forest, d).expect("valid forest");
    let mut out = vec![0.0; rows.len() / d];
    let secs = best_of(3, || scorer.decision_function(&rows, &mut out));
    let checksum: f64 = out.iter().sum();
    println!(
        "score   {:>9.0} rows/s  ({} rows in {secs:.3} s; checksum {checksum:.6})",
        out.len() as f64 / secs,
        out.len()
    );

    let mut explainer = Explainer::new(&forest, d);
    let n_explain = 100_000;
    let sample = &rows[..n_explain * d];
    let mut phi = vec![0.0; sample.len()];
    let secs = best_of(3, || explainer.explain_many(sample, &mut phi));
    println!(
        "explain {:>9.0} rows/s  ({n_explain} rows in {secs:.3} s, exact TreeSHAP, every feature, batches; tables {:.1} MiB)",
        n_explain as f64 / secs,
        explainer.table_bytes() as f64 / (1 << 20) as f64
    );
    if let Some((lookups, leaves)) = explainer.lookups_per_row() {
        println!("explain tables: {lookups} lookups per row in a batch, for {leaves} leaves");
    }
    let mut one = vec![0.0; d];
    let n_single = 20_000;
    let secs = best_of(3, || {
        for row in sample.chunks_exact(d).take(n_single) {
            explainer.explain(row, &mut one);
        }
    });
    println!(
        "explain {:>9.0} rows/s  ({n_single} rows in {secs:.3} s, one row at a time)",
        n_single as f64 / secs
    );
    shipped_model();
    let mut slow = Explainer::recursive(&forest, d);
    let n_slow = 1_000;
    let secs = best_of(1, || {
        for row in sample.chunks_exact(d).take(n_slow) {
            slow.explain(row, &mut one);
        }
    });
    println!(
        "explain {:>9.0} rows/s  ({n_slow} rows in {secs:.3} s, textbook recursive TreeSHAP, for comparison)",
        n_slow as f64 / secs
    );
}

/// The explainer of the model the repository ships (models/CURRENT): its
/// tables' memory and lookups, which pf-score's memory and speed follow.
fn shipped_model() {
    let dir = pf_model::ModelsDir::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models"));
    let Ok(model) = dir.current().and_then(|p| pf_model::Model::load(&p)) else {
        println!("shipped model: not found");
        return;
    };
    let d = model.features.len();
    let Some(forest) = &model.forest else {
        println!(
            "shipped model {}: a tail model (no forest tables)",
            model.version
        );
        return;
    };
    let t = Instant::now();
    let explainer = Explainer::new(forest, d);
    let secs = t.elapsed().as_secs_f64();
    let (lookups, leaves) = explainer.lookups_per_row().unwrap_or_default();
    println!(
        "shipped model {} ({d} features, psi {}): tables {:.1} MiB built in {secs:.2} s; \
         {lookups} lookups per row in a batch, for {leaves} leaves",
        model.version,
        forest.max_samples,
        explainer.table_bytes() as f64 / (1 << 20) as f64
    );
}

/// Tree size, which explanation speed depends on.
fn stats(forest: &pf_model::Forest) {
    let nodes: usize = forest.trees.iter().map(|t| t.len()).sum();
    let leaves: usize = forest
        .trees
        .iter()
        .map(|t| (0..t.len()).filter(|&i| t.is_leaf(i)).count())
        .sum();
    println!(
        "forest: {} nodes, {} leaves ({:.1} per tree)",
        nodes,
        leaves,
        leaves as f64 / forest.trees.len() as f64
    );
}
