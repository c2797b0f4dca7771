//! forja's own CPU kernels for the hot operations of training: convolution (forward and both
//! backward passes, which are also the transposed convolution), its per-channel bias, max
//! pooling, batch norm, (leaky) ReLU, `relu(a + b)`, the fully connected layer and binary
//! cross-entropy with logits.
//!
//! candle 0.11's CPU convolution backward runs on one core and its transposed convolution is a
//! direct loop; these kernels gather columns per sample (im2col), multiply with the `gemm`
//! crate (3x3 convolutions at stride 1 and the forward and input gradient of 4x4 ones at
//! stride 2 go by Winograd's transforms instead, `winograd`) and
//! spread the batch over candle's CPU threads ([`threads()`]). Each is a candle custom
//! op whose backward pass is again a custom op, so the layers stay differentiable (the three
//! convolution ops are each other's gradients, to any order).
//!
//! The layers choose them automatically for f32/f64 tensors on the CPU; on other devices they
//! use candle's ops. `FORJA_KERNELS=off` (or [`set_enabled`]) switches them off, to compare.

mod batch_norm;
mod bce;
mod bias;
mod conv;
mod dot;
mod linear;
mod math;
mod pool;
mod rectify;
mod tanh;
#[cfg(test)]
mod tests;
mod threads;
mod winograd;

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::{bail, CpuStorage, DType, Layout, Tensor};

pub(crate) use batch_norm::batch_norm_train;
pub(crate) use bce::bce_with_logits;
pub(crate) use bias::bias_add;
#[cfg(test)]
use conv::conv2d_weight_grad;
pub(crate) use conv::{conv2d, conv_transpose2d, ConvShape};
pub(crate) use linear::linear;
pub(crate) use pool::max_pool2d;
pub(crate) use rectify::{add_relu, leaky_relu};
pub(crate) use tanh::tanh;
pub use threads::{par_chunks_mut, par_chunks_mut_with, par_map, threads};
use threads::{par_ranges, SendPtr};

/// The environment variable that switches the kernels off (`off`, `0` or `false`).
pub const ENV: &str = "FORJA_KERNELS";

/// 0: not read yet, 1: on, 2: off.
static STATE: AtomicU8 = AtomicU8::new(0);

/// Whether the layers use forja's CPU kernels (default: yes, unless `FORJA_KERNELS=off`).
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let off = std::env::var(ENV)
                .map(|v| matches!(v.to_ascii_lowercase().as_str(), "off" | "0" | "false"))
                .unwrap_or(false);
            STATE.store(if off { 2 } else { 1 }, Ordering::Relaxed);
            !off
        }
        s => s == 1,
    }
}

/// Switches the kernels on or off for the whole process (tests compare both paths).
pub fn set_enabled(on: bool) {
    STATE.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// Whether the kernels handle these tensors: enabled, and [`cpu_float`].
pub(crate) fn applies(ts: &[&Tensor]) -> bool {
    enabled() && cpu_float(ts)
}

/// Whether the tensors are all on the CPU and all f32 or all f64: what CPU kernels run on,
/// here and in forja-train's fused optimizer updates.
pub fn cpu_float(ts: &[&Tensor]) -> bool {
    let dtype = ts[0].dtype();
    matches!(dtype, DType::F32 | DType::F64)
        && ts.iter().all(|t| t.device().is_cpu() && t.dtype() == dtype)
}

/// Whether a kernel takes its explicit AVX-512 code (Winograd's transforms, 2x2 pooling): for
/// f32 on a CPU with AVX-512F.
fn fast<T: Float>() -> bool {
    #[cfg(target_arch = "x86_64")]
    return T::DTYPE == DType::F32 && std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// The element types the kernels run on.
pub(crate) trait Float: candle_core::WithDType {
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    const NAN: Self;
    fn is_nan(self) -> bool;
    /// The value's bits (widened to 64).
    fn bits(self) -> u64;
    /// `s` as f32s, where `Self` is f32 (for kernels written for f32 only).
    fn f32s(s: &[Self]) -> Option<&[f32]>;
}

macro_rules! float {
    ($t:ty, $f32s:expr) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            const NAN: Self = <$t>::NAN;
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn bits(self) -> u64 {
                <$t>::to_bits(self).into()
            }
            fn f32s(s: &[Self]) -> Option<&[f32]> {
                $f32s(s)
            }
        }
    };
}
float!(f32, Some);
float!(f64, |_| None);

