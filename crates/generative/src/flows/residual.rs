//! Invertible residual blocks (i-ResNet, Behrmann et al. 2019): the normalizing direction is
//! `z = x + g(x)` with `g` an MLP whose weights are spectrally normalised to norm `c < 1` and
//! whose activation (tanh) is 1-Lipschitz, so `Lip(g) < 1`: the generative direction is the
//! limit of the fixed-point iteration `x ← z - g(x)`, and
//! `log det(I + J_g) = Σ_k (-1)^(k+1) tr(J_g^k) / k` converges.

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;
use forja_layers::{linear, Linear};

use super::{dims2, invert, log_abs_det, Flow};
use crate::{GenerativeError, Result};

/// How the block computes `log det(I + J_g)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResidualLogDet {
    /// The power series to `terms` terms, with exact traces of the per-sample Jacobian
    /// (differentiable; memory `N x D x D`).
    PowerSeries { terms: usize },
    /// LU of `I + J_g` on the host, in f64 (exact, no gradient; for small dimensions and checks).
    Exact,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResidualConfig {
    pub dim: usize,
    pub hidden: Vec<usize>,
    /// Spectral norm of every weight matrix after normalisation (the Lipschitz bound of `g`).
    pub coeff: f64,
    /// Power-iteration steps used to estimate each weight's largest singular value.
    pub power_iterations: usize,
    /// Fixed-point iterations of the generative direction.
    pub inverse_iterations: usize,
    pub logdet: ResidualLogDet,
}

impl ResidualConfig {
    pub fn new(dim: usize, hidden: Vec<usize>) -> Self {
        Self {
            dim,
            hidden,
            coeff: 0.9,
            power_iterations: 20,
            inverse_iterations: 100,
            logdet: ResidualLogDet::PowerSeries { terms: 10 },
        }
    }
}

/// Per layer of `g`: its normalised weight and, for hidden layers, the activation's derivative
/// at this input; the Jacobian of `g` is their product.
type Linearization = Vec<(Tensor, Option<Tensor>)>;

pub struct Residual {
    cfg: ResidualConfig,
    layers: Vec<Linear>,
}

