//! The local diarizer: the voices of a mono recording told apart by the GE2E speaker model
//! (crate `voxline-whisper`, module `speakers`) that `voxline models install` puts beside
//! Whisper. Loaded on first use and kept; without the model, voices are "unavailable" with
//! directions, never guessed.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::OnceCell;
use voxline_jobs::HandlerError;
use voxline_whisper::speakers::{self, Diarization, SpeakerEncoder};

use super::local::CancelOnDrop;
use super::tracks::VoiceTurn;
use super::{BoxFuture, Diarizer, Voices};

/// Tells the voices of a mono recording apart with the GE2E speaker model that `voxline
/// models install` puts beside Whisper. Without it, voices are "unavailable" with directions.
pub struct LocalDiarizer {
    model_dir: PathBuf,
    encoder: OnceCell<Arc<SpeakerEncoder>>,
}

impl LocalDiarizer {
    pub fn new(model_dir: PathBuf) -> Self {
        LocalDiarizer {
            model_dir,
            encoder: OnceCell::new(),
        }
    }

    /// The loaded encoder, or `None` when no model is installed (checked per job: an install
    /// may happen while the worker runs).
    async fn encoder(&self) -> Result<Option<Arc<SpeakerEncoder>>, HandlerError> {
        if let Some(encoder) = self.encoder.get() {
            return Ok(Some(encoder.clone()));
        }
        if !self.model_dir.join("pretrained.pt").is_file() {
            return Ok(None);
        }
        self.encoder
            .get_or_try_init(|| async {
                let dir = self.model_dir.clone();
                let loaded = tokio::task::spawn_blocking(move || SpeakerEncoder::load(&dir))
                    .await
                    .map_err(|e| HandlerError::retry(format!("loading the speaker model: {e}")))?;
                loaded.map(Arc::new).map_err(|e| {
                    HandlerError::permanent(format!(
                        "the speaker model at {} cannot be loaded: {e} (reinstall it with \
                         `voxline models install`)",
                        self.model_dir.display()
                    ))
                })
            })
            .await
            .cloned()
            .map(Some)
    }
}

impl Diarizer for LocalDiarizer {
    fn voices<'a>(&'a self, mono: Arc<Vec<f32>>) -> BoxFuture<'a, Result<Voices, HandlerError>> {
        Box::pin(async move {
            let Some(encoder) = self.encoder().await? else {
                return Ok(Voices::Unavailable(format!(
                    "the speaker model is not installed at {} (run `voxline models install`)",
                    self.model_dir.display()
                )));
            };
            let cancel = CancelOnDrop::default();
            let cancelled = cancel.0.clone();
            let found =
                tokio::task::spawn_blocking(move || speakers::diarize(&encoder, &mono, &cancelled))
                    .await
                    .map_err(|e| HandlerError::retry(format!("the diarization task failed: {e}")))?
                    .map_err(|e| HandlerError::permanent(format!("diarization failed: {e}")))?;
            drop(cancel);
            Ok(match found {
                Diarization::Speakers { count, turns } => Voices::Turns {
                    count,
                    turns: turns
                        .into_iter()
                        .map(|t| VoiceTurn {
                            voice: t.speaker,
                            start: t.start,
                            end: t.end,
                        })
                        .collect(),
                },
                Diarization::OneVoice { .. } => Voices::One,
                Diarization::NotConfident { reason } => Voices::NotConfident(reason),
                Diarization::NoSpeech => Voices::NoSpeech,
            })
        })
    }
}
