//! Turns mail-server log lines into pf records.
//!
//! Input lines may be raw syslog text, `kafka-tail` envelopes, `journalctl -o json`
//! entries or earlier pf records; each becomes exactly one output record, so
//! nothing is ever dropped: what is not understood is passed on as `unknown`.

pub mod dovecot;
pub mod fields;
pub mod header;
pub mod kind;
pub mod merge;
pub mod postfix;
pub mod proxy;
pub mod roundcube;
pub mod scan;
pub mod time;

use chrono::{DateTime, TimeZone, Utc};
use fields::{Fields, Val};
use header::{tag_name, Header};
use pf_record::{json, Flag, Line, Origin, MAX_LINE_BYTES};
use serde_json::{Map, Value};
use std::borrow::Cow;
use time::{Clock, Stamp, Zone};

pub use kind::{failure_of, Failure, KINDS};

/// A parsed log message, borrowing from the line.
#[derive(Debug, Default)]
pub struct Event<'a> {
    pub stamp: Option<Stamp>,
    pub host: Option<Cow<'a, str>>,
    pub program: Option<Cow<'a, str>>,
    pub pid: Option<u64>,
    pub kind: &'static str,
    pub fields: Fields<'a>,
    pub syslog: Option<header::Syslog<'a>>,
}

/// Parses lines; holds the clock used for year-less timestamps.
pub struct LineParser {
    clock: Clock,
    proxies: proxy::TrustedProxies,
    /// The event time of the line processed last, if it had one.
    last_time: Option<DateTime<chrono::FixedOffset>>,
    /// What was wrong with the lines so far, for the summary at exit.
    pub counts: ProblemCounts,
}

/// Lines passed on marked, by problem (a line may count under several).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProblemCounts {
    pub lines: u64,
    /// `kind: unknown`: not a message this parser recognises.
    pub unknown: u64,
    pub truncated: u64,
    pub invalid_utf8: u64,
    pub nul_bytes: u64,
    pub bad_json: u64,
}

impl ProblemCounts {
    pub fn add(&mut self, other: &ProblemCounts) {
        self.lines += other.lines;
        self.unknown += other.unknown;
        self.truncated += other.truncated;
        self.invalid_utf8 += other.invalid_utf8;
        self.nul_bytes += other.nul_bytes;
        self.bad_json += other.bad_json;
    }

