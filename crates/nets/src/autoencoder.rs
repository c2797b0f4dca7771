//! Autoencoders: an encoder f maps x to a code h with N_h << N_x, a decoder g maps it back,
//! and training minimises a reconstruction loss plus an optional penalty on the code (sparse,
//! contractive). Denoising autoencoders corrupt the input and reconstruct the clean one (the
//! corruption lives in the training task).

use candle_core::{Module, Tensor, D};
use candle_nn::VarBuilder;
use forja_layers::{
    bce_with_logits, linear, Activation, Conv2d, ConvConfig, ConvTranspose2d, ConvTransposeConfig,
    Linear,
};

use crate::{NetError, Result};

/// The layout of encoder and decoder.
#[derive(Debug, Clone, PartialEq)]
pub enum AeArch {
    /// f and g both affine: the linear autoencoder, whose optimum spans the top principal
    /// subspace of the data (Baldi & Hornik 1989).
    Linear,
    /// Fully connected, ReLU between layers; the decoder mirrors the encoder.
    Mlp { hidden: Vec<usize> },
    /// Two stride-2 3x3 convolutions (16, 32 channels) and a linear code; transposed
    /// convolutions back. Sides must be multiples of 4.
    Conv,
}

/// The activation of the code h = f(x).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeActivation {
    Identity,
    /// h in (0, 1): needed by the KL sparsity and contractive penalties.
    Sigmoid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconstructionLoss {
    /// ||x - g(f(x))||^2 summed over the pixels.
    SquaredError,
    /// Binary cross-entropy of x in [0, 1] against sigmoid outputs, summed over the pixels.
    CrossEntropy,
}

/// A penalty on the code, added to the reconstruction loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Penalty {
    None,
    /// lambda * sum_j |h_j|.
    L1 {
        lambda: f64,
    },
    /// beta * sum_j KL(rho || rho_hat_j), rho_hat_j the batch mean of h_j (Ng's sparse
    /// autoencoder).
    KlSparsity {
        rho: f64,
        beta: f64,
    },
    /// lambda * ||dh/dx||_F^2 (Rifai et al. 2011), exact for a one-layer sigmoid encoder:
    /// sum_j (h_j (1 - h_j))^2 sum_i W_ji^2.
    Contractive {
        lambda: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct AutoencoderConfig {
    /// `[C, H, W]` of the inputs.
    pub input: [usize; 3],
    pub latent: usize,
    pub arch: AeArch,
    pub code: CodeActivation,
    pub loss: ReconstructionLoss,
    pub penalty: Penalty,
}

impl AutoencoderConfig {
    /// An MLP autoencoder with a linear code, squared error, no penalty.
    pub fn mlp(input: [usize; 3], hidden: Vec<usize>, latent: usize) -> Self {
        Self {
            input,
            latent,
            arch: AeArch::Mlp { hidden },
            code: CodeActivation::Identity,
            loss: ReconstructionLoss::SquaredError,
            penalty: Penalty::None,
        }
    }

    fn pixels(&self) -> usize {
        self.input.iter().product()
    }

    /// Refuses combinations whose penalty or loss would be wrong rather than fail loudly.
    fn validate(&self) -> Result<()> {
        let bad = |why: &str| Err(NetError::Config(format!("autoencoder {self:?}: {why}")));
        if self.latent == 0 || self.pixels() == 0 {
            return bad("latent size and input must be positive");
        }
        let sigmoid = self.code == CodeActivation::Sigmoid;
        match self.penalty {
            Penalty::KlSparsity { rho, .. } if !(sigmoid && 0.0 < rho && rho < 1.0) => {
                return bad("the KL sparsity penalty needs a sigmoid code and 0 < rho < 1")
            }
            Penalty::Contractive { .. }
                if !sigmoid || !matches!(&self.arch, AeArch::Mlp { hidden } if hidden.is_empty()) =>
            {
                return bad("the exact contractive penalty needs a one-layer sigmoid encoder (Mlp with no hidden layers)")
            }
            _ => {}
        }
        if self.arch == AeArch::Linear
            && (self.code != CodeActivation::Identity
                || self.loss != ReconstructionLoss::SquaredError)
        {
            return bad("the linear autoencoder has an identity code and squared error");
        }
        if self.arch == AeArch::Conv
            && (!self.input[1].is_multiple_of(4) || !self.input[2].is_multiple_of(4))
        {
            return bad("the convolutional autoencoder needs sides that are multiples of 4");
        }
        Ok(())
    }
}

/// One step of an encoder or decoder.
#[derive(Debug, Clone)]
enum Step {
    Linear(Linear),
    Conv(Conv2d),
    ConvT(ConvTranspose2d),
    Act(Activation),
    Flatten,
    Reshape([usize; 3]),
}

impl Module for Step {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Step::Linear(l) => l.forward(x),
            Step::Conv(c) => c.forward(x),
            Step::ConvT(c) => c.forward(x),
            Step::Act(a) => a.forward(x),
            Step::Flatten => x.flatten_from(1),
            Step::Reshape([c, h, w]) => x.reshape((x.dim(0)?, *c, *h, *w)),
        }
    }
}

