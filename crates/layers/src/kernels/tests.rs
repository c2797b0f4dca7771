//! Every kernel against candle's own ops, forward and gradients, on random geometries
//! (strides, padding, dilation, groups, odd and non-square sizes). Both paths are called
//! directly, so the tests do not depend on the process-wide switch.

use candle_core::{DType, Device, Module, Tensor, Var};
use proptest::prelude::*;

use super::winograd::stride2;
use super::*;
use crate::window::{conv2d_candle, conv_transpose2d_candle, Axis, ConvGeometry};
use crate::{BatchNorm, BatchNormConfig, PoolConfig};

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Seeded values uniform in [-2, 2) (so proptest cases reproduce).
fn randn(seed: u64, shape: &[usize]) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let data: Vec<f64> = (0..shape.iter().product())
        .map(|_| rng.gen_range(-2.0..2.0))
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    max_abs(&(a - b).unwrap())
}

/// Asserts that the kernels' convolution of `g` gives candle's output and gradients (f64).
fn same_as_candle(g: &Geom, seed: u64) {
    let (shape, x, w) = (g.shape(), g.x(seed), g.w(seed ^ 1));
    let kernel = value_and_grads(&[x.clone(), w.clone()], |t| conv2d(&t[0], &t[1], shape));
    let reference = value_and_grads(&[x, w], |t| {
        Ok(conv2d_candle(&t[0], &t[1], &g.conv(), "test").unwrap())
    });
    assert_same(kernel, reference);
}

/// The first of the three convolution ops (forward, input gradient, weight gradient) whose
/// f32 result differs from the f64 one by 1e-5 of the largest value or more, and by how much.
fn f32_against_f64(g: &Geom, seed: u64) -> Option<(usize, f64)> {
    let shape = g.shape();
    let (x, w) = (g.x(seed), g.w(seed ^ 1));
    let dy = randn(seed ^ 2, &[g.n, shape.o, shape.oh, shape.ow]);
    let passes = |x: &Tensor, w: &Tensor, dy: &Tensor| {
        [
            conv2d(x, w, shape).unwrap(),
            conv_transpose2d(dy, w, shape).unwrap(),
            conv2d_weight_grad(x, dy, shape).unwrap(),
        ]
    };
    let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let got = passes(&f32s(&x), &f32s(&w), &f32s(&dy));
    let want = passes(&x, &w, &dy);
    got.iter()
        .zip(&want)
        .enumerate()
        .find_map(|(i, (got, want))| {
            let d = max_diff(&got.to_dtype(DType::F64).unwrap(), want) / max_abs(want).max(1.0);
            (d >= 1e-5 || d.is_nan()).then_some((i, d))
        })
}

/// The largest magnitude in an f64 tensor, NaN if one is: candle's `max_all` passes over a
/// NaN, and the kernels' outputs are poisoned with NaN in the tests so that an element left
/// unwritten shows.
fn max_abs(t: &Tensor) -> f64 {
    let values = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    values
        .into_iter()
        .map(f64::abs)
        .fold(0.0, |m, v| if v.is_nan() || v > m { v } else { m })
}

/// `f(inputs)` and the gradients of `sum(f(inputs) * r)` for a fixed random `r`.
fn value_and_grads(
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts).unwrap();
    let r = randn(99, y.dims());
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let gs = vars.iter().map(|v| grads.get(v).unwrap().clone()).collect();
    (y.detach(), gs)
}

fn assert_same(kernel: (Tensor, Vec<Tensor>), reference: (Tensor, Vec<Tensor>)) {
    let tol = 1e-10;
    let d = max_diff(&kernel.0, &reference.0);
    assert!(d < tol, "outputs differ by {d}");
    for (i, (a, b)) in kernel.1.iter().zip(&reference.1).enumerate() {
        let d = max_diff(a, b);
        assert!(d < tol, "gradients of input {i} differ by {d}");
    }
}

/// A geometry whose windows fit: `[height, width]` pairs.
#[derive(Debug, Clone)]
struct Geom {
    n: usize,
    groups: usize,
    cg: usize,
    og: usize,
    size: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
}

impl Geom {
    fn conv(&self) -> ConvGeometry {
        ConvGeometry {
            padding: self.padding,
            stride: self.stride,
            dilation: self.dilation,
            groups: self.groups,
        }
    }

    fn axes(&self) -> [Axis; 2] {
        self.conv().axes(self.size, self.kernel, "test").unwrap()
    }

    fn x(&self, seed: u64) -> Tensor {
        randn(
            seed,
            &[self.n, self.cg * self.groups, self.size[0], self.size[1]],
        )
    }

    fn w(&self, seed: u64) -> Tensor {
        randn(
            seed,
            &[
                self.og * self.groups,
                self.cg,
                self.kernel[0],
                self.kernel[1],
            ],
        )
    }

    /// A geometry from its counts `(n, groups, cg, og)` and its `[height, width]` pairs.
    fn of(
        (n, groups, cg, og): (usize, usize, usize, usize),
        size: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
    ) -> Self {
        Self {
            n,
            groups,
            cg,
            og,
            size,
            kernel,
            stride,
            padding,
            dilation,
        }
    }

    fn shape(&self) -> ConvShape {
        let (c, o) = (self.cg * self.groups, self.og * self.groups);
        self.conv().shape(self.n, c, o, self.axes())
    }
}

fn geom() -> impl Strategy<Value = Geom> {
    let pair = |lo: usize, hi: usize| [lo..hi, lo..hi];
    (
        (1..3usize, 1..3usize, 1..4usize, 1..4usize),
        (pair(1, 4), pair(1, 3), pair(0, 3), pair(1, 3), pair(0, 6)),
    )
        .prop_map(|(counts, (kernel, stride, padding, dilation, extra))| {
            // The input is at least the window (after padding), plus a random margin.
            let size = [0, 1].map(|i| {
                let span = dilation[i] * (kernel[i] - 1) + 1;
                span.saturating_sub(2 * padding[i]).max(1) + extra[i]
            });
            Geom::of(counts, size, kernel, stride, padding, dilation)
        })
}

