//! A record's top-level members found in one validating pass, as slices of
//! its text.
//!
//! pf-sink reads a few members and writes the record three times (whole,
//! and without `features` and `detection`): with the members' places known
//! from one pass it deserialises only the members it reads, and cuts the
//! others out without scanning the text again. The pass checks the whole
//! text against JSON's grammar, so a line it accepts is one serde_json
//! accepts too (nesting up to the same depth, 128).

/// One top-level member: its name as written (quoted, escapes and all) and
/// its value's text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Member<'t> {
    pub quoted_name: &'t str,
    pub value: &'t str,
}

impl Member<'_> {
    /// Whether the member is called `name` (an escaped name is unescaped
    /// first, so `"feat\u0075res"` is `features`).
    pub fn is(&self, name: &str) -> bool {
        let inner = &self.quoted_name[1..self.quoted_name.len() - 1];
        if !inner.contains('\\') {
            return inner == name;
        }
        serde_json::from_str::<String>(self.quoted_name).is_ok_and(|n| n == name)
    }

    /// The member's name, unescaped when it has to be.
    pub fn name(&self) -> std::borrow::Cow<'_, str> {
        let inner = &self.quoted_name[1..self.quoted_name.len() - 1];
        match inner.contains('\\') {
            false => inner.into(),
            true => serde_json::from_str::<String>(self.quoted_name)
                .map(Into::into)
                .unwrap_or_else(|_| inner.into()),
        }
    }
}

/// The top-level members of `text`, which must be one JSON object (spaces
/// around it allowed), in the order written. The error says what was wrong
/// and at which byte. A name written twice is listed twice.
pub fn members(text: &str) -> Result<Vec<Member<'_>>, String> {
    let mut scan = Scan {
        text: text.as_bytes(),
        at: 0,
    };
    let mut found = Vec::with_capacity(16);
    let fail = |scan: &Scan, what: &str| Err(format!("not valid JSON: {what} at byte {}", scan.at));
    scan.space();
    if scan.peek() != Some(b'{') {
        return Err(format!("not a JSON object (no `{{` at byte {})", scan.at));
    }
    scan.at += 1;
    scan.space();
    if scan.peek() == Some(b'}') {
        scan.at += 1;
    } else {
        loop {
            let name_start = scan.at;
            if let Err(what) = scan.string() {
                return fail(&scan, what);
            }
            let name_end = scan.at;
            scan.space();
            if scan.peek() != Some(b':') {
                return fail(&scan, "expected `:`");
            }
            scan.at += 1;
            scan.space();
            let value_start = scan.at;
            if let Err(what) = scan.value(1) {
                return fail(&scan, what);
            }
            // Every boundary found is at an ASCII byte, so these are char boundaries.
            found.push(Member {
                quoted_name: &text[name_start..name_end],
                value: &text[value_start..scan.at],
            });
            scan.space();
            match scan.peek() {
                Some(b',') => {
                    scan.at += 1;
                    scan.space();
                }
                Some(b'}') => {
                    scan.at += 1;
                    break;
                }
                _ => return fail(&scan, "expected `,` or `}`"),
            }
        }
    }
    scan.space();
    if scan.at != text.len() {
        return fail(&scan, "text after the object");
    }
    Ok(found)
}

/// Writes the object of `members` without those named in `drop`, and a
/// newline: the kept members' bytes as they were, joined by commas.
pub fn write_without(out: &mut Vec<u8>, members: &[Member<'_>], drop: &[&str]) {
    out.push(b'{');
    let mut kept = 0;
    for member in members {
        if drop.iter().any(|name| member.is(name)) {
            continue;
        }
        if kept > 0 {
            out.push(b',');
        }
        out.extend_from_slice(member.quoted_name.as_bytes());
        out.push(b':');
        out.extend_from_slice(member.value.as_bytes());
        kept += 1;
    }
    out.extend_from_slice(b"}\n");
}

/// Values nested this deep are refused, as serde_json refuses them (the
/// top-level object is level 1).
const MAX_DEPTH: usize = 128;

/// The high bit set in the lowest byte of `x` that is `"`, `\\` or a
/// control byte (higher bytes may be flagged wrongly; only the lowest
/// flag is used): the zero-byte tricks of "Bit Twiddling Hacks".
#[inline]
fn special_bytes(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    control | zero(x ^ (ONES * b'"' as u64)) | zero(x ^ (ONES * b'\\' as u64))
}

struct Scan<'t> {
    text: &'t [u8],
    at: usize,
}

