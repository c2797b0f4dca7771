//! Products `C += A · Bᵀ` whose two operands both run along the inner dimension, as a
//! convolution's weight gradient `dW += dy · colsᵀ` has them (`dy` and the columns are both
//! `[rows, positions]`). With 16 rows in `A` (16 output channels) the `gemm` crate packs both
//! operands and runs its one-register-tall microkernel; here the products are dot products
//! over 16-lane vectors, read in place. Each output keeps its 16 lane sums across all the
//! products of an op, added up once, at the end.
//!
//! f32 on x86-64 CPUs with AVX-512 only (checked at run time); elsewhere [`DotSums::new`]
//! says no and the caller uses the `gemm` crate.

use super::{Aligned, Float};

/// Lanes per output: one AVX-512 register of f32.
const LANES: usize = 16;

/// f32s in 4 KiB: rows this far apart map to the same sets of the L1 cache.
const SET_STRIDE: usize = 1024;

/// Rows of `A` and of `B` per tile: 4 x 6 = 24 accumulators, 10 loads per 24 multiply-adds,
/// within the 32 vector registers.
const MR: usize = 4;
const NR: usize = 6;

/// A stretch of the inner dimension: `len` elements from offset `a` of `A`'s first row and
/// offset `b` of `B`'s, whose rows are `ldb` apart there (a convolution's columns are made
/// a few tiles of output rows at a time, each tile's its own matrix).
#[derive(Debug, Clone, Copy)]
pub(super) struct Segment {
    pub a: usize,
    pub b: usize,
    pub ldb: usize,
    pub len: usize,
}

/// The lane sums of `len` outputs, `LANES` each.
pub(super) struct DotSums {
    lanes: Vec<f32>,
    /// Where `A`'s rows are copied when they do not start on cache lines.
    rows: Aligned<f32>,
}

impl DotSums {
    /// Zeroed sums for `len` outputs of products whose `A` has `rows` rows, where they pay:
    /// `T` is f32, the CPU has AVX-512, and `rows` is a multiple of [`MR`] up to 16 (measured
    /// on the ResNet-20 of M2: its 16-channel layer's forward and backward passes 6-15%
    /// faster, whole steps about 3%; at 32 rows, no gain over the `gemm` crate's
    /// two-register-tall kernel; at 6, LeNet-5's tiles of single rows made M1 3% slower).
    /// `None` elsewhere.
    pub(super) fn new<T: Float>(rows: usize, len: usize) -> Option<Self> {
        let pays = rows.is_multiple_of(MR) && rows <= 16 && T::f32s(&[]).is_some();
        #[cfg(target_arch = "x86_64")]
        if pays && std::arch::is_x86_feature_detected!("avx512f") {
            return Some(Self {
                lanes: vec![0.0; len * LANES],
                rows: Aligned::zeroed(0),
            });
        }
        let _ = (pays, len);
        None
    }

