//! The products `U_ξ · V_ξ` and the transforms of 16 tiles at a time, in f32 with AVX-512. The
//! generic loops go a row of tiles at a time, but at `tw` = 4-14 tiles per row (ResNet's and
//! U-Net's small planes) the compiler's loops never reach their vector part. A vector's tiles
//! come from one tile row or, where rows are short, from several ([`Span`]): ResNet-20's 14x14
//! and 7x7 planes, one tile row a vector, filled 7 or 4 of its 16 lanes. Each row of the
//! plane is read with masked loads, so the padding and the odd last column need no copies,
//! and the tiles' stride-2 windows are split into even and odd columns by two permutations.

use std::arch::x86_64::*;

/// Lanes per vector.
pub(super) const L: usize = 16;

/// The lanes `0..n` (`n <= 16`).
#[inline]
pub(super) fn first(n: usize) -> __mmask16 {
    ((1u32 << n.min(L)) - 1) as __mmask16
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

/// Tiles `tx..tx + len` of one tile row in lanes `lane..lane + len` of a vector: a vector
/// holds 16 tiles of a plane, from one tile row or, where rows are short, from several.
/// `rows` are where in the plane the rows the tile row reads or writes start (`None`: a row of
/// padding); `tile` is the index of its first tile among the chunk's tiles of a plane. The
/// same spans serve every plane of a chunk.
#[derive(Clone, Copy)]
pub(super) struct Span<P> {
    pub(super) rows: P,
    pub(super) tx: usize,
    pub(super) lane: usize,
    pub(super) len: usize,
    pub(super) tile: usize,
}

impl<P> Span<P> {
    /// The mask of the pair lanes (two per tile, 32 in all, as two vectors) of this span that
    /// stand for an element inside a `w`-long row, pair lane `p` for element
    /// `start + p - 2 lane`.
    #[inline]
    fn pairs(&self, start: isize, w: usize) -> u32 {
        let base = 2 * self.lane as isize;
        let lo = base + (-start).max(0);
        let hi = (base + 2 * self.len as isize).min(base + w as isize - start);
        if hi <= lo {
            0
        } else {
            (((1u64 << hi) - 1) & !((1u64 << lo) - 1)) as u32
        }
    }
}

/// The lanes the spans fill, which start at lane 0 and follow one another.
pub(super) fn count<P>(spans: &[Span<P>]) -> usize {
    spans.last().map_or(0, |s| s.lane + s.len)
}

/// `acc` (32 pair lanes as two vectors) with `span`'s pair lanes loaded from the `w`-long
/// `row` (pair lane `p` from element `start + p - 2 lane`) where inside it; other lanes keep
/// `acc`'s values (zero where no span loads them).
///
/// # Safety
/// `row` points to `w` readable elements.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_pairs<P>(
    [lo, hi]: [__m512; 2],
    row: *const f32,
    span: &Span<P>,
    start: isize,
    w: usize,
) -> [__m512; 2] {
    let mask = span.pairs(start, w);
    let from = row.wrapping_offset(start - 2 * span.lane as isize);
    // SAFETY: the masks take only the lanes whose element is inside the row (the caller's
    // contract); masked-off lanes are not accessed, and `wrapping_offset` makes no claim
    // about them.
    unsafe {
        [
            _mm512_mask_loadu_ps(lo, mask as __mmask16, from),
            _mm512_mask_loadu_ps(hi, (mask >> 16) as __mmask16, from.wrapping_add(L)),
        ]
    }
}

/// Where a span's row starts: in `plane`, or `zeros` for a row of padding.
#[inline]
fn row_at(plane: *const f32, zeros: *const f32, at: Option<usize>) -> *const f32 {
    at.map_or(zeros, |at| plane.wrapping_add(at))
}

/// `Bᵀ d B` of up to 16 tiles of `plane`: each span's `rows` are the four input rows of its
/// tile row, from row `2 ty - 1` on (`w` long; `zeros` for rows of padding); into lanes
/// `0..count(spans)` of the 16 rows `out + ξ stride`.
///
/// # Safety
/// The CPU has AVX-512F; `plane` at each span's row offsets and `zeros` have `w` readable
/// elements, each output row `count(spans)` writable ones; the spans' tiles are inside their
/// rows (`2 tx < w + 1`).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn input_tiles(
    (plane, zeros): (*const f32, *const f32),
    spans: &[Span<[Option<usize>; 4]>],
    w: usize,
    out: *mut f32,
    stride: usize,
) {
    // Per input row, tile `tx`'s columns `2 tx - 1, 2 tx` (the first two vectors, as pairs)
    // and `2 tx + 1, 2 tx + 2` (the other two).
    let mut d = [[_mm512_setzero_ps(); 4]; 4];
    for span in spans {
        let at = 2 * span.tx as isize - 1;
        for (d, &row) in d.iter_mut().zip(&span.rows) {
            let row = row_at(plane, zeros, row);
            // SAFETY: `row` has `w` elements (the caller's contract).
            unsafe {
                [d[0], d[1]] = load_pairs([d[0], d[1]], row, span, at, w);
                [d[2], d[3]] = load_pairs([d[2], d[3]], row, span, at + 2, w);
            }
        }
    }
    let [r0, r1, r2, r3] = d;
    let mask = first(count(spans));
    // `Bᵀ d`: rows 0 - 2, 1 + 2, 2 - 1, 1 - 3.
    let lines = [sub4(r0, r2), add4(r1, r2), sub4(r2, r1), sub4(r1, r3)];
    for (i, [lo, hi, lo2, hi2]) in lines.into_iter().enumerate() {
        let ((e, o), (e1, o1)) = (split(lo, hi), split(lo2, hi2));
        // `(Bᵀ d) B`: columns 0 - 2, 1 + 2, 2 - 1, 1 - 3.
        let cols = [sub(e, e1), add(o, e1), sub(e1, o), sub(o, o1)];
        for (j, v) in cols.into_iter().enumerate() {
            // SAFETY: output row `4 i + j` has `count(spans)` elements; the mask stops there.
            unsafe { _mm512_mask_storeu_ps(out.add((4 * i + j) * stride), mask, v) };
        }
    }
}

