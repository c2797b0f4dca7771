//! Every flow layer, and compositions of them, in f64: both directions invert each other, and
//! the reported log|det J| equals log|det| of the Jacobian computed by central finite
//! differences, in both directions.

use candle_core::{DType, Device, Tensor};
use forja_generative::flows::{
    log_abs_det, ActNorm, AutoregressiveFlow, Composite, Coupling, CouplingConfig, CouplingKind,
    Flow, FlowDensity, ImageCoupling, ImageCouplingConfig, ImageMask, InvConv1x1, Inverted,
    LeakyRelu, LuLinear, MadeConfig, MultiScale, MultiScaleConfig, Permutation, Planar, Radial,
    Residual, ResidualConfig, ResidualLogDet, Sigmoid, Speed, Squeeze,
};
use forja_layers::check::GradCheck;
use forja_train::ParamStore;
use proptest::prelude::*;

fn vb(store: &ParamStore) -> candle_nn::VarBuilder<'static> {
    store.var_builder(DType::F64, &Device::Cpu)
}

fn tensor(v: &[f64], d: usize) -> Tensor {
    Tensor::from_vec(v.to_vec(), (v.len() / d, d), &Device::Cpu).unwrap()
}

fn rows(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// log|det| of the Jacobian of `f` at the point `p` (one sample), by central differences.
fn brute_logdet(f: &dyn Fn(&Tensor) -> Tensor, p: &[f64]) -> f64 {
    let d = p.len();
    let eps = 1e-6;
    let mut jac = vec![0.0; d * d];
    for j in 0..d {
        let (mut hi, mut lo) = (p.to_vec(), p.to_vec());
        hi[j] += eps;
        lo[j] -= eps;
        let (fh, fl) = (rows(&f(&tensor(&hi, d))), rows(&f(&tensor(&lo, d))));
        for i in 0..d {
            jac[i * d + j] = (fh[i] - fl[i]) / (2.0 * eps);
        }
    }
    log_abs_det(&jac, d).expect("the Jacobian is singular")
}

fn close(a: &[f64], b: &[f64], tol: f64, what: &str) -> Result<(), TestCaseError> {
    for (x, y) in a.iter().zip(b) {
        prop_assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{}: {} vs {}",
            what,
            x,
            y
        );
    }
    Ok(())
}

/// Inverts both ways and checks both log-dets against finite differences at every sample.
fn check(flow: &dyn Flow, z: &[f64], d: usize) -> Result<(), TestCaseError> {
    let zt = tensor(z, d);
    let (x, ld_fwd) = flow.forward(&zt).unwrap();
    let (z_back, ld_inv) = flow.inverse(&x).unwrap();
    close(&rows(&z_back), z, 1e-7, "f⁻¹(f(z)) = z")?;
    let sum: Vec<f64> = rows(&(&ld_fwd + &ld_inv).unwrap());
    close(
        &sum,
        &vec![0.0; sum.len()],
        1e-7,
        "forward + inverse log-dets",
    )?;
    let (x_again, _) = flow.forward(&z_back).unwrap();
    close(&rows(&x_again), &rows(&x), 1e-7, "f(f⁻¹(x)) = x")?;
    let fwd = |t: &Tensor| flow.forward(t).unwrap().0;
    let inv = |t: &Tensor| flow.inverse(t).unwrap().0;
    let (xs, lf, li) = (rows(&x), rows(&ld_fwd), rows(&ld_inv));
    for i in 0..z.len() / d {
        let zi = &z[i * d..(i + 1) * d];
        let xi = &xs[i * d..(i + 1) * d];
        close(&[brute_logdet(&fwd, zi)], &[lf[i]], 1e-5, "forward log-det")?;
        close(&[brute_logdet(&inv, xi)], &[li[i]], 1e-5, "inverse log-det")?;
    }
    Ok(())
}

