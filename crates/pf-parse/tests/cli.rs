//! pf-parse as a command: input forms, bad input, sources, exit codes, flushing.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const CONNECT: &str =
    "Mar  2 08:15:03 mx1 postfix/smtpd[123]: connect from mail.example.org[192.0.2.7]";

#[test]
fn bad_input_never_disappears_and_is_flagged() {
    let mut input: Vec<u8> = Vec::new();
    input.extend_from_slice(
        b"Mar  2 08:15:03 mx1 postfix/smtpd[1]: connect from a\xff\xfeb[192.0.2.1]\n",
    );
    input.extend_from_slice(b"nul\0byte\n");
    input.extend_from_slice(b"Mar  2 08:15:03 mx1 postfix/qmgr[2]: 4104E3D: removed\r\n");
    input.extend_from_slice(b"\n");
    input.extend_from_slice(&vec![b'x'; 2 * 1024 * 1024]);
    input.extend_from_slice(b"\n{\"topic\": \"postfix\", broken\n");
    input.extend_from_slice(b"\x00\x01\x02 binary junk \x7f\n");
    input.extend_from_slice(CONNECT.as_bytes());
    let out = pf_parse(&["--timezone", "UTC", "--year", "2026"], &input);
    assert!(out.status.success());
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 8, "one record per line, none lost");
    let flags = |i: usize| recs[i]["flags"].as_array().cloned().unwrap_or_default();
    assert!(flags(0).contains(&json!("invalid_utf8")));
    assert_eq!(
        recs[0]["kind"], "smtpd.connect",
        "a bad byte in a host name does not spoil the line"
    );
    assert!(flags(1).contains(&json!("nul_bytes")));
    assert_eq!(recs[1]["raw"], "nul\u{0}byte");
    assert!(flags(2).contains(&json!("crlf")));
    assert_eq!(recs[2]["kind"], "qmgr.removed");
    assert_eq!(
        recs[2]["raw"],
        "Mar  2 08:15:03 mx1 postfix/qmgr[2]: 4104E3D: removed"
    );
    assert!(flags(3).contains(&json!("empty")));
    assert!(flags(4).contains(&json!("truncated")));
    assert_eq!(
        recs[4]["raw"].as_str().map(str::len),
        Some(1 << 20),
        "long lines are cut at 1 MiB"
    );
    assert!(flags(5).contains(&json!("bad_json")));
    assert_eq!(recs[5]["kind"], "unknown");
    assert_eq!(recs[6]["parsed"], false);
    assert_eq!(recs[7]["kind"], "smtpd.connect");
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["source"]["line"], i as u64 + 1);
        // Every record obeys the contract type the other stages read.
        serde_json::from_value::<pf_record::Record>(r.clone())
            .expect("record matches the contract");
    }
}

#[test]
fn kafka_tail_envelopes_keep_their_coordinates_and_extras() {
    let env = json!({"topic": "postfix", "partition": 2, "offset": 17, "timestamp": 1_700_000_000_000i64,
        "key": null, "value": CONNECT, "flags": ["invalid_utf8"], "site": "eu-1"});
    let out = pf_parse(&["--timezone", "UTC"], format!("{env}\n").as_bytes());
    let r = &records(&out.stdout)[0];
    assert_eq!(r["raw"], CONNECT);
    assert_eq!(
        r["source"],
        json!({"topic": "postfix", "partition": 2, "offset": 17, "timestamp": 1_700_000_000_000i64})
    );
    assert_eq!(r["site"], "eu-1", "unknown fields pass through");
    assert_eq!(
        r["flags"],
        json!(["invalid_utf8"]),
        "kafka-tail's flags are kept"
    );
    assert_eq!(r["kind"], "smtpd.connect");
    // The year comes from the message's Kafka timestamp (Nov 2023), not today's clock.
    assert_eq!(r["ts"], "2023-03-02T08:15:03+00:00");
}

