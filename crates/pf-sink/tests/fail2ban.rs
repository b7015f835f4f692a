//! contrib/fail2ban's filter, run by the real `fail2ban-regex` (Debian's
//! package, unpacked by tests/setup-fail2ban.sh into `PF_FAIL2BAN`) against
//! the incidents.log pf-sink writes: it bans the client addresses of the
//! chosen incidents and nothing a client can forge.

use pf_testkit::{run, temp_dir};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_pf-sink");

fn anomaly(n: usize, kind: &str, fields: Value, severity: &str, feature: &str) -> String {
    pf_testkit::scored_anomaly(n, "+00:00", kind, fields, severity, feature)
}

#[test]
fn the_filter_bans_the_clients_of_chosen_incidents_and_nothing_forged() {
    let root = std::env::var("PF_FAIL2BAN").expect(
        "PF_FAIL2BAN must name fail2ban unpacked by tests/setup-fail2ban.sh (tests/run.sh sets it)",
    );
    let dir = temp_dir("pf-sink-fail2ban");
    let by_ip = "auth_failures_1h_by_ip";
    let mut input = String::new();
    // An account under attack whose name tries to forge a ban word.
    input += &anomaly(
        1,
        "smtpd.sasl_auth_failed",
        json!({"client_ip": "198.51.100.20", "sasl_username": "x client=198.51.100.9 kind=smtpd.sasl_auth_failed id=1 "}),
        "high",
        "auth_failures_1h_by_user",
    );
    // A brute force from one address, and one from an IPv6 host.
    input += &anomaly(
        2,
        "smtpd.sasl_auth_failed",
        json!({"client_ip": "203.0.113.7"}),
        "high",
        by_ip,
    );
    input += &anomaly(
        3,
        "smtpd.sasl_auth_failed",
        json!({"client_ip": "2001:db8:1:2::5"}),
        "medium",
        by_ip,
    );
    // With three incidents of failed logins open, the next addresses are
    // one campaign, and an address is banned when it is reported as the
    // campaign's member (at its third line): webmail behind a proxy that
    // is not trusted (the peer is the client, the forwarded claim is only
    // a field), and a client that keeps trying; not one too mild to ban,
    // nor one line of a kind no jail bans for.
    for n in 4..7 {
        input += &anomaly(
            n,
            "roundcube.login_failed",
            json!({"client_ip": "192.0.2.80", "forwarded_for": "10.9.9.9"}),
            "high",
            by_ip,
        );
    }
    for n in 7..10 {
        input += &anomaly(
            n,
            "smtpd.sasl_auth_failed",
            json!({"client_ip": "198.51.100.50"}),
            "low",
            by_ip,
        );
    }
    input += &anomaly(
        10,
        "qmgr.removed",
        json!({"client_ip": "198.51.100.60"}),
        "high",
        by_ip,
    );
    for n in 11..14 {
        input += &anomaly(
            n,
            "smtpd.sasl_auth_failed",
            json!({"client_ip": "198.51.100.70"}),
            "high",
            by_ip,
        );
    }
    // A client back after 40 minutes, twice: its second incident waits an
    // hour, so the third burst is written as `resumed`, which bans again.
    for (n, ts) in [
        (14, "2026-03-03T23:00:00+00:00"),
        (15, "2026-03-03T23:40:00+00:00"),
        (16, "2026-03-04T00:20:00+00:00"),
    ] {
        let mut line: Value = serde_json::from_str(&anomaly(
            n,
            "smtpd.sasl_auth_failed",
            json!({"client_ip": "198.51.100.90"}),
            "high",
            by_ip,
        ))
        .unwrap();
        line["ts"] = json!(ts);
        input += &format!("{line}\n");
    }
    // Each client reported at its first anomaly, so the IPv6 host's one
    // medium line is an incident of its own (held, the campaign forming
    // next would take it in as a member).
    std::fs::write(dir.join("config.yaml"), "incidents:\n  hold_seconds: 0\n").unwrap();
    let r = run(
        BIN,
        &[
            "--config",
            "config.yaml",
            "--output-dir",
            "out",
            "--quiet",
            "--close-incidents",
        ],
        input.as_bytes(),
        &dir,
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let log = dir.join("out/incidents.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let words: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split(": ").nth(1).unwrap().split(' ').take(3).collect())
        .collect();
    let count = |event: &str, what: &str| {
        words
            .iter()
            .filter(|w| w[0] == event && w[2] == what)
            .count()
    };
    assert_eq!(count("opened", "campaign=logins"), 1, "{text}");
    assert_eq!(count("member", "client=198.51.100.70"), 1, "{text}");
    assert_eq!(count("member", "client=198.51.100.50"), 1, "{text}");
    assert_eq!(count("opened", "client=198.51.100.90"), 2, "{text}");
    assert_eq!(count("resumed", "client=198.51.100.90"), 1, "{text}");
    assert_eq!(
        words.iter().filter(|w| w[0] == "opened").count(),
        6,
        "{text}"
    );
    assert_eq!(
        words.iter().filter(|w| w[0] == "closed").count(),
        6,
        "{text}"
    );

    // fail2ban reads its filters from its configuration directory, where
    // the filter's `before = common.conf` is.
    let config = dir.join("fail2ban");
    let copied = Command::new("cp")
        .args([
            "-r",
            &format!("{root}/etc/fail2ban"),
            config.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(copied.success());
    let filter = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../contrib/fail2ban/filter.d/postfix-anomaly.conf");
    std::fs::copy(&filter, config.join("filter.d/postfix-anomaly.conf")).unwrap();
    let banned_from = |log: &Path| -> BTreeSet<String> {
        let out = Command::new(std::env::var("PF_PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(format!("{root}/usr/bin/fail2ban-regex"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "-o",
                "ip",
                log.to_str().unwrap(),
                "postfix-anomaly",
            ])
            .env(
                "PYTHONPATH",
                format!("{root}/usr/lib/python3/dist-packages"),
            )
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    };
    assert_eq!(
        banned_from(&log),
        [
            "203.0.113.7",
            "2001:db8:1:2::/64",
            "192.0.2.80",
            "198.51.100.70",
            "198.51.100.90"
        ]
        .into_iter()
        .map(String::from)
        .collect::<BTreeSet<_>>(),
        "{text}"
    );
    // The `resumed` line alone bans its client too.
    let resumed = dir.join("resumed.log");
    let lines: String = text
        .lines()
        .filter(|l| l.contains(": resumed "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&resumed, lines).unwrap();
    assert_eq!(
        banned_from(&resumed),
        BTreeSet::from(["198.51.100.90".to_string()]),
        "{text}"
    );
}
