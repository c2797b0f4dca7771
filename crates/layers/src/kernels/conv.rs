//! Convolution as three custom ops on one geometry: the forward pass `y = conv(x, w)`, the
//! input gradient `dx = conv_bwd_data(dy, w)` (which is also the transposed convolution) and
//! the weight gradient `dw = conv_bwd_filter(x, dy)`. All three are bilinear, and each one's
//! gradient is made of the other two.
//!
//! Per sample and group: `cols = im2col(x)` is `[C/g * KH * KW, OH * OW]`, then
//! `y = W · cols`, `cols = Wᵀ · dy` (scattered back by col2im) and `dW += dy · colsᵀ`.
//! Where the output plane is small, the columns of a few samples sit side by side in one
//! product; where it is large, they are made and used a tile of output rows at a time, so
//! they stay in the cache. At stride 1 the input gradient is mostly a convolution of `dy` instead,
//! and a sample's forward product and weight gradient go one kernel row at a time over the
//! columns of one row of taps (`ConvShape::by_kernel_rows`).
//! 3x3 convolutions at stride 1 with "same" padding and at least 16 channels go by Winograd's
//! transforms instead ([`super::winograd`]), and so do the forward pass and input gradient of
//! 4x4 ones at stride 2 with padding 1 ([`stride2`], F(4x4, 2x2) on the input's phases).
//! Blocks of samples are spread over the kernels' threads; the weight gradient sums one buffer
//! per split, by [`DotSums`]' in-place dot products where they pay (f32 on AVX-512, up to 16
//! output channels per group), else by the `gemm` crate.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use std::mem::MaybeUninit;
use std::ops::Range;

use super::{
    add_transposed, check_extents, contiguous,
    dot::{DotSums, Segment},
    gemm_raw, matmul, matmul_col_major, output, par_chunks_mut_with, saved, slice, sum_over_batch,
    winograd::{self, stride2},
    write_copy, zeroed, Aligned, Float,
};

