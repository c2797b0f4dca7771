//! GoogLeNet: torchvision's totals and names, the paper's layout, and output shapes with and
//! without auxiliary heads (the registry's one-step test in `classic.rs` trains every variant).

use candle_core::{DType, Device, ModuleT, Tensor};
use forja_nets::googlenet::INCEPTIONS;
use forja_nets::{GoogLeNet, GoogLeNetConfig};
use forja_train::{ParamCounter, ParamStore};

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
