//! Resemblyzer's GE2E voice encoder (Wan et al., "Generalized End-to-End Loss for Speaker
//! Verification", 2018) on candle: 40-band mel power spectra (not log) at 25 ms / 10 ms
//! through a 3-layer LSTM of 256 units, the last hidden state through a 256→256 linear layer
//! and a ReLU, L2-normalised. Written to match `resemblyzer/voice_encoder.py` and `audio.py`.
//!
//! The LSTM is ours rather than `candle_nn::rnn::LSTM`: that one projects the input one time
//! step at a time, while the whole sequence's input projection is one matrix product here
//! (three quarters of the work in one `gemm` call), and a partial window shorter than 1.6 s
//! takes the hidden state at its last real frame instead of running on padding.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{D, Device, IndexOp, Tensor};
use realfft::{RealFftPlanner, RealToComplex};

use super::SpeakerError;
use super::checkpoint;
use crate::transcribe::mel::{hann_periodic, mel_filters};

pub const SAMPLE_RATE: usize = 16_000;
/// 25 ms.
const N_FFT: usize = 400;
/// 10 ms.
pub const HOP: usize = 160;
const N_MELS: usize = 40;
const HIDDEN: usize = 256;
const LAYERS: usize = 3;
/// A partial utterance: 160 frames, 1.6 s.
pub const PARTIAL_FRAMES: usize = 160;
/// Resemblyzer's `audio_norm_target_dBFS`.
const TARGET_DBFS: f64 = -30.0;

/// The loaded encoder; cheap to share across threads.
pub struct SpeakerEncoder {
    layers: Vec<LstmLayer>,
    linear_weight_t: Tensor,
    linear_bias: Tensor,
    mel: MelPower,
}

struct LstmLayer {
    /// `(input, 4·HIDDEN)`, transposed once at load.
    w_ih_t: Tensor,
    /// `(HIDDEN, 4·HIDDEN)`.
    w_hh_t: Tensor,
    /// `b_ih + b_hh`.
    bias: Tensor,
}

impl SpeakerEncoder {
    /// Loads `pretrained.pt` from an installed speaker model directory.
    pub fn load(dir: &Path) -> Result<Self, SpeakerError> {
        let path = dir.join(crate::models::SPEAKER_WEIGHTS_FILE);
        let bytes = std::fs::read(&path).map_err(|source| SpeakerError::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_state(checkpoint::model_state(&bytes)?)
    }

    fn from_state(mut state: HashMap<String, Tensor>) -> Result<Self, SpeakerError> {
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor, SpeakerError> {
            let tensor = state
                .remove(name)
                .ok_or_else(|| SpeakerError::Format(format!("the model has no {name}")))?;
            if tensor.dims() != shape {
                return Err(SpeakerError::Format(format!(
                    "{name} has shape {:?}, not {shape:?}",
                    tensor.dims()
                )));
            }
            Ok(tensor)
        };
        let mut layers = Vec::with_capacity(LAYERS);
        for layer in 0..LAYERS {
            let input = if layer == 0 { N_MELS } else { HIDDEN };
            let w_ih = take(&format!("lstm.weight_ih_l{layer}"), &[4 * HIDDEN, input])?;
            let w_hh = take(&format!("lstm.weight_hh_l{layer}"), &[4 * HIDDEN, HIDDEN])?;
            let b_ih = take(&format!("lstm.bias_ih_l{layer}"), &[4 * HIDDEN])?;
            let b_hh = take(&format!("lstm.bias_hh_l{layer}"), &[4 * HIDDEN])?;
            layers.push(LstmLayer {
                w_ih_t: w_ih.t()?.contiguous()?,
                w_hh_t: w_hh.t()?.contiguous()?,
                bias: (b_ih + b_hh)?,
            });
        }
        let linear_weight_t = take("linear.weight", &[HIDDEN, HIDDEN])?
            .t()?
            .contiguous()?;
        let linear_bias = take("linear.bias", &[HIDDEN])?;
        Ok(SpeakerEncoder {
            layers,
            linear_weight_t,
            linear_bias,
            mel: MelPower::new(),
        })
    }

    /// The mel power frames of `samples` (16 kHz mono), one row of 40 per 10 ms, after the
    /// volume normalisation Resemblyzer applies (to −30 dBFS).
    pub fn frames(&self, samples: &[f32]) -> Vec<[f32; N_MELS]> {
        self.mel.compute(&normalized(samples))
    }

    /// One L2-normalised 256-value embedding per window of `frames`; each window is
    /// `(first frame, frame count ≤ 160)`.
    pub fn embed(
        &self,
        frames: &[[f32; N_MELS]],
        windows: &[(usize, usize)],
    ) -> Result<Vec<Vec<f32>>, SpeakerError> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let batch = windows.len();
        let mut input = vec![0.0f32; batch * PARTIAL_FRAMES * N_MELS];
        for (b, &(first, count)) in windows.iter().enumerate() {
            let count = count.min(PARTIAL_FRAMES);
            for t in 0..count {
                let Some(frame) = frames.get(first + t) else {
                    break;
                };
                let at = (b * PARTIAL_FRAMES + t) * N_MELS;
                input[at..at + N_MELS].copy_from_slice(frame);
            }
        }
        let mut xs = Tensor::from_vec(input, (batch, PARTIAL_FRAMES, N_MELS), &Device::Cpu)?;
        for layer in &self.layers {
            xs = layer.forward(&xs)?;
        }
        // The last layer's hidden state at each window's last real frame.
        let mut last = Vec::with_capacity(batch);
        for (b, &(_, count)) in windows.iter().enumerate() {
            let t = count.clamp(1, PARTIAL_FRAMES) - 1;
            last.push(xs.i((b, t))?);
        }
        let hidden = Tensor::stack(&last, 0)?;
        let raw = hidden
            .matmul(&self.linear_weight_t)?
            .broadcast_add(&self.linear_bias)?
            .relu()?;
        let norm = raw
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f32::MAX)?;
        let embeds = raw.broadcast_div(&norm)?;
        Ok(embeds.to_vec2::<f32>()?)
    }
}