/// `Aᵀ M A` of up to 16 tiles: `m` the 16 rows `m + ξ stride` (lanes `0..count(spans)`), into
/// each span's two output rows of `plane` (`w` long; the second where the plane has it).
///
/// # Safety
/// The CPU has AVX-512F; the rows of `m` have `count(spans)` readable elements, `plane` at each
/// span's row offsets `w` writable ones; the spans' tiles are inside their rows (`2 tx < w`).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn output_tiles(
    m: *const f32,
    stride: usize,
    plane: *mut f32,
    spans: &[Span<[Option<usize>; 2]>],
    w: usize,
) {
    let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let mask = first(count(spans));
    let mut q = [_mm512_setzero_ps(); 16];
    for (xi, q) in q.iter_mut().enumerate() {
        // SAFETY: each row of `m` has `count(spans)` elements; the mask stops there.
        *q = unsafe { _mm512_maskz_loadu_ps(mask, m.add(xi * stride)) };
    }
    // `Aᵀ M`: rows 0 + 1 + 2 and 1 - 2 - 3 of each column.
    let (mut s, mut d) = ([_mm512_setzero_ps(); 4], [_mm512_setzero_ps(); 4]);
    for j in 0..4 {
        s[j] = add(add(q[j], q[4 + j]), q[8 + j]);
        d[j] = sub(sub(q[4 + j], q[8 + j]), q[12 + j]);
    }
    for (i, r) in [s, d].into_iter().enumerate() {
        // `(Aᵀ M) A`: columns 0 + 1 + 2 (even outputs) and 1 - 2 - 3 (odd ones), as pairs.
        let even = add(add(r[0], r[1]), r[2]);
        let odd = sub(sub(r[1], r[2]), r[3]);
        let pairs = [
            _mm512_permutex2var_ps(even, lo, odd),
            _mm512_permutex2var_ps(even, hi, odd),
        ];
        for span in spans {
            let Some(at) = span.rows[i] else { continue };
            let row = plane.wrapping_add(at);
            let start = 2 * span.tx as isize;
            let mask = span.pairs(start, w);
            let to = row.wrapping_offset(start - 2 * span.lane as isize);
            // SAFETY: the masks take only the pair lanes whose element is inside the row,
            // which has `w` elements (the caller's contract).
            unsafe {
                _mm512_mask_storeu_ps(to, mask as __mmask16, pairs[0]);
                _mm512_mask_storeu_ps(to.wrapping_add(L), (mask >> 16) as __mmask16, pairs[1]);
            }
        }
    }
}

/// `A dy Aᵀ` of up to 16 tiles of `plane` (`dy`'s): each span's `rows` are its tile row's two
/// rows (`w` long; `zeros` where the plane has no second row), into lanes `0..count(spans)`
/// of the 16 rows `out + ξ stride`.
///
/// # Safety
/// The CPU has AVX-512F; `plane` at each span's row offsets and `zeros` have `w` readable
/// elements, each output row `count(spans)` writable ones; the spans' tiles are inside their
/// rows (`2 tx < w`).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn grad_tiles(
    (plane, zeros): (*const f32, *const f32),
    spans: &[Span<[Option<usize>; 2]>],
    w: usize,
    out: *mut f32,
    stride: usize,
) {
    let zero = _mm512_setzero_ps();
    let (mut a, mut b) = ([zero; 2], [zero; 2]);
    for span in spans {
        let at = 2 * span.tx as isize;
        // SAFETY: the rows have `w` elements (the caller's contract).
        unsafe {
            a = load_pairs(a, row_at(plane, zeros, span.rows[0]), span, at, w);
            b = load_pairs(b, row_at(plane, zeros, span.rows[1]), span, at, w);
        }
    }
    let mask = first(count(spans));
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
            // SAFETY: output row `4 i + j` has `count(spans)` elements; the mask stops there.
            unsafe { _mm512_mask_storeu_ps(out.add((4 * i + j) * stride), mask, v) };
        }
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
fn add4(a: [__m512; 4], b: [__m512; 4]) -> [__m512; 4] {
    [
        add(a[0], b[0]),
        add(a[1], b[1]),
        add(a[2], b[2]),
        add(a[3], b[3]),
    ]
}

#[target_feature(enable = "avx512f")]
#[inline]
fn sub4(a: [__m512; 4], b: [__m512; 4]) -> [__m512; 4] {
    [
        sub(a[0], b[0]),
        sub(a[1], b[1]),
        sub(a[2], b[2]),
        sub(a[3], b[3]),
    ]
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
