//! Who said what in an uploaded recording.
//!
//! 1. **Several channels** (and not one signal saved twice): each channel is one speaker,
//!    named by the session's `channels` (default: the user on channel 0, partners on the
//!    rest). Each channel, its bleed of the others silenced, is transcribed on its own.
//! 2. **One channel, `channels=user`**: the user alone; no diarization.
//! 3. **One channel, a provider that diarizes** (OpenAI's `…-diarize` models): its voices.
//! 4. **One channel otherwise**: the [`Diarizer`] tells the voices apart; each voice's track
//!    (the others' turns silenced) is transcribed on its own. The session's `user_speaker`
//!    (`first` by default) says which voice, by order of first speech, is the user's.
//!
//! Each track's segments are tightened to their sound and merged by time (see [`tracks`]).
//! When the voices cannot be told apart (diarization not confident, no speaker model), the
//! segments are `unknown` and the [`Attribution`] says why: nothing the partner said is ever
//! counted as the user's. One confident voice is the user's, with no partner to measure.

use std::sync::Arc;

use voxline_domain::sessions::SessionRow;
use voxline_domain::speakers::{
    Attribution, AttributionMethod, AttributionStatus, ChannelSpeaker, Channels, UserSpeaker,
};
use voxline_jobs::HandlerError;

use super::decode::{self, Undecoded};
use super::tracks::{self, SAMPLE_RATE, Track};
use super::{Audio, Clip, ClipProgress, Diarizer, Transcriber, Transcript, Voices};
use crate::analysis::metrics::{Segment, Speaker};

/// What the session says about its speakers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layout {
    pub channels: Option<Channels>,
    pub user_speaker: UserSpeaker,
}

impl Layout {
    /// Read from the session row; the API stored values it had checked, so a value that does
    /// not parse is a permanent error.
    pub fn of(session: &SessionRow) -> Result<Self, HandlerError> {
        let channels = session
            .channels
            .as_deref()
            .map(str::parse::<Channels>)
            .transpose()
            .map_err(|e| HandlerError::permanent(format!("the session's channels: {e}")))?;
        let user_speaker = session
            .user_speaker
            .as_deref()
            .map(str::parse::<UserSpeaker>)
            .transpose()
            .map_err(|e| HandlerError::permanent(format!("the session's user_speaker: {e}")))?
            .unwrap_or_default();
        Ok(Layout {
            channels,
            user_speaker,
        })
    }
}

/// The transcript with its speakers.
#[derive(Debug, Clone, PartialEq)]
pub struct Heard {
    pub segments: Vec<Segment>,
    pub attribution: Attribution,
    pub duration_seconds: Option<f64>,
}

fn attribution(
    method: AttributionMethod,
    status: AttributionStatus,
    count: Option<usize>,
    reason: Option<String>,
) -> Attribution {
    Attribution {
        method,
        status,
        count,
        reason,
    }
}

fn speaker(channel: ChannelSpeaker) -> Speaker {
    match channel {
        ChannelSpeaker::User => Speaker::User,
        ChannelSpeaker::Partner => Speaker::Partner,
    }
}

fn labelled(mut transcript: Transcript, who: Speaker) -> Vec<Segment> {
    for segment in &mut transcript.segments {
        segment.speaker = who;
    }
    transcript.segments
}

