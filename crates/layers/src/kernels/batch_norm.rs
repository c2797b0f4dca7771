//! Batch norm in training mode on the `[N, C, S]` view. Per channel: the statistics in f64
//! (in one pass over `[N, C, S]`, shifted by the channel's first value; over `[N, C]` the mean,
//! then the squared deviations), then `y = x · k + t` with the channel's scale
//! `k = w / σ` and shift `t = b - mean · k`, then a ReLU if asked. The backward op gives all
//! three gradients: `dx = w / σ · (g - mean(g) - x̂ · mean(g · x̂))`, `dw = Σ g · x̂`,
//! `db = Σ g`, where `g` is the output gradient, zeroed where the ReLU cut (read off
//! `x · k + t` again, so the output need not be kept).
//!
//! Both ops take one channel at a time (a task each), from its sums to its output: the
//! channel's values (400 KB for ResNet-20's 16-channel layers at batch 128) are still in the
//! core's cache when it writes the channel's output.

use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::{by_dtype, output, par_chunks_mut, par_map, saved, slice, Float, SendPtr};

/// `[N, C, S]`.
type Dims = (usize, usize, usize);

/// One channel's statistics as the forward op computed them, with the `1/σ` and the scale
/// `k` and shift `t` they gave (values of `T`, widened to f64 exactly), which the backward op
/// reuses.
#[derive(Debug, Clone)]
struct Channel {
    mean: f64,
    var: f64,
    inv_std: f64,
    scale_shift: [f64; 2],
}

impl Channel {
    /// `[k, t]` in `T`, as the forward op applied them.
    fn scale_shift<T: Float>(&self) -> [T; 2] {
        self.scale_shift.map(T::from_f64)
    }
}

/// Channel `ch`'s rows of `[N, C, S]`, as ranges of the flat data.
fn rows((n, c, s): Dims, ch: usize) -> impl Iterator<Item = Range<usize>> {
    (0..n).map(move |i| (i * c + ch) * s..(i * c + ch + 1) * s)
}

/// Per channel of `[N, C]` data, two sums over its column in f64, in an order fixed by the
/// shape: each thread takes a block of [`COLUMNS`] channels row by row, along the contiguous
/// channels, `add(i, cols, s0, s1)` adding row `i`'s values of channels `cols` to their sums.
/// The channels' constants are arrays the loops in `add` walk with the values (one closure per
/// channel, as the `[N, C, S]` path has, kept the loops scalar).
fn column_sums(
    (n, c): (usize, usize),
    add: impl Fn(usize, Range<usize>, &mut [f64], &mut [f64]) + Sync,
) -> Vec<[f64; 2]> {
    par_map(c.div_ceil(COLUMNS), |block| {
        let cols = block * COLUMNS..((block + 1) * COLUMNS).min(c);
        let (mut s0, mut s1) = (vec![0.0f64; cols.len()], vec![0.0f64; cols.len()]);
        for i in 0..n {
            add(i, cols.clone(), &mut s0, &mut s1);
        }
        s0.into_iter()
            .zip(s1)
            .map(|(p, q)| [p, q])
            .collect::<Vec<_>>()
    })
    .concat()
}

/// Columns per task of [`column_sums`]: the sums stay in the L1 cache.
const COLUMNS: usize = 512;

/// Writes `out: [N, C]` a row at a time: `f(i, row)` writes row `i`.
fn map_rows<T: Float>(
    out: &mut [MaybeUninit<T>],
    c: usize,
    f: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) {
    par_chunks_mut(out, c, f);
}

/// One of a channel's constants, per channel, in `T`.
fn per_channel_values<T: Float>(per: &[Channel], f: impl Fn(&Channel) -> f64) -> Vec<T> {
    per.iter().map(|ch| T::from_f64(f(ch))).collect()
}

/// For each channel of `[N, C, S]` (S > 1), one task: `f(ch, out)` may write the channel's
/// rows of `out` and returns the channel's result.
fn per_channel<T: Float, R: Send>(
    out: &mut [MaybeUninit<T>],
    dims: Dims,
    f: impl Fn(usize, ChannelOut<T>) -> R + Sync,
) -> Vec<R> {
    let base = SendPtr(out.as_mut_ptr());
    par_map(dims.1, |ch| f(ch, ChannelOut { base, dims, ch }))
}

