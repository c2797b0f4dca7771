//! Pictures written into run directories: image grids and raw RGB buffers as PNG.

use std::path::Path;

use candle_core::{DType, Tensor};

use crate::{io_at, Result, TrainError};

/// A perceptually ordered colour map (viridis, interpolated between five of its stops).
pub fn viridis(t: f64) -> [u8; 3] {
    const STOPS: [[f64; 3]; 5] = [
        [68.0, 1.0, 84.0],
        [59.0, 82.0, 139.0],
        [33.0, 145.0, 140.0],
        [94.0, 201.0, 98.0],
        [253.0, 231.0, 37.0],
    ];
    let x = t.clamp(0.0, 1.0) * 4.0;
    let k = (x.floor() as usize).min(3);
    let f = x - k as f64;
    std::array::from_fn(|i| (STOPS[k][i] + f * (STOPS[k + 1][i] - STOPS[k][i])).round() as u8)
}

/// Writes images `[N, C, H, W]` (values in [0, 1], C = 1 or 3) as a PNG grid of `cols`
/// columns.
pub fn image_grid(path: &Path, images: &Tensor, cols: usize) -> Result<()> {
    let (n, c, h, w) = images.dims4()?;
    let values: Vec<f32> = images.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let tiles: Vec<Vec<[u8; 3]>> = (0..n)
        .map(|i| {
            (0..h * w)
                .map(|p| {
                    std::array::from_fn(|ch| byte(values[(i * c + ch.min(c - 1)) * h * w + p]))
                })
                .collect()
        })
        .collect();
    write_tiles(path, &tiles, [h, w], cols)
}

/// Writes `h` x `w` RGB tiles (row-major pixels) as a PNG grid of `cols` columns with 2-pixel
/// white borders.
pub fn write_tiles(
    path: &Path,
    tiles: &[Vec<[u8; 3]>],
    [h, w]: [usize; 2],
    cols: usize,
) -> Result<()> {
    let border = 2;
    let (tile_h, tile_w) = (h + border, w + border);
    let (width, height) = (
        cols * tile_w + border,
        tiles.len().div_ceil(cols) * tile_h + border,
    );
    let mut rgb = vec![255u8; width * height * 3];
    for (i, tile) in tiles.iter().enumerate() {
        let (top, left) = (border + i / cols * tile_h, border + i % cols * tile_w);
        for (p, px) in tile.iter().enumerate().take(h * w) {
            let at = 3 * ((top + p / w) * width + left + p % w);
            rgb[at..at + 3].copy_from_slice(px);
        }
    }
    write_rgb_png(path, width, height, rgb)
}

/// Encodes an RGB buffer as PNG and writes it atomically.
pub fn write_rgb_png(path: &Path, width: usize, height: usize, rgb: Vec<u8>) -> Result<()> {
    let img = image::RgbImage::from_raw(width as u32, height as u32, rgb)
        .ok_or_else(|| TrainError::Plot(format!("{}: buffer size mismatch", path.display())))?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| TrainError::Plot(format!("{}: {e}", path.display())))?;
    forja_data::fs::write_atomic(path, bytes.get_ref()).map_err(io_at(path))
}
