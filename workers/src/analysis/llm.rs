//! LLM coaching feedback: a chat completion constrained by a strict JSON schema (summary,
//! strengths, improvements, and a rubric whose every score is backed by a quote), grounded in
//! the measured metrics and scores, and checked before anything is stored: a model's answer is
//! input from outside like any other.

use async_openai::types::chat::{
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    CreateChatCompletionRequest, FinishReason, ResponseFormat, ResponseFormatJsonSchema,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use voxline_jobs::HandlerError;

use super::metrics::{Metrics, Segment};
use super::scoring::Scores;
use crate::openai::OpenAi;

/// The `response_format.json_schema.name` sent with every request.
pub const SCHEMA_NAME: &str = "coaching_feedback";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmFeedback {
    pub summary: String,
    pub strengths: Vec<String>,
    pub improvements: Vec<String>,
    pub rubric: Vec<RubricItem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RubricItem {
    pub criterion: String,
    /// 1–5. Read as any integer so an out-of-range score is reported as such.
    pub score: i64,
    /// A quote from the transcript that shows why.
    pub evidence: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The call failed; already classified (retry, permanent, snooze).
    #[error("{0}")]
    Provider(HandlerError),
    /// The model answered, but not with feedback we can store.
    #[error("the model's feedback was not usable: {0}")]
    Invalid(String),
}

/// What the model is told about the session besides the transcript.
pub struct Grounding<'a> {
    pub kind: &'a str,
    pub title: &'a str,
    pub metrics: &'a Metrics,
    pub scores: &'a Scores,
    pub segments: &'a [Segment],
}

/// The strict JSON schema of the answer. (Strict mode needs every property required and no
/// additional ones.)
pub fn schema() -> Value {
    let text = |description: &str| json!({ "type": "string", "description": description });
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["summary", "strengths", "improvements", "rubric"],
        "properties": {
            "summary": text("Two or three sentences on how the session went."),
            "strengths": { "type": "array", "items": text("One thing the person did well.") },
            "improvements": { "type": "array", "items": text("One concrete thing to do differently next time.") },
            "rubric": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["criterion", "score", "evidence"],
                    "properties": {
                        "criterion": text("What is judged, e.g. \"discovery questions\"."),
                        "score": { "type": "integer", "enum": [1, 2, 3, 4, 5], "description": "1 = poor, 5 = excellent." },
                        "evidence": text("A verbatim quote from the transcript that supports the score.")
                    }
                }
            }
        }
    })
}

const INSTRUCTIONS: &str = "You are a speaking coach. The user message is a JSON document: the \
session's kind and title, metrics measured from its transcript and, under metrics.voice, from \
the recording itself (pauses, pace variation, pitch variation in semitones, where under about 2 \
reads as monotone, and loudness variation, all of the user's speech only), scores of those \
metrics against targets for this kind of session (1 = far off, 5 = on target), and the \
transcript (speaker \"user\" is the person practising, \"partner\" the other side, \"unknown\" \
someone the recording could not attribute). Give coaching feedback on the user's part only. \
Use the metrics and scores as facts; do not invent numbers, and treat a metric that is null or \
unavailable as not measured, never as zero. Filler words are counted as transcribed, and \
speech-to-text often drops them. Every rubric score needs evidence: a short quote copied word \
for word from the transcript.";

/// The chat request: instructions, then the grounding as one JSON document.
pub fn request(model: &str, g: &Grounding<'_>) -> CreateChatCompletionRequest {
    let grounding = json!({
        "session": { "kind": g.kind, "title": g.title },
        "metrics": g.metrics,
        "scores": g.scores,
        "transcript": g.segments,
    });
    CreateChatCompletionRequest {
        model: model.to_string(),
        messages: vec![
            ChatCompletionRequestSystemMessage::from(INSTRUCTIONS).into(),
            ChatCompletionRequestUserMessage::from(grounding.to_string().as_str()).into(),
        ],
        response_format: Some(ResponseFormat::JsonSchema {
            json_schema: ResponseFormatJsonSchema {
                name: SCHEMA_NAME.to_string(),
                description: Some("Coaching feedback on a practice session.".to_string()),
                schema: schema(),
                strict: Some(true),
            },
        }),
        ..Default::default()
    }
}

/// Asks the model and checks its answer against the transcript.
pub async fn coach(openai: &OpenAi, g: &Grounding<'_>) -> Result<LlmFeedback, LlmError> {
    let response = openai
        .call(
            openai
                .client()
                .chat()
                .create(request(&openai.chat_model, g)),
        )
        .await
        .map_err(LlmError::Provider)?;
    let Some(choice) = response.choices.into_iter().next() else {
        return Err(LlmError::Invalid("the answer has no choices".into()));
    };
    if let Some(refusal) = choice.message.refusal.filter(|r| !r.trim().is_empty()) {
        return Err(LlmError::Invalid(format!("the model refused: {refusal}")));
    }
    if choice.finish_reason == Some(FinishReason::Length) {
        return Err(LlmError::Invalid("the answer was cut off (length)".into()));
    }
    let content = choice.message.content.unwrap_or_default();
    validate(&content, g.segments).map_err(LlmError::Invalid)
}