/// Stride 1 with "same" padding (odd kernels, output as large as the input): the geometry
/// whose columns im2col copies as one run per tap.
fn same_geom() -> impl Strategy<Value = Geom> {
    let odd = || prop_oneof![Just(1usize), Just(3), Just(5)];
    (
        (1..3usize, 1..3usize, 1..4usize, 1..4usize),
        (
            [odd(), odd()],
            [1..3usize, 1..3usize],
            [1..9usize, 1..9usize],
        ),
    )
        .prop_map(|(counts, (kernel, dilation, size))| {
            let padding = [0, 1].map(|i| dilation[i] * (kernel[i] - 1) / 2);
            Geom::of(counts, size, kernel, [1, 1], padding, dilation)
        })
}

/// Strided downsampling (stride 2 or 3, e.g. 4x4 at stride 2 with padding 1), sizes near a
/// multiple of the stride: often the output rows are as long as the phase rows, whose
/// columns im2col then copies as one run per tap.
fn strided_geom() -> impl Strategy<Value = Geom> {
    let axis = || {
        (
            2..4usize,
            1..6usize,
            0..3usize,
            1..3usize,
            1..8usize,
            0..2usize,
        )
    };
    (
        (1..3usize, 1..3usize, 1..4usize, 1..4usize),
        [axis(), axis()],
    )
        .prop_map(|(counts, axes)| {
            let [(sh, kh, ph, dh, yh, eh), (sw, kw, pw, dw, yw, ew)] = axes;
            let (padding, dilation) = ([ph.min(kh - 1), pw.min(kw - 1)], [dh, dw]);
            let (kernel, stride) = ([kh, kw], [sh, sw]);
            let size = [0, 1].map(|i| {
                let span = dilation[i] * (kernel[i] - 1) + 1;
                let want = [yh * sh + eh, yw * sw + ew][i];
                want.max(span.saturating_sub(2 * padding[i]).max(1))
            });
            Geom::of(counts, size, kernel, stride, padding, dilation)
        })
}

fn any_geom() -> impl Strategy<Value = Geom> {
    prop_oneof![geom(), same_geom(), strided_geom()]
}