/// The contiguous data of a custom op's argument.
fn slice<'a, T: Float>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: expects contiguous inputs"),
    }
}

/// Calls `$run::<T>(args)` for the dtype of storage `$s` (f32 or f64).
macro_rules! by_dtype {
    ($op:expr, $s:expr, $run:ident($($arg:expr),*)) => {{
        let run = match candle_core::backend::BackendStorage::dtype($s) {
            candle_core::DType::F32 => $run::<f32>,
            candle_core::DType::F64 => $run::<f64>,
            dt => candle_core::bail!("{}: f32 or f64 only, got {dt:?}", $op),
        };
        run($($arg),*)
    }};
}
pub(crate) use by_dtype;

/// A matrix operand: its data and (row stride, column stride).
type Operand<'a, T> = (&'a [T], (usize, usize));

/// A product's destination: initialised elements, or uninitialised ones (a fresh output)
/// that the product overwrites without reading them.
trait Dst<T> {
    /// Whether the elements are initialised (a product may then add to them).
    const INIT: bool;
    fn len(&self) -> usize;
    fn ptr(&mut self) -> *mut T;
}

impl<T> Dst<T> for [T] {
    const INIT: bool = true;
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    fn ptr(&mut self) -> *mut T {
        self.as_mut_ptr()
    }
}

impl<T> Dst<T> for [MaybeUninit<T>] {
    const INIT: bool = false;
    fn len(&self) -> usize {
        <[MaybeUninit<T>]>::len(self)
    }
    fn ptr(&mut self) -> *mut T {
        self.as_mut_ptr().cast()
    }
}

/// A kernel's output of `len` elements, allocated without the zero fill of `vec![0; len]`
/// (which glibc's `calloc` does with `memset` on reused memory: 5-7% of a convolutional
/// training step), for kernels that write every element anyway.
///
/// # Safety
/// `write` must write every element of the slice it is given.
unsafe fn output<T: Float>(len: usize, write: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    let out = &mut v.spare_capacity_mut()[..len];
    // Poisoned in tests, so that an element a kernel leaves unwritten shows as NaN.
    #[cfg(test)]
    out.iter_mut().for_each(|v| {
        v.write(T::NAN);
    });
    write(out);
    // SAFETY: the first `len` elements were written (the caller's contract).
    unsafe { v.set_len(len) };
    v
}

/// The sum of `part(start, end)` (each `len` long) over a fixed split of the batch `0..n`, one
/// range per thread, added in order: the result does not depend on scheduling (runs resume
/// bitwise). The weight gradients sum over the batch this way.
fn sum_over_batch<T: Float>(
    n: usize,
    len: usize,
    part: impl Fn((usize, usize)) -> Vec<T> + Sync,
) -> Vec<T> {
    let per_part = n.div_ceil(threads().clamp(1, n.max(1))).max(1);
    let parts = par_map(n.div_ceil(per_part), |i| {
        part((i * per_part, ((i + 1) * per_part).min(n)))
    });
    let mut parts = parts.into_iter();
    let mut sum = parts.next().unwrap_or_else(|| vec![T::ZERO; len]);
    for p in parts {
        sum.iter_mut().zip(&p).for_each(|(a, &b)| *a += b);
    }
    sum
}

