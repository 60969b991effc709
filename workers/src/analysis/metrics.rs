//! Deterministic coaching metrics from a transcript's segments (the analysis worker's core,
//! pure so every formula is checked against hand-worked fixtures).
//!
//! Formulas (user = the person practising, partner = the role-play counterpart):
//! - talk ratio = user speaking seconds / (user + partner speaking seconds)
//! - words per minute = user words / (user speaking seconds / 60)
//! - fillers per minute = filler occurrences in user speech / (user speaking seconds / 60)
//! - longest monologue = the longest run of consecutive user segments, from the first one's
//!   start to the last one's end (seconds)
//! - questions = user sentences ending in '?'; per 10 min = questions / (conversation seconds / 600)
//! - patience = mean gap (seconds) between the end of a partner segment and the start of the user
//!   segment that follows it, over the gaps that are not negative
//! - interruptions = user segments that start before the partner segment before them ended
//! - hedging = occurrences of hedging words and phrases in user speech
//! - vocabulary diversity = distinct user words / user words (type-token ratio)
//!
//! Every time-based metric is `None` when any segment lacks its start or end: unknown timings
//! make such a metric unavailable, never zero. Fillers and hedges are counted "as
//! transcribed": speech-to-text often drops "um" and "uh".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    User,
    Partner,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub speaker: Speaker,
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub text: String,
}

/// Occurrences of listed words or phrases, with which were found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Occurrences {
    pub count: usize,
    pub found: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// False when some segment has no start or end: the time-based metrics are then `None`.
    pub timing_available: bool,
    pub talk_ratio: Option<f64>,
    pub words_per_minute: Option<f64>,
    pub user_words: usize,
    pub fillers: Occurrences,
    pub fillers_per_minute: Option<f64>,
    pub longest_monologue_seconds: Option<f64>,
    pub questions: usize,
    pub questions_per_10_min: Option<f64>,
    pub patience_seconds: Option<f64>,
    pub interruptions: Option<usize>,
    pub hedging: Occurrences,
    pub vocabulary_diversity: Option<f64>,
}

/// Single words and phrases counted as fillers.
pub const FILLERS: &[&str] = &[
    "um",
    "uh",
    "er",
    "ah",
    "hmm",
    "you know",
    "i mean",
    "basically",
    "literally",
    "actually",
];
/// Words and phrases counted as hedging.
pub const HEDGES: &[&str] = &[
    "maybe",
    "perhaps",
    "probably",
    "possibly",
    "might",
    "i think",
    "i guess",
    "sort of",
    "kind of",
    "i feel like",
];

/// Lower-case words: letters, digits and apostrophes; everything else separates.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn count_phrases(tokens: &[String], phrases: &[&str]) -> Occurrences {
    let mut found = BTreeMap::new();
    for phrase in phrases {
        let parts: Vec<&str> = phrase.split(' ').collect();
        let n = tokens
            .windows(parts.len())
            .filter(|w| w.iter().zip(&parts).all(|(a, b)| a == b))
            .count();
        if n > 0 {
            found.insert((*phrase).to_string(), n);
        }
    }
    Occurrences {
        count: found.values().sum(),
        found,
    }
}

fn duration(s: &Segment) -> Option<f64> {
    Some((s.end? - s.start?).max(0.0))
}

