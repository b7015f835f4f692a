//! pf-score end to end: detection fields, thresholds from the config,
//! explanations, and every kind of bad input.

use pf_testkit::{feature_records, run, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_pf-score");
/// A directory with `models/` holding a model trained on normal records
/// (hours 0-23, lengths 40-99), made with the library pf-train uses.
fn trained(name: &str) -> std::path::PathBuf {
    use pf_model::model::{version_at, FORMAT, FORMAT_VERSION};
    use pf_model::sample::Window;
    use pf_model::table::TableBuilder;
    let dir = temp_dir(name);
    let mut builder = None;
    for line in feature_records(2000).lines() {
        let rec: serde_json::Value = serde_json::from_str(line).unwrap();
        let features = rec["features"].as_object().unwrap();
        builder
            .get_or_insert_with(|| {
                TableBuilder::new(features.keys().cloned().collect(), Window::All, 1)
            })
            .push(features)
            .unwrap();
    }
    let table = builder.unwrap().finish();
    let params = pf_model::TrainParams {
        seed: 1,
        ..Default::default()
    };
    let forest = pf_model::fit(&table.rows, table.features.len(), &params);
    let mut model = pf_model::Model {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        version: version_at(chrono_now()),
        created: "2026-11-25T00:00:00Z".into(),
        features: table.features,
        feature_set: None,
        scaler: None,
        forest: Some(forest),
        tails: None,
        calibration: None,
        training: Default::default(),
    };
    pf_model::ModelsDir::new(dir.join("models"))
        .publish(&mut model)
        .unwrap();
    dir
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

const NORMAL: &str =
    "{\"id\":1,\"features\":{\"service_encoded\":\"postfix/smtpd\",\"hour\":7,\"msg_len\":60}}\n";
const ODD: &str = "{\"id\":2,\"features\":{\"service_encoded\":\"postfix/smtpd\",\"hour\":23,\"msg_len\":9000}}\n";

#[test]
fn adds_detection_and_explains_anomalies() {
    let dir = trained("score-basic");
    let r = run(BIN, &[], format!("{NORMAL}{ODD}").as_bytes(), &dir);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let out = r.records();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0]["id"], 1, "input fields pass through");
    let (normal, odd) = (&out[0]["detection"], &out[1]["detection"]);
    assert!(normal["score"].as_f64().unwrap() > 0.0);
    assert_eq!(normal["is_anomaly"], false);
    assert_eq!(normal["severity"], "none");
    assert!(normal.get("top_features").is_none());
    assert!(odd["score"].as_f64().unwrap() < 0.0);
    assert_eq!(odd["is_anomaly"], true);
    let top = odd["top_features"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    assert_eq!(
        top[0]["feature"], "msg_len",
        "the 9000-character message is what is odd"
    );
    assert_eq!(top[0]["value"], 9000);
    assert!(top[0]["contribution"].as_f64().unwrap() < 0.0);
    let current = std::fs::read_to_string(dir.join("models/CURRENT")).unwrap();
    assert_eq!(
        format!("model-{}.json", odd["model"].as_str().unwrap()),
        current.trim()
    );

    let only = run(
        BIN,
        &["--only-anomalies"],
        format!("{NORMAL}{ODD}").as_bytes(),
        &dir,
    )
    .records();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["id"], 2);
}

#[test]
fn thresholds_from_the_config_set_severity_and_sensitivity() {
    let dir = trained("score-thresholds");
    let score = run(BIN, &[], NORMAL.as_bytes(), &dir).records()[0]["detection"]["score"]
        .as_f64()
        .unwrap();
    // Move `low` above the normal record's score: now it is a (low) anomaly.
    std::fs::write(
        dir.join("strict.yaml"),
        format!(
            "anomaly:\n  threshold:\n    high: -0.5\n    medium: -0.3\n    low: {}\n",
            score + 0.01
        ),
    )
    .unwrap();
    let out = run(BIN, &["--config", "strict.yaml"], NORMAL.as_bytes(), &dir).records();
    assert_eq!(out[0]["detection"]["is_anomaly"], true);
    assert_eq!(out[0]["detection"]["severity"], "low");
}

