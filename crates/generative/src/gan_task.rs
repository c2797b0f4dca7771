//! Training a GAN or WGAN with forja's generic trainer: alternating updates, each network with
//! its own optimizer, and mode coverage measured on the ring of Gaussians.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use forja_data::densities::{Density, MODE_STD};
use forja_data::Batch;
use forja_train::picture::image_grid;
use forja_train::plot::Curve;
use forja_train::{
    scalar, Metrics, Monitor, Optimizer, ParamStore, Result, RunConfig, StepCtx, Task, TrainError,
};

use crate::gan::{Gan, GanConfig, GanLoss};
use crate::noise::{standard_normal, uniform};
use crate::picture::{keep_points, tails, write_panels, Grid, PANEL};

/// Generated samples scored at every evaluation.
pub const EVAL_SAMPLES: usize = 2500;

/// A generated point is of high quality within this many standard deviations of a mode.
pub const QUALITY_STDS: f64 = 3.0;

/// A mode counts as covered when it holds at least this many high-quality samples out of
/// [`EVAL_SAMPLES`] (8 % of its fair share of 312).
pub const COVERED_MIN: usize = 25;

pub struct GanTask {
    gan: Gan,
    params: ParamStore,
    opt_d: Optimizer,
    opt_g: Optimizer,
    /// Discriminator (critic) steps per generator step.
    d_steps: usize,
    seed: u64,
    device: Device,
    /// The modes of the data, where it has them (the ring of 8 Gaussians).
    modes: Option<Vec<[f64; 2]>>,
    /// Test points of 2-D data, for the picture.
    shown: Vec<f32>,
    /// Shape of one sample, e.g. `[2]` or `[1, 28, 28]`.
    item_shape: Vec<usize>,
    /// 1-D data: the grid of x (fixed at the first evaluation) and, per evaluation, D(x) and
    /// the generator's density on it.
    line: Vec<f64>,
    stages: Vec<Stage>,
}

/// What the 1-D picture shows of one evaluation.
struct Stage {
    evaluation: usize,
    discriminator: Vec<f64>,
    generator: Vec<f64>,
}

/// Points of the 1-D grid, and generated samples per snapshot.
const LINE_POINTS: usize = 200;
const LINE_SAMPLES: usize = 20_000;

/// The variables whose names start with `prefix`.
fn part(params: &ParamStore, prefix: &str) -> Vec<(String, Var)> {
    params
        .trainable_vars()
        .into_iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .collect()
}

impl GanTask {
    /// A GAN on samples of `item_shape` (its `data_dim` must be their size).
    pub fn new(
        cfg: &RunConfig,
        gan: &GanConfig,
        item_shape: &[usize],
        d_steps: usize,
        device: &Device,
    ) -> Result<Self> {
        if d_steps == 0 {
            return Err(TrainError::Config("d_steps must be at least 1".into()));
        }
        if item_shape.iter().product::<usize>() != gan.data_dim {
            return Err(TrainError::Config(format!(
                "the GAN makes samples of {} values, the data has items of shape {item_shape:?}",
                gan.data_dim
            )));
        }
        let params = ParamStore::new(cfg.seed);
        let gan = Gan::new(gan, params.var_builder(DType::F32, device))?;
        let opt = |prefix| Optimizer::new(cfg.optimizer.clone(), part(&params, prefix));
        Ok(Self {
            opt_d: opt("discriminator.")?,
            opt_g: opt("generator.")?,
            gan,
            params,
            d_steps,
            seed: cfg.seed,
            device: device.clone(),
            modes: (cfg.dataset == Density::EightGaussians.name()).then(Density::modes),
            shown: Vec::new(),
            item_shape: item_shape.to_vec(),
            line: Vec::new(),
            stages: Vec::new(),
        })
    }

    pub fn gan(&self) -> &Gan {
        &self.gan
    }

    fn noise(&self, n: usize, path: &[u64]) -> Result<Tensor> {
        let latent = self.gan.config().latent;
        Ok(standard_normal(
            &[n, latent],
            self.seed,
            path,
            DType::F32,
            &self.device,
        )?)
    }

    /// `n` generated samples from the seeded stream `path`, flat `[n, data_dim]`.
    pub fn sample(&self, n: usize, path: &[u64]) -> Result<Tensor> {
        Ok(self.gan.generate(&self.noise(n, path)?, false)?.detach())
    }

    /// Modes holding at least [`COVERED_MIN`] high-quality samples, and the share of samples
    /// within [`QUALITY_STDS`] standard deviations of their nearest mode.
    pub fn mode_coverage(&self, samples: &[f32], modes: &[[f64; 2]]) -> (usize, f64) {
        let mut per_mode = vec![0usize; modes.len()];
        let mut good = 0;
        for p in samples.chunks_exact(2) {
            let (k, d) = modes
                .iter()
                .map(|m| (f64::from(p[0]) - m[0]).hypot(f64::from(p[1]) - m[1]))
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("at least one mode");
            if d <= QUALITY_STDS * MODE_STD {
                per_mode[k] += 1;
                good += 1;
            }
        }
        let covered = per_mode.iter().filter(|&&c| c >= COVERED_MIN).count();
        (covered, good as f64 / (samples.len() / 2).max(1) as f64)
    }

