//! F(4x4, 2x2)'s transforms and the copies to and from channels-last order, 16 channels at a
//! time in f32 with AVX-512. The generic loops, compiled for the crate's baseline x86-64 (4
//! lanes) and partly left scalar by the compiler, took longer than the products.

use std::arch::x86_64::*;

use super::super::avx512::{first, L};

/// `Bᵀ x`: `(2 (x0 - x2) - x1 + x3, 2 x1 + x2 - x3, 3 x2 - 2 x1 - x3, x3 - x1,
/// 2 (x1 - x3) - x2 + x4)`.
#[target_feature(enable = "avx512f")]
#[inline]
fn bt([x0, x1, x2, x3, x4]: [__m512; 5]) -> [__m512; 5] {
    let (two, three) = (_mm512_set1_ps(2.0), _mm512_set1_ps(3.0));
    let d31 = _mm512_sub_ps(x3, x1);
    [
        _mm512_fmadd_ps(two, _mm512_sub_ps(x0, x2), d31),
        _mm512_fmadd_ps(two, x1, _mm512_sub_ps(x2, x3)),
        _mm512_fmsub_ps(three, x2, _mm512_fmadd_ps(two, x1, x3)),
        d31,
        _mm512_fmadd_ps(two, _mm512_sub_ps(x1, x3), _mm512_sub_ps(x4, x2)),
    ]
}

/// `Aᵀ m`: `(m0 + m1 + m2 + m3, m1 - m2 + 2 m3, m1 + m2 + 4 m3, m1 - m2 + 8 m3 + m4)`.
#[target_feature(enable = "avx512f")]
#[inline]
fn at([m0, m1, m2, m3, m4]: [__m512; 5]) -> [__m512; 4] {
    let (s12, d12) = (_mm512_add_ps(m1, m2), _mm512_sub_ps(m1, m2));
    [
        _mm512_add_ps(_mm512_add_ps(m0, s12), m3),
        _mm512_fmadd_ps(_mm512_set1_ps(2.0), m3, d12),
        _mm512_fmadd_ps(_mm512_set1_ps(4.0), m3, s12),
        _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0), m3, d12), m4),
    ]
}

/// `Bᵀ d B` of one tile for `n` channels: `d[5 u + v]` points to the patch's row `u`, column
/// `v` (`n` channels each); position `ξ` goes to `out + at[ξ]`.
///
/// # Safety
/// The CPU has AVX-512F; each `d` has `n` readable elements, each `out + at[ξ]` `n` writable
/// ones.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn input_tile(d: &[*const f32; 25], n: usize, out: *mut f32, at: &[usize; 25]) {
    let mut k = 0;
    while k < n {
        let mask = first(n - k);
        let mut t = [[_mm512_setzero_ps(); 5]; 5];
        for v in 0..5 {
            let mut x = [_mm512_setzero_ps(); 5];
            for (u, x) in x.iter_mut().enumerate() {
                // SAFETY: lanes `k..n` of the patch's row (the caller's contract).
                *x = unsafe { _mm512_maskz_loadu_ps(mask, d[5 * u + v].add(k)) };
            }
            for (a, r) in bt(x).into_iter().enumerate() {
                t[a][v] = r;
            }
        }
        for (a, row) in t.into_iter().enumerate() {
            for (b, r) in bt(row).into_iter().enumerate() {
                // SAFETY: lanes `k..n` of position `5 a + b`'s row (the caller's contract).
                unsafe { _mm512_mask_storeu_ps(out.add(at[5 * a + b] + k), mask, r) };
            }
        }
        k += L;
    }
}

/// `Aᵀ M A` of one tile for `n` channels: `m[ξ]` points to position `ξ`'s row; output
/// `(i, j)` goes to `out + (4 i + j) ld`.
///
/// # Safety
/// The CPU has AVX-512F; each `m` has `n` readable elements, `out` 16 rows of `n` writable
/// ones, `ld` apart.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn output_tile(m: &[*const f32; 25], n: usize, out: *mut f32, ld: usize) {
    let mut k = 0;
    while k < n {
        let mask = first(n - k);
        let mut t = [[_mm512_setzero_ps(); 5]; 4];
        for b in 0..5 {
            let mut x = [_mm512_setzero_ps(); 5];
            for (a, x) in x.iter_mut().enumerate() {
                // SAFETY: lanes `k..n` of position `5 a + b`'s row (the caller's contract).
                *x = unsafe { _mm512_maskz_loadu_ps(mask, m[5 * a + b].add(k)) };
            }
            for (i, r) in at(x).into_iter().enumerate() {
                t[i][b] = r;
            }
        }
        for (i, row) in t.into_iter().enumerate() {
            for (j, r) in at(row).into_iter().enumerate() {
                // SAFETY: lanes `k..n` of output row `4 i + j` (the caller's contract).
                unsafe { _mm512_mask_storeu_ps(out.add((4 * i + j) * ld + k), mask, r) };
            }
        }
        k += L;
    }
}

/// `ch` planes of `[h, w]` at `src` into `dst`'s rows of `ch` channels, padded by one: position
/// `(r, q)` at `dst + ((r + 1) wp + q + 1) ch`. Each row of 16 channels is one gather from 16 planes
/// (as fast, measured, as loading 16 rows of 16 positions and transposing them in registers).
///
/// # Safety
/// The CPU has AVX-512F; `src` holds `ch h w` readable elements, `dst` every row written
/// (`h wp + w + 1` rows of `ch`); `ch h w < 2^31`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn to_channels_last(
    src: *const f32,
    (ch, h, w): (usize, usize, usize),
    dst: *mut f32,
    wp: usize,
) {
    let lanes = strides((h * w) as i32);
    for r in 0..h {
        for q in 0..w {
            let to = ((r + 1) * wp + q + 1) * ch;
            for c in (0..ch).step_by(L) {
                let mask = first(ch - c);
                // SAFETY: the masked lanes read channels `c..ch` at `(r, q)`, the store
                // writes that row's lanes (the caller's contract).
                unsafe {
                    let from = src.add((c * h + r) * w + q);
                    let v = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, lanes, from);
                    _mm512_mask_storeu_ps(dst.add(to + c), mask, v);
                }
            }
        }
    }
}

/// `src`'s `len` rows of `ch` channels into `ch` planes of `len` at `dst`, 16 positions of
/// a plane per gather.
///
/// # Safety
/// The CPU has AVX-512F; `src` holds `len ch` readable elements, `dst` `ch len` writable ones;
/// `len ch < 2^31`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn from_channels_last(src: *const f32, (len, ch): (usize, usize), dst: *mut f32) {
    let lanes = strides(ch as i32);
    for c in 0..ch {
        for p in (0..len).step_by(L) {
            let mask = first(len - p);
            // SAFETY: the masked lanes read positions `p..len` of channel `c` and write them
            // to its plane (the caller's contract).
            unsafe {
                let from = src.add(p * ch + c);
                let v = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, lanes, from);
                _mm512_mask_storeu_ps(dst.add(c * len + p), mask, v);
            }
        }
    }
}

/// The offsets `0, stride, .., 15 stride` of a gather's lanes.
#[target_feature(enable = "avx512f")]
#[inline]
fn strides(stride: i32) -> __m512i {
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    _mm512_mullo_epi32(lanes, _mm512_set1_epi32(stride))
}