#[test]
fn rescoring_replaces_the_old_detection() {
    let dir = trained("score-twice");
    let once = run(BIN, &[], ODD.as_bytes(), &dir).stdout;
    let twice = run(BIN, &[], once.as_bytes(), &dir);
    assert_eq!(twice.stdout, once, "scoring is idempotent");
    assert_eq!(twice.stdout.matches("\"detection\"").count(), 1);
    // A `null` detection is replaced as well, not followed by a second one.
    let nulled: String = ODD
        .lines()
        .map(|l| {
            let body = l.trim_end().strip_suffix('}').expect("a JSON object");
            format!("{body},\"detection\":null}}\n")
        })
        .collect();
    let r = run(BIN, &[], nulled.as_bytes(), &dir);
    assert_eq!(r.stdout, once, "{}", r.stderr);
}

#[test]
fn unscorable_records_pass_on_marked_and_are_reported() {
    let dir = trained("score-bad");
    let input = [
        "{\"id\":1}",
        "{\"id\":2,\"features\":{\"service_encoded\":\"postfix/smtpd\",\"hour\":\"x\",\"msg_len\":3}}",
        "{\"id\":3,\"features\":{\"service_encoded\":\"postfix/smtpd\",\"hour\":null,\"msg_len\":3}}",
        "{\"id\":4,\"features\":{\"service_encoded\":\"postfix/smtpd\",\"msg_len\":3}}",
        "{\"id\":5,\"features\":{\"service_encoded\":\"postfix/smtpd\",\"hour\":1e300,\"msg_len\":3}}",
        "garbage",
        "{\"id\":6,\"features\":{\"service_encoded\":\"brand-new\",\"hour\":3,\"msg_len\":50}}",
    ]
    .join("\n");
    let r = run(BIN, &[], input.as_bytes(), &dir);
    assert_eq!(r.status, 1, "a non-JSON line makes the exit status 1");
    let out = r.records();
    assert_eq!(
        out.len(),
        6,
        "every record comes out; only the non-JSON line cannot"
    );
    let errors: Vec<&str> = out[..5]
        .iter()
        .map(|r| r["detection"]["error"].as_str().unwrap())
        .collect();
    assert!(errors[0].contains("no `features`"));
    assert!(errors[1].contains("feature `hour`: expected a number, found a string"));
    assert!(errors[2].contains("feature `hour`: is null"));
    assert!(errors[3].contains("feature `hour`: missing"));
    assert!(errors[4].contains("too large"));
    assert!(
        out[..5]
            .iter()
            .all(|r| r["detection"].get("score").is_none()),
        "no made-up scores"
    );
    assert_eq!(out[5]["detection"]["unseen"][0], "service_encoded");
    for needle in [
        "stdin line 1:",
        "stdin line 2: cannot score",
        "stdin line 6: text, not a record",
        "5 record(s) could not be scored",
        "service_encoded 1",
    ] {
        assert!(
            r.stderr.contains(needle),
            "missing {needle:?} in:\n{}",
            r.stderr
        );
    }
}

