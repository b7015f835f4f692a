"""Measures the detector's performance and writes docs/performance.md.

Run through tests/perf-report.sh, which builds the tools, runs
`cargo bench -p pf-model`, sets up the Python venv and finds the tansu
broker, then calls `perf_report.py report ...`. Every figure in the
Markdown it writes comes from this run.

Sub-commands:
  report   the whole measurement and the Markdown (see perf-report.sh --help)
  sklearn  internal: times scikit-learn's IsolationForest and shap's
           TreeExplainer on a numeric CSV, run pinned to one core by `report`

How stages are measured: each stage runs alone, pinned to one CPU with
taskset, reading its input from a file (or from a zstd decompressor) and
writing to a zstd compressor, a counter (grep -c) or /dev/null; those
helpers are pinned to the other CPUs. Wall time, CPU time (user + system)
and peak RSS are those of the stage process itself (GNU time, or without it
VmHWM polled from /proc; see find_gnu_time for why not os.wait4). Intermediate
files are zstd-compressed when zstd is installed, and deleted as soon as
the next stage has read them, so 10M lines need a few GB of disk, not tens.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

# About what tests/traffic/simulate.py writes over SIM_DAYS days: a part
# that does not grow with the users (scanners, spam bots, system mail, the
# attacks) and about 210 lines per user and day. Only used to choose --users.
SIM_FIXED_LINES = 234_000
LINES_PER_USER_DAY = 210
SIM_DAYS = 28                # four weeks; copies are shifted by this much
SIM_TRAIN_DAYS = 21          # attacks on the last week of each copy
SIM_MAX_BASE = 1_000_000     # lines simulated at most; more are copies
SBS_PSI = 1024               # the side-by-side forests' ψ: the default forest's (retrain.max_samples)
MONTHS = [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"]


def log(msg):
    print(f"perf-report: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

class Pinning:
    """The CPU the measured stage runs on and the CPUs for helper processes."""

    def __init__(self):
        cpus = sorted(os.sched_getaffinity(0))
        self.taskset = shutil.which("taskset") is not None
        self.stage_cpu = cpus[0]
        self.helper_cpus = cpus[1:]
        self.all_cpus = cpus

    def everywhere(self):
        """For a process that should use every CPU (this one keeps off the measured CPU)."""
        return ["taskset", "-c", ",".join(map(str, self.all_cpus))] if self.taskset else []

    def stage(self):
        return ["taskset", "-c", str(self.stage_cpu)] if self.taskset else []

    def helper(self):
        if self.taskset and self.helper_cpus:
            return ["taskset", "-c", ",".join(map(str, self.helper_cpus))]
        return []

    def describe(self):
        if not self.taskset:
            return "not pinned (taskset not found)"
        text = f"each measured process pinned to one CPU with `taskset -c {self.stage_cpu}`"
        if self.helper_cpus:
            cpus = ",".join(map(str, self.helper_cpus))
            text += f"; helpers feeding or draining it (zstd, grep) with `taskset -c {cpus}`"
        return text


PIN = None       # set in main
ZSTD = shutil.which("zstd") is not None


def find_gnu_time():
    """GNU time's path, or None. Peak RSS must come from a small parent: a
    child forked by this (large) Python process reports the parent's peak as
    its own ru_maxrss (Linux carries the old address space's high-water mark
    over exec), so os.wait4 alone would overstate small stages."""
    for path in ("/usr/bin/time", shutil.which("gtime")):
        if path and os.access(path, os.X_OK):
            try:
                r = subprocess.run([path, "--version"], capture_output=True, text=True)
            except OSError:
                continue
            if "GNU" in r.stdout + r.stderr:
                return path
    return None


GNU_TIME = find_gnu_time()


def rss_method():
    if GNU_TIME:
        return f"measured by GNU time (`{GNU_TIME} -f %M`)"
    return "GNU time not found: the peak of VmHWM in /proc/PID/status, read every 10 ms (may miss a last-moment peak)"


def poll_hwm(pid):
    """Polls a running child's VmHWM (KiB) until it has exited (a zombie,
    not yet waited for, has no VmHWM line); returns the largest value read."""
    hwm = 0
    while True:
        try:
            with open(f"/proc/{pid}/status") as f:
                m = re.search(r"^VmHWM:\s*(\d+)", f.read(), re.M)
        except OSError:
            return hwm
        if not m:
            return hwm
        hwm = max(hwm, int(m.group(1)))
        time.sleep(0.01)


def compressed(path):
    return path + ".zst" if ZSTD else path


def measure(cmd, src=None, dst=None, count=None, cwd=None, env=None, pinned=True):
    """Runs cmd (a measured stage) with stdin from src (a file, .zst files
    through a decompressor; None: empty) and stdout to dst (a file, .zst
    through a compressor; None: /dev/null), or to `grep -c count`.
    Returns wall s, cpu s, peak RSS KiB, stderr text, and the grep count."""
    # What earlier stages wrote goes to disk now, not during this one.
    os.sync()
    helpers = []
    to_close = []
    if src is None:
        stdin = subprocess.DEVNULL
    elif src.endswith(".zst"):
        dec = subprocess.Popen(PIN.helper() + ["zstd", "-dcq", src], stdout=subprocess.PIPE)
        helpers.append(dec)
        stdin = dec.stdout
        to_close.append(dec.stdout)
    else:
        stdin = open(src, "rb")
        to_close.append(stdin)
    counter = None
    if count is not None:
        counter = subprocess.Popen(PIN.helper() + ["grep", "-c", "-F", count],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        stdout = counter.stdin
        to_close.append(counter.stdin)
    elif dst is None:
        stdout = subprocess.DEVNULL
    elif dst.endswith(".zst"):
        comp = subprocess.Popen(PIN.helper() + ["zstd", "-q", "-f", "-1", "-o", dst], stdin=subprocess.PIPE)
        helpers.append(comp)
        stdout = comp.stdin
        to_close.append(comp.stdin)
    else:
        stdout = open(dst, "wb")
        to_close.append(stdout)
    err = tempfile.TemporaryFile()
    timing = tempfile.NamedTemporaryFile(mode="r", suffix=".time")
    full = (PIN.stage() if pinned else []) + cmd
    if GNU_TIME:
        full = [GNU_TIME, "-f", "%U %S %M", "-o", timing.name] + full
    start = time.perf_counter()
    proc = subprocess.Popen(full, stdin=stdin, stdout=stdout, stderr=err, cwd=cwd, env=env)
    for f in to_close:
        f.close()
    hwm = None if GNU_TIME else poll_hwm(proc.pid)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if GNU_TIME:
        user, system, rss = timing.read().split("\n")[-2].split()   # last line; a failure adds one before
        user, system, rss = float(user), float(system), int(rss)
    else:
        user, system, rss = usage.ru_utime, usage.ru_stime, hwm
    cpu = user + system
    timing.close()
    n_counted = None
    if counter is not None:
        n_counted = int(counter.stdout.read().decode().strip() or 0)
        counter.stdout.close()
        counter.wait()
    for h in helpers:
        h.wait()
    err.seek(0)
    stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"perf-report: {' '.join(cmd)} failed with status {proc.returncode}:\n{stderr[-3000:]}")
    for h in helpers:
        if h.returncode != 0:
            sys.exit(f"perf-report: helper {' '.join(h.args)} failed with status {h.returncode}")
    return {"wall_s": wall, "cpu_s": cpu, "sys_s": system, "rss_kb": rss, "stderr": stderr, "count": n_counted}


def run_capture(cmd, **kwargs):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True, **kwargs).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# ---------------------------------------------------------------- machine

def machine(args):
    cpu = None
    out = run_capture(["lscpu"])
    if out:
        m = re.search(r"^Model name:\s*(.+)$", out, re.M)
        cpu = m.group(1).strip() if m else None
    if not cpu:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            cpu = m.group(1).strip() if m else platform.processor() or "unknown"
    with open("/proc/meminfo") as f:
        mem_kb = int(re.search(r"^MemTotal:\s*(\d+)", f.read(), re.M).group(1))
    os_name = platform.system()
    try:
        with open("/etc/os-release") as f:
            m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', f.read(), re.M)
            if m:
                os_name = m.group(1)
    except OSError:
        pass
    commit = run_capture(["git", "-C", args.root, "rev-parse", "HEAD"]) or "unknown (not a git checkout)"
    dirty = run_capture(["git", "-C", args.root, "--no-optional-locks", "status", "--porcelain",
                         "--untracked-files=no"])
    if dirty:
        commit += " (with uncommitted changes)"
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {
        "cpu": cpu,
        "nproc": run_capture(["nproc"]) or str(os.cpu_count()),
        "ram": f"{mem_kb / 1048576:.1f} GiB",
        "os": f"{os_name}, {platform.system()} {platform.release()} {platform.machine()}",
        "rustc": run_capture(["rustc", "--version"]) or "rustc not found",
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "load": load,
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------- data

def count_lines(path):
    n = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
    return n


def simulate(args, work, max_lines):
    """Runs the traffic simulator once, sized to give about
    min(max_lines, SIM_MAX_BASE) lines; returns (path, lines, users)."""
    target = min(max_lines, SIM_MAX_BASE)
    users = max(4, -(-(target - SIM_FIXED_LINES) // (LINES_PER_USER_DAY * SIM_DAYS)))
    out = os.path.join(work, "sim")
    cmd = [sys.executable, os.path.join(args.root, "tests/traffic/simulate.py"), "--days", str(SIM_DAYS),
           "--train-days", str(SIM_TRAIN_DAYS), "--users", str(users), "--seed", str(args.seed), "--out", out]
    log(f"simulating traffic: {' '.join(cmd[1:])}")
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    path = os.path.join(out, "traffic.log")
    os.remove(os.path.join(out, "labels.csv"))
    n = count_lines(path)
    return {"path": path, "lines": n, "users": users, "seconds": time.perf_counter() - start,
            "command": "tests/traffic/simulate.py " + " ".join(cmd[2:-2])}


def shifted(copy):
    """A function moving a simulator line's date forward by copy * SIM_DAYS days."""
    if copy == 0:
        return lambda line: line
    delta = datetime.timedelta(days=SIM_DAYS * copy)
    iso, rc = {}, {}

    def shift(line):
        if line[:1] == b"[":                     # Roundcube: [02-Mar-2026 08:15:03 +0000]
            key = line[1:12]
            new = rc.get(key)
            if new is None:
                d = datetime.date(int(key[7:11]), MONTHS.index(key[3:6]) + 1, int(key[0:2])) + delta
                new = rc[key] = b"%02d-%s-%04d" % (d.day, MONTHS[d.month - 1], d.year)
            return b"[" + new + line[12:]
        key = line[:10]                          # syslog RFC 3339: 2026-03-02T...
        if key[4:5] != b"-":
            return line
        new = iso.get(key)
        if new is None:
            new = iso[key] = (datetime.date.fromisoformat(key.decode()) + delta).isoformat().encode()
        return new + line[10:]
    return shift


