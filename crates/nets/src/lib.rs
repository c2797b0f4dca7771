//! Classic image networks for forja — LeNet-5, AlexNet, ZFNet, VGG, GoogLeNet, ResNet, autoencoders and U-Net — built from `forja-layers`. Each
//! model registers itself with the trainer's registry, so `cargo xtask train <name>` finds it.
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

pub mod ae_task;
pub mod alexnet;
pub mod autoencoder;
mod blocks;
pub mod embed;
mod error;
pub mod googlenet;
mod lenet;
pub mod lenet1998;
mod register;
pub mod resnet;
pub mod segment;
pub mod unet;
pub mod unet_task;
pub mod vgg;

pub use alexnet::{AlexNet, AlexNetConfig, ConvSpec};
pub use autoencoder::{
    AeArch, AePass, Autoencoder, AutoencoderConfig, CodeActivation, Penalty, ReconstructionLoss,
};
pub use blocks::ConvBn;
pub use error::{NetError, Result};
pub use googlenet::{GoogLeNet, GoogLeNetConfig, InceptionSpec};
pub use lenet::LeNet5;
pub use lenet1998::LeNet5_1998;
pub use resnet::{BlockKind, ResNet, ResNetConfig, Stem};
pub use unet::{UNet, UNetConfig, UNetLayout};
pub use vgg::{Vgg, VggConfig, VggHead};
