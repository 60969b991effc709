//! The encoder's self-attention, in blocks of queries.
//!
//! Through candle each head is two matrix products and a softmax, each split over the cores and
//! joined again: 72 hand-offs per window for products whose inner dimension is only 64. A whole
//! head at a time is no better for the caches: its 1,500 × 1,500 scores are 9 MB, more than a
//! core's L2, so they went out to memory and back three times (product, softmax, product).
//! Here rayon hands out (head, block of [`QUERY_BLOCK`] queries) tasks — 6 × 24 per layer, even
//! work for every core — and each runs on one core with `gemm` (the crate candle's own CPU
//! products use) reading the fused Q/K/V rows in place through strides, its scores (a few
//! hundred kB) staying in cache, and writing its slice of the result in place: no copies, no
//! joins inside a task.

use rayon::prelude::*;

use super::kernels;

/// Queries per task: 64 × 1,500 scores are 384 kB, which stay in a core's L2 between the two
/// products and the softmax.
const QUERY_BLOCK: usize = 256;

/// The output buffer shared by the tasks, each of which writes a disjoint block of it.
#[derive(Clone, Copy)]
struct Output(*mut f32);

// SAFETY: the tasks write disjoint (rows, head columns) blocks of the buffer (see
// `self_attention`), which outlives them.
unsafe impl Send for Output {}
unsafe impl Sync for Output {}

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
    let mut out = vec![0.0f32; frames * width];
    let blocks = frames.div_ceil(QUERY_BLOCK);
    let target = Output(out.as_mut_ptr());
    (0..heads * blocks).into_par_iter().for_each_init(
        || vec![0.0f32; QUERY_BLOCK * frames],
        |scores, task| {
            let (h, block) = (task / blocks, task % blocks);
            let first = block * QUERY_BLOCK;
            let rows = QUERY_BLOCK.min(frames - first);
            // SAFETY: this task alone writes rows first..first + rows, columns
            // h·head_dim..(h + 1)·head_dim of `out`, which holds frames × width values.
            unsafe {
                one_block(
                    qkv,
                    frames,
                    width,
                    head_dim,
                    h,
                    first,
                    rows,
                    &mut scores[..rows * frames],
                    target,
                )
            };
        },
    );
    out
}

/// Attention of queries `first..first + rows` of head `h` over every frame, into `out`'s rows
/// `first..` and the head's columns.
///
/// # Safety
///
/// `out` must point at `frames × width` values no other thread reads or writes in that block,
/// and `qkv` must hold `frames × 3·width` values.
#[allow(clippy::too_many_arguments)]
unsafe fn one_block(
    qkv: &[f32],
    frames: usize,
    width: usize,
    head_dim: usize,
    h: usize,
    first: usize,
    rows: usize,
    scores: &mut [f32],
    out: Output,
) {
    let row = (3 * width) as isize;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let q = first * 3 * width + h * head_dim;
    let k = width + h * head_dim;
    let v = 2 * width + h * head_dim;

    // scores = scale · Q_h[first..first + rows] · K_hᵀ  (rows × frames)
    // SAFETY: every index gemm forms stays inside its buffer: Q_h element (i, d) is
    // qkv[(first + i)·row + h·head_dim + d] and K_hᵀ element (d, j) is qkv[j·row + k + d] with
    // first + i, j < frames and d < head_dim, and qkv holds frames·row values (asserted by the
    // caller); scores is rows × frames, row-major.
    unsafe {
        gemm::gemm(
            rows,
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

    // out[first.., h·head_dim..] = scores · V_h  (rows × head_dim, row stride width)
    // SAFETY: V_h element (j, d) is qkv[j·row + v + d]; the destination block lies inside `out`
    // and belongs to this task alone (the caller's contract).
    unsafe {
        gemm::gemm(
            rows,
            head_dim,
            frames,
            out.0.add(first * width + h * head_dim),
            1,
            width as isize,
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
