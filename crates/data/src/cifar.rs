//! The binary format of CIFAR-10 and CIFAR-100 (Krizhevsky 2009): fixed-size records of label
//! byte(s) followed by a 32x32 image as 1024 red, 1024 green and 1024 blue bytes.
//!
//! CIFAR-10: `data_batch_1.bin` .. `data_batch_5.bin` and `test_batch.bin`, one label byte.
//! CIFAR-100: `train.bin` and `test.bin`, a coarse and a fine label byte; forja uses the fine
//! (100-class) label.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::catalog::{need_dir, DatasetEntry, Source};
use crate::{DataError, ImageSet, Result, Split};

/// Bytes of one image.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

/// Which of the two datasets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cifar {
    Ten,
    Hundred,
}

impl Cifar {
    pub fn classes(self) -> usize {
        match self {
            Cifar::Ten => 10,
            Cifar::Hundred => 100,
        }
    }

    fn label_bytes(self) -> usize {
        match self {
            Cifar::Ten => 1,
            Cifar::Hundred => 2,
        }
    }

    /// Bytes of one record.
    pub fn record_bytes(self) -> usize {
        self.label_bytes() + IMAGE_BYTES
    }

    /// The file names of a split, in reading order.
    pub fn files(self, split: Split) -> Vec<String> {
        match (self, split) {
            (Cifar::Ten, Split::Train) => (1..=5).map(|k| format!("data_batch_{k}.bin")).collect(),
            (Cifar::Ten, Split::Test) => vec!["test_batch.bin".into()],
            (Cifar::Hundred, Split::Train) => vec!["train.bin".into()],
            (Cifar::Hundred, Split::Test) => vec!["test.bin".into()],
        }
    }

    /// The folder the official archive unpacks to.
    pub fn archive_dir(self) -> &'static str {
        match self {
            Cifar::Ten => "cifar-10-batches-bin",
            Cifar::Hundred => "cifar-100-binary",
        }
    }
}

/// Parses one file's bytes into pixels and labels; `path` is only used in error messages.
pub fn parse(path: &Path, bytes: &[u8], kind: Cifar) -> Result<(Vec<u8>, Vec<u32>)> {
    let record = kind.record_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        return Err(DataError::BadRecords {
            path: path.to_path_buf(),
            len: bytes.len(),
            record,
        });
    }
    let n = bytes.len() / record;
    let mut pixels = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for (index, r) in bytes.chunks_exact(record).enumerate() {
        let label = r[kind.label_bytes() - 1] as u32;
        if label as usize >= kind.classes() {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                index,
                label,
                classes: kind.classes(),
            });
        }
        labels.push(label);
        pixels.extend_from_slice(&r[kind.label_bytes()..]);
    }
    Ok((pixels, labels))
}

/// The directory holding the split's files: `dir` itself or the archive's folder inside it.
pub fn locate(dir: &Path, kind: Cifar) -> Option<PathBuf> {
    [dir.to_path_buf(), dir.join(kind.archive_dir())]
        .into_iter()
        .find(|d| d.join(&kind.files(Split::Test)[0]).is_file())
}

/// Reads a split from `dir` (the folder with the `.bin` files, or its parent).
pub fn read(dir: &Path, kind: Cifar, split: Split) -> Result<ImageSet> {
    let root = locate(dir, kind).unwrap_or_else(|| dir.to_path_buf());
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for name in kind.files(split) {
        let path = root.join(name);
        let bytes = std::fs::read(&path).map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
        let (p, l) = parse(&path, &bytes, kind)?;
        pixels.extend(p);
        labels.extend(l);
    }
    ImageSet::new(pixels, labels, [3, 32, 32], kind.classes())
}

/// Writes images `[n, 3, 32, 32]` and labels as one CIFAR file, atomically (CIFAR-100 files get
/// the fine label in both label bytes, as forja has no coarse labels).
pub fn write(path: &Path, kind: Cifar, pixels: &[u8], labels: &[u32]) -> Result<()> {
    if pixels.len() != labels.len() * IMAGE_BYTES {
        return Err(DataError::Invalid(format!(
            "{} pixels do not make {} CIFAR images",
            pixels.len(),
            labels.len()
        )));
    }
    let mut bytes = Vec::with_capacity(labels.len() * kind.record_bytes());
    for (image, &label) in pixels.chunks_exact(IMAGE_BYTES).zip(labels) {
        let label = u8::try_from(label)
            .ok()
            .filter(|&l| (l as usize) < kind.classes())
            .ok_or_else(|| {
                DataError::Invalid(format!(
                    "label {label} is not below the class count {}",
                    kind.classes()
                ))
            })?;
        bytes.extend(std::iter::repeat_n(label, kind.label_bytes()));
        bytes.extend_from_slice(image);
    }
    crate::fs::write_atomic(path, &bytes).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

inventory::submit! {
    DatasetEntry {
        name: "cifar10",
        summary: "CIFAR-10: 32x32 colour photos, 10 classes, 50k train / 10k test (binary version)",
        shape: &[3, 32, 32],
        classes: Some(10),
        source: Source::Files {
            found: |dir| locate(dir, Cifar::Ten).is_some(),
            hint: "Unpack cifar-10-binary.tar.gz into data/cifar10, or pass --data-dir DIR.",
        },
        open: |split, dir| Ok(Arc::new(read(need_dir(dir)?, Cifar::Ten, split)?)),
    }
}

inventory::submit! {
    DatasetEntry {
        name: "cifar100",
        summary: "CIFAR-100: 32x32 colour photos, 100 fine classes, 50k train / 10k test (binary version)",
        shape: &[3, 32, 32],
        classes: Some(100),
        source: Source::Files {
            found: |dir| locate(dir, Cifar::Hundred).is_some(),
            hint: "Unpack cifar-100-binary.tar.gz into data/cifar100, or pass --data-dir DIR.",
        },
        open: |split, dir| Ok(Arc::new(read(need_dir(dir)?, Cifar::Hundred, split)?)),
    }
}
