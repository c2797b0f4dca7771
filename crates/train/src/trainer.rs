//! The training loop shared by every task.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use forja_data::{Dataset, Loader};
use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint::{self, CheckpointMeta};
use crate::error::io_at;
use crate::{plot, Metrics, Record, RecordKind, Result, RunConfig, StepCtx, Task, TrainError};

/// File names inside a run directory.
pub const CONFIG_FILE: &str = "config.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const LAST_CHECKPOINT: &str = "last.safetensors";
pub const BEST_CHECKPOINT: &str = "best.safetensors";
/// The best weights alone, with PyTorch `state_dict` names.
pub const MODEL_WEIGHTS: &str = "model.safetensors";
pub const CURVES_FILE: &str = "curves.png";

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Summary {
    pub run_dir: PathBuf,
    pub epochs_done: usize,
    /// Evaluation metrics after the last epoch.
    pub metrics: Metrics,
    pub best: Option<f64>,
    pub best_epoch: Option<usize>,
    pub stopped_early: bool,
}

pub struct Trainer {
    cfg: RunConfig,
    dir: PathBuf,
    device: Device,
    progress: bool,
}

impl Trainer {
    /// A trainer writing into `run_dir` (created if needed).
    pub fn new(cfg: RunConfig, run_dir: &Path, device: &Device) -> Result<Self> {
        cfg.validate()?;
        std::fs::create_dir_all(run_dir).map_err(io_at(run_dir))?;
        Ok(Self {
            cfg,
            dir: run_dir.to_path_buf(),
            device: device.clone(),
            progress: true,
        })
    }

    /// Show (default) or hide the live progress bar; epoch summaries are printed either way.
    pub fn progress(mut self, show: bool) -> Self {
        self.progress = show;
        self
    }

    /// Trains `task` on `train`, evaluating on `test` after every epoch. With `resume`, the
    /// task is restored from that checkpoint and the run continues after its epoch.
    pub fn fit(
        &self,
        task: &mut dyn Task,
        train: Arc<dyn Dataset>,
        test: Arc<dyn Dataset>,
        resume: Option<(HashMap<String, Tensor>, CheckpointMeta)>,
    ) -> Result<Summary> {
        let cfg = &self.cfg;
        let config_path = self.dir.join(CONFIG_FILE);
        let config_json =
            serde_json::to_string_pretty(cfg).map_err(|e| TrainError::Config(e.to_string()))?;
        forja_data::fs::write_atomic(&config_path, config_json.as_bytes())
            .map_err(io_at(&config_path))?;

        let monitor = task.monitor();
        let metrics_path = self.dir.join(METRICS_FILE);
        let mut state = match resume {
            Some((tensors, meta)) => {
                task.load_state(&tensors)?;
                meta
            }
            None => CheckpointMeta {
                epoch: 0,
                step: 0,
                metrics: Metrics::new(),
                best: None,
                best_epoch: None,
                epochs_since_best: 0,
                config: cfg.clone(),
            },
        };
        state.config = cfg.clone();
        // Keep only what happened up to the checkpoint: steps logged after it are redone.
        let mut records: Vec<Record> = if state.step > 0 && metrics_path.exists() {
            crate::read_records(&metrics_path)?
                .into_iter()
                .filter(|r| r.step <= state.step)
                .collect()
        } else {
            Vec::new()
        };
        let kept: String = records.iter().map(|r| r.to_line() + "\n").collect();
        forja_data::fs::write_atomic(&metrics_path, kept.as_bytes())
            .map_err(io_at(&metrics_path))?;
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(&metrics_path)
            .map_err(io_at(&metrics_path))?;

        let (train_len, test_len) = (train.len(), test.len());
        let mut loader = Loader::new(train, cfg.batch_size, &self.device)?.shuffle(cfg.seed);
        if let Some(transform) = cfg.augment.transform() {
            loader = loader.transform(transform, cfg.seed);
        }
        let test_loader = Loader::new(test, cfg.batch_size, &self.device)?;
        let steps_per_epoch = loader.num_batches();
        let total_steps = steps_per_epoch * cfg.epochs;
        let last_path = self.dir.join(LAST_CHECKPOINT);
        let mut stopped_early = false;

        if state.epoch == 0 {
            println!(
                "training {} ({} parameters) on {}: {} train / {} test samples, {} epochs of {} steps",
                cfg.model,
                task.num_params(),
                cfg.dataset,
                train_len,
                test_len,
                cfg.epochs,
                steps_per_epoch
            );
        } else {
            println!(
                "resuming {} after epoch {} (step {})",
                cfg.model, state.epoch, state.step
            );
        }

        for epoch in state.epoch..cfg.epochs {
            let bar = self.bar(epoch, steps_per_epoch);
            let started = Instant::now();
            let mut window = Metrics::new();
            let mut window_len = 0usize;
            let mut loss_sum = 0.0;
            for (i, batch) in loader.epoch(epoch).enumerate() {
                let batch = batch?;
                let ctx = StepCtx {
                    epoch,
                    step: state.step,
                    lr_factor: cfg.schedule.factor(
                        state.step,
                        epoch,
                        total_steps,
                        cfg.warmup_steps,
                    ),
                    seed: cfg.seed,
                };
                let m = task.train_step(&batch, &ctx)?;
                let loss = *m
                    .get("loss")
                    .ok_or_else(|| TrainError::Config("train_step returned no `loss`".into()))?;
                if !loss.is_finite() {
                    bar.abandon();
                    let last_good = last_path.exists().then(|| last_path.clone());
                    return Err(TrainError::NonFinite {
                        value: loss,
                        epoch: epoch + 1,
                        step: state.step,
                        last_good,
                    });
                }
                state.step += 1;
                loss_sum += loss;
                for (k, v) in m {
                    *window.entry(k).or_default() += v;
                }
                window_len += 1;
                if state.step % cfg.log_every == 0 || i + 1 == steps_per_epoch {
                    let mut values: Metrics = window
                        .iter()
                        .map(|(k, v)| (k.clone(), v / window_len as f64))
                        .collect();
                    values.insert("lr".into(), cfg.optimizer.lr * ctx.lr_factor);
                    let rec = Record {
                        kind: RecordKind::Train,
                        epoch: epoch + 1,
                        step: state.step,
                        values,
                    };
                    writeln!(log, "{}", rec.to_line()).map_err(io_at(&metrics_path))?;
                    records.push(rec);
                    window.clear();
                    window_len = 0;
                }
                let rate =
                    ((i + 1) * cfg.batch_size) as f64 / started.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "loss {:.4} | {rate:.0} samples/s",
                    loss_sum / (i + 1) as f64
                ));
                bar.inc(1);
            }
            bar.finish_and_clear();
            let train_s = started.elapsed().as_secs_f64();

