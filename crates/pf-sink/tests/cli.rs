//! pf-sink: scored records into the output files, anomalies on stdout.

use pf_testkit::{run, temp_dir};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_pf-sink");

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn scored(topic: Option<&str>, program: &str, anomaly: bool, raw: &str) -> String {
    let mut r = json!({
        "raw": raw,
        "kind": "smtpd.sasl_auth_failed",
        "program": program,
        "ts": "2026-03-03T22:13:00+00:00",
        "parsed": true,
        "fields": {"client_ip": "203.0.113.250"},
        "features": {"hour": 22, "msg_len": 80},
        "detection": {
            "score": if anomaly { -0.12 } else { 0.08 },
            "is_anomaly": anomaly,
            "severity": if anomaly { "high" } else { "none" },
            "model": "model-x"
        }
    });
    if anomaly {
        r["detection"]["top_features"] = json!([
            {"feature": "hour", "value": 22, "contribution": -1.5},
            {"feature": "msg_len", "value": 80, "contribution": -0.7},
            {"feature": "service_encoded", "value": "postfix/smtpd", "contribution": -0.1}
        ]);
        r["detection"]["rarity"] = json!(250000);
    }
    if let Some(t) = topic {
        r["source"] = json!({"topic": t, "partition": 0, "offset": 5});
    }
    r.to_string()
}

#[test]
fn records_go_to_their_files_and_anomalies_are_printed() {
    let dir = temp_dir("pf-sink-route");
    let input = [
        scored(
            Some("postfix"),
            "postfix/smtpd",
            true,
            "brute \x1b[31mforce",
        ),
        scored(Some("postfix"), "postfix/smtpd", false, "normal line"),
        scored(Some("mail_login"), "roundcube", false, "webmail login"),
        scored(None, "dovecot", false, "imap login from a file"),
        scored(None, "postfix/qmgr", false, "qmgr from a file"),
    ]
    .join("\n");
    let r = run(BIN, &["--output-dir", "out"], input.as_bytes(), &dir);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let out = dir.join("out");
    assert_eq!(lines(&out.join("all_detections.jsonl")).len(), 5);
    let anomalies = lines(&out.join("anomalies.jsonl"));
    assert_eq!(anomalies.len(), 1);
    assert_eq!(anomalies[0]["detection"]["severity"], "high");
    let postfix = lines(&out.join("postfix_logs.json"));
    let logins = lines(&out.join("mail_login_logs.json"));
    assert_eq!(
        postfix.len(),
        3,
        "two from the topic, one Postfix line from a file"
    );
    assert_eq!(
        logins.len(),
        2,
        "one from the topic, one Dovecot line from a file"
    );
    for r in postfix.iter().chain(&logins) {
        assert!(
            r.get("features").is_none() && r.get("detection").is_none(),
            "{r}"
        );
        assert_eq!(r["fields"]["client_ip"], "203.0.113.250");
    }
    // One readable line per incident event; no terminal escapes from the log line.
    let alerts: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(alerts.len(), 1, "{}", r.stdout);
    assert!(alerts[0].starts_with("HIGH   opened"), "{}", alerts[0]);
    assert!(alerts[0].contains("client 203.0.113.250"), "{}", alerts[0]);
    assert!(alerts[0].contains("1 in 250,000"), "{}", alerts[0]);
    assert!(alerts[0].contains("hour (-1.5)"), "{}", alerts[0]);
    assert!(alerts[0].contains("brute ?[31mforce"), "{}", alerts[0]);
    assert!(!r.stdout.contains('\x1b'));
    let incidents = lines(&out.join("incidents.jsonl"));
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0]["event"], "opened");
    assert_eq!(incidents[0]["entity"], "client");
    assert_eq!(incidents[0]["records"]["postfix/0"], json!([5, 5]));
    // --every-anomaly: the line per anomalous record, with its score.
    let every = temp_dir("pf-sink-every");
    let r2 = run(
        BIN,
        &["--output-dir", "out", "--every-anomaly"],
        input.as_bytes(),
        &every,
    );
    let alerts: Vec<&str> = r2.stdout.lines().collect();
    assert_eq!(alerts.len(), 1, "{}", r2.stdout);
    assert!(alerts[0].starts_with("HIGH"), "{}", alerts[0]);
    assert!(alerts[0].contains("-0.1200"));
    assert!(alerts[0].contains("hour=22 (-1.500)"), "{}", alerts[0]);
    assert!(!r2.stdout.contains('\x1b'));
    assert!(
        r.stderr.contains("5 records, 1 anomalies (1 high)"),
        "{}",
        r.stderr
    );
    // Private by default: 0640 files in a 0750 directory.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out) & !0o750, 0, "dir mode {:o}", mode(&out));
    assert_eq!(mode(&out.join("anomalies.jsonl")) & !0o640, 0);

    // A second run appends.
    let r = run(
        BIN,
        &["--output-dir", "out", "--quiet"],
        input.as_bytes(),
        &dir,
    );
    assert_eq!(r.status, 0);
    assert!(r.stdout.is_empty(), "--quiet prints nothing");
    assert_eq!(lines(&out.join("all_detections.jsonl")).len(), 10);
}

