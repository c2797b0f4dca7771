//! Small pieces shared by the networks: conv + batch-norm pairs and registry helpers.

use candle_core::{ModuleT, Tensor};
use candle_nn::VarBuilder;
use forja_layers::{BatchNorm, BatchNormConfig, Conv2d, ConvConfig};

use crate::Result;

/// A bias-free convolution followed by batch norm (the unit of ResNet and VGG-BN); the conv and
/// the norm are named `conv_name` and `bn_name` inside `vb`, as in torchvision.
#[derive(Debug, Clone)]
pub struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: &VarBuilder,
        conv_name: &str,
        bn_name: &str,
    ) -> Result<Self> {
        let cfg = ConvConfig::default()
            .stride(stride)
            .padding(padding)
            .bias(false);
        Ok(Self {
            conv: Conv2d::new(c_in, c_out, kernel, cfg, vb.pp(conv_name))?,
            bn: BatchNorm::new(c_out, BatchNormConfig::default(), vb.pp(bn_name))?,
        })
    }
}

impl ConvBn {
    /// `relu(bn(conv(x)))`, with batch norm and ReLU fused where forja's kernels apply.
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = candle_core::Module::forward(&self.conv, x)?;
        Ok(self.bn.forward_relu_t(&y, train)?)
    }
}

impl ModuleT for ConvBn {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.bn
            .forward_t(&candle_core::Module::forward(&self.conv, x)?, train)
    }
}
