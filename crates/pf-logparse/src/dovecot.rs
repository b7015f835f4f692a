//! Dovecot login, auth and delivery messages.

use crate::fields::Fields;
use crate::header::{split_tag, tag_name};
use crate::scan::{key_values, looks_like_ip};

/// Process names Dovecot logs under (as a syslog tag or inside a `dovecot:` line).
pub fn is_dovecot_service(name: &str) -> bool {
    matches!(
        name,
        "dovecot"
            | "dovecot-auth"
            | "dovecot-lda"
            | "deliver"
            | "lda"
            | "auth"
            | "auth-worker"
            | "imap-login"
            | "pop3-login"
            | "submission-login"
            | "managesieve-login"
            | "lmtp"
            | "imap"
            | "pop3"
            | "submission"
            | "managesieve"
            | "indexer-worker"
            | "indexer"
            | "doveadm"
            | "master"
            | "config"
            | "log"
            | "anvil"
            | "dict"
            | "stats"
            | "quota-status"
            | "imap-hibernate"
            | "replicator"
            | "aggregator"
    )
}

/// Parses a Dovecot message. `tag` is the syslog tag (which for hostless
/// Dovecot log files is the service itself, e.g. `auth(user,ip,sasl:login)<sess>`).
pub fn parse<'a>(tag: &'a str, msg: &'a str, f: &mut Fields<'a>) -> &'static str {
    let (mut service_tag, mut body) = (tag, msg);
    // `dovecot: imap-login: ...` or `dovecot[123]: auth-worker(304): ...`
    if matches!(tag_name(tag), "dovecot") {
        if let Some((inner, rest)) = split_tag(msg) {
            service_tag = inner;
            body = rest;
        }
    }
    let service = tag_name(service_tag);
    f.s("service", service);
    let mut level = None;
    for l in [
        "Info: ",
        "Warning: ",
        "Error: ",
        "Fatal: ",
        "Panic: ",
        "Debug: ",
    ] {
        if let Some(rest) = body.strip_prefix(l) {
            level = Some(&l[..l.len() - 2]);
            body = rest;
            break;
        }
    }
    // `auth(user,ip,sasl:login)<session>: Info: sql: Password mismatch`
    if let Some(args) = service_tag
        .strip_prefix(service)
        .and_then(|r| r.strip_prefix('('))
    {
        if let Some(end) = args.find(')') {
            user_ip_args(&args[..end], f);
            // `imap(user)<pid><session>: ...`: the session its login named.
            if let Some(session) = args[end + 1..]
                .strip_prefix('<')
                .and_then(|r| r.split_once("><"))
                .filter(|(pid, _)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|(_, r)| r.split_once('>'))
                .map(|(session, _)| session)
                .filter(|s| !s.is_empty() && f.get("session").is_none())
            {
                f.s("session", session);
            }
        }
    }
    if service.ends_with("-login") {
        return login(body, f);
    }
    if let Some(k) = passdb_failure(body, f) {
        return k;
    }
    if body.contains("pam_unix(") && body.contains("authentication failure") {
        // `pam_unix(dovecot:auth): authentication failure; logname= uid=0 ... rhost=1.2.3.4 user=x`
        for tok in body.split_whitespace() {
            if let Some(ip) = tok
                .rsplit("rhost=")
                .next()
                .filter(|_| tok.contains("rhost="))
            {
                if looks_like_ip(ip) {
                    f.s("client_ip", ip);
                }
            } else if let Some(u) = tok.strip_prefix("user=") {
                f.s("user", u);
            } else if let Some(u) = tok.strip_prefix("ruser=") {
                if !u.is_empty() && f.get("user").is_none() {
                    f.s("user", u);
                }
            }
        }
        return "dovecot.auth_failed";
    }
    if matches!(service, "imap" | "pop3" | "submission" | "managesieve")
        && (body.starts_with("Disconnected")
            || body.starts_with("Connection closed")
            || body.starts_with("Logged out"))
    {
        key_values(body.split_once(": ").map_or("", |(_, r)| r), f);
        f.s("message", body);
        return "dovecot.disconnect";
    }
    if matches!(service, "lmtp" | "lda" | "deliver" | "dovecot-lda")
        && (body.contains("saved mail to")
            || body.contains("stored mail into")
            || body.contains("rejected"))
    {
        // `msgid=<...>` ties the delivery to Postfix's `cleanup` line.
        if let Some(id) = body
            .split_once("msgid=<")
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(id, _)| id)
            .filter(|id| !id.is_empty())
        {
            f.s("message_id", id);
        }
        f.s("message", body);
        return "dovecot.delivery";
    }
    f.s("message", body);
    match level {
        Some("Warning" | "Error" | "Fatal" | "Panic") => {
            f.s("level", level.unwrap_or_default());
            "dovecot.warning"
        }
        _ => "dovecot.info",
    }
}

