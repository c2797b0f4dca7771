//! Forward and forward+backward timings of the hot ops at the shapes of the reference
//! workloads (`shared/bench/SPECS.md`: M1 LeNet-5, M2 ResNet-20, M3 MLP VAE, M4 RealNVP,
//! M5 DCGAN, M6 U-Net), next to
//! plain candle's op where candle has one. Run: `cargo bench -p forja-layers`.

use candle_core::{Device, Module, ModuleT, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use forja_layers::*;

type Op = Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor>>;

fn input(shape: &[usize]) -> Var {
    Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()).unwrap()
}

fn weight(shape: &[usize]) -> Tensor {
    Tensor::randn(0f32, 0.1, shape, &Device::Cpu).unwrap()
}

/// Benchmarks `op` forward only and forward + backward of `sum(op(x))`.
fn bench(c: &mut Criterion, name: &str, shape: &[usize], op: Op) {
    let x = input(shape);
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.bench_function("forward", |b| b.iter(|| op(x.as_tensor()).unwrap()));
    group.bench_function("forward+backward", |b| {
        b.iter(|| {
            op(x.as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        })
    });
    group.finish();
}

type Op2 = Box<dyn Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>>;

/// Benchmarks forward + backward of `sum(op(x, w))` with both `x` and `w` trainable, as in
/// training (the weight's gradient is a product of its own).
fn bench_trained(c: &mut Criterion, name: &str, shapes: [&[usize]; 2], op: Op2) {
    let (x, w) = (
        input(shapes[0]),
        Var::from_tensor(&weight(shapes[1])).unwrap(),
    );
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.bench_function("forward+backward, weight trained", |b| {
        b.iter(|| {
            let grads = op(x.as_tensor(), w.as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            assert!(grads.get(&w).is_some());
        })
    });
    group.finish();
}

fn convolutions(c: &mut Criterion) {
    let w1 = weight(&[6, 1, 5, 5]);
    let pad2 = ConvConfig::default().padding(2);
    let w = w1.clone();
    bench(
        c,
        "conv2d/M1 1->6 5x5 pad2 b128",
        &[128, 1, 28, 28],
        Box::new(move |x| Ok(conv2d(x, &w, None, &pad2)?)),
    );
    let w = w1.clone();
    bench(
        c,
        "candle conv2d/M1 1->6 5x5 pad2 b128",
        &[128, 1, 28, 28],
        Box::new(move |x| x.conv2d(&w, 2, 1, 1, 1)),
    );
    let w2 = weight(&[16, 16, 3, 3]);
    let same = ConvConfig::same(3, 1);
    let w = w2.clone();
    bench(
        c,
        "conv2d/M2 16->16 3x3 b128",
        &[128, 16, 28, 28],
        Box::new(move |x| Ok(conv2d(x, &w, None, &same)?)),
    );
    bench(
        c,
        "candle conv2d/M2 16->16 3x3 b128",
        &[128, 16, 28, 28],
        Box::new(move |x| x.conv2d(&w2, 1, 1, 1, 1)),
    );
    let w6 = weight(&[32, 32, 3, 3]);
    bench(
        c,
        "conv2d/M6 32->32 3x3 64x64 b16",
        &[16, 32, 64, 64],
        Box::new(move |x| Ok(conv2d(x, &w6, None, &same)?)),
    );
    let wt5 = weight(&[128, 64, 4, 4]);
    let s2p1 = ConvTransposeConfig::default().stride(2).padding(1);
    bench(
        c,
        "conv_transpose2d/M5 128->64 4x4 s2 b64",
        &[64, 128, 7, 7],
        Box::new(move |x| Ok(conv_transpose2d(x, &wt5, None, &s2p1)?)),
    );
    let wt6 = weight(&[256, 128, 2, 2]);
    let s2 = ConvTransposeConfig::default().stride(2);
    bench(
        c,
        "conv_transpose2d/M6 256->128 2x2 s2 b16",
        &[16, 256, 8, 8],
        Box::new(move |x| Ok(conv_transpose2d(x, &wt6, None, &s2)?)),
    );
    let s2p1 = ConvConfig::default().stride(2).padding(1);
    bench_trained(
        c,
        "conv2d/M5 64->128 4x4 s2 b64",
        [&[64, 64, 14, 14], &[128, 64, 4, 4]],
        Box::new(move |x, w| Ok(conv2d(x, w, None, &s2p1)?)),
    );
    bench_trained(
        c,
        "conv2d/M2 16->16 3x3 b128",
        [&[128, 16, 32, 32], &[16, 16, 3, 3]],
        Box::new(move |x, w| Ok(conv2d(x, w, None, &same)?)),
    );
    bench_trained(
        c,
        "conv2d/M2 32->32 3x3 16x16 b128",
        [&[128, 32, 16, 16], &[32, 32, 3, 3]],
        Box::new(move |x, w| Ok(conv2d(x, w, None, &same)?)),
    );
    bench_trained(
        c,
        "conv2d/M6 32->32 3x3 64x64 b16",
        [&[16, 32, 64, 64], &[32, 32, 3, 3]],
        Box::new(move |x, w| Ok(conv2d(x, w, None, &same)?)),
    );
}

fn pooling_and_upsampling(c: &mut Criterion) {
    let p2 = PoolConfig::new(2);
    bench(
        c,
        "max_pool2d/M1 2x2 b128",
        &[128, 6, 28, 28],
        Box::new(move |x| Ok(max_pool2d(x, &p2)?)),
    );
    bench(
        c,
        "candle max_pool2d/M1 2x2 b128",
        &[128, 6, 28, 28],
        Box::new(|x| x.max_pool2d(2)),
    );
    bench(
        c,
        "max_pool2d/M6 2x2 64x64 b16",
        &[16, 32, 64, 64],
        Box::new(move |x| Ok(max_pool2d(x, &p2)?)),
    );
    let p3 = PoolConfig::new(3).stride(2);
    bench(
        c,
        "max_pool2d/overlapping 3x3 s2 b128",
        &[128, 16, 28, 28],
        Box::new(move |x| Ok(max_pool2d(x, &p3)?)),
    );
    bench(
        c,
        "avg_pool2d/M1 2x2 b128",
        &[128, 6, 28, 28],
        Box::new(move |x| Ok(avg_pool2d(x, &p2)?)),
    );
    bench(
        c,
        "candle avg_pool2d/M1 2x2 b128",
        &[128, 6, 28, 28],
        Box::new(|x| x.avg_pool2d(2)),
    );
    let twice = Target::Scale([2.0, 2.0]);
    bench(
        c,
        "upsample_nearest2d/x2 b16",
        &[16, 64, 16, 16],
        Box::new(move |x| Ok(upsample_nearest2d(x, twice)?)),
    );
    bench(
        c,
        "candle upsample_nearest2d/x2 b16",
        &[16, 64, 16, 16],
        Box::new(|x| x.upsample_nearest2d(32, 32)),
    );
    bench(
        c,
        "upsample_bilinear2d/x2 b16",
        &[16, 64, 16, 16],
        Box::new(move |x| Ok(upsample_bilinear2d(x, twice, false)?)),
    );
}

/// A batch norm over `c` channels with random affine parameters.
fn batch_norm(c: usize) -> BatchNorm {
    BatchNorm::from_parts(
        Some(weight(&[c])),
        Some(weight(&[c])),
        Tensor::zeros(c, candle_core::DType::F32, &Device::Cpu).unwrap(),
        Tensor::ones(c, candle_core::DType::F32, &Device::Cpu).unwrap(),
        BatchNormConfig::default(),
    )
    .unwrap()
}

fn normalization(c: &mut Criterion) {
    let bn = batch_norm(16);
    bench(
        c,
        "batch_norm/M2 16ch train b128",
        &[128, 16, 28, 28],
        Box::new(move |x| bn.forward_t(x, true)),
    );
    let bn = batch_norm(16);
    bench(
        c,
        "batch_norm/M2 16ch + ReLU train b128 32x32",
        &[128, 16, 32, 32],
        Box::new(move |x| Ok(bn.forward_relu_t(x, true)?)),
    );
    // M5's discriminator: 49 values per row, short rows.
    let bn = batch_norm(128);
    bench(
        c,
        "batch_norm/M5 128ch 7x7 train b64",
        &[64, 128, 7, 7],
        Box::new(move |x| bn.forward_t(x, true)),
    );
    // M5's generator: 6272 features of a [64, 6272] input, one short column each.
    let bn = batch_norm(128 * 7 * 7);
    bench(
        c,
        "batch_norm/M5 1d 6272 features train b64",
        &[64, 128 * 7 * 7],
        Box::new(move |x| bn.forward_t(x, true)),
    );
}

fn linear_and_loss(c: &mut Criterion) {
    let (w, b) = (weight(&[512, 512]), weight(&[512]));
    let layer = Linear::new(w.clone(), Some(b.clone()));
    bench(
        c,
        "linear/M4 512->512 b128",
        &[128, 512],
        Box::new(move |x| layer.forward(x)),
    );
    bench_trained(
        c,
        "linear/M4 512->512 b128",
        [&[128, 512], &[512, 512]],
        Box::new(move |x, w| Linear::new(w.clone(), None).forward(x)),
    );
    let layer = candle_nn::Linear::new(w, Some(b));
    bench(
        c,
        "candle linear/M4 512->512 b128",
        &[128, 512],
        Box::new(move |x| layer.forward(x)),
    );
    let target = Tensor::rand(0f32, 1.0, (128, 784), &Device::Cpu).unwrap();
    let t = target.clone();
    bench(
        c,
        "bce_with_logits/M3 784 b128",
        &[128, 784],
        Box::new(move |x| bce_with_logits(x, &t)),
    );
    bench(
        c,
        "candle bce_with_logits/M3 784 b128",
        &[128, 784],
        Box::new(move |x| {
            (Activation::Softplus.forward(x)? - (&target * x)?)?.sum(candle_core::D::Minus1)
        }),
    );
}

criterion_group!(
    benches,
    convolutions,
    pooling_and_upsampling,
    normalization,
    linear_and_loss
);
criterion_main!(benches);
