//! CPU dispatch and the SIMD distance kernels: the crate's only `unsafe` code.
//!
//! A [`Kernel`] computes distances between rows of [`Block`]s. [`Portable`] is safe Rust; on
//! x86_64, [`Avx512`] and [`Avx2`] use intrinsics (LLVM's auto-vectoriser splits a 16-lane
//! accumulator into 2-wide pieces whenever a tree-shaped horizontal sum follows, so the fast
//! kernels are written by hand). Values of `Avx512` / `Avx2` are tokens: they can only be made by
//! [`dispatch`] after run-time detection found the features, which is what makes calling their
//! `#[target_feature]` functions sound.
//!
//! The hot paths (search, insertion) are generic over the kernel and `#[inline(always)]`; a
//! [`Task`] run through [`dispatch`] is therefore compiled inside a function with the kernel's
//! target features, and the kernel is inlined into the search loop.
#![cfg_attr(
    target_arch = "x86_64",
    expect(
        unsafe_code,
        reason = "SIMD loads and #[target_feature] calls after run-time CPU detection; prefetch hints"
    )
)]

use std::sync::OnceLock;

use crate::distance::{self, Block};

/// Distance computations over rows of blocks.
pub(crate) trait Kernel: Copy {
    fn dot(self, a: &[Block], b: &[Block]) -> f32;
    fn l2sq(self, a: &[Block], b: &[Block]) -> f32;

    /// The internal distance, lower is closer: squared Euclidean distance for L2, `-dot`
    /// otherwise (inner product, and cosine on normalised vectors).
    #[inline(always)]
    fn distance(self, l2: bool, a: &[Block], b: &[Block]) -> f32 {
        if l2 { self.l2sq(a, b) } else { -self.dot(a, b) }
    }
}

/// A computation that wants the best kernel available.
pub(crate) trait Task {
    type Output;
    fn run<K: Kernel>(self, kernel: K) -> Self::Output;
}

/// The instruction set the kernels run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// x86_64 AVX-512F.
    Avx512,
    /// x86_64 AVX2 with FMA.
    Avx2,
    /// Portable code, vectorised for the compilation target's baseline (SSE2 on x86_64).
    Baseline,
}

/// The instruction set detected on this CPU (cached after the first call).
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Baseline
    })
}

/// Safe Rust kernels (see `distance`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Portable;

impl Kernel for Portable {
    #[inline(always)]
    fn dot(self, a: &[Block], b: &[Block]) -> f32 {
        distance::dot(a, b)
    }
    #[inline(always)]
    fn l2sq(self, a: &[Block], b: &[Block]) -> f32 {
        distance::l2sq(a, b)
    }
}

/// Runs `task` with the best kernel for this CPU.
#[inline]
pub(crate) fn dispatch<T: Task>(task: T) -> T::Output {
    #[cfg(target_arch = "x86_64")]
    match isa() {
        // SAFETY: `isa()` returns Avx512 only if the CPU reports avx512f.
        Isa::Avx512 => unsafe { x86::run_avx512(task, x86::Avx512(())) },
        // SAFETY: `isa()` returns Avx2 only if the CPU reports avx2 and fma.
        Isa::Avx2 => unsafe { x86::run_avx2(task, x86::Avx2(())) },
        Isa::Baseline => task.run(Portable),
    }
    #[cfg(not(target_arch = "x86_64"))]
    task.run(Portable)
}

/// `(dot, l2sq)` from every kernel this CPU can run, for tests.
#[cfg(test)]
pub(crate) fn all_kernels(a: &[Block], b: &[Block]) -> Vec<(f32, f32)> {
    struct Both<'a>(&'a [Block], &'a [Block]);
    impl Task for Both<'_> {
        type Output = (f32, f32);
        fn run<K: Kernel>(self, k: K) -> (f32, f32) {
            (k.dot(self.0, self.1), k.l2sq(self.0, self.1))
        }
    }
    let mut out = vec![Both(a, b).run(Portable), dispatch(Both(a, b))];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            out.push(unsafe { x86::run_avx512(Both(a, b), x86::Avx512(())) });
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            out.push(unsafe { x86::run_avx2(Both(a, b), x86::Avx2(())) });
        }
    }
    out
}

