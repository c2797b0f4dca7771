//! Composable, seeded augmentations and corruptions of one sample.
//!
//! A [`Transform`] changes an [`Image`] and, where it moves pixels, the sample's [`Mask`] the same
//! way (the mask by nearest neighbour, so class and instance ids stay ids). Randomness comes from
//! the `rng` the caller passes; the loader derives it from `(seed, epoch, sample)`, so an
//! augmented epoch is repeatable and a resumed run sees the same augmentations.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::{seed::normal, DataError, Result};

/// An image `[channels, height, width]`, row-major f32 (usually in [0, 1]).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub data: Vec<f32>,
    pub shape: [usize; 3],
}

/// Integer maps aligned with an image, `[channels, height, width]` (class ids, instance ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub data: Vec<u32>,
    pub shape: [usize; 3],
}

impl Image {
    pub fn new(data: Vec<f32>, shape: [usize; 3]) -> Result<Self> {
        check_len(data.len(), shape, "image")?;
        Ok(Self { data, shape })
    }
}

impl Mask {
    pub fn new(data: Vec<u32>, shape: [usize; 3]) -> Result<Self> {
        check_len(data.len(), shape, "mask")?;
        Ok(Self { data, shape })
    }
}

fn check_len(len: usize, shape: [usize; 3], what: &str) -> Result<()> {
    if len != shape.iter().product::<usize>() {
        return Err(DataError::Invalid(format!(
            "{what} of {len} values does not have shape {shape:?}"
        )));
    }
    Ok(())
}

/// One step of a sample pipeline.
pub trait Transform: Send + Sync {
    fn apply(&self, image: &mut Image, mask: Option<&mut Mask>, rng: &mut ChaCha8Rng)
        -> Result<()>;
}

/// Transforms applied in order.
pub struct Compose(pub Vec<Box<dyn Transform>>);

impl Transform for Compose {
    fn apply(
        &self,
        image: &mut Image,
        mut mask: Option<&mut Mask>,
        rng: &mut ChaCha8Rng,
    ) -> Result<()> {
        for t in &self.0 {
            t.apply(image, mask.as_deref_mut(), rng)?;
        }
        Ok(())
    }
}

/// Moves pixels: output pixel `(y, x)` of every channel takes the value at `source(y, x)` of
/// the input (image and mask alike), zero where the source lies outside.
fn permute(
    image: &mut Image,
    mask: Option<&mut Mask>,
    source: impl Fn(usize, usize) -> Option<(usize, usize)>,
) -> Result<()> {
    let [_, h, w] = image.shape;
    let map: Vec<Option<usize>> = (0..h * w)
        .map(|p| source(p / w, p % w).map(|(y, x)| y * w + x))
        .collect();
    fn gather<T: Copy + Default>(data: &mut Vec<T>, map: &[Option<usize>]) {
        let plane = map.len();
        *data = data
            .chunks_exact(plane)
            .flat_map(|c| map.iter().map(|m| m.map_or(T::default(), |s| c[s])))
            .collect();
    }
    if let Some(mask) = &mask {
        check_mask(image, mask)?;
    }
    gather(&mut image.data, &map);
    if let Some(mask) = mask {
        gather(&mut mask.data, &map);
    }
    Ok(())
}

fn check_mask(image: &Image, mask: &Mask) -> Result<()> {
    if image.shape[1..] != mask.shape[1..] {
        return Err(DataError::Invalid(format!(
            "mask of shape {:?} does not match image of shape {:?}",
            mask.shape, image.shape
        )));
    }
    Ok(())
}

/// What a resampling reads outside the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Border {
    Zero,
    Clamp,
}

/// Resamples image (bilinear) and mask (nearest) at real source coordinates, pixel centres at
/// integers: output pixel `(y, x)` reads the input at `coords[y * w_out + x]`.
/// The value at `(y, x)` of an `h` x `w` plane, or what `border` reads outside it.
fn fetch<T: Copy + Default>(
    plane: &[T],
    [h, w]: [usize; 2],
    y: isize,
    x: isize,
    border: Border,
) -> T {
    let inside = y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w;
    match (inside, border) {
        (true, _) => plane[y as usize * w + x as usize],
        (false, Border::Zero) => T::default(),
        (false, Border::Clamp) => {
            plane[(y.clamp(0, h as isize - 1) as usize) * w + x.clamp(0, w as isize - 1) as usize]
        }
    }
}

