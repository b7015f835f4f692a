//! Syslog frames as the network and log shippers deliver them: RFC 3164
//! with its `<PRI>`, RFC 5424 (rsyslog's RSYSLOG_SyslogProtocol23Format,
//! syslog-ng's `syslog()` destination, Fluent Bit and Vector outputs).
//!
//! The generic cases are the examples of RFC 5424 §6.5 and RFC 3164 §5.4
//! (© IETF Trust, quoted under its Legal Provisions for the purpose of
//! implementing the standard); the mail lines are those frames carrying
//! Postfix and Dovecot messages.

mod common;
use common::*;
use serde_json::{json, Value};

fn one(line: &str) -> Value {
    parse_lines(
        &[line.to_string()],
        &["--timezone", "UTC", "--year", "2026"],
    )
    .remove(0)
}

#[test]
fn rfc5424_examples() {
    // §6.5 example 1: no STRUCTURED-DATA, a BOM before the message.
    let r = one("<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \u{feff}'su root' failed for lonvick on /dev/pts/8");
    assert_eq!(r["ts"], "2003-10-11T22:14:15.003+00:00");
    assert_eq!(r["host"], "mymachine.example.com");
    assert_eq!(r["program"], "su");
    assert!(r.get("pid").is_none(), "PROCID is NILVALUE");
    assert_eq!(
        r["syslog"],
        json!({"facility": "auth", "severity": "crit", "msgid": "ID47"})
    );
    // §6.5 example 2: a zone and microseconds, no MSGID.
    let r = one("<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.");
    assert_eq!(r["ts"], "2003-08-24T05:14:15.000003-07:00");
    assert_eq!(r["pid"], 8710);
    assert_eq!(
        r["syslog"],
        json!({"facility": "local4", "severity": "notice"})
    );
    // §6.5 examples 3 and 4: structured data, with and without a message.
    let r = one(
        r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] BOMAn application event log entry..."#,
    );
    assert_eq!(
        r["syslog"]["sd"],
        json!({"exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"}})
    );
    let r = one(
        r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"]"#,
    );
    assert_eq!(r["syslog"]["sd"]["examplePriority@32473"]["class"], "high");
    assert_eq!(r["program"], "evntslog");
}

#[test]
fn rfc3164_example_with_its_priority() {
    // §5.4: `<34>Oct 11 22:14:15 mymachine su: 'su root' failed ...`
    let r = one("<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8");
    assert_eq!(r["ts"], "2026-10-11T22:14:15+00:00");
    assert_eq!(r["host"], "mymachine");
    assert_eq!(r["program"], "su");
    assert_eq!(r["syslog"], json!({"facility": "auth", "severity": "crit"}));
}

/// Postfix and Dovecot lines in each frame come out as the same event as
/// the plain log line, with the frame's facility and severity.
#[test]
fn mail_lines_in_every_frame_parse_as_the_plain_line() {
    let plain = one("Mar  2 08:15:03 mx1 postfix/smtpd[1234]: warning: unknown[192.0.2.7]: SASL LOGIN authentication failed: authentication failure");
    assert_eq!(plain["kind"], "smtpd.sasl_auth_failed");
    let framed = [
        // Forwarded raw over UDP/TCP (RFC 3164).
        "<20>Mar  2 08:15:03 mx1 postfix/smtpd[1234]: warning: unknown[192.0.2.7]: SASL LOGIN authentication failed: authentication failure",
        // rsyslog RSYSLOG_ForwardFormat: RFC 3339 time in a 3164 frame.
        "<20>2026-03-02T08:15:03.000000+00:00 mx1 postfix/smtpd[1234]: warning: unknown[192.0.2.7]: SASL LOGIN authentication failed: authentication failure",
        // rsyslog RSYSLOG_SyslogProtocol23Format / syslog-ng syslog(): RFC 5424.
        "<20>1 2026-03-02T08:15:03.000000+00:00 mx1 postfix/smtpd 1234 - - warning: unknown[192.0.2.7]: SASL LOGIN authentication failed: authentication failure",
        // Fluent Bit / Vector style: Z time, milliseconds, a BOM, structured data with escapes.
        "<20>1 2026-03-02T08:15:03.000Z mx1 postfix/smtpd 1234 - [meta@32473 note=\"a \\\"quoted\\\" \\] bracket\" path=\"C:\\\\x\"] \u{feff}warning: unknown[192.0.2.7]: SASL LOGIN authentication failed: authentication failure",
        // A TCP stream saved with RFC 6587 octet counts.
        "132 <20>1 2026-03-02T08:15:03Z mx1 postfix/smtpd 1234 - - warning: unknown[192.0.2.7]: SASL LOGIN authentication failed: authentication failure",
    ];
    for line in framed {
        let r = one(line);
        for key in ["kind", "host", "program", "pid", "fields", "failure"] {
            assert_eq!(r[key], plain[key], "{key} of {line}");
        }
        assert_eq!(
            r["ts"].as_str().unwrap().get(..19),
            Some("2026-03-02T08:15:03"),
            "{line}"
        );
        assert_eq!(r["syslog"]["facility"], "mail", "{line}");
        assert_eq!(r["syslog"]["severity"], "warning", "{line}");
        assert_eq!(r["raw"], line, "the line is kept exactly");
    }
    let r = one(framed[3]);
    assert_eq!(
        r["syslog"]["sd"],
        json!({"meta@32473": {"note": "a \"quoted\" ] bracket", "path": "C:\\x"}})
    );
    // Dovecot through rsyslog's RFC 5424 format, NILVALUE host and pid.
    let r = one("<22>1 2026-03-02T08:15:04+01:00 - dovecot - - - imap-login: Login: user=<alice@example.com>, method=PLAIN, rip=192.0.2.4, lip=192.0.2.5, mpid=1, TLS");
    assert_eq!(r["kind"], "dovecot.login");
    assert_eq!(r["ts"], "2026-03-02T08:15:04+01:00");
    assert_eq!(r["fields"]["user"], "alice@example.com");
    assert!(r.get("host").is_none());
}

