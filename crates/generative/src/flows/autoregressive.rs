//! Autoregressive flows: MADE (Germain et al. 2015), a masked MLP whose output `i` depends only
//! on inputs `< i`, drives an affine map of each feature. MAF (Papamakarios et al. 2017) runs it
//! on `x`, so the density direction is one pass and sampling takes `D`; IAF (Kingma et al. 2016)
//! runs it on `z`, the other way round. Both directions are implemented for both.

use candle_core::{Module, Tensor, D};
use candle_nn::{Init, VarBuilder};
use forja_layers::{linear, Linear};

use super::{dims2, indicator, Flow};
use crate::{GenerativeError, Result};

/// Bound of the log-scales `α`: `α = B tanh(a / B)` for the raw output `a`. Unbounded, a random
/// or diverging MADE produced `α` of 70 and more (scales of e^70) in tests, beyond what f64
/// can invert or differentiate reliably; a soft clamp keeps gradients everywhere.
pub const ALPHA_BOUND: f64 = 3.0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeConfig {
    pub dim: usize,
    pub hidden: Vec<usize>,
    /// Start with a zero output layer (`μ = 0, α = 0`), so a new flow is the identity: a
    /// stack of randomly initialised layers can scale the data by `e^(3K)`.
    pub zero_init: bool,
}

/// A masked MLP from `D` inputs to `(μ, α)`, each `D` wide, autoregressive in feature order.
pub struct Made {
    dim: usize,
    layers: Vec<(Linear, Tensor)>,
}

impl Made {
    pub fn new(cfg: &MadeConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.dim;
        if d == 0 || cfg.hidden.contains(&0) {
            return Err(GenerativeError::Config {
                layer: "made",
                msg: format!("needs a positive dimension and widths, got {cfg:?}"),
            });
        }
        // Degrees: inputs 1..=D; hidden units cycle through 1..=D-1; outputs as their input.
        let mut prev: Vec<usize> = (1..=d).collect();
        let mut layers = Vec::new();
        // Unit r of a layer sees unit c of the one before when its degree is >= (hidden) or
        // > (output) that unit's degree.
        let mask = |rows: &[usize], cols: &[usize], strict: bool| {
            indicator(
                rows.len(),
                cols.len(),
                |r, c| {
                    if strict {
                        rows[r] > cols[c]
                    } else {
                        rows[r] >= cols[c]
                    }
                },
                &vb,
            )
        };
        for (k, &width) in cfg.hidden.iter().enumerate() {
            let deg: Vec<usize> = (0..width).map(|j| j % (d - 1).max(1) + 1).collect();
            let lin = linear(prev.len(), width, vb.pp(format!("net.{}", 2 * k)))?;
            layers.push((lin, mask(&deg, &prev, false)?));
            prev = deg;
        }
        let out: Vec<usize> = (1..=d).chain(1..=d).collect();
        let name = vb.pp(format!("net.{}", 2 * cfg.hidden.len()));
        let lin = if cfg.zero_init {
            Linear::new(
                name.get_with_hints((2 * d, prev.len()), "weight", Init::Const(0.0))?,
                Some(name.get_with_hints(2 * d, "bias", Init::Const(0.0))?),
            )
        } else {
            linear(prev.len(), 2 * d, name)?
        };
        layers.push((lin, mask(&out, &prev, true)?));
        Ok(Self { dim: d, layers })
    }

    /// `(μ, α)`, each `[N, D]`; `α` is soft-clamped to `(-ALPHA_BOUND, ALPHA_BOUND)`.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.forward_masked(&self.masked()?, x)
    }

    /// The layers with their masks applied. The `D`-pass direction reuses them for every pass
    /// (recomputed per pass, the autograd graph held `D` copies of every weight matrix).
    fn masked(&self) -> Result<Vec<Linear>> {
        self.layers
            .iter()
            .map(|(lin, mask)| Ok(Linear::new((lin.weight() * mask)?, lin.bias().cloned())))
            .collect()
    }

    fn forward_masked(&self, layers: &[Linear], x: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut h = x.clone();
        for (k, layer) in layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if k + 1 < layers.len() {
                h = h.relu()?;
            }
        }
        let alpha =
            forja_layers::tanh(&(h.narrow(1, self.dim, self.dim)? / ALPHA_BOUND)?)? * ALPHA_BOUND;
        Ok((h.narrow(1, 0, self.dim)?, alpha?))
    }
}

/// Which direction is the single pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speed {
    /// MAF: density evaluation in one pass, sampling in `D`.
    FastDensity,
    /// IAF: sampling in one pass, density evaluation in `D`.
    FastSampling,
}

/// `x_i = z_i exp(α_i) + μ_i` with `(μ, α)` from MADE of `x_{<i}` (MAF) or `z_{<i}` (IAF).
pub struct AutoregressiveFlow {
    made: Made,
    speed: Speed,
}

impl AutoregressiveFlow {
    pub fn new(cfg: &MadeConfig, speed: Speed, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            made: Made::new(cfg, vb.pp("made"))?,
            speed,
        })
    }

    /// `x` from `z` given the MADE outputs.
    fn generate(z: &Tensor, (mu, alpha): &(Tensor, Tensor)) -> Result<Tensor> {
        Ok(((z * alpha.exp()?)? + mu)?)
    }

    /// `z` from `x` given the MADE outputs.
    fn normalize(x: &Tensor, (mu, alpha): &(Tensor, Tensor)) -> Result<Tensor> {
        Ok(((x - mu)? * alpha.neg()?.exp()?)?)
    }
}

type Step = fn(&Tensor, &(Tensor, Tensor)) -> Result<Tensor>;

impl AutoregressiveFlow {
    /// Maps `y` with `step`, whose MADE input is its own output: feature `i` of the output is
    /// right once features `< i` are, so `D` passes reach the fixed point. With `one_pass`, the
    /// MADE input is `y` itself. Returns the output and the MADE parameters that produced it.
    /// `detached` iterates on values only (no gradient).
    fn solve(
        &self,
        y: &Tensor,
        step: Step,
        one_pass: bool,
        detached: bool,
    ) -> Result<(Tensor, Tensor)> {
        let layers = self.made.masked()?;
        let params = if one_pass {
            self.made.forward_masked(&layers, y)?
        } else {
            let mut out = y.zeros_like()?;
            for _ in 0..self.made.dim {
                out = step(y, &self.made.forward_masked(&layers, &out)?)?;
                if detached {
                    out = out.detach();
                }
            }
            self.made.forward_masked(&layers, &out)?
        };
        Ok((step(y, &params)?, params.1.sum(D::Minus1)?))
    }
}

impl Flow for AutoregressiveFlow {
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        dims2("autoregressive", z, self.made.dim)?;
        self.solve(z, Self::generate, self.speed == Speed::FastSampling, false)
    }

    fn forward_detached(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        dims2("autoregressive", z, self.made.dim)?;
        let (x, logdet) = self.solve(z, Self::generate, self.speed == Speed::FastSampling, true)?;
        Ok((x.detach(), logdet.detach()))
    }

    fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        dims2("autoregressive", x, self.made.dim)?;
        let (z, sum_alpha) =
            self.solve(x, Self::normalize, self.speed == Speed::FastDensity, false)?;
        Ok((z, sum_alpha.neg()?))
    }
}
