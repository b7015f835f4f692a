//! The record contract and NDJSON plumbing at the bottom of the pipeline.
//!
//! Every stage (`kafka-tail`, `pf-parse`, `pf-features`, `pf-score`, `pf-train`)
//! reads and writes one JSON object per line. The field names live here and
//! nowhere else; `docs/records.md` describes them for humans.

pub mod acks;
pub mod append;
pub mod atomic;
pub mod envelope;
pub mod ip;
pub mod json;
pub mod lines;
pub mod members;
pub mod rarity;
pub mod record;
pub mod severity;
pub mod view;

pub use lines::{Line, LineReader, MAX_LINE_BYTES, MAX_RECORD_BYTES};
pub use record::{Flag, Origin, Record, Source};
