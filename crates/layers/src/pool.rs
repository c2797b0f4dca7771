//! Downsampling: max and average pooling (1-D and 2-D; overlapping windows, padding, dilation,
//! ceil_mode), max pooling that records argmax indices, max-unpooling, adaptive and global
//! average pooling, and LeNet-5's trainable subsampling.
//!
//! Windows are gathered with `index_select` from the flattened input extended by one sentinel
//! sample (`-inf` for max, `0` for average) that stands for padding. Max pooling then selects
//! each window's argmax with `gather`, so the gradient reaches exactly the recorded position
//! (the first maximum, as PyTorch) for any stride, overlap and padding.

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

use crate::error::{dims_of, LayerError, Result};
use crate::kernels;
use crate::window::{unfold, Axis};

/// Window settings per axis (`[height, width]`; 1-D pools use the width entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    /// Spacing between window taps (max pooling only).
    pub dilation: [usize; 2],
    /// Round the output size up, so a partial last window is kept.
    pub ceil_mode: bool,
    /// Average pooling divides by the window size including padding (PyTorch's default).
    pub count_include_pad: bool,
}

impl PoolConfig {
    /// Square `kernel`, stride equal to the kernel (non-overlapping windows), no padding.
    pub fn new(kernel: usize) -> Self {
        Self {
            kernel: [kernel; 2],
            stride: [kernel; 2],
            padding: [0; 2],
            dilation: [1; 2],
            ceil_mode: false,
            count_include_pad: true,
        }
    }
    pub fn stride(self, stride: usize) -> Self {
        Self {
            stride: [stride; 2],
            ..self
        }
    }
    pub fn padding(self, padding: usize) -> Self {
        Self {
            padding: [padding; 2],
            ..self
        }
    }
    pub fn dilation(self, dilation: usize) -> Self {
        Self {
            dilation: [dilation; 2],
            ..self
        }
    }
    pub fn ceil_mode(self, ceil_mode: bool) -> Self {
        Self { ceil_mode, ..self }
    }
    pub fn count_include_pad(self, count_include_pad: bool) -> Self {
        Self {
            count_include_pad,
            ..self
        }
    }

    pub(crate) fn axis(&self, i: usize, n: usize, op: &'static str) -> Result<Axis> {
        let span = self.dilation[i] * (self.kernel[i].max(1) - 1) + 1;
        if self.padding[i] > span / 2 {
            return Err(LayerError::config(
                op,
                format!(
                    "padding {} is more than half the window span {span}",
                    self.padding[i]
                ),
            ));
        }
        Axis::new(
            n,
            self.kernel[i],
            self.stride[i],
            self.padding[i],
            self.dilation[i],
            self.ceil_mode,
            op,
        )
    }

    /// The 1-D view: height 1 with a trivial window, width as configured.
    fn as_1d(&self) -> Self {
        Self {
            kernel: [1, self.kernel[1]],
            stride: [1, self.stride[1]],
            padding: [0, self.padding[1]],
            dilation: [1, self.dilation[1]],
            ..*self
        }
    }
}

fn check_float(x: &Tensor, op: &'static str) -> Result<()> {
    if !x.dtype().is_float() {
        return Err(LayerError::config(
            op,
            format!("needs a float tensor, got {:?}", x.dtype()),
        ));
    }
    Ok(())
}

/// 2-D max pooling of `x: [N, C, H, W]` that also returns, per output, the flat index
/// `h * W + w` of the maximum in its input plane (the input of [`max_unpool2d`]).
pub fn max_pool2d_with_indices(x: &Tensor, cfg: &PoolConfig) -> Result<(Tensor, Tensor)> {
    const OP: &str = "max_pool2d";
    let d = dims_of(x, 4, OP, "[N, C, H, W]")?;
    check_float(x, OP)?;
    let (n, c) = (d[0], d[1]);
    let (ah, aw) = (cfg.axis(0, d[2], OP)?, cfg.axis(1, d[3], OP)?);
    let (windows, ext, map) = unfold(x, &ah, &aw, f64::NEG_INFINITY)?;
    // The winning tap j of window o sits at map[j * m + o]: look it up in the flat map
    // rather than broadcasting the map to every (sample, channel).
    let m = ah.out * aw.out;
    let dev = x.device();
    let arg = windows.argmax(2)?;
    let slot = arg
        .broadcast_mul(&Tensor::new(m as u32, dev)?)?
        .broadcast_add(&Tensor::arange(0u32, m as u32, dev)?)?;
    let idx = map
        .index_select(&slot.flatten_all()?, 0)?
        .reshape((n, c, m))?;
    let y = ext.gather(&idx, 2)?.reshape((n, c, ah.out, aw.out))?;
    Ok((y, idx.reshape((n, c, ah.out, aw.out))?))
}

