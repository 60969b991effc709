//! The `transcription` worker: turns an uploaded recording into transcript segments, stores
//! them and queues the session's analysis, in one transaction.
//!
//! The speech-to-text provider sits behind [`Transcriber`]: OpenAI ([`openai`]) or, in builds
//! with the `local-whisper` feature, Whisper on this machine (`local`). Who said what is
//! worked out by [`conversation`]: one track per channel, or per voice of a mono recording
//! (told apart by a [`Diarizer`]), each transcribed and merged back by time.

pub mod conversation;
pub(crate) mod decode;
#[cfg(feature = "local-whisper")]
pub mod local;
#[cfg(feature = "local-whisper")]
mod local_speakers;
pub mod openai;
pub mod tracks;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use voxline_domain::blobs::{BlobError, BlobStore, LocalBlobs};
use voxline_domain::config::TranscriptionProvider;
use voxline_domain::db::Scope;
use voxline_domain::sessions::{self, SessionRow};
use voxline_jobs::payloads::{Analysis, SessionJob, Transcription};
use voxline_jobs::{
    ClaimedJob, HandlerError, Handlers, JobClient, Percent, Progress, ProgressWrite,
};

use crate::analysis::metrics::Segment;
use crate::openai::OpenAi;

/// A recording to transcribe. The file name carries the extension providers use to tell the
/// format (`<session>.wav`).
#[derive(Debug, Clone)]
pub struct Audio {
    pub file_name: String,
    pub bytes: Vec<u8>,
}

/// What a provider is asked to transcribe.
#[derive(Debug, Clone)]
pub enum Clip {
    /// The upload as it was received.
    File(Arc<Audio>),
    /// One speaker's track: 16 kHz mono samples, everyone else silenced.
    Track(Arc<Vec<f32>>),
}

/// What a provider heard.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub segments: Vec<Segment>,
    /// The recording's length when the provider reports it.
    pub duration_seconds: Option<f64>,
    /// For a provider that tells voices apart itself: each segment's voice, numbered by first
    /// speech (0 = the first to speak).
    pub voices: Option<Vec<usize>>,
}

impl Transcript {
    /// The recording's length: the provider's figure, else the span of the timed segments.
    pub fn duration(&self) -> Option<f64> {
        self.duration_seconds.or_else(|| {
            let start = self.segments.first()?.start?;
            let end = self.segments.last()?.end?;
            Some((end - start).max(0.0))
        })
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a transcription reports how far it got: the job's [`Progress`], shared out over the
/// tracks a recording is heard in (this clip is track `index` of `tracks`).
#[derive(Debug, Clone)]
pub struct ClipProgress {
    job: Progress,
    index: usize,
    tracks: usize,
}

impl ClipProgress {
    /// The whole job's progress is this one clip's.
    pub fn new(job: Progress) -> Self {
        ClipProgress {
            job,
            index: 0,
            tracks: 1,
        }
    }

    /// Reports nothing.
    pub fn detached() -> Self {
        ClipProgress::new(Progress::detached())
    }

    /// Track `index` (from 0) of `tracks`, each an equal share of the job.
    pub fn track(&self, index: usize, tracks: usize) -> Self {
        ClipProgress {
            job: self.job.clone(),
            index: index.min(tracks.saturating_sub(1)),
            tracks: tracks.max(1),
        }
    }

    /// `heard` of `total` (any unit) of this clip heard; `detail` says how far, e.g.
    /// "2 windows, 40 of 95 s". A failed write is logged, never the job's failure.
    pub async fn heard(&self, heard: f64, total: f64, detail: &str) {
        let fraction = if total > 0.0 {
            (heard / total).clamp(0.0, 1.0)
        } else {
            0.0
        };
        // Thousandths of the whole job, so several tracks share 0..=100 without rounding up.
        let done = ((self.index as f64 + fraction) * 1000.0) as u64;
        let percent = Percent::of(done, self.tracks as u64 * 1000);
        let note = if self.tracks > 1 {
            format!(
                "transcribing track {} of {}: {detail}",
                self.index + 1,
                self.tracks
            )
        } else {
            format!("transcribing: {detail}")
        };
        match self.job.report(percent, &note).await {
            Ok(ProgressWrite::NotHeld) => {
                tracing::debug!("progress not written: the attempt no longer holds its job")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "writing the transcription's progress failed"),
        }
    }
}

/// A speech-to-text provider. Errors are already classified for the engine (retry, permanent,
/// snooze), because only the adapter knows what its provider's failures mean.
pub trait Transcriber: Send + Sync {
    fn transcribe<'a>(&'a self, clip: &'a Clip) -> BoxFuture<'a, Result<Transcript, HandlerError>>;

    /// As [`Transcriber::transcribe`], reporting how far it got to `progress` on the way (a
    /// provider that cannot tell reports nothing: the tracks around it still do).
    fn transcribe_reporting<'a>(
        &'a self,
        clip: &'a Clip,
        progress: &'a ClipProgress,
    ) -> BoxFuture<'a, Result<Transcript, HandlerError>> {
        let _ = progress;
        self.transcribe(clip)
    }

