//! kafka-tail against a real Kafka-protocol broker (tansu), one per test.

mod common;

use common::*;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

fn dir(name: &str) -> std::path::PathBuf {
    pf_testkit::temp_dir(&format!("kafka-tail-{name}"))
}

#[test]
fn reads_both_topics_once_and_commits_what_it_wrote() {
    let broker = Broker::start("both");
    let postfix = lines("postfix", 300);
    let logins = lines("login", 120);
    produce(&broker.addr(), "postfix", &postfix);
    produce(&broker.addr(), "mail_login", &logins);
    let d = dir("both");
    let args = [
        "-b",
        &broker.addr(),
        "-G",
        "g1",
        "-t",
        "postfix",
        "-t",
        "mail_login",
        "-e",
    ];
    let (code, envelopes, stderr) = run_to_end(&args, &d);
    assert_eq!(code, 0, "{stderr}");
    let mut all = postfix.clone();
    all.extend(logins.iter().cloned());
    assert_same_lines(values(&envelopes), &all, &stderr);
    for e in &envelopes {
        let topic = e["topic"].as_str().unwrap();
        assert!(topic == "postfix" || topic == "mail_login");
        assert!(e["partition"].as_i64().unwrap() >= 0);
        assert!(e["offset"].as_i64().unwrap() >= 0);
        assert!(e["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
        assert!(e["key"].is_null());
        let prefix = if topic == "postfix" {
            "postfix "
        } else {
            "login "
        };
        assert!(e["value"].as_str().unwrap().starts_with(prefix));
    }
    // Offsets within a partition come out in order.
    let mut last: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for e in &envelopes {
        let key = (
            e["topic"].as_str().unwrap().to_string(),
            e["partition"].as_i64().unwrap(),
        );
        let offset = e["offset"].as_i64().unwrap();
        if let Some(prev) = last.insert(key, offset) {
            assert!(offset > prev, "offsets out of order");
        }
    }
    assert!(
        stderr.contains("420 messages, 420 lines written"),
        "{stderr}"
    );

    // The same group again: everything was committed, nothing is re-read.
    let (code, again, stderr) = run_to_end(&args, &d);
    assert_eq!(code, 0, "{stderr}");
    assert!(again.is_empty(), "re-read {} lines: {stderr}", again.len());

    // -o beginning ignores the committed offsets.
    let mut from_start = args.to_vec();
    from_start.extend(["-o", "beginning"]);
    let (_, replay, stderr) = run_to_end(&from_start, &d);
    assert_eq!(replay.len(), 420, "{stderr}");
}

#[test]
fn count_end_and_time_start_positions() {
    let broker = Broker::start("positions");
    let before = lines("before", 50);
    produce_unbatched(&broker.addr(), "postfix", &before);
    std::thread::sleep(Duration::from_millis(1500));
    let cut = chrono_like_now();
    std::thread::sleep(Duration::from_millis(500));
    let after = lines("after", 30);
    produce_unbatched(&broker.addr(), "postfix", &after);
    let d = dir("positions");
    let base = ["-b", &broker.addr(), "-t", "postfix"];

    let mut args = base.to_vec();
    args.extend(["-G", "count", "-c", "7"]);
    let (code, got, stderr) = run_to_end(&args, &d);
    assert_eq!((code, got.len()), (0, 7), "{stderr}");

    let mut args = base.to_vec();
    args.extend(["-G", "end", "-o", "end", "-e"]);
    let (code, got, stderr) = run_to_end(&args, &d);
    assert_eq!(
        (code, got.len()),
        (0, 0),
        "-o end read old messages: {stderr}"
    );

    let mut args = base.to_vec();
    args.extend(["-G", "time", "-o", &cut, "-e"]);
    let (code, got, stderr) = run_to_end(&args, &d);
    assert_eq!(code, 0, "{stderr}");
    assert_same_lines(values(&got), &after, &format!("-o {cut}: {stderr}"));

    let (code, _, stderr) = run_to_end(&["-b", "x:1", "-t", "t", "-o", "yesterday"], &d);
    assert_eq!(code, 2);
    assert!(stderr.contains("RFC 3339"), "{stderr}");
}

/// RFC 3339 UTC time now, without a date library.
fn chrono_like_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%3NZ"])
        .output()
        .expect("date runs");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn several_lines_and_bad_bytes_in_one_message() {
    let broker = Broker::start("bytes");
    produce(
        &broker.addr(),
        "postfix",
        &[
            b"first\nsecond\r\n".to_vec(),
            b"bad \xff\xfe bytes".to_vec(),
            Vec::new(),
        ],
    );
    let d = dir("bytes");
    let (code, got, stderr) = run_to_end(
        &["-b", &broker.addr(), "-G", "g", "-t", "postfix", "-e"],
        &d,
    );
    assert_eq!(code, 0, "{stderr}");
    let vals = sorted(values(&got));
    assert_eq!(
        vals,
        vec!["", "bad \u{fffd}\u{fffd} bytes", "first", "second"]
    );
    let bad = got
        .iter()
        .find(|e| e["value"].as_str().unwrap().starts_with("bad"))
        .unwrap();
    assert_eq!(bad["flags"], serde_json::json!(["invalid_utf8"]));
    let second = got.iter().find(|e| e["value"] == "second").unwrap();
    let first = got.iter().find(|e| e["value"] == "first").unwrap();
    assert_eq!(first["offset"], second["offset"], "one message, one offset");
    assert!(stderr.contains("1 with invalid UTF-8 repaired"), "{stderr}");
}

/// Stop kafka-tail mid-stream (SIGTERM, then SIGKILL) and start it again:
/// every message comes out at least once.
#[test]
fn restart_mid_stream_skips_nothing() {
    let broker = Broker::start("restart");
    let d = dir("restart");
    let total = lines("restart", 20_000);
    let addr = broker.addr();
    let producer = {
        let total = total.clone();
        let addr = addr.clone();
        std::thread::spawn(move || {
            for chunk in total.chunks(500) {
                produce(&addr, "postfix", chunk);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let args = ["-b", &addr, "-G", "restart", "-t", "postfix"];
    let mut seen: Vec<String> = Vec::new();

    let first = kafka_tail(&args, &d);
    first.wait_for(60, "the first lines", |n, _| n >= 1000);
    first.signal("TERM");
    let (code, got, stderr) = first.finish(30);
    assert_eq!(code, 0, "SIGTERM must end cleanly: {stderr}");
    assert!(stderr.contains("offsets committed"), "{stderr}");
    seen.extend(values(&got));

    let second = kafka_tail(&args, &d);
    second.wait_for(60, "more lines", |n, _| n >= 1000);
    second.signal("KILL");
    let (_, got, _) = second.finish(30);
    seen.extend(values(&got));

    producer.join().expect("producer thread");
    let mut last = args.to_vec();
    last.push("-e");
    let (code, got, stderr) = run_to_end(&last, &d);
    assert_eq!(code, 0, "{stderr}");
    seen.extend(values(&got));

    let unique: HashSet<&String> = seen.iter().collect();
    let missing = expected(&total)
        .into_iter()
        .filter(|v| !unique.contains(v))
        .count();
    eprintln!(
        "restart: {} lines out for {} messages ({} repeated after the SIGKILL)",
        seen.len(),
        total.len(),
        seen.len() - unique.len()
    );
    assert_eq!(missing, 0, "messages skipped across restarts");
    assert_eq!(unique.len(), total.len());
}

/// Kill the broker under a running kafka-tail and start it again: kafka-tail
/// says so on stderr, keeps retrying, and delivers what is produced after.
/// (tansu here keeps messages in memory, so what the dead broker held is
/// gone with it; messages consumed before the crash were all written.)
#[test]
fn broker_crash_and_restart() {
    let mut broker = Broker::start("crash");
    let d = dir("crash");
    let before = lines("before-crash", 200);
    produce(&broker.addr(), "postfix", &before);
    let args = ["-b", &broker.addr(), "-G", "crash", "-t", "postfix"];
    let tail = kafka_tail(&args, &d);
    tail.wait_for(60, "the lines before the crash", |n, _| n >= before.len());
    broker.kill();
    tail.wait_for(60, "a message about the broker", |_, err| {
        err.contains("still retrying")
    });
    std::thread::sleep(Duration::from_secs(2));
    broker.restart();
    let after = lines("after-crash", 200);
    produce(&broker.addr(), "postfix", &after);
    tail.wait_for(90, "the lines after the restart", |n, _| {
        n >= before.len() + after.len()
    });
    tail.signal("TERM");
    let (code, got, stderr) = tail.finish(30);
    assert_eq!(code, 0, "{stderr}");
    let got: HashSet<String> = values(&got).into_iter().collect();
    for v in expected(&before).iter().chain(expected(&after).iter()) {
        assert!(got.contains(v), "missing {v}; stderr:\n{stderr}");
    }
}

/// No broker at start: kafka-tail says so and keeps trying, then consumes
/// once the broker is up.
#[test]
fn broker_down_at_start() {
    let mut broker = Broker::not_started("late");
    let d = dir("late");
    let args = ["-b", &broker.addr(), "-G", "late", "-t", "postfix"];
    let addr = broker.addr();
    let tail = kafka_tail(&args, &d);
    tail.wait_for(30, "a message about the missing broker", |_, err| {
        err.contains(&addr) && err.contains("still retrying")
    });
    broker.restart();
    let msgs = lines("late", 50);
    produce(&broker.addr(), "postfix", &msgs);
    tail.wait_for(90, "the messages", |n, _| n >= msgs.len());
    tail.signal("TERM");
    let (code, got, stderr) = tail.finish(30);
    assert_eq!(code, 0, "{stderr}");
    assert_same_lines(values(&got), &msgs, &stderr);
}

/// Two kafka-tail instances in one group, each holding partitions once
/// the group has settled after the second one's join.
fn two_members(args: &[&str], d: &std::path::Path) -> (Tail, Tail) {
    let a = kafka_tail(args, d);
    a.wait_for(60, "the first assignment", |_, err| {
        err.contains("assigned")
    });
    let b = kafka_tail(args, d);
    b.wait_for(60, "the second assignment", |_, err| {
        err.contains("assigned")
    });
    std::thread::sleep(Duration::from_secs(3));
    (a, b)
}

/// Two instances in one group share the partitions and together see every
/// message once.
#[test]
fn two_instances_split_the_partitions() {
    let broker = Broker::start("split");
    let d = dir("split");
    // Creates the topic (tansu gives a new topic several partitions).
    let warmup = lines("warmup", 40);
    produce_unbatched(&broker.addr(), "postfix", &warmup);
    let args = [
        "-b",
        &broker.addr(),
        "-G",
        "split",
        "-t",
        "postfix",
        "-o",
        "end",
    ];
    let (a, b) = two_members(&args, &d);
    let msgs = lines("split", 400);
    produce(&broker.addr(), "postfix", &msgs);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while a.lines_so_far() + b.lines_so_far() < msgs.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "a: {}\nb: {}",
            a.stderr(),
            b.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    a.signal("TERM");
    b.signal("TERM");
    let (_, got_a, err_a) = a.finish(30);
    let (_, got_b, err_b) = b.finish(30);
    let (va, vb) = (values(&got_a), values(&got_b));
    assert!(
        !va.is_empty() && !vb.is_empty(),
        "one instance got nothing:\n{err_a}\n{err_b}"
    );
    let mut all = va.clone();
    all.extend(vb.iter().cloned());
    assert_same_lines(all, &msgs, "each message exactly once across the group");
    eprintln!("split: {} and {} messages", va.len(), vb.len());
}

/// The layout that keeps a mail host's history on one instance
/// (docs/operations.md, "Scaling out"): both topics keyed by the host with
/// the producer's default partitioner, the same partition count, and
/// librdkafka's default range assignor, which gives each member the same
/// partition numbers of every topic. Two instances in one group: each
/// holds partition i of both topics or of neither, and every line of a
/// host, from either topic, reaches the same instance.
#[test]
fn a_hosts_lines_of_both_topics_reach_one_instance() {
    use rdkafka::producer::{BaseRecord, Producer};
    let broker = Broker::start("copartition");
    let d = dir("copartition");
    // Creates both topics, with tansu's partition count each.
    for topic in ["postfix", "mail_login"] {
        produce_unbatched(&broker.addr(), topic, &lines(&format!("warmup-{topic}"), 8));
    }
    let args = [
        "-b",
        &broker.addr(),
        "-G",
        "copartition",
        "-t",
        "postfix",
        "-t",
        "mail_login",
        "-o",
        "end",
    ];
    let (a, b) = two_members(&args, &d);
    // What rsyslog's omkafka (librdkafka) does with `key="%hostname%"`.
    let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("partitioner", "consistent_random")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let hosts: Vec<String> = (0..12).map(|h| format!("mx{h}.example.org")).collect();
    let mut sent = Vec::new();
    for i in 0..20 {
        for host in &hosts {
            for topic in ["postfix", "mail_login"] {
                let line = format!("{host} {topic} line {i}");
                let record = BaseRecord::to(topic)
                    .key(host.as_str())
                    .payload(line.as_str());
                producer.send(record).map_err(|(e, _)| e).expect("queued");
                sent.push(line.into_bytes());
            }
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("all acknowledged");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while a.lines_so_far() + b.lines_so_far() < sent.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "a: {}\nb: {}",
            a.stderr(),
            b.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    a.signal("TERM");
    b.signal("TERM");
    let (_, got_a, err_a) = a.finish(30);
    let (_, got_b, err_b) = b.finish(30);
    let mut all = values(&got_a);
    all.extend(values(&got_b));
    assert_same_lines(all, &sent, "each line once across the group");
    let mut instance_of_host: BTreeMap<String, usize> = BTreeMap::new();
    for (instance, got) in [&got_a, &got_b].into_iter().enumerate() {
        let mut partitions: BTreeMap<&str, HashSet<i64>> = BTreeMap::new();
        for e in got {
            let topic = e["topic"].as_str().expect("topic");
            partitions
                .entry(topic)
                .or_default()
                .insert(e["partition"].as_i64().expect("partition"));
            let Some(host) = e["key"].as_str() else {
                continue;
            };
            let first = *instance_of_host.entry(host.to_string()).or_insert(instance);
            assert_eq!(
                first, instance,
                "{host}'s lines went to both instances:\n{err_a}\n{err_b}"
            );
        }
        assert_eq!(
            partitions.get("postfix"),
            partitions.get("mail_login"),
            "instance {instance} holds different partitions of the two topics"
        );
    }
    assert_eq!(instance_of_host.len(), hosts.len());
    let on_a = instance_of_host.values().filter(|&&i| i == 0).count();
    assert!(
        on_a > 0 && on_a < hosts.len(),
        "all hosts on one instance ({on_a} of {} on the first):\n{err_a}\n{err_b}",
        hosts.len()
    );
}

/// A closed stdout ends kafka-tail quietly with status 0, and nothing is
/// skipped: the next run continues, per partition, right after lines that
/// were written into the pipe (what a pipe held when its reader died is
/// gone with the reader; the offsets say "written", which it was).
#[test]
fn closed_stdout_ends_quietly_without_gaps() {
    let broker = Broker::start("epipe");
    let d = dir("epipe");
    let msgs = lines("epipe", 5000);
    produce(&broker.addr(), "postfix", &msgs);
    let script = format!(
        "set -o pipefail; {} -b {} -G epipe -t postfix {} 2>stderr.txt | head -n 10 > head.txt",
        env!("CARGO_BIN_EXE_kafka-tail"),
        broker.addr(),
        FAST_GROUP.join(" ")
    );
    let status = std::process::Command::new("bash")
        .args(["-c", &script])
        .current_dir(&d)
        .status()
        .expect("bash");
    let stderr = std::fs::read_to_string(d.join("stderr.txt")).unwrap();
    assert!(
        status.success(),
        "kafka-tail | head must end with status 0: {stderr}"
    );
    assert!(!stderr.contains("error"), "{stderr}");
    let (code, rest, stderr) = run_to_end(
        &["-b", &broker.addr(), "-G", "epipe", "-t", "postfix", "-e"],
        &d,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !rest.is_empty(),
        "the run after a closed pipe found nothing left"
    );
    let mut per_partition: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for e in &rest {
        per_partition
            .entry(e["partition"].as_i64().unwrap())
            .or_default()
            .push(e["offset"].as_i64().unwrap());
    }
    for (p, offsets) in per_partition {
        for w in offsets.windows(2) {
            assert_eq!(w[1], w[0] + 1, "gap in partition {p}");
        }
    }
}

/// --lag reports how far the group is behind, without joining it.
#[test]
fn lag_before_and_after_consuming() {
    let broker = Broker::start("lag");
    let d = dir("lag");
    produce_unbatched(&broker.addr(), "postfix", &lines("lag", 40));
    let lag = |d: &std::path::Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kafka-tail"))
            .args([
                "-b",
                &broker.addr(),
                "-G",
                "lagging",
                "-t",
                "postfix",
                "--lag",
            ])
            .env_remove("PF_CONFIG")
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = lag(&d);
    assert!(
        before.contains("group lagging: 40 message(s) behind"),
        "{before}"
    );
    assert_eq!(
        before.lines().filter(|l| l.starts_with("postfix")).count(),
        TANSU_PARTITIONS
    );
    let (code, got, stderr) = run_to_end(
        &["-b", &broker.addr(), "-G", "lagging", "-t", "postfix", "-e"],
        &d,
    );
    assert_eq!((code, got.len()), (0, 40), "{stderr}");
    let after = lag(&d);
    assert!(
        after.contains("group lagging: 0 message(s) behind"),
        "{after}"
    );
}
