//! Each optimizer against updates computed by hand on L(p) = 0.5 * sum(p^2), whose gradient is p.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use forja_train::{clip_grad_norm, Optimizer, OptimizerConfig, OptimizerKind, Schedule};

const P0: [f64; 2] = [1.0, -2.0];

fn cfg(kind: OptimizerKind, lr: f64) -> OptimizerConfig {
    OptimizerConfig {
        kind,
        lr,
        ..Default::default()
    }
}

/// Runs `steps` updates on the quadratic and returns the parameter after each.
fn run(cfg: OptimizerConfig, steps: usize) -> Vec<Vec<f64>> {
    let var = Var::new(&P0, &Device::Cpu).unwrap();
    let mut opt = Optimizer::new(cfg, vec![("p".into(), var.clone())]).unwrap();
    (0..steps)
        .map(|_| {
            let loss = (var.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
            opt.backward_step(&loss, 1.0, None).unwrap();
            var.as_tensor().to_vec1::<f64>().unwrap()
        })
        .collect()
}

fn assert_close(got: &[f64], want: &[f64]) {
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "got {got:?}, want {want:?}");
    }
}

#[test]
fn sgd_steps_against_the_gradient() {
    let got = run(cfg(OptimizerKind::Sgd, 0.1), 2);
    assert_close(&got[0], &[0.9, -1.8]);
    assert_close(&got[1], &[0.81, -1.62]);
}

#[test]
fn sgd_momentum_with_weight_decay_accumulates_the_decayed_gradient() {
    let c = OptimizerConfig {
        momentum: 0.9,
        weight_decay: 0.1,
        ..cfg(OptimizerKind::Sgd, 0.1)
    };
    let got = run(c, 2);
    for (i, &p0) in P0.iter().enumerate() {
        let g0 = p0 + 0.1 * p0; // gradient plus weight decay
        let b0 = g0; // the first buffer is the gradient itself
        let p1 = p0 - 0.1 * b0;
        let g1 = p1 + 0.1 * p1;
        let b1 = 0.9 * b0 + g1;
        let p2 = p1 - 0.1 * b1;
        assert_close(&[got[0][i], got[1][i]], &[p1, p2]);
    }
}

#[test]
fn sgd_nesterov_looks_ahead_along_the_momentum() {
    let c = OptimizerConfig {
        momentum: 0.5,
        nesterov: true,
        ..cfg(OptimizerKind::Sgd, 0.1)
    };
    let got = run(c, 2);
    for (i, &p0) in P0.iter().enumerate() {
        let b0 = p0;
        let p1 = p0 - 0.1 * (p0 + 0.5 * b0);
        let b1 = 0.5 * b0 + p1;
        let p2 = p1 - 0.1 * (p1 + 0.5 * b1);
        assert_close(&[got[0][i], got[1][i]], &[p1, p2]);
    }
}

#[test]
fn adam_corrects_the_bias_of_both_moments() {
    let got = run(cfg(OptimizerKind::Adam, 0.1), 2);
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    for (i, &p0) in P0.iter().enumerate() {
        // Step 1: the bias-corrected moments are g and g^2, so the step is lr * sign(g).
        let m1 = (1.0 - b1) * p0;
        let v1 = (1.0 - b2) * p0 * p0;
        let p1 = p0 - 0.1 * (m1 / (1.0 - b1)) / ((v1 / (1.0 - b2)).sqrt() + eps);
        let m2 = b1 * m1 + (1.0 - b1) * p1;
        let v2 = b2 * v1 + (1.0 - b2) * p1 * p1;
        let p2 = p1 - 0.1 * (m2 / (1.0 - b1 * b1)) / ((v2 / (1.0 - b2 * b2)).sqrt() + eps);
        assert_close(&[got[0][i], got[1][i]], &[p1, p2]);
    }
    // So the first step moves each weight by lr against its gradient's sign (up to eps).
    for (g, w) in got[0].iter().zip([0.9, -1.9]) {
        assert!((g - w).abs() < 1e-8, "{g} vs {w}");
    }
}

