//! Kafka consumption for the live detector, with at-least-once delivery.
//!
//! [`tail`] consumes topics in a consumer group and writes one
//! [`Envelope`](pf_record::envelope::Envelope) per log line to a writer. The
//! guarantee it keeps: **an offset is stored for commit only after the line
//! it belongs to has been written out**. librdkafka's auto-commit then
//! commits stored offsets periodically; shutdown and partition revocation
//! commit synchronously. A crash, a kill or a closed pipe can therefore cause
//! redelivery of lines that were written but not yet committed, never loss.
//!
//! Output is buffered and written whenever no message is waiting (so a quiet
//! topic sees each line within milliseconds) or the buffer fills (so a busy
//! one is written in large chunks).

mod consumer;
mod lag;
mod settings;

pub use consumer::{tail, Summary};
pub use lag::{group_lag, PartitionLag};
pub use settings::{parse_property, resolve_value, Settings, StartAt, MANAGED_PROPERTIES};
