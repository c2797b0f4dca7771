//! Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016) for 3x3 convolutions at stride 1 with "same" padding:
//! most of ResNet-20's and U-Net's work.
//!
//! Each 2x2 block of outputs (a tile) is `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, `d` the 4x4 input patch
//! around it and `g` the 3x3 kernel: 16 products per tile and pair of channels instead of 36.
//! Summed over input channels, the element-wise product is 16 matrix products, one per
//! position `ξ` of the transformed 4x4 tile, `M_ξ [o, tiles] = U_ξ [o, c] · V_ξ [c, tiles]`,
//! on chunks of tiles that stay in the cache. In f32 on a CPU with AVX-512 the transforms and
//! these products go by [`avx512`]'s kernels; otherwise (f64) by generic loops and the `gemm`
//! crate.
//!
//! The input gradient is the same convolution of `dy` with the kernel flipped
//! (`ConvShape::data_as_forward`). The weight gradient is the forward product's adjoint through
//! the same transforms: `dU_ξ = dM_ξ · V_ξᵀ` (by the `gemm` crate) with `dM = A dy Aᵀ`, then
//! `dg = Gᵀ dU G`. In exact arithmetic all three equal the direct sums; in floating point they
//! differ by rounding only (the transforms' coefficients are 0, ±1 and ±1/2).
//!
//! [`stride2`] computes 4x4 convolutions at stride 2 by F(4x4, 2x2) on the input's phases.

use std::mem::MaybeUninit;

use candle_core::DType;

use super::{
    conv::ConvShape, fast, matmul, matmul_col_major, output, par_chunks_mut_with, sum_over_batch,
    Float,
};

#[cfg(target_arch = "x86_64")]
mod avx512;
pub(super) mod stride2;
#[cfg(target_arch = "x86_64")]
use avx512::Span;

/// Positions of a transformed 4x4 tile.
const XI: usize = 16;

/// The values a chunk's transformed input and products take at most (`16 (c + o)` per tile),
/// where a chunk has more than [`MIN_CHUNK_TILES`]: they are written, then read back, so they
/// should stay in the cache. 2^17 (512 KiB of f32) gives ResNet-20's 16-channel layers 256
/// tiles; on ResNet-20 and U-Net steps, 2^16 was 8% slower, 2^19 4-14%.
const CHUNK_VALUES: usize = 1 << 17;

/// The fewest tiles a chunk covers (where the plane and batch have them): by [`CHUNK_VALUES`]
/// alone U-Net's layers of 128 and 256 channels get 32 and 16 tiles, and its steps ran 8-10%
/// slower; with at least 64 tiles, the same as with 128.
const MIN_CHUNK_TILES: usize = 128;

/// The most tiles a chunk covers.
const MAX_CHUNK_TILES: usize = 1024;

/// The fewest input and output channels: the workloads' 3x3 layers have 16 or more, but for
/// their stems (one input channel, whose columns are only 9 rows) and below 16 Winograd was
/// not measured.
const MIN_CHANNELS: usize = 16;

/// The distance between two positions' matrices of `channels` rows of `tiles` in `V` or
/// `M`: one cache line more than they take, so that the 16 rows a transform writes at once
/// are not a multiple of 4 KiB apart (which would put them in the same sets of the cache).
fn xi_len(channels: usize, tiles: usize) -> usize {
    channels * tiles + 16
}

/// Whether Winograd's F(2x2, 3x3) computes the convolution: a 3x3 kernel at stride 1, padding
/// 1 and no dilation (so the output plane is the input's), one group, at least
/// [`MIN_CHANNELS`] channels in and out; in f32 where the transforms have their AVX-512 row
/// kernels (without them, ResNet-20's 7x7 to 28x28 planes ran 20% slower than by columns),
/// always in f64 (whose generic loops the tests check against candle).
pub(super) fn applies<T: Float>(s: &ConvShape) -> bool {
    s.kh == 3
        && s.kw == 3
        && s.stride == [1, 1]
        && s.padding == [1, 1]
        && s.dilation == [1, 1]
        && s.groups == 1
        && (s.oh, s.ow) == (s.h, s.w)
        && s.c >= MIN_CHANNELS
        && s.o >= MIN_CHANNELS
        && (T::DTYPE == DType::F64 || fast::<T>())
}

