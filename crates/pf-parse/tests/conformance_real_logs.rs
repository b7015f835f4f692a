//! pf-parse on unmodified real server logs (`shared/conformance/real/`):
//! every line comes out, nothing panics, and Postfix lines are understood.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;

fn parse_file(name: &str) -> (usize, Vec<Value>) {
    let path = shared_dir().join("conformance/real").join(name);
    let input_lines = std::fs::read(&path)
        .expect("read log")
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    let out = pf_parse(
        &[
            "--timezone",
            "UTC",
            "--year",
            "2021",
            path.to_str().expect("utf-8 path"),
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (input_lines, records(&out.stdout))
}

fn kinds_table(name: &str, recs: &[Value]) -> BTreeMap<String, usize> {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for r in recs {
        *kinds
            .entry(r["kind"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let mut rows: Vec<_> = kinds.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1));
    println!("{name}: {} records", recs.len());
    for (k, n) in rows {
        println!("  {n:>7}  {k}");
    }
    kinds
}

#[test]
fn logsums_log_every_line_out_and_postfix_understood() {
    let name = "postfix-logsums-mail.log";
    let (n, recs) = parse_file(name);
    assert_eq!(n, 69_861);
    assert_eq!(recs.len(), n, "output count == input count");
    kinds_table(name, &recs);
    let postfix: Vec<&Value> = recs
        .iter()
        .filter(|r| {
            r["program"]
                .as_str()
                .is_some_and(|p| p.starts_with("postfix/"))
        })
        .collect();
    let unknown = postfix.iter().filter(|r| r["kind"] == "unknown").count();
    let share = unknown as f64 * 100.0 / postfix.len() as f64;
    println!(
        "postfix lines: {}, unknown: {unknown} ({share:.3}%)",
        postfix.len()
    );
    for r in postfix.iter().filter(|r| r["kind"] == "unknown").take(20) {
        println!("  unknown: {}", r["raw"]);
    }
    assert!(share <= 1.0, "{share:.3}% of Postfix lines are unknown");
    // Line 22827 holds bytes that are not UTF-8: kept (lossily) and flagged.
    let bad = &recs[22_826];
    assert_eq!(bad["source"]["line"], 22_827);
    assert!(
        bad["flags"]
            .as_array()
            .is_some_and(|f| f.contains(&Value::from("invalid_utf8"))),
        "{bad}"
    );
    assert!(bad["raw"].as_str().is_some_and(|r| r.contains('\u{FFFD}')));
    // Timestamps keep the log's precision and offset.
    assert_eq!(recs[0]["ts"], "2023-03-14T00:00:31.185246+01:00");
    assert_eq!(recs[0]["kind"], "postscreen.connect");
    assert_eq!(recs[0]["fields"]["client_ip"], "185.48.118.128");
}

#[test]
fn maillog_dumps_every_line_out() {
    for name in [
        "Postfix-Maillog-Dump-maillog.log",
        "Postfix-Maillog-Dump-mailog2.log",
    ] {
        let (n, recs) = parse_file(name);
        assert_eq!(recs.len(), n, "{name}: output count == input count");
        let kinds = kinds_table(name, &recs);
        // The Roundcube lines in these dumps: sent mail and failed logins are recognised.
        assert!(
            kinds.get("roundcube.sent").copied().unwrap_or(0) >= 200,
            "{name}"
        );
        assert!(
            kinds.get("roundcube.login_failed").copied().unwrap_or(0) >= 100,
            "{name}"
        );
        for r in &recs {
            if r["kind"] == "roundcube.login_failed" {
                assert!(
                    r["fields"]["client_ip"].is_string() || r["fields"]["user"].is_string(),
                    "{r}"
                );
            }
            assert_eq!(r["parsed"], r["kind"] != "unknown");
        }
    }
}
