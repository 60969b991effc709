//! Whisper's log-mel front end, written to match OpenAI's `whisper/audio.py` step for step.
//!
//! The model only understands features made exactly this way; an approximation (other window,
//! no centring, other mel scale) costs whole phrases. Per 30 s window:
//!
//! 1. pad with zeros (or cut) to 480 000 samples;
//! 2. STFT: periodic Hann window of 400, hop 160, centred with reflect padding of 200 on both
//!    sides (like `torch.stft(center=True, pad_mode="reflect")`), giving 3001 frames of which
//!    the last is dropped;
//! 3. power spectrum `|X|²` through 80 Slaney-scale, Slaney-normalised mel filters
//!    (`librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)`);
//! 4. `log10(max(x, 1e-10))`, clamped from below at `max - 8`, then `(x + 4) / 4`.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP_LENGTH: usize = 160;
pub const N_MELS: usize = 80;
pub const CHUNK_SECONDS: usize = 30;
pub const N_SAMPLES: usize = SAMPLE_RATE * CHUNK_SECONDS;
pub const N_FRAMES: usize = N_SAMPLES / HOP_LENGTH;
const N_BINS: usize = N_FFT / 2 + 1;

/// Precomputed window, filters and FFT plan; `compute` is then allocation-light and pure.
pub struct LogMel {
    window: Vec<f32>,
    filters: Vec<MelFilter>,
    fft: Arc<dyn RealToComplex<f32>>,
}

/// One triangular filter, stored over the FFT bins where it is non-zero.
struct MelFilter {
    first_bin: usize,
    weights: Vec<f32>,
}

impl Default for LogMel {
    fn default() -> Self {
        Self::new()
    }
}

impl LogMel {
    pub fn new() -> Self {
        let dense = mel_filters(SAMPLE_RATE as f64, N_FFT, N_MELS);
        let filters = dense
            .iter()
            .map(|row| {
                let first_bin = row.iter().position(|&w| w > 0.0).unwrap_or(0);
                let last_bin = row.iter().rposition(|&w| w > 0.0).unwrap_or(0);
                MelFilter {
                    first_bin,
                    weights: row[first_bin..=last_bin.max(first_bin)]
                        .iter()
                        .map(|&w| w as f32)
                        .collect(),
                }
            })
            .collect();
        Self {
            window: hann_periodic(N_FFT),
            filters,
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT),
        }
    }

    /// Log-mel features of up to 30 s of 16 kHz audio, row-major `[N_MELS][N_FRAMES]`: the
    /// layout CTranslate2 expects for a `[1, 80, 3000]` tensor.
    pub fn compute(&self, samples: &[f32]) -> Vec<f32> {
        const SILENCE_BEFORE_ZERO_FRAMES: usize = 50;
        let pad = N_FFT / 2;
        let audio_len = samples.len().min(N_SAMPLES);
        let mut padded = vec![0.0f32; N_SAMPLES + 2 * pad];
        padded[pad..pad + audio_len].copy_from_slice(&samples[..audio_len]);
        // Reflect about the first and last sample, without repeating them (numpy "reflect").
        for i in 0..pad {
            padded[pad - 1 - i] = padded[pad + 1 + i];
            padded[pad + N_SAMPLES + i] = padded[pad + N_SAMPLES - 2 - i];
        }

        let mut frame = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0.0f32; N_BINS];
        let mut mel = vec![0.0f32; N_MELS * N_FRAMES];
        for t in 0..N_FRAMES {
            let start = t * HOP_LENGTH;
            for ((x, &s), &w) in frame
                .iter_mut()
                .zip(&padded[start..start + N_FFT])
                .zip(&self.window)
            {
                *x = s * w;
            }
            // The lengths come from the same plan, so this cannot fail.
            if self
                .fft
                .process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
                .is_err()
            {
                continue;
            }
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for (m, filter) in self.filters.iter().enumerate() {
                let bins = &power[filter.first_bin..filter.first_bin + filter.weights.len()];
                let energy: f32 = bins.iter().zip(&filter.weights).map(|(p, w)| p * w).sum();
                mel[m * N_FRAMES + t] = energy.max(1e-10).log10();
            }
        }

        let max = mel.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for x in &mut mel {
            *x = (x.max(max - 8.0) + 4.0) / 4.0;
        }
        // Frames well past the end of the audio are zero in the normalised features, as
        // faster-whisper pads them (OpenAI's code computes them all from zero samples). Half a
        // second of computed silence is kept after the audio first: with none, greedy decoding
        // tends to drop a last word said right at the end ("…sounds like a fit" lost its "a
        // fit"); with only computed silence, it misread a short Opus sentence ("challenges
        // your" as "challenge of your"). Word error rate over bench/asr-vs-faster-whisper.sh is
        // the same either way.
        let content = (audio_len / HOP_LENGTH + 1 + SILENCE_BEFORE_ZERO_FRAMES).min(N_FRAMES);
        for band in mel.chunks_exact_mut(N_FRAMES) {
            band[content..].fill(0.0);
        }
        mel
    }
}

