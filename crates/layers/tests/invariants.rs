//! The defining invariants of each op, as property tests, plus reference checks against
//! direct (loop) implementations and clear errors for bad input.

mod common;

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{max_diff, randn, vals};
use forja_layers::*;
use proptest::prelude::*;

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Direct-sum 2-D convolution with zero padding (the definition, for reference).
fn conv2d_reference(
    x: &Tensor,
    w: &Tensor,
    pad: usize,
    stride: usize,
    dil: usize,
    groups: usize,
) -> Vec<f64> {
    let (n, c, h, wd) = x.dims4().unwrap();
    let (o, cg, kh, kw) = w.dims4().unwrap();
    let (xv, wv) = (vals(x), vals(w));
    let ho = (h + 2 * pad - dil * (kh - 1) - 1) / stride + 1;
    let wo = (wd + 2 * pad - dil * (kw - 1) - 1) / stride + 1;
    let og = o / groups;
    let mut out = vec![0.0; n * o * ho * wo];
    for b in 0..n {
        for oc in 0..o {
            let g = oc / og;
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = 0.0;
                    for ic in 0..cg {
                        for i in 0..kh {
                            for j in 0..kw {
                                let y = (oy * stride + i * dil) as isize - pad as isize;
                                let xx = (ox * stride + j * dil) as isize - pad as isize;
                                if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < wd {
                                    let ci = g * cg + ic;
                                    acc += xv[((b * c + ci) * h + y as usize) * wd + xx as usize]
                                        * wv[((oc * cg + ic) * kh + i) * kw + j];
                                }
                            }
                        }
                    }
                    out[((b * o + oc) * ho + oy) * wo + ox] = acc;
                }
            }
        }
    }
    out
}

/// Direct pooling over one plane with PyTorch's window and divisor rules.
#[allow(clippy::too_many_arguments)]
fn pool_reference(
    plane: &[f64],
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    p: usize,
    ceil: bool,
    max: bool,
    include_pad: bool,
) -> Vec<f64> {
    let out_len = |n: usize| {
        let room = n + 2 * p - k;
        let mut o = if ceil { room.div_ceil(s) } else { room / s } + 1;
        if ceil && (o - 1) * s >= n + p {
            o -= 1;
        }
        o
    };
    let (ho, wo) = (out_len(h), out_len(w));
    let mut out = Vec::new();
    for oy in 0..ho {
        for ox in 0..wo {
            let (y0, x0) = (
                (oy * s) as isize - p as isize,
                (ox * s) as isize - p as isize,
            );
            let (y1, x1) = (
                (y0 + k as isize).min((h + p) as isize),
                (x0 + k as isize).min((w + p) as isize),
            );
            let mut best = f64::NEG_INFINITY;
            let (mut sum, mut inside) = (0.0, 0);
            for y in y0.max(0)..y1.min(h as isize) {
                for x in x0.max(0)..x1.min(w as isize) {
                    let v = plane[y as usize * w + x as usize];
                    best = best.max(v);
                    sum += v;
                    inside += 1;
                }
            }
            let div = if include_pad {
                ((y1 - y0) * (x1 - x0)) as f64
            } else {
                inside as f64
            };
            out.push(if max { best } else { sum / div });
        }
    }
    out
}

