//! GoogLeNet (Inception v1, Szegedy et al. 2014): a stem, nine Inception modules in three
//! stages separated by 3x3/2 max-pools, global average pooling, dropout and one linear layer;
//! optionally two auxiliary classifiers after modules 4a and 4d. As data: one
//! [`InceptionSpec`] per module (the paper's Table 1).
//!
//! Two layouts: [`GoogLeNetConfig::paper`] is the published network (convolutions with bias,
//! no batch norm, local response norm in the stem, 5x5 convolutions in the third branch, dropout
//! 0.4); [`GoogLeNetConfig::torchvision`] is torchvision's `googlenet` (batch norm after every
//! convolution, a 3x3 third branch, which torchvision keeps for its pretrained weights, dropout
//! 0.2), whose parameter names and totals it shares. [`GoogLeNetConfig::small`] replaces the
//! stem by one 3x3/1 convolution to 192 channels and drops the auxiliary heads, for 28x28 and
//! 32x32 inputs.
//!
//! In training mode with auxiliary heads the network returns `[3, N, classes]`: the main logits
//! and the two auxiliary ones, which the classifier task weights by 0.3 as in the paper.

use candle_core::{ModuleT, Tensor};
use candle_nn::{Module, VarBuilder};
use forja_layers::{
    adaptive_avg_pool2d, global_avg_pool2d, linear, max_pool2d, relu, BatchNorm, BatchNormConfig,
    Conv2d, ConvConfig, Dropout, Linear, LocalResponseNorm, PoolConfig,
};

use forja_layers::trace::record;

use crate::{NetError, Result};

/// Output channels of one Inception module's four branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InceptionSpec {
    /// 1x1 branch.
    pub c1: usize,
    /// 1x1 reduction, then 3x3.
    pub c3_reduce: usize,
    pub c3: usize,
    /// 1x1 reduction, then the "5x5" branch.
    pub c5_reduce: usize,
    pub c5: usize,
    /// 3x3/1 max-pool, then 1x1 projection.
    pub pool_proj: usize,
}

impl InceptionSpec {
    pub fn out_channels(&self) -> usize {
        self.c1 + self.c3 + self.c5 + self.pool_proj
    }
}

const fn inc(c1: usize, c3r: usize, c3: usize, c5r: usize, c5: usize, pp: usize) -> InceptionSpec {
    InceptionSpec {
        c1,
        c3_reduce: c3r,
        c3,
        c5_reduce: c5r,
        c5,
        pool_proj: pp,
    }
}

/// The nine modules of Table 1, by torchvision's names; a max-pool follows 3b and 4e.
pub const INCEPTIONS: [(&str, InceptionSpec); 9] = [
    ("inception3a", inc(64, 96, 128, 16, 32, 32)),
    ("inception3b", inc(128, 128, 192, 32, 96, 64)),
    ("inception4a", inc(192, 96, 208, 16, 48, 64)),
    ("inception4b", inc(160, 112, 224, 24, 64, 64)),
    ("inception4c", inc(128, 128, 256, 24, 64, 64)),
    ("inception4d", inc(112, 144, 288, 32, 64, 64)),
    ("inception4e", inc(256, 160, 320, 32, 128, 128)),
    ("inception5a", inc(256, 160, 320, 32, 128, 128)),
    ("inception5b", inc(384, 192, 384, 48, 128, 128)),
];

/// Which GoogLeNet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GoogLeNetConfig {
    /// Batch norm after every convolution (torchvision); convolutions then have no bias.
    pub batch_norm: bool,
    /// Kernel of the third branch's second convolution: 5 in the paper, 3 in torchvision.
    pub branch3_kernel: usize,
    /// Local response norm after the stem's first pool and third convolution (the paper).
    pub lrn: bool,
    /// Kernel of the max-pool before stage 5: 3 in the paper, 2 in torchvision.
    pub last_pool: usize,
    /// The two auxiliary classifiers after 4a and 4d.
    pub aux: bool,
    /// A 3x3/1 stem to 192 channels without pools, for 28x28 / 32x32 inputs.
    pub small_stem: bool,
    /// Dropout before the last linear layer.
    pub dropout: f64,
}

impl GoogLeNetConfig {
    pub fn paper() -> Self {
        Self {
            batch_norm: false,
            branch3_kernel: 5,
            lrn: true,
            last_pool: 3,
            aux: true,
            small_stem: false,
            dropout: 0.4,
        }
    }

    pub fn torchvision() -> Self {
        Self {
            batch_norm: true,
            branch3_kernel: 3,
            lrn: false,
            last_pool: 2,
            aux: true,
            small_stem: false,
            dropout: 0.2,
        }
    }

