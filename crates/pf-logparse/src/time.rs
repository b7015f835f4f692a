//! Timestamps: parsing every header form we accept and writing RFC 3339.

use chrono::{
    DateTime, Datelike, Duration, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime,
    Offset, TimeZone, Utc,
};

/// The zone given to timestamps that carry none.
#[derive(Debug, Clone)]
pub enum Zone {
    /// The machine's zone (`TZ`, else `/etc/localtime`).
    Local,
    Fixed(FixedOffset),
    Named(chrono_tz::Tz),
}

impl Zone {
    /// Parses `local`, `UTC`, `Z`, `+05:30`, `-0800` or an IANA name.
    pub fn parse(s: &str) -> Result<Zone, String> {
        let t = s.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("local") {
            return Ok(Zone::Local);
        }
        if t.eq_ignore_ascii_case("utc") || t == "Z" {
            return Ok(Zone::Fixed(FixedOffset::east_opt(0).expect("zero offset")));
        }
        if t.starts_with('+') || t.starts_with('-') {
            return parse_offset(t).map(Zone::Fixed).ok_or_else(|| {
                format!("invalid UTC offset {t:?}: expected the form +05:30 or -0800")
            });
        }
        t.parse::<chrono_tz::Tz>()
            .map(Zone::Named)
            .map_err(|_| format!("unknown time zone {t:?}: use an IANA name such as Europe/Berlin, UTC, local, or an offset such as +01:00"))
    }

    /// Offset in force at local wall-clock time `naive` in this zone.
    /// In a DST gap the offset before the gap is used; when ambiguous, the earlier instant.
    pub fn offset_at(&self, naive: &NaiveDateTime) -> FixedOffset {
        fn pick<T: TimeZone>(
            r: LocalResult<DateTime<T>>,
            tz: &T,
            naive: &NaiveDateTime,
        ) -> FixedOffset {
            match r {
                LocalResult::Single(d) | LocalResult::Ambiguous(d, _) => d.offset().fix(),
                LocalResult::None => tz
                    .offset_from_utc_datetime(&(*naive - Duration::hours(3)))
                    .fix(),
            }
        }
        match self {
            Zone::Fixed(o) => *o,
            Zone::Named(tz) => pick(tz.from_local_datetime(naive), tz, naive),
            Zone::Local => pick(
                chrono::Local.from_local_datetime(naive),
                &chrono::Local,
                naive,
            ),
        }
    }
}

/// `+05:30`, `+0530`, `+05`, `Z`.
pub fn parse_offset(t: &str) -> Option<FixedOffset> {
    if t == "Z" || t == "z" {
        return FixedOffset::east_opt(0);
    }
    let sign = match t.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = t[1..].chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m) = match digits.len() {
        2 => (digits.parse::<i32>().ok()?, 0),
        4 => (
            digits[..2].parse::<i32>().ok()?,
            digits[2..].parse::<i32>().ok()?,
        ),
        _ => return None,
    };
    if h > 23 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

/// A parsed event time; `frac_digits` keeps the precision the log used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamp {
    pub at: DateTime<FixedOffset>,
    pub frac_digits: u8,
}

impl Stamp {
    /// Writes RFC 3339 with offset, e.g. `2023-03-14T00:00:31.185246+01:00`.
    pub fn write_rfc3339(&self, out: &mut Vec<u8>) {
        let d = self.at.naive_local();
        let mut buf = [0u8; 40];
        let mut n = 0;
        let put = |v: u32, width: usize, buf: &mut [u8; 40], n: &mut usize| {
            let mut div = 10u32.pow(width as u32 - 1);
            for _ in 0..width {
                buf[*n] = b'0' + ((v / div) % 10) as u8;
                *n += 1;
                div /= 10;
            }
        };
        let year = d.year();
        if (0..=9999).contains(&year) {
            put(year as u32, 4, &mut buf, &mut n);
        } else {
            out.extend_from_slice(self.at.to_rfc3339().as_bytes());
            return;
        }
        for (sep, v) in [
            (b'-', d.month()),
            (b'-', d.day()),
            (b'T', d.hour_()),
            (b':', d.minute_()),
            (b':', d.second_()),
        ] {
            buf[n] = sep;
            n += 1;
            put(v, 2, &mut buf, &mut n);
        }
        if self.frac_digits > 0 {
            buf[n] = b'.';
            n += 1;
            let digits = self.frac_digits.min(9) as usize;
            let nanos = d.and_utc().timestamp_subsec_nanos().min(999_999_999);
            let v = nanos / 10u32.pow(9 - digits as u32);
            put(v, digits, &mut buf, &mut n);
        }
        let off = self.at.offset().local_minus_utc();
        buf[n] = if off < 0 { b'-' } else { b'+' };
        n += 1;
        let off = off.unsigned_abs();
        put(off / 3600, 2, &mut buf, &mut n);
        buf[n] = b':';
        n += 1;
        put((off % 3600) / 60, 2, &mut buf, &mut n);
        out.extend_from_slice(&buf[..n]);
    }

