//! Normalisation layers: batch norm (with running statistics and a train/eval switch),
//! layer norm and group norm, composed from differentiable candle ops.

use candle_core::{Module, ModuleT, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use crate::error::{LayerError, Result};
use crate::kernels;

/// Settings of [`BatchNorm`] (PyTorch's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormConfig {
    pub eps: f64,
    /// Weight of the new batch statistic in the running average.
    pub momentum: f64,
    /// Learn a per-channel scale (`weight`) and shift (`bias`).
    pub affine: bool,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        Self {
            eps: 1e-5,
            momentum: 0.1,
            affine: true,
        }
    }
}

/// Batch normalisation over channel dim 1 of `[N, C]`, `[N, C, L]` or `[N, C, H, W]`
/// (BatchNorm1d and BatchNorm2d in one). Training normalises with the batch statistics and
/// updates the running ones (variance unbiased, as PyTorch); evaluation uses the running ones.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    running_mean: Var,
    running_var: Var,
    cfg: BatchNormConfig,
}

impl BatchNorm {
    /// Parameters `weight`, `bias` and buffers `running_mean`, `running_var` in `vb`; the
    /// buffers get no gradient, so optimizers leave them alone.
    pub fn new(channels: usize, cfg: BatchNormConfig, vb: VarBuilder) -> Result<Self> {
        let (weight, bias) = affine_params(channels, cfg.affine, &vb)?;
        let mean = vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?;
        let var = vb.get_with_hints(channels, "running_var", Init::Const(1.0))?;
        Self::from_parts(weight, bias, mean, var, cfg)
    }

    /// A layer from existing tensors; the running statistics are updated in place when they
    /// are variables, and copied otherwise.
    pub fn from_parts(
        weight: Option<Tensor>,
        bias: Option<Tensor>,
        running_mean: Tensor,
        running_var: Tensor,
        cfg: BatchNormConfig,
    ) -> Result<Self> {
        if !(0.0..=1.0).contains(&cfg.momentum) || cfg.eps <= 0.0 {
            return Err(LayerError::config(
                "batch_norm",
                format!(
                    "momentum {} must be in [0, 1] and eps {} positive",
                    cfg.momentum, cfg.eps
                ),
            ));
        }
        Ok(Self {
            weight,
            bias,
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            cfg,
        })
    }

    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        let d = x.dims();
        let c = self.running_mean.elem_count();
        if !(2..=4).contains(&d.len()) || d[1] != c {
            return Err(LayerError::shape(
                "batch_norm",
                format!("[N, {c}], [N, {c}, L] or [N, {c}, H, W]"),
                d,
            ));
        }
        Ok(())
    }

    /// Running statistics move towards the batch's `mean` and (biased) `var`, the latter made
    /// unbiased over `count` values per channel.
    fn update_running(&self, mean: &Tensor, var: &Tensor, count: usize) -> Result<()> {
        let m = self.cfg.momentum;
        let unbiased = (var.detach() * (count as f64 / (count - 1) as f64))?;
        let rm = self.running_mean.as_tensor();
        let rv = self.running_var.as_tensor();
        let new_mean =
            ((rm * (1.0 - m))? + (mean.detach().flatten_all()?.to_dtype(rm.dtype())? * m)?)?;
        let new_var = ((rv * (1.0 - m))? + (unbiased.flatten_all()?.to_dtype(rv.dtype())? * m)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)?;
        Ok(())
    }

    /// Training mode with forja's CPU kernels: per channel, the statistics, the normalisation
    /// (and the ReLU after it, if `relu`) while the channel is in the cache; the backward
    /// pass likewise.
    fn normalize_kernel(&self, x3: &Tensor, count: usize, relu: bool) -> Result<Tensor> {
        let (c, dev) = (x3.dim(1)?, x3.device());
        let ones = || Tensor::ones(c, x3.dtype(), dev);
        let w = self.weight.clone().map_or_else(ones, Ok)?;
        let b = self.bias.clone().map_or_else(|| w.zeros_like(), Ok)?;
        let (y, mean, var) = kernels::batch_norm_train(x3, self.cfg.eps, (&w, &b), relu)?;
        self.update_running(
            &Tensor::from_slice(&mean, c, dev)?,
            &Tensor::from_slice(&var, c, dev)?,
            count,
        )?;
        Ok(y)
    }

    /// Works on the `[N, C, S]` view (S = spatial size): per-channel statistics are a fast
    /// last-dim reduction followed by a small one over the batch, and the normalisation is
    /// folded into one per-channel scale and shift; `relu` applies a ReLU to the result.
    fn normalize(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        self.check(x)?;
        let (n, c) = (x.dim(0)?, x.dim(1)?);
        let x3 = x.reshape((n, c, ()))?;
        let (mean, var) = if train {
            let count = x.elem_count() / c;
            if count < 2 {
                return Err(LayerError::shape(
                    "batch_norm",
                    "more than one value per channel in training mode",
                    x.dims(),
                ));
            }
            let params: Vec<&Tensor> = self.weight.iter().chain(&self.bias).collect();
            if kernels::applies(&[&[&x3], &params[..]].concat()) {
                return Ok(self.normalize_kernel(&x3, count, relu)?.reshape(x.dims())?);
            }
            let mean = (x3.sum_keepdim(2)?.sum_keepdim(0)? / count as f64)?;
            let var = (x3
                .broadcast_sub(&mean)?
                .sqr()?
                .sum_keepdim(2)?
                .sum_keepdim(0)?
                / count as f64)?;
            self.update_running(&mean, &var, count)?;
            (mean, var)
        } else {
            let stat = |t: &Var| t.as_tensor().to_dtype(x.dtype())?.reshape((1, c, 1));
            (stat(&self.running_mean)?, stat(&self.running_var)?)
        };
        // y = (x - mean) * scale + bias, with scale = weight / sqrt(var + eps).
        let mut scale = (var + self.cfg.eps)?.sqrt()?.recip()?;
        if let Some(w) = &self.weight {
            scale = scale.broadcast_mul(&w.reshape((1, c, 1))?)?;
        }
        let mut shift = mean.neg()?.mul(&scale)?;
        if let Some(b) = &self.bias {
            shift = shift.broadcast_add(&b.reshape((1, c, 1))?)?;
        }
        let y = x3.broadcast_mul(&scale)?.broadcast_add(&shift)?;
        let y = if relu { crate::relu(&y)? } else { y };
        Ok(y.reshape(x.dims())?)
    }

    /// `relu(batch_norm(x))` as one operation where forja's kernels apply (training mode on
    /// the CPU): it stores one activation fewer for the backward pass and makes one pass less.
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.normalize(x, train, true)
    }
}

