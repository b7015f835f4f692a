//! `config/config.yaml`, typed.
//!
//! Every section has defaults so a missing key is never an error, but an
//! unknown key is: a typo such as `treshold:` must not silently fall back
//! to a default. Errors name the file, the line and the key.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where tools look for the configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "config/config.yaml";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: Kafka,
    pub paths: Paths,
    pub anomaly: Anomaly,
    pub parse: Parse,
    pub retrain: Retrain,
    pub privacy: Privacy,
    pub incidents: Incidents,
    pub delivery: Delivery,
    pub prometheus: Prometheus,
    /// Path the configuration was read from, if any (not part of the file).
    #[serde(skip)]
    pub origin: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kafka {
    /// Comma-separated bootstrap servers; empty means "no broker configured".
    pub broker: String,
    pub consumer_group: String,
    pub topics: Vec<String>,
    /// librdkafka properties passed through verbatim (`security.protocol`, ...).
    pub properties: BTreeMap<String, String>,
    /// A directory every instance of the consumer group can read and write:
    /// pf-features keeps its behavioural state there per partition, so the
    /// state follows a partition to the instance that takes it over.
    pub partition_state_dir: Option<PathBuf>,
}

impl Default for Kafka {
    fn default() -> Self {
        Kafka {
            broker: String::new(),
            consumer_group: "postfix-anomaly".into(),
            topics: vec!["postfix".into(), "mail_login".into()],
            properties: BTreeMap::new(),
            partition_state_dir: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    pub models_dir: PathBuf,
    pub features: PathBuf,
    pub output_dir: PathBuf,
    pub logs_dir: PathBuf,
    pub state_dir: PathBuf,
    pub metrics: PathBuf,
    /// Log files the retraining job reads (`tail -n N` of each).
    pub postfix_log: PathBuf,
    pub roundcube_log: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            models_dir: "models".into(),
            features: "features/behavioural.json".into(),
            output_dir: "output".into(),
            logs_dir: "logs".into(),
            state_dir: "state".into(),
            metrics: "metrics/training_metrics.csv".into(),
            postfix_log: "/var/log/mail.log".into(),
            roundcube_log: "/var/log/roundcube/errors.log".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Anomaly {
    /// Severities as expected false-alarm rates (the default).
    pub rarity: Rarity,
    /// Raw cut-offs on the decision score, as the old system had them.
    /// When set they win over `rarity` (so the old config migrates as it
    /// is); they are on the model's own score scale.
    pub threshold: Option<Thresholds>,
    /// The least severity of a `fatal:` or `panic:` line, whatever the
    /// model scores.
    pub failures: Failures,
}

/// The least severity (`none`, `low`, `medium`, `high`) of a line where a
/// process says it failed (`fatal:`, `panic:`): a daemon's (Postfix's
/// daemons, Dovecot) and one of Postfix's commands' (sendmail, postfix,
/// postqueue, ...), which the person or script running it sees as well.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Failures {
    pub daemon: String,
    pub command: String,
}

impl Default for Failures {
    fn default() -> Self {
        Failures {
            daemon: "high".into(),
            command: "none".into(),
        }
    }
}

/// A line is `low` when at most one in `low` normal lines scores like it,
/// `medium` one in `medium`, `high` one in `high`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rarity {
    pub low: f64,
    pub medium: f64,
    pub high: f64,
}

impl Default for Rarity {
    fn default() -> Self {
        Rarity {
            low: 1_000.0,
            medium: 10_000.0,
            high: 100_000.0,
        }
    }
}

/// Severity cut-offs on the decision score (negative = anomalous).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    pub high: f64,
    pub medium: f64,
    pub low: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            high: -0.1,
            medium: -0.05,
            low: 0.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Parse {
    /// Zone for timestamps that carry none: `local` (default), an IANA name
    /// such as `Europe/Berlin`, `UTC`, or a fixed offset such as `+05:30`.
    pub timezone: Option<String>,
    /// Addresses or blocks (`10.0.0.0/8`) of the reverse proxies in front
    /// of Roundcube whose `X-Forwarded-For` / `X-Real-IP` are believed;
    /// from any other peer they are only a claim (pf-parse checks them).
    pub trusted_proxies: Vec<String>,
}

impl Default for Parse {
    fn default() -> Self {
        Parse {
            timezone: None,
            trusted_proxies: vec!["127.0.0.0/8".into(), "::1".into()],
        }
    }
}

/// How pf-sink groups anomalous records into incidents.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Incidents {
    /// An incident closes once this many minutes of event time pass
    /// without a new anomaly joining it.
    pub gap_minutes: f64,
    /// Sample lines kept per incident.
    pub samples: usize,
    /// Incidents of one class open for different clients or accounts
    /// before the next ones join a campaign incident of the class; 0: never.
    pub campaign_after: usize,
    /// A client's or account's new incident below `high` is reported
    /// opened this many seconds (event time) after its first anomaly, so
    /// the first addresses of a campaign join it instead; 0: at once.
    pub hold_seconds: f64,
    /// An incident of a client, account or campaign whose last incident
    /// ended within a day waits twice as long as that one before it
    /// closes, up to this many minutes; at most `gap_minutes`: never longer.
    pub max_gap_minutes: f64,
}