/// How a layer's tiles are cut into chunks: `tw` tiles per row and `th` rows of them per
/// plane; a chunk is `rows` tile rows of one sample or, for small planes, whole planes of
/// `samples` samples.
#[derive(Debug, Clone, Copy)]
struct Plan {
    th: usize,
    tw: usize,
    samples: usize,
    rows: usize,
}

/// One chunk: samples `first..first + count`, tile rows `ty.0..ty.1` of each.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    first: usize,
    count: usize,
    ty: (usize, usize),
}

impl Plan {
    fn new(s: &ConvShape) -> Self {
        let (th, tw) = (s.h.div_ceil(2), s.w.div_ceil(2));
        let chunk_tiles =
            (CHUNK_VALUES / (XI * (s.c + s.o))).clamp(MIN_CHUNK_TILES, MAX_CHUNK_TILES);
        let (samples, rows) = if th * tw >= chunk_tiles {
            (1, (chunk_tiles / tw).clamp(1, th))
        } else {
            ((chunk_tiles / (th * tw).max(1)).clamp(1, s.n.max(1)), th)
        };
        Self {
            th,
            tw,
            samples,
            rows,
        }
    }

    /// The most tiles a chunk holds.
    fn tiles(&self) -> usize {
        self.samples * self.rows * self.tw
    }

    /// The chunks of samples `start..end`, in blocks of `samples`.
    fn chunks(&self, (start, end): (usize, usize)) -> impl Iterator<Item = Chunk> + '_ {
        (start..end).step_by(self.samples).flat_map(move |first| {
            let count = (end - first).min(self.samples);
            (0..self.th).step_by(self.rows).map(move |y0| Chunk {
                first,
                count,
                ty: (y0, (y0 + self.rows).min(self.th)),
            })
        })
    }
}

impl Chunk {
    fn rows(&self) -> usize {
        self.ty.1 - self.ty.0
    }
    fn tiles(&self, tw: usize) -> usize {
        self.count * self.rows() * tw
    }
    /// The chunk's index of the first tile of row `ty` of its `j`-th sample.
    fn at(&self, j: usize, ty: usize, tw: usize) -> usize {
        (j * self.rows() + ty - self.ty.0) * tw
    }
}

/// One thread's scratch: `V` (`[16, c, tiles]`), `M` (`[16, o, tiles]`), each position's
/// matrix [`xi_len`] from the next, and the generic transforms' lines (four of `2 tw + 2`, or
/// eight of `tw` and two more).
struct Scratch<T> {
    v: Vec<T>,
    m: Vec<T>,
    lines: Vec<T>,
}

impl<T: Float> Scratch<T> {
    fn new(s: &ConvShape, plan: &Plan) -> Self {
        let tiles = plan.tiles();
        Self {
            v: vec![T::ZERO; XI * xi_len(s.c, tiles)],
            m: vec![T::ZERO; XI * xi_len(s.o, tiles)],
            lines: vec![T::ZERO; 10 * plan.tw + 8],
        }
    }
}

/// `U [16, o, c]` from `w [o, c, 3, 3]`: `U_ξ[oc, ic] = (G g Gᵀ)[ξ]` of kernel `g = w[oc, ic]`.
fn kernel_transform<T: Float>(s: &ConvShape, w: &[T]) -> Vec<T> {
    let (o, c) = (s.o, s.c);
    let mut u = vec![T::ZERO; XI * o * c];
    for (pair, g) in w.chunks_exact(9).enumerate() {
        // `G g` (4x3), then `(G g) Gᵀ` a row at a time.
        let col = |b: usize| by_g([g[b], g[3 + b], g[6 + b]]);
        let gg = [col(0), col(1), col(2)];
        for i in 0..4 {
            for (j, v) in by_g([gg[0][i], gg[1][i], gg[2][i]]).into_iter().enumerate() {
                u[(i * 4 + j) * o * c + pair] = v;
            }
        }
    }
    u
}

