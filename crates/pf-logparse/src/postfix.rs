//! Postfix messages, daemon by daemon.
//!
//! Each daemon function gets the message with its queue id and severity
//! prefixes already removed, fills `fields` and returns a kind, or `None`
//! when it does not recognise the text (the caller then falls back to the
//! generic warning/error kinds, or `unknown`).

use crate::fields::Fields;
use crate::scan::{
    bracket_ip_port, command_counters, endpoint, host_bracket, key_values, looks_like_ip,
    smtp_reply, unangle, Role,
};

type Kind = Option<&'static str>;

/// The normalised program name for a daemon (`postfix/smtpd`).
pub fn program_for(daemon: &str) -> Option<&'static str> {
    const PROGRAMS: &[(&str, &str)] = &[
        ("smtpd", "postfix/smtpd"),
        ("postscreen", "postfix/postscreen"),
        ("cleanup", "postfix/cleanup"),
        ("qmgr", "postfix/qmgr"),
        ("oqmgr", "postfix/oqmgr"),
        ("nqmgr", "postfix/nqmgr"),
        ("pickup", "postfix/pickup"),
        ("bounce", "postfix/bounce"),
        ("defer", "postfix/defer"),
        ("trace", "postfix/trace"),
        ("smtp", "postfix/smtp"),
        ("lmtp", "postfix/lmtp"),
        ("local", "postfix/local"),
        ("virtual", "postfix/virtual"),
        ("pipe", "postfix/pipe"),
        ("error", "postfix/error"),
        ("retry", "postfix/retry"),
        ("discard", "postfix/discard"),
        ("anvil", "postfix/anvil"),
        ("dnsblog", "postfix/dnsblog"),
        ("tlsproxy", "postfix/tlsproxy"),
        ("scache", "postfix/scache"),
        ("master", "postfix/master"),
        ("postfix-script", "postfix/postfix-script"),
        ("postsuper", "postfix/postsuper"),
        ("postdrop", "postfix/postdrop"),
        ("sendmail", "postfix/sendmail"),
        ("trivial-rewrite", "postfix/trivial-rewrite"),
        ("verify", "postfix/verify"),
        ("tlsmgr", "postfix/tlsmgr"),
        ("postmap", "postfix/postmap"),
        ("postalias", "postfix/postalias"),
        ("postqueue", "postfix/postqueue"),
        ("postlog", "postfix/postlog"),
        ("proxymap", "postfix/proxymap"),
        ("flush", "postfix/flush"),
        ("showq", "postfix/showq"),
        ("qmqpd", "postfix/qmqpd"),
        ("spawn", "postfix/spawn"),
        ("postconf", "postfix/postconf"),
        ("postmulti", "postfix/postmulti"),
    ];
    PROGRAMS.iter().find(|(d, _)| *d == daemon).map(|(_, p)| *p)
}

const LEVELS: &[&str] = &["warning", "error", "fatal", "panic", "info"];

fn strip_level(s: &str) -> Option<(&'static str, &str)> {
    for l in LEVELS {
        if let Some(rest) = s.strip_prefix(l).and_then(|r| r.strip_prefix(": ")) {
            return Some((l, rest));
        }
    }
    None
}

/// Postfix queue ids: short (`4104E3D`, upper-case hex) or long (`4Pbvgs0Pt6z9tLp`).
pub fn is_queue_id(s: &str) -> bool {
    let n = s.len();
    if !(5..=24).contains(&n) || !s.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return false;
    }
    let upper_hex = s
        .bytes()
        .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c));
    let has_digit = s.bytes().any(|c| c.is_ascii_digit());
    (upper_hex && n >= 6) || (has_digit && n >= 10 && s.bytes().any(|c| c.is_ascii_uppercase()))
}

fn strip_queue_id(s: &str) -> Option<(&str, &str)> {
    let (id, rest) = s
        .split_once(": ")
        .or_else(|| s.strip_suffix(':').map(|id| (id, "")))?;
    (id == "NOQUEUE" || is_queue_id(id)).then_some((id, rest))
}

/// Parses the message of a Postfix daemon.
pub fn parse<'a>(daemon: &str, msg: &'a str, f: &mut Fields<'a>) -> &'static str {
    let mut body = msg;
    let mut level = None;
    let mut queued = false;
    // Either order occurs: `QID: warning: ...` and `warning: QID: ...`.
    for _ in 0..2 {
        if level.is_none() {
            if let Some((l, rest)) = strip_level(body) {
                level = Some(l);
                body = rest;
                continue;
            }
        }
        if !queued {
            if let Some((id, rest)) = strip_queue_id(body) {
                queued = true;
                if id != "NOQUEUE" {
                    f.s("queue_id", id);
                }
                body = rest;
                continue;
            }
        }
        break;
    }
    if let Some(l) = level {
        f.s("level", l);
    }
    let kind = match daemon {
        "smtpd" => smtpd(body, level, f),
        "postscreen" => postscreen(body, f),
        "cleanup" => cleanup(body, level, f),
        "qmgr" | "oqmgr" | "nqmgr" => qmgr(body, f),
        "pickup" => pickup(body, f),
        "bounce" | "defer" | "trace" => bounce(body, f),
        "smtp" | "lmtp" => smtp_client(body, f),
        "local" | "virtual" | "pipe" | "error" | "retry" | "discard" => delivery(body, f),
        "anvil" => anvil(body, f),
        "dnsblog" => dnsblog(body, f),
        "tlsproxy" => tlsproxy(body, f),
        "scache" => scache(body, f),
        "master" => master(body, f),
        "postsuper" => postsuper(body, queued, f),
        "verify" => cache_cleanup(body, f).map(|_| "verify.cache_cleanup"),
        "postfix-script" if level.is_none() => {
            f.s("message", body);
            Some("postfix_script.event")
        }
        _ => None,
    };
    if let Some(k) = kind {
        return k;
    }
    // A delivery status line can come from any delivery agent, including custom ones.
    if body.starts_with("to=") {
        if let Some(k) = delivery(body, f) {
            return k;
        }
    }
    if level.is_none() && is_verbose_debug(body) {
        f.s("message", body);
        return "postfix.debug";
    }
    match level {
        Some(l) => {
            f.s("message", body);
            match l {
                "warning" => "postfix.warning",
                "error" => "postfix.error",
                "fatal" => "postfix.fatal",
                "panic" => "postfix.panic",
                _ => "postfix.info",
            }
        }
        None => "unknown",
    }
}

