//! The Fréchet distance between two sets of image features (FID, Heusel et al. 2017): each
//! set summarised by the Gaussian of its features, `d² = |μa - μb|² + tr(Σa + Σb - 2 (Σa Σb)^½)`.
//! forja takes the features from one of its own classifiers trained on the same data (not
//! Inception), so its figures compare models on one dataset, not with published FIDs.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use forja_data::{Dataset, Loader, Subset};

use crate::linalg::{mean_cov, symmetric_eigen};
use crate::run::SavedRun;
use crate::{Result, Task, TrainError};

/// Mean and covariance of a set of feature vectors.
#[derive(Debug, Clone)]
pub struct FeatureStats {
    pub mean: Vec<f64>,
    /// Row-major `dim` x `dim`.
    pub cov: Vec<f64>,
}

impl FeatureStats {
    /// Statistics of `features.len() / dim` vectors of `dim` values.
    pub fn fit(features: &[f32], dim: usize) -> Self {
        let (mean, cov) = mean_cov(features, dim);
        Self { mean, cov }
    }

    fn dim(&self) -> usize {
        self.mean.len()
    }
}

/// `|μa - μb|² + tr Σa + tr Σb - 2 tr (Σa^½ Σb Σa^½)^½`; the last trace equals that of
/// `(Σa Σb)^½` and is a sum over eigenvalues of a symmetric matrix, so no complex roots.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> f64 {
    let n = a.dim();
    assert_eq!(n, b.dim(), "features of different sizes");
    let (values, vectors) = symmetric_eigen(&a.cov, n);
    // Σa^½ = V diag(√λ) Vᵀ (negative rounding noise clamped).
    let mut root = vec![0.0; n * n];
    for (l, v) in values.iter().zip(&vectors) {
        let s = l.max(0.0).sqrt();
        for i in 0..n {
            for j in 0..n {
                root[i * n + j] += s * v[i] * v[j];
            }
        }
    }
    let product = |x: &[f64], y: &[f64]| -> Vec<f64> {
        let mut out = vec![0.0; n * n];
        for i in 0..n {
            for k in 0..n {
                let xik = x[i * n + k];
                for j in 0..n {
                    out[i * n + j] += xik * y[k * n + j];
                }
            }
        }
        out
    };
    let mut m = product(&product(&root, &b.cov), &root);
    // Symmetrise away rounding before the eigen solver.
    for i in 0..n {
        for j in i + 1..n {
            let avg = 0.5 * (m[i * n + j] + m[j * n + i]);
            (m[i * n + j], m[j * n + i]) = (avg, avg);
        }
    }
    let cross: f64 = symmetric_eigen(&m, n)
        .0
        .iter()
        .map(|l| l.max(0.0).sqrt())
        .sum();
    let shift: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y).powi(2))
        .sum();
    let trace = |c: &[f64]| (0..n).map(|i| c[i * n + i]).sum::<f64>();
    (shift + trace(&a.cov) + trace(&b.cov) - 2.0 * cross).max(0.0)
}

/// Images per batch through the classifier.
const BATCH: usize = 250;