proptest! {
    #![proptest_config(cfg(48))]

    #[test]
    fn padding_modes_equal_their_index_rules(n in 1..8usize, lo in 0..8usize, hi in 0..8usize, seed in any::<u64>()) {
        let x = randn(seed, &[1, n]);
        let xv = vals(&x);
        let circ = vals(&pad1d(&x, [lo.min(n), hi.min(n)], PadMode::Circular).unwrap());
        for (i, v) in circ.iter().enumerate() {
            let src = (i as isize - lo.min(n) as isize).rem_euclid(n as isize) as usize;
            prop_assert_eq!(*v, xv[src]);
        }
        if n > 1 {
            let (lo, hi) = (lo.min(n - 1), hi.min(n - 1));
            let refl = vals(&pad1d(&x, [lo, hi], PadMode::Reflect).unwrap());
            for (i, v) in refl.iter().enumerate() {
                let j = i as isize - lo as isize;
                // Mirror without repeating the edge: x[-1] = x[1], x[n] = x[n - 2].
                let src = if j < 0 { -j } else if j >= n as isize { 2 * (n as isize - 1) - j } else { j };
                prop_assert_eq!(*v, xv[src as usize]);
            }
        }
        let rep = vals(&pad1d(&x, [lo, hi], PadMode::Replicate).unwrap());
        let zer = vals(&pad1d(&x, [lo, hi], PadMode::Zeros).unwrap());
        for i in 0..n + lo + hi {
            let j = i as isize - lo as isize;
            prop_assert_eq!(rep[i], xv[j.clamp(0, n as isize - 1) as usize]);
            prop_assert_eq!(zer[i], if (0..n as isize).contains(&j) { xv[j as usize] } else { 0.0 });
        }
    }

    #[test]
    fn conv2d_equals_the_direct_sum(k in 1..4usize, stride in 1..3usize, dil in 1..3usize, pad in 0..3usize,
                                    groups in 1..3usize, h in 5..9usize, wide in 0..3usize, seed in any::<u64>()) {
        let x = randn(seed, &[2, 2 * groups, h, h + wide]);
        let w = randn(seed + 1, &[3 * groups, 2, k, k]);
        let c = ConvConfig::default().padding(pad).stride(stride).dilation(dil).groups(groups);
        let y = conv2d(&x, &w, None, &c).unwrap();
        let r = conv2d_reference(&x, &w, pad, stride, dil, groups);
        prop_assert_eq!(y.elem_count(), r.len());
        for (a, b) in vals(&y).iter().zip(&r) {
            prop_assert!((a - b).abs() < 1e-10);
        }
    }

    #[test]
    fn conv_output_lengths_valid_and_same(n in 3..20usize, half in 0..3usize, dil in 1..3usize, mode in 0..4usize) {
        let k = 2 * half + 1;
        let modes = [PadMode::Zeros, PadMode::Circular, PadMode::Reflect, PadMode::Replicate];
        prop_assume!(n > dil * (k - 1));
        let x = randn(1, &[1, 1, n]);
        let w = randn(2, &[1, 1, k]);
        let valid = conv1d(&x, &w, None, &ConvConfig::default()).unwrap();
        prop_assert_eq!(valid.dim(2).unwrap(), n + 1 - k);
        let dilated = conv1d(&x, &w, None, &ConvConfig::default().dilation(dil)).unwrap();
        prop_assert_eq!(dilated.dim(2).unwrap(), n - dil * (k - 1));
        let same = conv1d(&x, &w, None, &ConvConfig::same(k, dil).pad_mode(modes[mode])).unwrap();
        prop_assert_eq!(same.dim(2).unwrap(), n);
    }

    #[test]
    fn transposed_conv_is_the_adjoint_of_conv(k in 1..4usize, stride in 1..3usize, dil in 1..3usize, pad in 0..2usize,
                                               groups in 1..3usize, h in 5..9usize, seed in any::<u64>()) {
        prop_assume!(h + 2 * pad > dil * (k - 1));
        let x = randn(seed, &[2, 2 * groups, h, h + 1]);
        let w = randn(seed + 1, &[3 * groups, 2, k, k]);
        let c = ConvConfig::default().padding(pad).stride(stride).dilation(dil).groups(groups);
        let y = conv2d(&x, &w, None, &c).unwrap();
        let r = randn(seed + 2, y.dims());
        // Output padding that brings the transposed output back to exactly h x (h + 1).
        let op = |n: usize| (n + 2 * pad - dil * (k - 1) - 1) % stride;
        prop_assume!(op(h) == op(h + 1));
        let t = ConvTransposeConfig::default().padding(pad).output_padding(op(h)).stride(stride).dilation(dil).groups(groups);
        let xt = conv_transpose2d(&r, &w, None, &t).unwrap();
        prop_assert_eq!(xt.dims(), x.dims());
        let lhs: f64 = vals(&y).iter().zip(vals(&r)).map(|(a, b)| a * b).sum();
        let rhs: f64 = vals(&x).iter().zip(vals(&xt)).map(|(a, b)| a * b).sum();
        prop_assert!((lhs - rhs).abs() < 1e-9 * (1.0 + lhs.abs()), "{} vs {}", lhs, rhs);
    }

    #[test]
    fn pooling_equals_the_direct_definition(k in 1..4usize, stride in 1..4usize, pad in 0..2usize, ceil in any::<bool>(),
                                             include_pad in any::<bool>(), h in 4..9usize, seed in any::<u64>()) {
        let pad = pad.min(k / 2);
        let x = randn(seed, &[1, 1, h, h + 1]);
        let c = PoolConfig::new(k).stride(stride).padding(pad).ceil_mode(ceil).count_include_pad(include_pad);
        let (xv, w) = (vals(&x), h + 1);
        let max = vals(&max_pool2d(&x, &c).unwrap());
        let avg = vals(&avg_pool2d(&x, &c).unwrap());
        prop_assert_eq!(max, pool_reference(&xv, h, w, k, stride, pad, ceil, true, include_pad));
        let r = pool_reference(&xv, h, w, k, stride, pad, ceil, false, include_pad);
        for (a, b) in avg.iter().zip(&r) {
            prop_assert!((a - b).abs() < 1e-12);
        }
    }

    #[test]
    fn nearest_upsample_then_average_pool_is_identity(fh in 1..4usize, fw in 1..4usize, seed in any::<u64>()) {
        let x = randn(seed, &[2, 3, 4, 5]);
        let up = upsample_nearest2d(&x, Target::Scale([fh as f64, fw as f64])).unwrap();
        prop_assert_eq!(up.dims(), &[2, 3, 4 * fh, 5 * fw]);
        let mut c = PoolConfig::new(1);
        c.kernel = [fh, fw];
        c.stride = [fh, fw];
        prop_assert!(max_diff(&avg_pool2d(&up, &c).unwrap(), &x) < 1e-12);
    }

    #[test]
    fn max_unpool_puts_each_window_max_at_its_recorded_position(k in 2..4usize, hw in 1..4usize, seed in any::<u64>()) {
        let (h, w) = (k * hw, k * (hw + 1));
        // Positive values, so the zeros unpooling writes never exceed a window's maximum.
        let x = (randn(seed, &[2, 2, h, w]).abs().unwrap() + 0.1).unwrap();
        let (p, idx) = max_pool2d_with_indices(&x, &PoolConfig::new(k)).unwrap();
        let up = max_unpool2d(&p, &idx, [h, w]).unwrap();
        let (xv, uv, pv, iv) = (vals(&x), vals(&up), vals(&p), idx.flatten_all().unwrap().to_vec1::<u32>().unwrap());
        let plane = h * w;
        for (wi, (&m, &i)) in pv.iter().zip(&iv).enumerate() {
            let base = (wi / (p.dim(2).unwrap() * p.dim(3).unwrap())) * plane;
            prop_assert_eq!(xv[base + i as usize], m);
            prop_assert_eq!(uv[base + i as usize], m);
        }
        let nonzero = uv.iter().filter(|v| **v != 0.0).count();
        prop_assert_eq!(nonzero, pv.len());
        prop_assert!(max_diff(&max_pool2d(&up, &PoolConfig::new(k)).unwrap(), &p) == 0.0);
    }

    #[test]
    fn average_pooling_preserves_the_mean(k in 1..4usize, hw in 1..4usize, seed in any::<u64>()) {
        let x = randn(seed, &[2, 3, k * hw, k * (hw + 1)]);
        let y = avg_pool2d(&x, &PoolConfig::new(k)).unwrap();
        let m = |t: &Tensor| t.mean_all().unwrap().to_scalar::<f64>().unwrap();
        prop_assert!((m(&x) - m(&y)).abs() < 1e-12);
        let a = adaptive_avg_pool2d(&x, [hw, hw + 1]).unwrap();
        prop_assert!(max_diff(&a, &y) < 1e-12);
    }

    #[test]
    fn weight_norm_effective_weight_has_norm_g(seed in any::<u64>()) {
        let v = randn(seed, &[4, 3, 3, 3]);
        let g = randn(seed + 1, &[4, 1, 1, 1]);
        let wn = WeightNorm::from_parts(Conv2d::from_weights(v, None, ConvConfig::default()), g.clone());
        let norms = wn.effective_weight().unwrap().sqr().unwrap().sum((1, 2, 3)).unwrap().sqrt().unwrap();
        prop_assert!(max_diff(&norms, &g.abs().unwrap().flatten_all().unwrap()) < 1e-12);
    }
}

