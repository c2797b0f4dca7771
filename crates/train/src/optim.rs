//! Optimizers with savable state, following PyTorch's update rules so results compare directly.

use std::collections::HashMap;
use std::str::FromStr;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::{fused, Result, TrainError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Stochastic gradient descent, optionally with (Nesterov) momentum.
    Sgd,
    /// Adam; weight decay is added to the gradient (L2 penalty).
    Adam,
    /// Adam with decoupled weight decay (Loshchilov & Hutter).
    Adamw,
    /// RMSprop, optionally with momentum.
    Rmsprop,
}

impl FromStr for OptimizerKind {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(Self::Sgd),
            "adam" => Ok(Self::Adam),
            "adamw" => Ok(Self::Adamw),
            "rmsprop" => Ok(Self::Rmsprop),
            _ => Err(TrainError::Config(format!(
                "unknown optimizer `{s}` (sgd, adam, adamw, rmsprop)"
            ))),
        }
    }
}

/// Hyper-parameters of an optimizer; fields a kind does not use are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f64,
    /// SGD and RMSprop momentum.
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    /// Adam's decay rates of the first and second moment.
    pub betas: (f64, f64),
    /// RMSprop's decay rate of the squared gradient.
    pub alpha: f64,
    pub eps: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Adam,
            lr: 1e-3,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            betas: (0.9, 0.999),
            alpha: 0.99,
            eps: 1e-8,
        }
    }
}

/// One optimizer over a fixed list of named variables.
///
/// Its buffers (momentum, moment estimates) and step count are exposed by [`Optimizer::state`]
/// and restored by [`Optimizer::load_state`], so a resumed run continues exactly.
pub struct Optimizer {
    cfg: OptimizerConfig,
    vars: Vec<(String, Var)>,
    /// Per variable, the buffers named by `buffer_names`, created on first use.
    buffers: Vec<[Option<Tensor>; 2]>,
    steps: u64,
    /// Whether CPU updates take the fused in-place path (tests compare it with the other).
    fused: bool,
}

