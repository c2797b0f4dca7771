use candle_core::{DType, Device, Module, Tensor};
use forja_nets::{LeNet5, NetError};
use forja_train::{registry, run, ParamStore, RunConfig, TrainError};

fn lenet(input: &[usize], classes: usize) -> (ParamStore, Result<LeNet5, NetError>) {
    let params = ParamStore::new(0);
    let net = LeNet5::new(params.var_builder(DType::F32, &Device::Cpu), input, classes);
    (params, net)
}

#[test]
fn lenet5_has_the_reference_parameter_count_and_output_shape() {
    let (params, net) = lenet(&[1, 28, 28], 10);
    assert_eq!(params.num_params(), 61_706);
    let y = net
        .unwrap()
        .forward(&Tensor::zeros((3, 1, 28, 28), DType::F32, &Device::Cpu).unwrap())
        .unwrap();
    assert_eq!(y.dims(), &[3, 10]);
    // 32x32 RGB: 16 * 6 * 6 features into fc1.
    let (params, net) = lenet(&[3, 32, 32], 100);
    let y = net
        .unwrap()
        .forward(&Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu).unwrap())
        .unwrap();
    assert_eq!(y.dims(), &[2, 100]);
    assert_eq!(
        params.num_params(),
        3 * 6 * 25 + 6 + 6 * 16 * 25 + 16 + 576 * 120 + 120 + 120 * 84 + 84 + 84 * 100 + 100
    );
}

#[test]
fn same_seed_gives_the_same_initial_weights() {
    let (a, _) = lenet(&[1, 28, 28], 10);
    let (b, _) = lenet(&[1, 28, 28], 10);
    for ((na, va), (nb, vb)) in a.vars().iter().zip(b.vars()) {
        assert_eq!(na, &nb);
        let (x, y) = (
            va.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vb.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(x, y);
    }
}

#[test]
fn inputs_too_small_or_of_the_wrong_rank_are_refused() {
    assert!(matches!(
        lenet(&[1, 8, 8], 10).1,
        Err(NetError::InputShape { .. })
    ));
    assert!(matches!(
        lenet(&[28, 28], 10).1,
        Err(NetError::InputShape { .. })
    ));
}

#[test]
fn registry_lists_lenet5_and_suggests_it_for_a_typo() {
    assert!(registry::models()
        .iter()
        .any(|m| m.name == "lenet5" && m.default_dataset == "synth-digits"));
    let err = registry::find("lenet")
        .err()
        .expect("no model called lenet");
    match &err {
        TrainError::UnknownModel {
            suggestion, known, ..
        } => {
            assert_eq!(suggestion.as_deref(), Some("lenet5"));
            assert!(known.contains(&"lenet5".to_string()));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("Did you mean `lenet5`?"));
}

fn small(epochs: usize, limit_train: usize) -> RunConfig {
    let entry = registry::find("lenet5").unwrap();
    let mut cfg = RunConfig::new(entry.name, entry.default_dataset);
    (entry.configure)(&mut cfg);
    cfg.epochs = epochs;
    cfg.limit_train = Some(limit_train);
    cfg.limit_test = Some(500);
    cfg
}

#[test]
fn lenet5_learns_synth_digits() {
    let dir = tempfile::tempdir().unwrap();
    let summary = run::train(small(3, 4000), dir.path(), &Device::Cpu, false).unwrap();
    let acc = summary.metrics["accuracy"];
    assert!(acc >= 0.9, "test accuracy {acc} after 3 short epochs");
    // `eval` on the saved run reproduces the best checkpoint's accuracy.
    let (_, _, metrics) = run::evaluate(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(Some(metrics["accuracy"]), summary.best);
}

#[test]
fn lenet5_run_resumed_from_disk_matches_an_uninterrupted_one_bitwise() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run::train(small(2, 640), a.path(), &Device::Cpu, false).unwrap();
    run::train(small(1, 640), b.path(), &Device::Cpu, false).unwrap();
    run::resume(b.path(), Some(2), &Device::Cpu, false).unwrap();
    let weights = |d: &std::path::Path| {
        let mut w: Vec<_> =
            candle_core::safetensors::load(d.join(forja_train::LAST_CHECKPOINT), &Device::Cpu)
                .unwrap()
                .into_iter()
                .map(|(k, t)| {
                    (
                        k,
                        t.flatten_all()
                            .unwrap()
                            .to_dtype(DType::F64)
                            .unwrap()
                            .to_vec1::<f64>()
                            .unwrap(),
                    )
                })
                .collect();
        w.sort_by(|x, y| x.0.cmp(&y.0));
        w
    };
    let (wa, wb) = (weights(a.path()), weights(b.path()));
    assert!(
        wa.iter().any(|(k, _)| k.starts_with("optim.exp_avg.")),
        "optimizer state is checkpointed"
    );
    assert_eq!(wa, wb);
}
