//! Two-dimensional toy densities for GANs and normalizing flows, and the 1-D Gaussian of the
//! GAN paper's figure, generated on the fly.
//!
//! Sample `i` of a split depends only on `(seed, split, i)`; for the densities made of parts
//! (moons, circles, modes, arms) its part, which is also its label, is `i % parts`, so parts are
//! equally likely. Shapes follow the common toy-data conventions (scikit-learn's moons and
//! circles, the 8 Gaussians of the unrolled-GAN paper, the pinwheel of Johnson et al. 2016, and
//! FFJORD's spirals and checkerboard).

use std::f64::consts::{PI, TAU};
use std::sync::Arc;

use candle_core::Device;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::catalog::{DatasetEntry, Source};
use crate::seed::{self, normal};
use crate::{Batch, Dataset, Result, Sample, Split};

/// The densities this module draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Density {
    /// Two interleaved half circles (radius 1), noise std 0.1; parts: upper, lower moon.
    TwoMoons,
    /// Circles of radius 1 and 0.5 around the origin, noise std 0.05.
    Circles,
    /// Eight Gaussians of std [`MODE_STD`] on a circle of radius [`MODE_RADIUS`].
    EightGaussians,
    /// Two interleaved spirals of about 1.5 turns, noise std 0.1.
    TwoSpirals,
    /// Five curved arms (radial std 0.3, tangential std 0.05, rate 0.25).
    Pinwheel,
    /// The 2-D swiss roll (t cos t, t sin t) / 5, t in [1.5 pi, 4.5 pi], noise std 0.05.
    SwissRoll,
    /// Uniform on the dark squares of a 4x4 checkerboard covering [-4, 4]^2.
    Checkerboard,
}

/// Radius of the circle the 8 Gaussians sit on.
pub const MODE_RADIUS: f64 = 2.0;
/// Standard deviation of each of the 8 Gaussians.
pub const MODE_STD: f64 = 0.02;

impl Density {
    pub const ALL: [Density; 7] = [
        Density::TwoMoons,
        Density::Circles,
        Density::EightGaussians,
        Density::TwoSpirals,
        Density::Pinwheel,
        Density::SwissRoll,
        Density::Checkerboard,
    ];

    /// The dataset name, e.g. `two-moons`.
    pub fn name(self) -> &'static str {
        match self {
            Density::TwoMoons => "two-moons",
            Density::Circles => "circles",
            Density::EightGaussians => "8gaussians",
            Density::TwoSpirals => "2spirals",
            Density::Pinwheel => "pinwheel",
            Density::SwissRoll => "swissroll",
            Density::Checkerboard => "checkerboard",
        }
    }

    /// Number of parts (labels); 1 for densities that are one piece.
    pub fn parts(self) -> usize {
        match self {
            Density::TwoMoons | Density::Circles | Density::TwoSpirals => 2,
            Density::EightGaussians => 8,
            Density::Pinwheel => 5,
            Density::SwissRoll | Density::Checkerboard => 1,
        }
    }

    /// The centres of the 8 Gaussians.
    pub fn modes() -> Vec<[f64; 2]> {
        (0..8)
            .map(|k| {
                let a = TAU * k as f64 / 8.0;
                [MODE_RADIUS * a.cos(), MODE_RADIUS * a.sin()]
            })
            .collect()
    }

    /// One point of part `part`.
    pub fn sample(self, part: usize, rng: &mut ChaCha8Rng) -> [f64; 2] {
        let u = |rng: &mut ChaCha8Rng| rng.gen::<f64>();
        match self {
            Density::TwoMoons => {
                let t = PI * u(rng);
                let (x, y) = if part == 0 {
                    (t.cos(), t.sin())
                } else {
                    (1.0 - t.cos(), 0.5 - t.sin())
                };
                [x + 0.1 * normal(rng), y + 0.1 * normal(rng)]
            }
            Density::Circles => {
                let r = if part == 0 { 1.0 } else { 0.5 };
                let t = TAU * u(rng);
                [
                    r * t.cos() + 0.05 * normal(rng),
                    r * t.sin() + 0.05 * normal(rng),
                ]
            }
            Density::EightGaussians => {
                let [cx, cy] = Self::modes()[part];
                [cx + MODE_STD * normal(rng), cy + MODE_STD * normal(rng)]
            }
            Density::TwoSpirals => {
                let t = u(rng).sqrt() * 3.0 * PI;
                let sign = if part == 0 { 1.0 } else { -1.0 };
                [
                    sign * t * t.cos() / 3.0 + 0.1 * normal(rng),
                    sign * t * t.sin() / 3.0 + 0.1 * normal(rng),
                ]
            }
            Density::Pinwheel => {
                let radial = 1.0 + 0.3 * normal(rng);
                let tangential = 0.05 * normal(rng);
                let angle = TAU * part as f64 / 5.0 + 0.25 * radial.exp();
                let (s, c) = angle.sin_cos();
                [c * radial - s * tangential, s * radial + c * tangential]
            }
            Density::SwissRoll => {
                let t = 1.5 * PI * (1.0 + 2.0 * u(rng));
                [
                    t * t.cos() / 5.0 + 0.05 * normal(rng),
                    t * t.sin() / 5.0 + 0.05 * normal(rng),
                ]
            }
            Density::Checkerboard => {
                // A column of the board, then one of its two dark squares.
                let x = 4.0 * u(rng) - 2.0;
                let y = u(rng) - 2.0 * f64::from(rng.gen_range(0u8..2));
                let y = y + (x.floor().rem_euclid(2.0));
                [2.0 * x, 2.0 * y]
            }
        }
    }
}

