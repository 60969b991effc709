//! The user's voice for the voice metrics: the session's recording, decoded again, reduced to
//! what the user said. With one speaker per channel it is the user's channel; otherwise the
//! whole recording, measured only inside the user's segments (see [`super::voice`]). Every
//! reason there is nothing to measure is a sentence for the feedback, not a failed job; only a
//! storage error that may pass (I/O) retries.

use voxline_domain::blobs::{BlobError, BlobStore};
use voxline_domain::sessions::SessionRow;
use voxline_domain::speakers::{Attribution, AttributionMethod, AttributionStatus, ChannelSpeaker};
use voxline_jobs::HandlerError;

use super::metrics::Segment;
use super::voice::{self, VoiceMetrics};
use crate::transcription::conversation::Layout;
use crate::transcription::decode::{self, Undecoded};
use crate::transcription::{Audio, tracks};

/// The voice metrics, or why there are none.
pub async fn voice_metrics(
    blobs: &dyn BlobStore,
    session: &SessionRow,
    attribution: Option<&Attribution>,
    segments: &[Segment],
) -> Result<Result<VoiceMetrics, String>, HandlerError> {
    let Some(key) = session.audio_ref.as_deref() else {
        return Ok(Err(
            "the session has no recording (a transcript without audio)".into(),
        ));
    };
    if attribution.is_some_and(|a| a.status == AttributionStatus::Undetermined) {
        return Ok(Err(
            "the speakers could not be told apart, so the user's voice cannot be picked out".into(),
        ));
    }
    let bytes = match blobs.get(key).await {
        Ok(bytes) => bytes,
        Err(e @ BlobError::Io { .. }) => return Err(HandlerError::retry(e.to_string())),
        Err(e) => return Ok(Err(format!("the recording cannot be read: {e}"))),
    };
    let extension = key.rsplit_once('.').map(|(_, ext)| ext).unwrap_or_default();
    let audio = Audio {
        file_name: format!("recording.{extension}"),
        bytes,
    };
    let channels = match decode::channels(&audio).await {
        Ok(channels) => channels,
        Err(Undecoded::NoDecoder) => {
            return Ok(Err("this build cannot decode audio".into()));
        }
        Err(Undecoded::Failed(e)) => {
            return Ok(Err(format!("the recording cannot be decoded: {e}")));
        }
    };
    let by_channel = attribution.is_some_and(|a| a.method == AttributionMethod::Channels);
    let samples = if by_channel {
        let layout = Layout::of(session)?;
        let user = layout
            .channels
            .and_then(|c| c.0.iter().position(|s| *s == ChannelSpeaker::User))
            .unwrap_or(0);
        channels.into_iter().nth(user).unwrap_or_default()
    } else {
        tracks::mixdown(&channels)
    };
    let segments = segments.to_vec();
    tokio::task::spawn_blocking(move || Ok(voice::measure(&samples, &segments)))
        .await
        .map_err(|e| HandlerError::retry(format!("the voice measuring task failed: {e}")))
}
