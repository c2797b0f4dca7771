//! Generative adversarial networks on vectors: the GAN of Goodfellow et al. (2014) with the
//! minimax or the non-saturating generator loss, and the Wasserstein GAN (Arjovsky et al. 2017)
//! with weight clipping or the gradient penalty of Gulrajani et al. (2017). The networks are
//! MLPs, or for images the convolutional pair of DCGAN ([`crate::dcgan`]).

use candle_core::{Module, Tensor, D};
use candle_nn::VarBuilder;
use forja_layers::{linear, Linear};

use crate::dcgan::{ConvCritic, ConvGenerator};
use crate::flows::softplus;
use crate::{GenerativeError, Result};

/// Slope of the critic's leaky ReLU for negative inputs.
pub const LEAKY_SLOPE: f64 = 0.2;

/// The adversarial game.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GanLoss {
    /// Generator minimises `log(1 - σ(D(G(z))))` (the original minimax game; saturates early).
    Minimax,
    /// Generator minimises `-log σ(D(G(z)))` (same fixed point, strong early gradients).
    NonSaturating,
    /// Critic maximises `E D(x) - E D(G(z))`; Lipschitz by clipping every critic weight to
    /// `[-clip, clip]`, or by the penalty `gp (||∇D(x̂)|| - 1)²` on interpolates `x̂`.
    Wasserstein { clip: Option<f64>, gp: Option<f64> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct GanConfig {
    pub data_dim: usize,
    pub latent: usize,
    /// Units of each hidden layer of the MLPs; the convolutional nets' width (channels of the
    /// critic's first convolution and the generator's last hidden one).
    pub hidden: usize,
    /// Hidden layers of each MLP.
    pub layers: usize,
    pub loss: GanLoss,
    /// `Some([C, H, W])`: DCGAN's convolutional networks for images of that shape, the
    /// critic with batch norm unless the loss has a gradient penalty.
    pub conv: Option<[usize; 3]>,
}

/// An MLP: hidden layers with an activation, a linear output.
struct Mlp {
    layers: Vec<Linear>,
    slope: f64,
}

impl Mlp {
    fn new(widths: &[usize], slope: f64, vb: VarBuilder) -> Result<Self> {
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(k, w)| linear(w[0], w[1], vb.pp(format!("net.{}", 2 * k))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { layers, slope })
    }

    fn act(&self, x: &Tensor) -> Result<Tensor> {
        Ok(if self.slope == 0.0 {
            x.relu()?
        } else {
            (x.relu()? - (x.neg()?.relu()? * self.slope)?)?
        })
    }

    /// The output and the pre-activations of the hidden layers.
    fn run(&self, x: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let (mut h, mut pre) = (x.clone(), Vec::new());
        for (k, layer) in self.layers.iter().enumerate() {
            let a = layer.forward(&h)?;
            if k + 1 < self.layers.len() {
                h = self.act(&a)?;
                pre.push(a);
            } else {
                h = a;
            }
        }
        Ok((h, pre))
    }
}

enum Generator {
    Mlp(Mlp),
    Conv(Box<ConvGenerator>),
}

enum Critic {
    Mlp(Mlp),
    Conv(ConvCritic),
}

/// Generator `G: z -> x` (ReLU MLP or DCGAN's) and discriminator / critic `D: x -> R`
/// (leaky-ReLU MLP or DCGAN's), on flat samples `[N, data_dim]`.
pub struct Gan {
    cfg: GanConfig,
    generator: Generator,
    critic: Critic,
}

/// Mean of a `[N]` or `[N, 1]` tensor as a scalar tensor.
fn mean(t: &Tensor) -> Result<Tensor> {
    Ok(t.mean_all()?)
}

impl Gan {
    pub fn new(cfg: &GanConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.data_dim == 0 || cfg.latent == 0 || cfg.hidden == 0 || cfg.layers == 0 {
            return Err(GenerativeError::Config {
                layer: "gan",
                msg: format!("needs positive sizes, got {cfg:?}"),
            });
        }
        let (generator, critic) = match cfg.conv {
            Some(shape) => {
                if shape.iter().product::<usize>() != cfg.data_dim {
                    return Err(GenerativeError::Config {
                        layer: "gan",
                        msg: format!("images {shape:?} do not have {} values", cfg.data_dim),
                    });
                }
                let norm = !matches!(cfg.loss, GanLoss::Wasserstein { gp: Some(_), .. });
                (
                    Generator::Conv(Box::new(ConvGenerator::new(
                        cfg.latent,
                        shape,
                        cfg.hidden,
                        vb.pp("generator"),
                    )?)),
                    Critic::Conv(ConvCritic::new(
                        shape,
                        cfg.hidden,
                        norm,
                        vb.pp("discriminator"),
                    )?),
                )
            }
            None => {
                let hidden = vec![cfg.hidden; cfg.layers];
                let g: Vec<usize> = [vec![cfg.latent], hidden.clone(), vec![cfg.data_dim]].concat();
                let d: Vec<usize> = [vec![cfg.data_dim], hidden, vec![1]].concat();
                (
                    Generator::Mlp(Mlp::new(&g, 0.0, vb.pp("generator"))?),
                    Critic::Mlp(Mlp::new(&d, LEAKY_SLOPE, vb.pp("discriminator"))?),
                )
            }
        };
        Ok(Self {
            cfg: cfg.clone(),
            generator,
            critic,
        })
    }

    pub fn config(&self) -> &GanConfig {
        &self.cfg
    }

    /// `G(z)`, `[N, data_dim]`; `train` puts batch norm (if any) in training mode.
    pub fn generate(&self, z: &Tensor, train: bool) -> Result<Tensor> {
        match &self.generator {
            Generator::Mlp(m) => Ok(m.run(z)?.0),
            Generator::Conv(g) => g.forward_t(z, train),
        }
    }

    /// `D(x)` per sample, `[N]`: a logit for the GAN, a score for the WGAN critic.
    pub fn critic(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let out = match &self.critic {
            Critic::Mlp(m) => m.run(x)?.0,
            Critic::Conv(c) => c.run(x, train)?.0,
        };
        Ok(out.squeeze(D::Minus1)?)
    }

    /// `∂D(x_i)/∂x_i` per sample, `[N, data_dim]`, written out layer by layer (the transposed
    /// weights times the activation slopes) so it is an ordinary differentiable expression of
    /// the weights: the gradient penalty's own gradient then needs only first-order autograd.
    pub fn critic_input_gradient(&self, x: &Tensor) -> Result<Tensor> {
        let mlp = match &self.critic {
            Critic::Mlp(m) => m,
            Critic::Conv(c) => return c.input_gradient(x),
        };
        let (_, pre) = mlp.run(x)?;
        let layers = &mlp.layers;
        let last = layers[layers.len() - 1].weight(); // [1, H]
        let mut g = last.broadcast_as((x.dim(0)?, last.dim(1)?))?.contiguous()?;
        for (layer, a) in layers[..layers.len() - 1].iter().zip(&pre).rev() {
            let slope = a
                .gt(0.0)?
                .to_dtype(a.dtype())?
                .affine(1.0 - LEAKY_SLOPE, LEAKY_SLOPE)?;
            g = (g * slope)?.matmul(layer.weight())?;
        }
        Ok(g)
    }

    /// The discriminator's (critic's) loss on real and generated samples (`fake` should be
    /// detached for the discriminator's step), each batch through the critic on its own.
    pub fn discriminator_loss(&self, real: &Tensor, fake: &Tensor, train: bool) -> Result<Tensor> {
        let (d_real, d_fake) = (self.critic(real, train)?, self.critic(fake, train)?);
        Ok(match self.cfg.loss {
            // -log σ(D(x)) - log(1 - σ(D(G z)))
            GanLoss::Minimax | GanLoss::NonSaturating => {
                (mean(&softplus(&d_real.neg()?)?)? + mean(&softplus(&d_fake)?)?)?
            }
            GanLoss::Wasserstein { .. } => (mean(&d_fake)? - mean(&d_real)?)?,
        })
    }

    /// The generator's loss on generated samples.
    pub fn generator_loss(&self, fake: &Tensor, train: bool) -> Result<Tensor> {
        let d = self.critic(fake, train)?;
        Ok(match self.cfg.loss {
            // log(1 - σ(d)) = -softplus(d)
            GanLoss::Minimax => mean(&softplus(&d)?)?.neg()?,
            GanLoss::NonSaturating => mean(&softplus(&d.neg()?)?)?,
            GanLoss::Wasserstein { .. } => mean(&d)?.neg()?,
        })
    }

    /// `mean (||∇D(x̂)|| - 1)²` at `x̂ = α real + (1 - α) fake`, `α: [N]` in [0, 1].
    pub fn gradient_penalty(&self, real: &Tensor, fake: &Tensor, alpha: &Tensor) -> Result<Tensor> {
        let a = alpha.unsqueeze(1)?;
        let mixed = (real.broadcast_mul(&a)? + fake.broadcast_mul(&a.affine(-1.0, 1.0)?)?)?;
        let norm = self
            .critic_input_gradient(&mixed)?
            .sqr()?
            .sum(D::Minus1)?
            .sqrt()?;
        mean(&(norm - 1.0)?.sqr()?)
    }

    /// Clips every critic weight and bias to `[-c, c]` (WGAN's crude Lipschitz constraint).
    pub fn clip_critic(&self, c: f64, vars: &[(String, candle_core::Var)]) -> Result<()> {
        for (name, var) in vars {
            if name.starts_with("discriminator.") && !forja_train::is_buffer(name) {
                var.set(&var.as_tensor().clamp(-c, c)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use forja_train::ParamStore;

    use super::*;

    fn gan(loss: GanLoss, seed: u64) -> (ParamStore, Gan) {
        let store = ParamStore::new(seed);
        let cfg = GanConfig {
            data_dim: 2,
            latent: 3,
            hidden: 5,
            layers: 2,
            loss,
            conv: None,
        };
        let gan = Gan::new(&cfg, store.var_builder(DType::F64, &Device::Cpu)).unwrap();
        (store, gan)
    }

    fn vals(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn points() -> (Tensor, Tensor) {
        let real = Tensor::new(&[[0.5f64, -1.0], [2.0, 0.3], [-0.7, 0.9]], &Device::Cpu).unwrap();
        let fake = Tensor::new(&[[1.5f64, 1.0], [-2.0, 0.1], [0.2, -0.4]], &Device::Cpu).unwrap();
        (real, fake)
    }

    #[test]
    fn losses_equal_their_hand_computed_values() {
        let (real, fake) = points();
        let ln_sig = |v: f64| -(1.0 + (-v).exp()).ln();
        let mean = |v: &[f64], f: &dyn Fn(f64) -> f64| {
            v.iter().map(|&x| f(x)).sum::<f64>() / v.len() as f64
        };
        for loss in [
            GanLoss::Minimax,
            GanLoss::NonSaturating,
            GanLoss::Wasserstein {
                clip: None,
                gp: None,
            },
        ] {
            let (_, g) = gan(loss, 1);
            let (dr, df) = (
                vals(&g.critic(&real, true).unwrap()),
                vals(&g.critic(&fake, true).unwrap()),
            );
            let (d_exp, g_exp) = match loss {
                GanLoss::Minimax => (
                    -mean(&dr, &ln_sig) - mean(&df, &|v| ln_sig(-v)),
                    mean(&df, &|v| ln_sig(-v)),
                ),
                GanLoss::NonSaturating => (
                    -mean(&dr, &ln_sig) - mean(&df, &|v| ln_sig(-v)),
                    -mean(&df, &ln_sig),
                ),
                GanLoss::Wasserstein { .. } => {
                    (mean(&df, &|v| v) - mean(&dr, &|v| v), -mean(&df, &|v| v))
                }
            };
            let d = vals(&g.discriminator_loss(&real, &fake, true).unwrap())[0];
            let gl = vals(&g.generator_loss(&fake, true).unwrap())[0];
            assert!((d - d_exp).abs() < 1e-12, "{loss:?}: D loss {d} vs {d_exp}");
            assert!(
                (gl - g_exp).abs() < 1e-12,
                "{loss:?}: G loss {gl} vs {g_exp}"
            );
        }
    }

    const GP: GanLoss = GanLoss::Wasserstein {
        clip: None,
        gp: Some(10.0),
    };

    /// DCGAN's networks of width 2 for 1x4x4 images, in f64.
    fn conv_gan(loss: GanLoss, seed: u64) -> (ParamStore, Gan) {
        let store = ParamStore::new(seed);
        let cfg = GanConfig {
            data_dim: 16,
            latent: 3,
            hidden: 2,
            layers: 1,
            loss,
            conv: Some([1, 4, 4]),
        };
        let gan = Gan::new(&cfg, store.var_builder(DType::F64, &Device::Cpu)).unwrap();
        (store, gan)
    }

    /// The MLP critic on 2-D points and DCGAN's on 1x4x4 images (width 2), each with three
    /// real and three generated samples.
    fn critics(seed: u64) -> Vec<(ParamStore, Gan, Tensor, Tensor)> {
        let (real, fake) = points();
        let (store, mlp) = gan(GP, seed);
        let (store_conv, conv) = conv_gan(GP, seed);
        let images = |offset: f64| {
            let v: Vec<f64> = (0..48).map(|k| (k as f64 * 0.37 + offset).sin()).collect();
            Tensor::from_vec(v, (3, 16), &Device::Cpu).unwrap()
        };
        vec![
            (store, mlp, real, fake),
            (store_conv, conv, images(0.0), images(1.3)),
        ]
    }

    #[test]
    fn critic_input_gradient_matches_finite_differences() {
        for (_, g, real, _) in critics(2) {
            let analytic = vals(&g.critic_input_gradient(&real).unwrap());
            let x = vals(&real);
            let dim = real.dim(1).unwrap();
            let eps = 1e-6;
            for i in 0..x.len() {
                let at = |delta: f64| {
                    let mut p = x.clone();
                    p[i] += delta;
                    let t = Tensor::from_vec(p, (3, dim), &Device::Cpu).unwrap();
                    vals(&g.critic(&t, false).unwrap())[i / dim]
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                assert!(
                    (analytic[i] - numeric).abs() < 1e-7,
                    "{dim}-D, {i}: {} vs {numeric}",
                    analytic[i]
                );
            }
        }
    }

    /// WGAN-GP needs the gradient of a gradient: the penalty's gradient with respect to every
    /// critic parameter equals its finite difference, for the MLP and the convolutional critic.
    #[test]
    fn gradient_penalty_gradient_matches_finite_differences() {
        let alpha = Tensor::new(&[0.3f64, 0.8, 0.55], &Device::Cpu).unwrap();
        for (store, g, real, fake) in critics(3) {
            let critic: Vec<_> = store
                .vars()
                .into_iter()
                .filter(|(n, _)| n.starts_with("discriminator"))
                .collect();
            // Biases move the activation slopes only: no gradient, and none numerically either.
            let check = forja_layers::check::GradCheck {
                atol: 1e-6,
                ..Default::default()
            };
            let penalty = || Ok(g.gradient_penalty(&real, &fake, &alpha)?);
            if let Err(e) = check.run_vars(&critic, penalty) {
                panic!("{}-D: {e}", real.dim(1).unwrap());
            }
        }
    }

    #[test]
    fn a_critic_with_batch_norm_has_no_per_sample_gradient() {
        let (store, g) = conv_gan(GanLoss::NonSaturating, 5);
        let x = Tensor::zeros((2, 16), DType::F64, &Device::Cpu).unwrap();
        let err = g.critic_input_gradient(&x).err().unwrap().to_string();
        assert!(err.contains("batch norm"), "{err}");
        let bad = GanConfig {
            conv: Some([1, 6, 6]),
            data_dim: 36,
            ..g.config().clone()
        };
        assert!(Gan::new(&bad, store.var_builder(DType::F64, &Device::Cpu)).is_err());
    }

    #[test]
    fn clipping_keeps_every_critic_weight_in_range_and_leaves_the_generator() {
        let (store, g) = gan(
            GanLoss::Wasserstein {
                clip: Some(0.01),
                gp: None,
            },
            4,
        );
        let before: Vec<Vec<f64>> = store
            .vars()
            .iter()
            .map(|(_, v)| vals(v.as_tensor()))
            .collect();
        g.clip_critic(0.01, &store.vars()).unwrap();
        for ((name, var), old) in store.vars().iter().zip(&before) {
            let now = vals(var.as_tensor());
            if name.starts_with("discriminator.") {
                assert!(now.iter().all(|v| v.abs() <= 0.01), "{name}: {now:?}");
                assert!(
                    old.iter().any(|v| v.abs() > 0.01),
                    "{name} was already inside"
                );
            } else {
                assert_eq!(&now, old, "{name} changed");
            }
        }
    }
}