pub fn compute(segments: &[Segment]) -> Metrics {
    let timing_available = !segments.is_empty()
        && segments
            .iter()
            .all(|s| s.start.is_some() && s.end.is_some());
    let user: Vec<&Segment> = segments
        .iter()
        .filter(|s| s.speaker == Speaker::User)
        .collect();
    let tokens: Vec<String> = user.iter().flat_map(|s| words(&s.text)).collect();
    let user_words = tokens.len();
    let fillers = count_phrases(&tokens, FILLERS);
    let hedging = count_phrases(&tokens, HEDGES);
    let questions: usize = user.iter().map(|s| s.text.matches('?').count()).sum();
    let vocabulary_diversity = (user_words > 0).then(|| {
        let distinct: std::collections::BTreeSet<&String> = tokens.iter().collect();
        distinct.len() as f64 / user_words as f64
    });

    let timed = |f: &dyn Fn() -> Option<f64>| if timing_available { f() } else { None };
    let user_seconds: f64 = user.iter().filter_map(|s| duration(s)).sum();
    let partner_seconds: f64 = segments
        .iter()
        .filter(|s| s.speaker == Speaker::Partner)
        .filter_map(duration)
        .sum();
    let per_minute =
        |n: usize| timed(&|| (user_seconds > 0.0).then(|| n as f64 / (user_seconds / 60.0)));

    let talk_ratio = timed(&|| {
        let total = user_seconds + partner_seconds;
        (total > 0.0).then(|| user_seconds / total)
    });
    let conversation_seconds = timed(&|| {
        let start = segments
            .iter()
            .filter_map(|s| s.start)
            .fold(f64::INFINITY, f64::min);
        let end = segments
            .iter()
            .filter_map(|s| s.end)
            .fold(f64::NEG_INFINITY, f64::max);
        (end > start).then_some(end - start)
    });
    let longest_monologue_seconds = timed(&|| {
        let mut longest: Option<f64> = None;
        let mut run_start: Option<f64> = None;
        for s in segments {
            match s.speaker {
                Speaker::User => {
                    let start = *run_start.get_or_insert(s.start?);
                    let length = s.end? - start;
                    longest = Some(longest.map_or(length, |l| l.max(length)));
                }
                Speaker::Partner => run_start = None,
            }
        }
        longest
    });
    let mut gaps = Vec::new();
    let mut interruptions = 0;
    for pair in segments.windows(2) {
        if let [prev, next] = pair
            && prev.speaker == Speaker::Partner
            && next.speaker == Speaker::User
            && let (Some(end), Some(start)) = (prev.end, next.start)
        {
            if start < end {
                interruptions += 1;
            } else {
                gaps.push(start - end);
            }
        }
    }
    Metrics {
        timing_available,
        talk_ratio,
        words_per_minute: per_minute(user_words),
        user_words,
        fillers_per_minute: per_minute(fillers.count),
        fillers,
        longest_monologue_seconds,
        questions,
        questions_per_10_min: conversation_seconds
            .and_then(|c| (c > 0.0).then(|| questions as f64 / (c / 600.0))),
        patience_seconds: timed(&|| {
            (!gaps.is_empty()).then(|| gaps.iter().sum::<f64>() / gaps.len() as f64)
        }),
        interruptions: timing_available.then_some(interruptions),
        hedging,
        vocabulary_diversity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(speaker: Speaker, start: f64, end: f64, text: &str) -> Segment {
        Segment {
            speaker,
            start: Some(start),
            end: Some(end),
            text: text.into(),
        }
    }

    /// A hand-labelled discovery call; every expected value is worked out in the comments.
    fn discovery_call() -> Vec<Segment> {
        use Speaker::{Partner, User};
        vec![
            seg(Partner, 0.0, 4.0, "Hi, thanks for taking the call."),
            // gap 1.0 s after the partner
            seg(
                User,
                5.0,
                11.0,
                "Um, thanks. So I think we could maybe start with your goals?",
            ),
            seg(
                Partner,
                11.5,
                20.0,
                "Sure, we want to cut onboarding time in half.",
            ),
            // starts at 19.0, before the partner ended at 20.0: an interruption
            seg(
                User,
                19.0,
                25.0,
                "Basically that means what, you know, for your team?",
            ),
            seg(User, 25.0, 31.0, "And uh how do you measure it today?"),
            seg(Partner, 31.0, 40.0, "Mostly by gut feeling, honestly."),
            // gap 2.0 s
            seg(User, 42.0, 46.0, "Got it, that helps."),
        ]
    }

    #[test]
    fn a_hand_labelled_call_gives_the_hand_worked_values() {
        let m = compute(&discovery_call());
        assert!(m.timing_available);
        // user seconds 6 + 6 + 6 + 4 = 22; partner 4 + 8.5 + 9 = 21.5
        assert!((m.talk_ratio.unwrap() - 22.0 / 43.5).abs() < 1e-9);
        // user words: 12 + 9 + 8 + 4 = 33
        assert_eq!(m.user_words, 33);
        assert!((m.words_per_minute.unwrap() - 33.0 / (22.0 / 60.0)).abs() < 1e-9);
        // fillers: um, basically, you know, uh = 4
        assert_eq!(m.fillers.count, 4);
        assert_eq!(
            m.fillers.found.keys().cloned().collect::<Vec<_>>(),
            ["basically", "uh", "um", "you know"]
        );
        assert!((m.fillers_per_minute.unwrap() - 4.0 / (22.0 / 60.0)).abs() < 1e-9);
        // hedges: i think, maybe = 2
        assert_eq!(m.hedging.count, 2);
        // consecutive user segments 19.0 → 31.0 = 12 s is the longest run
        assert_eq!(m.longest_monologue_seconds, Some(12.0));
        // three question marks over 46 s of conversation
        assert_eq!(m.questions, 3);
        assert!((m.questions_per_10_min.unwrap() - 3.0 / (46.0 / 600.0)).abs() < 1e-9);
        // gaps 1.0 and 2.0 (the interruption is not a gap)
        assert_eq!(m.patience_seconds, Some(1.5));
        assert_eq!(m.interruptions, Some(1));
        let tokens: Vec<String> = discovery_call()
            .iter()
            .filter(|s| s.speaker == Speaker::User)
            .flat_map(|s| words(&s.text))
            .collect();
        let distinct = tokens
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        // "your", "that", "you" and "it" each appear twice: 33 − 4 = 29 distinct words
        assert_eq!(distinct, 29);
        assert!((m.vocabulary_diversity.unwrap() - 29.0 / 33.0).abs() < 1e-9);
    }

    #[test]
    fn missing_timings_make_time_metrics_unavailable_not_zero() {
        let mut call = discovery_call();
        call[2].end = None;
        let m = compute(&call);
        assert!(!m.timing_available);
        assert_eq!(m.talk_ratio, None);
        assert_eq!(m.words_per_minute, None);
        assert_eq!(m.fillers_per_minute, None);
        assert_eq!(m.patience_seconds, None);
        assert_eq!(m.interruptions, None);
        assert_eq!(m.questions, 3, "counts that need no clock stay");
        assert_eq!(m.fillers.count, 4);
    }

    #[test]
    fn phrases_match_whole_words_only() {
        assert_eq!(
            words("Ummm, I'm SORT-of sure."),
            ["ummm", "i'm", "sort", "of", "sure"]
        );
        let m = compute(&[seg(
            Speaker::User,
            0.0,
            6.0,
            "Ummm, I'm sort of sure; Erm, mighty fine.",
        )]);
        assert_eq!(m.fillers.count, 0, "ummm and erm are not um and er");
        assert_eq!(m.hedging.found.get("sort of"), Some(&1));
        assert_eq!(m.hedging.found.get("might"), None, "mighty is not might");
    }
}
