//! Training autoencoders with the generic trainer: reconstruction loss plus the code penalty,
//! inputs corrupted for the denoising variants; evaluation reports PSNR, and the run keeps
//! reconstruction grids and 2-D maps (PCA, t-SNE, UMAP) of the test codes coloured by class.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use forja_data::transform::{GaussianNoise, Image, MaskingNoise, Transform};
use forja_data::Batch;
use forja_train::picture::image_grid;
use forja_train::{
    scalar, Metrics, Monitor, ParamStore, Result, RunConfig, StepCtx, Task, TrainError, TrainState,
};

use crate::autoencoder::{
    psnr, AeArch, Autoencoder, AutoencoderConfig, CodeActivation, Penalty, ReconstructionLoss,
};
use crate::embed::{tsne_2d, umap_2d, Pca};

/// How a denoising autoencoder corrupts its input (it reconstructs the clean one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Corruption {
    None,
    /// x + N(0, std^2) per pixel.
    Gaussian {
        std: f32,
    },
    /// Each pixel set to 0 with probability p (Vincent et al. 2008).
    Masking {
        p: f64,
    },
}

/// Test codes kept for the latent maps (t-SNE and UMAP are quadratic in it or close).
const MAP_POINTS: usize = 1000;
/// Test images in `reconstructions.png`.
const SHOWN: usize = 10;

pub struct AeTask {
    ae: Autoencoder,
    train: TrainState,
    clip_norm: Option<f64>,
    corruption: Corruption,
    seed: u64,
    /// Clean and corrupted first test images of the last evaluation.
    shown: Option<(Tensor, Tensor)>,
    codes: Vec<f32>,
    labels: Vec<u32>,
}

impl AeTask {
    pub fn new(
        cfg: &RunConfig,
        ae_cfg: &AutoencoderConfig,
        corruption: Corruption,
        device: &Device,
    ) -> Result<Self> {
        let params = ParamStore::new(cfg.seed);
        let ae = Autoencoder::new(ae_cfg, params.var_builder(DType::F32, device))?;
        Ok(Self {
            ae,
            train: TrainState::new(params, cfg.optimizer.clone())?,
            clip_norm: cfg.clip_norm,
            corruption,
            seed: cfg.seed,
            shown: None,
            codes: Vec::new(),
            labels: Vec::new(),
        })
    }

    pub fn autoencoder(&self) -> &Autoencoder {
        &self.ae
    }

    /// The corrupted input, drawn per image from `(seed, path, image)`.
    pub fn corrupt(&self, x: &Tensor, path: &[u64]) -> Result<Tensor> {
        let noise: Box<dyn Transform> = match self.corruption {
            Corruption::None => return Ok(x.clone()),
            Corruption::Gaussian { std } => Box::new(GaussianNoise { std }),
            Corruption::Masking { p } => Box::new(MaskingNoise { p }),
        };
        let (n, c, h, w) = x.dims4()?;
        let mut values: Vec<f32> = x.flatten_all()?.to_vec1()?;
        for (i, chunk) in values.chunks_mut(c * h * w).enumerate() {
            let mut image = Image::new(chunk.to_vec(), [c, h, w])?;
            let mut rng = forja_data::seed::rng(self.seed, &[path, &[i as u64]].concat());
            noise.apply(&mut image, None, &mut rng)?;
            chunk.copy_from_slice(&image.data);
        }
        Ok(Tensor::from_vec(values, (n, c, h, w), x.device())?)
    }
}

impl Task for AeTask {
    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Metrics> {
        let x = &batch.inputs;
        let input = self.corrupt(x, &[0, ctx.step as u64])?;
        let pass = self.ae.loss(&input, x)?;
        let total = pass.total()?;
        self.train
            .optimizer
            .backward_step(&total, ctx.lr_factor, self.clip_norm)?;
        Ok(Metrics::from([
            ("loss".into(), scalar(&total)?),
            ("reconstruction".into(), scalar(&pass.reconstruction)?),
            ("penalty".into(), scalar(&pass.penalty)?),
        ]))
    }

    fn evaluate(
        &mut self,
        batches: &mut dyn Iterator<Item = forja_data::Result<Batch>>,
    ) -> Result<Metrics> {
        let (mut loss_sum, mut rec_sum, mut n) = (0.0, 0.0, 0usize);
        let (mut psnr_out, mut psnr_in) = (0.0, 0.0);
        self.shown = None;
        self.codes.clear();
        self.labels.clear();
        for (b, batch) in batches.enumerate() {
            let batch = batch?;
            let x = &batch.inputs;
            // Fixed corruption per test batch, so evaluations compare.
            let input = self.corrupt(x, &[1, b as u64])?;
            let pass = self.ae.loss(&input, x)?;
            let m = batch.len();
            loss_sum += scalar(&pass.total()?)? * m as f64;
            rec_sum += scalar(&pass.reconstruction)? * m as f64;
            psnr_out += psnr(&pass.output, x)?.iter().sum::<f64>();
            if self.corruption != Corruption::None {
                psnr_in += psnr(&input, x)?.iter().sum::<f64>();
            }
            n += m;
            if self.shown.is_none() {
                let k = SHOWN.min(m);
                self.shown = Some((x.narrow(0, 0, k)?, input.narrow(0, 0, k)?));
            }
            // Class indices only (one per sample); segmentation masks have no colour to give.
            let room = MAP_POINTS.saturating_sub(self.labels.len()).min(m);
            if room > 0 && batch.targets.rank() == 1 {
                let codes = pass.codes.narrow(0, 0, room)?.to_dtype(DType::F32)?;
                self.codes.extend(codes.flatten_all()?.to_vec1::<f32>()?);
                self.labels
                    .extend(batch.targets.narrow(0, 0, room)?.to_vec1::<u32>()?);
            }
        }
        let n = n.max(1) as f64;
        let mut metrics = Metrics::from([
            ("loss".into(), loss_sum / n),
            ("reconstruction".into(), rec_sum / n),
            ("psnr".into(), psnr_out / n),
        ]);
        if self.corruption != Corruption::None {
            metrics.insert("psnr_noisy".into(), psnr_in / n);
        }
        Ok(metrics)
    }

