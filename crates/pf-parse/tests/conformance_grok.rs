//! pf-parse against postfix-grok-patterns' 191 test cases (`shared/conformance/postfix-grok.jsonl`).
//!
//! Each case is turned into a syslog line for its program, parsed by the real
//! binary, and every expected grok capture is compared with our field through
//! the name map below. At least 95% of cases must match completely.

mod common;
use common::*;
use serde_json::Value;

/// grok capture → our field(s). A list means "any of these fields" (the same
/// value has different names depending on the line: a delivery status detail
/// vs. a remote server's reply). `Absent` means we must NOT set the field.
enum Ours {
    Field(&'static [&'static str]),
    /// grok's `NOQUEUE` / `unknown` placeholders: we leave the field out.
    AbsentWhen(&'static str, &'static str),
    /// A raw text chunk that we split into its keys instead of keeping.
    NotKept,
}

fn ours(grok: &str) -> Option<Ours> {
    use Ours::*;
    let f = |names: &'static [&'static str]| Some(Field(names));
    match grok {
        "postfix_queueid" => Some(AbsentWhen("NOQUEUE", "queue_id")),
        "postfix_client_ip_unknown" => Some(AbsentWhen("unknown", "client_ip")),
        "postfix_keyvalue_data" => Some(NotKept),
        "postfix_client_hostname" => f(&["client_host"]),
        "postfix_client_ip" => f(&["client_ip"]),
        "postfix_client_port" => f(&["client_port"]),
        "postfix_relay_hostname" => f(&["relay_host"]),
        "postfix_relay_ip" => f(&["relay_ip"]),
        "postfix_relay_port" => f(&["relay_port"]),
        "postfix_relay_service" => f(&["relay_service"]),
        "postfix_smtp_stage" | "postfix_proxy_smtp_stage" => f(&["stage"]),
        "postfix_message" | "postfix_milter_message" => f(&["message"]),
        "postfix_message_level" => f(&["level"]),
        "postfix_status" => f(&["status"]),
        "postfix_smtp_response"
        | "postfix_pipe_response"
        | "postfix_local_response"
        | "postfix_error_response" => f(&["status_detail", "response"]),
        "postfix_postscreen_violation" => f(&["violation"]),
        "postfix_postscreen_violation_time" => f(&["elapsed"]),
        "postfix_smtpd_lostconn_data" => f(&["conn_event"]),
        "postfix_smtp_lostconn_data" | "postfix_tls_error" => f(&["error"]),
        "postfix_smtp_lostconn_reason" => f(&["during"]),
        "postfix_action"
        | "postfix_proxy_result"
        | "postfix_postsuper_action"
        | "postfix_postsuper_summary_action" => f(&["action"]),
        "postfix_status_message" | "postfix_postscreen_toobusy_data" => f(&["reject_reason"]),
        "postfix_status_code" => f(&["reject_code"]),
        "postfix_status_code_enhanced" => f(&["reject_dsn"]),
        "postfix_status_data" => f(&["reject_target"]),
        "postfix_proxy_message" => f(&["response"]),
        "postfix_proxy_status_code" => f(&["response_code"]),
        "postfix_proxy_status_code_enhanced" => f(&["response_dsn"]),
        "postfix_anvil_timestamp" => f(&["at"]),
        "postfix_anvil_conn_count" | "postfix_postsuper_summary_count" => f(&["count"]),
        "postfix_anvil_conn_rate" => f(&["rate"]),
        "postfix_anvil_conn_period" => f(&["period"]),
        "postfix_anvil_cache_size" => f(&["cache_size"]),
        "postfix_service" => f(&["service"]),
        "postfix_tls_trustlevel" => f(&["tls_trust"]),
        "postfix_tls_version" => f(&["tls_protocol"]),
        "postfix_tls_cipher" => f(&["tls_cipher"]),
        "postfix_tls_cipher_size" => f(&["tls_cipher_bits"]),
        "postfix_tls_key_exchange" => f(&["tls_key_exchange"]),
        "postfix_tls_server_signature" => f(&["tls_server_signature"]),
        "postfix_tls_server_signature_curve" => f(&["tls_server_signature_curve"]),
        "postfix_tls_server_signature_size" => f(&["tls_server_signature_bits"]),
        "postfix_tls_server_digest" => f(&["tls_server_digest"]),
        "postfix_tls_security_level" => f(&["tls_level"]),
        "postfix_tls_downgrade_level" => f(&["tls_downgrade"]),
        "postfix_tls_policy_undecided" => f(&["tls_policy_undecided"]),
        "postfix_requiretls" => f(&["requiretls"]),
        "postfix_requiretls_policy_undecided" => f(&["requiretls_policy_undecided"]),
        "postfix_requiretls_policy_violation" => f(&["requiretls_policy_violation"]),
        "postfix_requiretls_downgrade_level" => f(&["requiretls_downgrade"]),
        "postfix_postscreen_access" => f(&["postscreen_result"]),
        "postfix_command_counter_data" => f(&["command_counts"]),
        "postfix_bounce_queueid" => f(&["notification_queue_id"]),
        "postfix_bounce_recipient" => f(&["notify"]),
        "postfix_bounce_reason" => f(&["notification"]),
        "postfix_message-id" => f(&["message_id"]),
        "postfix_milter_result" => f(&["milter_action"]),
        "postfix_milter_data" | "postfix_prepend_value" => f(&["action_arg"]),
        "postfix_prepend_type" => f(&["check"]),
        "postfix_prepend_trigger" => f(&["trigger"]),
        "postfix_version" => f(&["version"]),
        "postfix_config_path" => f(&["config_dir"]),
        "postfix_termination_signal" => f(&["signal"]),
        "postfix_dnsbl_domain" => f(&["dnsbl_domain"]),
        "postfix_dnsbl_result" => f(&["dnsbl_result"]),
        "postfix_from" => f(&["from"]),
        "postfix_scache_hits" => f(&["hits"]),
        "postfix_scache_miss" => f(&["misses"]),
        "postfix_scache_success" => f(&["success_pct"]),
        "postfix_scache_timestamp" => f(&["since"]),
        "postfix_scache_domains" => f(&["max_domains"]),
        "postfix_scache_addresses" => f(&["max_addresses"]),
        "postfix_scache_connection" => f(&["max_connections"]),
        "postfix_verify_cleanup_type" => f(&["cleanup_type"]),
        "postfix_verify_cache_retained" | "postfix_postscreen_cache_retained" => {
            f(&["cache_retained"])
        }
        "postfix_verify_cache_dropped" | "postfix_postscreen_cache_dropped" => {
            f(&["cache_dropped"])
        }
        "postfix_server_ip" => f(&["server_ip"]),
        "postfix_server_port" => f(&["server_port"]),
        "postfix_postscreen_dnsbl_rank" => f(&["dnsbl_rank"]),
        "postfix_pix_workaround" => f(&["pix_workarounds"]),
        "postfix_discarded_ehlo_keywords" => f(&["discarded_ehlo_keywords"]),
        "postfix_delay_before_qmgr" => f(&["delay_before_qmgr"]),
        "postfix_delay_in_qmgr" => f(&["delay_in_qmgr"]),
        "postfix_delay_conn_setup" => f(&["delay_conn_setup"]),
        "postfix_delay_transmission" => f(&["delay_transmission"]),
        other => other
            .strip_prefix("postfix_")
            .and_then(|name| CMD_FIELDS.iter().find(|c| **c == name))
            .map(|c| Field(std::slice::from_ref(c))),
    }
}

