//! Convolutions (1-D and 2-D) with a padding mode, stride, dilation and groups.
//!
//! Zero padding is part of the im2col gather; the other modes pad explicitly first (see
//! [`crate::pad`]). 2-D convolutions run on candle's kernel where its backward pass is right and
//! otherwise (stride > 1 on non-square maps) on im2col + GEMM built from differentiable candle
//! ops; 1-D convolutions always take the latter (candle's conv1d gradient failed our checks).

use candle_core::Tensor;

use crate::error::{dims_of, LayerError, Result};
use crate::init::Init;
use crate::kernels;
use crate::pad::{pad1d, pad2d, PadMode};
use crate::window::{conv2d_im2col, ConvGeometry};

/// Settings of a convolution. `padding` is applied on every side with `pad_mode`; `padding = 0`
/// is the "valid" convolution (output length `N - dilation * (K - 1)` at stride 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvConfig {
    pub padding: usize,
    pub pad_mode: PadMode,
    pub stride: usize,
    pub dilation: usize,
    pub groups: usize,
    pub bias: bool,
    pub init: Init,
}

impl Default for ConvConfig {
    fn default() -> Self {
        Self {
            padding: 0,
            pad_mode: PadMode::Zeros,
            stride: 1,
            dilation: 1,
            groups: 1,
            bias: true,
            init: Init::Torch,
        }
    }
}

impl ConvConfig {
    /// The padding that keeps the length at stride 1 ("same") for an odd kernel.
    pub fn same(kernel: usize, dilation: usize) -> Self {
        Self {
            padding: dilation * (kernel.saturating_sub(1)) / 2,
            dilation,
            ..Self::default()
        }
    }
    pub fn padding(self, padding: usize) -> Self {
        Self { padding, ..self }
    }
    pub fn pad_mode(self, pad_mode: PadMode) -> Self {
        Self { pad_mode, ..self }
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

    fn validate(&self, op: &'static str, c_in: usize, c_out: usize) -> Result<()> {
        check_geometry(op, self.stride, self.dilation, self.groups, c_in, c_out)
    }
}

/// The checks every convolution shares: positive stride, dilation and groups, and channel
/// counts the groups divide.
pub(crate) fn check_geometry(
    op: &'static str,
    stride: usize,
    dilation: usize,
    groups: usize,
    c_in: usize,
    c_out: usize,
) -> Result<()> {
    if stride == 0 || dilation == 0 || groups == 0 {
        return Err(LayerError::config(
            op,
            "stride, dilation and groups must be >= 1",
        ));
    }
    if !c_in.is_multiple_of(groups) || !c_out.is_multiple_of(groups) {
        return Err(LayerError::config(
            op,
            format!("{c_in} input and {c_out} output channels are not both divisible by {groups} groups"),
        ));
    }
    Ok(())
}

/// Output length of a convolution or pooling window along one axis (floor division), or
/// `None` where the window does not fit in the padded input.
pub fn conv_out_len(
    n: usize,
    kernel: usize,
    padding: usize,
    stride: usize,
    dilation: usize,
) -> Option<usize> {
    let span = dilation * kernel.checked_sub(1)? + 1;
    Some((n + 2 * padding).checked_sub(span)? / stride.max(1) + 1)
}

fn check_input(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    rank: usize,
    cfg: &ConvConfig,
) -> Result<()> {
    let layout = if rank == 3 {
        "[N, C, L]"
    } else {
        "[N, C, H, W]"
    };
    let xd = dims_of(x, rank, op, layout)?;
    let wd = dims_of(w, rank, op, "weight [C_out, C_in / groups, K..]")?;
    cfg.validate(op, xd[1], wd[0])?;
    if xd[1] != wd[1] * cfg.groups {
        return Err(LayerError::shape(
            op,
            format!(
                "{} input channels (weight {:?}, {} groups)",
                wd[1] * cfg.groups,
                wd,
                cfg.groups
            ),
            xd,
        ));
    }
    for (axis, (&n, &k)) in xd[2..].iter().zip(&wd[2..]).enumerate() {
        if n + 2 * cfg.padding < cfg.dilation * (k - 1) + 1 {
            return Err(LayerError::shape(
                op,
                format!(
                    "spatial axis {axis} of at least {} after padding {} for kernel {k}, dilation {}",
                    cfg.dilation * (k - 1) + 1,
                    cfg.padding,
                    cfg.dilation
                ),
                xd,
            ));
        }
    }
    Ok(())
}

pub(crate) fn add_bias(y: Tensor, bias: Option<&Tensor>, rank: usize) -> Result<Tensor> {
    Ok(match bias {
        None => y,
        Some(b) if kernels::applies(&[&y, b]) => {
            let (n, c) = (y.dim(0)?, y.dim(1)?);
            kernels::bias_add(&y.reshape((n, c, ()))?, b)?.reshape(y.dims())?
        }
        Some(b) => {
            let mut shape = vec![1; rank];
            shape[1] = b.elem_count();
            y.broadcast_add(&b.reshape(shape)?)?
        }
    })
}

/// 1-D convolution of `x: [N, C_in, L]` with `weight: [C_out, C_in / groups, K]`.
pub fn conv1d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: &ConvConfig,
) -> Result<Tensor> {
    const OP: &str = "conv1d";
    check_input(OP, x, weight, 3, cfg)?;
    let (x, p) = match cfg.pad_mode {
        PadMode::Zeros => (x.clone(), cfg.padding),
        mode => (pad1d(x, [cfg.padding; 2], mode)?, 0),
    };
    let y = conv2d_im2col(
        &x.unsqueeze(2)?,
        &weight.unsqueeze(2)?,
        &ConvGeometry::one_d(p, cfg.stride, cfg.dilation, cfg.groups),
        OP,
    )?;
    add_bias(y.squeeze(2)?, bias, 3)
}