proptest! {
    #![proptest_config(cfg(64))]

    #[test]
    fn im2col_and_col2im_match_their_definitions(g in any_geom(), seed in any::<u64>()) {
        // cols[(ci, jh, jw)][(oy, ox)] = x[ci][oy*sh + jh*dh - ph][ox*sw + jw*dw - pw], or 0 in
        // the padding; col2im adds each entry back where it was read.
        let s = g.shape();
        let (cg, plane) = (g.cg, g.size[0] * g.size[1]);
        let x: Vec<f64> = randn(seed, &[cg * plane]).to_vec1().unwrap();
        let (rows, m) = (s.rows(), s.oh * s.ow);
        let mut expected = vec![0.0; rows * m];
        let mut source = vec![None; rows * m];
        for ci in 0..cg {
            for jh in 0..s.kh {
                for jw in 0..s.kw {
                    let row = (ci * s.kh + jh) * s.kw + jw;
                    for (oy, ox) in (0..s.oh).flat_map(|oy| (0..s.ow).map(move |ox| (oy, ox))) {
                        let iy = (oy * s.stride[0] + jh * s.dilation[0]).checked_sub(s.padding[0]);
                        let ix = (ox * s.stride[1] + jw * s.dilation[1]).checked_sub(s.padding[1]);
                        if let (Some(iy), Some(ix)) = (iy, ix) {
                            if iy < s.h && ix < s.w {
                                let i = ci * plane + iy * s.w + ix;
                                expected[row * m + oy * s.ow + ox] = x[i];
                                source[row * m + oy * s.ow + ox] = Some(i);
                            }
                        }
                    }
                }
            }
        }
        // The sample's columns sit at column `at` of a wider matrix (rows `ld` apart), as
        // when several samples share one product; the other columns are left alone.
        let at = m * (seed % 3) as usize;
        let ld = at + m * (1 + (seed >> 2) % 2) as usize;
        let mut cols = vec![f64::NAN; rows * ld];
        let mut phases = vec![f64::NAN; s.phases_len()];
        let src = s.split(&x, &mut phases);
        s.im2col(&s.taps(), src, (&mut cols[at..], ld), (0, s.oh));
        for (r, row) in cols.chunks(ld).enumerate() {
            prop_assert_eq!(&row[at..at + m], &expected[r * m..][..m]);
            prop_assert!(row[..at].iter().chain(&row[at + m..]).all(|v| v.is_nan()));
        }
        // A tile of output rows `y0..y1` gets those rows' columns alone.
        let y0 = (seed >> 4) as usize % s.oh;
        let y1 = y0 + 1 + (seed >> 8) as usize % (s.oh - y0);
        let width = (y1 - y0) * s.ow;
        let mut tile = vec![f64::NAN; rows * width];
        s.im2col(&s.taps(), src, (&mut tile, width), (y0, y1));
        for (r, row) in tile.chunks(width).enumerate() {
            prop_assert_eq!(row, &expected[r * m + y0 * s.ow..][..width]);
        }

        let mut cols: Vec<f64> = randn(seed ^ 1, &[rows * ld]).to_vec1().unwrap();
        let start: Vec<f64> = randn(seed ^ 2, &[cg * plane]).to_vec1().unwrap();
        let mut want = start.clone();
        for (r, row) in cols.chunks(ld).enumerate() {
            for (v, i) in row[at..at + m].iter().zip(&source[r * m..][..m]) {
                if let Some(i) = i {
                    want[*i] += v;
                }
            }
        }
        let mut got = start.clone();
        s.col2im(&s.taps(), (&mut cols[at..], ld), (0, s.oh), &mut phases, &mut got);
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        prop_assert!(worst < 1e-12, "col2im differs by {}", worst);

        // A tile of output rows adds those rows' entries alone.
        let mut tile: Vec<f64> = randn(seed ^ 3, &[rows * width]).to_vec1().unwrap();
        let mut want = start.clone();
        for (r, row) in tile.chunks(width).enumerate() {
            for (v, i) in row.iter().zip(&source[r * m + y0 * s.ow..][..width]) {
                if let Some(i) = i {
                    want[*i] += v;
                }
            }
        }
        let mut got = start;
        s.col2im(&s.taps(), (&mut tile, width), (y0, y1), &mut phases, &mut got);
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        prop_assert!(worst < 1e-12, "col2im of rows {}..{} differs by {}", y0, y1, worst);
    }

    #[test]
    fn conv_kernel_matches_candle_forward_and_gradients(g in any_geom(), seed in any::<u64>()) {
        let (x, w) = (g.x(seed), g.w(seed ^ 1));
        let shape = g.shape();
        let kernel = value_and_grads(&[x.clone(), w.clone()], |t| conv2d(&t[0], &t[1], shape));
        let reference = value_and_grads(&[x.clone(), w.clone()], |t| {
            Ok(conv2d_candle(&t[0], &t[1], &g.conv(), "test").unwrap())
        });
        assert_same(kernel.clone(), reference);
        // candle's own conv2d takes one padding, stride and dilation for both axes.
        let square = g.stride[0] == g.stride[1] && g.padding[0] == g.padding[1] && g.dilation[0] == g.dilation[1];
        if square {
            let y = x.conv2d(&w, g.padding[0], g.stride[0], g.dilation[0], g.groups).unwrap();
            prop_assert!(max_diff(&kernel.0, &y) < 1e-10);
        }
    }

    #[test]
    fn winograd_conv_matches_candle_forward_and_gradients_for_odd_and_even_planes(
        n in 1..3usize, c in 16..19usize, o in 16..19usize, size in [1..40usize, 1..40usize], seed in any::<u64>()
    ) {
        // 3x3, stride 1, padding 1, at least 16 channels in and out: all three passes go by
        // Winograd's transforms (the input gradient as the same convolution of `dy`), over
        // tiles cut by the plane's odd last row or column, chunks of several samples or of
        // some tile rows.
        let g = Geom::of((n, 1, c, o), size, [3; 2], [1; 2], [1; 2], [1; 2]);
        prop_assert!(winograd::applies::<f64>(&g.shape()));
        same_as_candle(&g, seed);
    }

    #[test]
    fn winograd_conv_in_f32_matches_the_f64_kernel_in_all_three_passes(
        n in 1..3usize, c in 16..19usize, o in 16..19usize, size in [1..40usize, 1..40usize], seed in any::<u64>()
    ) {
        // On a CPU with AVX-512 the f32 transforms go 16 tiles per vector (rows of 1-20
        // tiles: one or two vectors, masked); f64 takes the generic loops. (Without AVX-512,
        // f32 goes by columns: the same comparison across the two methods.)
        let g = Geom::of((n, 1, c, o), size, [3; 2], [1; 2], [1; 2], [1; 2]);
        prop_assert_eq!(f32_against_f64(&g, seed), None, "(pass, relative difference)");
    }

    #[test]
    fn stride2_winograd_conv_matches_candle_forward_and_gradients_for_odd_and_even_planes(
        n in 1..4usize, c in 16..19usize, o in 16..19usize, size in [2..24usize, 2..24usize], seed in any::<u64>()
    ) {
        // 4x4, stride 2, padding 1, at least 16 channels in and out: the forward pass and the
        // input gradient go by F(4x4, 2x2) on the input's phases, over tiles cut by the
        // output's last rows and columns (odd and even planes), chunks of one or several
        // samples; the weight gradient by columns.
        let g = Geom::of((n, 1, c, o), size, [4; 2], [2; 2], [1; 2], [1; 2]);
        prop_assert!(stride2::applies(&g.shape()));
        same_as_candle(&g, seed);
    }

    #[test]
    fn stride2_winograd_conv_follows_weights_that_change_between_calls(seed in any::<u64>()) {
        // The transformed kernel is kept between calls while the weights are the same bits:
        // new weights of the same shape (an optimizer's step) must be transformed again.
        let g = Geom::of((2, 1, 16, 17), [9, 8], [4; 2], [2; 2], [1; 2], [1; 2]);
        let shape = g.shape();
        let x = g.x(seed);
        let dy = randn(seed ^ 1, &[2, 17, shape.oh, shape.ow]);
        for (i, w) in [g.w(seed ^ 2), g.w(seed ^ 3), g.w(seed ^ 2)].iter().enumerate() {
            let want = [
                conv2d_candle(&x, w, &g.conv(), "test").unwrap(),
                conv_transpose2d_candle(&dy, w, &g.conv(), g.size, "test").unwrap(),
            ];
            for dtype in [DType::F64, DType::F32] {
                let [x, w, dy] = [&x, w, &dy].map(|t| t.to_dtype(dtype).unwrap());
                let got = [conv2d(&x, &w, shape).unwrap(), conv_transpose2d(&dy, &w, shape).unwrap()];
                for (pass, (got, want)) in got.iter().zip(&want).enumerate() {
                    let d = max_diff(&got.to_dtype(DType::F64).unwrap(), want) / max_abs(want).max(1.0);
                    prop_assert!(d < 1e-5, "weights {i}, {dtype:?}, pass {pass}: relative difference {d}");
                }
            }
        }
    }

    #[test]
    fn stride2_winograd_conv_in_f32_matches_f64_in_all_three_passes(
        n in 1..3usize, c in 16..19usize, o in 16..19usize, size in [2..24usize, 2..24usize], seed in any::<u64>()
    ) {
        // On a CPU with AVX-512 the f32 transforms and channels-last copies go 16 channels
        // per vector (16-18 channels: one full and one masked vector), f64 by generic loops.
        // The weight gradient goes by columns in both.
        let g = Geom::of((n, 1, c, o), size, [4; 2], [2; 2], [1; 2], [1; 2]);
        prop_assert_eq!(f32_against_f64(&g, seed), None, "(pass, relative difference)");
    }

    #[test]
    fn transposed_conv_kernel_matches_candle_forward_and_gradients(g in any_geom(), extra in [0..2usize, 0..2usize], seed in any::<u64>()) {
        // The transposed convolution maps the conv's output size back to its input size (plus
        // an output_padding that leaves the last rows/columns without any window).
        let shape = g.shape();
        let out_size = [0, 1].map(|i| {
            let room = g.stride[i].max(g.dilation[i]) - 1;
            [g.size[0], g.size[1]][i] + extra[i].min(room)
        });
        let shape = ConvShape { h: out_size[0], w: out_size[1], ..shape };
        let y = randn(seed, &[g.n, shape.o, shape.oh, shape.ow]);
        // Transposed-convolution weights are [C_in = o, C_out / groups = cg, KH, KW].
        let w = g.w(seed ^ 2);
        let kernel = value_and_grads(&[y.clone(), w.clone()], |t| conv_transpose2d(&t[0], &t[1], shape));
        let reference = value_and_grads(&[y, w], |t| {
            Ok(conv_transpose2d_candle(&t[0], &t[1], &g.conv(), out_size, "test").unwrap())
        });
        assert_same(kernel, reference);
    }

    #[test]
    fn conv_kernels_second_derivatives_match_candle(g in any_geom(), seed in any::<u64>()) {
        // d/dw of |dL/dx|², with dL/dx written as the transposed convolution (the gradient
        // penalty's form): runs conv's backward-data op through its own backward pass.
        let (x, w) = (g.x(seed), g.w(seed ^ 3));
        let shape = g.shape();
        let dy = randn(seed ^ 4, &[g.n, shape.o, shape.oh, shape.ow]);
        let penalty = |t: &[Tensor], dx: Tensor| dx.sqr()?.sum_all()? + conv2d(&t[0], &t[1], shape)?.sum_all()?;
        let kernel = value_and_grads(&[x.clone(), w.clone()], |t| penalty(t, conv_transpose2d(&dy, &t[1], shape)?));
        let size = g.size;
        let reference = value_and_grads(&[x, w], |t| {
            let dx = conv_transpose2d_candle(&dy, &t[1], &g.conv(), size, "test").unwrap();
            dx.sqr()?.sum_all()? + conv2d_candle(&t[0], &t[1], &g.conv(), "test").unwrap().sum_all()?
        });
        assert_same(kernel, reference);
        // The weight-gradient op through its own backward pass (autograd detaches gradients,
        // so it is reached directly), against central finite differences.
        let dy = randn(seed ^ 5, &[g.n, shape.o, shape.oh, shape.ow]);
        crate::check::check_gradients(&[g.x(seed), dy], |t| conv2d_weight_grad(&t[0], &t[1], shape)).unwrap();
    }

    #[test]
    fn max_pool_kernel_matches_candle_forward_and_gradient(k in [1..4usize, 1..4usize], s in [1..4usize, 1..4usize],
            pad in [0..2usize, 0..2usize], dil in [1..3usize, 1..3usize], ceil in any::<bool>(),
            size in [1..10usize, 1..10usize], ties in any::<bool>(), seed in any::<u64>()) {
        let pool = PoolConfig { kernel: k, stride: s, padding: pad, dilation: dil, ceil_mode: ceil, count_include_pad: true };
        let mut x = randn(seed, &[2, 3, size[0] + 2 * k[0], size[1] + 2 * k[1]]);
        if ties {
            // Few distinct values: the first maximum of each window must win, as in candle's path.
            x = (x * 1.5).unwrap().round().unwrap();
        }
        let Ok(axes) = (|| -> crate::Result<[Axis; 2]> {
            Ok([pool.axis(0, x.dim(2)?, "test")?, pool.axis(1, x.dim(3)?, "test")?])
        })() else {
            return Ok(()); // padding more than half the window: refused by both paths
        };
        let kernel = value_and_grads(&[x.clone()], |t| max_pool2d(&t[0], axes));
        let reference = value_and_grads(&[x], |t| Ok(crate::max_pool2d_with_indices(&t[0], &pool).unwrap().0));
        assert_same(kernel, reference);
    }

    #[test]
    fn max_pool_2x2_stride_2_matches_candle_forward_and_gradient_on_odd_and_even_planes(
            size in [2..20usize, 2..20usize], ties in any::<bool>(), seed in any::<u64>()) {
        // The case with its own loops: windows that tile the input, an odd last row or column
        // in none of them.
        let pool = PoolConfig { kernel: [2, 2], stride: [2, 2], padding: [0, 0], dilation: [1, 1], ceil_mode: false, count_include_pad: true };
        let mut x = randn(seed, &[2, 3, size[0], size[1]]);
        if ties {
            x = (x * 1.5).unwrap().round().unwrap();
        }
        let axes = [0, 1].map(|i| Axis::new(size[i], 2, 2, 0, 1, false, "test").unwrap());
        // In f64 (the generic loops) and f32 (AVX-512 where the CPU has it), through casts.
        for dt in [DType::F64, DType::F32] {
            let kernel = value_and_grads(&[x.clone()], |t| max_pool2d(&t[0].to_dtype(dt)?, axes)?.to_dtype(DType::F64));
            let reference = value_and_grads(&[x.clone()], |t| {
                crate::max_pool2d_with_indices(&t[0].to_dtype(dt)?, &pool).unwrap().0.to_dtype(DType::F64)
            });
            assert_same(kernel, reference);
        }
    }

    #[test]
    fn bias_kernel_matches_candle_and_its_channel_sum_has_a_gradient(n in 1..4usize, c in 1..5usize, s in 1..20usize, seed in any::<u64>()) {
        let (x, b) = (randn(seed, &[n, c, s]), randn(seed ^ 7, &[c]));
        let kernel = value_and_grads(&[x.clone(), b.clone()], |t| bias_add(&t[0], &t[1]));
        let reference = value_and_grads(&[x.clone(), b], |t| t[0].broadcast_add(&t[1].reshape((1, c, 1))?));
        assert_same(kernel, reference);
        // The bias gradient's op (a per-channel sum) has a gradient of its own.
        crate::check::check_gradients(&[x], |t| bias::channel_sum(&t[0])).unwrap();
    }

    #[test]
    fn linear_kernel_matches_candle_forward_and_gradients(lead in 0..3usize, n in 1..6usize, k in 1..40usize, o in 1..40usize,
                                                          bias in any::<bool>(), transposed in any::<bool>(), seed in any::<u64>()) {
        let mut dims = vec![n, k];
        if lead > 0 {
            dims.insert(0, lead);
        }
        let mut inputs = vec![randn(seed, &dims), randn(seed ^ 10, &[o, k])];
        if bias {
            inputs.push(randn(seed ^ 11, &[o]));
        }
        // The input as given, or with its last two axes stored transposed (not contiguous).
        let input = |x: &Tensor| if transposed { x.t()?.contiguous()?.t() } else { Ok(x.clone()) };
        let kernel = value_and_grads(&inputs, |t| linear(&input(&t[0])?, &t[1], t.get(2)));
        let reference = value_and_grads(&inputs, |t| {
            let y = input(&t[0])?.broadcast_matmul(&t[1].t()?)?;
            t.get(2).map_or(Ok(y.clone()), |b| y.broadcast_add(b))
        });
        assert_same(kernel, reference);
        // The bias gradient's op (a column sum) has a gradient of its own.
        crate::check::check_gradients(&[randn(seed ^ 12, &[n, o])], |t| linear::column_sum(&t[0])).unwrap();
    }

    #[test]
    fn matmul_kernel_matches_candle_forward_and_gradients_for_every_transpose(m in 1..30usize, n in 1..30usize,
                                                                              k in prop_oneof![1..30usize, TRANSPOSED_B_MIN_K..TRANSPOSED_B_MIN_K + 40],
                                                                              ta in any::<bool>(), tb in any::<bool>(), seed in any::<u64>()) {
        // The gradients are products of this kind with other transposes, so this property
        // for all four also covers every higher derivative. Inner dimensions from
        // `TRANSPOSED_B_MIN_K` on take the column-major detour where `b` is read transposed.
        let a = randn(seed, &if ta { [k, m] } else { [m, k] });
        let b = randn(seed ^ 13, &if tb { [n, k] } else { [k, n] });
        let op = |t: &Tensor, tr: bool| if tr { t.t() } else { Ok(t.clone()) };
        let kernel = value_and_grads(&[a.clone(), b.clone()], |t| linear::matmul(&t[0], &t[1], ta, tb));
        let reference = value_and_grads(&[a.clone(), b.clone()], |t| op(&t[0], ta)?.matmul(&op(&t[1], tb)?));
        assert_same(kernel, reference);
    }

    #[test]
    fn gemm_matches_the_triple_loop_for_any_strides_and_reads_dst_only_to_add(
        m in 1..20usize,
        n in 1..20usize,
        k in prop_oneof![1..20usize, TRANSPOSED_B_MIN_K..TRANSPOSED_B_MIN_K + 30],
        ta in any::<bool>(),
        tb in any::<bool>(),
        pad in 0..3usize,
        accumulate in any::<bool>(),
        seed in any::<u64>(),
    ) {
        // Against the plain triple loop, on `dst` rows longer than `n` whose padding must
        // stay untouched.
        let data = |seed, len| randn(seed, &[len]).to_vec1::<f64>().unwrap();
        let (a, b) = (data(seed, m * k), data(seed ^ 1, k * n));
        let a_strides = if ta { (1, m) } else { (k, 1) };
        let b_strides = if tb { (1, k) } else { (n, 1) };
        let dst_rs = n + pad;
        // Without `accumulate` the product must not read `dst` (fresh outputs are not
        // initialised): NaN there would show.
        let mut before = data(seed ^ 2, m * dst_rs);
        if !accumulate {
            before.iter_mut().enumerate().filter(|(i, _)| i % dst_rs < n).for_each(|(_, v)| *v = f64::NAN);
        }
        let mut dst = before.clone();
        matmul((m, n, k), &mut dst[..], dst_rs, &a, a_strides, &b, b_strides, accumulate);
        for r in 0..m {
            for c in 0..dst_rs {
                let got = dst[r * dst_rs + c];
                let want = if c >= n {
                    before[r * dst_rs + c]
                } else {
                    let dot: f64 = (0..k).map(|i| a[r * a_strides.0 + i * a_strides.1] * b[i * b_strides.0 + c * b_strides.1]).sum();
                    dot + if accumulate { before[r * dst_rs + c] } else { 0.0 }
                };
                prop_assert!((got - want).abs() < 1e-10, "({r}, {c}): {got} vs {want}");
            }
        }
    }

    #[test]
    fn column_major_gemm_matches_the_triple_loop_and_reads_dst_only_to_add(
        m in 1..20usize,
        n in 1..20usize,
        k in 1..100usize,
        tb in any::<bool>(),
        accumulate in any::<bool>(),
        seed in any::<u64>(),
    ) {
        // As the weight gradient uses it: `a` row-major, `b` read transposed or not.
        let data = |seed, len| randn(seed, &[len]).to_vec1::<f64>().unwrap();
        let (a, b) = (data(seed, m * k), data(seed ^ 1, k * n));
        let b_strides = if tb { (1, k) } else { (n, 1) };
        let before = if accumulate { data(seed ^ 2, m * n) } else { vec![f64::NAN; m * n] };
        let mut dst = before.clone();
        matmul_col_major((m, n, k), &mut dst, (&a, (k, 1)), (&b, b_strides), accumulate);
        for r in 0..m {
            for c in 0..n {
                let dot: f64 = (0..k).map(|i| a[r * k + i] * b[i * b_strides.0 + c * b_strides.1]).sum();
                let want = dot + if accumulate { before[c * m + r] } else { 0.0 };
                let got = dst[c * m + r];
                prop_assert!((got - want).abs() < 1e-10, "({r}, {c}): {got} vs {want}");
            }
        }
    }

    #[test]
    fn bce_kernel_matches_candle_forward_and_gradients(lead in 0..3usize, n in 1..5usize, c in 1..300usize, seed in any::<u64>()) {
        let mut dims = vec![n, c];
        if lead > 0 {
            dims.insert(0, lead);
        }
        // Logits up to ±100 (where exp overflows in f32), targets in [0, 1].
        let o = (randn(seed, &dims) * 50.0).unwrap();
        let x = ((randn(seed ^ 15, &dims) + 2.0).unwrap() / 4.0).unwrap();
        let kernel = value_and_grads(&[o.clone(), x.clone()], |t| bce_with_logits(&t[0], &t[1]));
        let reference = value_and_grads(&[o, x], |t| {
            (crate::Activation::Softplus.forward(&t[0])? - (&t[1] * &t[0])?)?.sum(candle_core::D::Minus1)
        });
        assert_same(kernel, reference);
        // The logits' gradient op has gradients of its own (against finite differences).
        let rows = dims[..dims.len() - 1].iter().product::<usize>();
        let (o, x) = (randn(seed ^ 16, &[rows, c]), randn(seed ^ 17, &[rows, c]));
        crate::check::check_gradients(&[o, x, randn(seed ^ 18, &[rows])], |t| bce::bce_grad(&t[0], &t[1], &t[2])).unwrap();
    }

    #[test]
    fn leaky_relu_kernel_matches_candle_and_its_backward_has_a_gradient(len in 1..3000usize, slope in prop::sample::select(vec![0.0, 0.01, 0.2, 1.0]), seed in any::<u64>()) {
        let x = randn(seed, &[len]);
        let kernel = value_and_grads(std::slice::from_ref(&x), |t| leaky_relu(&t[0], slope));
        let reference = value_and_grads(std::slice::from_ref(&x), |t| t[0].relu()? - (t[0].neg()?.relu()? * slope)?);
        assert_same(kernel, reference);
        let y = leaky_relu(&x, slope).unwrap();
        crate::check::check_gradients(&[randn(seed ^ 8, &[len])], |t| {
            rectify::leaky_relu_backward(&t[0], &y, slope)
        }).unwrap();
    }

    #[test]
    fn tanh_kernel_matches_candle_and_its_backward_has_a_gradient(len in 1..3000usize, seed in any::<u64>()) {
        let x = randn(seed, &[len]).affine(3.0, 0.0).unwrap();
        let kernel = value_and_grads(std::slice::from_ref(&x), |t| tanh::tanh(&t[0]));
        let reference = value_and_grads(std::slice::from_ref(&x), |t| t[0].tanh());
        assert_same(kernel, reference);
        let y = tanh::tanh(&x).unwrap();
        crate::check::check_gradients(&[randn(seed ^ 8, &[len]), y], |t| {
            tanh::tanh_backward(&t[0], &t[1])
        }).unwrap();
    }

    #[test]
    fn add_relu_kernel_matches_candle_add_then_relu(len in 1..3000usize, seed in any::<u64>()) {
        let (a, b) = (randn(seed, &[len]), randn(seed ^ 9, &[len]));
        let kernel = value_and_grads(&[a.clone(), b.clone()], |t| add_relu(&t[0], &t[1]));
        let reference = value_and_grads(&[a, b], |t| (&t[0] + &t[1])?.relu());
        assert_same(kernel, reference);
    }

    #[test]
    fn batch_norm_kernel_matches_candle_forward_gradients_and_running_stats(n in 1..4usize,
            // 1030 channels at S = 1: three of the [N, C] path's column blocks.
            c in prop_oneof![1..5usize, Just(1030usize)], s in prop_oneof![1..20usize, Just(1)],
            affine in any::<bool>(), relu in any::<bool>(), seed in any::<u64>()) {
        let x = randn(seed, &[n + 1, c, s]).affine(3.0, 1.0).unwrap();
        let (w, b) = (randn(seed ^ 5, &[c]), randn(seed ^ 6, &[c]));
        let count = (n + 1) * s;
        let kernel = value_and_grads(&[x.clone(), w.clone(), b.clone()], |t| {
            Ok(batch_norm_train(&t[0], 1e-5, (&t[1], &t[2]), relu)?.0)
        });
        // candle ops: the textbook formula.
        let reference = value_and_grads(&[x.clone(), w.clone(), b.clone()], |t| {
            let mean = (t[0].sum_keepdim(2)?.sum_keepdim(0)? / count as f64)?;
            let centered = t[0].broadcast_sub(&mean)?;
            let var = (centered.sqr()?.sum_keepdim(2)?.sum_keepdim(0)? / count as f64)?;
            let y = centered
                .broadcast_div(&(var + 1e-5)?.sqrt()?)?
                .broadcast_mul(&t[1].reshape((1, c, 1))?)?
                .broadcast_add(&t[2].reshape((1, c, 1))?)?;
            if relu { y.relu() } else { Ok(y) }
        });
        assert_same(kernel.clone(), reference);
        // Through the layer (kernels on by default): the same output where it is affine, and
        // the running statistics updated as PyTorch does.
        let dev = Device::Cpu;
        let (lw, lb) = if affine { (Some(w.clone()), Some(b.clone())) } else { (None, None) };
        let bn = BatchNorm::from_parts(lw, lb, Tensor::zeros(c, DType::F64, &dev).unwrap(),
            Tensor::ones(c, DType::F64, &dev).unwrap(), BatchNormConfig::default()).unwrap();
        let y = if relu {
            bn.forward_relu_t(&x, true).unwrap()
        } else {
            candle_core::ModuleT::forward_t(&bn, &x, true).unwrap()
        };
        if affine {
            prop_assert!(max_diff(&y, &kernel.0) < 1e-10);
        }
        let mean = x.mean_keepdim(2).unwrap().mean_keepdim(0).unwrap().flatten_all().unwrap();
        let var = x.broadcast_sub(&mean.reshape((1, c, 1)).unwrap()).unwrap().sqr().unwrap()
            .sum_keepdim(2).unwrap().sum_keepdim(0).unwrap().flatten_all().unwrap();
        let m = BatchNormConfig::default().momentum;
        let want_mean = (mean * m).unwrap();
        let want_var = ((var * (m / (count - 1) as f64)).unwrap() + (1.0 - m)).unwrap();
        prop_assert!(max_diff(bn.running_mean(), &want_mean) < 1e-12);
        prop_assert!(max_diff(bn.running_var(), &want_var) < 1e-12);
    }
}

