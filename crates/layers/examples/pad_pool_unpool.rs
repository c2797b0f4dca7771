//! A tour of forja-layers on a tiny image: padding modes, a circular convolution, overlapping
//! max pooling with indices, unpooling, and a gradient check.
//!
//! Run: `cargo run -p forja-layers --example pad_pool_unpool`

use candle_core::{Device, Tensor};
use forja_layers::check::check_gradients;
use forja_layers::*;

fn show(name: &str, t: &Tensor) -> Result<()> {
    println!("{name} {:?}:", t.dims());
    let (h, w) = (t.dim(2)?, t.dim(3)?);
    let v = t.flatten_all()?.to_vec1::<f64>()?;
    for row in v.chunks(w).take(h) {
        let cells: Vec<String> = row.iter().map(|x| format!("{x:5.1}")).collect();
        println!("  {}", cells.join(" "));
    }
    Ok(())
}

fn main() -> Result<()> {
    let x = Tensor::arange(0f64, 16.0, &Device::Cpu)?.reshape((1, 1, 4, 4))?;
    show("input", &x)?;
    for mode in [
        PadMode::Zeros,
        PadMode::Circular,
        PadMode::Reflect,
        PadMode::Replicate,
    ] {
        show(&format!("{mode:?} padding by 1"), &pad2d(&x, [1; 4], mode)?)?;
    }

    // A 3x3 box filter with circular padding: the image wraps around like a torus.
    let box3 = (Tensor::ones((1, 1, 3, 3), candle_core::DType::F64, &Device::Cpu)? / 9.0)?;
    let cfg = ConvConfig::same(3, 1).pad_mode(PadMode::Circular);
    show("circular 3x3 mean", &conv2d(&x, &box3, None, &cfg)?)?;

    // Overlapping 3x3 stride-2 max pooling (AlexNet's), with padding 1.
    let (pooled, idx) = max_pool2d_with_indices(&x, &PoolConfig::new(3).stride(2).padding(1))?;
    show("3x3/2 max pool", &pooled)?;
    println!(
        "recorded argmax indices: {:?}",
        idx.flatten_all()?.to_vec1::<u32>()?
    );
    show("max-unpooled", &max_unpool2d(&pooled, &idx, [4, 4])?)?;

    // Autograd agrees with finite differences through the whole chain.
    let worst = check_gradients(&[x.clone(), box3], |t| {
        let y = conv2d(&t[0], &t[1], None, &cfg)?;
        Ok(max_pool2d(&y, &PoolConfig::new(3).stride(2).padding(1))?)
    })?;
    println!("gradient check passed; largest |autograd - finite difference| = {worst:.2e}");
    Ok(())
}