/// Hints the CPU to pull the cache line holding `value` into L1.
#[inline(always)]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults and changes no memory, and the pointer
    // comes from a reference. SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(std::ptr::from_ref(value).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Kernel, Task};
    use crate::distance::Block;

    /// Proof that the CPU has AVX-512F; only `dispatch` makes one, after detection.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Avx512(pub(super) ());

    /// Proof that the CPU has AVX2 and FMA; only `dispatch` makes one, after detection.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Avx2(pub(super) ());

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) fn run_avx512<T: Task>(task: T, k: Avx512) -> T::Output {
        task.run(k)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn run_avx2<T: Task>(task: T, k: Avx2) -> T::Output {
        task.run(k)
    }

    impl Kernel for Avx512 {
        #[inline(always)]
        fn dot(self, a: &[Block], b: &[Block]) -> f32 {
            // SAFETY: an `Avx512` token exists only if the CPU has AVX-512F.
            unsafe { dot512(a, b) }
        }
        #[inline(always)]
        fn l2sq(self, a: &[Block], b: &[Block]) -> f32 {
            // SAFETY: as above.
            unsafe { l2sq512(a, b) }
        }
    }

    impl Kernel for Avx2 {
        #[inline(always)]
        fn dot(self, a: &[Block], b: &[Block]) -> f32 {
            // SAFETY: an `Avx2` token exists only if the CPU has AVX2 and FMA.
            unsafe { dot256(a, b) }
        }
        #[inline(always)]
        fn l2sq(self, a: &[Block], b: &[Block]) -> f32 {
            // SAFETY: as above.
            unsafe { l2sq256(a, b) }
        }
    }

    /// One block as a 512-bit vector.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load512(b: &Block) -> __m512 {
        // SAFETY: a `Block` is 16 f32 aligned to 64 bytes: exactly one aligned 512-bit load.
        unsafe { _mm512_load_ps(b.0.as_ptr()) }
    }

    /// One block as two 256-bit vectors.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn load256(b: &Block) -> (__m256, __m256) {
        // SAFETY: a `Block` is 16 f32 aligned to 64 bytes: two aligned 256-bit loads.
        unsafe { (_mm256_load_ps(b.0.as_ptr()), _mm256_load_ps(b.0.as_ptr().add(8))) }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn dot512(a: &[Block], b: &[Block]) -> f32 {
        // Two accumulators (even and odd blocks) halve the FMA dependency chain.
        let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let (mut pa, mut pb) = (a.chunks_exact(2), b.chunks_exact(2));
        for (x, y) in (&mut pa).zip(&mut pb) {
            acc0 = _mm512_fmadd_ps(load512(&x[0]), load512(&y[0]), acc0);
            acc1 = _mm512_fmadd_ps(load512(&x[1]), load512(&y[1]), acc1);
        }
        if let (Some(x), Some(y)) = (pa.remainder().first(), pb.remainder().first()) {
            acc0 = _mm512_fmadd_ps(load512(x), load512(y), acc0);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn l2sq512(a: &[Block], b: &[Block]) -> f32 {
        let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let (mut pa, mut pb) = (a.chunks_exact(2), b.chunks_exact(2));
        for (x, y) in (&mut pa).zip(&mut pb) {
            let d0 = _mm512_sub_ps(load512(&x[0]), load512(&y[0]));
            let d1 = _mm512_sub_ps(load512(&x[1]), load512(&y[1]));
            acc0 = _mm512_fmadd_ps(d0, d0, acc0);
            acc1 = _mm512_fmadd_ps(d1, d1, acc1);
        }
        if let (Some(x), Some(y)) = (pa.remainder().first(), pb.remainder().first()) {
            let d = _mm512_sub_ps(load512(x), load512(y));
            acc0 = _mm512_fmadd_ps(d, d, acc0);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn dot256(a: &[Block], b: &[Block]) -> f32 {
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for (x, y) in a.iter().zip(b) {
            let ((x0, x1), (y0, y1)) = (load256(x), load256(y));
            acc0 = _mm256_fmadd_ps(x0, y0, acc0);
            acc1 = _mm256_fmadd_ps(x1, y1, acc1);
        }
        hsum256(_mm256_add_ps(acc0, acc1))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn l2sq256(a: &[Block], b: &[Block]) -> f32 {
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for (x, y) in a.iter().zip(b) {
            let ((x0, x1), (y0, y1)) = (load256(x), load256(y));
            let (d0, d1) = (_mm256_sub_ps(x0, y0), _mm256_sub_ps(x1, y1));
            acc0 = _mm256_fmadd_ps(d0, d0, acc0);
            acc1 = _mm256_fmadd_ps(d1, d1, acc1);
        }
        hsum256(_mm256_add_ps(acc0, acc1))
    }
}