pub async fn hear(
    transcriber: &dyn Transcriber,
    diarizer: &dyn Diarizer,
    audio: Audio,
    layout: &Layout,
    progress: &ClipProgress,
) -> Result<Heard, HandlerError> {
    let audio = Arc::new(audio);
    let channels = match decode::channels(&audio).await {
        Ok(channels) => channels,
        Err(Undecoded::Failed(e)) => return Err(e),
        Err(Undecoded::NoDecoder) => {
            return whole_file(transcriber, audio, layout, progress).await;
        }
    };
    let duration_seconds = channels
        .first()
        .map(|c| c.len() as f64 / SAMPLE_RATE as f64);
    let count = channels.len();
    let named = layout.channels.as_ref().map(|c| c.0.len());
    let duplicated = count > 1 && tracks::are_duplicates(&channels);
    let mut heard = if count > 1 && !duplicated {
        let names = layout
            .channels
            .clone()
            .unwrap_or_else(|| Channels::default_for(count));
        if names.0.len() != count {
            return Err(channel_mismatch(names.0.len(), count));
        }
        let speakers: Vec<Speaker> = names.0.iter().map(|c| speaker(*c)).collect();
        let tracks = tracks::channel_tracks(channels, &speakers);
        Heard {
            segments: transcribe_tracks(transcriber, tracks, progress).await?,
            attribution: attribution(
                AttributionMethod::Channels,
                AttributionStatus::Separated,
                Some(count),
                None,
            ),
            duration_seconds,
        }
    } else {
        if let Some(named) = named
            && named != count
            && !duplicated
        {
            return Err(channel_mismatch(named, count));
        }
        let mono = if count == 1 {
            channels.into_iter().next().unwrap_or_default()
        } else {
            tracks::mixdown(&channels)
        };
        let declared_user = layout
            .channels
            .as_ref()
            .is_some_and(|c| c.0 == [ChannelSpeaker::User]);
        let mut heard = if declared_user {
            let clip = if count == 1 {
                Clip::File(audio.clone())
            } else {
                track(mono)
            };
            let segments = labelled(
                transcriber.transcribe_reporting(&clip, progress).await?,
                Speaker::User,
            );
            Heard {
                segments,
                attribution: attribution(
                    AttributionMethod::Declared,
                    AttributionStatus::OneVoice,
                    Some(1),
                    Some("the recording was declared to be the user alone".into()),
                ),
                duration_seconds,
            }
        } else if transcriber.diarizes() {
            let clip = if count == 1 {
                Clip::File(audio.clone())
            } else {
                track(mono)
            };
            provider_voices(
                transcriber.transcribe_reporting(&clip, progress).await?,
                layout.user_speaker,
            )
        } else {
            // A mono upload is sent as it came when it is not split into voices.
            let whole = (count == 1).then(|| audio.clone());
            diarized(
                transcriber,
                diarizer,
                mono,
                whole,
                layout.user_speaker,
                progress,
            )
            .await?
        };
        if duplicated && let Some(reason) = &mut heard.attribution.reason {
            reason.push_str(" (its channels carry the same signal, so it was heard as mono)");
        }
        heard.duration_seconds = duration_seconds;
        heard
    };
    heard.segments.retain(|s| !s.text.trim().is_empty());
    Ok(heard)
}

fn channel_mismatch(named: usize, actual: usize) -> HandlerError {
    HandlerError::permanent(format!(
        "channels names {named} speakers but the recording has {actual} channel{}",
        if actual == 1 { "" } else { "s" }
    ))
}

fn track(samples: Vec<f32>) -> Clip {
    Clip::Track(Arc::new(samples))
}

/// Transcribes each track, tightens its segments to its sound and merges them by time. Each
/// track is an equal share of `progress`.
async fn transcribe_tracks(
    transcriber: &dyn Transcriber,
    tracks: Vec<Track>,
    progress: &ClipProgress,
) -> Result<Vec<Segment>, HandlerError> {
    let count = tracks.len();
    let mut heard = Vec::with_capacity(count);
    for (index, Track { speaker, samples }) in tracks.into_iter().enumerate() {
        let samples = Arc::new(samples);
        let part = progress.track(index, count);
        part.heard(0.0, 1.0, "started").await;
        let transcript = transcriber
            .transcribe_reporting(&Clip::Track(samples.clone()), &part)
            .await?;
        let mut segments = labelled(transcript, speaker);
        tracks::tighten(&mut segments, &samples);
        heard.push(segments);
    }
    Ok(tracks::merge(heard))
}

/// `whole` is the upload itself when it is mono: sent unchanged unless it is split by voice.
async fn diarized(
    transcriber: &dyn Transcriber,
    diarizer: &dyn Diarizer,
    mono: Vec<f32>,
    whole: Option<Arc<Audio>>,
    user_speaker: UserSpeaker,
    progress: &ClipProgress,
) -> Result<Heard, HandlerError> {
    let mono = Arc::new(mono);
    let undetermined = |method, reason: String| {
        attribution(
            method,
            AttributionStatus::Undetermined,
            None,
            Some(format!("the speakers could not be told apart: {reason}")),
        )
    };
    let (who, attribution) = match diarizer.voices(mono.clone()).await? {
        Voices::Turns { count, turns } => {
            let user = user_speaker.index();
            let tracks = tracks::voice_tracks(&mono, &turns, count, |voice| {
                if voice == user {
                    Speaker::User
                } else {
                    Speaker::Partner
                }
            });
            return Ok(Heard {
                segments: transcribe_tracks(transcriber, tracks, progress).await?,
                attribution: attribution(
                    AttributionMethod::Diarization,
                    AttributionStatus::Separated,
                    Some(count),
                    None,
                ),
                duration_seconds: None,
            });
        }
        Voices::One => (
            Speaker::User,
            attribution(
                AttributionMethod::Diarization,
                AttributionStatus::OneVoice,
                Some(1),
                Some("one voice was heard in the recording".into()),
            ),
        ),
        Voices::NotConfident(reason) => (
            Speaker::Unknown,
            undetermined(AttributionMethod::Diarization, reason),
        ),
        Voices::Unavailable(reason) => (
            Speaker::Unknown,
            undetermined(AttributionMethod::None, reason),
        ),
        Voices::NoSpeech => (
            Speaker::Unknown,
            undetermined(
                AttributionMethod::Diarization,
                "the speaker model found no speech".into(),
            ),
        ),
    };
    let clip = match whole {
        Some(audio) => Clip::File(audio),
        None => Clip::Track(mono),
    };
    let transcript = transcriber.transcribe_reporting(&clip, progress).await?;
    Ok(Heard {
        segments: labelled(transcript, who),
        attribution,
        duration_seconds: None,
    })
}