/// Output of a daemon run with `-v` (`qmgr_scan_start: ...`, `input attribute name: ...`):
/// internal function names and IPC traces, never a mail event.
fn is_verbose_debug(s: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "input attribute ",
        "send attr ",
        "private/",
        "public/",
        "request: ",
        "request ignored",
        "start sorted recipient list",
        "end sorted recipient list",
        "connection established",
        "done incoming queue scan",
        "done deferred queue scan",
        "> ",
        "< ",
        ">>> ",
        "watchdog_",
        "auto_clnt_",
        "connect to subsystem ",
        "start move queue",
        "end move queue",
        "process generation: ",
        "mynetworks: ",
        "idle timeout -- exiting",
        "connection closed",
        "wakeup ",
    ];
    if PREFIXES.iter().any(|p| s.starts_with(p)) {
        return true;
    }
    // `function_name: ...` — a C identifier with an underscore.
    let Some((word, _)) = s.split_once(": ") else {
        return false;
    };
    s.ends_with(" stream disconnect")
        || word.contains('_')
            && word
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// `after STAGE( (N bytes))? from host[ip]` as in `lost connection after DATA (0 bytes) from ...`.
fn after_stage_from<'a>(s: &'a str, f: &mut Fields<'a>) -> Option<&'a str> {
    let s = s.strip_prefix("after ")?;
    let from = s.find(" from ")?;
    let stage_text = &s[..from];
    let stage = match stage_text.find(" (") {
        Some(i) => {
            if let Some(bytes) = stage_text[i + 2..].strip_suffix(" bytes)") {
                f.num("bytes", bytes);
            }
            &stage_text[..i]
        }
        None => stage_text,
    };
    f.s("stage", stage);
    endpoint(&s[from + 6..], f, Role::Client)?;
    Some(stage)
}

fn smtpd<'a>(s: &'a str, level: Option<&str>, f: &mut Fields<'a>) -> Kind {
    if let Some(rest) = s.strip_prefix("connect from ") {
        endpoint(rest, f, Role::Client)?;
        return Some("smtpd.connect");
    }
    if let Some(rest) = s.strip_prefix("disconnect from ") {
        let rest = endpoint(rest, f, Role::Client)?;
        let counters = rest.trim();
        if !counters.is_empty() {
            f.s("command_counts", counters);
        }
        return Some(match command_counters(counters, f) {
            Some((0, total)) if total > 0 => "smtpd.disconnect_auth_failed",
            _ => "smtpd.disconnect",
        });
    }
    if let Some(rest) = s.strip_prefix("client=") {
        let after = endpoint(rest, f, Role::Client)?;
        key_values(after, f);
        return Some("smtpd.client");
    }
    for (prefix, event, kind) in [
        (
            "lost connection ",
            "lost connection",
            "smtpd.lost_connection",
        ),
        ("timeout ", "timeout", "smtpd.timeout"),
        (
            "too many errors ",
            "too many errors",
            "smtpd.too_many_errors",
        ),
        ("bare <LF> received ", "bare <LF> received", "smtpd.bare_lf"),
        (
            "improper command pipelining ",
            "improper command pipelining",
            "smtpd.improper_pipelining",
        ),
    ] {
        if let Some(rest) = s.strip_prefix(prefix) {
            f.s("conn_event", event);
            let stage = after_stage_from(rest, f)?;
            if kind == "smtpd.lost_connection"
                && matches!(stage, "CONNECT" | "HELO" | "EHLO" | "STARTTLS")
            {
                return Some("smtpd.lost_connection_early");
            }
            return Some(kind);
        }
    }
    if let Some(rest) = s.strip_prefix("SSL_accept error from ") {
        f.s("conn_event", "SSL_accept error");
        let rest = endpoint(rest, f, Role::Client)?;
        if let Some(e) = rest.strip_prefix(": ") {
            f.s("error", e);
        }
        return Some("smtpd.tls_error");
    }
    if let Some(k) = tls_established(s, f, "smtpd.tls_established") {
        return Some(k);
    }
    if let Some(rest) = s.strip_prefix("discarding EHLO keywords: ") {
        f.s("discarded_ehlo_keywords", rest);
        return Some("smtpd.ehlo_keywords_discarded");
    }
    if let Some(rest) = s
        .strip_prefix("proxy-accept: ")
        .map(|r| ("accept", r))
        .or_else(|| s.strip_prefix("proxy-reject: ").map(|r| ("reject", r)))
    {
        let (action, rest) = rest;
        f.s("action", action);
        let (stage, text) = rest
            .split_once(": ")
            .unwrap_or((rest.trim_end_matches(':'), ""));
        f.s("stage", stage);
        let (response, tail) = split_tail(text);
        f.s("response", response);
        let (code, dsn, _) = smtp_reply(response);
        if let Some(c) = code {
            f.num("response_code", c);
        }
        if let Some(d) = dsn {
            f.s("response_dsn", d);
        }
        key_values(tail, f);
        return Some("smtpd.proxy");
    }
    if let Some(k) = smtpd_action(s, f) {
        return Some(k);
    }
    if level == Some("warning") {
        return smtpd_warning(s, f);
    }
    None
}

