//! Data for forja: a [`Dataset`] trait; readers of IDX (the MNIST family), CIFAR binaries and
//! image folders; embedded synthetic data (`synth-digits`, `synth-cells`, 2-D densities);
//! composable seeded [`transform`]s; and a [`Loader`] that makes batches on background threads.
//! Datasets register themselves in the [`catalog`] by name.
//!
//! ```
//! use std::sync::Arc;
//! use forja_data::{catalog, transform, Loader, Split};
//! # fn main() -> forja_data::Result<()> {
//! let test = catalog::open("synth-digits", Split::Test, None)?;
//! assert_eq!(test.item_shape(), vec![1, 28, 28]);
//! let flip = Arc::new(transform::Flip::horizontal(0.5));
//! let loader = Loader::new(test, 64, &candle_core::Device::Cpu)?
//!     .shuffle(7)
//!     .transform(flip, 7);
//! let first = loader.epoch(0).next().unwrap()?;
//! assert_eq!(first.inputs.dims(), &[64, 1, 28, 28]);
//! # Ok(()) }
//! ```

pub mod catalog;
pub mod cifar;
mod dataset;
pub mod densities;
mod error;
pub mod folder;
pub mod fs;
#[cfg(feature = "hub")]
pub mod hub;
pub mod idx;
mod loader;
#[cfg(feature = "parquet")]
pub mod parquet_file;
pub mod seed;
pub mod synth_cells;
pub mod synth_digits;
pub mod transform;

pub use catalog::Split;
pub use dataset::{check_index, split, Batch, Dataset, ImageSet, Sample, Subset};
pub use error::{DataError, Result};
pub use loader::{permutation, Batches, Loader};
