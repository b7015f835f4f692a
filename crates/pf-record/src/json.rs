//! A minimal JSON string writer for the hot path of `pf-parse`.
//!
//! `serde_json` is used everywhere records are read; writing the parser's
//! output by hand avoids building an intermediate `Value` per line, which
//! is most of the cost at a million lines per second.

/// Appends `s` to `out` as a quoted JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Skip eight clean bytes at a time; most log text needs no escaping.
        if i + 8 <= bytes.len() {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[i..i + 8]);
            if !word_needs_escape(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        if needs_escape(b) {
            out.extend_from_slice(&bytes[start..i]);
            write_escape(out, b);
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[inline]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

/// True if any byte of `x` is a control byte, `"`, `\\` or DEL (bit tricks from
/// "Bit Twiddling Hacks": a byte is zero/less-than-n detection).
#[inline]
fn word_needs_escape(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let less_than_0x20 = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    (less_than_0x20
        | has_zero(x ^ (ONES * b'"' as u64))
        | has_zero(x ^ (ONES * b'\\' as u64))
        | has_zero(x ^ (ONES * 0x7f)))
        != 0
}

fn write_escape(out: &mut Vec<u8>, b: u8) {
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        }
    }
}

/// Appends a JSON number for an integer.
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends a JSON number for a float; non-finite values become `null`
/// because JSON has no representation for them.
pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        if v.fract() == 0.0 && v.abs() < 1e15 {
            write_i64(out, v as i64);
        } else {
            out.extend_from_slice(v.to_string().as_bytes());
        }
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Writes `record` (the text of one JSON object) to `out` with the
/// top-level `field` set to `value` (JSON text); see [`write_with_fields`].
pub fn write_with_field(
    out: &mut Vec<u8>,
    record: &str,
    field: &str,
    value: &[u8],
    replace: bool,
) -> Result<(), String> {
    write_with_fields(out, record, &[(field, value)], replace)
}

/// Writes `record` (the text of one JSON object) to `out` with each
/// top-level field set to its value (JSON text). When the record has none of
/// them (`replace == false`) the record's own text is kept byte for byte and
/// the fields appended; otherwise the record is re-serialised without the
/// old values. Fails only if `record` is not a JSON object.
pub fn write_with_fields(
    out: &mut Vec<u8>,
    record: &str,
    fields: &[(&str, &[u8])],
    replace: bool,
) -> Result<(), String> {
    let trimmed = record.trim_end();
    if replace {
        let mut map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(trimmed).map_err(|e| format!("not a JSON object: {e}"))?;
        for (field, _) in fields {
            map.remove(*field);
        }
        let text = serde_json::to_string(&map).map_err(|e| e.to_string())?;
        return write_with_fields(out, &text, fields, false);
    }
    let body = trimmed
        .strip_suffix('}')
        .filter(|_| trimmed.trim_start().starts_with('{'))
        .ok_or_else(|| "not a JSON object".to_string())?;
    out.extend_from_slice(body.as_bytes());
    let mut empty = body.trim_start().trim_start_matches('{').trim().is_empty();
    for (field, value) in fields {
        if !empty {
            out.push(b',');
        }
        empty = false;
        write_str(out, field);
        out.push(b':');
        out.extend_from_slice(value);
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_appended_or_replaced() {
        let mut out = Vec::new();
        write_with_field(&mut out, r#"{"a":1} "#, "f", b"{}", false).unwrap();
        write_with_field(&mut out, "{ }", "f", b"2", false).unwrap();
        write_with_field(&mut out, r#"{"f":0,"a":1}"#, "f", b"3", true).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"a\":1,\"f\":{}}\n{ \"f\":2}\n{\"a\":1,\"f\":3}\n"
        );
        assert!(write_with_field(&mut Vec::new(), "[1]", "f", b"1", false).is_err());
        let mut out = Vec::new();
        write_with_fields(&mut out, "{}", &[("a", b"1"), ("b", b"2")], false).unwrap();
        write_with_fields(
            &mut out,
            r#"{"b":0,"c":3}"#,
            &[("a", b"1"), ("b", b"2")],
            true,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"a\":1,\"b\":2}\n{\"c\":3,\"a\":1,\"b\":2}\n"
        );
    }

    fn enc(s: &str) -> String {
        let mut v = Vec::new();
        write_str(&mut v, s);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn escapes_round_trip_through_serde() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "nl\nr\rt\t",
            "nul\0x\x1b\x7f",
            "ünï😀",
        ] {
            let back: String = serde_json::from_str(&enc(s)).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn floats_are_valid_json() {
        for v in [0.0, 1.5, -2.25, 63495.0, 1e-7, f64::NAN] {
            let mut out = Vec::new();
            write_f64(&mut out, v);
            let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
            if v.is_nan() {
                assert!(parsed.is_null());
            } else {
                assert_eq!(parsed.as_f64().unwrap(), v);
            }
        }
    }
}