impl Default for Incidents {
    fn default() -> Self {
        Incidents {
            gap_minutes: 30.0,
            samples: 3,
            campaign_after: 3,
            hold_seconds: 120.0,
            max_gap_minutes: 240.0,
        }
    }
}

/// The live detector's `/metrics` endpoint, served by pf-sink.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Prometheus {
    /// `127.0.0.1:9187`; unset: off.
    pub listen: Option<String>,
    /// Whether `listen` may be an address other hosts reach.
    pub allow_remote: bool,
}

/// Where pf-sink sends incident events besides `incidents.jsonl` and
/// `incidents.log`; each destination is off until configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    pub syslog: Syslog,
    pub webhook: Webhook,
    pub mail: Mail,
    /// Where events wait until their destination took them; unset:
    /// `<state_dir>/spool`.
    pub spool_dir: Option<PathBuf>,
    /// At the end of finite input, how long pf-sink waits for the spools to
    /// drain before it exits (what is left is sent on the next start).
    pub drain_seconds: f64,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            syslog: Syslog::default(),
            webhook: Webhook::default(),
            mail: Mail::default(),
            spool_dir: None,
            drain_seconds: 10.0,
        }
    }
}

impl Delivery {
    pub fn spool_dir(&self, paths: &Paths) -> PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(|| paths.state_dir.join("spool"))
    }
}

/// HTTP POST of each batch of incident events in Alertmanager's webhook
/// shape (version 4), spooled on disk until the receiver answers 2xx.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Webhook {
    /// `http://` or `https://` address; unset: off.
    pub url: Option<String>,
    pub min_severity: String,
    /// Extra request headers, such as `Authorization: Bearer ...`.
    pub headers: BTreeMap<String, String>,
    pub timeout_seconds: f64,
    /// Events per POST at most.
    pub batch_max: usize,
    /// Retries wait 1 s, then twice as long each time, up to this.
    pub retry_max_seconds: f64,
    /// The `receiver` field of the payload.
    pub receiver: String,
}

impl Default for Webhook {
    fn default() -> Self {
        Webhook {
            url: None,
            min_severity: "low".into(),
            headers: BTreeMap::new(),
            timeout_seconds: 10.0,
            batch_max: 64,
            retry_max_seconds: 300.0,
            receiver: "postfix-anomaly".into(),
        }
    }
}

/// A mail per incident opened or escalated, through the local sendmail;
/// when incidents come faster than `max_per_hour`, one digest of them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mail {
    /// Recipients; empty: off.
    pub to: Vec<String>,
    pub from: String,
    pub sendmail: PathBuf,
    pub min_severity: String,
    pub max_per_hour: u32,
    pub subject_prefix: String,
}

impl Default for Mail {
    fn default() -> Self {
        Mail {
            to: Vec::new(),
            from: "postfix-anomaly@localhost".into(),
            sendmail: PathBuf::from("/usr/sbin/sendmail"),
            min_severity: "medium".into(),
            max_per_hour: 4,
            subject_prefix: "[postfix-anomaly]".into(),
        }
    }
}

/// One line per incident event to the local syslog socket, in the format
/// the shipped fail2ban filter reads (as `incidents.log` has it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Syslog {
    /// The socket, usually `/dev/log`; unset: off.
    pub socket: Option<PathBuf>,
    /// `auth`, `authpriv`, `daemon`, `mail`, `user` or `local0` to `local7`.
    pub facility: String,
    pub tag: String,
    pub min_severity: String,
}