/// `G x`: `(x0, (x0 + x1 + x2) / 2, (x0 - x1 + x2) / 2, x2)`.
fn by_g<T: Float>([x0, x1, x2]: [T; 3]) -> [T; 4] {
    let half = T::from_f64(0.5);
    [x0, (x0 + x1 + x2) * half, (x0 - x1 + x2) * half, x2]
}

/// `Gᵀ x`: `(x0 + (x1 + x2) / 2, (x1 - x2) / 2, (x1 + x2) / 2 + x3)`.
fn by_gt<T: Float>([x0, x1, x2, x3]: [T; 4]) -> [T; 3] {
    let half = T::from_f64(0.5);
    [
        x0 + (x1 + x2) * half,
        (x1 - x2) * half,
        (x1 + x2) * half + x3,
    ]
}

/// The transformed input patches of a chunk's tiles into `v` (`[16, c, tiles]`): for each
/// tile row, its four input rows are combined whole (`Bᵀ d`), then each combination is
/// transformed along its length (`(Bᵀ d) B`, four values per tile). `lines` holds the four
/// combinations between a zero on the left and zeros on the right: the padding.
fn transform_input<T: Float>(
    s: &ConvShape,
    tw: usize,
    x: &[T],
    ch: Chunk,
    v: &mut [T],
    lines: &mut [T],
) {
    let (c, h, w) = (s.c, s.h, s.w);
    #[cfg(target_arch = "x86_64")]
    if fast::<T>() {
        let rows = |ty| input_rows((h, w), ty);
        return rows_to_tiles(avx512::input_tiles, (h, w), (x, c), (ch, tw), rows, v);
    }
    let (tiles, zeros) = (ch.tiles(tw), vec![T::ZERO; w]);
    let len = 2 * tw + 2;
    let lines = &mut lines[..4 * len];
    lines.fill(T::ZERO);
    for j in 0..ch.count {
        for ic in 0..c {
            let plane = &x[((ch.first + j) * c + ic) * h * w..][..h * w];
            for ty in ch.ty.0..ch.ty.1 {
                let [d0, d1, d2, d3] = plane_rows(plane, &zeros, input_rows((h, w), ty));
                let at = ch.at(j, ty, tw);
                let [l0, l1, l2, l3] = quarters(lines, len);
                combine(&mut l0[1..=w], d0, d2, |a, b| a - b);
                combine(&mut l1[1..=w], d1, d2, |a, b| a + b);
                combine(&mut l2[1..=w], d2, d1, |a, b| a - b);
                combine(&mut l3[1..=w], d1, d3, |a, b| a - b);
                for (i, line) in lines.chunks_exact(len).enumerate() {
                    let first = 4 * i * xi_len(c, tiles) + ic * tiles + at;
                    let [v0, v1, v2, v3] = rows_of(v, first, xi_len(c, tiles), tw);
                    columns_b(line, [v0, v1, v2, v3]);
                }
            }
        }
    }
}

/// Where in a `[h, w]` plane tile row `ty`'s four input rows (`2 ty - 1 ..= 2 ty + 2`) start;
/// `None` for rows of padding.
fn input_rows((h, w): (usize, usize), ty: usize) -> [Option<usize>; 4] {
    [0, 1, 2, 3].map(|r| {
        (2 * ty + r)
            .checked_sub(1)
            .filter(|&y| y < h)
            .map(|y| y * w)
    })
}

/// Where in a `[h, w]` plane tile row `ty`'s two output rows start; `None` for a second row
/// past the plane's end (odd `h`).
fn output_rows((h, w): (usize, usize), ty: usize) -> [Option<usize>; 2] {
    [2 * ty, 2 * ty + 1].map(|y| (y < h).then_some(y * w))
}

/// The rows of `plane` that start at `at` (as [`input_rows`] and [`output_rows`] give them),
/// `zeros` (a row's length) for `None`: the generic transforms' view of what the AVX-512
/// kernels read through `Span`'s offsets.
fn plane_rows<'a, T, const R: usize>(
    plane: &'a [T],
    zeros: &'a [T],
    at: [Option<usize>; R],
) -> [&'a [T]; R] {
    at.map(|at| at.map_or(zeros, |at| &plane[at..][..zeros.len()]))
}

