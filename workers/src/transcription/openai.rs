//! OpenAI speech-to-text: `POST /audio/transcriptions` asking for `verbose_json` with segment
//! timestamps, normalised into transcript segments.
//!
//! The answer is read by our own lenient type rather than async-openai's verbose-JSON one:
//! that type requires `language`, `duration` and `usage`, and a model or compatible server that
//! answers plain `{"text": …}` (no timestamps) must still give us the words.

use async_openai::types::audio::{
    AudioInput, AudioResponseFormat, CreateTranscriptionRequest, TimestampGranularity,
};
use serde::Deserialize;
use voxline_jobs::HandlerError;

use super::{Audio, BoxFuture, Transcriber, Transcript};
use crate::analysis::metrics::{Segment, Speaker};
use crate::openai::OpenAi;

/// The parts of a transcription answer we use; everything else is ignored.
#[derive(Debug, Deserialize)]
pub struct RawTranscript {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub duration: Option<f64>,
    #[serde(default)]
    pub segments: Option<Vec<RawSegment>>,
}

#[derive(Debug, Deserialize)]
pub struct RawSegment {
    pub start: Option<f64>,
    pub end: Option<f64>,
    #[serde(default)]
    pub text: String,
}

/// Segments as voxline stores them. Every segment is the user's: an uploaded recording is not
/// diarised (whisper does not tell speakers apart), so the whole recording counts as the
/// person practising, and partner-based metrics (talk ratio, patience) reflect that.
/// Without segment timestamps the text is kept as one segment with unknown start and end, so
/// the word-based metrics still work and the time-based ones say they are unavailable.
pub fn normalise(raw: RawTranscript) -> Transcript {
    let timed: Vec<Segment> = raw
        .segments
        .unwrap_or_default()
        .into_iter()
        .filter(|s| !s.text.trim().is_empty())
        .map(|s| Segment {
            speaker: Speaker::User,
            start: s.start,
            end: s.end,
            text: s.text.trim().to_string(),
        })
        .collect();
    let segments = if timed.is_empty() && !raw.text.trim().is_empty() {
        vec![Segment {
            speaker: Speaker::User,
            start: None,
            end: None,
            text: raw.text.trim().to_string(),
        }]
    } else {
        timed
    };
    Transcript {
        segments,
        duration_seconds: raw.duration.filter(|d| d.is_finite() && *d >= 0.0),
    }
}

impl Transcriber for OpenAi {
    fn transcribe<'a>(
        &'a self,
        audio: &'a Audio,
    ) -> BoxFuture<'a, Result<Transcript, HandlerError>> {
        Box::pin(async move {
            let request = CreateTranscriptionRequest {
                file: AudioInput::from_vec_u8(audio.file_name.clone(), audio.bytes.clone()),
                model: self.transcription_model.clone(),
                response_format: Some(AudioResponseFormat::VerboseJson),
                timestamp_granularities: Some(vec![TimestampGranularity::Segment]),
                ..Default::default()
            };
            let body = self
                .call(self.client().audio().transcription().create_raw(request))
                .await?;
            let raw: RawTranscript = serde_json::from_slice(&body).map_err(|e| {
                HandlerError::retry(format!("OpenAI's transcription could not be read: {e}"))
            })?;
            Ok(normalise(raw))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> RawTranscript {
        serde_json::from_str(json).expect("transcription answer")
    }

    #[test]
    fn verbose_json_segments_become_the_users_timed_segments() {
        let t = normalise(raw(
            r#"{"task":"transcribe","language":"english","duration":4.5,"text":"Hello there. How are you?",
                "segments":[{"id":0,"seek":0,"start":0.0,"end":1.8,"text":" Hello there.","tokens":[1]},
                            {"id":1,"seek":0,"start":1.8,"end":4.4,"text":" How are you?","tokens":[2]},
                            {"id":2,"seek":0,"start":4.4,"end":4.5,"text":"  ","tokens":[]}],
                "usage":{"type":"duration","seconds":5}}"#,
        ));
        assert_eq!(
            t.segments,
            vec![
                Segment {
                    speaker: Speaker::User,
                    start: Some(0.0),
                    end: Some(1.8),
                    text: "Hello there.".into()
                },
                Segment {
                    speaker: Speaker::User,
                    start: Some(1.8),
                    end: Some(4.4),
                    text: "How are you?".into()
                },
            ]
        );
        assert_eq!(t.duration(), Some(4.5));
    }

    #[test]
    fn an_answer_without_timestamps_keeps_the_text_as_one_untimed_segment() {
        let t = normalise(raw(r#"{"text":" Just the words. "}"#));
        assert_eq!(
            t.segments,
            vec![Segment {
                speaker: Speaker::User,
                start: None,
                end: None,
                text: "Just the words.".into()
            }]
        );
        assert_eq!(t.duration(), None);
    }

    #[test]
    fn without_a_duration_the_span_of_the_segments_is_used() {
        let t = normalise(raw(
            r#"{"text":"a b","segments":[{"start":1.0,"end":2.0,"text":"a"},{"start":2.0,"end":3.5,"text":"b"}]}"#,
        ));
        assert_eq!(t.duration(), Some(2.5));
    }

    #[test]
    fn silence_gives_no_segments() {
        assert!(
            normalise(raw(r#"{"text":"","segments":[]}"#))
                .segments
                .is_empty()
        );
    }
}