type Step = Result<(), &'static str>;

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Step {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(_) => Err("expected a value"),
            None => Err("the text ends where a value belongs"),
        }
    }

    fn object(&mut self, depth: usize) -> Step {
        if depth >= MAX_DEPTH {
            return Err("nested too deep");
        }
        self.at += 1;
        self.space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err("expected a member name");
            }
            self.string()?;
            self.space();
            if self.peek() != Some(b':') {
                return Err("expected `:`");
            }
            self.at += 1;
            self.space();
            self.value(depth)?;
            if self.closes(b'}', "expected `,` or `}`")? {
                return Ok(());
            }
        }
    }

    fn array(&mut self, depth: usize) -> Step {
        if depth >= MAX_DEPTH {
            return Err("nested too deep");
        }
        self.at += 1;
        self.space();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.value(depth)?;
            if self.closes(b']', "expected `,` or `]`")? {
                return Ok(());
            }
        }
    }

    /// After a member or element: `,` (more follow) or `close` (true).
    fn closes(&mut self, close: u8, otherwise: &'static str) -> Result<bool, &'static str> {
        self.space();
        match self.peek() {
            Some(b',') => {
                self.at += 1;
                self.space();
                Ok(false)
            }
            Some(c) if c == close => {
                self.at += 1;
                Ok(true)
            }
            _ => Err(otherwise),
        }
    }

    /// A string from its opening quote: no raw control bytes, only JSON's escapes.
    fn string(&mut self) -> Step {
        if self.peek() != Some(b'"') {
            return Err("expected a string");
        }
        let text = self.text;
        let mut i = self.at + 1;
        loop {
            // Eight bytes at a time, straight to the first that is not plain.
            while let Some(word) = text.get(i..i + 8) {
                let special =
                    special_bytes(u64::from_le_bytes(word.try_into().unwrap_or_default()));
                if special != 0 {
                    i += special.trailing_zeros() as usize / 8;
                    break;
                }
                i += 8;
            }
            match text.get(i) {
                None => {
                    self.at = i;
                    return Err("unterminated string");
                }
                Some(b'"') => {
                    self.at = i + 1;
                    return Ok(());
                }
                Some(b'\\') => match text.get(i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                    Some(b'u')
                        if text
                            .get(i + 2..i + 6)
                            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                    {
                        i += 6
                    }
                    _ => {
                        self.at = i;
                        return Err("bad escape in a string");
                    }
                },
                Some(&b) if b < 0x20 => {
                    self.at = i;
                    return Err("control character in a string");
                }
                Some(_) => i += 1,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Step {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err("bad number"),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err("bad number");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err("bad number");
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Step {
        if self.text.get(self.at..self.at + word.len()) != Some(word) {
            return Err("expected true, false or null");
        }
        self.at += word.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(text: &str) -> Result<String, String> {
        let members = members(text)?;
        let mut out = Vec::new();
        write_without(&mut out, &members, &["features", "detection"]);
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn members_are_cut_out_and_the_rest_kept_as_it_was() {
        let line = r#"{"raw":"a \"}\\","features":{"x":[1,{"y":"}"}]},"n":-1.5e3,"detection":{},"z":null}"#;
        assert_eq!(
            cut(line).unwrap(),
            r#"{"raw":"a \"}\\","n":-1.5e3,"z":null}"#.to_string() + "\n"
        );
        assert_eq!(
            cut(r#" { "features" : 1 , "a" : [ ] } "#).unwrap(),
            "{\"a\":[ ]}\n"
        );
        assert_eq!(cut(r#"{"feat\u0075res":1,"b":2}"#).unwrap(), "{\"b\":2}\n");
        assert_eq!(cut("{}").unwrap(), "{}\n");
        assert_eq!(cut(r#"{"features":1}"#).unwrap(), "{}\n");
        // What is kept parses to the same values as the original minus the cut members.
        let mut want: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).unwrap();
        want.remove("features");
        want.remove("detection");
        let got: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&cut(line).unwrap()).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn names_and_values_are_slices_of_the_text() {
        let text = r#"{"a" : [1, "x"] ,"b\u0063":{"d":true},"e":"\u00e9\n"}"#;
        let found = members(text).unwrap();
        let pairs: Vec<(String, &str)> = found.iter().map(|m| (m.name().into(), m.value)).collect();
        assert_eq!(
            pairs,
            [
                ("a".to_string(), r#"[1, "x"]"#),
                ("bc".into(), r#"{"d":true}"#),
                ("e".into(), r#""\u00e9\n""#)
            ]
        );
        assert!(found[1].is("bc") && !found[1].is("b"));
    }

    /// Whatever serde_json refuses, the scan refuses, and the other way round.
    #[test]
    fn accepts_exactly_what_serde_json_accepts() {
        let cases = [
            "",
            "[1]",
            "1",
            r#"{"a":1"#,
            r#"{"a":1}x"#,
            r#"{"a" 1}"#,
            r#"{"a":"x}"#,
            r#"{"a":[1}"#,
            r#"{"a":1,}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12G4"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":{"b":}}"#,
            r#"{1:2}"#,
            r#"{"a":-0.5e+7,"b":[true,false,null,{}],"c":"\"\\\/\b\f\n\r\t\u00FF"}"#,
            " {\"a\" :\t1 }\n",
            r#"{"ü":"😀 x"}"#,
        ];
        for text in cases {
            let ours = members(text).is_ok();
            let serde =
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).is_ok();
            assert_eq!(ours, serde, "{text:?}");
        }
        // A quote, an escape or a control byte at every place in a word.
        for at in 0..20 {
            for special in ["\"", "\\\"", "\\n", "\u{1}", "\u{7f}", "é"] {
                let inner = format!("{}{special}{}", "x".repeat(at), "y".repeat(20 - at));
                let text = format!("{{\"k\":\"{inner}\",\"n\":1}}");
                let ours = members(&text).map(|m| m.len());
                let serde =
                    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text)
                        .map(|m| m.len());
                assert_eq!(ours.ok(), serde.ok(), "{text:?}");
            }
        }
        let deep = |n: usize| format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n));
        for n in 125..=130 {
            let serde = serde_json::from_str::<serde_json::Value>(&deep(n)).is_ok();
            assert_eq!(members(&deep(n)).is_ok(), serde, "{n} levels");
        }
        assert!(members(&deep(200)).is_err());
        let err = members(r#"{"a":1,"b":tru}"#).unwrap_err();
        assert_eq!(
            err,
            "not valid JSON: expected true, false or null at byte 11"
        );
    }
}
