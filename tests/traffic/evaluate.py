#!/usr/bin/env python3
"""Scores of the simulated traffic against its labels: the detection benchmark's table.

    evaluate.py split  --labels labels.csv --train-days N FEATURES.jsonl TRAIN.jsonl TEST.jsonl
    evaluate.py report --labels labels.csv --train-days N [--check] [--markdown] NAME=SCORED.jsonl[,SCORED2.jsonl...]...
    evaluate.py incidents --labels labels.csv --train-days N [--markdown] INCIDENTS.jsonl

`split` sends the feature records of the first N days (by the simulator's
day label) to TRAIN and the rest to TEST. `report` reads pf-score's output
(its `rarity` where present, the verdict, else its `score`)
for the test days of one or more feature sets and prints, per attack
scenario: the lines and episodes, and per set the ROC-AUC of the scenario's
lines against the normal lines, and the share of episodes with at least
one line alerted at a false-alarm rate of 0.5% of the normal lines (the
threshold is the score below which 0.5% of normal lines fall). Several
files for one set (models trained with different seeds) are averaged. With
--check it exits 1 unless the last set meets the targets: every loud
scenario AUC >= 0.95 and >= 90% of episodes alerted, slow spraying
AUC >= 0.8 (--min-auc, --min-alerted and --min-slow-auc change them). Records are matched to labels by `source.line`.

`incidents` reads pf-sink's incidents.jsonl for the test days and prints,
per scenario, how many incidents its lines opened (an incident belongs to
the line that opened it), the episodes, the incidents per episode and the
share of episodes that opened at least one; the share that opened one or
caused a `member` event, or either or a `resumed` event (its line resumed
an incident kept open since an earlier burst or episode of the same key);
and the incidents opened by normal lines per test day (false alarms an
admin is told about). Standard library only.
"""
import argparse
import csv
import json
import math
import sys

FALSE_ALARM_RATE = 0.005
SLOW = {"password_spraying"}
LOUD_AUC, LOUD_ALERTED, SLOW_AUC = 0.95, 0.90, 0.80


def read_labels(path):
    labels = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            labels[int(row["line"])] = (row["scenario"], row["episode"], int(row["day"]))
    return labels


def line_of(record):
    source = record.get("source") or {}
    line = source.get("line")
    return line if isinstance(line, int) else None


def split(args):
    labels = read_labels(args.labels)
    unlabelled = 0
    with open(args.features) as src, open(args.train, "w") as train, open(args.test, "w") as test:
        for text in src:
            label = labels.get(line_of(json.loads(text)))
            if label is None:
                unlabelled += 1
                continue
            (train if label[2] < args.train_days else test).write(text)
    if unlabelled:
        sys.exit(f"evaluate.py: {unlabelled} records had no label (source.line missing or unknown)")


def auc(positives, negatives):
    """P(a positive scores lower, i.e. more anomalous, than a negative); ties count half."""
    if not positives or not negatives:
        return float("nan")
    pooled = sorted([(s, 1) for s in positives] + [(s, 0) for s in negatives])
    rank_sum, i = 0.0, 0
    while i < len(pooled):
        j = i
        while j < len(pooled) and pooled[j][0] == pooled[i][0]:
            j += 1
        mean_rank = (i + 1 + j) / 2.0  # ranks i+1 .. j, ascending score
        rank_sum += mean_rank * sum(1 for k in range(i, j) if pooled[k][1])
        i = j
    n_pos, n_neg = len(positives), len(negatives)
    # Rank-sum of positives counts how many negatives score below each one.
    below = rank_sum - n_pos * (n_pos + 1) / 2.0
    return 1.0 - below / (n_pos * n_neg)


def read_scores(path, labels):
    by_line, errors = {}, 0
    with open(path) as f:
        for text in f:
            record = json.loads(text)
            detection = record.get("detection") or {}
            score = detection.get("score")
            line = line_of(record)
            rarity = detection.get("rarity")
            if isinstance(rarity, (int, float)) and isinstance(score, (int, float)):
                # The detector's verdict is the rarity (the score orders ties).
                score = -math.log10(max(rarity, 1.0)) + score * 1e-13
            if not isinstance(score, (int, float)):
                errors += 1
                score = math.inf
            by_line[line] = score
    return by_line, errors


def evaluate(by_line, labels, train_days):
    normal, lines, episodes = [], {}, {}
    for line, score in by_line.items():
        scenario, episode, day = labels[line]
        if day < train_days:
            continue
        if scenario == "normal":
            normal.append(score)
        else:
            lines.setdefault(scenario, []).append(score)
            episodes.setdefault(scenario, {}).setdefault(episode, []).append(score)
    normal.sort()
    k = int(FALSE_ALARM_RATE * len(normal))
    threshold = normal[k] if normal else -math.inf
    false_alarms = sum(1 for s in normal if s < threshold)
    result = {}
    for scenario, scores in lines.items():
        eps = episodes[scenario]
        alerted = sum(1 for s in eps.values() if min(s) < threshold)
        result[scenario] = {
            "lines": len(scores),
            "episodes": len(eps),
            "auc": auc(scores, normal),
            "alerted": alerted / len(eps),
        }
    return result, {"normal": len(normal), "threshold": threshold, "false_alarms": false_alarms}


