//! Weight initialisation schemes, expressed through candle-nn's `Init` so they plug into any
//! `VarBuilder`.

use candle_nn::Init as CandleInit;

/// How a layer's weight is drawn. `fan_in` = input channels per group x kernel size,
/// `fan_out` = output channels per group x kernel size.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Init {
    /// PyTorch's default for Linear/Conv: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    /// (kaiming_uniform with a = sqrt(5)); the bias is drawn from the same range.
    #[default]
    Torch,
    /// He et al. 2015 (ReLU nets): N(0, 2 / fan_in); bias zero.
    He,
    /// Glorot & Bengio 2010: U(-a, a), a = sqrt(6 / (fan_in + fan_out)); bias zero.
    Xavier,
    /// LeCun 1998 (tanh/SELU nets): N(0, 1 / fan_in); bias zero.
    LeCun,
}

impl Init {
    /// The distribution of the weight.
    pub fn weight(self, fan_in: usize, fan_out: usize) -> CandleInit {
        let fan_in = fan_in.max(1) as f64;
        let fan_out = fan_out.max(1) as f64;
        match self {
            Init::Torch => uniform(1.0 / fan_in.sqrt()),
            Init::He => CandleInit::Randn {
                mean: 0.0,
                stdev: (2.0 / fan_in).sqrt(),
            },
            Init::Xavier => uniform((6.0 / (fan_in + fan_out)).sqrt()),
            Init::LeCun => CandleInit::Randn {
                mean: 0.0,
                stdev: (1.0 / fan_in).sqrt(),
            },
        }
    }

    /// The distribution of the bias.
    pub fn bias(self, fan_in: usize) -> CandleInit {
        match self {
            Init::Torch => uniform(1.0 / (fan_in.max(1) as f64).sqrt()),
            _ => CandleInit::Const(0.0),
        }
    }
}

fn uniform(bound: f64) -> CandleInit {
    CandleInit::Uniform {
        lo: -bound,
        up: bound,
    }
}
