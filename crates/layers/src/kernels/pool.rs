//! Max pooling: the forward op keeps each window's first maximum (NaN wins, as in PyTorch);
//! its backward op finds the same position again and adds the incoming gradient there.
//! Planes (sample, channel) are spread over the kernels' threads.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::{by_dtype, output, par_chunks_mut, saved, slice, zeroed, Float};
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

    /// Per output position along both axes: the first input index the window reads inside the
    /// input and how many of its taps do (they step by the dilation). Worked out once per call,
    /// so the loops over windows test no bounds tap by tap.
    fn spans(&self) -> [Vec<(usize, usize)>; 2] {
        self.axes.map(|a| {
            (0..a.out)
                .map(|o| {
                    let mut inside = (0..a.k).filter_map(|j| a.pos(o, j));
                    let first = inside.next().unwrap_or(0);
                    (first, inside.count() + 1)
                })
                .collect()
        })
    }

    /// The flat indices in its plane of the window at rows `(y0, ny)` and columns `(x0, nx)`
    /// (from [`Self::spans`]), in order.
    fn taps(
        &self,
        (y0, ny): (usize, usize),
        (x0, nx): (usize, usize),
    ) -> impl Iterator<Item = usize> {
        let [ah, aw] = self.axes;
        (0..ny).flat_map(move |ty| (0..nx).map(move |tx| (y0 + ty * ah.d) * aw.n + x0 + tx * aw.d))
    }

    /// The window's maximum, NaN if it holds one. Written as selects the compiler turns into
    /// `max` instructions: which tap wins is data, and a mispredicted branch per tap cost more
    /// than the comparisons (pooling was half of LeNet-5's step).
    fn max<T: Float>(&self, plane: &[T], rows: (usize, usize), cols: (usize, usize)) -> T {
        let (mut best, mut nan) = (T::NEG_INFINITY, false);
        for i in self.taps(rows, cols) {
            let v = plane[i];
            best = if v > best { v } else { best };
            nan |= v.is_nan();
        }
        if nan {
            T::NAN
        } else {
            best
        }
    }

    /// The flat index of the window's first maximum (its first NaN if it holds one).
    fn argmax<T: Float>(&self, plane: &[T], rows: (usize, usize), cols: (usize, usize)) -> usize {
        let best = self.max(plane, rows, cols);
        let mut at = usize::MAX;
        // Every tap is visited, and an integer select (no branch) keeps the first hit.
        for i in self.taps(rows, cols) {
            let v = plane[i];
            let hit = (v == best) | (v.is_nan() & best.is_nan());
            at = if hit & (at == usize::MAX) { i } else { at };
        }
        at
    }

    fn forward<T: Float>(&self, x: &[T], planes: usize) -> Vec<T> {
        let [ah, aw] = self.axes;
        let (n_in, n_out) = (ah.n * aw.n, ah.out * aw.out);
        let [rows, cols] = self.spans();
        assert!(
            rows.len() == ah.out && cols.len() == aw.out,
            "max pool: spans"
        );
        let write = |y: &mut [MaybeUninit<T>]| {
            par_chunks_mut(y, n_out, |p, yp| {
                let plane = &x[p * n_in..(p + 1) * n_in];
                for (yr, &r) in yp.chunks_mut(aw.out.max(1)).zip(&rows) {
                    for (y, &c) in yr.iter_mut().zip(&cols) {
                        y.write(self.max(plane, r, c));
                    }
                }
            })
        };
        // SAFETY: each output plane has `ah.out` rows of `aw.out`, one span each.
        unsafe { output(planes * n_out, write) }
    }

    fn backward<T: Float>(&self, x: &[T], dy: &[T], planes: usize) -> Vec<T> {
        let [ah, aw] = self.axes;
        let (n_in, n_out) = (ah.n * aw.n, ah.out * aw.out);
        let [rows, cols] = self.spans();
        let write = |dx: &mut [MaybeUninit<T>]| {
            par_chunks_mut(dx, n_in, |p, dxp| {
                let dxp = zeroed(dxp);
                let plane = &x[p * n_in..(p + 1) * n_in];
                let dyp = &dy[p * n_out..(p + 1) * n_out];
                for (dyr, &r) in dyp.chunks(aw.out.max(1)).zip(&rows) {
                    for (&g, &c) in dyr.iter().zip(&cols) {
                        dxp[self.argmax(plane, r, c)] += g;
                    }
                }
            })
        };
        // SAFETY: every plane is zeroed whole, then summed into.
        unsafe { output(planes * n_in, write) }
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
