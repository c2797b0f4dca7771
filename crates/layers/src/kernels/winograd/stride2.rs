//! Winograd's F(4x4, 2x2) for 4x4 convolutions at stride 2 with padding 1: the DCGAN's
//! down- and upsampling layers (forward and input gradient; the transposed convolution is
//! the latter).
//!
//! Split by the parity of rows and columns, a 4x4 kernel at stride 2 is four 2x2 kernels at
//! stride 1, each over one phase of the input: along an axis, `y[o] = Σ_b Σ_a w[2a + b]
//! P_b[o + a]` with `P_b[i] = x[2i + b - 1]`. So the layer is a 2x2 convolution with `4c`
//! input channels (phase, channel) on planes of half the size, and F(4x4, 2x2) computes it
//! with 25 products per 4x4 block of outputs (a tile) and pair of channels where the direct
//! sums take 64: `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, `d` the tile's 5x5 input patch. On the DCGAN's
//! 7x7 planes (two tiles a side) that is 1.96x fewer multiply-adds.
//!
//! The tiles' data are laid out channels last (`[tiles, channels]`), so that the transforms
//! run along rows of channels: the planes are small (7x7 to 14x14) and a tile row holds two
//! tiles. Summed over the input channels, the element-wise products are 25 matrix products
//! `M_ξ [tiles, o] = V_ξ [tiles, 4c] · U_ξ [4c, o]`, by the `gemm` crate.
//!
//! The input gradient is a 2x2 convolution of `dy`, padded by one, with each phase's kernel
//! flipped: its outputs are the phases of `dx`. The weight gradient stays with the columns
//! (`ConvShape::backward_filter`): by the transforms' adjoint (`dU_ξ = V_ξᵀ · dM_ξ`,
//! `dM = A dy Aᵀ`, `dg = Gᵀ dU G`) it took 4.2 ms a call against 3.5 on M5's 64->128 layer.
//!
//! The matrices come from the points 0, 1, -1, 2 and ∞; in exact arithmetic the transforms
//! give the direct sums, in f32 they differ by about 1e-6 of the largest output.

use std::any::Any;
use std::cell::RefCell;
use std::mem::MaybeUninit;

#[cfg(target_arch = "x86_64")]
mod avx512;

use super::super::{
    conv::ConvShape, matmul, output, par_chunks_mut, par_chunks_mut_with, threads, Float,
};

/// Positions of a transformed 5x5 tile.
const XI: usize = 25;

/// The fewest input and output channels (the DCGAN's stem and last layer, with one channel,
/// keep the columns).
const MIN_CHANNELS: usize = 16;

/// Whether F(4x4, 2x2) computes the convolution: a 4x4 kernel at stride 2, padding 1, no
/// dilation, one group, at least [`MIN_CHANNELS`] channels in and out.
pub(in super::super) fn applies(s: &ConvShape) -> bool {
    s.kh == 4
        && s.kw == 4
        && s.stride == [2, 2]
        && s.padding == [1, 1]
        && s.dilation == [1, 1]
        && s.groups == 1
        && s.h >= 2
        && s.w >= 2
        && s.c >= MIN_CHANNELS
        && s.o >= MIN_CHANNELS
}

/// `out[k] = f(k)`, a loop the compiler vectorizes (`f` is inlined, its slices `out`'s length).
#[inline(always)]
fn each<T: Float>(out: &mut [T], f: impl Fn(usize) -> T) {
    for (k, o) in out.iter_mut().enumerate() {
        *o = f(k);
    }
}

/// `Bᵀ` row `r` of `(d0, .., d4)`, element-wise into `out`.
#[inline(always)]
fn by_bt<T: Float>(r: usize, [d0, d1, d2, d3, d4]: [&[T]; 5], out: &mut [T]) {
    let n = out.len();
    let (d0, d1, d2, d3, d4) = (&d0[..n], &d1[..n], &d2[..n], &d3[..n], &d4[..n]);
    let (two, three) = (T::from_f64(2.0), T::from_f64(3.0));
    match r {
        0 => each(out, |k| (d0[k] - d2[k]) * two - d1[k] + d3[k]),
        1 => each(out, |k| d1[k] * two + d2[k] - d3[k]),
        2 => each(out, |k| d2[k] * three - d1[k] * two - d3[k]),
        3 => each(out, |k| d3[k] - d1[k]),
        _ => each(out, |k| (d1[k] - d3[k]) * two - d2[k] + d4[k]),
    }
}

