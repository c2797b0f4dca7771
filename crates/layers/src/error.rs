/// Errors raised by forja's layers: a bad configuration or an input of the wrong shape.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{op}: {why}")]
    Config { op: &'static str, why: String },
    #[error("{op}: expected {expected}, got shape {got:?}")]
    Shape {
        op: &'static str,
        expected: String,
        got: Vec<usize>,
    },
    #[error("gradient check failed: {0}")]
    GradCheck(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl LayerError {
    pub(crate) fn config(op: &'static str, why: impl Into<String>) -> Self {
        Self::Config {
            op,
            why: why.into(),
        }
    }

    pub(crate) fn shape(op: &'static str, expected: impl Into<String>, got: &[usize]) -> Self {
        Self::Shape {
            op,
            expected: expected.into(),
            got: got.to_vec(),
        }
    }
}

/// Lets layer errors flow through candle's `Module::forward`, which returns candle's error type.
impl From<LayerError> for candle_core::Error {
    fn from(e: LayerError) -> Self {
        match e {
            LayerError::Candle(c) => c,
            other => candle_core::Error::wrap(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, LayerError>;

/// Checks that `x` has `rank` dimensions and returns them.
pub(crate) fn dims_of<'a>(
    x: &'a candle_core::Tensor,
    rank: usize,
    op: &'static str,
    layout: &str,
) -> Result<&'a [usize]> {
    let dims = x.dims();
    if dims.len() != rank {
        return Err(LayerError::shape(
            op,
            format!("a {rank}-D input {layout}"),
            dims,
        ));
    }
    Ok(dims)
}