impl Optimizer {
    pub fn new(cfg: OptimizerConfig, vars: Vec<(String, Var)>) -> Result<Self> {
        if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
            return Err(TrainError::Config(format!(
                "learning rate must be positive, got {}",
                cfg.lr
            )));
        }
        if cfg.nesterov && (cfg.kind != OptimizerKind::Sgd || cfg.momentum <= 0.0) {
            return Err(TrainError::Config(
                "Nesterov momentum needs SGD with momentum > 0".into(),
            ));
        }
        let buffers = vec![[None, None]; vars.len()];
        Ok(Self {
            cfg,
            vars,
            buffers,
            steps: 0,
            fused: true,
        })
    }

    pub fn config(&self) -> &OptimizerConfig {
        &self.cfg
    }

    /// Number of updates made so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    fn buffer_names(&self) -> [&'static str; 2] {
        match self.cfg.kind {
            OptimizerKind::Sgd => ["momentum", "unused"],
            OptimizerKind::Adam | OptimizerKind::Adamw => ["exp_avg", "exp_avg_sq"],
            OptimizerKind::Rmsprop => ["square_avg", "momentum"],
        }
    }

    /// Computes gradients of `loss`, clips them to `clip_norm` if given, and updates the
    /// variables with learning rate `lr_factor * lr`. Returns the gradient norm before clipping
    /// when clipping is on.
    pub fn backward_step(
        &mut self,
        loss: &Tensor,
        lr_factor: f64,
        clip_norm: Option<f64>,
    ) -> Result<Option<f64>> {
        let mut grads = loss.backward()?;
        let norm = match clip_norm {
            Some(max) => Some(clip_grad_norm(&mut grads, &self.vars, max)?),
            None => None,
        };
        self.step(&grads, lr_factor)?;
        Ok(norm)
    }

    /// One update from `grads`; variables without a gradient are left unchanged.
    pub fn step(&mut self, grads: &GradStore, lr_factor: f64) -> Result<()> {
        self.steps += 1;
        let c = self.cfg.clone();
        let lr = c.lr * lr_factor;
        let t = self.steps as i32;
        for ((_, var), [b0, b1]) in self.vars.iter().zip(self.buffers.iter_mut()) {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Detached: gradients and the variable are tracked tensors, and buffers built from
            // them would chain every step's graph to the next (memory growing without bound).
            let p = var.as_tensor().detach();
            let mut g = grad.detach();
            if c.weight_decay != 0.0 && c.kind != OptimizerKind::Adamw {
                g = (g + p.affine(c.weight_decay, 0.0)?)?;
            }
            if self.fused
                && c.kind != OptimizerKind::Rmsprop
                && forja_layers::kernels::cpu_float(&[&p, &g])
            {
                fused_update(&c, t, lr, var.as_tensor(), &g.contiguous()?, [b0, b1])?;
                continue;
            }
            let next = match c.kind {
                OptimizerKind::Sgd => {
                    if c.momentum != 0.0 {
                        let buf = match b0.take() {
                            Some(b) => (b.affine(c.momentum, 0.0)? + &g)?,
                            None => g.clone(),
                        };
                        g = if c.nesterov {
                            (g + buf.affine(c.momentum, 0.0)?)?
                        } else {
                            buf.clone()
                        };
                        *b0 = Some(buf);
                    }
                    (&p - g.affine(lr, 0.0)?)?
                }
                OptimizerKind::Adam | OptimizerKind::Adamw => {
                    let (beta1, beta2) = c.betas;
                    let m = ema(b0.take(), &g, beta1)?;
                    let v = ema(b1.take(), &g.sqr()?, beta2)?;
                    let bc1 = 1.0 - beta1.powi(t);
                    let bc2 = 1.0 - beta2.powi(t);
                    let denom = (v.affine(1.0 / bc2, 0.0)?.sqrt()? + c.eps)?;
                    let decayed = if c.kind == OptimizerKind::Adamw && c.weight_decay != 0.0 {
                        p.affine(1.0 - lr * c.weight_decay, 0.0)?
                    } else {
                        p
                    };
                    let next = (decayed - (m.affine(lr / bc1, 0.0)? / denom)?)?;
                    *b0 = Some(m);
                    *b1 = Some(v);
                    next
                }
                OptimizerKind::Rmsprop => {
                    let v = ema(b0.take(), &g.sqr()?, c.alpha)?;
                    let scaled = (&g / (v.sqrt()? + c.eps)?)?;
                    *b0 = Some(v);
                    let update = if c.momentum != 0.0 {
                        let buf = match b1.take() {
                            Some(b) => (b.affine(c.momentum, 0.0)? + &scaled)?,
                            None => scaled,
                        };
                        *b1 = Some(buf.clone());
                        buf
                    } else {
                        scaled
                    };
                    (&p - update.affine(lr, 0.0)?)?
                }
            };
            var.set(&next)?;
        }
        Ok(())
    }

    /// The step count and every buffer, named `<prefix>.<buffer>.<variable>`.
    pub fn state(&self, prefix: &str) -> Result<Vec<(String, Tensor)>> {
        let names = self.buffer_names();
        let device = self
            .vars
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let mut out = vec![(
            format!("{prefix}.steps"),
            Tensor::new(&[self.steps as f64], &device)?,
        )];
        for ((name, _), bufs) in self.vars.iter().zip(&self.buffers) {
            for (buf_name, buf) in names.iter().zip(bufs) {
                if let Some(b) = buf {
                    // A copy: the fused updates go on writing the buffers in place.
                    out.push((format!("{prefix}.{buf_name}.{name}"), b.copy()?));
                }
            }
        }
        Ok(out)
    }

    /// Restores what [`Optimizer::state`] saved under the same `prefix`.
    pub fn load_state(&mut self, prefix: &str, state: &HashMap<String, Tensor>) -> Result<()> {
        let key = format!("{prefix}.steps");
        let steps = state
            .get(&key)
            .ok_or_else(|| TrainError::Config(format!("optimizer state `{key}` missing")))?;
        self.steps = steps.flatten_all()?.to_vec1::<f64>()?[0] as u64;
        let names = self.buffer_names();
        for ((name, var), bufs) in self.vars.iter().zip(self.buffers.iter_mut()) {
            for (buf_name, buf) in names.iter().zip(bufs.iter_mut()) {
                *buf = match state.get(&format!("{prefix}.{buf_name}.{name}")) {
                    Some(t) if t.shape() == var.shape() => {
                        // A copy: the fused updates write the buffers in place.
                        Some(t.to_dtype(var.dtype())?.to_device(var.device())?.copy()?)
                    }
                    Some(t) => {
                        return Err(TrainError::Config(format!(
                        "optimizer buffer {buf_name} of `{name}`: shape {:?}, parameter has {:?}",
                        t.shape(),
                        var.shape()
                    )))
                    }
                    None => None,
                };
            }
        }
        Ok(())
    }
}

