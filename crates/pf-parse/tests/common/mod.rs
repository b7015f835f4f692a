//! Helpers shared by pf-parse's integration tests: run the real binary on real files.

#![allow(dead_code)]

use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// `../shared` beside the repository (override with `PF_SHARED_DIR`).
pub fn shared_dir() -> PathBuf {
    if let Ok(d) = std::env::var("PF_SHARED_DIR") {
        return PathBuf::from(d);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    assert!(
        dir.join("conformance").is_dir(),
        "conformance corpus not found at {}: set PF_SHARED_DIR to the shared/ folder",
        dir.display()
    );
    dir
}

pub fn read_jsonl(path: &PathBuf) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("corpus line is JSON"))
        .collect()
}

pub fn pf_parse(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pf-parse"))
        .args(args)
        .env_remove("PF_CONFIG")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pf-parse");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait pf-parse");
    writer.join().expect("writer thread");
    out
}

/// Runs pf-parse on `lines` (one per input line) and returns one record per line.
pub fn parse_lines(lines: &[String], extra_args: &[&str]) -> Vec<Value> {
    let mut input = lines.join("\n");
    input.push('\n');
    let out = pf_parse(extra_args, input.as_bytes());
    assert!(
        out.status.success(),
        "pf-parse failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = records(&out.stdout);
    assert_eq!(records.len(), lines.len(), "one record per input line");
    records
}

pub fn records(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8(stdout.to_vec())
        .expect("output is UTF-8")
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("output line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// A field value as text, the way the corpora write expectations (`25` ≡ `"25"`).
pub fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints `what: passed/total (rate%)` and every miss, then requires the rate to reach `min_pct`.
pub fn assert_pass_rate(what: &str, total: usize, misses: &[String], min_pct: f64) {
    let passed = total - misses.len();
    let rate = passed as f64 * 100.0 / total as f64;
    println!("{what}: {passed}/{total} ({rate:.1}%)");
    for m in misses {
        println!("  miss {m}");
    }
    assert!(rate >= min_pct, "{what}: {rate:.1}% is under {min_pct}%");
}
