//! Gradient checking: autograd against central finite differences, in f64.
//!
//! forja's tests run every op and module through [`check_gradients`]; it is public so the same
//! check can guard your own layers.

use candle_core::{DType, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{LayerError, Result};

/// Tolerances of a gradient check: `|autograd - numeric| <= atol + rtol * max(|autograd|, |numeric|)`.
#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    pub eps: f64,
    pub rtol: f64,
    pub atol: f64,
    /// Seed of the random projection `r` in the scalar loss `sum(f(x) * r)`.
    pub seed: u64,
}

impl Default for GradCheck {
    fn default() -> Self {
        Self {
            eps: 1e-6,
            rtol: 1e-5,
            atol: 1e-7,
            seed: 0,
        }
    }
}

/// Checks the gradient of `f` with respect to every tensor of `inputs` (converted to f64).
/// The output is reduced to a scalar with a fixed random projection, so every output element
/// contributes with a different weight. Returns the largest absolute difference seen.
pub fn check_gradients<F>(inputs: &[Tensor], f: F) -> Result<f64>
where
    F: Fn(&[Tensor]) -> candle_core::Result<Tensor>,
{
    GradCheck::default().run(inputs, f)
}

impl GradCheck {
    /// Whether `diff = |a - numeric|` is within tolerance; written so that a NaN on either side
    /// fails the check.
    fn agree(&self, diff: f64, a: f64, numeric: f64) -> bool {
        diff <= self.atol + self.rtol * a.abs().max(numeric.abs())
    }

    pub fn run<F>(&self, inputs: &[Tensor], f: F) -> Result<f64>
    where
        F: Fn(&[Tensor]) -> candle_core::Result<Tensor>,
    {
        let inputs = inputs
            .iter()
            .map(|t| t.to_dtype(DType::F64)?.detach().contiguous())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let vars = inputs
            .iter()
            .map(|t| Var::from_tensor(&t.copy()?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let var_tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&var_tensors)?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let r: Vec<f64> = (0..y.elem_count())
            .map(|_| rng.gen_range(-1.0..1.0))
            .collect();
        let r = Tensor::from_vec(r, y.shape(), y.device())?;
        let loss = |y: &Tensor| -> Result<f64> {
            Ok((y.to_dtype(DType::F64)? * &r)?
                .sum_all()?
                .to_scalar::<f64>()?)
        };
        let grads = (y.to_dtype(DType::F64)? * &r)?.sum_all()?.backward()?;

        let mut worst = 0.0f64;
        for (i, (input, var)) in inputs.iter().zip(&vars).enumerate() {
            let analytic = match grads.get(var.as_tensor()) {
                Some(g) => g.flatten_all()?.to_vec1::<f64>()?,
                None => vec![0.0; input.elem_count()],
            };
            let base = input.flatten_all()?.to_vec1::<f64>()?;
            for (j, &a) in analytic.iter().enumerate() {
                let eval = |delta: f64| -> Result<f64> {
                    let mut data = base.clone();
                    data[j] += delta;
                    let mut args = inputs.clone();
                    args[i] = Tensor::from_vec(data, input.shape(), input.device())?;
                    loss(&f(&args)?)
                };
                let numeric = (eval(self.eps)? - eval(-self.eps)?) / (2.0 * self.eps);
                let diff = (a - numeric).abs();
                worst = worst.max(diff);
                if !self.agree(diff, a, numeric) {
                    return Err(LayerError::GradCheck(format!(
                        "input {i} {:?}, element {j}: autograd {a:.10e} vs finite difference {numeric:.10e}",
                        input.dims()
                    )));
                }
            }
        }
        Ok(worst)
    }

    /// Checks the gradient of the scalar `loss` with respect to every element of the model
    /// variables `vars` (f64), perturbing each in place and restoring it. A variable without
    /// a gradient must have a zero finite difference. Returns the largest difference seen.
    pub fn run_vars<F>(&self, vars: &[(String, Var)], loss: F) -> Result<f64>
    where
        F: Fn() -> candle_core::Result<Tensor>,
    {
        let value = |t: Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
        let grads = loss()?.backward()?;
        let mut worst = 0.0f64;
        for (name, var) in vars {
            let base = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
            let analytic = match grads.get(var.as_tensor()) {
                Some(g) => g.flatten_all()?.to_vec1::<f64>()?,
                None => vec![0.0; base.len()],
            };
            for (j, &a) in analytic.iter().enumerate() {
                let eval = |delta: f64| -> Result<f64> {
                    let mut data = base.clone();
                    data[j] += delta;
                    var.set(&Tensor::from_vec(data, var.shape(), var.device())?)?;
                    value(loss()?)
                };
                let numeric = (eval(self.eps)? - eval(-self.eps)?) / (2.0 * self.eps);
                var.set(&Tensor::from_vec(base.clone(), var.shape(), var.device())?)?;
                let diff = (a - numeric).abs();
                worst = worst.max(diff);
                if !self.agree(diff, a, numeric) {
                    return Err(LayerError::GradCheck(format!(
                        "{name}, element {j}: autograd {a:.10e} vs finite difference {numeric:.10e}"
                    )));
                }
            }
        }
        Ok(worst)
    }
}
