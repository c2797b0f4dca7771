//! Convolution as three custom ops on one geometry: the forward pass `y = conv(x, w)`, the
//! input gradient `dx = conv_bwd_data(dy, w)` (which is also the transposed convolution) and
//! the weight gradient `dw = conv_bwd_filter(x, dy)`. All three are bilinear, and each one's
//! gradient is made of the other two.
//!
//! Per sample and group: `cols = im2col(x)` is `[C/g * KH * KW, OH * OW]`, then
//! `y = W · cols`, `cols = Wᵀ · dy` (scattered back by col2im) and `dW += dy · colsᵀ`.
//! Samples are spread over rayon's threads; the weight gradient sums one buffer per split.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous, matmul, saved, slice, Float};

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
    /// Per group: input channels, output channels, column rows, output positions.
    fn sizes(&self) -> (usize, usize, usize, usize) {
        let (g, m) = (self.groups, self.plane_out());
        (self.c / g, self.o / g, self.rows(), m)
    }
    /// A 1x1 convolution at stride 1 without padding reads the input as its own columns.
    fn pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.stride == [1, 1]
            && self.padding == [0, 0]
            && (self.oh, self.ow) == (self.h, self.w)
    }

    /// For output index `o` along an axis and tap `j`, the input index, if inside.
    fn range(n: usize, out: usize, s: usize, p: usize, d: usize, j: usize) -> (usize, usize) {
        // Outputs o with 0 <= o*s + j*d - p < n form one interval [lo, hi).
        let off = j * d;
        let lo = if off >= p { 0 } else { (p - off).div_ceil(s) };
        let hi = if n + p > off {
            ((n + p - off).div_ceil(s)).min(out)
        } else {
            0
        };
        (lo.min(hi), hi)
    }

    /// Whether every tap's valid outputs, read row after row, are one contiguous run of the
    /// input plane: stride 1 with output rows as long as the input's ("same" padding).
    fn banded(&self) -> bool {
        self.stride == [1, 1] && self.ow == self.w
    }

    /// The taps of one group's channels in the order of the column rows, each with the
    /// output rows `[ylo, yhi)` and columns `[xlo, xhi)` it reads inside the input, and the
    /// input index of its output `(ylo, xlo)` (meaningful only if both are non-empty).
    fn taps(&self) -> impl Iterator<Item = Tap> + '_ {
        let ([sh, sw], [ph, pw], [dh, dw]) = (self.stride, self.padding, self.dilation);
        let plane = self.h * self.w;
        (0..self.c / self.groups).flat_map(move |ci| {
            (0..self.kh).flat_map(move |jh| {
                let (ylo, yhi) = Self::range(self.h, self.oh, sh, ph, dh, jh);
                (0..self.kw).map(move |jw| {
                    let (xlo, xhi) = Self::range(self.w, self.ow, sw, pw, dw, jw);
                    let empty = ylo >= yhi || xlo >= xhi;
                    let first = if empty {
                        0
                    } else {
                        (ylo * sh + jh * dh - ph) * self.w + xlo * sw + jw * dw - pw
                    };
                    Tap {
                        ys: (ylo, yhi),
                        xs: (xlo, xhi),
                        first: ci * plane + first,
                        empty,
                    }
                })
            })
        })
    }

    /// Copies the windows of one sample's group of channels `x: [c/g, h, w]` into `cols`
    /// (`[rows, oh * ow]`), zeros where a tap falls into padding.
    pub(super) fn im2col<T: Float>(&self, x: &[T], cols: &mut [T]) {
        let (m, ow, sw) = (self.plane_out(), self.ow, self.stride[1]);
        for (tap, dst) in self.taps().zip(cols.chunks_exact_mut(m.max(1))) {
            let ((ylo, yhi), (xlo, xhi)) = (tap.ys, tap.xs);
            if tap.empty {
                dst.fill(T::ZERO);
            } else if self.banded() {
                // One copy of the whole run; the entries that wrapped around a row's edge
                // (taps in the left or right padding) are zeroed after it.
                let run = tap.run(ow);
                dst[run.clone()].copy_from_slice(&x[tap.first..][..run.len()]);
                dst[..run.start].fill(T::ZERO);
                dst[run.end..].fill(T::ZERO);
                for line in dst[ylo * ow..yhi * ow].chunks_exact_mut(ow) {
                    zero(&mut line[..xlo]);
                    zero(&mut line[xhi..]);
                }
            } else {
                dst[..ylo * ow].fill(T::ZERO);
                dst[yhi * ow..].fill(T::ZERO);
                let (lines, rows) = (dst[ylo * ow..yhi * ow].chunks_exact_mut(ow), ylo..yhi);
                for (line, oy) in lines.zip(rows) {
                    let src = &x[tap.first + (oy - ylo) * self.stride[0] * self.w..];
                    line[..xlo].fill(T::ZERO);
                    line[xhi..].fill(T::ZERO);
                    if sw == 1 {
                        line[xlo..xhi].copy_from_slice(&src[..xhi - xlo]);
                    } else {
                        for (k, v) in line[xlo..xhi].iter_mut().enumerate() {
                            *v = src[k * sw];
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of [`Self::im2col`]: adds every column entry to the input sample it read.
    /// `cols` is scratch: the entries that read padding may be overwritten.
    pub(super) fn col2im<T: Float>(&self, cols: &mut [T], x: &mut [T]) {
        let (m, ow, sw) = (self.plane_out(), self.ow, self.stride[1]);
        for (tap, src) in self.taps().zip(cols.chunks_exact_mut(m.max(1))) {
            let ((ylo, yhi), (xlo, xhi)) = (tap.ys, tap.xs);
            if tap.empty {
                continue;
            }
            if self.banded() {
                // One contiguous sum over the whole run, after zeroing the entries that
                // wrapped around a row's edge (they would land on the neighbouring row).
                for line in src[ylo * ow..yhi * ow].chunks_exact_mut(ow) {
                    zero(&mut line[..xlo]);
                    zero(&mut line[xhi..]);
                }
                let run = tap.run(ow);
                let dst = &mut x[tap.first..][..run.len()];
                dst.iter_mut().zip(&src[run]).for_each(|(d, &v)| *d += v);
            } else {
                for oy in ylo..yhi {
                    let dst = &mut x[tap.first + (oy - ylo) * self.stride[0] * self.w..];
                    let line = &src[oy * ow + xlo..oy * ow + xhi];
                    if sw == 1 {
                        // Contiguous: a loop the compiler vectorizes.
                        let dst = &mut dst[..line.len()];
                        dst.iter_mut().zip(line).for_each(|(d, &v)| *d += v);
                    } else {
                        for (k, &v) in line.iter().enumerate() {
                            dst[k * sw] += v;
                        }
                    }
                }
            }
        }
    }

    fn forward<T: Float>(&self, x: &[T], w: &[T]) -> Vec<T> {
        let (cg, og, k, m) = self.sizes();
        let mut y = vec![T::ZERO; self.n * self.o * m];
        let cols_len = if self.pointwise() { 0 } else { k * m };
        y.par_chunks_mut(self.o * m.max(1))
            .enumerate()
            .for_each_init(
                || vec![T::ZERO; cols_len],
                |cols, (b, yb)| {
                    for g in 0..self.groups {
                        let xg =
                            &x[(b * self.c + g * cg) * self.h * self.w..][..cg * self.h * self.w];
                        let cols: &[T] = if self.pointwise() {
                            xg
                        } else {
                            self.im2col(xg, cols);
                            cols
                        };
                        let wg = &w[g * og * k..(g + 1) * og * k];
                        matmul(
                            (og, m, k),
                            &mut yb[g * og * m..],
                            m,
                            wg,
                            (k, 1),
                            cols,
                            (m, 1),
                            false,
                        );
                    }
                },
            );
        y
    }

    /// `dx` from `dy: [n, o, oh, ow]` and `w` (the transposed convolution of `dy`).
    fn backward_data<T: Float>(&self, dy: &[T], w: &[T]) -> Vec<T> {
        let (cg, og, k, m) = self.sizes();
        let plane = self.h * self.w;
        let mut dx = vec![T::ZERO; self.n * self.c * plane];
        dx.par_chunks_mut(self.c * plane.max(1))
            .enumerate()
            .for_each_init(
                || vec![T::ZERO; k * m],
                |cols, (b, dxb)| {
                    for g in 0..self.groups {
                        let dyg = &dy[(b * self.o + g * og) * m..][..og * m];
                        let wg = &w[g * og * k..(g + 1) * og * k];
                        let dxg = &mut dxb[g * cg * plane..(g + 1) * cg * plane];
                        if self.pointwise() {
                            matmul((k, m, og), dxg, m, wg, (1, k), dyg, (m, 1), false);
                        } else {
                            matmul((k, m, og), cols, m, wg, (1, k), dyg, (m, 1), false);
                            self.col2im(cols, dxg);
                        }
                    }
                },
            );
        dx
    }

    /// `dw` from `x` and `dy`, summed over the batch: one partial sum per thread over a fixed
    /// split of the batch, added in order, so the result does not depend on scheduling (runs
    /// resume bitwise).
    fn backward_filter<T: Float>(&self, x: &[T], dy: &[T]) -> Vec<T> {
        let (cg, og, k, m) = self.sizes();
        let per_part = self
            .n
            .div_ceil(rayon::current_num_threads().clamp(1, self.n.max(1)));
        let parts: Vec<Vec<T>> = (0..self.n)
            .step_by(per_part.max(1))
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|start| {
                let mut dw = vec![T::ZERO; self.o * k];
                let mut cols = vec![T::ZERO; if self.pointwise() { 0 } else { k * m }];
                for b in start..(start + per_part).min(self.n) {
                    for g in 0..self.groups {
                        let xg =
                            &x[(b * self.c + g * cg) * self.h * self.w..][..cg * self.h * self.w];
                        let cols: &[T] = if self.pointwise() {
                            xg
                        } else {
                            self.im2col(xg, &mut cols);
                            &cols
                        };
                        let dyg = &dy[(b * self.o + g * og) * m..][..og * m];
                        let dwg = &mut dw[g * og * k..(g + 1) * og * k];
                        matmul((og, k, m), dwg, k, dyg, (m, 1), cols, (1, m), b > start);
                    }
                }
                dw
            })
            .collect();
        let mut parts = parts.into_iter();
        let mut dw = parts.next().unwrap_or_else(|| vec![T::ZERO; self.o * k]);
        for p in parts {
            dw.iter_mut().zip(&p).for_each(|(a, &b)| *a += b);
        }
        dw
    }
}

/// Zeroes a few elements (a row's padding, mostly one or none) without a call to `memset`.
fn zero<T: Float>(s: &mut [T]) {
    match s {
        [] => {}
        [v] => *v = T::ZERO,
        s => s.fill(T::ZERO),
    }
}

/// One kernel tap of one input channel, as [`ConvShape::taps`] yields it.
struct Tap {
    ys: (usize, usize),
    xs: (usize, usize),
    first: usize,
    empty: bool,
}

impl Tap {
    /// The outputs from the first valid one to the last, in a plane whose rows are `ow` long.
    fn run(&self, ow: usize) -> std::ops::Range<usize> {
        self.ys.0 * ow + self.xs.0..(self.ys.1 - 1) * ow + self.xs.1
    }
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
