//! Whisper's audio encoder on candle: two convolutions, sinusoidal positions and pre-norm
//! transformer layers over the 1,500 frames of a 30 s window.
//!
//! The encoder is one pass of large matrix products per window, which candle's CPU backend
//! (the `gemm` crate, multithreaded) does well, so it stays in tensors; the decoder is a
//! different problem (see `decoder`).
//!
//! CTranslate2 names, mapped onto the layers:
//!
//! | CTranslate2 | Whisper |
//! | --- | --- |
//! | `encoder/conv1`, `encoder/conv2` | `conv1`, `conv2` (kernel 3, stride 1 and 2) |
//! | `encoder/position_encodings/encodings` | `positional_embedding` |
//! | `encoder/layer_N/self_attention/layer_norm` | `blocks.N.attn_ln` |
//! | `encoder/layer_N/self_attention/linear_0` | `attn.query`, `attn.key`, `attn.value` fused (rows q, k, v) |
//! | `encoder/layer_N/self_attention/linear_1` | `attn.out` |
//! | `encoder/layer_N/ffn/layer_norm`, `ffn/linear_0`, `ffn/linear_1` | `mlp_ln`, `mlp.0`, `mlp.2` |
//! | `encoder/layer_norm` | `ln_post` |

use candle_core::{CpuStorage, Device, InplaceOp1, Layout, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use super::attention;
use super::ct2::{Ct2Error, Ct2Model};
use super::kernels;

/// GELU in place with [`kernels`]' vectorised `erf`, shared out over the cores: candle's own
/// runs on one thread with a libm call per value, and over the 1,500 × 1,536 values of every
/// layer that was a fifth of the encoder's time on this project's 2-core machine.
struct Gelu;

impl InplaceOp1 for Gelu {
    fn name(&self) -> &'static str {
        "voxline-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("{} runs on f32 only", self.name());
        };
        let Some((from, to)) = layout.contiguous_offsets() else {
            candle_core::bail!("{} needs a contiguous tensor", self.name());
        };
        kernels::gelu_parallel(&mut data[from..to]);
        Ok(())
    }
}

/// GELU applied to `t` in place; `t` must be a fresh result no one else holds.
fn gelu(t: Tensor) -> candle_core::Result<Tensor> {
    let t = t.contiguous()?;
    t.inplace_op1(&Gelu)?;
    Ok(t)
}

pub(crate) fn linear(model: &Ct2Model, prefix: &str, device: &Device) -> Result<Linear, Ct2Error> {
    let weight = model.tensor(&format!("{prefix}/weight"), device)?;
    let bias = model.tensor(&format!("{prefix}/bias"), device).ok();
    Ok(Linear::new(weight, bias))
}

pub(crate) fn layer_norm(
    model: &Ct2Model,
    prefix: &str,
    device: &Device,
) -> Result<LayerNorm, Ct2Error> {
    Ok(LayerNorm::new(
        model.tensor(&format!("{prefix}/gamma"), device)?,
        model.tensor(&format!("{prefix}/beta"), device)?,
        1e-5,
    ))
}

struct Layer {
    attn_ln: LayerNorm,
    qkv: Linear,
    out: Linear,
    mlp_ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

pub struct Encoder {
    conv1: (Tensor, Tensor),
    conv2: (Tensor, Tensor),
    positions: Tensor,
    layers: Vec<Layer>,
    ln_post: LayerNorm,
    heads: usize,
    pub width: usize,
}

fn tensor_error(e: candle_core::Error) -> Ct2Error {
    Ct2Error::Tensor {
        name: "encoder".to_string(),
        reason: e.to_string(),
    }
}

impl Encoder {
    pub fn load(model: &Ct2Model, device: &Device) -> Result<Self, Ct2Error> {
        let heads = model.scalar("encoder/num_heads")? as usize;
        let conv = |name: &str| -> Result<(Tensor, Tensor), Ct2Error> {
            Ok((
                model.tensor(&format!("encoder/{name}/weight"), device)?,
                model
                    .tensor(&format!("encoder/{name}/bias"), device)?
                    .reshape(((), 1))
                    .map_err(tensor_error)?,
            ))
        };
        let mut layers = Vec::new();
        while model
            .get(&format!(
                "encoder/layer_{}/ffn/linear_0/weight",
                layers.len()
            ))
            .is_ok()
        {
            let p = format!("encoder/layer_{}", layers.len());
            layers.push(Layer {
                attn_ln: layer_norm(model, &format!("{p}/self_attention/layer_norm"), device)?,
                qkv: linear(model, &format!("{p}/self_attention/linear_0"), device)?,
                out: linear(model, &format!("{p}/self_attention/linear_1"), device)?,
                mlp_ln: layer_norm(model, &format!("{p}/ffn/layer_norm"), device)?,
                fc1: linear(model, &format!("{p}/ffn/linear_0"), device)?,
                fc2: linear(model, &format!("{p}/ffn/linear_1"), device)?,
            });
        }
        let positions = model.tensor("encoder/position_encodings/encodings", device)?;
        let width = positions.dim(1).map_err(tensor_error)?;
        if heads == 0 || width == 0 || width % heads != 0 {
            return Err(Ct2Error::Tensor {
                name: "encoder".to_string(),
                reason: format!("width {width} does not split into {heads} heads"),
            });
        }
        Ok(Self {
            conv1: conv("conv1")?,
            conv2: conv("conv2")?,
            positions,
            layers,
            ln_post: layer_norm(model, "encoder/layer_norm", device)?,
            heads,
            width,
        })
    }

    /// `mel` is `[1, n_mels, 3000]`; the result is `[1500, width]`.
    pub fn forward(&self, mel: &Tensor) -> candle_core::Result<Tensor> {
        let x = mel
            .conv1d(&self.conv1.0, 1, 1, 1, 1)?
            .broadcast_add(&self.conv1.1)?;
        let x = gelu(x)?;
        let x = x
            .conv1d(&self.conv2.0, 1, 2, 1, 1)?
            .broadcast_add(&self.conv2.1)?;
        let x = gelu(x)?;
        // [1, width, frames] → [frames, width]
        let x = x.squeeze(0)?.t()?.contiguous()?;
        let frames = x.dim(0)?;
        let mut x = (x + self.positions.narrow(0, 0, frames)?)?;
        for layer in &self.layers {
            let h = layer.attn_ln.forward(&x)?;
            let attended = self.attention(&layer.qkv.forward(&h)?)?;
            x = (x + layer.out.forward(&attended)?)?;
            let h = gelu(layer.fc1.forward(&layer.mlp_ln.forward(&x)?)?)?;
            x = (x + layer.fc2.forward(&h)?)?;
        }
        self.ln_post.forward(&x)
    }

    /// Multi-head self-attention from the fused `[frames, 3·width]` projections (see
    /// [`attention`]).
    fn attention(&self, qkv: &Tensor) -> candle_core::Result<Tensor> {
        let (frames, fused) = qkv.dims2()?;
        if fused != 3 * self.width {
            candle_core::bail!(
                "the fused attention projection gives {fused} values a frame, not 3 × {}",
                self.width
            );
        }
        let values = qkv.flatten_all()?.to_vec1::<f32>()?;
        let out = attention::self_attention(&values, frames, self.width, self.heads);
        Tensor::from_vec(out, (frames, self.width), qkv.device())
    }
}
