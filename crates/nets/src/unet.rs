//! U-Net (Ronneberger, Fischer & Brox 2015): a contracting path of 3x3 convolutions and 2x2
//! max-pools, an expanding path of 2x2 up-convolutions, and skip connections that concatenate
//! the contracting path's features (centre-cropped in the valid layout) before each expanding
//! block. The paper's valid layout maps 572x572 to 388x388; the padded layout keeps the size.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use forja_layers::{
    relu, Conv2d, ConvConfig, ConvTranspose2d, ConvTransposeConfig, MaxPool2d, PoolConfig,
};

use crate::{NetError, Result};

/// Whether the 3x3 convolutions pad (output size = input size) or not (the paper).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UNetLayout {
    /// Unpadded convolutions: each shrinks the map by 2 pixels, skips are centre-cropped.
    Valid,
    /// Zero-padded convolutions: inputs must be multiples of `2^depth`.
    Padded,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub classes: usize,
    /// Number of 2x2 max-pools (the paper: 4).
    pub depth: usize,
    /// Channels of the first level, doubled at each pool (the paper: 64, so 64..1024).
    pub width: usize,
    pub layout: UNetLayout,
}

impl UNetConfig {
    /// The paper's network: 1 input channel, 2 classes, depth 4, 64..1024 channels, valid.
    pub fn paper() -> Self {
        Self {
            in_channels: 1,
            classes: 2,
            depth: 4,
            width: 64,
            layout: UNetLayout::Valid,
        }
    }

    fn channels(&self, level: usize) -> usize {
        self.width << level
    }

    /// The output side for an input side `n`, or why it does not fit: the valid layout needs
    /// even maps at every pool; the padded one a multiple of `2^depth`.
    pub fn output_size(&self, n: usize) -> std::result::Result<usize, String> {
        match self.layout {
            UNetLayout::Padded => {
                let m = 1 << self.depth;
                if n == 0 || !n.is_multiple_of(m) {
                    return Err(format!("sides must be positive multiples of 2^depth = {m}"));
                }
                Ok(n)
            }
            UNetLayout::Valid => {
                let mut s = n as isize;
                for level in 0..self.depth {
                    s -= 4;
                    if s <= 0 || s % 2 != 0 {
                        return Err(format!(
                            "the map before pool {} would be {s} pixels; valid sides are 572, 556, ... (even after every block)",
                            level + 1
                        ));
                    }
                    s /= 2;
                }
                s -= 4;
                for _ in 0..self.depth {
                    s = 2 * s - 4;
                }
                if s <= 0 {
                    return Err(format!("{n} pixels leave no output"));
                }
                Ok(s as usize)
            }
        }
    }
}

/// Two 3x3 convolutions, each followed by ReLU.
#[derive(Debug, Clone)]
struct DoubleConv(Conv2d, Conv2d);

impl DoubleConv {
    fn new(c_in: usize, c_out: usize, layout: UNetLayout, vb: VarBuilder) -> Result<Self> {
        let pad = usize::from(layout == UNetLayout::Padded);
        let cfg = ConvConfig::default().padding(pad);
        Ok(Self(
            Conv2d::new(c_in, c_out, 3, cfg, vb.pp("conv1"))?,
            Conv2d::new(c_out, c_out, 3, cfg, vb.pp("conv2"))?,
        ))
    }
}

impl Module for DoubleConv {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        relu(&self.1.forward(&relu(&self.0.forward(x)?)?)?)
    }
}

/// The central `h` x `w` window of a `[N, C, H, W]` map (the paper's crop of the skip).
pub fn center_crop(x: &Tensor, h: usize, w: usize) -> candle_core::Result<Tensor> {
    let (_, _, xh, xw) = x.dims4()?;
    x.narrow(2, (xh - h) / 2, h)?.narrow(3, (xw - w) / 2, w)
}

#[derive(Debug, Clone)]
pub struct UNet {
    cfg: UNetConfig,
    down: Vec<DoubleConv>,
    bottom: DoubleConv,
    up: Vec<(ConvTranspose2d, DoubleConv)>,
    head: Conv2d,
}

impl UNet {
    /// Parameters are named `down.{level}.conv{1,2}`, `bottom.conv{1,2}`,
    /// `up.{level}.upconv`, `up.{level}.conv{1,2}` and `head`.
    pub fn new(cfg: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.depth == 0 || cfg.width == 0 || cfg.classes == 0 || cfg.in_channels == 0 {
            return Err(NetError::Config(format!(
                "U-Net needs depth, width, classes and input channels > 0, got {cfg:?}"
            )));
        }
        let mut down = Vec::with_capacity(cfg.depth);
        let mut c_in = cfg.in_channels;
        for level in 0..cfg.depth {
            let c = cfg.channels(level);
            down.push(DoubleConv::new(
                c_in,
                c,
                cfg.layout,
                vb.pp(format!("down.{level}")),
            )?);
            c_in = c;
        }
        let bottom = DoubleConv::new(c_in, cfg.channels(cfg.depth), cfg.layout, vb.pp("bottom"))?;
        let mut up = Vec::with_capacity(cfg.depth);
        for level in (0..cfg.depth).rev() {
            let (c_high, c) = (cfg.channels(level + 1), cfg.channels(level));
            let vb = vb.pp(format!("up.{level}"));
            let upconv = ConvTranspose2d::new(
                c_high,
                c,
                2,
                ConvTransposeConfig::default().stride(2),
                vb.pp("upconv"),
            )?;
            // The up-convolution's c channels are concatenated to the skip's c channels.
            up.push((upconv, DoubleConv::new(2 * c, c, cfg.layout, vb)?));
        }
        let head = Conv2d::new(
            cfg.width,
            cfg.classes,
            1,
            ConvConfig::default(),
            vb.pp("head"),
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            down,
            bottom,
            up,
            head,
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// Logits `[N, classes, H', W']` for images `[N, in_channels, H, W]`; a clear error when
    /// the sides do not fit the layout.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        let why = if c != self.cfg.in_channels {
            Some(format!("expected {} channels", self.cfg.in_channels))
        } else {
            self.cfg.output_size(h).and(self.cfg.output_size(w)).err()
        };
        if let Some(why) = why {
            return Err(NetError::InputShape {
                model: "unet",
                shape: x.dims().to_vec(),
                why,
            });
        }
        Ok(self.forward(x)?)
    }
}

impl Module for UNet {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let pool = MaxPool2d(PoolConfig::new(2));
        let mut skips = Vec::with_capacity(self.down.len());
        let mut x = x.clone();
        for block in &self.down {
            let features = block.forward(&x)?;
            x = pool.forward(&features)?;
            skips.push(features);
        }
        x = self.bottom.forward(&x)?;
        for ((upconv, block), skip) in self.up.iter().zip(skips.iter().rev()) {
            let upsampled = upconv.forward(&x)?;
            let (_, _, h, w) = upsampled.dims4()?;
            x = block.forward(&Tensor::cat(&[&center_crop(skip, h, w)?, &upsampled], 1)?)?;
        }
        self.head.forward(&x)
    }
}
