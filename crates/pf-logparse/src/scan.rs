//! Small text scanners shared by the message parsers. All of them work on
//! borrowed slices and return `None` instead of panicking on odd input.

use crate::fields::Fields;

/// `host[ip]` at the start of `s`; returns host, the bracket content and the rest.
pub fn host_bracket(s: &str) -> Option<(&str, &str, &str)> {
    let open = s.find('[')?;
    let host = &s[..open];
    if host.contains(' ') {
        return None;
    }
    let close = s[open..].find(']')? + open;
    Some((host, &s[open + 1..close], &s[close + 1..]))
}

/// Records `host[ip]` (optionally followed by `:port`) as client or relay fields;
/// returns the rest after the port.
pub fn endpoint<'a>(s: &'a str, f: &mut Fields<'a>, role: Role) -> Option<&'a str> {
    let (host, inner, mut rest) = host_bracket(s)?;
    let (k_host, k_ip, k_port) = role.keys();
    if !host.is_empty() {
        f.s(k_host, host);
    }
    if inner == "unknown" || inner.is_empty() {
        // `unknown[unknown]`: the address is not known; no client_ip.
    } else if looks_like_ip(inner) {
        f.s(k_ip, inner);
    } else if role == Role::Relay {
        f.s("relay_service", inner);
    }
    if let Some(p) = rest.strip_prefix(':') {
        let n = p.bytes().take_while(u8::is_ascii_digit).count();
        if n > 0 {
            f.num(k_port, &p[..n]);
            rest = &p[n..];
        }
    }
    Some(rest)
}

/// `[ip]:port` as written by postscreen and tlsproxy.
pub fn bracket_ip_port<'a>(
    s: &'a str,
    f: &mut Fields<'a>,
    ip_key: &'static str,
    port_key: &'static str,
) -> Option<&'a str> {
    let s = s.strip_prefix('[')?;
    let close = s.find(']')?;
    f.s(ip_key, &s[..close]);
    let mut rest = &s[close + 1..];
    if let Some(p) = rest.strip_prefix(':') {
        let n = p.bytes().take_while(u8::is_ascii_digit).count();
        if n > 0 {
            f.num(port_key, &p[..n]);
            rest = &p[n..];
        }
    }
    Some(rest)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Relay,
}

impl Role {
    fn keys(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Role::Client => ("client_host", "client_ip", "client_port"),
            Role::Relay => ("relay_host", "relay_ip", "relay_port"),
        }
    }
}

pub fn looks_like_ip(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 45
        && (s.bytes().all(|c| c.is_ascii_digit() || c == b'.')
            && s.bytes().filter(|&c| c == b'.').count() == 3
            || s.contains(':')
                && s.bytes()
                    .all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.'))
        || s.strip_prefix("IPv6:").is_some_and(looks_like_ip)
}

/// Strips `<...>` around an address if present.
pub fn unangle(s: &str) -> &str {
    s.strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(s)
}

/// Maps a `key=` name from a Postfix key/value list to our field name.
fn kv_key(k: &str) -> Option<&'static str> {
    Some(match k {
        "from" => "from",
        "to" => "to",
        "orig_to" => "orig_to",
        "proto" => "proto",
        "helo" => "helo",
        "size" => "size",
        "nrcpt" => "nrcpt",
        "relay" => "relay",
        "delay" => "delay",
        "delays" => "delays",
        "dsn" => "dsn",
        "status" => "status",
        "conn_use" => "conn_use",
        "tls" => "tls",
        "uid" => "uid",
        "sasl_method" => "sasl_method",
        "sasl_username" => "sasl_username",
        "sasl_sender" => "sasl_sender",
        "orig_queue_id" => "orig_queue_id",
        "orig_client" => "orig_client",
        "message-id" => "message_id",
        "resent-message-id" => "resent_message_id",
        "user" => "user",
        "method" => "sasl_method",
        "rip" => "client_ip",
        "lip" => "local_ip",
        "session" => "session",
        "mpid" => "mpid",
        "secured" => "secured",
        "in" => "bytes_in",
        "out" => "bytes_out",
        _ => return None,
    })
}

const NUMERIC_KEYS: &[&str] = &[
    "size",
    "nrcpt",
    "delay",
    "conn_use",
    "uid",
    "mpid",
    "bytes_in",
    "bytes_out",
];

