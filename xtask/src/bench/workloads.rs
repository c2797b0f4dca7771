//! The reference workloads M1..M6 of `shared/bench/SPECS.md`, built from forja's nets and
//! layers, each with the parameter count of the PyTorch reference (`torch_ref.py`).
//!
//! One step is forward + backward + optimizer update on one batch of random data made once
//! (as the reference does, so data generation is not timed; the VAE draws its noise per step,
//! as the reference's `randn_like` does).

use candle_core::{DType, Device, Module, ModuleT, Tensor, D};
use candle_nn::VarBuilder;
use forja_generative::vae::{Vae, VaeConfig};
use forja_layers::{
    leaky_relu, linear, linear_init, linear_no_bias, relu, Activation, BatchNorm, BatchNormConfig,
    Conv2d, ConvConfig, ConvTranspose2d, ConvTransposeConfig, Init, Linear, MaxPool2d, PoolConfig,
};
use forja_nets::{LeNet5, ResNet, ResNetConfig};
use forja_train::{Optimizer, OptimizerConfig, OptimizerKind, ParamStore};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The workload names, in order.
pub const NAMES: [&str; 6] = ["M1", "M2", "M3", "M4", "M5", "M6"];

/// A built workload: its batch size, parameter count and one training step (returns the loss).
pub struct Workload {
    pub batch: usize,
    pub params: usize,
    pub step: Box<dyn FnMut() -> Res<f32>>,
}

/// The batch size of each workload in SPECS.md.
pub fn default_batch(name: &str) -> usize {
    match name {
        "M5" => 64,
        "M6" => 16,
        _ => 128,
    }
}

/// Builds workload `name` (M1..M6) on the CPU with `batch` samples per step.
pub fn build(name: &str, batch: usize) -> Res<Workload> {
    let dev = Device::Cpu;
    let b = batch;
    match name {
        "M1" => m1(&dev, b),
        "M2" => m2(&dev, b),
        "M3" => m3(&dev, b),
        "M4" => m4(&dev, b),
        "M5" => m5(&dev, b),
        "M6" => m6(&dev, b),
        _ => Err(format!("unknown workload `{name}` (M1..M6)").into()),
    }
}

fn adam(ps: &ParamStore, lr: f64, betas: (f64, f64)) -> Res<Optimizer> {
    let cfg = OptimizerConfig {
        kind: OptimizerKind::Adam,
        lr,
        betas,
        ..Default::default()
    };
    Ok(Optimizer::new(cfg, ps.trainable_vars())?)
}

/// Parameters initialised from a fixed seed, and their builder.
fn store(dev: &Device) -> (ParamStore, VarBuilder<'static>) {
    let ps = ParamStore::new(0);
    let vb = ps.var_builder(DType::F32, dev);
    (ps, vb)
}

fn images(batch: usize, shape: [usize; 3], dev: &Device) -> Res<Tensor> {
    Ok(Tensor::rand(
        0f32,
        1f32,
        (batch, shape[0], shape[1], shape[2]),
        dev,
    )?)
}

fn labels(batch: usize, classes: u32, dev: &Device) -> Res<Tensor> {
    let v: Vec<u32> = (0..batch as u32).map(|i| (i * 7 + 3) % classes).collect();
    Ok(Tensor::new(v, dev)?)
}

/// A classifier step: cross-entropy of `forward(x)` against `y`, then one update.
fn classifier(
    ps: ParamStore,
    mut opt: Optimizer,
    x: Tensor,
    y: Tensor,
    forward: impl Fn(&Tensor) -> candle_core::Result<Tensor> + 'static,
) -> Res<Workload> {
    let (batch, params) = (x.dim(0)?, ps.num_params());
    let step = move || -> Res<f32> {
        let loss = candle_nn::loss::cross_entropy(&forward(&x)?, &y)?;
        opt.backward_step(&loss, 1.0, None)?;
        Ok(loss.to_scalar::<f32>()?)
    };
    Ok(Workload {
        batch,
        params,
        step: Box::new(step),
    })
}

/// M1: LeNet-5 (batch 128 in the spec), Adam 1e-3.
fn m1(dev: &Device, batch: usize) -> Res<Workload> {
    let (ps, vb) = store(dev);
    let net = LeNet5::new(vb, &[1, 28, 28], 10)?;
    let opt = adam(&ps, 1e-3, (0.9, 0.999))?;
    let (x, y) = (images(batch, [1, 28, 28], dev)?, labels(batch, 10, dev)?);
    classifier(ps, opt, x, y, move |x| net.forward(x))
}