def generate(base, n, out):
    """Writes n lines: the simulated log, then copies of it shifted by
    SIM_DAYS days each (time order and weekdays kept), cut at n lines."""
    with open(base["path"], "rb") as f:
        lines = f.readlines()
    if ZSTD:
        sink = subprocess.Popen(PIN.helper() + ["zstd", "-q", "-f", "-1", "-o", out], stdin=subprocess.PIPE)
        w = sink.stdin
    else:
        sink, w = None, open(out, "wb")
    written, copy = 0, 0
    while written < n:
        take = lines if n - written >= len(lines) else lines[:n - written]
        w.writelines(map(shifted(copy), take))
        written += len(take)
        copy += 1
    w.close()
    if sink and sink.wait() != 0:
        sys.exit("perf-report: zstd failed")
    return copy


# ---------------------------------------------------------------- stages

def bin_path(args, tool):
    return os.path.join(args.bin, tool)


def all_anomalies_config(work):
    """A configuration whose threshold makes every record an anomaly, so
    pf-score explains every record (the worst case)."""
    path = os.path.join(work, "all-anomalies.yaml")
    with open(path, "w") as f:
        f.write("anomaly:\n  threshold:\n    high: -0.1\n    medium: -0.05\n    low: 1e9\n")
    return path


def stage_row(name, n, m, note=""):
    return {"stage": name, "lines": n, "wall_s": m["wall_s"], "cpu_s": m["cpu_s"], "sys_s": m["sys_s"],
            "rss_kb": m["rss_kb"],
            "rate": n / m["wall_s"] if m["wall_s"] > 0 else float("nan"), "note": note}


