//! The products `U_ξ · V_ξ` and the transforms of one row of tiles, in f32 with AVX-512, 16
//! tiles per vector. The generic loops go a row of tiles at a time too, but at `tw` = 4-14
//! tiles per row (ResNet's and U-Net's small planes) the compiler's loops never reach their
//! vector part. Each row of the plane is read with masked loads, so the padding and the odd
//! last column need no copies, and the tiles' stride-2 windows are split into even and odd
//! columns by two permutations.

use std::arch::x86_64::*;

/// Lanes per vector.
const L: usize = 16;

/// The lanes `0..n` (`n <= 16`).
#[inline]
fn first(n: usize) -> __mmask16 {
    ((1u32 << n.min(L)) - 1) as __mmask16
}

/// The mask of `lanes` lanes read from element `start` (which may be negative) of a row of
/// `w`: those inside the row.
#[inline]
fn inside(start: isize, lanes: usize, w: usize) -> __mmask16 {
    let lo = (-start).clamp(0, lanes as isize) as usize;
    let hi = (w as isize - start).clamp(0, lanes as isize) as usize;
    if hi <= lo {
        0
    } else {
        first(hi) & !first(lo)
    }
}

/// `lanes` elements of `row` from `start` on, zero outside `0..w`.
///
/// # Safety
/// `row` points to `w` readable elements.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load(row: *const f32, start: isize, lanes: usize, w: usize) -> __m512 {
    // SAFETY: only the lanes inside `0..w` are read (the caller's contract); masked-off lanes
    // are not accessed, and `wrapping_offset` makes no claim about them.
    unsafe { _mm512_maskz_loadu_ps(inside(start, lanes, w), row.wrapping_offset(start)) }
}

/// The even and the odd lanes of `lo:hi` (32 values).
#[target_feature(enable = "avx512f")]
#[inline]
fn split(lo: __m512, hi: __m512) -> (__m512, __m512) {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    (
        _mm512_permutex2var_ps(lo, even, hi),
        _mm512_permutex2var_ps(lo, odd, hi),
    )
}

/// Lanes `1..16` of `v` followed by lane 0 of `next`.
#[target_feature(enable = "avx512f")]
#[inline]
fn shift(v: __m512, next: __m512) -> __m512 {
    let (v, next) = (_mm512_castps_si512(v), _mm512_castps_si512(next));
    _mm512_castsi512_ps(_mm512_alignr_epi32(next, v, 1))
}

/// `Bᵀ d B` of one row of `tw` tiles: `d` the four input rows (`w` long; zeros for rows of
/// padding) from row `2 ty - 1` on, into the 16 rows `out + ξ stride` (`tw` each).
///
/// # Safety
/// The CPU has AVX-512F; each `d[r]` points to `w` readable elements, each output row to `tw`
/// writable ones, and `tw = ceil(w / 2)`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn input_row(
    d: [*const f32; 4],
    w: usize,
    tw: usize,
    out: *mut f32,
    stride: usize,
) {
    let mut tx = 0;
    while tx < tw {
        let mask = first(tw - tx);
        // Tile `tx + k` reads columns `2 (tx + k) - 1 ..= 2 (tx + k) + 2`: elements `2k..2k + 4`
        // of the 34 from column `2 tx - 1` on, loaded as 16 + 16 + 2.
        let at = 2 * tx as isize - 1;
        let mut parts = [[_mm512_setzero_ps(); 3]; 4];
        for (p, &row) in parts.iter_mut().zip(&d) {
            // SAFETY: `row` has `w` elements (the caller's contract).
            *p = unsafe {
                [
                    load(row, at, L, w),
                    load(row, at + 16, L, w),
                    load(row, at + 32, 2, w),
                ]
            };
        }
        let [r0, r1, r2, r3] = parts;
        // `Bᵀ d`: rows 0 - 2, 1 + 2, 2 - 1, 1 - 3.
        let lines = [sub3(r0, r2), add3(r1, r2), sub3(r2, r1), sub3(r1, r3)];
        for (i, [lo, hi, tail]) in lines.into_iter().enumerate() {
            let (e, o) = split(lo, hi);
            let (e1, o1) = (shift(e, tail), shift(o, shift(tail, tail)));
            // `(Bᵀ d) B`: columns 0 - 2, 1 + 2, 2 - 1, 1 - 3.
            let cols = [sub(e, e1), add(o, e1), sub(e1, o), sub(o, o1)];
            for (j, v) in cols.into_iter().enumerate() {
                // SAFETY: output row `4 i + j` has `tw` elements; the mask stops at `tw`.
                unsafe { _mm512_mask_storeu_ps(out.add((4 * i + j) * stride + tx), mask, v) };
            }
        }
        tx += L;
    }
}