/// Parses a Postfix/Dovecot key=value list (`to=<a>, relay=x, ... status=sent (text)`),
/// separated by `, ` or spaces. Unknown keys are skipped; returns how many keys were read.
pub fn key_values<'a>(mut s: &'a str, f: &mut Fields<'a>) -> usize {
    let mut n = 0;
    loop {
        s = s.trim_start_matches([' ', ',']);
        if s.is_empty() {
            break;
        }
        let Some(eq) = s.find('=') else { break };
        let key = &s[..eq];
        if key.is_empty() || key.contains(' ') || key.contains(',') {
            // Not a key: skip one word and go on.
            match s.find([' ', ',']) {
                Some(i) => {
                    s = &s[i..];
                    continue;
                }
                None => break,
            }
        }
        let rest = &s[eq + 1..];
        let (value, after) = if rest.starts_with('<') {
            // `<address>` may itself hold spaces or commas.
            match rest
                .find(">,")
                .or_else(|| rest.find("> "))
                .map(|i| i + 1)
                .or_else(|| rest.ends_with('>').then_some(rest.len()))
            {
                Some(end) => (&rest[..end], &rest[end..]),
                None => (rest, ""),
            }
        } else {
            let end = rest.find([',', ' ']).unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        n += 1;
        if key == "status" {
            f.s("status", value);
            let detail = after.trim_start();
            if let Some(inner) = detail.strip_prefix('(') {
                let inner = inner.strip_suffix(')').unwrap_or(inner);
                f.s("status_detail", inner);
                break;
            } else if let Some(t) = detail.strip_prefix(", ") {
                // `status=expired, returned to sender`
                f.s("status_detail", t);
                break;
            }
        } else if let Some(name) = kv_key(key) {
            let v = unangle(value);
            if name == "relay" {
                relay_value(v, f);
            } else if name == "delays" {
                delays_value(v, f);
            } else if name == "tls" {
                f.s("tls", v);
                tls_value(v, f);
            } else if NUMERIC_KEYS.contains(&name) {
                f.num(name, v);
            } else {
                f.s(name, v);
            }
        }
        s = after;
    }
    n
}

/// `relay=host[ip]:port`, `relay=none`, `relay=local`, `relay=host[private/dovecot-lmtp]`.
pub fn relay_value<'a>(v: &'a str, f: &mut Fields<'a>) {
    f.s("relay", v);
    if v.contains('[') {
        endpoint(v, f, Role::Relay);
    } else {
        f.s("relay_host", v);
    }
}

/// `delays=a/b/c/d`: time before the queue manager, in it, connection set-up, transmission.
pub fn delays_value<'a>(v: &'a str, f: &mut Fields<'a>) {
    f.s("delays", v);
    let keys = [
        "delay_before_qmgr",
        "delay_in_qmgr",
        "delay_conn_setup",
        "delay_transmission",
    ];
    for (k, part) in keys.iter().zip(v.split('/')) {
        f.num(k, part);
    }
}

/// `tls=dane/!requiretls:nostarttls`: TLS level, policy marks and downgrades.
pub fn tls_value<'a>(v: &'a str, f: &mut Fields<'a>) {
    let (level, req) = match v.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (v, None),
    };
    let (level, downgrade) = match level.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (level, None),
    };
    let (level, undecided) = match level.strip_suffix('?') {
        Some(l) => (l, true),
        None => (level, false),
    };
    f.s("tls_level", level);
    if let Some(d) = downgrade {
        f.s("tls_downgrade", d);
    }
    if undecided {
        f.s("tls_policy_undecided", "?");
    }
    if let Some(r) = req {
        let (r, rdown) = match r.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (r, None),
        };
        let (r, violation) = match r.strip_prefix('!') {
            Some(x) => (x, true),
            None => (r, false),
        };
        let (r, rundecided) = match r.strip_suffix('?') {
            Some(x) => (x, true),
            None => (r, false),
        };
        f.s("requiretls", r);
        if violation {
            f.s("requiretls_policy_violation", "!");
        }
        if rundecided {
            f.s("requiretls_policy_undecided", "?");
        }
        if let Some(d) = rdown {
            f.s("requiretls_downgrade", d);
        }
    }
}

