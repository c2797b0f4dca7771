//! CIFAR binaries: round trips on files the test writes, clear errors for bad files, and a
//! parser that never panics on arbitrary bytes.

use std::path::Path;

use forja_data::cifar::{self, Cifar, IMAGE_BYTES};
use forja_data::{catalog, idx, DataError, Dataset, Split};
use proptest::prelude::*;

fn images(n: usize, salt: u8) -> Vec<u8> {
    (0..n * IMAGE_BYTES)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(salt))
        .collect()
}

fn write_cifar10(dir: &Path) -> (Vec<u8>, Vec<u32>) {
    let (mut all_px, mut all_lab) = (Vec::new(), Vec::new());
    for (k, name) in cifar::Cifar::Ten.files(Split::Train).iter().enumerate() {
        let px = images(3, k as u8);
        let lab: Vec<u32> = (0..3).map(|i| ((k * 3 + i) % 10) as u32).collect();
        cifar::write(&dir.join(name), Cifar::Ten, &px, &lab).unwrap();
        all_px.extend(px);
        all_lab.extend(lab);
    }
    cifar::write(
        &dir.join("test_batch.bin"),
        Cifar::Ten,
        &images(2, 99),
        &[9, 0],
    )
    .unwrap();
    (all_px, all_lab)
}

#[test]
fn cifar10_batches_round_trip_in_order_as_3x32x32_images() {
    let dir = tempfile::tempdir().unwrap();
    let (px, lab) = write_cifar10(dir.path());
    let train = cifar::read(dir.path(), Cifar::Ten, Split::Train).unwrap();
    assert_eq!(train.len(), 15);
    assert_eq!(train.item_shape(), vec![3, 32, 32]);
    assert_eq!(train.labels(), &lab[..]);
    for i in 0..15 {
        assert_eq!(
            train.image_bytes(i),
            &px[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
        );
    }
    let test = cifar::read(dir.path(), Cifar::Ten, Split::Test).unwrap();
    assert_eq!(test.labels(), &[9, 0]);
}

#[test]
fn catalog_finds_cifar10_in_the_archive_folder_inside_the_given_directory() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&inner).unwrap();
    write_cifar10(&inner);
    let test = catalog::open("cifar10", Split::Test, Some(dir.path())).unwrap();
    assert_eq!((test.len(), test.num_classes()), (2, Some(10)));
}

#[test]
fn cifar100_uses_the_fine_label_of_two_label_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    for (coarse, fine) in [(3u8, 87u8), (19, 4)] {
        bytes.extend([coarse, fine]);
        bytes.extend(images(1, fine));
    }
    std::fs::write(dir.path().join("train.bin"), &bytes).unwrap();
    cifar::write(
        &dir.path().join("test.bin"),
        Cifar::Hundred,
        &images(1, 0),
        &[55],
    )
    .unwrap();
    let train = cifar::read(dir.path(), Cifar::Hundred, Split::Train).unwrap();
    assert_eq!(train.labels(), &[87, 4]);
    assert_eq!(train.num_classes(), Some(100));
    let test = cifar::read(dir.path(), Cifar::Hundred, Split::Test).unwrap();
    assert_eq!(test.labels(), &[55]);
}

#[test]
fn a_cut_record_is_reported_with_file_length_and_record_size() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("test_batch.bin");
    let mut bytes = vec![1u8; 3073 * 2];
    bytes.truncate(3073 + 100);
    std::fs::write(&p, &bytes).unwrap();
    let err = cifar::read(dir.path(), Cifar::Ten, Split::Test).unwrap_err();
    assert!(
        matches!(
            &err,
            DataError::BadRecords {
                len: 3173,
                record: 3073,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("test_batch.bin"), "{err}");
}

#[test]
fn a_label_beyond_the_classes_names_file_and_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = vec![0u8; 2 * 3073];
    bytes[3073] = 10; // second record's label
    std::fs::write(dir.path().join("test_batch.bin"), &bytes).unwrap();
    let err = cifar::read(dir.path(), Cifar::Ten, Split::Test).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                index: 1,
                label: 10,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_missing_training_batch_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(dir.path());
    std::fs::remove_file(dir.path().join("data_batch_4.bin")).unwrap();
    let err = cifar::read(dir.path(), Cifar::Ten, Split::Train).unwrap_err();
    assert!(err.to_string().contains("data_batch_4.bin"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Arbitrary bytes give a dataset or an error, never a panic.
    #[test]
    fn cifar_and_idx_parsers_never_panic_on_random_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..7000),
        hundred in any::<bool>(),
    ) {
        let kind = if hundred { Cifar::Hundred } else { Cifar::Ten };
        let p = Path::new("random.bin");
        if let Ok((px, lab)) = cifar::parse(p, &bytes, kind) {
            prop_assert_eq!(px.len(), lab.len() * IMAGE_BYTES);
        }
        let _ = idx::parse_idx(p, &bytes);
    }

    /// IDX headers with random dimensions over random payloads: errors, never panics.
    #[test]
    fn idx_parser_never_panics_on_random_headers(
        ndims in 0u8..6, dims in prop::collection::vec(any::<u32>(), 0..6),
        payload in prop::collection::vec(any::<u8>(), 0..300), kind in any::<u8>(),
    ) {
        let mut bytes = vec![0, 0, kind, ndims];
        for d in dims {
            bytes.extend(d.to_be_bytes());
        }
        bytes.extend(payload);
        let _ = idx::parse_idx(Path::new("random.idx"), &bytes);
    }
}
