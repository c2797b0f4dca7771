//! 2x2 stride-2 max pooling of f32 rows with AVX-512, eight windows a step: two input rows
//! of 16 values hold eight windows' four taps; the windows' left and right taps are split
//! apart by two permutations. The selects and comparisons are those of the generic loops.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// The lanes `0..n` (`n <= 16`).
fn first(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as __mmask16
}

/// The even lanes of a 16-bit mask (a window's left or top-left tap).
const EVEN: u32 = 0x5555;

/// `v`'s lanes 0..8, each twice: `[v0, v0, v1, v1, ..]`.
#[target_feature(enable = "avx512f")]
fn twice(v: __m512) -> __m512 {
    let idx = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    _mm512_permutexvar_ps(idx, v)
}

/// The maxima of the windows over rows `x0`, `x1` into `y` (`x0` and `x1` at least
/// `2 * y.len()` long): the first maximum of each window's taps in order, NaN if one is.
#[target_feature(enable = "avx512f")]
pub(super) fn forward_rows(x0: &[f32], x1: &[f32], y: &mut [MaybeUninit<f32>]) {
    let ow = y.len();
    assert!(x0.len() >= 2 * ow && x1.len() >= 2 * ow, "pool rows");
    let left = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let right = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let high = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15);
    for j in (0..ow).step_by(8) {
        let n = (ow - j).min(8);
        // SAFETY: lanes below `2 n` are elements `2 j .. 2 (j + n)` of the rows (asserted).
        let (r0, r1) = unsafe {
            (
                _mm512_maskz_loadu_ps(first(2 * n), x0.as_ptr().add(2 * j)),
                _mm512_maskz_loadu_ps(first(2 * n), x1.as_ptr().add(2 * j)),
            )
        };
        // Lanes 0..8 the top row's windows, 8..16 the bottom row's.
        let (l, r) = (
            _mm512_permutex2var_ps(r0, left, r1),
            _mm512_permutex2var_ps(r0, right, r1),
        );
        let rows = _mm512_mask_mov_ps(l, _mm512_cmp_ps_mask(r, l, _CMP_GT_OQ), r);
        let bottom = _mm512_permutexvar_ps(high, rows);
        let best = _mm512_mask_mov_ps(rows, _mm512_cmp_ps_mask(bottom, rows, _CMP_GT_OQ), bottom);
        let nan = _mm512_cmp_ps_mask(l, r, _CMP_UNORD_Q) as u32;
        let best = _mm512_mask_mov_ps(
            best,
            ((nan | nan >> 8) & 0xff) as __mmask16,
            _mm512_set1_ps(f32::NAN),
        );
        // SAFETY: lanes below `n` are elements `j .. j + n` of `y`.
        unsafe { _mm512_mask_storeu_ps(y.as_mut_ptr().add(j).cast(), first(n), best) };
    }
}

/// The input gradient of [`forward_rows`] into rows `d0`, `d1` (their first `2 * y.len()`
/// values written; the rows `x0`, `x1` at least as long), from the output `y` and its
/// gradient `dy`: each window's gradient at the first of its taps equal to its maximum (or
/// NaN where it is), zeros at the other taps.
#[target_feature(enable = "avx512f")]
pub(super) fn backward_rows(
    (x0, x1): (&[f32], &[f32]),
    (y, dy): (&[f32], &[f32]),
    (d0, d1): (&mut [MaybeUninit<f32>], &mut [MaybeUninit<f32>]),
) {
    let ow = y.len();
    assert!(
        dy.len() == ow
            && [x0.len(), x1.len(), d0.len(), d1.len()]
                .iter()
                .all(|&l| l >= 2 * ow),
        "pool rows"
    );
    for j in (0..ow).step_by(8) {
        let (n, m) = ((ow - j).min(8), first(2 * (ow - j).min(8)));
        // SAFETY: lanes below `2 n` are elements `2 j .. 2 (j + n)` of the rows, lanes below
        // `n` elements `j .. j + n` of `y` and `dy` (asserted).
        let (r0, r1, y, g) = unsafe {
            (
                _mm512_maskz_loadu_ps(m, x0.as_ptr().add(2 * j)),
                _mm512_maskz_loadu_ps(m, x1.as_ptr().add(2 * j)),
                twice(_mm512_maskz_loadu_ps(first(n), y.as_ptr().add(j))),
                twice(_mm512_maskz_loadu_ps(first(n), dy.as_ptr().add(j))),
            )
        };
        let y_nan = _mm512_cmp_ps_mask(y, y, _CMP_UNORD_Q);
        let hit = |r: __m512| {
            let same = _mm512_cmp_ps_mask(r, y, _CMP_EQ_OQ);
            (same | (_mm512_cmp_ps_mask(r, r, _CMP_UNORD_Q) & y_nan)) as u32
        };
        let (e0, e1) = (hit(r0), hit(r1));
        // Window `k`'s taps are bits `2k`, `2k + 1` of the top row's `e0`, then of `e1`; a
        // row's first hit in each window, then the bottom row's where the top row has none.
        let first_hit = |e: u32| e & EVEN | e & !EVEN & !((e & EVEN) << 1);
        let either = (e0 | e0 >> 1) & EVEN;
        let top = first_hit(e0) as __mmask16;
        let bottom = (first_hit(e1) & !(either | either << 1)) as __mmask16;
        // SAFETY: lanes below `2 n` are elements `2 j .. 2 (j + n)` of `d0` and `d1`.
        unsafe {
            let (d0, d1) = (d0.as_mut_ptr().add(2 * j), d1.as_mut_ptr().add(2 * j));
            _mm512_mask_storeu_ps(d0.cast(), m, _mm512_maskz_mov_ps(top, g));
            _mm512_mask_storeu_ps(d1.cast(), m, _mm512_maskz_mov_ps(bottom, g));
        }
    }
}
