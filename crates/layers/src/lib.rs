//! # forja-layers
//!
//! The building blocks of classic deep architectures on top of candle, each a public function
//! and, where it has weights or state, a module: convolutions with padding modes, transposed
//! convolutions, pooling with argmax indices and unpooling, upsampling, normalisation, dropout
//! and activations. Everything works on f32 and f64, on any candle device, and is differentiable:
//! the test suite checks every gradient against finite differences ([`check`]).
//!
//! ```
//! use candle_core::{Device, DType, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use forja_layers::{Conv2d, ConvConfig, PadMode, PoolConfig, max_pool2d_with_indices, max_unpool2d};
//!
//! let map = VarMap::new();
//! let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
//! // A 3x3 convolution with circular (periodic) padding keeps the 8x8 size.
//! let conv = Conv2d::new(1, 4, 3, ConvConfig::same(3, 1).pad_mode(PadMode::Circular), vb.pp("conv"))?;
//! let x = Tensor::randn(0f32, 1., (2, 1, 8, 8), &Device::Cpu)?;
//! let y = conv.forward(&x)?;
//! assert_eq!(y.dims(), &[2, 4, 8, 8]);
//! // Overlapping 3x3/2 max pooling (AlexNet's) with the positions of the maxima, then unpooling.
//! let (p, idx) = max_pool2d_with_indices(&y, &PoolConfig::new(3).stride(2))?;
//! assert_eq!(p.dims(), &[2, 4, 3, 3]);
//! let up = max_unpool2d(&p, &idx, [8, 8])?;
//! assert_eq!(up.dims(), &[2, 4, 8, 8]);
//! # Ok::<(), forja_layers::LayerError>(())
//! ```

pub mod activation;
pub mod check;
pub mod conv;
pub mod conv_transpose;
pub mod dropout;
pub mod error;
pub mod init;
pub mod kernels;
pub mod linear;
pub mod loss;
pub mod norm;
pub mod pad;
pub mod pool;
pub mod trace;
pub mod upsample;
pub mod weight_norm;
mod window;

pub use activation::{add_relu, leaky_relu, relu, tanh, Activation};
pub use conv::{conv1d, conv2d, conv_out_len, Conv1d, Conv2d, ConvConfig};
pub use conv_transpose::{
    conv_transpose1d, conv_transpose2d, ConvTranspose1d, ConvTranspose2d, ConvTransposeConfig,
};
pub use dropout::{dropout, Dropout};
pub use error::{LayerError, Result};
pub use init::Init;
pub use linear::{linear, linear_init, linear_no_bias, Linear};
pub use loss::bce_with_logits;
pub use norm::{
    local_response_norm, BatchNorm, BatchNorm1d, BatchNorm2d, BatchNormConfig, GroupNorm,
    LayerNorm, LocalResponseNorm,
};
pub use pad::{pad1d, pad2d, pad_dim, PadMode};
pub use pool::{
    adaptive_avg_pool2d, avg_pool1d, avg_pool2d, global_avg_pool2d, max_pool1d,
    max_pool1d_with_indices, max_pool2d, max_pool2d_with_indices, max_unpool2d, AdaptiveAvgPool2d,
    AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d, PoolConfig, Subsampling,
};
pub use upsample::{upsample_bilinear2d, upsample_nearest2d, Target, Upsample, UpsampleMode};
pub use weight_norm::{Reparametrize, WeightNorm};
