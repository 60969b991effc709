//! OpenAI speech-to-text: `POST /audio/transcriptions` asking for `verbose_json` with segment
//! timestamps, normalised into transcript segments. A model that diarizes (its name ends in
//! `-diarize`, as `gpt-4o-transcribe-diarize`) is asked for `diarized_json` with automatic
//! chunking, and its speaker labels become voices numbered by first speech; any other model
//! is given one speaker's track at a time (see [`super::conversation`]), encoded as 16-bit WAV.
//!
//! The answer is read by our own lenient type rather than async-openai's verbose-JSON one:
//! that type requires `language`, `duration` and `usage`, and a model or compatible server that
//! answers plain `{"text": …}` (no timestamps) must still give us the words.

use std::collections::HashMap;

use async_openai::types::audio::{
    AudioInput, AudioResponseFormat, CreateTranscriptionRequest, TimestampGranularity,
    TranscriptionChunkingStrategy,
};
use serde::Deserialize;
use voxline_jobs::HandlerError;

use super::tracks::SAMPLE_RATE;
use super::{BoxFuture, Clip, Transcriber, Transcript};
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
    /// A diarizing model's speaker label (`"A"`, `"B"`, or a known speaker's name).
    #[serde(default)]
    pub speaker: Option<String>,
}

/// Whether `model` tells speakers apart (and takes `diarized_json`).
pub fn model_diarizes(model: &str) -> bool {
    model.ends_with("-diarize")
}

/// Segments as voxline stores them, each labelled the user's: the caller knows whose track
/// it sent and relabels them (see [`super::conversation`]). When every segment carries a
/// speaker label (a diarizing model), the labels become voices numbered by first speech.
/// Without segment timestamps the text is kept as one segment with unknown start and end, so
/// the word-based metrics still work and the time-based ones say they are unavailable.
pub fn normalise(raw: RawTranscript) -> Transcript {
    let kept: Vec<RawSegment> = raw
        .segments
        .unwrap_or_default()
        .into_iter()
        .filter(|s| !s.text.trim().is_empty())
        .collect();
    let voices = kept
        .iter()
        .all(|s| s.speaker.is_some())
        .then(|| {
            let mut numbered: HashMap<&str, usize> = HashMap::new();
            kept.iter()
                .map(|s| {
                    let next = numbered.len();
                    *numbered
                        .entry(s.speaker.as_deref().unwrap_or_default())
                        .or_insert(next)
                })
                .collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty());
    let timed: Vec<Segment> = kept
        .into_iter()
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
        voices,
    }
}

/// 16 kHz mono samples as a 16-bit PCM WAV file (hound writes the header).
pub fn wav(samples: &[f32]) -> Result<Vec<u8>, hound::Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE as u32,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut bytes = std::io::Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    let mut writer = hound::WavWriter::new(&mut bytes, spec)?;
    for sample in samples {
        writer.write_sample((sample.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16)?;
    }
    writer.finalize()?;
    Ok(bytes.into_inner())
}

impl Transcriber for OpenAi {
    fn diarizes(&self) -> bool {
        model_diarizes(&self.transcription_model)
    }

    fn transcribe<'a>(&'a self, clip: &'a Clip) -> BoxFuture<'a, Result<Transcript, HandlerError>> {
        Box::pin(async move {
            let file = match clip {
                Clip::File(audio) => {
                    AudioInput::from_vec_u8(audio.file_name.clone(), audio.bytes.clone())
                }
                Clip::Track(samples) => {
                    let bytes = wav(samples).map_err(|e| {
                        HandlerError::permanent(format!("a track could not be encoded: {e}"))
                    })?;
                    AudioInput::from_vec_u8("track.wav".to_string(), bytes)
                }
            };
            let diarize = self.diarizes();
            let request = CreateTranscriptionRequest {
                file,
                model: self.transcription_model.clone(),
                response_format: Some(if diarize {
                    AudioResponseFormat::DiarizedJson
                } else {
                    AudioResponseFormat::VerboseJson
                }),
                // Diarizing models take no timestamp granularities; they need a chunking
                // strategy for input over 30 s.
                timestamp_granularities: (!diarize).then(|| vec![TimestampGranularity::Segment]),
                chunking_strategy: diarize.then_some(TranscriptionChunkingStrategy::Auto),
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

    #[test]
    fn a_diarized_answer_numbers_its_speakers_by_first_speech() {
        let t = normalise(raw(
            r#"{"task":"transcribe","duration":6.0,"text":"Hi. Hello. So?",
                "segments":[{"type":"transcript.text.segment","id":"seg_0","start":0.0,"end":1.0,"text":" Hi.","speaker":"B"},
                            {"type":"transcript.text.segment","id":"seg_1","start":1.2,"end":2.0,"text":"Hello.","speaker":"A"},
                            {"type":"transcript.text.segment","id":"seg_2","start":2.5,"end":3.0,"text":"So?","speaker":"B"}],
                "usage":{"type":"duration","seconds":6}}"#,
        ));
        assert_eq!(t.voices, Some(vec![0, 1, 0]));
        assert_eq!(t.segments[1].text, "Hello.");
        assert!(model_diarizes("gpt-4o-transcribe-diarize"));
        assert!(!model_diarizes("whisper-1"));
    }

    #[test]
    fn a_track_is_sent_as_a_16_khz_mono_wav() {
        let bytes = wav(&[0.0, 0.5, -0.5, 1.5]).expect("encodes");
        let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).expect("a WAV file");
        assert_eq!(reader.spec().sample_rate, 16_000);
        assert_eq!(reader.spec().channels, 1);
        let samples: Vec<i16> = reader.into_samples().map(|s| s.expect("sample")).collect();
        assert_eq!(samples, [0, 16383, -16383, 32767]);
    }
}
