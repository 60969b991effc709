//! A `post_call_transcription`, checked and mapped to voxline's terms: the conversation id, the
//! transcript as segments (see the module documentation of `elevenlabs` for the rules) and the
//! role-play ticket it carries. Every refusal is a 422 naming its field.

use serde_json::{Value, json};

use super::lenient::{Object, Scalar};
use super::payload::{self, TranscriptionEvent, Turn};
use super::ticket_missing;
use crate::error::ApiError;

const MAX_CONVERSATION_ID_CHARS: usize = 200;

/// A post-call transcription, checked and mapped to voxline's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub conversation_id: String,
    pub agent_id: Option<String>,
    /// The role-play ticket, as the conversation carried it (not yet checked).
    pub ticket: String,
    /// `{speaker, start, end, text}`, as the session intake stores them.
    pub segments: Vec<Value>,
    pub duration_seconds: Option<f64>,
}

/// A number of seconds (0 or more) or nothing; anything else is a 422 naming `field`.
fn seconds(value: &Scalar<'_>, field: &str) -> Result<Option<f64>, ApiError> {
    match value {
        Scalar::Null => Ok(None),
        v => match v.as_f64() {
            Some(s) if s >= 0.0 && s.is_finite() => Ok(Some(s)),
            _ => Err(ApiError::invalid(
                field,
                format!("{field} must be a number of seconds, 0 or more"),
            )),
        },
    }
}

/// Maps ElevenLabs transcript turns to segments (see the module documentation of `elevenlabs`
/// for the rules).
pub(super) fn segments(
    transcript: &[Object<Turn<'_>>],
    call_duration: Option<f64>,
) -> Result<Vec<Value>, ApiError> {
    struct Spoken {
        speaker: &'static str,
        text: Option<String>,
        start: Option<f64>,
    }
    // A turn that is not an object has none of its fields, so its role is refused.
    let no_fields = Turn::default();
    let mut turns = Vec::with_capacity(transcript.len());
    let mut latest: Option<f64> = None;
    for (i, turn) in transcript.iter().enumerate() {
        let turn = turn.0.as_ref().unwrap_or(&no_fields);
        let at = |name: &str| format!("data.transcript[{i}].{name}");
        let speaker = match turn.role.as_str() {
            Some("agent") => "partner",
            Some("user") => "user",
            _ => {
                return Err(ApiError::invalid(
                    at("role"),
                    "role must be \"agent\" or \"user\"",
                ));
            }
        };
        let text = match &turn.message {
            Scalar::Null => None,
            // A NUL is no text a transcript holds (and Postgres cannot store it).
            Scalar::Text(text) if text.contains('\0') => {
                return Err(ApiError::invalid(
                    at("message"),
                    "message must not contain NUL characters",
                ));
            }
            Scalar::Text(text) => Some(text.trim().to_string()).filter(|t| !t.is_empty()),
            Scalar::Number(_) | Scalar::Other => {
                return Err(ApiError::invalid(at("message"), "message must be text"));
            }
        };
        let start = seconds(&turn.time_in_call_secs, &at("time_in_call_secs"))?;
        if let (Some(before), Some(now)) = (latest, start)
            && now < before
        {
            return Err(ApiError::invalid(
                at("time_in_call_secs"),
                "turns must be in the order they were spoken",
            ));
        }
        latest = start.or(latest);
        turns.push(Spoken {
            speaker,
            text,
            start,
        });
    }
    let mut segments = Vec::with_capacity(turns.len());
    for (i, turn) in turns.iter().enumerate() {
        let Some(text) = &turn.text else { continue };
        let end = match turns.get(i + 1) {
            Some(next) => next.start,
            // The call's length is in whole seconds and may round below the last turn's start.
            None => call_duration.map(|d| turn.start.map_or(d, |s| d.max(s))),
        };
        segments.push(
            json!({ "speaker": turn.speaker, "start": turn.start, "end": end, "text": text }),
        );
    }
    Ok(segments)
}

/// `data.conversation_id`, checked: 1 to 200 characters (trimmed), none of them NUL.
pub(super) fn conversation_id(id: Option<&str>) -> Result<String, ApiError> {
    id.map(str::trim)
        .filter(|id| {
            !id.is_empty() && !id.contains('\0') && id.chars().count() <= MAX_CONVERSATION_ID_CHARS
        })
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::invalid(
                "data.conversation_id",
                format!(
                    "conversation_id must be 1 to {MAX_CONVERSATION_ID_CHARS} characters, none of them NUL"
                ),
            )
        })
}