/// `Aᵀ` row `r` of `(m0, .., m4)`, element-wise into `out`.
#[inline(always)]
fn by_at<T: Float>(r: usize, [m0, m1, m2, m3, m4]: [&[T]; 5], out: &mut [T]) {
    let n = out.len();
    let (m0, m1, m2, m3, m4) = (&m0[..n], &m1[..n], &m2[..n], &m3[..n], &m4[..n]);
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    match r {
        0 => each(out, |k| m0[k] + m1[k] + m2[k] + m3[k]),
        1 => each(out, |k| m1[k] - m2[k] + m3[k] * two),
        2 => each(out, |k| m1[k] + m2[k] + m3[k] * four),
        _ => each(out, |k| m1[k] - m2[k] + m3[k] * eight + m4[k]),
    }
}

/// `G`: the kernel transform's 5x2 matrix.
const G: [[f64; 2]; 5] = [
    [0.5, 0.0],
    [0.5, 0.5],
    [1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 6.0, 1.0 / 3.0],
    [0.0, 1.0],
];

/// `(G g Gᵀ)[ξ] = Σ_{ij} coefficients[ξ][2i + j] g[i][j]`: the kernel transform as 25 rows
/// of weights of a 2x2 kernel's taps (and, transposed, its adjoint `Gᵀ dU G`).
fn coefficients<T: Float>() -> [[T; 4]; XI] {
    std::array::from_fn(|xi| {
        std::array::from_fn(|ij| T::from_f64(G[xi / 5][ij / 2] * G[xi % 5][ij % 2]))
    })
}

/// How a layer's samples are tiled and cut into chunks.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    /// Tiles of the forward output (`oh x ow`) per column and row.
    th: usize,
    tw: usize,
    /// Tiles of the input gradient's phase planes (`h / 2 + 1` a side) per column and row.
    dth: usize,
    dtw: usize,
    /// Samples per chunk.
    samples: usize,
}

/// The most values of `V` and `M` a chunk holds. Chunks end up a thread's share of the batch
/// on M5 (32 samples, 5.3 MB of f32): each product then reads its 128 KiB `U_ξ` once per
/// call; with chunks of 27 or 13 samples the step was 4% and 5% slower.
const CHUNK_VALUES: usize = 1 << 21;

impl Geometry {
    fn new(s: &ConvShape) -> Self {
        let (th, tw) = (s.oh.div_ceil(4), s.ow.div_ceil(4));
        let (dth, dtw) = ((s.h / 2 + 1).div_ceil(4), (s.w / 2 + 1).div_ceil(4));
        let per_sample = XI * th.max(dth) * tw.max(dtw) * (4 * s.c + s.o);
        Self {
            th,
            tw,
            dth,
            dtw,
            samples: (CHUNK_VALUES / per_sample.max(1)).clamp(1, s.n.div_ceil(threads()).max(1)),
        }
    }

    /// The padded input's rows and columns: `x` row `r` at `r + 1`, as far as the last tile
    /// reads (`8 th + 1`).
    fn x_padded(&self) -> (usize, usize) {
        (8 * self.th + 2, 8 * self.tw + 2)
    }

    /// The padded `dy`'s rows and columns for the input gradient: `dy` row `r` at `r + 1`.
    fn dy_padded(&self) -> (usize, usize) {
        (4 * self.dth + 1, 4 * self.dtw + 1)
    }
}

/// The tiles `(tile, ty, tx)` of sample `j` on a grid of `th` rows of `tw` tiles, `tile` their
/// index in a chunk's scratch (samples one after another, each row by row).
fn grid(j: usize, (th, tw): (usize, usize)) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..th * tw).map(move |k| (j * th * tw + k, k / tw, k % tw))
}