/// NaN wins a window, as in PyTorch, and the first one takes its gradient; ties go to the
/// first maximum in row order.
#[test]
fn max_pool_2x2_lets_the_first_nan_win_and_sends_its_gradient_there() {
    let nan = f64::NAN;
    let axes = [
        Axis::new(2, 2, 2, 0, 1, false, "test").unwrap(),
        Axis::new(4, 2, 2, 0, 1, false, "test").unwrap(),
    ];
    for dt in [DType::F64, DType::F32] {
        let x = Tensor::new(
            &[[[[1.0, nan, 2.0, 5.0], [3.0, nan, 5.0, -1.0]]]],
            &Device::Cpu,
        );
        let x = Var::from_tensor(&x.unwrap().to_dtype(dt).unwrap()).unwrap();
        let y = max_pool2d(&x, axes).unwrap();
        let y_vals: Vec<f64> = y
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(y_vals[0].is_nan() && y_vals[1] == 5.0, "{dt:?}: {y_vals:?}");
        let dy = Tensor::new(&[[[[10.0, 20.0]]]], &Device::Cpu)
            .unwrap()
            .to_dtype(dt)
            .unwrap();
        let grads = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
        let dx = grads.get(&x).unwrap().flatten_all().unwrap();
        let dx: Vec<f64> = dx.to_dtype(DType::F64).unwrap().to_vec1().unwrap();
        assert_eq!(dx, [0.0, 10.0, 0.0, 20.0, 0.0, 0.0, 0.0, 0.0], "{dt:?}");
    }
}

