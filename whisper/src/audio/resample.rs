//! Resampling to Whisper's 16 kHz as packets arrive, with rubato's FFT resampler.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

use super::{AudioError, SAMPLE_RATE};

/// Streaming mono resampler from the source rate to 16 kHz.
///
/// rubato's `process_all` wants the whole clip; this feeds it chunk by chunk instead, trimming
/// the resampler's start-up delay and cutting the tail to `ceil(len * ratio)` frames, which is
/// what `process_all` does too.
pub(super) struct ToWhisperRate {
    pub(super) from: u32,
    /// `None` when the source is already at 16 kHz.
    resampler: Option<Fft<f32>>,
    pending: Vec<f32>,
    scratch: Vec<f32>,
    output: Vec<f32>,
    delay_left: usize,
    input_total: usize,
}

const RESAMPLER_CHUNK: usize = 1024;

impl ToWhisperRate {
    pub(super) fn new(from: u32) -> Result<Self, AudioError> {
        if from == 0 {
            return Err(AudioError::Corrupt {
                reason: "the stream declares a sample rate of 0 Hz".to_string(),
            });
        }
        let resampler = if from == SAMPLE_RATE {
            None
        } else {
            Some(
                Fft::<f32>::new(
                    from as usize,
                    SAMPLE_RATE as usize,
                    RESAMPLER_CHUNK,
                    1,
                    FixedSync::Input,
                )
                .map_err(|e| AudioError::Resample {
                    from,
                    reason: e.to_string(),
                })?,
            )
        };
        let (scratch, delay_left) = match &resampler {
            Some(r) => (vec![0.0; r.output_frames_max()], r.output_delay()),
            None => (Vec::new(), 0),
        };
        Ok(Self {
            from,
            resampler,
            pending: Vec::new(),
            scratch,
            output: Vec::new(),
            delay_left,
            input_total: 0,
        })
    }

    pub(super) fn push(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        self.input_total += samples.len();
        let Some(resampler) = &mut self.resampler else {
            self.output.extend_from_slice(samples);
            return Ok(());
        };
        self.pending.extend_from_slice(samples);
        let mut consumed = 0;
        while self.pending.len() - consumed >= resampler.input_frames_next() {
            let need = resampler.input_frames_next();
            let input = &self.pending[consumed..consumed + need];
            let produced = run(resampler, self.from, input, &mut self.scratch, None)?;
            consumed += need;
            keep_output(
                &self.scratch[..produced],
                &mut self.delay_left,
                &mut self.output,
            );
        }
        self.pending.drain(..consumed);
        Ok(())
    }

    pub(super) fn finish(mut self) -> Result<Vec<f32>, AudioError> {
        let Some(resampler) = &mut self.resampler else {
            return Ok(self.output);
        };
        let ratio = f64::from(SAMPLE_RATE) / f64::from(self.from);
        let expected = (self.input_total as f64 * ratio).ceil() as usize;
        let chunk = resampler.input_frames_next();
        let mut tail = std::mem::take(&mut self.pending);
        let mut partial_len = tail.len();
        tail.resize(chunk, 0.0);
        // Feed the last partial chunk, then silence, until the delayed signal is all out.
        while self.output.len() < expected {
            let indexing = Indexing::new().partial_len(partial_len);
            let produced = run(
                resampler,
                self.from,
                &tail,
                &mut self.scratch,
                Some(&indexing),
            )?;
            keep_output(
                &self.scratch[..produced],
                &mut self.delay_left,
                &mut self.output,
            );
            partial_len = 0;
            if produced == 0 {
                break;
            }
        }
        self.output.truncate(expected);
        Ok(self.output)
    }
}

fn run(
    resampler: &mut Fft<f32>,
    from: u32,
    input: &[f32],
    output: &mut [f32],
    indexing: Option<&Indexing>,
) -> Result<usize, AudioError> {
    let error = |reason: String| AudioError::Resample { from, reason };
    let input_len = input.len();
    let output_len = output.len();
    let input = InterleavedSlice::new(input, 1, input_len).map_err(|e| error(e.to_string()))?;
    let mut output =
        InterleavedSlice::new_mut(output, 1, output_len).map_err(|e| error(e.to_string()))?;
    let (_, produced) = resampler
        .process_into_buffer(&input, &mut output, indexing)
        .map_err(|e| error(e.to_string()))?;
    Ok(produced)
}

/// Appends resampled frames to `output`, first dropping the resampler's start-up delay.
fn keep_output(frames: &[f32], delay_left: &mut usize, output: &mut Vec<f32>) {
    let skip = (*delay_left).min(frames.len());
    *delay_left -= skip;
    output.extend_from_slice(&frames[skip..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::sine;

    /// Pushes in uneven pieces, as packets arrive, and returns the 16 kHz result.
    fn resample_in_pieces(from: u32, input: &[f32]) -> Vec<f32> {
        let mut r = ToWhisperRate::new(from).expect("resampler");
        for piece in input.chunks(777) {
            r.push(piece).expect("push");
        }
        r.finish().expect("finish")
    }

    #[test]
    fn resampling_keeps_the_duration_to_the_sample() {
        for from in [8_000, 11_025, 22_050, 44_100, 48_000] {
            let input = sine(from, 440.0, 2.5);
            let output = resample_in_pieces(from, &input);
            let expected = (input.len() as f64 * 16_000.0 / f64::from(from)).ceil() as usize;
            assert_eq!(output.len(), expected, "from {from} Hz");
        }
    }

    #[test]
    fn resampling_packet_by_packet_equals_rubato_resampling_the_whole_clip() {
        let input = sine(44_100, 440.0, 1.0);
        let mut whole = Fft::<f32>::new(44_100, 16_000, RESAMPLER_CHUNK, 1, FixedSync::Input)
            .expect("resampler");
        let clip = InterleavedSlice::new(&input, 1, input.len()).expect("adapter");
        let expected = whole
            .process_all(&clip, input.len(), None)
            .expect("process_all")
            .take_data();
        assert_eq!(resample_in_pieces(44_100, &input), expected);
    }

    #[test]
    fn resampling_keeps_a_tone_at_its_level_and_within_a_sample_of_its_phase() {
        let output = resample_in_pieces(44_100, &sine(44_100, 440.0, 1.0));
        // Edges are where the filter sees silence beyond the clip; measure the middle.
        let middle = 2_000..14_000;
        let (mut in_phase, mut quadrature, mut power) = (0.0f64, 0.0f64, 0.0f64);
        for i in middle.clone() {
            let phase = 2.0 * std::f64::consts::PI * 440.0 * i as f64 / 16_000.0;
            let x = f64::from(output[i]);
            in_phase += x * phase.sin();
            quadrature += x * phase.cos();
            power += x * x;
        }
        let rms = (power / middle.len() as f64).sqrt();
        let expected_rms = 0.5 / 2f64.sqrt();
        assert!((rms / expected_rms - 1.0).abs() < 0.001, "RMS {rms}");
        // The start-up delay is trimmed to the whole output sample; what is left is a fraction
        // of one sample (one sample of a 440 Hz tone at 16 kHz is 0.17 rad).
        let lag = quadrature.atan2(in_phase).abs();
        let one_sample = 2.0 * std::f64::consts::PI * 440.0 / 16_000.0;
        assert!(lag < one_sample, "phase lag {lag} rad");
    }

    #[test]
    fn sixteen_kilohertz_input_passes_through_untouched() {
        let input = sine(16_000, 300.0, 0.3);
        assert_eq!(resample_in_pieces(16_000, &input), input);
    }
}
