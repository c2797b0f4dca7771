/// Errors raised while building a network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{model}: input shape {shape:?} does not fit: {why}")]
    InputShape {
        model: &'static str,
        shape: Vec<usize>,
        why: String,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{model} needs a labelled dataset with class indices")]
    NeedsClasses { model: &'static str },
    #[error("{model} predicts one class per image, but the dataset's targets have shape {target_shape:?} (per-pixel masks?); pick a classification dataset")]
    NeedsImageLabels {
        model: &'static str,
        target_shape: Vec<usize>,
    },
    #[error(transparent)]
    Layer(#[from] forja_layers::LayerError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<NetError> for forja_train::TrainError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::Candle(c) | NetError::Layer(forja_layers::LayerError::Candle(c)) => {
                Self::Candle(c)
            }
            other => Self::Config(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, NetError>;
