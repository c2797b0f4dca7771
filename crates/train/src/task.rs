use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::Tensor;
use forja_data::Batch;

use crate::{Result, TrainError};

/// Named scalar results of a step or an evaluation, e.g. `loss`, `accuracy`.
pub type Metrics = BTreeMap<String, f64>;

/// The value of a one-element tensor as f64, for metrics.
pub fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
}

/// Where the trainer is when it calls [`Task::train_step`].
#[derive(Debug, Clone, Copy)]
pub struct StepCtx {
    pub epoch: usize,
    /// Global step, 0-based, counted over the whole run.
    pub step: usize,
    /// Multiply the optimizers' base learning rates by this (schedule and warm-up).
    pub lr_factor: f64,
    /// The run seed: derive any per-step randomness (noise, dropout masks) from `(seed, step)`.
    pub seed: u64,
}

/// The metric that picks the best checkpoint and drives early stopping.
#[derive(Debug, Clone, Copy)]
pub struct Monitor {
    pub metric: &'static str,
    pub maximize: bool,
}

impl Monitor {
    /// The lowest evaluation loss is best (likelihood models, autoencoders).
    pub const LOSS: Monitor = Monitor {
        metric: "loss",
        maximize: false,
    };

    pub fn improves(&self, new: f64, best: Option<f64>) -> bool {
        match best {
            None => new.is_finite(),
            Some(b) if self.maximize => new > b,
            Some(b) => new < b,
        }
    }
}

/// What a model must provide to be trained by the [`crate::Trainer`].
///
/// A task owns its networks and optimizers, so a classifier (one optimizer), a GAN (two,
/// alternating) or a flow all fit the same loop.
pub trait Task {
    /// One optimisation step on `batch`; the result must contain `loss`.
    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Metrics>;

    /// Metrics over a whole held-out set, in evaluation mode.
    fn evaluate(
        &mut self,
        batches: &mut dyn Iterator<Item = forja_data::Result<Batch>>,
    ) -> Result<Metrics>;

    fn monitor(&self) -> Monitor;

    /// The weights, with the names they have in a PyTorch `state_dict`.
    fn weights(&self) -> Vec<(String, Tensor)>;

    /// Weights plus optimizer state: everything a resumed run needs.
    fn state(&self) -> Result<Vec<(String, Tensor)>>;

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()>;

    fn num_params(&self) -> usize;

    /// Extra outputs (images, plots) written into the run directory at the end of a run.
    fn artifacts(&mut self, _run_dir: &Path) -> Result<()> {
        Ok(())
    }

    /// `n` samples of a generative model, shaped like the data's items (`[n, C, H, W]` for
    /// images), from the seeded stream `seed`.
    fn generate(&mut self, _n: usize, _seed: u64) -> Result<Tensor> {
        Err(TrainError::Config(
            "this model does not generate samples".into(),
        ))
    }

    /// Features of images `x: [N, C, H, W]`, `[N, F]`, for comparing image sets (FID): a
    /// classifier's penultimate activations, the input of its last stage.
    fn features(&mut self, _x: &Tensor) -> Result<Tensor> {
        Err(TrainError::Config(
            "this model gives no image features (classifiers do)".into(),
        ))
    }

    /// Sets how many importance samples `evaluate` draws for a likelihood bound (the VAE's
    /// IWAE bound); models without such a bound refuse.
    fn set_importance_samples(&mut self, _k: usize) -> Result<()> {
        Err(TrainError::Config(
            "this model estimates no likelihood by importance sampling (only VAEs do)".into(),
        ))
    }
}