fn points(d: usize, n: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(-2.0f64..2.0, d * n)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn permutation_and_lu_linear_invert_and_match_brute_force_log_dets(
        (d, z) in (1usize..6).prop_flat_map(|d| (Just(d), points(d, 3))), seed in any::<u64>(),
    ) {
        check(&Permutation::random(d, seed), &z, d)?;
        check(&Permutation::reverse(d), &z, d)?;
        let store = ParamStore::new(seed);
        check(&LuLinear::new(d, seed, vb(&store)).unwrap(), &z, d)?;
    }

    #[test]
    fn element_wise_flows_invert_and_match_brute_force_log_dets(
        (d, z) in (1usize..6).prop_flat_map(|d| (Just(d), points(d, 3))),
        slope in 0.05f64..3.0, seed in any::<u64>(),
    ) {
        check(&LeakyRelu::new(slope).unwrap(), &z, d)?;
        check(&Sigmoid, &z, d)?;
        // Logit: defined on (0, 1); feed it sigmoid outputs.
        let (x01, _) = Sigmoid.forward(&tensor(&z, d)).unwrap();
        check(&Inverted(Sigmoid), &rows(&x01), d)?;
        let store = ParamStore::new(seed);
        let act = ActNorm::new(d, vb(&store)).unwrap();
        act.initialize(&tensor(&[z.clone(), z.iter().map(|v| v * 0.5 + 1.0).collect()].concat(), d)).unwrap();
        check(&act, &z, d)?;
    }

    #[test]
    fn planar_and_radial_flows_invert_and_match_brute_force_log_dets(
        (d, z) in (1usize..6).prop_flat_map(|d| (Just(d), points(d, 3))), seed in any::<u64>(),
    ) {
        let store = ParamStore::new(seed);
        check(&Planar::new(d, vb(&store).pp("planar")).unwrap(), &z, d)?;
        check(&Radial::new(d, vb(&store).pp("radial")).unwrap(), &z, d)?;
    }

    #[test]
    fn coupling_flows_invert_and_match_brute_force_log_dets(
        (d, z) in (2usize..7).prop_flat_map(|d| (Just(d), points(d, 3))),
        seed in any::<u64>(), affine in any::<bool>(), even in any::<bool>(),
    ) {
        let kind = if affine { CouplingKind::Affine } else { CouplingKind::Additive };
        let store = ParamStore::new(seed);
        for (k, mut cfg) in [CouplingConfig::half(kind, d, even), CouplingConfig::alternating(kind, d, even)].into_iter().enumerate() {
            cfg.zero_init = false; // random conditioners, not the identity
            cfg.hidden = 8;
            check(&Coupling::new(&cfg, vb(&store).pp(k.to_string())).unwrap(), &z, d)?;
        }
    }

    #[test]
    fn maf_and_iaf_invert_both_ways_and_match_brute_force_log_dets(
        (d, z) in (1usize..6).prop_flat_map(|d| (Just(d), points(d, 3))), seed in any::<u64>(),
    ) {
        let store = ParamStore::new(seed);
        let cfg = MadeConfig { dim: d, hidden: vec![16, 16], zero_init: false };
        for (k, speed) in [Speed::FastDensity, Speed::FastSampling].into_iter().enumerate() {
            check(&AutoregressiveFlow::new(&cfg, speed, vb(&store).pp(k.to_string())).unwrap(), &z, d)?;
        }
    }

    /// A stack of every kind: log-dets add up, and still equal the brute-force Jacobian's.
    #[test]
    fn composed_flows_invert_and_their_log_dets_add(
        z in points(3, 3), seed in any::<u64>(),
    ) {
        let d = 3;
        let store = ParamStore::new(seed);
        let v = vb(&store);
        let mut coupling = CouplingConfig::half(CouplingKind::Affine, d, true);
        coupling.zero_init = false;
        let flow = Composite(vec![
            Box::new(LuLinear::new(d, seed, v.pp("lu")).unwrap()),
            Box::new(Planar::new(d, v.pp("planar")).unwrap()),
            Box::new(Coupling::new(&coupling, v.pp("coupling")).unwrap()),
            Box::new(LeakyRelu::new(0.3).unwrap()),
            Box::new(AutoregressiveFlow::new(&MadeConfig { dim: d, hidden: vec![8], zero_init: false }, Speed::FastDensity, v.pp("maf")).unwrap()),
            Box::new(Radial::new(d, v.pp("radial")).unwrap()),
            Box::new(Permutation::random(d, seed)),
        ]);
        check(&flow, &z, d)?;
    }
}

#[test]
fn made_outputs_depend_only_on_earlier_features() {
    let store = ParamStore::new(3);
    let d = 5;
    let flow = AutoregressiveFlow::new(
        &MadeConfig {
            dim: d,
            hidden: vec![12, 12],
            zero_init: false,
        },
        Speed::FastDensity,
        vb(&store),
    )
    .unwrap();
    // The normalizing map's Jacobian is lower-triangular: z_i depends on x_j only for j <= i.
    let x = vec![0.3, -1.2, 0.7, 2.0, -0.4];
    let inv = |t: &Tensor| flow.inverse(t).unwrap().0;
    for j in 0..d {
        let mut moved = x.clone();
        moved[j] += 0.5;
        let (a, b) = (rows(&inv(&tensor(&x, d))), rows(&inv(&tensor(&moved, d))));
        for i in 0..j {
            assert_eq!(a[i], b[i], "z_{i} changed when x_{j} moved");
        }
        assert_ne!(a[j], b[j]);
    }
}

