//! RealNVP's multi-scale architecture (Dinh et al. 2016, sec. 3.6): at each scale, checkerboard
//! couplings, a squeeze, channel couplings, and then half of the channels are factored out as
//! latent variables; the rest goes on to the next, coarser scale. Factoring out keeps the cost
//! down and gives the latent code a coarse-to-fine structure.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::image::dims4;
use super::{
    Composite, CouplingKind, Flow, ImageCoupling, ImageCouplingConfig, ImageMask, Inverted, Squeeze,
};
use crate::{GenerativeError, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct MultiScaleConfig {
    /// The image shape `[C, H, W]`; `H` and `W` must be divisible by `2^(scales - 1)`.
    pub shape: [usize; 3],
    /// Number of scales; all but the last factor out half of their channels.
    pub scales: usize,
    /// Couplings before and after each squeeze (the paper's 3).
    pub couplings: usize,
    /// Checkerboard couplings at the last scale (the paper's 4).
    pub final_couplings: usize,
    /// Feature maps of the couplings' conditioners.
    pub hidden: usize,
    pub kind: CouplingKind,
}

impl MultiScaleConfig {
    pub fn new(shape: [usize; 3], scales: usize, hidden: usize) -> Self {
        Self {
            shape,
            scales,
            couplings: 3,
            final_couplings: 4,
            hidden,
            kind: CouplingKind::Affine,
        }
    }
}

/// The multi-scale flow. Its data side is an image `[N, C, H, W]`, its latent side the flat
/// `[N, C H W]` concatenation of the factored-out parts (finest first) and the last scale.
pub struct MultiScale {
    /// Each scale's flow in generative order (so `inverse` runs the normalizing direction).
    levels: Vec<Composite>,
    last: Composite,
    /// Shape of the part each scale factors out, and of the last scale's input.
    factored: Vec<[usize; 3]>,
    last_shape: [usize; 3],
    shape: [usize; 3],
}

impl MultiScale {
    pub fn new(cfg: &MultiScaleConfig, vb: VarBuilder) -> Result<Self> {
        let [c0, h0, w0] = cfg.shape;
        let div = 1usize << cfg.scales.saturating_sub(1);
        if cfg.scales == 0 || c0 == 0 || h0 % div != 0 || w0 % div != 0 || h0 == 0 || w0 == 0 {
            return Err(GenerativeError::Config {
                layer: "multi_scale",
                msg: format!(
                    "{} scales need height and width divisible by {div}, got {:?}",
                    cfg.scales, cfg.shape
                ),
            });
        }
        let coupling = |mask, channels, vb: VarBuilder| -> Result<Box<dyn Flow>> {
            let c = ImageCouplingConfig::new(cfg.kind, mask, channels, cfg.hidden);
            Ok(Box::new(ImageCoupling::new(&c, vb)?))
        };
        let (mut levels, mut factored) = (Vec::new(), Vec::new());
        let [mut c, mut h, mut w] = cfg.shape;
        for s in 0..cfg.scales - 1 {
            let vs = vb.pp(format!("scales.{s}"));
            // Normalizing order: checkerboard couplings, squeeze, channel couplings.
            let mut steps: Vec<Box<dyn Flow>> = Vec::new();
            for k in 0..cfg.couplings {
                let mask = ImageMask::Checkerboard { even: k % 2 == 0 };
                steps.push(coupling(mask, c, vs.pp(format!("checker.{k}")))?);
            }
            steps.push(Box::new(Inverted(Squeeze)));
            for k in 0..cfg.couplings {
                let mask = ImageMask::Channel { first: k % 2 == 0 };
                steps.push(coupling(mask, 4 * c, vs.pp(format!("channel.{k}")))?);
            }
            steps.reverse();
            levels.push(Composite(steps));
            (h, w) = (h / 2, w / 2);
            factored.push([2 * c, h, w]);
            c *= 2;
        }
        let vl = vb.pp("last");
        let mut steps = Vec::new();
        for k in 0..cfg.final_couplings {
            let mask = ImageMask::Checkerboard { even: k % 2 == 0 };
            steps.push(coupling(mask, c, vl.pp(format!("checker.{k}")))?);
        }
        steps.reverse();
        Ok(Self {
            levels,
            last: Composite(steps),
            factored,
            last_shape: [c, h, w],
            shape: cfg.shape,
        })
    }

    /// Number of latent dimensions, `C H W`.
    pub fn dim(&self) -> usize {
        self.shape.iter().product()
    }
}

impl Flow for MultiScale {
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = super::dims2("multi_scale", z, self.dim())?;
        let sizes: Vec<usize> = self.factored.iter().map(|s| s.iter().product()).collect();
        let mut offset: usize = sizes.iter().sum();
        let [c, h, w] = self.last_shape;
        let tail = z.narrow(1, offset, c * h * w)?.reshape((n, c, h, w))?;
        let (mut x, mut logdet) = self.last.forward(&tail)?;
        for ((level, [c, h, w]), size) in self.levels.iter().zip(&self.factored).zip(&sizes).rev() {
            offset -= size;
            let part = z.narrow(1, offset, *size)?.reshape((n, *c, *h, *w))?;
            let (y, ld) = level.forward(&Tensor::cat(&[&part, &x], 1)?)?;
            x = y;
            logdet = (logdet + ld)?;
        }
        Ok((x, logdet))
    }

    fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (n, c, h, w) = dims4("multi_scale", x)?;
        if [c, h, w] != self.shape {
            return Err(GenerativeError::Shape {
                layer: "multi_scale",
                expected: format!(
                    "[N, {}, {}, {}]",
                    self.shape[0], self.shape[1], self.shape[2]
                ),
                shape: x.dims().to_vec(),
            });
        }
        let mut logdet = Tensor::zeros(n, x.dtype(), x.device())?;
        let (mut y, mut parts) = (x.clone(), Vec::new());
        for level in &self.levels {
            let (out, ld) = level.inverse(&y)?;
            logdet = (logdet + ld)?;
            let half = out.dim(1)? / 2;
            parts.push(out.narrow(1, 0, half)?.flatten_from(1)?);
            y = out.narrow(1, half, half)?;
        }
        let (out, ld) = self.last.inverse(&y)?;
        parts.push(out.flatten_from(1)?);
        Ok((Tensor::cat(&parts, 1)?, (logdet + ld)?))
    }
}
