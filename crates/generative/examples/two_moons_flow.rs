//! Fits a RealNVP-style flow (affine couplings with alternating halves, ActNorm initialised
//! from data) to the `two-moons` density by maximum likelihood, then reports the test
//! log-likelihood per point and samples from the fitted density.
//!
//! `cargo run --release -p forja-generative --example two_moons_flow`

use candle_core::{DType, Device};
use forja_data::{catalog, Loader, Split};
use forja_generative::flows::{
    ActNorm, Composite, Coupling, CouplingConfig, CouplingKind, Flow, FlowDensity,
};
use forja_train::{Optimizer, OptimizerConfig, OptimizerKind, ParamStore};

fn mean_log_prob(
    density: &FlowDensity,
    loader: &Loader,
) -> Result<f64, Box<dyn std::error::Error>> {
    let (mut sum, mut n) = (0.0, 0usize);
    for batch in loader.epoch(0) {
        let x = batch?.inputs;
        sum += density.log_prob(&x)?.sum_all()?.to_scalar::<f32>()? as f64;
        n += x.dim(0)?;
    }
    Ok(sum / n as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let train = catalog::open("two-moons", Split::Train, None)?;
    let test = catalog::open("two-moons", Split::Test, None)?;
    let store = ParamStore::new(0);
    let vb = store.var_builder(DType::F32, &dev);
    let first = Loader::new(train.clone(), 512, &dev)?
        .epoch(0)
        .next()
        .unwrap()?
        .inputs;
    let act = ActNorm::new(2, vb.pp("act"))?;
    act.initialize(&first)?;
    let mut layers: Vec<Box<dyn Flow>> = vec![Box::new(act)];
    for k in 0..6 {
        let cfg = CouplingConfig::half(CouplingKind::Affine, 2, k % 2 == 0);
        layers.push(Box::new(Coupling::new(
            &cfg,
            vb.pp(format!("coupling{k}")),
        )?));
    }
    let density = FlowDensity::new(Box::new(Composite(layers)), 2);
    let mut opt = Optimizer::new(
        OptimizerConfig {
            kind: OptimizerKind::Adam,
            lr: 3e-3,
            ..OptimizerConfig::default()
        },
        store.trainable_vars(),
    )?;
    let loader = Loader::new(train, 256, &dev)?.shuffle(1).drop_last(true);
    let test_loader = Loader::new(test, 1000, &dev)?;
    println!(
        "before training: test log-likelihood {:.3} nats/point",
        mean_log_prob(&density, &test_loader)?
    );
    for epoch in 0..8 {
        for batch in loader.epoch(epoch) {
            let nll = density.log_prob(&batch?.inputs)?.mean_all()?.neg()?;
            opt.backward_step(&nll, 1.0, None)?;
        }
        println!(
            "epoch {}: test log-likelihood {:.3} nats/point",
            epoch + 1,
            mean_log_prob(&density, &test_loader)?
        );
    }
    let samples = density.sample(5, 1.0, 3, DType::F32, &dev)?;
    println!(
        "samples:\n{}",
        samples
            .to_vec2::<f32>()?
            .iter()
            .map(|p| format!("  ({:+.3}, {:+.3})", p[0], p[1]))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}
