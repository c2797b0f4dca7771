use std::path::PathBuf;

/// Everything that can go wrong while finding, reading or batching data.
///
/// Each variant names the file involved and what was expected, so a user can fix the input.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: not an IDX file (expected magic bytes 00 00 <type> <ndims>, found {found:02x?})"
    )]
    BadMagic { path: PathBuf, found: Vec<u8> },
    #[error("{path}: IDX element type 0x{code:02x} is not supported (only 0x08, unsigned byte)")]
    UnsupportedType { path: PathBuf, code: u8 },
    #[error("{path}: truncated: header and dims {dims:?} need {expected} bytes, the file holds {actual}")]
    Truncated {
        path: PathBuf,
        dims: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    #[error("{path}: {actual} bytes, but header and dims {dims:?} say {expected} (trailing data)")]
    TrailingBytes {
        path: PathBuf,
        dims: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    #[error("{path}: expected {expected}, found dims {dims:?}")]
    WrongDims {
        path: PathBuf,
        expected: &'static str,
        dims: Vec<usize>,
    },
    #[error("{path}: {len} bytes is not a whole, non-zero number of {record}-byte records")]
    BadRecords {
        path: PathBuf,
        len: usize,
        record: usize,
    },
    #[error("cannot get {file} of Hub dataset {repo}: {msg}")]
    Hub {
        repo: String,
        file: String,
        msg: String,
    },
    #[error("{path}: {msg}")]
    BadFile { path: PathBuf, msg: String },
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        images: PathBuf,
        labels: PathBuf,
        n_images: usize,
        n_labels: usize,
    },
    #[error("{path}: label {label} at index {index} is not below the class count {classes}")]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u32,
        classes: usize,
    },
    #[error("dataset `{dataset}` not found: its files are not in {}. {hint}", looked_in.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound {
        dataset: String,
        looked_in: Vec<PathBuf>,
        hint: String,
    },
    #[error("unknown dataset `{name}`; known datasets: {}", known.join(", "))]
    UnknownDataset { name: String, known: Vec<String> },
    #[error("index {index} out of range for a dataset of {len} items")]
    IndexOutOfRange { index: usize, len: usize },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, DataError>;
