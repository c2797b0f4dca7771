//! The IDX format of MNIST, Fashion-MNIST, KMNIST and EMNIST: a 4-byte magic (two zero bytes, an
//! element type, the number of dimensions), big-endian u32 dimensions, then the elements.
//! Files may be gzip-compressed; both forms are read.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use std::sync::Arc;

use crate::catalog::{need_dir, DatasetEntry, Source};
use crate::{DataError, ImageSet, Result, Split};

/// The element type code for unsigned bytes, the only one the MNIST family uses.
const UBYTE: u8 = 0x08;

/// A decoded IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a whole IDX file, gunzipping it when it starts with the gzip magic.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(io_err(path))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(io_err(path))?;
        out
    } else {
        raw
    };
    parse_idx(path, &bytes)
}

/// Parses IDX bytes; `path` is only used in error messages.
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<IdxArray> {
    let bad_magic = || DataError::BadMagic {
        path: path.to_path_buf(),
        found: bytes[..bytes.len().min(4)].to_vec(),
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[3] == 0 {
        return Err(bad_magic());
    }
    if bytes[2] != UBYTE {
        return Err(DataError::UnsupportedType {
            path: path.to_path_buf(),
            code: bytes[2],
        });
    }
    let ndims = bytes[3] as usize;
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            dims: vec![],
            expected: header,
            actual: bytes.len(),
        });
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_add(header))
        .ok_or_else(|| DataError::WrongDims {
            path: path.to_path_buf(),
            expected: "dimensions whose product fits in memory",
            dims: dims.clone(),
        })?;
    let err_dims = dims.clone();
    match bytes.len().cmp(&expected) {
        std::cmp::Ordering::Less => Err(DataError::Truncated {
            path: path.to_path_buf(),
            dims: err_dims,
            expected,
            actual: bytes.len(),
        }),
        std::cmp::Ordering::Greater => Err(DataError::TrailingBytes {
            path: path.to_path_buf(),
            dims: err_dims,
            expected,
            actual: bytes.len(),
        }),
        std::cmp::Ordering::Equal => Ok(IdxArray {
            dims,
            data: bytes[header..].to_vec(),
        }),
    }
}

/// Writes an uncompressed IDX file of unsigned bytes, atomically (temp file, then rename).
pub fn write_idx(path: &Path, dims: &[usize], data: &[u8]) -> Result<()> {
    let numel: usize = dims.iter().product();
    if numel != data.len() || dims.is_empty() || dims.len() > 255 {
        return Err(DataError::Invalid(format!(
            "{} bytes do not fill dims {dims:?}",
            data.len()
        )));
    }
    let mut bytes = vec![0, 0, UBYTE, dims.len() as u8];
    for &d in dims {
        let d = u32::try_from(d)
            .map_err(|_| DataError::Invalid(format!("dimension {d} exceeds u32")))?;
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    crate::fs::write_atomic(path, &bytes).map_err(io_err(path))
}

/// Reads an image file `[n, h, w]` and a label file `[n]` into an [`ImageSet`] of `classes` classes.
pub fn read_image_set(images: &Path, labels: &Path, classes: usize) -> Result<ImageSet> {
    read_images_labels(images, labels, classes, false)
}

/// [`read_image_set`], transposing every image when `transposed` (EMNIST stores them so).
fn read_images_labels(
    images: &Path,
    labels: &Path,
    classes: usize,
    transposed: bool,
) -> Result<ImageSet> {
    let img = read_idx(images)?;
    let lab = read_idx(labels)?;
    let &[n, h, w] = img.dims.as_slice() else {
        return Err(DataError::WrongDims {
            path: images.to_path_buf(),
            expected: "3 dims [n, height, width]",
            dims: img.dims,
        });
    };
    let &[m] = lab.dims.as_slice() else {
        return Err(DataError::WrongDims {
            path: labels.to_path_buf(),
            expected: "1 dim [n]",
            dims: lab.dims,
        });
    };
    if n != m {
        return Err(DataError::CountMismatch {
            images: images.to_path_buf(),
            labels: labels.to_path_buf(),
            n_images: n,
            n_labels: m,
        });
    }
    if let Some((index, &label)) = lab
        .data
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= classes)
    {
        return Err(DataError::LabelOutOfRange {
            path: labels.to_path_buf(),
            index,
            label: label as u32,
            classes,
        });
    }
    let labels = lab.data.into_iter().map(u32::from).collect();
    let pixels = if transposed {
        img.data
            .chunks_exact(h * w)
            .flat_map(|m| (0..h * w).map(move |p| m[(p % h) * w + p / h]))
            .collect()
    } else {
        img.data
    };
    let (h, w) = if transposed { (w, h) } else { (h, w) };
    ImageSet::new(pixels, labels, [1, h, w], classes)
}

