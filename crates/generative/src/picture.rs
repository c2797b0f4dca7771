//! Pictures of trained flows: 2-D density heat maps beside the data, and image sample grids.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use forja_train::picture::{image_grid, viridis, write_rgb_png};
use forja_train::Result;

use crate::flows::FlowDensity;
use crate::task::FlowTask;

/// A square region `[lo, hi]²` of the plane, split into `res x res` cells.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    pub lo: f64,
    pub hi: f64,
    pub res: usize,
}

impl Grid {
    /// The smallest square holding every point, widened by 10 % on each side.
    pub fn around(points: &[f32], res: usize) -> Self {
        let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| {
            (lo.min(f64::from(v)), hi.max(f64::from(v)))
        });
        let (lo, hi) = if lo < hi { (lo, hi) } else { (-3.0, 3.0) };
        let margin = 0.1 * (hi - lo);
        Self {
            lo: lo - margin,
            hi: hi + margin,
            res,
        }
    }

    pub fn cell(&self) -> f64 {
        (self.hi - self.lo) / self.res as f64
    }

    /// Cell centres, row-major with the first row at the top (largest y).
    pub fn centres(&self) -> Vec<f64> {
        let c = self.cell();
        (0..self.res * self.res)
            .flat_map(|k| {
                let (row, col) = (k / self.res, k % self.res);
                [
                    self.lo + (col as f64 + 0.5) * c,
                    self.hi - (row as f64 + 0.5) * c,
                ]
            })
            .collect()
    }

    /// The share of `points` in each cell divided by the cell area: a histogram density.
    pub fn histogram(&self, points: &[f32]) -> Vec<f64> {
        let mut h = vec![0.0; self.res * self.res];
        let n = (points.len() / 2).max(1) as f64;
        let c = self.cell();
        for p in points.chunks_exact(2) {
            let col = ((f64::from(p[0]) - self.lo) / c).floor();
            let row = ((self.hi - f64::from(p[1])) / c).floor();
            let inside =
                (0.0..self.res as f64).contains(&col) && (0.0..self.res as f64).contains(&row);
            if inside {
                h[row as usize * self.res + col as usize] += 1.0 / (n * c * c);
            }
        }
        h
    }
}

/// Appends the values of `inputs` to `shown` until it holds `limit` of them: the test points
/// that a model's picture shows, kept during evaluation.
pub fn keep_points(shown: &mut Vec<f32>, inputs: &Tensor, limit: usize) -> Result<()> {
    let room = limit.saturating_sub(shown.len());
    if room > 0 {
        let flat: Vec<f32> = inputs.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        shown.extend(flat.into_iter().take(room));
    }
    Ok(())
}

/// `p(x)` at every cell centre of `grid`, evaluated in batches.
pub fn density_on_grid(density: &FlowDensity, grid: &Grid, device: &Device) -> Result<Vec<f64>> {
    let centres = grid.centres();
    let mut out = Vec::with_capacity(grid.res * grid.res);
    for chunk in centres.chunks(2 * 4096) {
        let x =
            Tensor::from_vec(chunk.to_vec(), (chunk.len() / 2, 2), device)?.to_dtype(DType::F32)?;
        let lp = density.log_prob(&x)?;
        out.extend(
            lp.to_dtype(DType::F64)?
                .to_vec1::<f64>()?
                .into_iter()
                .map(f64::exp),
        );
    }
    Ok(out)
}

/// Side of a panel in pixels (and cells of the grids drawn in it).
pub const PANEL: usize = 240;
const GAP: usize = 6;

/// Densities scaled to [0, 1] by their maximum, square-rooted to bring out the tails.
pub fn tails(values: &[f64]) -> Vec<f64> {
    let max = values
        .iter()
        .cloned()
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    values.iter().map(|v| (v / max).sqrt()).collect()
}

/// Writes `PANEL x PANEL` heat maps of values in [0, 1] side by side as a PNG.
pub fn write_panels(path: &Path, panels: &[Vec<f64>]) -> Result<()> {
    let width = panels.len() * (PANEL + GAP) - GAP;
    let mut rgb = vec![255u8; width * PANEL * 3];
    for (p, values) in panels.iter().enumerate() {
        for (k, v) in values.iter().enumerate().take(PANEL * PANEL) {
            let (row, col) = (k / PANEL, p * (PANEL + GAP) + k % PANEL);
            let at = 3 * (row * width + col);
            rgb[at..at + 3].copy_from_slice(&viridis(*v));
        }
    }
    write_rgb_png(path, width, PANEL, rgb)
}

/// Writes `density.png`: the test points' histogram, the model density and the histogram of
/// model samples over the same square, each scaled to its own maximum; and `density.json` with
/// the model density's integral over that square.
pub fn density_panels(task: &FlowTask, run_dir: &Path) -> Result<()> {
    let data = task.shown_points();
    let grid = Grid::around(data, PANEL);
    let model = density_on_grid(task.density(), &grid, task.device())?;
    let samples = task.sample(20_000, 1.0, 0x5A3)?;
    let samples: Vec<f32> = samples.flatten_all()?.to_vec1()?;
    let panels = [
        grid.histogram(data),
        model.clone(),
        grid.histogram(&samples),
    ];
    write_panels(&run_dir.join("density.png"), &panels.map(|p| tails(&p)))?;
    let integral: f64 = model.iter().sum::<f64>() * grid.cell() * grid.cell();
    let json = format!(
        "{{\"square\": [{}, {}], \"cells\": {}, \"integral\": {integral}}}\n",
        grid.lo, grid.hi, grid.res
    );
    let path = run_dir.join("density.json");
    forja_data::fs::write_atomic(&path, json.as_bytes()).map_err(forja_train::io_at(&path))
}

/// Temperatures of the rows of `samples.png`.
pub const TEMPERATURES: [f64; 3] = [0.5, 0.75, 1.0];

/// Writes `samples.png`: two rows of ten samples per temperature in [`TEMPERATURES`].
pub fn sample_grid(task: &FlowTask, run_dir: &Path) -> Result<()> {
    let mut tiles = Vec::new();
    for (k, &t) in TEMPERATURES.iter().enumerate() {
        tiles.push(task.sample(20, t, 0xC0FFEE + k as u64)?);
    }
    image_grid(&run_dir.join("samples.png"), &Tensor::cat(&tiles, 0)?, 10)
}
