//! The acknowledgement file: how far each Kafka partition has been written
//! by the pipeline's last stage.
//!
//! kafka-tail writes a message to a pipe long before the last stage has it
//! on disk; committing at that moment would lose whatever is in flight when
//! a stage dies. So the last stage (`pf-sink --ack-file FILE`) records here
//! what it has written, and `kafka-tail --ack-file FILE` commits no further.
//!
//! ```json
//! {"next":{"postfix":{"0":43,"1":12},"mail_login":{"0":7}}}
//! ```
//!
//! Each number is the next offset to read: every message before it is
//! written. A message holding several lines counts only once its last line
//! (the one without `source.more_lines`) is written.

use crate::view::SourceView;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io;
use std::path::Path;

/// Next offset to read per (topic, partition).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Acks {
    pub next: BTreeMap<(String, i32), i64>,
}

impl Acks {
    /// Notes a written record from its `source` object; records without
    /// Kafka coordinates are ignored. Returns whether anything changed.
    pub fn note_source(&mut self, source: &SourceView<'_>) -> bool {
        let Some((topic, partition, offset)) = source.kafka() else {
            return false;
        };
        let Ok(partition) = i32::try_from(partition) else {
            return false;
        };
        let complete = source.more_lines != Some(true);
        let next = if complete { offset + 1 } else { offset };
        // A handful of partitions: searched in place, no key allocated per record.
        match self
            .next
            .iter_mut()
            .find(|((t, p), _)| *p == partition && t == topic)
            .map(|(_, n)| n)
        {
            Some(n) if *n == next => false,
            Some(n) => {
                *n = next;
                true
            }
            None => {
                self.next.insert((topic.to_string(), partition), next);
                true
            }
        }
    }

    pub fn to_json(&self) -> String {
        let mut topics: Map<String, Value> = Map::new();
        for ((topic, partition), next) in &self.next {
            if let Value::Object(parts) = topics
                .entry(topic.clone())
                .or_insert_with(|| Value::Object(Map::new()))
            {
                parts.insert(partition.to_string(), Value::from(*next));
            }
        }
        let mut doc = Map::new();
        doc.insert("next".into(), Value::Object(topics));
        let mut text = Value::Object(doc).to_string();
        text.push('\n');
        text
    }

    pub fn parse(text: &str) -> Result<Acks, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let topics = doc
            .get("next")
            .and_then(Value::as_object)
            .ok_or("no \"next\" object")?;
        let mut acks = Acks::default();
        for (topic, parts) in topics {
            let parts = parts
                .as_object()
                .ok_or_else(|| format!("next.{topic} is not an object"))?;
            for (partition, next) in parts {
                let p: i32 = partition.parse().map_err(|_| {
                    format!("next.{topic}: partition {partition:?} is not a number")
                })?;
                let n = next
                    .as_i64()
                    .ok_or_else(|| format!("next.{topic}.{partition} is not an offset"))?;
                acks.next.insert((topic.clone(), p), n);
            }
        }
        Ok(acks)
    }

    /// Reads the file; `Ok(None)` when it does not exist (yet).
    pub fn read(path: &Path) -> io::Result<Option<Acks>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Acks::parse(&text).map(Some).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the file (temporary file + rename, so a reader sees the old
    /// or the new positions, never a mix). Not synced: after a power loss
    /// the file is meaningless anyway, as kafka-tail starts without it.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        crate::atomic::replace_unsynced(path, self.to_json().as_bytes(), 0o640)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> SourceView<'_> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn a_message_counts_once_its_last_line_is_written() {
        let mut acks = Acks::default();
        assert!(acks.note_source(&src(
            r#"{"topic":"postfix","partition":0,"offset":5,"more_lines":true}"#
        )));
        assert_eq!(acks.next[&("postfix".into(), 0)], 5);
        assert!(acks.note_source(&src(r#"{"topic":"postfix","partition":0,"offset":5}"#)));
        assert_eq!(acks.next[&("postfix".into(), 0)], 6);
        assert!(!acks.note_source(&src(r#"{"file":"x.log","line":3}"#)));
    }

    #[test]
    fn round_trips_through_the_file() {
        let dir = std::env::temp_dir().join(format!("pf-acks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("acks.json");
        assert_eq!(Acks::read(&path).unwrap(), None);
        let mut acks = Acks::default();
        acks.note_source(&src(r#"{"topic":"postfix","partition":1,"offset":41}"#));
        acks.note_source(&src(r#"{"topic":"mail_login","partition":0,"offset":6}"#));
        acks.write(&path).unwrap();
        assert_eq!(Acks::read(&path).unwrap(), Some(acks));
        std::fs::write(&path, "{\"next\":{\"postfix\":{\"x\":1}}}").unwrap();
        let err = Acks::read(&path).unwrap_err();
        assert!(err.to_string().contains("partition \"x\""), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