impl Residual {
    pub fn new(cfg: &ResidualConfig, vb: VarBuilder) -> Result<Self> {
        if !(cfg.coeff > 0.0 && cfg.coeff < 1.0) || cfg.dim == 0 || cfg.power_iterations == 0 {
            return Err(GenerativeError::Config {
                layer: "residual",
                msg: format!(
                    "needs 0 < coeff < 1 (a contraction), a positive dimension and power iterations, got {cfg:?}"
                ),
            });
        }
        let widths: Vec<usize> = std::iter::once(cfg.dim)
            .chain(cfg.hidden.iter().copied())
            .chain(std::iter::once(cfg.dim))
            .collect();
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(k, w)| linear(w[0], w[1], vb.pp(format!("net.{}", 2 * k))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            layers,
        })
    }

    /// `coeff * W / σ(W)`, `σ = uᵀ W v` with the singular vectors `u, v` from power iteration
    /// treated as constants (as PyTorch's spectral norm does): at convergence that is the exact
    /// gradient of the largest singular value.
    fn normalized(&self, w: &Tensor) -> Result<Tensor> {
        let mut v = Tensor::ones(w.dim(1)?, w.dtype(), w.device())?;
        let mut u = Tensor::ones(w.dim(0)?, w.dtype(), w.device())?;
        let wd = w.detach();
        for _ in 0..self.cfg.power_iterations {
            let wv = wd.matmul(&v.unsqueeze(1)?)?.squeeze(1)?;
            u = wv.broadcast_div(&wv.sqr()?.sum_all()?.sqrt()?)?;
            let next = wd.t()?.matmul(&u.unsqueeze(1)?)?.squeeze(1)?;
            v = next.broadcast_div(&next.sqr()?.sum_all()?.sqrt()?)?;
        }
        let sigma = u
            .unsqueeze(0)?
            .matmul(&w.matmul(&v.unsqueeze(1)?)?)?
            .squeeze(1)?
            .squeeze(0)?;
        Ok(w.broadcast_div(&(sigma / self.cfg.coeff)?)?)
    }

    /// The layers with spectrally normalised weights, computed once per call of the flow.
    fn normalized_layers(&self) -> Result<Vec<Linear>> {
        self.layers
            .iter()
            .map(|l| Ok(Linear::new(self.normalized(l.weight())?, l.bias().cloned())))
            .collect()
    }

    /// `g(z)` and, per layer, the normalised weight and the activation's derivative.
    fn residual(&self, layers: &[Linear], z: &Tensor) -> Result<(Tensor, Linearization)> {
        let mut h = z.clone();
        let mut parts = Vec::new();
        for (k, layer) in layers.iter().enumerate() {
            let w = layer.weight().clone();
            let a = layer.forward(&h)?;
            if k + 1 < layers.len() {
                h = forja_layers::tanh(&a)?;
                parts.push((w, Some(h.sqr()?.affine(-1.0, 1.0)?)));
            } else {
                h = a;
                parts.push((w, None));
            }
        }
        Ok((h, parts))
    }

    /// The Jacobian of `g` per sample, `[N, D, D]`: `W_L diag(σ'_{L-1}) … diag(σ'_1) W_1`.
    fn jacobian(parts: &Linearization, n: usize) -> Result<Tensor> {
        let mut jac: Option<Tensor> = None;
        for (w, deriv) in parts {
            let w = w.unsqueeze(0)?.broadcast_as((n, w.dim(0)?, w.dim(1)?))?;
            let next = match &jac {
                Some(j) => w.matmul(j)?,
                None => w.contiguous()?,
            };
            jac = Some(match deriv {
                Some(d) => next.broadcast_mul(&d.unsqueeze(2)?)?,
                None => next,
            });
        }
        jac.ok_or_else(|| GenerativeError::Config {
            layer: "residual",
            msg: "no layers".into(),
        })
    }

    /// `log det(I + J_g(z))` per sample.
    fn logdet(&self, parts: &Linearization, n: usize) -> Result<Tensor> {
        let jac = Self::jacobian(parts, n)?;
        match self.cfg.logdet {
            ResidualLogDet::PowerSeries { terms } => {
                let mut power = jac.clone();
                let mut total = Tensor::zeros(n, jac.dtype(), jac.device())?;
                let eye = Tensor::eye(self.cfg.dim, jac.dtype(), jac.device())?;
                for k in 1..=terms {
                    let trace = power.broadcast_mul(&eye)?.sum((1, 2))?;
                    let sign = if k % 2 == 1 { 1.0 } else { -1.0 };
                    total = (total + (trace * (sign / k as f64))?)?;
                    power = power.matmul(&jac)?;
                }
                Ok(total)
            }
            ResidualLogDet::Exact => {
                let d = self.cfg.dim;
                let eye = Tensor::eye(d, jac.dtype(), jac.device())?;
                let a = jac.broadcast_add(&eye)?;
                let m: Vec<f64> = a.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
                let singular = || GenerativeError::NotInvertible {
                    layer: "residual",
                    msg: "I + J_g is singular".into(),
                };
                let (mut dets, mut inv_t) = (Vec::with_capacity(n), Vec::with_capacity(m.len()));
                for block in m.chunks_exact(d * d) {
                    dets.push(log_abs_det(block, d).ok_or_else(singular)?);
                    let inv = invert(block, d).ok_or_else(singular)?;
                    inv_t.extend((0..d * d).map(|k| inv[(k % d) * d + k / d]));
                }
                let value = Tensor::from_vec(dets, n, a.device())?.to_dtype(a.dtype())?;
                // The determinant is taken on the host; its gradient, d log|det A| = Σ A⁻ᵀ ⊙ dA,
                // rides on a term that is zero in value.
                let inv_t = Tensor::from_vec(inv_t, (n, d, d), a.device())?.to_dtype(a.dtype())?;
                let carrier = (inv_t * (&a - a.detach())?)?.sum((1, 2))?;
                Ok((value + carrier)?)
            }
        }
    }
}

impl Flow for Residual {
    /// Sampling: solves `z = x + g(x)` for `x` by the fixed-point iteration `x ← z - g(x)`
    /// (without gradient).
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = dims2("residual", z, self.cfg.dim)?;
        let z = z.detach();
        let layers = self.normalized_layers()?;
        let mut x = z.clone();
        for _ in 0..self.cfg.inverse_iterations {
            x = (&z - self.residual(&layers, &x)?.0)?.detach();
        }
        let (_, parts) = self.residual(&layers, &x)?;
        Ok((x, self.logdet(&parts, n)?.neg()?))
    }

    /// Density: `z = x + g(x)`, one differentiable pass, as i-ResNet is trained.
    fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = dims2("residual", x, self.cfg.dim)?;
        let (g, parts) = self.residual(&self.normalized_layers()?, x)?;
        Ok(((x + g)?, self.logdet(&parts, n)?))
    }
}
