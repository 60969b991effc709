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

use rayon::prelude::*;

/// Values per quantization block.
pub const BLOCK: usize = 32;

/// A row-major matrix of 8-bit weights, one scale per [`BLOCK`] of each row.
#[derive(Debug, Clone)]
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    quants: Vec<i8>,
    scales: Vec<f32>,
}

/// An activation vector quantized like a row of [`Q8Matrix`].
#[derive(Debug, Clone, Default)]
pub struct Q8Vector {
    quants: Vec<i8>,
    scales: Vec<f32>,
}

/// Quantizes `values` (a multiple of [`BLOCK`] long) into `quants`/`scales`, symmetric per
/// block, to `-127..=127` (never -128, so the AVX2 sign trick cannot overflow).
fn quantize_into(values: &[f32], quants: &mut Vec<i8>, scales: &mut Vec<f32>) {
    quants.clear();
    scales.clear();
    for block in values.chunks_exact(BLOCK) {
        let max = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = max / 127.0;
        let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        scales.push(scale);
        quants.extend(
            block
                .iter()
                .map(|v| (v * inverse).round().clamp(-127.0, 127.0) as i8),
        );
    }
}

impl Q8Vector {
    /// Quantizes `values`, reusing this vector's buffers.
    pub fn quantize(&mut self, values: &[f32]) {
        debug_assert_eq!(values.len() % BLOCK, 0);
        quantize_into(values, &mut self.quants, &mut self.scales);
    }
}

impl Q8Matrix {
    /// Quantizes a row-major `rows × cols` matrix; `cols` must be a multiple of [`BLOCK`].
    #[cfg(test)]
    pub fn quantize(rows: usize, cols: usize, values: &[f32]) -> Self {
        assert_eq!(values.len(), rows * cols, "matrix data and shape disagree");
        Self::quantize_rows(rows, cols, |r, out| {
            out.copy_from_slice(&values[r * cols..(r + 1) * cols]);
        })
    }