def run_stages(args, work, label, raw, n, keep_features=False, explain_all=False):
    """pf-parse, pf-features, pf-train, pf-score over one log of n lines.
    Returns the table rows (and the features file and model if kept)."""
    config = os.path.join(args.root, "config/config.yaml")
    cfg = ["--config", config]
    rows = []
    records = compressed(os.path.join(work, f"{label}-records.jsonl"))
    features = compressed(os.path.join(work, f"{label}-features.jsonl"))
    model = os.path.join(work, f"{label}-model.json")

    log(f"[{label}] pf-parse, {n} lines")
    m = measure([bin_path(args, "pf-parse"), *cfg, "--timezone", "UTC"], src=raw, dst=records, cwd=args.root)
    rows.append(stage_row("pf-parse", n, m))
    if raw.startswith(args.work):
        os.remove(raw)

    log(f"[{label}] pf-features")
    m = measure([bin_path(args, "pf-features"), *cfg], src=records, dst=features, cwd=args.root)
    rows.append(stage_row("pf-features", n, m, "feature set `behavioural` (the default)"))
    os.remove(records)

    log(f"[{label}] pf-train")
    m = measure([bin_path(args, "pf-train"), *cfg, "--max-lines", "all", "--seed", str(args.seed),
                 "--metrics", "-", "--out", model], src=features, cwd=args.root)
    with open(model) as f:
        meta = json.load(f)
    tr = meta["training"]
    if tr.get("records_read") != n:
        log(f"[{label}] warning: pf-train read {tr.get('records_read')} records, expected {n}")
    rows.append(stage_row("pf-train", n, m,
                          f"--max-lines all, the default tail model: {tr['rows_used']:,} rows kept, "
                          f"calibrated on {tr.get('calibration_rows', 0):,} out-of-fold scores; "
                          f"fit {tr['training_seconds']:.2f} s of it"))
    # The old default, side by side in the same run: the forest on the same rows.
    forest_model = model + ".forest.json"
    m = measure([bin_path(args, "pf-train"), *cfg, "--detector", "forest", "--max-lines", "all",
                 "--seed", str(args.seed), "--metrics", "-", "--out", forest_model], src=features, cwd=args.root)
    with open(forest_model) as f:
        fmeta = json.load(f)
    rows.append(stage_row("pf-train --detector forest", n, m,
                          f"the old default: {fmeta['training']['n_trees']} trees, "
                          f"ψ {fmeta['forest']['max_samples']}, same rows"))

    for name, path in (("pf-score", model), ("pf-score, forest model", forest_model)):
        log(f"[{label}] {name}")
        start = measure([bin_path(args, "pf-score"), *cfg, "--model", path], cwd=args.root)
        m = measure([bin_path(args, "pf-score"), *cfg, "--model", path], src=features,
                    count='"is_anomaly":true', cwd=args.root)
        what = "the default tail model" if path == model else "the old default (forest, TreeSHAP tables)"
        rows.append(stage_row(name, n, m, f"{what}: {m['count']:,} anomalies explained; start-up "
                                          f"(model load) {start['wall_s']:.2f} s included"))
    os.remove(forest_model)
    if explain_all:
        log(f"[{label}] pf-score, every record explained")
        m = measure([bin_path(args, "pf-score"), "--config", all_anomalies_config(work), "--model", model],
                    src=features, count='"is_anomaly":true', cwd=args.root)
        rows.append(stage_row("pf-score, every record explained", n, m,
                              f"`anomaly.threshold.low: 1e9`: {m['count']:,} records explained"))
    if not keep_features:
        os.remove(features)
        features = None
    return rows, features, model


# ---------------------------------------------------------------- file to file

FILE_COPIES = 15
WARM_GIB = 4