#[test]
fn two_stacked_3x3_convs_see_a_5x5_window() {
    let dev = Device::Cpu;
    let mut impulse = vec![0f64; 11 * 11];
    impulse[5 * 11 + 5] = 1.0;
    let x = Tensor::from_vec(impulse, (1, 1, 11, 11), &dev).unwrap();
    // Positive weights, so no tap can cancel another.
    let w = (randn(3, &[1, 1, 3, 3]).abs().unwrap() + 0.1).unwrap();
    let c = ConvConfig::same(3, 1);
    let y = conv2d(&conv2d(&x, &w, None, &c).unwrap(), &w, None, &c).unwrap();
    let yv = vals(&y);
    for i in 0..11 {
        for j in 0..11 {
            let inside = (3..=7).contains(&i) && (3..=7).contains(&j);
            assert_eq!(yv[i * 11 + j] != 0.0, inside, "position ({i}, {j})");
        }
    }
}

#[test]
fn batch_norm_normalizes_in_training_and_its_running_stats_converge() {
    let dev = Device::Cpu;
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F64, &dev);
    let cfg = BatchNormConfig {
        affine: false,
        ..Default::default()
    };
    let bn = BatchNorm::new(3, cfg, vb).unwrap();
    let (mu, sigma) = ([2.0, -1.0, 0.5], [3.0, 0.5, 1.0]);
    let shift = Tensor::new(&mu, &dev)
        .unwrap()
        .reshape((1, 3, 1, 1))
        .unwrap();
    let scale = Tensor::new(&sigma, &dev)
        .unwrap()
        .reshape((1, 3, 1, 1))
        .unwrap();
    for step in 0..200 {
        let x = randn(step, &[16, 3, 4, 4])
            .broadcast_mul(&scale)
            .unwrap()
            .broadcast_add(&shift)
            .unwrap();
        let y = bn.forward_t(&x, true).unwrap();
        let mean = vals(&y.mean((0, 2, 3)).unwrap());
        let var = vals(&y.sqr().unwrap().mean((0, 2, 3)).unwrap());
        for c in 0..3 {
            assert!(mean[c].abs() < 1e-9, "channel {c} mean {}", mean[c]);
            assert!(
                (var[c] - 1.0).abs() < 1e-3,
                "channel {c} variance {}",
                var[c]
            );
        }
    }
    let (rm, rv) = (vals(bn.running_mean()), vals(bn.running_var()));
    for c in 0..3 {
        assert!(
            (rm[c] - mu[c]).abs() < 0.1 * sigma[c],
            "running mean {rm:?}"
        );
        assert!(
            (rv[c] / (sigma[c] * sigma[c]) - 1.0).abs() < 0.15,
            "running var {rv:?}"
        );
    }
    // Evaluation uses the running statistics, not the batch's: a constant batch is not zeroed.
    let x = Tensor::ones((2, 3, 2, 2), DType::F64, &dev).unwrap();
    let y = vals(&bn.forward_t(&x, false).unwrap());
    assert!((y[0] - (1.0 - rm[0]) / (rv[0] + 1e-5).sqrt()).abs() < 1e-12);
}

