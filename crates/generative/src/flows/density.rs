//! A density from a flow over a standard normal base: exact log-likelihood and sampling.

use std::f64::consts::TAU;

use candle_core::{DType, Device, Tensor, D};

use super::Flow;
use crate::noise::standard_normal;
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
        // Scaled in f64 before the conversion, as the draws are.
        let z = (standard_normal(&[n, self.dim], seed, &[], DType::F64, device)? * temperature)?
            .to_dtype(dtype)?;
        Ok(self.flow.forward_detached(&z)?.0)
    }
}
