//! Reading a session submission off the wire: a JSON body, or a multipart form with the audio.
//! Both are read with their own limits (the JSON one from `http.body_limit_bytes`, the audio
//! from `uploads.max_audio_bytes`, counted while streaming so an oversize upload is cut off
//! without being buffered), and every refusal names the field.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;
use sha2::{Digest, Sha256};

use voxline_domain::speakers::{Channels, UserSpeaker};

use crate::audio::{self, AudioType};
use crate::error::ApiError;

/// An uploaded recording, checked to be the type it claims.
#[derive(Debug)]
pub struct Audio {
    pub bytes: Vec<u8>,
    pub kind: AudioType,
}

/// What a submission carries before validation.
#[derive(Debug)]
pub enum Submission {
    /// The JSON body: `{title, kind, transcript}`.
    Json(Value),
    /// The form fields and the recording.
    Audio {
        title: String,
        kind: String,
        audio: Audio,
        speakers: SpeakerFields,
    },
}

/// The form's optional `channels` and `user_speaker` fields, parsed (see
/// [`voxline_domain::speakers`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SpeakerFields {
    pub channels: Option<Channels>,
    pub user_speaker: Option<UserSpeaker>,
}

impl Submission {
    /// A digest of the request, so a reused Idempotency-Key with a different body is caught.
    pub fn request_hash(&self) -> String {
        let mut hash = Sha256::new();
        match self {
            Submission::Json(body) => hash.update(body.to_string()),
            Submission::Audio {
                title,
                kind,
                audio,
                speakers,
            } => {
                let channels = speakers.channels.as_ref().map(Channels::to_string);
                let user_speaker = speakers.user_speaker.map(UserSpeaker::as_str);
                for part in [
                    title.as_bytes(),
                    kind.as_bytes(),
                    &audio.bytes,
                    channels.as_deref().unwrap_or_default().as_bytes(),
                    user_speaker.unwrap_or_default().as_bytes(),
                ] {
                    hash.update((part.len() as u64).to_le_bytes());
                    hash.update(part);
                }
            }
        }
        hex::encode(hash.finalize())
    }
}

fn too_large(field: &str, limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("{field} is larger than the limit of {limit} bytes"),
    )
    .field(field)
}

fn unsupported(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        message,
    )
    .field(field)
}

/// Reads the body according to its content type: JSON or `multipart/form-data`; anything
/// else is a 415.
pub async fn read(
    headers: &HeaderMap,
    body: Body,
    json_limit: usize,
    audio_limit: usize,
) -> Result<Submission, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => read_json(body, json_limit).await,
        "multipart/form-data" => {
            let boundary = multer::parse_boundary(content_type).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_multipart",
                    format!("the multipart body has no usable boundary: {e}"),
                )
                .field("Content-Type")
            })?;
            read_multipart(body, boundary, json_limit, audio_limit).await
        }
        _ => Err(unsupported(
            "Content-Type",
            "send application/json (a transcript) or multipart/form-data (an audio recording)",
        )),
    }
}

async fn read_json(body: Body, limit: usize) -> Result<Submission, ApiError> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large("body", limit))?;
    serde_json::from_slice(&bytes)
        .map(Submission::Json)
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {e}"),
            )
            .field("body")
        })
}