/// Finds `stem` or `stem.gz` in `dir`.
pub fn find_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [dir.join(stem), dir.join(format!("{stem}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

/// The file names and class count of one IDX dataset: `<prefix>-images-idx3-ubyte[.gz]` and
/// `<prefix>-labels-idx1-ubyte[.gz]` for the train and test prefixes.
#[derive(Debug, Clone, Copy)]
pub struct IdxLayout {
    pub train: &'static str,
    pub test: &'static str,
    pub classes: usize,
    /// Images stored column-major (EMNIST).
    pub transposed: bool,
}

impl IdxLayout {
    /// The image and label files of `split` in `dir`, if both are there.
    pub fn files(&self, dir: &Path, split: Split) -> Option<(PathBuf, PathBuf)> {
        let prefix = match split {
            Split::Train => self.train,
            Split::Test => self.test,
        };
        Some((
            find_file(dir, &format!("{prefix}-images-idx3-ubyte"))?,
            find_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?,
        ))
    }

    /// Whether `dir` holds both splits.
    pub fn found(&self, dir: &Path) -> bool {
        self.files(dir, Split::Train).is_some() && self.files(dir, Split::Test).is_some()
    }

    pub fn read(&self, dir: &Path, split: Split) -> Result<ImageSet> {
        let (images, labels) = self.files(dir, split).ok_or_else(|| DataError::NotFound {
            dataset: format!("IDX files `{}` / `{}`", self.train, self.test),
            looked_in: vec![dir.to_path_buf()],
            hint: "Give the directory holding the four IDX files (gzipped or not).".into(),
        })?;
        read_images_labels(&images, &labels, self.classes, self.transposed)
    }
}

/// The file names of MNIST, Fashion-MNIST and KMNIST.
pub const MNIST_LAYOUT: IdxLayout = IdxLayout {
    train: "train",
    test: "t10k",
    classes: 10,
    transposed: false,
};

macro_rules! idx_dataset {
    ($name:literal, $summary:literal, $layout:expr, $hint:literal) => {
        inventory::submit! {
            DatasetEntry {
                name: $name,
                summary: $summary,
                shape: &[1, 28, 28],
                classes: Some($layout.classes),
                source: Source::Files { found: |dir| $layout.found(dir), hint: $hint },
                open: |split, dir| Ok(Arc::new($layout.read(need_dir(dir)?, split)?)),
            }
        }
    };
}

idx_dataset!(
    "fashion-mnist",
    "Zalando's clothing images, 60k train / 10k test",
    MNIST_LAYOUT,
    "Install them with `apt-get install dataset-fashion-mnist`, or pass --data-dir DIR."
);
idx_dataset!(
    "mnist",
    "LeCun's handwritten digits, 60k train / 10k test",
    MNIST_LAYOUT,
    "Put the four MNIST IDX files (gzipped or not) in data/mnist, or pass --data-dir DIR."
);
idx_dataset!(
    "kmnist",
    "Kuzushiji-MNIST, cursive Japanese characters, 60k / 10k",
    MNIST_LAYOUT,
    "Put the four KMNIST IDX files (gzipped or not) in data/kmnist, or pass --data-dir DIR."
);
idx_dataset!(
    "emnist-balanced",
    "EMNIST Balanced: digits and letters, 47 classes, 112k / 19k",
    IdxLayout {
        train: "emnist-balanced-train",
        test: "emnist-balanced-test",
        classes: 47,
        transposed: true,
    },
    "Put emnist-balanced-{train,test}-{images-idx3,labels-idx1}-ubyte[.gz] in data/emnist-balanced, or pass --data-dir DIR."
);
idx_dataset!(
    "emnist-digits",
    "EMNIST Digits, 240k / 40k",
    IdxLayout {
        train: "emnist-digits-train",
        test: "emnist-digits-test",
        classes: 10,
        transposed: true,
    },
    "Put emnist-digits-{train,test}-{images-idx3,labels-idx1}-ubyte[.gz] in data/emnist-digits, or pass --data-dir DIR."
);