/// Points in the plane with the part each was drawn from as its label.
#[derive(Debug, Clone)]
pub struct PointSet {
    points: Vec<f32>,
    labels: Vec<u32>,
    classes: usize,
}

impl PointSet {
    /// `n` points of `density`; point `i` depends only on `(seed, split, i)`.
    pub fn generate(density: Density, split: Split, n: usize, seed: u64) -> Self {
        let parts = density.parts();
        let mut points = Vec::with_capacity(2 * n);
        let labels = (0..n).map(|i| (i % parts) as u32).collect::<Vec<_>>();
        for (i, &part) in labels.iter().enumerate() {
            let mut rng = seed::rng(seed, &[split as u64, i as u64]);
            let [x, y] = density.sample(part as usize, &mut rng);
            points.extend([x as f32, y as f32]);
        }
        Self {
            points,
            labels,
            classes: parts,
        }
    }

    /// Point `index` as `[x, y]`.
    pub fn point(&self, index: usize) -> [f32; 2] {
        [self.points[2 * index], self.points[2 * index + 1]]
    }

    /// All points, `[x0, y0, x1, y1, ...]`.
    pub fn points(&self) -> &[f32] {
        &self.points
    }

    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    fn check(&self, index: usize) -> Result<()> {
        crate::check_index(index, self.labels.len())
    }
}

impl Dataset for PointSet {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn item_shape(&self) -> Vec<usize> {
        vec![2]
    }

    fn num_classes(&self) -> Option<usize> {
        Some(self.classes)
    }

    fn get(&self, index: usize) -> Result<Sample> {
        self.check(index)?;
        Ok(Sample::labelled(
            self.point(index).to_vec(),
            self.labels[index],
        ))
    }

    fn batch(&self, indices: &[usize], device: &Device) -> Result<Batch> {
        let mut xs = Vec::with_capacity(2 * indices.len());
        let mut ys = Vec::with_capacity(indices.len());
        for &i in indices {
            self.check(i)?;
            xs.extend(self.point(i));
            ys.push(self.labels[i]);
        }
        Ok(Batch {
            inputs: candle_core::Tensor::from_vec(xs, (indices.len(), 2), device)?,
            targets: candle_core::Tensor::from_vec(ys, indices.len(), device)?,
        })
    }
}

