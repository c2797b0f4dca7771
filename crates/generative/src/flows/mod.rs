//! Normalizing flows: invertible maps with tractable Jacobian determinants.
//!
//! A [`Flow`] maps both ways and reports log|det J| for each sample in each direction: the
//! generative direction `x = f(z)` and the normalizing direction `z = f⁻¹(x)`. Flows compose
//! ([`Composite`]) with log-dets adding, and a [`FlowDensity`] turns a flow over a standard
//! normal base into a density with exact `log_prob` and `sample`. Inputs are `[N, D]` for the
//! vector flows and `[N, C, H, W]` for the image flows ([`InvConv1x1`], [`Squeeze`],
//! [`ImageCoupling`]); [`MultiScale`] maps images to flat latent vectors.

mod autoregressive;
mod coupling;
mod density;
mod elementwise;
mod image;
mod image_coupling;
mod linear;
mod multiscale;
mod planar;
mod residual;

pub use autoregressive::{AutoregressiveFlow, Made, MadeConfig, Speed};
pub use coupling::{Coupling, CouplingConfig, CouplingKind};
pub use density::FlowDensity;
pub use elementwise::{ActNorm, LeakyRelu, Sigmoid};
pub use image::{InvConv1x1, Squeeze};
pub use image_coupling::{ImageCoupling, ImageCouplingConfig, ImageMask};
pub use linear::{invert, log_abs_det, LuLinear, Permutation};
pub use multiscale::{MultiScale, MultiScaleConfig};
pub use planar::{planar_step, Planar, Radial};
pub use residual::{Residual, ResidualConfig, ResidualLogDet};

use candle_core::Tensor;

use crate::{GenerativeError, Result};

/// An invertible map with both directions and their log-determinants.
pub trait Flow: Send + Sync {
    /// The generative direction `x = f(z)` and `log|det ∂f/∂z|` per sample (`[N]`).
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)>;

    /// The normalizing direction `z = f⁻¹(x)` and `log|det ∂f⁻¹/∂x|` per sample (`[N]`).
    fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)>;

    /// [`Flow::forward`] without gradients, for sampling. Flows whose generative direction
    /// iterates (MAF's `D` passes) override it so that no autograd graph of the passes is kept.
    fn forward_detached(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let (x, logdet) = self.forward(z)?;
        Ok((x.detach(), logdet.detach()))
    }
}

/// `f_K ∘ … ∘ f_1`: `forward` applies the flows in order, `inverse` in reverse; log-dets add.
pub struct Composite(pub Vec<Box<dyn Flow>>);

impl Composite {
    fn chain(
        &self,
        z: &Tensor,
        step: impl Fn(&dyn Flow, &Tensor) -> Result<(Tensor, Tensor)>,
    ) -> Result<(Tensor, Tensor)> {
        let mut x = z.clone();
        let mut logdet = Tensor::zeros(z.dim(0)?, z.dtype(), z.device())?;
        for f in &self.0 {
            let (y, ld) = step(f.as_ref(), &x)?;
            x = y;
            logdet = (logdet + ld)?;
        }
        Ok((x, logdet))
    }
}

impl Flow for Composite {
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.chain(z, |f, x| f.forward(x))
    }

    fn forward_detached(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.chain(z, |f, x| f.forward_detached(x))
    }

    fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut z = x.clone();
        let mut logdet = Tensor::zeros(x.dim(0)?, x.dtype(), x.device())?;
        for f in self.0.iter().rev() {
            let (y, ld) = f.inverse(&z)?;
            z = y;
            logdet = (logdet + ld)?;
        }
        Ok((z, logdet))
    }
}

/// A flow with its directions swapped: `Inverted(Sigmoid)` is the logit transform.
pub struct Inverted<F>(pub F);

impl<F: Flow> Flow for Inverted<F> {
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.0.inverse(z)
    }

    fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.0.forward(x)
    }
}

/// The batch size and feature count of a `[N, D]` input, or a shape error naming `layer`.
pub(crate) fn dims2(layer: &'static str, x: &Tensor, d: usize) -> Result<usize> {
    match x.dims() {
        &[n, dd] if dd == d => Ok(n),
        other => Err(GenerativeError::Shape {
            layer,
            expected: format!("[N, {d}]"),
            shape: other.to_vec(),
        }),
    }
}

/// A constant `rows x cols` matrix of 1 where `keep(row, col)` holds and 0 elsewhere, in the
/// builder's dtype and device: the masks of LU factors and MADE layers, permutation matrices.
pub(crate) fn indicator(
    rows: usize,
    cols: usize,
    keep: impl Fn(usize, usize) -> bool,
    vb: &candle_nn::VarBuilder,
) -> Result<Tensor> {
    let m: Vec<f64> = (0..rows * cols)
        .map(|k| f64::from(u8::from(keep(k / cols, k % cols))))
        .collect();
    Ok(Tensor::from_vec(m, (rows, cols), vb.device())?.to_dtype(vb.dtype())?)
}

/// Numerically stable `log(1 + exp(x))`.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    Ok(candle_core::Module::forward(
        &forja_layers::Activation::Softplus,
        x,
    )?)
}