/// `src`'s `ch` planes of `[h, w]` into `dst` (`[hp, wp, ch]`) padded by one: row `r` and
/// column `q` at `r + 1`, `q + 1`; the positions around them are left as they are (the
/// scratch's zeros: the padding).
fn to_channels_last<T: Float>(
    src: &[T],
    (ch, h, w): (usize, usize, usize),
    dst: &mut [T],
    wp: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if super::fast::<T>() {
        assert!(src.len() >= ch * h * w && h * w > 0 && ch * h * w < 1 << 31);
        assert!(dst.len() >= (h * wp + w + 1) * ch);
        // SAFETY: the CPU has AVX-512F and `T` is f32 (`fast`); the extents are checked above.
        unsafe {
            let (src, dst) = (src.as_ptr().cast(), dst.as_mut_ptr().cast());
            avx512::to_channels_last(src, (ch, h, w), dst, wp);
        }
        return;
    }
    for r in 0..h {
        for q in 0..w {
            let to = &mut dst[((r + 1) * wp + q + 1) * ch..][..ch];
            for (ci, t) in to.iter_mut().enumerate() {
                *t = src[(ci * h + r) * w + q];
            }
        }
    }
}

/// `src` (`[h w, ch]`) into `ch` planes of `[h, w]`.
fn from_channels_last<T: Float>(src: &[T], ch: usize, dst: &mut [MaybeUninit<T>]) {
    let len = dst.len() / ch;
    #[cfg(target_arch = "x86_64")]
    if super::fast::<T>() {
        assert!(src.len() >= len * ch && dst.len() == len * ch && len * ch < 1 << 31);
        // SAFETY: the CPU has AVX-512F and `T` is f32 (`fast`); the extents are checked
        // above; every element of `dst` is written.
        unsafe {
            avx512::from_channels_last(src.as_ptr().cast(), (len, ch), dst.as_mut_ptr().cast())
        };
        return;
    }
    for (ci, plane) in dst.chunks_exact_mut(len).enumerate() {
        for (p, v) in plane.iter_mut().enumerate() {
            v.write(src[p * ch + ci]);
        }
    }
}

/// `Bᵀ d B` of one tile, position `ξ` into `out[at(ξ)..]`: `d(u, v)` is the patch's row
/// `u`, column `v` (a row of channels); `t` is scratch of 25 rows for the generic loops (f64,
/// and f32 without AVX-512: with them in f32, M5 ran 16.11 steps/s against 17.12 with the
/// AVX-512 kernels and 15.25 by columns, alternating runs on the AVX-512 Xeon).
fn input_tile<'a, T: Float + 'a>(
    d: impl Fn(usize, usize) -> &'a [T],
    t: &mut [T],
    (out, at): (&mut [T], impl Fn(usize) -> usize),
) {
    let n = t.len() / XI;
    #[cfg(target_arch = "x86_64")]
    if super::fast::<T>() {
        let at: [usize; XI] = std::array::from_fn(at);
        assert!(at.iter().all(|&at| at + n <= out.len()));
        let d: [*const f32; XI] = std::array::from_fn(|i| d(i / 5, i % 5)[..n].as_ptr().cast());
        // SAFETY: the CPU has AVX-512F and `T` is f32 (`fast`); each patch row has `n`
        // elements, each position's row fits `out` (checked above).
        unsafe { avx512::input_tile(&d, n, out.as_mut_ptr().cast(), &at) };
        return;
    }
    separable((5, by_bt), d, t, (out, |a, b| at(5 * a + b)));
}

/// `Aᵀ M A` of one tile into `rows` (16 rows of channels), then `out(i, j, row)` for each
/// output `(i, j)`: `m(ξ)` is the tile's row of `M_ξ`; `t` is scratch of 20 rows.
fn output_tile<'a, T: Float + 'a>(
    m: impl Fn(usize) -> &'a [T],
    t: &mut [T],
    rows: &mut [T],
    mut out: impl FnMut(usize, usize, &[T]),
) {
    let n = rows.len() / 16;
    #[cfg(target_arch = "x86_64")]
    let fast = super::fast::<T>();
    #[cfg(not(target_arch = "x86_64"))]
    let fast = false;
    if !fast {
        separable(
            (4, by_at),
            |a, b| m(5 * a + b),
            t,
            (rows, |i, j| (4 * i + j) * n),
        );
    }
    #[cfg(target_arch = "x86_64")]
    if fast {
        let m: [*const f32; XI] = std::array::from_fn(|xi| m(xi)[..n].as_ptr().cast());
        // SAFETY: the CPU has AVX-512F and `T` is f32 (`fast`); each position's row has `n`
        // elements, `rows` 16 rows of `n`.
        unsafe { avx512::output_tile(&m, n, rows.as_mut_ptr().cast(), n) };
    }
    for (ij, row) in rows.chunks_exact(n).enumerate() {
        out(ij / 4, ij % 4, row);
    }
}

