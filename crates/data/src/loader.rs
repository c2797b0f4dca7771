//! Batches from a dataset, made ahead on background threads.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::Device;
use rand::seq::SliceRandom;

use crate::transform::{Image, Mask, Transform};
use crate::{seed, Batch, DataError, Dataset, Result, Sample};

/// A uniformly random permutation of `0..n`, reproducible for `seed`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut seed::rng(seed, &[]));
    order
}

/// Cuts a dataset into batches, in order or shuffled, optionally augmented, made by worker
/// threads ahead of the consumer.
///
/// The shuffle of epoch `e` depends only on `(seed, e)` and the augmentation of sample `i` in
/// epoch `e` only on `(transform seed, e, i)`, so a run resumed at epoch `e` sees the same
/// batches as one that never stopped, whatever the number of workers.
#[derive(Clone)]
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    batch_size: usize,
    shuffle_seed: Option<u64>,
    drop_last: bool,
    device: Device,
    transform: Option<(Arc<dyn Transform>, u64)>,
    workers: usize,
    prefetch: usize,
}

impl Loader {
    /// A loader with 2 worker threads, each keeping up to 2 finished batches ready.
    pub fn new(dataset: Arc<dyn Dataset>, batch_size: usize, device: &Device) -> Result<Self> {
        if batch_size == 0 {
            return Err(DataError::Invalid("batch size must be at least 1".into()));
        }
        Ok(Self {
            dataset,
            batch_size,
            shuffle_seed: None,
            drop_last: false,
            device: device.clone(),
            transform: None,
            workers: 2,
            prefetch: 2,
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

    /// Apply `transform` to every sample (and its mask, for segmentation targets `[K, H, W]`),
    /// with randomness drawn from `(seed, epoch, sample index)`.
    pub fn transform(mut self, transform: Arc<dyn Transform>, seed: u64) -> Self {
        self.transform = Some((transform, seed));
        self
    }

    /// Number of background threads making batches; 0 makes them on the consumer's thread.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Finished batches each worker may hold before it waits for the consumer (at least 1).
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches.max(1);
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

    /// The dataset indices of epoch `epoch` in the order they are served.
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        match self.shuffle_seed {
            Some(seed) => permutation(self.dataset.len(), seed::derive(seed, &[epoch as u64])),
            None => (0..self.dataset.len()).collect(),
        }
    }

    /// The batches of epoch `epoch` (0-based), in order.
    pub fn epoch(&self, epoch: usize) -> Batches {
        let plan = Arc::new(Plan {
            loader: self.clone(),
            order: self.order(epoch),
            epoch,
        });
        let total = self.num_batches();
        let workers = self.workers.min(total);
        if workers == 0 {
            return Batches {
                plan,
                next: 0,
                total,
                receivers: Vec::new(),
                handles: Vec::new(),
            };
        }
        let (mut receivers, mut handles) = (Vec::new(), Vec::new());
        for w in 0..workers {
            let (tx, rx) = sync_channel(self.prefetch);
            let plan = plan.clone();
            handles.push(std::thread::spawn(move || {
                for b in (w..total).step_by(workers) {
                    if tx.send(plan.batch(b)).is_err() {
                        break; // the consumer is gone
                    }
                }
            }));
            receivers.push(rx);
        }
        Batches {
            plan,
            next: 0,
            total,
            receivers,
            handles,
        }
    }
}

/// Everything needed to make any batch of one epoch.
struct Plan {
    loader: Loader,
    order: Vec<usize>,
    epoch: usize,
}

impl Plan {
    fn batch(&self, b: usize) -> Result<Batch> {
        let l = &self.loader;
        let end = ((b + 1) * l.batch_size).min(self.order.len());
        let indices = &self.order[b * l.batch_size..end];
        let Some((transform, seed)) = &l.transform else {
            return l.dataset.batch(indices, &l.device);
        };
        let item = shape3(&l.dataset.item_shape(), "input")?;
        let target_shape = l.dataset.target_shape();
        let spatial = target_shape.len() == 3;
        let mut samples = Vec::with_capacity(indices.len());
        let (mut item_out, mut target_out) = (item.to_vec(), target_shape.clone());
        for &i in indices {
            let Sample { input, target } = l.dataset.get(i)?;
            let mut image = Image::new(input, item)?;
            let mut rng = seed::rng(*seed, &[self.epoch as u64, i as u64]);
            let target = if spatial {
                let mut mask = Mask::new(target, shape3(&target_shape, "target")?)?;
                transform.apply(&mut image, Some(&mut mask), &mut rng)?;
                target_out = mask.shape.to_vec();
                mask.data
            } else {
                transform.apply(&mut image, None, &mut rng)?;
                target
            };
            item_out = image.shape.to_vec();
            samples.push(Sample {
                input: image.data,
                target,
            });
        }
        Batch::stack(samples, &item_out, &target_out, &l.device)
    }
}

fn shape3(shape: &[usize], what: &str) -> Result<[usize; 3]> {
    shape.try_into().map_err(|_| {
        DataError::Invalid(format!(
            "transforms need [C, H, W] images, but the dataset's {what} shape is {shape:?}"
        ))
    })
}

/// The batches of one epoch, in order; dropping it stops the workers.
pub struct Batches {
    plan: Arc<Plan>,
    next: usize,
    total: usize,
    receivers: Vec<Receiver<Result<Batch>>>,
    handles: Vec<JoinHandle<()>>,
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.total {
            return None;
        }
        let b = self.next;
        self.next += 1;
        if self.receivers.is_empty() {
            return Some(self.plan.batch(b));
        }
        Some(
            self.receivers[b % self.receivers.len()]
                .recv()
                .unwrap_or_else(|_| {
                    Err(DataError::Invalid(format!(
                        "the loader thread making batch {b} stopped (it panicked)"
                    )))
                }),
        )
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.total - self.next;
        (left, Some(left))
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        // Closing the channels first lets a worker blocked on a full one return.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
