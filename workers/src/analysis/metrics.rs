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
//!
//! The partner-dependent metrics (talk ratio, patience, interruptions) are `None` when the
//! transcript has no partner segment at all: a monologue (a presentation rehearsal) or a
//! recording of one voice has no partner to measure against, and reporting a talk ratio of
//! 100 % or "0 interruptions" there would score something that was never measured.
//! `partner_present` says which case a `None` is.
//!
//! When any segment's speaker is `unknown` (a recording whose voices could not be told apart),
//! nothing is counted as the user's: every user metric, counts included, is `None`, because
//! the partner's words would otherwise be counted as the user's. `speakers_known` says so.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::voice::VoiceMetrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    User,
    Partner,
    /// Someone in a recording whose voices could not be told apart.
    Unknown,
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
    /// False when no segment is the partner's: the partner-dependent metrics are then `None`.
    pub partner_present: bool,
    /// False when some segment's speaker is unknown: every user metric is then `None`.
    pub speakers_known: bool,
    pub talk_ratio: Option<f64>,
    pub words_per_minute: Option<f64>,
    pub user_words: Option<usize>,
    pub fillers: Option<Occurrences>,
    pub fillers_per_minute: Option<f64>,
    pub longest_monologue_seconds: Option<f64>,
    pub questions: Option<usize>,
    pub questions_per_10_min: Option<f64>,
    pub patience_seconds: Option<f64>,
    pub interruptions: Option<usize>,
    pub hedging: Option<Occurrences>,
    pub vocabulary_diversity: Option<f64>,
    /// Why speaker-based metrics are unavailable, as the transcription found ("one voice was
    /// heard in the recording"); set by the analysis from the transcript's attribution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speakers_note: Option<String>,
    /// Measured from the recording, for the user's speech only; `None` with `voice_note`
    /// saying why (no recording, speakers not told apart, …).
    pub voice: Option<VoiceMetrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voice_note: Option<String>,
}

impl Metrics {
    /// Nothing measured: the speakers of `segments` are not known.
    fn unattributed(timing_available: bool) -> Self {
        Metrics {
            timing_available,
            partner_present: false,
            speakers_known: false,
            talk_ratio: None,
            words_per_minute: None,
            user_words: None,
            fillers: None,
            fillers_per_minute: None,
            longest_monologue_seconds: None,
            questions: None,
            questions_per_10_min: None,
            patience_seconds: None,
            interruptions: None,
            hedging: None,
            vocabulary_diversity: None,
            speakers_note: None,
            voice: None,
            voice_note: None,
        }
    }
}

pub use voxline_domain::lexicon::{FILLERS, HEDGES, words};

