//! Scores the metrics against the session kind's targets (`[analysis.targets.KIND]`).
//!
//! Every metric that has a target in [`KindTargets`] gets a [`MetricScore`]: its value, its
//! target, a score and a one-line verdict ("within target", "too fast: 182 wpm vs 120–160").
//! A metric without a target is reported in the metrics but not scored.
//!
//! The score, from 1 to 5:
//! - 5 when the value is within the target (bounds inclusive);
//! - otherwise `5 − 4·min(d, 1)`, rounded to one decimal and never above 4.9, where `d` is the
//!   relative distance to the bound it misses: `|value − bound| / |bound|` (or `|value − bound|`
//!   when the bound is 0, which has no relative scale). Every 25 % outside costs one point, and
//!   a value twice the maximum, or none of a minimum, scores 1. The 4.9 cap keeps "5" meaning
//!   "within target" even when the value misses by a hair.
//!
//! A metric whose value is `None` (no timings, no partner, nothing said) is "unavailable": it
//! is listed with the reason as its verdict, but has no score and does not count towards
//! `overall`, the mean of the (rounded) metric scores rounded to one decimal; `None` when no
//! metric was scored.

use std::collections::BTreeMap;

use serde::Serialize;
use voxline_domain::config::KindTargets;

use super::metrics::Metrics;

/// What a metric is scored against; a range has both bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Target {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// One metric against its target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricScore {
    /// The measured value; `None` when unavailable.
    pub value: Option<f64>,
    pub target: Target,
    /// 1–5 (one decimal; 5 = within target); `None` when the metric is unavailable.
    pub score: Option<f64>,
    /// One line for people: "within target", "too fast: 182 wpm vs 120–160", "unavailable: …".
    pub verdict: String,
}

/// Per-metric scores (1–5, 5 = on target) and their mean.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Scores {
    /// Mean of the metric scores, rounded to one decimal; `None` when no metric could be scored.
    pub overall: Option<f64>,
    /// Every metric that has a target, by its name in the metrics.
    pub metrics: BTreeMap<&'static str, MetricScore>,
}

/// How one metric is named, read and described.
#[derive(Clone, Copy)]
struct Spec {
    name: &'static str,
    value: Option<f64>,
    target: Target,
    /// Needs the partner's speech (see the metrics module's no-partner rule).
    needs_partner: bool,
    /// Needs segment timings.
    needs_timing: bool,
    /// Measured from the recording (see [`super::voice`]).
    needs_audio: bool,
    /// Shows a number: `decimals` places (trailing zeros dropped), `percent` as 0–100 %.
    decimals: usize,
    percent: bool,
    /// Written after the value and after a one-sided bound (" wpm", " s").
    unit: &'static str,
    too_low: &'static str,
    too_high: &'static str,
}

