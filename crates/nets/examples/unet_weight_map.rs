//! The U-Net paper's loss weights for one `synth-cells` image, and an untrained padded U-Net's
//! logits for it: writes `weight_map.png` (image | cells | weight map) into the given folder.
//!
//! `cargo run --release -p forja-nets --example unet_weight_map -- /tmp/unet`

use candle_core::{DType, Device, Tensor};
use forja_data::synth_cells::SynthCells;
use forja_data::Split;
use forja_nets::segment::{cell_masks, WeightMap};
use forja_nets::{UNet, UNetConfig, UNetLayout};
use forja_train::picture::{viridis, write_tiles};
use forja_train::ParamStore;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    std::fs::create_dir_all(&out)?;
    let size = 128;
    let sample = SynthCells::new(Split::Test, 1, size, 0)?.sample(0)?;
    // The paper's two classes: cell interiors against everything else, borders included.
    let (labels, cells) = cell_masks(&sample.semantic, &sample.instances);
    let weights = WeightMap::PAPER.compute(&labels, &cells, size, size, 2);
    let max = weights.iter().cloned().fold(0f32, f32::max);
    println!(
        "{} cells; weights from {:.2} to {max:.2}",
        sample.cells,
        weights.iter().cloned().fold(f32::MAX, f32::min)
    );

    let params = ParamStore::new(0);
    let cfg = UNetConfig {
        width: 8,
        layout: UNetLayout::Padded,
        ..UNetConfig::paper()
    };
    let net = UNet::new(&cfg, params.var_builder(DType::F32, &Device::Cpu))?;
    let image: Vec<f32> = sample.image.iter().map(|&p| p as f32 / 255.0).collect();
    let logits = net.logits(&Tensor::from_vec(
        image.clone(),
        (1, 1, size, size),
        &Device::Cpu,
    )?)?;
    println!(
        "U-Net ({} parameters): logits {:?}",
        params.num_params(),
        logits.dims()
    );

    let tiles = vec![
        image.iter().map(|&v| [(v * 255.0) as u8; 3]).collect(),
        labels.iter().map(|&l| [(l * 255) as u8; 3]).collect(),
        weights.iter().map(|&w| viridis((w / max) as f64)).collect(),
    ];
    let path = out.join("weight_map.png");
    write_tiles(&path, &tiles, [size, size], 3)?;
    println!("wrote {}", path.display());
    Ok(())
}
