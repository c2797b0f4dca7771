use std::path::PathBuf;
use std::sync::Arc;

use forja_data::transform::{Compose, Elastic, Flip, RandomCrop, RandomRotation, Transform};

use serde::{Deserialize, Serialize};

use crate::{OptimizerConfig, Result, Schedule, TrainError};

/// Everything that defines a run; saved as `config.json` in the run directory so a run can be
/// evaluated or resumed without repeating its flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub model: String,
    pub dataset: String,
    /// Where the dataset's files are; `None` searches the default places.
    pub data_dir: Option<PathBuf>,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    pub schedule: Schedule,
    pub warmup_steps: usize,
    /// Clip gradients to this global L2 norm.
    pub clip_norm: Option<f64>,
    pub seed: u64,
    /// Stop after this many epochs without improvement of the monitored metric.
    pub patience: Option<usize>,
    /// Use only the first N training / test samples (quick experiments, tests).
    pub limit_train: Option<usize>,
    pub limit_test: Option<usize>,
    /// Write a `metrics.jsonl` line every N training steps.
    pub log_every: usize,
    /// Random augmentation of the training images (none by default).
    #[serde(default)]
    pub augment: Augment,
}

/// Training-set augmentation, drawn per sample and epoch from the run's seed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
    /// Pad by N zero pixels and crop back at a random offset (translation by up to N).
    pub crop_padding: usize,
    /// Rotate by a random angle in [-D, D] degrees.
    pub rotate_degrees: f32,
    /// Elastic deformation `[alpha, sigma]` in pixels (largest shift, smoothness), image and
    /// mask together.
    #[serde(default)]
    pub elastic: Option<[f32; 2]>,
}

impl Augment {
    /// The transform pipeline, `None` when nothing is enabled.
    pub fn transform(&self) -> Option<Arc<dyn Transform>> {
        let mut steps: Vec<Box<dyn Transform>> = Vec::new();
        if self.flip {
            steps.push(Box::new(Flip::horizontal(0.5)));
        }
        if self.crop_padding > 0 {
            steps.push(Box::new(RandomCrop {
                padding: self.crop_padding,
            }));
        }
        if self.rotate_degrees > 0.0 {
            steps.push(Box::new(RandomRotation {
                degrees: self.rotate_degrees,
            }));
        }
        if let Some([alpha, sigma]) = self.elastic {
            steps.push(Box::new(Elastic { alpha, sigma }));
        }
        (!steps.is_empty()).then(|| Arc::new(Compose(steps)) as Arc<dyn Transform>)
    }
}

impl RunConfig {
    /// Generic defaults; a model's registry entry adjusts them before the user's flags apply.
    pub fn new(model: &str, dataset: &str) -> Self {
        Self {
            model: model.to_string(),
            dataset: dataset.to_string(),
            data_dir: None,
            epochs: 5,
            batch_size: 128,
            optimizer: OptimizerConfig::default(),
            schedule: Schedule::Constant,
            warmup_steps: 0,
            clip_norm: None,
            seed: 42,
            patience: None,
            limit_train: None,
            limit_test: None,
            log_every: 10,
            augment: Augment::default(),
        }
    }

    /// The common recipe of the generative models, autoencoders and U-Net: Adam at `lr`
    /// with a cosine schedule to zero.
    pub fn adam_cosine(&mut self, epochs: usize, batch_size: usize, lr: f64) {
        self.epochs = epochs;
        self.batch_size = batch_size;
        self.optimizer.kind = crate::OptimizerKind::Adam;
        self.optimizer.lr = lr;
        self.schedule = Schedule::Cosine { min_factor: 0.0 };
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(TrainError::Config(m.to_string()));
        if self.epochs == 0 {
            return bad("epochs must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch size must be at least 1");
        }
        if self.log_every == 0 {
            return bad("log_every must be at least 1");
        }
        if !(0.0..=180.0).contains(&self.augment.rotate_degrees) {
            return bad("rotation must be between 0 and 180 degrees");
        }
        if matches!(self.augment.elastic, Some([a, s]) if !(a >= 0.0 && s > 0.0)) {
            return bad("elastic deformation needs alpha >= 0 and sigma > 0 pixels");
        }
        if matches!(self.clip_norm, Some(c) if c.is_nan() || c <= 0.0) {
            return bad("clip norm must be positive");
        }
        Ok(())
    }
}
