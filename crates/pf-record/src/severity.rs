//! `detection.severity`'s words and their order, for every stage that
//! compares or raises severities.

/// The severities from least to most severe; a severity's index is its rank.
pub const SEVERITIES: [&str; 4] = ["none", "low", "medium", "high"];

/// `none` < `low` < `medium` < `high`; any other word ranks as `none`.
pub fn severity_rank(severity: &str) -> u8 {
    match severity {
        "low" => 1,
        "medium" => 2,
        "high" => 3,
        _ => 0,
    }
}

/// The severity word of `severity` as a `'static` string (`none` for any
/// other word).
pub fn severity_word(severity: &str) -> &'static str {
    SEVERITIES[usize::from(severity_rank(severity))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_follow_the_order_of_severities() {
        for (rank, word) in SEVERITIES.iter().enumerate() {
            assert_eq!(usize::from(severity_rank(word)), rank);
            assert_eq!(severity_word(word), *word);
        }
        assert_eq!(severity_rank("critical"), 0);
        assert_eq!(severity_word("critical"), "none");
    }
}
