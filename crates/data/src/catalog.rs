//! Datasets by name, as the command line and the model registry refer to them.
//!
//! Every dataset registers a [`DatasetEntry`] with `inventory::submit!` in the file that
//! implements it, so adding a dataset touches one file; [`entries`] lists them all.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{DataError, Dataset, Result};

/// Which part of a dataset: the one to fit, or the held-out one to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train = 0,
    Test = 1,
}

/// Where a dataset's samples come from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// Generated in memory: always available, nothing to download.
    Embedded,
    /// Read from files; `found(dir)` tells whether `dir` holds them, `hint` how to get them.
    Files {
        found: fn(&Path) -> bool,
        hint: &'static str,
    },
    /// Downloaded from this Hugging Face Hub dataset repository and cached (feature `hub`).
    Hub { repo: &'static str },
}

/// Opens one split of a dataset; file datasets get the directory holding their files.
pub type OpenFn = fn(Split, Option<&Path>) -> Result<Arc<dyn Dataset>>;

/// One registered dataset.
pub struct DatasetEntry {
    pub name: &'static str,
    pub summary: &'static str,
    /// Shape of one input; empty where it depends on the files.
    pub shape: &'static [usize],
    /// Number of classes, `None` where it depends on the files.
    pub classes: Option<usize>,
    pub source: Source,
    pub open: OpenFn,
}

inventory::collect!(DatasetEntry);

/// Every registered dataset, sorted by name.
pub fn entries() -> Vec<&'static DatasetEntry> {
    let mut all: Vec<_> = inventory::iter::<DatasetEntry>.into_iter().collect();
    all.sort_by_key(|e| e.name);
    all
}

/// The entry called `name`.
pub fn find(name: &str) -> Result<&'static DatasetEntry> {
    inventory::iter::<DatasetEntry>
        .into_iter()
        .find(|e| e.name == name)
        .ok_or_else(|| DataError::UnknownDataset {
            name: name.to_string(),
            known: entries().iter().map(|e| e.name.to_string()).collect(),
        })
}

/// Directories searched for dataset `name` when no directory is given: `$FORJA_DATA/<name>`,
/// `/usr/share/datasets/<name>` (where Debian's dataset packages install) and `data/<name>`.
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

impl DatasetEntry {
    /// Where a file dataset is looked for: `dir` alone if given, else [`default_dirs`].
    fn search_dirs(&self, dir: Option<&Path>) -> Vec<PathBuf> {
        dir.map_or_else(|| default_dirs(self.name), |d| vec![d.to_path_buf()])
    }

    /// The directory holding a file dataset: `dir` if it has the files, else the first default
    /// directory that has them. `None` for other sources or when the files are nowhere.
    pub fn locate(&self, dir: Option<&Path>) -> Option<PathBuf> {
        let Source::Files { found, .. } = self.source else {
            return None;
        };
        self.search_dirs(dir).into_iter().find(|d| found(d))
    }

    /// Opens `split`, finding file datasets in `dir` or the default directories.
    pub fn open_split(&self, split: Split, dir: Option<&Path>) -> Result<Arc<dyn Dataset>> {
        match self.source {
            Source::Files { found, hint } => {
                let dirs = self.search_dirs(dir);
                let Some(root) = dirs.iter().find(|d| found(d)) else {
                    return Err(DataError::NotFound {
                        dataset: self.name.to_string(),
                        looked_in: dirs,
                        hint: hint.to_string(),
                    });
                };
                (self.open)(split, Some(root))
            }
            Source::Embedded | Source::Hub { .. } => (self.open)(split, dir),
        }
    }
}

/// Opens `split` of dataset `name` (see [`DatasetEntry::open_split`]).
pub fn open(name: &str, split: Split, dir: Option<&Path>) -> Result<Arc<dyn Dataset>> {
    find(name)?.open_split(split, dir)
}

/// The directory the catalog passes to a file dataset's `open`.
pub fn need_dir(dir: Option<&Path>) -> Result<&Path> {
    dir.ok_or_else(|| {
        DataError::Invalid("this dataset is read from files: give its directory".into())
    })
}
