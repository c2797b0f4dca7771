//! Datasets by name, as the command line and the model registry refer to them.

use std::path::{Path, PathBuf};

use crate::{idx, synth_digits, DataError, ImageSet, Result};

/// Which part of a dataset: the one to fit, or the held-out one to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train = 0,
    Test = 1,
}

/// One entry of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct DatasetInfo {
    pub name: &'static str,
    pub summary: &'static str,
    /// Debian package that installs the files, if there is one.
    pub debian_package: Option<&'static str>,
}

/// Every dataset `open` knows.
pub const DATASETS: &[DatasetInfo] = &[
    DatasetInfo {
        name: "synth-digits",
        summary:
            "procedural 28x28 handwritten-style digits, 12k train / 2k test, embedded (no files)",
        debian_package: None,
    },
    DatasetInfo {
        name: "fashion-mnist",
        summary: "Zalando's 28x28 clothing images, 10 classes, 60k train / 10k test (IDX)",
        debian_package: Some("dataset-fashion-mnist"),
    },
    DatasetInfo {
        name: "mnist",
        summary: "LeCun's 28x28 handwritten digits, 60k train / 10k test (IDX)",
        debian_package: None,
    },
    DatasetInfo {
        name: "kmnist",
        summary: "Kuzushiji-MNIST, 28x28 cursive Japanese, 10 classes (IDX)",
        debian_package: None,
    },
];

/// Sizes of the embedded `synth-digits` splits.
pub const SYNTH_DIGITS_TRAIN: usize = 12_000;
pub const SYNTH_DIGITS_TEST: usize = 2_000;
/// `synth-digits` is one fixed dataset, whatever the training seed.
const SYNTH_DIGITS_SEED: u64 = 0x5EED_D161;

/// Directories searched for dataset `name` when no directory is given.
pub fn default_dirs(name: &str) -> Vec<PathBuf> {
    let mut dirs = vec![
        PathBuf::from("/usr/share/datasets").join(name),
        PathBuf::from("data").join(name),
    ];
    if let Some(root) = std::env::var_os("FORJA_DATA") {
        dirs.insert(0, PathBuf::from(root).join(name));
    }
    dirs
}

/// Opens `split` of dataset `name`; IDX datasets are read from `dir` or, without one, from
/// the first of [`default_dirs`] that holds them.
pub fn open(name: &str, split: Split, dir: Option<&Path>) -> Result<ImageSet> {
    let info =
        DATASETS
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| DataError::UnknownDataset {
                name: name.to_string(),
                known: DATASETS.iter().map(|d| d.name.to_string()).collect(),
            })?;
    if info.name == "synth-digits" {
        let n = match split {
            Split::Train => SYNTH_DIGITS_TRAIN,
            Split::Test => SYNTH_DIGITS_TEST,
        };
        return synth_digits::generate(split, n, SYNTH_DIGITS_SEED);
    }
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images = format!("{prefix}-images-idx3-ubyte");
    let labels = format!("{prefix}-labels-idx1-ubyte");
    let dirs = dir.map_or_else(|| default_dirs(name), |d| vec![d.to_path_buf()]);
    let found = dirs
        .iter()
        .find_map(|d| Some((idx::find_file(d, &images)?, idx::find_file(d, &labels)?)));
    let Some((images, labels)) = found else {
        let get = match info.debian_package {
            Some(pkg) => format!("Install them with `apt-get install {pkg}`, or pass --data-dir DIR."),
            None => format!("Download the four IDX files of {name} (gzipped or not) into one of these directories, or pass --data-dir DIR."),
        };
        return Err(DataError::NotFound {
            dataset: name.to_string(),
            file: format!("{images}[.gz] and {labels}[.gz]"),
            looked_in: dirs,
            hint: get,
        });
    };
    idx::read_image_set(&images, &labels, 10)
}
