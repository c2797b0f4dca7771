//! Coupling flows (NICE, Dinh et al. 2014; RealNVP, Dinh et al. 2016): a mask splits the
//! features; the masked ones pass through unchanged and condition an affine (or additive) map
//! of the others. The Jacobian is triangular and the inverse needs one pass.

use candle_core::{Module, Tensor, D};
use candle_nn::{Init, VarBuilder};
use forja_layers::{linear, Linear};

use super::{dims2, indicator, Flow};
use crate::{GenerativeError, Result};

/// What the conditioner produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CouplingKind {
    /// `x = z ⊙ exp(s) + t` with `s = tanh(·)` bounded (RealNVP).
    Affine,
    /// `x = z + t`, volume-preserving (NICE).
    Additive,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CouplingConfig {
    pub kind: CouplingKind,
    /// `true` where a feature passes through and conditions the rest.
    pub mask: Vec<bool>,
    /// Width of the conditioner MLP's hidden layers.
    pub hidden: usize,
    /// Number of hidden layers (ReLU).
    pub layers: usize,
    /// Start as the identity map (last conditioner layer zero), as is usual for training.
    pub zero_init: bool,
}

impl CouplingConfig {
    /// The first half of the features (or the second, `first = false`) conditions the rest.
    pub fn half(kind: CouplingKind, dim: usize, first: bool) -> Self {
        let mask = (0..dim).map(|i| (i < dim / 2) == first).collect();
        Self::with_mask(kind, mask)
    }

    /// Every other feature (even indices when `even`) conditions the rest: the 1-D checkerboard.
    pub fn alternating(kind: CouplingKind, dim: usize, even: bool) -> Self {
        let mask = (0..dim).map(|i| (i % 2 == 0) == even).collect();
        Self::with_mask(kind, mask)
    }

    pub fn with_mask(kind: CouplingKind, mask: Vec<bool>) -> Self {
        Self {
            kind,
            mask,
            hidden: 64,
            layers: 2,
            zero_init: true,
        }
    }
}

pub struct Coupling {
    kind: CouplingKind,
    dim: usize,
    /// 1 where features pass through, as a `[1, D]` tensor.
    keep: Tensor,
    net: Vec<Linear>,
}

impl Coupling {
    pub fn new(cfg: &CouplingConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.mask.len();
        if dim < 2 || cfg.mask.iter().all(|&m| m) || cfg.mask.iter().all(|&m| !m) {
            return Err(GenerativeError::Config {
                layer: "coupling",
                msg: format!(
                    "the mask must keep some and transform some of at least 2 features, got {:?}",
                    cfg.mask
                ),
            });
        }
        let keep = indicator(1, dim, |_, j| cfg.mask[j], &vb)?;
        let out = match cfg.kind {
            CouplingKind::Affine => 2 * dim,
            CouplingKind::Additive => dim,
        };
        let widths: Vec<usize> = std::iter::once(dim)
            .chain(std::iter::repeat_n(cfg.hidden, cfg.layers))
            .chain(std::iter::once(out))
            .collect();
        let vn = vb.pp("net");
        let mut net = Vec::new();
        for (k, w) in widths.windows(2).enumerate() {
            let name = vn.pp((2 * k).to_string());
            let last = k + 2 == widths.len();
            net.push(if last && cfg.zero_init {
                Linear::new(
                    name.get_with_hints((w[1], w[0]), "weight", Init::Const(0.0))?,
                    Some(name.get_with_hints(w[1], "bias", Init::Const(0.0))?),
                )
            } else {
                linear(w[0], w[1], name)?
            });
        }
        Ok(Self {
            kind: cfg.kind,
            dim,
            keep,
            net,
        })
    }

    /// `(s, t)` restricted to the transformed features, from the kept ones.
    fn scale_shift(&self, kept: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut h = kept.clone();
        for (k, layer) in self.net.iter().enumerate() {
            h = layer.forward(&h)?;
            if k + 1 < self.net.len() {
                h = h.relu()?;
            }
        }
        let change = self.keep.affine(-1.0, 1.0)?;
        Ok(match self.kind {
            CouplingKind::Affine => (
                forja_layers::tanh(&h.narrow(1, 0, self.dim)?)?.broadcast_mul(&change)?,
                h.narrow(1, self.dim, self.dim)?.broadcast_mul(&change)?,
            ),
            CouplingKind::Additive => (h.zeros_like()?, h.broadcast_mul(&change)?),
        })
    }
}

impl Flow for Coupling {
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        dims2("coupling", z, self.dim)?;
        let (s, t) = self.scale_shift(&z.broadcast_mul(&self.keep)?)?;
        let x = ((z * s.exp()?)? + t)?;
        Ok((x, s.sum(D::Minus1)?))
    }

    fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        dims2("coupling", x, self.dim)?;
        let (s, t) = self.scale_shift(&x.broadcast_mul(&self.keep)?)?;
        let z = ((x - t)? * s.neg()?.exp()?)?;
        Ok((z, s.sum(D::Minus1)?.neg()?))
    }
}