/// A brute force is one incident however many lines it has; a restart
/// with the saved state and Kafka redelivering what was in flight does not
/// open it again; --close-incidents closes it at the end.
#[test]
fn incidents_group_an_attack_and_survive_a_restart() {
    let dir = temp_dir("pf-sink-incidents");
    let attack = |from: usize, to: usize| -> String {
        (from..to)
            .map(|i| {
                let mut r: Value = serde_json::from_str(&scored(
                    Some("postfix"),
                    "postfix/smtpd",
                    true,
                    "auth failed",
                ))
                .unwrap();
                r["source"]["offset"] = json!(i);
                r["ts"] = json!(format!("2026-03-03T22:{:02}:00+00:00", i));
                r.to_string() + "\n"
            })
            .collect()
    };
    let args = ["--output-dir", "out", "--incident-state", "state.json"];
    let r = run(BIN, &args, attack(0, 30).as_bytes(), &dir);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout.lines().count(),
        1,
        "one line for 30 anomalies: {}",
        r.stdout
    );
    assert!(dir.join("state.json").is_file());
    // Redelivery of 20..30, then new lines.
    let r = run(
        BIN,
        &[&args[..], &["--close-incidents"]].concat(),
        attack(20, 40).as_bytes(),
        &dir,
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let events = lines(&dir.join("out/incidents.jsonl"));
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["opened", "closed"], "{}", r.stdout);
    assert_eq!(
        events[1]["anomalies"], 40,
        "the redelivered lines are not counted twice"
    );
    assert_eq!(events[1]["first_seen"], "2026-03-03T22:00:00+00:00");
    assert_eq!(events[1]["last_seen"], "2026-03-03T22:39:00+00:00");
    // A state file that is not one is a clear error.
    std::fs::write(dir.join("state.json"), "garbage").unwrap();
    let r = run(BIN, &args, b"", &dir);
    assert_eq!(r.status, 2);
    assert!(
        r.stderr
            .contains("state.json is not a saved incident state"),
        "{}",
        r.stderr
    );
}