/// Splits `text; from=<a> to=<b> proto=ESMTP helo=<h>` into the text and the key/value tail.
fn split_tail(s: &str) -> (&str, &str) {
    for marker in ["; from=<", "; to=<", "; proto=", "; helo="] {
        if let Some(i) = s.find(marker) {
            return (&s[..i], &s[i + 2..]);
        }
    }
    (s, "")
}

/// `ACTION: STAGE from host[ip]: reply; from=<> to=<> proto=... helo=<...>`.
fn smtpd_action<'a>(s: &'a str, f: &mut Fields<'a>) -> Kind {
    let (action, rest) = s.split_once(": ")?;
    const ACTIONS: &[&str] = &[
        "reject",
        "defer",
        "reject_warning",
        "defer_if_permit",
        "defer_if_reject",
        "milter-reject",
        "milter-discard",
        "milter-hold",
        "discard",
        "hold",
        "filter",
        "redirect",
        "warn",
        "info",
        "prepend",
        "bcc",
    ];
    if !ACTIONS.contains(&action) {
        return None;
    }
    let (stage, after) = rest.split_once(" from ")?;
    if stage.is_empty() || stage.contains(' ') {
        return None;
    }
    f.s("action", action);
    f.s("stage", stage);
    let after = endpoint(after, f, Role::Client)?;
    let text = after.strip_prefix(": ").unwrap_or(after);
    let (reply, tail) = split_tail(text);
    key_values(tail, f);
    let rbl = reject_reply(reply, f);
    Some(match action {
        "reject" | "defer" | "reject_warning" | "defer_if_permit" | "defer_if_reject" if rbl => {
            "smtpd.rbl_reject"
        }
        "reject" | "defer" | "reject_warning" | "defer_if_permit" | "defer_if_reject" => {
            "smtpd.reject"
        }
        "milter-reject" => "smtpd.milter_reject",
        _ => "smtpd.action",
    })
}

/// `550 5.1.1 <target>: Recipient address rejected: reason` → reject_code, reject_dsn,
/// reject_target, reject_reason. Returns true when a DNS blocklist caused it.
fn reject_reply<'a>(reply: &'a str, f: &mut Fields<'a>) -> bool {
    let (code, dsn, text) = smtp_reply(reply);
    if let Some(c) = code {
        f.num("reject_code", c);
    }
    if let Some(d) = dsn {
        f.s("reject_dsn", d);
    }
    // `Service unavailable; Client host [1.2.3.4] blocked using zen.spamhaus.org; <info>`
    if let Some(i) = text.find(" blocked using ") {
        let before = &text[..i];
        if let Some(open) = before.rfind('[') {
            if let Some(ip) = before[open + 1..].strip_suffix(']') {
                f.s("reject_target", ip);
            }
        }
        let list = &text[i + 1..];
        let list_end = list.find(';').unwrap_or(list.len());
        f.s("reject_reason", list);
        let domain = list["blocked using ".len().min(list_end)..list_end].trim();
        f.s("rbl_domain", domain);
        return true;
    }
    let (target, reason) = if let Some(t) = text.strip_prefix('<') {
        match t.find(">: ") {
            Some(end) => (Some(&t[..end]), &t[end + 3..]),
            None => (None, text),
        }
    } else if let Some(r) = text.strip_prefix(": ") {
        (Some(""), r)
    } else {
        (None, text)
    };
    if let Some(t) = target.filter(|t| !t.is_empty()) {
        f.s("reject_target", t);
    }
    if !reason.is_empty() {
        f.s("reject_reason", reason);
    }
    false
}

