//! A density from a flow over a standard normal base: exact log-likelihood and sampling.

use std::f64::consts::TAU;

use candle_core::{DType, Device, Tensor, D};

use super::Flow;
use crate::Result;

/// `p(x) = N(f⁻¹(x); 0, I) |det ∂f⁻¹/∂x|`.
pub struct FlowDensity {
    pub flow: Box<dyn Flow>,
    pub dim: usize,
}

impl FlowDensity {
    pub fn new(flow: Box<dyn Flow>, dim: usize) -> Self {
        Self { flow, dim }
    }

    /// `log p(x)` per sample, `[N]`.
    pub fn log_prob(&self, x: &Tensor) -> Result<Tensor> {
        let (z, logdet) = self.flow.inverse(x)?;
        let base = ((z.sqr()?.sum(D::Minus1)? * -0.5)? - 0.5 * self.dim as f64 * TAU.ln())?;
        Ok((base + logdet)?)
    }

    /// `n` samples drawn with base noise of standard deviation `temperature`, reproducible for
    /// `seed`.
    pub fn sample(
        &self,
        n: usize,
        temperature: f64,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let mut rng = forja_data::seed::rng(seed, &[]);
        let z: Vec<f64> = (0..n * self.dim)
            .map(|_| temperature * forja_data::seed::normal(&mut rng))
            .collect();
        let z = Tensor::from_vec(z, (n, self.dim), device)?.to_dtype(dtype)?;
        Ok(self.flow.forward_detached(&z)?.0)
    }
}
