//! pf-parse against fail2ban's own filter test samples for postfix, dovecot
//! and roundcube-auth (`shared/conformance/fail2ban-*.jsonl`).
//!
//! fail2ban runs each filter in modes; a sample says whether the line is a
//! failure in the modes listed with it. Our records carry a failure class
//! (`auth`, `reject`, `abuse`, `probe`, see docs/records.md); this map says
//! which classes each fail2ban mode bans, so "a failure in mode M" means
//! "our failure class is one mode M bans".

mod common;
use common::*;
use serde_json::Value;

fn classes_banned(filter: &str, mode: &str) -> &'static [&'static str] {
    match (filter, mode) {
        ("postfix", "" | "normal") => &["reject", "abuse"],
        ("postfix", "rbl") => &["reject"],
        ("postfix", "auth") => &["auth"],
        ("postfix", "errors") => &["abuse"],
        ("postfix", "ddos") => &["abuse"],
        (_, "aggressive") => &["auth", "reject", "abuse", "probe"],
        ("dovecot" | "roundcube-auth", _) => &["auth"],
        _ => panic!("no mode map for {filter}/{mode}"),
    }
}

fn modes(case: &Value) -> Vec<String> {
    match case["filter_options"].as_array() {
        None => vec![String::new()],
        Some(opts) => opts
            .iter()
            .map(|o| o["mode"].as_str().unwrap_or("").to_string())
            .collect(),
    }
}

fn check(file: &str, filter: &str) {
    let cases = read_jsonl(&shared_dir().join("conformance").join(file));
    let lines: Vec<String> = cases
        .iter()
        .map(|c| c["line"].as_str().expect("line").to_string())
        .collect();
    let records = parse_lines(&lines, &["--timezone", "CET"]);
    let mut misses = Vec::new();
    for (case, rec) in cases.iter().zip(&records) {
        let expect = case["expect_auth_failure"].as_bool().expect("annotated");
        let class = rec["failure"].as_str().unwrap_or("");
        let fields = &rec["fields"];
        let mut reasons = Vec::new();
        for mode in modes(case) {
            let banned = classes_banned(filter, &mode).contains(&class);
            if banned != expect {
                reasons.push(format!(
                    "mode {mode:?}: expected failure={expect}, got kind {} (class {class:?})",
                    rec["kind"]
                ));
            }
        }
        if expect {
            let host = case["host"].as_str().expect("failures name a host");
            // Behind a proxy, fail2ban bans the address Roundcube saw (the proxy);
            // we report the forwarded client and keep the proxy in `proxy_ip`.
            let ip_field = if fields.get("proxy_ip").is_some() {
                "proxy_ip"
            } else {
                "client_ip"
            };
            if fields[ip_field].as_str() != Some(host) {
                reasons.push(format!(
                    "{ip_field}={} but fail2ban's host is {host}",
                    fields[ip_field]
                ));
            }
        }
        if !reasons.is_empty() {
            misses.push(format!(
                "line {}: {}\n      {}",
                case["source_line"],
                reasons.join("; "),
                case["line"].as_str().unwrap_or("")
            ));
        }
    }
    assert_pass_rate(
        &format!("{file}: cases agreeing with fail2ban"),
        cases.len(),
        &misses,
        95.0,
    );
}

#[test]
fn postfix_failures_match_fail2ban() {
    check("fail2ban-postfix.jsonl", "postfix");
}

#[test]
fn dovecot_failures_match_fail2ban() {
    check("fail2ban-dovecot.jsonl", "dovecot");
}

#[test]
fn roundcube_failures_match_fail2ban() {
    check("fail2ban-roundcube-auth.jsonl", "roundcube-auth");
}
