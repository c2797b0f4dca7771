use std::collections::BTreeSet;

use candle_core::Device;
use forja_data::{split, synth_digits, Dataset, Loader, Split};
use proptest::prelude::*;

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
    let set = synth_digits::generate(Split::Test, 25, 0).unwrap();
    let loader = Loader::new(&set, 10, &Device::Cpu).unwrap();
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
    let dropped = Loader::new(&set, 10, &Device::Cpu).unwrap().drop_last(true);
    assert_eq!(dropped.num_batches(), 2);
    assert_eq!(dropped.epoch(0).count(), 2);
}

#[test]
fn zero_batch_size_is_rejected() {
    let set = synth_digits::generate(Split::Test, 5, 0).unwrap();
    assert!(Loader::new(&set, 0, &Device::Cpu).is_err());
}

#[test]
fn split_partitions_the_dataset() {
    let set = synth_digits::generate(Split::Train, 50, 0).unwrap();
    let (a, b) = split(&set, 0.2, 9).unwrap();
    assert_eq!((a.len(), b.len()), (10, 40));
    assert!(split(&set, 1.5, 9).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Each epoch visits every sample exactly once; the order depends only on (seed, epoch).
    #[test]
    fn shuffled_epochs_are_permutations_reproducible_from_seed_and_epoch(
        n in 1usize..60, batch in 1usize..17, seed in any::<u64>(), epoch in 0usize..5,
    ) {
        let set = synth_digits::generate(Split::Test, n, 0).unwrap();
        // Identify samples by their pixels' hash: labels repeat, images do not.
        let key = |x: &[f32]| x.iter().map(|v| (v * 255.0) as u64).fold(0u64, |h, v| h.wrapping_mul(1_000_003).wrapping_add(v));
        let order = |seed: u64, epoch: usize| -> Vec<u64> {
            let loader = Loader::new(&set, batch, &Device::Cpu).unwrap().shuffle(seed);
            loader.epoch(epoch).flat_map(|b| {
                let x = b.unwrap().inputs.flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
                x.into_iter().map(|row| key(&row)).collect::<Vec<_>>()
            }).collect()
        };
        let first = order(seed, epoch);
        prop_assert_eq!(&first, &order(seed, epoch));
        let all: BTreeSet<u64> = (0..n).map(|i| key(&set.get(i).unwrap().0)).collect();
        prop_assert_eq!(first.iter().copied().collect::<BTreeSet<_>>(), all);
        prop_assert_eq!(first.len(), n);
    }
}
