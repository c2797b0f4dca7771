//! `synth-digits`: procedural handwritten-looking digits, 28x28 grey-scale, generated on the fly.
//!
//! Each digit is a set of strokes (polylines from lines and elliptic arcs) in a unit box. A sample
//! draws a template variant, bends it with a smooth random warp, slants, rotates, scales and shifts
//! it, renders it with an anti-aliased pen of random width, and adds intensity jitter and noise.
//! Sample `i` of a split depends only on `(seed, split, i)`, and its label is `i % 10`, so the
//! classes are balanced and any sample can be regenerated on its own.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use std::sync::Arc;

use crate::catalog::{DatasetEntry, Source};
use crate::{seed, ImageSet, Result, Split};

/// Sizes of the registered splits.
pub const TRAIN_LEN: usize = 12_000;
pub const TEST_LEN: usize = 2_000;
/// The registered datasets are fixed, whatever the training seed.
pub const SEED: u64 = 0x5EED_D161;

fn split_len(split: Split) -> usize {
    match split {
        Split::Train => TRAIN_LEN,
        Split::Test => TEST_LEN,
    }
}

inventory::submit! {
    DatasetEntry {
        name: "synth-digits",
        summary: "procedural handwritten-style digits, 12k train / 2k test",
        shape: &[1, SIZE, SIZE],
        classes: Some(10),
        source: Source::Embedded,
        open: |split, _| Ok(Arc::new(generate(split, split_len(split), SEED)?)),
    }
}

inventory::submit! {
    DatasetEntry {
        name: "synth-digits-rgb",
        summary: "synth-digits in colour on 32x32, random ink and background, 12k / 2k",
        shape: &[3, RGB_SIZE, RGB_SIZE],
        classes: Some(10),
        source: Source::Embedded,
        open: |split, _| Ok(Arc::new(generate_rgb(split, split_len(split), SEED)?)),
    }
}

/// Side of the square image in pixels.
pub const SIZE: usize = 28;
/// The glyph's unit box maps to this many pixels, centred (MNIST's 20-in-28 layout).
const BOX: f32 = 20.0;

type Stroke = Vec<(f32, f32)>;

/// Points on an elliptic arc, angles in degrees (y grows downwards, so 270 is the top).
fn arc(cx: f32, cy: f32, rx: f32, ry: f32, from: f32, to: f32) -> Stroke {
    let n = ((to - from).abs() / 10.0).ceil().max(4.0) as usize;
    (0..=n)
        .map(|k| {
            let t = (from + (to - from) * k as f32 / n as f32).to_radians();
            (cx + rx * t.cos(), cy + ry * t.sin())
        })
        .collect()
}

