use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use candle_nn::{linear, Module, ModuleT, VarBuilder};
use forja_data::{synth_digits, Batch, Split};
use forja_train::checkpoint::{self, CheckpointMeta};
use forja_train::{
    read_records, Classifier, Metrics, Monitor, RecordKind, RunConfig, StepCtx, Task, TrainError,
    Trainer, CURVES_FILE, LAST_CHECKPOINT, METRICS_FILE, MODEL_WEIGHTS,
};

/// A small MLP classifier: enough to learn digits a little, quick in a test.
fn mlp(cfg: &RunConfig) -> Classifier {
    Classifier::new(cfg, &Device::Cpu, |vb: VarBuilder| {
        let l1 = linear(784, 32, vb.pp("fc1"))?;
        let l2 = linear(32, 10, vb.pp("fc2"))?;
        let net = candle_nn::func(move |x: &Tensor| {
            l2.forward(&l1.forward(&x.flatten_from(1)?)?.relu()?)
        });
        Ok(Box::new(net) as Box<dyn ModuleT>)
    })
    .unwrap()
}

fn digits(split: Split, n: usize, seed: u64) -> Arc<dyn forja_data::Dataset> {
    Arc::new(synth_digits::generate(split, n, seed).unwrap())
}

/// A short run; its training images are flipped, shifted and elastically deformed at random,
/// so resuming must also repeat the augmentation.
fn config(epochs: usize) -> RunConfig {
    RunConfig {
        epochs,
        batch_size: 32,
        log_every: 3,
        augment: forja_train::Augment {
            flip: true,
            crop_padding: 2,
            rotate_degrees: 0.0,
            elastic: Some([2.0, 3.0]),
        },
        ..RunConfig::new("mlp", "synth-digits")
    }
}

/// Trains `task` without a progress bar.
fn fit(
    cfg: RunConfig,
    dir: &Path,
    task: &mut dyn Task,
    train: &Arc<dyn forja_data::Dataset>,
    test: &Arc<dyn forja_data::Dataset>,
    resume: Option<(HashMap<String, Tensor>, CheckpointMeta)>,
) -> forja_train::Result<forja_train::Summary> {
    Trainer::new(cfg, dir, &Device::Cpu)?.progress(false).fit(
        task,
        train.clone(),
        test.clone(),
        resume,
    )
}

fn weights(task: &dyn Task) -> Vec<(String, Vec<f32>)> {
    task.weights()
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

#[test]
fn resumed_run_matches_an_uninterrupted_run_bitwise_augmentation_included() {
    let train = digits(Split::Train, 320, 5);
    let test = digits(Split::Test, 100, 5);
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    let mut a = mlp(&config(3));
    fit(config(3), a_dir.path(), &mut a, &train, &test, None).unwrap();

    let mut b = mlp(&config(1));
    fit(config(1), b_dir.path(), &mut b, &train, &test, None).unwrap();
    // A fresh process would start here: a new task, state from the checkpoint.
    let resumed = checkpoint::load(&b_dir.path().join(LAST_CHECKPOINT), &Device::Cpu).unwrap();
    assert_eq!(resumed.1.epoch, 1);
    let mut b = mlp(&config(3));
    fit(
        config(3),
        b_dir.path(),
        &mut b,
        &train,
        &test,
        Some(resumed),
    )
    .unwrap();

    assert_eq!(weights(&a), weights(&b));
    let evals = |d: &Path| -> Vec<Metrics> {
        read_records(&d.join(METRICS_FILE))
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == RecordKind::Eval)
            .map(|r| {
                r.values
                    .into_iter()
                    .filter(|(k, _)| k != "epoch_s" && k != "samples_per_s")
                    .collect()
            })
            .collect()
    };
    let (ea, eb) = (evals(a_dir.path()), evals(b_dir.path()));
    assert_eq!(ea.len(), 3);
    assert_eq!(ea, eb);
    let steps = |d: &Path| {
        read_records(&d.join(METRICS_FILE))
            .unwrap()
            .iter()
            .map(|r| (r.kind, r.step))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        steps(a_dir.path()),
        steps(b_dir.path()),
        "metrics.jsonl has the same lines"
    );
}

#[test]
fn training_writes_config_metrics_checkpoints_weights_and_curves() {
    let train = digits(Split::Train, 200, 6);
    let test = digits(Split::Test, 50, 6);
    let dir = tempfile::tempdir().unwrap();
    let mut task = mlp(&config(2));
    let summary = fit(config(2), dir.path(), &mut task, &train, &test, None).unwrap();
    assert_eq!(summary.epochs_done, 2);
    for f in [
        "config.json",
        METRICS_FILE,
        LAST_CHECKPOINT,
        "best.safetensors",
        MODEL_WEIGHTS,
        CURVES_FILE,
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let records = read_records(&dir.path().join(METRICS_FILE)).unwrap();
    // 200 / 32 = 7 steps per epoch, logged every 3 steps and at the end of each epoch.
    let train_steps: Vec<usize> = records
        .iter()
        .filter(|r| r.kind == RecordKind::Train)
        .map(|r| r.step)
        .collect();
    assert_eq!(train_steps, vec![3, 6, 7, 9, 12, 14]);
    assert_eq!(
        records
            .iter()
            .filter(|r| r.kind == RecordKind::Eval)
            .count(),
        2
    );
    // The plain weights file holds exactly the model's parameters under their own names.
    let plain =
        candle_core::safetensors::load(dir.path().join(MODEL_WEIGHTS), &Device::Cpu).unwrap();
    let mut names: Vec<_> = plain.keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]);
    let png = std::fs::read(dir.path().join(CURVES_FILE)).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
}

