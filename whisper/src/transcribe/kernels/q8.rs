//! The 8-bit weight format (blocks of [`BLOCK`] values with one `f32` scale each, llama.cpp's
//! `q8_0`) and the matrix-vector products over it.

use rayon::prelude::*;

use super::q8_dot::dot_q8;

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
pub(super) fn quantize_into(values: &[f32], quants: &mut Vec<i8>, scales: &mut Vec<f32>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcribe::kernels::{dot, pseudo_random};

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
    fn a_dequantized_row_is_close_to_the_original() {
        let w = pseudo_random(2 * 64, 9);
        let m = Q8Matrix::quantize(2, 64, &w);
        let mut row = vec![0.0; 64];
        m.dequantize_row(1, &mut row);
        for (a, b) in row.iter().zip(&w[64..]) {
            assert!((a - b).abs() <= 1.0 / 127.0 + 1e-6);
        }
    }
}