fn smtpd_warning<'a>(s: &'a str, f: &mut Fields<'a>) -> Kind {
    f.s("message", s);
    // `host[ip]: SASL LOGIN authentication failed: reason`
    if let Some((_, _, rest)) = host_bracket(s) {
        let rest = endpoint(s, f, Role::Client).unwrap_or(rest);
        if let Some(sasl) = rest.strip_prefix(": SASL ") {
            f.s("message", &rest[2..]);
            let (method, why) = sasl.split_once(" authentication failed")?;
            f.s("sasl_method", method);
            let why = why.strip_prefix(':').unwrap_or(why).trim_start();
            let (reason, user) = match why.split_once(", sasl_username=") {
                Some((r, u)) => (r, Some(u)),
                None => (why, None),
            };
            if let Some(u) = user {
                f.s("sasl_username", u);
            }
            f.s("error", reason);
            return Some(match reason {
                r if r.starts_with("Connection lost to authentication server") => {
                    "smtpd.sasl_auth_error"
                }
                r if r.contains("no mechanism available")
                    || r.starts_with("Internal authentication") =>
                {
                    "smtpd.sasl_auth_error"
                }
                r if r.starts_with("Invalid authentication mechanism") => {
                    "smtpd.sasl_bad_mechanism"
                }
                _ => "smtpd.sasl_auth_failed",
            });
        }
        if let Some(rest) = rest.strip_prefix(": ") {
            if rest.starts_with("hostname ") && rest.contains(" verification failed")
                || rest.starts_with("address not listed for hostname")
            {
                return Some("smtpd.hostname_mismatch");
            }
        }
        if rest.starts_with(": SASL ") {
            return None;
        }
    }
    if let Some(rest) = s.strip_prefix("hostname ") {
        let (host, rest) = rest.split_once(" does not resolve to address ")?;
        f.s("client_host", host);
        let ip = rest
            .split(':')
            .next()
            .filter(|_| !rest.contains("::"))
            .unwrap_or(rest);
        let ip = if looks_like_ip(ip) {
            ip
        } else {
            rest.split_once(": ").map_or(rest, |(a, _)| a)
        };
        f.s("client_ip", ip);
        return Some("smtpd.hostname_mismatch");
    }
    if let Some(rest) = s.strip_prefix("non-SMTP command from ") {
        endpoint(rest, f, Role::Client)?;
        return Some("smtpd.non_smtp_command");
    }
    // `Connection rate limit exceeded: 31 from host[ip] for service smtpd`
    if let Some(i) = s.find(" limit exceeded: ") {
        f.s("limit", &s[..i]);
        let rest = &s[i + " limit exceeded: ".len()..];
        let (count, rest) = rest.split_once(" from ")?;
        f.num("count", count);
        let rest = endpoint(rest, f, Role::Client)?;
        if let Some(svc) = rest.strip_prefix(" for service ") {
            f.s("service", svc);
        }
        return Some("smtpd.rate_limit");
    }
    if s.starts_with("TLS library problem") {
        return Some("smtpd.tls_error");
    }
    None
}

