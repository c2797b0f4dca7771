//! A fully connected layer `y = x · Wᵀ + b` (`x: [n, in]`, `W: [out, in]`, `b: [out]`).
//!
//! Composed from candle ops (`x.matmul(w.t())`, then a broadcast addition), the backward pass
//! hands `W` the transpose of a `[in, out]` product, which the gradient store copies element by
//! element into `W`'s layout, and sums the bias gradient over the batch on one thread with
//! strided reads: together about a fifth of an MLP VAE's training step. Here every product is
//! a [`MatMul`] that reads its operands transposed in place and splits its output over the
//! threads: the forward pass writes onto rows preloaded with the bias, the weight gradient
//! `dyᵀ · x` comes out in `W`'s layout, and the bias gradient sums contiguous rows, columns in
//! parallel.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::{output, par_chunks_mut, par_matmul, saved, slice, threads, Float};

const NAME: &str = "forja-linear";

/// The sizes of `op(a) · op(b)`: `(m, n, k)`, for `a: [m, k]` (`[k, m]` if transposed) and
/// `b: [k, n]` (`[n, k]` if transposed).
fn sizes(op: &str, a: &Layout, ta: bool, b: &Layout, tb: bool) -> Result<(usize, usize, usize)> {
    let (&[a0, a1], &[b0, b1]) = (a.dims(), b.dims()) else {
        candle_core::bail!(
            "{op}: expects matrices, got {:?} and {:?}",
            a.dims(),
            b.dims()
        );
    };
    let ((m, k), (bk, n)) = (
        if ta { (a1, a0) } else { (a0, a1) },
        if tb { (b1, b0) } else { (b0, b1) },
    );
    if k != bk {
        candle_core::bail!("{op}: {:?} and {:?} do not multiply", a.dims(), b.dims());
    }
    Ok((m, n, k))
}

/// `op(a) · op(b) (+ bias on every row)`, into `dst` (preloaded with the bias if any).
fn product<T: Float>(
    op: &str,
    (a_s, a_l, ta): (&CpuStorage, &Layout, bool),
    (b_s, b_l, tb): (&CpuStorage, &Layout, bool),
    bias: Option<(&CpuStorage, &Layout)>,
) -> Result<(CpuStorage, Shape)> {
    let (m, n, k) = sizes(op, a_l, ta, b_l, tb)?;
    let (a, b) = (slice::<T>(a_s, a_l, op)?, slice::<T>(b_s, b_l, op)?);
    // Row-major `[m, k]` has strides (k, 1); read transposed from `[k, m]`, (1, m).
    let a = (a, if ta { (1, m) } else { (k, 1) });
    let b = (b, if tb { (1, k) } else { (n, 1) });
    let dst = match bias {
        Some((s, l)) if l.dims() == [n] => {
            let mut dst = slice::<T>(s, l, op)?.repeat(m);
            par_matmul((m, n, k), &mut dst[..], n, a, b, true);
            dst
        }
        Some((_, l)) => candle_core::bail!("{op}: bias {:?} for {n} outputs", l.dims()),
        // SAFETY: the product writes all of its `[m, n]` destination.
        None => unsafe { output(m * n, |dst| par_matmul((m, n, k), dst, n, a, b, false)) },
    };
    Ok((T::to_cpu_storage_owned(dst), Shape::from((m, n))))
}

/// `op(a) · op(b)` for contiguous matrices, `op` transposing where asked: the linear layer
/// without bias (`x · wᵀ`) and every gradient of the layer. Its gradients are again products
/// of this kind, so it is differentiable to any order.
#[derive(Clone, Copy)]
struct MatMul {
    ta: bool,
    tb: bool,
}

impl MatMul {
    const NAME: &str = "forja-matmul";

    fn apply(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        a.contiguous()?.apply_op2(&b.contiguous()?, self)
    }

