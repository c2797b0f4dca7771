//! The convolutional generator and critic of DCGAN (Radford et al. 2016), sized for small
//! images: two stride-2 (transposed) convolutions between the image and a `H/4 x W/4` grid,
//! batch norm in the generator (not on its output) and, optionally, in the critic (not on its
//! input layer), ReLU in the generator and leaky ReLU in the critic. Both work on flat
//! `[N, C*H*W]` images, like the MLPs they stand in for.

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;
use forja_layers::{
    linear, relu, BatchNorm, BatchNormConfig, Conv2d, ConvConfig, ConvTranspose2d,
    ConvTransposeConfig, Linear,
};

use crate::gan::LEAKY_SLOPE;
use crate::{GenerativeError, Result};

/// `[C, H, W]` with sides divisible by 4, or an error naming the layer.
fn check_shape(layer: &'static str, shape: [usize; 3], width: usize) -> Result<()> {
    let [c, h, w] = shape;
    if c == 0 || h == 0 || w == 0 || h % 4 != 0 || w % 4 != 0 || width == 0 {
        return Err(GenerativeError::Config {
            layer,
            msg: format!(
                "needs images [C, H, W] with sides divisible by 4 and a positive width, got {shape:?}, width {width}"
            ),
        });
    }
    Ok(())
}

fn leaky(x: &Tensor) -> Result<Tensor> {
    Ok(forja_layers::Activation::LeakyRelu(LEAKY_SLOPE).forward(x)?)
}

/// `z -> fc -> [2w, H/4, W/4] -> BN, ReLU -> up 2w->w -> BN, ReLU -> up w->C -> sigmoid`.
pub struct ConvGenerator {
    fc: Linear,
    bn0: BatchNorm,
    up1: ConvTranspose2d,
    bn1: BatchNorm,
    up2: ConvTranspose2d,
    shape: [usize; 3],
    width: usize,
}

impl ConvGenerator {
    pub fn new(latent: usize, shape: [usize; 3], width: usize, vb: VarBuilder) -> Result<Self> {
        check_shape("dcgan generator", shape, width)?;
        let [c, h, w] = shape;
        let up = ConvTransposeConfig::default().stride(2).padding(1);
        let bn = BatchNormConfig::default();
        Ok(Self {
            fc: linear(latent, 2 * width * (h / 4) * (w / 4), vb.pp("fc"))?,
            bn0: BatchNorm::new(2 * width, bn, vb.pp("bn0"))?,
            up1: ConvTranspose2d::new(2 * width, width, 4, up, vb.pp("up1"))?,
            bn1: BatchNorm::new(width, bn, vb.pp("bn1"))?,
            up2: ConvTranspose2d::new(width, c, 4, up, vb.pp("up2"))?,
            shape,
            width,
        })
    }

    /// Flat images in [0, 1], `[N, C*H*W]`; `train` uses (and updates) the batch statistics.
    pub fn forward_t(&self, z: &Tensor, train: bool) -> Result<Tensor> {
        let [_, h, w] = self.shape;
        let x = self
            .fc
            .forward(z)?
            .reshape((z.dim(0)?, 2 * self.width, h / 4, w / 4))?;
        let x = relu(&self.bn0.forward_t(&x, train)?)?;
        let x = relu(&self.bn1.forward_t(&self.up1.forward(&x)?, train)?)?;
        let x = candle_nn::ops::sigmoid(&self.up2.forward(&x)?)?;
        Ok(x.flatten_from(1)?)
    }
}

/// `x -> conv C->w -> leaky -> conv w->2w -> [BN] -> leaky -> fc -> score`.
pub struct ConvCritic {
    conv1: Conv2d,
    conv2: Conv2d,
    bn: Option<BatchNorm>,
    fc: Linear,
    shape: [usize; 3],
}

impl ConvCritic {
    pub fn new(shape: [usize; 3], width: usize, batch_norm: bool, vb: VarBuilder) -> Result<Self> {
        check_shape("dcgan critic", shape, width)?;
        let [c, h, w] = shape;
        let down = ConvConfig::default().stride(2).padding(1);
        Ok(Self {
            conv1: Conv2d::new(c, width, 4, down, vb.pp("conv1"))?,
            conv2: Conv2d::new(width, 2 * width, 4, down, vb.pp("conv2"))?,
            bn: batch_norm
                .then(|| BatchNorm::new(2 * width, BatchNormConfig::default(), vb.pp("bn")))
                .transpose()?,
            fc: linear(2 * width * (h / 4) * (w / 4), 1, vb.pp("fc"))?,
            shape,
        })
    }

    /// The score `[N, 1]` and the pre-activations of both convolutions.
    pub fn run(&self, x: &Tensor, train: bool) -> Result<(Tensor, [Tensor; 2])> {
        let [c, h, w] = self.shape;
        let x = x.reshape((x.dim(0)?, c, h, w))?;
        let a1 = self.conv1.forward(&x)?;
        let mut a2 = self.conv2.forward(&leaky(&a1)?)?;
        if let Some(bn) = &self.bn {
            a2 = bn.forward_t(&a2, train)?;
        }
        let score = self.fc.forward(&leaky(&a2)?.flatten_from(1)?)?;
        Ok((score, [a1, a2]))
    }

    /// `∂D(x_i)/∂x_i`, `[N, C*H*W]`, written out as transposed convolutions of the weights,
    /// so the gradient penalty's own gradient needs only first-order autograd. Batch norm
    /// couples the images of a batch, so a critic with it has no per-image gradient.
    pub fn input_gradient(&self, x: &Tensor) -> Result<Tensor> {
        if self.bn.is_some() {
            return Err(GenerativeError::Config {
                layer: "dcgan critic",
                msg: "the gradient penalty needs a critic without batch norm".into(),
            });
        }
        let (_, [a1, a2]) = self.run(x, false)?;
        let slope = |a: &Tensor| -> Result<Tensor> {
            Ok(a.gt(0.0)?
                .to_dtype(a.dtype())?
                .affine(1.0 - LEAKY_SLOPE, LEAKY_SLOPE)?)
        };
        let n = x.dim(0)?;
        let g = self
            .fc
            .weight()
            .broadcast_as((n, self.fc.weight().dim(1)?))?
            .reshape(a2.shape())?;
        let g = (g * slope(&a2)?)?.conv_transpose2d(self.conv2.weight(), 1, 0, 2, 1)?;
        let g = (g * slope(&a1)?)?.conv_transpose2d(self.conv1.weight(), 1, 0, 2, 1)?;
        Ok(g.flatten_from(1)?)
    }
}