/// A 5x5 tile's transform `R d Rᵀ` by generic loops, `R` having `rows` rows, each applied to
/// five rows of channels by `by(r, ..)` ([`by_bt`], [`by_at`]): `d(u, v)` is the tile's row
/// `u`, column `v` (rows of channels, all as long); `R d` goes to `t` (`rows x 5` rows),
/// output `(a, b)` to `out[at(a, b)..]`.
fn separable<'a, T: Float + 'a>(
    (rows, by): (usize, impl Fn(usize, [&[T]; 5], &mut [T])),
    d: impl Fn(usize, usize) -> &'a [T],
    t: &mut [T],
    (out, at): (&mut [T], impl Fn(usize, usize) -> usize),
) {
    let n = d(0, 0).len();
    for a in 0..rows {
        for v in 0..5 {
            let col = [d(0, v), d(1, v), d(2, v), d(3, v), d(4, v)];
            by(a, col, &mut t[(a * 5 + v) * n..][..n]);
        }
    }
    for a in 0..rows {
        let row = |v: usize| &t[(a * 5 + v) * n..][..n];
        for b in 0..rows {
            by(
                b,
                [row(0), row(1), row(2), row(3), row(4)],
                &mut out[at(a, b)..][..n],
            );
        }
    }
}

/// One thread's scratch: the padded input (channels last), `V` (`[25, tiles, cin]`), `M`
/// (`[25, tiles, cout]`), the output (channels last) and the transforms' rows.
struct Scratch<T> {
    padded: Vec<T>,
    v: Vec<T>,
    m: Vec<T>,
    out: Vec<T>,
    t: Vec<T>,
}

/// A [`Scratch`]'s sizes: the padded input's, the products' `(tiles, cin, cout)`, the output's.
type Sizes = (usize, (usize, usize, usize), usize);

impl<T: Float> Scratch<T> {
    fn new(padded: usize, (tiles, cin, cout): (usize, usize, usize), out: usize) -> Self {
        Self {
            padded: vec![T::ZERO; padded],
            v: vec![T::ZERO; XI * tiles * cin],
            m: vec![T::ZERO; XI * tiles * cout],
            out: vec![T::ZERO; out],
            t: vec![T::ZERO; (XI + 16) * cin.max(cout)],
        }
    }
}

/// What a kept buffer holds (with the layer's geometry, the key it is kept by): a pass's
/// [`Scratch`] or a transformed kernel ([`Transformed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Forward,
    Data,
    KernelForward,
    KernelData,
}

/// How many buffers a thread keeps: the two passes' scratch and kernels of a layer, with
/// room for a second layer's (they raised M5's peak memory from 92 to 117 MB).
const KEEP: usize = 8;

thread_local! {
    /// Each thread's buffers of its last calls, kept between calls: a fresh scratch is zeroed
    /// (the padding must be), which took 4-9% of M5's step in `memset`. A kept one holds the
    /// same layer's data from its last call, and zeros where the padding is.
    static KEPT: RefCell<Vec<Shelved>> = const { RefCell::new(Vec::new()) };
}

/// A kept buffer and its key.
type Shelved = (Pass, ConvShape, Box<dyn Any>);

/// A thread's buffer for one call: taken from [`KEPT`] (or made), put back when dropped.
struct Kept<S: 'static> {
    key: (Pass, ConvShape),
    held: Option<S>,
}

