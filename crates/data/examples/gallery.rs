//! Writes a preview of the embedded datasets to a folder: colour digits, synth-cells (image,
//! classes, the same pair elastically deformed) and a scatter of each 2-D density.
//!
//! `cargo run --release -p forja-data --example gallery -- gallery/`

use std::path::PathBuf;

use forja_data::densities::{Density, PointSet};
use forja_data::synth_cells::SynthCells;
use forja_data::transform::{Elastic, Image, Mask, Transform};
use forja_data::{seed, synth_digits, Split};
use image::{Rgb, RgbImage};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "gallery".into()));
    std::fs::create_dir_all(&out)?;

    let rgb = synth_digits::generate_rgb(Split::Train, 100, synth_digits::SEED)?;
    let mut grid = RgbImage::new(320, 320);
    for i in 0..100 {
        let img = rgb.image_bytes(i);
        for p in 0..1024 {
            let (x, y) = ((i % 10) * 32 + p % 32, (i / 10) * 32 + p / 32);
            let c = [img[p], img[1024 + p], img[2048 + p]];
            grid.put_pixel(x as u32, y as u32, Rgb(c));
        }
    }
    grid.save(out.join("synth-digits-rgb.png"))?;

    let cells = SynthCells::new(Split::Train, 4, 128, 1)?;
    let palette = [[0, 0, 0], [40, 160, 60], [230, 60, 40]];
    let mut strip = RgbImage::new(4 * 128, 4 * 128);
    for i in 0..4 {
        let s = cells.sample(i)?;
        let mut image = Image::new(s.image.iter().map(|&v| v as f32).collect(), [1, 128, 128])?;
        let mut mask = Mask::new(s.semantic.clone(), [1, 128, 128])?;
        Elastic {
            alpha: 6.0,
            sigma: 6.0,
        }
        .apply(&mut image, Some(&mut mask), &mut seed::rng(i as u64, &[]))?;
        for p in 0..128 * 128 {
            let (x, y) = ((p % 128) as u32, (i * 128 + p / 128) as u32);
            let g = s.image[p];
            let d = image.data[p].round() as u8;
            strip.put_pixel(x, y, Rgb([g, g, g]));
            strip.put_pixel(128 + x, y, Rgb(palette[s.semantic[p] as usize]));
            strip.put_pixel(256 + x, y, Rgb([d, d, d]));
            strip.put_pixel(384 + x, y, Rgb(palette[mask.data[p] as usize]));
        }
    }
    strip.save(out.join("synth-cells.png"))?;

    for d in Density::ALL {
        let set = PointSet::generate(d, Split::Train, 20_000, 0);
        let mut img = RgbImage::from_pixel(256, 256, Rgb([255, 255, 255]));
        for q in set.points().chunks_exact(2) {
            let (x, y) = ((q[0] + 4.5) / 9.0 * 256.0, (4.5 - q[1]) / 9.0 * 256.0);
            if (0.0..256.0).contains(&x) && (0.0..256.0).contains(&y) {
                img.put_pixel(x as u32, y as u32, Rgb([20, 60, 160]));
            }
        }
        img.save(out.join(format!("{}.png", d.name())))?;
    }
    println!("wrote the gallery to {}", out.display());
    Ok(())
}
