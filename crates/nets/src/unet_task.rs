//! Training a U-Net to segment cells as in the paper: two classes (cell interior vs. background,
//! where the borders between touching cells count as background, so touching cells must be
//! told apart by a thin gap), pixel-wise softmax cross-entropy, optionally weighted by the
//! paper's weight map. Evaluation scores pixels (error, IoU, Dice) and cells (matched, and
//! matched among the touching ones).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use forja_data::Batch;
use forja_train::picture::{viridis, write_tiles};
use forja_train::{
    scalar, Metrics, Monitor, ParamStore, Result, RunConfig, StepCtx, Task, TrainState,
};

use crate::segment::{cell_masks, components, separation, Separation, WeightMap};
use crate::unet::{center_crop, UNet, UNetConfig};
use crate::NetError;

/// Test images drawn in `overlays.png`.
const SHOWN: usize = 4;

/// One image's targets, cropped to the network's output: class per pixel (1: cell interior),
/// the cell each interior pixel belongs to, and the full instance ids (borders included).
struct Targets {
    labels: Vec<u32>,
    cells: Vec<u32>,
    instances: Vec<u32>,
}

/// What `overlays.png` shows of one test image.
struct Shown {
    image: Vec<f32>,
    instances: Vec<u32>,
    predicted: Vec<bool>,
    /// The paper's weight map, whichever loss the task trains with.
    weights: Vec<f32>,
}

pub struct UNetTask {
    net: UNet,
    train: TrainState,
    clip_norm: Option<f64>,
    weight_map: Option<WeightMap>,
    device: Device,
    shown: Vec<Shown>,
    out_hw: [usize; 2],
}

impl UNetTask {
    /// A U-Net for images `[C, H, W]` with targets `[2, H, W]` (semantic class, instance id:
    /// `synth-cells`); `weight_map: None` trains with plain cross-entropy.
    pub fn new(
        cfg: &RunConfig,
        item_shape: &[usize],
        target_shape: &[usize],
        device: &Device,
        net_cfg: impl FnOnce(usize) -> UNetConfig,
        weight_map: Option<WeightMap>,
    ) -> Result<Self> {
        let (c, h, w) = match (item_shape, target_shape) {
            (&[c, h, w], &[2, th, tw]) if (th, tw) == (h, w) => (c, h, w),
            _ => {
                return Err(NetError::Config(format!(
                    "unet needs images [C, H, W] with targets [2, H, W] (semantic class, instance id), got {item_shape:?} and {target_shape:?}; use a segmentation dataset such as synth-cells"
                ))
                .into())
            }
        };
        let net_cfg = net_cfg(c);
        let out = |n: usize| {
            net_cfg.output_size(n).map_err(|why| NetError::InputShape {
                model: "unet",
                shape: item_shape.to_vec(),
                why,
            })
        };
        let out_hw = [out(h)?, out(w)?];
        let params = ParamStore::new(cfg.seed);
        let net = UNet::new(&net_cfg, params.var_builder(DType::F32, device))?;
        Ok(Self {
            net,
            train: TrainState::new(params, cfg.optimizer.clone())?,
            clip_norm: cfg.clip_norm,
            weight_map,
            device: device.clone(),
            shown: Vec::new(),
            out_hw,
        })
    }

    pub fn net(&self) -> &UNet {
        &self.net
    }

    /// Each image's targets, centre-cropped to the output (the valid layout predicts the
    /// central region only).
    fn targets(&self, batch: &Batch) -> Result<Vec<Targets>> {
        let (n, _, h, w) = batch.targets.dims4()?;
        let all: Vec<u32> = batch.targets.flatten_all()?.to_vec1()?;
        let [oh, ow] = self.out_hw;
        let (top, left) = ((h - oh) / 2, (w - ow) / 2);
        let crop = |plane: &[u32]| -> Vec<u32> {
            (0..oh * ow)
                .map(|p| plane[(top + p / ow) * w + left + p % ow])
                .collect()
        };
        Ok((0..n)
            .map(|i| {
                let semantic = crop(&all[(2 * i) * h * w..(2 * i + 1) * h * w]);
                let instances = crop(&all[(2 * i + 1) * h * w..(2 * i + 2) * h * w]);
                let (labels, cells) = cell_masks(&semantic, &instances);
                Targets {
                    labels,
                    cells,
                    instances,
                }
            })
            .collect())
    }

    /// Per-pixel loss weights: the weight map, or 1.
    fn weights(&self, t: &Targets) -> Vec<f32> {
        let [h, w] = self.out_hw;
        match &self.weight_map {
            Some(m) => m.compute(&t.labels, &t.cells, h, w, 2),
            None => vec![1.0; h * w],
        }
    }

