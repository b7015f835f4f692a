//! The anomaly model: an Isolation Forest with scikit-learn's exact
//! semantics (so imported scikit-learn models score identically), exact
//! TreeSHAP explanations, bounded-memory training samples, and the
//! versioned JSON model file.

pub mod encode;
pub mod forest;
pub mod model;
pub mod rng;
pub mod sample;
pub mod scorer;
pub mod shap;
pub mod table;
pub mod train;

pub use encode::{EncodeError, Encoder};
pub use forest::{average_path_length, Contamination, Forest, Tree};
pub use model::{FeatureKind, FeatureSpec, Model, ModelsDir, Scaler};
pub use scorer::Scorer;
pub use shap::Explainer;
pub use train::{fit, fit_scored, TrainParams};
