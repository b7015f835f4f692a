//! Behavioural state per Kafka partition, checkpointed in a directory that
//! every instance of the consumer group reaches, so that a partition's
//! history follows it when a rebalance moves it to another instance.
//!
//! The topics are co-partitioned (both keyed by the mail host, the same
//! partition count, the range assignor: docs/operations.md), so partition
//! *i* of `postfix` and of `mail_login` hold the same hosts and share one
//! state, `partition-<i>.json`. Each checkpoint says how far into each
//! topic it has seen (`through`: the next offset); an instance that stops
//! writes its checkpoints at exit, and the one that takes over loads a
//! partition's checkpoint when its first record arrives. Records Kafka
//! delivers again (below the checkpoint's `through`: taken, not committed)
//! are already counted: they are described from a copy of the state and
//! leave the state as it is. A checkpoint another instance has written since
//! this one read it is never overwritten, and is read again when the
//! partition comes back. Records without Kafka coordinates use the ordinary
//! state.

use crate::behaviour::Behaviour;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Partitioned {
    dir: PathBuf,
    parts: BTreeMap<i64, Part>,
}

#[derive(Debug)]
struct Part {
    checkpoint: Checkpoint,
    /// Records taken since the last save.
    changed: bool,
    /// The file's `through` as this instance last read or wrote it: if the
    /// file says otherwise at the next save, another instance has had the
    /// partition meanwhile, and its file wins.
    base: BTreeMap<String, i64>,
    /// Kafka delivers again what was not committed; such records (below
    /// `through`) are already in the state. They are observed into a copy
    /// of the state taken when the first of them arrives, so they get
    /// features and the state counts them once.
    replay: Option<Behaviour>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    /// Per topic, the offset after the last record whose effect is in the state.
    through: BTreeMap<String, i64>,
    behaviour: Behaviour,
}

#[derive(Deserialize)]
struct Through {
    through: BTreeMap<String, i64>,
    #[serde(rename = "behaviour")]
    _behaviour: serde::de::IgnoredAny,
}

