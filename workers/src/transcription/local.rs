//! The `local` provider: Whisper tiny.en on this machine's CPU (crate `voxline-whisper`), so
//! the embedded default turns a recording into feedback with no API key and no network.
//!
//! The model is loaded on the first job and kept (loading costs about a second and ~100 MB).
//! Decoding and inference are CPU-bound, so they run on the blocking pool. Segments come out
//! with speaker "user": one recording is not split by speaker. Whisper tends to leave "um" and
//! "uh" out, so filler counts are "as transcribed" (the analysis says so).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::OnceCell;
use voxline_jobs::HandlerError;
use voxline_whisper::{AudioError, LocalWhisper, TranscribeError};

use super::{Audio, BoxFuture, Transcriber, Transcript};
use crate::analysis::metrics::{Segment, Speaker};

pub struct LocalTranscriber {
    model_dir: PathBuf,
    model: OnceCell<Arc<LocalWhisper>>,
}

impl LocalTranscriber {
    pub fn new(model_dir: PathBuf) -> Self {
        LocalTranscriber {
            model_dir,
            model: OnceCell::new(),
        }
    }

    async fn model(&self) -> Result<Arc<LocalWhisper>, HandlerError> {
        self.model
            .get_or_try_init(|| async {
                let dir = self.model_dir.clone();
                let loaded = tokio::task::spawn_blocking(move || LocalWhisper::load(&dir))
                    .await
                    .map_err(|e| HandlerError::retry(format!("loading the model failed: {e}")))?;
                // A model that does not load will not load on the next attempt either.
                loaded.map(Arc::new).map_err(|e| {
                    HandlerError::permanent(format!(
                        "the local Whisper model at {} cannot be loaded: {e} (reinstall it with \
                         `voxline models install`)",
                        self.model_dir.display()
                    ))
                })
            })
            .await
            .cloned()
    }
}

/// A file that cannot be decoded never will be: the job goes to `dead` with the reason.
fn audio_error(e: AudioError) -> HandlerError {
    match e {
        AudioError::Open { .. } => HandlerError::retry(e.to_string()),
        other => HandlerError::permanent(format!("the recording cannot be decoded: {other}")),
    }
}

/// Sets its flag when dropped: how an async caller tells blocking work it has given up.
#[derive(Default)]
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn transcribe_error(e: TranscribeError) -> HandlerError {
    HandlerError::permanent(format!("local transcription failed: {e}"))
}

impl Transcriber for LocalTranscriber {
    fn transcribe<'a>(
        &'a self,
        audio: &'a Audio,
    ) -> BoxFuture<'a, Result<Transcript, HandlerError>> {
        Box::pin(async move {
            let model = self.model().await?;
            let bytes = audio.bytes.clone();
            let extension = audio
                .file_name
                .rsplit_once('.')
                .map(|(_, ext)| ext.to_string());
            // Dropped with this future (the attempt timed out or its lease was lost): the
            // blocking work then stops before its next window instead of running on beside the
            // next attempt's.
            let cancel = CancelOnDrop::default();
            let cancelled = cancel.0.clone();
            let heard = tokio::task::spawn_blocking(move || {
                let samples = voxline_whisper::decode_bytes(bytes, extension.as_deref())
                    .map_err(audio_error)?;
                let seconds = voxline_whisper::audio::duration_secs(&samples);
                let segments = model
                    .transcribe_until(&samples, &cancelled)
                    .map_err(transcribe_error)?;
                Ok::<_, HandlerError>((segments, seconds))
            })
            .await
            .map_err(|e| HandlerError::retry(format!("the transcription task failed: {e}")))?;
            let (segments, seconds) = heard?;
            Ok(Transcript {
                segments: segments
                    .into_iter()
                    .filter(|s| !s.text.trim().is_empty())
                    .map(|s| Segment {
                        speaker: Speaker::User,
                        start: Some(s.start),
                        end: Some(s.end),
                        text: s.text.trim().to_string(),
                    })
                    .collect(),
                duration_seconds: Some(seconds),
            })
        })
    }
}
