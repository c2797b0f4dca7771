//! Parallel loops on candle's own CPU thread pool.
//!
//! candle 0.11 runs its element-wise CPU ops on a pool of its own whose workers spin for a
//! while after each op before they sleep. Kernels on a second pool (rayon's) started while
//! those workers still spin, so on a two-core machine three threads shared two cores after
//! every candle op. Lowering candle's spin limit from 25,000 to 2,000 made a RealNVP step 8-10%
//! faster; to 200, a U-Net step 7-13% faster but a DCGAN step, with many small candle ops in a
//! row, 8-20% slower. Running the kernels on candle's pool keeps one set of threads busy for
//! both (RealNVP about 13% faster than on rayon's pool with the limit at 1,000).

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::utils::barrier_pool;

thread_local! {
    /// Whether this thread is running a share of a parallel loop (nested loops run inline:
    /// candle's pool takes one loop at a time, and the calling thread takes part in it).
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// The threads a parallel loop runs on: candle's workers and the calling thread.
pub fn threads() -> usize {
    barrier_pool().n_workers() + 1
}

/// Runs `f` on ranges that together cover `0..n` once, spread over [`threads`] (inline when
/// called from inside another loop).
pub fn par_ranges(n: usize, f: impl Fn(Range<usize>) + Sync) {
    par_ranges_with(n, || (), |_, r| f(r));
}

/// As [`par_ranges`], `f` also given a state (scratch memory) that `init` makes once per
/// thread that takes part, on its first range.
///
/// The threads take ranges of `n / (8 threads)` from a shared counter, so a thread slowed
/// down by another process leaves its share to the others. Kernels are candle custom ops, run
/// on the thread that calls the op, never on one of candle's workers (where a loop would wait
/// for itself).
pub fn par_ranges_with<S>(
    n: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, Range<usize>) + Sync,
) {
    if n == 0 {
        return;
    }
    let threads = threads();
    if n == 1 || threads == 1 || INSIDE.with(Cell::get) {
        return f(&mut init(), 0..n);
    }
    let (next, step) = (AtomicUsize::new(0), n.div_ceil(8 * threads));
    barrier_pool().execute(|_| {
        let _inside = Inside::enter();
        let mut state = None;
        loop {
            let lo = next.fetch_add(step, Ordering::Relaxed);
            if lo >= n {
                break;
            }
            f(state.get_or_insert_with(&init), lo..(lo + step).min(n));
        }
    });
}

/// Marks this thread as inside a loop until dropped (also when `f` panics).
struct Inside(bool);

impl Inside {
    fn enter() -> Self {
        Inside(INSIDE.with(|i| i.replace(true)))
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        INSIDE.with(|i| i.set(self.0));
    }
}

/// `f(&mut state, i, chunk)` for the `i`-th `len`-long chunk of `data` (the last may be
/// shorter), in parallel; `init` makes a state (scratch memory) per thread that takes part.
pub fn par_chunks_mut_with<T: Send, S>(
    data: &mut [T],
    len: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync,
) {
    let (total, len) = (data.len(), len.max(1));
    let base = SendPtr(data.as_mut_ptr());
    par_ranges_with(total.div_ceil(len), init, |state, r| {
        for i in r {
            let (lo, hi) = (i * len, ((i + 1) * len).min(total));
            // SAFETY: chunks `lo..hi` of distinct `i` are disjoint parts of `data`, which is
            // borrowed mutably for the whole loop.
            let chunk = unsafe { std::slice::from_raw_parts_mut(base.get().add(lo), hi - lo) };
            f(state, i, chunk);
        }
    });
}

/// `f(i, chunk)` for the `i`-th `len`-long chunk of `data`, in parallel.
pub fn par_chunks_mut<T: Send>(data: &mut [T], len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    par_chunks_mut_with(data, len, || (), |_, i, c| f(i, c));
}

/// `[f(0), .., f(n - 1)]`, computed in parallel.
pub fn par_map<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let mut out: Vec<MaybeUninit<R>> = Vec::with_capacity(n);
    // SAFETY: `MaybeUninit` needs no initialisation.
    unsafe { out.set_len(n) };
    par_chunks_mut(&mut out, 1, |i, o| {
        o[0].write(f(i));
    });
    // SAFETY: every element was written above (a panic in `f` propagates before this, leaking
    // the written elements, which is safe).
    out.into_iter()
        .map(|v| unsafe { v.assume_init() })
        .collect()
}

/// A pointer shared by the chunks of a parallel loop, which touch disjoint parts of it.
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
// Copied whatever `T` is (a derive would ask `T: Copy`).
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: only used by parallel loops whose chunks touch disjoint elements.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the `Send` wrapper, not its field).
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_map_returns_results_in_index_order() {
        for n in [0, 1, 2, 7, 1000] {
            assert_eq!(
                par_map(n, |i| i * i),
                (0..n).map(|i| i * i).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn par_chunks_mut_visits_every_chunk_once_with_its_index() {
        for (total, len) in [(0, 3), (1, 3), (10, 3), (12, 3), (1000, 7), (5, 0)] {
            let mut data = vec![usize::MAX; total];
            let calls = AtomicUsize::new(0);
            par_chunks_mut(&mut data, len, |i, c| {
                calls.fetch_add(1, Ordering::Relaxed);
                assert!(c.len() <= len.max(1));
                c.iter_mut().for_each(|v| *v = i);
            });
            let expected: Vec<usize> = (0..total).map(|j| j / len.max(1)).collect();
            assert_eq!(data, expected);
            assert_eq!(calls.into_inner(), total.div_ceil(len.max(1)));
        }
    }

    #[test]
    fn nested_loops_run_inline_and_cover_every_index() {
        let hits: Vec<AtomicUsize> = (0..64 * 64).map(|_| AtomicUsize::new(0)).collect();
        par_ranges(64, |outer| {
            for i in outer {
                par_ranges(64, |inner| {
                    for j in inner {
                        hits[i * 64 + j].fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn state_is_made_at_most_once_per_thread() {
        let inits = AtomicUsize::new(0);
        let mut data = vec![0usize; 1000];
        par_chunks_mut_with(
            &mut data,
            3,
            || {
                inits.fetch_add(1, Ordering::Relaxed);
                0usize
            },
            |seen, i, c| {
                *seen += 1;
                c.iter_mut().for_each(|v| *v = i);
            },
        );
        assert!((1..=threads()).contains(&inits.into_inner()));
        assert!(data.iter().enumerate().all(|(j, &v)| v == j / 3));
    }
}
