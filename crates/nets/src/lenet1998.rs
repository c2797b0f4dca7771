//! LeNet-5 as published (LeCun, Bottou, Bengio & Haffner 1998): 32x32 input, C1 6@5x5,
//! S2 trainable subsampling, C3 16@5x5 with the paper's partial S2->C3 connection table,
//! S4, C5 120@5x5, F6 84 and a Euclidean RBF output layer with fixed code vectors.
//!
//! The paper's "sigmoidal" squashing function is the scaled tanh `1.7159 tanh(2a/3)` (its
//! Appendix A); it follows S2, S4, C5 and F6. The RBF output `y_i = sum_j (x_j - w_ij)^2` is a
//! penalty, so the logits are `-y`; the code vectors are fixed +-1 vectors (the paper drew them
//! as 7x12 bitmaps of the characters; here they are seeded random bitmaps, which keeps them
//! fixed, far apart and non-trainable). 28x28 inputs are zero-padded to 32x32, as the paper
//! centred its 28x28 digits in a 32x32 field. Trainable parameters: C1 156, S2 12, C3 1,516,
//! S4 32, C5 48,120, F6 10,164 — 60,000 in all.

use candle_core::{Device, Module, ModuleT, Tensor};
use candle_nn::VarBuilder;
use forja_layers::trace::record;
use forja_layers::{linear, Activation, Conv2d, ConvConfig, Linear, Subsampling};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{NetError, Result};

/// Which S2 maps feed each C3 map (Table I of the paper).
pub const C3_TABLE: [&[usize]; 16] = [
    &[0, 1, 2],
    &[1, 2, 3],
    &[2, 3, 4],
    &[3, 4, 5],
    &[0, 4, 5],
    &[0, 1, 5],
    &[0, 1, 2, 3],
    &[1, 2, 3, 4],
    &[2, 3, 4, 5],
    &[0, 3, 4, 5],
    &[0, 1, 4, 5],
    &[0, 1, 2, 5],
    &[0, 1, 3, 4],
    &[1, 2, 4, 5],
    &[0, 2, 3, 5],
    &[0, 1, 2, 3, 4, 5],
];

pub struct LeNet5_1998 {
    pad: usize,
    c1: Conv2d,
    s2: Subsampling,
    c3: Vec<(Tensor, Conv2d)>,
    s4: Subsampling,
    c5: Conv2d,
    f6: Linear,
    codes: Tensor,
}

impl LeNet5_1998 {
    pub fn new(vb: VarBuilder, input: &[usize], classes: usize) -> Result<Self> {
        let pad = match input {
            [1, 32, 32] => 0,
            [1, 28, 28] => 2,
            _ => {
                return Err(NetError::InputShape {
                    model: "lenet5-1998",
                    shape: input.to_vec(),
                    why: "the 1998 network reads one 32x32 (or zero-padded 28x28) grey image"
                        .into(),
                })
            }
        };
        let conv = |c_in, c_out, vb| Conv2d::new(c_in, c_out, 5, ConvConfig::default(), vb);
        let c3 = C3_TABLE
            .iter()
            .enumerate()
            .map(|(j, inputs)| {
                let idx: Vec<u32> = inputs.iter().map(|&i| i as u32).collect();
                Ok((
                    Tensor::new(idx, vb.device())?,
                    conv(inputs.len(), 1, vb.pp(format!("c3.{j}")))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            pad,
            c1: conv(1, 6, vb.pp("c1"))?,
            s2: Subsampling::new(6, 2, vb.pp("s2"))?,
            c3,
            s4: Subsampling::new(16, 2, vb.pp("s4"))?,
            c5: conv(16, 120, vb.pp("c5"))?,
            f6: linear(120, 84, vb.pp("f6"))?,
            codes: code_vectors(classes, 84, vb.device())?,
        })
    }

    /// The fixed RBF centres, `[classes, 84]`.
    pub fn codes(&self) -> &Tensor {
        &self.codes
    }
}

/// Seeded +-1 code vectors: fixed across runs and never trained.
fn code_vectors(classes: usize, dim: usize, device: &Device) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(1998);
    let bits: Vec<f32> = (0..classes * dim)
        .map(|_| if rng.gen::<bool>() { 1.0 } else { -1.0 })
        .collect();
    Ok(Tensor::from_vec(bits, (classes, dim), device)?)
}

impl ModuleT for LeNet5_1998 {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        let squash = Activation::ScaledTanh;
        let x = x
            .pad_with_zeros(2, self.pad, self.pad)?
            .pad_with_zeros(3, self.pad, self.pad)?;
        let x = record("c1", self.c1.forward(&x)?);
        let x = record("s2", squash.forward(&self.s2.forward(&x)?)?);
        let maps = self
            .c3
            .iter()
            .map(|(idx, conv)| conv.forward(&x.index_select(idx, 1)?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let x = record("c3", Tensor::cat(&maps, 1)?);
        let x = record("s4", squash.forward(&self.s4.forward(&x)?)?);
        let x = record(
            "c5",
            squash.forward(&self.c5.forward(&x)?.flatten_from(1)?)?,
        );
        let x = record("f6", squash.forward(&self.f6.forward(&x)?)?);
        // Squared distances to the code vectors; the closest class gets the largest logit.
        let diff = x
            .unsqueeze(1)?
            .broadcast_sub(&self.codes.to_dtype(x.dtype())?.unsqueeze(0)?)?;
        Ok(record("rbf", diff.sqr()?.sum(2)?.neg()?))
    }
}