/// Mean and standard deviation of the 1-D Gaussian `gaussian-1d` (the data of Goodfellow et
/// al.'s Figure 1: one bump that a generator starting near 0 must move onto).
pub const GAUSSIAN_1D: (f64, f64) = (4.0, 0.5);

/// Draws from `N(GAUSSIAN_1D)` on the line, one value per item; value `i` depends only on
/// `(seed, split, i)`.
#[derive(Debug, Clone)]
pub struct Line {
    values: Vec<f32>,
}

impl Line {
    pub fn gaussian(split: Split, n: usize, seed: u64) -> Self {
        let (mean, std) = GAUSSIAN_1D;
        let values = (0..n)
            .map(|i| {
                let mut rng = seed::rng(seed, &[split as u64, i as u64]);
                (mean + std * normal(&mut rng)) as f32
            })
            .collect();
        Self { values }
    }

    pub fn values(&self) -> &[f32] {
        &self.values
    }
}

impl Dataset for Line {
    fn len(&self) -> usize {
        self.values.len()
    }

    fn item_shape(&self) -> Vec<usize> {
        vec![1]
    }

    fn num_classes(&self) -> Option<usize> {
        Some(1)
    }

    fn get(&self, index: usize) -> Result<Sample> {
        crate::check_index(index, self.values.len())?;
        Ok(Sample::labelled(vec![self.values[index]], 0))
    }

    fn batch(&self, indices: &[usize], device: &Device) -> Result<Batch> {
        let xs = indices
            .iter()
            .map(|&i| crate::check_index(i, self.values.len()).map(|()| self.values[i]))
            .collect::<Result<Vec<_>>>()?;
        Ok(Batch {
            inputs: candle_core::Tensor::from_vec(xs, (indices.len(), 1), device)?,
            targets: candle_core::Tensor::zeros(indices.len(), candle_core::DType::U32, device)?,
        })
    }
}

/// Sizes of the registered splits.
pub const TRAIN_LEN: usize = 20_000;
pub const TEST_LEN: usize = 5_000;
const SEED: u64 = 0xD3_5171;

/// Opens a split of the registered `density`.
fn open(density: Density, split: Split) -> Result<Arc<dyn Dataset>> {
    Ok(Arc::new(PointSet::generate(
        density,
        split,
        split_len(split),
        SEED,
    )))
}

/// Items in a registered split.
fn split_len(split: Split) -> usize {
    match split {
        Split::Train => TRAIN_LEN,
        Split::Test => TEST_LEN,
    }
}

macro_rules! density {
    ($variant:ident, $name:literal, $summary:literal, $parts:literal) => {
        inventory::submit! {
            DatasetEntry {
                name: $name,
                summary: $summary,
                shape: &[2],
                classes: Some($parts),
                source: Source::Embedded,
                open: |split, _| open(Density::$variant, split),
            }
        }
    };
}

density!(
    TwoMoons,
    "two-moons",
    "2-D: two interleaved half circles, 20k / 5k",
    2
);
density!(
    Circles,
    "circles",
    "2-D: two concentric circles, 20k / 5k",
    2
);
density!(
    EightGaussians,
    "8gaussians",
    "2-D: 8 Gaussians on a circle of radius 2, 20k / 5k",
    8
);
density!(
    TwoSpirals,
    "2spirals",
    "2-D: two interleaved spirals, 20k / 5k",
    2
);
density!(Pinwheel, "pinwheel", "2-D: five curved arms, 20k / 5k", 5);
density!(SwissRoll, "swissroll", "2-D: the swiss roll, 20k / 5k", 1);
inventory::submit! {
    DatasetEntry {
        name: "gaussian-1d",
        summary: "1-D: the Gaussian N(4, 0.5^2), 20k / 5k",
        shape: &[1],
        classes: Some(1),
        source: Source::Embedded,
        open: |split, _| Ok(Arc::new(Line::gaussian(split, split_len(split), SEED))),
    }
}
density!(
    Checkerboard,
    "checkerboard",
    "2-D: uniform on a 4x4 checkerboard, 20k / 5k",
    1
);
