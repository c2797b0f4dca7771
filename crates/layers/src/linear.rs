//! The fully connected layer `y = x · Wᵀ + b`, a drop-in for `candle_nn::Linear` (the same
//! constructors, variable names, shapes and initialisation) that takes forja's CPU kernel
//! where it applies.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::init::Init;
use crate::kernels;

/// A fully connected layer with `weight: [out, in]` and, optionally, `bias: [out]`, applied
/// over the last dimension of `x: [..., in]`.
///
/// On the CPU the forward pass is one multi-threaded GEMM and the backward pass writes the
/// weight gradient in the weight's own layout (composed from candle's ops, the gradient of the
/// transposed weight is copied back element by element, and the bias gradient is a strided
/// sum on one thread).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// A layer from given weights `[out, in]` and bias `[out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl From<candle_nn::Linear> for Linear {
    fn from(l: candle_nn::Linear) -> Self {
        Self::new(l.weight().clone(), l.bias().cloned())
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (w, b) = (&self.weight, self.bias.as_ref());
        let mut ts = vec![x, w];
        ts.extend(b);
        if kernels::applies(&ts) {
            return kernels::linear(x, w, b);
        }
        let y = x.broadcast_matmul(&w.t()?)?;
        match b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// A layer from `in_dim` to `out_dim` features with bias, its variables made as
/// `candle_nn::linear` makes them (PyTorch's `nn.Linear` initialisation for the bias), so
/// checkpoints move between the two.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> candle_core::Result<Linear> {
    Ok(candle_nn::linear(in_dim, out_dim, vb)?.into())
}

/// As [`linear`], weight and bias drawn by `init`: `Init::Torch` is PyTorch's `nn.Linear`
/// (candle's weight is He-scaled, about 2.4x wider, which matters where outputs feed `exp`, as
/// in a flow's scales).
pub fn linear_init(
    in_dim: usize,
    out_dim: usize,
    init: Init,
    vb: VarBuilder,
) -> candle_core::Result<Linear> {
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", init.weight(in_dim, out_dim))?;
    let bias = vb.get_with_hints(out_dim, "bias", init.bias(in_dim))?;
    Ok(Linear::new(weight, Some(bias)))
}

/// As [`linear`], without bias.
pub fn linear_no_bias(
    in_dim: usize,
    out_dim: usize,
    vb: VarBuilder,
) -> candle_core::Result<Linear> {
    Ok(candle_nn::linear_no_bias(in_dim, out_dim, vb)?.into())
}