/// `Aᵀ M A` of one row of `tw` tiles: `m` the 16 rows `m + ξ stride` (`tw` each), into the
/// output rows `top` and, where the plane has it, `bottom` (`w` long).
///
/// # Safety
/// The CPU has AVX-512F; the rows of `m` have `tw` readable elements, `top` and `bottom` `w`
/// writable ones, and `tw = ceil(w / 2)`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn output_row(
    m: *const f32,
    stride: usize,
    tw: usize,
    w: usize,
    top: *mut f32,
    bottom: Option<*mut f32>,
) {
    let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let mut tx = 0;
    while tx < tw {
        let mask = first(tw - tx);
        let mut q = [_mm512_setzero_ps(); 16];
        for (xi, q) in q.iter_mut().enumerate() {
            // SAFETY: each row of `m` has `tw` elements; the mask stops at `tw`.
            *q = unsafe { _mm512_maskz_loadu_ps(mask, m.add(xi * stride + tx)) };
        }
        // `Aᵀ M`: rows 0 + 1 + 2 and 1 - 2 - 3 of each column.
        let (mut s, mut d) = ([_mm512_setzero_ps(); 4], [_mm512_setzero_ps(); 4]);
        for j in 0..4 {
            s[j] = add(add(q[j], q[4 + j]), q[8 + j]);
            d[j] = sub(sub(q[4 + j], q[8 + j]), q[12 + j]);
        }
        let x = 2 * tx;
        for (r, row) in [(s, Some(top)), (d, bottom)] {
            let Some(row) = row else { continue };
            // `(Aᵀ M) A`: columns 0 + 1 + 2 (even outputs) and 1 - 2 - 3 (odd ones).
            let even = add(add(r[0], r[1]), r[2]);
            let odd = sub(sub(r[1], r[2]), r[3]);
            let (a, b) = (
                _mm512_permutex2var_ps(even, lo, odd),
                _mm512_permutex2var_ps(even, hi, odd),
            );
            // SAFETY: `row` has `w` elements; the masks stop at `w`.
            unsafe {
                _mm512_mask_storeu_ps(row.add(x), inside(x as isize, L, w), a);
                _mm512_mask_storeu_ps(row.add(x + L), inside((x + L) as isize, L, w), b);
            }
        }
        tx += L;
    }
}

/// `A dy Aᵀ` of one row of `tw` tiles: `a` and `b` the tile row's two rows of `dy` (`w`
/// long; zeros where the plane has no second row), into the 16 rows `out + ξ stride`.
///
/// # Safety
/// The CPU has AVX-512F; `a` and `b` point to `w` readable elements, each output row to `tw`
/// writable ones, and `tw = ceil(w / 2)`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn grad_row(
    a: *const f32,
    b: *const f32,
    w: usize,
    tw: usize,
    out: *mut f32,
    stride: usize,
) {
    let mut tx = 0;
    while tx < tw {
        let mask = first(tw - tx);
        let x = 2 * tx as isize;
        // SAFETY: `a` and `b` have `w` elements (the caller's contract).
        let (a, b) = unsafe {
            (
                [load(a, x, L, w), load(a, x + 16, L, w)],
                [load(b, x, L, w), load(b, x + 16, L, w)],
            )
        };
        let zero = _mm512_setzero_ps();
        // `A dy`: rows a, a + b, a - b, -b.
        let lines = [
            a,
            [add(a[0], b[0]), add(a[1], b[1])],
            [sub(a[0], b[0]), sub(a[1], b[1])],
            [sub(zero, b[0]), sub(zero, b[1])],
        ];
        for (i, [lo, hi]) in lines.into_iter().enumerate() {
            let (e, o) = split(lo, hi);
            let cols = [e, add(e, o), sub(e, o), sub(zero, o)];
            for (j, v) in cols.into_iter().enumerate() {
                // SAFETY: output row `4 i + j` has `tw` elements; the mask stops at `tw`.
                unsafe { _mm512_mask_storeu_ps(out.add((4 * i + j) * stride + tx), mask, v) };
            }
        }
        tx += L;
    }
}

