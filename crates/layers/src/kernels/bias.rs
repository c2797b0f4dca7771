//! A per-channel bias: `y[n, c, s] = x[n, c, s] + b[c]`. Its weight gradient is the sum of the
//! incoming gradient over batch and space, a reduction over non-adjacent dims that candle
//! runs on one thread with strided reads (a fifth of LeNet-5's training step); here each
//! channel's sum runs over contiguous rows, channels in parallel.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::{output, par_chunks_mut, par_map, slice, Float};

fn dims3(l: &Layout, op: &str) -> Result<(usize, usize, usize)> {
    match *l.dims() {
        [n, c, s] => Ok((n, c, s)),
        ref d => candle_core::bail!("{op}: expected [N, C, S], got {d:?}"),
    }
}

struct BiasAdd;

fn add<T: Float>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let name = "forja-bias-add";
    let (_, c, s) = dims3(l1, name)?;
    if l2.dims() != [c] {
        candle_core::bail!("{name}: bias {:?} for {c} channels", l2.dims());
    }
    let (x, b) = (slice::<T>(s1, l1, name)?, slice::<T>(s2, l2, name)?);
    let write = |y: &mut [MaybeUninit<T>]| {
        par_chunks_mut(y, s, |row, yr| {
            let bias = b[row % c];
            for (y, &x) in yr.iter_mut().zip(&x[row * s..(row + 1) * s]) {
                y.write(x + bias);
            }
        })
    };
    // SAFETY: row `row` of `y` (`s` long) is written from the same row of `x`.
    let y = unsafe { output(x.len(), write) };
    Ok((T::to_cpu_storage_owned(y), l1.shape().clone()))
}

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "forja-bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::by_dtype!(self.name(), s1, add(s1, l1, s2, l2))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((
            Some(g.clone()),
            Some(g.contiguous()?.apply_op1(ChannelSum)?),
        ))
    }
}

/// `[N, C, S] -> [C]`, the sum over batch and space.
struct ChannelSum;

fn sum<T: Float>(s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let name = "forja-channel-sum";
    let (n, c, len) = dims3(l, name)?;
    let x = slice::<T>(s, l, name)?;
    let sums = par_map(c, |ch| {
        let mut acc = T::ZERO;
        for i in 0..n {
            for &v in &x[(i * c + ch) * len..(i * c + ch + 1) * len] {
                acc += v;
            }
        }
        acc
    });
    Ok((T::to_cpu_storage_owned(sums), Shape::from(c)))
}

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "forja-channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        super::by_dtype!(self.name(), s, sum(s, l))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let c = g.elem_count();
        Ok(Some(g.reshape((1, c, 1))?.broadcast_as(x.shape())?))
    }
}

/// `x: [N, C, S] + b: [C]` per channel.
pub(crate) fn bias_add(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&b.contiguous()?, BiasAdd)
}

/// The bias gradient's op on its own (its backward pass is tested).
#[cfg(test)]
pub(crate) fn channel_sum(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(ChannelSum)
}