#[test]
fn planar_constraint_keeps_the_flow_invertible_even_for_adversarial_u() {
    // u opposite to w would make 1 + h' uᵀw vanish; û keeps wᵀû >= -1.
    let store = ParamStore::new(0);
    let p = Planar::new(4, vb(&store)).unwrap();
    let u_hat = rows(&p.u_hat().unwrap());
    let w = rows(
        &store
            .vars()
            .into_iter()
            .find(|(n, _)| n == "w")
            .unwrap()
            .1
            .as_tensor()
            .clone(),
    );
    let wu: f64 = u_hat.iter().zip(&w).map(|(a, b)| a * b).sum();
    assert!(wu >= -1.0, "wᵀû = {wu}");
}

#[test]
fn density_of_a_standard_normal_flow_is_the_normal_density_and_samples_score_finite() {
    let store = ParamStore::new(1);
    let d = 2;
    let flow = Composite(vec![Box::new(ActNorm::new(d, vb(&store)).unwrap())]);
    let density = FlowDensity::new(Box::new(flow), d);
    let lp = rows(
        &density
            .log_prob(&tensor(&[0.0, 0.0, 1.0, -1.0], d))
            .unwrap(),
    );
    let c = -(std::f64::consts::TAU).ln();
    assert!(
        (lp[0] - c).abs() < 1e-12 && (lp[1] - (c - 1.0)).abs() < 1e-12,
        "{lp:?}"
    );
    let s = density
        .sample(100, 0.5, 7, DType::F64, &Device::Cpu)
        .unwrap();
    assert_eq!(s.dims(), &[100, 2]);
    assert!(rows(&density.log_prob(&s).unwrap())
        .iter()
        .all(|v| v.is_finite()));
    let again = density
        .sample(100, 0.5, 7, DType::F64, &Device::Cpu)
        .unwrap();
    assert_eq!(rows(&s), rows(&again));
}

