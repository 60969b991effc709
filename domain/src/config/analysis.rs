//! The targets the analysis scores each kind of session's metrics against.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Per-session-kind targets the analysis scores metrics against.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AnalysisSettings {
    #[serde(default)]
    pub targets: BTreeMap<String, KindTargets>,
}

/// Targets for one kind of session; a metric with no target is reported but not scored.
/// Ranges are `[low, high]`, inclusive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KindTargets {
    pub talk_ratio: Option<[f64; 2]>,
    pub words_per_minute: Option<[f64; 2]>,
    pub fillers_per_minute_max: Option<f64>,
    pub longest_monologue_seconds_max: Option<f64>,
    pub questions_per_10_min_min: Option<f64>,
    pub patience_seconds_min: Option<f64>,
    pub interruptions_max: Option<f64>,
    pub vocabulary_diversity_min: Option<f64>,
    /// Voice metrics (see the analysis's `voice` module for the formulas).
    pub pitch_variation_semitones_min: Option<f64>,
    pub long_pauses_max: Option<f64>,
    pub speaking_rate_variation_max: Option<f64>,
    pub loudness_variation_db: Option<[f64; 2]>,
}
