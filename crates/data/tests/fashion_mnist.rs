//! The real Fashion-MNIST files of Debian's `dataset-fashion-mnist`, read by the IDX reader.
//! `.ci/run` installs the package, and under CI a missing copy fails the test instead of
//! skipping it.

use forja_data::{catalog, idx, Dataset, Split};

#[test]
fn debian_fashion_mnist_reads_as_60k_train_and_10k_test_balanced_images() {
    let dir = std::path::Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.is_dir() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install dataset-fashion-mnist (see .ci/run)"
        );
        eprintln!(
            "skipped: {} missing (apt-get install dataset-fashion-mnist)",
            dir.display()
        );
        return;
    }
    let train = idx::MNIST_LAYOUT.read(dir, Split::Train).unwrap();
    let test = idx::MNIST_LAYOUT.read(dir, Split::Test).unwrap();
    // The catalog finds the same files in the default place.
    let found = catalog::open("fashion-mnist", Split::Test, None).unwrap();
    assert_eq!(found.len(), 10_000);
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!(train.item_shape(), vec![1, 28, 28]);
    for (set, per_class) in [(&train, 6_000), (&test, 1_000)] {
        let mut counts = [0usize; 10];
        set.labels().iter().for_each(|&l| counts[l as usize] += 1);
        assert_eq!(counts, [per_class; 10]);
    }
    // Pixels span the full byte range after scaling to [0, 1].
    let x = train.get(0).unwrap().input;
    assert!(x.iter().all(|v| (0.0..=1.0).contains(v)) && x.iter().any(|&v| v == 1.0 || v > 0.9));
}
