//! `synth-cells`: grey-scale microscopy-like images of irregular, often touching cells, with
//! semantic and instance masks, for U-Net.
//!
//! Each cell is a star-shaped blob: a radius that varies smoothly with the angle (three random
//! harmonics). Many cells are placed against a neighbour, so their blobs overlap; a pixel claimed
//! by several cells goes to the one it is deepest inside (smallest distance / radius), which
//! turns overlaps into shared borders, as touching cells look under a microscope. Cells are
//! textured, their membranes darker, touching membranes only faintly so, and the image is blurred
//! and noisy. Sample `i` depends only on `(seed, split, i)` and is generated when asked for.

use std::f32::consts::TAU;
use std::sync::Arc;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::catalog::{DatasetEntry, Source};
use crate::seed::{self, normal};
use crate::{DataError, Dataset, Result, Sample, Split};

/// Semantic classes of the target's first channel.
pub const BACKGROUND: u32 = 0;
pub const CELL: u32 = 1;
/// Cell pixels next to a different cell: the separating border the U-Net paper weights.
pub const BORDER: u32 = 2;

/// One generated sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellSample {
    /// `size * size` grey values.
    pub image: Vec<u8>,
    /// `size * size` semantic classes ([`BACKGROUND`], [`CELL`], [`BORDER`]).
    pub semantic: Vec<u32>,
    /// `size * size` instance ids: 0 for background, 1.. for the cells.
    pub instances: Vec<u32>,
    /// Number of cells in the image.
    pub cells: usize,
}

struct Cell {
    cy: f32,
    cx: f32,
    radius: f32,
    harmonics: [(f32, f32); 3],
    brightness: f32,
}

impl Cell {
    fn random(cy: f32, cx: f32, radius: f32, rng: &mut ChaCha8Rng) -> Self {
        Self {
            cy,
            cx,
            radius,
            harmonics: std::array::from_fn(|k| {
                let amp = rng.gen_range(0.0..0.12) / (k as f32 + 1.0);
                (amp, rng.gen_range(0.0..TAU))
            }),
            brightness: rng.gen_range(0.55..0.85),
        }
    }

    /// Distance from the centre divided by the boundary radius in that direction (< 1 inside).
    fn depth(&self, y: f32, x: f32) -> f32 {
        let (dy, dx) = (y - self.cy, x - self.cx);
        let theta = dy.atan2(dx);
        let wobble: f32 = self
            .harmonics
            .iter()
            .enumerate()
            .map(|(k, &(a, phase))| a * ((k as f32 + 2.0) * theta + phase).cos())
            .sum();
        (dy * dy + dx * dx).sqrt() / (self.radius * (1.0 + wobble))
    }
}

/// The lazily generated `synth-cells` dataset: `len` images of `size` x `size` pixels.
#[derive(Debug, Clone)]
pub struct SynthCells {
    split: Split,
    len: usize,
    size: usize,
    seed: u64,
}

impl SynthCells {
    /// `size` must be at least 32 pixels.
    pub fn new(split: Split, len: usize, size: usize, seed: u64) -> Result<Self> {
        if size < 32 {
            return Err(DataError::Invalid(format!(
                "synth-cells images must be at least 32 pixels wide, got {size}"
            )));
        }
        Ok(Self {
            split,
            len,
            size,
            seed,
        })
    }

    /// Generates sample `index`.
    pub fn sample(&self, index: usize) -> Result<CellSample> {
        crate::check_index(index, self.len)?;
        let mut rng = seed::rng(self.seed, &[self.split as u64, index as u64]);
        Ok(render(self.size, &mut rng))
    }
}

/// Places cells, most of them against an earlier one.
fn place_cells(size: usize, rng: &mut ChaCha8Rng) -> Vec<Cell> {
    let s = size as f32;
    let scale = s / 128.0;
    let count = rng.gen_range(6..=12);
    let mut cells: Vec<Cell> = Vec::with_capacity(count);
    for _ in 0..count * 20 {
        if cells.len() == count {
            break;
        }
        let radius = rng.gen_range(9.0..15.0) * scale;
        let (cy, cx) = if !cells.is_empty() && rng.gen_bool(0.75) {
            // Touching an existing cell: centres slightly closer than the radii add up.
            let other = &cells[rng.gen_range(0..cells.len())];
            let angle = rng.gen_range(0.0..TAU);
            let d = (other.radius + radius) * rng.gen_range(0.8..0.95);
            (other.cy + d * angle.sin(), other.cx + d * angle.cos())
        } else {
            (
                rng.gen_range(0.15 * s..0.85 * s),
                rng.gen_range(0.15 * s..0.85 * s),
            )
        };
        let inside = (radius..s - radius).contains(&cy) && (radius..s - radius).contains(&cx);
        // Centres must stay apart, so no cell swallows another.
        let apart = cells.iter().all(|c| {
            let d = ((c.cy - cy).powi(2) + (c.cx - cx).powi(2)).sqrt();
            d > 0.75 * (c.radius + radius)
        });
        if inside && apart {
            cells.push(Cell::random(cy, cx, radius, rng));
        }
    }
    cells
}

