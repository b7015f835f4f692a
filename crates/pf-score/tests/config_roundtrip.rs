//! The shipped config as config management writes it back: read and dumped
//! by PyYAML's `safe_dump` (what Ansible's `to_nice_yaml` and most scripts
//! use), comments gone and the empty `privacy:` section now `null`, it
//! loads and every tool sees the same settings (`--print-config`).
//!
//! Needs PF_PYTHON: a python with tests/python/requirements.txt installed.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn print_config(config: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pf-score"))
        .arg("--config")
        .arg(config)
        .arg("--print-config")
        .output()
        .expect("pf-score runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", config.display());
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn shipped_config_dumped_by_pyyaml_loads_with_the_same_settings() {
    let python = std::env::var("PF_PYTHON").expect(
        "PF_PYTHON is not set: run tests/run.sh, or export PF_PYTHON=$(tests/setup-python.sh)",
    );
    let dir = pf_testkit::temp_dir("config-roundtrip");
    let shipped = repo().join("config/config.yaml");
    for (name, null) in [("null.yaml", "null"), ("tilde.yaml", "~")] {
        let out = dir.join(name);
        let status = Command::new(&python)
            .args([
                "-c",
                "import sys, yaml\n\
                 doc = yaml.safe_load(open(sys.argv[1]))\n\
                 text = yaml.safe_dump(doc, default_flow_style=False, sort_keys=False)\n\
                 open(sys.argv[2], 'w').write(text.replace(': null', ': ' + sys.argv[3]))\n",
            ])
            .arg(&shipped)
            .arg(&out)
            .arg(null)
            .status()
            .expect("python runs");
        assert!(status.success());
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(
            text.contains(&format!("privacy: {null}")),
            "the dump has the empty section as {null}: {text}"
        );
        assert_eq!(print_config(&out), print_config(&shipped), "{name}");
    }
}
