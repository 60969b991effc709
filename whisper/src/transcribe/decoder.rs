//! Whisper's text decoder, one token per step, with a key/value cache.
//!
//! candle-transformers' Whisper re-feeds the whole token prefix at every step and pays a tensor
//! allocation per small op; measured on this project's 2-core machine that is ~22 ms a step.
//! Here each step feeds one token: its self-attention keys and values are appended to a cache,
//! the cross-attention keys and values of the window are computed once (with candle, one large
//! matrix product per layer), and the rest is matrix-vector work on 8-bit weights in
//! [`super::kernels`] with no allocation per step.
//!
//! CTranslate2 names, mapped onto the layers:
//!
//! | CTranslate2 | Whisper |
//! | --- | --- |
//! | `decoder/embeddings/weight` (alias `decoder/projection/weight`) | `token_embedding`, also the output projection (tied) |
//! | `decoder/position_encodings/encodings` | `positional_embedding` (448 positions) |
//! | `decoder/layer_N/self_attention/layer_norm`, `linear_0`, `linear_1` | `attn_ln`, `attn.{query,key,value}` fused, `attn.out` |
//! | `decoder/layer_N/attention/layer_norm`, `linear_0`, `linear_1`, `linear_2` | `cross_attn_ln`, `cross_attn.query`, `cross_attn.{key,value}` fused, `cross_attn.out` |
//! | `decoder/layer_N/ffn/layer_norm`, `linear_0`, `linear_1` | `mlp_ln`, `mlp.0`, `mlp.2` |
//! | `decoder/layer_norm` | `ln` |

use candle_core::{Device, Module, Tensor};
use candle_nn::Linear;
use rayon::prelude::*;

use super::ct2::{Ct2Error, Ct2Model};
use super::encoder::linear;
use super::kernels::{self, Q8Matrix, Q8Vector};

/// A linear layer with 8-bit weights and a float bias.
struct Q8Linear {
    weight: Q8Matrix,
    bias: Vec<f32>,
}

impl Q8Linear {
    /// The layer `prefix`, which must map `inputs` values to `outputs`: the decoder step writes
    /// into buffers sized from the model's width, so a mismatched file is refused here, not
    /// found out by an out-of-bounds write.
    fn load(
        model: &Ct2Model,
        prefix: &str,
        outputs: usize,
        inputs: usize,
    ) -> Result<Self, Ct2Error> {
        let weight = quantize(model, &format!("{prefix}/weight"))?;
        let bias = to_vec(
            &model.tensor(&format!("{prefix}/bias"), &Device::Cpu)?,
            prefix,
        )?;
        if (weight.rows(), weight.cols(), bias.len()) != (outputs, inputs, outputs) {
            return Err(Ct2Error::Tensor {
                name: prefix.to_string(),
                reason: format!(
                    "{} × {} weights with {} biases; the decoder expects {outputs} × {inputs}",
                    weight.rows(),
                    weight.cols(),
                    bias.len()
                ),
            });
        }
        Ok(Self { weight, bias })
    }

    fn forward(&self, x: &Q8Vector, out: &mut [f32]) {
        self.weight.matvec_parallel(x, Some(&self.bias), out);
    }
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl Norm {
    fn load(model: &Ct2Model, prefix: &str) -> Result<Self, Ct2Error> {
        Ok(Self {
            gamma: to_vec(
                &model.tensor(&format!("{prefix}/gamma"), &Device::Cpu)?,
                prefix,
            )?,
            beta: to_vec(
                &model.tensor(&format!("{prefix}/beta"), &Device::Cpu)?,
                prefix,
            )?,
        })
    }

    fn forward(&self, x: &[f32], out: &mut [f32]) {
        kernels::layer_norm(x, &self.gamma, &self.beta, out);
    }
}

fn tensor_error(name: &str) -> impl Fn(candle_core::Error) -> Ct2Error + '_ {
    move |e| Ct2Error::Tensor {
        name: name.to_string(),
        reason: e.to_string(),
    }
}