/// SMTP command counters keep grok's names without the `postfix_` prefix.
const CMD_FIELDS: &[&str] = &[
    "cmd_helo",
    "cmd_ehlo",
    "cmd_starttls",
    "cmd_auth",
    "cmd_mail",
    "cmd_rcpt",
    "cmd_data",
    "cmd_bdat",
    "cmd_rset",
    "cmd_noop",
    "cmd_quit",
    "cmd_unknown",
    "cmd_count",
    "cmd_helo_accepted",
    "cmd_ehlo_accepted",
    "cmd_starttls_accepted",
    "cmd_auth_accepted",
    "cmd_mail_accepted",
    "cmd_rcpt_accepted",
    "cmd_data_accepted",
    "cmd_bdat_accepted",
    "cmd_rset_accepted",
    "cmd_noop_accepted",
    "cmd_quit_accepted",
    "cmd_unknown_accepted",
    "cmd_count_accepted",
];

/// Builds a full syslog line for a case; sub-field cases are wrapped in the line that carries them.
fn syslog_line(case: &Value) -> String {
    let line = case["line_yaml_escaped"]
        .as_str()
        .or(case["line"].as_str())
        .expect("line");
    let program = case["program"].as_str();
    let (program, message) = match case["input"].as_str().expect("input") {
        "message" => (program.expect("message cases name a program").to_string(), line.to_string()),
        "postfix_relay" => ("postfix/smtp".into(), format!("ABC123DEF0: to=<a@example.com>, relay={line}, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (ok)")),
        "postfix_delays" => ("postfix/smtp".into(), format!("ABC123DEF0: to=<a@example.com>, relay=none, delay=1, delays={line}, dsn=2.0.0, status=sent (ok)")),
        "postfix_tls" => ("postfix/smtp".into(), format!("ABC123DEF0: to=<a@example.com>, relay=none, delay=1, tls={line}, dsn=2.0.0, status=sent (ok)")),
        "postfix_command_counter_data" => ("postfix/smtpd".into(), format!("disconnect from unknown[192.0.2.1] {line}")),
        other => panic!("unexpected input kind {other}"),
    };
    format!("Oct 26 18:13:50 mx1 {program}[4242]: {message}")
}

