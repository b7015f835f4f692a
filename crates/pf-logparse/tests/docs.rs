//! docs/records.md must list exactly the kinds the parser can emit, with the same failure classes.

use std::collections::BTreeMap;

#[test]
fn records_md_lists_every_kind_with_its_failure_class() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/records.md");
    let doc = std::fs::read_to_string(&path).expect("read docs/records.md");
    let documented: BTreeMap<String, String> = doc
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let kind = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let is_kind = kind == "unknown" || (kind.contains('.') && !kind.contains(' '));
            is_kind.then(|| {
                (
                    kind.to_string(),
                    cells.get(2).copied().unwrap_or("").to_string(),
                )
            })
        })
        .collect();
    let code: BTreeMap<String, String> = pf_logparse::KINDS
        .iter()
        .map(|(k, f, _)| {
            (
                k.to_string(),
                f.map(|f| f.as_str().to_string()).unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        documented, code,
        "docs/records.md and crates/pf-logparse/src/kind.rs disagree"
    );
}

#[test]
fn every_kind_the_parser_returns_is_registered() {
    let src_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let prefixes = [
        "smtpd.",
        "postscreen.",
        "cleanup.",
        "qmgr.",
        "smtp.",
        "dovecot.",
        "roundcube.",
        "postfix.",
        "tlsproxy.",
        "anvil.",
        "pickup.",
        "bounce.",
        "master.",
        "postsuper.",
        "scache.",
        "verify.",
        "dnsblog.",
    ];
    let mut checked = 0;
    for file in ["postfix.rs", "dovecot.rs", "roundcube.rs", "lib.rs"] {
        let text = std::fs::read_to_string(src_dir.join(file)).unwrap();
        for lit in text.split('"').skip(1).step_by(2) {
            if prefixes.iter().any(|p| lit.starts_with(p))
                && lit
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')
            {
                assert!(
                    pf_logparse::kind::is_known(lit),
                    "{file} returns unregistered kind {lit}"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} kind literals found: the scan is broken"
    );
}
