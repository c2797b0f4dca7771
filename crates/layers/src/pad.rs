//! Padding of 1-D and 2-D signals with the boundary conditions of the course.
//!
//! Every mode except `Zeros` is a gather of input samples (`index_select`), so autograd routes
//! each padded sample's gradient back to the sample it copies.

use candle_core::Tensor;

use crate::error::{LayerError, Result};

/// How a signal is extended beyond its border. "Valid" convolution is simply no padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PadMode {
    /// Zeros outside the signal.
    #[default]
    Zeros,
    /// Periodic extension: `x[i mod n]`.
    Circular,
    /// Mirror at the border without repeating the edge: `.. x2 x1 | x0 x1 x2 ..`.
    Reflect,
    /// Repeat the edge sample: `.. x0 x0 | x0 x1 ..`.
    Replicate,
}

impl PadMode {
    /// The input index that padded position `i` (may be negative or `>= n`) reads, or `None`
    /// where the padded value is zero.
    pub fn source_index(self, i: isize, n: usize) -> Option<usize> {
        let n = n as isize;
        if (0..n).contains(&i) {
            return Some(i as usize);
        }
        match self {
            PadMode::Zeros => None,
            PadMode::Circular => Some(i.rem_euclid(n) as usize),
            PadMode::Reflect => {
                // Reflection is periodic with period 2(n - 1); fold into [0, n).
                let period = 2 * (n - 1).max(1);
                let j = i.rem_euclid(period);
                Some((if j < n { j } else { period - j }) as usize)
            }
            PadMode::Replicate => Some(i.clamp(0, n - 1) as usize),
        }
    }

    /// The widest padding the mode allows on a side of a signal of length `n` (as PyTorch).
    fn max_width(self, n: usize) -> usize {
        match self {
            PadMode::Zeros => usize::MAX,
            PadMode::Circular => n,
            PadMode::Reflect => n.saturating_sub(1),
            PadMode::Replicate => {
                if n == 0 {
                    0
                } else {
                    usize::MAX
                }
            }
        }
    }
}

/// Pads dimension `dim` of `x` with `lo` samples before and `hi` after.
pub fn pad_dim(x: &Tensor, dim: usize, lo: usize, hi: usize, mode: PadMode) -> Result<Tensor> {
    if lo == 0 && hi == 0 {
        return Ok(x.clone());
    }
    let n = x.dim(dim)?;
    let limit = mode.max_width(n);
    if lo > limit || hi > limit {
        return Err(LayerError::config(
            "pad",
            format!(
                "{mode:?} padding of ({lo}, {hi}) is too wide for a dimension of size {n} (at most {limit})"
            ),
        ));
    }
    if mode == PadMode::Zeros {
        return Ok(x.pad_with_zeros(dim, lo, hi)?);
    }
    let idx: Vec<u32> = (-(lo as isize)..(n + hi) as isize)
        .map(|i| {
            mode.source_index(i, n)
                .expect("non-zero modes always read a sample") as u32
        })
        .collect();
    let idx = Tensor::new(idx, x.device())?;
    Ok(x.contiguous()?.index_select(&idx, dim)?)
}

/// Pads the last dimension of `x` (`[.., L]`) by `[left, right]`.
pub fn pad1d(x: &Tensor, [left, right]: [usize; 2], mode: PadMode) -> Result<Tensor> {
    let dim = x
        .dims()
        .len()
        .checked_sub(1)
        .ok_or_else(|| LayerError::shape("pad1d", "at least one dimension", x.dims()))?;
    pad_dim(x, dim, left, right, mode)
}

/// Pads the last two dimensions of `x` (`[.., H, W]`) by `[top, bottom, left, right]`.
pub fn pad2d(x: &Tensor, [top, bottom, left, right]: [usize; 4], mode: PadMode) -> Result<Tensor> {
    let rank = x.dims().len();
    if rank < 2 {
        return Err(LayerError::shape(
            "pad2d",
            "at least two dimensions",
            x.dims(),
        ));
    }
    let x = pad_dim(x, rank - 2, top, bottom, mode)?;
    pad_dim(&x, rank - 1, left, right, mode)
}
