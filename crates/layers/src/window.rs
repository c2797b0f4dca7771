//! Sliding-window geometry shared by convolution and pooling: for every output position and
//! every kernel tap, the flat index of the input sample it reads. Taps that fall in zero
//! padding read a sentinel index one past the input plane, where callers append a fill value.

use candle_core::Tensor;

use crate::error::{LayerError, Result};
use crate::kernels::{self, ConvShape};

/// Sliding-window geometry along one axis.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Axis {
    pub n: usize,
    pub k: usize,
    pub s: usize,
    pub p: usize,
    pub d: usize,
    pub out: usize,
}

impl Axis {
    pub fn new(
        n: usize,
        k: usize,
        s: usize,
        p: usize,
        d: usize,
        ceil: bool,
        op: &'static str,
    ) -> Result<Self> {
        if k == 0 || s == 0 || d == 0 {
            return Err(LayerError::config(
                op,
                "kernel, stride and dilation must be >= 1",
            ));
        }
        let span = d * (k - 1) + 1;
        if n + 2 * p < span {
            return Err(LayerError::config(
                op,
                format!(
                    "input length {n} (+{p} padding per side) is shorter than the window {span}"
                ),
            ));
        }
        let room = n + 2 * p - span;
        let mut out = if ceil { room.div_ceil(s) } else { room / s } + 1;
        // The last window must start inside the input or the left padding (PyTorch's rule).
        if ceil && (out - 1) * s >= n + p {
            out -= 1;
        }
        Ok(Self { n, k, s, p, d, out })
    }

    /// Input position of tap `j` of window `o`, if it lies inside the input.
    pub fn pos(&self, o: usize, j: usize) -> Option<usize> {
        let i = (o * self.s + j * self.d) as isize - self.p as isize;
        (0..self.n as isize).contains(&i).then_some(i as usize)
    }

    /// Window size for average pooling: (with padding, without padding), clipped as PyTorch.
    pub fn avg_counts(&self, o: usize) -> (usize, usize) {
        let start = (o * self.s) as isize - self.p as isize;
        let end = (start + self.k as isize).min((self.n + self.p) as isize);
        let with_pad = (end - start) as usize;
        let inside = (end.min(self.n as isize) - start.max(0)) as usize;
        (with_pad, inside)
    }
}

/// The flat input index of every tap of every window, tap-major: `[kh * kw, out_h * out_w]`,
/// so the gathered columns are already in GEMM layout `[C * K, M]` (no transpose copies).
/// Taps in padding read the sentinel `h * w`.
pub(crate) fn window_map(ah: &Axis, aw: &Axis) -> Vec<u32> {
    let sentinel = (ah.n * aw.n) as u32;
    let mut map = Vec::with_capacity(ah.out * aw.out * ah.k * aw.k);
    for jh in 0..ah.k {
        for jw in 0..aw.k {
            for oh in 0..ah.out {
                for ow in 0..aw.out {
                    map.push(match (ah.pos(oh, jh), aw.pos(ow, jw)) {
                        (Some(r), Some(c)) => (r * aw.n + c) as u32,
                        _ => sentinel,
                    });
                }
            }
        }
    }
    map
}

/// `[N, C, K, M]` windows (K taps, M outputs) of `x: [N, C, H, W]`, padding read as `fill`;
/// also returns the extended flat input `[N, C, H * W + 1]` and the flat map `[K * M]`.
pub(crate) fn unfold(
    x: &Tensor,
    ah: &Axis,
    aw: &Axis,
    fill: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, c, h, w) = x.dims4()?;
    let flat = x.reshape((n, c, h * w))?;
    let pad = Tensor::full(fill, (n, c, 1), x.device())?.to_dtype(x.dtype())?;
    let ext = Tensor::cat(&[&flat, &pad], 2)?;
    let (m, k) = (ah.out * aw.out, ah.k * aw.k);
    let map = Tensor::new(window_map(ah, aw), x.device())?;
    let windows = ext.index_select(&map, 2)?.reshape((n, c, k, m))?;
    Ok((windows, ext, map))
}

/// Per-axis settings of a convolution: `[height, width]` pairs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvGeometry {
    pub padding: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl ConvGeometry {
    /// The same settings on both axes of a 2-D convolution.
    pub fn square(padding: usize, stride: usize, dilation: usize, groups: usize) -> Self {
        Self {
            padding: [padding; 2],
            stride: [stride; 2],
            dilation: [dilation; 2],
            groups,
        }
    }

    /// A 1-D convolution seen as 2-D with a unit height and a trivial height window.
    pub fn one_d(padding: usize, stride: usize, dilation: usize, groups: usize) -> Self {
        Self {
            padding: [0, padding],
            stride: [1, stride],
            dilation: [1, dilation],
            groups,
        }
    }

    /// The window geometry along height and width for a `size` input and a `kernel`.
    pub fn axes(
        &self,
        size: [usize; 2],
        kernel: [usize; 2],
        op: &'static str,
    ) -> Result<[Axis; 2]> {
        let axis = |i: usize| {
            Axis::new(
                size[i],
                kernel[i],
                self.stride[i],
                self.padding[i],
                self.dilation[i],
                false,
                op,
            )
        };
        Ok([axis(0)?, axis(1)?])
    }

    /// The kernels' description of a convolution of `n` samples, `c` input and `o` output
    /// channels, over the windows `ah`, `aw` (which hold the input and kernel sizes too).
    pub fn shape(&self, n: usize, c: usize, o: usize, [ah, aw]: [Axis; 2]) -> ConvShape {
        ConvShape {
            n,
            c,
            h: ah.n,
            w: aw.n,
            o,
            kh: ah.k,
            kw: aw.k,
            oh: ah.out,
            ow: aw.out,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
        }
    }
}