fn resample(
    image: &mut Image,
    mask: Option<&mut Mask>,
    out_hw: [usize; 2],
    coords: &[(f32, f32)],
    border: Border,
) -> Result<()> {
    let [c, h, w] = image.shape;
    let [ho, wo] = out_hw;
    if let Some(mask) = &mask {
        check_mask(image, mask)?;
    }
    let mut out = Vec::with_capacity(c * ho * wo);
    for plane in image.data.chunks_exact(h * w) {
        let read = |y, x| fetch(plane, [h, w], y, x, border);
        out.extend(coords.iter().map(|&(sy, sx)| {
            let (y0, x0) = (sy.floor(), sx.floor());
            let (fy, fx) = (sy - y0, sx - x0);
            let (y0, x0) = (y0 as isize, x0 as isize);
            let top = read(y0, x0) * (1.0 - fx) + read(y0, x0 + 1) * fx;
            let bottom = read(y0 + 1, x0) * (1.0 - fx) + read(y0 + 1, x0 + 1) * fx;
            top * (1.0 - fy) + bottom * fy
        }));
    }
    image.data = out;
    image.shape = [c, ho, wo];
    if let Some(mask) = mask {
        let k = mask.shape[0];
        let mut out = Vec::with_capacity(k * ho * wo);
        for plane in mask.data.chunks_exact(h * w) {
            out.extend(coords.iter().map(|&(sy, sx)| {
                fetch(
                    plane,
                    [h, w],
                    sy.round() as isize,
                    sx.round() as isize,
                    border,
                )
            }));
        }
        mask.data = out;
        mask.shape = [k, ho, wo];
    }
    Ok(())
}

/// Which way [`Flip`] mirrors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlipAxis {
    /// Left-right.
    Horizontal,
    /// Top-bottom.
    Vertical,
}

/// Mirrors along `axis` with probability `p`.
pub struct Flip {
    pub axis: FlipAxis,
    pub p: f64,
}

impl Flip {
    pub fn horizontal(p: f64) -> Self {
        Self {
            axis: FlipAxis::Horizontal,
            p,
        }
    }

    pub fn vertical(p: f64) -> Self {
        Self {
            axis: FlipAxis::Vertical,
            p,
        }
    }
}

impl Transform for Flip {
    fn apply(
        &self,
        image: &mut Image,
        mask: Option<&mut Mask>,
        rng: &mut ChaCha8Rng,
    ) -> Result<()> {
        let [_, h, w] = image.shape;
        if rng.gen_bool(self.p.clamp(0.0, 1.0)) {
            match self.axis {
                FlipAxis::Horizontal => permute(image, mask, |y, x| Some((y, w - 1 - x)))?,
                FlipAxis::Vertical => permute(image, mask, |y, x| Some((h - 1 - y, x)))?,
            }
        }
        Ok(())
    }
}

/// Pads by `padding` zero pixels on every side and crops the original size at a uniformly
/// random offset (torchvision's `RandomCrop(size, padding)`): a random whole-pixel translation
/// by up to `padding` in each direction.
pub struct RandomCrop {
    pub padding: usize,
}

impl Transform for RandomCrop {
    fn apply(
        &self,
        image: &mut Image,
        mask: Option<&mut Mask>,
        rng: &mut ChaCha8Rng,
    ) -> Result<()> {
        let p = self.padding as isize;
        let dy = rng.gen_range(-p..=p);
        let dx = rng.gen_range(-p..=p);
        translate(image, mask, dy, dx)
    }
}

/// Shifts content down by `dy` and right by `dx` pixels, filling with zeros.
pub fn translate(image: &mut Image, mask: Option<&mut Mask>, dy: isize, dx: isize) -> Result<()> {
    let [_, h, w] = image.shape;
    permute(image, mask, |y, x| {
        let (sy, sx) = (y as isize - dy, x as isize - dx);
        (sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w)
            .then_some((sy as usize, sx as usize))
    })
}

/// Rotates about the centre by an angle uniform in `[-degrees, degrees]`, zero fill.
pub struct RandomRotation {
    pub degrees: f32,
}

impl Transform for RandomRotation {
    fn apply(
        &self,
        image: &mut Image,
        mask: Option<&mut Mask>,
        rng: &mut ChaCha8Rng,
    ) -> Result<()> {
        let d = self.degrees.abs();
        let angle = if d > 0.0 { rng.gen_range(-d..=d) } else { 0.0 };
        rotate(image, mask, angle)
    }
}

