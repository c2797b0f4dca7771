//! Outputs of named stages, recorded while [`capture`] runs: their shapes are what `cargo
//! xtask summary` prints beside the parameters, and a classifier's penultimate stage gives
//! the image features of FID. Networks call [`record`] after each stage of their forward pass;
//! outside a capture it costs one thread-local check.

use std::cell::RefCell;

use candle_core::Tensor;

/// Stage names with their outputs, in the order they ran.
pub type Stages = Vec<(String, Tensor)>;

thread_local! {
    static TRACE: RefCell<Option<Stages>> = const { RefCell::new(None) };
}

/// Notes `x` under `name` when a capture is running on this thread; returns `x`.
/// The name is only formatted then, so `format_args!` names cost nothing in training.
pub fn record(name: impl std::fmt::Display, x: Tensor) -> Tensor {
    TRACE.with(|t| {
        if let Some(rows) = t.borrow_mut().as_mut() {
            rows.push((name.to_string(), x.clone()));
        }
    });
    x
}

/// Runs `f` and returns what it returned with the stages recorded meanwhile, in order.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Stages) {
    let outer = TRACE.with(|t| t.borrow_mut().replace(Vec::new()));
    let result = f();
    let rows = TRACE.with(|t| std::mem::replace(&mut *t.borrow_mut(), outer));
    (result, rows.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(rows: &Stages) -> Vec<&str> {
        rows.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn records_only_inside_a_capture_and_nests() {
        let x = Tensor::zeros((2, 3), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        record("outside", x.clone());
        let ((), rows) = capture(|| {
            record("a", x.clone());
            let ((), inner) = capture(|| {
                record("b", x.clone());
            });
            assert_eq!(names(&inner), ["b"]);
            record("c", x.clone());
        });
        assert_eq!(names(&rows), ["a", "c"]);
        assert_eq!(rows[1].1.dims(), [2, 3]);
    }
}