/// Everything a convolution's three ops need: `x: [n, c, h, w]`, `w: [o, c / groups, kh, kw]`,
/// `y: [n, o, oh, ow]`, per-axis stride, zero padding and dilation (`[height, width]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl ConvShape {
    fn x_shape(&self) -> (usize, usize, usize, usize) {
        (self.n, self.c, self.h, self.w)
    }
    fn w_shape(&self) -> (usize, usize, usize, usize) {
        (self.o, self.c / self.groups, self.kh, self.kw)
    }
    fn y_shape(&self) -> (usize, usize, usize, usize) {
        (self.n, self.o, self.oh, self.ow)
    }
    /// Rows of a group's column matrix: input channels per group times kernel taps.
    pub(super) fn rows(&self) -> usize {
        self.c / self.groups * self.kh * self.kw
    }
    fn plane_out(&self) -> usize {
        self.oh * self.ow
    }
    /// Per group: output channels, column rows, output positions.
    fn sizes(&self) -> (usize, usize, usize) {
        (self.o / self.groups, self.rows(), self.plane_out())
    }
    /// A 1x1 convolution at stride 1 without padding reads the input as its own columns.
    fn pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.stride == [1, 1]
            && self.padding == [0, 0]
            && (self.oh, self.ow) == (self.h, self.w)
    }

    /// A strided convolution reads its input through `stride` phases: the sub-planes of the
    /// rows `py, py + sh, ...` and columns `px, px + sw, ...`. Inside its phase a tap reads at
    /// stride 1, so its lines are contiguous. Each phase plane is `[hp, wp]` (the longest one);
    /// at stride 1 the only phase is the input itself.
    fn phase_dims(&self) -> (usize, usize) {
        let [sh, sw] = self.stride;
        (self.h.div_ceil(sh), self.w.div_ceil(sw))
    }

    /// Length of the scratch holding one group's phases; none at stride 1.
    pub(super) fn phases_len(&self) -> usize {
        let ([sh, sw], (hp, wp)) = (self.stride, self.phase_dims());
        if self.stride == [1, 1] {
            0
        } else {
            self.c / self.groups * sh * sw * hp * wp
        }
    }

    /// Along an axis of `n` inputs read at stride `s`, padding `p`, dilation `d`, for tap `j`:
    /// the phase it reads, the outputs `[lo, hi)` that fall inside the input, and the index
    /// within the phase of output `lo`'s input.
    fn axis(n: usize, out: usize, s: usize, p: usize, d: usize, j: usize) -> Axis {
        // Output o reads input o*s + r = (o + q)*s + phase.
        let r = (j * d) as isize - p as isize;
        let (phase, q) = (r.rem_euclid(s as isize) as usize, r.div_euclid(s as isize));
        let len = n.saturating_sub(phase).div_ceil(s) as isize;
        let hi = (len - q).clamp(0, out as isize);
        let lo = (-q).clamp(0, hi);
        Axis {
            phase,
            outs: (lo as usize, hi as usize),
            start: (lo + q).max(0) as usize,
        }
    }

    /// The taps of one group's channels in the order of the column rows, each with the
    /// output rows and columns it reads inside the input, and the index in the phases (the
    /// input at stride 1) of its first one. Computed once per op, shared by its samples.
    pub(super) fn taps(&self) -> Vec<Tap> {
        let ([sh, sw], [ph, pw], [dh, dw]) = (self.stride, self.padding, self.dilation);
        let (hp, wp) = self.phase_dims();
        let ys: Vec<Axis> = (0..self.kh)
            .map(|j| Self::axis(self.h, self.oh, sh, ph, dh, j))
            .collect();
        let xs: Vec<Axis> = (0..self.kw)
            .map(|j| Self::axis(self.w, self.ow, sw, pw, dw, j))
            .collect();
        let mut taps = Vec::with_capacity(self.rows());
        for ci in 0..self.c / self.groups {
            for y in &ys {
                for x in &xs {
                    let plane = ((ci * sh + y.phase) * sw + x.phase) * hp * wp;
                    let first = plane + y.start * wp + x.start;
                    taps.push(Tap {
                        ys: y.outs,
                        xs: x.outs,
                        first,
                        empty: y.outs.0 >= y.outs.1 || x.outs.0 >= x.outs.1,
                    });
                }
            }
        }
        taps
    }

    /// Splits one group's channels `x: [c/g, h, w]` into their phases (a no-op at stride 1).
    pub(super) fn split<'a, T: Float>(&self, x: &'a [T], phases: &'a mut [T]) -> &'a [T] {
        if self.stride == [1, 1] {
            return x;
        }
        if self.stride[1] == 2 {
            self.each_row_halves(phases, |(even, odd), ci, iy| {
                let src = &x[(ci * self.h + iy) * self.w..][..self.w];
                let pairs = src.chunks_exact(2);
                if let (Some(last), &[v]) = (even.last_mut(), pairs.remainder()) {
                    *last = v;
                }
                for ((e, o), p) in even.iter_mut().zip(odd.iter_mut()).zip(pairs) {
                    (*e, *o) = (p[0], p[1]);
                }
            });
            return phases;
        }
        self.each_phase_line(phases, |dst, ci, iy, px| {
            let src = &x[(ci * self.h + iy) * self.w + px..];
            dst.iter_mut()
                .zip(src.iter().step_by(self.stride[1]))
                .for_each(|(d, &v)| *d = v);
        });
        phases
    }

    /// Adds the phases back into the channels they were split from.
    fn merge_add<T: Float>(&self, phases: &mut [T], x: &mut [T]) {
        if self.stride[1] == 2 {
            self.each_row_halves(phases, |(even, odd), ci, iy| {
                let dst = &mut x[(ci * self.h + iy) * self.w..][..self.w];
                let mut pairs = dst.chunks_exact_mut(2);
                for ((&e, &o), p) in even.iter().zip(odd.iter()).zip(&mut pairs) {
                    p[0] += e;
                    p[1] += o;
                }
                if let (Some(&e), [v]) = (even.last(), pairs.into_remainder()) {
                    *v += e;
                }
            });
            return;
        }
        self.each_phase_line(phases, |line, ci, iy, px| {
            let dst = &mut x[(ci * self.h + iy) * self.w + px..];
            dst.iter_mut()
                .step_by(self.stride[1])
                .zip(line.iter())
                .for_each(|(d, &v)| *d += v);
        });
    }

    /// At stride 2 across, calls `f((even, odd), ci, iy)` with the two phase lines of input
    /// row `iy` of channel `ci` (its columns 0, 2, 4, ... and 1, 3, ...), so that a row is split
    /// or merged in one pass: a strided copy per phase line ran an element at a time (the
    /// split was 5% of M5's samples).
    fn each_row_halves<T: Float>(
        &self,
        phases: &mut [T],
        mut f: impl FnMut((&mut [T], &mut [T]), usize, usize),
    ) {
        let ([sh, _], (hp, wp)) = (self.stride, self.phase_dims());
        let (evens, odds) = (self.w.div_ceil(2), self.w / 2);
        for ci in 0..self.c / self.groups {
            for iy in 0..self.h {
                let (py, y) = (iy % sh, iy / sh);
                let planes = &mut phases[(ci * sh + py) * 2 * hp * wp..][..2 * hp * wp];
                let (even, odd) = planes.split_at_mut(hp * wp);
                f(
                    (&mut even[y * wp..][..evens], &mut odd[y * wp..][..odds]),
                    ci,
                    iy,
                );
            }
        }
    }

    /// Calls `f(line, ci, iy, px)` with the valid part of each phase line: the samples of
    /// input row `iy` of channel `ci` from column `px` on, every `sw`-th one.
    fn each_phase_line<T: Float>(
        &self,
        phases: &mut [T],
        mut f: impl FnMut(&mut [T], usize, usize, usize),
    ) {
        let ([sh, sw], (hp, wp)) = (self.stride, self.phase_dims());
        let mut plane = 0;
        for ci in 0..self.c / self.groups {
            for py in 0..sh {
                for px in 0..sw {
                    // A phase past the input's edge (an input narrower than the stride) is empty.
                    let len = self.w.saturating_sub(px).div_ceil(sw);
                    let rows = (py..self.h).step_by(sh).enumerate();
                    for (y, iy) in rows.filter(|_| len > 0) {
                        f(&mut phases[plane + y * wp..][..len], ci, iy, px);
                    }
                    plane += hp * wp;
                }
            }
        }
    }

    /// Copies the windows of output rows `y0..y1` of one sample's group of channels into
    /// `cols` (`rows` rows of `(y1 - y0) * ow`, each `ld` after the previous), zeros where a
    /// tap falls into padding. `src` is the channels as [`Self::split`] gives them.
    pub(super) fn im2col<T: Float>(
        &self,
        taps: &[Tap],
        src: &[T],
        (cols, ld): (&mut [T], usize),
        (y0, y1): (usize, usize),
    ) {
        let (ow, wp) = (self.ow, self.phase_dims().1);
        for (r, tap) in taps.iter().enumerate() {
            let dst = &mut cols[r * ld..][..(y1 - y0) * ow];
            let (ylo, yhi) = (tap.ys.0.max(y0), tap.ys.1.min(y1));
            if tap.empty || ylo >= yhi {
                dst.fill(T::ZERO);
                continue;
            }
            let first = tap.first + (ylo - tap.ys.0) * wp;
            let (ys, (xlo, xhi)) = ((ylo - y0, yhi - y0), tap.xs);
            dst[..ys.0 * ow].fill(T::ZERO);
            dst[ys.1 * ow..].fill(T::ZERO);
            if ow == wp {
                // The valid outputs, row after row, read one contiguous run: one copy, then
                // the entries that wrapped around a row's edge (into padding) are zeroed.
                let run = run(ys, tap.xs, ow);
                dst[run.clone()].copy_from_slice(&src[first..][..run.len()]);
                zero_edges(&mut dst[ys.0 * ow..ys.1 * ow], ow, tap.xs);
            } else {
                let lines = dst[ys.0 * ow..ys.1 * ow].chunks_exact_mut(ow);
                for (line, s) in lines.zip(src[first..].chunks(wp)) {
                    zero(&mut line[..xlo]);
                    zero(&mut line[xhi..]);
                    line[xlo..xhi].copy_from_slice(&s[..xhi - xlo]);
                }
            }
        }
    }

    /// The adjoint of [`Self::im2col`]: adds the column entries of output rows `y0..y1` to
    /// the input samples they read. `cols` and `phases` are scratch: the entries of `cols`
    /// that read padding may be zeroed.
    pub(super) fn col2im<T: Float>(
        &self,
        taps: &[Tap],
        cols: (&mut [T], usize),
        rows: (usize, usize),
        phases: &mut [T],
        x: &mut [T],
    ) {
        if self.stride == [1, 1] {
            self.scatter_add(taps, cols, rows, x);
        } else {
            phases.fill(T::ZERO);
            self.scatter_add(taps, cols, rows, phases);
            self.merge_add(phases, x);
        }
    }

    /// Adds every column entry into the phase entry (the input at stride 1) it was read from.
    fn scatter_add<T: Float>(
        &self,
        taps: &[Tap],
        (cols, ld): (&mut [T], usize),
        (y0, y1): (usize, usize),
        src: &mut [T],
    ) {
        let (ow, wp) = (self.ow, self.phase_dims().1);
        for (r, tap) in taps.iter().enumerate() {
            let (ylo, yhi) = (tap.ys.0.max(y0), tap.ys.1.min(y1));
            if tap.empty || ylo >= yhi {
                continue;
            }
            let first = tap.first + (ylo - tap.ys.0) * wp;
            let (ys, (xlo, xhi)) = ((ylo - y0, yhi - y0), tap.xs);
            let col = &mut cols[r * ld..][..ys.1 * ow];
            if ow == wp {
                // One contiguous sum over the whole run, after zeroing the entries that
                // wrapped around a row's edge (they would land on the neighbouring row).
                zero_edges(&mut col[ys.0 * ow..], ow, tap.xs);
                let run = run(ys, tap.xs, ow);
                let dst = &mut src[first..][..run.len()];
                dst.iter_mut().zip(&col[run]).for_each(|(d, &v)| *d += v);
            } else {
                let lines = col[ys.0 * ow..].chunks_exact(ow);
                for (line, d) in lines.zip(src[first..].chunks_mut(wp)) {
                    let d = &mut d[..xhi - xlo];
                    d.iter_mut()
                        .zip(&line[xlo..xhi])
                        .for_each(|(d, &v)| *d += v);
                }
            }
        }
    }

    /// Output rows per product at stride 1. A sample's columns (`rows * oh * ow`, 9.4 MB for
    /// M6's 64->32 layer at 64x64) are written, then read back by the product: beyond the
    /// caches both ends wait for memory. So large planes go in tiles of whole output rows,
    /// whose columns stay within [`TILE`] elements, and no narrower than [`MIN_COLS`].
    pub(super) fn tile_rows(&self) -> usize {
        let whole = self.oh.max(1);
        if self.block() > 1 || self.stride != [1, 1] || self.pointwise() {
            return whole;
        }
        let ow = self.ow.max(1);
        let fit = TILE / (self.rows() * ow).max(1);
        let most = fit.max(MIN_COLS.div_ceil(ow)).clamp(1, whole);
        // Tiles of even height: 32 rows in tiles of at most 28 are two of 16, not 28 and 4.
        whole.div_ceil(whole.div_ceil(most))
    }

    /// Samples per product: small output planes (a 7x7 map has 49 columns) make narrow
    /// matrices, on which the GEMM runs below its rate, so several samples' columns are put
    /// side by side until a product has at least [`MIN_COLS`] columns.
    fn block(&self) -> usize {
        MIN_COLS
            .div_ceil(self.plane_out().max(1))
            .clamp(1, self.n.max(1))
    }

    /// Where group `g`'s channels of sample `b` lie in `x: [n, c, h, w]` (or in `dx`).
    fn x_group(&self, b: usize, g: usize) -> Range<usize> {
        let (cg, plane) = (self.c / self.groups, self.h * self.w);
        let start = (b * self.c + g * cg) * plane;
        start..start + cg * plane
    }

    /// One thread's scratch: the columns of `tile_rows` output rows (none where a single
    /// pointwise sample is its own columns), the phases, and one group's `[o/g, nb * m]` block
    /// of `y` or `dy` (none when samples go one by one).
    fn scratch<T: Float>(&self, tile_rows: usize) -> (Aligned<T>, Vec<T>, Aligned<T>) {
        let (og, k, m) = self.sizes();
        let nb = self.block();
        let cols = if self.pointwise() && nb == 1 {
            0
        } else {
            k * (tile_rows * self.ow).min(m) * nb
        };
        let block = if nb == 1 { 0 } else { og * m * nb };
        (
            Aligned::zeroed(cols),
            vec![T::ZERO; self.phases_len()],
            Aligned::zeroed(block),
        )
    }

    /// For a block of `count` samples and group `g`, each output channel's plane as (its
    /// offset in the block's `[o/g, count * m]` matrix, its offset in the samples'
    /// `[count, o, m]` data).
    fn block_planes(&self, count: usize, g: usize) -> impl Iterator<Item = (usize, usize)> {
        let (og, m, o) = (self.o / self.groups, self.plane_out(), self.o);
        (0..count).flat_map(move |j| {
            (0..og).map(move |c| (c * count * m + j * m, (j * o + g * og + c) * m))
        })
    }

    /// The columns of output rows `y0..y1` of samples `first..first + count`, group `g`,
    /// side by side in `cols` (`[rows, count * (y1 - y0) * ow]`); a single pointwise sample
    /// is its own columns (its rows are never split).
    fn columns<'a, T: Float>(
        &self,
        (taps, phases, cols): (&[Tap], &mut [T], &'a mut [T]),
        x: &'a [T],
        (first, count, g): (usize, usize, usize),
        (y0, y1): (usize, usize),
    ) -> &'a [T] {
        if self.pointwise() && count == 1 {
            return &x[self.x_group(first, g)];
        }
        let width = self.width((y0, y1));
        for j in 0..count {
            let src = self.split(&x[self.x_group(first + j, g)], phases);
            self.im2col(taps, src, (&mut cols[j * width..], count * width), (y0, y1));
        }
        cols
    }

    /// The tiles of output rows ([`Self::tile_rows`]) as `(y0, y1)`.
    fn tiles(&self) -> impl Iterator<Item = (usize, usize)> {
        let (oh, t) = (self.oh, self.tile_rows());
        (0..oh).step_by(t).map(move |y0| (y0, (y0 + t).min(oh)))
    }

    /// Output positions in output rows `y0..y1` of one sample.
    fn width(&self, (y0, y1): (usize, usize)) -> usize {
        (y1 - y0) * self.ow
    }

    /// Whether the forward pass and the weight gradient go one kernel row at a time: at
    /// stride 1, a kernel row `ky` reads the same columns as row 0, `ky * dh` output rows
    /// further on. So the columns are made for one row of taps (`c/g * kw` rows, over the
    /// tile's output rows and the `(kh - 1) * dh` after them, a third of im2col's for a 3x3
    /// kernel) and each product is `kh` products over shifted views of them. Samples one at
    /// a time only (side by side, their columns would not be one strided matrix), in the
    /// scratch im2col would take.
    pub(super) fn by_kernel_rows(&self) -> bool {
        self.stride == [1, 1]
            && self.kh > 1
            && self.block() == 1
            && !self.pointwise()
            && self.tile_rows().min(self.oh) >= self.dilation[0]
    }

    /// Where [`Self::by_kernel_rows`] holds, the geometry whose columns it makes (one row of
    /// taps, over `(kh - 1) * dh` more output rows) and its taps.
    fn kernel_row_shape(&self) -> Option<(Self, Vec<Tap>)> {
        let shape = Self {
            kh: 1,
            oh: self.oh + (self.kh - 1) * self.dilation[0],
            dilation: [1, self.dilation[1]],
            ..*self
        };
        self.by_kernel_rows().then(|| (shape, shape.taps()))
    }

    /// `w: [o, c/g, kh, kw]` as `[kh, o, c/g * kw]`: kernel row `ky`'s `[o/g, c/g * kw]`
    /// matrix of group `g` at `(ky * groups + g) * o/g * c/g * kw`.
    fn kernel_rows<T: Float>(&self, w: &[T]) -> Vec<T> {
        let (cg, kh, kw) = (self.c / self.groups, self.kh, self.kw);
        let mut out = Vec::with_capacity(w.len());
        for ky in 0..kh {
            for oc in 0..self.o {
                for ci in 0..cg {
                    out.extend_from_slice(&w[((oc * cg + ci) * kh + ky) * kw..][..kw]);
                }
            }
        }
        out
    }

    /// The columns of one row of taps (`sh` and its `taps`, from [`Self::kernel_row_shape`])
    /// of one sample's group of channels `x`, for output rows `rows` and the `(kh - 1) * dh`
    /// after them, into `cols`; returns their row stride.
    fn kernel_row_columns<T: Float>(
        &self,
        (sh, taps): (&Self, &[Tap]),
        x: &[T],
        cols: &mut [T],
        rows: (usize, usize),
    ) -> usize {
        let ld = self.width(rows) + (self.kh - 1) * self.dilation[0] * self.ow;
        sh.im2col(taps, x, (cols, ld), (rows.0, rows.0 + ld / self.ow));
        ld
    }

    /// The weight gradient summed a kernel row at a time (`[kh, groups]` blocks, each
    /// `[o/g, c/g * kw]` column-major) as [`Self::backward_filter`] sums it otherwise (`groups`
    /// blocks of `[o/g, c/g * kh * kw]`, column-major).
    fn kernel_rows_to_taps<T: Float>(&self, by_rows: &[T]) -> Vec<T> {
        let (og, cg, kh, kw) = (self.o / self.groups, self.c / self.groups, self.kh, self.kw);
        let k = self.rows();
        let mut out = vec![T::ZERO; by_rows.len()];
        for (block, from) in by_rows.chunks_exact(og * cg * kw).enumerate() {
            let (ky, g) = (block / self.groups, block % self.groups);
            for (col, from) in from.chunks_exact(og).enumerate() {
                let (ci, kx) = (col / kw, col % kw);
                let to = g * og * k + ((ci * kh + ky) * kw + kx) * og;
                out[to..to + og].copy_from_slice(from);
            }
        }
        out
    }

    /// The forward product of output rows `rows` of one sample's group `g` (`x` its channels)
    /// a kernel row at a time ([`Self::by_kernel_rows`]) into `yg` (the tile's first output
    /// channel's row, planes `m` apart).
    #[allow(clippy::too_many_arguments)]
    fn forward_by_rows<T: Float>(
        &self,
        (sh, taps, wr): (&Self, &[Tap], &[T]),
        cols: &mut [T],
        x: &[T],
        g: usize,
        rows: (usize, usize),
        yg: &mut [MaybeUninit<T>],
    ) {
        let (og, m, dh) = (self.o / self.groups, self.plane_out(), self.dilation[0]);
        let (k, tn) = (sh.rows(), self.width(rows));
        let ld = self.kernel_row_columns((sh, taps), x, cols, rows);
        for ky in 0..self.kh {
            let a = &wr[(ky * self.groups + g) * og * k..][..og * k];
            let b = &cols[ky * dh * self.ow..k * ld];
            if ky == 0 {
                matmul((og, tn, k), yg, m, a, (k, 1), b, (ld, 1), false);
            } else {
                check_extents((og, tn, k), yg.len(), (m, 1), (a, (k, 1)), (b, (ld, 1)));
                // SAFETY: the extents are checked above; the product for `ky = 0` wrote
                // every element this one adds to, and `yg` is borrowed mutably.
                unsafe {
                    let (a, b) = ((a.as_ptr(), (k, 1)), (b.as_ptr(), (ld, 1)));
                    gemm_raw((og, tn, k), yg.as_mut_ptr().cast(), m, a, b, true);
                }
            }
        }
    }

    fn forward<T: Float>(&self, x: &[T], w: &[T]) -> Vec<T> {
        if winograd::applies::<T>(self) {
            return winograd::forward(self, x, w);
        }
        if stride2::applies(self) {
            return stride2::forward(self, x, w);
        }
        let ((og, k, m), taps, nb) = (self.sizes(), self.taps(), self.block());
        let by_rows = self
            .kernel_row_shape()
            .map(|(sh, taps)| (sh, taps, self.kernel_rows(w)));
        let write = |y: &mut [MaybeUninit<T>]| {
            par_chunks_mut_with(
                y,
                nb * self.o * m,
                || self.scratch(self.tile_rows()),
                |(cols, phases, out), i, yb| {
                    let (first, count) = (i * nb, (self.n - i * nb).min(nb));
                    let ld = count * m;
                    for g in 0..self.groups {
                        if let Some((sh, row_taps, wr)) = &by_rows {
                            let xg = &x[self.x_group(first, g)];
                            for rows in self.tiles() {
                                let yg = &mut yb[g * og * m + rows.0 * self.ow..];
                                let how = (sh, &row_taps[..], &wr[..]);
                                self.forward_by_rows(how, cols, xg, g, rows, yg);
                            }
                            continue;
                        }
                        let wg = &w[g * og * k..(g + 1) * og * k];
                        if count == 1 {
                            for rows in self.tiles() {
                                let scratch = (&taps[..], &mut phases[..], &mut cols[..]);
                                let cols = self.columns(scratch, x, (first, 1, g), rows);
                                let yg = &mut yb[g * og * m + rows.0 * self.ow..];
                                let tn = self.width(rows);
                                matmul((og, tn, k), yg, m, wg, (k, 1), cols, (tn, 1), false);
                            }
                            continue;
                        }
                        let scratch = (&taps[..], &mut phases[..], &mut cols[..]);
                        let cols = self.columns(scratch, x, (first, count, g), (0, self.oh));
                        matmul(
                            (og, ld, k),
                            &mut out[..],
                            ld,
                            wg,
                            (k, 1),
                            cols,
                            (ld, 1),
                            false,
                        );
                        for (at, to) in self.block_planes(count, g) {
                            write_copy(&mut yb[to..][..m], &out[at..][..m]);
                        }
                    }
                },
            )
        };
        // SAFETY: each block of samples gets every group's `og` planes, by one product per
        // tile of rows (the tiles cover the plane) or by one copy per plane of
        // `block_planes`, which covers every sample and channel.
        unsafe { output(self.n * self.o * m, write) }
    }

    /// Group `g`'s channels of samples `first..first + count` of `dy: [n, o, oh, ow]`, side
    /// by side in `buf` (`[o/g, count * m]`), or in place for one sample.
    fn dy_block<'a, T: Float>(
        &self,
        dy: &'a [T],
        buf: &'a mut [T],
        (first, count, g): (usize, usize, usize),
    ) -> &'a [T] {
        let (og, m) = (self.o / self.groups, self.plane_out());
        if count == 1 {
            return &dy[(first * self.o + g * og) * m..][..og * m];
        }
        let dy = &dy[first * self.o * m..];
        for (at, from) in self.block_planes(count, g) {
            buf[at..][..m].copy_from_slice(&dy[from..][..m]);
        }
        buf
    }

    /// At stride 1 the input gradient is itself a convolution: of `dy`, with the kernel
    /// flipped and its input and output channels swapped, padded by `(k - 1) * d - p`. Its
    /// columns (`o * kh * kw` rows of `h * w`) are copied from `dy`, where the transposed
    /// product writes `c * kh * kw` rows of `oh * ow` and scatters them back; it is taken where
    /// its columns are no more (M6's 64->32 layer at 64x64: half), and for a pointwise one
    /// (`dy` is its own columns), and wherever Winograd's transforms compute it (they make
    /// no columns). Taken at LeNet-5's 6->16 5x5 layer (five times more columns), it cost M1 a
    /// third of its speed.
    fn data_as_forward<T: Float>(&self) -> Option<Self> {
        let pad = |k: usize, d: usize, p: usize| ((k - 1) * d).checked_sub(p);
        let ([ph, pw], [dh, dw]) = (self.padding, self.dilation);
        let fewer = self.pointwise() || self.o * self.h * self.w <= self.c * self.plane_out();
        if self.stride != [1, 1] {
            return None;
        }
        let flipped = Self {
            c: self.o,
            h: self.oh,
            w: self.ow,
            o: self.c,
            oh: self.h,
            ow: self.w,
            padding: [pad(self.kh, dh, ph)?, pad(self.kw, dw, pw)?],
            ..*self
        };
        (fewer || winograd::applies::<T>(&flipped)).then_some(flipped)
    }

    /// The kernel of [`Self::data_as_forward`]: `w: [o, c/g, kh, kw]` flipped in both spatial
    /// axes, as `[c, o/g, kh, kw]`.
    fn flipped<T: Float>(&self, w: &[T]) -> Vec<T> {
        let (og, cg, taps) = (
            self.o / self.groups,
            self.c / self.groups,
            self.kh * self.kw,
        );
        let mut out = vec![T::ZERO; w.len()];
        for (at, tap_block) in w.chunks_exact(taps).enumerate() {
            let (g, oc, ci) = (at / (og * cg), at / cg % og, at % cg);
            let to = &mut out[((g * cg + ci) * og + oc) * taps..][..taps];
            to.iter_mut()
                .zip(tap_block.iter().rev())
                .for_each(|(d, &v)| *d = v);
        }
        out
    }

    /// `dx` from `dy: [n, o, oh, ow]` and `w` (the transposed convolution of `dy`): a
    /// convolution of its own where [`Self::data_as_forward`] says so, else `cols = Wᵀ · dy`
    /// scattered back by col2im, in the forward pass's tiles of rows (at 128x128, 32->64
    /// channels, whole planes took 19 MB of columns per thread and about 30% more time).
    fn backward_data<T: Float>(&self, dy: &[T], w: &[T]) -> Vec<T> {
        if stride2::applies(self) {
            return stride2::backward_data(self, dy, w);
        }
        if let Some(flipped) = self.data_as_forward::<T>() {
            return flipped.forward(dy, &self.flipped(w));
        }
        let ((og, k, m), taps, nb) = (self.sizes(), self.taps(), self.block());
        let plane = self.h * self.w;
        let write = |dx: &mut [MaybeUninit<T>]| {
            par_chunks_mut_with(
                dx,
                nb * self.c * plane,
                || self.scratch(self.tile_rows()),
                |(cols, phases, dyb), i, dxb| {
                    // The thread that sums into the block zeroes it first, while it is in
                    // its cache.
                    let dxb = zeroed(dxb);
                    let (first, count) = (i * nb, (self.n - i * nb).min(nb));
                    for g in 0..self.groups {
                        let dyg = self.dy_block(dy, dyb, (first, count, g));
                        let wg = &w[g * og * k..(g + 1) * og * k];
                        // Several samples side by side come whole; one large plane in tiles.
                        for rows in self.tiles() {
                            let (width, ld) = (self.width(rows), count * m);
                            let tn = count * width;
                            let dyt = (&dyg[rows.0 * self.ow..], (ld, 1));
                            matmul(
                                (k, tn, og),
                                &mut cols[..],
                                tn,
                                wg,
                                (1, k),
                                dyt.0,
                                dyt.1,
                                false,
                            );
                            for j in 0..count {
                                let cols = (&mut cols[j * width..], tn);
                                let dxg = &mut dxb[self.x_group(j, g)];
                                self.col2im(&taps, cols, rows, phases, dxg);
                            }
                        }
                    }
                },
            )
        };
        // SAFETY: every block is zeroed before it is summed into.
        unsafe { output(self.n * self.c * plane, write) }
    }

    /// The weight gradient of samples `start..end` a kernel row at a time
    /// ([`Self::by_kernel_rows`], `how` from [`Self::kernel_row_shape`]) into `dw` (`[kh,
    /// groups]` blocks of `[o/g, c/g * kw]`, column-major) or `dot`'s sums. The columns of
    /// several (sample, tile) pairs are made before their products, so that each of `dot`'s
    /// sums covers at least [`DOT_MIN_LEN`] positions: its 16 lanes per output are read and
    /// written once per sum (M2's 16-channel layer, forward and backward, 3-4% faster than
    /// with a sum per tile).
    fn filter_by_rows<T: Float>(
        &self,
        (sh, taps): &(Self, Vec<Tap>),
        (x, dy): (&[T], &[T]),
        (start, end): (usize, usize),
        dw: &mut [T],
        dot: &mut Option<DotSums>,
    ) {
        let (og, m, k1, dh) = (
            self.o / self.groups,
            self.plane_out(),
            sh.rows(),
            self.dilation[0],
        );
        let widest = self.width((0, self.tile_rows().min(self.oh)));
        // Each pair's columns start on a cache line (16 f32s), as `DotSums` reads best.
        let span = k1 * (widest + (self.kh - 1) * dh * self.ow).next_multiple_of(16);
        let per = if dot.is_some() {
            DOT_MIN_LEN.div_ceil(widest)
        } else {
            1
        };
        let mut cols = Aligned::zeroed(per * span);
        let pairs: Vec<(usize, (usize, usize))> = (start..end)
            .flat_map(|b| self.tiles().map(move |rows| (b, rows)))
            .collect();
        for g in 0..self.groups {
            for (c, chunk) in pairs.chunks(per).enumerate() {
                let segments: Vec<Segment> = chunk
                    .iter()
                    .enumerate()
                    .map(|(s, &(b, rows))| {
                        let xg = &x[self.x_group(b, g)];
                        let at = s * span;
                        let ld = self.kernel_row_columns((sh, taps), xg, &mut cols[at..], rows);
                        let a = (b * self.o + g * og) * m + rows.0 * self.ow;
                        Segment {
                            a,
                            b: at,
                            ldb: ld,
                            len: self.width(rows),
                        }
                    })
                    .collect();
                // Kernel row `ky`'s block of the gradient and the shift of its columns.
                let block = |ky: usize| ((ky * self.groups + g) * og * k1, ky * dh * self.ow);
                if let Some(dot) = dot {
                    let blocks: Vec<_> = (0..self.kh).map(block).collect();
                    dot.add(&blocks, (og, k1), (dy, m), &cols, &segments);
                    continue;
                }
                for (at, shift) in (0..self.kh).map(block) {
                    for (i, s) in segments.iter().enumerate() {
                        let a = (&dy[s.a..], (m, 1));
                        let b = (&cols[s.b + shift..s.b + k1 * s.ldb], (1, s.ldb));
                        let acc = c > 0 || i > 0;
                        matmul_col_major((og, k1, s.len), &mut dw[at..][..og * k1], a, b, acc);
                    }
                }
            }
        }
    }

    /// `dw` from `x` and `dy`, summed over the batch by [`sum_over_batch`].
    fn backward_filter<T: Float>(&self, x: &[T], dy: &[T]) -> Vec<T> {
        if winograd::applies::<T>(self) {
            return winograd::backward_filter(self, x, dy);
        }
        let ((og, k, m), taps, nb) = (self.sizes(), self.taps(), self.block());
        let by_rows = self.kernel_row_shape();
        // Each group's `[o/g, rows]` block is summed column-major: `cols` is read
        // transposed, which the `gemm` crate takes at full rate only into that layout
        // (see `gemm_raw`), and it is transposed once, at the end.
        let mut sum = sum_over_batch(self.n, self.o * k, |(start, end)| {
            let mut dw = vec![T::ZERO; self.o * k];
            let mut dot = DotSums::new::<T>(og, self.o * k);
            if let Some(how) = &by_rows {
                self.filter_by_rows(how, (x, dy), (start, end), &mut dw, &mut dot);
                return dot.map_or(dw, |dot| dot.sums());
            }
            let (mut cols, mut phases, mut dyb) = self.scratch(self.tile_rows());
            for first in (start..end).step_by(nb) {
                let count = (end - first).min(nb);
                for g in 0..self.groups {
                    let dyg = self.dy_block(dy, &mut dyb, (first, count, g));
                    let dwg = &mut dw[g * og * k..(g + 1) * og * k];
                    for rows in self.tiles() {
                        let scratch = (&taps[..], &mut phases[..], &mut cols[..]);
                        let cols = self.columns(scratch, x, (first, count, g), rows);
                        let (dyt, tn) = (&dyg[rows.0 * self.ow..], count * self.width(rows));
                        if let Some(dot) = &mut dot {
                            let whole = Segment {
                                a: 0,
                                b: 0,
                                ldb: tn,
                                len: tn,
                            };
                            let at = [(g * og * k, 0)];
                            dot.add(&at, (og, k), (dyt, count * m), cols, &[whole]);
                            continue;
                        }
                        let acc = first > start || rows.0 > 0;
                        let a = (dyt, (count * m, 1));
                        matmul_col_major((og, k, tn), dwg, a, (cols, (1, tn)), acc);
                    }
                }
            }
            dot.map_or(dw, |dot| dot.sums())
        });
        if by_rows.is_some() {
            sum = self.kernel_rows_to_taps(&sum);
        }
        let write = |dw: &mut [MaybeUninit<T>]| {
            for (from, to) in sum.chunks_exact(og * k).zip(dw.chunks_exact_mut(og * k)) {
                let to = to.as_mut_ptr().cast::<T>();
                // SAFETY: row `r` of the group's `[og, k]` block is inside `to`.
                unsafe { add_transposed(from, (og, k), |r| to.add(r * k), false) };
            }
        };
        // SAFETY: every group's block is written whole by `add_transposed`.
        unsafe { output(self.o * k, write) }
    }
}

