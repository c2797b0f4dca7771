//! The parameters of a model and the optimizer that trains them: what a task with one
//! optimizer saves, restores and counts.

use std::collections::HashMap;

use candle_core::Tensor;

use crate::{Optimizer, OptimizerConfig, ParamStore, Result};

/// Prefix of optimizer entries in a checkpoint, beside the plain weight names.
const OPTIM: &str = "optim";

pub struct TrainState {
    pub params: ParamStore,
    pub optimizer: Optimizer,
}

impl TrainState {
    /// An optimizer over the trainable parameters of `params` (built models, so all exist).
    pub fn new(params: ParamStore, cfg: OptimizerConfig) -> Result<Self> {
        let optimizer = Optimizer::new(cfg, params.trainable_vars())?;
        Ok(Self { params, optimizer })
    }

    /// The weights, with the names they have in a PyTorch `state_dict`.
    pub fn weights(&self) -> Vec<(String, Tensor)> {
        self.params
            .vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect()
    }

    /// Weights plus optimizer state.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut state = self.weights();
        state.extend(self.optimizer.state(OPTIM)?);
        Ok(state)
    }

    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.params.load(state)?;
        self.optimizer.load_state(OPTIM, state)
    }

    pub fn num_params(&self) -> usize {
        self.params.num_params()
    }
}

/// Implements the state methods of [`crate::Task`] (`weights`, `state`, `load_state`,
/// `num_params`) inside an `impl Task` block by delegating to a [`TrainState`] field.
#[macro_export]
macro_rules! delegate_train_state {
    ($field:ident) => {
        fn weights(&self) -> Vec<(String, ::candle_core::Tensor)> {
            self.$field.weights()
        }

        fn state(&self) -> $crate::Result<Vec<(String, ::candle_core::Tensor)>> {
            self.$field.state()
        }

        fn load_state(
            &mut self,
            state: &::std::collections::HashMap<String, ::candle_core::Tensor>,
        ) -> $crate::Result<()> {
            self.$field.load_state(state)
        }

        fn num_params(&self) -> usize {
            self.$field.num_params()
        }
    };
}