impl LstmLayer {
    /// `(batch, time, input)` → `(batch, time, HIDDEN)`, PyTorch's gate order (i, f, g, o).
    fn forward(&self, xs: &Tensor) -> Result<Tensor, SpeakerError> {
        let (batch, steps, input) = xs.dims3()?;
        let projected = xs
            .reshape((batch * steps, input))?
            .matmul(&self.w_ih_t)?
            .broadcast_add(&self.bias)?
            .reshape((batch, steps, 4 * HIDDEN))?;
        let mut h = Tensor::zeros((batch, HIDDEN), candle_core::DType::F32, &Device::Cpu)?;
        let mut c = h.clone();
        let mut outputs = Vec::with_capacity(steps);
        for t in 0..steps {
            let gates = (projected.i((.., t, ..))? + h.matmul(&self.w_hh_t)?)?;
            let i = sigmoid(&gates.narrow(1, 0, HIDDEN)?)?;
            let f = sigmoid(&gates.narrow(1, HIDDEN, HIDDEN)?)?;
            let g = gates.narrow(1, 2 * HIDDEN, HIDDEN)?.tanh()?;
            let o = sigmoid(&gates.narrow(1, 3 * HIDDEN, HIDDEN)?)?;
            c = ((f * &c)? + (i * g)?)?;
            h = (o * c.tanh()?)?;
            outputs.push(h.clone());
        }
        Ok(Tensor::stack(&outputs, 1)?)
    }
}

fn sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::sigmoid(x)
}

/// Scales `samples` so their RMS is −30 dBFS (Resemblyzer's `normalize_volume`; silence is
/// left as it is).
fn normalized(samples: &[f32]) -> Vec<f32> {
    if samples.is_empty() {
        return Vec::new();
    }
    let mean_square =
        samples.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / samples.len() as f64;
    if mean_square <= 1e-12 {
        return samples.to_vec();
    }
    let gain = (10f64.powf(TARGET_DBFS / 20.0) / mean_square.sqrt()) as f32;
    samples.iter().map(|&x| x * gain).collect()
}

/// `librosa.feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160, n_mels=40)`:
/// periodic Hann window, centred frames with reflect padding, power spectrum through Slaney
/// mel filters, no logarithm.
struct MelPower {
    window: Vec<f32>,
    filters: Vec<Vec<f32>>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl MelPower {
    fn new() -> Self {
        MelPower {
            window: hann_periodic(N_FFT),
            filters: mel_filters(SAMPLE_RATE as f64, N_FFT, N_MELS)
                .into_iter()
                .map(|row| row.into_iter().map(|w| w as f32).collect())
                .collect(),
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT),
        }
    }

    fn compute(&self, samples: &[f32]) -> Vec<[f32; N_MELS]> {
        let pad = N_FFT / 2;
        if samples.len() <= pad {
            return Vec::new();
        }
        let mut padded = vec![0.0f32; samples.len() + 2 * pad];
        padded[pad..pad + samples.len()].copy_from_slice(samples);
        let n = samples.len();
        for i in 0..pad {
            padded[pad - 1 - i] = samples[i + 1];
            padded[pad + n + i] = samples[n - 2 - i];
        }
        let count = 1 + n / HOP;
        let mut frame = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0.0f32; N_FFT / 2 + 1];
        let mut out = Vec::with_capacity(count);
        for t in 0..count {
            let start = t * HOP;
            for ((x, &s), &w) in frame
                .iter_mut()
                .zip(&padded[start..start + N_FFT])
                .zip(&self.window)
            {
                *x = s * w;
            }
            let mut row = [0.0f32; N_MELS];
            // The buffers come from the plan itself, so the lengths always match.
            if self
                .fft
                .process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
                .is_ok()
            {
                for (p, c) in power.iter_mut().zip(&spectrum) {
                    *p = c.norm_sqr();
                }
                for (m, filter) in self.filters.iter().enumerate() {
                    row[m] = filter.iter().zip(&power).map(|(w, p)| w * p).sum();
                }
            }
            out.push(row);
        }
        out
    }
}