    /// Quantizes a `rows × cols` matrix handed over one row at a time by `row(r, out)`, so the
    /// whole matrix never exists in `f32` (the output projection would be 80 MB).
    pub fn quantize_rows(rows: usize, cols: usize, mut row: impl FnMut(usize, &mut [f32])) -> Self {
        assert_eq!(cols % BLOCK, 0, "columns must be a multiple of {BLOCK}");
        let mut quants = Vec::with_capacity(rows * cols);
        let mut scales = Vec::with_capacity(rows * cols / BLOCK);
        let (mut values, mut q, mut s) = (vec![0.0; cols], Vec::new(), Vec::new());
        for r in 0..rows {
            row(r, &mut values);
            quantize_into(&values, &mut q, &mut s);
            quants.extend_from_slice(&q);
            scales.extend_from_slice(&s);
        }
        Self {
            rows,
            cols,
            quants,
            scales,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `r`, dequantized into `out` (e.g. a token's embedding).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let q = &self.quants[r * self.cols..(r + 1) * self.cols];
        let s = &self.scales[r * self.cols / BLOCK..(r + 1) * self.cols / BLOCK];
        for ((o, q), s) in out
            .chunks_exact_mut(BLOCK)
            .zip(q.chunks_exact(BLOCK))
            .zip(s)
        {
            for (o, q) in o.iter_mut().zip(q) {
                *o = f32::from(*q) * s;
            }
        }
    }

    fn row_dot(&self, r: usize, x: &Q8Vector) -> f32 {
        let blocks = self.cols / BLOCK;
        dot_q8(
            &self.quants[r * self.cols..(r + 1) * self.cols],
            &self.scales[r * blocks..(r + 1) * blocks],
            &x.quants,
            &x.scales,
        )
    }

    /// `out = W·x (+ bias)` on this thread.
    #[cfg(test)]
    pub fn matvec(&self, x: &Q8Vector, bias: Option<&[f32]>, out: &mut [f32]) {
        debug_assert_eq!(x.quants.len(), self.cols);
        for (r, o) in out.iter_mut().enumerate().take(self.rows) {
            *o = self.row_dot(r, x) + bias.map_or(0.0, |b| b[r]);
        }
    }

    /// `out = W·x (+ bias)` with the rows shared out over rayon's threads, one even share per
    /// thread: a decoder step's products are small (tens of microseconds each), so more tasks
    /// would cost more in hand-offs than they save.
    pub fn matvec_parallel(&self, x: &Q8Vector, bias: Option<&[f32]>, out: &mut [f32]) {
        let threads = rayon::current_num_threads().max(1);
        let share = self.rows.div_ceil(threads).max(64);
        out[..self.rows]
            .par_chunks_mut(share)
            .enumerate()
            .for_each(|(chunk, o)| {
                let first = chunk * share;
                for (i, o) in o.iter_mut().enumerate() {
                    let r = first + i;
                    *o = self.row_dot(r, x) + bias.map_or(0.0, |b| b[r]);
                }
            });
    }
}

/// Σ over blocks of `w_scale · x_scale · Σ w·x`.
fn dot_q8(wq: &[i8], ws: &[f32], xq: &[i8], xs: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if wq.len().is_multiple_of(2 * BLOCK) && has_avx512_vnni() {
            // SAFETY: the CPU has AVX-512 F, BW and VNNI (checked just above), and the blocks
            // come in pairs.
            return unsafe { avx512::dot_q8(wq, ws, xq, xs) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { avx2::dot_q8(wq, ws, xq, xs) };
        }
    }
    dot_q8_portable(wq, ws, xq, xs)
}

fn dot_q8_portable(wq: &[i8], ws: &[f32], xq: &[i8], xs: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for (((w, x), sw), sx) in wq
        .chunks_exact(BLOCK)
        .zip(xq.chunks_exact(BLOCK))
        .zip(ws)
        .zip(xs)
    {
        let sum: i32 = w
            .iter()
            .zip(x)
            .map(|(a, b)| i32::from(*a) * i32::from(*b))
            .sum();
        total += sum as f32 * sw * sx;
    }
    total
}

#[cfg(target_arch = "x86_64")]
fn has_avx512_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::BLOCK;

    /// Two blocks per 512-bit register: |x| (unsigned) times w carrying x's sign, summed four
    /// bytes at a time into `i32` by one VNNI `dpbusd`; each half is then scaled by its block's
    /// `w_scale · x_scale`, up to sixteen of which are multiplied in one register and picked
    /// out with a permute.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn dot_q8(wq: &[i8], ws: &[f32], xq: &[i8], xs: &[f32]) -> f32 {
        let blocks = wq.len() / BLOCK;
        debug_assert!(blocks.is_multiple_of(2));
        debug_assert!(xq.len() >= wq.len() && ws.len() >= blocks && xs.len() >= blocks);
        let zero = _mm512_setzero_si512();
        // Lanes 0-7 take the first block's scale, lanes 8-15 the second's.
        let pair = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        let mut acc = _mm512_setzero_ps();
        let mut b = 0;
        while b < blocks {
            let n = (blocks - b).min(16);
            let mask = (((1u32 << n) - 1) & 0xFFFF) as u16;
            // SAFETY: lanes past `n` are masked off, so only ws[b..b + n] and xs[b..b + n]
            // are read, inside the slices (asserted above).
            let scales = unsafe {
                _mm512_mul_ps(
                    _mm512_maskz_loadu_ps(mask, ws.as_ptr().add(b)),
                    _mm512_maskz_loadu_ps(mask, xs.as_ptr().add(b)),
                )
            };
            let mut c = 0;
            while c < n {
                // SAFETY: (b + c + 2) · BLOCK ≤ blocks · BLOCK ≤ len of both slices.
                let (w, x) = unsafe {
                    (
                        _mm512_loadu_si512(wq.as_ptr().add((b + c) * BLOCK).cast()),
                        _mm512_loadu_si512(xq.as_ptr().add((b + c) * BLOCK).cast()),
                    )
                };
                let negative = _mm512_movepi8_mask(x);
                let signed_w = _mm512_mask_sub_epi8(w, negative, zero, w);
                let sums = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(x), signed_w);
                let scale = _mm512_permutexvar_ps(
                    _mm512_add_epi32(pair, _mm512_set1_epi32(c as i32)),
                    scales,
                );
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), scale, acc);
                c += 2;
            }
            b += n;
        }
        _mm512_reduce_add_ps(acc)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::BLOCK;

    /// The llama.cpp trick for signed × signed bytes with `maddubs` (unsigned × signed):
    /// multiply |x| by w carrying x's sign, then widen pairs to i32.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_q8(wq: &[i8], ws: &[f32], xq: &[i8], xs: &[f32]) -> f32 {
        let blocks = wq.len() / BLOCK;
        debug_assert!(xq.len() >= wq.len() && ws.len() >= blocks && xs.len() >= blocks);
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        for b in 0..blocks {
            // SAFETY: b * BLOCK + 32 <= len for both slices (asserted above); unaligned loads.
            let (w, x) = unsafe {
                (
                    _mm256_loadu_si256(wq.as_ptr().add(b * BLOCK).cast()),
                    _mm256_loadu_si256(xq.as_ptr().add(b * BLOCK).cast()),
                )
            };
            let abs_x = _mm256_sign_epi8(x, x);
            let signed_w = _mm256_sign_epi8(w, x);
            let pairs = _mm256_maddubs_epi16(abs_x, signed_w);
            let sums = _mm256_madd_epi16(pairs, ones);
            let scale = _mm256_set1_ps(ws[b] * xs[b]);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc);
        }
        let hi = _mm256_extractf128_ps(acc, 1);
        let lo = _mm256_castps256_ps128(acc);
        let quad = _mm_add_ps(hi, lo);
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        let one = _mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1));
        _mm_cvtss_f32(one)
    }
}

