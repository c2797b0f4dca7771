//! The task shared by every image classifier: cross-entropy training, accuracy evaluation.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{ModuleT, VarBuilder};
use forja_data::Batch;

use crate::{Metrics, Monitor, ParamStore, Result, RunConfig, StepCtx, Task, TrainState};

pub struct Classifier {
    net: Box<dyn ModuleT>,
    train: TrainState,
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
        Ok(Self {
            net,
            train: TrainState::new(params, cfg.optimizer.clone())?,
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

/// Weight of each auxiliary head's loss (GoogLeNet's 0.3).
pub const AUX_LOSS_WEIGHT: f64 = 0.3;

/// The main logits and the training loss. A network with auxiliary classifiers returns
/// `[heads, N, classes]` in training mode, main head first; each auxiliary head's
/// cross-entropy is added with weight [`AUX_LOSS_WEIGHT`].
fn logits_and_loss(out: &Tensor, targets: &Tensor) -> Result<(Tensor, Tensor)> {
    if out.rank() != 3 {
        let loss = candle_nn::loss::cross_entropy(out, targets)?;
        return Ok((out.clone(), loss));
    }
    let main = out.get(0)?;
    let mut loss = candle_nn::loss::cross_entropy(&main, targets)?;
    for h in 1..out.dim(0)? {
        let aux = candle_nn::loss::cross_entropy(&out.get(h)?, targets)?;
        loss = (loss + (aux * AUX_LOSS_WEIGHT)?)?;
    }
    Ok((main, loss))
}

impl Task for Classifier {
    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Metrics> {
        let out = self.net.forward_t(&batch.inputs, true)?;
        let (logits, loss) = logits_and_loss(&out, &batch.targets)?;
        self.train
            .optimizer
            .backward_step(&loss, ctx.lr_factor, self.clip_norm)?;
        let n = batch.len() as f64;
        Ok(Metrics::from([
            ("loss".into(), crate::scalar(&loss)?),
            ("accuracy".into(), correct(&logits, &batch.targets)? / n),
        ]))
    }

    /// The input of the network's last recorded stage (e.g. LeNet-5's 84 `fc2` units),
    /// flattened per image, in evaluation mode.
    fn features(&mut self, x: &Tensor) -> Result<Tensor> {
        let (out, stages) = forja_layers::trace::capture(|| self.net.forward_t(x, false));
        out?;
        match stages.len() {
            n if n >= 2 => Ok(stages[n - 2].1.flatten_from(1)?),
            n => Err(crate::TrainError::Config(format!(
                "the network records {n} stages; features need at least two"
            ))),
        }
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
            loss_sum += crate::scalar(&loss)? * batch.len() as f64;
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

    crate::delegate_train_state!(train);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auxiliary_heads_add_their_weighted_cross_entropy_to_the_main_loss() {
        let dev = Device::Cpu;
        let heads = Tensor::randn(0f32, 1.0, (3, 4, 5), &dev).unwrap();
        let targets = Tensor::new(&[0u32, 4, 2, 1], &dev).unwrap();
        let ce = |h: usize| {
            candle_nn::loss::cross_entropy(&heads.get(h).unwrap(), &targets)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        let (main, loss) = logits_and_loss(&heads, &targets).unwrap();
        assert_eq!(main.dims(), &[4, 5]);
        let expected = ce(0) + AUX_LOSS_WEIGHT * (ce(1) + ce(2));
        let got = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
        let (_, plain) = logits_and_loss(&heads.get(0).unwrap(), &targets).unwrap();
        assert!((plain.to_scalar::<f32>().unwrap() as f64 - ce(0)).abs() < 1e-6);
    }
}