/// The memory fix: a weight gradient computed by the kernels holds no graph, so the gradient
/// store does not keep the layers' activations and output gradients alive; the values stay
/// candle's (checked above), only the links are cut.
#[test]
fn kernel_weight_gradients_hold_no_graph() {
    let conv = ConvGeometry {
        padding: [1; 2],
        stride: [1; 2],
        dilation: [1; 2],
        groups: 1,
    };
    let shape = conv.shape(2, 3, 4, conv.axes([6, 6], [3, 3], "test").unwrap());
    let x = Var::from_tensor(&randn(1, &[2, 3, 6, 6])).unwrap();
    let w = Var::from_tensor(&randn(2, &[4, 3, 3, 3])).unwrap();
    let (bw, bb) = (
        Var::from_tensor(&randn(3, &[4])).unwrap(),
        Var::from_tensor(&randn(4, &[4])).unwrap(),
    );
    let y = conv2d(&x, &w, shape).unwrap().flatten_from(2).unwrap();
    let y = batch_norm_train(&y, 1e-5, (&bw, &bb), true).unwrap().0;
    let loss = max_pool2d(
        &y.reshape((2, 4, 6, 6)).unwrap(),
        [Axis::new(6, 2, 2, 0, 1, false, "test").unwrap(); 2],
    )
    .unwrap()
    .sum_all()
    .unwrap();
    let grads = loss.backward().unwrap();
    for v in [&x, &w, &bw, &bb] {
        let g = grads.get(v).unwrap();
        assert!(
            !g.track_op(),
            "gradient of shape {:?} is linked to the graph",
            g.dims()
        );
    }
}

