//! Optimizer updates fused into in-place passes over CPU tensors.
//!
//! Written as candle ops, one Adam step is about a dozen passes over the parameters, each
//! allocating a fresh tensor; here it is one in-place pass that updates both moments and the
//! parameter, spread over candle's CPU threads
//! ([`forja_layers::kernels::threads`]). Used for f32/f64 CPU variables; other devices
//! take the candle-op path in [`crate::optim`], which the tests compare against.

use std::cell::Cell;
use std::sync::Mutex;

use candle_core::{
    bail, CpuStorage, InplaceOp1, InplaceOp2, Layout, Result, Storage, Tensor, WithDType,
};

/// Elements per parallel chunk: large enough that splitting costs nothing.
const CHUNK: usize = 1 << 15;

/// `dst[i] = f(dst[i], src[i])` in place, in parallel chunks.
trait Update: Sync {
    const NAME: &'static str;
    fn apply<T: Float>(&self, dst: &mut [T], src: &[T]);
}

fn slice<'a, T: Float>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&T::cpu_storage_as_slice(s)?[a..b]),
        None => bail!("fused optimizer update: non-contiguous tensor"),
    }
}

fn run<T: Float, U: Update>(u: &U, dst: &mut [T], src: &[T]) -> Result<()> {
    if src.len() != dst.len() {
        bail!("{}: tensors of different sizes", U::NAME);
    }
    forja_layers::kernels::par_chunks_mut(dst, CHUNK, |i, d| {
        u.apply(d, &src[i * CHUNK..i * CHUNK + d.len()]);
    });
    Ok(())
}

/// Adapts an [`Update`] to candle's in-place op with one source.
struct Op<U>(U);

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
        let Some((a, b)) = l1.contiguous_offsets() else {
            bail!("{}: non-contiguous parameter", U::NAME)
        };
        match s1 {
            CpuStorage::F32(d) => run::<f32, U>(&self.0, &mut d[a..b], slice(s2, l2)?),
            CpuStorage::F64(d) => run::<f64, U>(&self.0, &mut d[a..b], slice(s2, l2)?),
            _ => bail!("{}: f32 or f64 only", U::NAME),
        }
    }
}

/// `buf = beta * buf + g`: SGD's momentum buffer.
struct Accumulate {
    beta: f64,
}

impl Update for Accumulate {
    const NAME: &'static str = "forja-accumulate";

    fn apply<T: Float>(&self, buf: &mut [T], g: &[T]) {
        let beta = T::from_f64(self.beta);
        for (b, &g) in buf.iter_mut().zip(g) {
            *b = beta * *b + g;
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

    fn apply<T: Float>(&self, p: &mut [T], u: &[T]) {
        let lr = T::from_f64(self.lr);
        for (p, &u) in p.iter_mut().zip(u) {
            *p -= lr * u;
        }
    }
}

/// `buf = beta * buf + g`, in place.
pub(crate) fn accumulate(buf: &Tensor, g: &Tensor, beta: f64) -> Result<()> {
    buf.inplace_op2(g, &Op(Accumulate { beta }))
}

/// The constants of one Adam step: `m = beta1 * m + (1 - beta1) * g`,
/// `v = beta2 * v + (1 - beta2) * g²`, `p = decay * p - step * m / (sqrt(v / bc2) + eps)`
/// (`decay` < 1 is AdamW's weight decay).
pub(crate) struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub decay: f64,
    pub step: f64,
    pub bc2: f64,
    pub eps: f64,
}

impl Adam {
    /// One element at a time, each operation in the parameter's precision and in the order of
    /// the candle-op path, so both give the same bits (a GAN's training is chaotic enough for
    /// one rounding to change where it ends up).
    fn apply<T: Float>(&self, p: &mut [T], m: &mut [T], v: &mut [T], g: &[T]) {
        let f = T::from_f64;
        let (beta1, scale1, beta2, scale2) = (
            f(self.beta1),
            f(1.0 - self.beta1),
            f(self.beta2),
            f(1.0 - self.beta2),
        );
        let (decay, step, inv_bc2, eps) =
            (f(self.decay), f(self.step), f(1.0 / self.bc2), f(self.eps));
        for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
            *m = beta1 * *m + scale1 * g;
            *v = beta2 * *v + scale2 * (g * g);
            let denom = (*v * inv_bc2).sqrt() + eps;
            let decayed = if self.decay == 1.0 { *p } else { *p * decay };
            *p = decayed - *m * step / denom;
        }
    }

