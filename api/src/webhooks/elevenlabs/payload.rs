//! The post-call webhook bodies voxline reads, as typed payloads. The transcription and the
//! initiation failure are read leniently (see [`super::lenient`]), so each wrong field is
//! refused by name; the audio event is read strictly, straight from the body, since its audio
//! is borrowed from the body rather than copied.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::lenient::{List, Object, Scalar};

/// Only the event type, read without copying the rest of the body.
#[derive(Deserialize)]
pub(super) struct EventType<'a> {
    #[serde(rename = "type", borrow, default)]
    pub kind: Option<Cow<'a, str>>,
}

/// `post_call_transcription`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct TranscriptionEvent<'a> {
    #[serde(borrow, default)]
    pub data: Object<Transcription<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Transcription<'a> {
    #[serde(borrow)]
    pub conversation_id: Scalar<'a>,
    #[serde(borrow)]
    pub agent_id: Scalar<'a>,
    /// The turns in the order they were spoken.
    #[serde(borrow)]
    pub transcript: List<Object<Turn<'a>>>,
    #[serde(borrow)]
    pub metadata: Object<Metadata<'a>>,
    #[serde(borrow)]
    pub conversation_initiation_client_data: Object<ClientData<'a>>,
}

/// One turn of the call.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Turn<'a> {
    /// `agent` or `user`.
    #[serde(borrow)]
    pub role: Scalar<'a>,
    #[serde(borrow)]
    pub message: Scalar<'a>,
    #[serde(borrow)]
    pub time_in_call_secs: Scalar<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Metadata<'a> {
    #[serde(borrow)]
    pub call_duration_secs: Scalar<'a>,
}

/// What the client that started the conversation passed: its dynamic variables, of which
/// only the role-play ticket is read.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ClientData<'a> {
    #[serde(borrow)]
    pub dynamic_variables: Object<BTreeMap<String, Scalar<'a>>>,
}

impl ClientData<'_> {
    /// A dynamic variable as text: a non-empty string, or a number (ElevenLabs passes both).
    pub fn variable(self, name: &str) -> Option<String> {
        match self.dynamic_variables.fields().get(name)? {
            Scalar::Text(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
            Scalar::Number(n) => Some(n.to_string()),
            Scalar::Null | Scalar::Other => None,
        }
    }
}

/// `call_initiation_failure`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct FailureEvent<'a> {
    #[serde(borrow, default)]
    pub data: Object<Failure<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Failure<'a> {
    #[serde(borrow)]
    pub failure_reason: Scalar<'a>,
    #[serde(borrow)]
    pub conversation_initiation_client_data: Object<ClientData<'a>>,
}

/// `post_call_audio`.
#[derive(Deserialize)]
pub(super) struct AudioEvent<'a> {
    #[serde(borrow)]
    pub data: AudioData<'a>,
}

#[derive(Deserialize)]
pub(super) struct AudioData<'a> {
    #[serde(borrow, default)]
    pub conversation_id: Option<Cow<'a, str>>,
    /// Borrowed from the body (base64 has no characters JSON escapes), so a long call's audio
    /// is held once as the body and once decoded, never as a copied string.
    #[serde(borrow, default)]
    pub full_audio: Option<Cow<'a, str>>,
}

/// Reads a leniently typed payload from the parsed body, whose strings it borrows; a body that
/// is not an object reads as one without fields.
pub(super) fn read<'a, T>(body: &'a Value) -> Result<T, serde_json::Error>
where
    T: Deserialize<'a> + Default,
{
    Object::<T>::deserialize(body).map(Object::fields)
}
