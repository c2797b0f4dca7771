//! Max pooling: the forward op keeps each window's first maximum (NaN wins, as in PyTorch);
//! its backward op finds the same position again and adds the incoming gradient there.
//! Planes (sample, channel) are spread over the kernels' threads.
//!
//! 2x2 windows at stride 2 (LeNet-5's, U-Net's) tile the input and have loops of their own,
//! two rows at a time, in f32 by AVX-512 kernels: the general loops' list of taps per window
//! and the search for the maximum again in the backward pass were 14% of a LeNet-5 step (the
//! backward's search alone); with them M1 ran 161 steps/s, with these 210.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::{by_dtype, fast, output, par_chunks_mut, saved, slice, zeroed, Float};
use crate::window::Axis;

#[cfg(target_arch = "x86_64")]
mod avx512;

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

    /// The window's maximum, NaN if it holds one.
    fn max<T: Float>(&self, plane: &[T], rows: (usize, usize), cols: (usize, usize)) -> T {
        max_of(self.taps(rows, cols).map(|i| plane[i]))
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

    /// Whether the windows are 2x2 at stride 2 without padding or dilation, each inside the
    /// input (LeNet-5's and U-Net's pooling): they tile the input, and [`pairs_forward`] and
    /// [`pairs_backward`] go over it two rows at a time, with no list of taps per window.
    fn pairs(&self) -> bool {
        self.axes
            .iter()
            .all(|a| (a.k, a.s, a.p, a.d) == (2, 2, 0, 1) && 2 * a.out <= a.n)
    }

    fn forward<T: Float>(&self, x: &[T], planes: usize) -> Vec<T> {
        let [ah, aw] = self.axes;
        let (n_in, n_out) = (ah.n * aw.n, ah.out * aw.out);
        let [rows, cols] = self.spans();
        assert!(
            rows.len() == ah.out && cols.len() == aw.out,
            "max pool: spans"
        );
        let pairs = self.pairs();
        let write = |y: &mut [MaybeUninit<T>]| {
            par_chunks_mut(y, n_out, |p, yp| {
                let plane = &x[p * n_in..(p + 1) * n_in];
                if pairs {
                    return pairs_forward(plane, aw.n, yp);
                }
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

    /// `dx` from the input `x`, the output `y` (the windows' maxima) and `dy`.
    fn backward<T: Float>(&self, x: &[T], y: &[T], dy: &[T], planes: usize) -> Vec<T> {
        let [ah, aw] = self.axes;
        let (n_in, n_out) = (ah.n * aw.n, ah.out * aw.out);
        let [rows, cols] = self.spans();
        let pairs = self.pairs();
        let write = |dx: &mut [MaybeUninit<T>]| {
            par_chunks_mut(dx, n_in, |p, dxp| {
                let plane = &x[p * n_in..(p + 1) * n_in];
                let dyp = &dy[p * n_out..(p + 1) * n_out];
                if pairs {
                    let yp = &y[p * n_out..(p + 1) * n_out];
                    return pairs_backward(plane, (yp, dyp), aw.n, dxp);
                }
                let dxp = zeroed(dxp);
                for (dyr, &r) in dyp.chunks(aw.out.max(1)).zip(&rows) {
                    for (&g, &c) in dyr.iter().zip(&cols) {
                        dxp[self.argmax(plane, r, c)] += g;
                    }
                }
            })
        };
        // SAFETY: every plane is written whole by `pairs_backward`, or zeroed, then summed into.
        unsafe { output(planes * n_in, write) }
    }
}

/// The first maximum of a window's taps (NaN if one is), written as selects the compiler
/// turns into `max` instructions: which tap wins is data, and a mispredicted branch per tap
/// cost more than the comparisons (pooling was half of LeNet-5's step).
#[inline(always)]
fn max_of<T: Float>(taps: impl IntoIterator<Item = T>) -> T {
    let (mut best, mut nan) = (T::NEG_INFINITY, false);
    for v in taps {
        best = if v > best { v } else { best };
        nan |= v.is_nan();
    }
    if nan {
        T::NAN
    } else {
        best
    }
}

/// `x` as the f32 it is (where [`fast`]).
#[cfg(target_arch = "x86_64")]
fn f32s<T: Float>(x: &[T]) -> &[f32] {
    assert_eq!(T::DTYPE, DType::F32);
    // SAFETY: `T` is f32 (asserted).
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), x.len()) }
}

/// As [`f32s`], for a destination.
#[cfg(target_arch = "x86_64")]
fn f32s_mut<T: Float>(x: &mut [MaybeUninit<T>]) -> &mut [MaybeUninit<f32>] {
    assert_eq!(T::DTYPE, DType::F32);
    // SAFETY: `T` is f32 (asserted).
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast(), x.len()) }
}

