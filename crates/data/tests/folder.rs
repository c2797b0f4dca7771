//! Image folders: classification trees and segmentation pairs written by the test.

use std::path::Path;

use forja_data::folder::{FolderOptions, ImageFolder, SegmentationSet};
use forja_data::{catalog, DataError, Dataset, Split};

fn save_grey(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]))
        .save(path)
        .unwrap();
}

#[test]
fn class_folders_become_sorted_labels_and_exact_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    save_grey(&root.join("cat/b.png"), 4, 3, |x, y| (10 * x + y) as u8);
    save_grey(&root.join("cat/a.png"), 4, 3, |_, _| 7);
    save_grey(&root.join("ant/z.png"), 4, 3, |x, _| x as u8);
    std::fs::write(root.join("cat/notes.txt"), "not an image").unwrap();
    let set = ImageFolder::read(root, FolderOptions::default()).unwrap();
    assert_eq!(set.class_names, ["ant", "cat"]);
    assert_eq!(set.images.labels(), &[0, 1, 1]);
    assert_eq!(set.images.item_shape(), vec![1, 3, 4]);
    assert_eq!(
        set.images.image_bytes(0),
        &[0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]
    );
    assert_eq!(set.images.image_bytes(1), &[7; 12]); // a.png before b.png
    assert_eq!(set.images.image_bytes(2)[..4], [0, 10, 20, 30]);
}

#[test]
fn colour_images_are_read_channel_first_and_jpeg_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("red/x.png");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(2, 2, |x, y| image::Rgb([200, x as u8, y as u8]))
        .save(&p)
        .unwrap();
    let j = dir.path().join("red/y.jpg");
    image::RgbImage::from_fn(2, 2, |_, _| image::Rgb([128, 128, 128]))
        .save(&j)
        .unwrap();
    let set = ImageFolder::read(dir.path(), FolderOptions::default()).unwrap();
    assert_eq!(set.images.item_shape(), vec![3, 2, 2]);
    assert_eq!(
        set.images.image_bytes(0),
        &[200, 200, 200, 200, 0, 1, 0, 1, 0, 0, 1, 1]
    );
    assert!(set
        .images
        .image_bytes(1)
        .iter()
        .all(|&v| v.abs_diff(128) <= 3));
}

#[test]
fn an_image_of_another_size_is_an_error_naming_both_files_unless_resized() {
    let dir = tempfile::tempdir().unwrap();
    save_grey(&dir.path().join("a/1.png"), 4, 4, |_, _| 0);
    save_grey(&dir.path().join("a/2.png"), 5, 4, |_, _| 0);
    let err = ImageFolder::read(dir.path(), FolderOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("2.png") && msg.contains("1.png") && msg.contains("4x5"),
        "{msg}"
    );
    let options = FolderOptions {
        size: Some((8, 6)),
        channels: Some(3),
    };
    let set = ImageFolder::read(dir.path(), options).unwrap();
    assert_eq!(set.images.item_shape(), vec![3, 8, 6]);
}

#[test]
fn an_undecodable_image_and_an_empty_tree_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("a")).unwrap();
    let err = ImageFolder::read(dir.path(), FolderOptions::default()).unwrap_err();
    assert!(err.to_string().contains("no images"), "{err}");
    std::fs::write(dir.path().join("a/broken.png"), b"\x89PNG but not really").unwrap();
    let err = ImageFolder::read(dir.path(), FolderOptions::default()).unwrap_err();
    assert!(
        matches!(&err, DataError::BadFile { path, .. } if path.ends_with("broken.png")),
        "{err:?}"
    );
}

#[test]
fn catalog_image_folder_reads_train_and_test_subtrees() {
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "test"] {
        for class in ["no", "yes"] {
            save_grey(
                &dir.path().join(format!("{split}/{class}/0.png")),
                3,
                3,
                |_, _| 1,
            );
        }
    }
    let train = catalog::open("image-folder", Split::Train, Some(dir.path())).unwrap();
    assert_eq!((train.len(), train.num_classes()), (2, Some(2)));
}

#[test]
fn segmentation_pairs_match_masks_by_file_stem() {
    let dir = tempfile::tempdir().unwrap();
    let (img, msk) = (dir.path().join("images"), dir.path().join("masks"));
    save_grey(&img.join("a.png"), 3, 2, |x, _| 50 * x as u8);
    save_grey(&msk.join("a.png"), 3, 2, |x, y| ((x + y) % 3) as u8);
    let set = SegmentationSet::read(&img, &msk, FolderOptions::default()).unwrap();
    assert_eq!(set.target_shape(), vec![1, 2, 3]);
    assert_eq!(set.num_classes(), Some(3));
    let s = set.get(0).unwrap();
    assert_eq!(s.target, vec![0, 1, 2, 1, 2, 0]);
    let b = set.batch(&[0, 0], &candle_core::Device::Cpu).unwrap();
    assert_eq!(b.targets.dims(), &[2, 1, 2, 3]);

    save_grey(&img.join("b.png"), 3, 2, |_, _| 0);
    let err = SegmentationSet::read(&img, &msk, FolderOptions::default()).unwrap_err();
    assert!(err.to_string().contains("no mask b.png"), "{err}");
    save_grey(&msk.join("b.png"), 2, 2, |_, _| 0);
    let err = SegmentationSet::read(&img, &msk, FolderOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("masks/b.png") && msg.contains("2x2"), "{msg}");
}