fn to_vec(t: &Tensor, name: &str) -> Result<Vec<f32>, Ct2Error> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(tensor_error(name))
}

/// The matrix `name`, quantized straight from the file's bytes.
fn quantize(model: &Ct2Model, name: &str) -> Result<Q8Matrix, Ct2Error> {
    let var = model.get(name)?;
    let bad = |reason: String| Ct2Error::Tensor {
        name: name.to_string(),
        reason,
    };
    let [rows, cols] = var.dims[..] else {
        return Err(bad(format!("expected a matrix, found dims {:?}", var.dims)));
    };
    if cols % kernels::BLOCK != 0 {
        return Err(bad(format!(
            "{cols} columns are not a multiple of {}",
            kernels::BLOCK
        )));
    }
    let mut readable = true;
    let matrix = Q8Matrix::quantize_rows(rows, cols, |r, out| {
        readable &= var.row_f32(r, out);
    });
    if readable {
        Ok(matrix)
    } else {
        Err(bad(format!("{:?} is not a floating-point type", var.dtype)))
    }
}

struct Layer {
    self_ln: Norm,
    self_qkv: Q8Linear,
    self_out: Q8Linear,
    cross_ln: Norm,
    cross_q: Q8Linear,
    /// Applied to the encoder output once per window, in `f32` through candle.
    cross_kv: Linear,
    cross_out: Q8Linear,
    ffn_ln: Norm,
    fc1: Q8Linear,
    fc2: Q8Linear,
}

pub struct Decoder {
    /// Token embedding and, tied, the output projection.
    embedding: Q8Matrix,
    positions: Vec<f32>,
    layers: Vec<Layer>,
    ln: Norm,
    heads: usize,
    width: usize,
    ffn_width: usize,
    pub max_positions: usize,
}

/// The encoder's keys and values for one window, per layer, laid out `[head][dim][frame]`
/// (transposed, so one query's scores and outputs run over long contiguous rows).
pub struct CrossCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    frames: usize,
}

/// Everything one sequence being decoded needs: its caches and scratch buffers.
pub struct DecoderState<'a> {
    cross: &'a CrossCache,
    /// Per layer, `[head][position][dim]` for every position up to `max_positions`.
    self_keys: Vec<Vec<f32>>,
    self_values: Vec<Vec<f32>>,
    len: usize,
    x: Vec<f32>,
    h: Vec<f32>,
    wide: Vec<f32>,
    attended: Vec<f32>,
    scores: Vec<f32>,
    /// One row of scores per head, for the heads' cross-attention running side by side.
    cross_scores: Vec<f32>,
    quantized: Q8Vector,
}

