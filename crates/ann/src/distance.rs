//! Distance kernels over 64-byte aligned blocks of 16 floats.
//!
//! A row is a whole number of [`Block`]s, so one block is exactly one aligned 512-bit load (two
//! 256-bit ones). The portable kernels here are safe Rust that LLVM vectorises; `simd` has the
//! AVX-512 and AVX2+FMA ones, chosen at run time.

/// Floats per block; a row of the index is a whole number of blocks, zero padded.
pub(crate) const LANES: usize = 16;

/// 16 floats, aligned to a cache line.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C, align(64))]
pub(crate) struct Block(pub(crate) [f32; LANES]);

/// Blocks needed for `dim` floats.
pub(crate) const fn blocks_for(dim: usize) -> usize {
    dim.div_ceil(LANES)
}

/// Copies `v` into zero-padded blocks.
pub(crate) fn to_blocks(v: &[f32], out: &mut Vec<Block>) {
    out.clear();
    out.extend(v.chunks(LANES).map(|c| {
        let mut b = Block::default();
        b.0[..c.len()].copy_from_slice(c);
        b
    }));
}

/// Inner product, portable: one 16-lane accumulator that LLVM vectorises at any width, summed
/// lane by lane at the end (a tree-shaped sum makes LLVM split the accumulator into 2-wide
/// pieces instead).
#[inline(always)]
pub(crate) fn dot(a: &[Block], b: &[Block]) -> f32 {
    let mut acc = [0f32; LANES];
    for (x, y) in a.iter().zip(b) {
        for ((a, x), y) in acc.iter_mut().zip(&x.0).zip(&y.0) {
            *a += x * y;
        }
    }
    let mut sum = 0.0;
    for x in acc {
        sum += x;
    }
    sum
}

/// Squared Euclidean distance, portable (see [`dot`]).
#[inline(always)]
pub(crate) fn l2sq(a: &[Block], b: &[Block]) -> f32 {
    let mut acc = [0f32; LANES];
    for (x, y) in a.iter().zip(b) {
        for ((a, x), y) in acc.iter_mut().zip(&x.0).zip(&y.0) {
            let d = x - y;
            *a += d * d;
        }
    }
    let mut sum = 0.0;
    for x in acc {
        sum += x;
    }
    sum
}

/// The factor that scales `v` to unit length (1 for a zero vector).
pub(crate) fn unit_scale(v: &[f32]) -> f32 {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if norm > 0.0 { (1.0 / norm) as f32 } else { 1.0 }
}

/// Scales `v` to unit length in place; a zero vector stays zero.
pub(crate) fn normalize(v: &mut [f32]) {
    let inv = unit_scale(v);
    v.iter_mut().for_each(|x| *x *= inv);
}

/// Copies `v * scale` into zero-padded blocks (the same products as [`normalize`]).
pub(crate) fn to_blocks_scaled(v: &[f32], scale: f32, out: &mut Vec<Block>) {
    out.clear();
    out.extend(v.chunks(LANES).map(|c| {
        let mut b = Block::default();
        for (x, y) in b.0.iter_mut().zip(c) {
            *x = y * scale;
        }
        b
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn kernels_match_naive_sums_for_every_padding() {
        for dim in [1, 3, 15, 16, 17, 31, 32, 33, 64, 65, 100] {
            let a: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.11).cos()).collect();
            let (mut ba, mut bb) = (Vec::new(), Vec::new());
            to_blocks(&a, &mut ba);
            to_blocks(&b, &mut bb);
            assert_eq!(ba.len(), blocks_for(dim));
            let l2: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
            for (d, l) in crate::simd::all_kernels(&ba, &bb) {
                assert!((d - naive_dot(&a, &b)).abs() < 1e-4, "dim {dim}");
                assert!((l - l2).abs() < 1e-4, "dim {dim}");
            }
        }
    }

    #[test]
    fn normalize_gives_unit_length_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut z = vec![0.0; 3];
        normalize(&mut z);
        assert_eq!(z, [0.0; 3]);
    }
}