/// `user,1.2.3.4,<session>` inside `auth(...)`, `sql(...)`, `pam(...)`.
fn user_ip_args<'a>(args: &'a str, f: &mut Fields<'a>) {
    let mut parts = args.split(',');
    if let Some(u) = parts.next().filter(|u| !u.is_empty() && *u != "?") {
        f.s("user", u);
    }
    if let Some(ip) = parts.next().filter(|ip| looks_like_ip(ip)) {
        f.s("client_ip", ip);
    }
    if let Some(s) = parts
        .next()
        .map(|s| s.trim_matches(['<', '>']))
        .filter(|s| !s.is_empty() && !s.contains(':'))
    {
        f.s("session", s);
    }
}

/// `sql(user,ip,<s>): Password mismatch`, `pam(user,ip): pam_authenticate() failed: ...`,
/// `ldap(user,ip,): invalid credentials`, also after a `conn unix:auth-worker ...:` prefix.
fn passdb_failure<'a>(body: &'a str, f: &mut Fields<'a>) -> Option<&'static str> {
    const FAILS: &[&str] = &[
        "unknown user",
        "Password mismatch",
        "password mismatch",
        "pam_authenticate() failed",
        "invalid credentials",
        "Authentication failure",
        "Permission denied",
    ];
    if !FAILS.iter().any(|m| body.contains(m)) {
        return None;
    }
    for db in [
        "pam(",
        "passwd-file(",
        "sql(",
        "ldap(",
        "passwd(",
        "shadow(",
        "checkpassword(",
        "static(",
        "bsdauth(",
        "lua(",
        "oauth2(",
        "imap(",
    ] {
        if let Some(i) = body.find(db) {
            let args = &body[i + db.len()..];
            let end = args.find("):")?;
            user_ip_args(&args[..end], f);
            f.s("passdb", &db[..db.len() - 1]);
            f.s("error", args[end + 2..].trim_start());
            return Some("dovecot.auth_failed");
        }
    }
    // `auth(user,ip,...)` tag with a plain `sql: Password mismatch` body.
    if f.get("client_ip").is_some() {
        if let Some((db, err)) = body.split_once(": ") {
            f.s("passdb", db);
            f.s("error", err);
        }
        return Some("dovecot.auth_failed");
    }
    None
}

fn login<'a>(body: &'a str, f: &mut Fields<'a>) -> &'static str {
    // The key/value list starts at the first `user=`, `method=` or `rip=`.
    let kv_start = ["user=<", "method=", "rip="]
        .iter()
        .filter_map(|k| body.find(k))
        .min();
    let (text, kv) = match kv_start {
        Some(i) => (body[..i].trim_end_matches([' ', ':', ',']), &body[i..]),
        None => (body, ""),
    };
    key_values(kv, f);
    f.s("message", text);
    if body.starts_with("Login: ") {
        return "dovecot.login";
    }
    const AUTH_FAILED: &[&str] = &[
        "(auth failed",
        "(tried to use disallowed",
        "(tried to use disabled",
        "(auth_failed)",
        "(proxy dest auth failed)",
        "(password expired",
    ];
    const NO_AUTH: &[&str] = &[
        "(no auth attempts",
        "(disconnected before auth was ready",
        "(client didn't finish SASL auth",
        "(disconnected during TLS handshake",
        "(tls_handshake_not_finished)",
        "(no_auth_attempts)",
    ];
    if AUTH_FAILED.iter().any(|m| text.contains(m)) {
        return "dovecot.auth_failed";
    }
    if NO_AUTH.iter().any(|m| text.contains(m)) {
        return "dovecot.disconnect_no_auth";
    }
    if f.get("client_ip").is_some()
        || text.starts_with("Disconnected")
        || text.starts_with("Aborted login")
        || text.starts_with("Login aborted")
    {
        return "dovecot.disconnect";
    }
    "dovecot.info"
}