    /// The gradients of `c = op(a) · op(b)` from `dc`, of the arguments in the graph: an input
    /// batch gets none (an MLP VAE's first layer: a sixth of its step's products).
    fn grads(
        self,
        a: &Tensor,
        b: &Tensor,
        dc: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (need_a, need_b) = (a.track_op(), b.track_op());
        let (a, b) = (saved(a), saved(b));
        let mm = |ta, tb, x: &Tensor, y: &Tensor| MatMul { ta, tb }.apply(x, y);
        // d op(a) = dc · op(b)ᵀ and d op(b) = op(a)ᵀ · dc, transposed back where `op` transposed.
        let da = need_a.then(|| {
            if self.ta {
                mm(self.tb, true, &b, dc)
            } else {
                mm(false, !self.tb, dc, &b)
            }
        });
        let db = need_b.then(|| {
            if self.tb {
                mm(true, self.ta, dc, &a)
            } else {
                mm(!self.ta, false, &a, dc)
            }
        });
        Ok((da.transpose()?, db.transpose()?))
    }
}

impl CustomOp2 for MatMul {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(
        &self,
        a_s: &CpuStorage,
        a_l: &Layout,
        b_s: &CpuStorage,
        b_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::by_dtype!(
            Self::NAME,
            a_s,
            product(Self::NAME, (a_s, a_l, self.ta), (b_s, b_l, self.tb), None)
        )
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _c: &Tensor,
        dc: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.grads(a, b, dc)
    }
}

/// `x · wᵀ + b`: the product writes onto rows preloaded with the bias.
struct LinearBias;

impl CustomOp3 for LinearBias {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::by_dtype!(
            NAME,
            xs,
            product(NAME, (xs, xl, false), (ws, wl, true), Some((bs, bl)))
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = LINEAR.grads(x, w, dy)?;
        let db = b.track_op().then(|| dy.contiguous()?.apply_op1(ColumnSum));
        Ok((dx, dw, db.transpose()?))
    }
}

/// The linear layer's product `x · wᵀ`.
const LINEAR: MatMul = MatMul {
    ta: false,
    tb: true,
};

/// `[n, o] -> [o]`, the sum over rows.
struct ColumnSum;

fn sum_columns<T: Float>(s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let name = "forja-column-sum";
    let &[n, o] = l.dims() else {
        candle_core::bail!("{name}: expected [N, O], got {:?}", l.dims());
    };
    let x = slice::<T>(s, l, name)?;
    let mut sums = vec![T::ZERO; o];
    // Columns in blocks, each block's rows added in order (so the result does not depend on
    // the threads).
    let block = o.div_ceil(threads()).max(64);
    par_chunks_mut(&mut sums, block, |i, acc| {
        for row in x.chunks_exact(o).take(n) {
            for (a, &v) in acc.iter_mut().zip(&row[i * block..]) {
                *a += v;
            }
        }
    });
    Ok((T::to_cpu_storage_owned(sums), Shape::from(o)))
}

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "forja-column-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        super::by_dtype!(self.name(), s, sum_columns(s, l))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(g.unsqueeze(0)?.broadcast_as(x.shape())?))
    }
}

/// `x · wᵀ (+ b)` for `x: [..., in]`, `w: [out, in]`, `b: [out]`.
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims();
    let Some((&k, lead)) = dims.split_last() else {
        candle_core::bail!("{NAME}: the input needs at least one dimension");
    };
    let x2 = x
        .contiguous()?
        .reshape((lead.iter().product::<usize>(), k))?;
    let w = w.contiguous()?;
    let y = match b {
        Some(b) => x2.apply_op3(&w, &b.contiguous()?, LinearBias)?,
        None => LINEAR.apply(&x2, &w)?,
    };
    let mut out = lead.to_vec();
    out.push(w.dim(0)?);
    y.reshape(out)
}

/// The bias gradient's op on its own (its backward pass is tested).
#[cfg(test)]
pub(crate) fn column_sum(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(ColumnSum)
}

/// `op(a) · op(b)` on its own (its gradients are tested for every `op`).
#[cfg(test)]
pub(crate) fn matmul(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> Result<Tensor> {
    MatMul { ta, tb }.apply(a, b)
}

/// The layer's gradients from `dy`, as its backward pass hands them to candle (`None` for an
/// argument outside the graph).
#[cfg(test)]
pub(crate) fn grads(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    dy: &Tensor,
) -> Result<[Option<Tensor>; 3]> {
    let (dx, dw, db) = LinearBias.bwd(x, w, b, dy, dy)?;
    Ok([dx, dw, db])
}
