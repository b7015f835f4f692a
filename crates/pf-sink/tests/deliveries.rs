//! The spooled deliveries against real receivers: Python's http.server as
//! the webhook receiver (tests/receivers/webhook.py), started, stopped and
//! made to fail by the tests, and a fake `sendmail` that records what it
//! is given. A receiver that is down loses nothing; one that hangs does not
//! hold up pf-sink.

use pf_testkit::{run, temp_dir};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pf-sink");
const NOT_ENDED: &str = "0001-01-01T00:00:00Z";

fn anomaly(n: usize, kind: &str, fields: Value, severity: &str, feature: &str) -> String {
    pf_testkit::scored_anomaly(n, "+01:00", kind, fields, severity, feature)
}

/// Four incidents: a brute force that escalates, an account under attack
/// with a hostile name, a low one, and a daemon error.
fn attacks() -> String {
    let by_ip = "auth_failures_1h_by_ip";
    let mut input = String::new();
    input += &anomaly(
        1,
        "smtpd.sasl_auth_failed",
        json!({"client_ip": "203.0.113.7"}),
        "medium",
        by_ip,
    );
    input += &anomaly(
        2,
        "smtpd.sasl_auth_failed",
        json!({"client_ip": "203.0.113.7"}),
        "high",
        by_ip,
    );
    input += &anomaly(
        3,
        "dovecot.auth_failed",
        json!({"user": "bob\r\nBcc: victim@example.com"}),
        "medium",
        "auth_failures_1h_by_user",
    );
    input += &anomaly(
        4,
        "smtpd.sasl_auth_failed",
        json!({"client_ip": "198.51.100.50"}),
        "low",
        by_ip,
    );
    input += &anomaly(5, "cleanup.fatal", json!({}), "high", "kind_rarity");
    input
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A port nothing listens on (yet).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The receiver process, stopped when dropped.
struct Receiver {
    child: Child,
    log: PathBuf,
}

impl Receiver {
    fn start(dir: &Path, port: u16, options: &[&str]) -> Receiver {
        let log = dir.join(format!("received-{port}.jsonl"));
        let ready = PathBuf::from(format!("{}.port", log.display()));
        let _ = std::fs::remove_file(&ready);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/receivers/webhook.py");
        let child = Command::new(std::env::var("PF_PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(script)
            .arg(port.to_string())
            .arg(&log)
            .args(options)
            .spawn()
            .expect("python runs the receiver");
        let started = Instant::now();
        while !ready.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the receiver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Receiver { child, log }
    }

    fn requests(&self) -> Vec<Value> {
        lines(&self.log)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The config, and the webhook's token in a file of its own (an inline
/// token would make this world-readable config refuse to load).
fn write_config(dir: &Path, delivery: &str) {
    use std::os::unix::fs::PermissionsExt;
    // Every incident reported at its first anomaly: these tests are about delivery.
    let text = format!(
        "paths:\n  state_dir: state\n  output_dir: out\nincidents:\n  hold_seconds: 0\ndelivery:\n{delivery}"
    );
    std::fs::write(dir.join("config.yaml"), text).unwrap();
    let token = dir.join("authorization");
    std::fs::write(&token, "Bearer s3cret\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn webhook_config(port: u16, drain: u32, extra: &str) -> String {
    format!(
        "  drain_seconds: {drain}\n  webhook:\n    url: http://127.0.0.1:{port}/hook\n    batch_max: 2\n    retry_max_seconds: 1\n    headers:\n      Authorization: \"@authorization\"\n{extra}"
    )
}

fn sink(dir: &Path, input: &str) -> pf_testkit::Run {
    run(
        BIN,
        &["--config", "config.yaml", "--quiet", "--close-incidents"],
        input.as_bytes(),
        dir,
    )
}

/// pf-sink as the live detector runs it: input written as the test goes.
fn live_sink(dir: &Path) -> (Child, std::process::ChildStdin) {
    let mut child = Command::new(BIN)
        .args(["--config", "config.yaml", "--quiet", "--close-incidents"])
        .current_dir(dir)
        .env_remove("PF_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

#[test]
fn a_webhook_down_for_a_while_gets_every_event_in_order_when_it_is_back() {
    let dir = temp_dir("pf-sink-webhook");
    let port = free_port();
    write_config(&dir, &webhook_config(port, 1, ""));
    // Nobody listens: every event waits in the spool.
    let r = sink(&dir, &attacks());
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot POST to http://127.0.0.1"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("are sent on the next start"),
        "{}",
        r.stderr
    );
    let events = lines(&dir.join("out/incidents.jsonl"));
    assert!(events.len() >= 8, "{events:?}");
    let spool = dir.join("state/spool/webhook.jsonl");
    assert_eq!(
        lines(&spool),
        events,
        "the spool holds every event, in order"
    );

    // The receiver comes back, refusing twice more (503) before it takes them.
    let receiver = Receiver::start(&dir, port, &["--fail", "2"]);
    write_config(&dir, &webhook_config(port, 30, ""));
    let r = sink(&dir, "");
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains("answered HTTP 503"), "{}", r.stderr);
    assert!(r.stderr.contains("delivering again after"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("webhook: {} sent", events.len())),
        "{}",
        r.stderr
    );

    let requests = receiver.requests();
    let mut delivered = Vec::new();
    let mut fingerprints: BTreeMap<String, String> = BTreeMap::new();
    for request in &requests {
        assert_eq!(request["path"], "/hook");
        assert_eq!(request["headers"]["authorization"], "Bearer s3cret");
        assert_eq!(request["headers"]["content-type"], "application/json");
        let body = &request["body"];
        assert_eq!(body["version"], "4");
        assert_eq!(body["receiver"], "postfix-anomaly");
        assert_eq!(body["groupLabels"]["alertname"], "PostfixAnomaly");
        let alerts = body["alerts"].as_array().unwrap();
        assert!((1..=2).contains(&alerts.len()), "batch_max 2: {body}");
        let ids: HashSet<&str> = alerts
            .iter()
            .map(|a| a["annotations"]["incident"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids.len(),
            alerts.len(),
            "an incident once per notification: {body}"
        );
        let firing = alerts.iter().any(|a| a["status"] == "firing");
        assert_eq!(body["status"], if firing { "firing" } else { "resolved" });
        for alert in alerts {
            let id = alert["annotations"]["incident"]
                .as_str()
                .unwrap()
                .to_string();
            let event = alert["annotations"]["event"].as_str().unwrap().to_string();
            assert_eq!(
                alert["status"],
                if event == "closed" {
                    "resolved"
                } else {
                    "firing"
                }
            );
            let starts = alert["startsAt"].as_str().unwrap();
            assert!(
                starts.starts_with("2026-03-03T21:") && starts.ends_with('Z'),
                "UTC: {starts}"
            );
            let ends = alert["endsAt"].as_str().unwrap();
            if event == "closed" {
                assert!(ends >= starts && ends.ends_with('Z'), "{alert}");
            } else {
                assert_eq!(ends, NOT_ENDED);
            }
            let fingerprint = alert["fingerprint"].as_str().unwrap().to_string();
            assert_eq!(fingerprint.len(), 16);
            assert!(fingerprint.chars().all(|c| c.is_ascii_hexdigit()));
            // One incident keeps one fingerprint through its severity changes.
            assert_eq!(
                fingerprints
                    .entry(id.clone())
                    .or_insert(fingerprint.clone()),
                &fingerprint
            );
            assert_eq!(alert["labels"]["alertname"], "PostfixAnomaly");
            assert!(alert["annotations"]["summary"]
                .as_str()
                .unwrap()
                .contains(alert["labels"]["key"].as_str().unwrap()));
            delivered.push((
                id,
                event,
                alert["labels"]["severity"].as_str().unwrap().to_string(),
            ));
        }
    }
    let written: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_string(),
                e["event"].as_str().unwrap().to_string(),
                e["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        delivered, written,
        "every event once, in the order it happened"
    );
    assert_eq!(
        std::fs::metadata(&spool).unwrap().len(),
        0,
        "a delivered spool is emptied"
    );

    // The header is a secret: --print-config does not show it.
    let r = run(
        BIN,
        &["--config", "config.yaml", "--print-config"],
        b"",
        &dir,
    );
    assert!(
        r.stdout
            .contains("delivery.webhook.headers.Authorization=(hidden)"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("s3cret"));
}

/// A refusal for good (400, a redirect) sets the events aside; a wrong
/// token (401) is the admin's to fix, so the events wait in the spool.
#[test]
fn events_a_receiver_refuses_are_kept_aside_not_retried_forever() {
    for (status, refused) in [("400", true), ("301", true), ("401", false)] {
        let dir = temp_dir(&format!("pf-sink-webhook-refused-{status}"));
        let port = free_port();
        let _receiver = Receiver::start(&dir, port, &["--status", status]);
        write_config(
            &dir,
            &webhook_config(port, if refused { 30 } else { 2 }, ""),
        );
        let r = sink(&dir, &attacks());
        assert_eq!(r.status, 0, "{}", r.stderr);
        assert!(
            r.stderr.contains(&format!("answered HTTP {status}")),
            "{}",
            r.stderr
        );
        let events = lines(&dir.join("out/incidents.jsonl"));
        let spool = dir.join("state/spool/webhook.jsonl");
        let aside = lines(&dir.join("state/spool/webhook.rejected.jsonl"));
        if refused {
            assert!(r.stderr.contains("they are kept in"), "{}", r.stderr);
            assert_eq!(aside, events, "HTTP {status}");
            assert_eq!(std::fs::metadata(&spool).unwrap().len(), 0);
        } else {
            assert!(aside.is_empty(), "HTTP {status}: {aside:?}");
            assert_eq!(lines(&spool), events, "HTTP {status}: the events wait");
        }
    }
}

#[test]
fn a_receiver_that_never_answers_does_not_hold_up_pf_sink() {
    let dir = temp_dir("pf-sink-webhook-hang");
    let port = free_port();
    let _receiver = Receiver::start(&dir, port, &["--hang"]);
    write_config(&dir, &webhook_config(port, 1, "    timeout_seconds: 600\n"));
    let started = Instant::now();
    let r = sink(&dir, &attacks());
    assert_eq!(r.status, 0, "{}", r.stderr);
    // Far less than the receiver's 600 s timeout: only drain_seconds is waited.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let events = lines(&dir.join("out/incidents.jsonl"));
    assert_eq!(
        lines(&dir.join("state/spool/webhook.jsonl")),
        events,
        "still spooled"
    );
}

/// A `sendmail` that records its arguments and message in `dir/mails`.
fn fake_sendmail(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let mails = dir.join("mails");
    std::fs::create_dir_all(&mails).unwrap();
    let path = dir.join("sendmail");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nd={}\nn=$(ls \"$d\" | wc -l)\nprintf '%s\\n' \"$@\" > \"$d/$n.args\"\ncat > \"$d/$n.eml\"\n",
            mails.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn mails(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for n in 0.. {
        let args = dir.join(format!("mails/{}.args", n * 2));
        let Ok(args) = std::fs::read_to_string(args) else {
            break;
        };
        let message = std::fs::read_to_string(dir.join(format!("mails/{}.eml", n * 2))).unwrap();
        out.push((args, message));
    }
    out
}

#[test]
fn mail_goes_through_sendmail_at_most_as_often_as_configured_with_a_digest() {
    let dir = temp_dir("pf-sink-mail");
    let sendmail = fake_sendmail(&dir);
    let config = |per_hour: u32, drain: u32| {
        format!(
            "  drain_seconds: {drain}\n  mail:\n    to: [admin@example.org, oncall@example.org]\n    from: pf@mx1.example.org\n    sendmail: {}\n    max_per_hour: {per_hour}\n",
            sendmail.display()
        )
    };
    write_config(&dir, &config(1, 2));
    // The first incident, then the rest once its mail went: as they come live.
    let input = attacks();
    let (first, rest) = input.split_once('\n').unwrap();
    let (child, mut stdin) = live_sink(&dir);
    writeln!(stdin, "{first}").unwrap();
    let started = Instant::now();
    while !dir.join("mails/0.eml").exists() || mails(&dir).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no mail for the first incident"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    write!(stdin, "{rest}").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let r = pf_testkit::Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(r.status, 0, "{}", r.stderr);
    let sent = mails(&dir);
    assert_eq!(
        sent.len(),
        1,
        "one mail an hour: the first at once, {:?}",
        sent
    );
    let (args, message) = &sent[0];
    assert_eq!(
        args.lines().collect::<Vec<_>>(),
        [
            "-i",
            "-f",
            "pf@mx1.example.org",
            "--",
            "admin@example.org",
            "oncall@example.org"
        ]
    );
    assert!(
        message.contains("\nSubject: [postfix-anomaly] MEDIUM opened client 203.0.113.7 on "),
        "{message}"
    );
    assert!(
        message
            .starts_with("From: pf@mx1.example.org\nTo: admin@example.org, oncall@example.org\n"),
        "{message}"
    );
    assert!(r.stderr.contains("mail: 1 sent"), "{}", r.stderr);

    // Mail is for what an admin acts on: opened or escalated, medium or worse.
    let events = lines(&dir.join("out/incidents.jsonl"));
    let for_mail: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] != "closed" && e["severity"] != "low")
        .collect();
    assert!(for_mail.len() >= 4, "{events:?}");

    // Restarted within the hour: still nothing more.
    let r = sink(&dir, "");
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(mails(&dir).len(), 1, "the rate limit survives a restart");

    // A faster limit: the rest comes as one digest.
    write_config(&dir, &config(3600, 30));
    let r = sink(&dir, "");
    assert_eq!(r.status, 0, "{}", r.stderr);
    let sent = mails(&dir);
    assert_eq!(sent.len(), 2, "{sent:?}");
    let digest = &sent[1].1;
    let incidents: HashSet<&str> = for_mail[1..]
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(
        digest.contains(&format!("] {} incidents on ", incidents.len())),
        "{digest}"
    );
    for event in &for_mail[1..] {
        assert!(digest.contains(event["id"].as_str().unwrap()), "{digest}");
    }
    assert!(
        !digest.contains("198.51.100.50"),
        "a low incident is not mailed: {digest}"
    );
    // A user name from a log line cannot add a header.
    let (headers, _) = digest.split_once("\n\n").unwrap();
    assert!(!headers.lines().any(|l| l.starts_with("Bcc:")), "{headers}");
    assert!(!digest.lines().any(|l| l.starts_with("Bcc:")), "{digest}");
}

/// The receiver dies in the middle of a live run and comes back on the
/// same port: pf-sink goes on reading meanwhile, and the receiver gets
/// every event, in order (at least once: one in flight when it died may
/// come twice).
#[test]
fn a_receiver_killed_mid_run_gets_everything_when_it_is_back() {
    let dir = temp_dir("pf-sink-webhook-mid-run");
    let port = free_port();
    write_config(&dir, &webhook_config(port, 30, ""));
    let (child, mut stdin) = live_sink(&dir);
    let by_ip = "auth_failures_1h_by_ip";
    let client = |n: usize| {
        anomaly(
            n,
            "smtpd.sasl_auth_failed",
            json!({"client_ip": format!("203.0.113.{n}")}),
            "high",
            by_ip,
        )
    };
    let wait_for = |receiver: &Receiver, alerts: usize| {
        let started = Instant::now();
        loop {
            let got: usize = receiver
                .requests()
                .iter()
                .map(|r| r["body"]["alerts"].as_array().unwrap().len())
                .sum();
            if got >= alerts {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{got} of {alerts} alerts arrived"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let receiver = Receiver::start(&dir, port, &[]);
    // Incidents for three clients (campaign_after 3 keeps them apart).
    for n in 1..=3 {
        write!(stdin, "{}", client(n)).unwrap();
    }
    stdin.flush().unwrap();
    wait_for(&receiver, 3);
    drop(receiver);
    // While it is down: a daemon's fatal errors open another incident.
    for n in 4..=5 {
        write!(
            stdin,
            "{}",
            anomaly(n, "cleanup.fatal", json!({}), "high", "kind_rarity")
        )
        .unwrap();
    }
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let receiver = Receiver::start(&dir, port, &[]);
    write!(
        stdin,
        "{}",
        anomaly(6, "qmgr.removed", json!({}), "medium", "kind_rarity")
    )
    .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot POST"),
        "the receiver was down: {stderr}"
    );
    let events = lines(&dir.join("out/incidents.jsonl"));
    let written: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().into(),
                e["event"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut received: Vec<(String, String)> = Vec::new();
    let log = std::fs::read_to_string(&receiver.log).unwrap();
    for request in log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
    {
        for alert in request["body"]["alerts"].as_array().unwrap() {
            let event = (
                alert["annotations"]["incident"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                alert["annotations"]["event"].as_str().unwrap().to_string(),
            );
            // At least once: a repeat of what came just before is allowed.
            if received.last() != Some(&event) {
                received.push(event);
            }
        }
    }
    assert_eq!(received, written, "every event, in order");
}
