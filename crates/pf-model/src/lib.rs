//! The anomaly model: the per-feature tail model (the default: sees values
//! and categories never seen in training), an Isolation Forest with
//! scikit-learn's exact semantics (so imported scikit-learn models score
//! identically) with exact TreeSHAP explanations, the rarity calibration
//! behind severities, bounded-memory training samples, and the versioned
//! JSON model file.

pub mod calibration;
pub mod detector;
pub mod encode;
pub mod fit;
pub mod forest;
pub mod model;
pub mod rng;
pub mod sample;
pub mod scorer;
pub mod shap;
pub mod table;
pub mod tails;
pub mod train;

pub use calibration::Calibration;
pub use detector::{Detector, Grade, Grading, RarityCuts, ScoreThresholds, SeverityPolicy};
pub use encode::{EncodeError, Encoder, Key, RowSeed};
pub use fit::{fit_detector, Fitted, Method};
pub use forest::{average_path_length, Contamination, Forest, Tree};
pub use model::{FeatureKind, FeatureSpec, Model, ModelsDir, Scaler};
pub use scorer::Scorer;
pub use shap::Explainer;
pub use tails::{ColumnSpec, Side, Tails};
pub use train::{fit, fit_scored, TrainParams};
