//! The encoder's self-attention, one head per task.
//!
//! Through candle each head is two matrix products and a softmax, each split over the cores and
//! joined again: 72 hand-offs per window for products whose inner dimension is only 64, and the
//! threads spent a good share of the attention waiting on one another. Here rayon hands out
//! whole heads (6 per layer) and each runs on one core with `gemm` (the crate candle's own CPU
//! products use) reading the fused Q/K/V rows in place through strides: no copies, no joins
//! inside a head.

use rayon::prelude::*;

use super::kernels;

/// Multi-head attention over `qkv` (`frames × 3·width`, row-major: every frame's query, key and
/// value side by side, heads in order inside each) into a `frames × width` result.
pub fn self_attention(qkv: &[f32], frames: usize, width: usize, heads: usize) -> Vec<f32> {
    assert_eq!(
        qkv.len(),
        frames * 3 * width,
        "qkv does not hold {frames} frames"
    );
    assert_eq!(
        width % heads,
        0,
        "width {width} is not a multiple of {heads} heads"
    );
    let head_dim = width / heads;
    let per_head: Vec<Vec<f32>> = (0..heads)
        .into_par_iter()
        .map(|h| one_head(qkv, frames, width, head_dim, h))
        .collect();
    let mut out = vec![0.0f32; frames * width];
    for (h, head) in per_head.iter().enumerate() {
        for (row, values) in out.chunks_exact_mut(width).zip(head.chunks_exact(head_dim)) {
            row[h * head_dim..(h + 1) * head_dim].copy_from_slice(values);
        }
    }
    out
}

fn one_head(qkv: &[f32], frames: usize, width: usize, head_dim: usize, h: usize) -> Vec<f32> {
    let row = (3 * width) as isize;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let q = h * head_dim;
    let k = width + h * head_dim;
    let v = 2 * width + h * head_dim;

    // scores = scale · Q_h · K_hᵀ  (frames × frames)
    let mut scores = vec![0.0f32; frames * frames];
    // SAFETY: every index gemm forms stays inside its buffer: Q_h element (i, d) is
    // qkv[i·row + q + d] and K_hᵀ element (d, j) is qkv[j·row + k + d] with i, j < frames and
    // d < head_dim ≤ width, and qkv holds frames·row values (asserted by the caller); scores
    // is frames × frames, row-major.
    unsafe {
        gemm::gemm(
            frames,
            frames,
            head_dim,
            scores.as_mut_ptr(),
            1,
            frames as isize,
            false,
            qkv.as_ptr().add(q),
            1,
            row,
            qkv.as_ptr().add(k),
            row,
            1,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    for r in scores.chunks_exact_mut(frames) {
        kernels::softmax_in_place(r);
    }

    // out_h = scores · V_h  (frames × head_dim)
    let mut out = vec![0.0f32; frames * head_dim];
    // SAFETY: as above; V_h element (j, d) is qkv[j·row + v + d], out is frames × head_dim.
    unsafe {
        gemm::gemm(
            frames,
            head_dim,
            frames,
            out.as_mut_ptr(),
            1,
            head_dim as isize,
            false,
            scores.as_ptr(),
            1,
            frames as isize,
            qkv.as_ptr().add(v),
            1,
            row,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook computation, one value at a time.
    fn reference(qkv: &[f32], frames: usize, width: usize, heads: usize) -> Vec<f32> {
        let hd = width / heads;
        let mut out = vec![0.0; frames * width];
        for h in 0..heads {
            for i in 0..frames {
                let q = &qkv[i * 3 * width + h * hd..][..hd];
                let mut s: Vec<f32> = (0..frames)
                    .map(|j| {
                        let k = &qkv[j * 3 * width + width + h * hd..][..hd];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() / (hd as f32).sqrt()
                    })
                    .collect();
                let max = s.iter().fold(f32::MIN, |m, v| m.max(*v));
                let sum: f32 = s
                    .iter_mut()
                    .map(|v| {
                        *v = (*v - max).exp();
                        *v
                    })
                    .sum();
                for j in 0..frames {
                    let v = &qkv[j * 3 * width + 2 * width + h * hd..][..hd];
                    for d in 0..hd {
                        out[i * width + h * hd + d] += s[j] / sum * v[d];
                    }
                }
            }
        }
        out
    }

    #[test]
    fn per_head_attention_matches_the_textbook_one() {
        let (frames, width, heads) = (37, 24, 3);
        let mut state = 17u32;
        let qkv: Vec<f32> = (0..frames * 3 * width)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect();
        let ours = self_attention(&qkv, frames, width, heads);
        let expected = reference(&qkv, frames, width, heads);
        for (a, b) in ours.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
