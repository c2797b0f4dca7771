//! RealNVP's coupling layers for images (Dinh et al. 2016, sec. 3.4): a checkerboard or a
//! channel mask splits the pixels, and a small convolutional network of the kept ones gives
//! the scale and shift of the others.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{Init, VarBuilder};
use forja_layers::{Conv2d, ConvConfig};

use super::image::dims4;
use super::{CouplingKind, Flow};
use crate::{GenerativeError, Result};

/// Which features pass through unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageMask {
    /// Pixels with `(row + col)` even (or odd) pass through, in every channel.
    Checkerboard { even: bool },
    /// The first (or second) half of the channels pass through.
    Channel { first: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImageCouplingConfig {
    pub kind: CouplingKind,
    pub mask: ImageMask,
    pub channels: usize,
    /// Feature maps of the conditioner's hidden 3x3 convolutions.
    pub hidden: usize,
    /// Number of hidden convolutions (ReLU after each).
    pub layers: usize,
}

impl ImageCouplingConfig {
    pub fn new(kind: CouplingKind, mask: ImageMask, channels: usize, hidden: usize) -> Self {
        Self {
            kind,
            mask,
            channels,
            hidden,
            layers: 2,
        }
    }
}

/// `x = z ⊙ exp(s) + t` on the masked-out features, `s, t` from a CNN of the kept ones; `s` is
/// bounded by `tanh` and the last convolution starts at zero, so a new layer is the identity.
pub struct ImageCoupling {
    cfg: ImageCouplingConfig,
    convs: Vec<Conv2d>,
}

impl ImageCoupling {
    pub fn new(cfg: &ImageCouplingConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.layers == 0 || cfg.hidden == 0 {
            return Err(config("the conditioner needs hidden layers of some width"));
        }
        if matches!(cfg.mask, ImageMask::Channel { .. }) && cfg.channels < 2 {
            return Err(config("a channel mask needs at least 2 channels"));
        }
        let out = match cfg.kind {
            CouplingKind::Affine => 2 * cfg.channels,
            CouplingKind::Additive => cfg.channels,
        };
        let conv = ConvConfig::same(3, 1);
        let mut convs = Vec::new();
        let mut c_in = cfg.channels;
        for k in 0..cfg.layers {
            convs.push(Conv2d::new(
                c_in,
                cfg.hidden,
                3,
                conv,
                vb.pp(format!("net.{}", 2 * k)),
            )?);
            c_in = cfg.hidden;
        }
        let last = vb.pp(format!("net.{}", 2 * cfg.layers));
        convs.push(Conv2d::from_weights(
            last.get_with_hints((out, c_in, 3, 3), "weight", Init::Const(0.0))?,
            Some(last.get_with_hints(out, "bias", Init::Const(0.0))?),
            conv,
        ));
        Ok(Self {
            cfg: cfg.clone(),
            convs,
        })
    }

    /// The pass-through mask, broadcastable to `[N, C, H, W]`.
    fn keep(&self, h: usize, w: usize, dtype: DType, x: &Tensor) -> Result<Tensor> {
        let c = self.cfg.channels;
        let (values, shape): (Vec<f32>, _) = match self.cfg.mask {
            ImageMask::Checkerboard { even } => (
                (0..h * w)
                    .map(|k| f32::from(u8::from((k / w + k % w).is_multiple_of(2) == even)))
                    .collect(),
                (1, 1, h, w),
            ),
            ImageMask::Channel { first } => (
                (0..c)
                    .map(|k| f32::from(u8::from((k < c / 2) == first)))
                    .collect(),
                (1, c, 1, 1),
            ),
        };
        Ok(Tensor::from_vec(values, shape, x.device())?.to_dtype(dtype)?)
    }

    /// `(s, t, keep)`, `s` and `t` zero on the kept features.
    fn scale_shift(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (_, c, h, w) = dims4("image_coupling", x)?;
        if c != self.cfg.channels {
            return Err(GenerativeError::Shape {
                layer: "image_coupling",
                expected: format!("[N, {}, H, W]", self.cfg.channels),
                shape: x.dims().to_vec(),
            });
        }
        let keep = self.keep(h, w, x.dtype(), x)?;
        let mut y = x.broadcast_mul(&keep)?;
        for (k, conv) in self.convs.iter().enumerate() {
            y = conv.forward(&y)?;
            if k + 1 < self.convs.len() {
                y = y.relu()?;
            }
        }
        let change = keep.affine(-1.0, 1.0)?;
        Ok(match self.cfg.kind {
            CouplingKind::Affine => (
                forja_layers::tanh(&y.narrow(1, 0, c)?)?.broadcast_mul(&change)?,
                y.narrow(1, c, c)?.broadcast_mul(&change)?,
            ),
            CouplingKind::Additive => (y.zeros_like()?, y.broadcast_mul(&change)?),
        })
    }
}

fn config(msg: &str) -> GenerativeError {
    GenerativeError::Config {
        layer: "image_coupling",
        msg: msg.into(),
    }
}

/// Per-image sum over `[C, H, W]`.
fn per_image(s: &Tensor) -> Result<Tensor> {
    Ok(s.flatten_from(1)?.sum(D::Minus1)?)
}

impl Flow for ImageCoupling {
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let (s, t) = self.scale_shift(z)?;
        let x = ((z * s.exp()?)? + t)?;
        Ok((x, per_image(&s)?))
    }

    fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (s, t) = self.scale_shift(x)?;
        let z = ((x - t)? * s.neg()?.exp()?)?;
        Ok((z, per_image(&s)?.neg()?))
    }
}