#[test]
fn missing_or_damaged_model_is_a_startup_error() {
    let dir = temp_dir("score-nomodel");
    let r = run(BIN, &["--models-dir", "nowhere"], NORMAL.as_bytes(), &dir);
    assert_eq!(r.status, 2);
    assert!(r.stderr.contains("no model in nowhere"), "{}", r.stderr);

    std::fs::write(dir.join("broken.json"), "{\"format\":\"pf-model\",").unwrap();
    let r = run(BIN, &["--model", "broken.json"], NORMAL.as_bytes(), &dir);
    assert_eq!(r.status, 2);
    assert!(
        r.stderr.contains("broken.json: not a valid pf model"),
        "{}",
        r.stderr
    );

    let good = trained("score-corrupt");
    let current = std::fs::read_to_string(good.join("models/CURRENT")).unwrap();
    let path = good.join("models").join(current.trim());
    let text = std::fs::read_to_string(&path).unwrap();
    // A child index pointing outside the tree must be caught at load time.
    let damaged = text.replacen("\"left\":[1,", "\"left\":[99999,", 1);
    assert_ne!(damaged, text);
    std::fs::write(&path, damaged).unwrap();
    let r = run(BIN, &[], NORMAL.as_bytes(), &good);
    assert_eq!(r.status, 2);
    assert!(
        r.stderr.contains("inconsistent model") && r.stderr.contains("tree 0"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"));
}

/// Records are scored in batches; output keeps the input order, with
/// unscorable records in place, across batch boundaries, and batched
/// explanations equal one-at-a-time ones.
#[test]
fn batches_keep_order_and_match_single_records() {
    let dir = trained("pf-score-batches");
    let mut input = String::new();
    for (i, line) in feature_records(2600).lines().enumerate() {
        let mut rec: serde_json::Value = serde_json::from_str(line).unwrap();
        rec["n"] = i.into();
        if i % 997 == 0 {
            rec["features"]["hour"] = serde_json::Value::Null;
        }
        if i % 211 == 0 {
            rec["features"]["msg_len"] = 5000.into();
        }
        input.push_str(&rec.to_string());
        input.push('\n');
    }
    let r = run(BIN, &["--explain-all"], input.as_bytes(), &dir);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let out = r.records();
    assert_eq!(out.len(), 2600);
    for (i, rec) in out.iter().enumerate() {
        assert_eq!(rec["n"], i, "output order differs from input order");
        assert_eq!(rec["detection"].get("error").is_some(), i % 997 == 0);
    }
    // The same records one by one (each its own batch) give the same output.
    for i in [1usize, 211, 1023, 1024, 2599] {
        let line = input.lines().nth(i).unwrap();
        let single = run(
            BIN,
            &["--explain-all"],
            format!("{line}\n").as_bytes(),
            &dir,
        );
        let (a, b) = (&single.records()[0]["detection"], &out[i]["detection"]);
        assert_eq!(a["score"], b["score"], "record {i}");
        assert_eq!(a["severity"], b["severity"], "record {i}");
        for (name, v) in a["contributions"].as_object().into_iter().flatten() {
            let w = b["contributions"][name].as_f64().unwrap();
            // Summation order differs between the block and one-row walks.
            assert!(
                (v.as_f64().unwrap() - w).abs() < 1e-12,
                "record {i} {name}: {v} vs {w}"
            );
        }
    }
    assert!(out.iter().any(|r| r["detection"]["is_anomaly"] == true));
}

/// A new current model is picked up while records flow: no record lost,
/// duplicated or half-scored; each names the model that scored it, and the
/// switch happens once, between records. A current model that does not
/// load is refused and the old one keeps scoring.
#[test]
fn hot_reload_while_records_flow() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    use std::time::Duration;
    let dir = trained("score-reload");
    let models = pf_model::ModelsDir::new(dir.join("models"));
    let first = models.current().unwrap();
    let old_version = pf_model::Model::load(&first).unwrap().version;
    // A second version (same trees, a new name) to switch to.
    let mut second = pf_model::Model::load(&first).unwrap();
    second.version = format!("{old_version}-new");
    let second_path = dir.join(format!("models/model-{}.json", second.version));
    second.save(&second_path).unwrap();
    models.set_current(&first).unwrap();

    let mut child = Command::new(BIN)
        .current_dir(&dir)
        .env_remove("PF_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    let send = |from: usize, to: usize, stdin: &mut std::process::ChildStdin| {
        for i in from..to {
            writeln!(stdin, "{{\"n\":{i},\"features\":{{\"service_encoded\":\"postfix/smtpd\",\"hour\":{},\"msg_len\":60}}}}", i % 24).unwrap();
        }
        stdin.flush().unwrap();
    };
    let mut read = |count: usize, seen: &mut Vec<serde_json::Value>| {
        for _ in 0..count {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            seen.push(serde_json::from_str(&line).unwrap());
        }
    };
    send(0, 500, &mut stdin);
    read(500, &mut seen);
    // A broken "current" model is refused...
    let broken = dir.join("models/model-99990101T000000Z.json");
    std::fs::write(&broken, "{ not a model").unwrap();
    models.set_current(&broken).unwrap();
    std::thread::sleep(Duration::from_millis(1300));
    send(500, 1000, &mut stdin);
    read(500, &mut seen);
    // ...and a good one is taken.
    models.set_current(&second_path).unwrap();
    std::thread::sleep(Duration::from_millis(1300));
    send(1000, 1500, &mut stdin);
    drop(stdin);
    read(500, &mut seen);
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");

    assert_eq!(seen.len(), 1500);
    let versions: Vec<&str> = seen
        .iter()
        .enumerate()
        .map(|(i, r)| {
            assert_eq!(r["n"], i, "order kept, nothing lost or repeated");
            r["detection"]["model"].as_str().unwrap()
        })
        .collect();
    let switch = versions
        .iter()
        .position(|v| *v != old_version)
        .expect("switched");
    assert!(switch >= 1000, "switched to the broken model at {switch}");
    assert!(versions[switch..].iter().all(|v| *v == second.version));
    assert!(
        stderr.contains("does not load, still scoring with"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("now scoring with model {}", second.version)),
        "{stderr}"
    );
}

#[test]
fn records_of_another_feature_set_are_refused() {
    let dir = trained("score-feature-set");
    let current = std::fs::read_to_string(dir.join("models/CURRENT")).unwrap();
    let path = dir.join("models").join(current.trim());
    let mut model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    model["feature_set"] = "behavioural".into();
    std::fs::write(&path, model.to_string()).unwrap();
    let seed = NORMAL.replace("{\"id\":1,", "{\"id\":1,\"feature_set\":\"seed\",");
    let same = NORMAL.replace("{\"id\":1,", "{\"id\":3,\"feature_set\":\"behavioural\",");
    let r = run(BIN, &[], format!("{seed}{same}{NORMAL}").as_bytes(), &dir);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let out = r.records();
    let error = out[0]["detection"]["error"].as_str().unwrap();
    assert!(
        error.contains("record has features of set `seed` but model")
            && error.contains("trained on set `behavioural`")
            && error.contains("pf-features --features behavioural"),
        "{error}"
    );
    assert!(r
        .stderr
        .contains("stdin line 1: record has features of set `seed`"));
    assert!(out[1]["detection"]["score"].is_number(), "same set: scored");
    assert!(
        out[2]["detection"]["score"].is_number(),
        "no set named: scored"
    );
}

/// Parses the file as XML with Python's standard library and prints the
/// number of elements, or fails the test.
fn xml_elements(path: &std::path::Path) -> usize {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E; print(sum(1 for _ in E.parse(sys.argv[1]).iter()))",
        ])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{} is not well-formed XML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn the_tuning_report_renders_scores_thresholds_and_explanations() {
    let dir = trained("score-report");
    let odd = ODD.replace(
        "{\"id\":2,",
        "{\"id\":2,\"raw\":\"evil <script>\\u001b[31m & co\",\"ts\":\"2026-03-02T08:15:03+00:00\",\"kind\":\"smtpd.reject\",",
    );
    let input = format!("{}{odd}{{\"id\":9}}\n", NORMAL.repeat(50));
    let r = run(BIN, &["--report", "report.html"], input.as_bytes(), &dir);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let path = dir.join("report.html");
    assert!(xml_elements(&path) > 50);
    let html = std::fs::read_to_string(&path).unwrap();
    assert!(html.contains("<svg"), "an inline SVG histogram");
    for (name, value) in [("high", "-0.1"), ("medium", "-0.05"), ("low", "0")] {
        assert!(
            html.contains(&format!("class=\"threshold {name}\""))
                && html.contains(&format!(">{name} {value}</text>")),
            "threshold line {name} at {value}"
        );
    }
    assert!(html.contains("51 records scored, 1 not scorable; 1 anomalies"));
    assert!(html.matches("<rect class=\"bar").count() >= 2);
    assert!(
        html.contains("msg_len = 9000"),
        "the anomaly's explanation is listed"
    );
    assert!(
        html.contains("evil &lt;script&gt;\u{FFFD}[31m &amp; co"),
        "hostile text is escaped"
    );
    assert!(!html.contains("<script"));
}