/// Parses the answer and checks what the schema cannot: scores 1..=5, no empty text, at least
/// one rubric item, and every piece of evidence found in the transcript.
pub fn validate(content: &str, segments: &[Segment]) -> Result<LlmFeedback, String> {
    let feedback: LlmFeedback =
        serde_json::from_str(content).map_err(|e| format!("not the feedback schema: {e}"))?;
    let blank = |s: &str| s.trim().is_empty();
    if blank(&feedback.summary) {
        return Err("summary is empty".into());
    }
    for (field, items) in [
        ("strengths", &feedback.strengths),
        ("improvements", &feedback.improvements),
    ] {
        if let Some(i) = items.iter().position(|s| blank(s)) {
            return Err(format!("{field}[{i}] is empty"));
        }
    }
    if feedback.rubric.is_empty() {
        return Err("rubric is empty".into());
    }
    let transcript = format!(
        " {} ",
        normalise(
            &segments
                .iter()
                .map(|s| s.text.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        )
    );
    for (i, item) in feedback.rubric.iter().enumerate() {
        if blank(&item.criterion) {
            return Err(format!("rubric[{i}].criterion is empty"));
        }
        if !(1..=5).contains(&item.score) {
            return Err(format!("rubric[{i}].score {} is not 1 to 5", item.score));
        }
        let evidence = normalise(&item.evidence);
        if evidence.is_empty() {
            return Err(format!("rubric[{i}].evidence is empty"));
        }
        // Padded with spaces so a quote matches whole words only.
        if !transcript.contains(&format!(" {evidence} ")) {
            return Err(format!(
                "rubric[{i}].evidence {:?} is not in the transcript",
                item.evidence
            ));
        }
    }
    Ok(feedback)
}

/// Lower case, punctuation as spaces, runs of white space as one: a quote matches whatever the
/// model did to capitals, commas, curly apostrophes or line breaks.
pub fn normalise(text: &str) -> String {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::metrics::Speaker;

    fn transcript() -> Vec<Segment> {
        vec![
            Segment {
                speaker: Speaker::Partner,
                start: None,
                end: None,
                text: "Hi, thanks for taking the call.".into(),
            },
            Segment {
                speaker: Speaker::User,
                start: None,
                end: None,
                text: "Um, thanks. So I think we could maybe start with your goals?".into(),
            },
        ]
    }

    fn answer(score: i64, evidence: &str) -> String {
        json!({
            "summary": "A friendly opening.",
            "strengths": ["Asked about goals early."],
            "improvements": ["Drop the hedging."],
            "rubric": [{ "criterion": "discovery", "score": score, "evidence": evidence }]
        })
        .to_string()
    }

    #[test]
    fn a_quote_matches_whatever_happened_to_case_punctuation_and_spacing() {
        let ok = validate(
            &answer(4, "so I think  we could MAYBE start with your goals"),
            &transcript(),
        )
        .expect("valid");
        assert_eq!(ok.rubric[0].score, 4);
        assert!(validate(&answer(3, "“Thanks for taking the call”"), &transcript()).is_ok());
    }

    #[test]
    fn evidence_not_in_the_transcript_is_refused() {
        let e = validate(
            &answer(4, "let me tell you about our pricing"),
            &transcript(),
        )
        .unwrap_err();
        assert!(e.contains("rubric[0].evidence"), "{e}");
        // Whole words only: "goal" is not a quote of "goals".
        assert!(validate(&answer(4, "your goal"), &transcript()).is_err());
    }

    #[test]
    fn scores_outside_one_to_five_and_empty_text_are_refused() {
        for score in [0, 6, -1] {
            assert!(
                validate(&answer(score, "your goals"), &transcript()).is_err(),
                "{score}"
            );
        }
        assert!(
            validate(&answer(3, " ,. "), &transcript())
                .unwrap_err()
                .contains("evidence is empty")
        );
        let mut empty_summary: Value = serde_json::from_str(&answer(3, "your goals")).unwrap();
        empty_summary["summary"] = json!("  ");
        assert_eq!(
            validate(&empty_summary.to_string(), &transcript()).unwrap_err(),
            "summary is empty"
        );
        let mut no_rubric = empty_summary.clone();
        no_rubric["summary"] = json!("fine");
        no_rubric["rubric"] = json!([]);
        assert_eq!(
            validate(&no_rubric.to_string(), &transcript()).unwrap_err(),
            "rubric is empty"
        );
    }

    #[test]
    fn an_answer_that_is_not_the_schema_is_refused() {
        assert!(
            validate("Great job!", &transcript())
                .unwrap_err()
                .starts_with("not the feedback schema")
        );
        assert!(validate(r#"{"summary":"x"}"#, &transcript()).is_err());
    }

    #[test]
    fn the_schema_is_strict_every_object_closed_and_fully_required() {
        fn check(v: &Value) {
            if v["type"] == "object" {
                assert_eq!(v["additionalProperties"], false);
                let props: Vec<&String> = v["properties"].as_object().unwrap().keys().collect();
                let required: Vec<&str> = v["required"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap())
                    .collect();
                assert_eq!(props.len(), required.len());
                for p in props {
                    assert!(required.contains(&p.as_str()), "{p} not required");
                    check(&v["properties"][p]);
                }
            }
            if v["type"] == "array" {
                check(&v["items"]);
            }
        }
        check(&schema());
    }
}
