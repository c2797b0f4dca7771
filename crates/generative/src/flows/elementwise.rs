//! Element-wise flows: each output depends on one input, so the Jacobian is diagonal.

use candle_core::{Tensor, Var, D};
use candle_nn::{Init, VarBuilder};

use super::{dims2, softplus, Flow};
use crate::{GenerativeError, Result};

/// Leaky ReLU with slope `slope` (> 0) for negative inputs: piecewise linear, invertible.
pub struct LeakyRelu {
    slope: f64,
}

impl LeakyRelu {
    pub fn new(slope: f64) -> Result<Self> {
        if !(slope > 0.0 && slope.is_finite()) {
            return Err(GenerativeError::Config {
                layer: "leaky_relu",
                msg: format!("slope must be positive to be invertible, got {slope}"),
            });
        }
        Ok(Self { slope })
    }

    /// `y = x` where `x >= 0`, else `factor * x`, and `log(factor)` summed over the negatives.
    fn apply(&self, x: &Tensor, factor: f64) -> Result<(Tensor, Tensor)> {
        let neg = x.lt(0.0)?;
        let y = neg.where_cond(&(x * factor)?, x)?;
        let logdet = (neg.to_dtype(x.dtype())?.sum(D::Minus1)? * factor.ln())?;
        Ok((y, logdet))
    }
}

impl Flow for LeakyRelu {
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.apply(z, self.slope)
    }

    fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.apply(x, 1.0 / self.slope)
    }
}

/// `x = sigmoid(z)`, onto (0, 1); `Inverted(Sigmoid)` is the logit transform of image flows.
pub struct Sigmoid;

impl Flow for Sigmoid {
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = candle_nn::ops::sigmoid(z)?;
        // log σ'(z) = log σ(z) + log σ(-z) = -softplus(-z) - softplus(z)
        let logdet = (softplus(&z.neg()?)? + softplus(z)?)?
            .neg()?
            .sum(D::Minus1)?;
        Ok((x, logdet))
    }

    fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (log_x, log_1mx) = (x.log()?, x.affine(-1.0, 1.0)?.log()?);
        let z = (&log_x - &log_1mx)?;
        let logdet = (log_x + log_1mx)?.neg()?.sum(D::Minus1)?;
        Ok((z, logdet))
    }
}

/// Per-feature affine map `x = z * exp(log_scale) + bias` (Glow's ActNorm). Its parameters can
/// be set from data with [`ActNorm::initialize`], so that the normalizing direction maps that
/// batch to zero mean and unit variance per feature.
pub struct ActNorm {
    dim: usize,
    log_scale: Var,
    bias: Var,
}

impl ActNorm {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let log_scale = vb.get_with_hints(dim, "log_scale", Init::Const(0.0))?;
        let bias = vb.get_with_hints(dim, "bias", Init::Const(0.0))?;
        Ok(Self {
            dim,
            log_scale: Var::from_tensor(&log_scale)?,
            bias: Var::from_tensor(&bias)?,
        })
    }

    /// Data-dependent initialisation from a batch `x: [N, D]` (N >= 2).
    pub fn initialize(&self, x: &Tensor) -> Result<()> {
        let n = dims2("act_norm", x, self.dim)?;
        if n < 2 {
            return Err(GenerativeError::Config {
                layer: "act_norm",
                msg: "data-dependent initialisation needs a batch of at least 2".into(),
            });
        }
        let mean = x.mean(0)?;
        let std = x.broadcast_sub(&mean)?.sqr()?.mean(0)?.sqrt()?;
        self.bias.set(&mean)?;
        self.log_scale.set(&(std + 1e-6)?.log()?)?;
        Ok(())
    }

    fn logdet(&self, n: usize) -> Result<Tensor> {
        Ok(self
            .log_scale
            .as_tensor()
            .sum_all()?
            .broadcast_as(n)?
            .contiguous()?)
    }
}

impl Flow for ActNorm {
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = dims2("act_norm", z, self.dim)?;
        let x = z
            .broadcast_mul(&self.log_scale.as_tensor().exp()?)?
            .broadcast_add(self.bias.as_tensor())?;
        Ok((x, self.logdet(n)?))
    }

    fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = dims2("act_norm", x, self.dim)?;
        let z = x
            .broadcast_sub(self.bias.as_tensor())?
            .broadcast_mul(&self.log_scale.as_tensor().neg()?.exp()?)?;
        Ok((z, self.logdet(n)?.neg()?))
    }
}
