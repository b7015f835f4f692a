//! Syslog-style headers: timestamp, host, program tag and pid, in every
//! form a mail server's logs arrive in.

use crate::time::{month_number, parse_hms, parse_iso, Clock, Stamp};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

/// The parts of a line before the message.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Header<'a> {
    pub stamp: Option<Stamp>,
    pub host: Option<&'a str>,
    /// Program tag as written (`postfix-smo/submission/smtpd`, `dovecot`, `auth-worker(304)`).
    pub tag: Option<&'a str>,
    pub pid: Option<u64>,
    /// The message text after `tag[pid]: `.
    pub msg: &'a str,
    /// The line used Roundcube's own `[dd-Mon-yyyy HH:MM:SS zone]` header.
    pub roundcube_stamp: bool,
    /// What a syslog frame said beyond the usual header.
    pub syslog: Option<Syslog<'a>>,
}

/// A syslog frame's priority (RFC 3164 and 5424 `<PRI>`) and RFC 5424's
/// MSGID and STRUCTURED-DATA (as written, `[id k="v"]...`).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Syslog<'a> {
    pub pri: Option<u8>,
    pub msgid: Option<&'a str>,
    pub structured_data: Option<&'a str>,
}

/// Parses the header of `line`. Never fails: whatever is not understood
/// stays in `msg`. A syslog frame as sent over the network (`<PRI>` then
/// RFC 3164's or RFC 5424's header) is read too.
pub fn parse<'a>(line: &'a str, clock: &mut Clock, reference: Option<DateTime<Utc>>) -> Header<'a> {
    // RFC 6587 octet counting (`87 <22>1 ...`), as a TCP stream saved raw.
    let counted = line.as_bytes().first().is_some_and(u8::is_ascii_digit);
    let line = match line.split_once(' ').filter(|_| counted) {
        Some((count, framed))
            if framed.starts_with('<') && count.bytes().all(|b| b.is_ascii_digit()) =>
        {
            framed
        }
        _ => line,
    };
    let Some((pri, frame)) = strip_pri(line) else {
        return parse_body(line.strip_prefix(BOM).unwrap_or(line), clock, reference);
    };
    if let Some(h) = parse_rfc5424(frame, pri, clock) {
        return h;
    }
    let mut h = parse_body(frame.strip_prefix(BOM).unwrap_or(frame), clock, reference);
    h.syslog = Some(Syslog {
        pri: Some(pri),
        ..Syslog::default()
    });
    h
}

const BOM: char = '\u{feff}';

/// `<PRI>` with PRI 0 to 191 (facility × 8 + severity), no leading zeros.
fn strip_pri(line: &str) -> Option<(u8, &str)> {
    let rest = line.strip_prefix('<')?;
    let end = rest.find('>')?;
    let digits = &rest[..end];
    let valid = (1..=3).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    let pri: u8 = digits.parse().ok().filter(|&p| valid && p <= 191)?;
    Some((pri, &rest[end + 1..]))
}

/// `VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP
/// STRUCTURED-DATA [SP MSG]` after the `<PRI>`; `-` is a field left out.
fn parse_rfc5424<'a>(frame: &'a str, pri: u8, clock: &mut Clock) -> Option<Header<'a>> {
    let (version, rest) = frame.split_once(' ')?;
    if version.is_empty() || version.len() > 2 || !version.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut fields = rest.splitn(6, ' ');
    let (stamp, host, app, procid, msgid) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let rest = fields.next().unwrap_or("");
    let stamp = match stamp {
        "-" => None,
        text => Some(iso_stamp(text, clock)?),
    };
    let given = |f: &'a str| (f != "-" && !f.is_empty()).then_some(f);
    let (structured_data, msg) = match rest.as_bytes().first() {
        Some(b'-') if rest.len() == 1 || rest.as_bytes()[1] == b' ' => {
            (None, rest.get(2..).unwrap_or(""))
        }
        Some(b'[') => {
            let end = structured_data_end(rest)?;
            (
                Some(&rest[..end]),
                rest[end..].strip_prefix(' ').unwrap_or(""),
            )
        }
        // A sender that leaves STRUCTURED-DATA out altogether.
        _ => (None, rest),
    };
    let tag = given(app);
    Some(Header {
        stamp,
        host: given(host),
        tag,
        pid: given(procid).and_then(|p| p.parse().ok()),
        msg: msg.strip_prefix(BOM).unwrap_or(msg),
        roundcube_stamp: false,
        syslog: Some(Syslog {
            pri: Some(pri),
            msgid: given(msgid),
            structured_data,
        }),
    })
}

