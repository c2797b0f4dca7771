//! The model registry: each model submits a [`ModelEntry`] with `inventory::submit!` next to its
//! definition, and the command line finds it here without a hand-kept list.

use candle_core::Device;

use crate::{Result, RunConfig, Task, TrainError};

/// What a model needs to know about its data before it is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSpec {
    /// Shape of one input, e.g. `[1, 28, 28]`.
    pub item_shape: Vec<usize>,
    /// Shape of one target: `[]` for a class index, `[K, H, W]` for segmentation masks.
    pub target_shape: Vec<usize>,
    pub num_classes: Option<usize>,
}

pub struct ModelEntry {
    pub name: &'static str,
    pub family: &'static str,
    pub summary: &'static str,
    pub default_dataset: &'static str,
    /// Sets the model's recommended hyper-parameters on a fresh config (before user flags).
    pub configure: fn(&mut RunConfig),
    pub build: fn(&RunConfig, &DataSpec, &Device) -> Result<Box<dyn Task>>,
}

inventory::collect!(ModelEntry);

/// All registered models, sorted by name.
pub fn models() -> Vec<&'static ModelEntry> {
    let mut all: Vec<_> = inventory::iter::<ModelEntry>.into_iter().collect();
    all.sort_by_key(|m| m.name);
    all
}

/// The model called `name`, or an error listing the names and the closest one.
pub fn find(name: &str) -> Result<&'static ModelEntry> {
    let all = models();
    if let Some(m) = all.iter().find(|m| m.name == name) {
        return Ok(m);
    }
    let suggestion = all
        .iter()
        .map(|m| (edit_distance(name, m.name), m.name))
        .filter(|&(d, candidate)| d <= candidate.len().max(name.len()) / 2)
        .min()
        .map(|(_, n)| n.to_string());
    Err(TrainError::UnknownModel {
        name: name.to_string(),
        suggestion,
        known: all.iter().map(|m| m.name.to_string()).collect(),
    })
}

/// Levenshtein distance between two strings, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("lenet5", "lenet5"), 0);
        assert_eq!(edit_distance("lenet", "lenet5"), 1);
        assert_eq!(edit_distance("lent5", "lenet5"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