/// Rotates about the centre by `degrees` (counter-clockwise as displayed), zero fill.
pub fn rotate(image: &mut Image, mask: Option<&mut Mask>, degrees: f32) -> Result<()> {
    let [_, h, w] = image.shape;
    let (s, c) = degrees.to_radians().sin_cos();
    let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
    // Inverse map: the source of an output pixel is the output rotated back.
    let coords: Vec<(f32, f32)> = (0..h * w)
        .map(|p| {
            let (y, x) = ((p / w) as f32 - cy, (p % w) as f32 - cx);
            (cy + c * y + s * x, cx - s * y + c * x)
        })
        .collect();
    resample(image, mask, [h, w], &coords, Border::Zero)
}

/// Resizes to `height` x `width` (bilinear, half-pixel centres like PyTorch's
/// `align_corners=False`; masks by nearest neighbour).
pub struct Resize {
    pub height: usize,
    pub width: usize,
}

impl Transform for Resize {
    fn apply(&self, image: &mut Image, mask: Option<&mut Mask>, _: &mut ChaCha8Rng) -> Result<()> {
        let [_, h, w] = image.shape;
        let (ho, wo) = (self.height, self.width);
        if ho == 0 || wo == 0 {
            return Err(DataError::Invalid(format!("cannot resize to {ho}x{wo}")));
        }
        let (ry, rx) = (h as f32 / ho as f32, w as f32 / wo as f32);
        let coords: Vec<(f32, f32)> = (0..ho * wo)
            .map(|p| {
                let (y, x) = ((p / wo) as f32, (p % wo) as f32);
                ((y + 0.5) * ry - 0.5, (x + 0.5) * rx - 0.5)
            })
            .collect();
        resample(image, mask, [ho, wo], &coords, Border::Clamp)
    }
}

/// Per-channel standardisation `(x - mean[c]) / std[c]`.
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Transform for Normalize {
    fn apply(&self, image: &mut Image, _: Option<&mut Mask>, _: &mut ChaCha8Rng) -> Result<()> {
        let [c, h, w] = image.shape;
        if self.mean.len() != c || self.std.len() != c || self.std.iter().any(|&s| s <= 0.0) {
            return Err(DataError::Invalid(format!(
                "normalize needs {c} means and {c} positive stds for {c} channels, got {:?} and {:?}",
                self.mean, self.std
            )));
        }
        for (k, plane) in image.data.chunks_exact_mut(h * w).enumerate() {
            plane
                .iter_mut()
                .for_each(|v| *v = (*v - self.mean[k]) / self.std[k]);
        }
        Ok(())
    }
}

/// Elastic deformation (Simard et al. 2003, used by the U-Net paper): a displacement field of
/// independent uniform(-1, 1) values per pixel, smoothed by a Gaussian of `sigma` pixels and
/// scaled by `alpha` pixels, moves image and mask together.
pub struct Elastic {
    pub alpha: f32,
    pub sigma: f32,
}

impl Transform for Elastic {
    fn apply(
        &self,
        image: &mut Image,
        mask: Option<&mut Mask>,
        rng: &mut ChaCha8Rng,
    ) -> Result<()> {
        if self.sigma <= 0.0 {
            return Err(DataError::Invalid(format!(
                "elastic sigma must be positive, got {}",
                self.sigma
            )));
        }
        let [_, h, w] = image.shape;
        let field = |rng: &mut ChaCha8Rng| {
            let noise: Vec<f32> = (0..h * w).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let smooth = gaussian_blur(&noise, h, w, self.sigma);
            // Smoothing shrinks the field; rescale to unit peak so alpha is the largest shift.
            let peak = smooth.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
            smooth
                .into_iter()
                .map(|v| v / peak * self.alpha)
                .collect::<Vec<_>>()
        };
        let (dy, dx) = (field(rng), field(rng));
        let coords: Vec<(f32, f32)> = (0..h * w)
            .map(|p| ((p / w) as f32 + dy[p], (p % w) as f32 + dx[p]))
            .collect();
        resample(image, mask, [h, w], &coords, Border::Clamp)
    }
}