    /// What the pictures show of the discriminator at `x`: σ(D(x)) for the GAN, the critic's
    /// score for the WGAN.
    fn shown_critic(&self, x: &Tensor) -> Result<Tensor> {
        let d = self.gan.critic(x, false)?.detach();
        Ok(match self.gan.config().loss {
            GanLoss::Wasserstein { .. } => d,
            _ => candle_nn::ops::sigmoid(&d)?,
        })
    }

    /// 1-D data: D(x) (σ(D) for the GAN, the critic's score for the WGAN) and a histogram
    /// density of the generator's samples on a fixed grid around the data and the first samples.
    fn snapshot(&mut self) -> Result<()> {
        let samples: Vec<f32> = self.sample(LINE_SAMPLES, &[7])?.flatten_all()?.to_vec1()?;
        if self.line.is_empty() {
            let (lo, hi) = self
                .shown
                .iter()
                .chain(&samples)
                .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            let (lo, hi) = (f64::from(lo), f64::from(hi));
            let pad = 0.1 * (hi - lo).max(1e-3);
            let step = (hi - lo + 2.0 * pad) / (LINE_POINTS - 1) as f64;
            self.line = (0..LINE_POINTS)
                .map(|k| lo - pad + k as f64 * step)
                .collect();
        }
        let x = Tensor::from_vec(self.line.clone(), (LINE_POINTS, 1), &self.device)?
            .to_dtype(DType::F32)?;
        let d = self.shown_critic(&x)?;
        let stage = Stage {
            evaluation: self.stages.len() + 1,
            discriminator: d.to_dtype(DType::F64)?.to_vec1()?,
            generator: line_density(&self.line, &samples),
        };
        self.stages.push(stage);
        Ok(())
    }

    /// `gan_1d.png`, after Goodfellow et al.'s Figure 1: the data density (black), the
    /// generator's (green) and the discriminator's output (blue) after the first evaluation,
    /// two in between and the last (counted in this process: a resumed run counts from 1).
    fn line_figure(&self, path: &Path) -> Result<()> {
        let n = self.stages.len();
        let mut picks: Vec<usize> = [0, n / 3, 2 * n / 3, n.saturating_sub(1)].to_vec();
        picks.dedup();
        let data = line_density(&self.line, &self.shown);
        let curve = |label: &str, values: &[f64]| Curve {
            label: label.into(),
            points: self
                .line
                .iter()
                .copied()
                .zip(values.iter().copied())
                .collect(),
        };
        let panels: Vec<(String, Vec<Curve>)> = picks
            .into_iter()
            .filter_map(|k| self.stages.get(k))
            .map(|s| {
                (
                    format!("after epoch {}", s.evaluation),
                    vec![
                        curve("data density", &data),
                        curve("generator density", &s.generator),
                        curve("D(x)", &s.discriminator),
                    ],
                )
            })
            .collect();
        forja_train::plot::line_panels(path, &panels)
    }
}

/// A histogram density of `values` on the cells centred at the evenly spaced `grid` points.
fn line_density(grid: &[f64], values: &[f32]) -> Vec<f64> {
    let (lo, step) = (grid[0], grid[1] - grid[0]);
    let mut counts = vec![0.0; grid.len()];
    for &v in values {
        let k = ((f64::from(v) - lo) / step + 0.5).floor();
        if k >= 0.0 && (k as usize) < grid.len() {
            counts[k as usize] += 1.0;
        }
    }
    let scale = 1.0 / (values.len().max(1) as f64 * step);
    counts.iter().map(|c| c * scale).collect()
}

impl Task for GanTask {
    /// A discriminator step on this batch; every `d_steps`-th step also a generator step.
    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Metrics> {
        let real = batch.inputs.flatten_from(1)?.to_dtype(DType::F32)?;
        let n = real.dim(0)?;
        let step = ctx.step as u64;
        let fake = self
            .gan
            .generate(&self.noise(n, &[0, step])?, true)?
            .detach();
        let mut d_loss = self.gan.discriminator_loss(&real, &fake, true)?;
        let mut metrics = Metrics::new();
        if let GanLoss::Wasserstein { gp, .. } = self.gan.config().loss {
            metrics.insert("wasserstein".into(), -scalar(&d_loss)?);
            if let Some(lambda) = gp {
                let alpha = uniform(n, self.seed, &[1, step], &self.device)?;
                let penalty = self.gan.gradient_penalty(&real, &fake, &alpha)?;
                metrics.insert("gradient_penalty".into(), scalar(&penalty)?);
                d_loss = (d_loss + (penalty * lambda)?)?;
            }
        }
        self.opt_d.backward_step(&d_loss, ctx.lr_factor, None)?;
        if let GanLoss::Wasserstein { clip: Some(c), .. } = self.gan.config().loss {
            self.gan.clip_critic(c, &self.params.trainable_vars())?;
        }
        metrics.insert("loss".into(), scalar(&d_loss)?);
        if (ctx.step + 1).is_multiple_of(self.d_steps) {
            let fake = self.gan.generate(&self.noise(n, &[2, step])?, true)?;
            let g_loss = self.gan.generator_loss(&fake, true)?;
            self.opt_g.backward_step(&g_loss, ctx.lr_factor, None)?;
            metrics.insert("g_loss".into(), scalar(&g_loss)?);
        }
        Ok(metrics)
    }