    /// Logits and the mean cross-entropy over all pixels, weighted by [`Self::weights`].
    fn loss(&self, batch: &Batch, targets: &[Targets]) -> Result<(Tensor, Tensor)> {
        let logits = self.net.logits(&batch.inputs)?;
        let [h, w] = self.out_hw;
        let n = targets.len();
        let labels: Vec<u32> = targets
            .iter()
            .flat_map(|t| t.labels.iter().copied())
            .collect();
        let labels = Tensor::from_vec(labels, (n, 1, h, w), &self.device)?;
        let log_p = candle_nn::ops::log_softmax(&logits, 1)?;
        let nll = log_p.gather(&labels, 1)?.neg()?.squeeze(1)?;
        let weights: Vec<f32> = targets.iter().flat_map(|t| self.weights(t)).collect();
        let weights = Tensor::from_vec(weights, (n, h, w), &self.device)?;
        Ok((logits, (nll * weights)?.mean_all()?))
    }
}

/// Predicted foreground per image, from the arg-max of the logits.
fn predicted(logits: &Tensor) -> Result<Vec<Vec<bool>>> {
    let n = logits.dim(0)?;
    let classes: Vec<u32> = logits.argmax(1)?.flatten_all()?.to_vec1()?;
    let per = classes.len() / n.max(1);
    Ok(classes
        .chunks(per)
        .map(|c| c.iter().map(|&k| k == 1).collect())
        .collect())
}

fn ratio(a: usize, b: usize) -> f64 {
    a as f64 / b.max(1) as f64
}

/// Pixel and cell scores summed over a test set.
#[derive(Default)]
struct Scores {
    pixels: usize,
    errors: usize,
    intersection: usize,
    union: usize,
    predicted: usize,
    truth: usize,
    cells: Separation,
}

impl Scores {
    /// Pixel scores and cell matches of one image.
    fn add(&mut self, pred: &[bool], t: &Targets, [h, w]: [usize; 2]) {
        self.add_pixels(pred, t);
        self.cells += separation(pred, &t.cells, &t.instances, h, w);
    }

    fn add_pixels(&mut self, pred: &[bool], t: &Targets) {
        for (&p, &l) in pred.iter().zip(&t.labels) {
            let truth = l == 1;
            self.pixels += 1;
            self.errors += usize::from(p != truth);
            self.intersection += usize::from(p && truth);
            self.union += usize::from(p || truth);
            self.predicted += usize::from(p);
            self.truth += usize::from(truth);
        }
    }

    fn pixel_error(&self) -> f64 {
        ratio(self.errors, self.pixels)
    }

    fn metrics(&self, loss: f64) -> Metrics {
        Metrics::from([
            ("loss".into(), loss),
            ("pixel_error".into(), self.pixel_error()),
            ("iou".into(), ratio(self.intersection, self.union)),
            (
                "dice".into(),
                ratio(2 * self.intersection, self.predicted + self.truth),
            ),
            (
                "cells_matched".into(),
                ratio(self.cells.matched, self.cells.cells),
            ),
            (
                "touching_separated".into(),
                ratio(self.cells.touching_matched, self.cells.touching),
            ),
        ])
    }
}

impl Task for UNetTask {
    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Metrics> {
        let targets = self.targets(batch)?;
        let (logits, loss) = self.loss(batch, &targets)?;
        self.train
            .optimizer
            .backward_step(&loss, ctx.lr_factor, self.clip_norm)?;
        let mut scores = Scores::default();
        for (pred, t) in predicted(&logits)?.iter().zip(&targets) {
            scores.add_pixels(pred, t);
        }
        Ok(Metrics::from([
            ("loss".into(), scalar(&loss)?),
            ("pixel_error".into(), scores.pixel_error()),
        ]))
    }

    fn evaluate(
        &mut self,
        batches: &mut dyn Iterator<Item = forja_data::Result<Batch>>,
    ) -> Result<Metrics> {
        let (mut loss_sum, mut n) = (0.0, 0usize);
        let mut scores = Scores::default();
        self.shown.clear();
        for batch in batches {
            let batch = batch?;
            let targets = self.targets(&batch)?;
            let (logits, loss) = self.loss(&batch, &targets)?;
            loss_sum += scalar(&loss)? * batch.len() as f64;
            n += batch.len();
            let preds = predicted(&logits)?;
            for (i, (pred, t)) in preds.iter().zip(&targets).enumerate() {
                scores.add(pred, t, self.out_hw);
                if self.shown.len() < SHOWN {
                    let [h, w] = self.out_hw;
                    self.shown.push(Shown {
                        image: shown_input(&batch.inputs.get(i)?, self.out_hw)?,
                        instances: t.instances.clone(),
                        predicted: pred.clone(),
                        weights: WeightMap::PAPER.compute(&t.labels, &t.cells, h, w, 2),
                    });
                }
            }
        }
        Ok(scores.metrics(loss_sum / n.max(1) as f64))
    }

