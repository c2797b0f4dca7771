//! The variational autoencoder (Kingma & Welling 2014): an encoder q(z|x) = N(μ, σ²) and a
//! decoder p(x|z), trained by maximising the evidence lower bound
//! ELBO = E_q[log p(x|z)] - β KL(q(z|x) || N(0, I)) with the reparametrization z = μ + σ ε;
//! optionally with planar flows on the posterior (Rezende & Mohamed 2015), whose parameters the
//! encoder outputs per image.

use std::f64::consts::TAU;

use candle_core::{Module, Tensor, D};
use candle_nn::{seq, Sequential, VarBuilder};
use forja_layers::{
    bce_with_logits, linear, relu, Conv2d, ConvConfig, ConvTranspose2d, ConvTransposeConfig, Linear,
};

use crate::noise::standard_normal;
use crate::{GenerativeError, Result};

/// The decoder's observation model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Likelihood {
    /// Binary pixels: the decoder gives Bernoulli logits (loss: binary cross-entropy).
    Bernoulli,
    /// Real values: the decoder gives the mean of N(x; mean, σ² I) with this fixed σ.
    Gaussian { sigma: f64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct VaeConfig {
    /// Number of input features (pixels).
    pub input: usize,
    pub hidden: usize,
    pub latent: usize,
    /// Weight of the KL term (β-VAE; 1 is the ELBO).
    pub beta: f64,
    pub likelihood: Likelihood,
    /// `Some([C, H, W])`: convolutional encoder and decoder for images of that shape.
    pub conv: Option<[usize; 3]>,
    /// Planar flow steps applied to the Gaussian posterior sample (0: q(z|x) is Gaussian).
    pub flows: usize,
}

impl VaeConfig {
    /// The MLP of Kingma & Welling (and of the reference workload M3): 400 hidden units.
    pub fn mlp(input: usize, latent: usize) -> Self {
        Self {
            input,
            hidden: 400,
            latent,
            beta: 1.0,
            likelihood: Likelihood::Bernoulli,
            conv: None,
            flows: 0,
        }
    }

    /// The convolutional VAE: two 4x4 stride-2 convolutions (32, 64 channels) and a 256-unit
    /// layer to the code; the decoder mirrors it with transposed convolutions. Sides must be
    /// multiples of 4.
    pub fn conv(shape: [usize; 3], latent: usize) -> Self {
        Self {
            hidden: 256,
            conv: Some(shape),
            ..Self::mlp(shape.iter().product(), latent)
        }
    }
}

/// MLP: `x -> 400 ReLU -> (μ, log σ²)`, `z -> 400 ReLU -> x` (logits or means);
/// convolutional: see [`VaeConfig::conv`].
pub struct Vae {
    cfg: VaeConfig,
    /// Flat inputs to the last hidden layer.
    enc: Sequential,
    enc_mu: Linear,
    enc_logvar: Linear,
    /// `(u, w, b)` of every planar step, `flows * (2 latent + 1)` values per image.
    enc_flow: Option<Linear>,
    /// Codes to flat logits or means.
    dec: Sequential,
}

/// Per-sample terms of the bound, each `[N]`.
pub struct Elbo {
    /// `log p(x|z)` at one reparametrized sample.
    pub reconstruction: Tensor,
    /// `KL(q(z|x) || N(0, I))`: in closed form for a Gaussian posterior; with flows, its
    /// one-sample estimate `log q(z|x) - log p(z)`.
    pub kl: Tensor,
    /// `reconstruction - β kl`.
    pub elbo: Tensor,
}

impl Vae {
    pub fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.input == 0
            || cfg.hidden == 0
            || cfg.latent == 0
            || cfg.beta.is_nan()
            || cfg.beta < 0.0
        {
            return Err(GenerativeError::Config {
                layer: "vae",
                msg: format!("needs positive sizes and beta >= 0, got {cfg:?}"),
            });
        }
        let (i, h, l) = (cfg.input, cfg.hidden, cfg.latent);
        let (enc, dec) = match cfg.conv {
            None => (
                seq().add(linear(i, h, vb.pp("encoder.fc"))?).add_fn(relu),
                seq()
                    .add(linear(l, h, vb.pp("decoder.fc"))?)
                    .add_fn(relu)
                    .add(linear(h, i, vb.pp("decoder.out"))?),
            ),
            Some([c, ih, iw]) => {
                if c * ih * iw != i || ih % 4 != 0 || iw % 4 != 0 {
                    return Err(GenerativeError::Config {
                        layer: "vae",
                        msg: format!("the convolutional VAE needs images with sides divisible by 4 and {i} pixels, got {:?}", cfg.conv),
                    });
                }
                let down = ConvConfig::default().stride(2).padding(1);
                let up = ConvTransposeConfig::default().stride(2).padding(1);
                let (fh, fw) = (ih / 4, iw / 4);
                let inner = 64 * fh * fw;
                (
                    seq()
                        .add_fn(move |x| x.reshape((x.dim(0)?, c, ih, iw)))
                        .add(Conv2d::new(c, 32, 4, down, vb.pp("encoder.conv1"))?)
                        .add_fn(relu)
                        .add(Conv2d::new(32, 64, 4, down, vb.pp("encoder.conv2"))?)
                        .add_fn(|x| relu(x)?.flatten_from(1))
                        .add(linear(inner, h, vb.pp("encoder.fc"))?)
                        .add_fn(relu),
                    seq()
                        .add(linear(l, h, vb.pp("decoder.fc"))?)
                        .add_fn(relu)
                        .add(linear(h, inner, vb.pp("decoder.fc2"))?)
                        .add_fn(move |x| relu(x)?.reshape((x.dim(0)?, 64, fh, fw)))
                        .add(ConvTranspose2d::new(
                            64,
                            32,
                            4,
                            up,
                            vb.pp("decoder.deconv1"),
                        )?)
                        .add_fn(relu)
                        .add(ConvTranspose2d::new(
                            32,
                            c,
                            4,
                            up,
                            vb.pp("decoder.deconv2"),
                        )?)
                        .add_fn(|x| x.flatten_from(1)),
                )
            }
        };
        Ok(Self {
            cfg: cfg.clone(),
            enc,
            enc_mu: linear(h, l, vb.pp("encoder.mu"))?,
            enc_logvar: linear(h, l, vb.pp("encoder.logvar"))?,
            enc_flow: match cfg.flows {
                0 => None,
                k => Some(linear(h, k * (2 * l + 1), vb.pp("encoder.flow"))?),
            },
            dec,
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// `(μ, log σ²)` of the Gaussian q₀(z|x), each `[N, latent]`, for `x: [N, input]`.
    pub fn encode(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let p = self.posterior(x)?;
        Ok((p.mu, p.logvar))
    }

    /// The posterior q(z|x) of each image.
    pub fn posterior(&self, x: &Tensor) -> Result<Posterior> {
        let h = self.enc.forward(x)?;
        Ok(Posterior {
            mu: self.enc_mu.forward(&h)?,
            logvar: self.enc_logvar.forward(&h)?,
            flow: self.enc_flow.as_ref().map(|f| f.forward(&h)).transpose()?,
        })
    }

    /// The code of each image used for reconstructions and maps: μ pushed through the flows.
    pub fn code(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.posterior(x)?;
        Ok(p.sample(&p.mu.zeros_like()?)?.0)
    }

    /// The decoder's output for `z`: Bernoulli logits or Gaussian means.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        Ok(self.dec.forward(z)?)
    }

    /// The decoder's mean image: `sigmoid(logits)` or the Gaussian mean.
    pub fn mean(&self, z: &Tensor) -> Result<Tensor> {
        let out = self.decode(z)?;
        Ok(match self.cfg.likelihood {
            Likelihood::Bernoulli => candle_nn::ops::sigmoid(&out)?,
            Likelihood::Gaussian { .. } => out,
        })
    }

    /// `log p(x|z)` per sample from the decoder's output.
    pub fn log_likelihood(&self, x: &Tensor, out: &Tensor) -> Result<Tensor> {
        Ok(match self.cfg.likelihood {
            // x log σ(o) + (1 - x) log(1 - σ(o)) = x o - softplus(o)
            Likelihood::Bernoulli => bce_with_logits(out, x)?.neg()?,
            Likelihood::Gaussian { sigma } => {
                let c = x.dim(D::Minus1)? as f64 * (sigma.ln() + 0.5 * TAU.ln());
                ((((x - out)? / sigma)?.sqr()?.sum(D::Minus1)? * -0.5)? - c)?
            }
        })
    }

    /// The bound at one sample `z = μ + σ ε` per item, with the given standard normal noise.
    pub fn elbo(&self, x: &Tensor, eps: &Tensor) -> Result<Elbo> {
        let p = self.posterior(x)?;
        let (z, log_q) = p.sample(eps)?;
        let reconstruction = self.log_likelihood(x, &self.decode(&z)?)?;
        let kl = match p.flow {
            None => kl_standard_normal(&p.mu, &p.logvar)?,
            Some(_) => (log_q - log_normal(&z, None)?)?,
        };
        let elbo = (&reconstruction - (&kl * self.cfg.beta)?)?;
        Ok(Elbo {
            reconstruction,
            kl,
            elbo,
        })
    }

    /// The importance-weighted bound (Burda et al. 2016) per item, with `k` samples of q:
    /// `log (1/k) Σ p(x, z_i) / q(z_i|x)`. It is `<= log p(x)` and grows with `k`; `k = 1`
    /// is the ELBO (β = 1). Samples are drawn in chunks so `k` can be large.
    pub fn iwae(&self, x: &Tensor, k: usize, seed: u64) -> Result<Tensor> {
        let (n, l) = (x.dim(0)?, self.cfg.latent);
        let p = self.posterior(x)?.detach();
        let mut terms = Vec::new();
        let chunk = (4096 / n.max(1)).clamp(1, k.max(1));
        let mut done = 0;
        while done < k {
            let m = chunk.min(k - done);
            let eps = standard_normal(&[m, n, l], seed, &[done as u64], x.dtype(), x.device())?;
            let (z, log_qz) = p.sample(&eps)?;
            let out = self.decode(&z.reshape((m * n, l))?)?;
            let xs = x.unsqueeze(0)?.broadcast_as((m, n, x.dim(1)?))?;
            let log_px = self
                .log_likelihood(&xs.reshape((m * n, x.dim(1)?))?, &out)?
                .reshape((m, n))?;
            let log_pz = log_normal(&z, None)?;
            terms.push(((log_px + log_pz)? - log_qz)?.detach());
            done += m;
        }
        let w = Tensor::cat(&terms, 0)?; // [k, n]
        let max = w.max_keepdim(0)?;
        let lse = (w.broadcast_sub(&max)?.exp()?.sum_keepdim(0)?.log()? + max)?;
        Ok((lse.squeeze(0)? - (k as f64).ln())?)
    }
}

/// q(z|x) for a batch: a Gaussian `N(μ, σ²)`, followed by planar flows whose parameters
/// (`[N, flows * (2 latent + 1)]`: `u`, `w`, `b` of each step) the encoder gave.
pub struct Posterior {
    pub mu: Tensor,
    pub logvar: Tensor,
    pub flow: Option<Tensor>,
}

impl Posterior {
    fn detach(self) -> Self {
        Self {
            mu: self.mu.detach(),
            logvar: self.logvar.detach(),
            flow: self.flow.map(|f| f.detach()),
        }
    }

    /// A sample `z` for standard normal noise `ε: [.., N, latent]` and its `log q(z|x)`:
    /// `log N(z₀; μ, σ²) - Σ_k log|det ∂z_k/∂z_{k-1}|`.
    pub fn sample(&self, eps: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut z = reparameterize(&self.mu, &self.logvar, eps)?;
        let mut log_q = log_normal(eps, Some(&self.logvar))?;
        if let Some(flow) = &self.flow {
            let l = self.mu.dim(1)?;
            for k in 0..flow.dim(1)? / (2 * l + 1) {
                let at = k * (2 * l + 1);
                let (u, w) = (flow.narrow(1, at, l)?, flow.narrow(1, at + l, l)?);
                let b = flow.narrow(1, at + 2 * l, 1)?.squeeze(1)?;
                let (next, logdet) = crate::flows::planar_step(&z, &u, &w, &b)?;
                z = next;
                log_q = (log_q - logdet)?;
            }
        }
        Ok((z, log_q))
    }
}

/// `z = μ + exp(½ log σ²) ⊙ ε`: the noise carries the randomness, so gradients reach μ and σ.
pub fn reparameterize(mu: &Tensor, logvar: &Tensor, eps: &Tensor) -> Result<Tensor> {
    Ok(mu.broadcast_add(&(logvar * 0.5)?.exp()?.broadcast_mul(eps)?)?)
}

/// `KL(N(μ, σ²) || N(0, I)) = ½ Σ (μ² + σ² - 1 - log σ²)` per row.
pub fn kl_standard_normal(mu: &Tensor, logvar: &Tensor) -> Result<Tensor> {
    let terms = ((mu.sqr()? + logvar.exp()?)? - logvar)?;
    Ok(((terms - 1.0)?.sum(D::Minus1)? * 0.5)?)
}

/// `log N(z; μ, σ²)` summed over the last axis, given the standardised `ε = (z - μ) / σ` and
/// `log σ²` (or, with `None`, `log N(z; 0, I)` of `z` itself).
fn log_normal(eps: &Tensor, logvar: Option<&Tensor>) -> Result<Tensor> {
    let l = eps.dim(D::Minus1)? as f64;
    let quad = (eps.sqr()?.sum(D::Minus1)? * -0.5)?;
    let base = (quad - 0.5 * l * TAU.ln())?;
    Ok(match logvar {
        None => base,
        // Jacobian of z = μ + σ ε: the density of z is that of ε divided by Π σ.
        Some(lv) => base.broadcast_sub(&(lv.sum(D::Minus1)? * 0.5)?)?,
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;

    fn t(v: &[f64], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn vals(x: &Tensor) -> Vec<f64> {
        x.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn closed_form_kl_equals_a_monte_carlo_estimate() {
        let (mu, logvar) = (t(&[0.7, -1.2, 0.1], &[1, 3]), t(&[0.5, -1.0, 1.3], &[1, 3]));
        let exact = vals(&kl_standard_normal(&mu, &logvar).unwrap())[0];
        let n = 200_000;
        let eps = standard_normal(&[n, 3], 1, &[], DType::F64, &Device::Cpu).unwrap();
        let z = reparameterize(&mu, &logvar, &eps).unwrap();
        // KL = E_q[log q(z) - log p(z)]
        let log_q = log_normal(&eps, Some(&logvar)).unwrap();
        let log_p = log_normal(&z, None).unwrap();
        let estimate = vals(&(log_q - log_p).unwrap().mean_all().unwrap())[0];
        assert!((estimate - exact).abs() < 0.02, "{estimate} vs {exact}");
    }

    /// Guards the classic σ = 0.5 exp(log σ²) mistake: the samples' variance is exp(log σ²).
    #[test]
    fn reparametrized_samples_have_the_encoders_mean_and_variance() {
        let mu = t(&[0.5, -1.0], &[1, 2]);
        let logvar = t(&[4f64.ln(), 0.25f64.ln()], &[1, 2]);
        let eps = standard_normal(&[100_000, 2], 2, &[], DType::F64, &Device::Cpu).unwrap();
        let z = reparameterize(&mu, &logvar, &eps).unwrap();
        let mean = vals(&z.mean(0).unwrap());
        let var = vals(
            &z.broadcast_sub(&z.mean_keepdim(0).unwrap())
                .unwrap()
                .sqr()
                .unwrap()
                .mean(0)
                .unwrap(),
        );
        assert!(
            (mean[0] - 0.5).abs() < 0.03 && (mean[1] + 1.0).abs() < 0.01,
            "{mean:?}"
        );
        assert!(
            (var[0] / 4.0 - 1.0).abs() < 0.03 && (var[1] / 0.25 - 1.0).abs() < 0.03,
            "{var:?}"
        );
    }

    /// z = T(ε) maps standard normal noise through the Gaussian and the planar flows, so
    /// log q(z|x) must equal log N(ε; 0, I) - log|det ∂T/∂ε|, here with the Jacobian taken by
    /// central differences.
    #[test]
    fn flow_posterior_density_matches_a_brute_force_jacobian() {
        let (n, l, steps) = (3, 3, 2);
        let mut rng = 7u64;
        let mut draw = |len: usize| -> Vec<f64> {
            (0..len)
                .map(|_| {
                    rng = rng
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (rng >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
                })
                .collect()
        };
        let width = steps * (2 * l + 1);
        let p = Posterior {
            mu: t(&draw(n * l), &[n, l]),
            logvar: t(&draw(n * l), &[n, l]),
            flow: Some((t(&draw(n * width), &[n, width]) * 2.0).unwrap()),
        };
        let eps = draw(n * l);
        let (z, log_q) = p.sample(&t(&eps, &[n, l])).unwrap();
        assert_ne!(
            vals(&z),
            vals(&reparameterize(&p.mu, &p.logvar, &t(&eps, &[n, l])).unwrap())
        );
        let log_q = vals(&log_q);
        let h = 1e-6;
        for i in 0..n {
            let at = |j: usize, d: f64| {
                let mut e = eps.clone();
                e[i * l + j] += d;
                vals(&p.sample(&t(&e, &[n, l])).unwrap().0)[i * l..(i + 1) * l].to_vec()
            };
            // Columns of the Jacobian, then its determinant by cofactors (3x3).
            let c: Vec<Vec<f64>> = (0..l)
                .map(|j| {
                    let (a, b) = (at(j, h), at(j, -h));
                    a.iter().zip(&b).map(|(a, b)| (a - b) / (2.0 * h)).collect()
                })
                .collect();
            let det = c[0][0] * (c[1][1] * c[2][2] - c[2][1] * c[1][2])
                - c[1][0] * (c[0][1] * c[2][2] - c[2][1] * c[0][2])
                + c[2][0] * (c[0][1] * c[1][2] - c[1][1] * c[0][2]);
            let e = &eps[i * l..(i + 1) * l];
            let log_n = -0.5 * e.iter().map(|v| v * v).sum::<f64>() - 0.5 * l as f64 * TAU.ln();
            let brute = log_n - det.abs().ln();
            assert!(
                (log_q[i] - brute).abs() < 1e-6,
                "{i}: {} vs {brute}",
                log_q[i]
            );
        }
    }

    fn small_vae(likelihood: Likelihood) -> (forja_train::ParamStore, Vae) {
        let store = forja_train::ParamStore::new(3);
        let cfg = VaeConfig {
            input: 16,
            hidden: 12,
            latent: 2,
            beta: 1.0,
            likelihood,
            conv: None,
            flows: 0,
        };
        let vae = Vae::new(&cfg, store.var_builder(DType::F64, &Device::Cpu)).unwrap();
        (store, vae)
    }

    #[test]
    fn iwae_bound_is_above_the_elbo_and_grows_with_k() {
        let (_, vae) = small_vae(Likelihood::Bernoulli);
        let x: Vec<f64> = (0..40 * 16)
            .map(|k| f64::from(u8::from((k * 7 + k / 16) % 3 == 0)))
            .collect();
        let x = t(&x, &[40, 16]);
        let mean = |v: Tensor| vals(&v.mean_all().unwrap())[0];
        let elbo: f64 = (0..50)
            .map(|s| {
                let eps = standard_normal(&[40, 2], 9, &[s], DType::F64, &Device::Cpu).unwrap();
                mean(vae.elbo(&x, &eps).unwrap().elbo)
            })
            .sum::<f64>()
            / 50.0;
        // One sample per item is noisy: average the k = 1 bound over draws too.
        let iwae1: f64 = (0..50)
            .map(|s| mean(vae.iwae(&x, 1, 100 + s).unwrap()))
            .sum::<f64>()
            / 50.0;
        assert!(
            (iwae1 - elbo).abs() < 0.03 * elbo.abs(),
            "k = 1: {iwae1} vs ELBO {elbo}"
        );
        // Each bound averaged over 5 draws; the growth flattens as it nears log p(x).
        let bounds: Vec<f64> = std::iter::once(iwae1)
            .chain([10, 100, 1000].iter().map(|&k| {
                (0..5)
                    .map(|s| mean(vae.iwae(&x, k, 5 + s).unwrap()))
                    .sum::<f64>()
                    / 5.0
            }))
            .collect();
        for w in bounds.windows(2) {
            assert!(
                w[1] > w[0] - 0.02,
                "IWAE bounds must grow with k: {bounds:?}"
            );
        }
        assert!(bounds[3] > elbo + 0.1, "{bounds:?} vs ELBO {elbo}");
    }

    #[test]
    fn likelihoods_match_their_formulas() {
        let (_, vae) = small_vae(Likelihood::Bernoulli);
        let x = t(&[1.0, 0.0], &[1, 2]);
        let logits = t(&[0.3, -2.0], &[1, 2]);
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let expected = sig(0.3).ln() + (1.0 - sig(-2.0)).ln();
        let got = vals(&vae.log_likelihood(&x, &logits).unwrap())[0];
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
        let (_, vae) = small_vae(Likelihood::Gaussian { sigma: 0.5 });
        let mean = t(&[0.5, 0.5], &[1, 2]);
        let got = vals(&vae.log_likelihood(&x, &mean).unwrap())[0];
        let expected = 2.0 * (-0.5 - 0.5f64.ln() - 0.5 * TAU.ln());
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
    }

    #[test]
    fn bad_configurations_are_refused() {
        let store = forja_train::ParamStore::new(0);
        let mut cfg = VaeConfig::mlp(4, 0);
        assert!(Vae::new(&cfg, store.var_builder(DType::F32, &Device::Cpu)).is_err());
        cfg.latent = 2;
        cfg.beta = f64::NAN;
        let err = Vae::new(&cfg, store.var_builder(DType::F32, &Device::Cpu))
            .err()
            .unwrap();
        assert!(err.to_string().contains("beta"), "{err}");
    }
}
