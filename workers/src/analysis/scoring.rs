//! Scores the metrics against the session kind's targets (`[analysis.targets.KIND]`).
//! (Stub: filled in by the scoring work; the signature is what the analysis worker calls.)

use serde::Serialize;
use voxline_domain::config::KindTargets;

use super::metrics::Metrics;

/// Per-metric scores (1–5, 5 = on target) and their mean.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Scores {
    /// Mean of the metric scores; `None` when no metric could be scored.
    pub overall: Option<f64>,
}

pub fn score(_metrics: &Metrics, _targets: Option<&KindTargets>) -> Scores {
    Scores::default()
}