/// A plane's tile rows `ty.0..ty.1`, 16 tiles at a time (the lanes of a vector), as spans
/// with `rows(ty)`; each group of 16 starts at lane 0. Short rows share a vector: one a
/// vector, ResNet-20's 7x7 and 14x14 planes filled 4 or 7 of its 16 lanes.
#[cfg(target_arch = "x86_64")]
fn spans<P>((y0, y1): (usize, usize), tw: usize, rows: impl Fn(usize) -> P) -> Vec<Span<P>> {
    let (mut out, mut lane) = (Vec::new(), 0);
    for ty in y0..y1 {
        if lane + tw > XI {
            lane = 0;
        }
        let mut tx = 0;
        while tx < tw {
            let len = (tw - tx).min(XI - lane);
            let tile = (ty - y0) * tw + tx;
            out.push(Span {
                rows: rows(ty),
                tx,
                lane,
                len,
                tile,
            });
            (tx, lane) = (tx + len, (lane + len) % XI);
        }
    }
    out
}

/// `f(p, group, first)` for each of a chunk's planes (`p = j channels + k` for its `j`-th
/// sample's channel `k`) and each group of 16 tiles of [`spans`]' `spans`; `first` is the
/// group's first tile in the chunk's `[channels, tiles]` matrices.
#[cfg(target_arch = "x86_64")]
fn each_group<P>(
    ch: Chunk,
    tw: usize,
    channels: usize,
    spans: &[Span<P>],
    mut f: impl FnMut(usize, &[Span<P>], usize),
) {
    let tiles = ch.tiles(tw);
    for j in 0..ch.count {
        for k in 0..channels {
            for group in spans.chunk_by(|_, b| b.lane != 0) {
                let first = k * tiles + j * ch.rows() * tw + group[0].tile;
                f(j * channels + k, group, first);
            }
        }
    }
}

/// `avx512::input_tiles` or `avx512::grad_tiles`: reads `R` rows of a plane (or zeros) per
/// span, writes 16 rows of a chunk's scratch.
#[cfg(target_arch = "x86_64")]
type RowsKernel<const R: usize> =
    unsafe fn((*const f32, *const f32), &[Span<[Option<usize>; R]>], usize, *mut f32, usize);

/// The transform of a chunk's tiles by an AVX-512 kernel (`input_tiles` or `grad_tiles`) that
/// reads rows `rows(ty)` of `src`'s planes (`channels` of `[h, w]` per sample) and writes the
/// 16 rows of `out` (`[16, channels, tiles]`), a group of 16 tiles at a time.
#[cfg(target_arch = "x86_64")]
fn rows_to_tiles<T: Float, const R: usize>(
    kernel: RowsKernel<R>,
    (h, w): (usize, usize),
    (src, channels): (&[T], usize),
    (ch, tw): (Chunk, usize),
    rows: impl Fn(usize) -> [Option<usize>; R],
    out: &mut [T],
) {
    let (spans, stride) = (spans(ch.ty, tw, rows), xi_len(channels, ch.tiles(tw)));
    let zeros = vec![T::ZERO; w];
    each_group(ch, tw, channels, &spans, |p, group, first| {
        let plane = &src[(ch.first * channels + p) * h * w..][..h * w];
        assert!(first + (XI - 1) * stride + avx512::count(group) <= out.len());
        let rows = (plane.as_ptr().cast::<f32>(), zeros.as_ptr().cast::<f32>());
        // SAFETY: the caller checked that the CPU has AVX-512F and `T` is f32 (`fast`); the
        // spans' rows are rows of the `[h, w]` plane, `zeros` has `w` elements, the 16 output
        // rows the group's tiles (checked above).
        unsafe {
            let to = out.as_mut_ptr().add(first).cast::<f32>();
            kernel(rows, group, w, to, stride);
        }
    });
}

