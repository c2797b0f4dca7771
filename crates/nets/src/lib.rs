//! Classic image networks for forja. Each model registers itself with the trainer's registry, so
//! `cargo xtask train <name>` finds it.
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use forja_nets::LeNet5;
//! use forja_train::ParamStore;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let params = ParamStore::new(0);
//! let net = LeNet5::new(params.var_builder(DType::F32, &Device::Cpu), &[1, 28, 28], 10)?;
//! assert_eq!(params.num_params(), 61_706);
//! let logits = net.forward(&Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu)?)?;
//! assert_eq!(logits.dims(), &[2, 10]);
//! # Ok(()) }
//! ```

mod error;
mod lenet;

pub use error::{NetError, Result};
pub use lenet::LeNet5;