    /// The small-input variant of a config: 3x3/1 stem, no auxiliary heads.
    pub fn small(self) -> Self {
        Self {
            small_stem: true,
            aux: false,
            lrn: false,
            ..self
        }
    }
}

/// A convolution, optional batch norm (eps 0.001 as torchvision), ReLU: torchvision's
/// `BasicConv2d`, named `conv` and `bn` inside its scope.
struct Unit {
    conv: Conv2d,
    bn: Option<BatchNorm>,
}

impl Unit {
    fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        bn: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let cfg = ConvConfig::default()
            .stride(stride)
            .padding(kernel / 2)
            .bias(!bn);
        let bn_cfg = BatchNormConfig {
            eps: 1e-3,
            ..Default::default()
        };
        Ok(Self {
            conv: Conv2d::new(c_in, c_out, kernel, cfg, vb.pp("conv"))?,
            bn: bn
                .then(|| BatchNorm::new(c_out, bn_cfg, vb.pp("bn")))
                .transpose()?,
        })
    }
}

impl ModuleT for Unit {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = self.conv.forward(x)?;
        match &self.bn {
            Some(bn) => relu(&bn.forward_t(&y, train)?),
            None => relu(&y),
        }
    }
}

/// 3x3 max-pool of stride `stride`, padding 1 when the stride is 1, rounding up like torchvision.
fn pool(kernel: usize, stride: usize) -> PoolConfig {
    let padding = if stride == 1 { 1 } else { 0 };
    PoolConfig::new(kernel)
        .stride(stride)
        .padding(padding)
        .ceil_mode(true)
}

struct Inception {
    branch1: Unit,
    branch2: [Unit; 2],
    branch3: [Unit; 2],
    branch4: Unit,
}

impl Inception {
    fn new(c_in: usize, s: &InceptionSpec, cfg: &GoogLeNetConfig, vb: VarBuilder) -> Result<Self> {
        let bn = cfg.batch_norm;
        let (b2, b3) = (vb.pp("branch2"), vb.pp("branch3"));
        Ok(Self {
            branch1: Unit::new(c_in, s.c1, 1, 1, bn, vb.pp("branch1"))?,
            branch2: [
                Unit::new(c_in, s.c3_reduce, 1, 1, bn, b2.pp("0"))?,
                Unit::new(s.c3_reduce, s.c3, 3, 1, bn, b2.pp("1"))?,
            ],
            branch3: [
                Unit::new(c_in, s.c5_reduce, 1, 1, bn, b3.pp("0"))?,
                Unit::new(s.c5_reduce, s.c5, cfg.branch3_kernel, 1, bn, b3.pp("1"))?,
            ],
            branch4: Unit::new(c_in, s.pool_proj, 1, 1, bn, vb.pp("branch4").pp("1"))?,
        })
    }
}

impl ModuleT for Inception {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let two = |[a, b]: &[Unit; 2]| b.forward_t(&a.forward_t(x, train)?, train);
        let pooled = max_pool2d(x, &pool(3, 1))?;
        Tensor::cat(
            &[
                self.branch1.forward_t(x, train)?,
                two(&self.branch2)?,
                two(&self.branch3)?,
                self.branch4.forward_t(&pooled, train)?,
            ],
            1,
        )
    }
}

/// An auxiliary classifier: 4x4 average pool, 1x1 conv to 128, fc 1024 with dropout 0.7, fc.
struct AuxHead {
    conv: Unit,
    fc1: Linear,
    fc2: Linear,
    dropout: Dropout,
}

impl AuxHead {
    fn new(
        c_in: usize,
        classes: usize,
        cfg: &GoogLeNetConfig,
        seed: u64,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            conv: Unit::new(c_in, 128, 1, 1, cfg.batch_norm, vb.pp("conv"))?,
            fc1: linear(128 * 4 * 4, 1024, vb.pp("fc1"))?,
            fc2: linear(1024, classes, vb.pp("fc2"))?,
            dropout: Dropout::new(0.7, seed)?,
        })
    }
}

impl ModuleT for AuxHead {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let x = self
            .conv
            .forward_t(&adaptive_avg_pool2d(x, [4, 4])?, train)?;
        let x = relu(&self.fc1.forward(&x.flatten_from(1)?)?)?;
        self.fc2.forward(&self.dropout.forward_t(&x, train)?)
    }
}

