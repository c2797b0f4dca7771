//! Learning-rate schedules: a factor applied to the optimizer's base learning rate.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` every `every` epochs.
    Step {
        every: usize,
        gamma: f64,
    },
    /// Cosine decay over the whole run, from 1 down to `min_factor`.
    Cosine {
        min_factor: f64,
    },
}

impl Schedule {
    /// The factor for global `step` (0-based) in `epoch`, out of `total_steps`, after a linear
    /// warm-up of `warmup_steps` steps.
    pub fn factor(
        &self,
        step: usize,
        epoch: usize,
        total_steps: usize,
        warmup_steps: usize,
    ) -> f64 {
        let base = match *self {
            Schedule::Constant => 1.0,
            Schedule::Step { every, gamma } => gamma.powi((epoch / every.max(1)) as i32),
            Schedule::Cosine { min_factor } => {
                let progress = step as f64 / total_steps.max(1) as f64;
                min_factor
                    + (1.0 - min_factor)
                        * 0.5
                        * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
            }
        };
        if step < warmup_steps {
            base * (step + 1) as f64 / warmup_steps as f64
        } else {
            base
        }
    }
}
