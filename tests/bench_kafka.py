"""kafka-tail throughput and live-pipeline latency on a local tansu broker.

Run through tests/bench-kafka.sh, which builds the tools and sets up the
Python venv. Prints:

1. consumer throughput in messages/s for kafka-tail (writing envelopes to
   /dev/null) and, in the same run, a reference librdkafka consumer
   (confluent-kafka, polling only), each over N messages of ~100 bytes.
   Each figure is N / (time for N messages - time for an empty topic), so
   the consumer-group join and leave, which tansu makes slow, are left out.
2. end-to-end latency of the live pipeline (pipelines/live-detector.sh),
   from the producer's timestamp to the line appearing in the output file,
   at 1k and 10k messages/s: with the shipped thresholds (into
   all_detections.jsonl, every record) and with threshold low = 1e9, which
   makes every record an anomaly that is explained (into anomalies.jsonl;
   the worst case, TreeSHAP for every line).
3. with --pipeline-messages N, the live pipeline's throughput: N messages
   through kafka-tail -e | pf-parse | pf-features | pf-score | pf-sink
   into all_detections.jsonl, less the time for a one-message topic. With
   --pipeline-log LOG the messages are LOG's lines (repeated to N) and the
   model is trained on LOG first, as a server runs on a model of its own
   traffic; in any case also over N copies of the synthetic line with the
   shipped model, a flood in which nearly every line is an anomaly that
   pf-score explains and pf-sink writes twice (the worst case).

--json FILE also writes every figure (with p90 and the peak RSS of
kafka-tail and of the pipeline's largest stage) as one JSON object, for
tests/perf_report.py.
"""
import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import confluent_kafka as ck

# tansu waits half the session timeout in JoinGroup and half of
# fetch.wait.max.ms in every Fetch even when data is there (measured: 250 ms
# per message with librdkafka's 500 ms default, 9 ms with 20 ms). Real Kafka
# answers a fetch as soon as data arrives and refuses session timeouts under
# 6 s, so these are passed here with -X and are not kafka-tail's defaults.
FAST_GROUP = ["-X", "session.timeout.ms=2000", "-X", "heartbeat.interval.ms=500", "-X", "fetch.wait.max.ms=20"]
LINE = ("2026-03-02T10:00:{s:02d}.000000+00:00 mx1 postfix/smtpd[4242]: "
        "connect from mail.partner.example[198.51.100.{h}] id={i}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(tansu):
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            if time.time() > deadline:
                sys.exit("bench-kafka: tansu did not start")
            time.sleep(0.05)


def produce(addr, topic, n, batch=10000, lines=None):
    """n messages: the synthetic LINE, or the given lines over and over."""
    p = ck.Producer({"bootstrap.servers": addr, "linger.ms": 5, "batch.num.messages": batch})
    for i in range(n):
        value = lines[i % len(lines)] if lines else LINE.format(s=i % 60, h=i % 250, i=i).encode()
        while True:
            try:
                p.produce(topic, value)
                break
            except BufferError:
                p.poll(0.01)
        if i % 10000 == 0:
            p.poll(0)
    p.flush(60)


def gnu_time():
    try:
        r = subprocess.run(["/usr/bin/time", "--version"], capture_output=True, text=True)
        return "/usr/bin/time" if "GNU" in r.stdout + r.stderr else None
    except OSError:
        return None


GNU_TIME = gnu_time()


def run_timed(cmd, **kwargs):
    """Runs cmd to its end; returns (wall seconds, peak RSS in KiB), raising if it fails.
    The peak RSS is the largest of the process and the children it waited for,
    as GNU time reports it (None without GNU time: a child of this Python
    process would report Python's own peak RSS as its ru_maxrss)."""
    with tempfile.NamedTemporaryFile(mode="r", suffix=".time") as timing:
        if GNU_TIME:
            cmd = [GNU_TIME, "-f", "%M", "-o", timing.name, *cmd]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, **kwargs)
        elapsed = time.perf_counter() - start
        rss = int(timing.read().split()[-1]) if GNU_TIME else None
    return elapsed, rss