#[test]
fn journald_json_entries() {
    let entry = json!({"__CURSOR": "s=abc;i=1", "__REALTIME_TIMESTAMP": "1677744903123456", "_HOSTNAME": "mx1",
        "SYSLOG_IDENTIFIER": "postfix/submission/smtpd", "_PID": "4321",
        "MESSAGE": "warning: unknown[192.0.2.9]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"});
    let out = pf_parse(
        &["--timezone", "Europe/Berlin"],
        format!("{entry}\n").as_bytes(),
    );
    let r = &records(&out.stdout)[0];
    assert_eq!(r["raw"], entry["MESSAGE"]);
    assert_eq!(r["ts"], "2023-03-02T09:15:03.123456+01:00");
    assert_eq!(r["host"], "mx1");
    assert_eq!(r["program"], "postfix/smtpd");
    assert_eq!(r["pid"], 4321);
    assert_eq!(r["kind"], "smtpd.sasl_auth_failed");
    assert_eq!(r["failure"], "auth");
    assert_eq!(r["fields"]["client_ip"], "192.0.2.9");
    assert_eq!(r["fields"]["instance"], "postfix/submission");
    assert_eq!(r["source"]["cursor"], "s=abc;i=1");
}

#[test]
fn records_can_be_parsed_again_unchanged() {
    let first = pf_parse(
        &["--timezone", "UTC", "--year", "2026"],
        format!("{CONNECT}\n").as_bytes(),
    );
    let mut rec: Value = records(&first.stdout).remove(0);
    rec["features"] = json!({"x": 1});
    let again = pf_parse(
        &["--timezone", "UTC", "--year", "2026"],
        format!("{rec}\n").as_bytes(),
    );
    assert_eq!(records(&again.stdout)[0], rec);
}