/// `250 2.0.0 text` → code, enhanced status, and the text after them.
pub fn smtp_reply(s: &str) -> (Option<&str>, Option<&str>, &str) {
    let b = s.as_bytes();
    if b.len() >= 3
        && b[..3].iter().all(u8::is_ascii_digit)
        && (b.len() == 3 || b[3] == b' ' || b[3] == b'-')
    {
        let code = &s[..3];
        let rest = s[3..].trim_start_matches([' ', '-']);
        let dsn_len = rest.find(' ').unwrap_or(rest.len());
        let dsn = &rest[..dsn_len];
        let is_dsn = dsn.len() >= 5
            && dsn.split('.').count() == 3
            && dsn
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
        if is_dsn {
            return (Some(code), Some(dsn), rest[dsn_len..].trim_start());
        }
        return (Some(code), None, rest);
    }
    (None, None, s)
}

/// Parses `name=a/b` or `name=n` SMTP command counters (`ehlo=2 starttls=1 rcpt=0/1 commands=5/7`).
pub fn command_counters<'a>(s: &'a str, f: &mut Fields<'a>) -> Option<(i64, i64)> {
    let mut auth = None;
    for tok in s.split_whitespace() {
        let Some((name, val)) = tok.split_once('=') else {
            continue;
        };
        let (ok, total) = match val.split_once('/') {
            Some((a, b)) => (a.parse::<i64>().ok(), b.parse::<i64>().ok()),
            None => (val.parse::<i64>().ok(), val.parse::<i64>().ok()),
        };
        let (Some(ok), Some(total)) = (ok, total) else {
            continue;
        };
        let keys: Option<(&'static str, &'static str)> = match name {
            "helo" => Some(("cmd_helo", "cmd_helo_accepted")),
            "ehlo" => Some(("cmd_ehlo", "cmd_ehlo_accepted")),
            "starttls" => Some(("cmd_starttls", "cmd_starttls_accepted")),
            "auth" => Some(("cmd_auth", "cmd_auth_accepted")),
            "mail" => Some(("cmd_mail", "cmd_mail_accepted")),
            "rcpt" => Some(("cmd_rcpt", "cmd_rcpt_accepted")),
            "data" => Some(("cmd_data", "cmd_data_accepted")),
            "bdat" => Some(("cmd_bdat", "cmd_bdat_accepted")),
            "rset" => Some(("cmd_rset", "cmd_rset_accepted")),
            "noop" => Some(("cmd_noop", "cmd_noop_accepted")),
            "vrfy" => Some(("cmd_vrfy", "cmd_vrfy_accepted")),
            "etrn" => Some(("cmd_etrn", "cmd_etrn_accepted")),
            "quit" => Some(("cmd_quit", "cmd_quit_accepted")),
            "unknown" => Some(("cmd_unknown", "cmd_unknown_accepted")),
            "commands" => Some(("cmd_count", "cmd_count_accepted")),
            _ => None,
        };
        if let Some((k_total, k_ok)) = keys {
            f.int(k_total, total);
            f.int(k_ok, ok);
        }
        if name == "auth" {
            auth = Some((ok, total));
        }
    }
    auth
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::Val;

    #[test]
    fn delivery_key_values() {
        let mut f = Fields::default();
        key_values(
            "to=<a@b.c>, orig_to=<x@y>, relay=mx.b.c[1.2.3.4]:25, delay=0.52, delays=0.51/0.01/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X (y))",
            &mut f,
        );
        assert_eq!(f.get_str("to"), Some("a@b.c"));
        assert_eq!(f.get_str("relay_ip"), Some("1.2.3.4"));
        assert_eq!(f.get("relay_port"), Some(&Val::Int(25)));
        assert_eq!(f.get("delay"), Some(&Val::Float(0.52)));
        assert_eq!(f.get("delay_in_qmgr"), Some(&Val::Float(0.01)));
        assert_eq!(f.get_str("status"), Some("sent"));
        assert_eq!(
            f.get_str("status_detail"),
            Some("250 2.0.0 Ok: queued as X (y)")
        );
    }

    #[test]
    fn replies_split_into_code_dsn_text() {
        assert_eq!(
            smtp_reply("550 5.1.1 <a>: no"),
            (Some("550"), Some("5.1.1"), "<a>: no")
        );
        assert_eq!(
            smtp_reply("421-4.7.0 [x] y"),
            (Some("421"), Some("4.7.0"), "[x] y")
        );
        assert_eq!(
            smtp_reply("too many connections"),
            (None, None, "too many connections")
        );
    }
}