    fn monitor(&self) -> Monitor {
        Monitor {
            metric: "iou",
            maximize: true,
        }
    }

    forja_train::delegate_train_state!(train);

    /// `overlays.png`: per test image (rows) the input, the true cells, the predicted cells
    /// (connected components of the predicted foreground, one colour each) and the paper's
    /// weight map; `weight_map.png`: the weight map of the first test image alone.
    fn artifacts(&mut self, run_dir: &Path) -> Result<()> {
        let hw = self.out_hw;
        let mut tiles = Vec::new();
        for s in &self.shown {
            let (comp, _) = components(&s.predicted, hw[0], hw[1]);
            tiles.push(s.image.iter().map(|&v| grey(v)).collect());
            tiles.push(label_colours(&s.instances));
            tiles.push(label_colours(&comp));
            tiles.push(heat(&s.weights));
        }
        write_tiles(&run_dir.join("overlays.png"), &tiles, hw, 4)?;
        if let Some(s) = self.shown.first() {
            write_tiles(&run_dir.join("weight_map.png"), &[heat(&s.weights)], hw, 1)?;
        }
        Ok(())
    }
}

/// The first channel of one input `[C, H, W]`, centre-cropped to the output size.
fn shown_input(image: &Tensor, [oh, ow]: [usize; 2]) -> Result<Vec<f32>> {
    let plane = center_crop(&image.narrow(0, 0, 1)?.unsqueeze(0)?, oh, ow)?;
    Ok(plane.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
}

fn grey(v: f32) -> [u8; 3] {
    [(v.clamp(0.0, 1.0) * 255.0).round() as u8; 3]
}

/// A distinct colour per label (golden-angle hues), black for 0.
fn label_colours(labels: &[u32]) -> Vec<[u8; 3]> {
    labels
        .iter()
        .map(|&l| {
            if l == 0 {
                return [0, 0, 0];
            }
            let hue = (l as f64 * 137.508).rem_euclid(360.0) / 60.0;
            let x = 1.0 - (hue.rem_euclid(2.0) - 1.0).abs();
            let (r, g, b) = match hue as usize {
                0 => (1.0, x, 0.0),
                1 => (x, 1.0, 0.0),
                2 => (0.0, 1.0, x),
                3 => (0.0, x, 1.0),
                4 => (x, 0.0, 1.0),
                _ => (1.0, 0.0, x),
            };
            [r, g, b].map(|c: f64| (55.0 + 200.0 * c).round() as u8)
        })
        .collect()
}

/// Values scaled to their maximum, in viridis.
fn heat(values: &[f32]) -> Vec<[u8; 3]> {
    let max = values.iter().cloned().fold(f32::MIN_POSITIVE, f32::max);
    values.iter().map(|&v| viridis((v / max) as f64)).collect()
}

/// Adam 1e-3 with a cosine schedule, batches of 4, elastic deformation (up to 6 px, smoothed
/// over 8 px), as the paper trains on few images with strong elastic augmentation.
fn unet_recipe(cfg: &mut forja_train::RunConfig) {
    cfg.adam_cosine(15, 4, 1e-3);
    cfg.augment.elastic = Some([6.0, 8.0]);
}

/// The padded U-Net trained on CPU: depth 4, 8..128 channels (the paper's 64..1024 is
/// `UNetConfig::paper()`, 64x the compute).
fn registered(in_channels: usize) -> UNetConfig {
    UNetConfig {
        in_channels,
        classes: 2,
        depth: 4,
        width: 8,
        layout: crate::unet::UNetLayout::Padded,
    }
}

macro_rules! register_unet {
    ($name:literal, $summary:literal, $weights:expr) => {
        forja_train::inventory::submit! {
            forja_train::ModelEntry {
                name: $name,
                family: "unet",
                summary: $summary,
                default_dataset: "synth-cells",
                configure: unet_recipe,
                build: |cfg, data, device| {
                    let task = UNetTask::new(cfg, &data.item_shape, &data.target_shape, device, registered, $weights)?;
                    Ok(Box::new(task))
                },
            }
        }
    };
}

register_unet!(
    "unet",
    "U-Net (padded, 8..128 channels) with the paper's weighted loss (w0 10, sigma 5 px)",
    Some(WeightMap::PAPER)
);
register_unet!(
    "unet-unweighted",
    "the same U-Net trained with plain pixel-wise cross-entropy (no weight map)",
    None
);