/// `Trusted TLS connection established from/to host[ip]:port: TLSv1.3 with cipher X (256/256 bits) ...`
fn tls_established<'a>(s: &'a str, f: &mut Fields<'a>, kind: &'static str) -> Kind {
    let (trust, rest) = s.split_once(" TLS connection established ")?;
    if trust.contains(' ') {
        return None;
    }
    let (role, rest) = if let Some(r) = rest.strip_prefix("from ") {
        (Role::Client, r)
    } else {
        (Role::Relay, rest.strip_prefix("to ")?)
    };
    f.s("tls_trust", trust);
    let rest = endpoint(rest, f, role)?;
    let rest = rest.strip_prefix(": ")?;
    let (proto, rest) = rest.split_once(" with cipher ")?;
    f.s("tls_protocol", proto);
    let (cipher, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    f.s("tls_cipher", cipher);
    let mut rest = rest;
    if let Some(r) = rest.strip_prefix('(') {
        if let Some((bits, r2)) = r.split_once(" bits)") {
            f.s("tls_cipher_bits", bits);
            rest = r2;
        }
    }
    let mut words = rest.split_whitespace().peekable();
    while let Some(w) = words.next() {
        match w {
            "key-exchange" => {
                if let Some(v) = words.next() {
                    f.s("tls_key_exchange", v);
                }
            }
            "server-signature" | "client-signature" => {
                let (k, k_bits, k_curve) = if w == "server-signature" {
                    (
                        "tls_server_signature",
                        "tls_server_signature_bits",
                        "tls_server_signature_curve",
                    )
                } else {
                    (
                        "tls_client_signature",
                        "tls_client_signature_bits",
                        "tls_client_signature_curve",
                    )
                };
                if let Some(v) = words.next() {
                    f.s(k, v);
                }
                if words.peek().is_some_and(|n| n.starts_with('(')) {
                    let first = words.next().unwrap_or_default().trim_start_matches('(');
                    if let Some(c) = first.strip_suffix(')') {
                        f.s(k_curve, c);
                    } else if words.peek() == Some(&"bits)") {
                        words.next();
                        f.num(k_bits, first);
                    }
                }
            }
            "server-digest" | "client-digest" => {
                if let Some(v) = words.next() {
                    f.s(
                        if w == "server-digest" {
                            "tls_server_digest"
                        } else {
                            "tls_client_digest"
                        },
                        v,
                    );
                }
            }
            _ => {}
        }
    }
    Some(kind)
}

fn postscreen<'a>(s: &'a str, f: &mut Fields<'a>) -> Kind {
    if let Some(rest) = s.strip_prefix("CONNECT from ") {
        let rest = bracket_ip_port(rest, f, "client_ip", "client_port")?;
        if let Some(to) = rest.strip_prefix(" to ") {
            bracket_ip_port(to, f, "server_ip", "server_port");
        }
        return Some("postscreen.connect");
    }
    if let Some(rest) = s.strip_prefix("DISCONNECT ") {
        bracket_ip_port(rest, f, "client_ip", "client_port")?;
        return Some("postscreen.disconnect");
    }
    for (prefix, kind) in [
        ("PASS NEW ", "postscreen.pass"),
        ("PASS OLD ", "postscreen.pass"),
        ("WHITELISTED ", "postscreen.listed"),
        ("ALLOWLISTED ", "postscreen.listed"),
        ("WHITELIST VETO ", "postscreen.listed"),
        ("ALLOWLIST VETO ", "postscreen.listed"),
        ("BLACKLISTED ", "postscreen.denylisted"),
        ("DENYLISTED ", "postscreen.denylisted"),
    ] {
        if let Some(rest) = s.strip_prefix(prefix) {
            f.s("postscreen_result", prefix.trim_end());
            bracket_ip_port(rest, f, "client_ip", "client_port")?;
            return Some(kind);
        }
    }
    if let Some(rest) = s.strip_prefix("PREGREET ") {
        f.s("violation", "PREGREET");
        let (bytes, rest) = rest.split_once(" after ")?;
        f.num("bytes", bytes);
        let (secs, rest) = rest.split_once(" from ")?;
        f.num("elapsed", secs);
        let rest = bracket_ip_port(rest, f, "client_ip", "client_port")?;
        if let Some(text) = rest.strip_prefix(": ") {
            f.s("pregreet", text.trim_end());
        }
        return Some("postscreen.pregreet");
    }
    if let Some(rest) = s.strip_prefix("HANGUP after ") {
        f.s("violation", "HANGUP");
        let (secs, rest) = rest.split_once(" from ")?;
        f.num("elapsed", secs);
        let rest = bracket_ip_port(rest, f, "client_ip", "client_port")?;
        if let Some(stage) = rest.strip_prefix(" in ") {
            f.s("stage", stage);
        }
        return Some("postscreen.hangup");
    }
    if let Some(rest) = s.strip_prefix("DNSBL rank ") {
        f.s("violation", "DNSBL");
        let (rank, rest) = rest.split_once(" for ")?;
        f.num("dnsbl_rank", rank);
        bracket_ip_port(rest, f, "client_ip", "client_port")?;
        return Some("postscreen.dnsbl");
    }
    for v in [
        "COMMAND TIME LIMIT",
        "COMMAND COUNT LIMIT",
        "COMMAND LENGTH LIMIT",
        "COMMAND PIPELINING",
        "NON-SMTP COMMAND",
        "BARE NEWLINE",
    ] {
        if let Some(rest) = s.strip_prefix(v).and_then(|r| r.strip_prefix(" from ")) {
            f.s("violation", v);
            let rest = bracket_ip_port(rest, f, "client_ip", "client_port")?;
            if let Some(after) = rest.strip_prefix(" after ") {
                let (stage, text) = after
                    .split_once(": ")
                    .unwrap_or((after.trim_end_matches(':'), ""));
                f.s("stage", stage.trim_end());
                if !text.trim().is_empty() {
                    f.s("command", text.trim_end());
                }
            }
            return Some("postscreen.command_violation");
        }
    }
    if let Some(rest) = s.strip_prefix("reject: ") {
        let (stage, rest) = rest.split_once(" from ")?;
        f.s("action", "reject");
        f.s("stage", stage);
        let rest = bracket_ip_port(rest, f, "client_ip", "client_port")?;
        let text = rest.strip_prefix(": ").unwrap_or(rest);
        let (reply, tail) = split_tail(text);
        key_values(tail, f);
        if stage == "CONNECT" {
            f.s("reject_reason", reply);
            return Some("postscreen.busy");
        }
        reject_reply(reply, f);
        return Some("postscreen.reject");
    }
    cache_cleanup(s, f).map(|_| "postscreen.cache_cleanup")
}

/// `cache btree:/path full cleanup: retained=242 dropped=7 entries`
fn cache_cleanup<'a>(s: &'a str, f: &mut Fields<'a>) -> Option<()> {
    let rest = s.strip_prefix("cache ")?;
    let (head, counts) = rest.split_once(" cleanup: ")?;
    let (table, kind) = head.rsplit_once(' ')?;
    f.s("cache", table);
    f.s("cleanup_type", kind);
    for tok in counts.split_whitespace() {
        if let Some(v) = tok.strip_prefix("retained=") {
            f.num("cache_retained", v);
        } else if let Some(v) = tok.strip_prefix("dropped=") {
            f.num("cache_dropped", v);
        }
    }
    Some(())
}

fn cleanup<'a>(s: &'a str, level: Option<&'static str>, f: &mut Fields<'a>) -> Kind {
    if let Some(id) = s.strip_prefix("message-id=") {
        f.s("message_id", unangle(id.trim_end()));
        return Some("cleanup.message_id");
    }
    if let Some(id) = s.strip_prefix("resent-message-id=") {
        f.s("resent_message_id", unangle(id.trim_end()));
        return Some("cleanup.message_id");
    }
    if let Some(rest) = s.strip_prefix("milter-") {
        let (action, rest) = rest.split_once(": ")?;
        f.s("milter_action", action);
        let (text, tail) = split_tail(rest);
        f.s("message", text);
        header_sender(text, f);
        milter_tail(tail, f);
        return Some("cleanup.milter_action");
    }
    // `[level|action]: header|body NAME: VALUE from host[ip]; from=<> to=<>...: ARG`
    let (action, rest) = match level {
        Some(l) if s.starts_with("header ") || s.starts_with("body ") => (l, s),
        _ => {
            let (a, r) = s.split_once(": ")?;
            if !matches!(
                a,
                "prepend"
                    | "replace"
                    | "hold"
                    | "discard"
                    | "redirect"
                    | "reject"
                    | "filter"
                    | "bcc"
                    | "strip"
                    | "dunno"
                    | "info"
                    | "warning"
            ) {
                return None;
            }
            (a, r)
        }
    };
    let (what, _) = rest.split_once(' ')?;
    if what != "header" && what != "body" {
        return None;
    }
    f.s("action", action);
    f.s("check", what);
    let (text, tail) = split_tail(rest);
    f.s("message", text);
    let trigger = header_sender(text, f).unwrap_or(text);
    f.s(
        "trigger",
        trigger
            .strip_prefix(what)
            .map(str::trim_start)
            .unwrap_or(trigger),
    );
    milter_tail(tail, f);
    Some("cleanup.header_action")
}