impl<S: 'static> Kept<S> {
    fn take(key: (Pass, ConvShape), make: impl FnOnce() -> S) -> Self {
        let found = KEPT.with(|kept| {
            let mut kept = kept.borrow_mut();
            let at = kept
                .iter()
                .position(|(p, s, b)| (*p, *s) == key && b.is::<S>());
            at.map(|at| kept.remove(at).2)
        });
        let held = found.and_then(|b| b.downcast::<S>().ok());
        Self {
            key,
            held: Some(held.map_or_else(make, |b| *b)),
        }
    }
}

impl<S: 'static> Drop for Kept<S> {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            KEPT.with(|kept| {
                let mut kept = kept.borrow_mut();
                if kept.len() == KEEP {
                    kept.remove(0);
                }
                kept.push((self.key.0, self.key.1, Box::new(held)));
            });
        }
    }
}

impl<S> std::ops::Deref for Kept<S> {
    type Target = S;
    fn deref(&self) -> &S {
        self.held
            .as_ref()
            .expect("a kept buffer is there until dropped")
    }
}

impl<S> std::ops::DerefMut for Kept<S> {
    fn deref_mut(&mut self) -> &mut S {
        self.held
            .as_mut()
            .expect("a kept buffer is there until dropped")
    }
}

/// A transformed kernel `u` and the weights `w` it was made from. The discriminator's
/// layer runs forward three times a step (real, fake, the generator's update), the first two
/// with the same weights, and its input gradient likewise: where the weights are the same
/// bits as the kept ones, their transform is reused.
struct Transformed<T> {
    w: Vec<T>,
    u: Vec<T>,
}

/// `w`'s transform for `pass` by `make` (into a kept buffer of `len`), or the kept one where
/// `w` has not changed.
fn transformed<T: Float>(
    (pass, s): (Pass, &ConvShape),
    w: &[T],
    len: usize,
    make: impl FnOnce(&mut [T]),
) -> Kept<Transformed<T>> {
    let fresh = || Transformed {
        w: Vec::new(),
        u: vec![T::ZERO; len],
    };
    let mut kept: Kept<Transformed<T>> = Kept::take((pass, *s), fresh);
    let same = kept.w.len() == w.len() && kept.w.iter().zip(w).all(|(a, b)| a.bits() == b.bits());
    if !same {
        make(&mut kept.u);
        kept.w.clear();
        kept.w.extend_from_slice(w);
    }
    kept
}

/// `M_ξ = V_ξ · U_ξ` for the 25 positions: `V` is `[25, tiles, cin]`, `U` `[25, cin, cout]`.
/// By the `gemm` crate: with a packing-free AVX-512 kernel instead (32 columns of `U_ξ` kept
/// in the L1 cache, register blocks of 8 tiles), M5's step was 6% slower.
fn products<T: Float>(u: &[T], (tiles, cin, cout): (usize, usize, usize), v: &[T], m: &mut [T]) {
    for xi in 0..XI {
        let (u, v) = (
            &u[xi * cin * cout..][..cin * cout],
            &v[xi * tiles * cin..][..tiles * cin],
        );
        let m = &mut m[xi * tiles * cout..][..tiles * cout];
        matmul(
            (tiles, cout, cin),
            m,
            cout,
            v,
            (cin, 1),
            u,
            (cout, 1),
            false,
        );
    }
}

/// The four phases `(by, bx)` in the order of their channels (`(2 by + bx) c + ci`).
const PHASES: [(usize, usize); 4] = [(0, 0), (0, 1), (1, 0), (1, 1)];

/// Tap `(i, j)` of phase `(by, bx)`'s 2x2 kernel in the 4x4 kernel, for the forward pass
/// (`g[i][j] = w[2 i + by, 2 j + bx]`) and, flipped, for the input gradient
/// (`w[2 (1 - i) + by, 2 (1 - j) + bx]`).
fn tap((by, bx): (usize, usize), ij: usize, flipped: bool) -> usize {
    let (i, j) = if flipped {
        (1 - ij / 2, 1 - ij % 2)
    } else {
        (ij / 2, ij % 2)
    };
    (2 * i + by) * 4 + 2 * j + bx
}

