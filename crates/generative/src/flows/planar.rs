//! Planar and radial flows (Rezende & Mohamed 2015): one-unit residual maps whose Jacobian
//! determinant is a scalar expression, constrained so that they stay invertible.

use candle_core::{DType, Tensor, D};
use candle_nn::{Init, VarBuilder};

use super::{dims2, softplus, Flow};
use crate::Result;

/// `x = z + û tanh(wᵀz + b)`, with `û = u + (m(wᵀu) - wᵀu) w / |w|²`, `m(a) = -1 + softplus(a)`,
/// so that `wᵀû >= -1` (the paper's appendix A) and the map is invertible.
///
/// The generative direction is closed-form (what a VAE posterior uses); the normalizing
/// direction solves the scalar equation `wᵀx = a + wᵀû tanh(a + b)` for `a = wᵀz` by
/// bisection on the host and differentiates through the root implicitly, so the flow can also
/// be fitted to data by maximum likelihood.
pub struct Planar {
    dim: usize,
    u: Tensor,
    w: Tensor,
    b: Tensor,
}

impl Planar {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let init = Init::Randn {
            mean: 0.0,
            stdev: 1.0 / (dim as f64).sqrt(),
        };
        Ok(Self {
            dim,
            u: vb.get_with_hints(dim, "u", init)?,
            w: vb.get_with_hints(dim, "w", init)?,
            b: vb.get_with_hints(1, "b", Init::Const(0.0))?,
        })
    }

    /// `û`, the constrained `u`.
    pub fn u_hat(&self) -> Result<Tensor> {
        constrained_u(&self.u, &self.w)
    }

    /// `wᵀz + b` per sample, `[N]`.
    fn affine(&self, z: &Tensor) -> Result<Tensor> {
        Ok(z.matmul(&self.w.unsqueeze(1)?)?
            .squeeze(1)?
            .broadcast_add(&self.b)?)
    }
}

/// `û = u + (m(wᵀu) - wᵀu) w / |w|²` along the last axis (each row its own flow).
fn constrained_u(u: &Tensor, w: &Tensor) -> Result<Tensor> {
    let wu = (w * u)?.sum_keepdim(D::Minus1)?;
    let m = (softplus(&wu)? - 1.0)?;
    let scale = ((m - &wu)? / w.sqr()?.sum_keepdim(D::Minus1)?)?;
    Ok((u + w.broadcast_mul(&scale)?)?)
}

/// One planar step `x = z + û tanh(wᵀz + b)` and `log|det ∂x/∂z|`, for `z: [.., N, D]` and
/// parameters shared by every row (`u, w: [D]`, `b: [1]`) or given per row (`[N, D]`, `[N]`),
/// as in a VAE whose encoder outputs the flow of each posterior (Rezende & Mohamed, sec. 4).
pub fn planar_step(z: &Tensor, u: &Tensor, w: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    let u = constrained_u(u, w)?;
    let h = forja_layers::tanh(&z.broadcast_mul(w)?.sum(D::Minus1)?.broadcast_add(b)?)?;
    let x = (z + h.unsqueeze(D::Minus1)?.broadcast_mul(&u)?)?;
    // det = 1 + h'(wᵀz + b) ûᵀw, h' = 1 - tanh²
    let uw = (&u * w)?.sum(D::Minus1)?;
    let det = (h.sqr()?.affine(-1.0, 1.0)?.broadcast_mul(&uw)? + 1.0)?;
    Ok((x, det.abs()?.log()?))
}