/// 2-D max pooling of `x: [N, C, H, W]` (forja's CPU kernel where it applies).
pub fn max_pool2d(x: &Tensor, cfg: &PoolConfig) -> Result<Tensor> {
    const OP: &str = "max_pool2d";
    if !kernels::applies(&[x]) {
        return Ok(max_pool2d_with_indices(x, cfg)?.0);
    }
    let d = dims_of(x, 4, OP, "[N, C, H, W]")?;
    let axes = [cfg.axis(0, d[2], OP)?, cfg.axis(1, d[3], OP)?];
    Ok(kernels::max_pool2d(x, axes)?)
}

/// 1-D max pooling of `x: [N, C, L]` (the `width` entries of `cfg`), with argmax positions.
pub fn max_pool1d_with_indices(x: &Tensor, cfg: &PoolConfig) -> Result<(Tensor, Tensor)> {
    dims_of(x, 3, "max_pool1d", "[N, C, L]")?;
    let (y, i) = max_pool2d_with_indices(&x.unsqueeze(2)?, &cfg.as_1d())?;
    Ok((y.squeeze(2)?, i.squeeze(2)?))
}

/// 1-D max pooling of `x: [N, C, L]`.
pub fn max_pool1d(x: &Tensor, cfg: &PoolConfig) -> Result<Tensor> {
    dims_of(x, 3, "max_pool1d", "[N, C, L]")?;
    Ok(max_pool2d(&x.unsqueeze(2)?, &cfg.as_1d())?.squeeze(2)?)
}

/// 2-D average pooling of `x: [N, C, H, W]` (no dilation, as in PyTorch).
pub fn avg_pool2d(x: &Tensor, cfg: &PoolConfig) -> Result<Tensor> {
    const OP: &str = "avg_pool2d";
    let d = dims_of(x, 4, OP, "[N, C, H, W]")?;
    check_float(x, OP)?;
    if cfg.dilation != [1, 1] {
        return Err(LayerError::config(OP, "average pooling has no dilation"));
    }
    let (n, c) = (d[0], d[1]);
    let (ah, aw) = (cfg.axis(0, d[2], OP)?, cfg.axis(1, d[3], OP)?);
    let (windows, _, _) = unfold(x, &ah, &aw, 0.0)?;
    let mut inv = Vec::with_capacity(ah.out * aw.out);
    for oh in 0..ah.out {
        let (ph, ih) = ah.avg_counts(oh);
        for ow in 0..aw.out {
            let (pw, iw) = aw.avg_counts(ow);
            let count = if cfg.count_include_pad {
                ph * pw
            } else {
                ih * iw
            };
            inv.push(1.0 / count as f64);
        }
    }
    let inv = Tensor::new(inv, x.device())?.to_dtype(x.dtype())?;
    Ok(windows
        .sum(2)?
        .broadcast_mul(&inv)?
        .reshape((n, c, ah.out, aw.out))?)
}

/// 1-D average pooling of `x: [N, C, L]`.
pub fn avg_pool1d(x: &Tensor, cfg: &PoolConfig) -> Result<Tensor> {
    dims_of(x, 3, "avg_pool1d", "[N, C, L]")?;
    Ok(avg_pool2d(&x.unsqueeze(2)?, &cfg.as_1d())?.squeeze(2)?)
}

/// Places each value of `y: [N, C, h, w]` at its recorded flat `indices` in a zero
/// `[N, C, H, W]` plane (`output_size = [H, W]`): the inverse of max pooling's selection.
pub fn max_unpool2d(y: &Tensor, indices: &Tensor, output_size: [usize; 2]) -> Result<Tensor> {
    const OP: &str = "max_unpool2d";
    let d = dims_of(y, 4, OP, "[N, C, h, w]")?;
    if indices.dims() != d {
        return Err(LayerError::shape(
            OP,
            format!("indices of the pooled shape {d:?}"),
            indices.dims(),
        ));
    }
    let (n, c, m) = (d[0], d[1], d[2] * d[3]);
    let plane = output_size[0] * output_size[1];
    let idx = indices.to_dtype(DType::U32)?.reshape((n, c, m))?;
    if m > 0 {
        let top = idx.max_all()?.to_scalar::<u32>()? as usize;
        if top >= plane {
            return Err(LayerError::config(
                OP,
                format!("index {top} does not fit an output plane of {output_size:?}"),
            ));
        }
    }
    // One flat index per value over all planes: `index_add` has the backward pass we need
    // (candle's scatter_add backward fails when the source is smaller than the target).
    let offsets = Tensor::arange_step(0u32, (n * c * plane) as u32, plane as u32, y.device())?;
    let global = idx
        .reshape((n * c, m))?
        .broadcast_add(&offsets.reshape((n * c, 1))?)?;
    let zeros = Tensor::zeros(n * c * plane, y.dtype(), y.device())?;
    Ok(zeros
        .index_add(&global.flatten_all()?, &y.flatten_all()?, 0)?
        .reshape((n, c, output_size[0], output_size[1]))?)
}