async fn read_multipart(
    body: Body,
    boundary: String,
    text_limit: usize,
    audio_limit: usize,
) -> Result<Submission, ApiError> {
    let stream = body.into_data_stream();
    let mut form = multer::Multipart::new(stream, boundary);
    let (mut title, mut kind, mut audio) = (None::<String>, None::<String>, None::<Audio>);
    let (mut channels, mut user_speaker) = (None::<String>, None::<String>);
    let malformed = |e: multer::Error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_multipart",
            format!("the multipart body could not be read: {e}"),
        )
        .field("body")
    };
    while let Some(mut field) = form.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "title" | "kind" | "channels" | "user_speaker" => {
                let mut text = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(malformed)? {
                    text.extend_from_slice(&chunk);
                    if text.len() > text_limit {
                        return Err(too_large(&name, text_limit));
                    }
                }
                let text = String::from_utf8(text)
                    .map_err(|_| ApiError::invalid(&name, format!("{name} must be UTF-8 text")))?;
                let slot = match name.as_str() {
                    "title" => &mut title,
                    "kind" => &mut kind,
                    "channels" => &mut channels,
                    _ => &mut user_speaker,
                };
                *slot = Some(text);
            }
            "audio" => {
                let declared = audio::claimed(
                    field.content_type().map(|m| m.essence_str()),
                    field.file_name(),
                )
                .map_err(|m| unsupported("audio", m))?;
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(malformed)? {
                    if bytes.len() + chunk.len() > audio_limit {
                        return Err(too_large("audio", audio_limit));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                audio = Some(check_audio(bytes, declared)?);
            }
            "" => {
                return Err(ApiError::invalid(
                    "body",
                    "every multipart part needs a name",
                ));
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    format!(
                        "unknown part \"{other}\" (expected title, kind, audio, channels and \
                         user_speaker)"
                    ),
                ));
            }
        }
    }
    let audio = audio.ok_or_else(|| ApiError::invalid("audio", "the form has no audio part"))?;
    let speakers = speaker_fields(channels.as_deref(), user_speaker.as_deref(), &audio)?;
    Ok(Submission::Audio {
        title: title.unwrap_or_default(),
        kind: kind.unwrap_or_default(),
        audio,
        speakers,
    })
}

/// Parses `channels` and `user_speaker` and checks them against the recording where its
/// header says how many channels it has (WAV); other containers are checked when decoded.
fn speaker_fields(
    channels: Option<&str>,
    user_speaker: Option<&str>,
    audio: &Audio,
) -> Result<SpeakerFields, ApiError> {
    let channels = channels
        .map(|text| {
            text.parse::<Channels>()
                .map_err(|m| ApiError::invalid("channels", m))
        })
        .transpose()?;
    let user_speaker = user_speaker
        .map(|text| {
            text.parse::<UserSpeaker>()
                .map_err(|m| ApiError::invalid("user_speaker", m))
        })
        .transpose()?;
    if let Some(named) = &channels {
        if user_speaker.is_some() && named.0.len() > 1 {
            return Err(ApiError::invalid(
                "user_speaker",
                "user_speaker is for mono recordings of two people; channels already says \
                 which channel is the user",
            ));
        }
        if let Some(actual) = audio::wav_channels(&audio.bytes)
            && usize::from(actual) != named.0.len()
        {
            return Err(ApiError::invalid(
                "channels",
                format!(
                    "channels names {} speakers but the recording has {actual} channel{}",
                    named.0.len(),
                    if actual == 1 { "" } else { "s" }
                ),
            ));
        }
    }
    Ok(SpeakerFields {
        channels,
        user_speaker,
    })
}

/// The recording must be non-empty, be one of the accepted containers, and be what it claims.
fn check_audio(bytes: Vec<u8>, declared: Option<AudioType>) -> Result<Audio, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::invalid("audio", "the audio part is empty"));
    }
    let accepted = AudioType::ALL.map(AudioType::extension).join(", ");
    let sniffed = AudioType::sniff(&bytes);
    match (declared, sniffed) {
        (Some(claim), Some(actual)) if claim != actual => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "audio_type_mismatch",
            format!(
                "the audio claims to be {} but its content is {}",
                claim.extension(),
                actual.extension()
            ),
        )
        .field("audio")),
        (Some(claim), None) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "audio_type_mismatch",
            format!(
                "the audio claims to be {} but its content is not {} audio",
                claim.extension(),
                claim.extension()
            ),
        )
        .field("audio")),
        (_, Some(actual)) => Ok(Audio {
            bytes,
            kind: actual,
        }),
        (None, None) => Err(unsupported(
            "audio",
            format!("the audio is not in an accepted format ({accepted})"),
        )),
    }
}