enum StemLayer {
    Unit(&'static str, Unit),
    Pool(&'static str),
    Lrn(&'static str, LocalResponseNorm),
}

pub struct GoogLeNet {
    stem: Vec<StemLayer>,
    inceptions: Vec<Inception>,
    aux: Option<[AuxHead; 2]>,
    last_pool: PoolConfig,
    dropout: Dropout,
    fc: Linear,
}

impl GoogLeNet {
    pub fn new(
        cfg: &GoogLeNetConfig,
        vb: VarBuilder,
        input: &[usize],
        classes: usize,
        seed: u64,
    ) -> Result<Self> {
        let bad = |why: String| NetError::InputShape {
            model: "googlenet",
            shape: input.to_vec(),
            why,
        };
        let &[c_in, h, w] = input else {
            return Err(bad("expected [channels, height, width]".into()));
        };
        // The stem and the two stage pools divide the side by 32 (by 4 with the small stem).
        let min_side = if cfg.small_stem { 4 } else { 32 };
        if h.min(w) < min_side {
            return Err(bad(format!(
                "the side must be at least {min_side} pixels{}",
                if cfg.small_stem {
                    ""
                } else {
                    "; use googlenet-small for 28x28 / 32x32 inputs"
                }
            )));
        }
        let bn = cfg.batch_norm;
        let stem = if cfg.small_stem {
            let conv1 = Unit::new(c_in, 192, 3, 1, bn, vb.pp("conv1"))?;
            vec![StemLayer::Unit("conv1", conv1)]
        } else {
            let lrn = |name| {
                cfg.lrn
                    .then(|| StemLayer::Lrn(name, LocalResponseNorm::default()))
            };
            let conv1 = Unit::new(c_in, 64, 7, 2, bn, vb.pp("conv1"))?;
            let conv2 = Unit::new(64, 64, 1, 1, bn, vb.pp("conv2"))?;
            let conv3 = Unit::new(64, 192, 3, 1, bn, vb.pp("conv3"))?;
            [
                Some(StemLayer::Unit("conv1", conv1)),
                Some(StemLayer::Pool("maxpool1")),
                lrn("lrn1"),
                Some(StemLayer::Unit("conv2", conv2)),
                Some(StemLayer::Unit("conv3", conv3)),
                lrn("lrn2"),
                Some(StemLayer::Pool("maxpool2")),
            ]
            .into_iter()
            .flatten()
            .collect()
        };
        let mut c = 192;
        let mut inceptions = Vec::new();
        for (name, spec) in &INCEPTIONS {
            inceptions.push(Inception::new(c, spec, cfg, vb.pp(*name))?);
            c = spec.out_channels();
        }
        let aux = if cfg.aux {
            Some([
                AuxHead::new(512, classes, cfg, seed + 1, vb.pp("aux1"))?,
                AuxHead::new(528, classes, cfg, seed + 2, vb.pp("aux2"))?,
            ])
        } else {
            None
        };
        Ok(Self {
            stem,
            inceptions,
            aux,
            last_pool: pool(cfg.last_pool, 2),
            dropout: Dropout::new(cfg.dropout, seed)?,
            fc: linear(c, classes, vb.pp("fc"))?,
        })
    }
}

impl ModuleT for GoogLeNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.stem {
            x = match layer {
                StemLayer::Unit(name, u) => record(name, u.forward_t(&x, train)?),
                StemLayer::Pool(name) => record(name, max_pool2d(&x, &pool(3, 2))?),
                StemLayer::Lrn(name, l) => record(name, l.forward(&x)?),
            };
        }
        let mut aux_logits = Vec::new();
        for (i, (module, (name, _))) in self.inceptions.iter().zip(&INCEPTIONS).enumerate() {
            x = record(name, module.forward_t(&x, train)?);
            match (i, &self.aux) {
                (1, _) => x = record("maxpool3", max_pool2d(&x, &pool(3, 2))?),
                (6, _) => x = record("maxpool4", max_pool2d(&x, &self.last_pool)?),
                (2, Some([a1, _])) if train => {
                    aux_logits.push(record("aux1", a1.forward_t(&x, train)?))
                }
                (5, Some([_, a2])) if train => {
                    aux_logits.push(record("aux2", a2.forward_t(&x, train)?))
                }
                _ => {}
            }
        }
        let x = record("avgpool", global_avg_pool2d(&x)?);
        let logits = record("fc", self.fc.forward(&self.dropout.forward_t(&x, train)?)?);
        if aux_logits.is_empty() {
            return Ok(logits);
        }
        Tensor::stack(&[&[logits], aux_logits.as_slice()].concat(), 0)
    }
}