/// One SGD or Adam(W) step of `p` (at step `t`, learning rate `lr`) as in-place passes over
/// CPU tensors: the same arithmetic as the candle-op path of [`Optimizer::step`].
fn fused_update(
    c: &OptimizerConfig,
    t: i32,
    lr: f64,
    p: &Tensor,
    g: &Tensor,
    [b0, b1]: [&mut Option<Tensor>; 2],
) -> Result<()> {
    match c.kind {
        OptimizerKind::Sgd if c.momentum == 0.0 => fused::descend(p, g, lr)?,
        OptimizerKind::Sgd => {
            let buf = match b0 {
                Some(buf) => {
                    fused::accumulate(buf, g, c.momentum)?;
                    buf
                }
                None => b0.insert(g.copy()?),
            };
            if c.nesterov {
                fused::descend(p, &(g + buf.affine(c.momentum, 0.0)?)?, lr)?;
            } else {
                fused::descend(p, buf, lr)?;
            }
        }
        OptimizerKind::Adam | OptimizerKind::Adamw => {
            let (beta1, beta2) = c.betas;
            let m = match b0 {
                Some(m) => m,
                None => b0.insert(p.zeros_like()?),
            };
            let v = match b1 {
                Some(v) => v,
                None => b1.insert(p.zeros_like()?),
            };
            let decay = if c.kind == OptimizerKind::Adamw {
                1.0 - lr * c.weight_decay
            } else {
                1.0
            };
            let adam = fused::Adam {
                beta1,
                beta2,
                decay,
                step: lr / (1.0 - beta1.powi(t)),
                bc2: 1.0 - beta2.powi(t),
                eps: c.eps,
            };
            adam.step(p, g, m, v)?;
        }
        OptimizerKind::Rmsprop => unreachable!("RMSprop takes the candle-op path"),
    }
    Ok(())
}

/// Exponential moving average `beta * prev + (1 - beta) * x`, starting from zero.
fn ema(prev: Option<Tensor>, x: &Tensor, beta: f64) -> Result<Tensor> {
    let fresh = x.affine(1.0 - beta, 0.0)?;
    Ok(match prev {
        Some(p) => (p.affine(beta, 0.0)? + fresh)?,
        None => fresh,
    })
}

/// Scales all gradients of `vars` so their global L2 norm is at most `max_norm` (as PyTorch's
/// `clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[(String, Var)], max_norm: f64) -> Result<f64> {
    let mut total = 0.0;
    for (_, var) in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            total += g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = total.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for (_, var) in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let scaled = g.affine(coef, 0.0)?;
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten steps of `cfg` on 70,000 f32 parameters (three chunks of the fused passes, the last
    /// partial) with gradients `sin(k * p)`, fused or not: the parameters, then the optimizer's
    /// buffers (a moment one rounding off need not change the parameter's bits).
    fn trajectory(cfg: &OptimizerConfig, fused: bool) -> Vec<f32> {
        let dev = candle_core::Device::Cpu;
        let init: Vec<f32> = (0..70_000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let var = Var::from_tensor(&Tensor::from_vec(init, (10, 7_000), &dev).unwrap()).unwrap();
        let mut opt = Optimizer::new(cfg.clone(), vec![("p".into(), var.clone())]).unwrap();
        opt.fused = fused;
        for k in 1..=10 {
            let loss = (var.as_tensor() * k as f64)
                .unwrap()
                .cos()
                .unwrap()
                .sum_all()
                .unwrap();
            opt.backward_step(&loss, 0.5, None).unwrap();
        }
        let state = opt
            .state("opt")
            .unwrap()
            .into_iter()
            .skip(1)
            .map(|(_, t)| t);
        [var.as_tensor().clone()]
            .into_iter()
            .chain(state)
            .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    }

    #[test]
    fn fused_updates_give_the_same_bits_as_the_candle_op_path() {
        let base = OptimizerConfig::default();
        let configs = [
            OptimizerConfig {
                kind: OptimizerKind::Sgd,
                lr: 0.1,
                ..base.clone()
            },
            OptimizerConfig {
                kind: OptimizerKind::Sgd,
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 1e-2,
                ..base.clone()
            },
            OptimizerConfig {
                kind: OptimizerKind::Sgd,
                lr: 0.1,
                momentum: 0.9,
                nesterov: true,
                ..base.clone()
            },
            OptimizerConfig {
                betas: (0.5, 0.9),
                weight_decay: 1e-2,
                ..base.clone()
            },
            OptimizerConfig {
                kind: OptimizerKind::Adamw,
                weight_decay: 1e-2,
                ..base.clone()
            },
        ];
        for cfg in configs {
            assert_eq!(trajectory(&cfg, true), trajectory(&cfg, false), "{cfg:?}");
        }
    }
}