impl DecoderState<'_> {
    /// Tokens fed so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Decoder {
    pub fn load(model: &Ct2Model) -> Result<Self, Ct2Error> {
        let heads = model.scalar("decoder/num_heads")? as usize;
        let embedding = quantize(model, "decoder/projection/weight")?;
        let name = "decoder/position_encodings/encodings";
        let positions = model.tensor(name, &Device::Cpu)?;
        let (max_positions, width) = positions.dims2().map_err(tensor_error(name))?;
        let ffn_width = model
            .get("decoder/layer_0/ffn/linear_0/weight")?
            .dims
            .first()
            .copied()
            .unwrap_or(0);
        if heads == 0 || width % heads != 0 || embedding.cols() != width || max_positions == 0 {
            return Err(Ct2Error::Tensor {
                name: "decoder".to_string(),
                reason: format!(
                    "inconsistent shapes: width {width}, {heads} heads, embedding width {}, \
                     {max_positions} positions",
                    embedding.cols(),
                ),
            });
        }
        let mut layers = Vec::new();
        while model
            .get(&format!(
                "decoder/layer_{}/ffn/linear_0/weight",
                layers.len()
            ))
            .is_ok()
        {
            let p = format!("decoder/layer_{}", layers.len());
            let cross_kv = linear(model, &format!("{p}/attention/linear_1"), &Device::Cpu)?;
            if cross_kv.weight().dims() != [2 * width, width] {
                return Err(Ct2Error::Tensor {
                    name: format!("{p}/attention/linear_1"),
                    reason: format!("expected {} × {width} weights", 2 * width),
                });
            }
            let q8 = |name: &str, outputs, inputs| {
                Q8Linear::load(model, &format!("{p}/{name}"), outputs, inputs)
            };
            layers.push(Layer {
                self_ln: Norm::load(model, &format!("{p}/self_attention/layer_norm"))?,
                self_qkv: q8("self_attention/linear_0", 3 * width, width)?,
                self_out: q8("self_attention/linear_1", width, width)?,
                cross_ln: Norm::load(model, &format!("{p}/attention/layer_norm"))?,
                cross_q: q8("attention/linear_0", width, width)?,
                cross_kv,
                cross_out: q8("attention/linear_2", width, width)?,
                ffn_ln: Norm::load(model, &format!("{p}/ffn/layer_norm"))?,
                fc1: q8("ffn/linear_0", ffn_width, width)?,
                fc2: q8("ffn/linear_1", width, ffn_width)?,
            });
        }
        if layers.is_empty() {
            return Err(Ct2Error::Missing("decoder/layer_0".to_string()));
        }
        Ok(Self {
            embedding,
            positions: to_vec(&positions, name)?,
            layers,
            ln: Norm::load(model, "decoder/layer_norm")?,
            heads,
            width,
            ffn_width,
            max_positions,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.embedding.rows()
    }

    /// The cross-attention keys and values of an encoded window (`[frames, width]`).
    pub fn cross_cache(&self, encoded: &Tensor) -> candle_core::Result<CrossCache> {
        let (frames, _) = encoded.dims2()?;
        let head_dim = self.width / self.heads;
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for layer in &self.layers {
            let kv = layer.cross_kv.forward(encoded)?;
            let per_head = |i: usize| -> candle_core::Result<Vec<f32>> {
                kv.narrow(1, i * self.width, self.width)?
                    .reshape((frames, self.heads, head_dim))?
                    .permute((1, 2, 0))?
                    .contiguous()?
                    .flatten_all()?
                    .to_vec1::<f32>()
            };
            keys.push(per_head(0)?);
            values.push(per_head(1)?);
        }
        Ok(CrossCache {
            keys,
            values,
            frames,
        })
    }

    /// A fresh sequence over `cross`.
    pub fn start<'a>(&self, cross: &'a CrossCache) -> DecoderState<'a> {
        let cache = || vec![vec![0.0; self.max_positions * self.width]; self.layers.len()];
        DecoderState {
            cross,
            self_keys: cache(),
            self_values: cache(),
            len: 0,
            x: vec![0.0; self.width],
            h: vec![0.0; self.width],
            wide: vec![0.0; (3 * self.width).max(self.ffn_width)],
            attended: vec![0.0; self.width],
            scores: vec![0.0; self.max_positions],
            cross_scores: vec![0.0; self.heads * cross.frames],
            quantized: Q8Vector::default(),
        }
    }

    /// Feeds `token` at the next position and writes the next token's logits into `logits`
    /// (`vocab_size` long). The caller stops before `max_positions`.
    pub fn step(&self, token: u32, state: &mut DecoderState<'_>, logits: &mut [f32]) {
        let w = self.width;
        let head_dim = w / self.heads;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let pos = state.len.min(self.max_positions - 1);
        let token = (token as usize).min(self.embedding.rows() - 1);

        self.embedding.dequantize_row(token, &mut state.x);
        for (x, p) in state
            .x
            .iter_mut()
            .zip(&self.positions[pos * w..(pos + 1) * w])
        {
            *x += p;
        }

        for (l, layer) in self.layers.iter().enumerate() {
            // Self-attention over this sequence's tokens so far, this one included.
            layer.self_ln.forward(&state.x, &mut state.h);
            state.quantized.quantize(&state.h);
            let qkv = &mut state.wide[..3 * w];
            layer.self_qkv.forward(&state.quantized, qkv);
            let (keys, values) = (&mut state.self_keys[l], &mut state.self_values[l]);
            for head in 0..self.heads {
                let at = (head * self.max_positions + pos) * head_dim;
                let from = head * head_dim;
                keys[at..at + head_dim].copy_from_slice(&qkv[w + from..w + from + head_dim]);
                values[at..at + head_dim]
                    .copy_from_slice(&qkv[2 * w + from..2 * w + from + head_dim]);
            }
            let query = &state.wide[..w];
            attend(
                query,
                keys,
                values,
                self.heads,
                self.max_positions,
                pos + 1,
                scale,
                &mut state.scores,
                &mut state.attended,
            );
            state.quantized.quantize(&state.attended);
            layer.self_out.forward(&state.quantized, &mut state.h);
            add(&mut state.x, &state.h);

            // Cross-attention over the window's audio.
            layer.cross_ln.forward(&state.x, &mut state.h);
            state.quantized.quantize(&state.h);
            let query = &mut state.wide[..w];
            layer.cross_q.forward(&state.quantized, query);
            let cross = state.cross;
            let (query, frames) = (&state.wide[..w], cross.frames);
            let (keys, values) = (&cross.keys[l], &cross.values[l]);
            // One head per task: six of ~12 µs each (1,500 frames), shared over the cores.
            state
                .attended
                .par_chunks_mut(head_dim)
                .zip(state.cross_scores.par_chunks_mut(frames.max(1)))
                .enumerate()
                .for_each(|(head, (out, scores))| {
                    let at = head * head_dim * frames..(head + 1) * head_dim * frames;
                    let head = kernels::TransposedHead {
                        query: &query[head * head_dim..(head + 1) * head_dim],
                        keys_t: &keys[at.clone()],
                        values_t: &values[at],
                        scale,
                    };
                    kernels::attend_transposed(&head, scores, out);
                });
            state.quantized.quantize(&state.attended);
            layer.cross_out.forward(&state.quantized, &mut state.h);
            add(&mut state.x, &state.h);

            // Feed-forward.
            layer.ffn_ln.forward(&state.x, &mut state.h);
            state.quantized.quantize(&state.h);
            let hidden = &mut state.wide[..self.ffn_width];
            layer.fc1.forward(&state.quantized, hidden);
            kernels::gelu_in_place(hidden);
            state.quantized.quantize(hidden);
            layer.fc2.forward(&state.quantized, &mut state.h);
            add(&mut state.x, &state.h);
        }

        self.ln.forward(&state.x, &mut state.h);
        state.quantized.quantize(&state.h);
        self.embedding
            .matvec_parallel(&state.quantized, None, logits);
        state.len += 1;
    }
}

fn add(x: &mut [f32], delta: &[f32]) {
    for (x, d) in x.iter_mut().zip(delta) {
        *x += d;
    }
}

/// Multi-head attention of one query over the first `len` entries of `[head][stride][dim]`
/// keys and values.
#[allow(clippy::too_many_arguments)]
fn attend(
    query: &[f32],
    keys: &[f32],
    values: &[f32],
    heads: usize,
    stride: usize,
    len: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let head_dim = query.len() / heads;
    for head in 0..heads {
        let q = &query[head * head_dim..(head + 1) * head_dim];
        let base = head * stride * head_dim;
        let scores = &mut scores[..len];
        for (j, s) in scores.iter_mut().enumerate() {
            let k = &keys[base + j * head_dim..base + (j + 1) * head_dim];
            *s = kernels::dot(q, k) * scale;
        }
        kernels::softmax_in_place(scores);
        let o = &mut out[head * head_dim..(head + 1) * head_dim];
        o.fill(0.0);
        for (j, p) in scores.iter().enumerate() {
            kernels::axpy(
                *p,
                &values[base + j * head_dim..base + (j + 1) * head_dim],
                o,
            );
        }
    }
}