    /// Whether [`Transcript::voices`] comes back filled in (the provider diarizes).
    fn diarizes(&self) -> bool {
        false
    }
}

/// What a [`Diarizer`] made of a mono recording.
#[derive(Debug, Clone, PartialEq)]
pub enum Voices {
    /// Two or more voices and when each spoke (numbered by first speech).
    Turns {
        count: usize,
        turns: Vec<tracks::VoiceTurn>,
    },
    /// Confidently one voice.
    One,
    /// Voices that could not be told apart, with the reason.
    NotConfident(String),
    /// No diarizer could run (no model installed, a build without one), with the reason.
    Unavailable(String),
    /// No speech found to tell apart.
    NoSpeech,
}

/// Tells the voices of a 16 kHz mono recording apart.
pub trait Diarizer: Send + Sync {
    fn voices<'a>(&'a self, mono: Arc<Vec<f32>>) -> BoxFuture<'a, Result<Voices, HandlerError>>;
}

/// The diarizer of builds and installs without a speaker model.
pub struct NoDiarizer(pub String);

impl Diarizer for NoDiarizer {
    fn voices<'a>(&'a self, _: Arc<Vec<f32>>) -> BoxFuture<'a, Result<Voices, HandlerError>> {
        Box::pin(async move { Ok(Voices::Unavailable(self.0.clone())) })
    }
}

/// Stands in for the local Whisper provider in builds without it.
#[cfg(not(feature = "local-whisper"))]
struct LocalUnavailable;

#[cfg(not(feature = "local-whisper"))]
impl Transcriber for LocalUnavailable {
    fn transcribe<'a>(&'a self, _: &'a Clip) -> BoxFuture<'a, Result<Transcript, HandlerError>> {
        Box::pin(async {
            Err(HandlerError::permanent(
                "local transcription is not available in this build",
            ))
        })
    }
}

#[cfg(feature = "local-whisper")]
fn local_transcriber(settings: &voxline_domain::Settings) -> Arc<dyn Transcriber> {
    Arc::new(local::LocalTranscriber::new(settings.local_model_dir()))
}

#[cfg(not(feature = "local-whisper"))]
fn local_transcriber(_: &voxline_domain::Settings) -> Arc<dyn Transcriber> {
    Arc::new(LocalUnavailable)
}

#[cfg(feature = "local-whisper")]
fn diarizer(settings: &voxline_domain::Settings) -> Arc<dyn Diarizer> {
    Arc::new(local_speakers::LocalDiarizer::new(
        settings.speaker_model_dir(),
    ))
}

#[cfg(not(feature = "local-whisper"))]
fn diarizer(_: &voxline_domain::Settings) -> Arc<dyn Diarizer> {
    Arc::new(NoDiarizer(
        "this build has no speaker model (the local-whisper feature is off)".to_string(),
    ))
}

pub struct TranscriptionWorker {
    jobs: JobClient,
    blobs: Arc<dyn BlobStore>,
    openai: Arc<OpenAi>,
    local: Arc<dyn Transcriber>,
    diarizer: Arc<dyn Diarizer>,
}

impl TranscriptionWorker {
    pub fn new(jobs: JobClient, openai: Arc<OpenAi>) -> Self {
        let blobs = Arc::new(LocalBlobs::new(jobs.settings().blob_dir()));
        let local = local_transcriber(jobs.settings());
        let diarizer = diarizer(jobs.settings());
        TranscriptionWorker {
            jobs,
            blobs,
            openai,
            local,
            diarizer,
        }
    }

