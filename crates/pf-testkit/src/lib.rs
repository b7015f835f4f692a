//! Run a command's real binary the way a pipeline would: arguments, bytes on
//! stdin, a clean environment (no PF_CONFIG) and a working directory
//! without a `config/` folder unless the test makes one.

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON values, one per line.
    pub fn records(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

/// Runs `bin` with `args` in `dir`, feeding `stdin`.
pub fn run(bin: &str, args: &[&str], stdin: &[u8], dir: &Path) -> Run {
    let mut child = Command::new(bin)
        .args(args)
        .env_remove("PF_CONFIG")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let mut input = child.stdin.take().expect("stdin is piped");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out: Output = child.wait_with_output().expect("command runs");
    let _ = writer.join();
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A fresh, empty directory under the system temp dir, unique per test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pf-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// NDJSON training data: `n` records with log-like features.
pub fn feature_records(n: usize) -> String {
    let services = [
        "postfix/smtpd",
        "postfix/qmgr",
        "postfix/cleanup",
        "dovecot",
    ];
    let mut out = String::new();
    for i in 0..n {
        out.push_str(&format!(
            "{{\"kind\":\"k{}\",\"features\":{{\"service_encoded\":\"{}\",\"hour\":{},\"msg_len\":{}}}}}\n",
            i % 5,
            services[i % services.len()],
            (i * 7) % 24,
            40 + (i * 13) % 60
        ));
    }
    out
}

/// Lines an attacker or a broken upstream can put in front of an NDJSON
/// stage, by name: not JSON, JSON that is not an object, NaN, numbers out
/// of range, arrays nested deeper than any parser stack, binary junk, invalid
/// UTF-8, NUL bytes, a cut-off object, 10 MB of junk and a 20 MB line
/// (beyond the 16 MiB record limit).
pub fn hostile_lines() -> Vec<(&'static str, Vec<u8>)> {
    let mut junk = Vec::with_capacity(4096);
    let mut x: u32 = 0x9e37_79b9;
    while junk.len() < 4096 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let b = (x & 0xff) as u8;
        if b != b'\n' {
            junk.push(b);
        }
    }
    vec![
        ("text", b"not json at all".to_vec()),
        ("array", b"[1,2,3]".to_vec()),
        ("string", b"\"a string\"".to_vec()),
        ("number", b"42".to_vec()),
        ("NaN", br#"{"features":{"hour":NaN}}"#.to_vec()),
        ("out of range", br#"{"features":{"hour":1e999}}"#.to_vec()),
        (
            "deep array",
            [vec![b'['; 100_000], vec![b']'; 100_000]].concat(),
        ),
        ("binary", junk),
        ("invalid UTF-8", b"{\"raw\":\"\xff\xfe\"}".to_vec()),
        ("NUL bytes", b"\0\0\0".to_vec()),
        ("cut short", br#"{"raw":"Mar  2 08:15:03 mx1 post"#.to_vec()),
        ("10 MB junk", vec![b'A'; 10_000_000]),
        (
            "20 MB line",
            [
                b"{\"raw\":\"".to_vec(),
                vec![b'B'; 20_000_000],
                b"\"}".to_vec(),
            ]
            .concat(),
        ),
    ]
}

/// Feeds `good` with every hostile line (plus `extra`, stage-specific bad
/// records) after the first good record, and checks what every stage must
/// do: no crash, exit status `status`, each bad line reported on stderr
/// with its line number, a count of them at the end. Returns the run for
/// the caller to check the good records' output.
pub fn assert_survives_hostile_input(
    bin: &str,
    args: &[&str],
    good: &[String],
    extra: &[(&'static str, Vec<u8>)],
    status: i32,
    dir: &Path,
) -> Run {
    assert!(good.len() >= 2, "give at least two good records");
    let mut bad = hostile_lines();
    bad.extend(extra.iter().cloned());
    let mut input = Vec::new();
    input.extend_from_slice(good[0].trim_end().as_bytes());
    input.push(b'\n');
    for (_, line) in &bad {
        input.extend_from_slice(line);
        input.push(b'\n');
    }
    for g in &good[1..] {
        input.extend_from_slice(g.trim_end().as_bytes());
        input.push(b'\n');
    }
    let r = run(bin, args, &input, dir);
    assert_eq!(
        r.status, status,
        "{bin}: exit status (a signal shows as -1)\n{}",
        r.stderr
    );
    for (i, (name, _)) in bad.iter().enumerate() {
        let number = i + 2;
        assert!(
            r.stderr.contains(&format!("stdin line {number}: ")),
            "{bin}: the {name} line ({number}) is not reported:\n{}",
            r.stderr
        );
    }
    assert!(
        r.stderr.contains(&format!("{} input line(s)", bad.len())),
        "{bin}: no count of the {} bad lines at the end:\n{}",
        bad.len(),
        r.stderr
    );
    r
}

/// Runs `script` with `sh -c` in a private mount namespace, in `dir`, so
/// that it can mount a small or read-only tmpfs to make a disk full or a
/// directory unwritable (permissions alone do not stop root). `None`, said
/// loudly on stderr, where mounting is not allowed (not root, no unshare).
pub fn run_with_private_mounts(script: &str, stdin: &[u8], dir: &Path) -> Option<Run> {
    let probe = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root and unshare)");
        return None;
    }
    Some(run("unshare", &["-m", "sh", "-c", script], stdin, dir))
}

/// One line of pf-score's output for pf-sink's tests: an anomaly of `kind`
/// at second `n` of 22:00 (in `zone`), with `fields`, a severity and the
/// one feature that explains it.
pub fn scored_anomaly(
    n: usize,
    zone: &str,
    kind: &str,
    fields: Value,
    severity: &str,
    feature: &str,
) -> String {
    serde_json::json!({
        "raw": format!("line {n}"),
        "kind": kind,
        "program": "postfix/smtpd",
        "ts": format!("2026-03-03T22:{:02}:{:02}{zone}", n / 60, n % 60),
        "fields": fields,
        "detection": {
            "score": -0.2, "is_anomaly": true, "severity": severity, "rarity": 200000.0,
            "top_features": [{"feature": feature, "value": 9, "contribution": -3.0}]
        }
    })
    .to_string()
        + "\n"
}