impl Default for Syslog {
    fn default() -> Self {
        Syslog {
            socket: None,
            facility: "auth".into(),
            tag: "postfix-anomaly".into(),
            min_severity: "low".into(),
        }
    }
}

/// The syslog facility codes (RFC 5424 §6.2.1) of the names accepted in `delivery.syslog.facility`.
pub fn syslog_facility(name: &str) -> Option<u8> {
    Some(match name {
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" => 4,
        "authpriv" => 10,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    })
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Privacy {
    /// When set, pf-score replaces user names, e-mail addresses and client
    /// addresses in its output (and so in every output file, alert and the
    /// report) with stable pseudonyms keyed by this file (HMAC-SHA-256).
    pub pseudonymise_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retrain {
    /// How many of the newest lines the retraining job reads.
    pub max_lines: u64,
    /// Trees in the forest.
    pub trees: usize,
    /// Rows each tree is grown from (ψ; fewer if the data has fewer).
    pub max_samples: usize,
    /// Expected share of anomalies in the training data, or `auto`.
    pub contamination: Contamination,
    /// `tails` (default) or `forest`.
    pub detector: DetectorKind,
    /// Folds of the cross-fitting that scores every training row with a
    /// model that did not see it, to estimate how rare each score is among
    /// normal traffic (0: no calibration).
    pub calibration_folds: usize,
    /// The checks a new model passes before it becomes current.
    pub validation: Validation,
}

/// A retrained model is tried on records held back from its training and
/// made current only if its anomaly rate there is plausible.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Validation {
    /// Share of the newest records held back from training for the check
    /// (0 turns validation off).
    pub holdout: f64,
    /// Highest anomaly rate on the held-back records a new model may have.
    pub max_rate: f64,
    /// Highest ratio of the new model's anomaly rate to the current one's
    /// on the same records (rates below 0.001 count as 0.001).
    pub max_ratio: f64,
}

impl Default for Validation {
    fn default() -> Self {
        Validation {
            holdout: 0.1,
            max_rate: 0.05,
            max_ratio: 5.0,
        }
    }
}

impl Default for Retrain {
    fn default() -> Self {
        Retrain {
            max_lines: 100_000,
            trees: 100,
            max_samples: 1024,
            contamination: Contamination::Fraction(0.001),
            detector: DetectorKind::Tails,
            calibration_folds: 5,
            validation: Validation::default(),
        }
    }
}

/// Which model pf-train fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// Per-feature tail model: sees values and categories never seen in training.
    Tails,
    /// scikit-learn's Isolation Forest.
    Forest,
}

impl std::str::FromStr for DetectorKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tails" => Ok(DetectorKind::Tails),
            "forest" => Ok(DetectorKind::Forest),
            other => Err(format!(
                "unknown detector {other:?}: give `tails` or `forest`"
            )),
        }
    }
}

/// `contamination:` is a number such as `0.001` or the word `auto`; the
/// model crate checks the value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Contamination {
    Fraction(f64),
    Named(String),
}

impl std::fmt::Display for Contamination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Contamination::Fraction(v) => write!(f, "{v}"),
            Contamination::Named(s) => f.write_str(s),
        }
    }
}

