//! Dropout with its own seeded random stream, so runs are reproducible.

use std::sync::Mutex;

use candle_core::{ModuleT, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{LayerError, Result};

/// In training, zeroes each element with probability `p` and scales the rest by `1 / (1 - p)`
/// (inverted dropout, so evaluation is the identity).
#[derive(Debug)]
pub struct Dropout {
    p: f64,
    rng: Mutex<ChaCha8Rng>,
}

impl Dropout {
    pub fn new(p: f64, seed: u64) -> Result<Self> {
        check_p(p)?;
        Ok(Self {
            p,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        })
    }

    pub fn p(&self) -> f64 {
        self.p
    }
}

fn check_p(p: f64) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(LayerError::config(
            "dropout",
            format!("p = {p} must be in [0, 1)"),
        ));
    }
    Ok(())
}

/// Applies a dropout mask drawn from `rng` (the functional form of [`Dropout`]).
pub fn dropout(x: &Tensor, p: f64, rng: &mut impl Rng) -> Result<Tensor> {
    check_p(p)?;
    if p == 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f64> = (0..x.elem_count())
        .map(|_| if rng.gen::<f64>() < p { 0.0 } else { keep })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}

impl ModuleT for Dropout {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if !train {
            return Ok(x.clone());
        }
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        Ok(dropout(x, self.p, &mut *rng)?)
    }
}