    fn monitor(&self) -> Monitor {
        Monitor::LOSS
    }

    forja_train::delegate_train_state!(train);

    /// `reconstructions.png`: test images, their corrupted versions (denoising only) and the
    /// reconstructions, in rows; `latent_pca.png`, `latent_tsne.png`, `latent_umap.png`: the
    /// codes of up to 1,000 test images in 2-D, coloured by class.
    fn artifacts(&mut self, run_dir: &Path) -> Result<()> {
        if let Some((clean, input)) = &self.shown {
            let output = self.ae.decode(&self.ae.encode(input)?)?.detach();
            let mut rows = vec![clean.clone()];
            if self.corruption != Corruption::None {
                rows.push(input.clamp(0f32, 1f32)?);
            }
            rows.push(output);
            image_grid(
                &run_dir.join("reconstructions.png"),
                &Tensor::cat(&rows, 0)?,
                clean.dim(0)?,
            )?;
        }
        let dim = self.ae.config().latent;
        if self.labels.len() < 3 {
            return Ok(());
        }
        let maps = [
            (
                "latent_pca.png",
                "codes: PCA",
                Pca::fit(&self.codes, dim, 2).plane(&self.codes),
            ),
            ("latent_tsne.png", "codes: t-SNE", tsne_2d(&self.codes, dim)),
            ("latent_umap.png", "codes: UMAP", umap_2d(&self.codes, dim)),
        ];
        for (file, title, points) in maps {
            forja_train::plot::scatter(&run_dir.join(file), title, &points, &self.labels)?;
        }
        Ok(())
    }
}

/// Adam 1e-3, batches of 128, 10 epochs.
fn ae_recipe(cfg: &mut RunConfig) {
    cfg.adam_cosine(10, 128, 1e-3);
}

/// Images `[C, H, W]` from the data's item shape, or the error that says what is expected.
fn image_shape(item_shape: &[usize]) -> Result<[usize; 3]> {
    match *item_shape {
        [c, h, w] if c * h * w > 0 => Ok([c, h, w]),
        _ => Err(TrainError::Config(format!(
            "autoencoders take images [C, H, W], got items of shape {item_shape:?}"
        ))),
    }
}

fn mlp(input: [usize; 3]) -> AutoencoderConfig {
    AutoencoderConfig::mlp(input, vec![512, 128], 32)
}

fn sparse(input: [usize; 3], penalty: Penalty) -> AutoencoderConfig {
    AutoencoderConfig {
        code: CodeActivation::Sigmoid,
        penalty,
        ..AutoencoderConfig::mlp(input, vec![512], 128)
    }
}

macro_rules! register_ae {
    ($name:literal, $summary:literal, |$input:ident| $config:expr, $corruption:expr) => {
        forja_train::inventory::submit! {
            forja_train::ModelEntry {
                name: $name,
                family: "autoencoder",
                summary: $summary,
                default_dataset: "synth-digits",
                configure: ae_recipe,
                build: |cfg, data, device| {
                    let $input = image_shape(&data.item_shape)?;
                    let task = AeTask::new(cfg, &$config, $corruption, device)?;
                    Ok(Box::new(task))
                },
            }
        }
    };
}

register_ae!(
    "ae-mlp",
    "MLP autoencoder 512-128-32, squared error",
    |input| mlp(input),
    Corruption::None
);
register_ae!(
    "ae-conv",
    "convolutional autoencoder (two stride-2 convs, code 32, transposed convs back)",
    |input| AutoencoderConfig {
        arch: AeArch::Conv,
        ..mlp(input)
    },
    Corruption::None
);
register_ae!(
    "ae-linear",
    "linear autoencoder, code 16: learns the top-16 principal subspace",
    |input| AutoencoderConfig {
        arch: AeArch::Linear,
        ..AutoencoderConfig::mlp(input, Vec::new(), 16)
    },
    Corruption::None
);
register_ae!(
    "ae-sparse",
    "sparse autoencoder 512-128, sigmoid code, L1 penalty 0.05",
    |input| sparse(input, Penalty::L1 { lambda: 0.05 }),
    Corruption::None
);
register_ae!(
    "ae-sparse-kl",
    "sparse autoencoder 512-128, sigmoid code, KL sparsity (rho 0.05, beta 1)",
    |input| sparse(
        input,
        Penalty::KlSparsity {
            rho: 0.05,
            beta: 1.0
        }
    ),
    Corruption::None
);
register_ae!(
    "ae-contractive",
    "contractive autoencoder: one sigmoid layer of 128, lambda 0.1 ||dh/dx||_F^2 (exact)",
    |input| AutoencoderConfig {
        code: CodeActivation::Sigmoid,
        penalty: Penalty::Contractive { lambda: 0.1 },
        loss: ReconstructionLoss::CrossEntropy,
        ..AutoencoderConfig::mlp(input, Vec::new(), 128)
    },
    Corruption::None
);
register_ae!(
    "ae-denoising",
    "denoising MLP autoencoder 512-128-32: Gaussian noise (std 0.3) in, clean image out",
    |input| mlp(input),
    Corruption::Gaussian { std: 0.3 }
);
register_ae!(
    "ae-denoising-masking",
    "denoising MLP autoencoder 512-128-32: masking noise (25 % of pixels zeroed)",
    |input| mlp(input),
    Corruption::Masking { p: 0.25 }
);