    /// Steps `p` and its moments `m`, `v` from the gradient `g` in one parallel pass, each
    /// element of the four read once: 7 reads and writes per element. Three passes, one per
    /// buffer written, read `g` and the moments twice (10); with RealNVP's 6.9M parameters they
    /// were 18% of a training step.
    pub(crate) fn step(&self, p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor) -> Result<()> {
        let (gs, gl) = g.storage_and_layout();
        let Storage::Cpu(gs) = &*gs else {
            bail!("forja-adam: CPU tensors only")
        };
        with_mut(p, |ps, pl| {
            with_mut(m, |ms, ml| {
                with_mut(v, |vs, vl| match (ps, ms, vs) {
                    (CpuStorage::F32(p), CpuStorage::F32(m), CpuStorage::F32(v)) => {
                        let [p, m, v] = [(p, pl), (m, ml), (v, vl)].map(|(d, l)| part(d, l));
                        self.run::<f32>(p?, m?, v?, slice(gs, gl)?)
                    }
                    (CpuStorage::F64(p), CpuStorage::F64(m), CpuStorage::F64(v)) => {
                        let [p, m, v] = [(p, pl), (m, ml), (v, vl)].map(|(d, l)| part(d, l));
                        self.run::<f64>(p?, m?, v?, slice(gs, gl)?)
                    }
                    _ => bail!("forja-adam: f32 or f64 parameters and moments only"),
                })
            })
        })
    }

    fn run<T: Float>(&self, p: &mut [T], m: &mut [T], v: &mut [T], g: &[T]) -> Result<()> {
        if [m.len(), v.len(), g.len()] != [p.len(); 3] {
            bail!("forja-adam: tensors of different sizes");
        }
        // Each chunk's moments behind a lock of their own, taken once by the one thread that
        // handles that chunk of `p`.
        let moments: Vec<_> = m
            .chunks_mut(CHUNK)
            .zip(v.chunks_mut(CHUNK))
            .map(Mutex::new)
            .collect();
        forja_layers::kernels::par_chunks_mut(p, CHUNK, |i, p| {
            let mut mv = moments[i].lock().unwrap_or_else(|e| e.into_inner());
            let (m, v) = &mut *mv;
            self.apply(p, m, v, &g[i * CHUNK..i * CHUNK + p.len()]);
        });
        Ok(())
    }
}

/// The contiguous part of `data` that `l` covers.
fn part<'a, T>(data: &'a mut [T], l: &Layout) -> Result<&'a mut [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&mut data[a..b]),
        None => bail!("forja-adam: non-contiguous tensor"),
    }
}

/// Runs `f` on `t`'s CPU storage with `t` locked for writing: an in-place op whose body is `f`,
/// so that nested calls hold several tensors for writing at once.
fn with_mut<F>(t: &Tensor, f: F) -> Result<()>
where
    F: FnOnce(&mut CpuStorage, &Layout) -> Result<()>,
{
    t.inplace_op1(&WithMut(Cell::new(Some(f))))
}

struct WithMut<F>(Cell<Option<F>>);

impl<F: FnOnce(&mut CpuStorage, &Layout) -> Result<()>> InplaceOp1 for WithMut<F> {
    fn name(&self) -> &'static str {
        "forja-adam"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        match self.0.take() {
            Some(f) => f(s, l),
            None => bail!("forja-adam: the in-place body ran twice"),
        }
    }
}

/// `p -= lr * u`, in place.
pub(crate) fn descend(p: &Tensor, u: &Tensor, lr: f64) -> Result<()> {
    p.inplace_op2(u, &Op(Descend { lr }))
}
