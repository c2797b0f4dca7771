//! The lines of `metrics.jsonl`: one per logged training window and one per evaluation.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::io_at;
use crate::{Metrics, Result, TrainError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// Mean of the step metrics over the last `log_every` steps.
    Train,
    /// Metrics on the held-out split at the end of an epoch.
    Eval,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub kind: RecordKind,
    /// 1-based epoch.
    pub epoch: usize,
    /// Training steps completed when the record was made.
    pub step: usize,
    #[serde(flatten)]
    pub values: Metrics,
}

impl Record {
    pub fn to_line(&self) -> String {
        // Serialising a struct of numbers and strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Reads `metrics.jsonl`; a malformed line is an error naming its number.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).map_err(io_at(path))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| TrainError::Checkpoint {
                path: path.to_path_buf(),
                msg: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}