/// Checks a `post_call_transcription` payload and maps it; `ticket_variable` names the dynamic
/// variable with the role-play ticket (checked by the caller).
pub fn parse_transcription(body: &Value, ticket_variable: &str) -> Result<Conversation, ApiError> {
    let event: TranscriptionEvent<'_> = payload::read(body).map_err(ApiError::invalid_json)?;
    let data = event
        .data
        .0
        .ok_or_else(|| ApiError::invalid("data", "data must be an object"))?;
    let conversation_id = conversation_id(data.conversation_id.as_str())?;
    let agent_id = data.agent_id.as_str().map(str::to_string);
    let transcript = data.transcript.0.ok_or_else(|| {
        ApiError::invalid("data.transcript", "transcript must be a list of turns")
    })?;
    let duration_seconds = seconds(
        &data.metadata.fields().call_duration_secs,
        "data.metadata.call_duration_secs",
    )?;
    let segments = segments(&transcript, duration_seconds)?;
    if segments.is_empty() {
        return Err(ApiError::invalid(
            "data.transcript",
            "the transcript has no turn with words in it",
        ));
    }

    let ticket = data
        .conversation_initiation_client_data
        .fields()
        .variable(ticket_variable)
        .ok_or_else(|| {
            let message = format!(
                "the conversation must carry the ticket of POST /api/roleplays in its dynamic \
                 variable {ticket_variable}"
            );
            ticket_missing(ticket_variable, message)
        })?;
    Ok(Conversation {
        conversation_id,
        agent_id,
        ticket,
        segments,
        duration_seconds,
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    const NOW: i64 = 1_739_537_297;

    fn turn(role: &str, message: Value, at: Value) -> Value {
        json!({ "role": role, "message": message, "time_in_call_secs": at })
    }

    /// The turns as the payload reads them.
    fn typed(turns: &[Value]) -> Vec<Object<Turn<'_>>> {
        turns
            .iter()
            .map(|t| Object::deserialize(t).unwrap())
            .collect()
    }

    #[test]
    fn turns_become_segments_that_end_where_the_next_turn_starts() {
        let transcript = [
            turn("agent", json!("Hi, I'm Sam from Globex."), json!(0)),
            turn("user", json!(" Hi Sam, thanks for the time. "), json!(3)),
            // A tool call: no words, but it marks when the user's turn stopped.
            turn("agent", Value::Null, json!(9)),
            turn("agent", json!("So, what brings you here?"), json!(10)),
            turn("user", json!(""), json!(14)),
            turn("user", json!("Our reporting takes too long."), json!(15)),
        ];
        assert_eq!(
            segments(&typed(&transcript), Some(21.0)).unwrap(),
            vec![
                json!({"speaker": "partner", "start": 0.0, "end": 3.0, "text": "Hi, I'm Sam from Globex."}),
                json!({"speaker": "user", "start": 3.0, "end": 9.0, "text": "Hi Sam, thanks for the time."}),
                json!({"speaker": "partner", "start": 10.0, "end": 14.0, "text": "So, what brings you here?"}),
                json!({"speaker": "user", "start": 15.0, "end": 21.0, "text": "Our reporting takes too long."}),
            ]
        );
    }

    #[test]
    fn the_last_turn_has_no_end_without_the_call_duration() {
        let transcript = [
            turn("agent", json!("Hello."), json!(0)),
            turn("user", json!("Hi."), json!(2)),
        ];
        let mapped = segments(&typed(&transcript), None).unwrap();
        assert_eq!(mapped[1]["end"], Value::Null);
        // A duration rounded below the last turn's start ends it where it starts.
        let mapped = segments(&typed(&transcript), Some(1.0)).unwrap();
        assert_eq!(mapped[1]["end"], 2.0);
    }

    #[test]
    fn bad_turns_are_refused_naming_the_field() {
        let field = |transcript: &[Value]| {
            segments(&typed(transcript), None)
                .unwrap_err()
                .body
                .field
                .unwrap_or_default()
        };
        assert_eq!(
            field(&[turn("coach", json!("Hi"), json!(0))]),
            "data.transcript[0].role"
        );
        assert_eq!(
            field(&[turn("user", json!(5), json!(0))]),
            "data.transcript[0].message"
        );
        assert_eq!(
            field(&[turn("user", json!("Hi"), json!(-1))]),
            "data.transcript[0].time_in_call_secs"
        );
        assert_eq!(
            field(&[
                turn("user", json!("Hi"), json!(5)),
                turn("agent", json!("Hello"), json!(4))
            ]),
            "data.transcript[1].time_in_call_secs"
        );
    }

    fn payload(variables: Value) -> Value {
        json!({
            "type": "post_call_transcription",
            "event_timestamp": NOW,
            "data": {
                "conversation_id": "conv_1",
                "agent_id": "agent_1",
                "transcript": [turn("agent", json!("Hello."), json!(0)), turn("user", json!("Hi."), json!(2))],
                "metadata": { "start_time_unix_secs": NOW - 60, "call_duration_secs": 5 },
                "conversation_initiation_client_data": { "dynamic_variables": variables }
            }
        })
    }

    #[test]
    fn the_conversation_carries_its_ticket_and_nothing_else_names_the_profile() {
        let call = parse_transcription(
            &payload(json!({
                "voxline_ticket": "t.i.cket", "voxline_profile_id": "someone-else",
                "user_name": "Ann"
            })),
            "voxline_ticket",
        )
        .unwrap();
        assert_eq!(call.conversation_id, "conv_1");
        assert_eq!(call.agent_id.as_deref(), Some("agent_1"));
        assert_eq!(call.ticket, "t.i.cket");
        assert_eq!(call.duration_seconds, Some(5.0));
        assert_eq!(call.segments.len(), 2);
    }

    #[test]
    fn missing_or_bad_fields_are_named() {
        let refusal = |body: Value| {
            let e = parse_transcription(&body, "voxline_ticket").unwrap_err();
            (e.body.code, e.body.field.unwrap_or_default())
        };
        let field = |body: Value| refusal(body).1;
        let good = payload(json!({"voxline_ticket": "t.i.cket"}));
        let without = |pointer: &str, key: &str| {
            let mut body = good.clone();
            if let Some(Value::Object(map)) = body.pointer_mut(pointer) {
                map.remove(key);
            }
            body
        };
        assert_eq!(field(without("", "data")), "data");
        assert_eq!(
            field(without("/data", "conversation_id")),
            "data.conversation_id"
        );
        assert_eq!(field(without("/data", "transcript")), "data.transcript");
        // A profile variable alone is no ticket.
        assert_eq!(
            refusal(payload(json!({"voxline_profile_id": "ann"}))),
            (
                "ticket_missing",
                "data.conversation_initiation_client_data.dynamic_variables.voxline_ticket".into()
            )
        );
        let mut silent = good.clone();
        silent["data"]["transcript"] = json!([turn("user", json!("  "), json!(0))]);
        assert_eq!(field(silent), "data.transcript");
        let mut nul = good.clone();
        nul["data"]["transcript"][1]["message"] = json!("Hi\u{0}.");
        assert_eq!(field(nul), "data.transcript[1].message");
        let mut nul = good.clone();
        nul["data"]["conversation_id"] = json!("conv\u{0}1");
        assert_eq!(field(nul), "data.conversation_id");
    }

    #[test]
    fn a_value_of_another_type_is_refused_by_name_or_read_as_absent() {
        let good = payload(json!({"voxline_ticket": 42}));
        let read = |change: &dyn Fn(&mut Value)| {
            let mut body = good.clone();
            change(&mut body);
            parse_transcription(&body, "voxline_ticket")
        };
        let field = |change: &dyn Fn(&mut Value)| {
            let e = read(change).unwrap_err();
            (e.body.code, e.body.field.unwrap_or_default())
        };
        let invalid = |name: &str| ("invalid_field", name.to_string());
        assert_eq!(field(&|b| *b = json!([1, 2])), invalid("data"));
        assert_eq!(field(&|b| b["data"] = json!("x")), invalid("data"));
        assert_eq!(
            field(&|b| b["data"]["transcript"][0] = json!("Hello.")),
            invalid("data.transcript[0].role")
        );
        assert_eq!(
            field(&|b| b["data"]["transcript"][1]["message"] = json!(5)),
            invalid("data.transcript[1].message")
        );
        assert_eq!(
            field(&|b| b["data"]["conversation_initiation_client_data"] = json!("x")),
            (
                "ticket_missing",
                "data.conversation_initiation_client_data.dynamic_variables.voxline_ticket".into()
            )
        );
        // A number is taken as the ticket's text; a metadata or agent id of another type is
        // taken as absent.
        let call = read(&|b| {
            b["data"]["metadata"] = json!([5]);
            b["data"]["agent_id"] = json!(7);
        })
        .unwrap();
        assert_eq!(call.ticket, "42");
        assert_eq!((call.duration_seconds, call.agent_id), (None, None));
    }
}
