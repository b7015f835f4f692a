//! pipelines/live-detector.sh end to end on a real broker: the bundled
//! sample's Postfix and Roundcube lines produced to the two topics come out,
//! record for record, in the old system's output files.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The other stages' binaries sit beside kafka-tail's in the target dir.
fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_kafka-tail"))
        .parent()
        .expect("binary dir")
        .to_path_buf();
    for tool in ["pf-parse", "pf-features", "pf-score", "pf-sink"] {
        assert!(
            dir.join(tool).is_file(),
            "{tool} is not built in {}: run the workspace's tests (cargo test --workspace)",
            dir.display()
        );
    }
    dir
}

/// A config for the detector on `broker`, with the repository's model.
fn write_config(dir: &Path, broker: &Broker, group: &str, topics: &str, out: &Path) -> PathBuf {
    let kafka = format!(
        "kafka:\n  broker: \"{}\"\n  consumer_group: {group}\n  topics: {topics}\n",
        broker.addr()
    );
    write_config_with(dir, &kafka, out)
}

/// A config with the repository's model and features, writing to `out`,
/// after `kafka` (a `kafka:` section, or nothing for a replay).
fn write_config_with(dir: &Path, kafka: &str, out: &Path) -> PathBuf {
    let repo = repo();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "{kafka}paths:\n  models_dir: {}\n  features: {}\n  output_dir: {}\n",
            repo.join("models").display(),
            repo.join("features/behavioural.json").display(),
            out.display()
        ),
    )
    .unwrap();
    config
}

/// live-detector.sh's arguments: the config, quiet, then kafka-tail's.
fn detector_args(config: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--config".into(),
        config.display().to_string(),
        "--quiet".into(),
        "--".into(),
    ];
    args.extend(FAST_GROUP.iter().map(|s| s.to_string()));
    args
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

