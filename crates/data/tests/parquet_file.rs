//! Hub-layout Parquet files, written here and read back: what the `hub` feature downloads is
//! read by the same function, so no network is needed to test it.
#![cfg(feature = "parquet")]

use forja_data::parquet_file::{read_parquet, write_parquet};
use forja_data::{synth_digits, DataError, ImageSet, Split};

#[test]
fn grey_and_colour_sets_round_trip_through_hub_style_parquet() {
    let dir = tempfile::tempdir().unwrap();
    for set in [
        synth_digits::generate(Split::Test, 30, 1).unwrap(),
        synth_digits::generate_rgb(Split::Test, 12, 1).unwrap(),
    ] {
        let p = dir.path().join("0000.parquet");
        write_parquet(&p, &set).unwrap();
        let back = read_parquet(&p, set.shape(), 10).unwrap();
        assert_eq!(back.labels(), set.labels());
        for i in 0..set.labels().len() {
            assert_eq!(back.image_bytes(i), set.image_bytes(i), "image {i}");
        }
    }
}

#[test]
fn wrong_shape_labels_and_non_parquet_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.parquet");
    let set = ImageSet::new(vec![9; 2 * 16], vec![0, 7], [1, 4, 4], 8).unwrap();
    write_parquet(&p, &set).unwrap();
    let err = read_parquet(&p, [1, 28, 28], 8).unwrap_err();
    assert!(
        err.to_string()
            .contains("row 0: image is 4x4, expected 28x28"),
        "{err}"
    );
    let err = read_parquet(&p, [1, 4, 4], 5).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                index: 1,
                label: 7,
                ..
            }
        ),
        "{err:?}"
    );
    std::fs::write(&p, b"PAR1 but truncated").unwrap();
    let err = read_parquet(&p, [1, 4, 4], 8).unwrap_err();
    assert!(err.to_string().contains("not a Parquet file"), "{err}");
    assert!(err.to_string().contains("a.parquet"), "{err}");
}
