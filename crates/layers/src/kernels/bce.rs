//! Binary cross-entropy with logits, summed over the last axis:
//! `l[r] = Σ_j softplus(o[r, j]) - x[r, j] o[r, j]` (the negative Bernoulli log-likelihood of a
//! VAE's decoder or an autoencoder's reconstruction). From candle ops it is nine passes
//! forward, each allocating and dispatched to candle's thread pool (a fifth of an MLP VAE's
//! step, most of it the pool's barrier); here one pass each way, rows in parallel.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::{math, output, par_chunks_mut, par_map, slice, Float};

/// `[rows, cols]` of the logits, the targets of the same shape (and `[rows]` for `g`).
fn dims(op: &str, o: &Layout, x: &Layout) -> Result<(usize, usize)> {
    match *o.dims() {
        [r, c] if x.dims() == o.dims() => Ok((r, c)),
        _ => candle_core::bail!("{op}: logits {:?} and targets {:?}", o.dims(), x.dims()),
    }
}

/// The element types' softplus and sigmoid: branch-free vectorizing ones for f32 (glibc's
/// `log1pf` and `expf` were 16% of an MLP VAE's training step), the C library's for f64.
trait Logistic: Float {
    /// `log(1 + e^o)` without overflow.
    fn softplus(self) -> Self;
    /// `1 / (1 + e^-o)`, 0 (not NaN) where `e^-o` overflows.
    fn sigmoid(self) -> Self;
}

impl Logistic for f32 {
    fn softplus(self) -> Self {
        math::softplus_f32(self)
    }
    fn sigmoid(self) -> Self {
        math::sigmoid_f32(self)
    }
}

impl Logistic for f64 {
    fn softplus(self) -> Self {
        if self > 0.0 {
            self + (-self).exp().ln_1p()
        } else {
            self.exp().ln_1p()
        }
    }
    fn sigmoid(self) -> Self {
        1.0 / (1.0 + (-self).exp())
    }
}

/// Independent partial sums per row, so the row sum vectorizes (in a fixed order).
const LANES: usize = 8;

/// `Σ_j softplus(o[j]) - x[j] o[j]` of one row.
fn row_loss<T: Logistic>(o: &[T], x: &[T]) -> T {
    let term = |o: T, x: T| o.softplus() - x * o;
    let mut acc = [T::ZERO; LANES];
    let (co, cx) = (o.chunks_exact(LANES), x.chunks_exact(LANES));
    let (ro, rx) = (co.remainder(), cx.remainder());
    for (o, x) in co.zip(cx) {
        for l in 0..LANES {
            acc[l] += term(o[l], x[l]);
        }
    }
    for (l, (&o, &x)) in ro.iter().zip(rx).enumerate() {
        acc[l] += term(o, x);
    }
    acc.into_iter().fold(T::ZERO, |a, b| a + b)
}

/// The per-row sums.
struct Bce;

fn forward<T: Logistic>(
    (os, ol): (&CpuStorage, &Layout),
    (xs, xl): (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    let name = "forja-bce-with-logits";
    let (r, c) = dims(name, ol, xl)?;
    let (o, x) = (slice::<T>(os, ol, name)?, slice::<T>(xs, xl, name)?);
    let l = par_map(r, |i| {
        row_loss(&o[i * c..(i + 1) * c], &x[i * c..(i + 1) * c])
    });
    Ok((T::to_cpu_storage_owned(l), Shape::from(r)))
}

impl CustomOp2 for Bce {
    fn name(&self) -> &'static str {
        "forja-bce-with-logits"
    }

    fn cpu_fwd(
        &self,
        os: &CpuStorage,
        ol: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::by_dtype!(self.name(), os, forward((os, ol), (xs, xl)))
    }

    fn bwd(
        &self,
        o: &Tensor,
        x: &Tensor,
        _l: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let x_needs_grad = x.track_op();
        let (o, x) = (super::saved(o), super::saved(x));
        // Targets are usually data: their gradient is made only when something needs it.
        let dx = if x_needs_grad {
            Some(o.broadcast_mul(&g.unsqueeze(1)?)?.neg()?)
        } else {
            None
        };
        Ok((Some(o.apply_op3(&x, &g, BceGrad)?), dx))
    }
}

/// `do[r, j] = g[r] (σ(o[r, j]) - x[r, j])`, the logits' gradient.
struct BceGrad;

fn grad<T: Logistic>(
    (os, ol): (&CpuStorage, &Layout),
    (xs, xl): (&CpuStorage, &Layout),
    (gs, gl): (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    let name = "forja-bce-with-logits-grad";
    let (r, c) = dims(name, ol, xl)?;
    if gl.dims() != [r] {
        candle_core::bail!("{name}: gradient {:?} for {r} rows", gl.dims());
    }
    let (o, x, g) = (
        slice::<T>(os, ol, name)?,
        slice::<T>(xs, xl, name)?,
        slice::<T>(gs, gl, name)?,
    );
    let write = |d: &mut [MaybeUninit<T>]| {
        par_chunks_mut(d, c, |i, d| {
            let (o, x, g) = (&o[i * c..(i + 1) * c], &x[i * c..(i + 1) * c], g[i]);
            for ((d, &o), &x) in d.iter_mut().zip(o).zip(x) {
                d.write(g * (o.sigmoid() - x));
            }
        })
    };
    // SAFETY: row `i` of `d` is written from row `i` of `o` and `x`, all `c` long.
    let d = unsafe { output(r * c, write) };
    Ok((T::to_cpu_storage_owned(d), ol.shape().clone()))
}

impl CustomOp3 for BceGrad {
    fn name(&self) -> &'static str {
        "forja-bce-with-logits-grad"
    }

    fn cpu_fwd(
        &self,
        os: &CpuStorage,
        ol: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::by_dtype!(self.name(), os, grad((os, ol), (xs, xl), (gs, gl)))
    }

    /// Second derivatives, from candle ops (only reached when gradients stay on the graph).
    fn bwd(
        &self,
        o: &Tensor,
        x: &Tensor,
        g: &Tensor,
        _d: &Tensor,
        dd: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let s = candle_nn::ops::sigmoid(o)?;
        let g = g.unsqueeze(1)?;
        let ds = (s.ones_like()? - &s)?.mul(&s)?;
        Ok((
            Some(dd.mul(&ds)?.broadcast_mul(&g)?),
            Some(dd.broadcast_mul(&g)?.neg()?),
            Some(dd.mul(&(s - x)?)?.sum(1)?),
        ))
    }
}

/// `Σ_j softplus(o[.., j]) - x[.., j] o[.., j]` for logits `o` and targets `x` of one shape.
pub(crate) fn bce_with_logits(o: &Tensor, x: &Tensor) -> Result<Tensor> {
    let dims = o.dims();
    let Some((&c, lead)) = dims.split_last() else {
        candle_core::bail!("forja-bce-with-logits: the logits need at least one dimension");
    };
    let rows = lead.iter().product::<usize>();
    let (o2, x2) = (
        o.contiguous()?.reshape((rows, c))?,
        x.contiguous()?.reshape((rows, c))?,
    );
    o2.apply_op2(&x2, Bce)?.reshape(lead)
}

/// The logits' gradient op on its own (its backward pass is tested).
#[cfg(test)]
pub(crate) fn bce_grad(o: &Tensor, x: &Tensor, g: &Tensor) -> Result<Tensor> {
    o.apply_op3(x, g, BceGrad)
}
