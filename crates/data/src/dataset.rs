use candle_core::{Device, Tensor};

use crate::{DataError, Result};

/// A batch ready for a model: inputs `[B, ...item_shape]` (f32) and integer targets `[B]` (u32).
#[derive(Debug, Clone)]
pub struct Batch {
    pub inputs: Tensor,
    pub targets: Tensor,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.inputs.dim(0).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A finite, indexable collection of labelled samples.
///
/// Implementors provide `len`, `item_shape` and `get`; `batch` has a generic default that gathers
/// samples one by one, which in-memory datasets override with a single copy.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shape of one input, e.g. `[1, 28, 28]`.
    fn item_shape(&self) -> Vec<usize>;

    /// Number of classes for labelled data, `None` when the targets are not class indices.
    fn num_classes(&self) -> Option<usize>;

    /// One sample: its flattened f32 values (length = product of `item_shape`) and its label.
    fn get(&self, index: usize) -> Result<(Vec<f32>, u32)>;

    /// The samples at `indices`, stacked into a batch on `device`.
    fn batch(&self, indices: &[usize], device: &Device) -> Result<Batch> {
        let shape = self.item_shape();
        let numel: usize = shape.iter().product();
        let mut values = Vec::with_capacity(indices.len() * numel);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let (x, y) = self.get(i)?;
            values.extend_from_slice(&x);
            labels.push(y);
        }
        let mut dims = vec![indices.len()];
        dims.extend(shape);
        Ok(Batch {
            inputs: Tensor::from_vec(values, dims, device)?,
            targets: Tensor::from_vec(labels, indices.len(), device)?,
        })
    }
}

/// Images stored as bytes (0..=255, scaled to [0, 1] when read) with class labels.
///
/// Both the IDX reader and the synthetic generators produce this type, so they share one fast
/// batching path.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pixels: Vec<u8>,
    labels: Vec<u32>,
    shape: [usize; 3],
    classes: usize,
}

impl ImageSet {
    /// `pixels` holds `labels.len()` images of `shape` = `[channels, height, width]`, row-major.
    pub fn new(
        pixels: Vec<u8>,
        labels: Vec<u32>,
        shape: [usize; 3],
        classes: usize,
    ) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if pixels.len() != labels.len() * numel {
            return Err(DataError::Invalid(format!(
                "{} pixels do not make {} images of shape {shape:?}",
                pixels.len(),
                labels.len()
            )));
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= classes)
        {
            return Err(DataError::Invalid(format!(
                "label {label} at index {index} is not below the class count {classes}"
            )));
        }
        Ok(Self {
            pixels,
            labels,
            shape,
            classes,
        })
    }

    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The raw bytes of image `index`.
    pub fn image_bytes(&self, index: usize) -> &[u8] {
        let numel = self.numel();
        &self.pixels[index * numel..(index + 1) * numel]
    }

    /// The first `n` samples (or all, if there are fewer).
    pub fn truncated(mut self, n: usize) -> Self {
        let n = n.min(self.labels.len());
        self.pixels.truncate(n * self.numel());
        self.labels.truncate(n);
        self
    }

    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn check(&self, index: usize) -> Result<()> {
        if index >= self.labels.len() {
            return Err(DataError::IndexOutOfRange {
                index,
                len: self.labels.len(),
            });
        }
        Ok(())
    }
}

impl Dataset for ImageSet {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn item_shape(&self) -> Vec<usize> {
        self.shape.to_vec()
    }

    fn num_classes(&self) -> Option<usize> {
        Some(self.classes)
    }

    fn get(&self, index: usize) -> Result<(Vec<f32>, u32)> {
        self.check(index)?;
        let x = self
            .image_bytes(index)
            .iter()
            .map(|&p| p as f32 / 255.0)
            .collect();
        Ok((x, self.labels[index]))
    }

    fn batch(&self, indices: &[usize], device: &Device) -> Result<Batch> {
        let numel = self.numel();
        let mut values = Vec::with_capacity(indices.len() * numel);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            self.check(i)?;
            values.extend(self.image_bytes(i).iter().map(|&p| p as f32 / 255.0));
            labels.push(self.labels[i]);
        }
        let [c, h, w] = self.shape;
        Ok(Batch {
            inputs: Tensor::from_vec(values, (indices.len(), c, h, w), device)?,
            targets: Tensor::from_vec(labels, indices.len(), device)?,
        })
    }
}

/// A view of some items of another dataset, e.g. one side of a train/validation split.
pub struct Subset<'a> {
    inner: &'a dyn Dataset,
    indices: Vec<usize>,
}

impl<'a> Subset<'a> {
    pub fn new(inner: &'a dyn Dataset, indices: Vec<usize>) -> Result<Self> {
        if let Some(&index) = indices.iter().find(|&&i| i >= inner.len()) {
            return Err(DataError::IndexOutOfRange {
                index,
                len: inner.len(),
            });
        }
        Ok(Self { inner, indices })
    }
}

impl Dataset for Subset<'_> {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn item_shape(&self) -> Vec<usize> {
        self.inner.item_shape()
    }

    fn num_classes(&self) -> Option<usize> {
        self.inner.num_classes()
    }

    fn get(&self, index: usize) -> Result<(Vec<f32>, u32)> {
        let &i = self.indices.get(index).ok_or(DataError::IndexOutOfRange {
            index,
            len: self.indices.len(),
        })?;
        self.inner.get(i)
    }

    fn batch(&self, indices: &[usize], device: &Device) -> Result<Batch> {
        let mapped = indices
            .iter()
            .map(|&i| {
                self.indices
                    .get(i)
                    .copied()
                    .ok_or(DataError::IndexOutOfRange {
                        index: i,
                        len: self.indices.len(),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        self.inner.batch(&mapped, device)
    }
}

/// Splits `dataset` at random (reproducibly for `seed`) into two subsets, the first holding
/// `round(fraction * len)` items: a held-out validation set carved from a training set.
pub fn split(dataset: &dyn Dataset, fraction: f64, seed: u64) -> Result<(Subset<'_>, Subset<'_>)> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(DataError::Invalid(format!(
            "split fraction {fraction} is not in [0, 1]"
        )));
    }
    let order = crate::loader::permutation(dataset.len(), seed);
    let cut = (fraction * dataset.len() as f64).round() as usize;
    let (a, b) = order.split_at(cut);
    Ok((
        Subset::new(dataset, a.to_vec())?,
        Subset::new(dataset, b.to_vec())?,
    ))
}
