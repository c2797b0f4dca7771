use std::collections::BTreeSet;
use std::sync::Arc;

use candle_core::Device;
use forja_data::{split, synth_digits, transform, Dataset, Loader, Split};
use proptest::prelude::*;

fn digits(split: Split, n: usize, seed: u64) -> Arc<dyn Dataset> {
    Arc::new(synth_digits::generate(split, n, seed).unwrap())
}

#[test]
fn synth_digits_is_deterministic_for_a_seed_and_differs_across_seeds() {
    let a = synth_digits::generate(Split::Train, 40, 1).unwrap();
    let b = synth_digits::generate(Split::Train, 40, 1).unwrap();
    let c = synth_digits::generate(Split::Train, 40, 2).unwrap();
    let t = synth_digits::generate(Split::Test, 40, 1).unwrap();
    for i in 0..40 {
        assert_eq!(a.image_bytes(i), b.image_bytes(i));
        assert_ne!(a.image_bytes(i), c.image_bytes(i));
        assert_ne!(
            a.image_bytes(i),
            t.image_bytes(i),
            "train and test are different samples"
        );
    }
}

#[test]
fn synth_digits_classes_are_balanced() {
    let set = synth_digits::generate(Split::Train, 1000, 3).unwrap();
    let mut counts = [0usize; 10];
    for &l in set.labels() {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [100; 10]);
}

#[test]
fn synth_digits_images_have_ink_on_a_dark_background() {
    let set = synth_digits::generate(Split::Test, 100, 4).unwrap();
    for i in 0..set.len() {
        let img = set.image_bytes(i);
        let ink = img.iter().filter(|&&p| p > 96).count();
        let border_mean = (0..28).map(|k| img[k] as f64).sum::<f64>() / 28.0;
        assert!((15..500).contains(&ink), "sample {i}: {ink} inked pixels");
        assert!(border_mean < 40.0, "sample {i}: top row mean {border_mean}");
    }
}

#[test]
fn loader_without_shuffle_keeps_order_and_keeps_the_last_partial_batch() {
    let set = digits(Split::Test, 25, 0);
    let loader = Loader::new(set.clone(), 10, &Device::Cpu).unwrap();
    let batches: Vec<_> = loader.epoch(0).map(|b| b.unwrap()).collect();
    assert_eq!(
        batches.iter().map(|b| b.len()).collect::<Vec<_>>(),
        vec![10, 10, 5]
    );
    let labels: Vec<u32> = batches
        .iter()
        .flat_map(|b| b.targets.to_vec1::<u32>().unwrap())
        .collect();
    assert_eq!(labels, (0..25).map(|i| i % 10).collect::<Vec<u32>>());
    let dropped = Loader::new(set.clone(), 10, &Device::Cpu)
        .unwrap()
        .drop_last(true);
    assert_eq!(dropped.num_batches(), 2);
    assert_eq!(dropped.epoch(0).count(), 2);
}

#[test]
fn zero_batch_size_is_rejected() {
    let set = digits(Split::Test, 5, 0);
    assert!(Loader::new(set.clone(), 0, &Device::Cpu).is_err());
}

