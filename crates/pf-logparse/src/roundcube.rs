//! Roundcube webmail: logins, failed logins and sent mail, in its own
//! `[date]: <session> text` format or through syslog.

use crate::fields::Fields;
use crate::proxy::{Client, TrustedProxies};
use crate::scan::looks_like_ip;

/// The message's kind; its fields go to `f`. Forwarded headers give the
/// client only from a peer in `proxies` (see [`crate::proxy`]).
pub fn parse<'a>(msg: &'a str, f: &mut Fields<'a>, proxies: &TrustedProxies) -> &'static str {
    let mut body = msg
        .trim_start()
        .strip_prefix("[roundcube] ")
        .unwrap_or(msg.trim_start());
    // `<3z506z6r> ` session prefix
    if let Some(rest) = body.strip_prefix('<') {
        if let Some((sess, after)) = rest.split_once("> ") {
            if !sess.contains(' ') {
                f.s("session", sess);
                body = after;
            }
        }
    }
    if let Some(rest) = body.strip_prefix("IMAP Error: Login failed for ") {
        failed_login(rest, f, proxies);
        return "roundcube.login_failed";
    }
    for prefix in ["FAILED login for ", "Failed login for "] {
        if let Some(rest) = body.strip_prefix(prefix) {
            failed_login(rest, f, proxies);
            return "roundcube.login_failed";
        }
    }
    if let Some(rest) = body.strip_prefix("Successful login for ") {
        let (user, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        f.s("user", user);
        if let Some(i) = rest.find("from ") {
            let cand = &rest[i + 5..];
            let end = cand.find([' ', '(']).unwrap_or(cand.len());
            if looks_like_ip(&cand[..end]) {
                set_client(&cand[..end], &cand[end..], f, proxies);
            }
        }
        if let Some(i) = rest.find("in session ") {
            f.s(
                "session",
                rest[i + 11..].split(' ').next().unwrap_or_default(),
            );
        }
        return "roundcube.login";
    }
    // `User alice@x [1.2.3.4]; Message <id@x> for a@b, c@d; 250: OK id=...`
    if let Some(rest) = body.strip_prefix("User ") {
        if let Some((user, rest)) = rest.split_once(" [") {
            if let Some((ip, rest)) = rest.split_once("]; Message ") {
                f.s("user", user);
                if looks_like_ip(ip) {
                    f.s("client_ip", ip);
                }
                let (id, rest) = rest.split_once(" for ").unwrap_or((rest, ""));
                f.s("message_id", id.trim_matches(['<', '>']));
                let (rcpts, result) = rest.split_once("; ").unwrap_or((rest, ""));
                f.s("to", rcpts);
                f.int(
                    "nrcpt",
                    rcpts.split(", ").filter(|r| !r.is_empty()).count() as i64,
                );
                if !result.is_empty() {
                    f.s("status_detail", result);
                }
                return "roundcube.sent";
            }
        }
    }
    f.s("message", body);
    if body.starts_with("PHP ")
        || body.contains(" Error: ")
        || body.starts_with("IMAP Error")
        || body.starts_with("SMTP Error")
        || body.starts_with("DB Error")
        || body.starts_with("Unexpected condition")
    {
        return "roundcube.error";
    }
    "roundcube.info"
}

/// `USER [against HOST] from IP[(X-Real-IP: a,X-Forwarded-For: b)][. AUTHENTICATE ...]`.
/// The client is the forwarded address when a proxy added one; the proxy is kept too.
fn failed_login<'a>(rest: &'a str, f: &mut Fields<'a>, proxies: &TrustedProxies) {
    let user_end = [" from ", " against "]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()
        .unwrap_or(rest.len());
    f.s("user", &rest[..user_end]);
    let region_end = [". AUTHENTICATE", " in /", ". LOGIN", " (error"]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()
        .unwrap_or(rest.len());
    let region = &rest[..region_end];
    if let Some(i) = region.find(" against ") {
        let host = region[i + 9..].split(' ').next().unwrap_or_default();
        f.s("imap_host", host);
    }
    let mut last_ip = None;
    let mut search = region;
    while let Some(i) = search.find("from ") {
        let cand = &search[i + 5..];
        let end = cand.find([' ', '(']).unwrap_or(cand.len());
        let ip = cand[..end].trim_end_matches('.');
        if looks_like_ip(ip) {
            last_ip = Some((ip, &cand[end..]));
        }
        search = &cand[end..];
    }
    if let Some(i) = region.find("in session ") {
        f.s(
            "session",
            region[i + 11..].split(' ').next().unwrap_or_default(),
        );
    }
    if let Some((ip, after)) = last_ip {
        set_client(ip, after, f, proxies);
    }
}

/// `client_ip` from the peer `ip` and the `(X-Real-IP: a,X-Forwarded-For: b, c)`
/// that may follow it: the forwarded client (and `proxy_ip`) when the peer
/// is trusted; else the peer, with the header's claim in `forwarded_for`.
fn set_client<'a>(ip: &'a str, after: &'a str, f: &mut Fields<'a>, proxies: &TrustedProxies) {
    let headers = after
        .strip_prefix('(')
        .and_then(|h| h.split_once(')'))
        .map_or("", |(h, _)| h);
    let header = |name: &str| {
        headers.find(name).map(|i| {
            let value = &headers[i + name.len()..];
            // X-Real-IP comes first, cut at the next header.
            value.split_once(",X-").map_or(value, |(v, _)| v)
        })
    };
    match proxies.client(ip, header("X-Forwarded-For: "), header("X-Real-IP: ")) {
        Client::Direct => f.s("client_ip", ip),
        Client::Forwarded(client) => {
            f.s("client_ip", client);
            f.s("proxy_ip", ip);
        }
        Client::Untrusted(claimed) => {
            f.s("client_ip", ip);
            f.s("forwarded_for", claimed);
        }
    }
}
