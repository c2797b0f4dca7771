//! Trainable parameters with seeded, order-independent initialisation.
//!
//! candle's CPU random generator cannot be seeded, so models built through a `VarMap` start from
//! different weights on every run. [`ParamStore`] is a `VarBuilder` backend that draws each new
//! parameter from its own stream, seeded by the run seed and the parameter's name: the same seed
//! gives the same weights, whatever order the layers are built in.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::{Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use rand::Rng;

/// FNV-1a: a stable hash of a parameter's name (std's hasher may change between releases).
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Standard normal by Box-Muller (keeps the dependency list short).
fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn sample(init: Init, shape: &Shape, rng: &mut impl Rng) -> Vec<f64> {
    let n = shape.elem_count();
    fn uniform(n: usize, lo: f64, up: f64, rng: &mut impl Rng) -> Vec<f64> {
        (0..n).map(|_| rng.gen_range(lo..up)).collect()
    }
    match init {
        Init::Const(c) => vec![c; n],
        Init::Uniform { lo, up } => uniform(n, lo, up, rng),
        Init::Randn { mean, stdev } => (0..n).map(|_| mean + stdev * normal(rng)).collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => uniform(n, -3f64.sqrt() * std, 3f64.sqrt() * std, rng),
                NormalOrUniform::Normal => (0..n).map(|_| std * normal(rng)).collect(),
            }
        }
    }
}

/// A named set of trainable variables, shared by the model that reads them through a
/// [`VarBuilder`] and the optimizer that updates them.
#[derive(Clone)]
pub struct ParamStore {
    vars: Arc<Mutex<BTreeMap<String, Var>>>,
    seed: u64,
}

impl ParamStore {
    pub fn new(seed: u64) -> Self {
        Self {
            vars: Arc::default(),
            seed,
        }
    }

    /// A builder whose `get` creates (or returns) the parameter of that name.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// All parameters, sorted by name (a fixed order keeps reductions over them reproducible).
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The trainable parameters: every variable except normalisation buffers.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        self.vars()
            .into_iter()
            .filter(|(n, _)| !is_buffer(n))
            .collect()
    }

    /// Number of trainable scalar parameters (buffers such as BatchNorm's running statistics
    /// are state, not parameters, as in PyTorch's counts).
    pub fn num_params(&self) -> usize {
        self.lock()
            .iter()
            .filter(|(n, _)| !is_buffer(n))
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    /// Overwrites every parameter with the tensor of the same name in `tensors`.
    pub fn load(&self, tensors: &HashMap<String, Tensor>) -> candle_core::Result<()> {
        for (name, var) in self.lock().iter() {
            let t = tensors
                .get(name)
                .ok_or_else(|| candle_core::Error::Msg(format!("parameter `{name}` is missing")))?;
            if t.shape() != var.shape() {
                candle_core::bail!(
                    "parameter `{name}`: expected shape {:?}, found {:?}",
                    var.shape(),
                    t.shape()
                );
            }
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Var>> {
        // A poisoned lock only means another thread panicked while holding it; the map is intact.
        self.vars.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether a variable is a buffer updated by the forward pass rather than by the optimizer
/// (PyTorch's buffer names, which forja's layers use).
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

impl SimpleBackend for ParamStore {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut vars = self.lock();
        if let Some(var) = vars.get(name) {
            if var.shape() != &shape {
                candle_core::bail!(
                    "parameter `{name}` exists with shape {:?}, asked for {shape:?}",
                    var.shape()
                );
            }
            return Ok(var.as_tensor().clone());
        }
        let mut rng = forja_data::seed::rng(self.seed, &[name_hash(name)]);
        let values = sample(init, &shape, &mut rng);
        let var = Var::from_tensor(&Tensor::from_vec(values, shape, dev)?.to_dtype(dtype)?)?;
        vars.insert(name.to_string(), var.clone());
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.lock()
            .get(name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "parameter `{name}` does not exist; build it with a shape first"
                ))
            })
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }
}

/// A `VarBuilder` backend that only records the names and shapes asked for, handing out
/// zero-stride zero tensors: counts the parameters of a network of any size without
/// allocating or initialising its weights.
#[derive(Clone, Default)]
pub struct ParamCounter {
    shapes: Arc<Mutex<BTreeMap<String, Vec<usize>>>>,
}

impl ParamCounter {
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// Every name asked for with its shape, sorted by name.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Number of trainable scalar parameters (buffers excluded, as [`ParamStore::num_params`]).
    pub fn num_params(&self) -> usize {
        self.shapes()
            .iter()
            .filter(|(n, _)| !is_buffer(n))
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<usize>>> {
        // As for ParamStore: a poisoned lock leaves the map intact.
        self.shapes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SimpleBackend for ParamCounter {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.lock().insert(name.to_string(), shape.dims().to_vec());
        Tensor::zeros((), dtype, dev)?.broadcast_as(shape)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("parameter `{name}` has no shape: the counter needs one")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }
}
