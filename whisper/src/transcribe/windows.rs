//! Cutting long audio into Whisper's 30 s windows at pauses, and deciding where the next
//! window starts.
//!
//! Whisper sees 30 s at a time. A blind cut every 30 s splits a word in two and both halves are
//! usually lost, so each cut is moved back to the quietest moment in the last few seconds of
//! its window — in speech, almost always a pause between words or sentences.
//!
//! Even at a pause, Whisper tends to skip a short phrase in the last second of a window, and a
//! phrase it left open (no closing timestamp) may be cut short. So, as OpenAI's own
//! `transcribe()` does, the next window starts where the last phrase that was heard in full
//! ended, and that tail is heard again.

use super::mel::{N_SAMPLES, SAMPLE_RATE};
use super::timestamps::WindowSegment;

/// How far before the 30 s mark a cut may move to find a pause.
const SEARCH_SAMPLES: usize = 5 * SAMPLE_RATE;
/// Loudness is judged over this span, long enough to skip the gaps inside a word.
const QUIET_SPAN: usize = SAMPLE_RATE / 5;
/// Candidate cut points are this far apart (10 ms).
const STEP: usize = SAMPLE_RATE / 100;
/// A window's output ending this long before the window does leaves a tail worth hearing again.
const UNHEARD_TAIL_SECS: f64 = 1.0;
/// Every window moves the start on by at least this much, so the loop always ends.
const MIN_PROGRESS_SECS: f64 = 5.0;

/// Where the window starting at `start` ends: the end of the audio if it is within 30 s,
/// otherwise the quietest point in the window's last five seconds.
pub fn window_end(samples: &[f32], start: usize) -> usize {
    if samples.len() - start <= N_SAMPLES {
        return samples.len();
    }
    quietest_cut(
        samples,
        start + N_SAMPLES - SEARCH_SAMPLES,
        start + N_SAMPLES,
    )
}

/// The cut point in `earliest..=latest` whose surrounding `QUIET_SPAN` holds the least
/// energy; on a tie the later one, to keep windows long.
fn quietest_cut(samples: &[f32], earliest: usize, latest: usize) -> usize {
    let half = QUIET_SPAN / 2;
    // Prefix sums of energy over the search region only: O(1) per candidate, and memory that
    // does not grow with the length of the recording.
    let from = earliest.saturating_sub(half);
    let to = (latest + half).min(samples.len());
    let mut energy = Vec::with_capacity(to - from + 1);
    let mut total = 0.0f64;
    energy.push(total);
    for &s in &samples[from..to] {
        total += f64::from(s) * f64::from(s);
        energy.push(total);
    }
    let loudness = |cut: usize| {
        let lo = cut.saturating_sub(half).max(from) - from;
        let hi = (cut + half).min(to) - from;
        energy[hi] - energy[lo]
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

/// Given what was heard in a window of `window_len` samples that is not the last one: how many
/// of its segments to keep, and how many samples from its start the next window begins.
pub fn resume_after(heard: &[WindowSegment], window_len: usize) -> (usize, usize) {
    let window_secs = window_len as f64 / SAMPLE_RATE as f64;
    let to_samples = |secs: f64| ((secs * SAMPLE_RATE as f64).round() as usize).min(window_len);
    match heard.last() {
        // An open phrase is dropped and heard again whole from its start.
        Some(last) if !last.closed && last.start >= MIN_PROGRESS_SECS => {
            (heard.len() - 1, to_samples(last.start))
        }
        // Speech may sit unheard after the last phrase: hear it again from that phrase's end.
        Some(last)
            if last.closed
                && window_secs - last.end > UNHEARD_TAIL_SECS
                && last.end >= MIN_PROGRESS_SECS =>
        {
            (heard.len(), to_samples(last.end))
        }
        _ => (heard.len(), window_len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: usize = SAMPLE_RATE;

    fn busy(len: usize) -> Vec<f32> {
        // Deterministic "speech": a loud, busy signal without pauses.
        (0..len)
            .map(|i| (((i * 7919) % 1000) as f32 / 1000.0) - 0.5)
            .collect()
    }

    /// The windows when every window is heard to its end.
    fn plan(samples: &[f32]) -> Vec<std::ops::Range<usize>> {
        let mut windows = Vec::new();
        let mut start = 0;
        while start < samples.len() {
            let end = window_end(samples, start);
            windows.push(start..end);
            start = end;
        }
        windows
    }

    fn heard(start: f64, end: f64, closed: bool) -> WindowSegment {
        WindowSegment {
            start,
            end,
            text: "words".to_string(),
            closed,
        }
    }

    #[test]
    fn audio_up_to_thirty_seconds_is_one_window() {
        assert_eq!(plan(&busy(10 * SECOND)), vec![0..10 * SECOND]);
        assert_eq!(plan(&busy(30 * SECOND)), vec![0..30 * SECOND]);
        assert!(plan(&[]).is_empty());
    }

    #[test]
    fn a_long_recording_is_cut_in_the_pause_before_the_thirty_second_mark() {
        let mut audio = busy(70 * SECOND);
        // A half-second pause from 27.0 s to 27.5 s.
        audio[27 * SECOND..27 * SECOND + SECOND / 2].fill(0.0);
        let cut = window_end(&audio, 0);
        assert!(
            (27 * SECOND..27 * SECOND + SECOND / 2).contains(&cut),
            "cut at {} s",
            cut as f64 / SECOND as f64
        );
    }

    #[test]
    fn windows_cover_the_audio_exactly_and_never_exceed_thirty_seconds() {
        let audio = busy(125 * SECOND + 123);
        let windows = plan(&audio);
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
        let cut = window_end(&busy(40 * SECOND), 0);
        assert!((25 * SECOND..=30 * SECOND).contains(&cut));
    }

    #[test]
    fn a_window_heard_to_its_end_is_followed_by_the_next_one() {
        let window = 28 * SECOND;
        let segments = [heard(0.0, 12.0, true), heard(12.0, 27.5, true)];
        assert_eq!(resume_after(&segments, window), (2, window));
        assert_eq!(resume_after(&[], window), (0, window));
    }

    #[test]
    fn an_open_phrase_is_dropped_and_heard_again_from_its_start() {
        let segments = [heard(0.0, 12.0, true), heard(24.5, 28.0, false)];
        assert_eq!(
            resume_after(&segments, 28 * SECOND),
            (1, 24 * SECOND + SECOND / 2)
        );
    }

    #[test]
    fn an_unheard_tail_after_the_last_phrase_is_heard_again() {
        let segments = [heard(0.0, 12.0, true), heard(12.0, 24.4, true)];
        assert_eq!(
            resume_after(&segments, 27 * SECOND),
            (2, 24 * SECOND + 2 * SECOND / 5)
        );
    }

    #[test]
    fn every_window_moves_on_by_at_least_five_seconds() {
        let window = 29 * SECOND;
        // One open phrase over (nearly) the whole window: keep it rather than loop on it.
        assert_eq!(
            resume_after(&[heard(1.0, 29.0, false)], window),
            (1, window)
        );
        // A phrase heard early, then nothing: no point in starting again at 2 s.
        assert_eq!(resume_after(&[heard(0.0, 2.0, true)], window), (1, window));
    }
}