#[test]
fn dropout_is_identity_in_eval_and_drops_p_in_training() {
    let x = Tensor::ones((100, 100), DType::F32, &Device::Cpu).unwrap();
    let d = Dropout::new(0.3, 9).unwrap();
    assert!(max_diff(&d.forward_t(&x, false).unwrap(), &x) == 0.0);
    let y = vals(&d.forward_t(&x, true).unwrap());
    let zeros = y.iter().filter(|v| **v == 0.0).count() as f64 / y.len() as f64;
    assert!((zeros - 0.3).abs() < 0.02, "dropped {zeros}");
    assert!(y.iter().all(|v| *v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
    let again = vals(&Dropout::new(0.3, 9).unwrap().forward_t(&x, true).unwrap());
    assert_eq!(y, again, "same seed, same mask");
}

#[test]
fn local_response_norm_matches_the_alexnet_formula() {
    let x = randn(4, &[2, 7, 3, 3]);
    let lrn = LocalResponseNorm {
        alpha: 0.1,
        ..Default::default()
    };
    let (y, xv) = (vals(&lrn.forward(&x).unwrap()), vals(&x));
    for b in 0..2 {
        for c in 0..7usize {
            for s in 0..9 {
                let at = |ch: usize| xv[(b * 7 + ch) * 9 + s];
                let sum: f64 = (c.saturating_sub(2)..=(c + 2).min(6))
                    .map(|j| at(j) * at(j))
                    .sum();
                let want = at(c) / (2.0 + 0.1 * sum).powf(0.75);
                assert!((y[(b * 7 + c) * 9 + s] - want).abs() < 1e-12);
            }
        }
    }
}

#[test]
fn bilinear_keeps_constants_and_corners_and_interpolates_ramps() {
    let dev = Device::Cpu;
    let ramp: Vec<f64> = (0..12)
        .map(|i| (i / 4) as f64 * 10.0 + (i % 4) as f64)
        .collect();
    let x = Tensor::from_vec(ramp, (1, 1, 3, 4), &dev).unwrap();
    let y = upsample_bilinear2d(&x, Target::Size([5, 7]), true).unwrap();
    let yv = vals(&y);
    // align_corners: output (i, j) samples the input at (i * 2/4, j * 3/6): a ramp stays a ramp.
    for i in 0..5 {
        for j in 0..7 {
            let want = (i as f64 * 0.5) * 10.0 + j as f64 * 0.5;
            assert!((yv[i * 7 + j] - want).abs() < 1e-12);
        }
    }
    let c = Tensor::full(3.5f64, (2, 2, 3, 3), &dev).unwrap();
    let up = upsample_bilinear2d(&c, Target::Scale([2.0, 3.0]), false).unwrap();
    assert_eq!(up.dims(), &[2, 2, 6, 9]);
    assert!(vals(&up).iter().all(|v| (v - 3.5).abs() < 1e-12));
}

#[test]
fn every_op_runs_in_f32_and_agrees_with_f64() {
    let x64 = randn(5, &[2, 4, 8, 8]);
    let w64 = randn(6, &[4, 2, 3, 3]);
    let x32 = x64.to_dtype(DType::F32).unwrap();
    let w32 = w64.to_dtype(DType::F32).unwrap();
    let pool = PoolConfig::new(3).stride(2).padding(1);
    let conv = ConvConfig::same(3, 1).groups(2).pad_mode(PadMode::Reflect);
    type Op<'a> = Box<dyn Fn(&Tensor, &Tensor) -> Tensor + 'a>;
    let ops: Vec<(&str, Op)> = vec![
        (
            "conv2d",
            Box::new(|x, w| conv2d(x, w, None, &conv).unwrap()),
        ),
        (
            "conv_transpose2d",
            Box::new(|x, w| {
                conv_transpose2d(
                    x,
                    w,
                    None,
                    &ConvTransposeConfig::default().stride(2).groups(2),
                )
                .unwrap()
            }),
        ),
        ("max_pool2d", Box::new(|x, _| max_pool2d(x, &pool).unwrap())),
        ("avg_pool2d", Box::new(|x, _| avg_pool2d(x, &pool).unwrap())),
        (
            "adaptive_avg_pool2d",
            Box::new(|x, _| adaptive_avg_pool2d(x, [3, 5]).unwrap()),
        ),
        (
            "nearest",
            Box::new(|x, _| upsample_nearest2d(x, Target::Scale([2.0, 3.0])).unwrap()),
        ),
        (
            "bilinear",
            Box::new(|x, _| upsample_bilinear2d(x, Target::Size([11, 13]), false).unwrap()),
        ),
        (
            "lrn",
            Box::new(|x, _| LocalResponseNorm::default().forward(x).unwrap()),
        ),
        (
            "gelu",
            Box::new(|x, _| Activation::Gelu.forward(x).unwrap()),
        ),
        (
            "softplus",
            Box::new(|x, _| Activation::Softplus.forward(x).unwrap()),
        ),
    ];
    for (name, op) in ops {
        let (a, b) = (op(&x64, &w64), op(&x32, &w32));
        assert_eq!(b.dtype(), DType::F32, "{name}");
        assert!(max_diff(&a, &b) < 1e-4, "{name}: {}", max_diff(&a, &b));
    }
}

#[test]
fn layers_register_pytorch_names_and_inits() {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    Conv2d::new(3, 8, 3, ConvConfig::default().init(Init::He), vb.pp("conv")).unwrap();
    ConvTranspose2d::new(
        8,
        4,
        2,
        ConvTransposeConfig::default().stride(2),
        vb.pp("up"),
    )
    .unwrap();
    BatchNorm::new(8, BatchNormConfig::default(), vb.pp("bn")).unwrap();
    linear_init(100, 50, Init::Torch, vb.pp("fc")).unwrap();
    Subsampling::new(6, 2, vb.pp("s2")).unwrap();
    let conv = Conv2d::new(2, 5, 3, ConvConfig::default().bias(false), vb.pp("wn")).unwrap();
    let wn = WeightNorm::new(conv, vb.pp("wn")).unwrap();
    let data = map.data().lock().unwrap();
    let mut names: Vec<_> = data.keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "bn.bias",
            "bn.running_mean",
            "bn.running_var",
            "bn.weight",
            "conv.bias",
            "conv.weight",
            "fc.bias",
            "fc.weight",
            "s2.bias",
            "s2.weight",
            "up.bias",
            "up.weight",
            "wn.weight",
            "wn.weight_g"
        ]
    );
    assert_eq!(data["up.weight"].dims(), &[8, 4, 2, 2]);
    // He init: weight standard deviation close to sqrt(2 / fan_in), fan_in = 27.
    let w = vals(data["conv.weight"].as_tensor());
    let std = (w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64).sqrt();
    assert!(
        (std / (2.0f64 / 27.0).sqrt() - 1.0).abs() < 0.35,
        "std {std}"
    );
    // PyTorch's Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, fan_in = 100.
    assert_eq!(data["fc.weight"].dims(), &[50, 100]);
    let w = vals(data["fc.weight"].as_tensor());
    let std = (w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64).sqrt();
    assert!((std / (0.1 / 3f64.sqrt()) - 1.0).abs() < 0.05, "std {std}");
    let b = vals(data["fc.bias"].as_tensor());
    assert!(
        w.iter().chain(&b).all(|v| v.abs() <= 0.1),
        "outside the bound"
    );
    // Weight norm starts at g = ||v||, so the wrapped layer computes what it did before.
    let g = vals(wn.g());
    let v = wn
        .v()
        .sqr()
        .unwrap()
        .sum((1, 2, 3))
        .unwrap()
        .sqrt()
        .unwrap();
    assert!(g.iter().zip(vals(&v)).all(|(a, b)| (a - b).abs() < 1e-6));
}

