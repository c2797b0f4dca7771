//! The forja trainer.
//!
//! A model implements [`Task`] (one training step, evaluation, its state); the [`Trainer`] runs the
//! epochs, logs `metrics.jsonl`, draws `curves.png`, writes atomic safetensors checkpoints (last,
//! best, and PyTorch-named weights), stops early, refuses NaN losses and resumes exactly.
//! Models register in the [`registry`] with `inventory::submit!`.

pub mod checkpoint;
mod classify;
mod config;
mod error;
pub mod fid;
mod fused;
pub mod linalg;
mod optim;
mod params;
pub mod picture;
pub mod plot;
mod record;
pub mod registry;
pub mod run;
pub mod runtime;
mod schedule;
mod state;
pub mod summary;
mod task;
mod trainer;

pub use checkpoint::CheckpointMeta;
pub use classify::Classifier;
pub use config::{Augment, RunConfig};
pub use error::{io_at, Result, TrainError};
pub use optim::{clip_grad_norm, Optimizer, OptimizerConfig, OptimizerKind};
pub use params::{is_buffer, ParamCounter, ParamStore};
pub use record::{read_records, Record, RecordKind};
pub use registry::{DataSpec, ModelEntry};
pub use schedule::Schedule;
pub use state::TrainState;
pub use summary::{summarize, LayerRow, ModelSummary};
pub use task::{scalar, Metrics, Monitor, StepCtx, Task};
pub use trainer::{
    Summary, Trainer, BEST_CHECKPOINT, CONFIG_FILE, CURVES_FILE, LAST_CHECKPOINT, METRICS_FILE,
    MODEL_WEIGHTS,
};

// Re-exported so model crates can register without naming `inventory` themselves.
pub use inventory;
