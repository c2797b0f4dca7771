//! Trains a model defined right here (a two-layer MLP) with forja's trainer on `synth-digits`.
//!
//! `cargo run --release -p forja-train --example custom_mlp`

use candle_core::{Device, Module, Tensor};
use candle_nn::{linear, ModuleT};
use forja_data::{catalog, Split};
use forja_train::{Classifier, RunConfig, Trainer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::Cpu;
    let train = catalog::open("synth-digits", Split::Train, None)?;
    let test = catalog::open("synth-digits", Split::Test, None)?;
    let cfg = RunConfig {
        epochs: 3,
        ..RunConfig::new("custom-mlp", "synth-digits")
    };
    let mut task = Classifier::new(&cfg, &device, |vb| {
        let hidden = linear(784, 128, vb.pp("fc1"))?;
        let out = linear(128, 10, vb.pp("fc2"))?;
        let net = candle_nn::func(move |x: &Tensor| {
            out.forward(&hidden.forward(&x.flatten_from(1)?)?.relu()?)
        });
        Ok(Box::new(net) as Box<dyn ModuleT>)
    })?;
    let run_dir = std::env::temp_dir().join("forja-custom-mlp");
    let summary = Trainer::new(cfg, &run_dir, &device)?.fit(&mut task, train, test, None)?;
    println!(
        "test accuracy {:.2}% — run files in {}",
        summary.metrics["accuracy"] * 100.0,
        run_dir.display()
    );
    Ok(())
}