def print_table(header, rows, markdown):
    """Rows of strings under a header, as Markdown or as aligned columns."""
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
        for row in [header] + rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def report(args):
    labels = read_labels(args.labels)
    sets = []
    for spec in args.scored:
        name, _, paths = spec.partition("=")
        runs = []
        for path in paths.split(","):
            by_line, errors = read_scores(path, labels)
            runs.append((*evaluate(by_line, labels, args.train_days), errors))
        result = {}
        for scenario in runs[0][0]:
            per_run = [r[0][scenario] for r in runs]
            result[scenario] = dict(per_run[0])
            for key in ("auc", "alerted"):
                result[scenario][key] = sum(v[key] for v in per_run) / len(per_run)
        sets.append((name, result, runs[0][1], runs[0][2]))
        if len(runs) > 1:
            print(f"{name}: mean of {len(runs)} models", file=sys.stderr)
    scenarios = sorted({s for _, r, _, _ in sets for s in r})
    header = ["scenario", "lines", "episodes"]
    for name, *_ in sets:
        header += [f"AUC {name}", f"alerted {name}"]
    rows = []
    for s in scenarios:
        first = next(r[s] for _, r, _, _ in sets if s in r)
        row = [s + (" (slow)" if s in SLOW else ""), str(first["lines"]), str(first["episodes"])]
        for _, r, _, _ in sets:
            v = r.get(s)
            row += [f"{v['auc']:.3f}", f"{100 * v['alerted']:.0f}%"] if v else ["-", "-"]
        rows.append(row)
    print_table(header, rows, args.markdown)
    for name, _, meta, errors in sets:
        print(f"{name}: {meta['normal']} normal test lines, alert threshold score < "
              f"{meta['threshold']:.4f} ({meta['false_alarms']} false alarms), "
              f"{errors} records not scored", file=sys.stderr)
    if args.check:
        name, result, _, _ = sets[-1]
        missed = []
        for s, v in sorted(result.items()):
            if s in SLOW:
                if not v["auc"] >= args.min_slow_auc:
                    missed.append(f"{s}: AUC {v['auc']:.3f} < {args.min_slow_auc}")
            else:
                if not v["auc"] >= args.min_auc:
                    missed.append(f"{s}: AUC {v['auc']:.3f} < {args.min_auc}")
                if not v["alerted"] >= args.min_alerted:
                    missed.append(f"{s}: {100 * v['alerted']:.0f}% of episodes alerted < "
                                  f"{100 * args.min_alerted:.0f}%")
        if missed:
            print(f"targets missed by `{name}`:\n  " + "\n  ".join(missed), file=sys.stderr)
            sys.exit(1)
        print(f"all targets met by `{name}`", file=sys.stderr)


def incidents(args):
    labels = read_labels(args.labels)
    test_days = {day for _, _, day in labels.values() if day >= args.train_days}
    episodes = {}
    for scenario, episode, day in labels.values():
        if day >= args.train_days and scenario != "normal":
            episodes.setdefault(scenario, set()).add(episode)
    opened, members, resumed = {}, {}, {}
    unmatched = 0
    with open(args.incidents) as f:
        for text in f:
            event = json.loads(text)
            if event.get("event") not in ("opened", "member", "resumed"):
                continue
            spans = list((event.get("records") or {}).values())
            # A resumed incident's latest line is the one that resumed it.
            at = 1 if event["event"] == "resumed" else 0
            label = labels.get(spans[0][at]) if spans else None
            if label is None:
                unmatched += 1
                continue
            scenario, episode, day = label
            if day >= args.train_days:
                into = {"opened": opened, "member": members, "resumed": resumed}[event["event"]]
                into.setdefault(scenario, []).append(episode)
    rows = []
    for scenario in sorted(episodes):
        mine = opened.get(scenario, [])
        eps = episodes[scenario]
        hit = len(set(mine) & eps)
        reported = len((set(mine) | set(members.get(scenario, []))) & eps)
        resumes = set(resumed.get(scenario, []))
        told = len((set(mine) | set(members.get(scenario, [])) | resumes) & eps)
        rows.append([scenario + (" (slow)" if scenario in SLOW else ""), str(len(mine)), str(len(eps)),
                     f"{len(mine) / len(eps):.1f}", f"{100 * hit / len(eps):.0f}%",
                     str(len(members.get(scenario, []))), f"{100 * reported / len(eps):.0f}%",
                     f"{100 * told / len(eps):.0f}%"])
    normal = len(opened.get("normal", []))
    print_table(["scenario", "incidents", "episodes", "incidents per episode", "episodes with an incident",
                 "member events", "episodes opening or a member", "... or resuming one"],
                rows, args.markdown)
    print(f"normal traffic: {normal} incidents in {len(test_days)} test days "
          f"({normal / max(len(test_days), 1):.1f} a day)")
    if unmatched:
        print(f"evaluate.py: {unmatched} incidents opened by an unlabelled line", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split")
    s.add_argument("--labels", required=True)
    s.add_argument("--train-days", type=int, required=True)
    s.add_argument("features")
    s.add_argument("train")
    s.add_argument("test")
    r = sub.add_parser("report")
    r.add_argument("--labels", required=True)
    r.add_argument("--train-days", type=int, required=True)
    r.add_argument("--check", action="store_true")
    r.add_argument("--markdown", action="store_true")
    r.add_argument("--min-auc", type=float, default=LOUD_AUC)
    r.add_argument("--min-alerted", type=float, default=LOUD_ALERTED)
    r.add_argument("--min-slow-auc", type=float, default=SLOW_AUC)
    r.add_argument("scored", nargs="+", help="NAME=pf-score output")
    i = sub.add_parser("incidents")
    i.add_argument("--labels", required=True)
    i.add_argument("--train-days", type=int, required=True)
    i.add_argument("--markdown", action="store_true")
    i.add_argument("incidents", help="pf-sink's incidents.jsonl")
    args = p.parse_args()
    {"split": split, "report": report, "incidents": incidents}[args.command](args)


if __name__ == "__main__":
    main()
