//! Training a flow by maximum likelihood with forja's generic trainer.

use std::f64::consts::LN_2;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use forja_data::Batch;
use forja_train::{
    Metrics, Monitor, ParamStore, Result, RunConfig, StepCtx, Task, TrainError, TrainState,
};

use crate::flows::{Flow, FlowDensity};
use crate::noise::uniform;
use crate::picture;

/// The logit transform's margin for images (RealNVP's α = 0.05).
pub const LOGIT_ALPHA: f64 = 0.05;

/// What the flow models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// Points in `R^D`, modelled as they are; likelihoods in nats.
    Points { dim: usize },
    /// 8-bit images stored as `k / 255`: dequantized to `(k + u) / 256`, `u ~ U[0, 1)`, and
    /// mapped to the real line by `logit(α + (1 - 2α) y)`. Likelihoods are those of the
    /// discrete data, in nats per image and bits per dimension. `flat` flows see `[N, C H W]`.
    Images { shape: [usize; 3], flat: bool },
}

impl DataKind {
    /// The kind for data items of `item_shape`; `flat` when the flow takes vectors.
    pub fn of(item_shape: &[usize], flat: bool) -> Result<Self> {
        match *item_shape {
            [dim] if dim > 0 => Ok(Self::Points { dim }),
            [c, h, w] if c * h * w > 0 => Ok(Self::Images {
                shape: [c, h, w],
                flat,
            }),
            _ => Err(TrainError::Config(format!(
                "flows model points [D] or images [C, H, W], got items of shape {item_shape:?}"
            ))),
        }
    }

    /// Number of scalar dimensions of one item.
    pub fn dim(&self) -> usize {
        match self {
            Self::Points { dim } => *dim,
            Self::Images { shape, .. } => shape.iter().product(),
        }
    }
}

/// A normalizing flow trained by maximum likelihood: the loss is the mean negative
/// log-likelihood per item.
pub struct FlowTask {
    density: FlowDensity,
    train: TrainState,
    clip_norm: Option<f64>,
    kind: DataKind,
    seed: u64,
    device: Device,
    /// Up to [`SHOWN_POINTS`] test points of the last evaluation, for the density picture.
    shown: Vec<f32>,
}

/// How many test points the density picture shows.
const SHOWN_POINTS: usize = 5000;

impl FlowTask {
    /// Builds the flow with `build` from seeded parameters and an Adam (or configured)
    /// optimizer over them.
    pub fn new(
        cfg: &RunConfig,
        kind: DataKind,
        device: &Device,
        build: impl FnOnce(candle_nn::VarBuilder) -> crate::Result<Box<dyn Flow>>,
    ) -> Result<Self> {
        let params = ParamStore::new(cfg.seed);
        let flow = build(params.var_builder(DType::F32, device))?;
        Ok(Self {
            density: FlowDensity::new(flow, kind.dim()),
            train: TrainState::new(params, cfg.optimizer.clone())?,
            clip_norm: cfg.clip_norm,
            kind,
            seed: cfg.seed,
            device: device.clone(),
            shown: Vec::new(),
        })
    }

