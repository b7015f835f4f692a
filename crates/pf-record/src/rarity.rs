//! `detection.rarity`: one in how many normal lines scores like a record,
//! and how that reads for people ("1 in 250,000"). The record carries the
//! number; the alert line and reports word it.

/// Largest rarity reported: beyond, a line is simply "rarer than this".
pub const MAX_RARITY: f64 = 1e12;

/// "1 in 250,000" for a rarity; "rarer than 1 in 1,000,000,000,000" at
/// [`MAX_RARITY`].
pub fn describe(rarity: f64) -> String {
    if rarity >= MAX_RARITY {
        return format!("rarer than 1 in {}", group_digits(MAX_RARITY as u64));
    }
    format!("1 in {}", group_digits(rarity.max(1.0).round() as u64))
}

fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let head = match digits.len() % 3 {
        0 => 3,
        k => k,
    };
    let mut out = digits[..head].to_string();
    for group in digits.as_bytes()[head..].chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(describe(250_000.4), "1 in 250,000");
        assert_eq!(describe(999.0), "1 in 999");
        assert_eq!(describe(1_000.0), "1 in 1,000");
        assert_eq!(describe(0.3), "1 in 1");
        assert_eq!(describe(1e13), "rarer than 1 in 1,000,000,000,000");
    }
}
