//! Loader throughput in batches per second (criterion's "elem/s"), to compare with a training
//! step rate: the M1 workload of `shared/bench/SPECS.md` is LeNet-5 at batch 128, where PyTorch
//! reaches about 122 steps/s on 2 cores. The loader must stay far above that.
//!
//! `cargo bench -p forja-data --bench loader`

use std::sync::Arc;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use forja_data::transform::{Compose, Flip, RandomCrop, Transform};
use forja_data::{catalog, Dataset, Loader, Split};

fn loader(c: &mut Criterion) {
    let train = catalog::open("synth-digits", Split::Train, None).unwrap();
    let augment: Arc<dyn Transform> = Arc::new(Compose(vec![
        Box::new(Flip::horizontal(0.5)),
        Box::new(RandomCrop { padding: 2 }),
    ]));
    let mut group = c.benchmark_group("loader_synth_digits_b128");
    group.sample_size(10);
    for (name, workers, aug) in [
        ("plain_inline", 0, false),
        ("plain_2_workers", 2, false),
        ("flip_crop_inline", 0, true),
        ("flip_crop_2_workers", 2, true),
    ] {
        let mut l = Loader::new(train.clone(), 128, &Device::Cpu)
            .unwrap()
            .shuffle(1)
            .workers(workers);
        if aug {
            l = l.transform(augment.clone(), 1);
        }
        group.throughput(Throughput::Elements(l.num_batches() as u64));
        group.bench_function(name, |b| {
            b.iter(|| l.epoch(0).map(|b| b.unwrap().len()).sum::<usize>())
        });
    }
    group.finish();

    let cells = catalog::open("synth-cells", Split::Train, None).unwrap();
    let mut group = c.benchmark_group("loader_synth_cells_b8");
    group.sample_size(10);
    let elastic: Arc<dyn Transform> = Arc::new(forja_data::transform::Elastic {
        alpha: 6.0,
        sigma: 6.0,
    });
    let l = Loader::new(
        Arc::new(forja_data::Subset::new(cells, (0..64).collect()).unwrap()) as Arc<dyn Dataset>,
        8,
        &Device::Cpu,
    )
    .unwrap()
    .transform(elastic, 1);
    group.throughput(Throughput::Elements(l.num_batches() as u64));
    group.bench_function("elastic_2_workers", |b| {
        b.iter(|| l.epoch(0).map(|b| b.unwrap().len()).sum::<usize>())
    });
    group.finish();
}

criterion_group!(benches, loader);
criterion_main!(benches);