#[target_feature(enable = "avx512f")]
#[inline]
fn add(a: __m512, b: __m512) -> __m512 {
    _mm512_add_ps(a, b)
}

#[target_feature(enable = "avx512f")]
#[inline]
fn sub(a: __m512, b: __m512) -> __m512 {
    _mm512_sub_ps(a, b)
}

#[target_feature(enable = "avx512f")]
#[inline]
fn add3(a: [__m512; 3], b: [__m512; 3]) -> [__m512; 3] {
    [add(a[0], b[0]), add(a[1], b[1]), add(a[2], b[2])]
}

#[target_feature(enable = "avx512f")]
#[inline]
fn sub3(a: [__m512; 3], b: [__m512; 3]) -> [__m512; 3] {
    [sub(a[0], b[0]), sub(a[1], b[1]), sub(a[2], b[2])]
}

/// Rows of output per register block of [`product`].
const R: usize = 4;
/// Vectors of tiles per register block of [`product`].
const C: usize = 4;

/// `M = U · V` for one position `ξ`: `u` is `[o, c]` (row-major), `v` and `m` are `[c, tiles]`
/// and `[o, tiles]` (rows `tiles` apart), in register blocks of 4 rows by 64 tiles: per input
/// channel 4 loads of `V` and 4 broadcasts of `U` feed 16 multiply-adds, with nothing packed.
/// Against the `gemm` crate, ResNet-20 steps ran 8-10% faster and U-Net's the same; blocks of
/// 8 rows by 48 tiles made U-Net 3% slower.
///
/// # Safety
/// The CPU has AVX-512F; `u` holds `o c` readable elements, `v` `c tiles`, `m` `o tiles`
/// writable ones.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn product(
    u: *const f32,
    (o, c): (usize, usize),
    v: *const f32,
    tiles: usize,
    m: *mut f32,
) {
    let mut r = 0;
    while r < o {
        let rows = if o - r >= R { R } else { 1 };
        let mut t = 0;
        while t < tiles {
            let left = tiles - t;
            // SAFETY (all arms): rows `r..r + rows` and tiles `t..` under the masks are inside
            // the operands (the caller's contract).
            unsafe {
                let (u, v, m) = (u.add(r * c), v.add(t), m.add(r * tiles + t));
                let at = (u, c, v, m, tiles);
                match (rows, left >= C * L) {
                    (R, true) => block::<R, C>(at, 0xffff),
                    (R, false) => block::<R, 1>(at, first(left)),
                    (_, true) => block::<1, C>(at, 0xffff),
                    _ => block::<1, 1>(at, first(left)),
                }
            }
            t += if left >= C * L { C * L } else { L };
        }
        r += rows;
    }
}

/// One register block of [`product`]: `RB` rows by `CB` vectors of tiles, the last vector's
/// lanes under `last`.
///
/// # Safety
/// As [`product`], for the block's rows and tiles.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn block<const RB: usize, const CB: usize>(
    (u, c, v, m, tiles): (*const f32, usize, *const f32, *mut f32, usize),
    last: __mmask16,
) {
    let mut acc = [[_mm512_setzero_ps(); CB]; RB];
    let mask = |j: usize| if j + 1 == CB { last } else { 0xffff };
    for k in 0..c {
        let mut vk = [_mm512_setzero_ps(); CB];
        for (j, vj) in vk.iter_mut().enumerate() {
            // SAFETY: row `k`'s tiles under the mask are inside `v` (the caller's contract).
            *vj = unsafe { _mm512_maskz_loadu_ps(mask(j), v.add(k * tiles + j * L)) };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: `u`'s row `i` has `c` elements.
            let b = _mm512_set1_ps(unsafe { *u.add(i * c + k) });
            for (a, &vj) in row.iter_mut().zip(&vk) {
                *a = _mm512_fmadd_ps(b, vj, *a);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, &a) in row.iter().enumerate() {
            // SAFETY: row `i`'s tiles under the mask are inside `m` (the caller's contract).
            unsafe { _mm512_mask_storeu_ps(m.add(i * tiles + j * L), mask(j), a) };
        }
    }
}
