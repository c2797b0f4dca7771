use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::{DataError, Result};

/// A batch ready for a model: inputs `[B, ...item_shape]` (f32) and integer targets
/// `[B, ...target_shape]` (u32): `[B]` class indices for classification, `[B, 2, H, W]`
/// (semantic class, instance id) for segmentation.
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

    /// Stacks samples whose input has `item_shape` and whose target has `target_shape`.
    pub fn stack(
        samples: Vec<Sample>,
        item_shape: &[usize],
        target_shape: &[usize],
        device: &Device,
    ) -> Result<Self> {
        let n = samples.len();
        let numel: usize = item_shape.iter().product();
        let tnumel: usize = target_shape.iter().product();
        let mut values = Vec::with_capacity(n * numel);
        let mut targets = Vec::with_capacity(n * tnumel);
        for (i, s) in samples.into_iter().enumerate() {
            if s.input.len() != numel || s.target.len() != tnumel {
                return Err(DataError::Invalid(format!(
                    "sample {i} of the batch has {} input and {} target values, expected {numel} ({item_shape:?}) and {tnumel} ({target_shape:?})",
                    s.input.len(),
                    s.target.len()
                )));
            }
            values.extend_from_slice(&s.input);
            targets.extend_from_slice(&s.target);
        }
        let with_batch = |shape: &[usize]| [&[n], shape].concat();
        Ok(Batch {
            inputs: Tensor::from_vec(values, with_batch(item_shape), device)?,
            targets: Tensor::from_vec(targets, with_batch(target_shape), device)?,
        })
    }
}

/// One sample: its input values (row-major, `item_shape`) and its target values
/// (`target_shape`; one class index for classification).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub input: Vec<f32>,
    pub target: Vec<u32>,
}

impl Sample {
    /// A classification sample.
    pub fn labelled(input: Vec<f32>, label: u32) -> Self {
        Self {
            input,
            target: vec![label],
        }
    }

    /// The class index of a classification sample.
    pub fn label(&self) -> u32 {
        self.target[0]
    }
}

/// `Ok` when `index` is below `len`, else the error that names both.
pub fn check_index(index: usize, len: usize) -> Result<()> {
    if index >= len {
        return Err(DataError::IndexOutOfRange { index, len });
    }
    Ok(())
}

/// A finite, indexable collection of samples.
///
/// Implementors provide `len`, `item_shape`, `num_classes` and `get`; `batch` has a generic
/// default that gathers samples one by one, which in-memory datasets override with one copy.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shape of one input, e.g. `[1, 28, 28]`.
    fn item_shape(&self) -> Vec<usize>;

    /// Shape of one target: `[]` (a class index) unless overridden, `[2, H, W]` for segmentation.
    fn target_shape(&self) -> Vec<usize> {
        Vec::new()
    }

    /// Number of classes (of the targets' class channel), `None` when targets are not classes.
    fn num_classes(&self) -> Option<usize>;

    /// Sample `index`.
    fn get(&self, index: usize) -> Result<Sample>;

    /// The samples at `indices`, stacked into a batch on `device`.
    fn batch(&self, indices: &[usize], device: &Device) -> Result<Batch> {
        let samples = indices
            .iter()
            .map(|&i| self.get(i))
            .collect::<Result<Vec<_>>>()?;
        Batch::stack(samples, &self.item_shape(), &self.target_shape(), device)
    }
}

/// Images stored as bytes (0..=255, scaled to [0, 1] when read) with class labels.
///
/// The IDX, CIFAR and image-folder readers and the synthetic generators all produce this type,
/// so they share one fast batching path.
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

    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// The raw bytes of image `index`.
    pub fn image_bytes(&self, index: usize) -> &[u8] {
        let numel = self.numel();
        &self.pixels[index * numel..(index + 1) * numel]
    }

    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn check(&self, index: usize) -> Result<()> {
        check_index(index, self.labels.len())
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

    fn get(&self, index: usize) -> Result<Sample> {
        self.check(index)?;
        let x = self
            .image_bytes(index)
            .iter()
            .map(|&p| p as f32 / 255.0)
            .collect();
        Ok(Sample::labelled(x, self.labels[index]))
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
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
}

impl Subset {
    pub fn new(inner: Arc<dyn Dataset>, indices: Vec<usize>) -> Result<Self> {
        if let Some(&index) = indices.iter().find(|&&i| i >= inner.len()) {
            return Err(DataError::IndexOutOfRange {
                index,
                len: inner.len(),
            });
        }
        Ok(Self { inner, indices })
    }

    fn map(&self, index: usize) -> Result<usize> {
        self.indices
            .get(index)
            .copied()
            .ok_or(DataError::IndexOutOfRange {
                index,
                len: self.indices.len(),
            })
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn item_shape(&self) -> Vec<usize> {
        self.inner.item_shape()
    }

    fn target_shape(&self) -> Vec<usize> {
        self.inner.target_shape()
    }

    fn num_classes(&self) -> Option<usize> {
        self.inner.num_classes()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        self.inner.get(self.map(index)?)
    }

    fn batch(&self, indices: &[usize], device: &Device) -> Result<Batch> {
        let mapped = indices
            .iter()
            .map(|&i| self.map(i))
            .collect::<Result<Vec<_>>>()?;
        self.inner.batch(&mapped, device)
    }
}

/// Splits `dataset` at random (reproducibly for `seed`) into two subsets, the first holding
/// `round(fraction * len)` items: a held-out validation set carved from a training set.
pub fn split(dataset: Arc<dyn Dataset>, fraction: f64, seed: u64) -> Result<(Subset, Subset)> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(DataError::Invalid(format!(
            "split fraction {fraction} is not in [0, 1]"
        )));
    }
    let order = crate::loader::permutation(dataset.len(), seed);
    let cut = (fraction * dataset.len() as f64).round() as usize;
    let (a, b) = order.split_at(cut);
    Ok((
        Subset::new(dataset.clone(), a.to_vec())?,
        Subset::new(dataset, b.to_vec())?,
    ))
}