/// `w: [o, c, 16]` tap-major: `[16, o, c]`, or `[16, c, o]` where `channels_out_last`.
fn taps_first<T: Float>(s: &ConvShape, w: &[T], channels_out_last: bool) -> Vec<T> {
    let (c, o) = (s.c, s.o);
    let mut out = vec![T::ZERO; w.len()];
    par_chunks_mut(&mut out, o * c, |t, block| {
        if channels_out_last {
            for (ci, row) in block.chunks_exact_mut(o).enumerate() {
                each(row, |oc| w[(oc * c + ci) * 16 + t]);
            }
        } else {
            for (oc, row) in block.chunks_exact_mut(c).enumerate() {
                each(row, |ci| w[(oc * c + ci) * 16 + t]);
            }
        }
    });
    out
}

/// `out[k] = Σ_i cf[i] rows[i][k]`, `out`'s length of each row.
#[inline(always)]
fn combine<T: Float>(out: &mut [T], rows: [&[T]; 4], cf: [T; 4]) {
    let n = out.len();
    let (r0, r1, r2, r3) = (&rows[0][..n], &rows[1][..n], &rows[2][..n], &rows[3][..n]);
    each(out, |k| {
        r0[k] * cf[0] + r1[k] * cf[1] + r2[k] * cf[2] + r3[k] * cf[3]
    });
}

/// `U [25, 4c, o]` for the forward pass: phase `(by, bx)`'s kernel of
/// channels `(ci, oc)` in row `(2 by + bx) c + ci`. One position `ξ` per task, a row of `o`
/// kernels at a time from the tap-major weights.
fn kernel_forward<T: Float>(s: &ConvShape, w: &[T]) -> Kept<Transformed<T>> {
    let (c, o) = (s.c, s.o);
    transformed((Pass::KernelForward, s), w, XI * 4 * c * o, |u| {
        let wt = taps_first(s, w, true);
        par_chunks_mut(u, 4 * c * o, |xi, u| kernel_forward_xi(s, xi, &wt, u));
    })
}

/// `U_ξ` of [`kernel_forward`] from the tap-major weights `wt`.
fn kernel_forward_xi<T: Float>(s: &ConvShape, xi: usize, wt: &[T], u: &mut [T]) {
    let (c, o, cf) = (s.c, s.o, coefficients::<T>()[xi]);
    for (p, phase) in PHASES.into_iter().enumerate() {
        for ci in 0..c {
            let row = |ij: usize| &wt[(tap(phase, ij, false) * c + ci) * o..][..o];
            let rows = [row(0), row(1), row(2), row(3)];
            combine(&mut u[(p * c + ci) * o..][..o], rows, cf);
        }
    }
}

/// `U [25, o, 4c]` for the input gradient: phase `(by, bx)` of `dx` is
/// the correlation of `dy`, padded by one, with the kernel flipped ([`tap`]).
fn kernel_data<T: Float>(s: &ConvShape, w: &[T]) -> Kept<Transformed<T>> {
    let (c, o) = (s.c, s.o);
    transformed((Pass::KernelData, s), w, XI * o * 4 * c, |u| {
        let wt = taps_first(s, w, false);
        par_chunks_mut(u, o * 4 * c, |xi, u| kernel_data_xi(s, xi, &wt, u));
    })
}

/// `U_ξ` of [`kernel_data`] from the tap-major weights `wt`.
fn kernel_data_xi<T: Float>(s: &ConvShape, xi: usize, wt: &[T], u: &mut [T]) {
    let (c, o, cf) = (s.c, s.o, coefficients::<T>()[xi]);
    for oc in 0..o {
        for (p, phase) in PHASES.into_iter().enumerate() {
            let row = |ij: usize| &wt[(tap(phase, ij, true) * o + oc) * c..][..c];
            let rows = [row(0), row(1), row(2), row(3)];
            combine(&mut u[(oc * 4 + p) * c..][..c], rows, cf);
        }
    }
}

