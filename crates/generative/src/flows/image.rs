//! Flows on images `[N, C, H, W]`: Glow's invertible 1x1 convolution and RealNVP's squeeze.

use candle_core::{Tensor, D};
use candle_nn::VarBuilder;

use super::{Flow, LuLinear};
use crate::{GenerativeError, Result};

pub(crate) fn dims4(layer: &'static str, x: &Tensor) -> Result<(usize, usize, usize, usize)> {
    x.dims4().map_err(|_| GenerativeError::Shape {
        layer,
        expected: "[N, C, H, W]".into(),
        shape: x.dims().to_vec(),
    })
}

/// Glow's invertible 1x1 convolution: the same LU-parametrised `C x C` matrix at every pixel,
/// so `log|det|` is `H W` times that of the matrix.
pub struct InvConv1x1 {
    channels: usize,
    linear: LuLinear,
}

impl InvConv1x1 {
    pub fn new(channels: usize, seed: u64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            channels,
            linear: LuLinear::new(channels, seed, vb)?,
        })
    }

    /// Applies a per-pixel map of `[M, C]` rows to `x` and sums its log-dets per image.
    fn per_pixel(
        &self,
        x: &Tensor,
        map: impl Fn(&Tensor) -> Result<(Tensor, Tensor)>,
    ) -> Result<(Tensor, Tensor)> {
        let (n, c, h, w) = dims4("inv_conv_1x1", x)?;
        if c != self.channels {
            return Err(GenerativeError::Shape {
                layer: "inv_conv_1x1",
                expected: format!("[N, {}, H, W]", self.channels),
                shape: x.dims().to_vec(),
            });
        }
        let rows = x.permute((0, 2, 3, 1))?.reshape((n * h * w, c))?;
        let (y, logdet) = map(&rows)?;
        let y = y
            .reshape((n, h, w, c))?
            .permute((0, 3, 1, 2))?
            .contiguous()?;
        Ok((y, logdet.reshape((n, h * w))?.sum(D::Minus1)?))
    }
}

impl Flow for InvConv1x1 {
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.per_pixel(z, |r| self.linear.forward(r))
    }

    fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.per_pixel(x, |r| self.linear.inverse(r))
    }
}

/// Trades space for channels: each 2x2 block of every channel becomes 4 channels at half the
/// height and width (`[N, C, H, W]` to `[N, 4C, H/2, W/2]`); a permutation, log-det 0.
/// `forward` squeezes, `inverse` unsqueezes.
pub struct Squeeze;

impl Flow for Squeeze {
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let (n, c, h, w) = dims4("squeeze", z)?;
        if h % 2 != 0 || w % 2 != 0 {
            return Err(GenerativeError::Shape {
                layer: "squeeze",
                expected: "even height and width".into(),
                shape: z.dims().to_vec(),
            });
        }
        let x = z
            .reshape(vec![n, c, h / 2, 2, w / 2, 2])?
            .permute(vec![0, 1, 3, 5, 2, 4])?
            .reshape((n, 4 * c, h / 2, w / 2))?;
        Ok((x, Tensor::zeros(n, z.dtype(), z.device())?))
    }

    fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (n, c4, h, w) = dims4("squeeze", x)?;
        if c4 % 4 != 0 {
            return Err(GenerativeError::Shape {
                layer: "squeeze",
                expected: "a channel count divisible by 4".into(),
                shape: x.dims().to_vec(),
            });
        }
        let c = c4 / 4;
        let z = x
            .reshape(vec![n, c, 2, 2, h, w])?
            .permute(vec![0, 1, 4, 2, 5, 3])?
            .reshape((n, c, 2 * h, 2 * w))?;
        Ok((z, Tensor::zeros(n, x.dtype(), x.device())?))
    }
}
