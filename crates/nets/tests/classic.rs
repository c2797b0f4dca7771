//! VGG and ResNet: published parameter totals (torchvision's, at 224x224 with 1000 classes),
//! torchvision parameter names, output shapes, and a training step through the registry.

use candle_core::{DType, Device, ModuleT, Tensor};
use forja_data::Batch;
use forja_nets::{ResNet, ResNetConfig, Vgg, VggConfig, VggHead};
use forja_train::{registry, DataSpec, ParamCounter, RunConfig, StepCtx};

fn count(
    build: impl FnOnce(candle_nn::VarBuilder) -> forja_nets::Result<()>,
) -> (usize, Vec<String>) {
    let counter = ParamCounter::default();
    build(counter.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let names = counter.shapes().into_iter().map(|(n, _)| n).collect();
    (counter.num_params(), names)
}

#[test]
fn resnet_parameter_counts_equal_the_published_totals() {
    for (depth, total) in [
        (18, 11_689_512),
        (34, 21_797_672),
        (50, 25_557_032),
        (101, 44_549_160),
        (152, 60_192_808),
    ] {
        let arch = ResNetConfig::imagenet(depth).unwrap();
        let (n, names) = count(|vb| ResNet::new(&arch, vb, &[3, 224, 224], 1000).map(drop));
        assert_eq!(n, total, "resnet{depth}");
        for name in [
            "conv1.weight",
            "bn1.running_var",
            "layer2.0.downsample.0.weight",
            "layer4.1.bn2.bias",
            "fc.bias",
        ] {
            assert!(
                names.iter().any(|n| n == name),
                "resnet{depth} lacks {name}"
            );
        }
    }
    // The reference workload M2: CIFAR ResNet-20 with projection shortcuts on 1x28x28.
    let (n, _) =
        count(|vb| ResNet::new(&ResNetConfig::cifar(20).unwrap(), vb, &[1, 28, 28], 10).map(drop));
    assert_eq!(n, 272_186);
    assert!(ResNetConfig::cifar(21).is_none() && ResNetConfig::imagenet(19).is_none());
}

#[test]
fn vgg_parameter_counts_equal_the_published_totals() {
    use forja_nets::vgg::{VGG11, VGG13, VGG16, VGG19};
    for (name, layers, bn, total) in [
        ("vgg11", VGG11, false, 132_863_336),
        ("vgg13", VGG13, false, 133_047_848),
        ("vgg16", VGG16, false, 138_357_544),
        ("vgg19", VGG19, false, 143_667_240),
        ("vgg11_bn", VGG11, true, 132_868_840),
        ("vgg13_bn", VGG13, true, 133_053_736),
        ("vgg16_bn", VGG16, true, 138_365_992),
        ("vgg19_bn", VGG19, true, 143_678_248),
    ] {
        let cfg = VggConfig {
            layers,
            batch_norm: bn,
            head: VggHead::ImageNet,
        };
        let (n, names) = count(|vb| Vgg::new(&cfg, vb, &[3, 224, 224], 1000, 0).map(drop));
        assert_eq!(n, total, "{name}");
        assert!(names.iter().any(|n| n == "classifier.6.weight"), "{name}");
        // torchvision's Sequential indices: conv 0, then bn 1 (or the ReLU, which has no weights).
        assert!(names.iter().any(|n| n == "features.0.weight"), "{name}");
        assert_eq!(
            names.iter().any(|n| n == "features.1.running_mean"),
            bn,
            "{name}"
        );
    }
}

#[test]
fn networks_give_one_logit_row_per_image_at_their_documented_sizes() {
    let dev = Device::Cpu;
    let store = forja_train::ParamStore::new(0);
    let vb = store.var_builder(DType::F32, &dev);
    let x = |c, s| Tensor::randn(0f32, 1.0, (2, c, s, s), &dev).unwrap();
    let r20 = ResNet::new(
        &ResNetConfig::cifar(20).unwrap(),
        vb.pp("r20"),
        &[1, 28, 28],
        10,
    )
    .unwrap();
    assert_eq!(r20.forward_t(&x(1, 28), false).unwrap().dims(), &[2, 10]);
    let r18 = ResNet::new(
        &ResNetConfig::imagenet(18).unwrap(),
        vb.pp("r18"),
        &[3, 32, 32],
        7,
    )
    .unwrap();
    assert_eq!(r18.forward_t(&x(3, 32), false).unwrap().dims(), &[2, 7]);
    let small = VggConfig {
        layers: forja_nets::vgg::VGG11,
        batch_norm: true,
        head: VggHead::Small,
    };
    let v = Vgg::new(&small, vb.pp("v"), &[1, 28, 28], 10, 0).unwrap();
    assert_eq!(v.forward_t(&x(1, 28), true).unwrap().dims(), &[2, 10]);
    // Too small for five pools: a clear error, not a panic deep in a pooling op.
    let err = Vgg::new(&small, vb.pp("w"), &[1, 8, 8], 10, 0)
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("max-pools need a side of at least 17"),
        "{err}"
    );
}

