#!/usr/bin/env python3
"""ROC-AUC of scikit-learn's IsolationForest on the Isolation Forest paper's
ODDS data sets, as a reference for our own forest.

For each CSV in the directory (header line, feature columns, last column
`label` with 1 = anomaly) and each seed, fits
IsolationForest(n_estimators=100, max_samples=256, random_state=seed) on all
rows' features and takes the ROC-AUC of -score_samples against the label.
Prints one table row per data set with the mean, standard deviation, minimum
and maximum over the seeds, next to the AUC the paper reports.

  tests/python/odds_sklearn_auc.py                       # ../shared/datasets/iforest-paper/odds
  tests/python/odds_sklearn_auc.py --seeds 3 --json out.json DIR

The default directory is $PF_SHARED_DIR/datasets/iforest-paper/odds when
PF_SHARED_DIR is set, else ../shared/datasets/iforest-paper/odds beside the
repository.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import sklearn
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

# Liu, Ting & Zhou (2008), Table 2, iForest AUC
PAPER_AUC = {
    "shuttle": 1.00,
    "breastw": 0.99,
    "pima": 0.67,
    "satellite": 0.71,
    "ionosphere": 0.85,
    "arrhythmia": 0.80,
}


def default_dir():
    shared = os.environ.get("PF_SHARED_DIR")
    if not shared:
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        shared = os.path.join(os.path.dirname(repo), "shared")
    return os.path.join(shared, "datasets", "iforest-paper", "odds")


def load_csv(path):
    with open(path, "r", encoding="utf-8") as f:
        header = f.readline().strip().split(",")
    if header[-1] != "label":
        raise ValueError("%s: last column is %r, expected 'label'" % (path, header[-1]))
    data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    if data.shape[1] != len(header):
        raise ValueError("%s: %d columns in the header but %d in the data" % (path, len(header), data.shape[1]))
    X = data[:, :-1]
    y = data[:, -1].astype(int)
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError("%s: label must be 0 or 1" % path)
    return X, y


def main():
    ap = argparse.ArgumentParser(
        description="ROC-AUC of sklearn IsolationForest on the ODDS CSVs (mean over seeds).",
        epilog="example: tests/python/odds_sklearn_auc.py ../shared/datasets/iforest-paper/odds",
    )
    ap.add_argument("dir", nargs="?", default=None, help="directory of CSVs (default: %(default)s)")
    ap.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10)")
    ap.add_argument("--n-estimators", type=int, default=100)
    ap.add_argument("--max-samples", default="256", help="integer, or 'auto' (= min(256, n))")
    ap.add_argument("--scale", action="store_true", help="StandardScaler the features first")
    ap.add_argument("--json", metavar="FILE", help="also write the per-seed AUCs as JSON")
    args = ap.parse_args()

    directory = args.dir or default_dir()
    if not os.path.isdir(directory):
        sys.exit("odds_sklearn_auc.py: no directory %s (pass one, or set PF_SHARED_DIR)" % directory)
    files = sorted(f for f in os.listdir(directory) if f.endswith(".csv"))
    if not files:
        sys.exit("odds_sklearn_auc.py: no .csv files in %s" % directory)
    max_samples = args.max_samples if args.max_samples == "auto" else int(args.max_samples)

    print("sklearn %s, IsolationForest(n_estimators=%d, max_samples=%s), seeds 0..%d%s, AUC of -score_samples"
          % (sklearn.__version__, args.n_estimators, args.max_samples, args.seeds - 1,
             ", StandardScaler" if args.scale else ""))
    print("%-11s %7s %4s %6s  %7s %7s %7s %7s  %5s  %6s" %
          ("dataset", "n", "d", "anom%", "meanAUC", "std", "min", "max", "paper", "secs"))
    results = {}
    for name in files:
        ds = name[:-4]
        X, y = load_csv(os.path.join(directory, name))
        if args.scale:
            X = StandardScaler().fit_transform(X)
        ms = max_samples if max_samples == "auto" else min(max_samples, len(X))
        t0 = time.time()
        aucs = []
        for seed in range(args.seeds):
            model = IsolationForest(n_estimators=args.n_estimators, max_samples=ms, random_state=seed)
            model.fit(X)
            aucs.append(float(roc_auc_score(y, -model.score_samples(X))))
        secs = time.time() - t0
        a = np.array(aucs)
        paper = PAPER_AUC.get(ds.lower())
        results[ds] = {"n": int(len(X)), "d": int(X.shape[1]), "anomalies": int(y.sum()),
                       "auc": aucs, "mean": float(a.mean()), "std": float(a.std()), "paper": paper}
        print("%-11s %7d %4d %5.1f%%  %7.4f %7.4f %7.4f %7.4f  %5s  %6.1f" %
              (ds, len(X), X.shape[1], 100.0 * y.mean(), a.mean(), a.std(), a.min(), a.max(),
               "%.2f" % paper if paper is not None else "-", secs))
        sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sklearn": sklearn.__version__, "n_estimators": args.n_estimators,
                       "max_samples": args.max_samples, "scale": args.scale, "seeds": args.seeds,
                       "results": results}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
