//! Plots: `curves.png` (the training curves of a run, one panel per metric), scatters of
//! labelled points and panels of line curves.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::{Record, RecordKind, Result, TrainError};

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is embedded, so plots work on machines without fontconfig or system fonts.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// The (step, value) points of `metric` in records of `kind`.
fn series(records: &[Record], kind: RecordKind, metric: &str) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter(|r| r.kind == kind)
        .filter_map(|r| r.values.get(metric).map(|&v| (r.step as f64, v)))
        .filter(|(_, v)| v.is_finite())
        .collect()
}

/// Draws every metric that has evaluation records (train and test, against the step) into `path`.
pub fn curves(path: &Path, records: &[Record]) -> Result<()> {
    register_font();
    let mut metrics: Vec<String> = records
        .iter()
        .filter(|r| r.kind == RecordKind::Eval)
        .flat_map(|r| r.values.keys().cloned())
        .filter(|k| !k.ends_with("_s") && !k.starts_with("train_") && k != "lr")
        .collect();
    metrics.sort();
    metrics.dedup();
    if metrics.is_empty() {
        return Ok(());
    }
    let err = |e: &dyn std::fmt::Display| TrainError::Plot(e.to_string());
    let root = BitMapBackend::new(path, (560 * metrics.len() as u32, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    for (area, metric) in root.split_evenly((1, metrics.len())).iter().zip(&metrics) {
        let train = series(records, RecordKind::Train, metric);
        let test = series(records, RecordKind::Eval, metric);
        let all = train.iter().chain(&test);
        let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max);
        let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
        let pad = ((hi - lo) * 0.05).max(1e-6);
        let mut chart = ChartBuilder::on(area)
            .caption(metric, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, (lo - pad)..(hi + pad))
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(train, BLUE.stroke_width(1)))
            .map_err(|e| err(&e))?
            .label("train")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
        chart
            .draw_series(LineSeries::new(test.clone(), RED.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label("test")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
        chart
            .draw_series(test.into_iter().map(|p| Circle::new(p, 3, RED.filled())))
            .map_err(|e| err(&e))?;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

/// A 2-D scatter of `points`, coloured by their class `labels` (a legend entry per class),
/// e.g. a map of a model's codes.
pub fn scatter(path: &Path, title: &str, points: &[[f64; 2]], labels: &[u32]) -> Result<()> {
    register_font();
    let err = |e: &dyn std::fmt::Display| TrainError::Plot(format!("{}: {e}", path.display()));
    let range = |axis: usize| {
        let (lo, hi) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p[axis]), hi.max(p[axis]))
            });
        let pad = ((hi - lo) * 0.05).max(1e-9);
        if lo.is_finite() {
            (lo - pad)..(hi + pad)
        } else {
            -1.0..1.0
        }
    };
    let root = BitMapBackend::new(path, (640, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(range(0), range(1))
        .map_err(|e| err(&e))?;
    chart.configure_mesh().draw().map_err(|e| err(&e))?;
    let mut classes: Vec<u32> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    for class in classes {
        let colour = Palette99::pick(class as usize).to_rgba();
        let members = points
            .iter()
            .zip(labels)
            .filter(|(_, &l)| l == class)
            .map(|(p, _)| Circle::new((p[0], p[1]), 2, colour.filled()));
        chart
            .draw_series(members)
            .map_err(|e| err(&e))?
            .label(format!("class {class}"))
            .legend(move |(x, y)| Circle::new((x + 6, y), 4, colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// One named curve of a line plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Panels side by side, each a title and its curves (black, green, blue, red, ... in order);
/// the panels share their axes, so they compare at a glance (e.g. stages of a training).
pub fn line_panels(path: &Path, panels: &[(String, Vec<Curve>)]) -> Result<()> {
    register_font();
    let err = |e: &dyn std::fmt::Display| TrainError::Plot(format!("{}: {e}", path.display()));
    let points = || panels.iter().flat_map(|(_, c)| c).flat_map(|c| &c.points);
    let bounds = |f: fn(&(f64, f64)) -> f64| {
        points()
            .map(f)
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    };
    let ((x0, x1), (y0, y1)) = (bounds(|p| p.0), bounds(|p| p.1));
    if panels.is_empty() || !x0.is_finite() {
        return Err(TrainError::Plot(format!(
            "{}: nothing to draw",
            path.display()
        )));
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let colours = [BLACK, GREEN, BLUE, RED, MAGENTA, CYAN];
    let root = BitMapBackend::new(path, (480 * panels.len() as u32, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    for (area, (title, curves)) in root.split_evenly((1, panels.len())).iter().zip(panels) {
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(44)
            .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))
            .map_err(|e| err(&e))?;
        chart.configure_mesh().draw().map_err(|e| err(&e))?;
        for (curve, colour) in curves.iter().zip(colours.iter().cycle()) {
            let style = colour.stroke_width(2);
            chart
                .draw_series(LineSeries::new(curve.points.clone(), style))
                .map_err(|e| err(&e))?
                .label(curve.label.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}