    pub fn to_rfc3339(&self) -> String {
        let mut v = Vec::with_capacity(32);
        self.write_rfc3339(&mut v);
        String::from_utf8(v).expect("ASCII")
    }
}

trait HmsExt {
    fn hour_(&self) -> u32;
    fn minute_(&self) -> u32;
    fn second_(&self) -> u32;
}

impl HmsExt for NaiveDateTime {
    fn hour_(&self) -> u32 {
        chrono::Timelike::hour(self)
    }
    fn minute_(&self) -> u32 {
        chrono::Timelike::minute(self)
    }
    fn second_(&self) -> u32 {
        chrono::Timelike::second(self)
    }
}

/// How year-less (RFC 3164) timestamps get their year and zone.
#[derive(Debug, Clone)]
pub struct Clock {
    pub zone: Zone,
    /// A fixed year (`--year`); otherwise inferred from `now`.
    pub year: Option<i32>,
    /// The reference instant for year inference (normally the wall clock).
    pub now: DateTime<Utc>,
    cache: Option<(NaiveDateTime, FixedOffset)>,
}

impl Clock {
    pub fn new(zone: Zone, year: Option<i32>, now: DateTime<Utc>) -> Clock {
        Clock {
            zone,
            year,
            now,
            cache: None,
        }
    }

    /// Offset for a local wall-clock time, cached per hour because looking
    /// up the local zone costs more than parsing the whole line.
    fn offset(&mut self, naive: &NaiveDateTime) -> FixedOffset {
        let hour = naive
            .date()
            .and_hms_opt(chrono::Timelike::hour(naive), 0, 0)
            .unwrap_or(*naive);
        if let Some((h, off)) = self.cache {
            if h == hour {
                return off;
            }
        }
        let off = self.zone.offset_at(naive);
        self.cache = Some((hour, off));
        off
    }

    /// Wall-clock time in the configured zone.
    pub fn localize(&mut self, naive: NaiveDateTime) -> DateTime<FixedOffset> {
        let off = self.offset(&naive);
        off.from_local_datetime(&naive)
            .single()
            .unwrap_or_else(|| off.from_utc_datetime(&naive))
    }

    /// Resolves a year-less month/day/time, never more than a day ahead of
    /// `reference` (lines logged in December read in January belong to last year).
    pub fn resolve_yearless(
        &mut self,
        month: u32,
        day: u32,
        time: NaiveTime,
        reference: Option<DateTime<Utc>>,
    ) -> Option<DateTime<FixedOffset>> {
        if let Some(y) = self.year {
            let date = NaiveDate::from_ymd_opt(y, month, day)?;
            return Some(self.localize(date.and_time(time)));
        }
        let now = reference.unwrap_or(self.now);
        let this_year = now.with_timezone(&self.offset(&now.naive_utc())).year();
        for year in [
            this_year + 1,
            this_year,
            this_year - 1,
            this_year - 2,
            this_year - 3,
            this_year - 4,
        ] {
            // Feb 29 only exists in leap years: walk back to the latest year that has it.
            let Some(date) = NaiveDate::from_ymd_opt(year, month, day) else {
                continue;
            };
            let at = self.localize(date.and_time(time));
            if at.with_timezone(&Utc) <= now + Duration::days(1) {
                return Some(at);
            }
        }
        None
    }
}

pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

pub fn month_number(s: &str) -> Option<u32> {
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(s))
        .map(|i| i as u32 + 1)
}

/// Parses `HH:MM:SS` with an optional `.fraction`; returns the time and the number of fraction digits.
pub fn parse_hms(s: &str) -> Option<(NaiveTime, u8)> {
    let b = s.as_bytes();
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let two = |i: usize| -> Option<u32> {
        let (x, y) = (b[i], b[i + 1]);
        (x.is_ascii_digit() && y.is_ascii_digit()).then(|| ((x - b'0') * 10 + (y - b'0')) as u32)
    };
    let (h, m, sec) = (two(0)?, two(3)?, two(6)?);
    let mut nanos = 0u32;
    let mut digits = 0u8;
    if b.len() > 8 {
        if b[8] != b'.' && b[8] != b',' {
            return None;
        }
        let frac = &b[9..];
        if frac.is_empty() || frac.len() > 9 || !frac.iter().all(u8::is_ascii_digit) {
            return None;
        }
        digits = frac.len() as u8;
        for &d in frac {
            nanos = nanos * 10 + (d - b'0') as u32;
        }
        nanos *= 10u32.pow(9 - digits as u32);
    }
    // 60 is a leap second; chrono represents it as 59 + 1s of nanos.
    let t = if sec == 60 {
        NaiveTime::from_hms_nano_opt(h, m, 59, 1_000_000_000 + nanos.min(999_999_999))?
    } else {
        NaiveTime::from_hms_nano_opt(h, m, sec, nanos)?
    };
    Some((t, digits))
}