/// One channel's rows of an output; only the task of that channel gets one.
struct ChannelOut<T> {
    base: SendPtr<MaybeUninit<T>>,
    dims: Dims,
    ch: usize,
}

impl<T> ChannelOut<T> {
    /// `f(r, row)` for each of the channel's rows: its range in the flat data, and the row.
    fn each(self, mut f: impl FnMut(Range<usize>, &mut [MaybeUninit<T>])) {
        for r in rows(self.dims, self.ch) {
            // SAFETY: channel `ch`'s rows are inside the output, which `per_channel` borrows
            // mutably for the whole loop, and disjoint from every other channel's.
            let row =
                unsafe { std::slice::from_raw_parts_mut(self.base.get().add(r.start), r.len()) };
            f(r, row);
        }
    }
}

/// `row[i] = f(a[i], b[i])`. `f` comes by value: captured by reference, its constants were
/// reloaded after every store, and the loop ran scalar.
fn map_row<T: Float>(row: &mut [MaybeUninit<T>], (a, b): (&[T], &[T]), f: impl Fn(T, T) -> T) {
    for ((o, &a), &b) in row.iter_mut().zip(a).zip(b) {
        o.write(f(a, b));
    }
}

/// Independent partial sums: enough to break the chain of dependent additions, so the
/// reductions vectorize (a single f64 accumulator made them a fifth of a ResNet-20 step).
const LANES: usize = 8;

/// Adds `f(a[i], b[i])`, two terms at once, to [`LANES`] partial sums each, in f64 (a fixed
/// order). A channel's rows go into the same partial sums, added up once ([`total`]): M5's
/// rows are 49 values long, and a sum per row cost as much as its terms.
fn add_lanes<T: Float>(
    acc: &mut [[f64; LANES]; 2],
    a: &[T],
    b: &[T],
    f: impl Fn(T, T) -> [f64; 2],
) {
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for l in 0..LANES {
            let [p, q] = f(xa[l], xb[l]);
            acc[0][l] += p;
            acc[1][l] += q;
        }
    }
    for (l, (&xa, &xb)) in ra.iter().zip(rb).enumerate() {
        let [p, q] = f(xa, xb);
        acc[0][l] += p;
        acc[1][l] += q;
    }
}

/// The two sums of [`add_lanes`]' partial sums.
fn total(acc: [[f64; LANES]; 2]) -> [f64; 2] {
    acc.map(|lanes| lanes.iter().sum())
}

/// `y = x · k + t`, then the ReLU's floor (zero, or none).
fn normalize<T: Float>(k: T, t: T, floor: T) -> impl Fn(T, T) -> T + Copy {
    move |x, _| {
        let v = x * k + t;
        if v < floor {
            floor
        } else {
            v
        }
    }
}

/// The output gradient `g` at input `v` times the ReLU's slope (1 where `v · k + t > 0`, else
/// 0, as ReLU's own backward pass gives it); `g` itself without a ReLU.
fn relu_gate<T: Float>(relu: bool, k: T, t: T) -> impl Fn(T, T) -> T + Copy {
    move |g, v| {
        if !relu || v * k + t > T::ZERO {
            g
        } else {
            g * T::ZERO
        }
    }
}

/// The normalisation in training mode, inputs `(x [N, C, S], w [C], b [C])`, optionally
/// followed by a ReLU (one stored activation fewer per layer, and one pass less). It keeps
/// the batch's statistics for the backward op and for the caller.
#[derive(Debug)]
struct BatchNormTrain {
    eps: f64,
    relu: bool,
    stats: Arc<OnceLock<Vec<Channel>>>,
}

impl BatchNormTrain {
    fn dims(l: &Layout, c: usize) -> Result<Dims> {
        match *l.dims() {
            [n, ch, s] if ch == c => Ok((n, ch, s)),
            ref d => candle_core::bail!("forja-batch-norm: expected [N, {c}, S], got {d:?}"),
        }
    }

