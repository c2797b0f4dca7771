//! Registry entries of the classification networks: one line per model, configs as data.

use candle_core::Device;
use candle_nn::{ModuleT, VarBuilder};
use forja_train::{Classifier, DataSpec, ModelEntry, OptimizerKind, RunConfig, Schedule, Task};

use crate::alexnet::{AlexNet, AlexNetConfig};
use crate::googlenet::{GoogLeNet, GoogLeNetConfig};
use crate::lenet1998::LeNet5_1998;
use crate::resnet::{ResNet, ResNetConfig};
use crate::vgg::{Vgg, VggConfig, VggHead, VGG11, VGG13, VGG16, VGG19};
use crate::{NetError, Result};

/// A classifier task around the network `make` builds for the data's item shape and classes.
pub(crate) fn classifier(
    cfg: &RunConfig,
    data: &DataSpec,
    device: &Device,
    model: &'static str,
    make: impl FnOnce(VarBuilder, &[usize], usize) -> Result<Box<dyn ModuleT>>,
) -> forja_train::Result<Box<dyn Task>> {
    let classes = data.num_classes.ok_or(NetError::NeedsClasses { model })?;
    if !data.target_shape.is_empty() {
        return Err(NetError::NeedsImageLabels {
            model,
            target_shape: data.target_shape.clone(),
        }
        .into());
    }
    let task = Classifier::new(cfg, device, |vb| Ok(make(vb, &data.item_shape, classes)?))?;
    Ok(Box::new(task))
}

/// SGD with momentum 0.9, weight decay and a cosine schedule (He et al.'s recipe, shortened).
fn sgd_cosine(cfg: &mut RunConfig, lr: f64, weight_decay: f64) {
    cfg.epochs = 3;
    cfg.batch_size = 128;
    cfg.optimizer.kind = OptimizerKind::Sgd;
    cfg.optimizer.lr = lr;
    cfg.optimizer.momentum = 0.9;
    cfg.optimizer.weight_decay = weight_decay;
    cfg.schedule = Schedule::Cosine { min_factor: 0.0 };
}

fn resnet_recipe(cfg: &mut RunConfig) {
    sgd_cosine(cfg, 0.1, 1e-4);
}

fn vgg_recipe(cfg: &mut RunConfig) {
    sgd_cosine(cfg, 0.01, 5e-4);
}

macro_rules! register {
    ($name:literal, $family:literal, $summary:literal, $configure:path, |$vb:ident, $shape:ident, $classes:ident, $cfg:ident| $make:expr) => {
        forja_train::inventory::submit! {
            ModelEntry {
                name: $name,
                family: $family,
                summary: $summary,
                default_dataset: "synth-digits",
                configure: $configure,
                build: {
                    fn build(cfg: &RunConfig, data: &DataSpec, device: &Device) -> forja_train::Result<Box<dyn Task>> {
                        classifier(cfg, data, device, $name, |$vb, $shape, $classes| {
                            let $cfg = cfg;
                            Ok(Box::new($make?) as Box<dyn ModuleT>)
                        })
                    }
                    build
                },
            }
        }
    };
}

macro_rules! resnet {
    ($name:literal, $ctor:ident($depth:literal), $summary:literal) => {
        register!(
            $name,
            "resnet",
            $summary,
            resnet_recipe,
            |vb, shape, classes, _cfg| {
                let arch = ResNetConfig::$ctor($depth).expect("a published depth");
                ResNet::new(&arch, vb, shape, classes)
            }
        );
    };
}

resnet!(
    "resnet18",
    imagenet(18),
    "ResNet-18, ImageNet layout (basic blocks 2-2-2-2), 11.7M params at 224x224/1000"
);
resnet!(
    "resnet34",
    imagenet(34),
    "ResNet-34, ImageNet layout (basic blocks 3-4-6-3), 21.8M params at 224x224/1000"
);
resnet!(
    "resnet50",
    imagenet(50),
    "ResNet-50, ImageNet layout (bottlenecks 3-4-6-3), 25.6M params at 224x224/1000"
);
resnet!(
    "resnet101",
    imagenet(101),
    "ResNet-101, ImageNet layout (bottlenecks 3-4-23-3), 44.5M params"
);
resnet!(
    "resnet152",
    imagenet(152),
    "ResNet-152, ImageNet layout (bottlenecks 3-8-36-3), 60.2M params"
);
resnet!(
    "resnet20",
    cifar(20),
    "CIFAR ResNet-20 (He et al. 2016 sec. 4.2), 16-32-64 channels, 0.27M params"
);
resnet!(
    "resnet32",
    cifar(32),
    "CIFAR ResNet-32, 16-32-64 channels, 0.46M params"
);
resnet!(
    "resnet44",
    cifar(44),
    "CIFAR ResNet-44, 16-32-64 channels, 0.66M params"
);
resnet!(
    "resnet56",
    cifar(56),
    "CIFAR ResNet-56, 16-32-64 channels, 0.85M params"
);
resnet!(
    "resnet110",
    cifar(110),
    "CIFAR ResNet-110, 16-32-64 channels, 1.7M params"
);

