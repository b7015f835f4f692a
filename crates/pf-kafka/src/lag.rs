//! How far the consumer group is behind: committed offset against the end
//! of each partition, for the status command.

use crate::settings::Settings;
use anyhow::{Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

/// One partition's position of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset, if it has one.
    pub committed: Option<i64>,
    /// The partition's high watermark (the offset the next message gets).
    pub end: i64,
}

impl PartitionLag {
    /// Messages not yet committed by the group (all of them if none is).
    pub fn lag(&self, start: i64) -> i64 {
        (self.end - self.committed.unwrap_or(start)).max(0)
    }
}

/// Reads the group's committed offsets and the partitions' ends, without
/// joining the group (so a running detector is not disturbed).
pub fn group_lag(settings: &Settings) -> Result<Vec<(PartitionLag, i64)>> {
    let mut config = ClientConfig::new();
    for (k, v) in settings.client_properties()? {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create().context("invalid Kafka settings")?;
    let mut tpl = TopicPartitionList::new();
    for topic in &settings.topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .with_context(|| {
                format!(
                    "cannot read the metadata of topic {topic} from {}",
                    settings.brokers
                )
            })?;
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
    }
    let committed = consumer
        .committed_offsets(tpl.clone(), TIMEOUT)
        .context("cannot read the group's committed offsets")?;
    let mut out = Vec::new();
    for e in tpl.elements() {
        let (low, high) = consumer
            .fetch_watermarks(e.topic(), e.partition(), TIMEOUT)
            .with_context(|| format!("cannot read the end of {}[{}]", e.topic(), e.partition()))?;
        let committed = committed
            .find_partition(e.topic(), e.partition())
            .and_then(|c| match c.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        out.push((
            PartitionLag {
                topic: e.topic().to_string(),
                partition: e.partition(),
                committed,
                end: high,
            },
            low,
        ));
    }
    Ok(out)
}
