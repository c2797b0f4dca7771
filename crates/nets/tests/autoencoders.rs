//! Autoencoders: the linear one learns PCA's subspace, the penalties equal their formulas
//! (the contractive one the encoder's Jacobian by finite differences), denoising corrupts as
//! specified, and every registered variant trains and draws its maps.

use candle_core::{DType, Device, Tensor, D};
use forja_nets::ae_task::{AeTask, Corruption};
use forja_nets::autoencoder::psnr;
use forja_nets::embed::{principal_angles, Pca};
use forja_nets::{
    AeArch, Autoencoder, AutoencoderConfig, CodeActivation, Penalty, ReconstructionLoss,
};
use forja_train::{registry, Optimizer, OptimizerConfig, OptimizerKind, ParamStore, RunConfig};
use rand::{Rng, SeedableRng};

fn build(cfg: &AutoencoderConfig, dtype: DType) -> (Autoencoder, ParamStore) {
    let params = ParamStore::new(3);
    let ae = Autoencoder::new(cfg, params.var_builder(dtype, &Device::Cpu)).unwrap();
    (ae, params)
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar().unwrap()
}

#[test]
fn the_linear_autoencoder_spans_the_top_principal_subspace() {
    // 12-D points near a 3-D subspace with distinct variances (9, 4, 1), offset from 0.
    let (n, dim, k) = (1500, 12, 3);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut gauss = || -> f32 {
        let (u, v): (f32, f32) = (rng.gen_range(1e-7..1.0), rng.gen_range(0.0..1.0));
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    };
    let axes: Vec<Vec<f32>> = (0..k)
        .map(|_| (0..dim).map(|_| gauss()).collect())
        .collect();
    let data: Vec<f32> = (0..n)
        .flat_map(|_| {
            let z: Vec<f32> = [3.0, 2.0, 1.0].iter().map(|s| s * gauss()).collect();
            (0..dim)
                .map(|i| 0.5 + (0..k).map(|j| z[j] * axes[j][i]).sum::<f32>() + 0.05 * gauss())
                .collect::<Vec<_>>()
        })
        .collect();
    let cfg = AutoencoderConfig {
        arch: AeArch::Linear,
        ..AutoencoderConfig::mlp([1, 1, dim], Vec::new(), k)
    };
    let (ae, params) = build(&cfg, DType::F32);
    let x = Tensor::from_vec(data.clone(), (n, 1, 1, dim), &Device::Cpu).unwrap();
    let mut opt = Optimizer::new(
        OptimizerConfig {
            kind: OptimizerKind::Adam,
            lr: 0.02,
            ..OptimizerConfig::default()
        },
        params.trainable_vars(),
    )
    .unwrap();
    for _ in 0..4000 {
        let pass = ae.loss(&x, &x).unwrap();
        opt.backward_step(&pass.total().unwrap(), 1.0, None)
            .unwrap();
    }
    let w = values(ae.decoder_weight().unwrap()); // [dim, k]
    let columns: Vec<Vec<f64>> = (0..k)
        .map(|j| (0..dim).map(|i| w[i * k + j]).collect())
        .collect();
    let pca = Pca::fit(&data, dim, k);
    let angles = principal_angles(&columns, &pca.components);
    let worst = angles.iter().cloned().fold(0.0, f64::max).to_degrees();
    assert!(worst < 2.0, "principal angles {angles:?}");
    // The check has teeth: the next principal directions are far from the decoder's span.
    let rest = Pca::fit(&data, dim, k + 3).components[k..].to_vec();
    let off = principal_angles(&columns, &rest);
    assert!(off.iter().all(|a| a.to_degrees() > 80.0), "{off:?}");
}

