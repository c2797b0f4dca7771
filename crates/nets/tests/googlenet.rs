//! GoogLeNet: torchvision's totals and names, the paper's layout, output shapes with and
//! without auxiliary heads, and a training step of the small variant through the registry.

use candle_core::{DType, Device, ModuleT, Tensor};
use forja_data::Batch;
use forja_nets::googlenet::INCEPTIONS;
use forja_nets::{GoogLeNet, GoogLeNetConfig};
use forja_train::{registry, DataSpec, ParamCounter, ParamStore, RunConfig, StepCtx};

fn count(
    cfg: &GoogLeNetConfig,
    input: &[usize],
    classes: usize,
) -> (usize, Vec<(String, Vec<usize>)>) {
    let counter = ParamCounter::default();
    GoogLeNet::new(
        cfg,
        counter.var_builder(DType::F32, &Device::Cpu),
        input,
        classes,
        0,
    )
    .unwrap();
    (counter.num_params(), counter.shapes())
}

#[test]
fn torchvision_layout_has_torchvisions_totals_and_names() {
    let tv = GoogLeNetConfig::torchvision();
    let (with_aux, shapes) = count(&tv, &[3, 224, 224], 1000);
    assert_eq!(with_aux, 13_004_888);
    let no_aux = GoogLeNetConfig { aux: false, ..tv };
    assert_eq!(count(&no_aux, &[3, 224, 224], 1000).0, 6_624_904);
    for (name, shape) in [
        ("conv1.conv.weight", vec![64, 3, 7, 7]),
        ("conv1.bn.running_var", vec![64]),
        ("inception3a.branch3.1.conv.weight", vec![32, 16, 3, 3]),
        ("inception4e.branch4.1.bn.bias", vec![128]),
        ("aux2.conv.conv.weight", vec![128, 528, 1, 1]),
        ("aux1.fc1.weight", vec![1024, 2048]),
        ("fc.weight", vec![1000, 1024]),
    ] {
        assert!(
            shapes.contains(&(name.to_string(), shape.clone())),
            "no {name} {shape:?}"
        );
    }
}

#[test]
fn paper_layout_has_biased_5x5_branches_and_no_batch_norm() {
    let (_, shapes) = count(&GoogLeNetConfig::paper(), &[3, 224, 224], 1000);
    assert!(shapes.contains(&(
        "inception3a.branch3.1.conv.weight".into(),
        vec![32, 16, 5, 5]
    )));
    assert!(shapes.contains(&("inception5b.branch1.conv.bias".into(), vec![384])));
    assert!(!shapes.iter().any(|(n, _)| n.contains(".bn.")));
    let outs: Vec<usize> = INCEPTIONS.iter().map(|(_, s)| s.out_channels()).collect();
    assert_eq!(outs, [256, 480, 512, 512, 512, 528, 832, 832, 1024]); // Table 1
}

#[test]
fn outputs_are_logits_in_eval_and_main_plus_two_aux_heads_in_training() {
    let dev = Device::Cpu;
    let params = ParamStore::new(1);
    let net = GoogLeNet::new(
        &GoogLeNetConfig::paper(),
        params.var_builder(DType::F32, &dev),
        &[3, 96, 96],
        7,
        1,
    )
    .unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 3, 96, 96), &dev).unwrap();
    assert_eq!(net.forward_t(&x, false).unwrap().dims(), &[2, 7]);
    assert_eq!(net.forward_t(&x, true).unwrap().dims(), &[3, 2, 7]);
    let small = GoogLeNetConfig::torchvision().small();
    let params = ParamStore::new(1);
    let net = GoogLeNet::new(
        &small,
        params.var_builder(DType::F32, &dev),
        &[1, 28, 28],
        10,
        1,
    )
    .unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 1, 28, 28), &dev).unwrap();
    assert_eq!(net.forward_t(&x, true).unwrap().dims(), &[2, 10]);
    let err = GoogLeNet::new(
        &GoogLeNetConfig::paper(),
        ParamStore::new(0).var_builder(DType::F32, &dev),
        &[1, 28, 28],
        10,
        0,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("googlenet-small"), "{err}");
}

#[test]
fn googlenet_small_and_the_paper_net_with_aux_losses_train_a_step_through_the_registry() {
    let dev = Device::Cpu;
    let ctx = StepCtx {
        epoch: 0,
        step: 0,
        lr_factor: 1.0,
        seed: 0,
    };
    for (name, side) in [("googlenet-small", 28), ("googlenet", 64)] {
        let data = DataSpec {
            item_shape: vec![1, side, side],
            target_shape: vec![],
            num_classes: Some(10),
        };
        let batch = Batch {
            inputs: Tensor::randn(0f32, 1.0, (2, 1, side, side), &dev).unwrap(),
            targets: Tensor::new(&[3u32, 8], &dev).unwrap(),
        };
        let entry = registry::find(name).unwrap();
        let mut cfg = RunConfig::new(name, "synth-digits");
        (entry.configure)(&mut cfg);
        let mut task = (entry.build)(&cfg, &data, &dev).unwrap();
        let m = task.train_step(&batch, &ctx).unwrap();
        assert!(m["loss"].is_finite() && m["loss"] > 0.0, "{name}: {m:?}");
    }
}