#[test]
fn files_are_named_in_source_and_missing_files_are_reported() {
    let dir = std::env::temp_dir().join(format!("pf-parse-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("mail.log");
    std::fs::write(&log, format!("{CONNECT}\n{CONNECT}\n")).unwrap();
    let missing = dir.join("nope.log");
    let out = pf_parse(&[missing.to_str().unwrap(), log.to_str().unwrap()], b"");
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unreadable input makes the exit status 1"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope.log"), "{err}");
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 2, "the readable file is still parsed");
    assert_eq!(
        recs[1]["source"],
        json!({"file": log.to_str().unwrap(), "line": 2})
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn usage_and_config_errors_exit_2_with_the_reason() {
    let out = pf_parse(&["--timezone", "Mars/Olympus"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Mars/Olympus"));
    let dir = std::env::temp_dir().join(format!("pf-parse-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, "parse:\n  timezon: UTC\n").unwrap();
    let out = pf_parse(&["--config", cfg.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("timezon") && err.contains("config.yaml"),
        "{err}"
    );
    std::fs::write(&cfg, "parse:\n  timezone: Asia/Kolkata\n").unwrap();
    let out = pf_parse(
        &["--config", cfg.to_str().unwrap(), "--year", "2026"],
        format!("{CONNECT}\n").as_bytes(),
    );
    assert_eq!(
        records(&out.stdout)[0]["ts"],
        "2026-03-02T08:15:03+05:30",
        "parse.timezone is used"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn help_has_examples_and_stats_prints_kinds() {
    let out = pf_parse(&["--help"], b"");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Examples:") && help.contains("journalctl"),
        "{help}"
    );
    let out = pf_parse(
        &["--stats"],
        format!("{CONNECT}\n{CONNECT}\nnonsense\n").as_bytes(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.contains("smtpd.connect") && l.trim_start().starts_with('2')),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains("unknown") && l.trim_start().starts_with('1')),
        "{err}"
    );
}

/// A client talking to Roundcube directly can write any X-Forwarded-For:
/// only a trusted proxy's header names the client; anyone else's is kept
/// as a flagged claim and the peer is the client (what fail2ban would ban).
#[test]
fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
    let line = |peer: &str, headers: &str| {
        format!("[17-Jan-2016 11:09:06 +0200]: <j2pncet8> IMAP Error: Login failed for victim@example.com against mail.example.com from {peer}{headers}. AUTHENTICATE PLAIN: Authentication failed. in /x.php on line 1 (POST /)")
    };
    let lines = [
        // Straight from the Internet with a forged header.
        line("203.0.113.50", "(X-Real-IP: 192.0.2.1,X-Forwarded-For: 192.0.2.1)"),
        // Through the local proxy (loopback is trusted by default).
        line("127.0.0.1", "(X-Forwarded-For: 198.51.100.23)"),
        // Through the local proxy, with a forged left end the proxy appended to.
        line("127.0.0.1", "(X-Forwarded-For: 192.0.2.1, 198.51.100.24)"),
        // A private peer, not trusted unless configured.
        line("10.0.0.5", "(X-Forwarded-For: 198.51.100.25)"),
        "Mar  2 08:15:03 web1 roundcube: <abc> Successful login for dave (ID: 7) from 203.0.113.51(X-Real-IP: 192.0.2.9) in session s3ss".to_string(),
    ];
    let recs = parse_lines(&lines, &["--timezone", "UTC", "--year", "2026"]);
    let field = |i: usize, k: &str| recs[i]["fields"][k].as_str().unwrap_or("").to_string();
    let flagged = |i: usize| recs[i]["flags"] == serde_json::json!(["untrusted_forwarded"]);
    assert_eq!(field(0, "client_ip"), "203.0.113.50");
    assert_eq!(field(0, "forwarded_for"), "192.0.2.1");
    assert!(flagged(0), "{}", recs[0]);
    assert_eq!(field(1, "client_ip"), "198.51.100.23");
    assert_eq!(field(1, "proxy_ip"), "127.0.0.1");
    assert!(!flagged(1) && recs[1]["fields"].get("forwarded_for").is_none());
    assert_eq!(field(2, "client_ip"), "198.51.100.24");
    assert_eq!(field(3, "client_ip"), "10.0.0.5");
    assert!(flagged(3));
    assert_eq!(field(4, "client_ip"), "203.0.113.51");
    assert_eq!(field(4, "forwarded_for"), "192.0.2.9");
    assert!(flagged(4));
    // Trusting the private proxy: its header is believed.
    let dir = pf_testkit::temp_dir("pf-parse-trust");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "parse:\n  trusted_proxies: [\"10.0.0.0/8\", \"127.0.0.1\"]\n",
    )
    .unwrap();
    let recs = parse_lines(&lines[3..4], &["--config", config.to_str().unwrap()]);
    assert_eq!(recs[0]["fields"]["client_ip"], "198.51.100.25");
    // A bad entry is a configuration error naming the key and the entry.
    std::fs::write(&config, "parse:\n  trusted_proxies: [10.0.0/8]\n").unwrap();
    let r = pf_testkit::run(
        env!("CARGO_BIN_EXE_pf-parse"),
        &["--config", config.to_str().unwrap()],
        b"",
        &dir,
    );
    assert_eq!(r.status, 2);
    assert!(
        r.stderr.contains("parse.trusted_proxies") && r.stderr.contains("10.0.0/8"),
        "{}",
        r.stderr
    );
}

#[test]
fn roundcube_line_shapes() {
    let lines = [
        // The old system's full shape: behind a proxy, the client is the forwarded address.
        "[17-Jan-2016 11:09:06 +0200]: <j2pncet8> IMAP Error: Login failed for user@example.com against mail.example.com from 10.0.0.5(X-Real-IP: 203.0.113.9,X-Forwarded-For: 198.51.100.23, 10.0.0.5). AUTHENTICATE PLAIN: Authentication failed. in /usr/share/roundcube/program/lib/Roundcube/rcube_imap.php on line 200 (POST /?_task=login&_action=login)",
        // Mid shape, no proxy headers.
        "[17-Jan-2016 11:09:07 +0200]: <j2pncet8> IMAP Error: Login failed for bob from 203.0.113.10. AUTHENTICATE PLAIN: Authentication failed. in /x.php on line 1 (POST /)",
        // Minimal shape.
        "[roundcube] FAILED login for carol from 203.0.113.11",
        "Mar  2 08:15:03 web1 roundcube: <abc> Successful login for dave (ID: 7) from 203.0.113.12 in session s3ss",
    ];
    let dir = pf_testkit::temp_dir("pf-parse-proxies");
    let config = dir.join("config.yaml");
    std::fs::write(&config, "parse:\n  trusted_proxies: [10.0.0.0/8]\n").unwrap();
    let recs = parse_lines(
        &lines.map(String::from),
        &[
            "--timezone",
            "UTC",
            "--year",
            "2026",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    assert_eq!(recs[0]["kind"], "roundcube.login_failed");
    assert_eq!(recs[0]["fields"]["client_ip"], "198.51.100.23");
    assert_eq!(recs[0]["fields"]["proxy_ip"], "10.0.0.5");
    assert!(recs[0].get("flags").is_none(), "{}", recs[0]);
    assert_eq!(recs[0]["fields"]["user"], "user@example.com");
    assert_eq!(recs[0]["fields"]["session"], "j2pncet8");
    assert_eq!(recs[0]["ts"], "2016-01-17T11:09:06+02:00");
    assert_eq!(recs[1]["fields"]["client_ip"], "203.0.113.10");
    assert!(recs[1]["fields"].get("proxy_ip").is_none());
    assert_eq!(recs[2]["kind"], "roundcube.login_failed");
    assert_eq!(recs[2]["fields"]["user"], "carol");
    assert_eq!(recs[2]["fields"]["client_ip"], "203.0.113.11");
    assert_eq!(recs[3]["kind"], "roundcube.login");
    assert_eq!(recs[3]["fields"]["user"], "dave");
    for r in &recs {
        assert_eq!(r["program"], "roundcube");
    }
}

#[test]
fn output_is_flushed_when_input_goes_idle() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pf-parse"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(l)) = lines.next() {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    for i in 0..3 {
        writeln!(stdin, "{CONNECT} {i}").unwrap();
        stdin.flush().unwrap();
        // stdin stays open: the record must arrive anyway, not only at EOF.
        let got = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("record arrives while input is idle");
        assert!(got.contains("smtpd.connect"));
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pf-parse"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stdin = child.stdin.take().unwrap();
    let big = format!("{CONNECT}\n").repeat(50_000);
    let _ = stdin.write_all(big.as_bytes());
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hostile_lines_each_give_one_marked_record_and_a_summary() {
    let mut hostile = pf_testkit::hostile_lines();
    hostile.push((
        "deep object",
        [
            b"{\"a\":".repeat(100_000),
            b"1".to_vec(),
            vec![b'}'; 100_000],
        ]
        .concat(),
    ));
    let mut input = Vec::new();
    for (_, line) in &hostile {
        input.extend_from_slice(line);
        input.push(b'\n');
    }
    input.extend_from_slice(CONNECT.as_bytes());
    let out = pf_parse(&["--timezone", "UTC", "--year", "2026"], &input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let recs = records(&out.stdout);
    assert_eq!(
        recs.len(),
        hostile.len() + 1,
        "one record per line, none lost"
    );
    for (r, (name, _)) in recs.iter().zip(&hostile) {
        assert_eq!(r["kind"], "unknown", "{name}");
        assert!(
            r["raw"].as_str().is_some_and(|raw| raw.len() <= 1 << 20),
            "{name}: raw kept, at most 1 MiB"
        );
    }
    assert_eq!(
        recs[hostile.len()]["kind"],
        "smtpd.connect",
        "the line after them is fine"
    );
    let total = hostile.len() + 1;
    for needle in [
        format!(
            "pf-parse: {total} lines read; passed on marked: {} not recognised",
            hostile.len()
        ),
        "2 cut at 1 MiB".to_string(),
        "not UTF-8".to_string(),
        "with NUL bytes".to_string(),
    ] {
        assert!(stderr.contains(&needle), "missing {needle:?} in:\n{stderr}");
    }
}

/// A log line longer than 1 MiB inside JSON input (here a kafka-tail
/// envelope) is cut, not the JSON around it: the record keeps its Kafka
/// coordinates, so the message is still acknowledged and committed.
#[test]
fn a_huge_line_in_an_envelope_is_cut_and_keeps_its_coordinates() {
    let value = format!("{CONNECT} {}", "\u{e9}".repeat(1_500_000));
    let envelope = json!({"topic": "postfix", "partition": 1, "offset": 99, "timestamp": null, "key": null, "value": value});
    let out = pf_parse(
        &["--timezone", "UTC", "--year", "2026"],
        format!("{envelope}\n").as_bytes(),
    );
    assert!(out.status.success());
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r["source"]["offset"], 99);
    assert_eq!(r["kind"], "smtpd.connect");
    let raw = r["raw"].as_str().unwrap();
    assert!(
        raw.len() <= 1 << 20 && raw.len() > (1 << 20) - 4,
        "cut at 1 MiB on a character boundary"
    );
    assert!(r["flags"].as_array().unwrap().contains(&json!("truncated")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 cut at 1 MiB"));
}

/// `--merge`: the mail log and Roundcube's log replayed as one day, in
/// event-time order, each record still naming its file and line.
#[test]
fn merge_interleaves_files_by_event_time() {
    let dir = pf_testkit::temp_dir("pf-parse-merge");
    std::fs::write(
        dir.join("mail.log"),
        "Mar  2 08:00:00 mx1 postfix/smtpd[1]: connect from a[192.0.2.1]\n\
         Mar  2 08:00:10 mx1 postfix/smtpd[1]: disconnect from a[192.0.2.1]\n\
         not a log line\n\
         Mar  2 09:00:00 mx1 postfix/qmgr[2]: ABC123: removed\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("errors.log"),
        "[02-Mar-2026 08:00:05 +0000]: <s1> FAILED login for u from 192.0.2.9\n\
         [02-Mar-2026 08:30:00 +0000]: <s1> FAILED login for u from 192.0.2.9\n",
    )
    .unwrap();
    let r = pf_testkit::run(
        env!("CARGO_BIN_EXE_pf-parse"),
        &[
            "--timezone",
            "UTC",
            "--year",
            "2026",
            "--merge",
            "mail.log",
            "errors.log",
            "missing.log",
        ],
        b"",
        &dir,
    );
    assert_eq!(r.status, 1, "a missing file is reported: {}", r.stderr);
    assert!(r.stderr.contains("cannot open missing.log"), "{}", r.stderr);
    let order: Vec<String> = records(r.stdout.as_bytes())
        .iter()
        .map(|rec| {
            format!(
                "{}:{}",
                rec["source"]["file"].as_str().unwrap(),
                rec["source"]["line"]
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            "mail.log:1",
            "errors.log:1",
            "mail.log:2",
            "mail.log:3",
            "errors.log:2",
            "mail.log:4"
        ]
    );
    // Without --merge the files are read one after the other.
    let r = pf_testkit::run(
        env!("CARGO_BIN_EXE_pf-parse"),
        &[
            "--timezone",
            "UTC",
            "--year",
            "2026",
            "mail.log",
            "errors.log",
        ],
        b"",
        &dir,
    );
    let first: Vec<String> = records(r.stdout.as_bytes())
        .iter()
        .map(|rec| rec["source"]["file"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(first[..4], ["mail.log"; 4]);
}