    /// `12 not recognised (kind unknown), 1 cut at 1 MiB`, or `None` when all were fine.
    pub fn describe(&self) -> Option<String> {
        let parts: Vec<String> = [
            (self.unknown, "not recognised (kind unknown)"),
            (self.truncated, "cut at 1 MiB (flag truncated)"),
            (self.invalid_utf8, "not UTF-8 (flag invalid_utf8)"),
            (self.nul_bytes, "with NUL bytes (flag nul_bytes)"),
            (self.bad_json, "broken JSON read as text (flag bad_json)"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

impl LineParser {
    pub fn new(zone: Zone, year: Option<i32>, now: DateTime<Utc>) -> LineParser {
        LineParser {
            clock: Clock::new(zone, year, now),
            proxies: proxy::TrustedProxies::default(),
            last_time: None,
            counts: ProblemCounts::default(),
        }
    }

    /// Believe forwarded client addresses from these proxies only
    /// (default: loopback).
    pub fn with_trusted_proxies(mut self, proxies: proxy::TrustedProxies) -> LineParser {
        self.proxies = proxies;
        self
    }

    /// Parses one log line of text (no JSON handling).
    pub fn parse_text<'a>(&mut self, line: &'a str, reference: Option<DateTime<Utc>>) -> Event<'a> {
        let h = header::parse(line, &mut self.clock, reference);
        let mut ev = Event {
            stamp: h.stamp,
            host: h.host.map(Cow::Borrowed),
            pid: h.pid,
            syslog: h.syslog,
            ..Event::default()
        };
        classify(&h, &mut ev, &self.proxies);
        self.last_time = ev.stamp.map(|s| s.at);
        ev
    }

    /// The event time of the record [`LineParser::process`] wrote last
    /// (`None` when its line had no timestamp).
    pub fn last_time(&self) -> Option<DateTime<chrono::FixedOffset>> {
        self.last_time
    }

    /// Parses one input line of any accepted form and appends exactly one NDJSON
    /// record (with its newline) to `out`. Returns the record's kind.
    pub fn process(
        &mut self,
        line: &Line<'_>,
        origin: Origin<'_>,
        out: &mut Vec<u8>,
    ) -> &'static str {
        self.last_time = None;
        let kind = self.process_line(line, origin, out);
        let c = &mut self.counts;
        c.lines += 1;
        c.unknown += u64::from(kind == "unknown");
        // (process_line counts cut lines, invalid UTF-8, NUL bytes and bad JSON.)
        kind
    }

    fn process_line(
        &mut self,
        line: &Line<'_>,
        origin: Origin<'_>,
        out: &mut Vec<u8>,
    ) -> &'static str {
        let mut flags: Vec<Flag> = Vec::new();
        if line.truncated {
            self.flag_truncated(&mut flags);
        }
        if line.had_cr {
            flags.push(Flag::Crlf);
        }
        // JSON input (envelopes, journald entries, records) may be longer
        // than a log line; the log line inside it is cut instead.
        let json_like = line
            .bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|&b| b == b'{');
        let bytes = if line.bytes.len() > MAX_LINE_BYTES && !json_like {
            self.flag_truncated(&mut flags);
            &line.bytes[..MAX_LINE_BYTES]
        } else {
            line.bytes
        };
        let mut text: Cow<'_, str> = match std::str::from_utf8(bytes) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => {
                flags.push(Flag::InvalidUtf8);
                self.counts.invalid_utf8 += 1;
                String::from_utf8_lossy(bytes)
            }
        };
        if bytes.contains(&0) {
            flags.push(Flag::NulBytes);
            self.counts.nul_bytes += 1;
        }
        if json_like {
            if let Some(kind) = self.plain_envelope(&text, &flags, out) {
                return kind;
            }
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(obj)) => {
                    return self.process_json(obj, &text, line.number, origin, flags, out)
                }
                _ => {
                    flags.push(Flag::BadJson);
                    self.counts.bad_json += 1;
                    if text.len() > MAX_LINE_BYTES {
                        let mut cut = text.into_owned();
                        self.cut_to_line_limit(&mut cut, &mut flags);
                        text = Cow::Owned(cut);
                    }
                }
            }
        }
        if text.trim_start().is_empty() {
            flags.push(Flag::Empty);
        }
        let ev = self.parse_text(&text, None);
        let source = SourceOut::Line {
            origin,
            line: line.number,
        };
        write_record(out, &text, &source, &ev, &flags, None);
        ev.kind
    }

    fn flag_truncated(&mut self, flags: &mut Vec<Flag>) {
        if !flags.contains(&Flag::Truncated) {
            flags.push(Flag::Truncated);
            self.counts.truncated += 1;
        }
    }

    /// Cuts a log line taken from JSON input to [`MAX_LINE_BYTES`] (at a
    /// character boundary), flagging the record.
    fn cut_to_line_limit(&mut self, line: &mut String, flags: &mut Vec<Flag>) {
        if line.len() > MAX_LINE_BYTES {
            let mut end = MAX_LINE_BYTES;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
            self.flag_truncated(flags);
        }
    }

    /// The usual kafka-tail envelope (only its own keys, no flags, nothing
    /// escaped but the value), written from the text's slices without
    /// building a map; `None` sends anything else down the general path,
    /// which writes the same bytes for these.
    fn plain_envelope(
        &mut self,
        text: &str,
        flags: &[Flag],
        out: &mut Vec<u8>,
    ) -> Option<&'static str> {
        let members = pf_record::members::members(text).ok()?;
        let mut value = None;
        let mut coordinates: [Option<&str>; 6] = [None; 6];
        for m in &members {
            let name = m.quoted_name.get(1..m.quoted_name.len() - 1)?;
            if name == "value" && value.is_none() {
                value = Some(m.value);
                continue;
            }
            let i = pf_record::envelope::COORDINATES
                .iter()
                .position(|k| *k == name)?;
            if coordinates[i].is_some() || !is_canonical_scalar(m.value) {
                return None;
            }
            coordinates[i] = Some(m.value).filter(|v| *v != "null");
        }
        let (Some(raw_value), Some(topic)) = (value, coordinates[0]) else {
            return None;
        };
        if !topic.starts_with('"') || !raw_value.starts_with('"') {
            return None;
        }
        let value: Cow<'_, str> = match &raw_value[1..raw_value.len() - 1] {
            inner if !inner.contains('\\') => Cow::Borrowed(inner),
            _ => Cow::Owned(serde_json::from_str::<String>(raw_value).ok()?),
        };
        if value.len() > MAX_LINE_BYTES {
            return None;
        }
        let reference = coordinates[3]
            .and_then(|ms| ms.parse::<i64>().ok())
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single());
        let ev = self.parse_text(&value, reference);
        write_record(out, &value, &SourceOut::Raw(&coordinates), &ev, flags, None);
        Some(ev.kind)
    }

    fn process_json(
        &mut self,
        mut obj: Map<String, Value>,
        text: &str,
        number: u64,
        origin: Origin<'_>,
        mut flags: Vec<Flag>,
        out: &mut Vec<u8>,
    ) -> &'static str {
        // kafka-tail envelope: {"topic","partition","offset","timestamp","key","value"}
        if obj.contains_key("topic") && obj.get("value").is_some_and(Value::is_string) {
            let mut value = match obj.remove("value") {
                Some(Value::String(s)) => s,
                _ => String::new(),
            };
            let mut source = Map::new();
            for k in pf_record::envelope::COORDINATES {
                if let Some(v) = obj.remove(k).filter(|v| !v.is_null()) {
                    source.insert(k.to_string(), v);
                }
            }
            take_flags(&mut obj, &mut flags);
            self.cut_to_line_limit(&mut value, &mut flags);
            let reference = source
                .get("timestamp")
                .and_then(Value::as_i64)
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single());
            let ev = self.parse_text(&value, reference);
            write_record(
                out,
                &value,
                &SourceOut::Json(&source),
                &ev,
                &flags,
                Some(&obj),
            );
            return ev.kind;
        }
        // journalctl -o json
        if obj.contains_key("MESSAGE") {
            return self.process_journald(obj, number, origin, flags, out);
        }
        // An earlier pf record: parse its `raw` again, keep everything else.
        if let Some(Value::String(mut raw)) = obj.remove("raw") {
            let source = match obj.remove("source") {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            for owned in [
                "ts", "host", "program", "pid", "syslog", "kind", "parsed", "failure", "fields",
            ] {
                obj.remove(owned);
            }
            take_flags(&mut obj, &mut flags);
            self.cut_to_line_limit(&mut raw, &mut flags);
            let ev = self.parse_text(&raw, None);
            write_record(
                out,
                &raw,
                &SourceOut::Json(&source),
                &ev,
                &flags,
                Some(&obj),
            );
            return ev.kind;
        }
        // Some other JSON object: keep it whole as text.
        let ev = self.parse_text(text, None);
        write_record(
            out,
            text,
            &SourceOut::Line {
                origin,
                line: number,
            },
            &ev,
            &flags,
            None,
        );
        ev.kind
    }

    fn process_journald(
        &mut self,
        obj: Map<String, Value>,
        number: u64,
        origin: Origin<'_>,
        mut flags: Vec<Flag>,
        out: &mut Vec<u8>,
    ) -> &'static str {
        let mut message: String = match obj.get("MESSAGE") {
            Some(Value::String(s)) => s.clone(),
            // journald writes non-UTF-8 messages as arrays of bytes.
            Some(Value::Array(bytes)) => {
                let raw: Vec<u8> = bytes
                    .iter()
                    .filter_map(Value::as_u64)
                    .map(|b| b.min(255) as u8)
                    .collect();
                if std::str::from_utf8(&raw).is_err() {
                    flags.push(Flag::InvalidUtf8);
                }
                String::from_utf8_lossy(&raw).into_owned()
            }
            _ => String::new(),
        };
        self.cut_to_line_limit(&mut message, &mut flags);
        let get = |k: &str| obj.get(k).and_then(Value::as_str);
        let instant = get("__REALTIME_TIMESTAMP")
            .and_then(|us| us.parse::<i64>().ok())
            .and_then(|us| Utc.timestamp_micros(us).single());
        let ident = get("SYSLOG_IDENTIFIER").unwrap_or_default();
        let h = Header {
            stamp: instant.map(|t| {
                let off = self.clock.zone.offset_at(&t.naive_utc());
                let off = self
                    .clock
                    .zone
                    .offset_at(&t.with_timezone(&off).naive_local());
                Stamp {
                    at: t.with_timezone(&off),
                    frac_digits: 6,
                }
            }),
            host: get("_HOSTNAME"),
            tag: (!ident.is_empty()).then_some(ident),
            pid: get("_PID")
                .or_else(|| get("SYSLOG_PID"))
                .and_then(|p| p.parse().ok()),
            msg: &message,
            roundcube_stamp: false,
            syslog: journald_priority(get("PRIORITY"), get("SYSLOG_FACILITY")),
        };
        let mut ev = Event {
            stamp: h.stamp,
            host: h.host.map(Cow::Borrowed),
            pid: h.pid,
            syslog: h.syslog,
            ..Event::default()
        };
        classify(&h, &mut ev, &self.proxies);
        self.last_time = ev.stamp.map(|s| s.at);
        let mut source = Map::new();
        if let Origin::File(f) = origin {
            source.insert("file".into(), Value::from(f));
        }
        source.insert("line".into(), Value::from(number));
        if let Some(c) = get("__CURSOR") {
            source.insert("cursor".into(), Value::from(c));
        }
        write_record(out, &message, &SourceOut::Json(&source), &ev, &flags, None);
        ev.kind
    }
}

