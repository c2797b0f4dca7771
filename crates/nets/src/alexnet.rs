//! AlexNet (Krizhevsky et al. 2012) and ZFNet (Zeiler & Fergus 2013): five convolutions with
//! ReLU, local response normalisation after the first two, overlapping 3x3/2 max-pools, and
//! three fully connected layers with dropout 0.5. As data: one [`ConvSpec`] per convolution.
//!
//! AlexNet uses the paper's channels (96-256-384-384-256) and can split conv2, conv4 and conv5
//! into the paper's two GPU towers (`groups = 2`). An adaptive 6x6 average pool before the
//! classifier (as torchvision) makes the head independent of the exact input size. Names
//! follow torchvision's `features.{i}` / `classifier.{i}` indexing.
//!
//! Small-input variants (`-small`, for 28x28 / 32x32): the stem becomes a 5x5/1 conv, the
//! classifier pools to 2x2 and its hidden layers have 1024 units — documented, not silent.

use candle_core::{ModuleT, Tensor};
use candle_nn::{Module, VarBuilder};
use forja_layers::{
    adaptive_avg_pool2d, conv_out_len, linear, max_pool2d, relu, Conv2d, ConvConfig, Dropout,
    Linear, LocalResponseNorm, PoolConfig,
};

use forja_layers::trace::record;

use crate::{NetError, Result};

/// One convolution of the feature extractor and what follows its ReLU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    pub channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    pub lrn: bool,
    /// 3x3/2 max-pool, with this padding.
    pub pool: Option<usize>,
}

const fn conv(
    channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    groups: usize,
    lrn: bool,
    pool: Option<usize>,
) -> ConvSpec {
    ConvSpec {
        channels,
        kernel,
        stride,
        padding,
        groups,
        lrn,
        pool,
    }
}

/// The feature extractor and classifier sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlexNetConfig {
    pub convs: Vec<ConvSpec>,
    /// Side of the adaptive average pool before the classifier.
    pub pool_side: usize,
    pub hidden: usize,
}

impl AlexNetConfig {
    /// The 2012 network; `two_towers` groups conv2, conv4 and conv5 in two halves.
    pub fn alexnet(two_towers: bool) -> Self {
        let g = if two_towers { 2 } else { 1 };
        Self {
            convs: vec![
                conv(96, 11, 4, 2, 1, true, Some(0)),
                conv(256, 5, 1, 2, g, true, Some(0)),
                conv(384, 3, 1, 1, 1, false, None),
                conv(384, 3, 1, 1, g, false, None),
                conv(256, 3, 1, 1, g, false, Some(0)),
            ],
            pool_side: 6,
            hidden: 4096,
        }
    }

    /// ZFNet: 7x7/2 first conv and 5x5/2 second conv (smaller strides than AlexNet), one tower.
    pub fn zfnet() -> Self {
        Self {
            convs: vec![
                conv(96, 7, 2, 1, 1, true, Some(1)),
                conv(256, 5, 2, 0, 1, true, Some(1)),
                conv(384, 3, 1, 1, 1, false, None),
                conv(384, 3, 1, 1, 1, false, None),
                conv(256, 3, 1, 1, 1, false, Some(0)),
            ],
            pool_side: 6,
            hidden: 4096,
        }
    }

    /// The small-input variant of a config: 5x5/1 stem, 2x2 pool before a 1024-unit classifier.
    pub fn small(mut self) -> Self {
        self.convs[0] = ConvSpec {
            kernel: 5,
            stride: 1,
            padding: 2,
            ..self.convs[0]
        };
        self.pool_side = 2;
        self.hidden = 1024;
        self
    }
}

enum Feature {
    Conv(Conv2d),
    Lrn(LocalResponseNorm),
    Pool(PoolConfig),
}

pub struct AlexNet {
    features: Vec<Feature>,
    pool_side: usize,
    fcs: [Linear; 3],
    dropout: [Dropout; 2],
}

impl AlexNet {
    pub fn new(
        cfg: &AlexNetConfig,
        vb: VarBuilder,
        input: &[usize],
        classes: usize,
        seed: u64,
    ) -> Result<Self> {
        let &[mut c_in, mut h, mut w] = input else {
            return Err(NetError::InputShape {
                model: "alexnet",
                shape: input.to_vec(),
                why: "expected [channels, height, width]".into(),
            });
        };
        let fv = vb.pp("features");
        let (mut features, mut i) = (Vec::new(), 0);
        let too_small = |h: usize, w: usize, what: String| NetError::InputShape {
            model: "alexnet",
            shape: input.to_vec(),
            why: format!(
                "the feature map is {h}x{w} at {what}; use a larger input or the -small variant"
            ),
        };
        // The feature-map size after a window of `k`, padding `p`, stride `s` on both axes.
        let shrink =
            |h, w, k, p, s| Some((conv_out_len(h, k, p, s, 1)?, conv_out_len(w, k, p, s, 1)?));
        for (n, s) in cfg.convs.iter().enumerate() {
            let c = ConvConfig::default()
                .stride(s.stride)
                .padding(s.padding)
                .groups(s.groups);
            (h, w) = shrink(h, w, s.kernel, s.padding, s.stride)
                .ok_or_else(|| too_small(h, w, format!("conv{}", n + 1)))?;
            features.push(Feature::Conv(Conv2d::new(
                c_in,
                s.channels,
                s.kernel,
                c,
                fv.pp(i.to_string()),
            )?));
            i += 2; // conv, ReLU
            if s.lrn {
                features.push(Feature::Lrn(LocalResponseNorm::default()));
                i += 1;
            }
            if let Some(p) = s.pool {
                (h, w) = shrink(h, w, 3, p, 2)
                    .ok_or_else(|| too_small(h, w, format!("pool after conv{}", n + 1)))?;
                features.push(Feature::Pool(PoolConfig::new(3).stride(2).padding(p)));
                i += 1;
            }
            c_in = s.channels;
        }
        let cv = vb.pp("classifier");
        let flat = c_in * cfg.pool_side * cfg.pool_side;
        Ok(Self {
            features,
            pool_side: cfg.pool_side,
            fcs: [
                linear(flat, cfg.hidden, cv.pp("1"))?,
                linear(cfg.hidden, cfg.hidden, cv.pp("4"))?,
                linear(cfg.hidden, classes, cv.pp("6"))?,
            ],
            dropout: [Dropout::new(0.5, seed)?, Dropout::new(0.5, seed + 1)?],
        })
    }
}

impl ModuleT for AlexNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        let (mut convs, mut lrns, mut pools) = (0, 0, 0);
        for f in &self.features {
            x = match f {
                Feature::Conv(c) => {
                    convs += 1;
                    record(format_args!("conv{convs}"), relu(&c.forward(&x)?)?)
                }
                Feature::Lrn(l) => {
                    lrns += 1;
                    record(format_args!("lrn{lrns}"), l.forward(&x)?)
                }
                Feature::Pool(p) => {
                    pools += 1;
                    record(format_args!("pool{pools}"), max_pool2d(&x, p)?)
                }
            };
        }
        let mut x =
            record("avgpool", adaptive_avg_pool2d(&x, [self.pool_side; 2])?).flatten_from(1)?;
        for (k, (fc, drop)) in self.fcs.iter().zip(&self.dropout).enumerate() {
            x = record(
                format_args!("fc{}", k + 1),
                relu(&fc.forward(&drop.forward_t(&x, train)?)?)?,
            );
        }
        Ok(record("fc3", self.fcs[2].forward(&x)?))
    }
}