/// `[out, n]` averaging matrix of adaptive pooling: row `o` averages `floor(o n / out)` up to
/// `ceil((o + 1) n / out)`, the windows PyTorch uses.
fn adaptive_matrix(n: usize, out: usize) -> Vec<f64> {
    let mut m = vec![0.0; out * n];
    for o in 0..out {
        let (start, end) = (o * n / out, ((o + 1) * n).div_ceil(out));
        for i in start..end {
            m[o * n + i] = 1.0 / (end - start) as f64;
        }
    }
    m
}

/// Average pooling of `x: [N, C, H, W]` to a fixed `[out_h, out_w]` whatever the input size
/// (AlexNet's 6x6 before the classifier), as two small matrix products.
pub fn adaptive_avg_pool2d(x: &Tensor, [oh, ow]: [usize; 2]) -> Result<Tensor> {
    const OP: &str = "adaptive_avg_pool2d";
    let d = dims_of(x, 4, OP, "[N, C, H, W]")?;
    if oh == 0 || ow == 0 || d[2] == 0 || d[3] == 0 {
        return Err(LayerError::config(
            OP,
            format!("cannot pool {d:?} to [{oh}, {ow}]"),
        ));
    }
    let (h, w) = (d[2], d[3]);
    let dev = x.device();
    let ph = Tensor::from_vec(adaptive_matrix(h, oh), (oh, h), dev)?.to_dtype(x.dtype())?;
    let pw = Tensor::from_vec(adaptive_matrix(w, ow), (ow, w), dev)?.to_dtype(x.dtype())?;
    Ok(ph.broadcast_matmul(&x.broadcast_matmul(&pw.t()?)?)?)
}

/// Mean over the spatial dims of `x: [N, C, H, W]`, giving `[N, C]` (ResNet/GoogLeNet heads).
pub fn global_avg_pool2d(x: &Tensor) -> Result<Tensor> {
    dims_of(x, 4, "global_avg_pool2d", "[N, C, H, W]")?;
    Ok(x.mean((2, 3))?)
}

macro_rules! pool_module {
    ($name:ident, $func:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy)]
        pub struct $name(pub PoolConfig);

        impl Module for $name {
            fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
                Ok($func(x, &self.0)?)
            }
        }
    };
}

pool_module!(MaxPool2d, max_pool2d, "2-D max pooling layer.");
pool_module!(MaxPool1d, max_pool1d, "1-D max pooling layer.");
pool_module!(AvgPool2d, avg_pool2d, "2-D average pooling layer.");
pool_module!(AvgPool1d, avg_pool1d, "1-D average pooling layer.");

/// Adaptive average pooling to a fixed output size.
#[derive(Debug, Clone, Copy)]
pub struct AdaptiveAvgPool2d(pub [usize; 2]);

impl Module for AdaptiveAvgPool2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(adaptive_avg_pool2d(x, self.0)?)
    }
}

/// LeNet-5's subsampling (S2, S4): per channel, the sum of each non-overlapping `k x k` window
/// times a trainable coefficient plus a trainable bias — 2 parameters per channel.
#[derive(Debug, Clone)]
pub struct Subsampling {
    coef: Tensor,
    bias: Tensor,
    kernel: usize,
}

impl Subsampling {
    /// `channels` coefficient/bias pairs named `weight` and `bias`; coefficients start at
    /// 1/(k*k) (an average pool), biases at 0.
    pub fn new(channels: usize, kernel: usize, vb: VarBuilder) -> Result<Self> {
        let init = candle_nn::Init::Const(1.0 / (kernel * kernel) as f64);
        let coef = vb.get_with_hints(channels, "weight", init)?;
        let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self::from_weights(coef, bias, kernel))
    }

    pub fn from_weights(coef: Tensor, bias: Tensor, kernel: usize) -> Self {
        Self { coef, bias, kernel }
    }
}

impl Module for Subsampling {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let k = self.kernel;
        let sums = (avg_pool2d(x, &PoolConfig::new(k))? * (k * k) as f64)?;
        let c = self.coef.elem_count();
        sums.broadcast_mul(&self.coef.reshape((1, c, 1, 1))?)?
            .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)
    }
}
