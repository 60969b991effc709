//! The loops over whole vectors — GELU, softmax, one query's attention, the logits' maximum
//! and sum of exponentials — written once and compiled for AVX-512 and AVX2 as well, the
//! widest the CPU has chosen at run time.

use rayon::prelude::*;

use super::cpu::{has_avx2, has_avx512};
use super::math::{dot_lanes, erf, exp, lane_sum};

#[inline(always)]
fn gelu_generic(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Lanes of the softmax's reductions: independent accumulators, so the compiler can keep them
/// in vector registers (see [`lane_sum`]).
const LANES: usize = 16;

#[inline(always)]
fn max_generic(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let max = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    for c in chunks {
        for i in 0..LANES {
            lanes[i] = lanes[i].max(c[i]);
        }
    }
    lanes.iter().fold(max, |m, v| m.max(*v))
}

#[inline(always)]
fn sum_generic(x: &[f32]) -> f32 {
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    lane_sum::<LANES, _>(chunks, tail, |c, i| c[i])
}

#[inline(always)]
fn sum_exp_generic(x: &[f32], shift: f32) -> f32 {
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|v| exp(v - shift)).sum();
    lane_sum::<LANES, _>(chunks, tail, |c, i| exp(c[i] - shift))
}

/// One head's query and the frames it attends over, their keys and values stored transposed
/// (`query.len() × frames` each, row-major), the scores scaled by `scale`.
#[derive(Debug, Clone, Copy)]
pub struct TransposedHead<'a> {
    pub query: &'a [f32],
    pub keys_t: &'a [f32],
    pub values_t: &'a [f32],
    pub scale: f32,
}

/// One head of one query attending over `n = scores.len()` frames: the scores are `dim`
/// sweeps of `s += q_d · K_d` and each output value one long dot product, both running the
/// whole vector width.
#[inline(always)]
fn attend_transposed_generic(head: &TransposedHead<'_>, scores: &mut [f32], out: &mut [f32]) {
    let n = scores.len();
    scores.fill(0.0);
    for (q, k) in head.query.iter().zip(head.keys_t.chunks_exact(n)) {
        let q = q * head.scale;
        for (s, k) in scores.iter_mut().zip(k) {
            *s += q * k;
        }
    }
    softmax_generic(scores);
    for (o, v) in out.iter_mut().zip(head.values_t.chunks_exact(n)) {
        *o = dot_lanes::<LANES>(scores, v);
    }
}

#[inline(always)]
fn softmax_generic(x: &mut [f32]) {
    let max = max_generic(x);
    for v in x.iter_mut() {
        *v = exp(*v - max);
    }
    let inv = 1.0 / sum_generic(x);
    for v in x {
        *v *= inv;
    }
}

/// The loops above compiled for the instruction sets `$features`, in module `$name`; only
/// callable where the CPU has them (checked at run time by [`dispatch!`]).
macro_rules! compiled_for {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            #[target_feature(enable = $features)]
            pub(super) fn gelu(x: &mut [f32]) {
                super::gelu_generic(x);
            }

            #[target_feature(enable = $features)]
            pub(super) fn softmax(x: &mut [f32]) {
                super::softmax_generic(x);
            }

            #[target_feature(enable = $features)]
            pub(super) fn attend_transposed(
                head: &super::TransposedHead<'_>,
                scores: &mut [f32],
                out: &mut [f32],
            ) {
                super::attend_transposed_generic(head, scores, out);
            }

            #[target_feature(enable = $features)]
            pub(super) fn max(x: &[f32]) -> f32 {
                super::max_generic(x)
            }

            #[target_feature(enable = $features)]
            pub(super) fn sum_exp(x: &[f32], shift: f32) -> f32 {
                super::sum_exp_generic(x, shift)
            }
        }
    };
}

// Sixteen values to a register.
compiled_for!(avx512_elementwise, "avx512f,avx512dq,avx2,fma");
compiled_for!(avx2_elementwise, "avx2,fma");

/// Runs `$kernel` of the widest compiled variant the CPU has (AVX-512, then AVX2), else the
/// portable `$generic`, on the same arguments.
macro_rules! dispatch {
    ($kernel:ident, $generic:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: the CPU has AVX-512 F and DQ, AVX2 and FMA (checked just above).
            return unsafe { avx512_elementwise::$kernel($($arg),*) };
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { avx2_elementwise::$kernel($($arg),*) };
        }
        $generic($($arg),*)
    }};
}

