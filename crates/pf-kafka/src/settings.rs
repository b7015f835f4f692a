//! What to consume and how: the typed form of `kafka:` in the config plus
//! kafka-tail's flags.

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use std::str::FromStr;

/// Where a partition starts the first time this process is assigned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// The group's committed offset; `auto.offset.reset` when there is none.
    #[default]
    Stored,
    Beginning,
    End,
    /// The first message whose timestamp is at or after this time.
    Time(DateTime<Utc>),
}

impl FromStr for StartAt {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<StartAt> {
        Ok(match s {
            "stored" => StartAt::Stored,
            "beginning" => StartAt::Beginning,
            "end" => StartAt::End,
            _ => StartAt::Time(
                DateTime::parse_from_rfc3339(s)
                    .map(|t| t.with_timezone(&Utc))
                    .with_context(|| {
                        format!("-o {s:?}: expected beginning, end, stored or an RFC 3339 time such as 2026-11-25T08:00:00Z")
                    })?,
            ),
        })
    }
}

/// Properties kafka-tail sets itself because its delivery guarantee depends
/// on them; setting them with `-X` or `kafka.properties` is refused.
pub const MANAGED_PROPERTIES: [&str; 3] = [
    "enable.auto.offset.store",
    "enable.partition.eof",
    "group.id",
];

/// Defaults a user may override (config `kafka.properties`, then `-X`).
const DEFAULT_PROPERTIES: [(&str, &str); 5] = [
    ("client.id", "kafka-tail"),
    // A new group reads what the topic still holds rather than only what
    // arrives after the detector first starts.
    ("auto.offset.reset", "earliest"),
    ("enable.auto.commit", "true"),
    ("auto.commit.interval.ms", "5000"),
    // librdkafka's 1000 ms default stalls a partition for a second whenever
    // the local queue fills, which caps a fast consumer far below the broker.
    ("fetch.queue.backoff.ms", "10"),
];

#[derive(Debug, Clone)]
pub struct Settings {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    pub group: String,
    pub topics: Vec<String>,
    /// librdkafka properties in order of precedence (later wins).
    pub properties: Vec<(String, String)>,
    pub start: StartAt,
    /// Stop once every assigned partition has been read to its end.
    pub exit_at_end: bool,
    /// Stop after this many Kafka messages.
    pub max_messages: Option<u64>,
    /// Commit only what the pipeline's last stage acknowledged in this file
    /// (`pf-sink --ack-file`), instead of what was written to stdout.
    pub ack_file: Option<std::path::PathBuf>,
}

impl Settings {
    /// The complete librdkafka configuration, checked.
    pub fn client_properties(&self) -> Result<Vec<(String, String)>> {
        if self.brokers.trim().is_empty() {
            bail!("no Kafka broker given: set kafka.broker in the config or pass -b HOST:PORT");
        }
        if self.topics.is_empty() {
            bail!("no topic given: set kafka.topics in the config or pass -t TOPIC");
        }
        if self.group.trim().is_empty() {
            bail!("the consumer group is empty: set kafka.consumer_group or pass -G GROUP");
        }
        let mut props: Vec<(String, String)> = DEFAULT_PROPERTIES
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in &self.properties {
            if MANAGED_PROPERTIES.contains(&k.as_str()) {
                bail!(
                    "property {k} is managed by kafka-tail (it decides when offsets are committed); remove it from -X / kafka.properties"
                );
            }
            if k == "bootstrap.servers" || k == "metadata.broker.list" {
                bail!("property {k}: give the brokers with -b or kafka.broker instead");
            }
            props.push((k.clone(), v.clone()));
        }
        props.push(("bootstrap.servers".into(), self.brokers.clone()));
        props.push(("group.id".into(), self.group.clone()));
        props.push(("enable.auto.offset.store".into(), "false".into()));
        // -e watches the fetched high watermarks instead of end-of-partition events.
        props.push(("enable.partition.eof".into(), "false".into()));
        Ok(props)
    }
}