def warm_memory(work):
    """Writes and deletes a WARM_GIB file. On a virtual machine the first
    use of each page of guest memory is a fault in the host (seen: ~2.5 s of
    system time per GiB on a new machine, ~0.3 s once the pages were used);
    a server that has been up a while has used its memory, so without this
    the first stages to write ~3 GB of new files pay a cost it does not.
    Returns the seconds it took."""
    path = os.path.join(work, "warm-up")
    start = time.time()
    chunk = b"\0" * (8 << 20)
    with open(path, "wb") as f:
        for _ in range((WARM_GIB << 30) // len(chunk)):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.remove(path)
    return time.time() - start


def file_stages(args, work):
    """The real log repeated FILE_COPIES times: each NDJSON stage alone from
    an uncompressed file to an uncompressed file (pf-sink into its output
    directory, all its files), `jq -c .` over pf-score's output for scale,
    then the whole file pipeline on both cores."""
    config = os.path.join(args.root, "config/config.yaml")
    cfg = ["--config", config]
    log_path = os.path.join(work, "real-x15.log")
    with open(args.real_log, "rb") as f:
        text = f.read()
    with open(log_path, "wb") as f:
        for _ in range(FILE_COPIES):
            f.write(text)
    n = count_lines(log_path)
    records = os.path.join(work, "x15-records.jsonl")
    features = os.path.join(work, "x15-features.jsonl")
    scored = os.path.join(work, "x15-scored.jsonl")
    first = os.path.join(work, "x15-first-copy.jsonl")
    model = os.path.join(work, "x15-model.json")
    forest = os.path.join(work, "x15-forest.json")
    rows = []

    def size(path):
        return f"{os.path.getsize(path) / n:,.0f} bytes per record out"

    log(f"[x{FILE_COPIES}] pf-parse, {n} lines")
    m = measure([bin_path(args, "pf-parse"), *cfg, "--timezone", "UTC"], src=log_path, dst=records, cwd=args.root)
    rows.append(stage_row("pf-parse", n, m, size(records)))
    log(f"[x{FILE_COPIES}] pf-features")
    m = measure([bin_path(args, "pf-features"), *cfg], src=records, dst=features, cwd=args.root)
    rows.append(stage_row("pf-features", n, m, "feature set `behavioural`; " + size(features)))
    # Models from the first copy's lines (not timed here: see the tables above).
    with open(features, "rb") as f, open(first, "wb") as out:
        for _, line in zip(range(n // FILE_COPIES), f):
            out.write(line)
    for detector, path in (("tails", model), ("forest", forest)):
        measure([bin_path(args, "pf-train"), *cfg, "--detector", detector, "--max-lines", "all", "--seed",
                 str(args.seed), "--metrics", "-", "--out", path], src=first, cwd=args.root)
    os.remove(first)
    log(f"[x{FILE_COPIES}] pf-score")
    m = measure([bin_path(args, "pf-score"), *cfg, "--model", model], src=features, dst=scored, cwd=args.root)
    with open(model) as f:
        kept = json.load(f)["training"]["rows_used"]
    rows.append(stage_row("pf-score", n, m, f"the default tail model, trained on the first copy's "
                                           f"{num(kept)} rows; " + size(scored)))
    m = measure([bin_path(args, "pf-score"), *cfg, "--model", forest], src=features, cwd=args.root)
    with open(forest) as f:
        fm = json.load(f)
    rows.append(stage_row("pf-score, forest model", n, m,
                          f"{fm['training']['n_trees']} trees, ψ {fm['forest']['max_samples']}, same rows; "
                          "output to /dev/null"))
    os.remove(forest)
    os.remove(features)
    out_dir = os.path.join(work, "x15-out")
    log(f"[x{FILE_COPIES}] pf-sink")
    m = measure([bin_path(args, "pf-sink"), *cfg, "--output-dir", out_dir, "--quiet", "--stats", "-",
                 "--no-deliveries"], src=scored, cwd=args.root)
    written = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    rows.append(stage_row("pf-sink", n, m, f"every output file: {written / 1e9:.2f} GB written"))
    shutil.rmtree(out_dir)
    if shutil.which("jq"):
        log(f"[x{FILE_COPIES}] jq -c .")
        m = measure(["jq", "-c", "."], src=scored, cwd=args.root)
        rows.append(stage_row("`jq -c .` over pf-score's output, for scale", n, m, "output to /dev/null"))
    os.remove(scored)
    os.remove(records)
    log(f"[x{FILE_COPIES}] the whole pipeline")
    b = shlex.quote(args.bin)
    c = shlex.quote(config)
    pipeline = (f"{b}/pf-parse --config {c} --timezone UTC {shlex.quote(log_path)} | {b}/pf-features --config {c} "
                f"| {b}/pf-score --config {c} --model {shlex.quote(model)} | {b}/pf-sink --config {c} "
                f"--output-dir {shlex.quote(out_dir)} --quiet --stats - --no-deliveries")
    m = measure(PIN.everywhere() + ["bash", "-o", "pipefail", "-c", pipeline], cwd=args.root, pinned=False)
    rows.append(stage_row("pf-parse \\| pf-features \\| pf-score \\| pf-sink", n, m,
                          "both cores, from the log file to the output files; CPU s of all four; "
                          "peak RSS of the largest"))
    shutil.rmtree(out_dir)
    os.remove(model)
    os.remove(log_path)
    return {"lines": n, "rows": rows}


# ---------------------------------------------------------------- side by side

def feature_matrix(features, work):
    """The real log's feature rows as one numeric table: categorical
    (string) features coded by frequency rank, most frequent = 0, ties by
    name, as pf-train codes them; rows with a missing value left out, as
    pf-train does. Writes a CSV (for scikit-learn and pf-train --csv) and
    the same rows as NDJSON {"features": {...}} (for pf-score)."""
    if features.endswith(".zst"):
        text = subprocess.run(["zstd", "-dcq", features], check=True, capture_output=True).stdout
    else:
        with open(features, "rb") as f:
            text = f.read()
    rows = []
    names = None
    for line in text.splitlines():
        feats = json.loads(line)["features"]
        if names is None:
            names = list(feats)
        row = [feats.get(k) for k in names]
        if all(v is not None for v in row):
            rows.append(row)
    categorical = []
    for j, name in enumerate(names):
        if isinstance(rows[0][j], str):
            counts = {}
            for r in rows:
                counts[r[j]] = counts.get(r[j], 0) + 1
            codes = {v: i for i, v in enumerate(sorted(counts, key=lambda v: (-counts[v], v)))}
            for r in rows:
                r[j] = codes[r[j]]
            categorical.append(f"{name} ({len(codes)} categories)")
    csv_path = os.path.join(work, "matrix.csv")
    jsonl_path = os.path.join(work, "matrix.jsonl")
    repeated_path = os.path.join(work, f"matrix-x{FILE_COPIES}.jsonl")
    with open(csv_path, "w") as c, open(jsonl_path, "w") as j:
        c.write(",".join(names) + "\n")
        for r in rows:
            c.write(",".join(repr(v) for v in r) + "\n")
            j.write(json.dumps({"features": dict(zip(names, r))}, separators=(",", ":")) + "\n")
    with open(jsonl_path, "rb") as f:
        once = f.read()
    with open(repeated_path, "wb") as f:
        for _ in range(FILE_COPIES):
            f.write(once)
    return {"csv": csv_path, "jsonl": jsonl_path, "repeated": repeated_path, "rows": len(rows),
            "scored_rows": len(rows) * FILE_COPIES, "names": names, "categorical": categorical}


def spearman(a, b):
    import numpy as np
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(float)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def side_by_side(args, work, features):
    mx = feature_matrix(features, work)
    n = mx["rows"]
    res = {"matrix": mx}

    log(f"[side by side] scikit-learn + shap on {n} rows x {len(mx['names'])} features")
    sk_json = os.path.join(work, "sklearn.json")
    sk_scores = os.path.join(work, "sklearn-scores.txt")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    m = measure([sys.executable, os.path.abspath(__file__), "sklearn", "--csv", mx["csv"], "--seed", str(args.seed),
                 "--max-samples", str(SBS_PSI), "--repeat", str(FILE_COPIES),
                 "--shap-rows", str(args.shap_rows), "--json", sk_json, "--scores", sk_scores], env=env)
    with open(sk_json) as f:
        res["sklearn"] = json.load(f)
    res["sklearn"]["process_rss_kb"] = m["rss_kb"]

    log(f"[side by side] pf-train --csv, ψ {SBS_PSI}, and the default tail model")
    model = os.path.join(work, f"model-{SBS_PSI}.json")
    m = measure([bin_path(args, "pf-train"), "--csv", "--detector", "forest", "--calibration-folds", "0",
                 "--max-lines", "all", "--trees", "100", "--max-samples", str(SBS_PSI),
                 "--contamination", "0.001", "--seed", str(args.seed), "--metrics", "-", "--out", model, mx["csv"]],
                cwd=work)
    with open(model) as f:
        tr = json.load(f)["training"]
    res["train"] = {"wall_s": m["wall_s"], "rss_kb": m["rss_kb"], "fit_s": tr["training_seconds"],
                    "rows": tr["rows_used"]}
    tails = os.path.join(work, "model-tails.json")
    measure([bin_path(args, "pf-train"), "--csv", "--detector", "tails", "--max-lines", "all",
             "--seed", str(args.seed), "--metrics", "-", "--out", tails, mx["csv"]], cwd=work)

    config = os.path.join(args.root, "config/config.yaml")
    log("[side by side] pf-score")
    start = measure([bin_path(args, "pf-score"), "--config", config, "--model", model], cwd=args.root)
    scored = os.path.join(work, "matrix-scored.jsonl")
    m = measure([bin_path(args, "pf-score"), "--config", config, "--model", model, mx["repeated"]], dst=scored,
                cwd=args.root)
    ours = []
    with open(scored) as f:
        for line in f:
            ours.append(json.loads(line)["detection"]["score"])
    os.remove(scored)
    rows = mx["scored_rows"]
    res["score"] = {"wall_s": m["wall_s"], "rss_kb": m["rss_kb"], "rate": rows / m["wall_s"],
                    "start_s": start["wall_s"], "anomalies": sum(1 for s in ours[:n] if s < 0)}
    m = measure([bin_path(args, "pf-score"), "--config", config, "--model", tails, mx["repeated"]],
                count='"is_anomaly":true', cwd=args.root)
    res["tails"] = {"wall_s": m["wall_s"], "rss_kb": m["rss_kb"], "rate": rows / m["wall_s"]}
    m = measure([bin_path(args, "pf-score"), "--config", all_anomalies_config(work), "--model", model, mx["jsonl"]],
                count='"is_anomaly":true', cwd=args.root)
    res["explain"] = {"wall_s": m["wall_s"], "rss_kb": m["rss_kb"], "rate": n / m["wall_s"], "explained": m["count"]}
    with open(sk_scores) as f:
        theirs = [float(x) for x in f]
    res["spearman"] = spearman(theirs, ours[:n]) if len(theirs) == n and len(ours) >= n else float("nan")
    for path in (mx["repeated"], tails):
        os.remove(path)
    return res


def sklearn_main(argv):
    """Times scikit-learn and shap on a numeric CSV (run pinned by `report`)."""
    ap = argparse.ArgumentParser(prog="perf_report.py sklearn")
    ap.add_argument("--csv", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shap-rows", type=int, default=2000)
    ap.add_argument("--max-samples", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=1, help="score the rows this many times over")
    ap.add_argument("--json", required=True)
    ap.add_argument("--scores", required=True)
    a = ap.parse_args(argv)
    import numpy as np
    import shap
    import sklearn
    from sklearn.ensemble import IsolationForest
    X = np.loadtxt(a.csv, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    n, d = X.shape
    t = time.perf_counter()
    model = IsolationForest(n_estimators=100, max_samples=min(a.max_samples, n), contamination=0.001,
                            random_state=a.seed).fit(X)
    fit_s = time.perf_counter() - t
    X_scored = np.tile(X, (a.repeat, 1))
    t = time.perf_counter()
    scores = model.decision_function(X_scored)[:n]
    score_s = time.perf_counter() - t
    t = time.perf_counter()
    explainer = shap.TreeExplainer(model)
    explainer_s = time.perf_counter() - t
    idx = np.unique(np.linspace(0, n - 1, min(a.shap_rows, n)).astype(int))  # spread over the log
    t = time.perf_counter()
    explainer.shap_values(X[idx])
    shap_s = time.perf_counter() - t
    np.savetxt(a.scores, scores, fmt="%.17g")
    with open(a.json, "w") as f:
        json.dump({"rows": n, "features": d, "fit_s": fit_s, "score_s": score_s,
                   "scored_rows": len(X_scored), "score_rate": len(X_scored) / score_s,
                   "anomalies": int((scores < 0).sum()), "explainer_s": explainer_s, "shap_rows": len(idx),
                   "shap_s": shap_s, "shap_rate": len(idx) / shap_s,
                   "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   "versions": {"scikit-learn": sklearn.__version__, "shap": shap.__version__,
                                "numpy": np.__version__}}, f)


# ---------------------------------------------------------------- kafka, cargo bench

def kafka(args, work):
    out = os.path.join(work, "kafka.json")
    cmd = [sys.executable, os.path.join(args.root, "tests/bench_kafka.py"), "--tansu", args.tansu, "--bin", args.bin,
           "--root", args.root, "--messages", str(args.kafka_messages), "--seconds", str(args.latency_seconds),
           "--pipeline-messages", str(args.pipeline_messages), "--pipeline-log", args.real_log, "--json", out]
    log("kafka: " + " ".join(["tests/bench_kafka.py"] + cmd[2:]))
    # bench_kafka.py starts the tansu broker and always stops it (finally).
    subprocess.run(cmd, check=True, cwd=args.root, stdout=sys.stderr)
    with open(out) as f:
        res = json.load(f)
    res["command"] = (f"tests/bench_kafka.py --tansu TANSU --bin BIN --root ROOT --messages {args.kafka_messages} "
                      f"--seconds {args.latency_seconds} --pipeline-messages {args.pipeline_messages} "
                      f"--pipeline-log {os.path.basename(args.real_log)}")
    return res


def cargo_bench(path):
    """Parses the output of `cargo bench -p pf-model` (crates/pf-model/benches/model.rs)."""
    if not path:
        return None
    with open(path) as f:
        text = f.read()
    res = {"text": text.strip(), "train": None, "score": None, "explain": []}
    m = re.search(r"^train\s+([\d,]+) rows x (\d+) features.*?:\s*([\d.]+) s", text, re.M)
    if m:
        res["train"] = {"rows": int(m.group(1).replace(",", "")), "features": int(m.group(2)),
                        "seconds": float(m.group(3))}
    m = re.search(r"^score\s+(\d+) rows/s\s+\((\d+) rows", text, re.M)
    if m:
        res["score"] = {"rate": int(m.group(1)), "rows": int(m.group(2))}
    for m in re.finditer(r"^explain\s+(\d+) rows/s\s+\((\d+) rows in [\d.]+ s, (.*)\)\s*$", text, re.M):
        res["explain"].append({"rate": int(m.group(1)), "rows": int(m.group(2)), "how": m.group(3)})
    m = re.search(r"^forest: (.*)$", text, re.M)
    res["forest"] = m.group(1) if m else None
    return res


# ---------------------------------------------------------------- markdown

def num(x):
    return f"{x:,.0f}"


def mib(kb):
    return "n/a" if kb is None else f"{kb / 1024:,.0f}"


def secs(s):
    return f"{s:.3f}" if s < 10 else f"{s:.1f}"


def stage_table(rows):
    out = ["| stage | lines | wall s | CPU s (of it system) | lines/s | peak RSS MiB | notes |",
           "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        out.append(f"| {r['stage']} | {num(r['lines'])} | {secs(r['wall_s'])} | "
                   f"{secs(r['cpu_s'])} ({secs(r['sys_s'])}) | "
                   f"{num(r['rate'])} | {mib(r['rss_kb'])} | {r['note']} |")
    return out


def markdown(args, mach, datasets, sbs, kafka_res, bench, total_s):
    L = []
    add = L.append
    add("# Performance")
    add("")
    add("Generated by")
    add("")
    add("```")
    add(args.command)
    add("```")
    add("")
    add(f"on {mach['date']}, in {total_s / 60:.1f} minutes. Every figure below comes from that one run; rerun "
        "the command for your machine (`tests/perf-report.sh --help` for the options). One run each, no "
        "repetitions: expect a few percent of noise, more on a busy machine.")
    add("")
    add("## Machine")
    add("")
    add("| | |")
    add("|---|---|")
    add(f"| CPU | {mach['cpu']} |")
    add(f"| cores (`nproc`) | {mach['nproc']} |")
    add(f"| RAM | {mach['ram']} |")
    add(f"| OS | {mach['os']} |")
    add(f"| Rust | {mach['rustc']} |")
    add(f"| binaries | {args.built} |")
    add(f"| git commit | {mach['commit']} |")
    add(f"| date | {mach['date']} |")
    add(f"| load average at start | {mach['load']} |")
    add(f"| Python | {mach['python']} |")
    add(f"| pinning | {PIN.describe()} |")
    add(f"| peak RSS | {rss_method()} |")
    add("")

    add("## Stages, one core each")
    add("")
    add("Each stage runs alone over the whole input, as in "
        "`pf-parse | pf-features | pf-train` and `pf-features | pf-score`, with the shipped "
        "`config/config.yaml` (feature set `behavioural`, the tail model; for the forest rows "
        "`retrain.max_samples` ψ = 1024; contamination 0.001; severities by rarity, low 1 in 1,000). "
        + ("Its input comes from a file through `zstd -dc` and its output goes to `zstd` "
           "(pf-parse → records, pf-features → features), " if ZSTD else
           "Its input comes from a file and its output goes to a file "
           "(pf-parse → records, pf-features → features), ")
        + "into the model file (pf-train, `--max-lines all`, trained on the same lines) or into `grep -c` "
        "counting anomalies (pf-score, with the model pf-train just made from the same lines). "
        "lines/s = lines / wall time, start-up included; CPU s = user + system time of the stage "
        "process (close to wall s means the stage was never starved of input), in brackets the system "
        "time of it (the kernel reading and writing for it: most of it writing files on this machine's "
        "disk); peak RSS = its maximum resident set size.")
    add("")
    for ds in datasets:
        add(f"### {ds['title']}")
        add("")
        add(ds["description"])
        add("")
        L.extend(stage_table(ds["rows"]))
        add("")

    add("## Kafka: kafka-tail and the live pipeline")
    add("")
    if kafka_res is None:
        add(f"Skipped ({args.kafka_skipped}).")
        add("")
    else:
        k = kafka_res
        add(f"`{k['command']}`, on a local tansu broker (in-memory storage) that it starts on a free port and "
            f"stops at the end; messages of {k['message_bytes']} bytes (one syslog line each). Not pinned: "
            "broker, producer and pipeline share the cores. Consumer throughput = messages / (time to read "
            "them − time to read a one-message topic), which leaves out the consumer-group join and leave.")
        add("")
        add("| consumer | messages | messages/s | wall s (one-message topic s) | peak RSS MiB |")
        add("|---|---:|---:|---:|---:|")
        kt, ref = k["kafka_tail"], k["reference"]
        add(f"| kafka-tail, envelopes to /dev/null | {num(k['messages'])} | {num(kt['messages_per_s'])} | "
            f"{kt['wall_s']:.2f} ({kt['empty_s']:.2f}) | {mib(kt['max_rss_kb'])} |")
        add(f"| confluent-kafka (librdkafka) in Python, polling only, same run | {num(ref['messages'])} | "
            f"{num(ref['messages_per_s'])} | {ref['wall_s']:.2f} ({ref['empty_s']:.2f}) | |")
        add("")
        pipes = [(k[key], what) for key, what in (
            ("pipeline", "the real log's lines over and over, the model trained on them"),
            ("pipeline_flood", "the synthetic line, the shipped model: a flood of anomalies, the worst case"))
            if key in k]
        if pipes:
            add("Live pipeline throughput: `pipelines/live-detector.sh` (kafka-tail -e | pf-parse | pf-features "
                "| pf-score | pf-sink) over a topic of messages, until kafka-tail reaches its end and every stage "
                "has drained, less the same run over a one-message topic. Two inputs: the real log's lines "
                "(repeated to the count) with a model pf-train made from them first, as a server runs on a model "
                "of its own traffic; and the synthetic line above with the shipped model, which takes nearly "
                "every line of that flood for an anomaly, so pf-score explains it and pf-sink writes it twice:")
            add("")
            add("| input: messages | records out | anomalies | messages/s | wall s (one-message topic s) | "
                "largest stage's peak RSS MiB |")
            add("|---|---:|---:|---:|---:|---:|")
            for p, what in pipes:
                add(f"| {what}: {num(p['messages'])} | {num(p['records_out'])} | {num(p.get('anomalies', 0))} | "
                    f"{num(p['messages_per_s'])} | {p['wall_s']:.2f} ({p['one_message_s']:.2f}) | "
                    f"{mib(p['max_rss_kb'])} |")
            add("")
        add(f"End-to-end latency of the live pipeline, from the producer's timestamp to the line in the output "
            f"file, at a steady rate for {k['latency_seconds']} s each (shipped model; \"every record explained\" "
            "sets `anomaly.threshold.low: 1e9`, so pf-score explains every line, the worst case):")
        add("")
        add("| output file | rate msg/s | sent | arrived | p50 ms | p90 ms | p99 ms | max ms |")
        add("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in k["latency"]:
            name = ("`anomalies.jsonl`, every record explained" if r["all_anomalies"]
                    else "`all_detections.jsonl`")
            add(f"| {name} | {num(r['rate'])} | {num(r['sent'])} | {num(r['arrived'])} | {r['p50_ms']:.1f} | "
                f"{r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} |")
        add("")

    add("## Against scikit-learn and shap, same rows")
    add("")
    mx, sk = sbs["matrix"], sbs["sklearn"]
    cats = (", ".join(mx["categorical"]) + " coded by frequency rank as pf-train codes them"
            if mx["categorical"] else "no categorical features")
    add(f"The real log's `behavioural` feature rows from the run above, as one numeric table: "
        f"{num(mx['rows'])} rows × {len(mx['names'])} features ({cats}; rows with a missing value left out, "
        "as pf-train does). scikit-learn gets it as a numpy array, `pf-train --csv` as a CSV file, "
        "`pf-score` as NDJSON `{\"features\": {...}}`. Both forests like the default forest: 100 trees, "
        f"ψ = {SBS_PSI} (`max_samples={SBS_PSI}`, `pf-train --max-samples {SBS_PSI}`), contamination 0.001, "
        f"seed {args.seed}, trained on all the rows; both score the rows {FILE_COPIES} times over "
        f"({num(mx['scored_rows'])} rows: `np.tile` for scikit-learn, the NDJSON file repeated for pf-score), "
        "so pf-score's start-up is a small part. Everything pinned to one core; Python with "
        "`OMP_NUM_THREADS=1`. The scikit-learn times are of the calls alone (data already in memory); "
        "pf-train and pf-score are timed as whole processes (start, read and parse text, write JSON).")
    add("")
    v = sk["versions"]
    tr, sc, ex = sbs["train"], sbs["score"], sbs["explain"]
    bt = bench and bench.get("train")
    bs = bench and bench.get("score")
    bex = {e["how"]: e for e in bench["explain"]} if bench else {}

    def bench_explain(word):
        for how, e in bex.items():
            if word in how:
                return f"{num(e['rate'])} rows/s ({how})"
        return "—"
    skipped = f"skipped ({args.bench_skipped})" if not bench else None
    add(f"| | scikit-learn {v['scikit-learn']}, shap {v['shap']} | pf-train / pf-score, same rows | "
        "pf-model alone (`cargo bench -p pf-model`, synthetic rows) |")
    add("|---|---|---|---|")
    add(f"| fit (incl. scoring the training rows for the offset) | `IsolationForest.fit`: {sk['fit_s']:.3f} s | "
        f"fit {tr['fit_s']:.3f} s; whole pf-train run {tr['wall_s']:.3f} s, peak RSS {mib(tr['rss_kb'])} MiB | "
        + (skipped or (f"{num(bt['rows'])} rows × {bt['features']} features: {bt['seconds']:.3f} s" if bt else "—"))
        + " |")
    ratio = sc["rate"] / sk["score_rate"]
    tl = sbs["tails"]
    add(f"| decision score, {num(mx['scored_rows'])} rows | `decision_function`: {num(sk['score_rate'])} rows/s "
        f"({sk['score_s']:.3f} s) | pf-score end to end: {num(sc['rate'])} rows/s, {ratio:.2f}× scikit-learn "
        f"({sc['wall_s']:.3f} s, start-up {sc['start_s']:.3f} s included), peak RSS {mib(sc['rss_kb'])} MiB; "
        f"with the default tail model (`pf-train --csv`, same rows): {num(tl['rate'])} rows/s, "
        f"{tl['rate'] / sk['score_rate']:.2f}× scikit-learn's forest ({tl['wall_s']:.3f} s) | "
        + (skipped or (f"{num(bs['rate'])} rows/s" if bs else "—")) + " |")
    add(f"| exact TreeSHAP, every feature | `TreeExplainer(model).shap_values` on {num(sk['shap_rows'])} rows "
        f"spread over the log: {num(sk['shap_rate'])} rows/s ({sk['shap_s']:.3f} s; building the explainer "
        f"{sk['explainer_s']:.3f} s more) | pf-score, every row an anomaly (`anomaly.threshold.low: 1e9`), all "
        f"{num(mx['rows'])} rows: {num(ex['rate'])} rows/s ({ex['wall_s']:.3f} s, {num(ex['explained'])} "
        f"explained), peak RSS {mib(ex['rss_kb'])} MiB | "
        + (skipped or (bench_explain("one row at a time") + "; " + bench_explain("batches"))) + " |")
    add(f"| training rows scoring below 0 | {num(sk['anomalies'])} | {num(sc['anomalies'])} | |")
    add(f"| peak RSS | {mib(sk['process_rss_kb'])} MiB (the Python process: interpreter, numpy, scikit-learn, "
        "shap, the data) | see above | |")
    add("")
    add(f"The two forests are different random draws (pf-train has its own random number generator), so "
        f"their scores differ row by row; Spearman's rank correlation between them over the "
        f"{num(mx['rows'])} rows: {sbs['spearman']:.3f}. That pf-score computes scikit-learn's scores and "
        "shap's values for the same trees is tested by `crates/pf-score/tests/sklearn_parity.rs`.")
    add("")

    add("## pf-model alone: `cargo bench -p pf-model`")
    add("")
    if not bench:
        add(f"Skipped ({args.bench_skipped}).")
    else:
        add("One core (`taskset`), 100 trees, ψ = 256, synthetic log-like rows "
            "(`crates/pf-model/benches/model.rs`), best of 3; its output:")
        add("")
        add("```")
        add(bench["text"])
        add("```")
    add("")
    return "\n".join(L)


# ---------------------------------------------------------------- report

def disk_check(args, sizes):
    per_line = 250 if ZSTD else 2200   # records + features of one line, with room to spare
    need = max(sizes, default=0) * per_line
    free = shutil.disk_usage(args.work).free
    if need > free:
        sys.exit(f"perf-report: {max(sizes):,} lines need about {need / 1e9:.1f} GB in {args.work}, "
                 f"{free / 1e9:.1f} GB free (use --tmpdir DIR, smaller --sizes{'' if ZSTD else ', or install zstd'})")
    log(f"disk: {free / 1e9:.1f} GB free in {args.work}, about {need / 1e9:.1f} GB needed")


def report_main(argv):
    global PIN
    ap = argparse.ArgumentParser(prog="perf_report.py report")
    ap.add_argument("--root", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--built", required=True, help="how the binaries were made (for the report)")
    ap.add_argument("--tansu", default="")
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--real-log", required=True)
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shap-rows", type=int, default=2000)
    ap.add_argument("--kafka-messages", type=int, default=2_000_000)
    ap.add_argument("--pipeline-messages", type=int, default=500_000)
    ap.add_argument("--latency-seconds", type=int, default=5)
    ap.add_argument("--kafka-skipped", default="", help="why the Kafka part is skipped; empty: run it")
    ap.add_argument("--cargo-bench", default="", help="output of cargo bench -p pf-model")
    ap.add_argument("--bench-skipped", default="")
    ap.add_argument("--started", type=float, default=None, help="when the run began (seconds since the epoch)")
    args = ap.parse_args(argv)
    PIN = Pinning()
    mach = machine(args)                 # before this process's CPUs are narrowed (nproc)
    all_cpus = os.sched_getaffinity(0)
    if PIN.taskset and PIN.helper_cpus:
        # This process (generating data, polling) keeps off the measured CPU.
        os.sched_setaffinity(0, PIN.helper_cpus)
    started = args.started if args.started is not None else time.time()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    log(f"{mach['cpu']}, {mach['nproc']} cores; {PIN.describe()}")
    disk_check(args, sizes)

    datasets = []
    n_real = count_lines(args.real_log)
    rows, real_features, _ = run_stages(args, args.work, "real", args.real_log, n_real, keep_features=True,
                                        explain_all=True)
    datasets.append({"title": f"Real log: {os.path.basename(args.real_log)}, {num(n_real)} lines",
                     "description": f"The public postfix-logsums sample, `$PF_SHARED_DIR/conformance/real/"
                                    f"{os.path.basename(args.real_log)}` (here `{args.real_log}`), parsed with "
                                    "`--timezone UTC`.",
                     "rows": rows})
    warm = warm_memory(args.work)
    log(f"warmed {WARM_GIB} GiB of memory in {warm:.1f} s")
    x15 = file_stages(args, args.work)
    datasets.append({"title": f"Real log ×{FILE_COPIES}, file to file: {num(x15['lines'])} lines",
                     "description": f"The same log {FILE_COPIES} times over (timestamps repeat), each stage from an "
                                    "uncompressed file to an uncompressed file in the work directory (no zstd), "
                                    "pf-sink writing every output file; then the four stages as one pipeline on "
                                    "both cores, unpinned. Before them the report wrote and deleted a "
                                    f"{WARM_GIB} GiB file ({warm:.1f} s): on a virtual machine the first use of a "
                                    "page of memory is a fault in the host, several times the cost of writing "
                                    "the page (a server up for a while has used its memory; a new machine's "
                                    "first 3 GB of files pay it). Every measured stage starts after `sync`, so "
                                    "none pays for writing out the one before it.",
                     "rows": x15["rows"]})

    if sizes:
        base = simulate(args, args.work, max(sizes))
        log(f"simulated {base['lines']} lines in {base['seconds']:.1f} s")
        for n in sizes:
            raw = compressed(os.path.join(args.work, f"gen{n}.log"))
            log(f"[{n}] writing {n} lines")
            t = time.perf_counter()
            copies = generate(base, n, raw)
            gen_s = time.perf_counter() - t
            rows, _, model = run_stages(args, args.work, f"gen{n}", raw, n)
            os.remove(model)
            how = (f"its first {num(n)} lines" if copies == 1 else
                   f"it and {copies - 1} cop{'y' if copies == 2 else 'ies'} of it, each shifted {SIM_DAYS} days "
                   f"later than the one before (time order and weekdays kept), cut at {num(n)} lines")
            datasets.append({
                "title": f"Generated: {num(n)} lines",
                "description": f"`{base['command']}` (a four-week mail domain of {base['users']} users with "
                               f"labelled attacks in the last week; {num(base['lines'])} lines, simulated in "
                               f"{base['seconds']:.0f} s); {how} (written in {gen_s:.0f} s).",
                "rows": rows})
        shutil.rmtree(os.path.dirname(base["path"]), ignore_errors=True)

    sbs = side_by_side(args, args.work, real_features)
    os.remove(real_features)

    kafka_res = None
    os.sched_setaffinity(0, all_cpus)
    if not args.kafka_skipped:
        kafka_res = kafka(args, args.work)
    bench = cargo_bench(args.cargo_bench)
    md = markdown(args, mach, datasets, sbs, kafka_res, bench, time.time() - started)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(md)
    os.replace(tmp, args.out)
    log(f"wrote {args.out}")


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("report", "sklearn"):
        sys.exit("usage: perf_report.py report|sklearn ... (run tests/perf-report.sh)")
    if sys.argv[1] == "report":
        report_main(sys.argv[2:])
    else:
        sklearn_main(sys.argv[2:])


if __name__ == "__main__":
    main()