/// The exact GELU, `x·Φ(x)` with the error function: the activation Whisper was trained with
/// (not the tanh approximation).
pub fn gelu_in_place(x: &mut [f32]) {
    dispatch!(gelu, gelu_generic(x))
}

/// Softmax in place, stable (the maximum is subtracted first).
pub fn softmax_in_place(x: &mut [f32]) {
    dispatch!(softmax, softmax_generic(x))
}

/// Softmax-weighted attention of `head`'s query over `scores.len()` frames, into `out`
/// (`query.len()` values). `scores` is scratch.
pub fn attend_transposed(head: &TransposedHead<'_>, scores: &mut [f32], out: &mut [f32]) {
    debug_assert!(head.keys_t.len() >= head.query.len() * scores.len());
    debug_assert!(head.values_t.len() >= out.len() * scores.len());
    dispatch!(
        attend_transposed,
        attend_transposed_generic(head, scores, out)
    )
}

/// The largest value of `x` (−∞ when empty).
pub fn max(x: &[f32]) -> f32 {
    dispatch!(max, max_generic(x))
}

/// `Σ exp(v − shift)` over `x`, with [`exp`]: the log-sum-exp of 51,864 logits a decoder step
/// needs, without a libm call per value.
pub fn sum_exp(x: &[f32], shift: f32) -> f32 {
    dispatch!(sum_exp, sum_exp_generic(x, shift))
}

/// [`gelu_in_place`] over a large buffer, shared out over rayon's threads.
pub fn gelu_parallel(x: &mut [f32]) {
    x.par_chunks_mut(16 * 1024).for_each(gelu_in_place);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcribe::kernels::{dot, pseudo_random};

    #[test]
    fn gelu_is_the_exact_one() {
        let mut x = [-1.0f32, 0.0, 1.0, 3.0];
        gelu_in_place(&mut x);
        // x·Φ(x): Φ(1) = 0.841345, Φ(3) = 0.998650.
        let expected = [-0.158655, 0.0, 0.841345, 2.99595];
        let mut parallel = [-1.0f32, 0.0, 1.0, 3.0].repeat(10_000);
        gelu_parallel(&mut parallel);
        assert!(parallel.chunks(4).all(|c| c == x));
        for (a, b) in x.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn the_vectorised_reductions_match_the_plain_ones() {
        let mut x = pseudo_random(51_867, 13);
        x[40_000] = f32::NEG_INFINITY;
        x[123] = 3.5;
        let plain_max = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
        assert_eq!(max(&x), plain_max);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        let plain: f64 = x.iter().map(|v| f64::from(v - plain_max).exp()).sum();
        let ours = f64::from(sum_exp(&x, plain_max));
        assert!((ours - plain).abs() <= 1e-5 * plain, "{ours} vs {plain}");
    }

    #[test]
    fn transposed_attention_matches_the_textbook_one() {
        let (dim, n) = (8, 37);
        let q = pseudo_random(dim, 21);
        let k = pseudo_random(n * dim, 22); // frame-major: k[j·dim + d]
        let v = pseudo_random(n * dim, 23);
        let transpose =
            |m: &[f32]| -> Vec<f32> { (0..dim * n).map(|i| m[(i % n) * dim + i / n]).collect() };
        let mut scores = vec![0.0; n];
        let mut out = vec![0.0; dim];
        let (keys_t, values_t) = (transpose(&k), transpose(&v));
        let head = TransposedHead {
            query: &q,
            keys_t: &keys_t,
            values_t: &values_t,
            scale: 0.5,
        };
        attend_transposed(&head, &mut scores, &mut out);

        let mut p: Vec<f32> = (0..n)
            .map(|j| 0.5 * dot(&q, &k[j * dim..(j + 1) * dim]))
            .collect();
        let max = p.iter().fold(f32::MIN, |m, v| m.max(*v));
        let sum: f32 = p
            .iter_mut()
            .map(|s| {
                *s = (*s - max).exp();
                *s
            })
            .sum();
        for d in 0..dim {
            let expected: f32 = (0..n).map(|j| p[j] / sum * v[j * dim + d]).sum();
            assert!((out[d] - expected).abs() < 1e-5, "{} vs {expected}", out[d]);
        }
    }

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let mut x = [1000.0f32, 1000.0, f32::NEG_INFINITY];
        softmax_in_place(&mut x);
        assert_eq!(x, [0.5, 0.5, 0.0]);
    }
}