/// An input outside the graph (a data batch) gets no gradient, its product skipped; the
/// weight and bias get theirs, and an input in the graph its own.
#[test]
fn linear_gives_an_input_outside_the_graph_no_gradient() {
    let (x, dy) = (randn(1, &[5, 7]), randn(4, &[5, 3]));
    let w = Var::from_tensor(&randn(2, &[3, 7])).unwrap();
    let b = Var::from_tensor(&randn(3, &[3])).unwrap();
    let [dx, dw, db] = linear::grads(&x, &w, &b, &dy).unwrap();
    assert!(dx.is_none(), "the input got a gradient");
    // dw = dyᵀ x, db = dy's column sums.
    let dw_ref = dy.t().unwrap().matmul(&x).unwrap();
    assert!(max_diff(&dw.unwrap(), &dw_ref) < 1e-10);
    assert!(max_diff(&db.unwrap(), &dy.sum(0).unwrap()) < 1e-10);
    let x = Var::from_tensor(&x).unwrap();
    assert!(linear::grads(&x, &w, &b, &dy).unwrap()[0].is_some());
}

/// Products large enough to be split over the threads, by columns and by rows.
#[test]
fn linear_kernel_matches_candle_on_a_multithreaded_size() {
    let inputs = [randn(1, &[70, 65]), randn(2, &[130, 65]), randn(3, &[130])];
    let kernel = value_and_grads(&inputs, |t| linear(&t[0], &t[1], Some(&t[2])));
    let reference = value_and_grads(&inputs, |t| t[0].matmul(&t[1].t()?)?.broadcast_add(&t[2]));
    assert_same(kernel, reference);
    // A narrow product, split by rows.
    let inputs = [randn(4, &[300, 40]), randn(5, &[30, 40])];
    let kernel = value_and_grads(&inputs, |t| linear(&t[0], &t[1], None));
    let reference = value_and_grads(&inputs, |t| t[0].matmul(&t[1].t()?));
    assert_same(kernel, reference);
}