/// Separable Gaussian blur of an `h` x `w` plane, edges clamped.
fn gaussian_blur(plane: &[f32], h: usize, w: usize, sigma: f32) -> Vec<f32> {
    let r = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.into_iter().map(|k| k / sum).collect();
    let pass = |src: &[f32], along_x: bool| -> Vec<f32> {
        (0..h * w)
            .map(|p| {
                let (y, x) = ((p / w) as isize, (p % w) as isize);
                kernel
                    .iter()
                    .enumerate()
                    .map(|(k, &wt)| {
                        let o = k as isize - r;
                        let (yy, xx) = if along_x {
                            (y, (x + o).clamp(0, w as isize - 1))
                        } else {
                            ((y + o).clamp(0, h as isize - 1), x)
                        };
                        wt * src[yy as usize * w + xx as usize]
                    })
                    .sum()
            })
            .collect()
    };
    pass(&pass(plane, true), false)
}

/// Adds independent N(0, std^2) noise to every value (denoising autoencoders).
pub struct GaussianNoise {
    pub std: f32,
}

impl Transform for GaussianNoise {
    fn apply(&self, image: &mut Image, _: Option<&mut Mask>, rng: &mut ChaCha8Rng) -> Result<()> {
        for v in &mut image.data {
            *v += self.std * normal(rng) as f32;
        }
        Ok(())
    }
}

/// Sets each value to zero with probability `p` (masking noise, Vincent et al. 2008).
pub struct MaskingNoise {
    pub p: f64,
}

impl Transform for MaskingNoise {
    fn apply(&self, image: &mut Image, _: Option<&mut Mask>, rng: &mut ChaCha8Rng) -> Result<()> {
        let p = self.p.clamp(0.0, 1.0);
        for v in &mut image.data {
            if rng.gen_bool(p) {
                *v = 0.0;
            }
        }
        Ok(())
    }
}

/// Uniform dequantization for flows: a value `x` in [0, 1] that was a byte `k = round(255 x)`
/// becomes `(k + u) / 256`, `u ~ U[0, 1)`, a continuous density on [0, 1).
pub struct Dequantize;

impl Transform for Dequantize {
    fn apply(&self, image: &mut Image, _: Option<&mut Mask>, rng: &mut ChaCha8Rng) -> Result<()> {
        for v in &mut image.data {
            let k = (f64::from(*v).clamp(0.0, 1.0) * 255.0).round();
            let x = ((k + rng.gen::<f64>()) / 256.0) as f32;
            // Rounding to f32 may reach the next bin's edge; stay below it.
            let edge = ((k + 1.0) / 256.0) as f32;
            *v = if x >= edge {
                f32::from_bits(edge.to_bits() - 1)
            } else {
                x
            };
        }
        Ok(())
    }
}

/// The logit transform of RealNVP: `x -> logit(alpha + (1 - 2 alpha) x)`, mapping [0, 1] onto
/// the real line without infinities. [`logit_inverse`] undoes it.
pub struct Logit {
    pub alpha: f32,
}

impl Transform for Logit {
    fn apply(&self, image: &mut Image, _: Option<&mut Mask>, _: &mut ChaCha8Rng) -> Result<()> {
        if !(0.0..0.5).contains(&self.alpha) {
            return Err(DataError::Invalid(format!(
                "logit alpha must be in [0, 0.5), got {}",
                self.alpha
            )));
        }
        for v in &mut image.data {
            let p = self.alpha + (1.0 - 2.0 * self.alpha) * *v;
            *v = (p / (1.0 - p)).ln();
        }
        Ok(())
    }
}

/// The inverse of [`Logit`] with the same `alpha`.
pub fn logit_inverse(y: f32, alpha: f32) -> f32 {
    (1.0 / (1.0 + (-y).exp()) - alpha) / (1.0 - 2.0 * alpha)
}

/// Binary images for Bernoulli likelihoods.
pub enum Binarize {
    /// `1` where the value exceeds the threshold: the same binary image every epoch.
    Static(f32),
    /// A fresh Bernoulli(x) draw per pixel every time (dynamic binarization).
    Dynamic,
}

impl Transform for Binarize {
    fn apply(&self, image: &mut Image, _: Option<&mut Mask>, rng: &mut ChaCha8Rng) -> Result<()> {
        for v in &mut image.data {
            let on = match self {
                Binarize::Static(t) => *v > *t,
                Binarize::Dynamic => rng.gen::<f32>() < *v,
            };
            *v = f32::from(u8::from(on));
        }
        Ok(())
    }
}