/// 2-D convolution of `x: [N, C_in, H, W]` with `weight: [C_out, C_in / groups, KH, KW]`.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: &ConvConfig,
) -> Result<Tensor> {
    const OP: &str = "conv2d";
    check_input(OP, x, weight, 4, cfg)?;
    let (x, p) = match cfg.pad_mode {
        PadMode::Zeros => (x.clone(), cfg.padding),
        mode => (pad2d(x, [cfg.padding; 4], mode)?, 0),
    };
    let (h, w) = (x.dim(2)?, x.dim(3)?);
    let (kh, kw) = (weight.dim(2)?, weight.dim(3)?);
    // Without forja's kernels (off, or not a CPU float tensor) candle's own conv2d is the
    // fastest; its backward (0.11) is right except at stride > 1 when the feature map or the
    // kernel is not square, where forja's im2col from candle ops takes over.
    let candle_ok = cfg.stride == 1 || (h == w && kh == kw);
    let y = if candle_ok && !kernels::applies(&[&x, weight]) {
        x.conv2d(weight, p, cfg.stride, cfg.dilation, cfg.groups)?
    } else {
        conv2d_im2col(
            &x,
            weight,
            &ConvGeometry::square(p, cfg.stride, cfg.dilation, cfg.groups),
            OP,
        )?
    };
    add_bias(y, bias, 4)
}

/// A layer holding `weight`, optional `bias` and a config, shared by the convolutions and the
/// transposed convolutions. `$layout` maps `(c_in, c_out, groups, k)` to the two leading
/// weight dims and the (fan_in, fan_out) of the initialisation.
macro_rules! weighted_layer {
    ($name:ident, $cfg:ty, $func:ident, $doc:literal, [$($k:ident),+], $layout:expr) => {
        #[doc = $doc]
        #[derive(Debug, Clone)]
        pub struct $name {
            weight: Tensor,
            bias: Option<Tensor>,
            cfg: $cfg,
        }

        impl $name {
            /// A layer with `weight` and `bias` created in `vb` (names and layout as in PyTorch).
            pub fn new(c_in: usize, c_out: usize, kernel: usize, cfg: $cfg, vb: candle_nn::VarBuilder) -> Result<Self> {
                cfg.validate(stringify!($func), c_in, c_out)?;
                $(let $k = kernel;)+
                let k = 1 $(* $k)+;
                let layout: $crate::conv::WeightLayout = $layout;
                let ([d0, d1], fan_in, fan_out) = layout(c_in, c_out, cfg.groups, k);
                let weight = vb.get_with_hints(
                    (d0, d1, $($k),+),
                    "weight",
                    cfg.init.weight(fan_in, fan_out),
                )?;
                let bias = if cfg.bias {
                    Some(vb.get_with_hints(c_out, "bias", cfg.init.bias(fan_in))?)
                } else {
                    None
                };
                Ok(Self { weight, bias, cfg })
            }

            /// A layer from existing tensors (for tests, weight sharing and re-parametrisations).
            pub fn from_weights(weight: Tensor, bias: Option<Tensor>, cfg: $cfg) -> Self {
                Self { weight, bias, cfg }
            }

            pub fn weight(&self) -> &Tensor {
                &self.weight
            }
            pub fn bias(&self) -> Option<&Tensor> {
                self.bias.as_ref()
            }
            pub fn config(&self) -> &$cfg {
                &self.cfg
            }

            /// The forward pass with another weight of the same shape (used by weight norm).
            pub fn forward_with_weight(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
                $func(x, weight, self.bias.as_ref(), &self.cfg)
            }
        }

        impl candle_core::Module for $name {
            fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
                Ok(self.forward_with_weight(x, &self.weight)?)
            }
        }
    };
}

pub(crate) use weighted_layer;

/// `(c_in, c_out, groups, kernel elements) -> (leading weight dims, fan_in, fan_out)`.
pub(crate) type WeightLayout = fn(usize, usize, usize, usize) -> ([usize; 2], usize, usize);

/// Convolution weights are `[C_out, C_in / groups, K..]`.
const CONV_LAYOUT: WeightLayout =
    |c_in, c_out, g, k| ([c_out, c_in / g], c_in / g * k, c_out / g * k);

weighted_layer!(
    Conv1d,
    ConvConfig,
    conv1d,
    "1-D convolution layer on `[N, C, L]`.",
    [k0],
    CONV_LAYOUT
);
weighted_layer!(
    Conv2d,
    ConvConfig,
    conv2d,
    "2-D convolution layer on `[N, C, H, W]` with a square kernel.",
    [k0, k1],
    CONV_LAYOUT
);
