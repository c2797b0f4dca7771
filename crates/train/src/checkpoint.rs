//! Checkpoints: one safetensors file holding the tensors and, in its header, the JSON metadata.
//! One file written by one atomic rename means a checkpoint is never half-written or out of
//! step with its metadata.

use std::collections::HashMap;
use std::path::Path;

use candle_core::safetensors::Load;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::io_at;
use crate::{Metrics, Result, RunConfig, TrainError};

/// Key of the metadata entry in the safetensors header.
const META_KEY: &str = "forja";

/// Where a run stood when the checkpoint was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Epochs completed.
    pub epoch: usize,
    /// Training steps completed.
    pub step: usize,
    /// Evaluation metrics after `epoch`.
    pub metrics: Metrics,
    /// Best value of the monitored metric so far, and the epoch (1-based) it was reached.
    pub best: Option<f64>,
    pub best_epoch: Option<usize>,
    pub epochs_since_best: usize,
    pub config: RunConfig,
}

/// Serialises `tensors` with `meta` (or no metadata) into safetensors bytes.
fn to_bytes(tensors: &[(String, Tensor)], meta: Option<&CheckpointMeta>) -> Result<Vec<u8>> {
    let header = match meta {
        Some(m) => Some(HashMap::from([(
            META_KEY.to_string(),
            serde_json::to_string(m).map_err(|e| TrainError::Config(e.to_string()))?,
        )])),
        None => None,
    };
    let tensors: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.as_str(), t.contiguous()?)))
        .collect::<candle_core::Result<_>>()?;
    safetensors::serialize(tensors.iter().map(|(k, t)| (*k, t)), header)
        .map_err(|e| TrainError::Config(format!("cannot serialise tensors: {e}")))
}

/// Writes a checkpoint atomically.
pub fn save(path: &Path, tensors: &[(String, Tensor)], meta: &CheckpointMeta) -> Result<()> {
    let bytes = to_bytes(tensors, Some(meta))?;
    forja_data::fs::write_atomic(path, &bytes).map_err(io_at(path))
}

/// Writes plain weights (no metadata) atomically, loadable by PyTorch's `safetensors.torch`.
pub fn save_weights(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let bytes = to_bytes(tensors, None)?;
    forja_data::fs::write_atomic(path, &bytes).map_err(io_at(path))
}

/// Reads a checkpoint written by [`save`].
pub fn load(path: &Path, device: &Device) -> Result<(HashMap<String, Tensor>, CheckpointMeta)> {
    let bytes = std::fs::read(path).map_err(io_at(path))?;
    let bad = |msg: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("unreadable header: {e}")))?;
    let meta_json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| bad("no forja metadata: not a forja checkpoint".into()))?;
    let meta: CheckpointMeta =
        serde_json::from_str(meta_json).map_err(|e| bad(format!("invalid metadata: {e}")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let t = view
            .load(device)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        tensors.insert(name, t);
    }
    Ok((tensors, meta))
}
