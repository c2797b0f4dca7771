use std::path::PathBuf;

/// Errors of the trainer, its checkpoints and the model registry.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Data(#[from] forja_data::DataError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error("unknown model `{name}`.{} Registered models: {}", suggestion.as_ref().map(|s| format!(" Did you mean `{s}`?")).unwrap_or_default(), known.join(", "))]
    UnknownModel {
        name: String,
        suggestion: Option<String>,
        known: Vec<String>,
    },
    #[error("the loss became {value} at epoch {epoch}, step {step}; stopped. {}", match last_good { Some(p) => format!("The last good checkpoint is {}.", p.display()), None => "No checkpoint was written before it.".into() })]
    NonFinite {
        value: f64,
        epoch: usize,
        step: usize,
        last_good: Option<PathBuf>,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("plotting failed: {0}")]
    Plot(String),
}

pub type Result<T> = std::result::Result<T, TrainError>;

/// Maps an `std::io::Error` to one that names the file.
pub fn io_at(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}
