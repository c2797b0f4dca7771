//! Every op and module: autograd gradients equal central finite differences in f64, over
//! proptest-generated shapes, strides, paddings and modes.
#![allow(clippy::cloned_ref_to_slice_refs)] // `&[x.clone()]` reads better in the checks below

mod common;

use candle_core::{Module, ModuleT, Tensor};
use common::randn;
use forja_layers::check::check_gradients;
use forja_layers::Linear;
use forja_layers::*;
use proptest::prelude::*;

const MODES: [PadMode; 4] = [
    PadMode::Zeros,
    PadMode::Circular,
    PadMode::Reflect,
    PadMode::Replicate,
];

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cfg(32))]

    #[test]
    fn padding_gradients_match_finite_differences(
        mode in 0..4usize, h in 2..6usize, w in 2..6usize, pads in prop::array::uniform4(0..3usize), seed in any::<u64>()
    ) {
        let mode = MODES[mode];
        // Reflect needs pad < n, the others allow up to n (circular) or any width.
        let pads = pads.map(|p| if mode == PadMode::Reflect { p.min(h.min(w) - 1) } else { p });
        let x = randn(seed, &[2, 1, h, w]);
        check_gradients(&[x.clone()], |t| Ok(pad2d(&t[0], pads, mode)?)).unwrap();
        check_gradients(&[x.flatten_from(2).unwrap()], |t| Ok(pad1d(&t[0], [pads[0], pads[1]], mode)?)).unwrap();
    }

    #[test]
    fn conv2d_gradients_match_finite_differences(
        mode in 0..4usize, k in 1..4usize, stride in 1..3usize, dilation in 1..3usize, pad in 0..2usize,
        groups in 1..3usize, bias in any::<bool>(), h in 4..7usize, wide in 0..2usize, seed in any::<u64>()
    ) {
        prop_assume!(h + 2 * pad > dilation * (k - 1));
        let c = ConvConfig::default().padding(pad).pad_mode(MODES[mode]).stride(stride).dilation(dilation).groups(groups);
        // Square and non-square maps: they take different code paths.
        let x = randn(seed, &[2, 2 * groups, h, h + wide]);
        let w = randn(seed + 1, &[2 * groups, 2, k, k]);
        let b = randn(seed + 2, &[2 * groups]);
        let f = |t: &[Tensor]| Ok(conv2d(&t[0], &t[1], bias.then_some(&t[2]), &c)?);
        check_gradients(&[x, w, b], f).unwrap();
    }

    #[test]
    fn conv1d_gradients_match_finite_differences(
        mode in 0..4usize, k in 1..4usize, stride in 1..3usize, dilation in 1..3usize, pad in 0..2usize,
        groups in 1..3usize, l in 5..9usize, seed in any::<u64>()
    ) {
        let c = ConvConfig::default().padding(pad).pad_mode(MODES[mode]).stride(stride).dilation(dilation).groups(groups);
        let x = randn(seed, &[2, 2 * groups, l]);
        let w = randn(seed + 1, &[3 * groups, 2, k]);
        let b = randn(seed + 2, &[3 * groups]);
        check_gradients(&[x, w, b], |t| Ok(conv1d(&t[0], &t[1], Some(&t[2]), &c)?)).unwrap();
    }

    #[test]
    fn conv_transpose_gradients_match_finite_differences(
        k in 1..4usize, stride in 1..3usize, dilation in 1..3usize, pad in 0..2usize, out_pad in 0..2usize,
        groups in 1..3usize, h in 2..5usize, seed in any::<u64>()
    ) {
        let out_pad = out_pad.min(stride.max(dilation) - 1);
        let c = ConvTransposeConfig::default().padding(pad).output_padding(out_pad).stride(stride).dilation(dilation).groups(groups);
        prop_assume!(c.out_len(h, k).is_some());
        let x = randn(seed, &[2, 2 * groups, h, h + 1]);
        let w = randn(seed + 1, &[2 * groups, 2, k, k]);
        let b = randn(seed + 2, &[2 * groups]);
        check_gradients(&[x.clone(), w.clone(), b.clone()], |t| Ok(conv_transpose2d(&t[0], &t[1], Some(&t[2]), &c)?)).unwrap();
        let (x1, w1) = (x.flatten_from(2).unwrap(), w.narrow(2, 0, 1).unwrap().squeeze(2).unwrap());
        check_gradients(&[x1, w1, b], |t| Ok(conv_transpose1d(&t[0], &t[1], Some(&t[2]), &c)?)).unwrap();
    }

    #[test]
    fn pooling_gradients_match_finite_differences(
        k in 1..4usize, stride in 1..4usize, dilation in 1..3usize, pad in 0..2usize, ceil in any::<bool>(),
        include_pad in any::<bool>(), h in 4..8usize, seed in any::<u64>()
    ) {
        let pad = pad.min(k / 2);
        prop_assume!(h > dilation * (k - 1));
        let c = PoolConfig::new(k).stride(stride).padding(pad).ceil_mode(ceil).count_include_pad(include_pad);
        let x = randn(seed, &[2, 2, h, h + 1]);
        check_gradients(&[x.clone()], |t| Ok(avg_pool2d(&t[0], &c)?)).unwrap();
        check_gradients(&[x.flatten_from(2).unwrap()], |t| Ok(avg_pool1d(&t[0], &c)?)).unwrap();
        let c = c.dilation(dilation);
        check_gradients(&[x.clone()], |t| Ok(max_pool2d(&t[0], &c)?)).unwrap();
        check_gradients(&[x.flatten_from(2).unwrap()], |t| Ok(max_pool1d(&t[0], &c)?)).unwrap();
    }

    #[test]
    fn unpool_adaptive_and_global_pool_gradients_match_finite_differences(
        k in 2..4usize, stride in 1..3usize, h in 4..8usize, oh in 1..5usize, ow in 1..5usize, seed in any::<u64>()
    ) {
        let x = randn(seed, &[2, 2, h, h + 1]);
        let (p, idx) = max_pool2d_with_indices(&x, &PoolConfig::new(k).stride(stride)).unwrap();
        check_gradients(&[p], |t| Ok(max_unpool2d(&t[0], &idx, [h, h + 1])?)).unwrap();
        check_gradients(&[x.clone()], |t| Ok(adaptive_avg_pool2d(&t[0], [oh, ow])?)).unwrap();
        check_gradients(&[x], |t| Ok(global_avg_pool2d(&t[0])?)).unwrap();
    }

    #[test]
    fn upsampling_gradients_match_finite_differences(
        fh in 1..4usize, fw in 1..4usize, oh in 1..9usize, ow in 1..9usize, align in any::<bool>(), seed in any::<u64>()
    ) {
        let x = randn(seed, &[2, 2, 3, 4]);
        let factors = Target::Scale([fh as f64, fw as f64]);
        check_gradients(&[x.clone()], |t| Ok(upsample_nearest2d(&t[0], factors)?)).unwrap();
        check_gradients(&[x.clone()], |t| Ok(upsample_nearest2d(&t[0], Target::Size([oh, ow]))?)).unwrap();
        check_gradients(&[x.clone()], |t| Ok(upsample_bilinear2d(&t[0], factors, align)?)).unwrap();
        check_gradients(&[x], |t| Ok(upsample_bilinear2d(&t[0], Target::Size([oh, ow]), align)?)).unwrap();
    }

    #[test]
    fn normalization_gradients_match_finite_differences(
        rank in 2..5usize, train in any::<bool>(), groups in 1..3usize, seed in any::<u64>()
    ) {
        let shape = [3, 2 * groups, 3, 2][..rank].to_vec();
        let c = 2 * groups;
        let x = randn(seed, &shape);
        let (w, b) = (randn(seed + 1, &[c]), randn(seed + 2, &[c]));
        let stats = (randn(seed + 3, &[c]), randn(seed + 4, &[c]).abs().unwrap());
        check_gradients(&[x.clone(), w.clone(), b.clone()], |t| {
            let bn = BatchNorm::from_parts(Some(t[1].clone()), Some(t[2].clone()), stats.0.clone(), stats.1.clone(), BatchNormConfig::default())?;
            bn.forward_t(&t[0], train)
        }).unwrap();
        let last = shape[rank - 1];
        let (lw, lb) = (randn(seed + 5, &[last]), randn(seed + 6, &[last]));
        check_gradients(&[x.clone(), lw, lb], |t| {
            LayerNorm::from_parts(Some(t[1].clone()), Some(t[2].clone()), &[last], 1e-5).forward(&t[0])
        }).unwrap();
        check_gradients(&[x.clone(), w, b], |t| {
            GroupNorm::from_parts(Some(t[1].clone()), Some(t[2].clone()), groups, c, 1e-5)?.forward(&t[0])
        }).unwrap();
        // LRN with a large alpha so the normaliser matters.
        let lrn = LocalResponseNorm { size: 3, alpha: 0.5, beta: 0.75, k: 2.0 };
        check_gradients(&[x], |t| lrn.forward(&t[0])).unwrap();
    }

    #[test]
    fn weight_norm_gradients_reach_g_and_v(seed in any::<u64>(), bias in any::<bool>()) {
        let x = randn(seed, &[2, 3, 5, 5]);
        let v = randn(seed + 1, &[4, 3, 3, 3]);
        let g = randn(seed + 2, &[4, 1, 1, 1]);
        let b = randn(seed + 3, &[4]);
        check_gradients(&[x.clone(), v, g, b], |t| {
            let conv = Conv2d::from_weights(t[1].clone(), bias.then(|| t[3].clone()), ConvConfig::default());
            WeightNorm::from_parts(conv, t[2].clone()).forward(&t[0])
        }).unwrap();
        let (v, g) = (randn(seed + 4, &[3, 5]), randn(seed + 5, &[3, 1]));
        check_gradients(&[x.flatten_from(1).unwrap().narrow(1, 0, 5).unwrap(), v, g], |t| {
            WeightNorm::from_parts(Linear::new(t[1].clone(), None), t[2].clone()).forward(&t[0])
        }).unwrap();
    }

    #[test]
    fn subsampling_dropout_and_activation_gradients_match_finite_differences(seed in any::<u64>(), p in 0.0..0.9f64) {
        let x = randn(seed, &[2, 3, 4, 6]);
        let (coef, bias) = (randn(seed + 1, &[3]), randn(seed + 2, &[3]));
        check_gradients(&[x.clone(), coef, bias], |t| {
            Subsampling::from_weights(t[1].clone(), t[2].clone(), 2).forward(&t[0])
        }).unwrap();
        // A fresh layer with the same seed per call draws the same mask.
        check_gradients(&[x.clone()], |t| Dropout::new(p, seed).unwrap().forward_t(&t[0], true)).unwrap();
        // Inputs at least 1e-3 from zero, where ReLU's and leaky ReLU's kinks are: within the
        // finite differences' step (1e-6) of it, the difference takes both slopes. Unshifted,
        // about one run in 70 draws such an input (144 inputs, two kinks, 64 cases); seed
        // 3848643269145926585 did.
        let x = (x.sign().unwrap() * 1e-3).unwrap().add(&x).unwrap();
        for act in [Activation::Relu, Activation::LeakyRelu(0.2), Activation::Elu(1.0), Activation::Tanh,
                    Activation::Sigmoid, Activation::Softplus, Activation::Gelu, Activation::ScaledTanh] {
            check_gradients(&[x.clone()], |t| act.forward(&t[0])).unwrap_or_else(|e| panic!("{act:?}: {e}"));
        }
    }
}

#[test]
fn gradient_check_catches_a_wrong_gradient() {
    // A function whose autograd gradient is deliberately wrong: detach hides x from the graph
    // in one term, so autograd reports 1 where the true derivative is 2.
    let x = randn(7, &[5]);
    let err = check_gradients(&[x], |t| &t[0] + t[0].detach()).unwrap_err();
    assert!(err.to_string().contains("finite difference"), "{err}");
}