#[test]
fn grok_cases_give_the_expected_values() {
    let cases = read_jsonl(&shared_dir().join("conformance/postfix-grok.jsonl"));
    assert_eq!(cases.len(), 191);
    let lines: Vec<String> = cases.iter().map(syslog_line).collect();
    let records = parse_lines(&lines, &["--timezone", "UTC"]);
    let mut misses = Vec::new();
    for (case, rec) in cases.iter().zip(&records) {
        let mut reasons = Vec::new();
        if rec["kind"] == "unknown" {
            reasons.push("kind is unknown".to_string());
        }
        let fields = &rec["fields"];
        for (grok, expected) in case["expect"].as_object().expect("expect") {
            let want = as_text(expected);
            match ours(grok) {
                None => reasons.push(format!("no mapping for grok field {grok}")),
                Some(Ours::NotKept) => {}
                Some(Ours::AbsentWhen(placeholder, field)) => {
                    let got = fields.get(field).map(as_text);
                    let ok = if want == placeholder {
                        got.is_none()
                    } else {
                        got.as_deref() == Some(&want)
                    };
                    if !ok {
                        reasons.push(format!("{grok}={want:?} but {field}={got:?}"));
                    }
                }
                Some(Ours::Field(names)) => {
                    let got: Vec<String> = names
                        .iter()
                        .filter_map(|n| fields.get(*n).map(as_text))
                        .collect();
                    if !got.contains(&want) {
                        reasons.push(format!("{grok}={want:?} but {}={got:?}", names.join("|")));
                    }
                }
            }
        }
        if !reasons.is_empty() {
            misses.push(format!(
                "{}: {}",
                case["source"].as_str().unwrap_or("?"),
                reasons.join("; ")
            ));
        }
    }
    assert_pass_rate("postfix-grok: cases matching", cases.len(), &misses, 95.0);
}

#[test]
fn every_corpus_daemon_maps_to_its_program() {
    let cases = read_jsonl(&shared_dir().join("conformance/postfix-grok.jsonl"));
    let message_cases: Vec<&Value> = cases.iter().filter(|c| c["input"] == "message").collect();
    let lines: Vec<String> = message_cases.iter().map(|c| syslog_line(c)).collect();
    let records = parse_lines(&lines, &["--timezone", "UTC"]);
    for (case, rec) in message_cases.iter().zip(&records) {
        assert_eq!(rec["program"], case["program"], "{}", case["source"]);
        assert_eq!(rec["host"], "mx1");
        assert_eq!(rec["pid"], 4242);
    }
}