#[test]
fn conv_kernel_matches_candle_when_threads_run_several_blocks_of_samples() {
    // 7x7 outputs (49 columns) take four samples per product: nine samples are parts of five
    // and four on two threads, blocks of 4 + 1 and 4. 16x16 outputs (256 columns) take one
    // sample per product: three products summed in each part of the weight gradient.
    for (n, size, stride) in [(9, 14, 2), (6, 16, 1)] {
        let g = Geom::of((n, 1, 2, 3), [size; 2], [3; 2], [stride; 2], [1; 2], [1; 2]);
        let (x, w) = (g.x(7), g.w(8));
        let kernel = value_and_grads(&[x.clone(), w.clone()], |t| conv2d(&t[0], &t[1], g.shape()));
        let reference = value_and_grads(&[x, w], |t| {
            Ok(conv2d_candle(&t[0], &t[1], &g.conv(), "test").unwrap())
        });
        assert_same(kernel, reference);
    }
}

#[test]
fn conv_kernel_matches_candle_when_large_planes_go_in_row_tiles() {
    // 2 groups of 16 channels, 3x3: 144 column rows of 64 columns per output row, so the
    // forward pass (a kernel row at a time, over each tile's rows and the two after them) and
    // the weight gradient go in tiles: of 13 rows (the last one 12) for the
    // 64x64 outputs of "same" padding, which takes the input gradient as a convolution of its
    // own (8 channels, tiles of 32 rows); of 14 (the last one 12) for padding 3 (68x68
    // outputs), whose input gradient takes the transposed product and col2im in the same tiles.
    for padding in [1, 3] {
        let g = Geom::of((2, 2, 16, 4), [64; 2], [3; 2], [1; 2], [padding; 2], [1; 2]);
        let shape = g.shape();
        assert!(shape.tile_rows() < shape.oh, "the plane is split");
        assert!(
            shape.by_kernel_rows(),
            "the forward pass goes a kernel row at a time"
        );
        let (x, w) = (g.x(9), g.w(10));
        let kernel = value_and_grads(&[x.clone(), w.clone()], |t| conv2d(&t[0], &t[1], shape));
        let reference = value_and_grads(&[x, w], |t| {
            Ok(conv2d_candle(&t[0], &t[1], &g.conv(), "test").unwrap())
        });
        assert_same(kernel, reference);
    }
}