/// `d B` along a padded line: for tile `tx`, of `line[2 tx..2 tx + 4]` = `(d0, d1, d2, d3)`,
/// `(d0 - d2, d1 + d2, d2 - d1, d1 - d3)`, one value into each of `out`.
#[inline(always)]
fn columns_b<T: Float>(line: &[T], out: [&mut [T]; 4]) {
    let (pairs, _) = line.as_chunks::<2>();
    let [o0, o1, o2, o3] = out;
    let tw = o0.len();
    let (lo, hi) = (&pairs[..tw], &pairs[1..=tw]);
    let outs = o0
        .iter_mut()
        .zip(o1.iter_mut())
        .zip(o2.iter_mut())
        .zip(o3.iter_mut());
    for ((((o0, o1), o2), o3), (&[d0, d1], &[d2, d3])) in outs.zip(lo.iter().zip(hi)) {
        *o0 = d0 - d2;
        *o1 = d1 + d2;
        *o2 = d2 - d1;
        *o3 = d1 - d3;
    }
}

/// `s`'s first four `len`-long parts.
fn quarters<T>(s: &mut [T], len: usize) -> [&mut [T]; 4] {
    let (a, rest) = s.split_at_mut(len);
    let (b, rest) = rest.split_at_mut(len);
    let (c, rest) = rest.split_at_mut(len);
    [a, b, c, &mut rest[..len]]
}

/// Four disjoint `len`-long rows of `v`, at `first + i * stride` (`len <= stride`).
fn rows_of<T>(v: &mut [T], first: usize, stride: usize, len: usize) -> [&mut [T]; 4] {
    let (_, rest) = v.split_at_mut(first);
    let (a, rest) = rest.split_at_mut(stride);
    let (b, rest) = rest.split_at_mut(stride);
    let (c, rest) = rest.split_at_mut(stride);
    [
        &mut a[..len],
        &mut b[..len],
        &mut c[..len],
        &mut rest[..len],
    ]
}

/// `dst[i] = f(a[i], b[i])`, a loop the compiler vectorizes (`f` is inlined).
#[inline(always)]
fn combine<T: Float>(dst: &mut [T], a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    for ((d, &a), &b) in dst.iter_mut().zip(a).zip(b) {
        *d = f(a, b);
    }
}

/// The outputs of a chunk's tiles from `M` (`[16, o, tiles]`): `y = Aᵀ M A` per tile, into
/// the block of samples `yb` (which starts at sample `block_first`); `lines` holds the
/// column sums.
fn transform_output<T: Float>(
    s: &ConvShape,
    tw: usize,
    m: &[T],
    ch: Chunk,
    block_first: usize,
    yb: &mut [MaybeUninit<T>],
    lines: &mut [T],
) {
    let (o, h, w) = (s.o, s.h, s.w);
    let tiles = ch.tiles(tw);
    #[cfg(target_arch = "x86_64")]
    if fast::<T>() {
        let (spans, stride) = (
            spans(ch.ty, tw, |ty| output_rows((h, w), ty)),
            xi_len(o, tiles),
        );
        each_group(ch, tw, o, &spans, |p, group, first| {
            let plane = &mut yb[((ch.first - block_first) * o + p) * h * w..][..h * w];
            assert!(first + (XI - 1) * stride + avx512::count(group) <= m.len());
            // SAFETY: the CPU has AVX-512F and `T` is f32 (`fast`); the 16 rows of `M` have
            // the group's tiles (checked above); the spans' rows are rows of the `[h, w]`
            // plane.
            unsafe {
                let m = m.as_ptr().add(first).cast::<f32>();
                avx512::output_tiles(m, stride, plane.as_mut_ptr().cast(), group, w);
            }
        });
        return;
    }
    let (sums, pairs) = lines.split_at_mut(8 * tw);
    let pairs = &mut pairs[..2 * tw];
    for j in 0..ch.count {
        for oc in 0..o {
            let plane = &mut yb[((ch.first - block_first + j) * o + oc) * h * w..][..h * w];
            for ty in ch.ty.0..ch.ty.1 {
                let at = ch.at(j, ty, tw);
                let row = |xi: usize| &m[xi * xi_len(o, tiles) + oc * tiles + at..][..tw];
                // `Aᵀ M`: for each column of the tile, rows 0 + 1 + 2 and rows 1 - 2 - 3.
                let (top, bottom) = sums.split_at_mut(4 * tw);
                for col in 0..4 {
                    let (q0, q1, q2, q3) = (row(col), row(4 + col), row(8 + col), row(12 + col));
                    let t = &mut top[col * tw..][..tw];
                    combine(t, q0, q1, |a, b| a + b);
                    for (t, &q) in t.iter_mut().zip(q2) {
                        *t += q;
                    }
                    let b = &mut bottom[col * tw..][..tw];
                    combine(b, q1, q2, |a, b| a - b);
                    for (b, &q) in b.iter_mut().zip(q3) {
                        *b -= q;
                    }
                }
                // `(Aᵀ M) A` along the rows: columns 0 + 1 + 2 and columns 1 - 2 - 3.
                let out = [(top, 2 * ty), (bottom, 2 * ty + 1)];
                for (sums, y) in out.into_iter().filter(|&(_, y)| y < h) {
                    let [s0, s1, s2, s3] = quarters(sums, tw);
                    for (tx, p) in pairs.chunks_exact_mut(2).enumerate() {
                        p[0] = s0[tx] + s1[tx] + s2[tx];
                        p[1] = s1[tx] - s2[tx] - s3[tx];
                    }
                    super::write_copy(&mut plane[y * w..][..w], &pairs[..w]);
                }
            }
        }
    }
}

