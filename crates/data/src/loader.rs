use candle_core::Device;
use rand::seq::SliceRandom;

use crate::{seed, Batch, DataError, Dataset, Result};

/// A uniformly random permutation of `0..n`, reproducible for `seed`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut seed::rng(seed, &[]));
    order
}

/// Cuts a dataset into batches, in order or shuffled.
///
/// The shuffle of epoch `e` depends only on `(seed, e)`, so a run resumed at epoch `e` sees the
/// same batches as one that never stopped.
pub struct Loader<'a> {
    dataset: &'a dyn Dataset,
    batch_size: usize,
    shuffle_seed: Option<u64>,
    drop_last: bool,
    device: Device,
}

impl<'a> Loader<'a> {
    pub fn new(dataset: &'a dyn Dataset, batch_size: usize, device: &Device) -> Result<Self> {
        if batch_size == 0 {
            return Err(DataError::Invalid("batch size must be at least 1".into()));
        }
        Ok(Self {
            dataset,
            batch_size,
            shuffle_seed: None,
            drop_last: false,
            device: device.clone(),
        })
    }

    /// Shuffle every epoch, reproducibly from `seed`.
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.shuffle_seed = Some(seed);
        self
    }

    /// Skip the last batch when it is smaller than the batch size.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    pub fn num_batches(&self) -> usize {
        let n = self.dataset.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    pub fn num_samples(&self) -> usize {
        if self.drop_last {
            self.num_batches() * self.batch_size
        } else {
            self.dataset.len()
        }
    }

    /// The batches of epoch `epoch` (0-based).
    pub fn epoch(&self, epoch: usize) -> impl Iterator<Item = Result<Batch>> + '_ {
        let order = match self.shuffle_seed {
            Some(seed) => permutation(self.dataset.len(), seed::derive(seed, &[epoch as u64])),
            None => (0..self.dataset.len()).collect(),
        };
        let batches = self.num_batches();
        let size = self.batch_size;
        (0..batches).map(move |b| {
            let end = ((b + 1) * size).min(order.len());
            self.dataset.batch(&order[b * size..end], &self.device)
        })
    }
}