    /// The discriminator's loss on test data against fresh samples; on the ring of Gaussians,
    /// the modes covered and the share of high-quality samples.
    fn evaluate(
        &mut self,
        batches: &mut dyn Iterator<Item = forja_data::Result<Batch>>,
    ) -> Result<Metrics> {
        let (mut sum, mut n) = (0.0, 0usize);
        self.shown.clear();
        for (b, batch) in batches.enumerate() {
            let real = batch?.inputs.flatten_from(1)?.to_dtype(DType::F32)?;
            let m = real.dim(0)?;
            let fake = self.sample(m, &[3, b as u64])?;
            sum += scalar(&self.gan.discriminator_loss(&real, &fake, false)?)? * m as f64;
            n += m;
            if self.gan.config().data_dim <= 2 {
                keep_points(&mut self.shown, &real, 2 * EVAL_SAMPLES)?;
            }
        }
        let mut metrics = Metrics::from([("loss".to_string(), sum / n.max(1) as f64)]);
        if let Some(modes) = &self.modes {
            let samples: Vec<f32> = self.sample(EVAL_SAMPLES, &[4])?.flatten_all()?.to_vec1()?;
            let (covered, quality) = self.mode_coverage(&samples, modes);
            metrics.insert("modes_covered".into(), covered as f64);
            metrics.insert("high_quality".into(), quality);
        }
        if self.gan.config().data_dim == 1 {
            self.snapshot()?;
        }
        Ok(metrics)
    }

    /// GANs have no loss that measures sample quality; the discriminator's test loss picks the
    /// "best" checkpoint only nominally, and the last checkpoint is the one to use.
    fn monitor(&self) -> Monitor {
        Monitor::LOSS
    }

    fn weights(&self) -> Vec<(String, Tensor)> {
        self.params
            .vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect()
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut state = self.weights();
        state.extend(self.opt_d.state("optim_d")?);
        state.extend(self.opt_g.state("optim_g")?);
        Ok(state)
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.params.load(state)?;
        self.opt_d.load_state("optim_d", state)?;
        self.opt_g.load_state("optim_g", state)
    }

    fn num_params(&self) -> usize {
        self.params.num_params()
    }

    fn generate(&mut self, n: usize, seed: u64) -> Result<Tensor> {
        let flat = self.sample(n, &[6, seed])?;
        Ok(flat.reshape([&[n], &self.item_shape[..]].concat())?)
    }

    /// 2-D data: `gan.png` with the test points, the generator's samples (histograms) and the
    /// discriminator's output (σ(D) for the GAN, the critic's score scaled to [0, 1]).
    /// Images: `samples.png`, a grid of 64 samples. 1-D data: `gan_1d.png` (see `line_figure`).
    fn artifacts(&mut self, run_dir: &Path) -> Result<()> {
        if self.item_shape.len() == 3 {
            let samples = self.generate(64, 0)?;
            return image_grid(&run_dir.join("samples.png"), &samples, 8);
        }
        if self.gan.config().data_dim == 1 && !self.stages.is_empty() {
            return self.line_figure(&run_dir.join("gan_1d.png"));
        }
        if self.gan.config().data_dim != 2 {
            return Ok(());
        }
        let grid = Grid::around(&self.shown, PANEL);
        let samples: Vec<f32> = self.sample(20_000, &[5])?.flatten_all()?.to_vec1()?;
        let centres = Tensor::from_vec(grid.centres(), (PANEL * PANEL, 2), &self.device)?
            .to_dtype(DType::F32)?;
        let d = self.shown_critic(&centres)?;
        let d: Vec<f64> = d.to_dtype(DType::F64)?.to_vec1()?;
        let (lo, hi) = d
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        let d = d.iter().map(|v| (v - lo) / (hi - lo).max(1e-12)).collect();
        let panels = [
            tails(&grid.histogram(&self.shown)),
            tails(&grid.histogram(&samples)),
            d,
        ];
        write_panels(&run_dir.join("gan.png"), &panels)
    }
}