#[test]
fn adam_l2_and_adamw_decoupled_decay_differ_as_defined() {
    let adam = run(
        OptimizerConfig {
            weight_decay: 0.5,
            ..cfg(OptimizerKind::Adam, 0.1)
        },
        1,
    );
    let adamw = run(
        OptimizerConfig {
            weight_decay: 0.5,
            ..cfg(OptimizerKind::Adamw, 0.1)
        },
        1,
    );
    for (i, &p0) in P0.iter().enumerate() {
        // Adam: the decay joins the gradient, whose first step is still lr * sign.
        let g = p0 + 0.5 * p0;
        assert!((adam[0][i] - (p0 - 0.1 * g / (g.abs() + 1e-8))).abs() < 1e-12);
        // AdamW: the weight shrinks by lr * wd, then the plain Adam step.
        let want = p0 * (1.0 - 0.1 * 0.5) - 0.1 * p0 / (p0.abs() + 1e-8);
        assert!(
            (adamw[0][i] - want).abs() < 1e-12,
            "{} vs {want}",
            adamw[0][i]
        );
    }
}

#[test]
fn rmsprop_divides_by_the_root_mean_square() {
    let got = run(cfg(OptimizerKind::Rmsprop, 0.01), 2);
    let (a, eps) = (0.99f64, 1e-8);
    for (i, &p0) in P0.iter().enumerate() {
        let v1 = (1.0 - a) * p0 * p0;
        let p1 = p0 - 0.01 * p0 / (v1.sqrt() + eps);
        let v2 = a * v1 + (1.0 - a) * p1 * p1;
        let p2 = p1 - 0.01 * p1 / (v2.sqrt() + eps);
        assert_close(&[got[0][i], got[1][i]], &[p1, p2]);
    }
}

#[test]
fn rmsprop_momentum_accumulates_scaled_steps() {
    let c = OptimizerConfig {
        momentum: 0.9,
        ..cfg(OptimizerKind::Rmsprop, 0.01)
    };
    let got = run(c, 2);
    let (a, eps) = (0.99f64, 1e-8);
    for (i, &p0) in P0.iter().enumerate() {
        let v1 = (1.0 - a) * p0 * p0;
        let b1 = p0 / (v1.sqrt() + eps);
        let p1 = p0 - 0.01 * b1;
        let v2 = a * v1 + (1.0 - a) * p1 * p1;
        let b2 = 0.9 * b1 + p1 / (v2.sqrt() + eps);
        let p2 = p1 - 0.01 * b2;
        assert_close(&[got[0][i], got[1][i]], &[p1, p2]);
    }
}

