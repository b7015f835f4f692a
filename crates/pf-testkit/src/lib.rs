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