    /// For each `(at, shift)` of `blocks`, adds `A · Bᵀ` to the outputs `at + i + j * m` (a
    /// column-major `[m, n]` block at `at`), for `a: [m, _]` (rows `lda` apart) and `b: [n, _]`
    /// read `shift` elements further on, over the inner dimension's `segments`. The blocks
    /// share `A` (a kernel-row weight gradient's `kh` products), copied at most once.
    pub(super) fn add<T: Float>(
        &mut self,
        blocks: &[(usize, usize)],
        (m, n): (usize, usize),
        (a, lda): (&[T], usize),
        b: &[T],
        segments: &[Segment],
    ) {
        let (Some(a), Some(b)) = (T::f32s(a), T::f32s(b)) else {
            unreachable!("DotSums is made for f32 only")
        };
        if m == 0 || n == 0 {
            return;
        }
        for s in segments.iter().filter(|s| s.len > 0) {
            assert!(
                (m - 1) * lda + s.a + s.len <= a.len(),
                "DotSums::add: a too small"
            );
            for &(_, shift) in blocks {
                assert!(
                    (n - 1) * s.ldb + s.b + shift + s.len <= b.len(),
                    "DotSums::add: b too small"
                );
            }
        }
        for &(at, _) in blocks {
            assert!(
                (at + m * n) * LANES <= self.lanes.len(),
                "DotSums::add: outputs out of range"
            );
        }
        // `A` (a layer's output gradient, each row read `n / NR` times) is copied where its
        // rows do not start on cache lines, or lie a multiple of 4 KiB apart (then they all
        // fall into the same sets of the L1 cache, which holds only 12 of them: 95 GFLOP/s on
        // one core for 16 rows instead of 130); `B`'s come aligned where the caller can.
        let aligned = |p: *const f32| (p as usize).is_multiple_of(64);
        let spread = |ld: usize| ld.is_multiple_of(LANES) && !ld.is_multiple_of(SET_STRIDE);
        let copied: Vec<Segment>;
        let starts = |s: &Segment| aligned(a.as_ptr().wrapping_add(s.a));
        let (a, lda, segments) = if spread(lda) && segments.iter().all(starts) {
            (a, lda, segments)
        } else {
            let mut ld: usize = segments.iter().map(|s| s.len.next_multiple_of(LANES)).sum();
            if !spread(ld) {
                ld += LANES;
            }
            if self.rows.len() < m * ld {
                self.rows = Aligned::zeroed(m * ld);
            }
            let mut to = 0;
            copied = segments
                .iter()
                .map(|s| {
                    for i in 0..m {
                        let row = &a[i * lda + s.a..][..s.len];
                        self.rows[i * ld + to..][..s.len].copy_from_slice(row);
                    }
                    let moved = Segment { a: to, ..*s };
                    to += s.len.next_multiple_of(LANES);
                    moved
                })
                .collect();
            (&self.rows[..], ld, &copied[..])
        };
        for &(at, shift) in blocks {
            let sums = self.lanes[at * LANES..].as_mut_ptr();
            let b = b.as_ptr().wrapping_add(shift);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the extents are checked above (the copy's by construction); `new` made
            // `self` only where the CPU has AVX-512.
            unsafe {
                avx512::add(sums, (m, n), (a.as_ptr(), lda), b, segments)
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = (sums, a, lda, b, segments);
                unreachable!("DotSums is made only on x86-64");
            }
        }
    }

    /// Each output's sum, in order.
    pub(super) fn sums<T: Float>(&self) -> Vec<T> {
        let sum = |l: &[f32]| T::from_f64(l.iter().sum::<f32>().into());
        self.lanes.chunks_exact(LANES).map(sum).collect()
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Segment, LANES, MR, NR};
    use std::arch::x86_64::*;

    /// [`super::DotSums::add`] over tiles of `MR` rows of `a` by `NR` rows of `b` (the
    /// remainders one row at a time). A row of tiles reuses its `MR` rows of `a` from the L1
    /// cache (taken the other way round, 6% slower for M2's 16 rows).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a`, `b` and the `m * n` outputs' lanes at `sums` are inside
    /// their allocations.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn add(
        sums: *mut f32,
        (m, n): (usize, usize),
        (a, lda): (*const f32, usize),
        b: *const f32,
        segments: &[Segment],
    ) {
        let mut i = 0;
        while i < m {
            let mr = if m - i >= MR { MR } else { 1 };
            let mut j = 0;
            while j < n {
                let nr = if n - j >= NR { NR } else { 1 };
                // SAFETY: rows `i..i + mr` of `a`, `j..j + nr` of `b` (in each segment)
                // and their outputs are inside the allocations (the caller's contract).
                unsafe {
                    let out = sums.add((i + j * m) * LANES);
                    let a = (a.add(i * lda), lda);
                    match (mr, nr) {
                        (MR, NR) => tile::<MR, NR>(out, m, a, (b, j), segments),
                        (MR, _) => tile::<MR, 1>(out, m, a, (b, j), segments),
                        (_, NR) => tile::<1, NR>(out, m, a, (b, j), segments),
                        _ => tile::<1, 1>(out, m, a, (b, j), segments),
                    }
                }
                j += nr;
            }
            i += mr;
        }
    }

