//! Runs as the command line sees them: open the data, build the model from the registry, train,
//! resume or evaluate a run directory.

use std::path::{Path, PathBuf};

use candle_core::Device;
use std::sync::Arc;

use forja_data::{catalog, Dataset, Loader, Split, Subset};

use crate::checkpoint;
use crate::error::io_at;
use crate::registry::{self, DataSpec};
use crate::trainer::{BEST_CHECKPOINT, CONFIG_FILE, LAST_CHECKPOINT};
use crate::{Metrics, Result, RunConfig, Summary, Task, TrainError, Trainer};

/// The train and test splits of the run's dataset, shortened to the configured limits.
pub fn open_data(cfg: &RunConfig) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>)> {
    let dir = cfg.data_dir.as_deref();
    let entry = catalog::find(&cfg.dataset)?;
    let open = |split, limit: Option<usize>| -> Result<Arc<dyn Dataset>> {
        let data = entry.open_split(split, dir)?;
        Ok(match limit {
            Some(n) if n < data.len() => Arc::new(Subset::new(data, (0..n).collect())?),
            _ => data,
        })
    };
    Ok((
        open(Split::Train, cfg.limit_train)?,
        open(Split::Test, cfg.limit_test)?,
    ))
}

fn build(cfg: &RunConfig, data: &dyn Dataset, device: &Device) -> Result<Box<dyn Task>> {
    let entry = registry::find(&cfg.model)?;
    let spec = DataSpec {
        item_shape: data.item_shape(),
        target_shape: data.target_shape(),
        num_classes: data.num_classes(),
    };
    (entry.build)(cfg, &spec, device)
}

/// A fresh directory `root/<model>-<UTC timestamp>` (suffixed if that name is taken).
pub fn new_run_dir(root: &Path, model: &str) -> Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = format!("{model}-{}", utc_stamp(secs));
    std::fs::create_dir_all(root).map_err(io_at(root))?;
    for k in 1.. {
        let name = if k == 1 {
            base.clone()
        } else {
            format!("{base}-{k}")
        };
        let dir = root.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(TrainError::Io {
                    path: dir,
                    source: e,
                })
            }
        }
    }
    unreachable!("the suffix search only ends by returning")
}

/// `YYYYMMDD-HHMMSS` for seconds since the Unix epoch (civil-from-days, proleptic Gregorian).
fn utc_stamp(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Trains a new run in `run_dir`.
pub fn train(cfg: RunConfig, run_dir: &Path, device: &Device, progress: bool) -> Result<Summary> {
    cfg.validate()?;
    let data = open_data(&cfg)?;
    train_on(cfg, data, run_dir, device, progress)
}

/// Trains a new run in `run_dir` on data already opened with [`open_data`] (so a caller can
/// check the data exists before it creates the run directory, without reading it twice).
pub fn train_on(
    cfg: RunConfig,
    (train, test): (Arc<dyn Dataset>, Arc<dyn Dataset>),
    run_dir: &Path,
    device: &Device,
    progress: bool,
) -> Result<Summary> {
    cfg.validate()?;
    let mut task = build(&cfg, train.as_ref(), device)?;
    Trainer::new(cfg, run_dir, device)?
        .progress(progress)
        .fit(task.as_mut(), train, test, None)
}

/// The configuration a run was started with.
pub fn load_config(run_dir: &Path) -> Result<RunConfig> {
    let path = run_dir.join(CONFIG_FILE);
    if !path.is_file() {
        return Err(TrainError::Checkpoint {
            path: run_dir.to_path_buf(),
            msg: format!("not a run directory: it has no {CONFIG_FILE} (runs are made by `cargo xtask train`)"),
        });
    }
    let text = std::fs::read_to_string(&path).map_err(io_at(&path))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path,
        msg: format!("invalid run config: {e}"),
    })
}

/// Continues the run in `run_dir` from its last checkpoint, up to `epochs` if given.
pub fn resume(
    run_dir: &Path,
    epochs: Option<usize>,
    device: &Device,
    progress: bool,
) -> Result<Summary> {
    let mut cfg = load_config(run_dir)?;
    if let Some(e) = epochs {
        cfg.epochs = e;
    }
    let (tensors, meta) = checkpoint::load(&run_dir.join(LAST_CHECKPOINT), device)?;
    let (train, test) = open_data(&cfg)?;
    let mut task = build(&cfg, train.as_ref(), device)?;
    Trainer::new(cfg, run_dir, device)?.progress(progress).fit(
        task.as_mut(),
        train,
        test,
        Some((tensors, meta)),
    )
}

/// A saved run's model, with the weights of one of its checkpoints.
pub struct SavedRun {
    pub cfg: RunConfig,
    /// The checkpoint the weights came from.
    pub checkpoint: PathBuf,
    pub task: Box<dyn Task>,
    pub test: Arc<dyn Dataset>,
}

impl SavedRun {
    /// Loads the best checkpoint of a run (`last`: its last one; the best is also the last
    /// where the run kept no best).
    pub fn open(run_dir: &Path, device: &Device, last: bool) -> Result<Self> {
        let cfg = load_config(run_dir)?;
        let names: &[&str] = if last {
            &[LAST_CHECKPOINT]
        } else {
            &[BEST_CHECKPOINT, LAST_CHECKPOINT]
        };
        let checkpoint = names
            .iter()
            .map(|f| run_dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| TrainError::Checkpoint {
                path: run_dir.to_path_buf(),
                msg: format!("no {}: the run saved no checkpoint yet", names.join(" or ")),
            })?;
        let (tensors, _) = checkpoint::load(&checkpoint, device)?;
        let (train, test) = open_data(&cfg)?;
        let mut task = build(&cfg, train.as_ref(), device)?;
        task.load_state(&tensors)?;
        Ok(Self {
            cfg,
            checkpoint,
            task,
            test,
        })
    }

    /// The model's metrics on the run's test split.
    pub fn evaluate(&mut self, device: &Device) -> Result<Metrics> {
        let loader = Loader::new(self.test.clone(), self.cfg.batch_size, device)?;
        self.task.evaluate(&mut loader.epoch(0))
    }
}

/// Re-evaluates the best (or, without one, the last) checkpoint of a run on its test split.
pub fn evaluate(run_dir: &Path, device: &Device) -> Result<(RunConfig, PathBuf, Metrics)> {
    let mut run = SavedRun::open(run_dir, device, false)?;
    let metrics = run.evaluate(device)?;
    Ok((run.cfg, run.checkpoint, metrics))
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_stamp_matches_known_dates() {
        assert_eq!(super::utc_stamp(0), "19700101-000000");
        assert_eq!(super::utc_stamp(951_782_400), "20000229-000000");
        assert_eq!(super::utc_stamp(1_795_500_023), "20261124-060023");
    }
}
