//! Scalar and short-vector arithmetic written so the compiler vectorises it: dot products,
//! `axpy`, layer norm, and `exp`/`erf` without a call into libm.

/// `a · b` in `f32`, with eight independent accumulators so the compiler can vectorise it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes::<8>(a, b)
}

/// `a · b` in `f32` with `N` independent accumulators (see [`lane_sum`]).
#[inline(always)]
pub(super) fn dot_lanes<const N: usize>(a: &[f32], b: &[f32]) -> f32 {
    let (chunks_a, chunks_b) = (a.chunks_exact(N), b.chunks_exact(N));
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    lane_sum::<N, _>(chunks_a.zip(chunks_b), tail, |(x, y), i| x[i] * y[i])
}

/// The sum of `term(chunk, i)` over `chunks` of `N` values and `i < N`, plus `tail` (the sum
/// over what is left after the whole chunks), added in `N` independent accumulators so that
/// the compiler can keep them in vector registers (an `f32` sum in one accumulator has to be
/// added in order, which keeps the whole loop scalar).
#[inline(always)]
pub(super) fn lane_sum<const N: usize, C>(
    chunks: impl Iterator<Item = C>,
    tail: f32,
    term: impl Fn(&C, usize) -> f32,
) -> f32 {
    let mut lanes = [0.0f32; N];
    for c in chunks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            *lane += term(&c, i);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