fn run(steps: &[Step], x: &Tensor) -> candle_core::Result<Tensor> {
    steps.iter().try_fold(x.clone(), |x, s| s.forward(&x))
}

#[derive(Debug, Clone)]
pub struct Autoencoder {
    cfg: AutoencoderConfig,
    encoder: Vec<Step>,
    /// Ends in logits for a sigmoid output (all but the linear autoencoder).
    decoder: Vec<Step>,
}

/// One pass over a batch: its mean reconstruction term and mean penalty, the codes and the
/// reconstructions (`[N, C, H, W]`, as [`Autoencoder::decode`] gives them).
pub struct AePass {
    pub reconstruction: Tensor,
    pub penalty: Tensor,
    pub codes: Tensor,
    pub output: Tensor,
}

impl AePass {
    pub fn total(&self) -> candle_core::Result<Tensor> {
        &self.reconstruction + &self.penalty
    }
}

impl Autoencoder {
    /// Parameters: `encoder.{k}` and `decoder.{k}` for the k-th step with weights.
    pub fn new(cfg: &AutoencoderConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let (n, latent) = (cfg.pixels(), cfg.latent);
        let [c, h, w] = cfg.input;
        let (enc, dec) = (vb.pp("encoder"), vb.pp("decoder"));
        let linear = |i: usize, o: usize, vb: VarBuilder| -> Result<Step> {
            Ok(Step::Linear(linear(i, o, vb)?))
        };
        let (mut encoder, mut decoder) = (vec![Step::Flatten], Vec::new());
        match &cfg.arch {
            AeArch::Linear => {
                encoder.push(linear(n, latent, enc.pp("0"))?);
                decoder.push(linear(latent, n, dec.pp("0"))?);
            }
            AeArch::Mlp { hidden } => {
                let widths: Vec<usize> = [n].into_iter().chain(hidden.iter().copied()).collect();
                for (k, pair) in widths.windows(2).enumerate() {
                    encoder.push(linear(pair[0], pair[1], enc.pp(k))?);
                    encoder.push(Step::Act(Activation::Relu));
                }
                encoder.push(linear(
                    *widths.last().unwrap_or(&n),
                    latent,
                    enc.pp(widths.len() - 1),
                )?);
                let back: Vec<usize> = [latent]
                    .into_iter()
                    .chain(widths.iter().rev().copied())
                    .collect();
                for (k, pair) in back.windows(2).enumerate() {
                    if k > 0 {
                        decoder.push(Step::Act(Activation::Relu));
                    }
                    decoder.push(linear(pair[0], pair[1], dec.pp(k))?);
                }
            }
            AeArch::Conv => {
                let down = ConvConfig::default().stride(2).padding(1);
                let up = ConvTransposeConfig::default()
                    .stride(2)
                    .padding(1)
                    .output_padding(1);
                let inner = [32, h / 4, w / 4];
                encoder = vec![
                    Step::Conv(Conv2d::new(c, 16, 3, down, enc.pp("0"))?),
                    Step::Act(Activation::Relu),
                    Step::Conv(Conv2d::new(16, 32, 3, down, enc.pp("1"))?),
                    Step::Act(Activation::Relu),
                    Step::Flatten,
                    linear(inner.iter().product(), latent, enc.pp("2"))?,
                ];
                decoder = vec![
                    linear(latent, inner.iter().product(), dec.pp("0"))?,
                    Step::Act(Activation::Relu),
                    Step::Reshape(inner),
                    Step::ConvT(ConvTranspose2d::new(32, 16, 3, up, dec.pp("1"))?),
                    Step::Act(Activation::Relu),
                    Step::ConvT(ConvTranspose2d::new(16, c, 3, up, dec.pp("2"))?),
                    Step::Flatten,
                ];
            }
        }
        if cfg.code == CodeActivation::Sigmoid {
            encoder.push(Step::Act(Activation::Sigmoid));
        }
        Ok(Self {
            cfg: cfg.clone(),
            encoder,
            decoder,
        })
    }