    /// Adds the products of `R` rows of `a` and `C` rows of `b` from row `j` on, over the
    /// segments, to their lane sums at `out` (output `(i, j)`'s at `out + (i + j * m) *
    /// LANES`), a vector at a time, a segment's last one masked.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const R: usize, const C: usize>(
        out: *mut f32,
        m: usize,
        (a, lda): (*const f32, usize),
        (b, j): (*const f32, usize),
        segments: &[Segment],
    ) {
        let at = |i: usize, j: usize| (i + j * m) * LANES;
        // SAFETY (all blocks): the outputs and the segments of each row are inside the
        // allocations (the caller's contract).
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        for (i, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = unsafe { _mm512_loadu_ps(out.add(at(i, j))) };
            }
        }
        for s in segments {
            let (a, b) = unsafe { ((a.add(s.a), lda), (b.add(s.b + j * s.ldb), s.ldb)) };
            let mut p = 0;
            while p + LANES <= s.len {
                unsafe { step(&mut acc, p, 0xffff, a, b) };
                p += LANES;
            }
            if p < s.len {
                let mask = (u32::MAX >> (32 - (s.len - p))) as __mmask16;
                unsafe { step(&mut acc, p, mask, a, b) };
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                unsafe { _mm512_storeu_ps(out.add(at(i, j)), *v) };
            }
        }
    }

    /// One vector of each row, from element `p` on (its lanes past `mask` read as zero), added
    /// to the tile's accumulators.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn step<const R: usize, const C: usize>(
        acc: &mut [[__m512; C]; R],
        p: usize,
        mask: __mmask16,
        (a, lda): (*const f32, usize),
        (b, ldb): (*const f32, usize),
    ) {
        // SAFETY: the rows' `p..` elements under `mask` are inside the allocations (the
        // caller's contract).
        let mut av = [_mm512_setzero_ps(); R];
        for (i, v) in av.iter_mut().enumerate() {
            *v = unsafe { _mm512_maskz_loadu_ps(mask, a.add(i * lda + p)) };
        }
        for j in 0..C {
            let bv = unsafe { _mm512_maskz_loadu_ps(mask, b.add(j * ldb + p)) };
            for (row, &ai) in acc.iter_mut().zip(&av) {
                row[j] = _mm512_fmadd_ps(ai, bv, row[j]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Sums over misaligned and aligned rows, rows 4 KiB apart, ragged segments and tile
        /// remainders equal the products summed in f64, and two calls add up.
        #[test]
        fn dot_sums_equal_the_products_summed_in_f64(
            (m, n) in (1..11usize, 1..15usize),
            lens in proptest::collection::vec(0..70usize, 1..4),
            (skew, lda) in (0..16usize, prop_oneof![Just(1024usize), 70..90usize]),
            seed in any::<u64>(),
        ) {
            let Some(mut dot) = DotSums::new::<f32>(4, 2 * m * n) else {
                eprintln!("no AVX-512 on this CPU: DotSums is not used here");
                return Ok(());
            };
            let total: usize = lens.iter().sum();
            let ldb = total + 5;
            let value = |i: usize| (((i as u64 * 2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0;
            let a: Vec<f32> = (0..skew + m * lda + total).map(value).collect();
            let b: Vec<f32> = (0..n * ldb + 3).map(|i| value(i + 7)).collect();
            let mut segments = vec![];
            let (mut from_a, mut from_b) = (skew, 3);
            for &len in &lens {
                segments.push(Segment { a: from_a, b: from_b, ldb, len });
                from_a += len;
                from_b += len;
            }
            // The block at output m * n: two blocks of one call, then a second call.
            dot.add(&[(0, 0), (m * n, 0)], (m, n), (&a[..], lda), &b[..], &segments);
            dot.add(&[(m * n, 0)], (m, n), (&a[..], lda), &b[..], &segments);
            let got: Vec<f32> = dot.sums();
            for j in 0..n {
                for i in 0..m {
                    let want: f64 = segments
                        .iter()
                        .flat_map(|s| (0..s.len).map(move |p| (s, p)))
                        .map(|(s, p)| a[s.a + i * lda + p] as f64 * b[s.b + j * ldb + p] as f64)
                        .sum();
                    for (block, times) in [(0, 1.0), (m * n, 2.0)] {
                        let g = got[block + i + j * m] as f64;
                        prop_assert!((g - times * want).abs() < 1e-4 * (1.0 + want.abs()),
                            "({i}, {j}): {g} vs {}", times * want);
                    }
                }
            }
        }
    }
}
