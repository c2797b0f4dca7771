//! Training a VAE with forja's generic trainer: loss = -ELBO, evaluated with the ELBO and the
//! importance-weighted bound.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use forja_data::Batch;
use forja_train::{
    scalar, Metrics, Monitor, ParamStore, Result, RunConfig, StepCtx, Task, TrainError, TrainState,
};

use forja_train::picture::image_grid;

use crate::noise::{standard_normal, uniform};
use crate::vae::{Likelihood, Vae, VaeConfig};

/// Importance samples of the IWAE bound reported at every evaluation during training (`cargo
/// xtask eval --iwae-k K` sets another).
pub const EVAL_IWAE_K: usize = 64;

/// How many test images the reconstruction picture shows.
const SHOWN: usize = 10;
/// Test codes in the latent scatter of a 2-D latent space.
const MAPPED: usize = 2000;
/// Side of the lattice of z decoded into `manifold.png`.
const LATTICE: usize = 20;

pub struct VaeTask {
    vae: Vae,
    train: TrainState,
    clip_norm: Option<f64>,
    /// Importance samples of the IWAE bound.
    iwae_k: usize,
    shape: [usize; 3],
    seed: u64,
    device: Device,
    /// The first test images of the last evaluation (as the model saw them).
    shown: Option<Tensor>,
    /// Posterior codes ([`Vae::code`]) and classes of test images, for a 2-D latent space.
    mapped: Vec<[f64; 2]>,
    labels: Vec<u32>,
}

impl VaeTask {
    /// A VAE over images of `item_shape` (`[C, H, W]`), configured by `make_cfg` for it.
    pub fn new(
        cfg: &RunConfig,
        item_shape: &[usize],
        device: &Device,
        make_cfg: impl FnOnce([usize; 3]) -> VaeConfig,
    ) -> Result<Self> {
        let shape = match *item_shape {
            [c, h, w] if c * h * w > 0 => [c, h, w],
            _ => {
                return Err(TrainError::Config(format!(
                    "the VAE models images [C, H, W], got items of shape {item_shape:?}"
                )))
            }
        };
        let params = ParamStore::new(cfg.seed);
        let vae = Vae::new(&make_cfg(shape), params.var_builder(DType::F32, device))?;
        Ok(Self {
            vae,
            train: TrainState::new(params, cfg.optimizer.clone())?,
            clip_norm: cfg.clip_norm,
            iwae_k: EVAL_IWAE_K,
            shape,
            seed: cfg.seed,
            device: device.clone(),
            shown: None,
            mapped: Vec::new(),
            labels: Vec::new(),
        })
    }

    pub fn vae(&self) -> &Vae {
        &self.vae
    }

    /// Flat inputs; for a Bernoulli decoder, binarized by a Bernoulli(x) draw from `path`
    /// (a fresh draw per training step is dynamic binarization).
    pub fn prepare(&self, images: &Tensor, path: &[u64]) -> Result<Tensor> {
        let x = images.flatten_from(1)?.to_dtype(DType::F32)?;
        if self.vae.config().likelihood != Likelihood::Bernoulli {
            return Ok(x);
        }
        let u = uniform(x.shape(), self.seed, path, x.device())?;
        Ok(u.lt(&x)?.to_dtype(DType::F32)?)
    }

    fn images(&self, flat: &Tensor) -> Result<Tensor> {
        let [c, h, w] = self.shape;
        Ok(flat.reshape((flat.dim(0)?, c, h, w))?)
    }
}

impl VaeTask {
    /// Kingma & Welling's figures for a 2-D latent space: `latent.png`, the posterior means
    /// of test images coloured by class, and `manifold.png`, the decoder means on a lattice
    /// z = (Φ⁻¹(u), Φ⁻¹(v)) for u, v evenly spaced in (0, 1), so equal areas of the prior.
    fn latent_figures(&self, run_dir: &Path) -> Result<()> {
        if !self.labels.is_empty() {
            let path = run_dir.join("latent.png");
            forja_train::plot::scatter(&path, "posterior means", &self.mapped, &self.labels)?;
        }
        let quantiles: Vec<f32> = (0..LATTICE)
            .map(|k| normal_quantile((k as f64 + 0.5) / LATTICE as f64) as f32)
            .collect();
        // Rows go down in z2, columns right in z1, as in a plot.
        let z: Vec<f32> = (0..LATTICE * LATTICE)
            .flat_map(|p| [quantiles[p % LATTICE], quantiles[LATTICE - 1 - p / LATTICE]])
            .collect();
        let z = Tensor::from_vec(z, (LATTICE * LATTICE, 2), &self.device)?;
        let images = self.images(&self.vae.mean(&z)?.detach())?;
        image_grid(&run_dir.join("manifold.png"), &images, LATTICE)
    }
}

/// Φ⁻¹(p), the standard normal quantile, by Acklam's rational approximation (relative error
/// below 1.2e-9) for p in (0, 1).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let poly = |c: &[f64], x: f64| c.iter().fold(0.0, |acc, k| acc * x + k);
    let tail = |q: f64| poly(&C, q) / (poly(&D, q) * q + 1.0);
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        poly(&A, r) * q / (poly(&B, r) * r + 1.0)
    }
}

