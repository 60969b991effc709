//! `GET /api/sessions/{id}/transcript`: the session's segments in order, each of the user's
//! with what the analysis looks for in it (filler words, hedges, questions) located by
//! character offsets, so a client can highlight them; and how the speakers were told apart.
//! The lexicon is the analysis's own ([`voxline_domain::lexicon`]), so what is highlighted is
//! what was counted. The partner's segments carry no marks: only the user is coached.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use voxline_domain::lexicon::{self, FILLERS, HEDGES, Span};
use voxline_domain::sessions;
use voxline_domain::speakers::Attribution;

use crate::AppState;
use crate::error::ApiError;
use crate::session_route::{CallerSession, SessionNotFound, SessionPath};
use crate::sessions::not_ready;

/// A stored segment as the transcription worker, the intake or a webhook wrote it.
#[derive(Debug, Deserialize)]
struct StoredSegment {
    speaker: String,
    start: Option<f64>,
    end: Option<f64>,
    text: String,
}

/// One segment of the answer.
#[derive(Debug, Serialize)]
struct Segment {
    speaker: String,
    start: Option<f64>,
    end: Option<f64>,
    text: String,
    fillers: Vec<Span>,
    hedges: Vec<Span>,
    questions: Vec<Span>,
}

fn annotate(stored: StoredSegment) -> Segment {
    let coached = stored.speaker == "user";
    let find = |f: &dyn Fn(&str) -> Vec<Span>| {
        if coached { f(&stored.text) } else { Vec::new() }
    };
    Segment {
        fillers: find(&|t| lexicon::find_phrases(t, FILLERS)),
        hedges: find(&|t| lexicon::find_phrases(t, HEDGES)),
        questions: find(&lexicon::find_questions),
        speaker: stored.speaker,
        start: stored.start,
        end: stored.end,
        text: stored.text,
    }
}

/// The transcript once the session has one (409 `not_ready` before): `{session_id, speakers:
/// {method, status, count?, reason?}, segments: [{speaker, start, end, text, fillers, hedges,
/// questions}]}`. Offsets are `[start, end)` in characters (Unicode scalar values) of `text`.
#[utoipa::path(get, path = "/api/sessions/{id}/transcript", tag = "sessions", operation_id = "get_transcript",
    params(SessionPath),
    responses((status = 200, description = "The transcript with the user's fillers, hedges and questions located."),
              SessionNotFound,
              (status = 409, description = "The session has no transcript yet (`not_ready`).")),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    CallerSession { caller, session }: CallerSession,
) -> Result<Json<Value>, ApiError> {
    let id = &session.id;
    let Some(stored) = sessions::transcript(&state.db, &caller.0.company_id, id).await? else {
        return Err(not_ready(
            &session,
            "its transcript comes once it is transcribed",
        ));
    };
    let segments: Vec<StoredSegment> = serde_json::from_value(stored.segments).map_err(|e| {
        ApiError::internal(format!(
            "session {id}: stored transcript is unreadable: {e}"
        ))
    })?;
    // Transcripts stored before attribution was recorded had their speakers given with them.
    let speakers = match stored.speakers {
        Some(speakers) => speakers,
        None => serde_json::to_value(Attribution::from_transcript())?,
    };
    Ok(Json(json!({
        "session_id": id,
        "speakers": speakers,
        "segments": segments.into_iter().map(annotate).collect::<Vec<_>>(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(speaker: &str, text: &str) -> StoredSegment {
        StoredSegment {
            speaker: speaker.into(),
            start: Some(1.0),
            end: Some(2.0),
            text: text.into(),
        }
    }

    #[test]
    fn the_users_segments_carry_their_fillers_hedges_and_questions() {
        let s = annotate(stored(
            "user",
            "Um, I think so. What does that cost you, you know, each week?",
        ));
        let texts = |spans: &[Span]| spans.iter().map(|s| s.text.clone()).collect::<Vec<_>>();
        assert_eq!(texts(&s.fillers), ["Um", "you know"]);
        assert_eq!(texts(&s.hedges), ["I think"]);
        assert_eq!(
            texts(&s.questions),
            ["What does that cost you, you know, each week?"]
        );
    }

    #[test]
    fn the_partners_segments_are_not_marked() {
        let s = annotate(stored("partner", "Um, maybe? I think so."));
        assert!(s.fillers.is_empty() && s.hedges.is_empty() && s.questions.is_empty());
        assert_eq!(s.text, "Um, maybe? I think so.");
    }
}
