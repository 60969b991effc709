//! Telling the voices of a mono recording apart, offline: Resemblyzer's GE2E speaker encoder
//! (installed by [`crate::models::install_speaker_model`]) ported to candle, and a small
//! diarizer over its embeddings.
//!
//! [`diarize`] finds the stretches of speech, embeds 1.6 s windows of each every 0.4 s,
//! clusters the windows into two voices, decides whether there are really two, and labels
//! the speech by voice, numbered by order of first speech. See [`diarize`] for the steps and
//! the thresholds, which `bench/diarization.sh` measured.

mod checkpoint;
mod cluster;
mod diarize;
mod encoder;

use std::path::PathBuf;

pub use diarize::{
    Diarization, Evidence, MIN_VOICE_SHARE, MIN_VOICE_WINDOWS, ONE_VOICE_SIMILARITY,
    SEPARATED_SIMILARITY, Turn, diarize, diarize_with_evidence,
};
pub use encoder::SpeakerEncoder;

#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the speaker model file is not what was expected: {0}")]
    Format(String),
    #[error("running the speaker model: {0}")]
    Model(#[from] candle_core::Error),
    #[error("cancelled")]
    Cancelled,
}
