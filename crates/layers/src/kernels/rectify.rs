//! Leaky ReLU (ReLU at slope 0) in one pass each way. The backward pass reads the output's sign,
//! which is the input's for a slope >= 0, so it needs nothing saved beyond the output. The same
//! holds for `relu(a + b)`, the end of a residual block, fused into one pass.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::{output, par_chunks_mut, saved, slice, Float};

/// Elements per parallel chunk; smaller tensors (an MLP's activations) are one chunk, which runs
/// on the calling thread, where waking the pool would cost more than the pass (measured on the
/// VAE workload).
const CHUNK: usize = 1 << 16;

#[derive(Debug, Clone, Copy)]
struct Rectify {
    slope: f64,
}

fn forward<T: Float>(op: &Rectify, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let slope = T::from_f64(op.slope);
    // `move` copies the slope into the closure, so the loop need not reload it after every
    // store; the select instead of a branch lets it vectorize.
    map_op::<T>("forja-leaky-relu", (s, l), move |x| {
        x * if x > T::ZERO { T::ONE } else { slope }
    })
}

/// The body of a unary element-wise op: `f(x[i])` for every element, in chunks over the kernels'
/// threads for large tensors.
pub(super) fn map_op<T: Float>(
    name: &str,
    (s, l): (&CpuStorage, &Layout),
    f: impl Fn(T) -> T + Copy + Send + Sync,
) -> Result<(CpuStorage, Shape)> {
    let x = slice::<T>(s, l, name)?;
    let pass = move |(y, x): (&mut [MaybeUninit<T>], &[T])| {
        for (y, &x) in y.iter_mut().zip(x) {
            y.write(f(x));
        }
    };
    let write = |y: &mut [MaybeUninit<T>]| {
        par_chunks_mut(y, CHUNK, |i, y| {
            let x = &x[i * CHUNK..][..y.len()];
            pass((y, x))
        })
    };
    // SAFETY: `y` and `x` have the same length and go in the same chunks, every `y` written.
    let y = unsafe { output(x.len(), write) };
    Ok((T::to_cpu_storage_owned(y), l.shape().clone()))
}

impl CustomOp1 for Rectify {
    fn name(&self) -> &'static str {
        "forja-leaky-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        super::by_dtype!(self.name(), s, forward(self, s, l))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(g.contiguous()?.apply_op2(&saved(y), Slope(*self))?))
    }
}

/// `(g, y) -> g` where `y > 0`, `slope * g` elsewhere: linear in `g`, so its own gradient is
/// the same map (and zero with respect to `y`, almost everywhere).
struct Slope(Rectify);

fn backward<T: Float>(
    op: &Rectify,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let slope = T::from_f64(op.slope);
    zip_op::<T>("forja-leaky-relu-bwd", (s1, l1), (s2, l2), move |g, y| {
        g * if y > T::ZERO { T::ONE } else { slope }
    })
}

/// The body of a binary element-wise op: `f(a[i], b[i])` over two tensors of one shape.
pub(super) fn zip_op<T: Float>(
    name: &str,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    f: impl Fn(T, T) -> T + Copy + Send + Sync,
) -> Result<(CpuStorage, Shape)> {
    if l1.dims() != l2.dims() {
        candle_core::bail!("{name}: shapes {:?} and {:?} differ", l1.dims(), l2.dims());
    }
    let (a, b) = (slice::<T>(s1, l1, name)?, slice::<T>(s2, l2, name)?);
    Ok((
        T::to_cpu_storage_owned(zip_map(a, b, f)),
        l1.shape().clone(),
    ))
}

/// `f(a[i], b[i])` for every element, in chunks over the kernels' threads for large tensors. `f` is
/// taken by value so that its captures are locals the vectorized loop need not reload.
fn zip_map<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Copy + Send + Sync) -> Vec<T> {
    assert_eq!(a.len(), b.len(), "zip_map: lengths differ");
    let pass = move |out: &mut [MaybeUninit<T>], a: &[T], b: &[T]| {
        for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
            o.write(f(a, b));
        }
    };
    let write = |out: &mut [MaybeUninit<T>]| {
        par_chunks_mut(out, CHUNK, |i, out| {
            let r = i * CHUNK..i * CHUNK + out.len();
            pass(out, &a[r.clone()], &b[r])
        })
    };
    // SAFETY: `out`, `a` and `b` have the same length and go in the same chunks.
    unsafe { output(a.len(), write) }
}

impl CustomOp2 for Slope {
    fn name(&self) -> &'static str {
        "forja-leaky-relu-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::by_dtype!(self.name(), s1, backward(&self.0, s1, l1, s2, l2))
    }

    fn bwd(
        &self,
        _g: &Tensor,
        y: &Tensor,
        _res: &Tensor,
        gg: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((
            Some(gg.contiguous()?.apply_op2(&saved(y), Slope(self.0))?),
            None,
        ))
    }
}

/// `x` for `x > 0`, `slope * x` otherwise (`slope >= 0`).
pub(crate) fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Rectify { slope })
}

/// The backward op, `(g, y) -> dx`: the gradient `g` at the output `y` of a leaky ReLU.
pub(crate) fn leaky_relu_backward(g: &Tensor, y: &Tensor, slope: f64) -> Result<Tensor> {
    g.contiguous()?
        .apply_op2(&y.contiguous()?, Slope(Rectify { slope }))
}

/// `relu(a + b)` in one pass: the sum is never stored, and the backward pass is ReLU's, its
/// result the gradient of both terms.
#[derive(Debug, Clone, Copy)]
struct AddRelu;

fn add_relu_forward<T: Float>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    zip_op::<T>("forja-add-relu", (s1, l1), (s2, l2), |a, b| {
        let v = a + b;
        if v > T::ZERO {
            v
        } else {
            T::ZERO
        }
    })
}

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "forja-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::by_dtype!(self.name(), s1, add_relu_forward(s1, l1, s2, l2))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d = leaky_relu_backward(g, &saved(y), 0.0)?;
        Ok((Some(d.clone()), Some(d)))
    }
}

/// `max(a + b, 0)` for two tensors of one shape.
pub(crate) fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
}