macro_rules! vgg {
    ($name:literal, $layers:ident, $bn:literal, $head:ident, $summary:literal) => {
        register!(
            $name,
            "vgg",
            $summary,
            vgg_recipe,
            |vb, shape, classes, cfg| {
                let arch = VggConfig {
                    layers: $layers,
                    batch_norm: $bn,
                    head: VggHead::$head,
                };
                Vgg::new(&arch, vb, shape, classes, cfg.seed)
            }
        );
    };
}

vgg!(
    "vgg11",
    VGG11,
    false,
    ImageNet,
    "VGG-11 (config A), fc 4096-4096, 132.9M params at 224x224/1000"
);
vgg!(
    "vgg13",
    VGG13,
    false,
    ImageNet,
    "VGG-13 (config B), fc 4096-4096, 133.0M params at 224x224/1000"
);
vgg!(
    "vgg16",
    VGG16,
    false,
    ImageNet,
    "VGG-16 (config D), fc 4096-4096, 138.4M params at 224x224/1000"
);
vgg!(
    "vgg19",
    VGG19,
    false,
    ImageNet,
    "VGG-19 (config E), fc 4096-4096, 143.7M params at 224x224/1000"
);
vgg!(
    "vgg11_bn",
    VGG11,
    true,
    ImageNet,
    "VGG-11 with batch norm, ImageNet head"
);
vgg!(
    "vgg13_bn",
    VGG13,
    true,
    ImageNet,
    "VGG-13 with batch norm, ImageNet head"
);
vgg!(
    "vgg16_bn",
    VGG16,
    true,
    ImageNet,
    "VGG-16 with batch norm, ImageNet head"
);
vgg!(
    "vgg19_bn",
    VGG19,
    true,
    ImageNet,
    "VGG-19 with batch norm, ImageNet head"
);
vgg!(
    "vgg11_bn-small",
    VGG11,
    true,
    Small,
    "VGG-11-BN conv stack with a small-input head (global pool, fc 512-classes) for 28x28/32x32"
);
vgg!(
    "vgg16_bn-small",
    VGG16,
    true,
    Small,
    "VGG-16-BN conv stack with a small-input head (global pool, fc 512-classes) for 28x28/32x32"
);

macro_rules! alexnet {
    ($name:literal, $arch:expr, $summary:literal) => {
        register!(
            $name,
            "alexnet",
            $summary,
            vgg_recipe,
            |vb, shape, classes, cfg| { AlexNet::new(&$arch, vb, shape, classes, cfg.seed) }
        );
    };
}

alexnet!("alexnet", AlexNetConfig::alexnet(false), "AlexNet 2012: 96-256-384-384-256, LRN, overlapping 3x3/2 pools, fc 4096-4096 (62.4M params at 224x224/1000)");
alexnet!(
    "alexnet-2tower",
    AlexNetConfig::alexnet(true),
    "AlexNet with the paper's two-tower grouping of conv2/4/5 (61.0M params at 224x224/1000)"
);
alexnet!(
    "alexnet-small",
    AlexNetConfig::alexnet(false).small(),
    "AlexNet for 28x28/32x32: 5x5/1 stem, 2x2 pool, fc 1024-1024"
);
alexnet!(
    "zfnet",
    AlexNetConfig::zfnet(),
    "ZFNet 2013: 7x7/2 and 5x5/2 first convs, LRN, fc 4096-4096 (62.4M params at 224x224/1000)"
);
alexnet!(
    "zfnet-small",
    AlexNetConfig::zfnet().small(),
    "ZFNet for 28x28/32x32: 5x5/1 stem, 2x2 pool, fc 1024-1024"
);

macro_rules! googlenet {
    ($name:literal, $arch:expr, $recipe:path, $summary:literal) => {
        register!(
            $name,
            "googlenet",
            $summary,
            $recipe,
            |vb, shape, classes, cfg| GoogLeNet::new(&$arch, vb, shape, classes, cfg.seed)
        );
    };
}

googlenet!("googlenet", GoogLeNetConfig::paper(), vgg_recipe, "GoogLeNet 2014 as published: Inception v1, LRN stem, 5x5 branches, two auxiliary classifiers (loss weight 0.3), dropout 0.4");
googlenet!("googlenet-tv", GoogLeNetConfig::torchvision(), resnet_recipe, "torchvision's GoogLeNet: batch norm, 3x3 third branch, aux heads (13,004,888 params at 224x224/1000; 6,624,904 without aux)");
googlenet!(
    "googlenet-small",
    GoogLeNetConfig::torchvision().small(),
    resnet_recipe,
    "GoogLeNet (BN) for 28x28/32x32: 3x3/1 stem to 192 channels, no aux heads"
);

fn lenet_recipe(cfg: &mut RunConfig) {
    cfg.epochs = 4;
    cfg.batch_size = 128;
}

register!(
    "lenet5-1998",
    "lenet",
    "LeNet-5 as published in 1998: trainable subsampling, C3 connection table, scaled tanh, RBF output (60,000 params)",
    lenet_recipe,
    |vb, shape, classes, _cfg| LeNet5_1998::new(vb, shape, classes)
);
