//! The IDX format of MNIST, Fashion-MNIST, KMNIST and EMNIST: a 4-byte magic (two zero bytes, an
//! element type, the number of dimensions), big-endian u32 dimensions, then the elements.
//! Files may be gzip-compressed; both forms are read.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use crate::{DataError, ImageSet, Result};

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
    ImageSet::new(img.data, labels, [1, h, w], classes)
}

/// Finds `stem` or `stem.gz` in `dir`.
pub fn find_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [dir.join(stem), dir.join(format!("{stem}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}
