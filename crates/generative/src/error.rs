/// What can go wrong in a generative model: bad configuration or input, or a tensor error.
#[derive(Debug, thiserror::Error)]
pub enum GenerativeError {
    #[error("{layer}: {msg}")]
    Config { layer: &'static str, msg: String },
    #[error("{layer}: expected {expected}, got shape {shape:?}")]
    Shape {
        layer: &'static str,
        expected: String,
        shape: Vec<usize>,
    },
    #[error("{layer}: {msg}")]
    NotInvertible { layer: &'static str, msg: String },
    #[error(transparent)]
    Layer(#[from] forja_layers::LayerError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<GenerativeError> for forja_train::TrainError {
    fn from(e: GenerativeError) -> Self {
        match e {
            GenerativeError::Candle(c)
            | GenerativeError::Layer(forja_layers::LayerError::Candle(c)) => Self::Candle(c),
            other => Self::Config(other.to_string()),
        }
    }
}

impl From<GenerativeError> for candle_core::Error {
    fn from(e: GenerativeError) -> Self {
        match e {
            GenerativeError::Candle(c)
            | GenerativeError::Layer(forja_layers::LayerError::Candle(c)) => c,
            other => candle_core::Error::Msg(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, GenerativeError>;