fn mean(t: &Tensor) -> Result<f64> {
    scalar(&t.mean_all()?)
}

fn sum(t: &Tensor) -> Result<f64> {
    scalar(&t.sum_all()?)
}

impl Task for VaeTask {
    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Metrics> {
        let x = self.prepare(&batch.inputs, &[0, ctx.step as u64])?;
        let latent = self.vae.config().latent;
        let eps = standard_normal(
            &[x.dim(0)?, latent],
            self.seed,
            &[1, ctx.step as u64],
            DType::F32,
            &self.device,
        )?;
        let bound = self.vae.elbo(&x, &eps)?;
        let loss = bound.elbo.mean_all()?.neg()?;
        self.train
            .optimizer
            .backward_step(&loss, ctx.lr_factor, self.clip_norm)?;
        Ok(Metrics::from([
            ("loss".into(), -mean(&bound.elbo)?),
            ("kl".into(), mean(&bound.kl)?),
            ("reconstruction".into(), -mean(&bound.reconstruction)?),
        ]))
    }

    fn evaluate(
        &mut self,
        batches: &mut dyn Iterator<Item = forja_data::Result<Batch>>,
    ) -> Result<Metrics> {
        let (mut neg_elbo, mut kl, mut nll, mut n) = (0.0, 0.0, 0.0, 0usize);
        self.shown = None;
        self.mapped.clear();
        self.labels.clear();
        for (b, batch) in batches.enumerate() {
            let batch = batch?;
            // Fixed binarization and noise, so evaluations of a run compare.
            let x = self.prepare(&batch.inputs, &[2, b as u64])?;
            let eps = standard_normal(
                &[x.dim(0)?, self.vae.config().latent],
                self.seed,
                &[3, b as u64],
                DType::F32,
                &self.device,
            )?;
            let bound = self.vae.elbo(&x, &eps)?;
            neg_elbo -= sum(&bound.elbo.detach())?;
            kl += sum(&bound.kl.detach())?;
            nll -= sum(&self.vae.iwae(&x, self.iwae_k, self.seed ^ b as u64)?)?;
            n += batch.len();
            if self.shown.is_none() {
                self.shown = Some(x.narrow(0, 0, SHOWN.min(x.dim(0)?))?);
            }
            let room = MAPPED.saturating_sub(self.labels.len()).min(batch.len());
            if self.vae.config().latent == 2 && batch.targets.rank() == 1 && room > 0 {
                let mu = self.vae.code(&x.narrow(0, 0, room)?)?;
                let mu: Vec<f32> = mu.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                self.mapped
                    .extend(mu.chunks(2).map(|m| [m[0] as f64, m[1] as f64]));
                self.labels
                    .extend(batch.targets.narrow(0, 0, room)?.to_vec1::<u32>()?);
            }
        }
        let n = n.max(1) as f64;
        Ok(Metrics::from([
            ("loss".into(), neg_elbo / n),
            ("kl".into(), kl / n),
            (format!("nll_iwae{}", self.iwae_k), nll / n),
        ]))
    }

    fn monitor(&self) -> Monitor {
        Monitor::LOSS
    }

    forja_train::delegate_train_state!(train);

    /// Decoder means (grey values, not binarized draws) at z ~ N(0, I).
    fn generate(&mut self, n: usize, seed: u64) -> Result<Tensor> {
        let latent = self.vae.config().latent;
        let z = standard_normal(
            &[n, latent],
            self.seed,
            &[5, seed],
            DType::F32,
            &self.device,
        )?;
        self.images(&self.vae.mean(&z)?.detach())
    }

    fn set_importance_samples(&mut self, k: usize) -> Result<()> {
        if k == 0 {
            return Err(TrainError::Config(
                "the IWAE bound needs at least one sample".into(),
            ));
        }
        self.iwae_k = k;
        Ok(())
    }

    /// `samples.png`: decoder means of 60 draws z ~ N(0, I); `reconstructions.png`: test
    /// images (top row) and the decoder means at their posterior means (bottom row).
    fn artifacts(&mut self, run_dir: &Path) -> Result<()> {
        let latent = self.vae.config().latent;
        let z = standard_normal(&[60, latent], self.seed, &[4], DType::F32, &self.device)?;
        let samples = self.images(&self.vae.mean(&z)?.detach())?;
        image_grid(&run_dir.join("samples.png"), &samples, 10)?;
        if let Some(x) = &self.shown {
            let recon = self.vae.mean(&self.vae.code(x)?)?.detach();
            let both = Tensor::cat(&[self.images(x)?, self.images(&recon)?], 0)?;
            image_grid(&run_dir.join("reconstructions.png"), &both, x.dim(0)?)?;
        }
        if latent == 2 {
            self.latent_figures(run_dir)?;
        }
        Ok(())
    }
}