/// `a · b` in `f32`, with eight independent accumulators so the compiler can vectorise it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in chunks_a.zip(chunks_b) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `out += scale · v`.
pub fn axpy(scale: f32, v: &[f32], out: &mut [f32]) {
    for (o, v) in out.iter_mut().zip(v) {
        *o += scale * v;
    }
}

/// Layer normalisation with Whisper's epsilon (1e-5).
pub fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], out: &mut [f32]) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + 1e-5).sqrt();
    for (((o, v), g), b) in out.iter_mut().zip(x).zip(gamma).zip(beta) {
        *o = (v - mean) * inv * g + b;
    }
}

/// `eˣ` to within a few ulp, in arithmetic the compiler can vectorise (no call into libm):
/// Cephes' `expf` — `x = n·ln 2 + r`, a degree-6 polynomial for `eʳ`, `2ⁿ` from the exponent
/// bits. Large inputs are clamped where `f32` would overflow; below −87 (where it would go
/// subnormal) the result is 0, so a masked (−∞) logit gets exactly no weight.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and removing 1.5·2²³ rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    let underflows = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    // n as an integer, read from the rounded value's low mantissa bits: an `as i32` conversion
    // would saturate, which the compiler does not vectorise.
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let e = y * f32::from_bits(((n_int + 127) as u32) << 23);
    if underflows { 0.0 } else { e }
}

/// The error function to 1.5·10⁻⁷ in exact arithmetic (Abramowitz & Stegun 7.1.26), under
/// 5·10⁻⁷ in `f32`; vectorisable like [`exp`].
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let y = 1.0 - poly * exp(-a * a);
    if x < 0.0 { -y } else { y }
}