#[test]
fn the_contractive_penalty_equals_the_squared_frobenius_norm_of_the_encoder_jacobian() {
    let lambda = 0.3;
    let cfg = AutoencoderConfig {
        code: CodeActivation::Sigmoid,
        penalty: Penalty::Contractive { lambda },
        loss: ReconstructionLoss::CrossEntropy,
        ..AutoencoderConfig::mlp([1, 2, 3], Vec::new(), 4)
    };
    let (ae, _) = build(&cfg, DType::F64);
    let dev = Device::Cpu;
    let x = Tensor::randn(0f64, 1.0, (3, 1, 2, 3), &dev).unwrap();
    let penalty = scalar(&ae.penalty(&ae.encode(&x).unwrap()).unwrap());
    let eps = 1e-5;
    let mut frobenius = 0.0;
    for s in 0..3 {
        let xs = values(&x.get(s).unwrap());
        for i in 0..6 {
            let shifted = |d: f64| {
                let mut v = xs.clone();
                v[i] += d;
                values(
                    &ae.encode(&Tensor::from_vec(v, (1, 1, 2, 3), &dev).unwrap())
                        .unwrap(),
                )
            };
            let (up, down) = (shifted(eps), shifted(-eps));
            frobenius += up
                .iter()
                .zip(&down)
                .map(|(a, b)| ((a - b) / (2.0 * eps)).powi(2))
                .sum::<f64>();
        }
    }
    let expected = lambda * frobenius / 3.0;
    assert!(
        (penalty - expected).abs() < 1e-7 * expected.max(1.0),
        "{penalty} vs {expected}"
    );
}

#[test]
fn sparsity_penalties_and_cross_entropy_match_their_formulas() {
    let dev = Device::Cpu;
    let x = Tensor::rand(0f64, 1.0, (5, 1, 2, 4), &dev).unwrap();
    let base = AutoencoderConfig {
        code: CodeActivation::Sigmoid,
        loss: ReconstructionLoss::CrossEntropy,
        ..AutoencoderConfig::mlp([1, 2, 4], vec![6], 3)
    };
    let (rho, beta, lambda) = (0.1, 2.0, 0.5);
    for penalty in [Penalty::L1 { lambda }, Penalty::KlSparsity { rho, beta }] {
        let (ae, _) = build(
            &AutoencoderConfig {
                penalty,
                ..base.clone()
            },
            DType::F64,
        );
        let pass = ae.loss(&x, &x).unwrap();
        let h = &pass.codes;
        let codes: Vec<Vec<f64>> = (0..5).map(|i| values(&h.get(i).unwrap())).collect();
        let expected = match penalty {
            Penalty::L1 { lambda } => {
                lambda * codes.iter().flatten().map(|v| v.abs()).sum::<f64>() / 5.0
            }
            Penalty::KlSparsity { rho, beta } => {
                beta * (0..3)
                    .map(|j| {
                        let r = codes.iter().map(|c| c[j]).sum::<f64>() / 5.0;
                        rho * (rho / r).ln() + (1.0 - rho) * ((1.0 - rho) / (1.0 - r)).ln()
                    })
                    .sum::<f64>()
            }
            _ => unreachable!(),
        };
        let got = scalar(&pass.penalty);
        assert!(
            (got - expected).abs() < 1e-9,
            "{penalty:?}: {got} vs {expected}"
        );
        // Binary cross-entropy of the sigmoid reconstruction, summed over pixels.
        let r = values(&ae.decode(h).unwrap());
        let xv = values(&x);
        let bce: f64 = xv
            .iter()
            .zip(&r)
            .map(|(t, p)| -(t * p.ln() + (1.0 - t) * (1.0 - p).ln()))
            .sum::<f64>()
            / 5.0;
        assert!((scalar(&pass.reconstruction) - bce).abs() < 1e-9 * bce);
    }
}

#[test]
fn penalties_that_would_be_wrong_are_refused() {
    let ps = ParamStore::new(0);
    let vb = || ps.var_builder(DType::F32, &Device::Cpu);
    let mlp = AutoencoderConfig::mlp([1, 28, 28], vec![64], 8);
    let kl_linear_code = AutoencoderConfig {
        penalty: Penalty::KlSparsity {
            rho: 0.05,
            beta: 1.0,
        },
        ..mlp.clone()
    };
    let deep_contractive = AutoencoderConfig {
        code: CodeActivation::Sigmoid,
        penalty: Penalty::Contractive { lambda: 0.1 },
        ..mlp.clone()
    };
    let odd_conv = AutoencoderConfig {
        arch: AeArch::Conv,
        ..AutoencoderConfig::mlp([1, 30, 30], vec![], 8)
    };
    for (cfg, says) in [
        (kl_linear_code, "sigmoid code"),
        (deep_contractive, "one-layer sigmoid encoder"),
        (odd_conv, "multiples of 4"),
    ] {
        let err = Autoencoder::new(&cfg, vb()).unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
    }
}

