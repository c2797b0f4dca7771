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
    fn rows(&self) -> usize {
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

    /// Copies the windows of one sample's group of channels `x: [c/g, h, w]` into `cols`
    /// (`[rows, oh * ow]`), zeros where a tap falls into padding.
    fn im2col<T: Float>(&self, x: &[T], cols: &mut [T]) {
        let (m, [sh, sw], [ph, pw], [dh, dw]) =
            (self.plane_out(), self.stride, self.padding, self.dilation);
        let mut row = 0;
        for ci in 0..self.c / self.groups {
            let plane = &x[ci * self.h * self.w..(ci + 1) * self.h * self.w];
            for jh in 0..self.kh {
                let (ylo, yhi) = Self::range(self.h, self.oh, sh, ph, dh, jh);
                for jw in 0..self.kw {
                    let (xlo, xhi) = Self::range(self.w, self.ow, sw, pw, dw, jw);
                    let dst = &mut cols[row * m..(row + 1) * m];
                    row += 1;
                    for oy in 0..self.oh {
                        let line = &mut dst[oy * self.ow..(oy + 1) * self.ow];
                        if oy < ylo || oy >= yhi || xlo >= xhi {
                            line.fill(T::ZERO);
                            continue;
                        }
                        let iy = oy * sh + jh * dh - ph;
                        let src = &plane[iy * self.w..(iy + 1) * self.w];
                        line[..xlo].fill(T::ZERO);
                        line[xhi..].fill(T::ZERO);
                        let x0 = xlo * sw + jw * dw - pw;
                        if sw == 1 {
                            line[xlo..xhi].copy_from_slice(&src[x0..x0 + xhi - xlo]);
                        } else {
                            for (k, v) in line[xlo..xhi].iter_mut().enumerate() {
                                *v = src[x0 + k * sw];
                            }
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of [`Self::im2col`]: adds every column entry to the input sample it read.
    fn col2im<T: Float>(&self, cols: &[T], x: &mut [T]) {
        let (m, [sh, sw], [ph, pw], [dh, dw]) =
            (self.plane_out(), self.stride, self.padding, self.dilation);
        let mut row = 0;
        for ci in 0..self.c / self.groups {
            let plane = &mut x[ci * self.h * self.w..(ci + 1) * self.h * self.w];
            for jh in 0..self.kh {
                let (ylo, yhi) = Self::range(self.h, self.oh, sh, ph, dh, jh);
                for jw in 0..self.kw {
                    let (xlo, xhi) = Self::range(self.w, self.ow, sw, pw, dw, jw);
                    let src = &cols[row * m..(row + 1) * m];
                    row += 1;
                    if xlo >= xhi {
                        continue;
                    }
                    let x0 = xlo * sw + jw * dw - pw;
                    for oy in ylo..yhi {
                        let iy = oy * sh + jh * dh - ph;
                        let dst = &mut plane[iy * self.w..(iy + 1) * self.w];
                        let line = &src[oy * self.ow + xlo..oy * self.ow + xhi];
                        if sw == 1 {
                            // Contiguous: a loop the compiler vectorizes.
                            let dst = &mut dst[x0..x0 + line.len()];
                            dst.iter_mut().zip(line).for_each(|(d, &v)| *d += v);
                        } else {
                            for (k, &v) in line.iter().enumerate() {
                                dst[x0 + k * sw] += v;
                            }
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
