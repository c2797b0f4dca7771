//! Transposed convolutions (the adjoint of [`crate::conv`]): upsampling with learned kernels.
//!
//! Computed as GEMM + col2im (`index_add`), the exact adjoint of forja's im2col convolution,
//! from differentiable candle ops — which gives the 1-D variant the backward pass candle lacks.
//! Semantics (padding, output_padding, groups, weight layout) are PyTorch's.

use candle_core::Tensor;

use crate::conv::{add_bias, check_geometry, weighted_layer, WeightLayout};
use crate::error::{dims_of, LayerError, Result};
use crate::init::Init;
use crate::window::{conv_transpose2d_col2im, ConvGeometry};

/// Settings of a transposed convolution; output length
/// `(L - 1) * stride - 2 * padding + dilation * (K - 1) + output_padding + 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvTransposeConfig {
    pub padding: usize,
    pub output_padding: usize,
    pub stride: usize,
    pub dilation: usize,
    pub groups: usize,
    pub bias: bool,
    pub init: Init,
}

impl Default for ConvTransposeConfig {
    fn default() -> Self {
        Self {
            padding: 0,
            output_padding: 0,
            stride: 1,
            dilation: 1,
            groups: 1,
            bias: true,
            init: Init::Torch,
        }
    }
}

impl ConvTransposeConfig {
    pub fn padding(self, padding: usize) -> Self {
        Self { padding, ..self }
    }
    pub fn output_padding(self, output_padding: usize) -> Self {
        Self {
            output_padding,
            ..self
        }
    }
    pub fn stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }
    pub fn dilation(self, dilation: usize) -> Self {
        Self { dilation, ..self }
    }
    pub fn groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }
    pub fn bias(self, bias: bool) -> Self {
        Self { bias, ..self }
    }
    pub fn init(self, init: Init) -> Self {
        Self { init, ..self }
    }

    /// Output length along one axis of input length `n` and kernel `k`; `None` where there is
    /// none (an empty input or kernel, or padding that removes everything).
    pub fn out_len(&self, n: usize, k: usize) -> Option<usize> {
        (n.checked_sub(1)? * self.stride
            + self.dilation * k.checked_sub(1)?
            + self.output_padding
            + 1)
        .checked_sub(2 * self.padding)
        .filter(|&l| l > 0)
    }

    fn validate(&self, op: &'static str, c_in: usize, c_out: usize) -> Result<()> {
        check_geometry(op, self.stride, self.dilation, self.groups, c_in, c_out)?;
        if self.output_padding >= self.stride.max(self.dilation) {
            return Err(LayerError::config(
                op,
                format!(
                    "output_padding {} must be smaller than stride {} or dilation {}",
                    self.output_padding, self.stride, self.dilation
                ),
            ));
        }
        Ok(())
    }
}

fn check(x: &Tensor, w: &Tensor, cfg: &ConvTransposeConfig, op: &'static str) -> Result<()> {
    cfg.validate(op, x.dim(1)?, w.dim(1)? * cfg.groups)?;
    if x.dim(1)? != w.dim(0)? {
        return Err(LayerError::shape(
            op,
            format!("{} input channels (weight {:?})", w.dim(0)?, w.dims()),
            x.dims(),
        ));
    }
    Ok(())
}

fn out_len(cfg: &ConvTransposeConfig, n: usize, k: usize, op: &'static str) -> Result<usize> {
    cfg.out_len(n, k).ok_or_else(|| {
        LayerError::config(
            op,
            format!(
                "no output for input length {n}, kernel {k} and padding {}",
                cfg.padding
            ),
        )
    })
}

/// Transposed 1-D convolution of `x: [N, C_in, L]` with `weight: [C_in, C_out / groups, K]`.
pub fn conv_transpose1d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: &ConvTransposeConfig,
) -> Result<Tensor> {
    const OP: &str = "conv_transpose1d";
    let xd = dims_of(x, 3, OP, "[N, C, L]")?.to_vec();
    let k = dims_of(weight, 3, OP, "weight [C_in, C_out / groups, K]")?[2];
    check(x, weight, cfg, OP)?;
    let geometry = ConvGeometry::one_d(cfg.padding, cfg.stride, cfg.dilation, cfg.groups);
    let size = [1, out_len(cfg, xd[2], k, OP)?];
    let y = conv_transpose2d_col2im(&x.unsqueeze(2)?, &weight.unsqueeze(2)?, &geometry, size, OP)?;
    add_bias(y.squeeze(2)?, bias, 3)
}

/// Transposed 2-D convolution of `x: [N, C_in, H, W]` with `weight: [C_in, C_out / groups, KH, KW]`.
pub fn conv_transpose2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: &ConvTransposeConfig,
) -> Result<Tensor> {
    const OP: &str = "conv_transpose2d";
    let xd = dims_of(x, 4, OP, "[N, C, H, W]")?.to_vec();
    let wd = dims_of(weight, 4, OP, "weight [C_in, C_out / groups, KH, KW]")?.to_vec();
    check(x, weight, cfg, OP)?;
    let geometry = ConvGeometry::square(cfg.padding, cfg.stride, cfg.dilation, cfg.groups);
    let size = [
        out_len(cfg, xd[2], wd[2], OP)?,
        out_len(cfg, xd[3], wd[3], OP)?,
    ];
    let y = conv_transpose2d_col2im(x, weight, &geometry, size, OP)?;
    add_bias(y, bias, 4)
}

/// Transposed-convolution weights are `[C_in, C_out / groups, K..]`; PyTorch computes the fans
/// from the weight's dims 1 and 0.
const TRANSPOSE_LAYOUT: WeightLayout =
    |c_in, c_out, g, k| ([c_in, c_out / g], c_out / g * k, c_in * k);

weighted_layer!(
    ConvTranspose1d,
    ConvTransposeConfig,
    conv_transpose1d,
    "Transposed 1-D convolution layer.",
    [k0],
    TRANSPOSE_LAYOUT
);
weighted_layer!(
    ConvTranspose2d,
    ConvTransposeConfig,
    conv_transpose2d,
    "Transposed 2-D convolution layer with a square kernel.",
    [k0, k1],
    TRANSPOSE_LAYOUT
);