    pub fn register(self, handlers: Handlers) -> Handlers {
        let worker = Arc::new(self);
        handlers.add_worker(move |job: ClaimedJob, Transcription(task)| {
            let worker = worker.clone();
            async move { worker.transcribe(&task, &job.progress).await }
        })
    }

    /// The provider is looked up per job: `voxline models install` may add the local model
    /// while the worker runs.
    fn transcriber(&self) -> Result<&dyn Transcriber, HandlerError> {
        match self.jobs.settings().transcription_provider() {
            Some(TranscriptionProvider::OpenAi) => Ok(self.openai.as_ref()),
            Some(TranscriptionProvider::Local) => Ok(self.local.as_ref()),
            // The API refuses uploads in this configuration; a job queued before it changed
            // can never be done.
            None => Err(HandlerError::permanent(
                "audio transcription is not enabled on this server (set openai.api_key or \
                 install the local model)",
            )),
        }
    }

    async fn transcribe(&self, task: &SessionJob, progress: &Progress) -> Result<(), HandlerError> {
        let db = self.jobs.db();
        let retry = |e: voxline_domain::DbError| HandlerError::retry(e.to_string());
        let Some(session) = sessions::get(db, &task.company_id, &task.session_id)
            .await
            .map_err(retry)?
        else {
            tracing::info!(session = %task.session_id, "session no longer exists; nothing to transcribe");
            return Ok(());
        };
        if session.status == "ready" {
            // A late duplicate run (e.g. a rescued job whose first run finished): transcribing
            // again would only cost money; the analysis is already done.
            return Ok(());
        }
        let transcriber = self.transcriber()?;
        sessions::set_status(db, &task.company_id, &task.session_id, "transcribing", None)
            .await
            .map_err(retry)?;
        let audio = self.audio(&session).await?;
        let layout = conversation::Layout::of(&session)?;
        let progress = ClipProgress::new(progress.clone());
        progress.heard(0.0, 1.0, "reading the recording").await;
        let heard = conversation::hear(
            transcriber,
            self.diarizer.as_ref(),
            audio,
            &layout,
            &progress,
        )
        .await?;
        if heard.segments.is_empty() {
            return Err(HandlerError::permanent(
                "no speech was recognised in the recording",
            ));
        }
        let unstorable = |e: serde_json::Error| {
            HandlerError::permanent(format!("transcript could not be stored: {e}"))
        };
        let segments = serde_json::to_value(&heard.segments).map_err(unstorable)?;
        let speakers = serde_json::to_value(&heard.attribution).map_err(unstorable)?;
        let analysis = Analysis(task.clone());
        // The transcript and the next step commit together: a crash in between can neither
        // leave a transcript nobody analyses nor an analysis without a transcript.
        let mut tx = db
            .begin(Scope::Company(&task.company_id))
            .await
            .map_err(retry)?;
        sessions::save_transcript(
            &mut tx,
            &task.company_id,
            &task.session_id,
            &segments,
            Some(&speakers),
            heard.duration_seconds,
        )
        .await
        .map_err(retry)?;
        self.jobs
            .enqueue(&mut tx, &analysis)
            .await
            .map_err(|e| HandlerError::retry(e.to_string()))?;
        tx.commit().await.map_err(retry)?;
        tracing::info!(
            session = %task.session_id,
            segments = heard.segments.len(),
            speakers = ?heard.attribution.method,
            "transcribed"
        );
        Ok(())
    }

    async fn audio(&self, session: &SessionRow) -> Result<Audio, HandlerError> {
        let Some(key) = session.audio_ref.as_deref() else {
            return Err(HandlerError::permanent(format!(
                "session {} has no audio to transcribe",
                session.id
            )));
        };
        let bytes = self.blobs.get(key).await.map_err(|e| match e {
            BlobError::NotFound(_) | BlobError::BadKey(_) => {
                HandlerError::permanent(format!("the session's audio cannot be read: {e}"))
            }
            BlobError::Io { .. } => HandlerError::retry(e.to_string()),
        })?;
        let mut file_name = key.rsplit('/').next().unwrap_or(key).to_string();
        if let (false, Some(ext)) = (file_name.contains('.'), &session.audio_type) {
            // Providers tell the format by the extension.
            file_name = format!("{file_name}.{ext}");
        }
        Ok(Audio { file_name, bytes })
    }
}