    /// `y` and the statistics it was normalised with.
    fn forward<T: Float>(&self, x: &[T], w: &[T], b: &[T], dims: Dims) -> (Vec<T>, Vec<Channel>) {
        let (n, c, s) = dims;
        let count = (n * s) as f64;
        // A local, so the inner loops need not reload it after every store.
        let floor = if self.relu { T::ZERO } else { T::NEG_INFINITY };
        // The channel's 1/σ, scale and shift from its mean and variance.
        let affine = |ch: usize, mean: f64, var: f64| {
            let inv_std = 1.0 / (var + self.eps).sqrt();
            let k = T::from_f64(inv_std) * w[ch];
            let t = b[ch] - T::from_f64(mean) * k;
            Channel {
                mean,
                var,
                inv_std,
                scale_shift: [k, t].map(T::to_f64),
            }
        };
        let normalizer = |channel: &Channel| {
            let [k, t] = channel.scale_shift();
            normalize(k, t, floor)
        };
        let mut per = Vec::new();
        let write = |y: &mut [MaybeUninit<T>]| {
            if s == 1 {
                let mean: Vec<f64> = column_sums((n, c), |i, cols, s0, _| {
                    s0.iter_mut()
                        .zip(&x[i * c..][cols])
                        .for_each(|(s, &v)| *s += v.to_f64());
                })
                .iter()
                .map(|[s, _]| s / count)
                .collect();
                let var = column_sums((n, c), |i, cols, s0, _| {
                    let (x, mean) = (&x[i * c..][cols.clone()], &mean[cols]);
                    for ((s, &v), &m) in s0.iter_mut().zip(x).zip(mean) {
                        let d = v.to_f64() - m;
                        *s += d * d;
                    }
                });
                per = (0..c)
                    .map(|ch| affine(ch, mean[ch], var[ch][0] / count))
                    .collect();
                let k: Vec<T> = per_channel_values(&per, |ch| ch.scale_shift[0]);
                let t: Vec<T> = per_channel_values(&per, |ch| ch.scale_shift[1]);
                map_rows(y, c, |i, row| {
                    let x = &x[i * c..][..c];
                    for ((o, &v), (&k, &t)) in row.iter_mut().zip(x).zip(k.iter().zip(&t)) {
                        o.write(normalize(k, t, floor)(v, v));
                    }
                });
                return;
            }
            per = per_channel(y, dims, |ch, out| {
                // One pass: the sums of `d = x - x₀` and `d²`, shifted by the channel's first
                // value so that the variance `E[d²] - E[d]²` does not cancel away.
                let shift = x[ch * s].to_f64();
                let mut acc = [[0.0; LANES]; 2];
                for r in rows(dims, ch) {
                    add_lanes(&mut acc, &x[r.clone()], &x[r], |v, _| {
                        let d = v.to_f64() - shift;
                        [d, d * d]
                    });
                }
                let [sd, sdd] = total(acc);
                let md = sd / count;
                let channel = affine(ch, shift + md, (sdd / count - md * md).max(0.0));
                let f = normalizer(&channel);
                out.each(|r, row| map_row(row, (&x[r.clone()], &x[r]), f));
                channel
            });
        };
        // SAFETY: `map_rows` writes every element of `y`, as does `per_channel` (every
        // channel's every row).
        let y = unsafe { output(x.len(), write) };
        (y, per)
    }
}

/// The backward op of [`BatchNormTrain`], with its statistics: `(x, dy, w) -> [dx, dw, db]`
/// flat. It has no gradient of its own (with `CANDLE_GRAD_DO_NOT_DETACH`, a second derivative
/// through batch norm fails with candle's "backward not supported" error rather than coming
/// out wrong).
struct BatchNormBackward {
    channels: Vec<Channel>,
    relu: bool,
}

