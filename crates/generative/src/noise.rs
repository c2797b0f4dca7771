//! Seeded noise tensors: every random draw of the generative models (base samples,
//! reparametrization, dequantization, binarization, interpolation weights) comes from the
//! stream `(seed, path)`, so runs and their resumptions repeat exactly.

use candle_core::{DType, Device, Shape, Tensor};
use rand::Rng;

use crate::Result;

/// Standard normal noise of `shape`, drawn in f64 and converted to `dtype`.
pub fn standard_normal(
    shape: &[usize],
    seed: u64,
    path: &[u64],
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let mut rng = forja_data::seed::rng(seed, path);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| forja_data::seed::normal(&mut rng)).collect();
    Ok(Tensor::from_vec(v, shape, device)?.to_dtype(dtype)?)
}

/// Uniform noise on [0, 1) of `shape`, in f32.
pub fn uniform(
    shape: impl Into<Shape>,
    seed: u64,
    path: &[u64],
    device: &Device,
) -> Result<Tensor> {
    let shape = shape.into();
    let mut rng = forja_data::seed::rng(seed, path);
    let v: Vec<f32> = (0..shape.elem_count()).map(|_| rng.gen::<f32>()).collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}