/// Every registered image-level model (all but the U-Nets) whose name passes `keep`, at a tiny size: 1x28x28 where the model
/// accepts it, else 3x64x64 (the ImageNet layouts whose stems need more pixels); one
/// forward/backward/update step each. Returns how many models ran.
fn train_one_step_each(keep: impl Fn(&str) -> bool) -> usize {
    let dev = Device::Cpu;
    let ctx = StepCtx {
        epoch: 0,
        step: 0,
        lr_factor: 1.0,
        seed: 0,
    };
    let models: Vec<_> = registry::models()
        .into_iter()
        .filter(|m| keep(m.name) && m.family != "unet")
        .collect();
    for &entry in &models {
        let mut cfg = RunConfig::new(entry.name, entry.default_dataset);
        (entry.configure)(&mut cfg);
        let built = [[1, 28, 28], [3, 64, 64]].into_iter().find_map(|shape| {
            let data = DataSpec {
                item_shape: shape.to_vec(),
                target_shape: vec![],
                num_classes: Some(10),
            };
            (entry.build)(&cfg, &data, &dev)
                .ok()
                .map(|task| (task, shape))
        });
        let (mut task, [c, h, w]) =
            built.unwrap_or_else(|| panic!("{} builds at neither size", entry.name));
        let batch = Batch {
            inputs: Tensor::randn(0f32, 1.0, (2, c, h, w), &dev).unwrap(),
            targets: Tensor::new(&[3u32, 7], &dev).unwrap(),
        };
        let metrics = task.train_step(&batch, &ctx).unwrap();
        let loss = metrics["loss"];
        assert!(
            loss.is_finite() && loss > 0.0,
            "{}: loss {loss}",
            entry.name
        );
    }
    models.len()
}

// Two tests, so the harness runs the heavy VGG heads beside the rest.
#[test]
fn every_registered_vgg_trains_one_step_through_the_registry() {
    assert_eq!(train_one_step_each(|n| n.starts_with("vgg")), 10);
}

#[test]
fn every_other_registered_model_trains_one_step_through_the_registry() {
    assert!(train_one_step_each(|n| !n.starts_with("vgg")) >= 20);
}

#[test]
fn alexnet_and_zfnet_parameter_counts_match_the_papers_layouts() {
    use forja_nets::{AlexNet, AlexNetConfig};
    for (name, cfg, total) in [
        // Single tower: 62.4M; the paper's two towers (grouped conv2/4/5): its "60 million".
        ("alexnet", AlexNetConfig::alexnet(false), 62_378_344),
        ("alexnet-2tower", AlexNetConfig::alexnet(true), 60_965_224),
        ("zfnet", AlexNetConfig::zfnet(), 62_357_608),
    ] {
        let (n, names) = count(|vb| AlexNet::new(&cfg, vb, &[3, 224, 224], 1000, 0).map(drop));
        assert_eq!(n, total, "{name}");
        for layer in [
            "features.0.weight",
            "features.4.weight",
            "classifier.6.bias",
        ] {
            assert!(names.iter().any(|n| n == layer), "{name} lacks {layer}");
        }
    }
    let dev = Device::Cpu;
    let store = forja_train::ParamStore::new(0);
    let small = AlexNet::new(
        &AlexNetConfig::alexnet(true).small(),
        store.var_builder(DType::F32, &dev),
        &[1, 28, 28],
        10,
        0,
    )
    .unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 1, 28, 28), &dev).unwrap();
    assert_eq!(small.forward_t(&x, true).unwrap().dims(), &[2, 10]);
    // The ImageNet stem on 28x28 data: a clear error naming the variant to use.
    let err = AlexNet::new(
        &AlexNetConfig::alexnet(false),
        store.var_builder(DType::F32, &dev).pp("x"),
        &[1, 28, 28],
        10,
        0,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("-small variant"), "{err}");
}