/// The 2x2 stride-2 windows' maxima of one plane of rows `w` long into `y`, a row of windows
/// from each two rows of the plane (an odd last row or column is in no window).
fn pairs_forward<T: Float>(plane: &[T], w: usize, y: &mut [MaybeUninit<T>]) {
    let (ow, fast) = (w / 2, fast::<T>());
    for (rows, yr) in plane.chunks_exact(2 * w).zip(y.chunks_exact_mut(ow)) {
        let (r0, r1) = rows.split_at(w);
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: the CPU has AVX-512F (`fast`).
            unsafe { avx512::forward_rows(f32s(r0), f32s(r1), f32s_mut(yr)) };
            continue;
        }
        for ((a, b), y) in r0.chunks_exact(2).zip(r1.chunks_exact(2)).zip(yr) {
            y.write(max_of([a[0], a[1], b[0], b[1]]));
        }
    }
}

/// The input gradient of [`pairs_forward`] into `dx`, written whole, from its output `y`:
/// each window's gradient at the first of its taps that equals the window's maximum (or is NaN
/// where it is), zeros at the others and at an odd last row or column (in no window).
fn pairs_backward<T: Float>(
    plane: &[T],
    (y, dy): (&[T], &[T]),
    w: usize,
    dx: &mut [MaybeUninit<T>],
) {
    let (ow, fast) = (w / 2, fast::<T>());
    let mut dx_rows = dx.chunks_exact_mut(2 * w);
    let rows = plane.chunks_exact(2 * w).zip(&mut dx_rows);
    for ((xs, dxs), (yr, dyr)) in rows.zip(y.chunks_exact(ow).zip(dy.chunks_exact(ow))) {
        let ((x0, x1), (d0, d1)) = (xs.split_at(w), dxs.split_at_mut(w));
        zeroed(&mut d0[2 * ow..]);
        zeroed(&mut d1[2 * ow..]);
        #[cfg(target_arch = "x86_64")]
        if fast {
            let (x, yg, d) = (
                (f32s(x0), f32s(x1)),
                (f32s(yr), f32s(dyr)),
                (f32s_mut(d0), f32s_mut(d1)),
            );
            // SAFETY: the CPU has AVX-512F (`fast`).
            unsafe { avx512::backward_rows(x, yg, d) };
            continue;
        }
        for j in 0..ow {
            let (m, g) = (yr[j], dyr[j]);
            let hit = |v: T| (v == m) | (v.is_nan() & m.is_nan());
            let (a, b) = (hit(x0[2 * j]), hit(x0[2 * j + 1]));
            let (c, d) = (hit(x1[2 * j]), hit(x1[2 * j + 1]));
            let pick = |won: bool| if won { g } else { T::ZERO };
            d0[2 * j].write(pick(a));
            d0[2 * j + 1].write(pick(b & !a));
            d1[2 * j].write(pick(c & !(a | b)));
            d1[2 * j + 1].write(pick(d & !(a | b | c)));
        }
    }
    zeroed(dx_rows.into_remainder());
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

    fn bwd(&self, x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(saved(x).apply_op3(
            &saved(y),
            &g.contiguous()?,
            MaxPoolBackward(*self),
        )?))
    }
}

/// `(x, y, dy) -> dx`; it has no gradient of its own (with `CANDLE_GRAD_DO_NOT_DETACH`, a second
/// derivative through max pooling fails with candle's "backward not supported" error rather
/// than coming out wrong).
struct MaxPoolBackward(MaxPool);

fn backward<T: Float>(
    op: &MaxPool,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    let planes = op.planes(l1)?;
    let name = "forja-max-pool2d-bwd";
    let (x, y, dy) = (
        slice::<T>(s1, l1, name)?,
        slice::<T>(s2, l2, name)?,
        slice::<T>(s3, l3, name)?,
    );
    let dx = op.backward(x, y, dy, planes);
    Ok((T::to_cpu_storage_owned(dx), l1.shape().clone()))
}

impl CustomOp3 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "forja-max-pool2d-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [ah, aw] = self.0.axes;
        for l in [l2, l3] {
            if l.dims().len() != 4
                || l.dims()[2..] != [ah.out, aw.out]
                || l.dims()[..2] != l1.dims()[..2]
            {
                candle_core::bail!(
                    "{}: output or gradient of shape {:?} for input {:?}",
                    self.name(),
                    l.dims(),
                    l1.dims()
                );
            }
        }
        by_dtype!(
            self.name(),
            s1,
            backward(&self.0, (s1, l1), (s2, l2), (s3, l3))
        )
    }
}

/// Max pooling of `x: [N, C, H, W]` with the window geometry of `axes` (height, width).
pub(crate) fn max_pool2d(x: &Tensor, axes: [Axis; 2]) -> Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool { axes })
}
