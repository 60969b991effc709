//! The decoder's inner loops, fused by hand.
//!
//! One decoder step multiplies a single token's activations by every decoder weight and by the
//! 51,864 × 384 output projection: matrix-vector products, bound by memory bandwidth rather
//! than arithmetic. A general tensor library pays an allocation and a dispatch per small op and
//! streams float weights; here the weights are 8-bit (blocks of 32 with one `f32` scale each,
//! the layout llama.cpp calls `q8_0`), the activation vector is quantized the same way once per
//! product, and the block dot products run on AVX-512 VNNI or AVX2 when the CPU has them
//! (detected at run time, so the binary still runs on any x86-64), with a portable fallback
//! elsewhere. The output projection reads 22 MB a step and is bound by memory bandwidth
//! (~450 µs on this project's machine whichever kernel runs); VNNI helps the smaller matrices.
//!
//! The element-wise loops (`exp`, GELU, softmax, the logits' max and log-sum-exp, one query's
//! attention) are written so the compiler vectorises them — independent accumulators, no
//! saturating float-to-int conversion — and compiled for AVX-512 and AVX2, chosen at run time.
//!
//! [`q8`] holds the 8-bit matrix format and its products, [`q8_dot`] the block dot product
//! each product row runs (AVX-512 VNNI, AVX2 or portable), [`math`] the scalar functions
//! (`exp`, `erf`, dot products, layer norm), [`elementwise`] the loops over whole vectors
//! (GELU, softmax, attention, the logits' reductions), and [`cpu`] which instruction sets the
//! CPU offers.

mod cpu;
mod elementwise;
mod math;
mod q8;
mod q8_dot;

pub use elementwise::{
    TransposedHead, attend_transposed, gelu_in_place, gelu_parallel, max, softmax_in_place, sum_exp,
};
pub use math::{axpy, dot, layer_norm};
pub use q8::{BLOCK, Q8Matrix, Q8Vector};

/// Deterministic values in `-1..1` for the kernels' tests.
#[cfg(test)]
fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}