/// Parses `YYYY-MM-DD[T ]HH:MM:SS[.frac][Z|±HH:MM|±HHMM]`.
/// Returns the naive time, fraction digits and the offset if one was written.
pub fn parse_iso(s: &str) -> Option<(NaiveDateTime, u8, Option<FixedOffset>)> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = &s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())
            .flatten()
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let rest = &s[11..];
    let time_end = rest
        .bytes()
        .position(|c| !(c.is_ascii_digit() || c == b':' || c == b'.' || c == b','))
        .unwrap_or(rest.len());
    let (time, digits) = parse_hms(&rest[..time_end])?;
    let tail = &rest[time_end..];
    let offset = if tail.is_empty() {
        None
    } else {
        Some(parse_offset(tail)?)
    };
    Some((date.and_time(time), digits, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn december_lines_read_in_january_belong_to_last_year() {
        let mut c = Clock::new(
            Zone::parse("UTC").unwrap(),
            None,
            utc("2026-01-02T00:00:00Z"),
        );
        let t = NaiveTime::from_hms_opt(23, 59, 0).unwrap();
        let d = c.resolve_yearless(12, 31, t, None).unwrap();
        assert_eq!(d.year(), 2025);
        let d = c.resolve_yearless(1, 1, t, None).unwrap();
        assert_eq!(d.year(), 2026);
    }

    #[test]
    fn never_more_than_a_day_in_the_future() {
        let mut c = Clock::new(
            Zone::parse("UTC").unwrap(),
            None,
            utc("2026-03-10T12:00:00Z"),
        );
        let t = NaiveTime::from_hms_opt(12, 0, 0).unwrap();
        assert_eq!(c.resolve_yearless(3, 12, t, None).unwrap().year(), 2025);
        assert_eq!(c.resolve_yearless(3, 10, t, None).unwrap().year(), 2026);
    }

    #[test]
    fn feb_29_goes_to_the_last_leap_year() {
        let mut c = Clock::new(
            Zone::parse("UTC").unwrap(),
            None,
            utc("2026-03-10T12:00:00Z"),
        );
        let t = NaiveTime::from_hms_opt(1, 0, 0).unwrap();
        assert_eq!(c.resolve_yearless(2, 29, t, None).unwrap().year(), 2024);
    }

    #[test]
    fn named_zones_follow_dst() {
        let mut c = Clock::new(
            Zone::parse("Europe/Berlin").unwrap(),
            Some(2026),
            utc("2026-08-01T00:00:00Z"),
        );
        let t = NaiveTime::from_hms_opt(8, 0, 0).unwrap();
        assert_eq!(
            c.resolve_yearless(1, 5, t, None)
                .unwrap()
                .offset()
                .local_minus_utc(),
            3600
        );
        assert_eq!(
            c.resolve_yearless(7, 5, t, None)
                .unwrap()
                .offset()
                .local_minus_utc(),
            7200
        );
    }

    #[test]
    fn rfc3339_output_keeps_precision_and_offset() {
        let (n, digits, off) = parse_iso("2023-03-14T00:00:31.185246+01:00").unwrap();
        let at = off.unwrap().from_local_datetime(&n).unwrap();
        assert_eq!(
            Stamp {
                at,
                frac_digits: digits
            }
            .to_rfc3339(),
            "2023-03-14T00:00:31.185246+01:00"
        );
        let (n, digits, off) = parse_iso("2013-08-11 03:56:40").unwrap();
        assert!(off.is_none());
        let at = FixedOffset::west_opt(5 * 3600 + 1800)
            .unwrap()
            .from_local_datetime(&n)
            .unwrap();
        assert_eq!(
            Stamp {
                at,
                frac_digits: digits
            }
            .to_rfc3339(),
            "2013-08-11T03:56:40-05:30"
        );
    }

    #[test]
    fn bad_zones_explain_themselves() {
        assert!(Zone::parse("Mars/Olympus").unwrap_err().contains("IANA"));
        assert!(Zone::parse("+25:00").is_err());
    }
}