/// The fewest columns a product gets by putting samples side by side (see
/// [`ConvShape::block`]): at 196 columns the `gemm` crate ran M5's 7x7 products at 103 GFLOP/s
/// on one AMD EPYC core, at 49 at 84.
const MIN_COLS: usize = 192;

/// The fewest positions each of [`DotSums`]' sums covers in [`ConvShape::filter_by_rows`].
const DOT_MIN_LEN: usize = 1024;

/// The most elements of a tile's columns (see [`ConvShape::tile_rows`]).
const TILE: usize = 1 << 17;

/// Zeroes a few elements (a row's padding, mostly one or none) without a call to `memset`.
fn zero<T: Float>(s: &mut [T]) {
    match s {
        [] => {}
        [v] => *v = T::ZERO,
        s => s.fill(T::ZERO),
    }
}

/// Zeroes the columns outside `[xlo, xhi)` of each `ow`-long row of `rows`. A tap that reads
/// inside the input along the whole row (a 3x3 kernel's middle column) has none.
fn zero_edges<T: Float>(rows: &mut [T], ow: usize, (xlo, xhi): (usize, usize)) {
    if xlo == 0 && xhi == ow {
        return;
    }
    for row in rows.chunks_exact_mut(ow) {
        zero(&mut row[..xlo]);
        zero(&mut row[xhi..]);
    }
}