/// PyTorch's names for the two uses of [`BatchNorm`]: `[N, C]` / `[N, C, L]` inputs...
pub type BatchNorm1d = BatchNorm;
/// ...and `[N, C, H, W]` inputs.
pub type BatchNorm2d = BatchNorm;

/// The learnable scale (`weight`, starting at 1) and shift (`bias`, at 0) of a normalisation,
/// or none when it has no affine part.
fn affine_params(
    shape: impl Into<candle_core::Shape> + Copy,
    affine: bool,
    vb: &VarBuilder,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    if !affine {
        return Ok((None, None));
    }
    Ok((
        Some(vb.get_with_hints(shape, "weight", Init::Const(1.0))?),
        Some(vb.get_with_hints(shape, "bias", Init::Const(0.0))?),
    ))
}

/// `(x - mean) / sqrt(var + eps)` with the (biased) statistics over `dims`.
fn standardize(x: &Tensor, dims: &[usize], eps: f64) -> Result<Tensor> {
    let centered = x.broadcast_sub(&x.mean_keepdim(dims)?)?;
    let var = centered.sqr()?.mean_keepdim(dims)?;
    Ok(centered.broadcast_div(&(var + eps)?.sqrt()?)?)
}

fn affine(
    y: Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    shape: &[usize],
) -> Result<Tensor> {
    let y = match weight {
        Some(w) => y.broadcast_mul(&w.reshape(shape)?)?,
        None => y,
    };
    Ok(match bias {
        Some(b) => y.broadcast_add(&b.reshape(shape)?)?,
        None => y,
    })
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(self.normalize(x, train, false)?)
    }
}

/// Normalises over the trailing `normalized_shape` dims of each sample, then applies an
/// element-wise affine map of that shape.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    normalized_shape: Vec<usize>,
    eps: f64,
}

