//! Training a VAE with forja's generic trainer: loss = -ELBO, evaluated with the ELBO and the
//! importance-weighted bound.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use forja_data::Batch;
use forja_train::{
    Metrics, Monitor, ParamStore, Result, RunConfig, StepCtx, Task, TrainError, TrainState,
};

use forja_train::picture::image_grid;

use crate::noise::{standard_normal, uniform};
use crate::vae::{Likelihood, Vae, VaeConfig};

/// Importance samples of the IWAE bound reported at every evaluation.
pub const EVAL_IWAE_K: usize = 64;

/// How many test images the reconstruction picture shows.
const SHOWN: usize = 10;

pub struct VaeTask {
    vae: Vae,
    train: TrainState,
    clip_norm: Option<f64>,
    shape: [usize; 3],
    seed: u64,
    device: Device,
    /// The first test images of the last evaluation (as the model saw them).
    shown: Option<Tensor>,
}

impl VaeTask {
    /// A VAE over images of `item_shape` (`[C, H, W]`); `make_cfg` gets the pixel count.
    pub fn new(
        cfg: &RunConfig,
        item_shape: &[usize],
        device: &Device,
        make_cfg: impl FnOnce(usize) -> VaeConfig,
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
        let vae = Vae::new(
            &make_cfg(shape.iter().product()),
            params.var_builder(DType::F32, device),
        )?;
        Ok(Self {
            vae,
            train: TrainState::new(params, cfg.optimizer.clone())?,
            clip_norm: cfg.clip_norm,
            shape,
            seed: cfg.seed,
            device: device.clone(),
            shown: None,
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

fn mean(t: &Tensor) -> Result<f64> {
    Ok(t.mean_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

fn sum(t: &Tensor) -> Result<f64> {
    Ok(t.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
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
            nll -= sum(&self.vae.iwae(&x, EVAL_IWAE_K, self.seed ^ b as u64)?)?;
            n += batch.len();
            if self.shown.is_none() {
                self.shown = Some(x.narrow(0, 0, SHOWN.min(x.dim(0)?))?);
            }
        }
        let n = n.max(1) as f64;
        Ok(Metrics::from([
            ("loss".into(), neg_elbo / n),
            ("kl".into(), kl / n),
            (format!("nll_iwae{EVAL_IWAE_K}"), nll / n),
        ]))
    }

    fn monitor(&self) -> Monitor {
        Monitor::LOSS
    }

    forja_train::delegate_train_state!(train);

    /// `samples.png`: decoder means of 60 draws z ~ N(0, I); `reconstructions.png`: test
    /// images (top row) and the decoder means at their posterior means (bottom row).
    fn artifacts(&mut self, run_dir: &Path) -> Result<()> {
        let latent = self.vae.config().latent;
        let z = standard_normal(&[60, latent], self.seed, &[4], DType::F32, &self.device)?;
        let samples = self.images(&self.vae.mean(&z)?.detach())?;
        image_grid(&run_dir.join("samples.png"), &samples, 10)?;
        if let Some(x) = &self.shown {
            let (mu, _) = self.vae.encode(x)?;
            let recon = self.vae.mean(&mu)?.detach();
            let both = Tensor::cat(&[self.images(x)?, self.images(&recon)?], 0)?;
            image_grid(&run_dir.join("reconstructions.png"), &both, x.dim(0)?)?;
        }
        Ok(())
    }
}