/// The length of the SD-ELEMENTs at the start of `s` (`[id k="v\"x"][id2]`),
/// honouring the escapes `\"`, `\\` and `\]` inside values.
fn structured_data_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while b.get(i) == Some(&b'[') {
        i += 1;
        let mut quoted = false;
        loop {
            match *b.get(i)? {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b']' if !quoted => break,
                _ => {}
            }
            i += 1;
        }
        i += 1;
    }
    matches!(b.get(i), None | Some(b' ')).then_some(i)
}

/// The SD-ELEMENTs of `sd` as (SD-ID, [(PARAM-NAME, unescaped value)]).
pub fn structured_data(sd: &str) -> Vec<(&str, Vec<(&str, String)>)> {
    let mut elements = Vec::new();
    let mut rest = sd;
    while let Some(body) = rest.strip_prefix('[') {
        let id_end = body.find([' ', ']']).unwrap_or(body.len());
        let id = &body[..id_end];
        let mut params = Vec::new();
        let mut s = &body[id_end..];
        loop {
            s = s.trim_start_matches(' ');
            if let Some(after) = s.strip_prefix(']') {
                s = after;
                break;
            }
            let Some((name, after)) = s.split_once("=\"") else {
                s = "";
                break;
            };
            let mut value = String::new();
            let mut chars = after.char_indices();
            let mut end = after.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, e @ ('"' | '\\' | ']'))) => value.push(e),
                        Some((_, other)) => {
                            value.push('\\');
                            value.push(other);
                        }
                        None => value.push('\\'),
                    },
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            params.push((name, value));
            s = &after[end..];
        }
        elements.push((id, params));
        rest = s;
    }
    elements
}

fn parse_body<'a>(
    line: &'a str,
    clock: &mut Clock,
    reference: Option<DateTime<Utc>>,
) -> Header<'a> {
    let mut h = Header {
        msg: line,
        ..Header::default()
    };
    let Some((stamp, rest, roundcube)) = parse_stamp(line, clock, reference) else {
        // No timestamp: maybe a bare `tag[pid]: message` line.
        if let Some((tag, msg)) = split_tag(line) {
            h.tag = Some(tag);
            h.pid = tag_pid(tag);
            h.msg = msg;
        }
        return h;
    };
    h.stamp = Some(stamp);
    h.roundcube_stamp = roundcube;
    let rest = rest.trim_start_matches(' ');
    h.msg = rest;
    if roundcube {
        return h;
    }
    // Hostless (a daemon's own log file): `Jan 29 09:33:58 pop3-login: Info: ...`.
    if let Some((tag, msg)) = split_tag(rest) {
        h.tag = Some(tag);
        h.pid = tag_pid(tag);
        h.msg = msg;
        return h;
    }
    let Some((host, after_host)) = rest.split_once(' ') else {
        return h;
    };
    h.host = Some(host);
    h.msg = after_host;
    let after_host = after_host.trim_start_matches(' ');
    if let Some((tag, msg)) = split_tag(after_host) {
        h.tag = Some(tag);
        h.pid = tag_pid(tag);
        h.msg = msg;
        return h;
    }
    // Relay collector: `collector svc <ISO time> host tag[pid]: msg`.
    if let Some((_svc, inner)) = after_host.split_once(' ') {
        if inner.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            let inner_h = parse_body(inner, clock, reference);
            if inner_h.stamp.is_some() && inner_h.tag.is_some() {
                return inner_h;
            }
        }
    }
    h
}

/// Parses the leading timestamp; returns it, the rest of the line, and
/// whether it was Roundcube's bracketed form.
fn parse_stamp<'a>(
    line: &'a str,
    clock: &mut Clock,
    reference: Option<DateTime<Utc>>,
) -> Option<(Stamp, &'a str, bool)> {
    let b = line.as_bytes();
    match *b.first()? {
        b'@' => {
            let (stamp, rest) = parse_tai64n(line, clock)?;
            Some((stamp, rest, false))
        }
        b'[' => {
            let end = line.find(']')?;
            let stamp = parse_roundcube_stamp(&line[1..end], clock)?;
            let rest = line[end + 1..].trim_start_matches(':');
            Some((stamp, rest, true))
        }
        b'0'..=b'9' => {
            // `2023-03-14T00:00:31.185246+01:00 host` or `2013-08-11 03:56:40 host`.
            let first_space = line.find(' ')?;
            let (text, rest) = if first_space == 10 {
                let end = line[11..].find(' ').map_or(line.len(), |i| i + 11);
                (&line[..end], &line[end..])
            } else {
                (&line[..first_space], &line[first_space..])
            };
            Some((iso_stamp(text, clock)?, rest, false))
        }
        _ => {
            // RFC 3164: `Mar  2 08:15:03`, `Mar 02 08:15:03`, `Mar 2 08:15:03.123456`.
            let month = month_number(line.get(..3)?)?;
            let rest = line.get(3..)?;
            let rest = rest.strip_prefix(' ')?.trim_start_matches(' ');
            let day_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            if day_len == 0 || day_len > 2 {
                return None;
            }
            let day: u32 = rest[..day_len].parse().ok()?;
            let rest = rest[day_len..].strip_prefix(' ')?.trim_start_matches(' ');
            let time_len = rest.find(' ').unwrap_or(rest.len());
            let (time, digits) = parse_hms(&rest[..time_len])?;
            let at = clock.resolve_yearless(month, day, time, reference)?;
            Some((
                Stamp {
                    at,
                    frac_digits: digits,
                },
                &rest[time_len..],
                false,
            ))
        }
    }
}