impl Partitioned {
    /// Uses (and creates, mode 0750) the shared directory.
    pub fn open(dir: &Path) -> Result<Partitioned> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .with_context(|| {
                format!(
                    "cannot create the partition state directory {}",
                    dir.display()
                )
            })?;
        Ok(Partitioned {
            dir: dir.to_path_buf(),
            parts: BTreeMap::new(),
        })
    }

    fn path(&self, partition: i64) -> PathBuf {
        checkpoint_path(&self.dir, partition)
    }

    /// The state of `partition`, loaded from its checkpoint the first time
    /// (or the first time since it was last saved and let go), with the
    /// record at `offset` of `topic` noted as taken. A checkpoint that does
    /// not load is reported and the partition starts afresh.
    pub fn state(&mut self, topic: &str, partition: i64, offset: i64) -> &mut Behaviour {
        // A record beyond the next offset this instance expects: the
        // partition may have been elsewhere meanwhile; a file carried
        // further replaces what is held here.
        let moved_on = self.parts.get(&partition).is_some_and(|part| {
            part.checkpoint
                .through
                .get(topic)
                .is_some_and(|&next| offset > next)
                && newer_elsewhere(&self.path(partition), &part.checkpoint.through).unwrap_or(false)
        });
        if moved_on {
            eprintln!(
                "pf-features: partition {partition} was carried further by another instance; \
                 reading its state again"
            );
            self.parts.remove(&partition);
        }
        if !self.parts.contains_key(&partition) {
            let path = self.path(partition);
            let checkpoint = match load(&path) {
                Ok(Some(c)) => c,
                Ok(None) => Checkpoint {
                    through: BTreeMap::new(),
                    behaviour: Behaviour::new(),
                },
                Err(e) => {
                    eprintln!(
                        "pf-features: {e:#}; partition {partition} starts with no history \
                         (the file is replaced at the next save)"
                    );
                    Checkpoint {
                        through: BTreeMap::new(),
                        behaviour: Behaviour::new(),
                    }
                }
            };
            self.parts.insert(
                partition,
                Part {
                    base: checkpoint.through.clone(),
                    checkpoint,
                    changed: false,
                    replay: None,
                },
            );
        }
        let part = self.parts.get_mut(&partition).expect("inserted above");
        if part
            .checkpoint
            .through
            .get(topic)
            .is_some_and(|&next| offset < next)
        {
            let state = &part.checkpoint.behaviour;
            return part.replay.get_or_insert_with(|| state.clone());
        }
        part.replay = None;
        part.changed = true;
        let next = offset.saturating_add(1);
        match part.checkpoint.through.get_mut(topic) {
            Some(t) => *t = (*t).max(next),
            None => {
                part.checkpoint.through.insert(topic.to_string(), next);
            }
        }
        &mut part.checkpoint.behaviour
    }

    /// Writes the checkpoint of every partition that took records since
    /// the last save, and lets go of the others (saved before; a partition
    /// that comes back is read again, as another instance may have had it
    /// meanwhile). A checkpoint carried further by another instance is
    /// left as it is and this instance's copy dropped.
    pub fn save(&mut self) -> Result<()> {
        let mut first_error = None;
        let mut idle = Vec::new();
        for (&partition, part) in &mut self.parts {
            if !part.changed {
                idle.push(partition);
                continue;
            }
            let path = checkpoint_path(&self.dir, partition);
            // A file that cannot be read back is replaced.
            if on_disk(&path).is_ok_and(|theirs| theirs != part.base) {
                eprintln!(
                    "pf-features: {} was carried further by another instance; \
                     keeping it and letting go of partition {partition}",
                    path.display()
                );
                idle.push(partition);
                continue;
            }
            let written = pf_record::atomic::write_private_atomically_with(&path, 0o640, |w| {
                serde_json::to_writer(w, &part.checkpoint).map_err(std::io::Error::from)
            })
            .with_context(|| format!("cannot write the partition state {}", path.display()));
            match written {
                Ok(()) => {
                    part.changed = false;
                    part.base = part.checkpoint.through.clone();
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        for partition in idle {
            self.parts.remove(&partition);
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn checkpoint_path(dir: &Path, partition: i64) -> PathBuf {
    dir.join(format!("partition-{partition}.json"))
}

fn load(path: &Path) -> Result<Option<Checkpoint>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let checkpoint: Checkpoint = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a pf-features partition state", path.display()))?;
    if !checkpoint.behaviour.is_current_format() {
        anyhow::bail!(
            "{} was written by a build with another state format",
            path.display()
        );
    }
    Ok(Some(checkpoint))
}

/// The `through` of the checkpoint on disk (empty when there is none).
fn on_disk(path: &Path) -> Result<BTreeMap<String, i64>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e.into()),
    };
    let theirs: Through = serde_json::from_slice(&text)?;
    Ok(theirs.through)
}

/// Whether the checkpoint on disk has seen further into some topic than `ours`.
fn newer_elsewhere(path: &Path, ours: &BTreeMap<String, i64>) -> Result<bool> {
    Ok(on_disk(path)?
        .iter()
        .any(|(topic, &next)| ours.get(topic).is_none_or(|&o| next > o)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::behaviour::{Event, Measure};

    fn failure(state: &mut Behaviour, time: i64) -> f64 {
        let event = Event {
            time: Some(time),
            kind: "smtpd.sasl_auth_failed",
            failure: Some("auth"),
            client_ip: Some("203.0.113.9"),
            ..Event::default()
        };
        state.observe(&event).get(Measure::AuthFailures1hByIp)
    }

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pf-partitions-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_state_moves_with_its_checkpoint_and_counts_a_redelivery_once() {
        let d = dir("move");
        let t = 1_800_000_000;
        let mut old = Partitioned::open(&d).unwrap();
        for offset in 0..5 {
            assert_eq!(
                failure(old.state("postfix", 3, offset), t + offset),
                (offset + 1) as f64
            );
        }
        old.save().unwrap();
        // Another instance takes partition 3 over; Kafka gives it offsets 3
        // and 4 again (taken, not committed), then new ones.
        let mut new = Partitioned::open(&d).unwrap();
        assert_eq!(
            failure(new.state("postfix", 3, 3), t + 3),
            6.0,
            "described from a copy"
        );
        assert_eq!(failure(new.state("postfix", 3, 4), t + 4), 7.0);
        assert_eq!(
            failure(new.state("postfix", 3, 5), t + 5),
            6.0,
            "counted once"
        );
        // Another partition starts with no history.
        assert_eq!(failure(new.state("postfix", 1, 0), t + 5), 1.0);
        new.save().unwrap();
        // The old instance, still holding partition 3 from before, takes one
        // more record and must not put its older state back.
        let _ = failure(old.state("postfix", 3, 5), t + 5);
        old.save().unwrap();
        let mut again = Partitioned::open(&d).unwrap();
        assert_eq!(failure(again.state("postfix", 3, 6), t + 6), 7.0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A partition that comes back after another instance carried it on
    /// is read again, not continued from what was held here.
    #[test]
    fn a_partition_that_comes_back_is_read_again() {
        let d = dir("back");
        let t = 1_800_000_000;
        let mut a = Partitioned::open(&d).unwrap();
        for offset in 0..3 {
            let _ = failure(a.state("postfix", 0, offset), t + offset);
        }
        a.save().unwrap();
        let mut b = Partitioned::open(&d).unwrap();
        assert_eq!(failure(b.state("postfix", 0, 3), t + 3), 4.0);
        assert_eq!(failure(b.state("postfix", 0, 4), t + 4), 5.0);
        b.save().unwrap();
        assert_eq!(failure(a.state("postfix", 0, 5), t + 5), 6.0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_damaged_checkpoint_starts_afresh() {
        let d = dir("damaged");
        let mut parts = Partitioned::open(&d).unwrap();
        std::fs::write(d.join("partition-0.json"), "{\"through\":").unwrap();
        assert_eq!(failure(parts.state("postfix", 0, 9), 1_800_000_000), 1.0);
        parts.save().unwrap();
        let mut back = Partitioned::open(&d).unwrap();
        assert_eq!(failure(back.state("postfix", 0, 10), 1_800_000_001), 2.0);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
