//! Upsampling: nearest neighbour (any integer or fractional factor, different per axis) and
//! bilinear (align_corners true or false), to a size or by a factor.
//!
//! Nearest is a row and a column `index_select`; bilinear is `A_h x A_w^T` with small
//! interpolation matrices. Both are plain differentiable candle ops, so the backward pass
//! exists for every factor (candle's own covers nearest with equal integer factors only).

use candle_core::{Module, Tensor};

use crate::error::{dims_of, LayerError, Result};

/// Target of an upsampling: an output size or a scale factor per axis (`[height, width]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    Size([usize; 2]),
    /// Output size `floor(input * factor)` per axis.
    Scale([f64; 2]),
}

impl Target {
    fn resolve(self, h: usize, w: usize, op: &'static str) -> Result<[usize; 2]> {
        let size = match self {
            Target::Size(s) => s,
            Target::Scale([fh, fw]) => {
                if !(fh > 0.0 && fw > 0.0 && fh.is_finite() && fw.is_finite()) {
                    return Err(LayerError::config(
                        op,
                        format!("scale factors {fh}, {fw} must be positive"),
                    ));
                }
                [
                    (h as f64 * fh).floor() as usize,
                    (w as f64 * fw).floor() as usize,
                ]
            }
        };
        if size[0] == 0 || size[1] == 0 {
            return Err(LayerError::config(
                op,
                format!("output size {size:?} is empty"),
            ));
        }
        Ok(size)
    }
}

/// Nearest-neighbour resize of `x: [N, C, H, W]`: output `o` reads input `floor(o * in / out)`.
pub fn upsample_nearest2d(x: &Tensor, target: Target) -> Result<Tensor> {
    const OP: &str = "upsample_nearest2d";
    let d = dims_of(x, 4, OP, "[N, C, H, W]")?;
    let [oh, ow] = target.resolve(d[2], d[3], OP)?;
    let rows = nearest_index(d[2], oh);
    let cols = nearest_index(d[3], ow);
    let x = x.contiguous()?;
    let x = x.index_select(&Tensor::new(rows, x.device())?, 2)?;
    Ok(x.index_select(&Tensor::new(cols, x.device())?, 3)?)
}

fn nearest_index(n: usize, out: usize) -> Vec<u32> {
    (0..out)
        .map(|o| ((o * n / out).min(n - 1)) as u32)
        .collect()
}

/// `[out, n]` matrix of linear interpolation weights (PyTorch's source-index conventions).
fn linear_matrix(n: usize, out: usize, align_corners: bool) -> Vec<f64> {
    let mut m = vec![0.0; out * n];
    for o in 0..out {
        let src = if align_corners {
            if out > 1 {
                o as f64 * (n - 1) as f64 / (out - 1) as f64
            } else {
                0.0
            }
        } else {
            ((o as f64 + 0.5) * n as f64 / out as f64 - 0.5).max(0.0)
        };
        let i0 = (src.floor() as usize).min(n - 1);
        let i1 = (i0 + 1).min(n - 1);
        let frac = (src - i0 as f64).clamp(0.0, 1.0);
        m[o * n + i0] += 1.0 - frac;
        m[o * n + i1] += frac;
    }
    m
}

/// Bilinear resize of `x: [N, C, H, W]`. With `align_corners` the corner pixels' centres
/// coincide; without it, pixels are areas and the corners are half a pixel in.
pub fn upsample_bilinear2d(x: &Tensor, target: Target, align_corners: bool) -> Result<Tensor> {
    const OP: &str = "upsample_bilinear2d";
    let d = dims_of(x, 4, OP, "[N, C, H, W]")?;
    let (h, w) = (d[2], d[3]);
    let [oh, ow] = target.resolve(h, w, OP)?;
    let dev = x.device();
    let ah =
        Tensor::from_vec(linear_matrix(h, oh, align_corners), (oh, h), dev)?.to_dtype(x.dtype())?;
    let aw =
        Tensor::from_vec(linear_matrix(w, ow, align_corners), (ow, w), dev)?.to_dtype(x.dtype())?;
    Ok(ah.broadcast_matmul(&x.broadcast_matmul(&aw.t()?)?)?)
}

/// How [`Upsample`] interpolates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsampleMode {
    Nearest,
    Bilinear { align_corners: bool },
}

/// Upsampling layer (no parameters).
#[derive(Debug, Clone, Copy)]
pub struct Upsample {
    pub target: Target,
    pub mode: UpsampleMode,
}

impl Module for Upsample {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(match self.mode {
            UpsampleMode::Nearest => upsample_nearest2d(x, self.target)?,
            UpsampleMode::Bilinear { align_corners } => {
                upsample_bilinear2d(x, self.target, align_corners)?
            }
        })
    }
}