/// The strokes of `digit`, with template variants picked by `rng`.
fn strokes(digit: u32, rng: &mut ChaCha8Rng) -> Vec<Stroke> {
    let mut v = |p: f64| rng.gen_bool(p);
    match digit {
        0 => vec![arc(0.5, 0.5, 0.27, 0.4, -10.0, 365.0)],
        1 => {
            let mut s = vec![vec![(0.52, 0.1), (0.48, 0.9)]];
            if v(0.5) {
                s.push(vec![(0.34, 0.26), (0.52, 0.1)]);
            }
            if v(0.3) {
                s.push(vec![(0.33, 0.9), (0.65, 0.9)]);
            }
            s
        }
        2 => {
            let mut top = arc(0.5, 0.33, 0.26, 0.22, 190.0, 370.0);
            top.extend([(0.2, 0.9), (0.82, 0.9)]);
            vec![top]
        }
        3 => vec![
            arc(0.48, 0.3, 0.25, 0.2, 200.0, 450.0),
            arc(0.48, 0.7, 0.28, 0.21, -90.0, 160.0),
        ],
        4 => {
            let stem = vec![(0.66, 0.1), (0.66, 0.9)];
            if v(0.3) {
                vec![stem, vec![(0.24, 0.1), (0.2, 0.62), (0.84, 0.62)]]
            } else {
                vec![stem, vec![(0.66, 0.1), (0.18, 0.64), (0.84, 0.64)]]
            }
        }
        5 => {
            let mut s = vec![(0.76, 0.1), (0.32, 0.1), (0.29, 0.46)];
            s.extend(arc(0.5, 0.66, 0.27, 0.24, 215.0, 520.0));
            vec![s]
        }
        6 => vec![
            arc(0.62, 0.58, 0.36, 0.48, 290.0, 150.0),
            arc(0.5, 0.68, 0.23, 0.2, 0.0, 360.0),
        ],
        7 => {
            let mut s = vec![vec![(0.18, 0.1), (0.82, 0.1), (0.42, 0.9)]];
            if v(0.25) {
                s.push(vec![(0.42, 0.5), (0.74, 0.5)]);
            }
            s
        }
        8 => vec![
            arc(0.5, 0.29, 0.2, 0.19, 0.0, 360.0),
            arc(0.5, 0.69, 0.25, 0.21, 0.0, 360.0),
        ],
        _ => {
            let stem = if v(0.5) {
                vec![(0.73, 0.31), (0.66, 0.9)]
            } else {
                arc(0.33, 0.31, 0.4, 0.59, 0.0, 80.0)
            };
            vec![arc(0.5, 0.31, 0.23, 0.2, 0.0, 360.0), stem]
        }
    }
}

/// A random smooth deformation followed by slant, rotation, scale and shift into pixel space.
struct Pose {
    warp: [f32; 6],
    slant: f32,
    cos: f32,
    sin: f32,
    scale: (f32, f32),
    shift: (f32, f32),
}

impl Pose {
    fn random(rng: &mut ChaCha8Rng) -> Self {
        let angle = rng.gen_range(-12.0f32..12.0).to_radians();
        Self {
            warp: [
                rng.gen_range(-0.04..0.04),
                rng.gen_range(0.5..1.5),
                rng.gen_range(0.0..std::f32::consts::TAU),
                rng.gen_range(-0.04..0.04),
                rng.gen_range(0.5..1.5),
                rng.gen_range(0.0..std::f32::consts::TAU),
            ],
            slant: rng.gen_range(-0.35..0.35),
            cos: angle.cos(),
            sin: angle.sin(),
            scale: (rng.gen_range(0.75..1.1), rng.gen_range(0.85..1.1)),
            shift: (rng.gen_range(-2.5..2.5), rng.gen_range(-2.5..2.5)),
        }
    }

    fn apply(&self, (u, v): (f32, f32)) -> (f32, f32) {
        let [ax, fx, px, ay, fy, py] = self.warp;
        let tau = std::f32::consts::TAU;
        let x = u - 0.5 + ax * (tau * fx * v + px).sin();
        let y = v - 0.5 + ay * (tau * fy * u + py).sin();
        let x = x - self.slant * y;
        let (x, y) = (self.cos * x - self.sin * y, self.sin * x + self.cos * y);
        let c = SIZE as f32 / 2.0;
        (
            c + self.shift.0 + BOX * self.scale.0 * x,
            c + self.shift.1 + BOX * self.scale.1 * y,
        )
    }
}

/// Distance from `p` to the segment `a`-`b`.
fn segment_distance(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (ex, ey) = (p.0 - a.0 - t * dx, p.1 - a.1 - t * dy);
    (ex * ex + ey * ey).sqrt()
}