impl BatchNormBackward {
    fn backward<T: Float>(&self, x: &[T], dy: &[T], w: &[T], dims: Dims) -> Vec<T> {
        let (n, c, s) = dims;
        let count = (n * s) as f64;
        let (st, relu) = (&self.channels, self.relu);
        let gate = |ch: usize| {
            let [k, t] = st[ch].scale_shift();
            relu_gate(relu, k, t)
        };
        // Per channel, in f64: `Σ g` and `Σ g · x̂`.
        let terms = |ch: usize| {
            let (m, inv) = (st[ch].mean, st[ch].inv_std);
            move |g: T, v: T| {
                let g = g.to_f64();
                [g, g * (v.to_f64() - m) * inv]
            }
        };
        // dx = k (g - mg - (x - mean) inv mgx) as one multiply-add chain in T per element,
        // its coefficients per channel in f64.
        let coefficients = |ch: usize, [sg, sgx]: [f64; 2]| {
            let (mg, mgx, inv) = (sg / count, sgx / count, st[ch].inv_std);
            let k = w[ch].to_f64() * inv;
            [k, -k * inv * mgx, -k * mg, st[ch].mean].map(T::from_f64)
        };
        let dx = |ch: usize, sum: [f64; 2]| {
            let ([a, b, c0, m], gate) = (coefficients(ch, sum), gate(ch));
            move |g: T, v: T| a * gate(g, v) + b * (v - m) + c0
        };
        let mut sums = Vec::new();
        let write = |out: &mut [MaybeUninit<T>]| {
            let (dxs, dwb) = out.split_at_mut(x.len());
            if s == 1 {
                let (k, t): (Vec<T>, Vec<T>) = (
                    per_channel_values(st, |ch| ch.scale_shift[0]),
                    per_channel_values(st, |ch| ch.scale_shift[1]),
                );
                let mean: Vec<f64> = st.iter().map(|ch| ch.mean).collect();
                // The gated gradient of a row in `T`, before the sums in f64 (as in
                // the `[N, C, S]` path).
                let gated = |i: usize, cols: Range<usize>, out: &mut [T]| {
                    let (dy, x) = (&dy[i * c..][cols.clone()], &x[i * c..][cols.clone()]);
                    let (k, t) = (&k[cols.clone()], &t[cols]);
                    for ((o, (&g, &v)), (&k, &t)) in
                        out.iter_mut().zip(dy.iter().zip(x)).zip(k.iter().zip(t))
                    {
                        *o = relu_gate(relu, k, t)(g, v);
                    }
                };
                sums = column_sums((n, c), |i, cols, s0, s1| {
                    let mut g = [T::ZERO; COLUMNS];
                    let g = &mut g[..cols.len()];
                    gated(i, cols.clone(), g);
                    let (x, mean) = (&x[i * c..][cols.clone()], &mean[cols]);
                    let sums = s0.iter_mut().zip(s1.iter_mut());
                    for ((s, &g), (&v, &m)) in sums.zip(&*g).zip(x.iter().zip(mean)) {
                        let g = g.to_f64();
                        *s.0 += g;
                        *s.1 += g * (v.to_f64() - m);
                    }
                })
                .into_iter()
                .zip(st)
                .map(|([sg, sgd], ch)| [sg, sgd * ch.inv_std])
                .collect();
                let per: Vec<[T; 4]> = (0..c).map(|ch| coefficients(ch, sums[ch])).collect();
                let [a, b, c0, m] =
                    [0, 1, 2, 3].map(|j| per.iter().map(|p| p[j]).collect::<Vec<T>>());
                map_rows(dxs, c, |i, row| {
                    let mut g = [T::ZERO; COLUMNS];
                    for (block, row) in row.chunks_mut(COLUMNS).enumerate() {
                        let cols = block * COLUMNS..block * COLUMNS + row.len();
                        let g = &mut g[..row.len()];
                        gated(i, cols.clone(), g);
                        let x = &x[i * c..][cols.clone()];
                        let (a, b, c0, m) = (
                            &a[cols.clone()],
                            &b[cols.clone()],
                            &c0[cols.clone()],
                            &m[cols],
                        );
                        let values = row.iter_mut().zip(&*g).zip(x);
                        let coefficients = a.iter().zip(b).zip(c0.iter().zip(m));
                        for (((o, &g), &v), ((&a, &b), (&c0, &m))) in values.zip(coefficients) {
                            o.write(a * g + b * (v - m) + c0);
                        }
                    }
                });
            } else {
                sums = per_channel(dxs, dims, |ch, out| {
                    let (f, gate) = (terms(ch), gate(ch));
                    // The gated gradient of a row, made in `T` before the sums in f64 (a
                    // comparison in `T` among the sums' f64 arithmetic kept them from being
                    // vectorized).
                    let mut gated = vec![T::ZERO; if relu { s } else { 0 }];
                    let mut acc = [[0.0; LANES]; 2];
                    for r in rows(dims, ch) {
                        let g = if relu {
                            // `gate` copied in, as `map_row` takes its `f`.
                            let (dy, x, gate) = (&dy[r.clone()], &x[r.clone()], gate);
                            for ((o, &g), &v) in gated.iter_mut().zip(dy).zip(x) {
                                *o = gate(g, v);
                            }
                            &gated[..]
                        } else {
                            &dy[r.clone()]
                        };
                        add_lanes(&mut acc, g, &x[r], f);
                    }
                    let sum = total(acc);
                    let f = dx(ch, sum);
                    out.each(|r, row| map_row(row, (&dy[r.clone()], &x[r]), f));
                    sum
                });
            }
            for ch in 0..c {
                dwb[ch].write(T::from_f64(sums[ch][1]));
                dwb[c + ch].write(T::from_f64(sums[ch][0]));
            }
        };
        // SAFETY: `map_rows` or `per_channel` writes all of `dx`, the loop both halves of
        // `dwb`.
        unsafe { output(x.len() + 2 * c, write) }
    }
}