/// An ISO 8601 / RFC 3339 time; without an offset, in the clock's zone.
fn iso_stamp(text: &str, clock: &mut Clock) -> Option<Stamp> {
    let (naive, digits, offset) = parse_iso(text)?;
    let at = match offset {
        Some(o) => o.from_local_datetime(&naive).single()?,
        None => clock.localize(naive),
    };
    Some(Stamp {
        at,
        frac_digits: digits,
    })
}

/// daemontools/s6 `@4000000050e3c0a50b9f10cc` labels (TAI64N, read as UTC).
fn parse_tai64n<'a>(line: &'a str, clock: &mut Clock) -> Option<(Stamp, &'a str)> {
    let hex = line.get(1..25)?;
    if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let secs = u64::from_str_radix(&hex[..16], 16)
        .ok()?
        .checked_sub(1 << 62)?;
    let nanos = u32::from_str_radix(&hex[16..], 16).ok()?;
    let utc = Utc
        .timestamp_opt(i64::try_from(secs).ok()?, nanos.min(999_999_999))
        .single()?;
    let off = clock.zone.offset_at(&utc.naive_utc());
    let local = utc.with_timezone(&off);
    // Re-resolve with the offset in force at that local time (DST edges).
    let off = clock.zone.offset_at(&local.naive_local());
    Some((
        Stamp {
            at: utc.with_timezone(&off),
            frac_digits: 0,
        },
        &line[25..],
    ))
}

/// `22-Jan-2013 22:28:21 +0200` or `02-May-2021 13:16:15 America/Boise`.
fn parse_roundcube_stamp(s: &str, clock: &mut Clock) -> Option<Stamp> {
    let (date, rest) = s.split_once(' ')?;
    let (time, zone) = match rest.split_once(' ') {
        Some((t, z)) => (t, Some(z)),
        None => (rest, None),
    };
    let mut parts = date.splitn(3, '-');
    let day: u32 = parts.next()?.parse().ok()?;
    let month = month_number(parts.next()?)?;
    let year: i32 = parts.next()?.parse().ok()?;
    let (t, digits) = parse_hms(time)?;
    let naive = NaiveDate::from_ymd_opt(year, month, day)?.and_time(t);
    let at = match zone {
        None => clock.localize(naive),
        Some(z) => match crate::time::parse_offset(z) {
            Some(o) => o.from_local_datetime(&naive).single()?,
            None => {
                let zone = crate::time::Zone::parse(z).ok()?;
                let off = zone.offset_at(&naive);
                off.from_local_datetime(&naive).single()?
            }
        },
    };
    debug_assert!(at.year() == year);
    Some(Stamp {
        at,
        frac_digits: digits,
    })
}

/// Splits `tag[pid]: message` (or `tag:` at the end). The tag has no spaces;
/// a colon inside brackets or parentheses (`auth(user,ip,sasl:login)`) is part of it.
pub fn split_tag(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    let mut depth = 0i32;
    for (i, &c) in b.iter().enumerate().take(160) {
        match c {
            b'[' | b'(' | b'<' => depth += 1,
            b']' | b')' | b'>' => depth -= 1,
            b' ' | b'\t' if depth <= 0 => return None,
            b':' if depth <= 0 => {
                if i == 0 {
                    return None;
                }
                return match b.get(i + 1) {
                    None => Some((&s[..i], "")),
                    Some(b' ') => Some((&s[..i], &s[i + 2..])),
                    _ => None,
                };
            }
            _ => {}
        }
    }
    None
}