fn specs(m: &Metrics, t: &KindTargets) -> Vec<Spec> {
    let range = |r: Option<[f64; 2]>| {
        r.map(|[low, high]| Target {
            min: Some(low),
            max: Some(high),
        })
    };
    let at_most = |max: Option<f64>| {
        max.map(|max| Target {
            min: None,
            max: Some(max),
        })
    };
    let at_least = |min: Option<f64>| {
        min.map(|min| Target {
            min: Some(min),
            max: None,
        })
    };
    // What most metrics are: measured from the segments and their timings, shown as a whole
    // number. Each metric below says how it differs.
    let timed = Spec {
        name: "",
        value: None,
        target: Target::default(),
        needs_partner: false,
        needs_timing: true,
        needs_audio: false,
        decimals: 0,
        percent: false,
        unit: "",
        too_low: "",
        too_high: "",
    };
    let candidates = [
        (
            range(t.talk_ratio),
            Spec {
                name: "talk_ratio",
                value: m.talk_ratio,
                needs_partner: true,
                percent: true,
                too_low: "talking too little",
                too_high: "talking too much",
                ..timed
            },
        ),
        (
            range(t.words_per_minute),
            Spec {
                name: "words_per_minute",
                value: m.words_per_minute,
                unit: " wpm",
                too_low: "too slow",
                too_high: "too fast",
                ..timed
            },
        ),
        (
            at_most(t.fillers_per_minute_max),
            Spec {
                name: "fillers_per_minute",
                value: m.fillers_per_minute,
                decimals: 1,
                unit: " per minute",
                too_low: "too few fillers",
                too_high: "too many fillers",
                ..timed
            },
        ),
        (
            at_most(t.longest_monologue_seconds_max),
            Spec {
                name: "longest_monologue_seconds",
                value: m.longest_monologue_seconds,
                unit: " s",
                too_low: "monologue too short",
                too_high: "monologue too long",
                ..timed
            },
        ),
        (
            at_least(t.questions_per_10_min_min),
            Spec {
                name: "questions_per_10_min",
                value: m.questions_per_10_min,
                decimals: 1,
                unit: " per 10 min",
                too_low: "too few questions",
                too_high: "too many questions",
                ..timed
            },
        ),
        (
            at_least(t.patience_seconds_min),
            Spec {
                name: "patience_seconds",
                value: m.patience_seconds,
                needs_partner: true,
                decimals: 2,
                unit: " s",
                too_low: "answering too quickly",
                too_high: "pausing too long",
                ..timed
            },
        ),
        (
            at_most(t.interruptions_max),
            Spec {
                name: "interruptions",
                value: m.interruptions.map(|n| n as f64),
                needs_partner: true,
                too_low: "too few interruptions",
                too_high: "too many interruptions",
                ..timed
            },
        ),
        (
            at_least(t.vocabulary_diversity_min),
            Spec {
                name: "vocabulary_diversity",
                value: m.vocabulary_diversity,
                needs_timing: false,
                decimals: 2,
                too_low: "vocabulary too repetitive",
                too_high: "vocabulary too varied",
                ..timed
            },
        ),
    ];
    let voice = m.voice.as_ref();
    let voiced = |name, value, target, decimals, unit, too_low, too_high| {
        (
            target,
            Spec {
                name,
                value,
                needs_audio: true,
                decimals,
                unit,
                too_low,
                too_high,
                ..timed
            },
        )
    };
    let voice_candidates = [
        voiced(
            "pitch_variation_semitones",
            voice.and_then(|v| v.pitch_variation_semitones),
            at_least(t.pitch_variation_semitones_min),
            1,
            " semitones",
            "monotone",
            "pitch too erratic",
        ),
        voiced(
            "long_pauses",
            voice.map(|v| v.pauses.long_count as f64),
            at_most(t.long_pauses_max),
            0,
            "",
            "too few long pauses",
            "too many long pauses",
        ),
        voiced(
            "speaking_rate_variation",
            voice.and_then(|v| v.speaking_rate_variation),
            at_most(t.speaking_rate_variation_max),
            2,
            "",
            "pace too even",
            "pace too uneven",
        ),
        voiced(
            "loudness_variation_db",
            voice.and_then(|v| v.loudness_variation_db),
            range(t.loudness_variation_db),
            1,
            " dB",
            "volume too flat",
            "volume too uneven",
        ),
    ];
    candidates
        .into_iter()
        .chain(voice_candidates)
        .filter_map(|(target, spec)| target.map(|target| Spec { target, ..spec }))
        .collect()
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `|value − bound|` relative to the bound (absolute when the bound is 0).
fn relative_distance(value: f64, bound: f64) -> f64 {
    let distance = (value - bound).abs();
    if bound == 0.0 {
        distance
    } else {
        distance / bound.abs()
    }
}

/// The score for a value `d` (relative distance) outside its target; see the module doc.
fn score_outside(d: f64) -> f64 {
    round1(5.0 - 4.0 * d.min(1.0)).clamp(1.0, 4.9)
}

impl Spec {
    /// `x` as shown to people, with at least `decimals` places (trailing zeros dropped).
    fn show(&self, x: f64, decimals: usize) -> String {
        let x = if self.percent { x * 100.0 } else { x };
        let mut text = format!("{x:.decimals$}");
        if text.contains('.') {
            text = text.trim_end_matches('0').trim_end_matches('.').to_string();
        }
        if self.percent {
            text.push('%');
        }
        text
    }

    fn unavailable(&self, m: &Metrics) -> String {
        let note = |note: &Option<String>, otherwise: &str| {
            note.clone().unwrap_or_else(|| otherwise.to_string())
        };
        let reason = if !m.speakers_known {
            note(&m.speakers_note, "the speakers could not be told apart")
        } else if self.needs_audio && m.voice.is_none() {
            note(&m.voice_note, "the recording could not be measured")
        } else if self.needs_partner && !m.partner_present {
            note(&m.speakers_note, "no partner speech to measure against")
        } else if self.needs_timing && !m.timing_available {
            "the transcript has no timings".to_string()
        } else {
            "not enough speech to measure".to_string()
        };
        format!("unavailable: {reason}")
    }

    fn judge(&self, m: &Metrics) -> MetricScore {
        let Some(value) = self.value else {
            return MetricScore {
                value: None,
                target: self.target,
                score: None,
                verdict: self.unavailable(m),
            };
        };
        let (label, bound) = match (self.target.min, self.target.max) {
            (Some(min), _) if value < min => (self.too_low, min),
            (_, Some(max)) if value > max => (self.too_high, max),
            _ => {
                return MetricScore {
                    value: Some(value),
                    target: self.target,
                    score: Some(5.0),
                    verdict: "within target".into(),
                };
            }
        };
        // A value that rounds to the bound it misses gets more places: "160.1 wpm vs 120–160",
        // not "160 wpm vs 120–160".
        let bound_text = self.show(bound, self.decimals);
        let value_text = (self.decimals..=self.decimals + 2)
            .map(|places| self.show(value, places))
            .find(|text| *text != bound_text)
            .unwrap_or_else(|| self.show(value, self.decimals + 2));
        let target_text = match (self.target.min, self.target.max) {
            (Some(min), Some(max)) => format!(
                "{}–{}",
                self.show(min, self.decimals),
                self.show(max, self.decimals)
            ),
            (Some(min), None) => format!("at least {}{}", self.show(min, self.decimals), self.unit),
            (None, Some(max)) => format!("at most {}{}", self.show(max, self.decimals), self.unit),
            (None, None) => String::new(),
        };
        MetricScore {
            value: Some(value),
            target: self.target,
            score: Some(score_outside(relative_distance(value, bound))),
            verdict: format!("{label}: {value_text}{} vs {target_text}", self.unit),
        }
    }
}

/// Scores every metric that has a target; no targets (an unknown kind) scores nothing.
pub fn score(metrics: &Metrics, targets: Option<&KindTargets>) -> Scores {
    let Some(targets) = targets else {
        return Scores::default();
    };
    let scored: BTreeMap<&'static str, MetricScore> = specs(metrics, targets)
        .iter()
        .map(|spec| (spec.name, spec.judge(metrics)))
        .collect();
    let values: Vec<f64> = scored.values().filter_map(|s| s.score).collect();
    let overall =
        (!values.is_empty()).then(|| round1(values.iter().sum::<f64>() / values.len() as f64));
    Scores {
        overall,
        metrics: scored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::metrics::{self, Segment, Speaker, compute};

    /// The sales targets of `config/default.toml`, spelled out so these tests do not move when
    /// the defaults are tuned.
    fn sales() -> KindTargets {
        KindTargets {
            talk_ratio: Some([0.40, 0.60]),
            words_per_minute: Some([120.0, 160.0]),
            fillers_per_minute_max: Some(5.0),
            longest_monologue_seconds_max: Some(90.0),
            questions_per_10_min_min: Some(5.0),
            patience_seconds_min: Some(0.5),
            interruptions_max: Some(2.0),
            vocabulary_diversity_min: Some(0.35),
            ..KindTargets::default()
        }
    }

    fn wpm_only() -> KindTargets {
        KindTargets {
            words_per_minute: Some([120.0, 160.0]),
            ..KindTargets::default()
        }
    }

    /// Metrics of a timed two-speaker call with the given words per minute and nothing else
    /// of interest.
    fn with_wpm(wpm: f64) -> Metrics {
        let mut m = compute(&[
            Segment {
                speaker: Speaker::Partner,
                start: Some(0.0),
                end: Some(1.0),
                text: "Go ahead.".into(),
            },
            Segment {
                speaker: Speaker::User,
                start: Some(1.0),
                end: Some(61.0),
                text: "Thanks.".into(),
            },
        ]);
        m.words_per_minute = Some(wpm);
        m
    }

    fn scored(m: &Metrics, targets: &KindTargets, name: &str) -> MetricScore {
        score(m, Some(targets)).metrics[name].clone()
    }

    /// The words-per-minute score of a call at `wpm` against 120–160.
    fn wpm_scored(wpm: f64) -> MetricScore {
        scored(&with_wpm(wpm), &wpm_only(), "words_per_minute")
    }

    /// Checks the score and the verdict of a call at `wpm` against 120–160.
    #[track_caller]
    fn assert_wpm_judged(wpm: f64, score: f64, verdict: &str) {
        let s = wpm_scored(wpm);
        assert_eq!(
            (s.score, s.verdict.as_str()),
            (Some(score), verdict),
            "{wpm} wpm"
        );
    }

    #[test]
    fn a_value_within_the_target_scores_5_bounds_included() {
        for wpm in [120.0, 141.6, 160.0] {
            assert_wpm_judged(wpm, 5.0, "within target");
            let s = wpm_scored(wpm);
            assert_eq!(s.value, Some(wpm));
            assert_eq!(
                s.target,
                Target {
                    min: Some(120.0),
                    max: Some(160.0)
                }
            );
        }
    }

    #[test]
    fn a_value_below_the_target_loses_a_point_per_25_percent() {
        // d = (120 − 90) / 120 = 0.25 → 5 − 4 × 0.25 = 4.0
        assert_wpm_judged(90.0, 4.0, "too slow: 90 wpm vs 120–160");
        // d = (120 − 60) / 120 = 0.5 → 3.0
        assert_eq!(wpm_scored(60.0).score, Some(3.0));
    }

    #[test]
    fn a_value_above_the_target_is_measured_from_the_upper_bound() {
        // d = (176 − 160) / 160 = 0.1 → 5 − 0.4 = 4.6
        assert_wpm_judged(176.0, 4.6, "too fast: 176 wpm vs 120–160");
        assert_eq!(wpm_scored(182.0).verdict, "too fast: 182 wpm vs 120–160");
    }

    #[test]
    fn far_outside_scores_1_and_a_hair_outside_is_not_5() {
        // d = (400 − 160) / 160 = 1.5, capped at 1 → 1.0
        assert_eq!(wpm_scored(400.0).score, Some(1.0));
        // d = 0.1 / 160 → 4.9975, but 5 means "within target": 4.9
        assert_wpm_judged(160.1, 4.9, "too fast: 160.1 wpm vs 120–160");
    }

    #[test]
    fn a_zero_bound_measures_the_distance_in_units() {
        let mut m = with_wpm(140.0);
        m.interruptions = Some(1);
        let strict = KindTargets {
            interruptions_max: Some(0.0),
            ..KindTargets::default()
        };
        // d = |1 − 0| = 1 → 1.0
        let s = scored(&m, &strict, "interruptions");
        assert_eq!(s.score, Some(1.0));
        assert_eq!(s.verdict, "too many interruptions: 1 vs at most 0");
    }

    #[test]
    fn the_sales_fixture_scores_as_worked_by_hand() {
        let m = compute(&metrics::tests::pricing_discovery_call());
        let s = score(&m, Some(&sales()));
        assert_eq!(s.metrics.len(), 8, "every sales metric has a target");
        // 114.29 wpm: d = (120 − 114.2857) / 120 = 0.047619 → 5 − 0.1905 = 4.8095 → 4.8
        let wpm = &s.metrics["words_per_minute"];
        assert_eq!(wpm.score, Some(4.8));
        assert_eq!(wpm.verdict, "too slow: 114 wpm vs 120–160");
        // 5.714 fillers/min: d = (5.7143 − 5) / 5 = 0.142857 → 5 − 0.5714 = 4.4286 → 4.4
        let fillers = &s.metrics["fillers_per_minute"];
        assert_eq!(fillers.score, Some(4.4));
        assert_eq!(
            fillers.verdict,
            "too many fillers: 5.7 per minute vs at most 5 per minute"
        );
        // talk ratio 0.525, monologue 6 s, 45 questions/10 min, patience 0.83 s,
        // 1 interruption, diversity 0.9: all within target
        for name in [
            "talk_ratio",
            "longest_monologue_seconds",
            "questions_per_10_min",
            "patience_seconds",
            "interruptions",
            "vocabulary_diversity",
        ] {
            assert_eq!(s.metrics[name].score, Some(5.0), "{name}");
            assert_eq!(s.metrics[name].verdict, "within target", "{name}");
        }
        // (4.8 + 4.4 + 6 × 5) / 8 = 39.2 / 8 = 4.9
        assert_eq!(s.overall, Some(4.9));
    }

    #[test]
    fn the_interview_fixture_talks_a_little_too_much() {
        let interview = KindTargets {
            talk_ratio: Some([0.50, 0.75]),
            ..KindTargets::default()
        };
        let m = compute(&metrics::tests::interview_answer());
        let s = score(&m, Some(&interview));
        // 25 / 31 = 0.80645: d = (0.80645 − 0.75) / 0.75 = 0.07527 → 5 − 0.3011 = 4.7
        let talk = &s.metrics["talk_ratio"];
        assert_eq!(talk.score, Some(4.7));
        assert_eq!(talk.verdict, "talking too much: 81% vs 50%–75%");
        assert_eq!(s.overall, Some(4.7));
    }

    #[test]
    fn unavailable_metrics_are_listed_with_the_reason_but_not_scored() {
        let presentation = KindTargets {
            talk_ratio: Some([0.80, 1.00]),
            words_per_minute: Some([110.0, 150.0]),
            fillers_per_minute_max: Some(3.0),
            vocabulary_diversity_min: Some(0.35),
            ..KindTargets::default()
        };
        let m = compute(&metrics::tests::untimed_monologue());
        let s = score(&m, Some(&presentation));
        let talk = &s.metrics["talk_ratio"];
        assert_eq!((talk.value, talk.score), (None, None));
        assert_eq!(
            talk.verdict,
            "unavailable: no partner speech to measure against"
        );
        for name in ["words_per_minute", "fillers_per_minute"] {
            assert_eq!(s.metrics[name].score, None, "{name}");
            assert_eq!(
                s.metrics[name].verdict,
                "unavailable: the transcript has no timings"
            );
        }
        // only the vocabulary (26 / 28 = 0.93 ≥ 0.35) is scored: the mean is its 5
        assert_eq!(s.metrics["vocabulary_diversity"].score, Some(5.0));
        assert_eq!(s.overall, Some(5.0));
    }

    #[test]
    fn nothing_scored_means_no_overall() {
        let m = compute(&metrics::tests::untimed_monologue());
        let custom = KindTargets {
            words_per_minute: Some([110.0, 170.0]),
            fillers_per_minute_max: Some(5.0),
            ..KindTargets::default()
        };
        let s = score(&m, Some(&custom));
        assert_eq!(s.metrics.len(), 2);
        assert_eq!(s.overall, None);
        assert_eq!(score(&m, None), Scores::default(), "no targets, no scores");
    }

    #[test]
    fn scores_serialise_for_the_feedback() {
        let s = score(&with_wpm(176.0), Some(&wpm_only()));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["overall"], 4.6);
        assert_eq!(json["metrics"]["words_per_minute"]["target"]["min"], 120.0);
        assert_eq!(json["metrics"]["words_per_minute"]["score"], 4.6);
        assert_eq!(
            json["metrics"]["words_per_minute"]["verdict"],
            "too fast: 176 wpm vs 120–160"
        );
    }
}