/// The transformed input patches of samples `first..first + count` into `sc.v`
/// (`[25, tiles, 4c]`, tile `(j, ty, tx)` at `(j th + ty) tw + tx`), from their padded
/// copy in `sc.padded`.
fn transform_input<T: Float>(
    s: &ConvShape,
    geo: &Geometry,
    x: &[T],
    (first, count): (usize, usize),
    sc: &mut Scratch<T>,
) {
    let (c, (hp, wp)) = (s.c, geo.x_padded());
    let tiles = count * geo.th * geo.tw;
    for j in 0..count {
        let plane = &mut sc.padded[j * hp * wp * c..][..hp * wp * c];
        let hw = s.h * s.w;
        to_channels_last(
            &x[(first + j) * c * hw..][..c * hw],
            (c, s.h, s.w),
            plane,
            wp,
        );
    }
    let (padded, v) = (&sc.padded, &mut sc.v);
    let t = &mut sc.t[..XI * c];
    for j in 0..count {
        for (tile, ty, tx) in grid(j, (geo.th, geo.tw)) {
            for (p, (by, bx)) in PHASES.into_iter().enumerate() {
                let d = |u: usize, w: usize| {
                    let (r, q) = (2 * (4 * ty + u) + by, 2 * (4 * tx + w) + bx);
                    &padded[((j * hp + r) * wp + q) * c..][..c]
                };
                let at = |xi: usize| (xi * tiles + tile) * 4 * c + p * c;
                input_tile(d, t, (&mut v[..], at));
            }
        }
    }
}

/// `y = conv(x, w)`.
pub(in super::super) fn forward<T: Float>(s: &ConvShape, x: &[T], w: &[T]) -> Vec<T> {
    let (geo, u) = (Geometry::new(s), kernel_forward(s, w));
    let (c, o, m) = (s.c, s.o, s.oh * s.ow);
    let (hp, wp) = geo.x_padded();
    let sizes = (
        geo.samples * hp * wp * c,
        (geo.samples * geo.th * geo.tw, 4 * c, o),
        m * o,
    );
    let chunk = |sc: &mut Scratch<T>, i, yb: &mut _| forward_chunk(s, &geo, (x, &u.u), sc, (i, yb));
    // SAFETY: each chunk's samples get every output channel's plane from
    // `from_channels_last`.
    unsafe { by_chunks((Pass::Forward, s), &geo, (o * m, sizes), chunk) }
}