    pub fn config(&self) -> &AutoencoderConfig {
        &self.cfg
    }

    /// Codes `[N, latent]` of inputs `[N, C, H, W]`.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        Ok(run(&self.encoder, x)?)
    }

    /// The decoder's last affine output, flat `[N, C*H*W]`.
    fn decoder_output(&self, h: &Tensor) -> Result<Tensor> {
        Ok(run(&self.decoder, h)?)
    }

    /// Reconstructions `[N, C, H, W]` of codes (sigmoid outputs but for the linear model).
    pub fn decode(&self, h: &Tensor) -> Result<Tensor> {
        self.activate(&self.decoder_output(h)?)
    }

    /// The decoder's last affine output as images: through a sigmoid unless linear.
    fn activate(&self, out: &Tensor) -> Result<Tensor> {
        let out = match self.cfg.arch {
            AeArch::Linear => out.clone(),
            _ => candle_nn::ops::sigmoid(out)?,
        };
        let [c, hh, w] = self.cfg.input;
        Ok(out.reshape((out.dim(0)?, c, hh, w))?)
    }

    /// The weight of the decoder's last layer, `[C*H*W, latent]` for the linear model: its
    /// columns span the subspace the reconstructions live in.
    pub fn decoder_weight(&self) -> Option<&Tensor> {
        match self.decoder.last() {
            Some(Step::Linear(l)) => Some(l.weight()),
            _ => None,
        }
    }

    /// Encodes `input` and reconstructs it, scored against `target` (the same tensor unless
    /// denoising), both `[N, C, H, W]`.
    pub fn loss(&self, input: &Tensor, target: &Tensor) -> Result<AePass> {
        let codes = self.encode(input)?;
        let out = self.decoder_output(&codes)?;
        let output = self.activate(&out)?;
        let x = target.flatten_from(1)?;
        // The linear autoencoder has squared error (checked in `validate`).
        let per_sample = match self.cfg.loss {
            // -[x log s(o) + (1 - x) log(1 - s(o))] = softplus(o) - x o.
            ReconstructionLoss::CrossEntropy => bce_with_logits(&out, &x)?,
            ReconstructionLoss::SquaredError => {
                (output.flatten_from(1)? - &x)?.sqr()?.sum(D::Minus1)?
            }
        };
        Ok(AePass {
            reconstruction: per_sample.mean_all()?,
            penalty: self.penalty(&codes)?,
            codes,
            output,
        })
    }

    /// The code penalty of a batch (a scalar; zero without penalty).
    pub fn penalty(&self, h: &Tensor) -> Result<Tensor> {
        let zero = || Tensor::zeros((), h.dtype(), h.device());
        Ok(match self.cfg.penalty {
            Penalty::None => zero()?,
            Penalty::L1 { lambda } => (h.abs()?.sum(D::Minus1)?.mean_all()? * lambda)?,
            Penalty::KlSparsity { rho, beta } => {
                let eps = 1e-6;
                let rho_hat = h.mean(0)?.clamp(eps, 1.0 - eps)?;
                let kl = ((rho_hat.recip()? * rho)?.log()? * rho)?
                    + (((rho_hat.neg()? + 1.0)?.recip()? * (1.0 - rho))?.log()? * (1.0 - rho))?;
                (kl?.sum_all()? * beta)?
            }
            Penalty::Contractive { lambda } => {
                let Some(Step::Linear(first)) = self.encoder.get(1) else {
                    return Err(NetError::Config(
                        "contractive penalty without a linear encoder".into(),
                    ));
                };
                let row_norms = first.weight().sqr()?.sum(D::Minus1)?; // [latent]
                let slope = (h * (h.neg()? + 1.0)?)?.sqr()?; // [N, latent]
                (slope
                    .broadcast_mul(&row_norms)?
                    .sum(D::Minus1)?
                    .mean_all()?
                    * lambda)?
            }
        })
    }
}

/// Peak signal-to-noise ratio in dB of `estimate` against `clean`, per image, for values in
/// [0, 1]: 10 log10(1 / MSE).
pub fn psnr(estimate: &Tensor, clean: &Tensor) -> Result<Vec<f64>> {
    let mse: Vec<f32> = (estimate - clean)?
        .sqr()?
        .flatten_from(1)?
        .mean(D::Minus1)?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?;
    Ok(mse
        .into_iter()
        .map(|m| -10.0 * (m as f64).max(1e-12).log10())
        .collect())
}