#[test]
fn bad_configurations_are_refused_with_clear_errors() {
    assert!(LeakyRelu::new(0.0).is_err());
    let store = ParamStore::new(0);
    let all_kept = CouplingConfig::with_mask(CouplingKind::Affine, vec![true, true]);
    let err = Coupling::new(&all_kept, vb(&store)).err().unwrap();
    assert!(err.to_string().contains("mask"), "{err}");
    let flow = Permutation::reverse(3);
    let err = flow.forward(&tensor(&[1.0, 2.0], 2)).unwrap_err();
    assert!(err.to_string().contains("[N, 3]"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Exact log-det: equal to the brute-force Jacobian's; the power series converges to it.
    #[test]
    fn residual_blocks_invert_by_fixed_point_and_their_log_dets_match(
        (d, z) in (1usize..5).prop_flat_map(|d| (Just(d), points(d, 3))), seed in any::<u64>(),
    ) {
        let store = ParamStore::new(seed);
        let mut cfg = ResidualConfig::new(d, vec![8, 8]);
        cfg.logdet = ResidualLogDet::Exact;
        cfg.inverse_iterations = 200;
        let exact = Residual::new(&cfg, vb(&store)).unwrap();
        check(&exact, &z, d)?;
        cfg.logdet = ResidualLogDet::PowerSeries { terms: 60 };
        let series = Residual::new(&cfg, vb(&store)).unwrap();
        let x = tensor(&z, d);
        let (_, a) = exact.inverse(&x).unwrap();
        let (_, b) = series.inverse(&x).unwrap();
        close(&rows(&b), &rows(&a), 1e-6, "power series vs exact log-det")?;
    }
}

/// An image flow seen as a vector flow on flattened images, so the vector checks apply: inputs
/// of the generative direction have shape `input`, those of the normalizing one `output`.
struct Flat<F> {
    flow: F,
    input: Vec<usize>,
    output: Vec<usize>,
}

type FlowResult = forja_generative::Result<(Tensor, Tensor)>;

fn through(v: &Tensor, shape: &[usize], f: impl Fn(&Tensor) -> FlowResult) -> FlowResult {
    let dims: Vec<usize> = std::iter::once(v.dim(0)?)
        .chain(shape.iter().copied())
        .collect();
    let (y, ld) = f(&v.reshape(dims)?)?;
    Ok((y.flatten_from(1)?, ld))
}

impl<F: Flow> Flow for Flat<F> {
    fn forward(&self, z: &Tensor) -> FlowResult {
        through(z, &self.input, |t| self.flow.forward(t))
    }

    fn inverse(&self, x: &Tensor) -> FlowResult {
        through(x, &self.output, |t| self.flow.inverse(t))
    }
}

/// Overwrites every parameter with seeded normal values of standard deviation `std`, so that
/// layers initialised as the identity (zero last layers) are tested away from it.
fn jiggle(store: &ParamStore, seed: u64, std: f64) {
    let mut rng = forja_data::seed::rng(seed, &[]);
    for (_, var) in store.vars() {
        let values: Vec<f64> = (0..var.elem_count())
            .map(|_| std * forja_data::seed::normal(&mut rng))
            .collect();
        var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn squeeze_and_invertible_1x1_convolution_invert_and_match_brute_force_log_dets(
        c in 1usize..4, h2 in 1usize..3, w2 in 1usize..3, seed in any::<u64>(),
        values in prop::collection::vec(-2.0f64..2.0, 2 * 3 * 4 * 4),
    ) {
        let (h, w) = (2 * h2, 2 * w2);
        let d = c * h * w;
        let z = &values[..2 * d];
        let squeeze = Flat { flow: Squeeze, input: vec![c, h, w], output: vec![4 * c, h2, w2] };
        check(&squeeze, z, d)?;
        let store = ParamStore::new(seed);
        let conv = InvConv1x1::new(c, seed, vb(&store)).unwrap();
        check(&Flat { flow: conv, input: vec![c, h, w], output: vec![c, h, w] }, z, d)?;
    }

    #[test]
    fn image_couplings_with_both_masks_invert_and_match_brute_force_log_dets(
        c in 2usize..4, h in 1usize..4, w in 2usize..4, seed in any::<u64>(), additive in any::<bool>(),
        values in prop::collection::vec(-2.0f64..2.0, 2 * 3 * 3 * 3),
    ) {
        let d = c * h * w;
        let kind = if additive { CouplingKind::Additive } else { CouplingKind::Affine };
        for mask in [
            ImageMask::Checkerboard { even: true },
            ImageMask::Checkerboard { even: false },
            ImageMask::Channel { first: true },
            ImageMask::Channel { first: false },
        ] {
            let store = ParamStore::new(seed);
            let cfg = ImageCouplingConfig::new(kind, mask, c, 4);
            let coupling = ImageCoupling::new(&cfg, vb(&store)).unwrap();
            jiggle(&store, seed, 0.5);
            let flat = Flat { flow: coupling, input: vec![c, h, w], output: vec![c, h, w] };
            check(&flat, &values[..2 * d], d)?;
        }
    }

    #[test]
    fn multi_scale_flow_inverts_and_matches_brute_force_log_dets(
        c in 1usize..3, scales in 1usize..3, seed in any::<u64>(),
        values in prop::collection::vec(-2.0f64..2.0, 2 * 2 * 4 * 4),
    ) {
        let (h, w) = (4, 4);
        let d = c * h * w;
        let store = ParamStore::new(seed);
        let mut cfg = MultiScaleConfig::new([c, h, w], scales, 4);
        (cfg.couplings, cfg.final_couplings) = (2, 2);
        let flow = MultiScale::new(&cfg, vb(&store)).unwrap();
        jiggle(&store, seed, 0.3);
        check(&Flat { flow, input: vec![d], output: vec![c, h, w] }, &values[..2 * d], d)?;
    }
}

#[test]
fn squeeze_moves_each_2x2_block_into_four_channels() {
    let x = Tensor::arange(0f64, 16.0, &Device::Cpu)
        .unwrap()
        .reshape((1, 1, 4, 4))
        .unwrap();
    let (y, _) = Squeeze.forward(&x).unwrap();
    assert_eq!(y.dims(), &[1, 4, 2, 2]);
    // Channel k holds offset (k / 2, k % 2) of every block.
    assert_eq!(
        rows(&y.get(0).unwrap().get(0).unwrap()),
        vec![0.0, 2.0, 8.0, 10.0]
    );
    assert_eq!(
        rows(&y.get(0).unwrap().get(3).unwrap()),
        vec![5.0, 7.0, 13.0, 15.0]
    );
    assert!(Squeeze
        .forward(&Tensor::zeros((1, 1, 3, 4), DType::F64, &Device::Cpu).unwrap())
        .is_err());
}

#[test]
fn multi_scale_factors_out_half_the_channels_per_scale_and_refuses_odd_sizes() {
    let store = ParamStore::new(3);
    let cfg = MultiScaleConfig::new([1, 8, 8], 3, 4);
    let flow = MultiScale::new(&cfg, vb(&store)).unwrap();
    let x = Tensor::zeros((2, 1, 8, 8), DType::F64, &Device::Cpu).unwrap();
    let (z, _) = flow.inverse(&x).unwrap();
    assert_eq!(z.dims(), &[2, 64]);
    let (back, _) = flow.forward(&z).unwrap();
    assert_eq!(back.dims(), &[2, 1, 8, 8]);
    let err = MultiScale::new(&MultiScaleConfig::new([1, 6, 6], 3, 4), vb(&store))
        .err()
        .unwrap();
    assert!(err.to_string().contains("divisible by 4"), "{err}");
    let err = flow
        .inverse(&Tensor::zeros((2, 1, 4, 4), DType::F64, &Device::Cpu).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("[N, 1, 8, 8]"), "{err}");
}

/// The gradient of the summed log-likelihood of `x` with respect to every parameter in `store`
/// equals its central finite difference.
fn assert_likelihood_gradients(store: &ParamStore, density: &FlowDensity, x: &Tensor) {
    let check = GradCheck {
        atol: 1e-5,
        ..GradCheck::default()
    };
    let loss = || density.log_prob(x)?.sum_all();
    if let Err(e) = check.run_vars(&store.vars(), loss) {
        panic!("{e}");
    }
}

/// Planar flows solve for their input numerically; i-ResNet's exact log-det is taken on the
/// host: the likelihood's gradient must still be the true one.
#[test]
fn likelihood_gradients_through_numerical_inverses_and_host_log_dets_match_finite_differences() {
    let x = tensor(&[0.3, -1.2, 1.5, 0.4, -0.7, 2.0], 2);
    let store = ParamStore::new(11);
    let v = vb(&store);
    let planar = Composite(vec![
        Box::new(Planar::new(2, v.pp("0")).unwrap()),
        Box::new(Planar::new(2, v.pp("1")).unwrap()),
    ]);
    jiggle(&store, 5, 0.8);
    assert_likelihood_gradients(&store, &FlowDensity::new(Box::new(planar), 2), &x);
    for logdet in [
        ResidualLogDet::Exact,
        ResidualLogDet::PowerSeries { terms: 8 },
    ] {
        let store = ParamStore::new(12);
        let mut cfg = ResidualConfig::new(2, vec![5]);
        cfg.logdet = logdet;
        let flow = Residual::new(&cfg, vb(&store)).unwrap();
        assert_likelihood_gradients(&store, &FlowDensity::new(Box::new(flow), 2), &x);
    }
    let store = ParamStore::new(13);
    let v = vb(&store);
    let made = MadeConfig {
        dim: 2,
        hidden: vec![4],
        zero_init: false,
    };
    let mut coupling = CouplingConfig::alternating(CouplingKind::Affine, 2, true);
    (coupling.hidden, coupling.zero_init) = (4, false);
    let stack = Composite(vec![
        Box::new(AutoregressiveFlow::new(&made, Speed::FastDensity, v.pp("maf")).unwrap()),
        Box::new(AutoregressiveFlow::new(&made, Speed::FastSampling, v.pp("iaf")).unwrap()),
        Box::new(Coupling::new(&coupling, v.pp("coupling")).unwrap()),
    ]);
    assert_likelihood_gradients(&store, &FlowDensity::new(Box::new(stack), 2), &x);
}

#[test]
fn detached_sampling_direction_gives_the_same_values_as_the_differentiable_one() {
    let store = ParamStore::new(4);
    let cfg = MadeConfig {
        dim: 4,
        hidden: vec![8],
        zero_init: false,
    };
    let v = vb(&store);
    let flow = Composite(vec![
        Box::new(AutoregressiveFlow::new(&cfg, Speed::FastDensity, v.pp("maf")).unwrap()),
        Box::new(AutoregressiveFlow::new(&cfg, Speed::FastSampling, v.pp("iaf")).unwrap()),
    ]);
    let z = tensor(&[0.1, -0.4, 1.3, 0.7, -1.1, 0.2, 0.0, 2.0], 4);
    let (x, ld) = flow.forward(&z).unwrap();
    let (xd, ldd) = flow.forward_detached(&z).unwrap();
    assert_eq!(rows(&x), rows(&xd));
    assert_eq!(rows(&ld), rows(&ldd));
}
