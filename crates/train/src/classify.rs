//! The task shared by every image classifier: cross-entropy training, accuracy evaluation.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{ModuleT, VarBuilder};
use forja_data::Batch;

use crate::{Metrics, Monitor, Optimizer, ParamStore, Result, RunConfig, StepCtx, Task};

/// Prefix of optimizer entries in a checkpoint, beside the plain weight names.
const OPTIM: &str = "optim";

pub struct Classifier {
    net: Box<dyn ModuleT>,
    params: ParamStore,
    optimizer: Optimizer,
    clip_norm: Option<f64>,
}

impl Classifier {
    /// Builds the network with `build` from seeded parameters and an optimizer over the trainable ones.
    pub fn new(
        cfg: &RunConfig,
        device: &Device,
        build: impl FnOnce(VarBuilder) -> Result<Box<dyn ModuleT>>,
    ) -> Result<Self> {
        let params = ParamStore::new(cfg.seed);
        let net = build(params.var_builder(DType::F32, device))?;
        let optimizer = Optimizer::new(cfg.optimizer.clone(), params.trainable_vars())?;
        Ok(Self {
            net,
            params,
            optimizer,
            clip_norm: cfg.clip_norm,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.net.forward_t(x, train)?)
    }
}

/// Number of rows whose arg-max equals the target.
fn correct(logits: &Tensor, targets: &Tensor) -> Result<f64> {
    let pred = logits.argmax(D::Minus1)?;
    Ok(pred
        .eq(targets)?
        .to_dtype(DType::F64)?
        .sum_all()?
        .to_scalar::<f64>()?)
}

impl Task for Classifier {
    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Metrics> {
        let logits = self.net.forward_t(&batch.inputs, true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &batch.targets)?;
        self.optimizer
            .backward_step(&loss, ctx.lr_factor, self.clip_norm)?;
        let n = batch.len() as f64;
        Ok(Metrics::from([
            (
                "loss".into(),
                loss.to_dtype(DType::F64)?.to_scalar::<f64>()?,
            ),
            ("accuracy".into(), correct(&logits, &batch.targets)? / n),
        ]))
    }

    fn evaluate(
        &mut self,
        batches: &mut dyn Iterator<Item = forja_data::Result<Batch>>,
    ) -> Result<Metrics> {
        let (mut loss_sum, mut hits, mut n) = (0.0, 0.0, 0usize);
        for batch in batches {
            let batch = batch?;
            let logits = self.net.forward_t(&batch.inputs, false)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &batch.targets)?;
            loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()? * batch.len() as f64;
            hits += correct(&logits, &batch.targets)?;
            n += batch.len();
        }
        let n = n.max(1) as f64;
        Ok(Metrics::from([
            ("loss".into(), loss_sum / n),
            ("accuracy".into(), hits / n),
        ]))
    }

    fn monitor(&self) -> Monitor {
        Monitor {
            metric: "accuracy",
            maximize: true,
        }
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
        state.extend(self.optimizer.state(OPTIM)?);
        Ok(state)
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.params.load(state)?;
        self.optimizer.load_state(OPTIM, state)
    }

    fn num_params(&self) -> usize {
        self.params.num_params()
    }
}
