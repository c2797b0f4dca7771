//! FID end to end: a LeNet-5 trained on synth-digits gives the features, and a VAE trained
//! for a few steps is scored against the test images, through the saved runs as
//! `cargo xtask fid` reads them.

use candle_core::Device;
// Linked for their registrations.
use forja_generative as _;
use forja_nets as _;
use forja_train::run::{self, SavedRun};
use forja_train::{fid, registry, RunConfig};

fn train(model: &str, epochs: usize, limit: usize, root: &std::path::Path) -> std::path::PathBuf {
    let entry = registry::find(model).unwrap();
    let mut cfg = RunConfig::new(model, "synth-digits");
    (entry.configure)(&mut cfg);
    (cfg.epochs, cfg.limit_train, cfg.limit_test) = (epochs, Some(limit), Some(500));
    let data = run::open_data(&cfg).unwrap();
    let dir = run::new_run_dir(root, model).unwrap();
    run::train_on(cfg, data, &dir, &Device::Cpu, false).unwrap();
    dir
}

#[test]
fn fid_orders_real_data_then_a_trained_vae_then_one_trained_for_one_step() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let lenet = train("lenet5", 2, 4000, tmp.path());
    let untrained = train("vae-mlp", 1, 64, tmp.path());
    let trained = train("vae-mlp", 3, 4000, tmp.path());
    let score = |dir| {
        let mut generator = SavedRun::open(dir, &dev, true).unwrap();
        let mut classifier = SavedRun::open(&lenet, &dev, false).unwrap();
        fid::measure(&mut generator, &mut classifier, 500, &dev).unwrap()
    };
    let (before, after) = (score(&untrained), score(&trained));
    assert_eq!(before.count, 500);
    // Same data on both sides of the reference, whichever generator asked for it.
    assert_eq!(before.train_vs_test, after.train_vs_test);
    assert!(
        after.train_vs_test < after.samples && after.samples < before.samples,
        "real {} < trained {} < untrained {}",
        after.train_vs_test,
        after.samples,
        before.samples
    );
    let mut classifier = SavedRun::open(&lenet, &dev, false).unwrap();
    let mut lenet_as_generator = SavedRun::open(&lenet, &dev, true).unwrap();
    let err = fid::measure(&mut lenet_as_generator, &mut classifier, 100, &dev)
        .err()
        .unwrap();
    assert!(err.to_string().contains("does not generate"), "{err}");
}
