//! Builds LeNet-5, prints its parameters and classifies a few `synth-digits` test images with the
//! untrained network, then with the weights of a run if one is given.
//!
//! `cargo run --release -p forja-nets --example lenet5_forward -- [runs/lenet5-.../model.safetensors]`

use candle_core::{DType, Device, Module, D};
use forja_data::{catalog, Split};
use forja_nets::LeNet5;
use forja_train::ParamStore;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::Cpu;
    let params = ParamStore::new(0);
    let net = LeNet5::new(params.var_builder(DType::F32, &device), &[1, 28, 28], 10)?;
    for (name, var) in params.vars() {
        println!("{name:12} {:?}", var.dims());
    }
    println!("total: {} parameters", params.num_params());
    if let Some(path) = std::env::args().nth(1) {
        params.load(&candle_core::safetensors::load(&path, &device)?)?;
        println!("loaded {path}");
    }
    let test = catalog::open("synth-digits", Split::Test, None)?;
    let batch = test.batch(&(0..10).collect::<Vec<_>>(), &device)?;
    let predicted = net
        .forward(&batch.inputs)?
        .argmax(D::Minus1)?
        .to_vec1::<u32>()?;
    println!("labels:    {:?}", batch.targets.to_vec1::<u32>()?);
    println!("predicted: {predicted:?}");
    Ok(())
}
