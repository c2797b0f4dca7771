//! U-Net: the paper's shapes and parameter count, gradients through crop-and-concatenate, and
//! the registered models training on synth-cells.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use forja_data::{catalog, Split};
use forja_layers::check::GradCheck;
use forja_nets::{UNet, UNetConfig, UNetLayout};
use forja_train::{registry, DataSpec, ParamStore, RunConfig};

fn build(cfg: &UNetConfig, dtype: DType) -> (UNet, ParamStore) {
    let params = ParamStore::new(7);
    let net = UNet::new(cfg, params.var_builder(dtype, &Device::Cpu)).unwrap();
    (net, params)
}

#[test]
fn the_valid_layout_maps_572_to_388_as_in_the_paper() {
    let paper = UNetConfig::paper();
    assert_eq!(paper.output_size(572), Ok(388));
    // Same layout, 2..32 channels so the forward pass is cheap.
    let thin = UNetConfig { width: 2, ..paper };
    let (net, _) = build(&thin, DType::F32);
    let x = Tensor::zeros((1, 1, 572, 572), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(net.logits(&x).unwrap().dims(), &[1, 2, 388, 388]);
    // 570 leaves an odd map before a pool: refused with the reason, not a silent crop.
    let bad = Tensor::zeros((1, 1, 570, 570), DType::F32, &Device::Cpu).unwrap();
    let err = net.logits(&bad).unwrap_err().to_string();
    assert!(err.contains("572"), "{err}");
}

#[test]
fn the_paper_network_has_31_030_658_parameters() {
    // 64..1024 channels, 1 input channel, 2 classes: 3x3 convs, 2x2 up-convs, a 1x1 head.
    let (_, params) = build(&UNetConfig::paper(), DType::F32);
    assert_eq!(params.num_params(), 31_030_658);
}

#[test]
fn the_padded_layout_keeps_the_size_and_refuses_sides_not_divisible_by_2_to_the_depth() {
    let cfg = UNetConfig {
        in_channels: 3,
        classes: 4,
        depth: 3,
        width: 4,
        layout: UNetLayout::Padded,
    };
    let (net, _) = build(&cfg, DType::F32);
    let x = Tensor::zeros((2, 3, 40, 24), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(net.logits(&x).unwrap().dims(), &[2, 4, 40, 24]);
    let odd = Tensor::zeros((1, 3, 36, 24), DType::F32, &Device::Cpu).unwrap();
    assert!(net
        .logits(&odd)
        .unwrap_err()
        .to_string()
        .contains("2^depth = 8"));
    let grey = Tensor::zeros((1, 1, 40, 24), DType::F32, &Device::Cpu).unwrap();
    assert!(net
        .logits(&grey)
        .unwrap_err()
        .to_string()
        .contains("3 channels"));
}

#[test]
fn input_gradients_through_crop_and_concatenate_match_finite_differences() {
    // Depth 1, valid: 20 -> 16 (skip, cropped to 8) -> 8 -> 4 -> up 8 -> 4.
    let cfg = UNetConfig {
        in_channels: 1,
        classes: 2,
        depth: 1,
        width: 2,
        layout: UNetLayout::Valid,
    };
    let (net, _) = build(&cfg, DType::F64);
    let dev = Device::Cpu;
    let x = Tensor::randn(0.5f64, 1.0, (1, 1, 20, 20), &dev).unwrap();
    let probe = Tensor::randn(0f64, 1.0, (1, 2, 4, 4), &dev).unwrap();
    let err = GradCheck::default()
        .run(&[x], |xs| (net.forward(&xs[0])? * &probe)?.sum_all())
        .unwrap();
    assert!(err < 1e-6, "largest gradient error {err}");
}

fn train_registered(model: &str) {
    let entry = registry::find(model).unwrap();
    let mut cfg = RunConfig::new(model, "synth-cells");
    (entry.configure)(&mut cfg);
    cfg.epochs = 1;
    cfg.limit_train = Some(4);
    cfg.limit_test = Some(2);
    let dir = tempfile::tempdir().unwrap();
    let data = forja_train::run::open_data(&cfg).unwrap();
    let summary = forja_train::run::train_on(cfg, data, dir.path(), &Device::Cpu, false).unwrap();
    for metric in ["loss", "iou", "dice", "pixel_error", "touching_separated"] {
        let v = summary.metrics[metric];
        assert!(v.is_finite() && v >= 0.0, "{model}: {metric} = {v}");
    }
    for file in ["overlays.png", "weight_map.png"] {
        assert!(summary.run_dir.join(file).is_file(), "{model}: no {file}");
    }
}

#[test]
fn registered_unets_train_on_synth_cells_and_draw_their_overlays() {
    train_registered("unet");
    train_registered("unet-unweighted");
}

#[test]
fn a_unet_on_class_labels_is_refused_with_a_clear_error() {
    let entry = registry::find("unet").unwrap();
    let data = DataSpec {
        item_shape: vec![1, 28, 28],
        target_shape: vec![],
        num_classes: Some(10),
    };
    let Err(err) = (entry.build)(&RunConfig::new("unet", "synth-digits"), &data, &Device::Cpu)
    else {
        panic!("unet accepted class labels");
    };
    let msg = err.to_string();
    assert!(
        msg.contains("[2, H, W]") && msg.contains("synth-cells"),
        "{msg}"
    );
    // And synth-cells' own shape fits the registered (padded, depth 4) net.
    let cells: Arc<dyn forja_data::Dataset> =
        catalog::open("synth-cells", Split::Test, None).unwrap();
    assert_eq!(cells.item_shape(), vec![1, 128, 128]);
}
