//! The `local` provider: Whisper tiny.en on this machine's CPU (crate `voxline-whisper`), so
//! the embedded default turns a recording into feedback with no API key and no network.
//!
//! The model is loaded on the first job and kept (loading costs about a second and ~100 MB).
//! Decoding and inference are CPU-bound, so they run on the blocking pool. Whisper does not
//! tell speakers apart: it is given one speaker's track at a time (see [`super::conversation`]),
//! and [`LocalDiarizer`] finds the voices of a mono recording with the GE2E speaker model.
//! Whisper tends to leave "um" and "uh" out, so filler counts are "as transcribed" (the
//! analysis says so).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::OnceCell;
use voxline_jobs::HandlerError;
use voxline_whisper::{AudioError, LocalWhisper, TranscribeError, WindowsHeard};

use super::{BoxFuture, Clip, ClipProgress, Transcriber, Transcript};
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
pub(super) struct CancelOnDrop(pub(super) Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn transcribe_error(e: TranscribeError) -> HandlerError {
    HandlerError::permanent(format!("local transcription failed: {e}"))
}

/// What a window's progress says: "2 windows, 40 of 95 s".
fn window_note(heard: &WindowsHeard) -> String {
    format!(
        "{} window{}, {:.0} of {:.0} s",
        heard.windows,
        if heard.windows == 1 { "" } else { "s" },
        heard.heard_secs,
        heard.total_secs
    )
}

impl Transcriber for LocalTranscriber {
    fn transcribe<'a>(&'a self, clip: &'a Clip) -> BoxFuture<'a, Result<Transcript, HandlerError>> {
        Box::pin(async move {
            let progress = ClipProgress::detached();
            self.transcribe_reporting(clip, &progress).await
        })
    }

    /// Reports after each Whisper window: the blocking work sends how far it got, and this
    /// future writes it while it waits.
    fn transcribe_reporting<'a>(
        &'a self,
        clip: &'a Clip,
        progress: &'a ClipProgress,
    ) -> BoxFuture<'a, Result<Transcript, HandlerError>> {
        Box::pin(async move {
            let model = self.model().await?;
            let clip = clip.clone();
            // Dropped with this future (the attempt timed out or its lease was lost): the
            // blocking work then stops before its next window instead of running on beside the
            // next attempt's.
            let cancel = CancelOnDrop::default();
            let cancelled = cancel.0.clone();
            let (windows, mut heard_so_far) = tokio::sync::mpsc::unbounded_channel();
            let mut task = tokio::task::spawn_blocking(move || {
                let decoded;
                let samples: &[f32] = match &clip {
                    Clip::Track(samples) => samples,
                    Clip::File(audio) => {
                        let extension = audio.file_name.rsplit_once('.').map(|(_, ext)| ext);
                        decoded = voxline_whisper::decode_bytes(audio.bytes.clone(), extension)
                            .map_err(audio_error)?;
                        &decoded
                    }
                };
                let seconds = voxline_whisper::audio::duration_secs(samples);
                // The receiver is gone only once the attempt has given up (then `cancelled`
                // stops the work): a lost report does not matter.
                let mut on_window = |heard: WindowsHeard| {
                    let _ = windows.send(heard);
                };
                let segments = model
                    .transcribe_reporting(samples, &cancelled, &mut on_window)
                    .map_err(transcribe_error)?;
                Ok::<_, HandlerError>((segments, seconds))
            });
            let heard = loop {
                // Reports first: every window sent before the work finished is written.
                tokio::select! {
                    biased;
                    Some(window) = heard_so_far.recv() => {
                        progress
                            .heard(window.heard_secs, window.total_secs, &window_note(&window))
                            .await;
                    }
                    finished = &mut task => break finished,
                }
            }
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
                voices: None,
            })
        })
    }
}