/// A diarizing provider's voices: `user_speaker` picks the user's by order of first speech.
fn provider_voices(transcript: Transcript, user_speaker: UserSpeaker) -> Heard {
    let duration_seconds = transcript.duration();
    let Some(voices) = transcript
        .voices
        .clone()
        .filter(|v| v.len() == transcript.segments.len())
    else {
        return Heard {
            segments: labelled(transcript, Speaker::Unknown),
            attribution: attribution(
                AttributionMethod::Provider,
                AttributionStatus::Undetermined,
                None,
                Some("the provider's answer named no speakers".into()),
            ),
            duration_seconds,
        };
    };
    let count = voices.iter().max().map_or(0, |m| m + 1);
    let user = user_speaker.index();
    let (status, reason) = if count <= 1 {
        (
            AttributionStatus::OneVoice,
            Some("one voice was heard in the recording".to_string()),
        )
    } else {
        (AttributionStatus::Separated, None)
    };
    let segments = transcript
        .segments
        .into_iter()
        .zip(voices)
        .map(|(mut segment, voice)| {
            segment.speaker = if voice == user || count <= 1 {
                Speaker::User
            } else {
                Speaker::Partner
            };
            segment
        })
        .collect();
    Heard {
        segments,
        attribution: attribution(AttributionMethod::Provider, status, Some(count), reason),
        duration_seconds,
    }
}

/// A build that cannot decode: the provider gets the file as uploaded.
async fn whole_file(
    transcriber: &dyn Transcriber,
    audio: Arc<Audio>,
    layout: &Layout,
    progress: &ClipProgress,
) -> Result<Heard, HandlerError> {
    let transcript = transcriber
        .transcribe_reporting(&Clip::File(audio), progress)
        .await?;
    if transcriber.diarizes() {
        return Ok(provider_voices(transcript, layout.user_speaker));
    }
    let duration_seconds = transcript.duration();
    let declared_user = layout
        .channels
        .as_ref()
        .is_some_and(|c| c.0 == [ChannelSpeaker::User]);
    let (who, attribution) = if declared_user {
        (
            Speaker::User,
            attribution(
                AttributionMethod::Declared,
                AttributionStatus::OneVoice,
                Some(1),
                Some("the recording was declared to be the user alone".into()),
            ),
        )
    } else {
        (
            Speaker::Unknown,
            attribution(
                AttributionMethod::None,
                AttributionStatus::Undetermined,
                None,
                Some(
                    "the speakers could not be told apart: this build cannot decode audio \
                     to split it by channel or voice"
                        .into(),
                ),
            ),
        )
    };
    Ok(Heard {
        segments: labelled(transcript, who),
        attribution,
        duration_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(start: f64, text: &str) -> Segment {
        Segment {
            speaker: Speaker::Unknown,
            start: Some(start),
            end: Some(start + 1.0),
            text: text.into(),
        }
    }

    #[test]
    fn a_providers_voices_become_speakers_by_order_of_first_speech() {
        let transcript = Transcript {
            segments: vec![
                segment(0.0, "Hi."),
                segment(1.0, "Hello."),
                segment(2.0, "So?"),
            ],
            duration_seconds: Some(3.0),
            voices: Some(vec![0, 1, 0]),
        };
        let first = provider_voices(transcript.clone(), UserSpeaker::First);
        let who: Vec<Speaker> = first.segments.iter().map(|s| s.speaker).collect();
        assert_eq!(who, [Speaker::User, Speaker::Partner, Speaker::User]);
        assert_eq!(first.attribution.status, AttributionStatus::Separated);
        assert_eq!(first.attribution.count, Some(2));
        let second = provider_voices(transcript, UserSpeaker::Second);
        let who: Vec<Speaker> = second.segments.iter().map(|s| s.speaker).collect();
        assert_eq!(who, [Speaker::Partner, Speaker::User, Speaker::Partner]);
    }

    #[test]
    fn a_provider_answer_without_voices_counts_nothing_as_the_users() {
        let heard = provider_voices(
            Transcript {
                segments: vec![segment(0.0, "Hi.")],
                duration_seconds: None,
                voices: None,
            },
            UserSpeaker::First,
        );
        assert_eq!(heard.segments[0].speaker, Speaker::Unknown);
        assert_eq!(heard.attribution.status, AttributionStatus::Undetermined);
    }
}
