//! Cutting long audio into Whisper's 30 s windows at pauses.
//!
//! Whisper sees 30 s at a time. A blind cut every 30 s splits a word in two and both halves are
//! usually lost, so each cut is moved back to the quietest moment in the last few seconds of
//! its window — in speech, almost always a pause between words or sentences.

use std::ops::Range;

use super::mel::{N_SAMPLES, SAMPLE_RATE};

/// How far before the 30 s mark a cut may move to find a pause.
const SEARCH_SAMPLES: usize = 5 * SAMPLE_RATE;
/// Loudness is judged over this span, long enough to skip the gaps inside a word.
const QUIET_SPAN: usize = SAMPLE_RATE / 5;
/// Candidate cut points are this far apart (10 ms).
const STEP: usize = SAMPLE_RATE / 100;

/// Splits `samples` (16 kHz) into consecutive windows of at most 30 s that cover it all.
pub fn plan_windows(samples: &[f32]) -> Vec<Range<usize>> {
    // Prefix sums of energy make each span's loudness O(1); f64 keeps hours of audio exact
    // enough.
    let mut energy = Vec::with_capacity(samples.len() + 1);
    energy.push(0.0f64);
    let mut total = 0.0f64;
    for &s in samples {
        total += f64::from(s) * f64::from(s);
        energy.push(total);
    }

    let mut windows = Vec::new();
    let mut start = 0;
    while samples.len() - start > N_SAMPLES {
        let cut = quietest_cut(
            &energy,
            start + N_SAMPLES - SEARCH_SAMPLES,
            start + N_SAMPLES,
        );
        windows.push(start..cut);
        start = cut;
    }
    if start < samples.len() {
        windows.push(start..samples.len());
    }
    windows
}

/// The cut point in `earliest..=latest` whose surrounding `QUIET_SPAN` holds the least
/// energy; on a tie the later one, to keep windows long.
fn quietest_cut(energy: &[f64], earliest: usize, latest: usize) -> usize {
    let half = QUIET_SPAN / 2;
    let len = energy.len() - 1;
    let loudness = |cut: usize| {
        let from = cut.saturating_sub(half);
        let to = (cut + half).min(len);
        energy[to] - energy[from]
    };
    let mut best = latest;
    let mut best_loudness = loudness(latest);
    let mut cut = latest;
    while cut >= earliest + STEP {
        cut -= STEP;
        let l = loudness(cut);
        if l < best_loudness {
            best = cut;
            best_loudness = l;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: usize = SAMPLE_RATE;

    fn noise(len: usize) -> Vec<f32> {
        // Deterministic "speech": a loud, busy signal without pauses.
        (0..len)
            .map(|i| (((i * 7919) % 1000) as f32 / 1000.0) - 0.5)
            .collect()
    }

    #[test]
    fn audio_up_to_thirty_seconds_is_one_window() {
        assert_eq!(plan_windows(&noise(10 * SECOND)), vec![0..10 * SECOND]);
        assert_eq!(plan_windows(&noise(30 * SECOND)), vec![0..30 * SECOND]);
        assert!(plan_windows(&[]).is_empty());
    }

    #[test]
    fn a_long_recording_is_cut_in_the_pause_before_the_thirty_second_mark() {
        let mut audio = noise(70 * SECOND);
        // A half-second pause from 27.0 s to 27.5 s.
        audio[27 * SECOND..27 * SECOND + SECOND / 2].fill(0.0);
        let windows = plan_windows(&audio);
        let first_cut = windows[0].end;
        assert!(
            (27 * SECOND..27 * SECOND + SECOND / 2).contains(&first_cut),
            "cut at {} s",
            first_cut as f64 / SECOND as f64
        );
        assert_eq!(windows[1].start, first_cut);
    }

    #[test]
    fn windows_cover_the_audio_exactly_and_never_exceed_thirty_seconds() {
        let audio = noise(125 * SECOND + 123);
        let windows = plan_windows(&audio);
        assert_eq!(windows.first().map(|w| w.start), Some(0));
        assert_eq!(windows.last().map(|w| w.end), Some(audio.len()));
        for pair in windows.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        for w in &windows {
            assert!(w.len() <= N_SAMPLES);
            assert!(!w.is_empty());
        }
    }

    #[test]
    fn without_any_pause_the_cut_falls_within_the_last_five_seconds() {
        let windows = plan_windows(&noise(40 * SECOND));
        assert!((25 * SECOND..=30 * SECOND).contains(&windows[0].end));
    }
}
