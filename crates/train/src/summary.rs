//! A model's layer table: parameters grouped by layer, with shapes and counts, like torchinfo.

use std::fmt;

use candle_core::{DType, Device, Tensor};
use forja_data::Batch;

use crate::params::is_buffer;
use crate::registry::{self, DataSpec};
use crate::{Result, RunConfig};

/// One layer: its name (the parameter names' common prefix) and its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRow {
    pub layer: String,
    /// `(tensor name within the layer, shape)`, buffers included.
    pub tensors: Vec<(String, Vec<usize>)>,
    /// Trainable scalars (buffers excluded).
    pub params: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    pub model: String,
    pub input: Vec<usize>,
    pub classes: usize,
    pub rows: Vec<LayerRow>,
    pub total: usize,
    /// Output shape of each stage of the forward pass (batch of 1, evaluation mode), in order.
    pub outputs: Vec<(String, Vec<usize>)>,
}

/// Builds the registered model `name` for `input` (`[C, H, W]`) and `classes`, tabulates its
/// parameters by layer, in natural name order (`features.2` before `features.10`), and records
/// the output shape of every stage of one forward pass of a single zero image.
pub fn summarize(name: &str, input: &[usize], classes: usize) -> Result<ModelSummary> {
    let entry = registry::find(name)?;
    let mut cfg = RunConfig::new(name, entry.default_dataset);
    (entry.configure)(&mut cfg);
    let data = DataSpec {
        item_shape: input.to_vec(),
        target_shape: vec![],
        num_classes: Some(classes),
    };
    let mut task = (entry.build)(&cfg, &data, &Device::Cpu)?;
    let probe = Batch {
        inputs: Tensor::zeros([&[1], input].concat(), DType::F32, &Device::Cpu)?,
        targets: Tensor::zeros(1, DType::U32, &Device::Cpu)?,
    };
    let (evaluated, outputs) =
        forja_layers::trace::capture(|| task.evaluate(&mut std::iter::once(Ok(probe))));
    evaluated?;
    let mut weights = task.weights();
    weights.sort_by_cached_key(|(n, _)| natural_key(n));
    let mut rows: Vec<LayerRow> = Vec::new();
    for (full, t) in weights {
        let (layer, tensor) = full.rsplit_once('.').unwrap_or(("", full.as_str()));
        let params = if is_buffer(&full) { 0 } else { t.elem_count() };
        match rows.last_mut() {
            Some(row) if row.layer == layer => {
                row.tensors.push((tensor.to_string(), t.dims().to_vec()));
                row.params += params;
            }
            _ => rows.push(LayerRow {
                layer: layer.to_string(),
                tensors: vec![(tensor.to_string(), t.dims().to_vec())],
                params,
            }),
        }
    }
    Ok(ModelSummary {
        model: name.to_string(),
        input: input.to_vec(),
        classes,
        total: rows.iter().map(|r| r.params).sum(),
        rows,
        outputs: outputs
            .into_iter()
            .map(|(name, t)| (name, t.dims().to_vec()))
            .collect(),
    })
}

/// Name parts, numbers compared as numbers.
fn natural_key(name: &str) -> Vec<(u64, String)> {
    name.split('.')
        .map(|p| match p.parse::<u64>() {
            Ok(n) => (n, String::new()),
            Err(_) => (u64::MAX, p.to_string()),
        })
        .collect()
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} on input {:?}, {} classes",
            self.model, self.input, self.classes
        )?;
        let w = self
            .rows
            .iter()
            .map(|r| r.layer.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(f, "{:w$}  {:>12}  TENSORS", "LAYER", "PARAMETERS")?;
        for r in &self.rows {
            let tensors: Vec<String> = r
                .tensors
                .iter()
                .map(|(n, s)| format!("{n} {s:?}"))
                .collect();
            writeln!(
                f,
                "{:w$}  {:>12}  {}",
                r.layer,
                thousands(r.params),
                tensors.join(", ")
            )?;
        }
        if !self.outputs.is_empty() {
            let w = self
                .outputs
                .iter()
                .map(|(n, _)| n.len())
                .max()
                .unwrap_or(5)
                .max(5);
            writeln!(f, "\n{:w$}  OUTPUT SHAPE (batch of 1)", "STAGE")?;
            for (name, shape) in &self.outputs {
                writeln!(f, "{name:w$}  {shape:?}")?;
            }
        }
        write!(f, "total trainable parameters: {}", thousands(self.total))
    }
}