/// A quiet day still has every output file: `tail -F`, logrotate without
/// `missingok` and file checks find them empty, private, from the start.
#[test]
fn every_output_file_exists_from_the_start() {
    let dir = temp_dir("pf-sink-start");
    std::fs::write(
        dir.join("config.yaml"),
        "kafka:\n  topics: [postfix, mail_login, \"edge.smtp\"]\n",
    )
    .unwrap();
    let r = run(
        BIN,
        &["--config", "config.yaml", "--output-dir", "out", "--quiet"],
        b"",
        &dir,
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    for name in [
        "all_detections.jsonl",
        "anomalies.jsonl",
        "postfix_logs.json",
        "mail_login_logs.json",
        "edge_smtp_logs.json",
        "incidents.jsonl",
        "incidents.log",
    ] {
        let meta = std::fs::metadata(dir.join("out").join(name))
            .unwrap_or_else(|e| panic!("{name} not created at start: {e}"));
        assert_eq!(meta.len(), 0, "{name}");
        assert_eq!(meta.permissions().mode() & 0o777 & !0o640, 0, "{name}");
    }
}

/// A pf-sink killed in the middle of a write (the kernel stops a large
/// write at a fatal signal) leaves half a line; the next start removes it
/// and says so, and what follows starts on a line of its own.
#[test]
fn an_unfinished_line_from_a_killed_sink_is_cut_back_at_start() {
    let dir = temp_dir("pf-sink-partial");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let whole = scored(Some("postfix"), "postfix/smtpd", false, "written");
    let half = &scored(Some("postfix"), "postfix/smtpd", false, "cut")[..120];
    std::fs::write(out.join("all_detections.jsonl"), format!("{whole}\n{half}")).unwrap();
    let next = scored(Some("postfix"), "postfix/smtpd", false, "redelivered");
    let r = run(
        BIN,
        &["--output-dir", "out", "--quiet"],
        next.as_bytes(),
        &dir,
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("all_detections.jsonl ended in an unfinished line (120 bytes)"),
        "{}",
        r.stderr
    );
    let all = lines(&out.join("all_detections.jsonl"));
    let raws: Vec<&str> = all.iter().map(|r| r["raw"].as_str().unwrap()).collect();
    assert_eq!(raws, ["written", "redelivered"]);
}

#[test]
fn bad_lines_are_reported_and_the_rest_kept() {
    let dir = temp_dir("pf-sink-bad");
    let input = format!(
        "{}\nnot json at all\n{}\n",
        scored(Some("postfix"), "postfix/smtpd", false, "one"),
        scored(Some("postfix"), "postfix/smtpd", false, "two")
    );
    let r = run(BIN, &["--output-dir", "out"], input.as_bytes(), &dir);
    assert_eq!(r.status, 1, "a bad line sets exit status 1");
    assert!(
        r.stderr.contains("stdin line 2: text, not a record"),
        "{}",
        r.stderr
    );
    assert_eq!(lines(&dir.join("out/all_detections.jsonl")).len(), 2);
}

#[test]
fn unwritable_output_directory_is_a_clear_error() {
    let dir = temp_dir("pf-sink-unwritable");
    std::fs::write(dir.join("file"), "").unwrap();
    let r = run(BIN, &["--output-dir", "file/out"], b"", &dir);
    assert_eq!(r.status, 2);
    assert!(
        r.stderr
            .contains("cannot create the output directory file/out"),
        "{}",
        r.stderr
    );
}

/// Runs pf-sink with its output directory on a tmpfs of `size` (read-only
/// if asked), in a private mount namespace, copying the directory out
/// afterwards. `None` (the test is skipped, loudly) where mounting is not
/// allowed, e.g. not as root.
fn sink_on_tmpfs(dir: &Path, size: &str, read_only: bool, input: &[u8]) -> Option<pf_testkit::Run> {
    let options = if read_only {
        format!("size={size},ro")
    } else {
        format!("size={size}")
    };
    let script = format!(
        "mkdir -p out copy && mount -t tmpfs -o {options},mode=0750 tmpfs out && \
         {BIN} --output-dir out --ack-file acks.json --stats - --quiet; rc=$?; \
         cp -a out/. copy/; exit $rc"
    );
    pf_testkit::run_with_private_mounts(&script, input, dir)
}

fn kafka_records(n: usize) -> String {
    (0..n)
        .map(|i| {
            let mut r: Value = serde_json::from_str(&scored(
                Some("postfix"),
                "postfix/smtpd",
                i % 7 == 0,
                &format!("line {i} {}", "x".repeat(200)),
            ))
            .unwrap();
            r["source"]["offset"] = json!(i);
            r.to_string() + "\n"
        })
        .collect()
}

#[test]
fn a_full_disk_is_an_error_with_no_partial_line_and_nothing_acknowledged_beyond_it() {
    let dir = temp_dir("pf-sink-full");
    let input = kafka_records(3000);
    let Some(r) = sink_on_tmpfs(&dir, "256k", false, input.as_bytes()) else {
        return;
    };
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(r.stderr.contains("No space left on device"), "{}", r.stderr);
    assert!(
        r.stderr.contains("all_detections.jsonl")
            || r.stderr.contains("_logs.json")
            || r.stderr.contains("anomalies.jsonl"),
        "the error names the file: {}",
        r.stderr
    );
    // Every line that made it is whole.
    let written: Vec<Value> = std::fs::read_to_string(dir.join("copy/all_detections.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("partial line ({e}): {l}")))
        .collect();
    assert!(written.len() < 3000, "the disk was not full");
    let offsets: std::collections::BTreeSet<i64> = written
        .iter()
        .map(|r| r["source"]["offset"].as_i64().unwrap())
        .collect();
    // Whatever is acknowledged is in every file it belongs to.
    if let Ok(text) = std::fs::read_to_string(dir.join("acks.json")) {
        let acks: Value = serde_json::from_str(&text).unwrap();
        let next = acks["next"]["postfix"]["0"].as_i64().unwrap();
        assert!(
            (0..next).all(|o| offsets.contains(&o)),
            "acknowledged {next} but not all written"
        );
        let parsed =
            std::fs::read_to_string(dir.join("copy/postfix_logs.json")).unwrap_or_default();
        assert!(
            parsed.lines().count() as i64 >= next,
            "acknowledged beyond postfix_logs.json"
        );
        for l in parsed.lines() {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("partial line ({e}): {l}"));
        }
    }
}

#[test]
fn a_read_only_output_directory_is_an_error_naming_it() {
    let dir = temp_dir("pf-sink-ro");
    let Some(r) = sink_on_tmpfs(&dir, "64k", true, kafka_records(10).as_bytes()) else {
        return;
    };
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
    assert!(
        r.stderr.contains("out/"),
        "the error names the file: {}",
        r.stderr
    );
    assert!(
        !dir.join("acks.json").exists(),
        "nothing was written, nothing may be acknowledged"
    );
}

#[test]
fn hostile_input_is_reported_and_the_rest_kept() {
    let dir = temp_dir("pf-sink-hostile");
    let good: Vec<String> = (0..3)
        .map(|i| {
            scored(
                Some("postfix"),
                "postfix/smtpd",
                false,
                &format!("line {i}"),
            )
        })
        .collect();
    let r = pf_testkit::assert_survives_hostile_input(
        BIN,
        &["--output-dir", "out", "--stats", "-", "--quiet"],
        &good,
        &[],
        1,
        &dir,
    );
    assert_eq!(
        lines(&dir.join("out/all_detections.jsonl")).len(),
        3,
        "{}",
        r.stderr
    );
}

/// `--print closed` (what a replay uses) prints each incident once, as it
/// ended; the files still get every event.
#[test]
fn print_closed_gives_one_line_per_incident() {
    let dir = temp_dir("pf-sink-print-closed");
    let input: String = (0..10)
        .map(|_| scored(None, "postfix/smtpd", true, "auth failed") + "\n")
        .collect();
    let r = run(
        BIN,
        &[
            "--output-dir",
            "out",
            "--close-incidents",
            "--print",
            "closed",
        ],
        input.as_bytes(),
        &dir,
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let printed: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(printed.len(), 1, "{}", r.stdout);
    assert!(
        printed[0].starts_with("HIGH   closed    client 203.0.113.250"),
        "{}",
        printed[0]
    );
    assert!(
        printed[0].contains("10 anomalous / 10 lines"),
        "{}",
        printed[0]
    );
    let events = lines(&dir.join("out/incidents.jsonl"));
    assert_eq!(events.len(), 2, "opened and closed are both in the file");
    let r = run(
        BIN,
        &["--output-dir", "out", "--print", "started"],
        b"",
        &dir,
    );
    assert_eq!(r.status, 2);
    assert!(
        r.stderr
            .contains("the events are opened, escalated, closed, member and resumed"),
        "{}",
        r.stderr
    );
}

/// A lone client's `medium` incident is held, then reported while input
/// stays open and quiet (the live detector on a quiet server): pf-sink's
/// idle hook runs again while stdin has nothing, and the hold ends by the
/// idle time counted on from the latest line.
#[test]
fn a_held_incident_is_reported_while_input_stays_quiet() {
    use std::io::Write;
    let dir = temp_dir("pf-sink-hold");
    std::fs::write(dir.join("config.yaml"), "incidents:\n  hold_seconds: 2\n").unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["--config", "config.yaml", "--output-dir", "out", "--quiet"])
        .current_dir(&dir)
        .env_remove("PF_CONFIG")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let line = pf_testkit::scored_anomaly(
        1,
        "+00:00",
        "smtpd.sasl_auth_failed",
        json!({"client_ip": "203.0.113.77"}),
        "medium",
        "auth_failures_1h_by_ip",
    );
    stdin.write_all(line.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let incidents = dir.join("out/incidents.jsonl");
    let read = || std::fs::read_to_string(&incidents).unwrap_or_default();
    let started = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert_eq!(read(), "", "held for its two seconds");
    while !read().contains("\"opened\"") {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the held incident was never reported while input was quiet"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let opened: Value = serde_json::from_str(read().lines().next().unwrap()).unwrap();
    assert_eq!(opened["key"], "203.0.113.77");
    assert_eq!(opened["severity"], "medium");
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