#[test]
fn denoising_corruption_has_the_specified_noise_and_is_repeatable() {
    let dev = Device::Cpu;
    let x = Tensor::full(0.5f32, (4, 1, 28, 28), &dev).unwrap();
    let cfg = RunConfig::new("ae-denoising", "synth-digits");
    let ae = AutoencoderConfig::mlp([1, 28, 28], vec![16], 4);
    let gaussian = AeTask::new(&cfg, &ae, Corruption::Gaussian { std: 0.3 }, &dev).unwrap();
    let noisy = gaussian.corrupt(&x, &[5]).unwrap();
    let noise = values(&(&noisy - &x).unwrap());
    let sd = (noise.iter().map(|v| v * v).sum::<f64>() / noise.len() as f64).sqrt();
    assert!((sd - 0.3).abs() < 0.02, "noise sd {sd}");
    assert_eq!(values(&gaussian.corrupt(&x, &[5]).unwrap()), values(&noisy));
    assert_ne!(values(&gaussian.corrupt(&x, &[6]).unwrap()), values(&noisy));
    let masking = AeTask::new(&cfg, &ae, Corruption::Masking { p: 0.25 }, &dev).unwrap();
    let masked = values(&masking.corrupt(&x, &[5]).unwrap());
    let zeroed = masked.iter().filter(|&&v| v == 0.0).count() as f64 / masked.len() as f64;
    assert!((zeroed - 0.25).abs() < 0.03, "zeroed share {zeroed}");
    assert!(masked.iter().all(|&v| v == 0.0 || v == 0.5));
}

#[test]
fn psnr_is_ten_log10_of_one_over_the_mean_squared_error() {
    let dev = Device::Cpu;
    let clean = Tensor::full(0.5f32, (2, 1, 4, 4), &dev).unwrap();
    let off = (&clean + 0.1).unwrap();
    let got = psnr(&off, &clean).unwrap();
    assert!(got.iter().all(|p| (p - 20.0).abs() < 1e-4), "{got:?}");
    let mean_sq = (&off - &clean)
        .unwrap()
        .sqr()
        .unwrap()
        .mean(D::Minus1)
        .unwrap();
    assert_eq!(mean_sq.dims(), &[2, 1, 4]);
}

#[test]
fn every_registered_autoencoder_lowers_its_loss_and_draws_its_maps() {
    let models: Vec<_> = registry::models()
        .into_iter()
        .filter(|m| m.family == "autoencoder")
        .collect();
    assert_eq!(
        models.len(),
        8,
        "ae-mlp, -conv, -linear, -sparse, -sparse-kl, -contractive, -denoising, -denoising-masking"
    );
    for entry in models {
        let mut cfg = RunConfig::new(entry.name, entry.default_dataset);
        (entry.configure)(&mut cfg);
        cfg.epochs = 2;
        cfg.limit_train = Some(512);
        cfg.limit_test = Some(200);
        let dir = tempfile::tempdir().unwrap();
        let data = forja_train::run::open_data(&cfg).unwrap();
        let summary =
            forja_train::run::train_on(cfg, data, dir.path(), &Device::Cpu, false).unwrap();
        let records = forja_train::read_records(&summary.run_dir.join("metrics.jsonl")).unwrap();
        let losses: Vec<f64> = records
            .iter()
            .filter(|r| r.kind == forja_train::RecordKind::Train)
            .map(|r| r.values["loss"])
            .collect();
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(last < first, "{}: train loss {first} -> {last}", entry.name);
        for file in [
            "reconstructions.png",
            "latent_pca.png",
            "latent_tsne.png",
            "latent_umap.png",
        ] {
            assert!(
                summary.run_dir.join(file).is_file(),
                "{}: no {file}",
                entry.name
            );
        }
        if entry.name.starts_with("ae-denoising") {
            let m = &summary.metrics;
            assert!(
                m["psnr"].is_finite() && m["psnr_noisy"].is_finite(),
                "{m:?}"
            );
        }
    }
}
