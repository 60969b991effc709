//! One row's block dot product, `Σ w_scale · x_scale · Σ w·x`: on AVX-512 VNNI or AVX2 when
//! the CPU has them, portable otherwise.

use super::q8::BLOCK;

/// Σ over blocks of `w_scale · x_scale · Σ w·x`.
pub(super) fn dot_q8(wq: &[i8], ws: &[f32], xq: &[i8], xs: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if wq.len().is_multiple_of(2 * BLOCK) && super::cpu::has_avx512_vnni() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcribe::kernels::pseudo_random;
    use crate::transcribe::kernels::q8::quantize_into;

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
}
