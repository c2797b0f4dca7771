//! ResNet (He et al. 2015/2016): the ImageNet family `resnet18/34/50/101/152` (basic and
//! bottleneck blocks, torchvision's layout and names, stride on the 3x3 conv of a bottleneck)
//! and the CIFAR family `resnet20/32/44/56/110` (sec. 4.2: a 3x3 stem, three stages of 16, 32,
//! 64 channels, 6n + 2 layers). CIFAR shortcuts across a stage change use a 1x1 conv + BN
//! projection (the paper's option B, also the reference workload M2) rather than option A's
//! zero padding.

use candle_core::{ModuleT, Tensor};
use candle_nn::{Module, VarBuilder};
use forja_layers::{add_relu, global_avg_pool2d, linear, max_pool2d, Linear, PoolConfig};

use crate::blocks::ConvBn;
use forja_layers::trace::record;

use crate::{NetError, Result};

/// Residual block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convs (ResNet-18/34 and the CIFAR nets).
    Basic,
    /// 1x1 reduce, 3x3, 1x1 expand by 4 (ResNet-50 and deeper).
    Bottleneck,
}

impl BlockKind {
    fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The stem before the residual stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stem {
    /// 7x7/2 conv (64) + BN + ReLU + 3x3/2 max-pool.
    ImageNet,
    /// 3x3 conv (first stage width) + BN + ReLU.
    Cifar,
}

/// An architecture as data: block kind, blocks per stage, stage widths, stem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResNetConfig {
    pub block: BlockKind,
    pub blocks: Vec<usize>,
    pub widths: Vec<usize>,
    pub stem: Stem,
}

impl ResNetConfig {
    /// torchvision's ImageNet ResNets by depth (18, 34, 50, 101, 152).
    pub fn imagenet(depth: usize) -> Option<Self> {
        let (block, blocks) = match depth {
            18 => (BlockKind::Basic, vec![2, 2, 2, 2]),
            34 => (BlockKind::Basic, vec![3, 4, 6, 3]),
            50 => (BlockKind::Bottleneck, vec![3, 4, 6, 3]),
            101 => (BlockKind::Bottleneck, vec![3, 4, 23, 3]),
            152 => (BlockKind::Bottleneck, vec![3, 8, 36, 3]),
            _ => return None,
        };
        Some(Self {
            block,
            blocks,
            widths: vec![64, 128, 256, 512],
            stem: Stem::ImageNet,
        })
    }

    /// The CIFAR ResNets of depth 6n + 2 (20, 32, 44, 56, 110, ...).
    pub fn cifar(depth: usize) -> Option<Self> {
        (depth >= 8 && (depth - 2).is_multiple_of(6)).then(|| Self {
            block: BlockKind::Basic,
            blocks: vec![(depth - 2) / 6; 3],
            widths: vec![16, 32, 64],
            stem: Stem::Cifar,
        })
    }
}

#[derive(Debug, Clone)]
struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn new(
        kind: BlockKind,
        c_in: usize,
        width: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let c_out = width * kind.expansion();
        let convs = match kind {
            BlockKind::Basic => vec![
                ConvBn::new(c_in, width, 3, stride, 1, &vb, "conv1", "bn1")?,
                ConvBn::new(width, width, 3, 1, 1, &vb, "conv2", "bn2")?,
            ],
            BlockKind::Bottleneck => vec![
                ConvBn::new(c_in, width, 1, 1, 0, &vb, "conv1", "bn1")?,
                ConvBn::new(width, width, 3, stride, 1, &vb, "conv2", "bn2")?,
                ConvBn::new(width, c_out, 1, 1, 0, &vb, "conv3", "bn3")?,
            ],
        };
        let downsample = if stride != 1 || c_in != c_out {
            Some(ConvBn::new(
                c_in,
                c_out,
                1,
                stride,
                0,
                &vb,
                "downsample.0",
                "downsample.1",
            )?)
        } else {
            None
        };
        Ok(Self { convs, downsample })
    }
}

impl ModuleT for Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        for (i, conv) in self.convs.iter().enumerate() {
            y = if i + 1 < self.convs.len() {
                conv.forward_relu_t(&y, train)?
            } else {
                conv.forward_t(&y, train)?
            };
        }
        let shortcut = match &self.downsample {
            Some(d) => d.forward_t(x, train)?,
            None => x.clone(),
        };
        add_relu(&y, &shortcut)
    }
}

/// A residual network for `[channels, height, width]` inputs and `classes` outputs.
#[derive(Debug, Clone)]
pub struct ResNet {
    stem: ConvBn,
    max_pool: bool,
    stages: Vec<Vec<Block>>,
    fc: Linear,
}

impl ResNet {
    pub fn new(
        cfg: &ResNetConfig,
        vb: VarBuilder,
        input: &[usize],
        classes: usize,
    ) -> Result<Self> {
        let &[channels, h, w] = input else {
            return Err(NetError::InputShape {
                model: "resnet",
                shape: input.to_vec(),
                why: "expected [channels, height, width]".into(),
            });
        };
        let min_side = match cfg.stem {
            Stem::ImageNet => 8,
            Stem::Cifar => 4,
        };
        if h < min_side || w < min_side {
            return Err(NetError::InputShape {
                model: "resnet",
                shape: input.to_vec(),
                why: format!("height and width must be at least {min_side}"),
            });
        }
        let (stem, max_pool) = match cfg.stem {
            Stem::ImageNet => (
                ConvBn::new(channels, 64, 7, 2, 3, &vb, "conv1", "bn1")?,
                true,
            ),
            Stem::Cifar => (
                ConvBn::new(channels, cfg.widths[0], 3, 1, 1, &vb, "conv1", "bn1")?,
                false,
            ),
        };
        let mut c_in = match cfg.stem {
            Stem::ImageNet => 64,
            Stem::Cifar => cfg.widths[0],
        };
        let mut stages = Vec::new();
        for (s, (&n, &width)) in cfg.blocks.iter().zip(&cfg.widths).enumerate() {
            let vs = vb.pp(format!("layer{}", s + 1));
            let mut blocks = Vec::new();
            for b in 0..n {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                blocks.push(Block::new(
                    cfg.block,
                    c_in,
                    width,
                    stride,
                    vs.pp(b.to_string()),
                )?);
                c_in = width * cfg.block.expansion();
            }
            stages.push(blocks);
        }
        Ok(Self {
            stem,
            max_pool,
            stages,
            fc: linear(c_in, classes, vb.pp("fc"))?,
        })
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut x = record("conv1", self.stem.forward_relu_t(x, train)?);
        if self.max_pool {
            x = record(
                "maxpool",
                max_pool2d(&x, &PoolConfig::new(3).stride(2).padding(1))?,
            );
        }
        for (s, stage) in self.stages.iter().enumerate() {
            for block in stage {
                x = block.forward_t(&x, train)?;
            }
            x = record(format_args!("layer{}", s + 1), x);
        }
        let x = record("avgpool", global_avg_pool2d(&x)?);
        Ok(record("fc", self.fc.forward(&x)?))
    }
}
