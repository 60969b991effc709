//! Voice metrics from the recording itself, for the user's speech only: pauses, speaking-rate
//! variation, pitch (F0) variation and loudness variation. Pure functions over 16 kHz mono
//! samples and the user's transcript segments, so each formula is checked against synthetic
//! tones and silences with known values.
//!
//! Frames are 25 ms long every 10 ms. Formulas:
//! - frame loudness = 20·log10(RMS) in dBFS; a frame is *speech* when it lies in a user segment
//!   and is louder than `max(−50 dBFS, loudest user frame − 35 dB)`.
//! - pauses = runs of non-speech frames of at least 250 ms while the user holds the floor
//!   (inside a user segment, or between two user segments with no partner segment between
//!   them); reported as count, mean and longest (seconds) and the count of long pauses (> 2 s).
//! - speaking-rate variation = the coefficient of variation (standard deviation / mean) of the
//!   words per minute of the user's segments that have at least 3 words and last 1.5 s or more;
//!   needs two such segments.
//! - pitch (F0) per speech frame by YIN (de Cheveigné & Kawahara 2002: cumulative mean
//!   normalised difference, absolute threshold 0.15, parabolic refinement) between 70 and
//!   400 Hz; pitch variation = the standard deviation, in semitones, of 12·log2(F0 / median F0)
//!   over the voiced frames (needs 20 of them). Under about 2 semitones reads as monotone.
//! - loudness variation = the standard deviation of the speech frames' loudness (dB).
//!
//! YIN is written here rather than taken from a crate: the Rust ones on offer are single
//! releases without a maintenance record (yin, yin_rs, pitch-estimate) or pull in ndarray
//! (pyin), and the algorithm is forty lines.

use serde::Serialize;

use super::metrics::{Segment, Speaker, words};

