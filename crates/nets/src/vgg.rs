//! VGG (Simonyan & Zisserman 2015), configurations A, B, D, E as data (torchvision's cfg
//! lists), with or without batch norm. Names follow torchvision's `features.{i}` /
//! `classifier.{i}` indices, so its state dicts load unchanged.
//!
//! Two heads: [`VggHead::ImageNet`] (adaptive 7x7 average pool, fc 4096-4096-classes with
//! dropout 0.5: the published network) and [`VggHead::Small`] for 28x28 / 32x32 data (global
//! average pool, one fc 512-classes). Max-pools use ceil_mode so a 28x28 input still reaches
//! 1x1 after five pools; on the even sides of 224x224 this changes nothing.

use candle_core::{ModuleT, Tensor};
use candle_nn::{Module, VarBuilder};
use forja_layers::{
    adaptive_avg_pool2d, linear, max_pool2d, relu, BatchNorm, BatchNormConfig, Conv2d, ConvConfig,
    Dropout, Linear, PoolConfig,
};

use forja_layers::trace::record;

use crate::{NetError, Result};

/// One entry of a VGG configuration: a 3x3 conv with that many channels, or a 2x2 max-pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V {
    C(usize),
    M,
}
use V::{C, M};

#[rustfmt::skip]
pub const VGG11: &[V] = &[C(64), M, C(128), M, C(256), C(256), M, C(512), C(512), M, C(512), C(512), M];
#[rustfmt::skip]
pub const VGG13: &[V] = &[C(64), C(64), M, C(128), C(128), M, C(256), C(256), M, C(512), C(512), M, C(512), C(512), M];
#[rustfmt::skip]
pub const VGG16: &[V] = &[
    C(64), C(64), M, C(128), C(128), M, C(256), C(256), C(256), M,
    C(512), C(512), C(512), M, C(512), C(512), C(512), M,
];
#[rustfmt::skip]
pub const VGG19: &[V] = &[
    C(64), C(64), M, C(128), C(128), M, C(256), C(256), C(256), C(256), M,
    C(512), C(512), C(512), C(512), M, C(512), C(512), C(512), C(512), M,
];

/// The classifier on top of the conv stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VggHead {
    ImageNet,
    Small,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VggConfig {
    pub layers: &'static [V],
    pub batch_norm: bool,
    pub head: VggHead,
}

enum Feature {
    Conv(Conv2d, Option<BatchNorm>),
    Pool,
}

pub struct Vgg {
    features: Vec<Feature>,
    head: VggHead,
    fcs: Vec<Linear>,
    dropout: Vec<Dropout>,
}

impl Vgg {
    pub fn new(
        cfg: &VggConfig,
        vb: VarBuilder,
        input: &[usize],
        classes: usize,
        seed: u64,
    ) -> Result<Self> {
        let &[mut c_in, h, w] = input else {
            return Err(NetError::InputShape {
                model: "vgg",
                shape: input.to_vec(),
                why: "expected [channels, height, width]".into(),
            });
        };
        let pools = cfg.layers.iter().filter(|v| **v == M).count() as u32;
        if h < 2usize.pow(pools - 1) + 1 || w < 2usize.pow(pools - 1) + 1 {
            return Err(NetError::InputShape {
                model: "vgg",
                shape: input.to_vec(),
                why: format!(
                    "{pools} max-pools need a side of at least {}",
                    2usize.pow(pools - 1) + 1
                ),
            });
        }
        let fv = vb.pp("features");
        let (mut features, mut i) = (Vec::new(), 0);
        for v in cfg.layers {
            match *v {
                C(c) => {
                    let conv =
                        Conv2d::new(c_in, c, 3, ConvConfig::same(3, 1), fv.pp(i.to_string()))?;
                    let bn = if cfg.batch_norm {
                        i += 1;
                        Some(BatchNorm::new(
                            c,
                            BatchNormConfig::default(),
                            fv.pp(i.to_string()),
                        )?)
                    } else {
                        None
                    };
                    features.push(Feature::Conv(conv, bn));
                    i += 2; // the conv (or bn) and its ReLU
                    c_in = c;
                }
                M => {
                    features.push(Feature::Pool);
                    i += 1;
                }
            }
        }
        let cv = vb.pp("classifier");
        let (fcs, dropout) = match cfg.head {
            VggHead::ImageNet => (
                vec![
                    linear(c_in * 7 * 7, 4096, cv.pp("0"))?,
                    linear(4096, 4096, cv.pp("3"))?,
                    linear(4096, classes, cv.pp("6"))?,
                ],
                vec![Dropout::new(0.5, seed)?, Dropout::new(0.5, seed + 1)?],
            ),
            VggHead::Small => (vec![linear(c_in, classes, cv.pp("0"))?], vec![]),
        };
        Ok(Self {
            features,
            head: cfg.head,
            fcs,
            dropout,
        })
    }
}

impl ModuleT for Vgg {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let pool = PoolConfig::new(2).ceil_mode(true);
        let mut x = x.clone();
        let (mut convs, mut pools) = (0, 0);
        for f in &self.features {
            x = match f {
                Feature::Conv(conv, bn) => {
                    convs += 1;
                    let y = conv.forward(&x)?;
                    let y = match bn {
                        Some(bn) => bn.forward_t(&y, train)?,
                        None => y,
                    };
                    record(format_args!("conv{convs}"), relu(&y)?)
                }
                Feature::Pool => {
                    pools += 1;
                    record(format_args!("pool{pools}"), max_pool2d(&x, &pool)?)
                }
            };
        }
        match self.head {
            VggHead::ImageNet => {
                let mut x = record("avgpool", adaptive_avg_pool2d(&x, [7, 7])?).flatten_from(1)?;
                for (k, (fc, drop)) in self.fcs.iter().zip(&self.dropout).enumerate() {
                    x = record(
                        format_args!("fc{}", k + 1),
                        drop.forward_t(&relu(&fc.forward(&x)?)?, train)?,
                    );
                }
                Ok(record("fc3", self.fcs[2].forward(&x)?))
            }
            VggHead::Small => {
                let x = record("avgpool", x.mean((2, 3))?);
                Ok(record("fc", self.fcs[0].forward(&x)?))
            }
        }
    }
}
