"""Soak test of the live pipeline on a local tansu broker.

Run through tests/soak.sh, which builds the tools and sets up Python.
Produces log lines at a steady rate for --minutes into the `postfix` topic
while pipelines/live-detector.sh consumes them, samples each stage's
resident memory every --every seconds, then stops producing, waits until
the pipeline has written everything, stops it with SIGTERM and checks that
every produced message is in all_detections.jsonl (count in = count out).

The lines are the bundled sample's (pipelines/sample/mail.log) with the
current time and, for the addresses, random ones from 198.18.0.0/15 (131,072
benchmark addresses), so that the behavioural features' per-address tables
fill up to their caps as a busy server's would, rather than seeing the
same few hosts over and over.

Prints a markdown table (one row per sample) and the verdict; exits 1 if a
message was lost.
"""
import argparse
import json
import os
import random
import shutil
import re
import signal
import subprocess
import sys
import tempfile
import time

import confluent_kafka as ck

import bench_kafka as bk

# bench_kafka's fast group settings, but fetches every 100 ms rather than
# 20 ms: each tansu fetch costs broker CPU, and latency is not measured here.
SOAK_GROUP = ["-X", "session.timeout.ms=2000", "-X", "heartbeat.interval.ms=500", "-X", "fetch.wait.max.ms=100"]
STAGES = ["kafka-tail", "pf-parse", "pf-features", "pf-score", "pf-sink"]
STAMP = re.compile(r"^\S+")
IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")


def templates(root):
    with open(os.path.join(root, "pipelines/sample/mail.log")) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def make_line(template, rng):
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000+00:00"
    line = STAMP.sub(now, template, count=1)
    return IPV4.sub(lambda m: m.group(0) if m.group(0).startswith(("127.", "192.0.2."))
                    else f"198.{18 + rng.randrange(2)}.{rng.randrange(256)}.{rng.randrange(256)}", line)