impl Config {
    /// Loads `path`, or [`DEFAULT_PATH`] if it exists, or the built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        match path {
            Some(p) => Self::from_file(p),
            None if Path::new(DEFAULT_PATH).is_file() => Self::from_file(Path::new(DEFAULT_PATH)),
            None => Ok(Config::default()),
        }
    }

    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read config file {}: check the path given to --config",
                path.display()
            )
        })?;
        let mut cfg = Self::from_yaml(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        cfg.origin = Some(path.to_path_buf());
        if let Some((key, mode)) = cfg.exposed_secret() {
            if mode & 0o004 != 0 {
                bail!(
                    "{} holds the secret {key} and is readable by every user (mode {:04o}): \
                     run `chmod 0640 {}` (owner and the service's group only), or keep the secret in \
                     its own file and write `{name}: \"@/path/to/file\"`",
                    path.display(),
                    mode & 0o7777,
                    path.display(),
                    name = secret_key(&key),
                );
            }
        }
        Ok(cfg)
    }

    /// A secret-looking Kafka property or webhook header written inline in
    /// a config file that others than its owner may read: `(setting, file
    /// mode)`, the setting by its whole name (`kafka.properties.sasl.password`). World
    /// readable is refused at load; group readable is for the caller to warn
    /// about (the service's group reading it is a normal set-up).
    pub fn exposed_secret(&self) -> Option<(String, u32)> {
        use std::os::unix::fs::MetadataExt;
        let path = self.origin.as_ref()?;
        let mode = std::fs::metadata(path).ok()?.mode();
        if mode & 0o044 == 0 {
            return None;
        }
        let inline = |(k, v): &(&String, &String)| {
            is_secret_name(k) && !v.starts_with('@') && !v.starts_with("${")
        };
        let kafka = self.kafka.properties.iter().find(inline);
        let headers = self.delivery.webhook.headers.iter().find(inline);
        kafka
            .map(|(k, _)| format!("kafka.properties.{k}"))
            .or_else(|| headers.map(|(k, _)| format!("delivery.webhook.headers.{k}")))
            .map(|setting| (setting, mode))
    }

    /// A section or key written empty, `null` or `~` (as Python's
    /// `yaml.safe_dump`, Ansible's `to_nice_yaml` and `yq` write what was
    /// empty) means its defaults, as if it were not there.
    pub fn from_yaml(text: &str) -> Result<Config> {
        let cfg: Config = match serde_yaml::from_str(text) {
            Ok(cfg) => cfg,
            Err(direct) => {
                let mut value: serde_yaml::Value =
                    serde_yaml::from_str(text).map_err(|_| anyhow::anyhow!("{direct}"))?;
                if !drop_nulls(&mut value) {
                    bail!("{direct}");
                }
                if value.is_null() {
                    Config::default()
                } else {
                    // Block-style nulls commented out keep every line where
                    // it was, so an error elsewhere still names its line;
                    // flow style (`{privacy: null}`) is read without its nulls.
                    match serde_yaml::from_str(&comment_out_nulls(text)) {
                        Ok(cfg) => cfg,
                        Err(lined) => {
                            serde_yaml::from_value(value).map_err(|_| anyhow::anyhow!("{lined}"))?
                        }
                    }
                }
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every setting as `section.key=value` lines, the way `postconf` shows
    /// Postfix's: what a tool will really use, after defaults. Values of
    /// properties whose name suggests a secret are hidden.
    pub fn to_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Ok(value) = serde_json::to_value(self) {
            flatten("", &value, &mut lines);
        }
        lines
    }

    fn validate(&self) -> Result<()> {
        if let Some(t) = self.anomaly.threshold {
            for (name, v) in [("high", t.high), ("medium", t.medium), ("low", t.low)] {
                if !v.is_finite() {
                    bail!("anomaly.threshold.{name} must be a finite number, got {v}");
                }
            }
            if !(t.high <= t.medium && t.medium <= t.low) {
                bail!(
                    "anomaly.threshold must satisfy high <= medium <= low (scores are negative when anomalous); got high={}, medium={}, low={}",
                    t.high, t.medium, t.low
                );
            }
        }
        let r = self.anomaly.rarity;
        for (name, v) in [("low", r.low), ("medium", r.medium), ("high", r.high)] {
            if !(v.is_finite() && v >= 1.0) {
                bail!("anomaly.rarity.{name} must be a number of lines of at least 1 (\"1 in N normal lines\", e.g. 1000), got {v}");
            }
        }
        if !(r.low <= r.medium && r.medium <= r.high) {
            bail!(
                "anomaly.rarity must satisfy low <= medium <= high (one in N normal lines; rarer is more severe); got low={}, medium={}, high={}",
                r.low, r.medium, r.high
            );
        }
        let f = &self.anomaly.failures;
        for (name, v) in [("daemon", &f.daemon), ("command", &f.command)] {
            if !matches!(v.as_str(), "none" | "low" | "medium" | "high") {
                bail!("anomaly.failures.{name} must be one of none, low, medium, high (the least severity of a fatal: or panic: line), got {v:?}");
            }
        }
        if self.retrain.calibration_folds == 1 || self.retrain.calibration_folds > 20 {
            bail!(
                "retrain.calibration_folds must be 0 (no calibration) or 2 to 20 (e.g. 5), got {}",
                self.retrain.calibration_folds
            );
        }
        let v = self.retrain.validation;
        if !(0.0..0.9).contains(&v.holdout) {
            bail!(
                "retrain.validation.holdout must be a share from 0 up to 0.9 (e.g. 0.1), got {}",
                v.holdout
            );
        }
        if !(v.max_rate > 0.0 && v.max_rate <= 1.0) {
            bail!("retrain.validation.max_rate must be a share above 0 and at most 1 (e.g. 0.05), got {}", v.max_rate);
        }
        if v.max_ratio.is_nan() || v.max_ratio < 1.0 {
            bail!(
                "retrain.validation.max_ratio must be at least 1 (e.g. 5), got {}",
                v.max_ratio
            );
        }
        if self.kafka.topics.is_empty() {
            bail!("kafka.topics must list at least one topic");
        }
        self.validate_delivery()?;
        let gap = self.incidents.gap_minutes;
        if !(gap > 0.0 && gap <= 7.0 * 24.0 * 60.0) {
            bail!("incidents.gap_minutes must be above 0 and at most a week (10080), e.g. 30; got {gap}");
        }
        let hold = self.incidents.hold_seconds;
        if !(hold >= 0.0 && hold < gap * 60.0) {
            bail!(
                "incidents.hold_seconds must be at least 0 (0: report incidents at once) and \
                 below incidents.gap_minutes ({gap}) in seconds, e.g. 120; got {hold}"
            );
        }
        let max_gap = self.incidents.max_gap_minutes;
        if !(0.0..=7.0 * 24.0 * 60.0).contains(&max_gap) {
            bail!(
                "incidents.max_gap_minutes must be at least 0 (at most incidents.gap_minutes: an \
                 incident that comes back does not wait longer) and at most a week (10080), \
                 e.g. 240; got {max_gap}"
            );
        }
        Ok(())
    }

    fn validate_delivery(&self) -> Result<()> {
        let d = &self.delivery;
        for (key, value) in [
            ("syslog", &d.syslog.min_severity),
            ("webhook", &d.webhook.min_severity),
            ("mail", &d.mail.min_severity),
        ] {
            if !matches!(value.as_str(), "low" | "medium" | "high") {
                bail!("delivery.{key}.min_severity must be low, medium or high, got {value:?}");
            }
        }
        if !(d.drain_seconds >= 0.0 && d.drain_seconds.is_finite()) {
            bail!(
                "delivery.drain_seconds must be 0 or more, got {}",
                d.drain_seconds
            );
        }
        let w = &d.webhook;
        if let Some(url) = &w.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                bail!("delivery.webhook.url must start with http:// or https://, got {url:?}");
            }
        }
        if !(w.timeout_seconds > 0.0 && w.timeout_seconds.is_finite()) {
            bail!(
                "delivery.webhook.timeout_seconds must be more than 0, got {}",
                w.timeout_seconds
            );
        }
        if !(w.retry_max_seconds >= 1.0 && w.retry_max_seconds.is_finite()) {
            bail!(
                "delivery.webhook.retry_max_seconds must be 1 or more, got {}",
                w.retry_max_seconds
            );
        }
        if w.batch_max == 0 {
            bail!("delivery.webhook.batch_max must be 1 or more");
        }
        for name in w.headers.keys() {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                bail!("delivery.webhook.headers: {name:?} is not a header name (letters, digits and '-')");
            }
        }
        let m = &d.mail;
        for address in m.to.iter().chain(std::iter::once(&m.from)) {
            if address.starts_with('-')
                || !address.contains('@')
                || address
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "<>,;".contains(c))
            {
                bail!("delivery.mail: {address:?} is not a mail address (one address like admin@example.org per entry of `to`)");
            }
        }
        if !m.to.is_empty() && m.max_per_hour == 0 {
            bail!("delivery.mail.max_per_hour must be 1 or more");
        }
        if syslog_facility(&d.syslog.facility).is_none() {
            bail!(
                "delivery.syslog.facility must be auth, authpriv, daemon, mail, user or local0 to local7, got {:?}",
                d.syslog.facility
            );
        }
        let tag = &d.syslog.tag;
        if tag.is_empty()
            || tag.len() > 32
            || !tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!(
                "delivery.syslog.tag must be 1 to 32 letters, digits, '-', '_' or '.', got {tag:?}"
            );
        }
        Ok(())
    }
}

