//! Optimizer updates fused into in-place passes over CPU tensors.
//!
//! Written as candle ops, one Adam step is about a dozen passes over the parameters, each
//! allocating a fresh tensor; here it is three in-place passes (first moment, second moment,
//! parameter), spread over candle's CPU threads
//! ([`forja_layers::kernels::threads`]). Used for f32/f64 CPU variables; other devices
//! take the candle-op path in [`crate::optim`], which the tests compare against.

use candle_core::{bail, CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor, WithDType};

/// Elements per parallel chunk: large enough that splitting costs nothing.
const CHUNK: usize = 1 << 15;

/// `dst[i] = f(dst[i], a[i], b[i])` in place, in parallel chunks.
trait Update: Sync {
    const NAME: &'static str;
    fn apply<T: Float>(&self, dst: &mut [T], srcs: &[&[T]]);
}

fn slice<'a, T: Float>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&T::cpu_storage_as_slice(s)?[a..b]),
        None => bail!("fused optimizer update: non-contiguous tensor"),
    }
}

fn run<T: Float, U: Update>(u: &U, dst: &mut [T], srcs: &[(&CpuStorage, &Layout)]) -> Result<()> {
    let srcs = srcs
        .iter()
        .map(|(s, l)| slice::<T>(s, l))
        .collect::<Result<Vec<_>>>()?;
    if srcs.iter().any(|s| s.len() != dst.len()) {
        bail!("{}: tensors of different sizes", U::NAME);
    }
    forja_layers::kernels::par_chunks_mut(dst, CHUNK, |i, d| {
        let part: Vec<&[T]> = srcs
            .iter()
            .map(|s| &s[i * CHUNK..i * CHUNK + d.len()])
            .collect();
        u.apply(d, &part);
    });
    Ok(())
}

/// Adapts an [`Update`] to candle's in-place ops with one and two sources.
struct Op<U>(U);

impl<U: Update> Op<U> {
    fn fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        srcs: &[(&CpuStorage, &Layout)],
    ) -> Result<()> {
        let Some((a, b)) = dst_l.contiguous_offsets() else {
            bail!("{}: non-contiguous parameter", U::NAME)
        };
        match dst {
            CpuStorage::F32(d) => run::<f32, U>(&self.0, &mut d[a..b], srcs),
            CpuStorage::F64(d) => run::<f64, U>(&self.0, &mut d[a..b], srcs),
            _ => bail!("{}: f32 or f64 only", U::NAME),
        }
    }
}

impl<U: Update> InplaceOp2 for Op<U> {
    fn name(&self) -> &'static str {
        U::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        self.fwd(s1, l1, &[(s2, l2)])
    }
}

impl<U: Update> InplaceOp3 for Op<U> {
    fn name(&self) -> &'static str {
        U::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        self.fwd(s1, l1, &[(s2, l2), (s3, l3)])
    }
}

/// `buf = beta * buf + scale * g` (or `g²` when `square`): Adam's moments (`scale = 1 - beta`)
/// and SGD's momentum buffer (`scale = 1`).
struct Accumulate {
    beta: f64,
    scale: f64,
    square: bool,
}

impl Update for Accumulate {
    const NAME: &'static str = "forja-accumulate";

    fn apply<T: Float>(&self, buf: &mut [T], srcs: &[&[T]]) {
        let (beta, scale) = (T::from_f64(self.beta), T::from_f64(self.scale));
        for (b, &g) in buf.iter_mut().zip(srcs[0]) {
            let g = if self.square { g * g } else { g };
            *b = beta * *b + scale * g;
        }
    }
}

/// Adam's parameter update: `p = decay * p - step * m / (sqrt(v / bc2) + eps)`, each operation
/// in the parameter's precision and in the order of the candle-op path, so both give the same
/// bits (a GAN's training is chaotic enough for one rounding to change where it ends up).
struct AdamApply {
    decay: f64,
    step: f64,
    bc2: f64,
    eps: f64,
}

impl Update for AdamApply {
    const NAME: &'static str = "forja-adam";

    fn apply<T: Float>(&self, p: &mut [T], srcs: &[&[T]]) {
        let (m, v) = (srcs[0], srcs[1]);
        let (decay, step) = (T::from_f64(self.decay), T::from_f64(self.step));
        let (inv_bc2, eps) = (T::from_f64(1.0 / self.bc2), T::from_f64(self.eps));
        for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
            let denom = (v * inv_bc2).sqrt() + eps;
            let decayed = if self.decay == 1.0 { *p } else { *p * decay };
            *p = decayed - m * step / denom;
        }
    }
}

/// f32 and f64, with the square root the Adam update needs.
trait Float: WithDType {
    fn sqrt(self) -> Self;
}

impl Float for f32 {
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
}

impl Float for f64 {
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
}

/// `p = p - lr * u`.
struct Descend {
    lr: f64,
}

impl Update for Descend {
    const NAME: &'static str = "forja-descend";

    fn apply<T: Float>(&self, p: &mut [T], srcs: &[&[T]]) {
        let lr = T::from_f64(self.lr);
        for (p, &u) in p.iter_mut().zip(srcs[0]) {
            *p -= lr * u;
        }
    }
}

/// `buf = beta * buf + scale * g` (`g²` when `square`), in place.
pub(crate) fn accumulate(
    buf: &Tensor,
    g: &Tensor,
    beta: f64,
    scale: f64,
    square: bool,
) -> Result<()> {
    buf.inplace_op2(
        g,
        &Op(Accumulate {
            beta,
            scale,
            square,
        }),
    )
}

/// Adam's update of `p` from its moments, in place (`decay` < 1 is AdamW's weight decay).
pub(crate) fn adam_apply(
    p: &Tensor,
    m: &Tensor,
    v: &Tensor,
    decay: f64,
    step: f64,
    bc2: f64,
    eps: f64,
) -> Result<()> {
    p.inplace_op3(
        m,
        v,
        &Op(AdamApply {
            decay,
            step,
            bc2,
            eps,
        }),
    )
}

/// `p -= lr * u`, in place.
pub(crate) fn descend(p: &Tensor, u: &Tensor, lr: f64) -> Result<()> {
    p.inplace_op2(u, &Op(Descend { lr }))
}
