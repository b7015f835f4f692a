//! The operations scripts on a temporary prefix: install/uninstall (and the
//! systemd unit checked by `systemd-analyze verify`), setup-cron, backup and
//! restore with their failure paths, and status.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every binary an installation has.
const TOOLS: [&str; 7] = [
    "kafka-tail",
    "pf-parse",
    "pf-features",
    "pf-score",
    "pf-sink",
    "pf-train",
    "pf-models",
];

fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_pf-models"))
        .parent()
        .unwrap()
        .to_path_buf();
    for tool in TOOLS {
        assert!(
            dir.join(tool).is_file(),
            "{tool} not built: run cargo build --workspace --release --bins"
        );
    }
    dir
}

fn sh(script: &Path, args: &[&str], cwd: &Path) -> Output {
    Command::new(script)
        .args(args)
        .env("PF_BIN", bin_dir())
        .env_remove("PF_CONFIG")
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()))
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The bundled sample through the installed detector (no Kafka).
fn replay_sample(prefix: &Path) {
    let sample = repo().join("pipelines/sample/mail.log");
    let o = sh(
        &prefix.join("pipelines/live-detector.sh"),
        &["--quiet", "--replay", sample.to_str().unwrap()],
        prefix,
    );
    assert!(o.status.success(), "{}", text(&o));
}

/// Installs into `<dir>/opt` with the unit in `<dir>/units`.
fn install(dir: &Path, extra: &[&str]) -> Output {
    let prefix = dir.join("opt");
    let units = dir.join("units");
    let bins = bin_dir();
    let mut args = vec![
        "--prefix",
        prefix.to_str().unwrap(),
        "--unit-dir",
        units.to_str().unwrap(),
        "--no-user",
        "--no-systemd",
        "--from",
        bins.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    sh(&repo().join("pipelines/install.sh"), &args, dir)
}

#[test]
fn install_upgrade_and_uninstall() {
    let dir = pf_testkit::temp_dir("ops-install");
    let o = install(&dir, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let prefix = dir.join("opt");
    for tool in TOOLS {
        assert!(
            prefix.join("bin").join(tool).is_file(),
            "{tool} not installed"
        );
    }
    for script in [
        "live-detector.sh",
        "retrain.sh",
        "setup-cron.sh",
        "status.sh",
        "backup.sh",
    ] {
        assert!(
            prefix.join("pipelines").join(script).is_file(),
            "{script} not installed"
        );
    }
    assert!(
        prefix.join("models/CURRENT").is_file(),
        "default model not installed"
    );
    assert!(prefix.join("config/config.yaml").is_file());

    // The unit names the prefix, is hardened, and passes systemd's checks.
    let unit = dir.join("units/postfix-anomaly.service");
    let body = std::fs::read_to_string(&unit).unwrap();
    assert!(body.contains(&format!(
        "ExecStart={}/pipelines/live-detector.sh",
        prefix.display()
    )));
    for key in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "Restart=on-failure",
    ] {
        assert!(body.contains(key), "unit lacks {key}");
    }
    assert!(!body.contains('@'), "unrendered placeholder in the unit");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output();
    let verify = verify.expect("systemd-analyze (Debian package systemd) is needed for this test");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&verify)
    );

    // Upgrading keeps an edited config and puts the shipped one beside it.
    let config = prefix.join("config/config.yaml");
    std::fs::write(&config, "kafka:\n  broker: \"kafka1:9092\"\n").unwrap();
    let o = install(&dir, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "kafka:\n  broker: \"kafka1:9092\"\n"
    );
    assert!(prefix.join("config/config.yaml.dist").is_file());

    // The installed tree runs on its own: the detector replays the sample.
    replay_sample(&prefix);
    assert!(prefix.join("output/all_detections.jsonl").is_file());

    // Uninstall keeps data; --purge removes it.
    let o = install(&dir, &["--uninstall"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!prefix.join("bin/pf-score").exists() && !unit.exists());
    assert!(config.is_file() && prefix.join("models/CURRENT").is_file());
    let o = install(&dir, &["--uninstall", "--purge"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!prefix.exists(), "--purge left {}", prefix.display());
}

#[test]
fn cron_schedules() {
    let dir = pf_testkit::temp_dir("ops-cron");
    let cron = dir.join("cron.d/postfix-anomaly");
    let script = repo().join("pipelines/setup-cron.sh");
    let c = cron.to_str().unwrap();
    for (schedule, when) in [
        ("weekly", "0 2 * * 0"),
        ("daily", "0 2 * * *"),
        ("monthly", "0 2 1 * *"),
    ] {
        let o = sh(
            &script,
            &[schedule, "--cron-file", c, "--user", "nobody"],
            &dir,
        );
        assert!(o.status.success(), "{}", text(&o));
        let body = std::fs::read_to_string(&cron).unwrap();
        let job: Vec<&str> = body
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("retrain.sh"))
            .collect();
        assert_eq!(job.len(), 1, "one job line, replaced each time:\n{body}");
        assert!(
            job[0].starts_with(&format!("{when} nobody cd ")),
            "{schedule}: {}",
            job[0]
        );
    }
    let o = sh(&script, &["hourly", "--cron-file", c], &dir);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = sh(&script, &["remove", "--cron-file", c], &dir);
    assert!(o.status.success());
    assert!(!cron.exists());
    let o = sh(&script, &["remove", "--cron-file", c], &dir);
    assert!(o.status.success(), "removing twice is fine");
}