def time_kafka_tail(bin_dir, addr, topic, group):
    """Seconds to read the topic to its end, and kafka-tail's peak RSS in KiB."""
    return run_timed([os.path.join(bin_dir, "kafka-tail"), "-b", addr, "-G", group, "-t", topic, "-e", *FAST_GROUP],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def time_reference(addr, topic, group, expect):
    start = time.perf_counter()
    c = ck.Consumer({"bootstrap.servers": addr, "group.id": group, "auto.offset.reset": "earliest",
                     "enable.partition.eof": True, "session.timeout.ms": 2000, "heartbeat.interval.ms": 500,
                     "fetch.queue.backoff.ms": 10, "fetch.wait.max.ms": 20})
    c.subscribe([topic])
    n = 0
    eof = set()
    assigned = None
    while True:
        msgs = c.consume(num_messages=10000, timeout=0.2)
        for m in msgs:
            if m.error():
                if m.error().code() == ck.KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                continue
            n += 1
        if assigned is None and c.assignment():
            assigned = len(c.assignment())
        if n >= expect and assigned and len(eof) >= assigned:
            break
        if expect == 0 and assigned and len(eof) >= assigned:
            break
    c.close()
    return time.perf_counter() - start, n


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def write_config(work, root, addr, group, topic, low, models=None):
    """A pipeline configuration in work: the shipped model (or the one in
    models) and feature set, output and state (behavioural memory, sink
    counters) under work."""
    config = os.path.join(work, "config.yaml")
    models = models or os.path.join(root, "models")
    with open(config, "w") as f:
        f.write(f"kafka:\n  broker: \"{addr}\"\n  consumer_group: {group}\n  topics: [{topic}]\n"
                f"paths:\n  models_dir: {models}\n  features: {root}/features/behavioural.json\n"
                f"  output_dir: {work}/out\n  state_dir: {work}/state\n")
        if low is not None:
            f.write(f"anomaly:\n  threshold:\n    high: -0.1\n    medium: -0.05\n    low: {low}\n")
    return config


def latency(root, bin_dir, addr, rate, seconds, all_anomalies):
    work = tempfile.mkdtemp(prefix="bench-kafka-")
    out = os.path.join(work, "out")
    topic = f"latency{rate}{'a' if all_anomalies else 'n'}"
    low = 1e9 if all_anomalies else None
    config = write_config(work, root, addr, f"lat{rate}", topic, low)
    # Create the topic and let the pipeline join before timing anything.
    produce(addr, topic, 1)
    env = dict(os.environ, PF_BIN=bin_dir)
    err = open(os.path.join(work, "pipeline.err"), "wb")
    pipeline = subprocess.Popen([os.path.join(root, "pipelines/live-detector.sh"), "--config", config, "--quiet",
                                 "--", *FAST_GROUP], env=env, stdout=subprocess.DEVNULL,
                                stderr=err)
    err.close()
    anomalies = os.path.join(out, "anomalies.jsonl" if all_anomalies else "all_detections.jsonl")
    deadline = time.time() + 60
    while not (os.path.exists(anomalies) and os.path.getsize(anomalies) > 0):
        if time.time() > deadline:
            pipeline.kill()
            sys.exit(f"bench-kafka: the pipeline wrote nothing within 60 s; its messages:\n{tail(work)}")
        time.sleep(0.05)
    p = ck.Producer({"bootstrap.servers": addr, "linger.ms": 1})
    total = rate * seconds
    lat = []
    with open(anomalies) as f:
        f.seek(0, os.SEEK_END)
        start = time.time()
        sent = 0
        pending = ""
        while len(lat) < total:
            now = time.time()
            due = min(total, int((now - start) * rate))
            while sent < due:
                p.produce(topic, LINE.format(s=sent % 60, h=sent % 250, i=sent).encode())
                sent += 1
            p.poll(0)
            chunk = f.read()
            if chunk:
                pending += chunk
                *complete, pending = pending.split("\n")
                arrived = time.time() * 1000
                for line in complete:
                    r = json.loads(line)
                    lat.append(arrived - r["source"]["timestamp"])
            else:
                time.sleep(0.0005)
            if now - start > seconds + 30:
                break
    p.flush(10)
    pipeline.terminate()
    pipeline.wait(30)
    shutil.rmtree(work, ignore_errors=True)
    lat.sort()
    pct = {f"p{round(q * 100)}_ms": percentile(lat, q) for q in (0.5, 0.9, 0.95, 0.99)}
    pct["max_ms"] = lat[-1] if lat else float("nan")
    return total, len(lat), pct


def tail(work, n=3000):
    """The end of the pipeline's stderr in work."""
    try:
        with open(os.path.join(work, "pipeline.err"), errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def pipeline_run(root, bin_dir, addr, topic, models=None):
    """Runs the live pipeline with kafka-tail -e over topic until it ends;
    returns (wall seconds, records written to all_detections.jsonl, anomalies
    written to anomalies.jsonl, peak RSS in KiB of its largest process)."""
    work = tempfile.mkdtemp(prefix="bench-kafka-")
    config = write_config(work, root, addr, f"pipe-{topic}", topic, None, models)
    env = dict(os.environ, PF_BIN=bin_dir)
    try:
        with open(os.path.join(work, "pipeline.err"), "wb") as err:
            elapsed, rss = run_timed([os.path.join(root, "pipelines/live-detector.sh"), "--config", config,
                                      "--quiet", "--", "-e", *FAST_GROUP], env=env,
                                     stdout=subprocess.DEVNULL, stderr=err)
    except subprocess.CalledProcessError as e:
        sys.exit(f"bench-kafka: the pipeline failed (status {e.returncode}); its messages:\n{tail(work)}")
    else:
        counts = [count_lines(os.path.join(work, "out", name))
                  for name in ("all_detections.jsonl", "anomalies.jsonl")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return elapsed, counts[0], counts[1], rss


def count_lines(path):
    """Lines in path; 0 when there is no such file (no anomaly written)."""
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def train_on(bin_dir, log, models):
    """A model of log's traffic in models: pf-parse | pf-features | pf-train,
    as a server's retraining makes one."""
    b = lambda tool: shlex.quote(os.path.join(bin_dir, tool))
    subprocess.run(["bash", "-o", "pipefail", "-c",
                    f"{b('pf-parse')} --timezone UTC {shlex.quote(log)} | {b('pf-features')} | "
                    f"{b('pf-train')} --max-lines all --metrics - --models-dir {shlex.quote(models)}"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pipeline_throughput(root, bin_dir, addr, n, name, lines=None, models=None):
    """Messages/s of the whole live pipeline over n messages, less the time
    of the same run over a one-message topic (group join, model load, exit)."""
    produce(addr, f"{name}-one", 1, lines=lines)
    produce(addr, name, n, lines=lines)
    t1, _, _, _ = pipeline_run(root, bin_dir, addr, f"{name}-one", models)
    tn, records, anomalies, rss = pipeline_run(root, bin_dir, addr, name, models)
    return {"messages": n, "records_out": records, "anomalies": anomalies, "wall_s": tn, "one_message_s": t1,
            "messages_per_s": (n - 1) / max(tn - t1, 1e-9), "max_rss_kb": rss}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tansu", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--messages", type=int, default=2_000_000)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--pipeline-messages", type=int, default=0,
                    help="also measure the live pipeline's throughput over this many messages")
    ap.add_argument("--pipeline-log",
                    help="with --pipeline-messages: also the live pipeline over this log's lines, "
                         "with a model trained on them")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args()
    results = {"broker": "tansu", "messages": args.messages, "message_bytes": len(LINE.format(s=0, h=0, i=0)),
               "latency_seconds": args.seconds, "latency": []}
    broker, addr = start_broker(args.tansu)
    try:
        n = args.messages
        produce(addr, "empty-warmup", 1)
        produce(addr, "bench", n)
        print(f"broker: tansu on {addr}; {n} messages of {len(LINE.format(s=0, h=0, i=0))} bytes in topic bench")
        # Empty-topic runs measure the join/leave overhead of each consumer.
        produce(addr, "empty", 0)
        t0_kt, _ = time_kafka_tail(args.bin, addr, "empty-warmup", "kt-empty")
        t_kt, rss_kt = time_kafka_tail(args.bin, addr, "bench", "kt-bench")
        t0_ref, _ = time_reference(addr, "empty-warmup", "ref-empty", 1)
        t_ref, got = time_reference(addr, "bench", "ref-bench", n)
        print("consumer                         messages/s   (wall s, empty-topic s)")
        print(f"kafka-tail (envelopes -> null)   {n / max(t_kt - t0_kt, 1e-9):>10.0f}   ({t_kt:.2f}, {t0_kt:.2f})")
        print(f"confluent-kafka (poll only)      {got / max(t_ref - t0_ref, 1e-9):>10.0f}   ({t_ref:.2f}, {t0_ref:.2f})")
        results["kafka_tail"] = {"messages_per_s": n / max(t_kt - t0_kt, 1e-9), "wall_s": t_kt,
                                 "empty_s": t0_kt, "max_rss_kb": rss_kt}
        results["reference"] = {"messages_per_s": got / max(t_ref - t0_ref, 1e-9), "wall_s": t_ref,
                                "empty_s": t0_ref, "messages": got}
        print()
        print("live pipeline latency, produce -> line in the output file")
        print("output file                          rate/s    sent  arrived    p50 ms   p95 ms   p99 ms   max ms")
        for all_anomalies in (False, True):
            name = "anomalies.jsonl (all explained)" if all_anomalies else "all_detections.jsonl"
            for rate in (1000, 10000):
                total, arrived, pct = latency(args.root, args.bin, addr, rate, args.seconds, all_anomalies)
                print(f"{name:<34} {rate:>6} {total:>7} {arrived:>8} {pct['p50_ms']:>9.1f} {pct['p95_ms']:>8.1f}"
                      f" {pct['p99_ms']:>8.1f} {pct['max_ms']:>8.1f}")
                results["latency"].append({"output": name, "all_anomalies": all_anomalies, "rate": rate,
                                           "sent": total, "arrived": arrived, **pct})
        if args.pipeline_messages > 0:
            runs = []
            if args.pipeline_log:
                models = tempfile.mkdtemp(prefix="bench-kafka-models-")
                try:
                    train_on(args.bin, args.pipeline_log, models)
                    with open(args.pipeline_log, "rb") as f:
                        lines = [line.rstrip(b"\r\n") for line in f if line.strip()]
                    runs.append(("pipeline", pipeline_throughput(args.root, args.bin, addr, args.pipeline_messages,
                                                                 "pipeline", lines, models)))
                    runs[-1][1]["log"] = os.path.basename(args.pipeline_log)
                finally:
                    shutil.rmtree(models, ignore_errors=True)
            runs.append(("pipeline_flood", pipeline_throughput(args.root, args.bin, addr, args.pipeline_messages,
                                                               "pipeline-flood")))
            print()
            for key, pipe in runs:
                results[key] = pipe
                what = f"{pipe['log']}, its own model" if "log" in pipe else "synthetic flood, shipped model"
                print(f"live pipeline throughput ({what}): {pipe['messages_per_s']:.0f} messages/s "
                      f"({pipe['messages']} messages, {pipe['records_out']} records out, "
                      f"{pipe['anomalies']} anomalies; wall {pipe['wall_s']:.2f} s, "
                      f"one-message run {pipe['one_message_s']:.2f} s)")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    finally:
        broker.kill()
        broker.wait()


if __name__ == "__main__":
    main()