/// `... from host[ip]` at the end of header-check text: records the client and
/// returns the text before it.
fn header_sender<'a>(text: &'a str, f: &mut Fields<'a>) -> Option<&'a str> {
    let i = text.rfind(" from ")?;
    let from = &text[i + 6..];
    if from == "local" {
        return Some(&text[..i]);
    }
    let rest = endpoint(from, f, Role::Client)?;
    rest.is_empty().then_some(&text[..i])
}

/// The key/value tail of cleanup lines, which may end with `: ARG`
/// (the redirect target or the prepended header).
fn milter_tail<'a>(tail: &'a str, f: &mut Fields<'a>) {
    let (kv, arg) = match tail.rfind(">: ") {
        Some(i) => (&tail[..i + 1], Some(&tail[i + 3..])),
        None => (tail, None),
    };
    key_values(kv, f);
    if let Some(a) = arg {
        f.s("action_arg", a);
    }
}

fn qmgr<'a>(s: &'a str, f: &mut Fields<'a>) -> Kind {
    if s == "removed" {
        f.s("message", s);
        return Some("qmgr.removed");
    }
    if s.starts_with("skipped, still being delivered") {
        f.s("message", s);
        return Some("qmgr.skipped");
    }
    if s.starts_with("from=") {
        key_values(s.strip_suffix(" (queue active)").unwrap_or(s), f);
        return Some(if f.get_str("status").is_some() {
            "qmgr.expired"
        } else {
            "qmgr.queued"
        });
    }
    None
}

fn pickup<'a>(s: &'a str, f: &mut Fields<'a>) -> Kind {
    if s.starts_with("uid=") || s.starts_with("sender=") || s.starts_with("from=") {
        key_values(s, f);
        return Some("pickup.queued");
    }
    None
}

fn bounce<'a>(s: &'a str, f: &mut Fields<'a>) -> Kind {
    // `sender non-delivery notification: QID`
    let (head, id) = s.rsplit_once(" notification: ")?;
    let (who, what) = head.split_once(' ')?;
    f.s("notify", who);
    f.s("notification", what);
    f.s("notification_queue_id", id);
    Some("bounce.notification")
}

fn delivery<'a>(s: &'a str, f: &mut Fields<'a>) -> Kind {
    if !s.starts_with("to=") {
        return None;
    }
    key_values(s, f);
    f.get_str("status").map(|_| "smtp.delivery")
}

fn smtp_client<'a>(s: &'a str, f: &mut Fields<'a>) -> Kind {
    if s.starts_with("to=") {
        return delivery(s, f);
    }
    if let Some(rest) = s.strip_prefix("connect to ") {
        let rest = endpoint(rest, f, Role::Relay)?;
        if let Some(e) = rest.strip_prefix(": ") {
            f.s("error", e);
        }
        return Some("smtp.connect_error");
    }
    if let Some(rest) = s.strip_prefix("lost connection with ") {
        f.s("error", "lost connection");
        let rest = endpoint(rest, f, Role::Relay)?;
        if let Some(w) = rest.strip_prefix(" while ") {
            f.s("during", w);
        }
        return Some("smtp.lost_connection");
    }
    if let Some(rest) = s.strip_prefix("conversation with ") {
        let rest = endpoint(rest, f, Role::Relay)?;
        f.s("error", "timed out");
        if let Some(w) = rest.strip_prefix(" timed out while ") {
            f.s("during", w);
        }
        return Some("smtp.timeout");
    }
    if let Some(rest) = s.strip_prefix("host ") {
        let rest = endpoint(rest, f, Role::Relay)?;
        let reply = rest
            .strip_prefix(" said: ")
            .or_else(|| rest.strip_prefix(" refused to talk to me: "))?;
        remote_reply(reply, f);
        return Some("smtp.remote_reply");
    }
    if let Some(k) = tls_established(s, f, "smtp.tls_established") {
        return Some(k);
    }
    if let Some(rest) = s.strip_prefix("certificate verification failed for ") {
        let rest = endpoint(rest, f, Role::Relay)?;
        f.s("error", rest.strip_prefix(": ").unwrap_or(rest));
        return Some("smtp.tls_error");
    }
    if let Some(rest) = s.strip_prefix("SSL_connect error to ") {
        let rest = endpoint(rest, f, Role::Relay)?;
        f.num("error", rest.strip_prefix(": ").unwrap_or(rest));
        return Some("smtp.tls_error");
    }
    if let Some(rest) = s.strip_prefix("enabling PIX workarounds: ") {
        let (what, host) = rest.rsplit_once(" for ")?;
        f.s("pix_workarounds", what);
        endpoint(host, f, Role::Relay)?;
        return Some("smtp.pix_workaround");
    }
    if let Some(rest) = s.strip_prefix("SASL authentication failed; server ") {
        let rest = endpoint(rest, f, Role::Relay)?;
        if let Some(reply) = rest.strip_prefix(" said: ") {
            remote_reply(reply, f);
        }
        return Some("smtp.sasl_auth_failed");
    }
    if let Some(k) = smtp_tls_warning(s, f) {
        return Some(k);
    }
    None
}