impl Flow for Planar {
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        dims2("planar", z, self.dim)?;
        planar_step(z, &self.u, &self.w, &self.b)
    }

    fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        dims2("planar", x, self.dim)?;
        let u = self.u_hat()?;
        let c = (&u * &self.w)?.sum_all()?;
        let (c_host, b_host) = (scalar(&c)?, scalar(&self.b)?);
        // t = wᵀx; solve g(a) = a + c tanh(a + b) = t for a = wᵀz.
        let t = self.affine(x)?.broadcast_sub(&self.b)?;
        let solve = |t: f64| {
            // g is non-decreasing (c >= -1) and within |c| of a.
            let (mut lo, mut hi) = (t - c_host.abs() - 1e-12, t + c_host.abs() + 1e-12);
            for _ in 0..200 {
                let mid = 0.5 * (lo + hi);
                if mid + c_host * (mid + b_host).tanh() < t {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            0.5 * (lo + hi)
        };
        let roots: Vec<f64> = t
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?
            .into_iter()
            .map(solve)
            .collect();
        let a_star = Tensor::from_vec(roots, x.dim(0)?, x.device())?.to_dtype(x.dtype())?;
        // One Newton step on the graph: its value is the root, and its gradient is the implicit
        // one, da/dθ = -(∂g/∂θ - ∂t/∂θ) / g'(a), so the density can be trained through it.
        let th = forja_layers::tanh(&a_star.broadcast_add(&self.b)?)?;
        let g = (&a_star + th.broadcast_mul(&c)?)?;
        let slope = (th.sqr()?.affine(-1.0, 1.0)?.broadcast_mul(&c)? + 1.0)?.detach();
        let a = (&a_star - ((g - &t)? / slope)?)?;
        let h = forja_layers::tanh(&a.broadcast_add(&self.b)?)?;
        let z = (x - h.unsqueeze(1)?.broadcast_mul(&u.unsqueeze(0)?)?)?;
        let (_, logdet) = self.forward(&z)?;
        Ok((z, logdet.neg()?))
    }
}

/// The value of a one-element tensor as `f64`.
fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?[0])
}

/// `x = z + β h(α, r) (z - z0)`, `r = |z - z0|`, `h = 1 / (α + r)`, with `α = softplus(·) > 0`
/// and `β = -α + softplus(·) >= -α`, which keeps it invertible. Both directions are closed-form
/// (the inverse solves a quadratic in `r`) and differentiable.
pub struct Radial {
    dim: usize,
    z0: Tensor,
    alpha_raw: Tensor,
    beta_raw: Tensor,
}

impl Radial {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let init = Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        Ok(Self {
            dim,
            z0: vb.get_with_hints(dim, "z0", init)?,
            alpha_raw: vb.get_with_hints(1, "alpha", init)?,
            beta_raw: vb.get_with_hints(1, "beta", init)?,
        })
    }

    /// `(α, β)` as `[1]` tensors.
    fn alpha_beta(&self) -> Result<(Tensor, Tensor)> {
        let alpha = softplus(&self.alpha_raw)?;
        let beta = (softplus(&self.beta_raw)? - &alpha)?;
        Ok((alpha, beta))
    }
}

impl Flow for Radial {
    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        dims2("radial", z, self.dim)?;
        let (alpha, beta) = self.alpha_beta()?;
        let dz = z.broadcast_sub(&self.z0)?;
        let r = dz.sqr()?.sum(D::Minus1)?.sqrt()?;
        let h = r.broadcast_add(&alpha)?.recip()?;
        let bh = h.broadcast_mul(&beta)?;
        let x = (z + dz.broadcast_mul(&bh.unsqueeze(1)?)?)?;
        // det = (1 + βh)^(D-1) (1 + βh + βh' r), h' = -h²
        let one_bh = (&bh + 1.0)?;
        let last = (&one_bh - (&bh * &h)?.mul(&r)?)?;
        let logdet = ((one_bh.log()? * (self.dim as f64 - 1.0))? + last.log()?)?;
        Ok((x, logdet))
    }

    fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        dims2("radial", x, self.dim)?;
        let (alpha, beta) = self.alpha_beta()?;
        let dx = x.broadcast_sub(&self.z0)?;
        let big_r = dx.sqr()?.sum(D::Minus1)?.sqrt()?;
        // |x - z0| = r (α + β + r) / (α + r)  =>  r² + (α + β - R) r - α R = 0, r >= 0
        let p = big_r.neg()?.broadcast_add(&(&alpha + &beta)?)?;
        let disc = (p.sqr()? + big_r.broadcast_mul(&alpha)?.affine(4.0, 0.0)?)?;
        let r = ((disc.sqrt()? - &p)? * 0.5)?;
        let factor = (r.broadcast_add(&alpha)?.recip()?.broadcast_mul(&beta)? + 1.0)?;
        let z = (dx
            .broadcast_div(&factor.unsqueeze(1)?)?
            .broadcast_add(&self.z0))?;
        let (_, logdet) = self.forward(&z)?;
        Ok((z, logdet.neg()?))
    }
}