/// The text with every block-style `key: null`, `key: ~` and `key:` with
/// nothing under it turned into a comment, line for line.
fn comment_out_nulls(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let is_content = |l: &str| {
        let t = l.trim_start();
        !t.is_empty() && !t.starts_with('#')
    };
    let mut out = String::with_capacity(text.len() + 64);
    for (i, line) in lines.iter().enumerate() {
        let body = line.split(" #").next().unwrap_or(line).trim_end();
        let null_value = body.split_once(':').and_then(|(key, value)| {
            let key = key.trim_start();
            let plain_key = !key.is_empty() && !key.starts_with(['#', '-', '{', '[', '"', '\'']);
            plain_key.then_some(value.trim())
        });
        let parent = || {
            lines[i + 1..]
                .iter()
                .find(|l| is_content(l))
                .is_some_and(|next| indent(next) > indent(line))
        };
        let is_null = match null_value {
            Some("null" | "Null" | "NULL" | "~") => true,
            Some("") => !parent(),
            _ => false,
        };
        if is_null {
            let at = indent(line);
            out.push_str(&line[..at]);
            out.push_str("# ");
            out.push_str(&line[at..]);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Removes every mapping entry whose value is null, at any depth; true if
/// there was one (or the whole document is null).
fn drop_nulls(value: &mut serde_yaml::Value) -> bool {
    use serde_yaml::Value;
    match value {
        Value::Null => true,
        Value::Mapping(map) => {
            let before = map.len();
            map.retain(|_, v| !v.is_null());
            let mut dropped = map.len() < before;
            for (_, v) in map.iter_mut() {
                dropped |= drop_nulls(v);
            }
            dropped
        }
        Value::Tagged(tagged) => drop_nulls(&mut tagged.value),
        _ => false,
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(scalar).collect();
            out.push(format!("{prefix}={}", parts.join(",")));
        }
        v => {
            if is_secret_name(prefix) {
                out.push(format!("{prefix}=(hidden)"));
            } else {
                out.push(format!("{prefix}={}", scalar(v)));
            }
        }
    }
}

/// The key as written under its section: `sasl.password` of
/// `kafka.properties.sasl.password`.
pub fn secret_key(setting: &str) -> &str {
    ["kafka.properties.", "delivery.webhook.headers."]
        .iter()
        .find_map(|p| setting.strip_prefix(p))
        .unwrap_or(setting)
}

/// Whether a setting's name says its value is a secret (`sasl.password`,
/// `ssl.key.password`, `sasl.oauthbearer.client.secret`, ...).
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "secret", "token", "authorization"]
        .iter()
        .any(|w| name.contains(w))
}