impl LayerNorm {
    pub fn new(normalized_shape: &[usize], eps: f64, affine: bool, vb: VarBuilder) -> Result<Self> {
        let (w, b) = affine_params(normalized_shape, affine, &vb)?;
        Ok(Self::from_parts(w, b, normalized_shape, eps))
    }

    pub fn from_parts(
        weight: Option<Tensor>,
        bias: Option<Tensor>,
        normalized_shape: &[usize],
        eps: f64,
    ) -> Self {
        Self {
            weight,
            bias,
            normalized_shape: normalized_shape.to_vec(),
            eps,
        }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let d = x.dims();
        let k = self.normalized_shape.len();
        if d.len() < k || d[d.len() - k..] != self.normalized_shape[..] {
            return Err(LayerError::shape(
                "layer_norm",
                format!("trailing dims {:?}", self.normalized_shape),
                d,
            )
            .into());
        }
        let dims: Vec<usize> = (d.len() - k..d.len()).collect();
        let y = standardize(x, &dims, self.eps)?;
        Ok(affine(
            y,
            self.weight.as_ref(),
            self.bias.as_ref(),
            &self.normalized_shape,
        )?)
    }
}

/// Group normalisation (Wu & He 2018): channels split into `groups`, each normalised over its
/// channels and spatial positions per sample; per-channel affine.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    groups: usize,
    channels: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new(
        groups: usize,
        channels: usize,
        eps: f64,
        affine: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (w, b) = affine_params(channels, affine, &vb)?;
        Self::from_parts(w, b, groups, channels, eps)
    }

    pub fn from_parts(
        weight: Option<Tensor>,
        bias: Option<Tensor>,
        groups: usize,
        channels: usize,
        eps: f64,
    ) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(LayerError::config(
                "group_norm",
                format!("{channels} channels are not divisible into {groups} groups"),
            ));
        }
        Ok(Self {
            weight,
            bias,
            groups,
            channels,
            eps,
        })
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let d = x.dims().to_vec();
        if d.len() < 2 || d[1] != self.channels {
            return Err(
                LayerError::shape("group_norm", format!("[N, {}, ..]", self.channels), &d).into(),
            );
        }
        let g = x.reshape((d[0], self.groups, ()))?;
        let y = standardize(&g, &[2], self.eps)?.reshape(d.clone())?;
        let mut shape = vec![1; d.len()];
        shape[1] = self.channels;
        Ok(affine(y, self.weight.as_ref(), self.bias.as_ref(), &shape)?)
    }
}

/// AlexNet's local response normalisation across channels (Krizhevsky et al. 2012):
/// `b_i = a_i / (k + alpha * sum_{|j - i| <= size/2} a_j^2)^beta`.
/// This is the paper's formula; PyTorch's `LocalResponseNorm` divides `alpha` by `size`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalResponseNorm {
    pub size: usize,
    pub alpha: f64,
    pub beta: f64,
    pub k: f64,
}

impl Default for LocalResponseNorm {
    /// The constants of the AlexNet paper.
    fn default() -> Self {
        Self {
            size: 5,
            alpha: 1e-4,
            beta: 0.75,
            k: 2.0,
        }
    }
}

/// Local response normalisation of `x: [N, C, ..]` across channels with the given settings
/// (the functional form of [`LocalResponseNorm`]).
pub fn local_response_norm(x: &Tensor, lrn: &LocalResponseNorm) -> Result<Tensor> {
    let d = x.dims();
    if d.len() < 2 || lrn.size == 0 {
        return Err(LayerError::shape(
            "local_response_norm",
            "[N, C, ..] and size >= 1",
            d,
        ));
    }
    let c = d[1];
    let padded = x
        .sqr()?
        .pad_with_zeros(1, lrn.size / 2, (lrn.size - 1) / 2)?;
    let mut sum = padded.narrow(1, 0, c)?;
    for j in 1..lrn.size {
        sum = (sum + padded.narrow(1, j, c)?)?;
    }
    let denom = sum.affine(lrn.alpha, lrn.k)?.powf(lrn.beta)?;
    Ok(x.div(&denom)?)
}

impl Module for LocalResponseNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(local_response_norm(x, self)?)
    }
}