/// A working directory laid out like an installation: config, models, metrics.
fn install_like(name: &str) -> PathBuf {
    let dir = pf_testkit::temp_dir(name);
    let o = install(&dir, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let prefix = dir.join("opt");
    std::fs::write(
        prefix.join("metrics/training_metrics.csv"),
        "timestamp\n2026\n",
    )
    .unwrap();
    prefix
}

#[test]
fn backup_and_restore() {
    let prefix = install_like("ops-backup");
    let backup = prefix.join("pipelines/backup.sh");
    let o = sh(&backup, &["create"], &prefix);
    assert!(o.status.success(), "{}", text(&o));
    let archive = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        archive.ends_with(".tar.gz") && prefix.join(&archive).is_file(),
        "{archive}"
    );
    let o = sh(&backup, &["list"], &prefix);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("1 models"),
        "{}",
        text(&o)
    );

    // Damage the installation, then restore.
    let current = std::fs::read_to_string(prefix.join("models/CURRENT")).unwrap();
    std::fs::write(prefix.join("models/CURRENT"), "model-gone.json\n").unwrap();
    std::fs::write(
        prefix.join("config/config.yaml"),
        "anomaly:\n  threshold:\n    low: 0\n",
    )
    .unwrap();
    let o = sh(&backup, &["restore", &archive], &prefix);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(prefix.join("models/CURRENT")).unwrap(),
        current
    );
    let safety: Vec<_> = std::fs::read_dir(prefix.join("backups"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("before-restore-")
        })
        .collect();
    assert_eq!(safety.len(), 1, "a safety copy of what was replaced");
    assert!(safety[0].path().join("models/CURRENT").is_file());
    assert!(safety[0].path().join("config.yaml").is_file());

    // An archive whose model does not load is refused; nothing changes.
    let bad = prefix.join("bad");
    std::fs::create_dir_all(bad.join("models")).unwrap();
    std::fs::write(bad.join("models/model-20260101T000000Z.json"), "{ broken").unwrap();
    std::fs::write(bad.join("models/CURRENT"), "model-20260101T000000Z.json\n").unwrap();
    tar(&prefix, &["-czf", "bad.tar.gz", "-C", "bad", "models"]);
    refused(&backup, &prefix, "bad.tar.gz", "nothing was changed");
    assert_eq!(
        std::fs::read_to_string(prefix.join("models/CURRENT")).unwrap(),
        current
    );

    // An archive reaching outside the installation is refused.
    std::fs::write(prefix.join("evil"), "x").unwrap();
    let evil = format!("{}/evil", prefix.display());
    tar(&prefix, &["-czf", "evil.tar.gz", "-P", &evil]);
    refused(&backup, &prefix, "evil.tar.gz", "outside the installation");
}

fn tar(dir: &Path, args: &[&str]) {
    let status = Command::new("tar")
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "tar {args:?}");
}

/// `backup.sh restore ARCHIVE` fails, saying `why`.
fn refused(backup: &Path, prefix: &Path, archive: &str, why: &str) {
    let o = sh(backup, &["restore", archive], prefix);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(why),
        "{}",
        text(&o)
    );
}

#[test]
fn status_reports_model_activity_and_retraining() {
    let prefix = install_like("ops-status");
    // Some activity: the sample through the installed detector.
    replay_sample(&prefix);
    std::fs::write(
        prefix.join("logs/retraining.log"),
        "2026-11-22T02:00:05Z retrain.sh: done: trained on /var/log/mail.log\n",
    )
    .unwrap();
    let o = sh(&prefix.join("pipelines/status.sh"), &[], &prefix);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    let current = std::fs::read_to_string(prefix.join("models/CURRENT")).unwrap();
    assert!(
        out.contains(&format!("current: {}", current.trim())),
        "{out}"
    );
    assert!(out.contains("retrain.sh: done"), "{out}");
    let lines = std::fs::read_to_string(repo().join("pipelines/sample/mail.log"))
        .unwrap()
        .lines()
        .count();
    assert!(
        out.contains(&format!("records: {lines}, anomalies: ")),
        "{out}"
    );
    assert!(out.contains("all_detections.jsonl"), "{out}");
    assert!(out.contains("no broker configured"), "{out}");
}