/// M2: ResNet-20 on 1x28x28 (batch 128), SGD momentum 0.9, lr 0.1, batch norm in training mode.
fn m2(dev: &Device, batch: usize) -> Res<Workload> {
    let (ps, vb) = store(dev);
    let cfg = ResNetConfig::cifar(20).ok_or("resnet20 config")?;
    let net = ResNet::new(&cfg, vb, &[1, 28, 28], 10)?;
    let opt_cfg = OptimizerConfig {
        kind: OptimizerKind::Sgd,
        lr: 0.1,
        momentum: 0.9,
        ..Default::default()
    };
    let opt = Optimizer::new(opt_cfg, ps.trainable_vars())?;
    let (x, y) = (images(batch, [1, 28, 28], dev)?, labels(batch, 10, dev)?);
    classifier(ps, opt, x, y, move |x| net.forward_t(x, true))
}

/// M3: the MLP VAE 784-400-20, Bernoulli likelihood (BCE with logits, summed) + KL.
fn m3(dev: &Device, batch: usize) -> Res<Workload> {
    let (ps, vb) = store(dev);
    let vae = Vae::new(&VaeConfig::mlp(784, 20), vb)?;
    let mut opt = adam(&ps, 1e-3, (0.9, 0.999))?;
    let x = Tensor::rand(0f32, 1f32, (batch, 784), dev)?;
    let params = ps.num_params();
    let dev = dev.clone();
    let step = move || -> Res<f32> {
        let eps = Tensor::randn(0f32, 1f32, (batch, 20), &dev)?;
        let loss = vae.elbo(&x, &eps)?.elbo.sum_all()?.neg()?;
        opt.backward_step(&loss, 1.0, None)?;
        Ok(loss.to_scalar::<f32>()?)
    };
    Ok(Workload {
        batch,
        params,
        step: Box::new(step),
    })
}

/// One affine coupling of M4: the conditioning half (392) -> 512 -> 512 -> (s, t) (784).
struct HalfCoupling {
    net: [Linear; 3],
    cond_first: bool,
}

impl HalfCoupling {
    fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let half = x.dim(1)? / 2;
        let (mut a, mut b) = (x.narrow(1, 0, half)?, x.narrow(1, half, half)?);
        if !self.cond_first {
            std::mem::swap(&mut a, &mut b);
        }
        let h = relu(&self.net[0].forward(&a)?)?;
        let h = relu(&self.net[1].forward(&h)?)?;
        let st = self.net[2].forward(&h)?;
        let s = forja_layers::tanh(&st.narrow(1, 0, half)?)?;
        let b = ((b * s.exp()?)? + st.narrow(1, half, half)?)?;
        let y = if self.cond_first {
            Tensor::cat(&[&a, &b], 1)?
        } else {
            Tensor::cat(&[&b, &a], 1)?
        };
        Ok((y, s.sum(D::Minus1)?))
    }
}

/// M4: RealNVP-style flow on 784-d, 8 half-mask couplings, negative log-likelihood under N(0, I).
/// The MLPs start as PyTorch's do (`Init::Torch`): with candle's wider weights the scales
/// `exp(tanh(.))` start saturated, the first loss is ~3e5 nats instead of ~950, and the run
/// would not be the reference's computation.
fn m4(dev: &Device, batch: usize) -> Res<Workload> {
    let (ps, vb) = store(dev);
    let layers = (0..8)
        .map(|i| {
            let vb = vb.pp(format!("layers.{i}.net"));
            Ok(HalfCoupling {
                net: [
                    linear_init(392, 512, Init::Torch, vb.pp("0"))?,
                    linear_init(512, 512, Init::Torch, vb.pp("2"))?,
                    linear_init(512, 784, Init::Torch, vb.pp("4"))?,
                ],
                cond_first: i % 2 == 0,
            })
        })
        .collect::<Res<Vec<_>>>()?;
    let mut opt = adam(&ps, 1e-3, (0.9, 0.999))?;
    let x = Tensor::randn(0f32, 1f32, (batch, 784), dev)?;
    let params = ps.num_params();
    let log_2pi = (2.0 * std::f64::consts::PI).ln();
    let step = move || -> Res<f32> {
        let mut z = x.clone();
        let mut log_det = Tensor::zeros(batch, DType::F32, z.device())?;
        for layer in &layers {
            let (y, ld) = layer.forward(&z)?;
            (z, log_det) = (y, (log_det + ld)?);
        }
        let log_pz = z
            .sqr()?
            .sum(D::Minus1)?
            .affine(-0.5, -0.5 * 784.0 * log_2pi)?;
        let loss = (log_pz + log_det)?.mean_all()?.neg()?;
        opt.backward_step(&loss, 1.0, None)?;
        Ok(loss.to_scalar::<f32>()?)
    };
    Ok(Workload {
        batch,
        params,
        step: Box::new(step),
    })
}

