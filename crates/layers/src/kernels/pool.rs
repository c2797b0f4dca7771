//! Max pooling: the forward op keeps each window's first maximum (NaN wins, as in PyTorch);
//! its backward op finds the same position again and adds the incoming gradient there.
//! Planes (sample, channel) are spread over rayon's threads.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{by_dtype, saved, slice, Float};
use crate::window::Axis;

#[derive(Debug, Clone, Copy)]
struct MaxPool {
    /// Height and width windows.
    axes: [Axis; 2],
}

impl MaxPool {
    fn planes(&self, l: &Layout) -> Result<usize> {
        let d = l.dims();
        let [ah, aw] = self.axes;
        if d.len() != 4 || d[2] != ah.n || d[3] != aw.n {
            candle_core::bail!(
                "forja-max-pool2d: expected [N, C, {}, {}], got {d:?}",
                ah.n,
                aw.n
            );
        }
        Ok(d[0] * d[1])
    }

    /// The flat index in its plane of the first maximum of window `(oy, ox)`.
    fn argmax<T: Float>(&self, plane: &[T], oy: usize, ox: usize) -> usize {
        let [ah, aw] = self.axes;
        let (mut best, mut at) = (T::NEG_INFINITY, usize::MAX);
        for jh in 0..ah.k {
            let Some(iy) = ah.pos(oy, jh) else { continue };
            for jw in 0..aw.k {
                let Some(ix) = aw.pos(ox, jw) else { continue };
                let v = plane[iy * aw.n + ix];
                if at == usize::MAX || v > best || (v.is_nan() && !best.is_nan()) {
                    (best, at) = (v, iy * aw.n + ix);
                }
            }
        }
        at
    }

    fn forward<T: Float>(&self, x: &[T], planes: usize) -> Vec<T> {
        let [ah, aw] = self.axes;
        let (n_in, n_out) = (ah.n * aw.n, ah.out * aw.out);
        let mut y = vec![T::ZERO; planes * n_out];
        y.par_chunks_mut(n_out.max(1))
            .enumerate()
            .for_each(|(p, yp)| {
                let plane = &x[p * n_in..(p + 1) * n_in];
                for oy in 0..ah.out {
                    for ox in 0..aw.out {
                        yp[oy * aw.out + ox] = plane[self.argmax(plane, oy, ox)];
                    }
                }
            });
        y
    }

    fn backward<T: Float>(&self, x: &[T], dy: &[T], planes: usize) -> Vec<T> {
        let [ah, aw] = self.axes;
        let (n_in, n_out) = (ah.n * aw.n, ah.out * aw.out);
        let mut dx = vec![T::ZERO; planes * n_in];
        dx.par_chunks_mut(n_in.max(1))
            .enumerate()
            .for_each(|(p, dxp)| {
                let plane = &x[p * n_in..(p + 1) * n_in];
                for oy in 0..ah.out {
                    for ox in 0..aw.out {
                        let at = self.argmax(plane, oy, ox);
                        dxp[at] += dy[p * n_out + oy * aw.out + ox];
                    }
                }
            });
        dx
    }
}

fn forward<T: Float>(op: &MaxPool, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let planes = op.planes(l)?;
    let y = op.forward(slice::<T>(s, l, "forja-max-pool2d")?, planes);
    let d = l.dims();
    let [ah, aw] = op.axes;
    Ok((
        T::to_cpu_storage_owned(y),
        Shape::from((d[0], d[1], ah.out, aw.out)),
    ))
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "forja-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(self.name(), s, forward(self, s, l))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            saved(x).apply_op2(&g.contiguous()?, MaxPoolBackward(*self))?,
        ))
    }
}

/// `(x, dy) -> dx`; it has no gradient of its own (with `CANDLE_GRAD_DO_NOT_DETACH`, a second
/// derivative through max pooling fails with candle's "backward not supported" error rather
/// than coming out wrong).
struct MaxPoolBackward(MaxPool);

fn backward<T: Float>(
    op: &MaxPool,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let planes = op.planes(l1)?;
    let name = "forja-max-pool2d-bwd";
    let dx = op.backward(slice::<T>(s1, l1, name)?, slice::<T>(s2, l2, name)?, planes);
    Ok((T::to_cpu_storage_owned(dx), l1.shape().clone()))
}

impl CustomOp2 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "forja-max-pool2d-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [ah, aw] = self.0.axes;
        if l2.dims().len() != 4
            || l2.dims()[2..] != [ah.out, aw.out]
            || l2.dims()[..2] != l1.dims()[..2]
        {
            candle_core::bail!(
                "{}: gradient of shape {:?} for input {:?}",
                self.name(),
                l2.dims(),
                l1.dims()
            );
        }
        by_dtype!(self.name(), s1, backward(&self.0, s1, l1, s2, l2))
    }
}

/// Max pooling of `x: [N, C, H, W]` with the window geometry of `axes` (height, width).
pub(crate) fn max_pool2d(x: &Tensor, axes: [Axis; 2]) -> Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool { axes })
}