#[test]
fn split_partitions_the_dataset() {
    let set = digits(Split::Train, 50, 0);
    let (a, b) = split(set.clone(), 0.2, 9).unwrap();
    assert_eq!((a.len(), b.len()), (10, 40));
    assert!(split(set.clone(), 1.5, 9).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Each epoch visits every sample exactly once; the order depends only on (seed, epoch).
    #[test]
    fn shuffled_epochs_are_permutations_reproducible_from_seed_and_epoch(
        n in 1usize..60, batch in 1usize..17, seed in any::<u64>(), epoch in 0usize..5,
    ) {
        let set = digits(Split::Test, n, 0);
        // Identify samples by their pixels' hash: labels repeat, images do not.
        let key = |x: &[f32]| x.iter().map(|v| (v * 255.0) as u64).fold(0u64, |h, v| h.wrapping_mul(1_000_003).wrapping_add(v));
        let order = |seed: u64, epoch: usize| -> Vec<u64> {
            let loader = Loader::new(set.clone(), batch, &Device::Cpu).unwrap().shuffle(seed);
            loader.epoch(epoch).flat_map(|b| {
                let x = b.unwrap().inputs.flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
                x.into_iter().map(|row| key(&row)).collect::<Vec<_>>()
            }).collect()
        };
        let first = order(seed, epoch);
        prop_assert_eq!(&first, &order(seed, epoch));
        let all: BTreeSet<u64> = (0..n).map(|i| key(&set.get(i).unwrap().input)).collect();
        prop_assert_eq!(first.iter().copied().collect::<BTreeSet<_>>(), all);
        prop_assert_eq!(first.len(), n);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    /// Background workers change when batches are made, never what they hold.
    #[test]
    fn worker_threads_serve_the_same_batches_as_the_consumer_thread(
        n in 1usize..80, batch in 1usize..20, workers in 1usize..5, prefetch in 1usize..4,
        seed in any::<u64>(), augment in any::<bool>(),
    ) {
        let set = digits(Split::Test, n, 1);
        let base = Loader::new(set, batch, &Device::Cpu).unwrap().shuffle(seed);
        let base = if augment {
            base.transform(Arc::new(transform::RandomCrop { padding: 3 }), seed)
        } else {
            base
        };
        let values = |l: &Loader, epoch| -> Vec<(Vec<f32>, Vec<u32>)> {
            l.epoch(epoch).map(|b| {
                let b = b.unwrap();
                (b.inputs.flatten_all().unwrap().to_vec1().unwrap(), b.targets.to_vec1().unwrap())
            }).collect()
        };
        let inline = base.clone().workers(0);
        let threaded = base.workers(workers).prefetch(prefetch);
        prop_assert_eq!(values(&inline, 2), values(&threaded, 2));
    }
}

#[test]
fn augmentation_repeats_for_an_epoch_and_changes_between_epochs() {
    let set = digits(Split::Test, 64, 2);
    let loader = Loader::new(set.clone(), 64, &Device::Cpu)
        .unwrap()
        .transform(Arc::new(transform::Flip::horizontal(0.5)), 3);
    let epoch = |e| {
        let b = loader.epoch(e).next().unwrap().unwrap();
        b.inputs.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    assert_eq!(epoch(1), epoch(1));
    assert_ne!(epoch(1), epoch(2));
    let plain = Loader::new(set, 64, &Device::Cpu).unwrap();
    let plain = plain.epoch(0).next().unwrap().unwrap();
    assert_ne!(
        epoch(1),
        plain
            .inputs
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    );
}

#[test]
fn an_epoch_dropped_early_stops_its_workers() {
    let set = digits(Split::Test, 2000, 2);
    let loader = Loader::new(set, 8, &Device::Cpu)
        .unwrap()
        .workers(3)
        .prefetch(1);
    for _ in 0..20 {
        let mut batches = loader.epoch(0);
        assert_eq!(batches.next().unwrap().unwrap().len(), 8);
        // Dropping `batches` here joins the workers; a hang would time the test out.
    }
}

#[test]
fn segmentation_batches_carry_masks_moved_with_the_images() {
    let cells: Arc<dyn Dataset> =
        Arc::new(forja_data::synth_cells::SynthCells::new(Split::Test, 4, 64, 1).unwrap());
    let loader = Loader::new(cells.clone(), 2, &Device::Cpu)
        .unwrap()
        .transform(Arc::new(transform::Flip::horizontal(1.0)), 0);
    let b = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(b.inputs.dims(), &[2, 1, 64, 64]);
    assert_eq!(b.targets.dims(), &[2, 2, 64, 64]);
    let flipped = b.targets.flatten_from(2).unwrap().to_vec3::<u32>().unwrap();
    let orig = cells.get(0).unwrap().target;
    for y in 0..64 {
        for x in 0..64 {
            assert_eq!(flipped[0][0][y * 64 + x], orig[y * 64 + 63 - x]);
        }
    }
}

#[test]
fn a_failing_sample_surfaces_as_an_error_from_the_worker() {
    struct Broken;
    impl Dataset for Broken {
        fn len(&self) -> usize {
            10
        }
        fn item_shape(&self) -> Vec<usize> {
            vec![1]
        }
        fn num_classes(&self) -> Option<usize> {
            Some(2)
        }
        fn get(&self, index: usize) -> forja_data::Result<forja_data::Sample> {
            if index == 7 {
                return Err(forja_data::DataError::Invalid(
                    "sample 7 is unreadable".into(),
                ));
            }
            Ok(forja_data::Sample::labelled(vec![0.0], 0))
        }
    }
    let loader = Loader::new(Arc::new(Broken), 4, &Device::Cpu).unwrap();
    let results: Vec<_> = loader.epoch(0).collect();
    assert!(results[0].is_ok() && results[2].is_ok());
    let err = results[1].as_ref().unwrap_err();
    assert!(err.to_string().contains("sample 7"), "{err}");
}