/// Parses `key=value` as given to `-X`; the value goes through
/// [`resolve_value`], so secrets never need to appear on a command line.
pub fn parse_property(s: &str) -> Result<(String, String)> {
    let Some((key, value)) = s.split_once('=') else {
        bail!("-X {s:?}: expected key=value, for example -X security.protocol=SASL_SSL");
    };
    let key = key.trim();
    if key.is_empty() {
        bail!("-X {s:?}: the property name is empty");
    }
    let value = resolve_value(key, value).with_context(|| format!("-X {key}"))?;
    Ok((key.to_string(), value))
}

pub use pf_config::resolve_value;

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            brokers: "127.0.0.1:9092".into(),
            group: "g".into(),
            topics: vec!["postfix".into()],
            ack_file: None,
            properties: vec![],
            start: StartAt::Stored,
            exit_at_end: false,
            max_messages: None,
        }
    }

    fn value<'a>(props: &'a [(String, String)], key: &str) -> Option<&'a str> {
        props
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn start_positions_parse() {
        assert_eq!("beginning".parse::<StartAt>().unwrap(), StartAt::Beginning);
        assert_eq!("end".parse::<StartAt>().unwrap(), StartAt::End);
        assert_eq!("stored".parse::<StartAt>().unwrap(), StartAt::Stored);
        let StartAt::Time(t) = "2026-11-25T08:00:00+01:00".parse::<StartAt>().unwrap() else {
            panic!("not a time");
        };
        assert_eq!(t.to_rfc3339(), "2026-11-25T07:00:00+00:00");
        let err = "yesterday".parse::<StartAt>().unwrap_err();
        assert!(format!("{err:#}").contains("RFC 3339"));
    }

    #[test]
    fn user_properties_override_defaults_but_not_the_delivery_guarantee() {
        let mut s = settings();
        s.properties = vec![("auto.offset.reset".into(), "latest".into())];
        let props = s.client_properties().unwrap();
        assert_eq!(value(&props, "auto.offset.reset"), Some("latest"));
        assert_eq!(value(&props, "enable.auto.offset.store"), Some("false"));
        assert_eq!(value(&props, "bootstrap.servers"), Some("127.0.0.1:9092"));

        s.properties = vec![("enable.auto.offset.store".into(), "true".into())];
        let err = s.client_properties().unwrap_err();
        assert!(format!("{err}").contains("managed by kafka-tail"), "{err}");
    }

    #[test]
    fn missing_broker_says_where_to_set_it() {
        let mut s = settings();
        s.brokers = String::new();
        let err = s.client_properties().unwrap_err();
        assert!(format!("{err}").contains("kafka.broker"), "{err}");
    }

    #[test]
    fn property_values_can_come_from_a_file() {
        let dir = std::env::temp_dir().join(format!("pf-kafka-prop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = parse_property(&format!("sasl.password=@{}", file.display())).unwrap_err();
        assert!(
            format!("{err:#}").contains("readable by every user (mode 0644)"),
            "{err:#}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let (k, v) = parse_property(&format!("sasl.password=@{}", file.display())).unwrap();
        assert_eq!((k.as_str(), v.as_str()), ("sasl.password", "s3cret"));
        assert_eq!(
            parse_property("a.b=c=d").unwrap(),
            ("a.b".to_string(), "c=d".to_string())
        );
        assert!(parse_property("novalue").is_err());
        assert!(parse_property("x=@/nonexistent/file").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn property_values_can_come_from_the_environment() {
        std::env::set_var("PF_KAFKA_TEST_SECRET", "from-env");
        assert_eq!(
            resolve_value("sasl.password", "${PF_KAFKA_TEST_SECRET}").unwrap(),
            "from-env"
        );
        let err = resolve_value("sasl.password", "${PF_KAFKA_TEST_UNSET}").unwrap_err();
        assert!(
            format!("{err}").contains("PF_KAFKA_TEST_UNSET, which is not set"),
            "{err}"
        );
        assert_eq!(resolve_value("client.id", "plain").unwrap(), "plain");
    }
}