/// A zeroed buffer that starts on a cache line, so that rows of a multiple of 64 bytes stay
/// on cache-line boundaries: a vector load across two lines costs two (the dot products of
/// [`dot`] ran at 85-90 GFLOP/s on one core from unaligned rows, 115-135 from aligned ones).
struct Aligned<T> {
    buf: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Float> Aligned<T> {
    fn zeroed(len: usize) -> Self {
        let pad = CACHE_LINE / std::mem::size_of::<T>();
        let buf = vec![T::ZERO; len + pad];
        let start = buf.as_ptr().align_offset(CACHE_LINE).min(pad);
        Self { buf, start, len }
    }
}

impl<T> std::ops::Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl<T> std::ops::DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// Bytes per cache line (and per AVX-512 register).
const CACHE_LINE: usize = 64;

/// `s` zeroed, as initialised data: a sum's destination zeroed by the thread that then sums
/// into it, while it is in that core's cache (rather than by `calloc` on the calling thread).
fn zeroed<T: Float>(s: &mut [MaybeUninit<T>]) -> &mut [T] {
    s.iter_mut().for_each(|v| {
        v.write(T::ZERO);
    });
    // SAFETY: every element was just written.
    unsafe { assume_init(s) }
}

/// Copies `from` into `to` (of the same length), initialising it (`write_copy_of_slice` is
/// newer than the crate's minimum Rust version).
fn write_copy<T: Copy>(to: &mut [MaybeUninit<T>], from: &[T]) {
    assert_eq!(to.len(), from.len(), "write_copy: lengths differ");
    to.iter_mut().zip(from).for_each(|(t, &f)| {
        t.write(f);
    });
}

/// `s` as the initialised data it holds.
///
/// # Safety
/// Every element of `s` must have been written.
unsafe fn assume_init<T>(s: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout; the elements are initialised (the caller's
    // contract).
    unsafe { &mut *(s as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// `dst[m, n] (+)= a[m, k] · b[k, n]` on one thread, `dst` with row stride `dst_rs`.
/// `accumulate` adds to `dst` instead of overwriting it (initialised destinations only).
#[allow(clippy::too_many_arguments)]
fn matmul<T: Float, D: Dst<T> + ?Sized>(
    (m, n, k): (usize, usize, usize),
    dst: &mut D,
    dst_rs: usize,
    a: &[T],
    a_strides: (usize, usize),
    b: &[T],
    b_strides: (usize, usize),
    accumulate: bool,
) {
    assert!(D::INIT || !accumulate, "matmul: adds to uninitialised data");
    check_extents(
        (m, n, k),
        dst.len(),
        (dst_rs, 1),
        (a, a_strides),
        (b, b_strides),
    );
    // SAFETY: the extents are checked above, and `dst` is borrowed mutably, so it aliases
    // neither input; without `accumulate` the product does not read it.
    unsafe {
        gemm_raw(
            (m, n, k),
            dst.ptr(),
            dst_rs,
            (a.as_ptr(), a_strides),
            (b.as_ptr(), b_strides),
            accumulate,
        )
    }
}

/// As [`matmul`] into a column-major `dst` (element `(i, j)` at `i + j * m`): the layout in
/// which the `gemm` crate takes a transposed `b` at full rate (see [`gemm_raw`]).
fn matmul_col_major<T: Float>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    (a, a_strides): Operand<T>,
    (b, b_strides): Operand<T>,
    accumulate: bool,
) {
    check_extents((m, n, k), dst.len(), (1, m), (a, a_strides), (b, b_strides));
    // SAFETY: as in `matmul`.
    unsafe {
        gemm_strided(
            (m, n, k),
            (dst.as_mut_ptr(), (1, m)),
            (a.as_ptr(), a_strides),
            (b.as_ptr(), b_strides),
            accumulate,
        )
    }
}

/// As [`matmul`], over the kernels' threads ([`threads()`]): `dst`'s columns (or, for narrow
/// products, its rows) are split into one block per thread, each a single-threaded GEMM. The
/// `gemm` crate's own threading reaches 110-140 GFLOP/s on two cores for a linear layer's
/// products here; these blocks 150-190 (a single core: 75-140). Every element is summed in the
/// same order however the work is split.
fn par_matmul<T: Float, D: Dst<T> + ?Sized>(
    (m, n, k): (usize, usize, usize),
    dst: &mut D,
    dst_rs: usize,
    (a, (a_rs, a_cs)): Operand<T>,
    (b, (b_rs, b_cs)): Operand<T>,
    accumulate: bool,
) {
    assert!(
        D::INIT || !accumulate,
        "par_matmul: adds to uninitialised data"
    );
    check_extents(
        (m, n, k),
        dst.len(),
        (dst_rs, 1),
        (a, (a_rs, a_cs)),
        (b, (b_rs, b_cs)),
    );
    if m == 0 || n == 0 {
        return;
    }
    let threads = threads();
    // Blocks of whole vectors of the widest registers (16 f32), rows in steps of 8.
    let (by_cols, unit) = if n >= 32 * threads {
        (true, 16)
    } else {
        (false, 8)
    };
    let len = if by_cols { n } else { m };
    let parts = if threads > 1 && m * n * k >= 1 << 18 {
        threads.min(len.div_ceil(unit))
    } else {
        1
    };
    let block = len.div_ceil(parts).next_multiple_of(unit);
    let (dst, a, b) = (
        SendPtr(dst.ptr()),
        SendPtr(a.as_ptr().cast_mut()),
        SendPtr(b.as_ptr().cast_mut()),
    );
    par_ranges(len.div_ceil(block), |r| {
        for i in r {
            let (lo, hi) = (i * block, ((i + 1) * block).min(len));
            // SAFETY: the extents of the whole product are checked above; each block reads and
            // writes a sub-rectangle of them, and the blocks' parts of `dst` are disjoint.
            unsafe {
                if by_cols {
                    gemm_raw(
                        (m, hi - lo, k),
                        dst.get().add(lo),
                        dst_rs,
                        (a.get(), (a_rs, a_cs)),
                        (b.get().add(lo * b_cs), (b_rs, b_cs)),
                        accumulate,
                    )
                } else {
                    gemm_raw(
                        (hi - lo, n, k),
                        dst.get().add(lo * dst_rs),
                        dst_rs,
                        (a.get().add(lo * a_rs), (a_rs, a_cs)),
                        (b.get(), (b_rs, b_cs)),
                        accumulate,
                    )
                }
            }
        }
    });
}

/// Panics unless every index the strides of an `(m, n, k)` product reach is inside `dst`
/// (`dst_len` elements) and the operands.
fn check_extents<T>(
    (m, n, k): (usize, usize, usize),
    dst_len: usize,
    (dst_rs, dst_cs): (usize, usize),
    (a, (a_rs, a_cs)): Operand<T>,
    (b, (b_rs, b_cs)): Operand<T>,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * dst_rs + (n - 1) * dst_cs < dst_len,
        "matmul: dst too small"
    );
    if k > 0 {
        assert!(
            (m - 1) * a_rs + (k - 1) * a_cs < a.len(),
            "matmul: a too small"
        );
        assert!(
            (k - 1) * b_rs + (n - 1) * b_cs < b.len(),
            "matmul: b too small"
        );
    }
}

/// `dst (+)= a · b` on one thread with the `gemm` crate, `dst` with any strides. Without
/// `accumulate` the crate writes every element of `dst` without reading it.
///
/// # Safety
/// Every index the strides of the `(m, n, k)` product reach must be inside the allocations,
/// and `dst`'s elements must not alias `a`'s or `b`'s.
unsafe fn gemm_strided<T: Float>(
    (m, n, k): (usize, usize, usize),
    (dst, (dst_rs, dst_cs)): (*mut T, (usize, usize)),
    (a, (a_rs, a_cs)): (*const T, (usize, usize)),
    (b, (b_rs, b_cs)): (*const T, (usize, usize)),
    accumulate: bool,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            a,
            a_cs as isize,
            a_rs as isize,
            b,
            b_cs as isize,
            b_rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `dst (+)= a · b` on one thread, `dst` row-major with row stride `dst_rs`.
///
/// With `b` read transposed (a linear layer's `x · Wᵀ`, a convolution's weight gradient
/// `dy · colsᵀ`) into a row-major `dst`, the crate packs `b` one scalar at a time along a
/// stride of `k` elements, and with `k` a power of two those reads conflict in the cache:
/// 18-60 GFLOP/s on one core here instead of 95-110. Written column-major, the same product
/// takes the fast path, so such products go to a column-major scratch block that is then
/// added, transposed, into `dst` (`m · n` more reads and writes against `2 m n k` flops,
/// hence only for `k` of at least [`TRANSPOSED_B_MIN_K`]).
///
/// # Safety
/// As [`gemm_strided`]; without `accumulate`, `dst` may be uninitialised.
unsafe fn gemm_raw<T: Float>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    dst_rs: usize,
    (a, a_strides): (*const T, (usize, usize)),
    (b, (b_rs, b_cs)): (*const T, (usize, usize)),
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let b = (b, (b_rs, b_cs));
    if b_rs == 1 && b_cs > 1 && m > 1 && k >= TRANSPOSED_B_MIN_K {
        // SAFETY: `scratch` holds the `m * n` elements the column-major product writes,
        // all of them (without `accumulate`).
        let scratch = unsafe {
            output(m * n, |s: &mut [MaybeUninit<T>]| {
                gemm_strided((m, n, k), (s.ptr(), (1, m)), (a, a_strides), b, false)
            })
        };
        // SAFETY: `dst`'s `m` rows of `n` are inside its allocation and not aliased (the
        // caller's contract).
        unsafe { add_transposed(&scratch, (m, n), |r| dst.add(r * dst_rs), accumulate) };
    } else {
        // SAFETY: the caller's contract.
        unsafe { gemm_strided((m, n, k), (dst, (dst_rs, 1)), (a, a_strides), b, accumulate) }
    }
}

/// The smallest inner dimension for which [`gemm_raw`] takes the column-major detour (at
/// `k = 49`, the transposition costs more than the faster product saves).
const TRANSPOSED_B_MIN_K: usize = 64;

/// `dst[r][c] (+)= src[c * m + r]` for the `m` rows of `dst` (each `n` long, starting at
/// `row(r)`), in tiles that keep both sides in the L1 cache. Without `accumulate` the rows
/// may be uninitialised.
///
/// # Safety
/// Each `row(r)` must point to `n` writable elements that nothing else reads or writes
/// meanwhile (initialised ones if `accumulate`).
unsafe fn add_transposed<T: Float>(
    src: &[T],
    (m, n): (usize, usize),
    row: impl Fn(usize) -> *mut T,
    accumulate: bool,
) {
    assert!(src.len() >= m * n, "add_transposed: source too small");
    const TILE: usize = 16;
    for r0 in (0..m).step_by(TILE) {
        for c0 in (0..n).step_by(TILE) {
            for r in r0..(r0 + TILE).min(m) {
                let out = row(r);
                let from = src[c0 * m + r..].iter().step_by(m);
                for (c, &s) in (c0..(c0 + TILE).min(n)).zip(from) {
                    // SAFETY: `c < n`, inside row `r` (the caller's contract).
                    unsafe {
                        let d = out.add(c);
                        d.write(if accumulate { d.read() + s } else { s });
                    }
                }
            }
        }
    }
}

/// A forward value as a backward pass reads it: cut from the graph, as candle cuts the
/// incoming gradient, unless `CANDLE_GRAD_DO_NOT_DETACH` keeps gradients differentiable.
///
/// A gradient built on the graph holds what its op read: a weight gradient kept until the
/// step ends would keep its layer's output gradient with it, and every step would peak at all
/// activations plus every layer's gradient (ResNet-20, batch 128: 556 MB instead of 290).
fn saved(t: &Tensor) -> Tensor {
    thread_local! {
        // Read once per thread, as candle reads it.
        static KEEP: bool = std::env::var("CANDLE_GRAD_DO_NOT_DETACH")
            .is_ok_and(|v| !v.is_empty() && v != "0");
    }
    if KEEP.with(|k| *k) {
        t.clone()
    } else {
        t.detach()
    }
}

/// Tensors made contiguous (custom ops read plain slices).
fn contiguous(ts: [&Tensor; 2]) -> candle_core::Result<[Tensor; 2]> {
    Ok([ts[0].contiguous()?, ts[1].contiguous()?])
}
