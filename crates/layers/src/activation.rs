//! The activation functions the nets need, as one `Module` enum.

use candle_core::{Module, Tensor};

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
            Activation::Relu => x.relu(),
            Activation::LeakyRelu(slope) => x.relu()? - (x.neg()?.relu()? * slope)?,
            Activation::Elu(alpha) => x.elu(alpha),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => candle_nn::ops::sigmoid(x),
            Activation::Softplus => x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?,
            Activation::Gelu => (x * 0.5)? * ((x * std::f64::consts::FRAC_1_SQRT_2)?.erf()? + 1.0)?,
            Activation::ScaledTanh => (x * (2.0 / 3.0))?.tanh()? * 1.7159,
        }
    }
}