#[test]
fn conv_weight_gradient_in_f32_matches_the_f64_kernel_where_dot_products_sum_it() {
    // 16 output channels per group, f32: on a CPU with AVX-512 `DotSums` sums the weight
    // gradient: by kernel rows over 32x32 (two tiles of 16 rows, grouped into one sum) and 18x18
    // outputs (rows of 18, not aligned), and by blocks of samples side by side at 7x7.
    for (size, stride, padding) in [(32, 1, 1), (20, 1, 0), (14, 2, 1)] {
        let g = Geom::of(
            (5, 2, 3, 16),
            [size; 2],
            [3; 2],
            [stride; 2],
            [padding; 2],
            [1; 2],
        );
        let shape = g.shape();
        let (x, dy) = (g.x(11), randn(12, &[5, 32, shape.oh, shape.ow]));
        let want = conv2d_weight_grad(&x, &dy, shape).unwrap();
        let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let got = conv2d_weight_grad(&f32s(&x), &f32s(&dy), shape).unwrap();
        let d = max_diff(&got.to_dtype(DType::F64).unwrap(), &want) / max_abs(&want);
        assert!(
            d < 1e-5,
            "{size}x{size} stride {stride}: relative difference {d}"
        );
    }
}

#[test]
fn tanh_f32_is_within_4_ulp_of_tanh_and_keeps_nan_infinities_and_signed_zeros() {
    // Every 64th f32 from 0 to infinity, both signs (every f32 was checked once: 3.26 ulp at
    // worst, near x = 0.031).
    let ulps = |x: f32| {
        let (got, want) = (tanh::tanh_f32(x) as f64, (x as f64).tanh());
        let w = want as f32;
        let ulp = (f32::from_bits(w.abs().to_bits() + 1) - w.abs()) as f64;
        (got - want).abs() / ulp
    };
    let worst = f32_sweep().map(ulps).fold(0.0, f64::max);
    assert!(worst < 4.0, "{worst} ulp");
    assert!(tanh::tanh_f32(f32::NAN).is_nan());
    assert_eq!(tanh::tanh_f32(f32::INFINITY), 1.0);
    assert_eq!(tanh::tanh_f32(f32::NEG_INFINITY), -1.0);
    assert_eq!(tanh::tanh_f32(-0.0).to_bits(), (-0.0f32).to_bits());
    assert_eq!(tanh::tanh_f32(0.0).to_bits(), 0);
}

/// Units in the last place between an f32 result and the exact value (f64), counted in the
/// ulp of the exact value rounded to f32. Below f32's normal range the functions flush to
/// zero: there an absolute error up to the smallest normal f32 counts as none.
fn ulps_f32(got: f32, want: f64) -> f64 {
    let err = (got as f64 - want).abs();
    if want.abs() < f32::MIN_POSITIVE as f64 {
        return if err <= f32::MIN_POSITIVE as f64 {
            0.0
        } else {
            f64::INFINITY
        };
    }
    let w = (want as f32).abs();
    err / (f32::from_bits(w.to_bits() + 1) - w) as f64
}

/// Every 64th f32 from 0 to the largest finite one, both signs.
fn f32_sweep() -> impl Iterator<Item = f32> {
    (0..0x7f80_0000u32)
        .step_by(64)
        .map(f32::from_bits)
        .flat_map(|x| [x, -x])
}

#[test]
fn exp_f32_is_within_2_ulp_of_exp_over_its_range() {
    let worst = f32_sweep()
        .filter(|y| (-87.0..=88.0).contains(y))
        .map(|y| ulps_f32(math::exp_f32(y), (y as f64).exp()))
        .fold(0.0, f64::max);
    assert!(worst < 2.0, "{worst} ulp");
    assert_eq!(math::exp_f32(0.0), 1.0);
}

#[test]
fn softplus_and_sigmoid_f32_are_within_4_ulp_and_keep_nan_and_infinities() {
    let softplus = |o: f64| o.max(0.0) + (-o.abs()).exp().ln_1p();
    let sigmoid = |o: f64| 1.0 / (1.0 + (-o).exp());
    let worst = |f: fn(f32) -> f32, exact: &dyn Fn(f64) -> f64| {
        f32_sweep()
            .map(|o| (ulps_f32(f(o), exact(o as f64)), o))
            .fold((0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a })
    };
    let (ulps, at) = worst(math::softplus_f32, &softplus);
    assert!(ulps < 4.0, "softplus: {ulps} ulp at {at}");
    let (ulps, at) = worst(math::sigmoid_f32, &sigmoid);
    assert!(ulps < 4.0, "sigmoid: {ulps} ulp at {at}");
    assert!(math::softplus_f32(f32::NAN).is_nan() && math::sigmoid_f32(f32::NAN).is_nan());
    assert_eq!(math::softplus_f32(f32::INFINITY), f32::INFINITY);
    assert_eq!(math::softplus_f32(f32::NEG_INFINITY), 0.0);
    assert_eq!(math::sigmoid_f32(f32::INFINITY), 1.0);
    assert_eq!(math::sigmoid_f32(f32::NEG_INFINITY), 0.0);
}