/// `dM = A dy Aᵀ` of a chunk's tiles into `m` (`[16, o, tiles]`): each tile row's two rows
/// of `dy` (`a`, `b`) combined whole into `(a, a + b, a - b, -b)`, then each combination
/// the same way along its length. Outputs past the plane's last row or column (odd sizes)
/// count as zero: `lines`' tails stay zero.
fn transform_grad<T: Float>(
    s: &ConvShape,
    tw: usize,
    dy: &[T],
    ch: Chunk,
    m: &mut [T],
    lines: &mut [T],
) {
    let (o, h, w) = (s.o, s.h, s.w);
    #[cfg(target_arch = "x86_64")]
    if fast::<T>() {
        let rows = |ty| output_rows((h, w), ty);
        return rows_to_tiles(avx512::grad_tiles, (h, w), (dy, o), (ch, tw), rows, m);
    }
    let (tiles, zeros) = (ch.tiles(tw), vec![T::ZERO; w]);
    let len = 2 * tw;
    let lines = &mut lines[..4 * len];
    lines.fill(T::ZERO);
    for j in 0..ch.count {
        for oc in 0..o {
            let plane = &dy[((ch.first + j) * o + oc) * h * w..][..h * w];
            for ty in ch.ty.0..ch.ty.1 {
                let [a, b] = plane_rows(plane, &zeros, output_rows((h, w), ty));
                let at = ch.at(j, ty, tw);
                let [l0, l1, l2, l3] = quarters(lines, len);
                l0[..w].copy_from_slice(a);
                combine(&mut l1[..w], a, b, |a, b| a + b);
                combine(&mut l2[..w], a, b, |a, b| a - b);
                combine(&mut l3[..w], a, b, |_, b| T::ZERO - b);
                for (i, line) in lines.chunks_exact(len).enumerate() {
                    let first = 4 * i * xi_len(o, tiles) + oc * tiles + at;
                    let [m0, m1, m2, m3] = rows_of(m, first, xi_len(o, tiles), tw);
                    let (pairs, _) = line.as_chunks::<2>();
                    let outs = m0
                        .iter_mut()
                        .zip(m1.iter_mut())
                        .zip(m2.iter_mut())
                        .zip(m3.iter_mut());
                    for ((((m0, m1), m2), m3), &[a, b]) in outs.zip(pairs) {
                        *m0 = a;
                        *m1 = a + b;
                        *m2 = a - b;
                        *m3 = T::ZERO - b;
                    }
                }
            }
        }
    }
}

/// `y = conv(x, w)`.
pub(super) fn forward<T: Float>(s: &ConvShape, x: &[T], w: &[T]) -> Vec<T> {
    let (plan, u) = (Plan::new(s), kernel_transform(s, w));
    let (c, o, hw) = (s.c, s.o, s.h * s.w);
    let write = |y: &mut [MaybeUninit<T>]| {
        par_chunks_mut_with(
            y,
            plan.samples * o * hw,
            || Scratch::new(s, &plan),
            |sc, i, yb| {
                let first = i * plan.samples;
                let end = (first + plan.samples).min(s.n);
                for ch in plan.chunks((first, end)) {
                    transform_input(s, plan.tw, x, ch, &mut sc.v, &mut sc.lines);
                    products(&u, (o, c, ch.tiles(plan.tw)), &sc.v, &mut sc.m);
                    transform_output(s, plan.tw, &sc.m, ch, first, yb, &mut sc.lines);
                }
            },
        )
    };
    // SAFETY: each block's chunks cover all its samples' tile rows, and each tile row writes
    // every output of its two rows of every output channel.
    unsafe { output(s.n * o * hw, write) }
}