#[inline(always)]
fn gelu_generic(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Lanes of the softmax's reductions: independent accumulators, so the compiler can keep them
/// in vector registers (an `f32` sum in one accumulator has to be added in order, which keeps
/// the whole loop, `exp` included, scalar).
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
    let mut lanes = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..LANES {
            lanes[i] += c[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
fn sum_exp_generic(x: &[f32], shift: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|v| exp(v - shift)).sum();
    for c in chunks {
        for i in 0..LANES {
            lanes[i] += exp(c[i] - shift);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
fn dot_generic(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (chunks_a, chunks_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in chunks_a.zip(chunks_b) {
        for i in 0..LANES {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// One head of one query attending over `n = scores.len()` frames whose keys and values are
/// stored transposed (`dim × n`, row-major): the scores are `dim` sweeps of `s += q_d · K_d`
/// and each output value one long dot product, both running the whole vector width.
#[inline(always)]
fn attend_transposed_generic(
    query: &[f32],
    keys_t: &[f32],
    values_t: &[f32],
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let n = scores.len();
    scores.fill(0.0);
    for (q, k) in query.iter().zip(keys_t.chunks_exact(n)) {
        let q = q * scale;
        for (s, k) in scores.iter_mut().zip(k) {
            *s += q * k;
        }
    }
    softmax_generic(scores);
    for (o, v) in out.iter_mut().zip(values_t.chunks_exact(n)) {
        *o = dot_generic(scores, v);
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

#[cfg(target_arch = "x86_64")]
mod avx2_elementwise {
    // The same loops compiled for AVX2 + FMA, chosen at run time.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn gelu(x: &mut [f32]) {
        super::gelu_generic(x);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn softmax(x: &mut [f32]) {
        super::softmax_generic(x);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn attend_transposed(
        query: &[f32],
        keys_t: &[f32],
        values_t: &[f32],
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        super::attend_transposed_generic(query, keys_t, values_t, scale, scores, out);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn max(x: &[f32]) -> f32 {
        super::max_generic(x)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn sum_exp(x: &[f32], shift: f32) -> f32 {
        super::sum_exp_generic(x, shift)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512_elementwise {
    // The same loops compiled for AVX-512, sixteen values to a register.
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn gelu(x: &mut [f32]) {
        super::gelu_generic(x);
    }

    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn softmax(x: &mut [f32]) {
        super::softmax_generic(x);
    }

    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn attend_transposed(
        query: &[f32],
        keys_t: &[f32],
        values_t: &[f32],
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        super::attend_transposed_generic(query, keys_t, values_t, scale, scores, out);
    }

    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn max(x: &[f32]) -> f32 {
        super::max_generic(x)
    }

    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn sum_exp(x: &[f32], shift: f32) -> f32 {
        super::sum_exp_generic(x, shift)
    }
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && has_avx2()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The exact GELU, `x·Φ(x)` with the error function: the activation Whisper was trained with
/// (not the tanh approximation).
pub fn gelu_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512 F and DQ, AVX2 and FMA (checked just above).
        return unsafe { avx512_elementwise::gelu(x) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { avx2_elementwise::gelu(x) };
    }
    gelu_generic(x);
}

/// Softmax in place, stable (the maximum is subtracted first).
pub fn softmax_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512 F and DQ, AVX2 and FMA (checked just above).
        return unsafe { avx512_elementwise::softmax(x) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { avx2_elementwise::softmax(x) };
    }
    softmax_generic(x);
}

/// Softmax-weighted attention of one head's `query` over `scores.len()` frames with keys and
/// values stored transposed (`query.len() × frames` each), into `out` (`query.len()` values);
/// the scores are scaled by `scale` first. `scores` is scratch.
pub fn attend_transposed(
    query: &[f32],
    keys_t: &[f32],
    values_t: &[f32],
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    debug_assert!(keys_t.len() >= query.len() * scores.len());
    debug_assert!(values_t.len() >= out.len() * scores.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512 F and DQ, AVX2 and FMA (checked just above).
        return unsafe {
            avx512_elementwise::attend_transposed(query, keys_t, values_t, scale, scores, out)
        };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe {
            avx2_elementwise::attend_transposed(query, keys_t, values_t, scale, scores, out)
        };
    }
    attend_transposed_generic(query, keys_t, values_t, scale, scores, out);
}

/// The largest value of `x` (−∞ when empty).
pub fn max(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512 F and DQ, AVX2 and FMA (checked just above).
        return unsafe { avx512_elementwise::max(x) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { avx2_elementwise::max(x) };
    }
    max_generic(x)
}

/// `Σ exp(v − shift)` over `x`, with [`exp`]: the log-sum-exp of 51,864 logits a decoder step
/// needs, without a libm call per value.
pub fn sum_exp(x: &[f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512 F and DQ, AVX2 and FMA (checked just above).
        return unsafe { avx512_elementwise::sum_exp(x, shift) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { avx2_elementwise::sum_exp(x, shift) };
    }
    sum_exp_generic(x, shift)
}

/// [`gelu_in_place`] over a large buffer, shared out over rayon's threads.
pub fn gelu_parallel(x: &mut [f32]) {
    x.par_chunks_mut(16 * 1024).for_each(gelu_in_place);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn an_8_bit_matvec_is_within_a_percent_of_the_float_one() {
        let (rows, cols) = (70, 384);
        let w = pseudo_random(rows * cols, 7);
        let x = pseudo_random(cols, 11);
        let exact: Vec<f32> = w.chunks_exact(cols).map(|row| dot(row, &x)).collect();

        let m = Q8Matrix::quantize(rows, cols, &w);
        let mut qx = Q8Vector::default();
        qx.quantize(&x);
        let mut out = vec![0.0; rows];
        m.matvec(&qx, None, &mut out);
        let mut parallel = vec![0.0; rows];
        m.matvec_parallel(&qx, None, &mut parallel);

        let norm = exact.iter().map(|v| v * v).sum::<f32>().sqrt();
        let err = exact
            .iter()
            .zip(&out)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt();
        assert!(err / norm < 0.01, "relative error {}", err / norm);
        assert_eq!(out, parallel);
    }

    #[test]
    fn the_simd_and_portable_block_dots_agree() {
        let w = pseudo_random(384, 3);
        let x = pseudo_random(384, 5);
        let (mut wq, mut ws, mut xq, mut xs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        quantize_into(&w, &mut wq, &mut ws);
        quantize_into(&x, &mut xq, &mut xs);
        let portable = dot_q8_portable(&wq, &ws, &xq, &xs);
        let dispatched = dot_q8(&wq, &ws, &xq, &xs);
        assert!((portable - dispatched).abs() <= 1e-4 * portable.abs().max(1.0));
        // More than sixteen blocks (the 1,536-wide feed-forward input), and AVX2 on its own.
        let w = pseudo_random(1536, 4);
        let x = pseudo_random(1536, 6);
        quantize_into(&w, &mut wq, &mut ws);
        quantize_into(&x, &mut xq, &mut xs);
        let portable = dot_q8_portable(&wq, &ws, &xq, &xs);
        let dispatched = dot_q8(&wq, &ws, &xq, &xs);
        assert!((portable - dispatched).abs() <= 1e-4 * portable.abs().max(1.0));
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            let avx2 = unsafe { avx2::dot_q8(&wq, &ws, &xq, &xs) };
            assert!((portable - avx2).abs() <= 1e-4 * portable.abs().max(1.0));
        }
    }

    #[test]
    fn a_dequantized_row_is_close_to_the_original() {
        let w = pseudo_random(2 * 64, 9);
        let m = Q8Matrix::quantize(2, 64, &w);
        let mut row = vec![0.0; 64];
        m.dequantize_row(1, &mut row);
        for (a, b) in row.iter().zip(&w[64..]) {
            assert!((a - b).abs() <= 1.0 / 127.0 + 1e-6);
        }
    }

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
    fn the_vectorisable_exp_and_erf_match_libm() {
        let mut x = -80.0f32;
        while x < 80.0 {
            let (ours, std) = (exp(x), x.exp());
            assert!(
                (ours - std).abs() <= 4e-7 * std,
                "exp({x}) = {ours}, not {std}"
            );
            x += 0.173;
        }
        let mut x = -6.0f32;
        while x < 6.0 {
            let (ours, reference) = (erf(x), libm::erff(x));
            assert!(
                (ours - reference).abs() < 5e-7,
                "erf({x}) = {ours}, not {reference}"
            );
            x += 0.0131;
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
        attend_transposed(
            &q,
            &transpose(&k),
            &transpose(&v),
            0.5,
            &mut scores,
            &mut out,
        );

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
