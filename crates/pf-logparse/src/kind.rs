//! The registry of event kinds: one stable name per recognised message.
//!
//! Kinds are plain `&'static str` so parsers can return them cheaply; this
//! table is the single list of valid names, with the failure class of each
//! and a one-line meaning. `docs/records.md` mirrors it (a test checks).

/// How a kind counts as a failure, for detection features and for ban-style
/// consumers. `None` means the event is routine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Credentials were tried and refused.
    Auth,
    /// The server refused a client's request by policy (RBL, unknown user, relay denied...).
    Reject,
    /// The client broke the protocol or a limit (pipelining, pregreet, rate limits, early hang-ups).
    Abuse,
    /// Suspicious but often benign: no authentication attempted, DNS mismatch. Only
    /// aggressive consumers treat it as a failure.
    Probe,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Auth => "auth",
            Failure::Reject => "reject",
            Failure::Abuse => "abuse",
            Failure::Probe => "probe",
        }
    }
}

use Failure::*;

/// `(kind, failure class, meaning)` for every kind the parser can emit.
pub const KINDS: &[(&str, Option<Failure>, &str)] = &[
    ("unknown", None, "not recognised; the raw line is kept"),
    // smtpd
    ("smtpd.connect", None, "a client connected"),
    (
        "smtpd.disconnect",
        None,
        "a client disconnected (with command counters)",
    ),
    (
        "smtpd.disconnect_auth_failed",
        Some(Abuse),
        "a client disconnected after all its AUTH attempts failed",
    ),
    (
        "smtpd.client",
        None,
        "a message was started for a client (queue id assigned, SASL user if any)",
    ),
    (
        "smtpd.reject",
        Some(Reject),
        "a command was rejected by policy (reject, defer, reject_warning...)",
    ),
    (
        "smtpd.rbl_reject",
        Some(Reject),
        "a client was rejected because a DNS blocklist lists it",
    ),
    (
        "smtpd.milter_reject",
        Some(Reject),
        "a milter rejected a command",
    ),
    (
        "smtpd.action",
        None,
        "an access rule acted without rejecting (hold, discard, filter, redirect, warn)",
    ),
    (
        "smtpd.sasl_auth_failed",
        Some(Auth),
        "a SASL authentication attempt failed",
    ),
    (
        "smtpd.sasl_auth_error",
        None,
        "SASL authentication could not be performed (server-side problem)",
    ),
    (
        "smtpd.sasl_bad_mechanism",
        Some(Probe),
        "a client asked for an authentication mechanism that is not offered",
    ),
    (
        "smtpd.lost_connection",
        None,
        "the client vanished in the middle of a session",
    ),
    (
        "smtpd.lost_connection_early",
        Some(Abuse),
        "the client vanished right after connecting or STARTTLS",
    ),
    ("smtpd.timeout", None, "the client stopped talking"),
    (
        "smtpd.too_many_errors",
        Some(Abuse),
        "the session was ended after too many errors",
    ),
    (
        "smtpd.improper_pipelining",
        Some(Abuse),
        "the client sent commands before the server answered",
    ),
    (
        "smtpd.non_smtp_command",
        Some(Abuse),
        "the client sent something that is not SMTP (HTTP, ...)",
    ),
    (
        "smtpd.bare_lf",
        Some(Abuse),
        "the client sent a bare newline",
    ),
    (
        "smtpd.rate_limit",
        Some(Abuse),
        "a connection, message or recipient rate limit was exceeded",
    ),
    (
        "smtpd.hostname_mismatch",
        Some(Probe),
        "the client's reverse DNS does not match its address",
    ),
    (
        "smtpd.tls_established",
        None,
        "a TLS session was set up with a client",
    ),
    (
        "smtpd.tls_error",
        None,
        "the TLS handshake with a client failed",
    ),
    (
        "smtpd.proxy",
        None,
        "the before-queue proxy filter accepted or rejected a message",
    ),
    (
        "smtpd.ehlo_keywords_discarded",
        None,
        "EHLO keywords were hidden from a client",
    ),
    // postscreen and its helpers
    (
        "postscreen.connect",
        None,
        "postscreen accepted a connection for inspection",
    ),
    (
        "postscreen.disconnect",
        None,
        "postscreen closed a connection",
    ),
    (
        "postscreen.pass",
        None,
        "a client passed the tests (PASS NEW / PASS OLD)",
    ),
    (
        "postscreen.listed",
        None,
        "a client matched the permanent allowlist (or an allowlist veto)",
    ),
    (
        "postscreen.denylisted",
        Some(Reject),
        "a client matched the permanent denylist",
    ),
    (
        "postscreen.pregreet",
        Some(Abuse),
        "a client spoke before the greeting",
    ),
    (
        "postscreen.hangup",
        Some(Abuse),
        "a client hung up during the tests",
    ),
    (
        "postscreen.dnsbl",
        Some(Abuse),
        "a client scored on DNS blocklists",
    ),
    (
        "postscreen.command_violation",
        Some(Abuse),
        "a client broke a command limit, pipelined or sent non-SMTP",
    ),
    (
        "postscreen.reject",
        Some(Reject),
        "postscreen rejected a client's command",
    ),
    (
        "postscreen.busy",
        Some(Abuse),
        "a connection was refused because of load or too many connections",
    ),
    (
        "postscreen.cache_cleanup",
        None,
        "the postscreen cache was cleaned",
    ),
    ("dnsblog.listed", None, "a DNS blocklist lists an address"),
    ("tlsproxy.connect", None, "tlsproxy took over a connection"),
    ("tlsproxy.disconnect", None, "tlsproxy closed a connection"),
    (
        "tlsproxy.tls_established",
        None,
        "tlsproxy set up a TLS session",
    ),
    (
        "tlsproxy.tls_error",
        None,
        "a TLS handshake in tlsproxy failed",
    ),
    (
        "anvil.statistics",
        None,
        "connection/rate statistics from anvil",
    ),
    // queue and delivery
    (
        "cleanup.message_id",
        None,
        "a message's Message-ID was recorded",
    ),
    (
        "cleanup.milter_action",
        None,
        "a milter changed or rejected a message during cleanup",
    ),
    (
        "cleanup.header_action",
        None,
        "a header/body check matched (info, warning, prepend, hold, ...)",
    ),
    (
        "qmgr.queued",
        None,
        "a message entered the active queue (sender, size, recipients)",
    ),
    ("qmgr.removed", None, "a message left the queue"),
    (
        "qmgr.expired",
        None,
        "a message expired and was returned to its sender",
    ),
    (
        "qmgr.skipped",
        None,
        "a message was skipped because it is still being delivered",
    ),
    (
        "pickup.queued",
        None,
        "a locally submitted message was picked up",
    ),
    (
        "smtp.delivery",
        None,
        "a delivery attempt finished (status sent, deferred, bounced...)",
    ),
    (
        "smtp.connect_error",
        None,
        "connecting to a remote server failed",
    ),
    (
        "smtp.lost_connection",
        None,
        "a remote server dropped the connection",
    ),
    ("smtp.timeout", None, "a remote server stopped answering"),
    (
        "smtp.remote_reply",
        None,
        "a remote server answered a command with an error",
    ),
    (
        "smtp.tls_established",
        None,
        "a TLS session was set up with a remote server",
    ),
    (
        "smtp.tls_error",
        None,
        "TLS with a remote server failed (certificate, handshake)",
    ),
    (
        "smtp.sasl_auth_failed",
        None,
        "authenticating to a relay failed",
    ),
    (
        "smtp.pix_workaround",
        None,
        "PIX firewall workarounds were enabled for a server",
    ),
    (
        "bounce.notification",
        None,
        "a delivery status or non-delivery notification was sent",
    ),
    (
        "postsuper.action",
        None,
        "the admin removed, requeued or held a message",
    ),
    (
        "postsuper.summary",
        None,
        "summary of an admin queue operation",
    ),
    ("master.start", None, "the Postfix master started"),
    ("master.reload", None, "the configuration was reloaded"),
    (
        "master.stop",
        None,
        "the Postfix master stopped on a signal",
    ),
    (
        "postfix_script.event",
        None,
        "postfix start/stop/check script output",
    ),
    ("scache.statistics", None, "connection cache statistics"),
    (
        "verify.cache_cleanup",
        None,
        "the address verification cache was cleaned",
    ),
    (
        "postfix.warning",
        None,
        "a Postfix daemon warning that has no kind of its own",
    ),
    ("postfix.error", None, "a Postfix daemon error"),
    (
        "postfix.fatal",
        None,
        "a Postfix daemon stopped on a fatal error",
    ),
    ("postfix.panic", None, "a Postfix daemon panicked"),
    ("postfix.info", None, "an informational Postfix message"),
    (
        "postfix.debug",
        None,
        "verbose (-v) debugging output of a Postfix daemon",
    ),
    // logins
    (
        "dovecot.login",
        None,
        "a user logged in to IMAP/POP3/submission/sieve",
    ),
    (
        "dovecot.auth_failed",
        Some(Auth),
        "a login or passdb lookup failed (wrong password, unknown user)",
    ),
    (
        "dovecot.disconnect_no_auth",
        Some(Probe),
        "a client disconnected without (finishing) authentication",
    ),
    ("dovecot.disconnect", None, "a login or mail session ended"),
    (
        "dovecot.delivery",
        None,
        "Dovecot LDA/LMTP stored or refused a message",
    ),
    (
        "dovecot.warning",
        None,
        "a Dovecot warning, error or fatal message",
    ),
    ("dovecot.info", None, "other Dovecot service messages"),
    ("roundcube.login", None, "a webmail user logged in"),
    (
        "roundcube.login_failed",
        Some(Auth),
        "a webmail login failed",
    ),
    ("roundcube.sent", None, "a webmail user sent a message"),
    ("roundcube.error", None, "a Roundcube or PHP error"),
    ("roundcube.info", None, "other Roundcube log messages"),
    (
        "sendmail.event",
        None,
        "a line from the Sendmail MTA (not Postfix)",
    ),
    ("amavis.event", None, "a line from amavisd"),
];

/// The failure class of `kind`, if it is a failure kind.
pub fn failure_of(kind: &str) -> Option<Failure> {
    KINDS
        .iter()
        .find(|(k, _, _)| *k == kind)
        .and_then(|(_, f, _)| *f)
}

/// True when `kind` is in the registry.
pub fn is_known(kind: &str) -> bool {
    KINDS.iter().any(|(k, _, _)| *k == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for (k, _, meaning) in KINDS {
            assert!(seen.insert(*k), "duplicate kind {k}");
            assert!(!meaning.is_empty());
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'),
                "{k}"
            );
        }
    }
}