/// `M_ξ = U_ξ · V_ξ` for the 16 positions of a chunk of `tiles` tiles: `U` is `[16, o, c]`,
/// `V` and `M` the chunk's scratch.
fn products<T: Float>(u: &[T], (o, c, tiles): (usize, usize, usize), v: &[T], m: &mut [T]) {
    let (lv, lm) = (xi_len(c, tiles), xi_len(o, tiles));
    #[cfg(target_arch = "x86_64")]
    if fast::<T>() {
        assert!(XI * o * c <= u.len() && XI * lv <= v.len() && XI * lm <= m.len());
        for xi in 0..XI {
            // SAFETY: the CPU has AVX-512F and `T` is f32 (`fast`); `U_ξ`, `V_ξ` and `M_ξ`
            // are inside their buffers (checked above).
            unsafe {
                avx512::product(
                    u.as_ptr().add(xi * o * c).cast(),
                    (o, c),
                    v.as_ptr().add(xi * lv).cast(),
                    tiles,
                    m.as_mut_ptr().add(xi * lm).cast(),
                );
            }
        }
        return;
    }
    for xi in 0..XI {
        let (u, v) = (&u[xi * o * c..][..o * c], &v[xi * lv..][..c * tiles]);
        let m = &mut m[xi * lm..][..o * tiles];
        matmul((o, tiles, c), m, tiles, u, (c, 1), v, (tiles, 1), false);
    }
}

/// `dw` from `x` and `dy`, summed over the batch by [`sum_over_batch`].
pub(super) fn backward_filter<T: Float>(s: &ConvShape, x: &[T], dy: &[T]) -> Vec<T> {
    let plan = Plan::new(s);
    let (c, o) = (s.c, s.o);
    // Each `dU_ξ` is summed column-major (`[o, c]`, element `(oc, ic)` at `oc + ic o`): the
    // `gemm` crate's fast layout for a product with its second operand read transposed.
    let du = sum_over_batch(s.n, XI * o * c, |(start, end)| {
        let mut sc = Scratch::new(s, &plan);
        let mut du = vec![T::ZERO; XI * o * c];
        for ch in plan.chunks((start, end)) {
            let tiles = ch.tiles(plan.tw);
            transform_input(s, plan.tw, x, ch, &mut sc.v, &mut sc.lines);
            transform_grad(s, plan.tw, dy, ch, &mut sc.m, &mut sc.lines);
            for xi in 0..XI {
                let dm = (&sc.m[xi * xi_len(o, tiles)..][..o * tiles], (tiles, 1));
                let v = (&sc.v[xi * xi_len(c, tiles)..][..c * tiles], (1, tiles));
                matmul_col_major((o, c, tiles), &mut du[xi * o * c..][..o * c], dm, v, true);
            }
        }
        du
    });
    // `dg = Gᵀ dU G` per pair of channels, into `[o, c, 3, 3]`.
    let mut dw = vec![T::ZERO; o * c * 9];
    for (pair, out) in dw.chunks_exact_mut(9).enumerate() {
        let (oc, ic) = (pair / c, pair % c);
        let d = |i: usize, j: usize| du[(i * 4 + j) * o * c + oc + ic * o];
        // `Gᵀ dU` a column at a time (3x4), then `(Gᵀ dU) G` a row at a time.
        let col = |j: usize| by_gt([d(0, j), d(1, j), d(2, j), d(3, j)]);
        let gd = [col(0), col(1), col(2), col(3)];
        for a in 0..3 {
            let row = by_gt([gd[0][a], gd[1][a], gd[2][a], gd[3][a]]);
            out[a * 3..a * 3 + 3].copy_from_slice(&row);
        }
    }
    dw
}
