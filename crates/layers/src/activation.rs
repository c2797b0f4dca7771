//! The activation functions the nets need, as one `Module` enum, and the rectifiers as
//! functions that take forja's CPU kernel where it applies.

use candle_core::{Module, Tensor};

use crate::kernels;

/// `max(x, 0)`; its gradient is 0 at 0, as in PyTorch.
pub fn relu(x: &Tensor) -> candle_core::Result<Tensor> {
    leaky_relu(x, 0.0)
}

/// `max(a + b, 0)`, the end of a residual block: on the CPU one pass each way, without storing
/// the sum (candle ops: an addition and a ReLU, each allocating, and one activation more).
pub fn add_relu(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if kernels::applies(&[a, b]) && a.dims() == b.dims() {
        return kernels::add_relu(a, b);
    }
    (a + b)?.relu()
}

/// `x` for `x > 0`, `slope * x` otherwise; on the CPU one pass forward and one backward
/// (composed from candle ops it is five, each allocating).
pub fn leaky_relu(x: &Tensor, slope: f64) -> candle_core::Result<Tensor> {
    if kernels::applies(&[x]) && slope >= 0.0 {
        return kernels::leaky_relu(x, slope);
    }
    if slope == 0.0 {
        return x.relu();
    }
    x.relu()? - (x.neg()?.relu()? * slope)?
}

/// `tanh(x)`; on the CPU one vectorized pass each way (candle calls the C library's `tanhf` once
/// per element, and takes three passes backward).
pub fn tanh(x: &Tensor) -> candle_core::Result<Tensor> {
    if kernels::applies(&[x]) {
        return kernels::tanh(x);
    }
    x.tanh()
}

/// An element-wise non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Activation {
    #[default]
    Relu,
    /// `x` for `x > 0`, `slope * x` otherwise.
    LeakyRelu(f64),
    /// `x` for `x > 0`, `alpha * (exp(x) - 1)` otherwise.
    Elu(f64),
    Tanh,
    Sigmoid,
    /// `log(1 + exp(x))`, computed without overflow.
    Softplus,
    /// Exact GELU, `x * Phi(x)`.
    Gelu,
    /// LeCun's scaled tanh `1.7159 * tanh(2x/3)` (LeNet-5, 1998).
    ScaledTanh,
}

impl Module for Activation {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match *self {
            Activation::Relu => relu(x),
            Activation::LeakyRelu(slope) => leaky_relu(x, slope),
            Activation::Elu(alpha) => x.elu(alpha),
            Activation::Tanh => tanh(x),
            Activation::Sigmoid => candle_nn::ops::sigmoid(x),
            Activation::Softplus => x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?,
            Activation::Gelu => (x * 0.5)? * ((x * std::f64::consts::FRAC_1_SQRT_2)?.erf()? + 1.0)?,
            Activation::ScaledTanh => tanh(&(x * (2.0 / 3.0))?)? * 1.7159,
        }
    }
}
