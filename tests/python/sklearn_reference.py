#!/usr/bin/env python3
"""Write a scikit-learn IsolationForest reference case for the Rust tests.

Generates a small synthetic data set, fits a StandardScaler and an
IsolationForest on the scaled data (as the old Python system did), and writes
into --out-dir:

  model.pkl, scaler.pkl  the fitted objects (joblib.dump)
  rows.ndjson            one evaluation row per line, raw (unscaled) values:
                         {"features": {"f0": ..., ..., "f5": ...}}
  expected.ndjson        per evaluation row, in the same order:
                         {"decision": ..., "score_samples": ..., "predict": 1|-1,
                          "shap": [one value per feature], "shap_expected": ...}
                         decision / score_samples / predict are sklearn's on the
                         scaled row; shap is shap.TreeExplainer(model).shap_values
                         on the scaled row as the forest sees it (cast to
                         float32, as sklearn does), shap_expected its
                         expected_value
  meta.json              seed, versions, feature names and which evaluation
                         rows belong to which group (train, new, outlier, edge)

Evaluation rows: the training rows, then new rows from the same distribution,
then far outliers, then "edge" rows whose scaled value lies within a few ulps
of a split threshold (there sklearn, which compares float32(x) <= threshold,
and shap, which compares the float64 x, may take different branches).

Needs numpy, scikit-learn, shap, joblib (and pandas, which shap requires).

  tests/python/sklearn_reference.py --out-dir /tmp/ref --seed 0
"""

import argparse
import json
import os
import sys

import joblib
import numpy as np
import shap
import sklearn
from sklearn.ensemble import IsolationForest
from sklearn.preprocessing import StandardScaler

try:
    import pandas as pd
except ImportError:  # shap needs pandas, but do not depend on it here
    pd = None

N_FEATURES = 6
NAMES = ["f%d" % i for i in range(N_FEATURES)]


def make_normal_rows(rng, n):
    """Rows from the 'normal' distribution.

    f0, f1: two correlated Gaussian clusters; f2: integer-valued (hour-like,
    0..23); f3: almost constant (0, rarely 1 or 3); f4: skewed positive
    (message-length-like); f5: uniform.
    """
    cluster = rng.random(n) < 0.7
    f0 = np.where(cluster, rng.normal(0.0, 1.0, n), rng.normal(6.0, 0.5, n))
    f1 = np.where(cluster, 0.5 * f0 + rng.normal(0.0, 0.3, n), rng.normal(-3.0, 0.8, n))
    f2 = np.clip(np.round(rng.normal(12.0, 3.5, n)), 0, 23)
    u = rng.random(n)
    f3 = np.where(u < 0.97, 0.0, np.where(u < 0.99, 1.0, 3.0))
    f4 = np.round(rng.lognormal(4.0, 0.4, n))
    f5 = rng.uniform(-1.0, 1.0, n)
    return np.column_stack([f0, f1, f2, f3, f4, f5])


def make_outliers(rng, n):
    """Rows far from the training data (some wildly so)."""
    rows = make_normal_rows(rng, n)
    for i in range(n):
        k = rng.integers(1, 4)  # perturb 1-3 columns
        cols = rng.choice(N_FEATURES, size=k, replace=False)
        for c in cols:
            kind = rng.integers(0, 4)
            if kind == 0:
                rows[i, c] = rng.choice([-1.0, 1.0]) * rng.uniform(20.0, 60.0)
            elif kind == 1:
                rows[i, c] = rng.choice([-1e6, 1e6, -1e12, 1e12])
            elif kind == 2:
                rows[i, c] = float(rng.integers(4, 50))  # unseen small integer
            else:
                rows[i, c] = rng.uniform(1000.0, 5000.0)
    return rows


def scale(scaler, rows):
    if pd is not None:
        return scaler.transform(pd.DataFrame(rows, columns=NAMES))
    return scaler.transform(rows)


def make_edge_rows(rng, model, scaler, base_rows, n):
    """Rows whose scaled value sits on a split threshold of some tree's root
    or one of its children, preferring values where float32 rounding flips
    the branch."""
    rows = []
    mean = scaler.mean_
    sd = scaler.scale_
    for t in range(min(n, len(model.estimators_))):
        tree = model.estimators_[t].tree_
        feats = model.estimators_features_[t]
        node = int(rng.integers(0, 3))
        if tree.children_left[node] == -1:
            node = 0
        if tree.children_left[node] == -1:
            continue
        j = int(feats[tree.feature[node]])
        thr = float(tree.threshold[node])
        row = base_rows[int(rng.integers(0, len(base_rows)))].copy()
        x = thr * sd[j] + mean[j]
        chosen = x
        cand_lo = cand_hi = x
        for _ in range(256):
            for cand in (cand_lo, cand_hi):
                s = (cand - mean[j]) / sd[j]
                if (s <= thr) != (float(np.float32(s)) <= thr):
                    chosen = cand
                    break
            else:
                cand_lo = np.nextafter(cand_lo, -np.inf)
                cand_hi = np.nextafter(cand_hi, np.inf)
                continue
            break
        row[j] = chosen
        rows.append(row)
    return np.array(rows).reshape(-1, N_FEATURES)


def average_path_length(n):
    if n <= 1:
        return 0.0
    if n == 2:
        return 1.0
    return 2.0 * (np.log(n - 1.0) + np.euler_gamma) - 2.0 * (n - 1.0) / n