/// Where a tap reads along one axis, as [`ConvShape::axis`] finds it.
struct Axis {
    phase: usize,
    outs: (usize, usize),
    start: usize,
}

/// One kernel tap of one input channel, as [`ConvShape::taps`] yields it.
pub(super) struct Tap {
    ys: (usize, usize),
    xs: (usize, usize),
    first: usize,
    empty: bool,
}

/// The outputs from the first valid one to the last, for valid rows `ys` and columns `xs` of
/// rows `ow` long.
fn run((ylo, yhi): (usize, usize), (xlo, xhi): (usize, usize), ow: usize) -> Range<usize> {
    ylo * ow + xlo..(yhi - 1) * ow + xhi
}

/// Which of the three products an op computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// `(x, w) -> y`
    Forward,
    /// `(dy, w) -> dx`
    Data,
    /// `(x, dy) -> dw`
    Filter,
}

#[derive(Debug, Clone, Copy)]
struct ConvOp {
    shape: ConvShape,
    pass: Pass,
}

impl ConvOp {
    fn apply(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let [a, b] = contiguous([a, b])?;
        a.apply_op2(&b, self)
    }

    fn with(self, pass: Pass) -> Self {
        Self { pass, ..self }
    }

    fn run<T: Float>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let s = &self.shape;
        let (a, b) = (
            slice::<T>(s1, l1, self.name())?,
            slice::<T>(s2, l2, self.name())?,
        );
        let (ea, eb, out) = match self.pass {
            Pass::Forward => (s.x_shape(), s.w_shape(), s.y_shape()),
            Pass::Data => (s.y_shape(), s.w_shape(), s.x_shape()),
            Pass::Filter => (s.x_shape(), s.y_shape(), s.w_shape()),
        };
        for (dims, want) in [(l1.dims(), ea), (l2.dims(), eb)] {
            if dims != [want.0, want.1, want.2, want.3] {
                candle_core::bail!(
                    "{}: expected a tensor of shape {want:?}, got {dims:?}",
                    self.name()
                );
            }
        }
        let v = match self.pass {
            Pass::Forward => s.forward(a, b),
            Pass::Data => s.backward_data(a, b),
            Pass::Filter => s.backward_filter(a, b),
        };
        Ok((T::to_cpu_storage_owned(v), Shape::from(out)))
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        match self.pass {
            Pass::Forward => "forja-conv2d",
            Pass::Data => "forja-conv2d-bwd-data",
            Pass::Filter => "forja-conv2d-bwd-filter",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::by_dtype!(self.name(), s1, run_op(self, s1, l1, s2, l2))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // An argument outside the graph (the input images) gets no gradient: for a first
        // layer that is a whole convolution saved (a sixth of LeNet-5's).
        let (need_a, need_b) = (a.track_op(), b.track_op());
        let (a, b) = (&saved(a), &saved(b));
        let (da, db) = match self.pass {
            // y = conv(x, w): dx = data(g, w), dw = filter(x, g)
            Pass::Forward => (
                need_a.then(|| self.with(Pass::Data).apply(g, b)),
                need_b.then(|| self.with(Pass::Filter).apply(a, g)),
            ),
            // dx = data(dy, w): d(dy) = conv(g, w), dw = filter(g, dy)
            Pass::Data => (
                need_a.then(|| self.with(Pass::Forward).apply(g, b)),
                need_b.then(|| self.with(Pass::Filter).apply(g, a)),
            ),
            // dw = filter(x, dy): dx = data(dy, g), d(dy) = conv(x, g)
            Pass::Filter => (
                need_a.then(|| self.with(Pass::Data).apply(b, g)),
                need_b.then(|| self.with(Pass::Forward).apply(a, g)),
            ),
        };
        Ok((da.transpose()?, db.transpose()?))
    }
}

fn run_op<T: Float>(
    op: &ConvOp,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    op.run::<T>(s1, l1, s2, l2)
}

/// `y = conv(x, w)` for a geometry the caller has checked.
pub(crate) fn conv2d(x: &Tensor, w: &Tensor, shape: ConvShape) -> Result<Tensor> {
    ConvOp {
        shape,
        pass: Pass::Forward,
    }
    .apply(x, w)
}

/// The transposed convolution of `x` (the `y` side of `shape`) with `w`: the `x` side.
pub(crate) fn conv_transpose2d(x: &Tensor, w: &Tensor, shape: ConvShape) -> Result<Tensor> {
    ConvOp {
        shape,
        pass: Pass::Data,
    }
    .apply(x, w)
}

/// The weight gradient `filter(x, dy)` as an op of its own (its backward pass is tested).
#[cfg(test)]
pub(crate) fn conv2d_weight_grad(x: &Tensor, dy: &Tensor, shape: ConvShape) -> Result<Tensor> {
    ConvOp {
        shape,
        pass: Pass::Filter,
    }
    .apply(x, dy)
}
