//! Weight normalisation (Salimans & Kingma 2016): `w = g * v / ||v||`, with the direction `v`
//! and the length `g` trained separately. Norms are per output unit (over every dim but the
//! first, PyTorch's `dim = 0`).

use crate::Linear;
use candle_core::{Module, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use crate::conv::{Conv1d, Conv2d};
use crate::conv_transpose::{ConvTranspose1d, ConvTranspose2d};
use crate::error::Result;

/// A layer whose forward pass can run with a weight other than its own.
pub trait Reparametrize {
    fn weight(&self) -> &Tensor;
    fn forward_with_weight(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor>;
}

macro_rules! reparametrize_forja {
    ($($ty:ty),+) => {$(
        impl Reparametrize for $ty {
            fn weight(&self) -> &Tensor {
                <$ty>::weight(self)
            }
            fn forward_with_weight(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
                <$ty>::forward_with_weight(self, x, weight)
            }
        }
    )+};
}

reparametrize_forja!(Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d);

impl Reparametrize for Linear {
    fn weight(&self) -> &Tensor {
        Linear::weight(self)
    }
    fn forward_with_weight(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        Ok(Linear::new(weight.clone(), self.bias().cloned()).forward(x)?)
    }
}

/// Weight-normalised wrapper of a Linear or convolution layer. The wrapped layer's own weight
/// variable becomes `v` (keeping its name and initialisation); `g` is a new variable
/// `weight_g`, started at `||v||` so the wrapped layer initially computes what it did before.
#[derive(Debug, Clone)]
pub struct WeightNorm<L> {
    layer: L,
    g: Tensor,
}

impl<L: Reparametrize> WeightNorm<L> {
    /// `vb` must be the builder the layer was created with (so `weight_g` sits next to `weight`).
    pub fn new(layer: L, vb: VarBuilder) -> Result<Self> {
        let v = layer.weight();
        let mut shape = vec![1; v.rank()];
        shape[0] = v.dim(0)?;
        let g = vb.get_with_hints(shape, "weight_g", Init::Const(1.0))?;
        if g.is_variable() {
            // A fresh variable: start at ||v||. (A checkpoint loaded later overwrites it.)
            Var::from_tensor(&g)?.set(&row_norms(v)?.to_dtype(g.dtype())?)?;
        }
        Ok(Self { layer, g })
    }

    pub fn from_parts(layer: L, g: Tensor) -> Self {
        Self { layer, g }
    }

    pub fn g(&self) -> &Tensor {
        &self.g
    }
    pub fn v(&self) -> &Tensor {
        self.layer.weight()
    }

    /// The weight the layer uses: `g * v / ||v||`.
    pub fn effective_weight(&self) -> Result<Tensor> {
        let v = self.layer.weight();
        Ok(v.broadcast_mul(&self.g.broadcast_div(&row_norms(v)?)?)?)
    }
}

/// `||v||` per output unit, shaped `[out, 1, ..]`.
fn row_norms(v: &Tensor) -> Result<Tensor> {
    let dims: Vec<usize> = (1..v.rank()).collect();
    Ok(v.sqr()?.sum_keepdim(dims)?.sqrt()?)
}

impl<L: Reparametrize> Module for WeightNorm<L> {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self
            .layer
            .forward_with_weight(x, &self.effective_weight()?)?)
    }
}