fn records(path: &Path) -> Vec<Value> {
    read_lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

#[test]
fn sample_through_kafka_into_the_output_files() {
    let broker = Broker::start("live");
    let dir = pf_testkit::temp_dir("live-detector");
    let repo = repo();
    let postfix = read_lines(&repo.join("pipelines/sample/mail.log"));
    let roundcube = read_lines(&repo.join("pipelines/sample/roundcube.log"));
    let as_bytes = |v: &[String]| v.iter().map(|l| l.as_bytes().to_vec()).collect::<Vec<_>>();
    produce(&broker.addr(), "postfix", &as_bytes(&postfix));
    produce(&broker.addr(), "mail_login", &as_bytes(&roundcube));

    let out = dir.join("out");
    let config = write_config(&dir, &broker, "live-test", "[postfix, mail_login]", &out);
    let mut args = detector_args(&config);
    args.push("-e".into());
    let run = Command::new(repo.join("pipelines/live-detector.sh"))
        .args(&args)
        .env("PF_BIN", bin_dir())
        .env_remove("PF_CONFIG")
        .current_dir(&dir)
        .output()
        .expect("live-detector.sh runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "live-detector.sh failed:\n{stderr}");

    // Every produced line was scored once, with its Kafka coordinates.
    let all = records(&out.join("all_detections.jsonl"));
    assert_eq!(all.len(), postfix.len() + roundcube.len(), "{stderr}");
    // The behavioural features' memory and the tuning report are left behind.
    assert!(
        dir.join("state/features-state.json").is_file(),
        "features state not saved: {stderr}"
    );
    let report = std::fs::read_to_string(out.join("report.html")).expect("report.html written");
    assert!(
        report.contains(&format!("{} records scored", all.len())),
        "the report covers every record"
    );
    let mut raw_by_topic: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut coordinates = BTreeSet::new();
    for r in &all {
        let topic = r["source"]["topic"]
            .as_str()
            .expect("source.topic")
            .to_string();
        let key = (
            topic.clone(),
            r["source"]["partition"].as_i64().expect("partition"),
            r["source"]["offset"].as_i64().expect("offset"),
        );
        assert!(coordinates.insert(key), "a message was scored twice");
        raw_by_topic
            .entry(topic)
            .or_default()
            .push(r["raw"].as_str().unwrap().to_string());
        let d = &r["detection"];
        assert!(d["score"].is_f64(), "no score: {r}");
        assert!(d["model"].is_string());
        assert!(
            r["kind"].as_str() != Some("unknown"),
            "sample line not parsed: {r}"
        );
    }
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(raw_by_topic["postfix"].clone()),
        sorted(postfix.clone())
    );
    assert_eq!(
        sorted(raw_by_topic["mail_login"].clone()),
        sorted(roundcube.clone())
    );

    // Per-topic parsed records: same lines, without features and detection.
    let postfix_logs = records(&out.join("postfix_logs.json"));
    let login_logs = records(&out.join("mail_login_logs.json"));
    assert_eq!(postfix_logs.len(), postfix.len());
    assert_eq!(login_logs.len(), roundcube.len());
    for r in postfix_logs.iter().chain(&login_logs) {
        assert!(r.get("detection").is_none() && r.get("features").is_none());
        assert!(r["kind"].is_string() && r["raw"].is_string());
    }
    assert!(login_logs
        .iter()
        .all(|r| r["program"] == "roundcube" && r["source"]["topic"] == "mail_login"));

    // anomalies.jsonl is exactly the anomalous part of all_detections.
    let anomalies = records(&out.join("anomalies.jsonl"));
    let flagged: Vec<&Value> = all
        .iter()
        .filter(|r| r["detection"]["is_anomaly"] == true)
        .collect();
    assert_eq!(anomalies.len(), flagged.len());
    assert!(
        !anomalies.is_empty(),
        "the sample's attacks raise no anomaly"
    );
    for a in &anomalies {
        assert_eq!(a["detection"]["is_anomaly"], true);
        // The shipped model is calibrated: an anomaly is at least as rare
        // as anomaly.rarity.low, one in 1,000 normal lines.
        assert!(a["detection"]["rarity"].as_f64().unwrap() >= 1000.0, "{a}");
        assert_ne!(a["detection"]["severity"], "none");
        assert_eq!(a["detection"]["top_features"].as_array().unwrap().len(), 3);
    }
    assert!(
        stderr.contains(&format!(
            "pf-sink: {} records, {} anomalies",
            all.len(),
            anomalies.len()
        )),
        "{stderr}"
    );

    // Running again continues after the committed offsets: nothing new.
    let again = Command::new(repo.join("pipelines/live-detector.sh"))
        .args(&args)
        .env("PF_BIN", bin_dir())
        .current_dir(&dir)
        .output()
        .expect("live-detector.sh runs");
    assert!(again.status.success());
    assert_eq!(records(&out.join("all_detections.jsonl")).len(), all.len());
}

/// A stage dying mid-stream stops the whole pipeline with a non-zero
/// status (so systemd restarts it), instead of leaving half a pipeline;
/// and what was in flight between the stages is not committed, so the
/// restart reads it again: every message ends up in the output.
#[test]
fn a_dead_stage_stops_the_pipeline_and_the_restart_loses_nothing() {
    let broker = Broker::start("live-kill");
    let dir = pf_testkit::temp_dir("live-detector-kill");
    let out = dir.join("out");
    let all = out.join("all_detections.jsonl");
    let repo = repo();
    let config = write_config(&dir, &broker, "kill-test", "[postfix]", &out);
    let args = detector_args(&config);
    let msgs: Vec<Vec<u8>> = (0..20_000)
        .map(|i| {
            format!("2026-03-02T10:00:00.000000+00:00 mx1 postfix/smtpd[1]: connect from unknown[192.0.2.1] n={i}")
                .into_bytes()
        })
        .collect();
    let mut child = Command::new(repo.join("pipelines/live-detector.sh"))
        .args(&args)
        .env("PF_BIN", bin_dir())
        .current_dir(&dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("live-detector.sh starts");
    // Messages keep arriving while a stage is killed, so some are in the
    // pipes between the stages at that moment.
    let addr = broker.addr();
    let to_send = msgs.clone();
    let producer = std::thread::spawn(move || {
        for chunk in to_send.chunks(500) {
            produce(&addr, "postfix", chunk);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    let count = |path: &Path| std::fs::read_to_string(path).map_or(0, |t| t.lines().count());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while count(&all) < 3000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pipeline wrote too little before the kill"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = Command::new("pgrep")
        .args(["-P", &child.id().to_string(), "-x", "pf-features"])
        .output()
        .expect("pgrep");
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
    assert!(!pid.is_empty(), "pf-features is not running");
    Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let tree = Command::new("ps").args(["-ef"]).output().unwrap();
            let _ = child.kill();
            let mut stderr = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
            panic!(
                "the pipeline kept running with a dead stage:\n{stderr}\n{}",
                String::from_utf8_lossy(&tree.stdout)
                    .lines()
                    .filter(|l| l.contains("pf-")
                        || l.contains("kafka-tail")
                        || l.contains("live-detector"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        !status.success(),
        "exit status must say the pipeline failed"
    );
    assert!(stderr.contains("stopping the pipeline"), "{stderr}");
    let left = Command::new("pgrep")
        .args(["-f", &config.display().to_string()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "stages left running after the pipeline stopped"
    );
    producer.join().expect("producer");
    let written_before_restart = count(&all);
    assert!(
        written_before_restart < msgs.len(),
        "the kill came after everything was written; the test proves nothing"
    );

    // The restart (what systemd does) reads on from the committed offsets.
    let mut args = args;
    args.push("-e".into());
    let again = Command::new(repo.join("pipelines/live-detector.sh"))
        .args(&args)
        .env("PF_BIN", bin_dir())
        .current_dir(&dir)
        .output()
        .expect("live-detector.sh runs");
    let again_err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "restart failed:\n{again_err}");
    let mut seen = BTreeSet::new();
    let mut lines = 0;
    for r in records(&all) {
        lines += 1;
        seen.insert((
            r["source"]["partition"].as_i64().expect("partition"),
            r["source"]["offset"].as_i64().expect("offset"),
        ));
    }
    assert_eq!(
        seen.len(),
        msgs.len(),
        "messages lost across the kill: {} of {} in the output ({lines} lines, {written_before_restart} before the restart)\nfirst run:\n{stderr}\nrestart:\n{again_err}",
        seen.len(),
        msgs.len()
    );
}

/// SIGTERM (systemctl stop) ends the pipeline cleanly: kafka-tail stops
/// first, the later stages drain, the exit status is 0 and every line
/// consumed is in the output.
#[test]
fn sigterm_drains_and_exits_cleanly() {
    let broker = Broker::start("live-term");
    let dir = pf_testkit::temp_dir("live-detector-term");
    let out = dir.join("out");
    let msgs = lines(
        "2026-03-02T10:00:00.000000+00:00 mx1 postfix/smtpd[1]: connect from unknown[192.0.2.1]",
        300,
    );
    produce(&broker.addr(), "postfix", &msgs);
    let config = write_config(&dir, &broker, "term-test", "[postfix]", &out);
    let mut child = Command::new(repo().join("pipelines/live-detector.sh"))
        .args(detector_args(&config))
        .env("PF_BIN", bin_dir())
        .current_dir(&dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("live-detector.sh starts");
    let all = out.join("all_detections.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&all).map_or(0, |t| t.lines().count()) < msgs.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "the pipeline wrote too little"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        status.success(),
        "SIGTERM must end the pipeline with 0:\n{stderr}"
    );
    assert!(stderr.contains("offsets committed"), "{stderr}");
    assert_eq!(records(&all).len(), msgs.len());
}

/// live-detector.sh --replay of the sample's two logs into `out`.
fn replay_sample(dir: &Path, out: &Path) -> std::process::Output {
    let repo = repo();
    let config = write_config_with(dir, "", out);
    Command::new(repo.join("pipelines/live-detector.sh"))
        .arg("--config")
        .arg(&config)
        .args(["--quiet", "--output-dir"])
        .arg(out)
        .arg("--replay")
        .arg(repo.join("pipelines/sample/mail.log"))
        .arg(repo.join("pipelines/sample/roundcube.log"))
        .env("PF_BIN", bin_dir())
        .env_remove("PF_CONFIG")
        .current_dir(dir)
        .output()
        .expect("live-detector.sh runs")
}

/// `--replay` of the sample's mail.log and roundcube.log (what run.sh
/// does) interleaves them by event time: the webmail logins sit among the
/// same hour's mail instead of after the whole day; every output file is
/// there from the start of the run.
#[test]
fn replay_merges_the_logs_in_time_order() {
    let dir = pf_testkit::temp_dir("live-detector-replay");
    let out = dir.join("out");
    let run = replay_sample(&dir, &out);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let all = records(&out.join("all_detections.jsonl"));
    let times: Vec<chrono::DateTime<chrono::FixedOffset>> = all
        .iter()
        .filter_map(|r| r["ts"].as_str())
        .map(|t| chrono::DateTime::parse_from_rfc3339(t).expect("RFC 3339 ts"))
        .collect();
    assert!(times.len() > all.len() / 2);
    let backwards = times.windows(2).filter(|w| w[1] < w[0]).count();
    assert_eq!(
        backwards, 0,
        "the replay goes back in time {backwards} times"
    );
    // Both logs are in there, and interleaved: a Roundcube record comes
    // before the last Postfix one.
    let programs: Vec<&str> = all
        .iter()
        .map(|r| r["program"].as_str().unwrap_or(""))
        .collect();
    let first_webmail = programs
        .iter()
        .position(|p| *p == "roundcube")
        .expect("webmail records");
    let last_mail = programs
        .iter()
        .rposition(|p| p.starts_with("postfix"))
        .expect("mail records");
    assert!(first_webmail < last_mail, "the logs were not interleaved");
    for name in [
        "all_detections.jsonl",
        "anomalies.jsonl",
        "postfix_logs.json",
        "mail_login_logs.json",
    ] {
        assert!(out.join(name).is_file(), "{name}");
    }
}

/// One parsed sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// `GET /metrics` over plain HTTP: the body.
fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    Some(body.to_string())
}

/// The exposition as Prometheus's Python client parses it: (name, labels, value).
fn parse_exposition(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    use std::io::Write;
    let python = std::env::var("PF_PYTHON").expect("PF_PYTHON names the test venv's python");
    let mut child = Command::new(python)
        .arg(repo().join("tests/receivers/parse_metrics.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client cannot parse the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for family in parsed["families"].as_array().unwrap() {
        types.insert(
            family["name"].as_str().unwrap().to_string(),
            family["type"].as_str().unwrap().to_string(),
        );
        for s in family["samples"].as_array().unwrap() {
            let labels = s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            samples.push((
                s["name"].as_str().unwrap().to_string(),
                labels,
                s["value"].as_f64().unwrap(),
            ));
        }
    }
    (samples, types)
}

/// The live detector with `prometheus.listen`: scraped with Prometheus's
/// own parser, every stage's counts, the lines by class, the anomalies and
/// incident events by severity and the open incidents match the files; the
/// consumer lag is there per partition, the model and the last retraining
/// too, and no label holds an address or a user.
#[test]
fn the_metrics_endpoint_counts_what_the_files_hold() {
    let broker = Broker::start("live-metrics");
    let dir = pf_testkit::temp_dir("live-detector-metrics");
    let repo = repo();
    let postfix = read_lines(&repo.join("pipelines/sample/mail.log"));
    let roundcube = read_lines(&repo.join("pipelines/sample/roundcube.log"));
    let as_bytes = |v: &[String]| v.iter().map(|l| l.as_bytes().to_vec()).collect::<Vec<_>>();
    produce(&broker.addr(), "postfix", &as_bytes(&postfix));
    produce(&broker.addr(), "mail_login", &as_bytes(&roundcube));
    let total = postfix.len() + roundcube.len();
    let out = dir.join("out");
    let config = write_config(&dir, &broker, "metrics-test", "[postfix, mail_login]", &out);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text += &format!("prometheus:\n  listen: 127.0.0.1:{port}\n");
    std::fs::write(&config, text).unwrap();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(
        dir.join("logs/retraining.log"),
        "2026-12-01T02:59:00Z retrain.sh: FAILED: none of the logs is readable\n\
         2026-12-01T03:00:00Z retrain.sh: done: model 20261201T030000Z is current, trained on x\n\
         2026-12-01T03:00:01Z pf-train: a later line that is not a result\n",
    )
    .unwrap();
    let mut child = Command::new(repo.join("pipelines/live-detector.sh"))
        .args(detector_args(&config))
        .env("PF_BIN", bin_dir())
        .env_remove("PF_METRICS_DIR")
        .current_dir(&dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("live-detector.sh starts");
    let all = out.join("all_detections.jsonl");
    let started = std::time::Instant::now();
    let value = |samples: &[Sample], name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    };
    // Wait until everything is written and every stage has reported it.
    let (samples, types) = loop {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(90),
            "the stages' counts did not reach {total}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
        if std::fs::read_to_string(&all).map_or(0, |t| t.lines().count()) < total {
            continue;
        }
        let Some(body) = scrape(port) else { continue };
        let (samples, types) = parse_exposition(&body);
        let read = |stage| {
            value(
                &samples,
                "postfix_anomaly_stage_records_read_total",
                &[("stage", stage)],
            )
        };
        if [
            "kafka-tail",
            "pf-parse",
            "pf-features",
            "pf-score",
            "pf-sink",
        ]
        .iter()
        .all(|s| read(s) as usize == total)
        {
            break (samples, types);
        }
    };
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "pf-sink: metrics at http://127.0.0.1:{port}/metrics"
        )),
        "{stderr}"
    );

    let records = records(&all);
    for stage in ["pf-parse", "pf-features", "pf-score", "pf-sink"] {
        let written = value(
            &samples,
            "postfix_anomaly_stage_records_written_total",
            &[("stage", stage)],
        );
        assert_eq!(written as usize, total, "{stage} wrote every record");
        assert_eq!(
            value(
                &samples,
                "postfix_anomaly_stage_records_rejected_total",
                &[("stage", stage)]
            ),
            0.0
        );
    }
    assert_eq!(types["postfix_anomaly_stage_records_read"], "counter");
    assert_eq!(types["postfix_anomaly_open_incidents"], "gauge");
    // Lines by daemon and class add up, and the unknown ones are the files' unknown lines.
    assert_eq!(
        value(&samples, "postfix_anomaly_lines_total", &[]) as usize,
        total
    );
    let unknown = records.iter().filter(|r| r["kind"] == "unknown").count();
    assert_eq!(
        value(
            &samples,
            "postfix_anomaly_lines_total",
            &[("class", "unknown")]
        ) as usize,
        unknown
    );
    let auth = records.iter().filter(|r| r["failure"] == "auth").count();
    assert!(auth > 0);
    assert_eq!(
        value(
            &samples,
            "postfix_anomaly_lines_total",
            &[("class", "auth")]
        ) as usize,
        auth
    );
    // Anomalies by severity, as anomalies.jsonl has them.
    let anomalies = self::records(&out.join("anomalies.jsonl"));
    for severity in ["low", "medium", "high"] {
        let n = anomalies
            .iter()
            .filter(|a| a["detection"]["severity"] == severity)
            .count();
        assert_eq!(
            value(
                &samples,
                "postfix_anomaly_anomalies_total",
                &[("severity", severity)]
            ) as usize,
            n,
            "{severity}"
        );
    }
    // Incident events by event and severity, as incidents.jsonl has them.
    let events = self::records(&out.join("incidents.jsonl"));
    assert!(!events.is_empty());
    let mut by: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in &events {
        *by.entry((
            e["event"].as_str().unwrap().into(),
            e["severity"].as_str().unwrap().into(),
        ))
        .or_default() += 1;
    }
    for ((event, severity), n) in &by {
        assert_eq!(
            value(
                &samples,
                "postfix_anomaly_incident_events_total",
                &[("event", event), ("severity", severity)]
            ) as usize,
            *n
        );
    }
    assert_eq!(
        value(&samples, "postfix_anomaly_incident_events_total", &[]) as usize,
        events.len()
    );
    let opened = events.iter().filter(|e| e["event"] == "opened").count();
    let closed = events.iter().filter(|e| e["event"] == "closed").count();
    assert_eq!(
        value(&samples, "postfix_anomaly_open_incidents", &[]) as usize,
        opened - closed
    );
    // Every partition read to its end.
    let lags: Vec<&Sample> = samples
        .iter()
        .filter(|(n, _, _)| n == "postfix_anomaly_kafka_consumer_lag_messages")
        .collect();
    assert!(
        lags.iter().any(|(_, l, _)| l["topic"] == "postfix"),
        "{lags:?}"
    );
    assert!(
        lags.iter().any(|(_, l, _)| l["topic"] == "mail_login"),
        "{lags:?}"
    );
    assert!(lags.iter().all(|(_, _, v)| *v == 0.0), "{lags:?}");
    // The model that scored the records, and the last retraining's result.
    let model = records[0]["detection"]["model"].as_str().unwrap();
    assert_eq!(
        value(
            &samples,
            "postfix_anomaly_model_info",
            &[("version", model)]
        ),
        1.0
    );
    assert_eq!(
        value(&samples, "postfix_anomaly_retraining_last_run_success", &[]),
        1.0
    );
    let done = chrono::DateTime::parse_from_rfc3339("2026-12-01T03:00:00Z")
        .unwrap()
        .timestamp();
    assert_eq!(
        value(
            &samples,
            "postfix_anomaly_retraining_last_run_timestamp_seconds",
            &[]
        ),
        done as f64
    );
    // Bounded labels only: never an address, a user or a queue id.
    let allowed = [
        "stage",
        "daemon",
        "class",
        "severity",
        "event",
        "destination",
        "result",
        "topic",
        "partition",
        "version",
    ];
    for (name, labels, _) in &samples {
        assert!(name.starts_with("postfix_anomaly_"), "{name}");
        for key in labels.keys() {
            assert!(allowed.contains(&key.as_str()), "{name} has label {key}");
        }
    }
}

/// Headless Chromium's screenshot of a page, and its DOM after rendering.
fn render_in_chromium(page: &Path, png: &Path) -> String {
    let chromium = std::env::var("PF_CHROMIUM").expect(
        "PF_CHROMIUM names the browser tests/setup-chromium.sh installs (tests/run.sh sets it)",
    );
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1200,1800",
    ];
    let url = format!("file://{}", page.display());
    let shot = Command::new(&chromium)
        .args(flags)
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .expect("chromium runs");
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let dom = Command::new(&chromium)
        .args(flags)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("chromium runs");
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    String::from_utf8_lossy(&dom.stdout).into_owned()
}

/// A PNG's width and height, from its IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (word(16), word(20))
}

/// The sample's report.html, as an admin opens it: Chromium renders a page
/// that is not blank, with a row per incident of incidents.jsonl and a dot
/// per incident on the time axis, the most severe first; pf-sink brought the
/// incidents up to date after pf-score had written the page.
#[test]
fn the_report_shows_the_incidents_in_a_browser() {
    let dir = pf_testkit::temp_dir("live-detector-report");
    let out = dir.join("out");
    let run = replay_sample(&dir, &out);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let events = records(&out.join("incidents.jsonl"));
    let ids: BTreeSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(ids.len() >= 3, "{events:?}");

    let page = out.join("report.html");
    let png = dir.join("report.png");
    let dom = render_in_chromium(&page, &png);
    let rows = dom.matches("<tr class=\"incident ").count();
    assert_eq!(rows, ids.len(), "one row per incident");
    assert_eq!(
        dom.matches("<circle class=\"incident ").count(),
        ids.len(),
        "a dot per incident"
    );
    assert!(dom.contains(&format!("{} incidents in", ids.len())));
    // Every incident closed at the end of the replay, as the file says.
    assert_eq!(dom.matches("<td>closed</td>").count(), ids.len());
    let first_row = dom.find("<tr class=\"incident ").unwrap();
    assert!(
        dom[first_row..].starts_with("<tr class=\"incident high\""),
        "the most severe first"
    );
    for key in events.iter().map(|e| e["key"].as_str().unwrap()) {
        assert!(dom.contains(key), "{key} is not in the page");
    }
    assert!(
        dom.contains("bar high"),
        "the time axis has the high anomalies"
    );

    // Not blank: a rendered report compresses far worse than an empty page.
    let shot = std::fs::read(&png).unwrap();
    assert_eq!(png_size(&shot), (1200, 1800));
    let blank_page = dir.join("blank.html");
    std::fs::write(&blank_page, "<html><body></body></html>").unwrap();
    let blank_png = dir.join("blank.png");
    render_in_chromium(&blank_page, &blank_png);
    let blank = std::fs::read(&blank_png).unwrap();
    assert_eq!(png_size(&blank), (1200, 1800));
    assert!(
        shot.len() > 10 * blank.len(),
        "the screenshot looks blank: {} bytes, an empty page {} bytes",
        shot.len(),
        blank.len()
    );
}
