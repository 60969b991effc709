//! Where in a recording anyone is speaking, by loudness: a guard against Whisper's best-known
//! hallucination, text ("Thank you.") written over silence.
//!
//! The recording is cut into 20 ms frames and each frame's RMS level is compared with a
//! threshold set from the recording itself: 35 dB below its loud speech (the 95th percentile
//! of frame levels), and never below an absolute floor of −60 dBFS. A window with no frame over
//! the threshold is not decoded at all, and a decoded segment whose time span holds less than
//! [`MIN_VOICED_SECS`] over it is dropped. Both are deliberately loose: they remove text where
//! the audio is silent or near-silent, never a quiet speaker in a quiet recording.

use super::mel::SAMPLE_RATE;

const FRAME: usize = SAMPLE_RATE / 50;
/// How far below the recording's loud speech a frame may be and still count as sound.
const RELATIVE_DB: f32 = -35.0;
const ABSOLUTE_FLOOR_DBFS: f32 = -60.0;
/// Voiced time a segment must overlap to be kept (three frames).
pub const MIN_VOICED_SECS: f64 = 0.06;

fn db_to_amplitude(db: f32) -> f32 {
    10f32.powf(db / 20.0)
}

#[derive(Debug, Clone)]
pub struct SpeechMap {
    voiced: Vec<bool>,
}

impl SpeechMap {
    pub fn new(samples: &[f32]) -> Self {
        let levels: Vec<f32> = samples
            .chunks(FRAME)
            .map(|f| (f.iter().map(|s| s * s).sum::<f32>() / f.len() as f32).sqrt())
            .collect();
        let mut sorted = levels.clone();
        sorted.sort_by(f32::total_cmp);
        let loud = sorted
            .get((sorted.len() as f32 * 0.95) as usize)
            .or(sorted.last())
            .copied()
            .unwrap_or(0.0);
        let threshold =
            (loud * db_to_amplitude(RELATIVE_DB)).max(db_to_amplitude(ABSOLUTE_FLOOR_DBFS));
        Self {
            voiced: levels.iter().map(|l| *l > threshold).collect(),
        }
    }

    /// Seconds of voiced frames between `start` and `end` (seconds from the recording's start).
    pub fn voiced_secs(&self, start: f64, end: f64) -> f64 {
        let frame_secs = FRAME as f64 / SAMPLE_RATE as f64;
        let first = (start / frame_secs).floor().max(0.0) as usize;
        let last = ((end / frame_secs).ceil().max(0.0) as usize).min(self.voiced.len());
        let count = self
            .voiced
            .get(first..last)
            .map_or(0, |v| v.iter().filter(|&&b| b).count());
        count as f64 * frame_secs
    }

    pub fn has_speech(&self, start: f64, end: f64) -> bool {
        self.voiced_secs(start, end) >= MIN_VOICED_SECS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(secs: f64, amplitude: f32) -> Vec<f32> {
        (0..(secs * SAMPLE_RATE as f64) as usize)
            .map(|i| amplitude * (i as f32 * 0.05).sin())
            .collect()
    }

    #[test]
    fn sound_is_found_and_the_silence_after_it_is_not() {
        let mut samples = tone(2.0, 0.3);
        samples.extend(vec![0.0; 3 * SAMPLE_RATE]);
        let map = SpeechMap::new(&samples);
        assert!(map.has_speech(0.0, 2.0));
        assert!((map.voiced_secs(0.0, 5.0) - 2.0).abs() < 0.05);
        assert!(!map.has_speech(2.1, 5.0));
    }

    #[test]
    fn quiet_speech_in_a_quiet_recording_still_counts() {
        let mut samples = tone(1.0, 0.005);
        samples.extend(vec![0.0; SAMPLE_RATE]);
        let map = SpeechMap::new(&samples);
        assert!(map.has_speech(0.0, 1.0));
        assert!(!map.has_speech(1.1, 2.0));
    }

    #[test]
    fn faint_noise_far_below_the_speech_is_silence() {
        let mut samples = tone(1.0, 0.5);
        samples.extend(tone(2.0, 0.001));
        let map = SpeechMap::new(&samples);
        assert!(!map.has_speech(1.1, 3.0));
    }
}