            let mut metrics = task.evaluate(&mut test_loader.epoch(0))?;
            let monitored = *metrics.get(monitor.metric).ok_or_else(|| {
                TrainError::Config(format!("evaluation returned no `{}`", monitor.metric))
            })?;
            let improved = monitor.improves(monitored, state.best);
            metrics.insert(
                "train_loss".into(),
                loss_sum / steps_per_epoch.max(1) as f64,
            );
            metrics.insert("epoch_s".into(), train_s);
            metrics.insert(
                "samples_per_s".into(),
                loader.num_samples() as f64 / train_s.max(1e-9),
            );
            let rec = Record {
                kind: RecordKind::Eval,
                epoch: epoch + 1,
                step: state.step,
                values: metrics.clone(),
            };
            writeln!(log, "{}", rec.to_line()).map_err(io_at(&metrics_path))?;
            records.push(rec);
            println!("{}", epoch_line(epoch + 1, cfg.epochs, &metrics));

            if improved {
                state.best = Some(monitored);
                state.best_epoch = Some(epoch + 1);
                state.epochs_since_best = 0;
            } else {
                state.epochs_since_best += 1;
            }
            state.epoch = epoch + 1;
            state.metrics = metrics.clone();
            let tensors = task.state()?;
            checkpoint::save(&last_path, &tensors, &state)?;
            if improved {
                checkpoint::save(&self.dir.join(BEST_CHECKPOINT), &tensors, &state)?;
                checkpoint::save_weights(&self.dir.join(MODEL_WEIGHTS), &task.weights())?;
            }
            plot::curves(&self.dir.join(CURVES_FILE), &records)?;
            if cfg.patience.is_some_and(|p| state.epochs_since_best >= p) {
                println!(
                    "early stop: no better {} for {} epochs",
                    monitor.metric, state.epochs_since_best
                );
                stopped_early = true;
                break;
            }
        }
        task.artifacts(&self.dir)?;
        Ok(Summary {
            run_dir: self.dir.clone(),
            epochs_done: state.epoch,
            metrics: state.metrics,
            best: state.best,
            best_epoch: state.best_epoch,
            stopped_early,
        })
    }

    fn bar(&self, epoch: usize, steps: usize) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(steps as u64);
        let style =
            ProgressStyle::with_template("{prefix} [{bar:32}] {pos}/{len} {msg} | ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, self.cfg.epochs));
        bar
    }
}

/// One line summarising an epoch's evaluation.
fn epoch_line(epoch: usize, epochs: usize, m: &Metrics) -> String {
    let mut line = format!("epoch {epoch}/{epochs}: train loss {:.4}", m["train_loss"]);
    for (k, v) in m
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "train_loss" | "epoch_s" | "samples_per_s"))
    {
        if k == "accuracy" {
            line += &format!(", test accuracy {:.2}%", v * 100.0);
        } else {
            line += &format!(", test {k} {v:.4}");
        }
    }
    line + &format!(
        " ({:.1} s, {:.0} samples/s)",
        m["epoch_s"], m["samples_per_s"]
    )
}
