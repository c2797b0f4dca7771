//! Writes a 10x10 grid of `synth-digits` training samples (one row per class) to a PNG.
//!
//! `cargo run -p forja-data --example synth_digits_grid -- digits.png`

use forja_data::{synth_digits, Split};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "synth-digits.png".into());
    let train = synth_digits::generate(Split::Train, 100, synth_digits::SEED)?;
    let side = forja_data::synth_digits::SIZE;
    let mut grid = image::GrayImage::new(10 * side as u32, 10 * side as u32);
    for row in 0..10 {
        for col in 0..10 {
            // Sample i has label i % 10, so index 10 * col + row is of class `row`.
            let img = train.image_bytes(10 * col + row);
            for (k, &p) in img.iter().enumerate() {
                let (x, y) = (
                    (col * side + k % side) as u32,
                    (row * side + k / side) as u32,
                );
                grid.put_pixel(x, y, image::Luma([p]));
            }
        }
    }
    image::imageops::resize(&grid, 560, 560, image::imageops::FilterType::Nearest).save(&out)?;
    println!("wrote {out}");
    Ok(())
}