#[test]
fn lenet5_1998_has_the_papers_trainable_parameters_per_layer() {
    use forja_nets::LeNet5_1998;
    let dev = Device::Cpu;
    let store = forja_train::ParamStore::new(0);
    let net = LeNet5_1998::new(store.var_builder(DType::F32, &dev), &[1, 28, 28], 10).unwrap();
    let per_layer = |prefix: &str| -> usize {
        store
            .vars()
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, v)| v.elem_count())
            .sum()
    };
    for (layer, want) in [
        ("c1.", 156),
        ("s2.", 12),
        ("c3.", 1_516),
        ("s4.", 32),
        ("c5.", 48_120),
        ("f6.", 10_164),
    ] {
        assert_eq!(per_layer(layer), want, "{layer}");
    }
    // The RBF code vectors are fixed: not parameters.
    assert_eq!(store.num_params(), 60_000);
    assert_eq!(net.codes().dims(), &[10, 84]);
    for side in [28, 32] {
        let x = Tensor::randn(0f32, 1.0, (2, 1, side, side), &dev).unwrap();
        let net =
            LeNet5_1998::new(store.var_builder(DType::F32, &dev), &[1, side, side], 10).unwrap();
        let logits = net.forward_t(&x, true).unwrap();
        assert_eq!(logits.dims(), &[2, 10]);
        // Logits are negated squared distances.
        assert!(logits.max_all().unwrap().to_scalar::<f32>().unwrap() <= 0.0);
    }
    let err = LeNet5_1998::new(store.var_builder(DType::F32, &dev), &[3, 32, 32], 10)
        .err()
        .unwrap();
    assert!(err.to_string().contains("32x32"), "{err}");
}

#[test]
fn summary_tabulates_layers_and_totals_like_torchvision() {
    let s = forja_train::summarize("resnet18", &[3, 224, 224], 1000).unwrap();
    assert_eq!(s.total, 11_689_512);
    assert_eq!(s.rows.first().unwrap().layer, "bn1");
    let conv1 = s.rows.iter().find(|r| r.layer == "conv1").unwrap();
    assert_eq!(conv1.params, 64 * 3 * 7 * 7);
    let out = |stage: &str| {
        s.outputs
            .iter()
            .find(|(n, _)| n == stage)
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(out("conv1"), [1, 64, 112, 112]);
    assert_eq!(out("maxpool"), [1, 64, 56, 56]);
    assert_eq!(out("layer4"), [1, 512, 7, 7]);
    assert_eq!(out("fc"), [1, 1000]);
    let stages: Vec<&str> = s.outputs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(stages.len(), 8, "{stages:?}");
    // Natural order of indices: features.4 comes before features.11.
    let vgg = forja_train::summarize("vgg11_bn-small", &[1, 28, 28], 10).unwrap();
    let layers: Vec<&str> = vgg.rows.iter().map(|r| r.layer.as_str()).collect();
    let pos = |l: &str| layers.iter().position(|x| *x == l).unwrap();
    assert!(pos("features.4") < pos("features.11"), "{layers:?}");
    let text = vgg.to_string();
    assert!(text.contains("total trainable parameters:"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("conv8 ") && l.ends_with("[1, 512, 2, 2]")),
        "{text}"
    );
    assert!(forja_train::summarize("nosuch", &[1, 28, 28], 10).is_err());
}

#[test]
fn a_classifier_on_per_pixel_targets_is_refused_with_a_clear_error() {
    let data = DataSpec {
        item_shape: vec![1, 32, 32],
        target_shape: vec![2, 32, 32],
        num_classes: Some(3),
    };
    let entry = registry::find("lenet5").unwrap();
    let cfg = RunConfig::new("lenet5", "synth-cells");
    let Err(err) = (entry.build)(&cfg, &data, &Device::Cpu) else {
        panic!("lenet5 accepted segmentation targets");
    };
    assert!(err.to_string().contains("per-pixel"), "{err}");
}