fn render(size: usize, rng: &mut ChaCha8Rng) -> CellSample {
    let cells = place_cells(size, rng);
    let n = size * size;
    let mut instances = vec![0u32; n];
    let mut depth = vec![f32::INFINITY; n];
    for (p, (inst, dep)) in instances.iter_mut().zip(depth.iter_mut()).enumerate() {
        let (y, x) = ((p / size) as f32 + 0.5, (p % size) as f32 + 0.5);
        for (k, cell) in cells.iter().enumerate() {
            let d = cell.depth(y, x);
            if d < 1.0 && d < *dep {
                *dep = d;
                *inst = k as u32 + 1;
            }
        }
    }
    let neighbours = |p: usize| {
        let (y, x) = (p / size, p % size);
        [
            (y > 0).then(|| p - size),
            (y + 1 < size).then(|| p + size),
            (x > 0).then(|| p - 1),
            (x + 1 < size).then(|| p + 1),
        ]
        .into_iter()
        .flatten()
    };
    let semantic: Vec<u32> = (0..n)
        .map(|p| match instances[p] {
            0 => BACKGROUND,
            i if neighbours(p).any(|q| instances[q] != 0 && instances[q] != i) => BORDER,
            _ => CELL,
        })
        .collect();

    let mut value = vec![0f32; n];
    let background = rng.gen_range(0.1..0.2);
    for p in 0..n {
        value[p] = match instances[p] {
            0 => background,
            i => {
                let cell = &cells[i as usize - 1];
                // Brighter towards the centre, darker membrane at the rim.
                let rim = (depth[p] - 0.8).max(0.0) * 2.5;
                cell.brightness * (1.0 - 0.45 * rim)
            }
        };
        if semantic[p] == BORDER {
            value[p] -= 0.12;
        }
    }
    let value = blur3(&blur3(&value, size), size);
    let image = value
        .iter()
        .map(|v| {
            let v = v + 0.04 * normal(rng) as f32;
            (v.clamp(0.0, 1.0) * 255.0).round() as u8
        })
        .collect();
    CellSample {
        image,
        semantic,
        instances,
        cells: cells.len(),
    }
}

/// A 3x3 binomial blur with clamped edges.
fn blur3(v: &[f32], size: usize) -> Vec<f32> {
    const K: [f32; 3] = [0.25, 0.5, 0.25];
    let at = |y: isize, x: isize| {
        let c = |i: isize| i.clamp(0, size as isize - 1) as usize;
        v[c(y) * size + c(x)]
    };
    (0..size * size)
        .map(|p| {
            let (y, x) = ((p / size) as isize, (p % size) as isize);
            let mut s = 0.0;
            for (i, ky) in K.iter().enumerate() {
                for (j, kx) in K.iter().enumerate() {
                    s += ky * kx * at(y + i as isize - 1, x + j as isize - 1);
                }
            }
            s
        })
        .collect()
}

impl Dataset for SynthCells {
    fn len(&self) -> usize {
        self.len
    }

    fn item_shape(&self) -> Vec<usize> {
        vec![1, self.size, self.size]
    }

    /// Channel 0: semantic class; channel 1: instance id.
    fn target_shape(&self) -> Vec<usize> {
        vec![2, self.size, self.size]
    }

    fn num_classes(&self) -> Option<usize> {
        Some(3)
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let s = self.sample(index)?;
        let mut target = s.semantic;
        target.extend(s.instances);
        Ok(Sample {
            input: s.image.iter().map(|&p| p as f32 / 255.0).collect(),
            target,
        })
    }
}

/// Size of the registered dataset's images (a multiple of 2^4 for a depth-4 padded U-Net).
pub const SIZE: usize = 128;
/// Sizes of the registered splits.
pub const TRAIN_LEN: usize = 512;
pub const TEST_LEN: usize = 64;
const SEED: u64 = 0xCE11_5EED;

inventory::submit! {
    DatasetEntry {
        name: "synth-cells",
        summary: "microscopy-like touching cells with semantic + instance masks, 512 / 64",
        shape: &[1, SIZE, SIZE],
        classes: Some(3),
        source: Source::Embedded,
        open: |split, _| {
            let len = match split {
                Split::Train => TRAIN_LEN,
                Split::Test => TEST_LEN,
            };
            Ok(Arc::new(SynthCells::new(split, len, SIZE, SEED)?))
        },
    }
}