/// The classifier's features of images, concatenated, and their size.
fn features(classifier: &mut dyn Task, images: &[Tensor]) -> Result<(Vec<f32>, usize)> {
    let (mut all, mut dim) = (Vec::new(), 0);
    for x in images {
        let f = classifier.features(x)?;
        dim = f.dim(1)?;
        all.extend(
            f.to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
    }
    Ok((all, dim))
}

/// The first `n` images of a dataset, in batches.
fn real_images(data: Arc<dyn Dataset>, n: usize, device: &Device) -> Result<Vec<Tensor>> {
    let data: Arc<dyn Dataset> = Arc::new(Subset::new(data, (0..n).collect())?);
    Loader::new(data, BATCH, device)?
        .epoch(0)
        .map(|b| Ok(b?.inputs))
        .collect()
}

/// FID of a generator's samples against its test images, with the reference FID of as many
/// training images against the same test images (what two samples of the data itself score).
#[derive(Debug, Clone, Copy)]
pub struct FidReport {
    /// Images on each side.
    pub count: usize,
    pub samples: f64,
    pub train_vs_test: f64,
}

/// Measures [`FidReport`] for `n` images (at most the test set's size) with the features of
/// `classifier`, which must have been trained on images of the generator's shape.
pub fn measure(
    generator: &mut SavedRun,
    classifier: &mut SavedRun,
    n: usize,
    device: &Device,
) -> Result<FidReport> {
    let n = n.min(generator.test.len());
    if n < 2 {
        return Err(TrainError::Config(format!(
            "FID needs at least 2 images, the test split of {} has {}",
            generator.cfg.dataset,
            generator.test.len()
        )));
    }
    let (shape, wanted) = (generator.test.item_shape(), classifier.test.item_shape());
    if shape != wanted {
        return Err(TrainError::Config(format!(
            "the classifier {} takes images {wanted:?}, the generator makes {shape:?}",
            classifier.cfg.model
        )));
    }
    let classify = classifier.task.as_mut();
    // The whole training split, whatever part of it the run trained on.
    let mut full = generator.cfg.clone();
    full.limit_train = None;
    let (train_data, _) = crate::run::open_data(&full)?;
    let n = n.min(train_data.len());
    let (test, dim) = features(classify, &real_images(generator.test.clone(), n, device)?)?;
    let (train, _) = features(classify, &real_images(train_data, n, device)?)?;
    let fakes = (0..n.div_ceil(BATCH))
        .map(|b| {
            let m = BATCH.min(n - b * BATCH);
            generator.task.generate(m, b as u64)
        })
        .collect::<Result<Vec<_>>>()?;
    let (fake, _) = features(classify, &fakes)?;
    let stats = |f: &[f32]| FeatureStats::fit(f, dim);
    let test = stats(&test);
    Ok(FidReport {
        count: n,
        samples: frechet_distance(&stats(&fake), &test),
        train_vs_test: frechet_distance(&stats(&train), &test),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(mean: Vec<f64>, cov: Vec<f64>) -> FeatureStats {
        FeatureStats { mean, cov }
    }

    #[test]
    fn distance_between_diagonal_gaussians_has_its_closed_form() {
        // Diagonal covariances commute: d² = |Δμ|² + Σ (σa - σb)².
        let a = gaussian(
            vec![0.0, 1.0, 2.0],
            vec![4.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 9.0],
        );
        let b = gaussian(
            vec![1.0, 1.0, 0.0],
            vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.25],
        );
        let expected = (1.0 + 0.0 + 4.0) + (1.0 + 0.0 + 6.25);
        let d = frechet_distance(&a, &b);
        assert!((d - expected).abs() < 1e-9, "{d} vs {expected}");
        assert!(frechet_distance(&a, &a).abs() < 1e-9);
    }

    /// For non-commuting covariances, compare with the 2x2 closed form of tr (Σa Σb)^½:
    /// √(tr M + 2 √det M) for M = Σa Σb with real positive eigenvalues.
    #[test]
    fn distance_between_rotated_gaussians_matches_the_2x2_formula() {
        let a = gaussian(vec![0.0, 0.0], vec![2.0, 0.5, 0.5, 1.0]);
        let b = gaussian(vec![0.5, -0.5], vec![1.0, -0.3, -0.3, 3.0]);
        let m: [f64; 4] = [
            2.0 * 1.0 + 0.5 * -0.3,
            2.0 * -0.3 + 0.5 * 3.0,
            0.5 * 1.0 + 1.0 * -0.3,
            0.5 * -0.3 + 1.0 * 3.0,
        ];
        let (tr, det) = (m[0] + m[3], m[0] * m[3] - m[1] * m[2]);
        let cross = (tr + 2.0 * det.sqrt()).sqrt();
        let expected = 0.5 + 3.0 + 4.0 - 2.0 * cross;
        let d = frechet_distance(&a, &b);
        assert!((d - expected).abs() < 1e-9, "{d} vs {expected}");
    }

    #[test]
    fn shifting_every_feature_adds_the_squared_shift() {
        let points: Vec<f32> = (0..400).map(|k| ((k * 37 % 101) as f32) / 50.0).collect();
        let shifted: Vec<f32> = points.iter().map(|v| v + 0.5).collect();
        let (a, b) = (
            FeatureStats::fit(&points, 4),
            FeatureStats::fit(&shifted, 4),
        );
        let d = frechet_distance(&a, &b);
        assert!((d - 4.0 * 0.25).abs() < 1e-6, "{d}");
    }
}