pub const SAMPLE_RATE: usize = 16_000;
const FRAME: usize = SAMPLE_RATE / 40; // 25 ms
const HOP: usize = SAMPLE_RATE / 100; // 10 ms
const HOP_SECONDS: f64 = HOP as f64 / SAMPLE_RATE as f64;
const SPEECH_FLOOR_DB: f64 = -50.0;
const SPEECH_RANGE_DB: f64 = 35.0;
const MIN_PAUSE_SECONDS: f64 = 0.25;
const LONG_PAUSE_SECONDS: f64 = 2.0;
const MIN_F0_HZ: f64 = 70.0;
const MAX_F0_HZ: f64 = 400.0;
const YIN_THRESHOLD: f64 = 0.15;
const MIN_VOICED_FRAMES: usize = 20;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pauses {
    pub count: usize,
    pub mean_seconds: Option<f64>,
    pub longest_seconds: Option<f64>,
    /// Pauses longer than 2 s.
    pub long_count: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VoiceMetrics {
    pub pauses: Pauses,
    pub speaking_rate_variation: Option<f64>,
    pub median_pitch_hz: Option<f64>,
    pub pitch_variation_semitones: Option<f64>,
    pub loudness_variation_db: Option<f64>,
    /// The user's pitch over the call for charts: the median F0 of each second with at least
    /// 10 voiced frames, as `[seconds from the start, Hz]`.
    pub pitch_contour: Vec<[f64; 2]>,
}

/// Measures the user's voice in `samples` (16 kHz mono), using the transcript's timed
/// `segments` to know who speaks when. Segments without times are left out.
pub fn measure(samples: &[f32], segments: &[Segment]) -> VoiceMetrics {
    let frames = frame_loudness(samples);
    let user: Vec<(f64, f64)> = timed(segments, Speaker::User);
    let partner: Vec<(f64, f64)> = timed(segments, Speaker::Partner);
    let in_user = |t: f64| user.iter().any(|&(s, e)| t >= s && t < e);
    let loudest = frames
        .iter()
        .enumerate()
        .filter(|(i, _)| in_user(frame_time(*i)))
        .map(|(_, db)| *db)
        .fold(f64::NEG_INFINITY, f64::max);
    let threshold = SPEECH_FLOOR_DB.max(loudest - SPEECH_RANGE_DB);
    let speech: Vec<bool> = frames
        .iter()
        .enumerate()
        .map(|(i, db)| in_user(frame_time(i)) && *db > threshold)
        .collect();

    let speech_db: Vec<f64> = frames
        .iter()
        .zip(&speech)
        .filter(|(_, s)| **s)
        .map(|(db, _)| *db)
        .collect();
    let timed_pitches: Vec<(f64, f64)> = speech
        .iter()
        .enumerate()
        .filter(|(_, s)| **s)
        .filter_map(|(i, _)| {
            let start = i * HOP;
            let f0 = samples.get(start..start + FRAME * 2).and_then(yin)?;
            Some((frame_time(i), f0))
        })
        .collect();
    let pitches: Vec<f64> = timed_pitches.iter().map(|&(_, f0)| f0).collect();
    let median_pitch = median(&pitches);
    let pitch_variation = match median_pitch {
        Some(median) if pitches.len() >= MIN_VOICED_FRAMES => {
            let semitones: Vec<f64> = pitches.iter().map(|f| 12.0 * (f / median).log2()).collect();
            std_dev(&semitones)
        }
        _ => None,
    };
    VoiceMetrics {
        pauses: pauses(&speech, &floor_spans(&user, &partner)),
        speaking_rate_variation: rate_variation(segments),
        median_pitch_hz: median_pitch.filter(|_| pitches.len() >= MIN_VOICED_FRAMES),
        pitch_variation_semitones: pitch_variation,
        loudness_variation_db: std_dev(&speech_db),
        pitch_contour: contour(&timed_pitches),
    }
}

/// The median F0 of each whole second holding at least `MIN_CONTOUR_FRAMES` voiced frames.
fn contour(timed_pitches: &[(f64, f64)]) -> Vec<[f64; 2]> {
    const MIN_CONTOUR_FRAMES: usize = 10;
    let mut by_second: std::collections::BTreeMap<u64, Vec<f64>> = Default::default();
    for &(t, f0) in timed_pitches {
        by_second.entry(t.floor() as u64).or_default().push(f0);
    }
    by_second
        .into_iter()
        .filter(|(_, f0s)| f0s.len() >= MIN_CONTOUR_FRAMES)
        .filter_map(|(second, f0s)| {
            Some([second as f64 + 0.5, (median(&f0s)? * 10.0).round() / 10.0])
        })
        .collect()
}

fn timed(segments: &[Segment], speaker: Speaker) -> Vec<(f64, f64)> {
    segments
        .iter()
        .filter(|s| s.speaker == speaker)
        .filter_map(|s| Some((s.start?, s.end?)))
        .filter(|(s, e)| e > s)
        .collect()
}

fn frame_time(index: usize) -> f64 {
    // A frame stands for its centre.
    (index * HOP + FRAME / 2) as f64 / SAMPLE_RATE as f64
}

/// Loudness (dBFS) of each 25 ms frame every 10 ms.
fn frame_loudness(samples: &[f32]) -> Vec<f64> {
    if samples.len() < FRAME {
        return Vec::new();
    }
    (0..=(samples.len() - FRAME) / HOP)
        .map(|i| {
            let frame = &samples[i * HOP..i * HOP + FRAME];
            let power = frame.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / FRAME as f64;
            10.0 * power.max(1e-12).log10()
        })
        .collect()
}

/// The stretches where the user holds the floor: each user segment, joined to the next user
/// segment when no partner segment starts in between.
fn floor_spans(user: &[(f64, f64)], partner: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut sorted = user.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut spans: Vec<(f64, f64)> = Vec::new();
    for (start, end) in sorted {
        match spans.last_mut() {
            Some(last) if !partner.iter().any(|&(ps, _)| ps >= last.1 && ps < start) => {
                last.1 = last.1.max(end);
            }
            _ => spans.push((start, end)),
        }
    }
    spans
}

/// Runs of non-speech frames of at least [`MIN_PAUSE_SECONDS`] inside the floor spans, not
/// counting silence before the first or after the last speech frame of a span.
fn pauses(speech: &[bool], spans: &[(f64, f64)]) -> Pauses {
    let mut lengths = Vec::new();
    for &(start, end) in spans {
        let frames: Vec<bool> = speech
            .iter()
            .enumerate()
            .filter(|(i, _)| (start..end).contains(&frame_time(*i)))
            .map(|(_, s)| *s)
            .collect();
        let (Some(first), Some(last)) = (
            frames.iter().position(|s| *s),
            frames.iter().rposition(|s| *s),
        ) else {
            continue;
        };
        let mut run = 0usize;
        for &is_speech in &frames[first..=last] {
            if is_speech {
                if run as f64 * HOP_SECONDS >= MIN_PAUSE_SECONDS {
                    lengths.push(run as f64 * HOP_SECONDS);
                }
                run = 0;
            } else {
                run += 1;
            }
        }
    }
    Pauses {
        count: lengths.len(),
        mean_seconds: mean(&lengths),
        longest_seconds: lengths.iter().copied().reduce(f64::max),
        long_count: lengths.iter().filter(|l| **l > LONG_PAUSE_SECONDS).count(),
    }
}

fn rate_variation(segments: &[Segment]) -> Option<f64> {
    let rates: Vec<f64> = segments
        .iter()
        .filter(|s| s.speaker == Speaker::User)
        .filter_map(|s| {
            let seconds = s.end? - s.start?;
            let n = words(&s.text).len();
            (n >= 3 && seconds >= 1.5).then(|| n as f64 / (seconds / 60.0))
        })
        .collect();
    if rates.len() < 2 {
        return None;
    }
    Some(std_dev(&rates)? / mean(&rates)?)
}

/// YIN over a 50 ms window (two frames): the F0 in Hz, or `None` when the window is not
/// periodic enough (unvoiced, noise, silence) within 70–400 Hz.
fn yin(window: &[f32]) -> Option<f64> {
    let half = window.len() / 2;
    let min_lag = (SAMPLE_RATE as f64 / MAX_F0_HZ) as usize;
    let max_lag = ((SAMPLE_RATE as f64 / MIN_F0_HZ) as usize).min(half - 1);
    let x: Vec<f64> = window.iter().map(|&v| f64::from(v)).collect();
    let difference: Vec<f64> = (0..=max_lag)
        .map(|lag| (0..half).map(|i| (x[i] - x[i + lag]).powi(2)).sum::<f64>())
        .collect();
    // Cumulative mean normalised difference.
    let mut cmnd = vec![1.0; max_lag + 1];
    let mut running = 0.0;
    for lag in 1..=max_lag {
        running += difference[lag];
        cmnd[lag] = if running > 0.0 {
            difference[lag] * lag as f64 / running
        } else {
            1.0
        };
    }
    let mut lag = min_lag;
    while lag <= max_lag {
        if cmnd[lag] < YIN_THRESHOLD {
            // The bottom of this dip.
            while lag < max_lag && cmnd[lag + 1] < cmnd[lag] {
                lag += 1;
            }
            let refined = if lag > 0 && lag < max_lag {
                let (a, b, c) = (cmnd[lag - 1], cmnd[lag], cmnd[lag + 1]);
                let curvature = a - 2.0 * b + c;
                if curvature.abs() > f64::EPSILON {
                    lag as f64 + 0.5 * (a - c) / curvature
                } else {
                    lag as f64
                }
            } else {
                lag as f64
            };
            return Some(SAMPLE_RATE as f64 / refined);
        }
        lag += 1;
    }
    None
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(sorted[sorted.len() / 2])
}

fn std_dev(values: &[f64]) -> Option<f64> {
    let mean = mean(values)?;
    Some((values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, seconds: f64, amplitude: f32) -> Vec<f32> {
        (0..(seconds * SAMPLE_RATE as f64) as usize)
            .map(|i| {
                amplitude
                    * (2.0 * std::f64::consts::PI * hz * i as f64 / SAMPLE_RATE as f64).sin() as f32
            })
            .collect()
    }

    fn silence(seconds: f64) -> Vec<f32> {
        vec![0.0; (seconds * SAMPLE_RATE as f64) as usize]
    }

    fn user(start: f64, end: f64, text: &str) -> Segment {
        Segment {
            speaker: Speaker::User,
            start: Some(start),
            end: Some(end),
            text: text.into(),
        }
    }

    fn partner(start: f64, end: f64) -> Segment {
        Segment {
            speaker: Speaker::Partner,
            start: Some(start),
            end: Some(end),
            text: "Go on.".into(),
        }
    }

    #[test]
    fn yin_finds_the_pitch_of_a_tone() {
        for hz in [100.0, 150.0, 220.0, 330.0] {
            let f0 = yin(&tone(hz, 0.05, 0.5)).expect("a tone is periodic");
            assert!((f0 - hz).abs() < 1.0, "{hz} Hz heard as {f0}");
        }
        assert_eq!(yin(&silence(0.05)), None);
    }

    #[test]
    fn a_steady_tone_has_no_pitch_variation_and_an_octave_apart_has_six_semitones() {
        let steady = tone(150.0, 3.0, 0.3);
        let m = measure(&steady, &[user(0.0, 3.0, "one two three four")]);
        assert!((m.median_pitch_hz.unwrap() - 150.0).abs() < 1.5, "{m:?}");
        assert!(m.pitch_variation_semitones.unwrap() < 0.1, "{m:?}");

        // Half the time at 110 Hz, half at 220 Hz: every frame is 6 semitones from the
        // (upper) median or 0 → standard deviation 6.
        let mut octave = tone(110.0, 2.0, 0.3);
        octave.extend(tone(220.0, 2.0, 0.3));
        let m = measure(&octave, &[user(0.0, 4.0, "one two three four")]);
        let variation = m.pitch_variation_semitones.unwrap();
        assert!((variation - 6.0).abs() < 0.3, "{variation}");
    }

    #[test]
    fn pauses_inside_the_users_turn_are_counted_with_their_lengths() {
        // speech 1 s · pause 0.5 s · speech 1 s · pause 3 s · speech 1 s
        let mut audio = tone(150.0, 1.0, 0.3);
        audio.extend(silence(0.5));
        audio.extend(tone(150.0, 1.0, 0.3));
        audio.extend(silence(3.0));
        audio.extend(tone(150.0, 1.0, 0.3));
        let m = measure(&audio, &[user(0.0, 6.5, "so here is my point")]);
        assert_eq!(m.pauses.count, 2, "{m:?}");
        assert_eq!(m.pauses.long_count, 1);
        let longest = m.pauses.longest_seconds.unwrap();
        assert!((longest - 3.0).abs() < 0.05, "{longest}");
        let mean = m.pauses.mean_seconds.unwrap();
        assert!((mean - 1.75).abs() < 0.05, "{mean}");
    }

    #[test]
    fn silence_while_the_partner_has_the_floor_is_no_pause_of_the_user() {
        // The user speaks, the partner answers (silence on this track), the user speaks again.
        let mut audio = tone(150.0, 1.0, 0.3);
        audio.extend(silence(3.0));
        audio.extend(tone(150.0, 1.0, 0.3));
        let segments = [
            user(0.0, 1.0, "my first point"),
            partner(1.2, 3.8),
            user(4.0, 5.0, "my second point"),
        ];
        assert_eq!(measure(&audio, &segments).pauses.count, 0);
    }

    #[test]
    fn loudness_variation_is_the_spread_of_speech_loudness_in_db() {
        // Equal time at amplitudes a and a/10: 20 dB apart → standard deviation 10 dB.
        let mut audio = tone(150.0, 2.0, 0.5);
        audio.extend(tone(150.0, 2.0, 0.05));
        let m = measure(&audio, &[user(0.0, 4.0, "loud then quiet")]);
        let spread = m.loudness_variation_db.unwrap();
        assert!((spread - 10.0).abs() < 0.5, "{spread}");
    }

    #[test]
    fn speaking_rate_variation_compares_the_users_segments() {
        // 120 and 240 words per minute: mean 180, standard deviation 60 → 1/3.
        let segments = [
            user(0.0, 3.0, "one two three four five six"),
            user(3.0, 6.0, "a b c d e f g h i j k l"),
        ];
        let cv = rate_variation(&segments).unwrap();
        assert!((cv - 1.0 / 3.0).abs() < 1e-9, "{cv}");
        assert_eq!(
            rate_variation(&segments[..1]),
            None,
            "one segment has no variation"
        );
    }

    #[test]
    fn without_voiced_user_speech_the_pitch_is_unavailable() {
        let m = measure(&silence(3.0), &[user(0.0, 3.0, "inaudible words here")]);
        assert_eq!(m.pitch_variation_semitones, None);
        assert_eq!(m.median_pitch_hz, None);
        assert_eq!(m.loudness_variation_db, None);
        assert_eq!(m.pauses.count, 0);
    }
}
