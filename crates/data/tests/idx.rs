use std::io::Write;
use std::path::Path;

use forja_data::idx::{read_idx, read_image_set, write_idx, IdxArray};
use forja_data::{DataError, Dataset};
use proptest::prelude::*;

fn gzip(path: &Path, bytes: &[u8]) {
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap();
}

/// A valid IDX header for unsigned bytes with `dims`.
fn header(dims: &[u32]) -> Vec<u8> {
    let mut h = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        h.extend_from_slice(&d.to_be_bytes());
    }
    h
}

#[test]
fn write_then_read_round_trips_raw_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..2 * 3 * 4).map(|i| (i * 7) as u8).collect();
    let raw = dir.path().join("x-idx3-ubyte");
    write_idx(&raw, &[2, 3, 4], &data).unwrap();
    let back = read_idx(&raw).unwrap();
    assert_eq!(
        back,
        IdxArray {
            dims: vec![2, 3, 4],
            data: data.clone()
        }
    );

    let gz = dir.path().join("x-idx3-ubyte.gz");
    gzip(&gz, &std::fs::read(&raw).unwrap());
    assert_eq!(read_idx(&gz).unwrap(), back);
}

#[test]
fn image_and_label_files_make_a_dataset_scaled_to_unit_range() {
    let dir = tempfile::tempdir().unwrap();
    let (img, lab) = (dir.path().join("i"), dir.path().join("l"));
    write_idx(&img, &[3, 2, 2], &[0, 255, 51, 102, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    write_idx(&lab, &[3], &[9, 0, 4]).unwrap();
    let set = read_image_set(&img, &lab, 10).unwrap();
    assert_eq!(set.len(), 3);
    assert_eq!(set.item_shape(), vec![1, 2, 2]);
    let s = set.get(0).unwrap();
    assert_eq!(s.label(), 9);
    assert_eq!(s.input, vec![0.0, 1.0, 0.2, 0.4]);
    let b = set.batch(&[2, 0], &candle_core::Device::Cpu).unwrap();
    assert_eq!(b.inputs.dims(), &[2, 1, 2, 2]);
    assert_eq!(b.targets.to_vec1::<u32>().unwrap(), vec![4, 9]);
}

#[test]
fn truncated_file_is_reported_with_expected_and_actual_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t");
    let mut bytes = header(&[2, 3]);
    bytes.extend([1, 2, 3, 4]); // 6 needed
    std::fs::write(&p, &bytes).unwrap();
    match read_idx(&p) {
        Err(DataError::Truncated {
            expected,
            actual,
            dims,
            ..
        }) => {
            assert_eq!((expected, actual, dims), (4 + 8 + 6, 4 + 8 + 4, vec![2, 3]));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    // A header cut inside the dimensions is truncated too.
    std::fs::write(&p, &header(&[2, 3])[..9]).unwrap();
    assert!(matches!(read_idx(&p), Err(DataError::Truncated { .. })));
}

#[test]
fn wrong_magic_is_reported_with_the_bytes_found() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m");
    std::fs::write(&p, b"PK\x03\x04rest").unwrap();
    let err = read_idx(&p).unwrap_err();
    assert!(
        matches!(&err, DataError::BadMagic { found, .. } if found == b"PK\x03\x04"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&p.display().to_string()),
        "message names the file: {err}"
    );
}

#[test]
fn unsupported_element_type_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    std::fs::write(&p, [0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0]).unwrap();
    assert!(matches!(
        read_idx(&p),
        Err(DataError::UnsupportedType { code: 0x0D, .. })
    ));
}

#[test]
fn trailing_bytes_after_the_declared_dims_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l");
    let mut bytes = header(&[2]);
    bytes.extend([1, 2, 3]);
    std::fs::write(&p, &bytes).unwrap();
    assert!(matches!(
        read_idx(&p),
        Err(DataError::TrailingBytes {
            expected: 10,
            actual: 11,
            ..
        })
    ));
}

#[test]
fn image_and_label_counts_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (img, lab) = (dir.path().join("i"), dir.path().join("l"));
    write_idx(&img, &[2, 1, 1], &[0, 0]).unwrap();
    write_idx(&lab, &[3], &[0, 1, 2]).unwrap();
    assert!(matches!(
        read_image_set(&img, &lab, 10),
        Err(DataError::CountMismatch {
            n_images: 2,
            n_labels: 3,
            ..
        })
    ));
}

#[test]
fn images_must_have_three_dims_and_labels_fit_the_classes() {
    let dir = tempfile::tempdir().unwrap();
    let (img, lab) = (dir.path().join("i"), dir.path().join("l"));
    write_idx(&img, &[2, 2], &[0; 4]).unwrap();
    write_idx(&lab, &[2], &[0, 1]).unwrap();
    assert!(matches!(
        read_image_set(&img, &lab, 10),
        Err(DataError::WrongDims { .. })
    ));
    write_idx(&img, &[2, 1, 2], &[0; 4]).unwrap();
    write_idx(&lab, &[2], &[3, 10]).unwrap();
    assert!(matches!(
        read_image_set(&img, &lab, 10),
        Err(DataError::LabelOutOfRange {
            index: 1,
            label: 10,
            classes: 10,
            ..
        })
    ));
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let err = read_idx(Path::new("/nonexistent/forja/file")).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/forja/file"));
}

#[test]
fn missing_dataset_says_where_it_looked_and_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let Err(err) =
        forja_data::catalog::open("fashion-mnist", forja_data::Split::Train, Some(dir.path()))
    else {
        panic!("an empty directory opened as fashion-mnist");
    };
    let msg = err.to_string();
    assert!(matches!(err, DataError::NotFound { .. }));
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(
        msg.contains("apt-get install dataset-fashion-mnist"),
        "{msg}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn any_byte_array_round_trips(dims in prop::collection::vec(1usize..5, 1..4), seed in any::<u8>()) {
        let n: usize = dims.iter().product();
        let data: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        write_idx(&p, &dims, &data).unwrap();
        prop_assert_eq!(read_idx(&p).unwrap(), IdxArray { dims, data });
    }

    #[test]
    fn any_truncation_of_a_valid_file_is_an_error_not_a_panic(cut in 0usize..40) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        write_idx(&p, &[3, 3, 3], &[7; 27]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..cut.min(bytes.len() - 1)]).unwrap();
        prop_assert!(read_idx(&p).is_err());
    }
}