fn forward<T: Float>(
    op: &BatchNormTrain,
    args: [(&CpuStorage, &Layout); 3],
) -> Result<(CpuStorage, Shape)> {
    let name = "forja-batch-norm";
    let c = args[1].1.shape().elem_count();
    let dims = BatchNormTrain::dims(args[0].1, c)?;
    if args[2].1.shape().elem_count() != c {
        candle_core::bail!("{name}: {c} scales but {:?} shifts", args[2].1.dims());
    }
    let [x, w, b] = args.map(|(s, l)| slice::<T>(s, l, name));
    let (y, stats) = op.forward(x?, w?, b?, dims);
    if op.stats.set(stats).is_err() {
        candle_core::bail!("{name}: one op applied twice");
    }
    Ok((T::to_cpu_storage_owned(y), args[0].1.shape().clone()))
}

fn backward<T: Float>(
    op: &BatchNormBackward,
    args: [(&CpuStorage, &Layout); 3],
) -> Result<(CpuStorage, Shape)> {
    let name = "forja-batch-norm-bwd";
    let dims = BatchNormTrain::dims(args[0].1, op.channels.len())?;
    let [x, dy, w] = args.map(|(s, l)| slice::<T>(s, l, name));
    let out = op.backward(x?, dy?, w?, dims);
    let len = out.len();
    Ok((T::to_cpu_storage_owned(out), Shape::from(len)))
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "forja-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_dtype!(
            self.name(),
            s1,
            forward(self, [(s1, l1), (s2, l2), (s3, l3)])
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(channels) = self.stats.get() else {
            candle_core::bail!("forja-batch-norm: backward pass before the forward pass")
        };
        let op = BatchNormBackward {
            channels: channels.clone(),
            relu: self.relu,
        };
        let (x, w) = (saved(x), saved(w));
        let all = x.apply_op3(&g.contiguous()?, &w, op)?;
        let (len, c) = (x.elem_count(), w.elem_count());
        // dw and db are copied out of the buffer: as views of it they would keep dx alive in
        // the gradient store until the step ends.
        Ok((
            Some(all.narrow(0, 0, len)?.reshape(x.shape())?),
            Some(all.narrow(0, len, c)?.force_contiguous()?),
            Some(all.narrow(0, len + c, c)?.force_contiguous()?),
        ))
    }
}

impl CustomOp3 for BatchNormBackward {
    fn name(&self) -> &'static str {
        "forja-batch-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            candle_core::bail!(
                "{}: gradient {:?} for input {:?}",
                self.name(),
                l2.dims(),
                l1.dims()
            );
        }
        by_dtype!(
            self.name(),
            s1,
            backward(self, [(s1, l1), (s2, l2), (s3, l3)])
        )
    }
}

/// Training-mode batch norm of `x: [N, C, S]` with scale `w` and shift `b` (`[C]` each), then
/// a ReLU if `relu`: the output, and the batch's per-channel mean and (biased) variance.
pub(crate) fn batch_norm_train(
    x: &Tensor,
    eps: f64,
    (w, b): (&Tensor, &Tensor),
    relu: bool,
) -> Result<(Tensor, Vec<f64>, Vec<f64>)> {
    let stats = Arc::new(OnceLock::new());
    let op = BatchNormTrain {
        eps,
        relu,
        stats: stats.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, op)?;
    let Some(channels) = stats.get() else {
        candle_core::bail!("forja-batch-norm: the op left no statistics")
    };
    let (mean, var) = channels.iter().map(|c| (c.mean, c.var)).unzip();
    Ok((y, mean, var))
}