/// Renders one sample of digit `label` into `out` (`SIZE * SIZE` bytes).
fn render(label: u32, rng: &mut ChaCha8Rng, out: &mut [u8]) {
    let strokes = strokes(label, rng);
    let pose = Pose::random(rng);
    let half_width = rng.gen_range(0.9f32..1.9);
    let ink = rng.gen_range(0.75f32..1.0);
    let mut coverage = [0f32; SIZE * SIZE];
    let reach = half_width + 1.0;
    for stroke in &strokes {
        let pts: Vec<(f32, f32)> = stroke.iter().map(|&p| pose.apply(p)).collect();
        for seg in pts.windows(2) {
            let (a, b) = (seg[0], seg[1]);
            let x0 = (a.0.min(b.0) - reach).floor().max(0.0) as usize;
            let x1 = ((a.0.max(b.0) + reach).ceil().max(0.0) as usize).min(SIZE);
            let y0 = (a.1.min(b.1) - reach).floor().max(0.0) as usize;
            let y1 = ((a.1.max(b.1) + reach).ceil().max(0.0) as usize).min(SIZE);
            for y in y0..y1 {
                for x in x0..x1 {
                    let d = segment_distance((x as f32 + 0.5, y as f32 + 0.5), a, b);
                    let c = (half_width + 0.5 - d).clamp(0.0, 1.0);
                    let px = &mut coverage[y * SIZE + x];
                    *px = px.max(c);
                }
            }
        }
    }
    for (o, c) in out.iter_mut().zip(coverage) {
        let noise = rng.gen_range(-0.08f32..0.08);
        *o = ((c * ink + noise).clamp(0.0, 1.0) * 255.0).round() as u8;
    }
}

/// Generates `n` samples of `split`; sample `i` has label `i % 10`.
pub fn generate(split: Split, n: usize, seed: u64) -> Result<ImageSet> {
    let mut pixels = vec![0u8; n * SIZE * SIZE];
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    for (i, out) in pixels.chunks_exact_mut(SIZE * SIZE).enumerate() {
        let mut rng = seed::rng(seed, &[split as u64, i as u64]);
        render(labels[i], &mut rng, out);
    }
    ImageSet::new(pixels, labels, [1, SIZE, SIZE], 10)
}

/// Side of the colour variant's images.
pub const RGB_SIZE: usize = 32;

/// Generates `n` colour samples `[3, 32, 32]` of `split`: the grey digit of [`generate`] (same
/// seed, split and index give the same glyph) placed at a random offset in a 32x32 frame and
/// painted with a random ink and background colour of clearly different brightness.
pub fn generate_rgb(split: Split, n: usize, seed: u64) -> Result<ImageSet> {
    let grey = generate(split, n, seed)?;
    let plane = RGB_SIZE * RGB_SIZE;
    let mut pixels = vec![0u8; n * 3 * plane];
    for (i, out) in pixels.chunks_exact_mut(3 * plane).enumerate() {
        let mut rng = seed::rng(seed, &[split as u64, i as u64, 3]);
        let (bg, fg) = colours(&mut rng);
        let (oy, ox) = (rng.gen_range(0..=4), rng.gen_range(0..=4));
        let glyph = grey.image_bytes(i);
        for y in 0..RGB_SIZE {
            for x in 0..RGB_SIZE {
                let g = match (y.checked_sub(oy), x.checked_sub(ox)) {
                    (Some(gy), Some(gx)) if gy < SIZE && gx < SIZE => {
                        glyph[gy * SIZE + gx] as f32 / 255.0
                    }
                    _ => 0.0,
                };
                for c in 0..3 {
                    let v = bg[c] + (fg[c] - bg[c]) * g + rng.gen_range(-0.03f32..0.03);
                    out[c * plane + y * RGB_SIZE + x] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
        }
    }
    ImageSet::new(pixels, grey.labels().to_vec(), [3, RGB_SIZE, RGB_SIZE], 10)
}

/// A background and an ink colour whose luminances differ by at least 0.35.
fn colours(rng: &mut ChaCha8Rng) -> ([f32; 3], [f32; 3]) {
    let luma = |c: &[f32; 3]| 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
    loop {
        let bg: [f32; 3] = std::array::from_fn(|_| rng.gen_range(0.0..1.0));
        let fg: [f32; 3] = std::array::from_fn(|_| rng.gen_range(0.0..1.0));
        if (luma(&bg) - luma(&fg)).abs() >= 0.35 {
            return (bg, fg);
        }
    }
}