def main():
    ap = argparse.ArgumentParser(
        description="Write a scikit-learn IsolationForest + shap reference case.",
        epilog="example: tests/python/sklearn_reference.py --out-dir /tmp/ref --seed 0",
    )
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-new", type=int, default=450)
    ap.add_argument("--n-outliers", type=int, default=30)
    ap.add_argument("--n-edge", type=int, default=20)
    ap.add_argument("--n-estimators", type=int, default=100)
    ap.add_argument("--contamination", default="0.001", help="a fraction or 'auto'")
    args = ap.parse_args()

    contamination = args.contamination if args.contamination == "auto" else float(args.contamination)
    rng = np.random.default_rng(args.seed)
    train = make_normal_rows(rng, args.n_train)
    # a few genuine anomalies inside the training data
    n_bad = max(1, args.n_train // 400)
    train[:n_bad] = make_outliers(rng, n_bad)
    train = train[rng.permutation(len(train))]

    scaler = StandardScaler()
    if pd is not None:
        train_scaled = scaler.fit_transform(pd.DataFrame(train, columns=NAMES))
    else:
        train_scaled = scaler.fit_transform(train)
    model = IsolationForest(
        n_estimators=args.n_estimators, contamination=contamination, random_state=args.seed
    )
    model.fit(train_scaled)

    new = make_normal_rows(rng, args.n_new)
    outliers = make_outliers(rng, args.n_outliers)
    edge = make_edge_rows(rng, model, scaler, new, args.n_edge)
    rows = np.vstack([train, new, outliers, edge])
    scaled = np.asarray(scale(scaler, rows), dtype=np.float64)

    decision = model.decision_function(scaled)
    score = model.score_samples(scaled)
    predict = model.predict(scaled)
    explainer = shap.TreeExplainer(model)
    # The forest sees float32(x) (sklearn casts); shap would compare the
    # float64 value and could take another branch next to a threshold. Give
    # shap the values the forest really sees, so explanations and scores
    # describe the same leaves.
    seen = scaled.astype(np.float32).astype(np.float64)
    phi = np.asarray(explainer.shap_values(seen), dtype=np.float64)
    expected = float(np.asarray(explainer.expected_value).reshape(-1)[0])
    for arr, what in ((decision, "decision"), (score, "score_samples"), (phi, "shap")):
        if not np.all(np.isfinite(arr)):
            sys.exit("sklearn_reference.py: non-finite %s values" % what)

    os.makedirs(args.out_dir, exist_ok=True)
    joblib.dump(model, os.path.join(args.out_dir, "model.pkl"))
    joblib.dump(scaler, os.path.join(args.out_dir, "scaler.pkl"))
    with open(os.path.join(args.out_dir, "rows.ndjson"), "w") as f:
        for r in rows:
            f.write(json.dumps({"features": {n: float(v) for n, v in zip(NAMES, r)}},
                               allow_nan=False) + "\n")
    with open(os.path.join(args.out_dir, "expected.ndjson"), "w") as f:
        for i in range(len(rows)):
            f.write(json.dumps({
                "decision": float(decision[i]),
                "score_samples": float(score[i]),
                "predict": int(predict[i]),
                "shap": [float(v) for v in phi[i]],
                "shap_expected": expected,
            }, allow_nan=False) + "\n")

    groups = []
    start = 0
    for name, part in (("train", train), ("new", new), ("outlier", outliers), ("edge", edge)):
        groups.append({"name": name, "start": start, "end": start + len(part)})
        start += len(part)
    # shap explains the forest's mean path length; sklearn's score is
    # -2^(-mean_path / c(max_samples)), so the two should agree off the edge rows
    c_psi = average_path_length(model.max_samples_)
    mean_path = -np.log2(-score) * c_psi
    additivity = np.abs(phi.sum(axis=1) + expected - mean_path)
    n_plain = len(rows) - len(edge)
    meta = {
        "seed": args.seed,
        "features": NAMES,
        "n_estimators": args.n_estimators,
        "contamination": contamination,
        "max_samples": int(model.max_samples_),
        "offset": float(model.offset_),
        "groups": groups,
        "versions": {"sklearn": sklearn.__version__, "shap": shap.__version__,
                     "numpy": np.__version__, "joblib": joblib.__version__},
        "max_additivity_error": float(additivity[:n_plain].max()),
        "max_additivity_error_edge": float(additivity[n_plain:].max()) if len(edge) else 0.0,
    }
    with open(os.path.join(args.out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2, allow_nan=False)
        f.write("\n")

    flagged = {g["name"]: int((predict[g["start"]:g["end"]] == -1).sum()) for g in groups}
    print("sklearn_reference.py: seed %d: %d rows (%s), %d trees, max_samples %d, offset %.6f, "
          "anomalies %s, shap additivity max error %.2e (edge rows %.2e), sklearn %s shap %s -> %s"
          % (args.seed, len(rows), ", ".join("%d %s" % (g["end"] - g["start"], g["name"]) for g in groups),
             args.n_estimators, model.max_samples_, model.offset_,
             ", ".join("%s %d" % kv for kv in flagged.items()), meta["max_additivity_error"],
             meta["max_additivity_error_edge"], sklearn.__version__, shap.__version__, args.out_dir))


if __name__ == "__main__":
    main()