def stage_pids(parent):
    """{stage name: pid} of the pipeline's processes (children of the script)."""
    out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
    pids = {}
    for pid in out:
        try:
            with open(f"/proc/{pid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        if name in STAGES:
            pids[name] = int(pid)
    return pids


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


class LineCounter:
    """Lines in a growing file, reading only what was added since last time."""

    def __init__(self, path):
        self.path = path
        self.pos = 0
        self.lines = 0

    def count(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    self.lines += chunk.count(b"\n")
                    self.pos += len(chunk)
        except OSError:
            pass
        return self.lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tansu", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=int, default=2000, help="messages per second")
    ap.add_argument("--every", type=float, default=30, help="seconds between memory samples")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true",
                    help="keep the output files (about 1 GB per 10 minutes at 2,000/s); "
                         "they are always kept when the soak fails")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    lines = templates(args.root)

    broker, addr = bk.start_broker(args.tansu)
    work = tempfile.mkdtemp(prefix="soak-")
    pipeline = None
    try:
        config = bk.write_config(work, args.root, addr, "soak", "postfix", 0)
        bk.produce(addr, "postfix", 1)  # creates the topic
        produced = 1
        env = dict(os.environ, PF_BIN=args.bin)
        err = open(os.path.join(work, "pipeline.err"), "wb")
        pipeline = subprocess.Popen([os.path.join(args.root, "pipelines/live-detector.sh"), "--config", config,
                                     "--quiet", "--", *SOAK_GROUP], env=env, stdout=subprocess.DEVNULL,
                                    stderr=err, start_new_session=True)
        err.close()
        all_path = os.path.join(work, "out", "all_detections.jsonl")
        written = LineCounter(all_path)
        deadline = time.time() + 60
        while written.count() < 1:
            if time.time() > deadline or pipeline.poll() is not None:
                sys.exit(f"soak: the pipeline did not start; its messages:\n{bk.tail(work)}")
            time.sleep(0.1)

        # Batches of a few hundred messages, as log shippers send them. The
        # test broker (tansu 0.6, in-memory storage) keeps every produced
        # batch as an object and does work per stored object on each fetch:
        # with 5 ms batches (about 200 a second at any rate) it reached 90%
        # CPU and stopped answering fetches after about 7.5 minutes.
        p = ck.Producer({"bootstrap.servers": addr, "linger.ms": 200, "batch.num.messages": 10000})
        print(f"soak: {args.rate} messages/s for {args.minutes:g} min through pipelines/live-detector.sh "
              f"(tansu on {addr}); memory sampled every {args.every:g} s", file=sys.stderr)
        header = ("| minute | produced | written | " + " | ".join(f"{s} MiB" for s in STAGES)
                  + " | broker MiB | broker CPU % |")
        rows = [header, "|" + "---:|" * (5 + len(STAGES))]
        broker_cpu = (time.time(), cpu_seconds(broker.pid))
        samples = []
        start = time.time()
        next_sample = start
        end = start + args.minutes * 60
        sent = 0
        while True:
            now = time.time()
            if now >= next_sample or now >= end:
                pids = stage_pids(pipeline.pid)
                rss = [rss_mib(pids[s]) if s in pids else float("nan") for s in STAGES]
                samples.append(rss)
                cpu = (now, cpu_seconds(broker.pid))
                busy = 100 * (cpu[1] - broker_cpu[1]) / max(cpu[0] - broker_cpu[0], 1e-3)
                broker_cpu = cpu
                rows.append(f"| {(now - start) / 60:.1f} | {produced:,} | {written.count():,} | "
                            + " | ".join(f"{v:.1f}" for v in rss)
                            + f" | {rss_mib(broker.pid):.1f} | {busy:.0f} |")
                print(rows[-1], file=sys.stderr)
                next_sample += args.every
                if pipeline.poll() is not None:
                    sys.exit(f"soak: the pipeline stopped; its messages:\n{bk.tail(work)}")
            if now >= end:
                break
            due = int((now - start) * args.rate)
            while sent < due:
                try:
                    p.produce("postfix", make_line(lines[sent % len(lines)], rng).encode())
                except BufferError:
                    p.poll(0.01)
                    continue
                sent += 1
                produced += 1
            p.poll(0)
            time.sleep(0.002)
        p.flush(60)

        # Drain, then stop the pipeline the way systemd does.
        deadline = time.time() + 300
        while written.count() < produced and time.time() < deadline:
            time.sleep(0.5)
        caught_up = written.count() >= produced
        pipeline.send_signal(signal.SIGTERM)
        status = pipeline.wait(60)

        seen = set()
        records = 0
        with open(all_path) as f:
            for line in f:
                r = json.loads(line)
                records += 1
                seen.add((r["source"]["partition"], r["source"]["offset"]))
        print("\n".join(rows))
        print()
        print(f"- produced: {produced:,} messages in {args.minutes:g} min ({args.rate:,}/s); "
              f"written: {records:,} records, {len(seen):,} distinct messages; pipeline exit status {status}")
        half = len(samples) // 2
        for i, stage in enumerate(STAGES):
            first = [s[i] for s in samples[1:half + 1] if s[i] == s[i]]
            last = [s[i] for s in samples[half:] if s[i] == s[i]]
            if first and last:
                print(f"- {stage}: peak {max(first + last):.1f} MiB; mean {sum(first) / len(first):.1f} MiB in "
                      f"the first half, {sum(last) / len(last):.1f} MiB in the second")
        missing = produced - len(seen)
        if not caught_up:
            print(f"- the pipeline had not written everything 300 s after the last message "
                  f"({missing:,} missing; see `kafka-tail --lag`): NOT caught up")
        print(f"- count in = count out: {'yes' if missing == 0 else f'NO, {missing:,} missing'}")
        if missing or status != 0:
            sys.exit(1)
    except BaseException:
        print(f"soak: output files kept in {work}", file=sys.stderr)
        raise
    finally:
        if pipeline is not None and pipeline.poll() is None:
            os.killpg(pipeline.pid, signal.SIGTERM)
            pipeline.wait(60)
        broker.kill()
        broker.wait()
    if args.keep:
        print(f"soak: output files kept in {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
