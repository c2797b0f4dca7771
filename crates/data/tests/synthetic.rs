//! Embedded synthetic data: determinism per seed, balanced classes, analytic moments of the 2-D
//! densities, and the structure of `synth-cells` and the colour digits.

use forja_data::densities::{Density, PointSet, MODE_RADIUS, MODE_STD};
use forja_data::synth_cells::{SynthCells, BACKGROUND, BORDER, CELL};
use forja_data::{catalog, synth_digits, Dataset, Split};

fn moments(set: &PointSet) -> ([f64; 2], [f64; 3]) {
    let n = set.len() as f64;
    let p = set.points();
    let m = [0, 1].map(|k| p.iter().skip(k).step_by(2).map(|&v| v as f64).sum::<f64>() / n);
    let c = |a: usize, b: usize| {
        p.chunks_exact(2)
            .map(|q| (q[a] as f64 - m[a]) * (q[b] as f64 - m[b]))
            .sum::<f64>()
            / n
    };
    (m, [c(0, 0), c(1, 1), c(0, 1)])
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() < tol, "{what}: {a} vs {b}");
}

#[test]
fn densities_match_their_analytic_moments() {
    let n = 40_000;
    let gen = |d| PointSet::generate(d, Split::Train, n, 11);
    // Moons: outer (cos t, sin t), inner (1 - cos t, 1/2 - sin t), t ~ U[0, pi].
    let (m, _) = moments(&gen(Density::TwoMoons));
    close(m[0], 0.5, 0.02, "moons mean x");
    close(m[1], 0.25, 0.02, "moons mean y");
    // Circles of radius 1 and 1/2: E[x^2] = (1 + 1/4) / 4 + noise^2.
    let (m, c) = moments(&gen(Density::Circles));
    close(m[0], 0.0, 0.01, "circles mean");
    close(c[0], 1.25 / 4.0 + 0.05f64.powi(2), 0.01, "circles var x");
    close(c[2], 0.0, 0.01, "circles cov");
    // 8 Gaussians: covariance (r^2 / 2 + s^2) I.
    let (m, c) = moments(&gen(Density::EightGaussians));
    let v = MODE_RADIUS.powi(2) / 2.0 + MODE_STD.powi(2);
    close(m[0].hypot(m[1]), 0.0, 0.01, "8 Gaussians mean");
    close(c[0], v, 0.02, "8 Gaussians var x");
    close(c[1], v, 0.02, "8 Gaussians var y");
    close(c[2], 0.0, 0.02, "8 Gaussians cov");
    // Checkerboard: both marginals uniform on [-4, 4] (variance 64 / 12).
    let (m, c) = moments(&gen(Density::Checkerboard));
    close(m[0], 0.0, 0.05, "checkerboard mean x");
    close(m[1], 0.0, 0.05, "checkerboard mean y");
    close(c[0], 64.0 / 12.0, 0.1, "checkerboard var x");
    close(c[1], 64.0 / 12.0, 0.1, "checkerboard var y");
    // Spirals and pinwheel are symmetric under rotation: mean zero.
    for d in [Density::TwoSpirals, Density::Pinwheel] {
        let (m, _) = moments(&gen(d));
        close(m[0].hypot(m[1]), 0.0, 0.03, d.name());
    }
}

#[test]
fn eight_gaussians_put_every_point_within_five_sigma_of_its_own_mode() {
    let set = PointSet::generate(Density::EightGaussians, Split::Test, 4000, 3);
    let modes = Density::modes();
    for i in 0..set.len() {
        let [x, y] = set.point(i);
        let [mx, my] = modes[set.labels()[i] as usize];
        assert!(
            (x as f64 - mx).hypot(y as f64 - my) < 5.0 * MODE_STD,
            "point {i}"
        );
    }
}

#[test]
fn checkerboard_points_lie_on_dark_squares_only() {
    let set = PointSet::generate(Density::Checkerboard, Split::Train, 5000, 4);
    for i in 0..set.len() {
        let [x, y] = set.point(i);
        let (cx, cy) = ((x / 2.0).floor() as i32, (y / 2.0).floor() as i32);
        assert_eq!((cx + cy).rem_euclid(2), 0, "({x}, {y}) on a light square");
    }
}

#[test]
fn every_density_is_deterministic_per_seed_and_balanced_over_its_parts() {
    for d in Density::ALL {
        let a = PointSet::generate(d, Split::Train, 400, 7);
        let b = PointSet::generate(d, Split::Train, 400, 7);
        let c = PointSet::generate(d, Split::Train, 400, 8);
        assert_eq!(a.points(), b.points(), "{}", d.name());
        assert_ne!(a.points(), c.points(), "{}", d.name());
        let mut counts = vec![0; d.parts()];
        a.labels().iter().for_each(|&l| counts[l as usize] += 1);
        assert!(
            counts
                .iter()
                .all(|&k| k == 400 / d.parts() || k == 400 / d.parts() + 1),
            "{}: {counts:?}",
            d.name()
        );
        assert!(a.points().iter().all(|v| v.is_finite()));
    }
}