/// A task whose loss and metric follow a script, to drive the trainer's control flow.
struct Scripted {
    param: Tensor,
    /// Loss returned at each global step.
    loss_at: fn(usize) -> f64,
    /// Evaluation score after each epoch.
    scores: Vec<f64>,
    evals: usize,
}

impl Task for Scripted {
    fn train_step(&mut self, _: &Batch, ctx: &StepCtx) -> forja_train::Result<Metrics> {
        Ok(Metrics::from([("loss".into(), (self.loss_at)(ctx.step))]))
    }
    fn evaluate(
        &mut self,
        _: &mut dyn Iterator<Item = forja_data::Result<Batch>>,
    ) -> forja_train::Result<Metrics> {
        self.evals += 1;
        Ok(Metrics::from([(
            "score".into(),
            self.scores[self.evals - 1],
        )]))
    }
    fn monitor(&self) -> Monitor {
        Monitor {
            metric: "score",
            maximize: true,
        }
    }
    fn weights(&self) -> Vec<(String, Tensor)> {
        vec![("w".into(), self.param.clone())]
    }
    fn state(&self) -> forja_train::Result<Vec<(String, Tensor)>> {
        Ok(self.weights())
    }
    fn load_state(&mut self, s: &HashMap<String, Tensor>) -> forja_train::Result<()> {
        self.param = s["w"].clone();
        Ok(())
    }
    fn num_params(&self) -> usize {
        1
    }
}

fn scripted(loss_at: fn(usize) -> f64, scores: Vec<f64>) -> Scripted {
    Scripted {
        param: Tensor::new(&[1f32], &Device::Cpu).unwrap(),
        loss_at,
        scores,
        evals: 0,
    }
}

#[test]
fn non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let data = digits(Split::Train, 64, 0); // 2 steps per epoch
    let dir = tempfile::tempdir().unwrap();
    let mut task = scripted(
        |step| if step == 3 { f64::NAN } else { 1.0 },
        vec![0.1, 0.2, 0.3],
    );
    let err = fit(config(3), dir.path(), &mut task, &data, &data, None).unwrap_err();
    match &err {
        TrainError::NonFinite {
            epoch: 2,
            step: 3,
            last_good: Some(p),
            ..
        } => assert!(p.ends_with(LAST_CHECKPOINT)),
        other => panic!("expected NonFinite at epoch 2 with a checkpoint, got {other:?}"),
    }
    assert!(err.to_string().contains("last good checkpoint"), "{err}");
    let (_, meta) = checkpoint::load(&dir.path().join(LAST_CHECKPOINT), &Device::Cpu).unwrap();
    assert_eq!((meta.epoch, meta.step), (1, 2));

    let dir = tempfile::tempdir().unwrap();
    let mut task = scripted(|_| f64::INFINITY, vec![0.1]);
    let err = fit(config(1), dir.path(), &mut task, &data, &data, None).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::NonFinite {
                last_good: None,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn early_stopping_waits_patience_epochs_after_the_best() {
    let data = digits(Split::Train, 32, 0);
    let dir = tempfile::tempdir().unwrap();
    let mut task = scripted(|_| 1.0, vec![0.5, 0.7, 0.6, 0.7, 0.65, 0.9, 0.95]);
    let cfg = RunConfig {
        patience: Some(3),
        ..config(7)
    };
    let summary = fit(cfg, dir.path(), &mut task, &data, &data, None).unwrap();
    assert!(summary.stopped_early);
    assert_eq!(summary.epochs_done, 5);
    assert_eq!((summary.best, summary.best_epoch), (Some(0.7), Some(2)));
    let (_, best) = checkpoint::load(&dir.path().join("best.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(best.epoch, 2);
}

#[test]
fn checkpoints_round_trip_and_bad_files_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    let meta = CheckpointMeta {
        epoch: 3,
        step: 30,
        metrics: Metrics::from([("accuracy".into(), 0.5)]),
        best: Some(0.5),
        best_epoch: Some(3),
        epochs_since_best: 0,
        config: config(4),
    };
    let t = Tensor::arange(0f32, 6.0, &Device::Cpu)
        .unwrap()
        .reshape((2, 3))
        .unwrap();
    checkpoint::save(&path, &[("x".into(), t.clone())], &meta).unwrap();
    let (tensors, back) = checkpoint::load(&path, &Device::Cpu).unwrap();
    assert_eq!(back, meta);
    assert_eq!(
        tensors["x"].to_vec2::<f32>().unwrap(),
        t.to_vec2::<f32>().unwrap()
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary file is left behind"
    );

    std::fs::write(&path, b"garbage").unwrap();
    let err = checkpoint::load(&path, &Device::Cpu).unwrap_err();
    assert!(
        matches!(err, TrainError::Checkpoint { .. }) && err.to_string().contains("c.safetensors"),
        "{err}"
    );

    checkpoint::save_weights(&path, &[("x".into(), t)]).unwrap();
    let err = checkpoint::load(&path, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("not a forja checkpoint"), "{err}");
}

#[test]
fn invalid_configs_are_rejected_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        RunConfig {
            epochs: 0,
            ..config(1)
        },
        RunConfig {
            batch_size: 0,
            ..config(1)
        },
        RunConfig {
            clip_norm: Some(-1.0),
            ..config(1)
        },
        RunConfig {
            log_every: 0,
            ..config(1)
        },
    ];
    for cfg in bad {
        assert!(
            Trainer::new(cfg.clone(), dir.path(), &Device::Cpu).is_err(),
            "{cfg:?}"
        );
    }
}