fn smtp_tls_warning<'a>(s: &'a str, f: &mut Fields<'a>) -> Kind {
    // `host[ip]:port: re-using session with untrusted peer credential, look for details earlier in the log`
    if s.contains("TLS") || s.contains("certificate") {
        let rest = endpoint(s, f, Role::Relay)?;
        f.s("message", rest.trim_start_matches(": "));
        return Some("smtp.tls_error");
    }
    None
}

/// `450 4.7.1 <x>: text (in reply to RCPT TO command)`
fn remote_reply<'a>(reply: &'a str, f: &mut Fields<'a>) {
    let (text, stage) = match reply.rfind(" (in reply to ") {
        Some(i) => (&reply[..i], reply[i + 14..].strip_suffix(" command)")),
        None => (reply, None),
    };
    f.s("response", text);
    let (code, dsn, _) = smtp_reply(text);
    if let Some(c) = code {
        f.num("response_code", c);
    }
    if let Some(d) = dsn {
        f.s("response_dsn", d);
    }
    if let Some(st) = stage {
        f.s("stage", st);
    }
}

fn anvil<'a>(s: &'a str, f: &mut Fields<'a>) -> Kind {
    let rest = s.strip_prefix("statistics: max ")?;
    if let Some(r) = rest.strip_prefix("cache size ") {
        let (n, at) = r.split_once(" at ")?;
        f.s("statistic", "cache size");
        f.num("cache_size", n);
        f.s("at", at);
        return Some("anvil.statistics");
    }
    // `connection rate 1/60s for (smtpd:1.2.3.4) at Oct 26 18:13:50`
    let (stat, r) = rest.split_once(" for (")?;
    let (what, value) = stat.rsplit_once(' ')?;
    f.s("statistic", what);
    match value.split_once('/') {
        Some((n, period)) => {
            f.num("rate", n);
            f.s("period", period);
        }
        None => f.num("count", value),
    }
    let (who, at) = r.split_once(") at ")?;
    f.s("at", at);
    // The service may itself contain colons (`127.0.0.1:2525`): split where the rest is an address.
    let mut split = None;
    for (i, _) in who.match_indices(':') {
        let tail = &who[i + 1..];
        if tail == "unknown" || tail.parse::<std::net::IpAddr>().is_ok() {
            split = Some(i);
            break;
        }
    }
    let i = split?;
    f.s("service", &who[..i]);
    let ip = &who[i + 1..];
    if ip != "unknown" {
        f.s("client_ip", ip);
    }
    Some("anvil.statistics")
}

fn dnsblog<'a>(s: &'a str, f: &mut Fields<'a>) -> Kind {
    let rest = s.strip_prefix("addr ")?;
    let (ip, rest) = rest.split_once(" listed by domain ")?;
    let (domain, result) = rest.split_once(" as ")?;
    f.s("client_ip", ip);
    f.s("dnsbl_domain", domain);
    f.s("dnsbl_result", result);
    Some("dnsblog.listed")
}

fn tlsproxy<'a>(s: &'a str, f: &mut Fields<'a>) -> Kind {
    if let Some(rest) = s.strip_prefix("CONNECT from ") {
        bracket_ip_port(rest, f, "client_ip", "client_port")?;
        return Some("tlsproxy.connect");
    }
    if let Some(rest) = s.strip_prefix("DISCONNECT ") {
        bracket_ip_port(rest, f, "client_ip", "client_port")?;
        return Some("tlsproxy.disconnect");
    }
    if let Some(k) = tls_established(s, f, "tlsproxy.tls_established") {
        return Some(k);
    }
    if let Some(rest) = s.strip_prefix("SSL_accept error from ") {
        let rest = endpoint(rest, f, Role::Client)?;
        f.s("error", rest.trim_start_matches(": "));
        return Some("tlsproxy.tls_error");
    }
    // `TLS handshake failed for service=smtpd peer=[1.2.3.4]:59869`
    if let Some(rest) = s.strip_prefix("TLS handshake failed for service=") {
        let (service, peer) = rest.split_once(" peer=")?;
        f.s("service", service);
        f.s("error", "TLS handshake failed");
        bracket_ip_port(peer, f, "client_ip", "client_port")?;
        return Some("tlsproxy.tls_error");
    }
    None
}

