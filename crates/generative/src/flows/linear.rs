//! Linear flows: fixed permutations and a learned invertible matrix in LU form.

use candle_core::{DType, Tensor};
use candle_nn::{Init, VarBuilder};
use rand::seq::SliceRandom;

use super::{dims2, indicator, Flow};
use crate::{GenerativeError, Result};

/// Reorders the features: `x = z[:, perm]`; log-det 0. Placed between coupling or
/// autoregressive layers so every feature is transformed in turn.
pub struct Permutation {
    perm: Vec<u32>,
    inverse: Vec<u32>,
}

impl Permutation {
    /// A random permutation of `dim` features, reproducible for `seed`.
    pub fn random(dim: usize, seed: u64) -> Self {
        let mut perm: Vec<u32> = (0..dim as u32).collect();
        perm.shuffle(&mut forja_data::seed::rng(seed, &[]));
        Self::from_order(perm)
    }

    /// The features in reverse order.
    pub fn reverse(dim: usize) -> Self {
        Self::from_order((0..dim as u32).rev().collect())
    }

    fn from_order(perm: Vec<u32>) -> Self {
        let mut inverse = vec![0u32; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p as usize] = i as u32;
        }
        Self { perm, inverse }
    }

    fn gather(&self, x: &Tensor, order: &[u32]) -> Result<(Tensor, Tensor)> {
        let n = dims2("permutation", x, order.len())?;
        let idx = Tensor::from_slice(order, order.len(), x.device())?;
        Ok((
            x.index_select(&idx, 1)?,
            Tensor::zeros(n, x.dtype(), x.device())?,
        ))
    }
}

impl Flow for Permutation {
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.gather(z, &self.perm)
    }

    fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.gather(x, &self.inverse)
    }
}

/// An invertible linear map `W = P L U` (Kingma & Dhariwal 2018): a fixed permutation `P`, a
/// unit lower-triangular `L` and an upper-triangular `U` whose diagonal is `exp(log_s)`, so
/// `log|det W| = sum(log_s)` costs O(D).
///
/// The normalizing direction `z = W x + b` is one matrix product and differentiable (what
/// training by likelihood uses); the generative direction solves with `W⁻¹`, computed on the
/// host in f64 without gradient (for sampling).
pub struct LuLinear {
    dim: usize,
    perm: Tensor,
    /// Constant masks: strictly below and strictly above the diagonal, and the identity.
    below: Tensor,
    above: Tensor,
    eye: Tensor,
    lower: Tensor,
    upper: Tensor,
    log_s: Tensor,
    bias: Tensor,
}

impl LuLinear {
    pub fn new(dim: usize, seed: u64, vb: VarBuilder) -> Result<Self> {
        let small = Init::Randn {
            mean: 0.0,
            stdev: 0.05,
        };
        let p = Permutation::random(dim, seed);
        Ok(Self {
            dim,
            perm: indicator(dim, dim, |i, j| p.perm[i] as usize == j, &vb)?,
            below: indicator(dim, dim, |i, j| i > j, &vb)?,
            above: indicator(dim, dim, |i, j| i < j, &vb)?,
            eye: indicator(dim, dim, |i, j| i == j, &vb)?,
            lower: vb.get_with_hints((dim, dim), "lower", small)?,
            upper: vb.get_with_hints((dim, dim), "upper", small)?,
            log_s: vb.get_with_hints(dim, "log_s", small)?,
            bias: vb.get_with_hints(dim, "bias", Init::Const(0.0))?,
        })
    }

    /// The matrix `W = P L U`.
    pub fn weight(&self) -> Result<Tensor> {
        let l = ((&self.lower * &self.below)? + &self.eye)?;
        let diag = self.eye.broadcast_mul(&self.log_s.exp()?)?;
        let u = ((&self.upper * &self.above)? + diag)?;
        Ok(self.perm.matmul(&l)?.matmul(&u)?)
    }

    fn logdet(&self, n: usize) -> Result<Tensor> {
        Ok(self.log_s.sum_all()?.broadcast_as(n)?.contiguous()?)
    }
}

/// The inverse of a `d x d` row-major matrix by Gauss-Jordan elimination with partial pivoting.
pub fn invert(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut m = a.to_vec();
    let mut inv: Vec<f64> = (0..d * d)
        .map(|k| f64::from(u8::from(k / d == k % d)))
        .collect();
    for c in 0..d {
        let p = (c..d).max_by(|&i, &j| m[i * d + c].abs().total_cmp(&m[j * d + c].abs()))?;
        if m[p * d + c].abs() < 1e-300 {
            return None;
        }
        for k in 0..d {
            m.swap(c * d + k, p * d + k);
            inv.swap(c * d + k, p * d + k);
        }
        let pivot = m[c * d + c];
        for k in 0..d {
            m[c * d + k] /= pivot;
            inv[c * d + k] /= pivot;
        }
        for r in (0..d).filter(|&r| r != c) {
            let f = m[r * d + c];
            for k in 0..d {
                m[r * d + k] -= f * m[c * d + k];
                inv[r * d + k] -= f * inv[c * d + k];
            }
        }
    }
    Some(inv)
}

impl Flow for LuLinear {
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = dims2("lu_linear", z, self.dim)?;
        let w: Vec<f64> = self
            .weight()?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1()?;
        let inv = invert(&w, self.dim).ok_or(GenerativeError::NotInvertible {
            layer: "lu_linear",
            msg: "W is numerically singular".into(),
        })?;
        let inv = Tensor::from_vec(inv, (self.dim, self.dim), z.device())?.to_dtype(z.dtype())?;
        let x = z.broadcast_sub(&self.bias.detach())?.matmul(&inv.t()?)?;
        Ok((x, self.logdet(n)?.neg()?.detach()))
    }

    fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = dims2("lu_linear", x, self.dim)?;
        let z = x.matmul(&self.weight()?.t()?)?.broadcast_add(&self.bias)?;
        Ok((z, self.logdet(n)?))
    }
}

/// `log|det|` of a square row-major matrix by LU with partial pivoting (`None` if singular).
pub fn log_abs_det(a: &[f64], d: usize) -> Option<f64> {
    let mut m = a.to_vec();
    let mut total = 0.0;
    for c in 0..d {
        let p = (c..d).max_by(|&i, &j| m[i * d + c].abs().total_cmp(&m[j * d + c].abs()))?;
        let pivot = m[p * d + c];
        if pivot == 0.0 {
            return None;
        }
        for k in 0..d {
            m.swap(c * d + k, p * d + k);
        }
        total += pivot.abs().ln();
        for r in c + 1..d {
            let f = m[r * d + c] / pivot;
            for k in c..d {
                m[r * d + k] -= f * m[c * d + k];
            }
        }
    }
    Some(total)
}