#[test]
fn hostile_input_is_reported_and_the_rest_kept() {
    let dir = trained("score-hostile");
    let good = vec![NORMAL.to_string(), ODD.to_string(), NORMAL.to_string()];
    let r = pf_testkit::assert_survives_hostile_input(BIN, &[], &good, &[], 1, &dir);
    let out = r.records();
    assert_eq!(out.len(), 3, "every good record comes out:\n{}", r.stderr);
    assert!(out.iter().all(|o| o["detection"]["score"].is_f64()));
}

#[test]
fn pseudonymised_output_and_report_keep_no_personal_data() {
    use std::os::unix::fs::PermissionsExt;
    let dir = trained("score-pseudonyms");
    let key = dir.join("pseudonym.key");
    std::fs::write(&key, b"a key of at least sixteen bytes, for the test").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let record = |user: &str, ip: &str, hour: u32| {
        format!(
            "{{\"raw\":\"imap-login: Login: user=<{user}>, rip={ip}\",\"fields\":{{\"user\":\"{user}\",\"client_ip\":\"{ip}\"}},\
             \"features\":{{\"service_encoded\":\"postfix/smtpd\",\"hour\":{hour},\"msg_len\":9000}}}}\n"
        )
    };
    let input = [
        record("carol", "198.51.100.23", 23),
        record("carol", "198.51.100.23", 3),
        record("dave", "203.0.113.9", 23),
    ]
    .concat();
    let r = run(
        BIN,
        &["--pseudonymise-key", "pseudonym.key"],
        input.as_bytes(),
        &dir,
    );
    assert_eq!(r.status, 2, "a world-readable key is refused");
    assert!(r.stderr.contains("readable by every user"), "{}", r.stderr);

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = run(
        BIN,
        &[
            "--pseudonymise-key",
            "pseudonym.key",
            "--report",
            "report.html",
        ],
        input.as_bytes(),
        &dir,
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let report = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for secret in ["carol", "dave", "198.51.100.23", "203.0.113.9"] {
        assert!(
            !r.stdout.contains(secret),
            "{secret} in the output:\n{}",
            r.stdout
        );
        assert!(!report.contains(secret), "{secret} in the report");
    }
    let out = r.records();
    assert_eq!(out.len(), 3);
    assert!(
        out.iter().all(|o| o["detection"]["score"].is_f64()),
        "still scored"
    );
    let user = |i: usize| out[i]["fields"]["user"].as_str().unwrap().to_string();
    assert_eq!(
        user(0),
        user(1),
        "one user, one pseudonym: correlation survives"
    );
    assert_ne!(user(0), user(2));
    assert!(out[0]["raw"]
        .as_str()
        .unwrap()
        .contains(&format!("user=<{}>", user(0))));
    assert!(
        report.contains(&user(0)) || report.contains(&user(2)),
        "the report shows pseudonyms"
    );

    // Without the key, the same input keeps its values.
    let plain = run(BIN, &[], input.as_bytes(), &dir);
    assert!(plain.stdout.contains("carol"));
}