fn bn(c: usize, vb: VarBuilder) -> Res<BatchNorm> {
    Ok(BatchNorm::new(c, BatchNormConfig::default(), vb)?)
}

/// M5's generator: z 100 -> fc 6272 + BN1d + ReLU -> convT 128->64 + BN + ReLU -> convT 64->1, tanh.
struct Generator {
    fc: Linear,
    bn0: BatchNorm,
    ct1: ConvTranspose2d,
    bn1: BatchNorm,
    ct2: ConvTranspose2d,
}

impl Generator {
    fn new(vb: VarBuilder) -> Res<Self> {
        let up = ConvTransposeConfig::default().stride(2).padding(1);
        Ok(Self {
            fc: linear_no_bias(100, 128 * 7 * 7, vb.pp("fc"))?,
            bn0: bn(128 * 7 * 7, vb.pp("bn0"))?,
            ct1: ConvTranspose2d::new(128, 64, 4, up.bias(false), vb.pp("ct1"))?,
            bn1: bn(64, vb.pp("bn1"))?,
            ct2: ConvTranspose2d::new(64, 1, 4, up, vb.pp("ct2"))?,
        })
    }

    fn forward(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.bn0.forward_relu_t(&self.fc.forward(z)?, true)?;
        let x = x.reshape((z.dim(0)?, 128, 7, 7))?;
        let x = self.bn1.forward_relu_t(&self.ct1.forward(&x)?, true)?;
        forja_layers::tanh(&self.ct2.forward(&x)?)
    }
}

/// M5's discriminator: conv 1->64 s2 + leaky -> conv 64->128 s2 + BN + leaky -> fc 1 (logit).
struct Discriminator {
    c1: Conv2d,
    c2: Conv2d,
    bn2: BatchNorm,
    fc: Linear,
}