#[test]
fn learning_rate_factor_scales_the_step() {
    let var = Var::new(&P0, &Device::Cpu).unwrap();
    let mut opt = Optimizer::new(
        cfg(OptimizerKind::Sgd, 0.1),
        vec![("p".into(), var.clone())],
    )
    .unwrap();
    let loss = (var.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
    opt.backward_step(&loss, 0.5, None).unwrap();
    assert_close(&var.as_tensor().to_vec1::<f64>().unwrap(), &[0.95, -1.9]);
}

#[test]
fn saved_state_continues_exactly_like_an_uninterrupted_optimizer() {
    for kind in [
        OptimizerKind::Sgd,
        OptimizerKind::Adam,
        OptimizerKind::Adamw,
        OptimizerKind::Rmsprop,
    ] {
        let c = OptimizerConfig {
            momentum: 0.9,
            weight_decay: 0.01,
            ..cfg(kind, 0.01)
        };
        let straight = run(c.clone(), 4);

        let var = Var::new(&P0, &Device::Cpu).unwrap();
        let mut opt = Optimizer::new(c.clone(), vec![("p".into(), var.clone())]).unwrap();
        let step = |opt: &mut Optimizer, var: &Var| {
            let loss = (var.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
            opt.backward_step(&loss, 1.0, None).unwrap();
        };
        step(&mut opt, &var);
        step(&mut opt, &var);
        let state: HashMap<String, Tensor> = opt.state("optim").unwrap().into_iter().collect();
        let var2 = Var::from_tensor(var.as_tensor()).unwrap();
        let mut opt2 = Optimizer::new(c, vec![("p".into(), var2.clone())]).unwrap();
        opt2.load_state("optim", &state).unwrap();
        assert_eq!(opt2.steps(), 2);
        step(&mut opt2, &var2);
        step(&mut opt2, &var2);
        assert_eq!(
            var2.as_tensor().to_vec1::<f64>().unwrap(),
            straight[3],
            "{kind:?}"
        );
    }
}

#[test]
fn invalid_settings_are_rejected() {
    let var = Var::new(&P0, &Device::Cpu).unwrap();
    let vars = || vec![("p".to_string(), var.clone())];
    assert!(Optimizer::new(cfg(OptimizerKind::Adam, 0.0), vars()).is_err());
    assert!(Optimizer::new(cfg(OptimizerKind::Adam, f64::NAN), vars()).is_err());
    let nesterov_without_momentum = OptimizerConfig {
        nesterov: true,
        ..cfg(OptimizerKind::Sgd, 0.1)
    };
    assert!(Optimizer::new(nesterov_without_momentum, vars()).is_err());
}

#[test]
fn clipping_rescales_to_the_global_norm_and_leaves_small_gradients_alone() {
    let a = Var::new(&[3.0f64], &Device::Cpu).unwrap();
    let b = Var::new(&[4.0f64], &Device::Cpu).unwrap();
    let vars = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
    // L = 0.5 (a^2 + b^2): gradients (3, 4), norm 5.
    let loss = || {
        ((a.as_tensor().sqr().unwrap() + b.as_tensor().sqr().unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            * 0.5)
            .unwrap()
    };
    let mut grads = loss().backward().unwrap();
    let norm = clip_grad_norm(&mut grads, &vars, 1.0).unwrap();
    assert!((norm - 5.0).abs() < 1e-12);
    let ga = grads.get(a.as_tensor()).unwrap().to_vec1::<f64>().unwrap()[0];
    let gb = grads.get(b.as_tensor()).unwrap().to_vec1::<f64>().unwrap()[0];
    assert!(
        (ga - 0.6).abs() < 1e-6 && (gb - 0.8).abs() < 1e-6,
        "{ga} {gb}"
    );
    let mut grads = loss().backward().unwrap();
    clip_grad_norm(&mut grads, &vars, 10.0).unwrap();
    assert_eq!(
        grads.get(a.as_tensor()).unwrap().to_vec1::<f64>().unwrap(),
        vec![3.0]
    );
}

#[test]
fn schedules_follow_their_formulas() {
    assert_eq!(Schedule::Constant.factor(50, 3, 100, 0), 1.0);
    let step = Schedule::Step {
        every: 2,
        gamma: 0.1,
    };
    assert_eq!(step.factor(0, 1, 100, 0), 1.0);
    assert!((step.factor(0, 2, 100, 0) - 0.1).abs() < 1e-15);
    assert!((step.factor(0, 5, 100, 0) - 0.01).abs() < 1e-15);
    let cos = Schedule::Cosine { min_factor: 0.0 };
    assert_eq!(cos.factor(0, 0, 100, 0), 1.0);
    assert!((cos.factor(50, 0, 100, 0) - 0.5).abs() < 1e-12);
    assert!(cos.factor(100, 0, 100, 0).abs() < 1e-12);
    // Warm-up ramps linearly to the schedule's value.
    assert!((Schedule::Constant.factor(0, 0, 100, 4) - 0.25).abs() < 1e-15);
    assert!((Schedule::Constant.factor(3, 0, 100, 4) - 1.0).abs() < 1e-15);
}

#[test]
fn optimizer_buffers_hold_no_autograd_graph_between_steps() {
    // Gradients that are themselves tracked tensors (as in any multi-layer net), with weight
    // decay and momentum: the buffers must still be plain values, or each step's graph would
    // stay alive through the next one and memory would grow without bound.
    for kind in [
        OptimizerKind::Sgd,
        OptimizerKind::Adam,
        OptimizerKind::Adamw,
        OptimizerKind::Rmsprop,
    ] {
        let w = Var::new(&[1.0f64, -2.0], &Device::Cpu).unwrap();
        let mut c = cfg(kind, 0.1);
        c.momentum = 0.9;
        c.weight_decay = 0.01;
        let mut opt = Optimizer::new(c, vec![("w".to_string(), w.clone())]).unwrap();
        for _ in 0..3 {
            // loss = sum(w^3): its gradient 3 w^2 is computed from the tracked w.
            let grads = w
                .as_tensor()
                .powf(3.0)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            assert!(
                grads.get(w.as_tensor()).unwrap().track_op(),
                "the test needs a tracked gradient"
            );
            opt.step(&grads, 1.0).unwrap();
        }
        for (name, t) in opt.state("optim").unwrap() {
            assert!(
                !t.track_op(),
                "{kind:?}: buffer {name} carries an autograd graph"
            );
        }
    }
}