/// The program name of a tag: `postfix/smtpd[123]` → `postfix/smtpd`.
pub fn tag_name(tag: &str) -> &str {
    let end = tag.find(['[', '(', '<']).unwrap_or(tag.len());
    &tag[..end]
}

fn tag_pid(tag: &str) -> Option<u64> {
    let open = tag.find(['[', '('])?;
    let close = tag[open..].find([']', ')'])? + open;
    tag[open + 1..close].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Zone;

    fn clock() -> Clock {
        let now = DateTime::parse_from_rfc3339("2026-03-10T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        Clock::new(Zone::parse("+01:00").unwrap(), None, now)
    }

    fn ts(h: &Header) -> String {
        h.stamp.unwrap().to_rfc3339()
    }

    #[test]
    fn rfc3164_padding_variants() {
        for line in [
            "Mar  2 08:15:03 mx1 postfix/smtpd[123]: connect from x[1.2.3.4]",
            "Mar 02 08:15:03 mx1 postfix/smtpd[123]: connect from x[1.2.3.4]",
            "Mar 2 08:15:03 mx1 postfix/smtpd[123]: connect from x[1.2.3.4]",
        ] {
            let h = parse(line, &mut clock(), None);
            assert_eq!(ts(&h), "2026-03-02T08:15:03+01:00", "{line}");
            assert_eq!(h.host, Some("mx1"));
            assert_eq!(h.tag, Some("postfix/smtpd[123]"));
            assert_eq!(h.pid, Some(123));
            assert_eq!(h.msg, "connect from x[1.2.3.4]");
        }
    }

    #[test]
    fn short_precise_and_iso_forms() {
        let h = parse(
            "Mar  2 08:15:03.123456 mx1 postfix/qmgr[9]: x",
            &mut clock(),
            None,
        );
        assert_eq!(ts(&h), "2026-03-02T08:15:03.123456+01:00");
        let h = parse(
            "2026-03-02T08:15:03+0530 mx1 postfix/qmgr[9]: x",
            &mut clock(),
            None,
        );
        assert_eq!(ts(&h), "2026-03-02T08:15:03+05:30");
        let h = parse(
            "2013-08-11 03:56:40 pop3-login: Info: x",
            &mut clock(),
            None,
        );
        assert_eq!(ts(&h), "2013-08-11T03:56:40+01:00");
        assert_eq!(h.host, None);
        assert_eq!(h.tag, Some("pop3-login"));
    }

    #[test]
    fn relay_collector_double_header_uses_the_inner_one() {
        let line = "Mar  2 08:15:03 collector svc 2026-03-02T08:15:03+05:30 mx1 postfix/smtpd[123]: connect from a[1.2.3.4]";
        let h = parse(line, &mut clock(), None);
        assert_eq!(ts(&h), "2026-03-02T08:15:03+05:30");
        assert_eq!(h.host, Some("mx1"));
        assert_eq!(h.tag, Some("postfix/smtpd[123]"));
        assert_eq!(h.msg, "connect from a[1.2.3.4]");
    }

    #[test]
    fn dovecot_and_roundcube_forms() {
        let h = parse(
            "@400000004c91b044077a9e94 imap-login: Info: x",
            &mut clock(),
            None,
        );
        assert_eq!(ts(&h), "2010-09-16T06:51:00+01:00");
        assert_eq!(h.tag, Some("imap-login"));
        let h = parse(
            "Aug 30 00:10:57 auth(info@example.com,192.0.2.110,sasl:login)<Cv>: Info: sql: x",
            &mut clock(),
            None,
        );
        assert_eq!(
            h.tag,
            Some("auth(info@example.com,192.0.2.110,sasl:login)<Cv>")
        );
        assert_eq!(h.msg, "Info: sql: x");
        let h = parse(
            "[22-Jan-2013 22:28:21 +0200]: FAILED login for u from 1.2.3.4",
            &mut clock(),
            None,
        );
        assert_eq!(ts(&h), "2013-01-22T22:28:21+02:00");
        assert!(h.roundcube_stamp);
        assert_eq!(h.msg, "FAILED login for u from 1.2.3.4");
        let h = parse(
            "[02-May-2021 13:16:15 America/Boise] PHP Warning: x",
            &mut clock(),
            None,
        );
        assert_eq!(ts(&h), "2021-05-02T13:16:15-06:00");
    }

    #[test]
    fn garbage_keeps_everything_in_msg() {
        for line in [
            "",
            "hello world",
            "Foo 99 99:99:99 x y: z",
            "[",
            "@zz",
            "2026-13-45T00:00:00 x",
        ] {
            let h = parse(line, &mut clock(), None);
            assert!(h.stamp.is_none(), "{line}");
        }
    }
}