/// A setting's value as written in `-X`, `kafka.properties` or
/// `delivery.webhook.headers`: `@FILE` is
/// the first line of FILE (which must not be readable by every user), and
/// `${NAME}` is the environment variable NAME; anything else is literal.
pub fn resolve_value(key: &str, value: &str) -> Result<String> {
    if let Some(path) = value.strip_prefix('@') {
        use std::os::unix::fs::MetadataExt;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the value's file {path}"))?;
        if is_secret_name(key) {
            let mode = std::fs::metadata(path).map(|m| m.mode()).unwrap_or(0);
            if mode & 0o004 != 0 {
                bail!(
                    "the secret's file {path} is readable by every user (mode {:04o}): run `chmod 0640 {path}`",
                    mode & 0o7777
                );
            }
        }
        return Ok(text.lines().next().unwrap_or("").to_string());
    }
    if let Some(name) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        return std::env::var(name).with_context(|| {
            format!(
                "{key} refers to the environment variable {name}, which is not set (or not UTF-8)"
            )
        });
    }
    Ok(value.to_string())
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::from_yaml("").unwrap();
        assert!(c.anomaly.threshold.is_none());
        assert_eq!(c.anomaly.rarity.low, 1_000.0);
        assert_eq!(c.anomaly.rarity.high, 100_000.0);
        assert_eq!(c.kafka.topics, vec!["postfix", "mail_login"]);
        assert_eq!(c.retrain.max_lines, 100_000);
    }

    #[test]
    fn syslog_delivery_settings_are_checked() {
        let c =
            Config::from_yaml("delivery:\n  syslog:\n    socket: /dev/log\n    facility: local3\n")
                .unwrap();
        assert_eq!(
            c.delivery.syslog.socket.as_deref(),
            Some(Path::new("/dev/log"))
        );
        assert_eq!(syslog_facility(&c.delivery.syslog.facility), Some(19));
        for (setting, named) in [
            ("facility: kern", "delivery.syslog.facility"),
            ("tag: \"two words\"", "delivery.syslog.tag"),
            ("min_severity: none", "delivery.syslog.min_severity"),
        ] {
            let err =
                Config::from_yaml(&format!("delivery:\n  syslog:\n    {setting}\n")).unwrap_err();
            assert!(format!("{err}").contains(named), "{setting}: {err}");
        }
    }

    #[test]
    fn incident_timings_are_checked() {
        let c = Config::from_yaml("incidents:\n  gap_minutes: 300\n").unwrap();
        assert_eq!(c.incidents.max_gap_minutes, 240.0);
        for (setting, named) in [
            ("hold_seconds: 1800", "incidents.hold_seconds"),
            ("max_gap_minutes: -1", "incidents.max_gap_minutes"),
            ("max_gap_minutes: 20000", "incidents.max_gap_minutes"),
        ] {
            let err = Config::from_yaml(&format!("incidents:\n  {setting}\n")).unwrap_err();
            assert!(format!("{err}").contains(named), "{setting}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = Config::from_yaml("anomaly:\n  treshold:\n    high: -0.2\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("treshold"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn threshold_order_is_checked() {
        let err = Config::from_yaml(
            "anomaly:\n  threshold:\n    high: 0.1\n    medium: -0.05\n    low: 0\n",
        )
        .unwrap_err();
        assert!(format!("{err}").contains("high <= medium <= low"));
        let err = Config::from_yaml("anomaly:\n  failures:\n    daemon: critical\n").unwrap_err();
        assert!(
            format!("{err:#}")
                .contains("anomaly.failures.daemon must be one of none, low, medium, high"),
            "{err:#}"
        );
        let off = Config::from_yaml("anomaly:\n  failures:\n    command: none\n").unwrap();
        assert_eq!(off.anomaly.failures.command, "none");
        assert_eq!(off.anomaly.failures.daemon, "high");
        let err = Config::from_yaml("anomaly:\n  rarity:\n    low: 100000\n").unwrap_err();
        assert!(format!("{err}").contains("low <= medium <= high"), "{err}");
    }

    #[test]
    fn the_old_systems_thresholds_still_load() {
        let c = Config::from_yaml(
            "anomaly:\n  threshold:\n    high: -0.1\n    medium: -0.05\n    low: 0\n",
        )
        .unwrap();
        let t = c.anomaly.threshold.unwrap();
        assert_eq!((t.high, t.medium, t.low), (-0.1, -0.05, 0.0));
    }

    #[test]
    fn lines_show_effective_values_and_hide_secrets() {
        let c = Config::from_yaml(
            "kafka:\n  broker: k1:9092\n  properties:\n    sasl.password: hunter2\n",
        )
        .unwrap();
        let lines = c.to_lines();
        assert!(
            lines.contains(&"kafka.broker=k1:9092".to_string()),
            "{lines:?}"
        );
        assert!(lines.contains(&"kafka.topics=postfix,mail_login".to_string()));
        assert!(
            lines.contains(&"anomaly.rarity.medium=10000.0".to_string()),
            "{lines:?}"
        );
        assert!(lines.contains(&"kafka.properties.sasl.password=(hidden)".to_string()));
        assert!(!lines.iter().any(|l| l.contains("hunter2")));
    }

    #[test]
    fn validation_limits_are_checked() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c.retrain.validation.holdout, 0.1);
        let err = Config::from_yaml("retrain:\n  validation:\n    max_ratio: 0.5\n").unwrap_err();
        assert!(
            format!("{err}").contains("retrain.validation.max_ratio"),
            "{err}"
        );
        let err = Config::from_yaml("retrain:\n  validation:\n    holdout: 1.5\n").unwrap_err();
        assert!(
            format!("{err}").contains("retrain.validation.holdout"),
            "{err}"
        );
    }

    #[test]
    fn null_sections_and_keys_mean_their_defaults() {
        for text in [
            "",
            "~\n",
            "null\n",
            "privacy: null\n",
            "privacy: ~\n",
            "privacy:\n",
            "privacy:\n  pseudonymise_key_file: null\n",
            "anomaly:\n  threshold: ~\n  rarity:\n    low: null\n",
            "parse:\n  timezone: null\nkafka: ~\nretrain: null\n",
        ] {
            let c = Config::from_yaml(text).unwrap_or_else(|e| panic!("{text:?}: {e:#}"));
            assert_eq!(c.to_lines(), Config::default().to_lines(), "{text:?}");
        }
        // Nulls beside real values: the values are kept.
        let c =
            Config::from_yaml("privacy: ~\nkafka:\n  broker: k1:9092\n  topics: null\n").unwrap();
        assert_eq!(c.kafka.broker, "k1:9092");
        let c = Config::from_yaml("{privacy: null, kafka: {broker: k2, topics: ~}}").unwrap();
        assert_eq!(c.kafka.broker, "k2");
        assert_eq!(c.kafka.topics, vec!["postfix", "mail_login"]);
        // A real error beside a null still names its key and line.
        let err = Config::from_yaml("privacy: ~\nanomaly:\n  treshold: 1\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("treshold") && msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let err = Config::from_yaml("kafka:\n  topics: postfix\n").unwrap_err();
        let msg = format!("{err}");
        assert!(msg.contains("topics"), "{msg}");
    }
}

#[cfg(test)]
mod secrets {
    use super::*;

    #[test]
    fn inline_secrets_in_a_world_readable_file_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pf-config-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        std::fs::write(&path, "kafka:\n  properties:\n    sasl.password: hunter2\n").unwrap();
        let mode = |m| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).unwrap();
        mode(0o644);
        let err = format!("{:#}", Config::from_file(&path).unwrap_err());
        assert!(err.contains("kafka.properties.sasl.password"), "{err}");
        assert!(err.contains("readable by every user (mode 0644)"), "{err}");
        assert!(err.contains("chmod 0640"), "{err}");
        mode(0o640);
        let cfg = Config::from_file(&path).expect("group-readable loads");
        assert_eq!(
            cfg.exposed_secret(),
            Some(("kafka.properties.sasl.password".into(), 0o100640))
        );
        mode(0o600);
        assert_eq!(Config::from_file(&path).unwrap().exposed_secret(), None);
        // A secret kept in its own file is not in this one.
        std::fs::write(
            &path,
            "kafka:\n  properties:\n    sasl.password: \"@/etc/k.secret\"\n",
        )
        .unwrap();
        mode(0o644);
        assert!(Config::from_file(&path).is_ok());
        // A webhook's Authorization header is a secret too.
        std::fs::write(
            &path,
            "delivery:\n  webhook:\n    url: http://127.0.0.1:9/\n    headers:\n      Authorization: Bearer abc\n",
        )
        .unwrap();
        let err = format!("{:#}", Config::from_file(&path).unwrap_err());
        assert!(
            err.contains("secret delivery.webhook.headers.Authorization"),
            "{err}"
        );
        assert!(
            err.contains("write `Authorization: \"@/path/to/file\"`"),
            "{err}"
        );
        std::fs::write(
            &path,
            "delivery:\n  webhook:\n    headers:\n      Authorization: \"${PF_HOOK_TOKEN}\"\n      X-Team: mail\n",
        )
        .unwrap();
        assert!(Config::from_file(&path).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod shipped {
    /// The config file in the repository must load, with severities as rarities.
    #[test]
    fn shipped_config_loads() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/config.yaml");
        let c = super::Config::from_file(&path).expect("config/config.yaml is valid");
        assert!(c.anomaly.threshold.is_none());
        assert_eq!(c.anomaly.rarity.low, 1_000.0);
        assert_eq!(c.retrain.detector, super::DetectorKind::Tails);
        assert_eq!(c.parse.timezone.as_deref(), Some("local"));
    }

    /// What a config-management tool writes back after reading the shipped
    /// file (comments gone, an empty section as `null` or `~`) loads as the
    /// same configuration.
    #[test]
    fn shipped_config_round_tripped_through_a_yaml_emitter_loads_the_same() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/config.yaml");
        let original = super::Config::from_file(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let emitted = serde_yaml::to_string(&value).unwrap();
        assert!(
            emitted.contains("privacy: null"),
            "the shipped config has an empty section: {emitted}"
        );
        let tilde = emitted.replace(": null", ": ~");
        for text in [emitted, tilde] {
            let c = super::Config::from_yaml(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
            assert_eq!(c.to_lines(), original.to_lines());
        }
    }
}
