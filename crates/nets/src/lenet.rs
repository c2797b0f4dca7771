//! LeNet-5 in its modern form (ReLU, max-pooling, a linear classifier): the network of the
//! reference workload M1. Parameter names match the PyTorch reference (`conv1.weight`, ...).

use candle_core::{Device, Tensor};
use candle_nn::{Module, VarBuilder};
use forja_layers::trace::record;
use forja_layers::{linear, max_pool2d, relu, Conv2d, ConvConfig, Linear, PoolConfig};
use forja_train::{DataSpec, ModelEntry, RunConfig, Task};

use crate::{NetError, Result};

pub struct LeNet5 {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

impl LeNet5 {
    /// conv 5x5 (pad 2) -> ReLU -> max-pool 2, conv 5x5 -> ReLU -> max-pool 2, fc 120, fc 84,
    /// fc `classes`, for inputs `[channels, height, width]` (28x28 gives the classic 400 features).
    pub fn new(vb: VarBuilder, input: &[usize], classes: usize) -> Result<Self> {
        let &[channels, h, w] = input else {
            return Err(NetError::InputShape {
                model: "lenet5",
                shape: input.to_vec(),
                why: "expected [channels, height, width]".into(),
            });
        };
        // Spatial size after conv1 (same size), pool, conv2 (valid, -4) and pool.
        let side = |s: usize| (s / 2).checked_sub(4).map(|s| s / 2).filter(|&s| s > 0);
        let (Some(fh), Some(fw)) = (side(h), side(w)) else {
            return Err(NetError::InputShape {
                model: "lenet5",
                shape: input.to_vec(),
                why: "height and width must be at least 12".into(),
            });
        };
        Ok(Self {
            conv1: Conv2d::new(channels, 6, 5, ConvConfig::same(5, 1), vb.pp("conv1"))?,
            conv2: Conv2d::new(6, 16, 5, ConvConfig::default(), vb.pp("conv2"))?,
            fc1: linear(16 * fh * fw, 120, vb.pp("fc1"))?,
            fc2: linear(120, 84, vb.pp("fc2"))?,
            fc3: linear(84, classes, vb.pp("fc3"))?,
        })
    }
}

impl Module for LeNet5 {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = record("conv1", relu(&self.conv1.forward(x)?)?);
        let pool = PoolConfig::new(2);
        let x = record("pool1", max_pool2d(&x, &pool)?);
        let x = record("conv2", relu(&self.conv2.forward(&x)?)?);
        let x = record("pool2", max_pool2d(&x, &pool)?).flatten_from(1)?;
        let x = record("fc1", relu(&self.fc1.forward(&x)?)?);
        let x = record("fc2", relu(&self.fc2.forward(&x)?)?);
        Ok(record("fc3", self.fc3.forward(&x)?))
    }
}

fn build(cfg: &RunConfig, data: &DataSpec, device: &Device) -> forja_train::Result<Box<dyn Task>> {
    crate::register::classifier(cfg, data, device, "lenet5", |vb, shape, classes| {
        Ok(Box::new(LeNet5::new(vb, shape, classes)?))
    })
}

fn configure(cfg: &mut RunConfig) {
    cfg.epochs = 4;
    cfg.batch_size = 128;
}

forja_train::inventory::submit! {
    ModelEntry {
        name: "lenet5",
        family: "lenet",
        summary: "modern LeNet-5: two 5x5 convs with ReLU and max-pool, fc 120-84-classes (61,706 params on 28x28)",
        default_dataset: "synth-digits",
        configure,
        build,
    }
}