#[test]
fn bad_input_gets_a_clear_error_not_a_panic() {
    let x = randn(1, &[1, 2, 4, 4]);
    let msg = |r: Result<Tensor>| r.unwrap_err().to_string();
    assert!(msg(pad2d(&x, [4, 0, 0, 0], PadMode::Reflect)).contains("too wide"));
    assert!(msg(conv2d(
        &x,
        &randn(2, &[4, 3, 3, 3]),
        None,
        &ConvConfig::default()
    ))
    .contains("input channels"));
    assert!(msg(conv2d(
        &x,
        &randn(2, &[3, 1, 3, 3]),
        None,
        &ConvConfig::default().groups(2)
    ))
    .contains("divisible"));
    assert!(msg(conv2d(
        &x.flatten_from(2).unwrap(),
        &randn(2, &[4, 2, 3, 3]),
        None,
        &ConvConfig::default()
    ))
    .contains("4-D"));
    assert!(msg(max_pool2d(&x, &PoolConfig::new(2).padding(2))).contains("half"));
    assert!(msg(max_pool2d(&x, &PoolConfig::new(5))).contains("shorter"));
    let (p, idx) = max_pool2d_with_indices(&x, &PoolConfig::new(2)).unwrap();
    assert!(msg(max_unpool2d(&p, &idx, [2, 2])).contains("does not fit"));
    assert!(msg(upsample_nearest2d(&x, Target::Scale([0.0, 1.0]))).contains("positive"));
    assert!(Dropout::new(1.0, 0).is_err());
    let t = ConvTransposeConfig::default().stride(2).output_padding(2);
    assert!(
        msg(conv_transpose2d(&x, &randn(2, &[2, 2, 3, 3]), None, &t)).contains("output_padding")
    );
    // An empty spatial axis or kernel: an error, not an arithmetic underflow.
    let empty = Tensor::zeros((1, 2, 0, 4), DType::F64, &Device::Cpu).unwrap();
    let plain = ConvTransposeConfig::default();
    assert!(msg(conv_transpose2d(
        &empty,
        &randn(2, &[2, 2, 3, 3]),
        None,
        &plain
    ))
    .contains("no output"));
    let flat_kernel = Tensor::zeros((2, 2, 0, 3), DType::F64, &Device::Cpu).unwrap();
    assert!(msg(conv_transpose2d(&x, &flat_kernel, None, &plain)).contains("no output"));
}