/// Convolution as im2col + GEMM: `x: [N, C, H, W]`, `w: [O, C / groups, KH, KW]`, zero padding;
/// forja's CPU kernel where it applies, else [`conv2d_candle`].
pub(crate) fn conv2d_im2col(
    x: &Tensor,
    w: &Tensor,
    g: &ConvGeometry,
    op: &'static str,
) -> Result<Tensor> {
    if kernels::applies(&[x, w]) {
        let axes = g.axes([x.dim(2)?, x.dim(3)?], [w.dim(2)?, w.dim(3)?], op)?;
        let shape = g.shape(x.dim(0)?, x.dim(1)?, w.dim(0)?, axes);
        return Ok(kernels::conv2d(x, w, shape)?);
    }
    conv2d_candle(x, w, g, op)
}

/// Convolution as im2col + GEMM built from `index_select` and `matmul`, whose backward passes
/// (and their backward passes) candle has, so the gradient is right for every stride,
/// dilation, padding and group count: the reference the kernels are tested against.
pub(crate) fn conv2d_candle(
    x: &Tensor,
    w: &Tensor,
    g: &ConvGeometry,
    op: &'static str,
) -> Result<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    let (o, cg, kh, kw) = w.dims4()?;
    let [ah, aw] = g.axes([h, wd], [kh, kw], op)?;
    let (cols, _, _) = unfold(x, &ah, &aw, 0.0)?;
    let (m, k, og) = (ah.out * aw.out, kh * kw, o / g.groups);
    debug_assert_eq!(c, cg * g.groups);
    // cols: [N, C, K, M] = [N, C * K, M] per group; y = W [O, C * K] x cols.
    let ys = (0..g.groups)
        .map(|gi| {
            let cols = cols.narrow(1, gi * cg, cg)?.reshape((n, cg * k, m))?;
            let wg = w.narrow(0, gi * og, og)?.reshape((og, cg * k))?;
            wg.broadcast_matmul(&cols)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let y = Tensor::cat(&ys, 1)?; // one group: returns it as is
    Ok(y.reshape((n, o, ah.out, aw.out))?)
}

/// Transposed convolution, the exact adjoint of [`conv2d_im2col`] on an output of `out_size`:
/// `x: [N, C_in, H, W]`, `w: [C_in, C_out / groups, KH, KW]`; forja's CPU kernel where it
/// applies, else [`conv_transpose2d_candle`].
pub(crate) fn conv_transpose2d_col2im(
    x: &Tensor,
    w: &Tensor,
    g: &ConvGeometry,
    out_size: [usize; 2],
    op: &'static str,
) -> Result<Tensor> {
    if !kernels::applies(&[x, w]) {
        return conv_transpose2d_candle(x, w, g, out_size, op);
    }
    let (n, cin, h, wd) = x.dims4()?;
    let (_, cog, kh, kw) = w.dims4()?;
    let [ah, aw] = transpose_axes(g, out_size, [h, wd], [kh, kw], op)?;
    // The adjoint of a convolution from the output (cog * groups channels) to x (cin).
    let shape = g.shape(n, cog * g.groups, cin, [ah, aw]);
    Ok(kernels::conv_transpose2d(x, w, shape)?)
}

/// The windows of the convolution a transposed convolution is the adjoint of: over the
/// output, cut to the input's size (output_padding may leave room for windows no input
/// sample feeds).
fn transpose_axes(
    g: &ConvGeometry,
    out_size: [usize; 2],
    [h, w]: [usize; 2],
    kernel: [usize; 2],
    op: &'static str,
) -> Result<[Axis; 2]> {
    let [mut ah, mut aw] = g.axes(out_size, kernel, op)?;
    if ah.out < h || aw.out < w {
        return Err(LayerError::config(
            op,
            format!("output size {out_size:?} is too small for input [{h}, {w}]"),
        ));
    }
    (ah.out, aw.out) = (h, w);
    Ok([ah, aw])
}

/// Transposed convolution as GEMM + col2im (`index_add`) from candle ops: the reference the
/// kernels are tested against.
pub(crate) fn conv_transpose2d_candle(
    x: &Tensor,
    w: &Tensor,
    g: &ConvGeometry,
    out_size: [usize; 2],
    op: &'static str,
) -> Result<Tensor> {
    let (n, cin, h, wd) = x.dims4()?;
    let (_, cog, kh, kw) = w.dims4()?;
    let [ah, aw] = transpose_axes(g, out_size, [h, wd], [kh, kw], op)?;
    let (m, k, cig) = (h * wd, kh * kw, cin / g.groups);
    let plane = out_size[0] * out_size[1];
    let map = Tensor::new(window_map(&ah, &aw), x.device())?;
    let x = x.reshape((n, cin, m))?;
    // cols = W^T [C_out * K, C_in] x x [C_in, M] = [N, C_out, K * M], scattered back by the map.
    let ys = (0..g.groups)
        .map(|gi| {
            let xg = x.narrow(1, gi * cig, cig)?;
            let wg = w.narrow(0, gi * cig, cig)?.reshape((cig, cog * k))?;
            let cols = wg.t()?.broadcast_matmul(&xg)?.reshape((n, cog, k * m))?;
            Tensor::zeros((n, cog, plane + 1), x.dtype(), x.device())?
                .index_add(&map, &cols, 2)?
                .narrow(2, 0, plane)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let y = Tensor::cat(&ys, 1)?; // one group: returns it as is
    Ok(y.reshape((n, cog * g.groups, out_size[0], out_size[1]))?)
}
