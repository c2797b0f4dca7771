//! Losses that take forja's CPU kernels where they apply.

use candle_core::{Module, Tensor, D};

use crate::{kernels, Activation};

/// Binary cross-entropy between logits `o` and targets `x` in [0, 1], summed over the last
/// axis: `Σ_j softplus(o_j) - x_j o_j`, which is `-Σ_j x_j log σ(o_j) + (1 - x_j) log(1 - σ(o_j))`
/// without overflow. One value per item (the negative Bernoulli log-likelihood of a VAE's or an
/// autoencoder's reconstruction); on the CPU one pass forward and one backward.
pub fn bce_with_logits(o: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
    if kernels::applies(&[o, x]) && o.dims() == x.dims() && o.rank() > 0 {
        return kernels::bce_with_logits(o, x);
    }
    (Activation::Softplus.forward(o)? - (x * o)?)?.sum(D::Minus1)
}