/// `torch.hann_window(n)` (periodic): `0.5 - 0.5 cos(2πi / n)`.
pub(crate) fn hann_periodic(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()) as f32)
        .collect()
}

// Slaney's mel scale as librosa implements it (`htk=False`): linear below 1 kHz, `F_SP` Hz a
// mel, logarithmic above.
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

/// The logarithmic part's step: a factor of 6.4 in 27 mels.
fn logstep() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / logstep()
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (logstep() * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

/// `librosa.filters.mel(sr, n_fft, n_mels, fmin=0, fmax=sr/2, htk=False, norm="slaney")`:
/// `n_mels` rows of `n_fft / 2 + 1` weights.
pub(crate) fn mel_filters(sample_rate: f64, n_fft: usize, n_mels: usize) -> Vec<Vec<f64>> {
    let n_bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..n_bins)
        .map(|i| i as f64 * sample_rate / n_fft as f64)
        .collect();
    let min_mel = hz_to_mel(0.0);
    let max_mel = hz_to_mel(sample_rate / 2.0);
    let mel_freqs: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(min_mel + (max_mel - min_mel) * i as f64 / (n_mels + 1) as f64))
        .collect();

    (0..n_mels)
        .map(|m| {
            let (lower_edge, center, upper_edge) =
                (mel_freqs[m], mel_freqs[m + 1], mel_freqs[m + 2]);
            // Slaney normalisation: each filter has unit area over frequency.
            let norm = 2.0 / (upper_edge - lower_edge);
            fft_freqs
                .iter()
                .map(|&f| {
                    let rising = (f - lower_edge) / (center - lower_edge);
                    let falling = (upper_edge - f) / (upper_edge - center);
                    rising.min(falling).max(0.0) * norm
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slaney_scale_is_linear_to_1_khz_and_logarithmic_above() {
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-9);
        assert!((hz_to_mel(500.0) - 7.5).abs() < 1e-9);
        for hz in [0.0, 200.0, 999.0, 1000.0, 3000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-6, "{hz}");
        }
    }

    #[test]
    fn mel_filters_match_librosa_for_whisper_s_settings() {
        // Non-zero weights of some rows of librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)
        // (librosa 0.11), the matrix OpenAI ships as mel_filters.npz.
        let librosa: [(usize, usize, &[f64]); 4] = [
            (0, 1, &[0.024862595]),
            (10, 10, &[0.019908218, 0.0049543749]),
            (40, 42, &[0.0054111048, 0.014735566, 0.0065181898]),
            (
                79,
                186,
                &[
                    0.00036674167,
                    0.00083307002,
                    0.0012993984,
                    0.0017657268,
                    0.0022320549,
                    0.0026983833,
                    0.0031647119,
                    0.0031413133,
                    0.0026925541,
                    0.0022437952,
                    0.001795036,
                    0.0013462771,
                    0.00089751801,
                    0.000448759,
                ],
            ),
        ];
        let filters = mel_filters(16_000.0, 400, 80);
        assert_eq!(filters.len(), 80);
        assert!(filters.iter().all(|row| row.len() == 201));
        for (row, first_bin, weights) in librosa {
            let non_zero: Vec<(usize, f64)> = filters[row]
                .iter()
                .copied()
                .enumerate()
                .filter(|&(_, w)| w > 0.0)
                .collect();
            assert_eq!(non_zero.len(), weights.len(), "row {row}");
            for ((bin, ours), (i, theirs)) in non_zero.iter().zip(weights.iter().enumerate()) {
                assert_eq!(*bin, first_bin + i, "row {row}");
                // librosa computes in float32: agree to its precision.
                assert!(
                    (ours - theirs).abs() < 1e-6 * theirs.max(1e-3),
                    "row {row} bin {bin}: {ours} vs {theirs}"
                );
            }
        }
        // librosa's whole matrix sums to 1.9990242.
        let total: f64 = filters.iter().flatten().sum();
        assert!((total - 1.999_024_2).abs() < 1e-5, "sum {total}");
    }

    #[test]
    fn the_features_have_whisper_s_shape_and_range() {
        let mel = LogMel::new().compute(&[0.0; 16_000]);
        assert_eq!(mel.len(), 80 * 3000);
        // One second of pure silence: its 101 frames and the half second after them are
        // log10(1e-10) = -10, normalised to (-10 + 4) / 4; later frames are zero, as
        // faster-whisper pads them.
        for band in mel.chunks_exact(N_FRAMES) {
            assert!(band[..151].iter().all(|&x| (x - (-1.5)).abs() < 1e-6));
            assert!(band[151..].iter().all(|&x| x == 0.0));
        }
    }

    #[test]
    fn a_tone_lights_up_the_mel_band_it_is_in_and_the_floor_is_eight_decades_down() {
        // 1 kHz is mel 15 on the Slaney scale; with 80 filters over 0..8 kHz that is band ~24.
        let tone: Vec<f32> = (0..SAMPLE_RATE * 2)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / SAMPLE_RATE as f32).sin())
            .collect();
        let mel = LogMel::new().compute(&tone);
        let frame = 100; // 1 s in, well inside the tone
        let column: Vec<f32> = (0..N_MELS).map(|m| mel[m * N_FRAMES + frame]).collect();
        let loudest =
            column.iter().enumerate().fold(
                (0, f32::MIN),
                |best, (i, &x)| if x > best.1 { (i, x) } else { best },
            );
        let expected_band = mel_filters(16_000.0, 400, 80)
            .iter()
            .enumerate()
            .fold((0, f64::MIN), |best, (i, row)| {
                // Bin 25 is exactly 1 kHz (16000 / 400 * 25).
                if row[25] > best.1 { (i, row[25]) } else { best }
            })
            .0;
        assert_eq!(loudest.0, expected_band);
        let max = mel.iter().copied().fold(f32::MIN, f32::max);
        let min = mel.iter().copied().fold(f32::MAX, f32::min);
        assert!(
            (max - min - 2.0).abs() < 1e-5,
            "range {min}..{max} is not 8 decades / 4"
        );
    }

    #[test]
    fn audio_beyond_thirty_seconds_is_ignored() {
        let front_end = LogMel::new();
        let thirty: Vec<f32> = (0..N_SAMPLES)
            .map(|i| ((i % 97) as f32 / 97.0) - 0.5)
            .collect();
        let mut longer = thirty.clone();
        longer.extend(std::iter::repeat_n(0.9, 16_000));
        assert_eq!(front_end.compute(&thirty), front_end.compute(&longer));
    }
}