/// journald's `PRIORITY` (severity) and `SYSLOG_FACILITY` as a `<PRI>`
/// would give them; a missing facility is `user`, as syslog(3) defaults.
fn journald_priority<'a>(
    severity: Option<&str>,
    facility: Option<&str>,
) -> Option<header::Syslog<'a>> {
    let severity: u8 = severity?.parse().ok().filter(|s| *s < 8)?;
    let facility: u8 = facility
        .and_then(|f| f.parse().ok())
        .filter(|f| *f < 24)
        .unwrap_or(1);
    Some(header::Syslog {
        pri: Some(facility * 8 + severity),
        ..header::Syslog::default()
    })
}

fn take_flags(obj: &mut Map<String, Value>, flags: &mut Vec<Flag>) {
    if let Some(Value::Array(prior)) = obj.remove("flags") {
        for f in prior {
            if let Ok(flag) = serde_json::from_value::<Flag>(f) {
                // Recomputed from the line with this run's trusted proxies.
                if flag != Flag::UntrustedForwarded && !flags.contains(&flag) {
                    flags.push(flag);
                }
            }
        }
    }
}

/// Picks the parser for the program and fills `ev`.
fn classify<'a>(h: &Header<'a>, ev: &mut Event<'a>, proxies: &proxy::TrustedProxies) {
    let msg = h.msg;
    let name = h.tag.map(tag_name).unwrap_or_default();
    if h.roundcube_stamp
        || matches!(name, "roundcube" | "roundcubemail")
        || (h.tag.is_none() && msg.starts_with("[roundcube] "))
    {
        ev.program = Some(Cow::Borrowed("roundcube"));
        ev.kind = roundcube::parse(msg, &mut ev.fields, proxies);
        return;
    }
    let Some(tag) = h.tag else {
        ev.kind = "unknown";
        return;
    };
    // `postfix/smtpd`, `postfix-smo/submission/smtpd`, `postfix/10025/smtpd` → daemon `smtpd`.
    if name.starts_with("postfix") && name.contains('/') {
        let (instance, daemon) = name.rsplit_once('/').unwrap_or(("postfix", name));
        if instance != "postfix" {
            ev.fields.s("instance", instance);
        }
        ev.program = Some(match postfix::program_for(daemon) {
            Some(p) => Cow::Borrowed(p),
            None => Cow::Owned(format!("postfix/{daemon}")),
        });
        ev.kind = postfix::parse(daemon, msg, &mut ev.fields);
        return;
    }
    // The `postfix` command itself (`postfix start`, `postfix check`).
    if name == "postfix" {
        ev.program = Some(Cow::Borrowed("postfix"));
        ev.kind = postfix::parse(name, msg, &mut ev.fields);
        return;
    }
    if dovecot::is_dovecot_service(name) {
        ev.program = Some(Cow::Borrowed("dovecot"));
        ev.kind = dovecot::parse(tag, msg, &mut ev.fields);
        return;
    }
    ev.program = Some(Cow::Borrowed(name));
    ev.kind = match name {
        "sendmail" | "sm-mta" | "sm-msp-queue" => "sendmail.event",
        "amavis" | "amavisd" | "amavisd-new" => "amavis.event",
        _ => "unknown",
    };
}