    pub fn density(&self) -> &FlowDensity {
        &self.density
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn kind(&self) -> DataKind {
        self.kind
    }

    /// The test points kept by the last evaluation (flat, `dim` per point).
    pub fn shown_points(&self) -> &[f32] {
        &self.shown
    }

    /// `log p(x)` of the data as stored, per item: for images, of the dequantized 8-bit values
    /// (so `-log p` is an upper bound on the discrete data's NLL), `noise_seed` drawing `u`.
    pub fn log_prob(&self, x: &Tensor, noise_seed: &[u64]) -> Result<Tensor> {
        match self.kind {
            DataKind::Points { .. } => Ok(self.density.log_prob(x)?),
            DataKind::Images { flat, .. } => {
                let (w, logdet) = to_logit_space(x, self.seed, noise_seed)?;
                let w = if flat { w.flatten_from(1)? } else { w };
                let d = self.kind.dim() as f64;
                // The density of y = (k + u) / 256 is that of k + u scaled by 256 per dimension.
                Ok(((self.density.log_prob(&w)? + logdet)? - d * 256f64.ln())?)
            }
        }
    }

    /// `n` samples at `temperature`, in data space (images as `[n, C, H, W]` in [0, 1]).
    pub fn sample(&self, n: usize, temperature: f64, seed: u64) -> Result<Tensor> {
        let s = self
            .density
            .sample(n, temperature, seed, DType::F32, &self.device)?;
        match self.kind {
            DataKind::Points { .. } => Ok(s),
            DataKind::Images { shape, .. } => {
                let y = candle_nn::ops::sigmoid(&s)?.affine(1.0, -LOGIT_ALPHA)?;
                let y = (y / (1.0 - 2.0 * LOGIT_ALPHA))?.clamp(0f32, 1f32)?;
                Ok(y.reshape((n, shape[0], shape[1], shape[2]))?)
            }
        }
    }

    /// Mean NLL (nats per item) of a batch.
    fn nll(&self, batch: &Batch, noise_seed: &[u64]) -> Result<Tensor> {
        Ok(self
            .log_prob(&batch.inputs, noise_seed)?
            .mean_all()?
            .neg()?)
    }

    fn metrics(&self, nll: f64) -> Metrics {
        let mut m = Metrics::from([("loss".to_string(), nll)]);
        match self.kind {
            DataKind::Points { .. } => m.insert("log_lik".into(), -nll),
            DataKind::Images { .. } => {
                m.insert("bits_per_dim".into(), nll / (self.kind.dim() as f64 * LN_2))
            }
        };
        m
    }
}

/// Dequantizes `x = k / 255` to `y = (k + u) / 256` and applies the logit transform; returns
/// `w` and `log|det ∂w/∂y|` per image.
fn to_logit_space(x: &Tensor, seed: u64, noise_seed: &[u64]) -> Result<(Tensor, Tensor)> {
    let u = uniform(x.shape(), seed, noise_seed, x.device())?;
    let k = x.clamp(0f32, 1f32)?.affine(255.0, 0.0)?.round()?;
    let y = ((k + u)? / 256.0)?;
    let s = y.affine(1.0 - 2.0 * LOGIT_ALPHA, LOGIT_ALPHA)?;
    let one_minus = s.affine(-1.0, 1.0)?;
    let w = (s.log()? - one_minus.log()?)?;
    let per_dim = ((s.log()? + one_minus.log()?)?.neg()? + (1.0 - 2.0 * LOGIT_ALPHA).ln())?;
    Ok((w, per_dim.flatten_from(1)?.sum(D::Minus1)?))
}

impl Task for FlowTask {
    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Metrics> {
        let loss = self.nll(batch, &[0, ctx.step as u64])?;
        self.train
            .optimizer
            .backward_step(&loss, ctx.lr_factor, self.clip_norm)?;
        Ok(self.metrics(forja_train::scalar(&loss)?))
    }

    fn evaluate(
        &mut self,
        batches: &mut dyn Iterator<Item = forja_data::Result<Batch>>,
    ) -> Result<Metrics> {
        let (mut sum, mut n) = (0.0, 0usize);
        self.shown.clear();
        for (b, batch) in batches.enumerate() {
            let batch = batch?;
            if let DataKind::Points { dim } = self.kind {
                picture::keep_points(&mut self.shown, &batch.inputs, SHOWN_POINTS * dim)?;
            }
            // Fixed dequantization noise, so evaluations of a run compare.
            let lp = self.log_prob(&batch.inputs, &[1, b as u64])?.detach();
            sum -= forja_train::scalar(&lp.sum_all()?)?;
            n += batch.len();
        }
        Ok(self.metrics(sum / n.max(1) as f64))
    }

    fn monitor(&self) -> Monitor {
        Monitor::LOSS
    }

    forja_train::delegate_train_state!(train);

    /// Samples at temperature 1 (the model's own distribution); images in [0, 1].
    fn generate(&mut self, n: usize, seed: u64) -> Result<Tensor> {
        self.sample(n, 1.0, seed)
    }

    /// Points: `density.png` (test data | model density | model samples) and `density.json`
    /// (the density's integral over the plotted square). Images: `samples.png`, rows of samples
    /// at temperatures 0.5, 0.75 and 1.
    fn artifacts(&mut self, run_dir: &Path) -> Result<()> {
        match self.kind {
            DataKind::Points { dim: 2 } => picture::density_panels(self, run_dir),
            DataKind::Points { .. } => Ok(()),
            DataKind::Images { .. } => picture::sample_grid(self, run_dir),
        }
    }
}