#[test]
fn synth_cells_are_deterministic_and_masks_are_consistent() {
    let cells = SynthCells::new(Split::Train, 12, 96, 5).unwrap();
    let again = SynthCells::new(Split::Train, 12, 96, 5).unwrap();
    let other = SynthCells::new(Split::Train, 12, 96, 6).unwrap();
    let mut touching_images = 0;
    for i in 0..12 {
        let s = cells.sample(i).unwrap();
        assert_eq!(s, again.sample(i).unwrap());
        assert_ne!(s.image, other.sample(i).unwrap().image);
        assert!(s.cells >= 4, "sample {i} has {} cells", s.cells);
        let ids: std::collections::BTreeSet<u32> = s.instances.iter().copied().collect();
        assert_eq!(
            ids.len(),
            s.cells + 1,
            "every cell has pixels, plus background"
        );
        for p in 0..96 * 96 {
            let class = s.semantic[p];
            assert_eq!(class == BACKGROUND, s.instances[p] == 0, "pixel {p}");
            if class == BORDER {
                let (y, x) = (p / 96, p % 96);
                let touches = [(0, 1), (2, 1), (1, 0), (1, 2)].iter().any(|&(dy, dx)| {
                    let (yy, xx) = ((y + dy).wrapping_sub(1), (x + dx).wrapping_sub(1));
                    yy < 96 && xx < 96 && {
                        let q = s.instances[yy * 96 + xx];
                        q != 0 && q != s.instances[p]
                    }
                });
                assert!(touches, "border pixel {p} touches no other cell");
            }
        }
        touching_images += usize::from(s.semantic.contains(&BORDER));
        // Cells are brighter than the background on average.
        let mean = |c: u32| {
            let v: Vec<f64> = (0..96 * 96)
                .filter(|&p| s.semantic[p] == c)
                .map(|p| s.image[p] as f64)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!(mean(CELL) > mean(BACKGROUND) + 50.0);
    }
    assert!(
        touching_images >= 10,
        "only {touching_images} of 12 images have touching cells"
    );
    let sample = cells.get(0).unwrap();
    assert_eq!(sample.target.len(), 2 * 96 * 96);
    assert_eq!(cells.target_shape(), vec![2, 96, 96]);
}

#[test]
fn colour_digits_share_the_grey_glyphs_labels_and_keep_contrast() {
    let rgb = synth_digits::generate_rgb(Split::Test, 50, 9).unwrap();
    assert_eq!(rgb.item_shape(), vec![3, 32, 32]);
    assert_eq!(
        rgb.labels(),
        synth_digits::generate(Split::Test, 50, 9).unwrap().labels()
    );
    assert_eq!(
        rgb.image_bytes(3),
        synth_digits::generate_rgb(Split::Test, 50, 9)
            .unwrap()
            .image_bytes(3)
    );
    for i in 0..50 {
        let img = rgb.image_bytes(i);
        let luma: Vec<f64> = (0..1024)
            .map(|p| {
                0.299 * img[p] as f64 + 0.587 * img[1024 + p] as f64 + 0.114 * img[2048 + p] as f64
            })
            .collect();
        let (lo, hi) = luma
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(hi - lo > 60.0, "sample {i}: luminance range {lo}..{hi}");
    }
}

#[test]
fn catalog_lists_every_dataset_and_embedded_ones_open_with_their_declared_shape() {
    let names: Vec<_> = catalog::entries().iter().map(|e| e.name).collect();
    for expected in [
        "synth-digits",
        "synth-digits-rgb",
        "synth-cells",
        "two-moons",
        "circles",
        "8gaussians",
        "2spirals",
        "pinwheel",
        "swissroll",
        "checkerboard",
        "mnist",
        "fashion-mnist",
        "kmnist",
        "emnist-balanced",
        "emnist-digits",
        "cifar10",
        "cifar100",
        "image-folder",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    for e in catalog::entries() {
        if matches!(e.source, catalog::Source::Embedded) {
            let test = (e.open)(Split::Test, None).unwrap();
            assert_eq!(test.item_shape(), e.shape, "{}", e.name);
            assert_eq!(test.num_classes(), e.classes, "{}", e.name);
            assert!(!test.is_empty());
        }
    }
    let err = catalog::open("nope", Split::Test, None).err().unwrap();
    assert!(err.to_string().contains("synth-digits"), "{err}");
}