/// Frames that are not quite syslog are passed on, never dropped; a line
/// without a frame has no `syslog`.
#[test]
fn odd_frames_are_kept() {
    for line in [
        "<999>Mar  2 08:15:03 mx1 postfix/smtpd[1]: connect from x[192.0.2.1]",
        "<22>1",
        "<22>1 - - - - - -",
        "<22>1 2026-03-02T08:15:03Z mx1 postfix/smtpd 1 - [unterminated sd",
        "<>",
    ] {
        let r = one(line);
        assert_eq!(r["raw"], line);
    }
    assert!(
        one("<999>Mar  2 08:15:03 mx1 postfix/smtpd[1]: connect from x[192.0.2.1]")
            .get("syslog")
            .is_none()
    );
    assert!(
        one("Mar  2 08:15:03 mx1 postfix/smtpd[1]: connect from x[192.0.2.1]")
            .get("syslog")
            .is_none()
    );
}

/// journald's PRIORITY and SYSLOG_FACILITY fill the same object.
#[test]
fn journald_priority_is_the_same_object() {
    let entry = json!({
        "__REALTIME_TIMESTAMP": "1772439303000000",
        "_HOSTNAME": "mx1",
        "SYSLOG_IDENTIFIER": "postfix/smtpd",
        "_PID": "1234",
        "PRIORITY": "4",
        "SYSLOG_FACILITY": "2",
        "MESSAGE": "warning: unknown[192.0.2.7]: SASL LOGIN authentication failed: authentication failure"
    });
    let r = one(&entry.to_string());
    assert_eq!(r["kind"], "smtpd.sasl_auth_failed");
    assert_eq!(
        r["syslog"],
        json!({"facility": "mail", "severity": "warning"})
    );
}

/// A Dovecot session's later lines name its process and session in the
/// tag (`imap(user)<pid><session>`), as its login line named the session:
/// `session` ties them together (the disconnect carries no address).
#[test]
fn a_dovecot_sessions_lines_carry_its_session_id() {
    let lines = [
        "Mar  2 08:15:04 mx1 dovecot: imap-login: Login: user=<alice@example.com>, method=PLAIN, rip=192.0.2.4, lip=192.0.2.5, mpid=3172, TLS, session=<tzmYyECsUlJEUSoR>",
        "Mar  2 09:20:41 mx1 dovecot: imap(alice@example.com)<3172><tzmYyECsUlJEUSoR>: Disconnected: Logged out in=2302 out=88681",
        "Mar  2 09:20:42 mx1 dovecot: imap(bob@example.com)<tzmYyECsUlJEUSoR>: Disconnected: Logged out in=1 out=2",
    ]
    .map(String::from);
    let r = parse_lines(&lines, &["--timezone", "UTC", "--year", "2026"]);
    assert_eq!(r[0]["fields"]["session"], "tzmYyECsUlJEUSoR");
    assert_eq!(r[1]["kind"], "dovecot.disconnect");
    assert_eq!(r[1]["fields"]["session"], "tzmYyECsUlJEUSoR");
    assert_eq!(r[1]["fields"]["user"], "alice@example.com");
    assert!(
        r[2]["fields"].get("session").is_none(),
        "without the pid it is not the session form"
    );
}