enum SourceOut<'a> {
    Line {
        origin: Origin<'a>,
        line: u64,
    },
    Json(&'a Map<String, Value>),
    /// The values of [`pf_record::envelope::COORDINATES`] (absent: `None`),
    /// already in the form serde_json writes them.
    Raw(&'a [Option<&'a str>; 6]),
}

/// A JSON value serde_json writes back byte for byte: `null`, `true`,
/// `false`, up to 18 digits, or a string with no escape.
fn is_canonical_scalar(v: &str) -> bool {
    match v.as_bytes() {
        b"null" | b"true" | b"false" => true,
        [b'"', inner @ .., b'"'] => !inner.contains(&b'\\'),
        digits => !digits.is_empty() && digits.len() <= 18 && digits.iter().all(u8::is_ascii_digit),
    }
}

const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];
const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// `,"syslog":{"facility":"mail","severity":"info","msgid":..,"sd":{id:{k:v}}}`.
fn write_syslog(out: &mut Vec<u8>, syslog: &header::Syslog<'_>) {
    out.extend_from_slice(b",\"syslog\":{");
    let mut first = true;
    let mut key = |out: &mut Vec<u8>, k: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        json::write_str(out, k);
        out.push(b':');
    };
    if let Some(pri) = syslog.pri {
        key(out, "facility");
        json::write_str(out, FACILITIES[usize::from(pri >> 3) % 24]);
        key(out, "severity");
        json::write_str(out, SEVERITIES[usize::from(pri & 7)]);
    }
    if let Some(msgid) = syslog.msgid {
        key(out, "msgid");
        json::write_str(out, msgid);
    }
    if let Some(sd) = syslog.structured_data {
        key(out, "sd");
        let mut sd_map = Map::new();
        for (id, params) in header::structured_data(sd) {
            let entry = sd_map
                .entry(id.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = entry {
                for (k, v) in params {
                    m.insert(k.to_string(), Value::String(v));
                }
            }
        }
        let _ = serde_json::to_writer(&mut *out, &sd_map);
    }
    out.push(b'}');
}

