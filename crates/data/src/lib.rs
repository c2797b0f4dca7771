//! Data for forja: a [`Dataset`] trait, the IDX reader of the MNIST family, the embedded
//! `synth-digits` generator and a seeded batch [`Loader`].
//!
//! ```
//! use forja_data::{catalog, Dataset, Loader, Split};
//! # fn main() -> forja_data::Result<()> {
//! let test = catalog::open("synth-digits", Split::Test, None)?;
//! assert_eq!(test.item_shape(), vec![1, 28, 28]);
//! let loader = Loader::new(&test, 64, &candle_core::Device::Cpu)?.shuffle(7);
//! let first = loader.epoch(0).next().unwrap()?;
//! assert_eq!(first.inputs.dims(), &[64, 1, 28, 28]);
//! # Ok(()) }
//! ```

pub mod catalog;
mod dataset;
mod error;
pub mod fs;
pub mod idx;
mod loader;
pub mod seed;
pub mod synth_digits;

pub use catalog::Split;
pub use dataset::{split, Batch, Dataset, ImageSet, Subset};
pub use error::{DataError, Result};
pub use loader::{permutation, Loader};
