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
   all_detections.jsonl, every record) and with threshold low = 1, which
   makes every record an anomaly that is explained (into anomalies.jsonl;
   the worst case, TreeSHAP for every line).
"""
import argparse
import json
import os
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


def produce(addr, topic, n, batch=10000):
    p = ck.Producer({"bootstrap.servers": addr, "linger.ms": 5, "batch.num.messages": batch})
    for i in range(n):
        while True:
            try:
                p.produce(topic, LINE.format(s=i % 60, h=i % 250, i=i).encode())
                break
            except BufferError:
                p.poll(0.01)
        if i % 10000 == 0:
            p.poll(0)
    p.flush(60)


def time_kafka_tail(bin_dir, addr, topic, group):
    start = time.perf_counter()
    subprocess.run([os.path.join(bin_dir, "kafka-tail"), "-b", addr, "-G", group, "-t", topic, "-e", *FAST_GROUP],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


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


def latency(root, bin_dir, addr, rate, seconds, all_anomalies):
    work = tempfile.mkdtemp(prefix="bench-kafka-")
    out = os.path.join(work, "out")
    topic = f"latency{rate}{'a' if all_anomalies else 'n'}"
    low = 1 if all_anomalies else 0
    config = os.path.join(work, "config.yaml")
    with open(config, "w") as f:
        f.write(f"kafka:\n  broker: \"{addr}\"\n  consumer_group: lat{rate}\n  topics: [{topic}]\n"
                f"paths:\n  models_dir: {root}/models\n  features: {root}/features/behavioural.json\n"
                f"  output_dir: {out}\nanomaly:\n  threshold:\n    high: -0.1\n    medium: -0.05\n    low: {low}\n")
    # Create the topic and let the pipeline join before timing anything.
    produce(addr, topic, 1)
    env = dict(os.environ, PF_BIN=bin_dir)
    pipeline = subprocess.Popen([os.path.join(root, "pipelines/live-detector.sh"), "--config", config, "--quiet",
                                 "--", *FAST_GROUP], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    anomalies = os.path.join(out, "anomalies.jsonl" if all_anomalies else "all_detections.jsonl")
    deadline = time.time() + 60
    while not (os.path.exists(anomalies) and os.path.getsize(anomalies) > 0):
        if time.time() > deadline:
            pipeline.kill()
            sys.exit("bench-kafka: the pipeline wrote nothing within 60 s")
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
    lat.sort()
    return total, len(lat), [percentile(lat, q) for q in (0.5, 0.95, 0.99)] + [lat[-1] if lat else float("nan")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tansu", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--messages", type=int, default=2_000_000)
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    broker, addr = start_broker(args.tansu)
    try:
        n = args.messages
        produce(addr, "empty-warmup", 1)
        produce(addr, "bench", n)
        print(f"broker: tansu on {addr}; {n} messages of {len(LINE.format(s=0, h=0, i=0))} bytes in topic bench")
        # Empty-topic runs measure the join/leave overhead of each consumer.
        produce(addr, "empty", 0)
        t0_kt = time_kafka_tail(args.bin, addr, "empty-warmup", "kt-empty")
        t_kt = time_kafka_tail(args.bin, addr, "bench", "kt-bench")
        t0_ref, _ = time_reference(addr, "empty-warmup", "ref-empty", 1)
        t_ref, got = time_reference(addr, "bench", "ref-bench", n)
        print("consumer                         messages/s   (wall s, empty-topic s)")
        print(f"kafka-tail (envelopes -> null)   {n / max(t_kt - t0_kt, 1e-9):>10.0f}   ({t_kt:.2f}, {t0_kt:.2f})")
        print(f"confluent-kafka (poll only)      {got / max(t_ref - t0_ref, 1e-9):>10.0f}   ({t_ref:.2f}, {t0_ref:.2f})")
        print()
        print("live pipeline latency, produce -> line in the output file")
        print("output file                          rate/s    sent  arrived    p50 ms   p95 ms   p99 ms   max ms")
        for all_anomalies in (False, True):
            name = "anomalies.jsonl (all explained)" if all_anomalies else "all_detections.jsonl"
            for rate in (1000, 10000):
                total, arrived, (p50, p95, p99, mx) = latency(args.root, args.bin, addr, rate, args.seconds,
                                                              all_anomalies)
                print(f"{name:<34} {rate:>6} {total:>7} {arrived:>8} {p50:>9.1f} {p95:>8.1f} {p99:>8.1f} {mx:>8.1f}")
    finally:
        broker.kill()
        broker.wait()


if __name__ == "__main__":
    main()