/// Writes one record in the contract's field order (see `docs/records.md`).
fn write_record(
    out: &mut Vec<u8>,
    raw: &str,
    source: &SourceOut<'_>,
    ev: &Event<'_>,
    flags: &[Flag],
    extra: Option<&Map<String, Value>>,
) {
    out.extend_from_slice(b"{\"raw\":");
    json::write_str(out, raw);
    out.extend_from_slice(b",\"source\":");
    match source {
        SourceOut::Line { origin, line } => {
            out.push(b'{');
            if let Origin::File(f) = origin {
                out.extend_from_slice(b"\"file\":");
                json::write_str(out, f);
                out.push(b',');
            }
            out.extend_from_slice(b"\"line\":");
            json::write_i64(out, *line as i64);
            out.push(b'}');
        }
        SourceOut::Json(m) => {
            // Serialising a map of JSON values cannot fail.
            let _ = serde_json::to_writer(&mut *out, m);
        }
        SourceOut::Raw(values) => {
            out.push(b'{');
            let present = pf_record::envelope::COORDINATES
                .iter()
                .zip(values.iter())
                .filter_map(|(name, value)| Some((name, (*value)?)));
            for (i, (name, value)) in present.enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json::write_str(out, name);
                out.push(b':');
                out.extend_from_slice(value.as_bytes());
            }
            out.push(b'}');
        }
    }
    if let Some(st) = &ev.stamp {
        out.extend_from_slice(b",\"ts\":\"");
        st.write_rfc3339(out);
        out.push(b'"');
    }
    if let Some(h) = &ev.host {
        out.extend_from_slice(b",\"host\":");
        json::write_str(out, h);
    }
    if let Some(p) = &ev.program {
        out.extend_from_slice(b",\"program\":");
        json::write_str(out, p);
    }
    if let Some(pid) = ev.pid {
        out.extend_from_slice(b",\"pid\":");
        json::write_i64(out, pid as i64);
    }
    if let Some(syslog) = &ev.syslog {
        write_syslog(out, syslog);
    }
    out.extend_from_slice(b",\"kind\":\"");
    out.extend_from_slice(ev.kind.as_bytes());
    out.extend_from_slice(if ev.kind == "unknown" {
        b"\",\"parsed\":false"
    } else {
        b"\",\"parsed\":true"
    });
    if let Some(f) = failure_of(ev.kind) {
        out.extend_from_slice(b",\"failure\":\"");
        out.extend_from_slice(f.as_str().as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b",\"fields\":{");
    for (i, (k, v)) in ev.fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"\":");
        match v {
            Val::Str(s) => json::write_str(out, s),
            Val::Int(n) => json::write_i64(out, *n),
            Val::Float(x) => json::write_f64(out, *x),
        }
    }
    out.push(b'}');
    let untrusted = (ev.program.as_deref() == Some("roundcube")
        && ev.fields.get("forwarded_for").is_some())
    .then_some(Flag::UntrustedForwarded);
    if !flags.is_empty() || untrusted.is_some() {
        out.extend_from_slice(b",\"flags\":[");
        for (i, f) in flags.iter().chain(&untrusted).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(f.as_str().as_bytes());
            out.push(b'"');
        }
        out.push(b']');
    }
    if let Some(extra) = extra {
        for (k, v) in extra {
            out.push(b',');
            json::write_str(out, k);
            out.push(b':');
            let _ = serde_json::to_writer(&mut *out, v);
        }
    }
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod envelope_tests {
    use super::*;

    fn parser() -> LineParser {
        let now = Utc.with_ymd_and_hms(2023, 3, 20, 0, 0, 0).unwrap();
        LineParser::new(
            Zone::Fixed(chrono::FixedOffset::east_opt(0).unwrap()),
            None,
            now,
        )
    }

    /// The general path's record for `text`: the map built by serde_json.
    fn through_the_map(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) else {
            panic!("test envelope is not an object: {text}");
        };
        parser().process_json(obj, text, 1, Origin::Stdin, Vec::new(), &mut out);
        out
    }

    #[test]
    fn a_plain_envelope_is_written_as_the_general_path_writes_it() {
        let line = "Mar 16 00:44:02 helga postfix/smtpd[1]: connect from a[1.2.3.4]";
        let plain = [
            format!(r#"{{"topic":"postfix","partition":0,"offset":1,"timestamp":1678924800000,"key":null,"value":"{line}"}}"#),
            format!(r#"{{"value":"{line}","offset":3,"topic":"postfix","partition":2,"key":"mx1"}}"#),
            r#"{"topic":"postfix","partition":0,"offset":2,"timestamp":null,"value":"warning: \"quoted\" \u00e9 \/ x"}"#.to_string(),
            r#"{"topic":"t","offset":9,"value":"a","more_lines":true}"#.to_string(),
            r#"{"topic":"t","offset":9,"value":"b","more_lines":false}"#.to_string(),
            r#"  {"topic" : "t" , "value" : "spaced"}  "#.to_string(),
        ];
        for text in &plain {
            let mut out = Vec::new();
            let kind = parser().plain_envelope(text, &[], &mut out);
            assert!(kind.is_some(), "not taken as a plain envelope: {text}");
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&through_the_map(text)),
                "for {text}"
            );
        }
    }

    #[test]
    fn anything_unusual_takes_the_general_path() {
        let unusual = [
            r#"{"topic":"t","value":"x","flags":["invalid_utf8"]}"#,
            r#"{"topic":"t","value":"x","extra":{"a":1}}"#,
            r#"{"topic":"t","offset":6,"offset":7,"value":"x"}"#,
            r#"{"topic":"t","value":"x","value":"y"}"#,
            r#"{"topic":"post\u0066ix","value":"x"}"#,
            r#"{"topic":"t","offset":99999999999999999999,"value":"x"}"#,
            r#"{"topic":"t","partition":-1,"value":"x"}"#,
            r#"{"topic":"t","offset":1.0,"value":"x"}"#,
            r#"{"topic":5,"value":"x"}"#,
            r#"{"topic":"t","value":5}"#,
            r#"{"topic":"t"}"#,
            r#"{"topic":"t","key":{"a":1},"value":"x"}"#,
            r#"{"topic":"t","value":"x",}"#,
            r#"{"MESSAGE":"x"}"#,
        ];
        for text in unusual {
            let mut out = Vec::new();
            assert_eq!(
                parser().plain_envelope(text, &[], &mut out),
                None,
                "taken as plain: {text}"
            );
            assert!(out.is_empty());
        }
        let long = format!(
            r#"{{"topic":"t","value":"{}"}}"#,
            "a".repeat(MAX_LINE_BYTES + 1)
        );
        assert_eq!(parser().plain_envelope(&long, &[], &mut Vec::new()), None);
    }
}