fn count_phrases(tokens: &[String], phrases: &[&str]) -> Occurrences {
    let mut found = BTreeMap::new();
    for (phrase, _) in voxline_domain::lexicon::phrase_matches(tokens, phrases) {
        *found.entry(phrase.to_string()).or_insert(0) += 1;
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
    if segments.iter().any(|s| s.speaker == Speaker::Unknown) {
        return Metrics::unattributed(timing_available);
    }
    let partner_present = segments.iter().any(|s| s.speaker == Speaker::Partner);
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
    let with_partner = |f: &dyn Fn() -> Option<f64>| if partner_present { timed(f) } else { None };
    let user_seconds: f64 = user.iter().filter_map(|s| duration(s)).sum();
    let partner_seconds: f64 = segments
        .iter()
        .filter(|s| s.speaker == Speaker::Partner)
        .filter_map(duration)
        .sum();
    let per_minute =
        |n: usize| timed(&|| (user_seconds > 0.0).then(|| n as f64 / (user_seconds / 60.0)));

    let talk_ratio = with_partner(&|| {
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
                Speaker::Partner | Speaker::Unknown => run_start = None,
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
        partner_present,
        speakers_known: true,
        talk_ratio,
        words_per_minute: per_minute(user_words),
        user_words: Some(user_words),
        fillers_per_minute: per_minute(fillers.count),
        fillers: Some(fillers),
        longest_monologue_seconds,
        questions: Some(questions),
        questions_per_10_min: conversation_seconds
            .and_then(|c| (c > 0.0).then(|| questions as f64 / (c / 600.0))),
        patience_seconds: with_partner(&|| {
            (!gaps.is_empty()).then(|| gaps.iter().sum::<f64>() / gaps.len() as f64)
        }),
        interruptions: (timing_available && partner_present).then_some(interruptions),
        hedging: Some(hedging),
        vocabulary_diversity,
        speakers_note: None,
        voice: None,
        voice_note: None,
    }
}

#[cfg(test)]
// Visible to the scoring tests, which score these same fixtures.
pub(crate) mod tests {
    use super::*;

    impl Metrics {
        /// The filler counts, which every attributed transcript has.
        pub(crate) fn fillers(&self) -> &Occurrences {
            self.fillers.as_ref().expect("fillers are counted")
        }

        pub(crate) fn hedging(&self) -> &Occurrences {
            self.hedging.as_ref().expect("hedges are counted")
        }
    }

    #[test]
    fn when_a_speaker_is_unknown_nothing_is_counted_as_the_users() {
        let mut call = pricing_discovery_call();
        call[2].speaker = Speaker::Unknown;
        let m = compute(&call);
        assert!(!m.speakers_known);
        assert!(m.timing_available);
        assert_eq!(
            (m.user_words, m.questions, &m.fillers, &m.hedging),
            (None, None, &None, &None)
        );
        assert_eq!(m.words_per_minute, None);
        assert_eq!(m.talk_ratio, None);
        assert_eq!(m.interruptions, None);
        assert_eq!(m.vocabulary_diversity, None);
        assert_eq!(m.longest_monologue_seconds, None);
        assert!(compute(&pricing_discovery_call()).speakers_known);
    }

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
        assert_eq!(m.user_words.unwrap(), 33);
        assert!((m.words_per_minute.unwrap() - 33.0 / (22.0 / 60.0)).abs() < 1e-9);
        // fillers: um, basically, you know, uh = 4
        assert_eq!(m.fillers().count, 4);
        assert_eq!(
            m.fillers().found.keys().cloned().collect::<Vec<_>>(),
            ["basically", "uh", "um", "you know"]
        );
        assert!((m.fillers_per_minute.unwrap() - 4.0 / (22.0 / 60.0)).abs() < 1e-9);
        // hedges: i think, maybe = 2
        assert_eq!(m.hedging().count, 2);
        // consecutive user segments 19.0 → 31.0 = 12 s is the longest run
        assert_eq!(m.longest_monologue_seconds, Some(12.0));
        // three question marks over 46 s of conversation
        assert_eq!(m.questions.unwrap(), 3);
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
        assert_eq!(m.questions, Some(3), "counts that need no clock stay");
        assert_eq!(m.fillers().count, 4);
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
        assert_eq!(m.fillers().count, 0, "ummm and erm are not um and er");
        assert_eq!(m.hedging().found.get("sort of"), Some(&1));
        assert_eq!(m.hedging().found.get("might"), None, "mighty is not might");
    }

    /// `actual` is `Some(expected)` to within rounding error.
    fn assert_close(actual: Option<f64>, expected: f64, what: &str) {
        let actual = actual.unwrap_or_else(|| panic!("{what} is unavailable, expected {expected}"));
        assert!(
            (actual - expected).abs() < 1e-9,
            "{what}: {actual} is not {expected}"
        );
    }

    /// Fixture 1, a sales discovery call: the seller asks, listens, overlaps the prospect once.
    pub(crate) fn pricing_discovery_call() -> Vec<Segment> {
        use Speaker::{Partner, User};
        vec![
            seg(
                Partner,
                0.0,
                3.0,
                "Thanks for calling Initech, how can I help?",
            ),
            seg(
                User,
                4.0,
                10.0,
                "Hi, um, I wanted to ask how your team handles reporting today?",
            ),
            seg(Partner, 10.0, 18.0, "We export spreadsheets every Friday."),
            seg(
                User,
                18.5,
                24.5,
                "I see. What does that cost you each week, you know, in hours?",
            ),
            seg(Partner, 23.0, 28.0, "Maybe six hours."),
            seg(
                User,
                27.0,
                33.0,
                "So I think we could probably automate most of that?",
            ),
            seg(Partner, 33.0, 36.0, "Sounds interesting."),
            seg(User, 37.0, 40.0, "Great, let's book a demo."),
        ]
    }

    #[test]
    fn fixture_sales_discovery_call() {
        let m = compute(&pricing_discovery_call());
        assert!(m.timing_available && m.partner_present);
        // user seconds: (10−4) + (24.5−18.5) + (33−27) + (40−37) = 6 + 6 + 6 + 3 = 21
        // partner seconds: 3 + 8 + 5 + 3 = 19; talk ratio = 21 / 40
        assert_close(m.talk_ratio, 21.0 / 40.0, "talk ratio");
        // words: "hi um i wanted to ask how your team handles reporting today" 12
        //      + "i see what does that cost you each week you know in hours" 13
        //      + "so i think we could probably automate most of that" 10
        //      + "great let's book a demo" 5 = 40
        assert_eq!(m.user_words.unwrap(), 40);
        // 40 words / (21 s / 60) = 114.285… wpm
        assert_close(m.words_per_minute, 40.0 * 60.0 / 21.0, "words per minute");
        // fillers: "um", "you know" = 2 → 2 / (21 / 60) = 5.714… per minute
        assert_eq!(m.fillers().count, 2);
        assert_eq!(
            m.fillers().found,
            BTreeMap::from([("um".to_string(), 1), ("you know".to_string(), 1)])
        );
        assert_close(
            m.fillers_per_minute,
            2.0 * 60.0 / 21.0,
            "fillers per minute",
        );
        // hedges: "i think", "probably" = 2 (the partner's "maybe" is not the user's)
        assert_eq!(
            m.hedging().found,
            BTreeMap::from([("i think".to_string(), 1), ("probably".to_string(), 1)])
        );
        assert_eq!(m.hedging().count, 2);
        // every user turn is followed by the partner: the longest run is one 6 s turn
        assert_eq!(m.longest_monologue_seconds, Some(6.0));
        // "?" in turns 1, 2, 3 = 3 over 0 → 40 s: 3 / (40 / 600) = 45 per 10 min
        assert_eq!(m.questions.unwrap(), 3);
        assert_close(m.questions_per_10_min, 45.0, "questions per 10 min");
        // gaps after the partner: 4−3 = 1, 18.5−18 = 0.5, (27 < 28: interruption), 37−36 = 1
        // patience = (1 + 0.5 + 1) / 3 = 0.8333…
        assert_close(m.patience_seconds, 2.5 / 3.0, "patience");
        assert_eq!(m.interruptions, Some(1));
        // repeats: "i" ×3 (+2), "you" ×2 (+1), "that" ×2 (+1): 40 − 4 = 36 distinct
        assert_close(m.vocabulary_diversity, 36.0 / 40.0, "vocabulary diversity");
    }

    /// Fixture 2, an interview answer: one long answer in two consecutive segments, a
    /// follow-up question, a short answer that starts exactly as the interviewer stops.
    pub(crate) fn interview_answer() -> Vec<Segment> {
        use Speaker::{Partner, User};
        vec![
            seg(
                Partner,
                0.0,
                4.0,
                "Tell me about a time you led a difficult project.",
            ),
            seg(
                User,
                5.0,
                15.0,
                "Sure. Last year I led the migration of our billing system to a new provider, \
                 and basically the deadline was fixed by the old contract.",
            ),
            seg(
                User,
                15.0,
                24.0,
                "I split the work into three phases, I kept the finance team informed every \
                 week, and we finished two days early.",
            ),
            seg(Partner, 25.0, 27.0, "What would you do differently?"),
            seg(
                User,
                27.0,
                33.0,
                "I would involve the support team sooner. How does your team handle launches?",
            ),
        ]
    }

    #[test]
    fn fixture_interview_answer() {
        let m = compute(&interview_answer());
        assert!(m.timing_available && m.partner_present);
        // user seconds: 10 + 9 + 6 = 25; partner: 4 + 2 = 6; talk ratio = 25 / 31
        assert_close(m.talk_ratio, 25.0 / 31.0, "talk ratio");
        // words: 25 ("sure last year … old contract") + 21 ("i split … two days early")
        //      + 13 ("i would involve … handle launches") = 59
        assert_eq!(m.user_words.unwrap(), 59);
        // 59 / (25 / 60) = 141.6 wpm
        assert_close(m.words_per_minute, 141.6, "words per minute");
        // fillers: "basically" = 1 → 1 / (25 / 60) = 2.4 per minute
        assert_eq!(m.fillers().count, 1);
        assert_eq!(m.fillers().found.get("basically"), Some(&1));
        assert_close(m.fillers_per_minute, 2.4, "fillers per minute");
        // no hedging word or phrase ("would" is not one)
        assert_eq!(m.hedging(), &Occurrences::default());
        // the two consecutive answer segments run 5 → 24 = 19 s (the last answer is 6 s)
        assert_eq!(m.longest_monologue_seconds, Some(19.0));
        // one "?" over 0 → 33 s: 1 / (33 / 600) = 18.18… per 10 min
        assert_eq!(m.questions.unwrap(), 1);
        assert_close(m.questions_per_10_min, 600.0 / 33.0, "questions per 10 min");
        // gaps: 5 − 4 = 1 and 27 − 27 = 0 (starting as the partner stops is no interruption)
        assert_close(m.patience_seconds, 0.5, "patience");
        assert_eq!(m.interruptions, Some(0));
        // repeats: "the" ×6 (+5), "i" ×4 (+3), "team" ×3 (+2), "and" ×2 (+1):
        // 59 − 11 = 48 distinct
        assert_close(m.vocabulary_diversity, 48.0 / 59.0, "vocabulary diversity");
    }

    /// Fixture 3, a presentation rehearsal transcribed without timings or a partner.
    pub(crate) fn untimed_monologue() -> Vec<Segment> {
        let untimed = |text: &str| Segment {
            speaker: Speaker::User,
            start: None,
            end: None,
            text: text.into(),
        };
        vec![
            untimed("Good morning everyone. Um, today I will show you our quarterly results."),
            untimed("Revenue grew by twelve percent, which is, I think, our best quarter so far."),
            untimed("Any questions?"),
        ]
    }

    #[test]
    fn fixture_monologue_without_timings() {
        let m = compute(&untimed_monologue());
        assert!(!m.timing_available);
        assert!(!m.partner_present);
        // no clock: every time-based metric is unavailable
        assert_eq!(m.words_per_minute, None);
        assert_eq!(m.fillers_per_minute, None);
        assert_eq!(m.longest_monologue_seconds, None);
        assert_eq!(m.questions_per_10_min, None);
        // no partner (and no clock): nothing to measure the user against
        assert_eq!(m.talk_ratio, None);
        assert_eq!(m.patience_seconds, None);
        assert_eq!(m.interruptions, None);
        // words: 12 ("good morning … quarterly results") + 14 ("revenue grew … so far")
        //      + 2 ("any questions") = 28
        assert_eq!(m.user_words.unwrap(), 28);
        // fillers: "um" = 1; hedges: "i think" = 1; questions: 1
        assert_eq!(m.fillers().count, 1);
        assert_eq!(m.fillers().found.get("um"), Some(&1));
        assert_eq!(m.hedging().count, 1);
        assert_eq!(m.hedging().found.get("i think"), Some(&1));
        assert_eq!(m.questions.unwrap(), 1);
        // repeats: "i" ×2, "our" ×2: 28 − 2 = 26 distinct
        assert_close(m.vocabulary_diversity, 26.0 / 28.0, "vocabulary diversity");
    }

    #[test]
    fn a_timed_monologue_has_no_partner_metrics_but_keeps_its_own() {
        use Speaker::User;
        let m = compute(&[
            seg(User, 0.0, 20.0, "Welcome to the quarterly review."),
            seg(User, 21.0, 40.0, "Revenue grew and costs fell."),
        ]);
        assert!(m.timing_available);
        assert!(!m.partner_present);
        assert_eq!(m.talk_ratio, None, "not 100 %: there is no partner");
        assert_eq!(m.patience_seconds, None);
        assert_eq!(m.interruptions, None, "not 0: there is no partner");
        // 10 words over 20 + 19 = 39 s → 10 / (39 / 60) wpm; one run 0 → 40 s
        assert_close(m.words_per_minute, 10.0 * 60.0 / 39.0, "words per minute");
        assert_eq!(m.longest_monologue_seconds, Some(40.0));
    }
}