impl Discriminator {
    fn new(vb: VarBuilder) -> Res<Self> {
        let down = ConvConfig::default().stride(2).padding(1);
        Ok(Self {
            c1: Conv2d::new(1, 64, 4, down, vb.pp("c1"))?,
            c2: Conv2d::new(64, 128, 4, down.bias(false), vb.pp("c2"))?,
            bn2: bn(128, vb.pp("bn2"))?,
            fc: linear(128 * 7 * 7, 1, vb.pp("fc"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let leaky = |t: &Tensor| leaky_relu(t, 0.2);
        let x = leaky(&self.c1.forward(x)?)?;
        let x = leaky(&self.bn2.forward_t(&self.c2.forward(&x)?, true)?)?;
        self.fc.forward(&x.flatten_from(1)?)
    }
}

/// Binary cross-entropy with logits against a constant target (1 or 0), averaged.
fn bce_logits(logits: &Tensor, target: f64) -> candle_core::Result<Tensor> {
    // -[t log σ(l) + (1 - t) log(1 - σ(l))] = softplus(l) - t l
    let softplus = Activation::Softplus.forward(logits)?;
    (softplus - (logits * target)?)?.mean_all()
}

/// M5: DCGAN at 28x28 (batch 64); one D update (real + fake) and one G update per step.
fn m5(dev: &Device, batch: usize) -> Res<Workload> {
    let ((ps_g, vb_g), (ps_d, vb_d)) = (store(dev), store(dev));
    let g = Generator::new(vb_g)?;
    let d = Discriminator::new(vb_d)?;
    let mut opt_g = adam(&ps_g, 2e-4, (0.5, 0.999))?;
    let mut opt_d = adam(&ps_d, 2e-4, (0.5, 0.999))?;
    let real = images(batch, [1, 28, 28], dev)?.affine(2.0, -1.0)?;
    let z = Tensor::randn(0f32, 1f32, (batch, 100), dev)?;
    let params = ps_g.num_params() + ps_d.num_params();
    let step = move || -> Res<f32> {
        let fake = g.forward(&z)?;
        let loss_d =
            (bce_logits(&d.forward(&real)?, 1.0)? + bce_logits(&d.forward(&fake.detach())?, 0.0)?)?;
        opt_d.backward_step(&loss_d, 1.0, None)?;
        let loss_g = bce_logits(&d.forward(&fake)?, 1.0)?;
        opt_g.backward_step(&loss_g, 1.0, None)?;
        Ok(loss_d.to_scalar::<f32>()? + loss_g.to_scalar::<f32>()?)
    };
    Ok(Workload {
        batch,
        params,
        step: Box::new(step),
    })
}

/// `[conv3x3 (no bias) + BN + ReLU] x 2`.
struct DoubleConv([(Conv2d, BatchNorm); 2]);

impl DoubleConv {
    fn new(c_in: usize, c_out: usize, vb: VarBuilder) -> Res<Self> {
        let cfg = ConvConfig::same(3, 1).bias(false);
        let layer = |i: usize, c: usize| -> Res<(Conv2d, BatchNorm)> {
            let conv = Conv2d::new(c, c_out, 3, cfg, vb.pp(format!("{}", 3 * i)))?;
            Ok((conv, bn(c_out, vb.pp(format!("{}", 3 * i + 1)))?))
        };
        Ok(Self([layer(0, c_in)?, layer(1, c_out)?]))
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for (conv, bn) in &self.0 {
            x = bn.forward_relu_t(&conv.forward(&x)?, true)?;
        }
        Ok(x)
    }
}

/// M6's small padded U-Net: 32, 64, 128 channels, bottleneck 256, transposed-conv upsampling.
struct SmallUNet {
    down: Vec<DoubleConv>,
    bottom: DoubleConv,
    up: Vec<(ConvTranspose2d, DoubleConv)>,
    head: Conv2d,
}

impl SmallUNet {
    fn new(vb: VarBuilder) -> Res<Self> {
        let widths = [32, 64, 128];
        let mut down = Vec::new();
        let mut c_in = 1;
        for (i, &c) in widths.iter().enumerate() {
            down.push(DoubleConv::new(c_in, c, vb.pp(format!("e{}", i + 1)))?);
            c_in = c;
        }
        let bottom = DoubleConv::new(128, 256, vb.pp("bott"))?;
        let up2 = ConvTransposeConfig::default().stride(2);
        let up = widths
            .iter()
            .enumerate()
            .rev()
            .map(|(i, &c)| {
                let upconv = ConvTranspose2d::new(2 * c, c, 2, up2, vb.pp(format!("up{}", i + 1)))?;
                Ok((
                    upconv,
                    DoubleConv::new(2 * c, c, vb.pp(format!("d{}", i + 1)))?,
                ))
            })
            .collect::<Res<Vec<_>>>()?;
        let head = Conv2d::new(32, 2, 1, ConvConfig::default(), vb.pp("head"))?;
        Ok(Self {
            down,
            bottom,
            up,
            head,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let pool = MaxPool2d(PoolConfig::new(2));
        let mut skips = Vec::new();
        let mut x = x.clone();
        for (i, level) in self.down.iter().enumerate() {
            x = level.forward(&if i == 0 { x } else { pool.forward(&x)? })?;
            skips.push(x.clone());
        }
        x = self.bottom.forward(&pool.forward(&x)?)?;
        for ((upconv, conv), skip) in self.up.iter().zip(skips.iter().rev()) {
            x = conv.forward(&Tensor::cat(&[&upconv.forward(&x)?, skip], 1)?)?;
        }
        self.head.forward(&x)
    }
}

/// M6: the small U-Net on 1x64x64 (batch 16), per-pixel cross-entropy over 2 classes, Adam 1e-3.
fn m6(dev: &Device, batch: usize) -> Res<Workload> {
    let (ps, vb) = store(dev);
    let net = SmallUNet::new(vb)?;
    let opt = adam(&ps, 1e-3, (0.9, 0.999))?;
    let x = images(batch, [1, 64, 64], dev)?;
    let y = Tensor::rand(0f32, 1f32, (batch * 64 * 64,), dev)?
        .ge(0.5)?
        .to_dtype(DType::U32)?;
    // Per-pixel logits as rows: [N, 2, H, W] -> [N * H * W, 2].
    classifier(ps, opt, x, y, move |x| {
        net.forward(x)?.permute((0, 2, 3, 1))?.reshape(((), 2))
    })
}