/// The result (`per` values a sample) of `chunk(scratch, i, block)` on each chunk of
/// samples, in parallel, each thread with its kept scratch of [`Sizes`].
///
/// # Safety
/// `chunk` writes every element of its block.
unsafe fn by_chunks<T: Float>(
    (pass, s): (Pass, &ConvShape),
    geo: &Geometry,
    (per, (padded, products, out)): (usize, Sizes),
    chunk: impl Fn(&mut Scratch<T>, usize, &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    let write = |all: &mut [MaybeUninit<T>]| {
        par_chunks_mut_with(
            all,
            geo.samples * per,
            || Kept::take((pass, *s), || Scratch::new(padded, products, out)),
            |sc, i, block| chunk(sc, i, block),
        )
    };
    // SAFETY: every block is written whole (the caller's contract).
    unsafe { output(s.n * per, write) }
}

/// The forward pass of the `i`-th chunk of samples into its block `yb` of `y`, with `U`.
fn forward_chunk<T: Float>(
    s: &ConvShape,
    geo: &Geometry,
    (x, u): (&[T], &[T]),
    sc: &mut Scratch<T>,
    (i, yb): (usize, &mut [MaybeUninit<T>]),
) {
    let (c, o, m) = (s.c, s.o, s.oh * s.ow);
    let first = i * geo.samples;
    let count = (s.n - first).min(geo.samples);
    let tiles = count * geo.th * geo.tw;
    transform_input(s, geo, x, (first, count), sc);
    products(u, (tiles, 4 * c, o), &sc.v, &mut sc.m);
    let (t, rows) = sc.t.split_at_mut(20 * o);
    let (mm, rows) = (&sc.m, &mut rows[..16 * o]);
    for j in 0..count {
        let out = &mut sc.out;
        for (tile, ty, tx) in grid(j, (geo.th, geo.tw)) {
            let mrow = |xi: usize| &mm[(xi * tiles + tile) * o..][..o];
            let put = |i: usize, k: usize, r: &[T]| {
                let (yy, xx) = (4 * ty + i, 4 * tx + k);
                if yy < s.oh && xx < s.ow {
                    out[(yy * s.ow + xx) * o..][..o].copy_from_slice(r);
                }
            };
            output_tile(mrow, t, rows, put);
        }
        from_channels_last(&sc.out, o, &mut yb[j * o * m..][..o * m]);
    }
}

/// `dx` from `dy` and `w`: each phase of `dx` a 2x2 convolution of the padded `dy`.
pub(in super::super) fn backward_data<T: Float>(s: &ConvShape, dy: &[T], w: &[T]) -> Vec<T> {
    let (geo, u) = (Geometry::new(s), kernel_data(s, w));
    let (c, o, hw) = (s.c, s.o, s.h * s.w);
    let (hp, wp) = geo.dy_padded();
    let sizes = (
        geo.samples * hp * wp * o,
        (geo.samples * geo.dth * geo.dtw, o, 4 * c),
        hw * c,
    );
    let chunk = |sc: &mut Scratch<T>, i, dxb: &mut _| data_chunk(s, &geo, (dy, &u.u), sc, (i, dxb));
    // SAFETY: every position of `dx` is one phase's output of one tile (the tiles cover
    // `h / 2 + 1` outputs a side), so `sc.out` is written whole before it is copied.
    unsafe { by_chunks((Pass::Data, s), &geo, (c * hw, sizes), chunk) }
}

/// The input gradient of the `i`-th chunk of samples into its block `dxb` of `dx`, with `U`.
fn data_chunk<T: Float>(
    s: &ConvShape,
    geo: &Geometry,
    (dy, u): (&[T], &[T]),
    sc: &mut Scratch<T>,
    (i, dxb): (usize, &mut [MaybeUninit<T>]),
) {
    let (c, o, hw, m) = (s.c, s.o, s.h * s.w, s.oh * s.ow);
    let ((hp, wp), (dth, dtw)) = (geo.dy_padded(), (geo.dth, geo.dtw));
    let first = i * geo.samples;
    let count = (s.n - first).min(geo.samples);
    let tiles = count * dth * dtw;
    for j in 0..count {
        let plane = &mut sc.padded[j * hp * wp * o..][..hp * wp * o];
        let src = &dy[(first + j) * o * m..][..o * m];
        to_channels_last(src, (o, s.oh, s.ow), plane, wp);
    }
    let (padded, v, t) = (&sc.padded, &mut sc.v, &mut sc.t[..XI * o]);
    for j in 0..count {
        for (tile, ty, tx) in grid(j, (dth, dtw)) {
            let d =
                |r: usize, q: usize| &padded[((j * hp + 4 * ty + r) * wp + 4 * tx + q) * o..][..o];
            let at = |xi: usize| (xi * tiles + tile) * o;
            input_tile(d, t, (&mut v[..], at));
        }
    }
    products(u, (tiles, o, 4 * c), &sc.v, &mut sc.m);
    let (t, rows) = sc.t.split_at_mut(20 * 4 * c);
    let (mm, rows) = (&sc.m, &mut rows[..16 * 4 * c]);
    for j in 0..count {
        let out = &mut sc.out;
        for (tile, ty, tx) in grid(j, (dth, dtw)) {
            let mrow = |xi: usize| &mm[(xi * tiles + tile) * 4 * c..][..4 * c];
            // Phase `(by, bx)`'s output `(i, k)` is `dx[2i + by - 1, 2k + bx - 1]`.
            let put = |i: usize, k: usize, r: &[T]| {
                let (i, k) = (4 * ty + i, 4 * tx + k);
                for (p, (by, bx)) in PHASES.into_iter().enumerate() {
                    let (yy, xx) = ((2 * i + by).wrapping_sub(1), (2 * k + bx).wrapping_sub(1));
                    if yy < s.h && xx < s.w {
                        out[(yy * s.w + xx) * c..][..c].copy_from_slice(&r[p * c..][..c]);
                    }
                }
            };
            output_tile(mrow, t, rows, put);
        }
        from_channels_last(&sc.out, c, &mut dxb[j * c * hw..][..c * hw]);
    }
}