fn scache<'a>(s: &'a str, f: &mut Fields<'a>) -> Kind {
    let rest = s.strip_prefix("statistics: ")?;
    if let Some(since) = rest.strip_prefix("start interval ") {
        f.s("since", since);
        return Some("scache.statistics");
    }
    if let Some(r) = rest.strip_suffix('%') {
        // `domain lookup hits=0 miss=1 success=0%`
        let (what, counts) = r.split_once(" lookup ")?;
        f.s("statistic", what);
        for tok in counts.split_whitespace() {
            match tok.split_once('=') {
                Some(("hits", v)) => f.num("hits", v),
                Some(("miss", v)) => f.num("misses", v),
                Some(("success", v)) => f.num("success_pct", v),
                _ => {}
            }
        }
        return Some("scache.statistics");
    }
    if let Some(r) = rest.strip_prefix("max simultaneous ") {
        for tok in r.split_whitespace() {
            match tok.split_once('=') {
                Some(("domains", v)) => f.num("max_domains", v),
                Some(("addresses", v)) => f.num("max_addresses", v),
                Some(("connection", v)) => f.num("max_connections", v),
                _ => {}
            }
        }
        return Some("scache.statistics");
    }
    None
}

fn master<'a>(s: &'a str, f: &mut Fields<'a>) -> Kind {
    for (prefix, kind) in [
        ("daemon started -- ", "master.start"),
        ("reload -- ", "master.reload"),
    ] {
        if let Some(rest) = s.strip_prefix(prefix) {
            for part in rest.split(", ") {
                if let Some(v) = part.strip_prefix("version ") {
                    f.s("version", v);
                } else if let Some(c) = part.strip_prefix("configuration ") {
                    f.s("config_dir", c);
                }
            }
            return Some(kind);
        }
    }
    if let Some(sig) = s.strip_prefix("terminating on signal ") {
        f.num("signal", sig);
        return Some("master.stop");
    }
    None
}

fn postsuper<'a>(s: &'a str, queued: bool, f: &mut Fields<'a>) -> Kind {
    if queued
        && matches!(
            s,
            "removed"
                | "requeued"
                | "placed on hold"
                | "released from hold"
                | "expired"
                | "force-expired"
        )
    {
        f.s("action", s);
        return Some("postsuper.action");
    }
    // `Deleted: 115 messages`
    let (action, count) = s.split_once(": ")?;
    let n = count
        .strip_suffix(" messages")
        .or_else(|| count.strip_suffix(" message"))?;
    f.s("action", action);
    f.num("count", n);
    Some("postsuper.summary")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::Val;

    fn run(daemon: &str, msg: &'static str) -> (&'static str, Fields<'static>) {
        let mut f = Fields::default();
        let k = parse(daemon, msg, &mut f);
        (k, f)
    }

    #[test]
    fn queue_ids() {
        for id in [
            "4104E3D",
            "D2FAE20586",
            "4Pbvgs0Pt6z9tLp",
            "48rT2v1hQrz1J0N",
            "ED06590130AA1C9D6D862",
        ] {
            assert!(is_queue_id(id), "{id}");
        }
        for id in ["statistics", "warning", "Deleted", "daemon", "ABC"] {
            assert!(!is_queue_id(id), "{id}");
        }
    }

    #[test]
    fn smtpd_reject_with_tail() {
        let (k, f) = run("smtpd", "NOQUEUE: reject: RCPT from a.b[1.2.3.4]: 550 5.1.1 <x@y.z>: Recipient address rejected: User unknown; from=<s@t.u> to=<x@y.z> proto=ESMTP helo=<h>");
        assert_eq!(k, "smtpd.reject");
        assert_eq!(f.get_str("client_ip"), Some("1.2.3.4"));
        assert_eq!(f.get("reject_code"), Some(&Val::Int(550)));
        assert_eq!(f.get_str("reject_target"), Some("x@y.z"));
        assert_eq!(
            f.get_str("reject_reason"),
            Some("Recipient address rejected: User unknown")
        );
        assert_eq!(f.get_str("helo"), Some("h"));
        assert_eq!(f.get_str("from"), Some("s@t.u"));
        assert!(f.get("queue_id").is_none());
    }

    #[test]
    fn sasl_failures_and_server_errors_differ() {
        assert_eq!(
            run(
                "smtpd",
                "warning: unknown[1.2.3.4]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"
            )
            .0,
            "smtpd.sasl_auth_failed"
        );
        assert_eq!(
            run("smtpd", "warning: unknown[1.2.3.4]: SASL LOGIN authentication failed: Connection lost to authentication server").0,
            "smtpd.sasl_auth_error"
        );
        let (k, f) = run("smtpd", "warning: unknown[192.0.2.237]:55729: SASL LOGIN authentication failed: authentication failure");
        assert_eq!(k, "smtpd.sasl_auth_failed");
        assert_eq!(f.get("client_port"), Some(&Val::Int(55729)));
    }

    #[test]
    fn disconnect_with_failed_auth() {
        let (k, f) = run(
            "smtpd",
            "disconnect from unknown[192.0.2.1] helo=1 auth=0/1 quit=1 commands=2/3",
        );
        assert_eq!(k, "smtpd.disconnect_auth_failed");
        assert_eq!(f.get("cmd_auth"), Some(&Val::Int(1)));
        assert_eq!(
            run(
                "smtpd",
                "disconnect from x[192.0.2.1] ehlo=1 auth=1 quit=1 commands=3"
            )
            .0,
            "smtpd.disconnect"
        );
    }

    #[test]
    fn unknown_text_is_unknown_not_a_guess() {
        assert_eq!(run("smtpd", "something nobody logs").0, "unknown");
        assert_eq!(run("qmgr", "").0, "unknown");
    }
}
