//! Augmentations: geometric ones move pixels exactly and keep masks aligned; corruptions have
//! the statistics they promise.

use forja_data::seed;
use forja_data::transform::{
    logit_inverse, rotate, translate, Binarize, Compose, Dequantize, Elastic, Flip, GaussianNoise,
    Image, Logit, Mask, MaskingNoise, Normalize, RandomCrop, Resize, Transform,
};
use proptest::prelude::*;

/// An image whose values are all different (1, 2, 3, ...), so moved pixels can be traced.
fn numbered(c: usize, h: usize, w: usize) -> Image {
    Image::new((1..=c * h * w).map(|v| v as f32).collect(), [c, h, w]).unwrap()
}

fn apply(t: &dyn Transform, image: &mut Image, mask: Option<&mut Mask>, s: u64) {
    t.apply(image, mask, &mut seed::rng(s, &[])).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn flips_are_exact_mirror_permutations_and_involutions(
        c in 1usize..4, h in 1usize..9, w in 1usize..9, s in any::<u64>(),
    ) {
        let orig = numbered(c, h, w);
        let mut x = orig.clone();
        apply(&Flip::horizontal(1.0), &mut x, None, s);
        for k in 0..c { for y in 0..h { for j in 0..w {
            prop_assert_eq!(x.data[(k * h + y) * w + j], orig.data[(k * h + y) * w + (w - 1 - j)]);
        }}}
        apply(&Flip::horizontal(1.0), &mut x, None, s);
        prop_assert_eq!(&x, &orig);
        let mut v = orig.clone();
        apply(&Flip::vertical(1.0), &mut v, None, s);
        apply(&Flip::vertical(1.0), &mut v, None, s);
        prop_assert_eq!(&v, &orig);
        let mut same = orig.clone();
        apply(&Flip::horizontal(0.0), &mut same, None, s);
        prop_assert_eq!(&same, &orig);
    }

    /// Every output pixel is zero padding or the input pixel one fixed offset away, the same
    /// offset for every pixel and channel and for the mask, and bounded by the padding.
    #[test]
    fn random_crop_is_one_whole_pixel_shift_of_image_and_mask(
        h in 2usize..10, w in 2usize..10, padding in 0usize..4, s in any::<u64>(),
    ) {
        let orig = numbered(2, h, w);
        let mut x = orig.clone();
        let mut m = Mask::new((1..=h * w as u32 as usize).map(|v| v as u32).collect(), [1, h, w]).unwrap();
        apply(&RandomCrop { padding }, &mut x, Some(&mut m), s);
        let mut offset = None;
        for p in 0..h * w {
            let v = x.data[p];
            if v == 0.0 { prop_assert_eq!(m.data[p], 0); continue; }
            let src = v as usize - 1;
            let d = (p / w) as isize - (src / w) as isize;
            let e = (p % w) as isize - (src % w) as isize;
            prop_assert!(d.unsigned_abs() <= padding && e.unsigned_abs() <= padding);
            prop_assert_eq!(*offset.get_or_insert((d, e)), (d, e));
            prop_assert_eq!(x.data[h * w + p], orig.data[h * w + src], "second channel moved alike");
            prop_assert_eq!(m.data[p] as usize, src + 1, "mask moved alike");
        }
        let nonzero = x.data[..h * w].iter().filter(|&&v| v != 0.0).count();
        if let Some((d, e)) = offset {
            prop_assert_eq!(nonzero, (h - d.unsigned_abs()) * (w - e.unsigned_abs()));
        }
    }

    /// The mask is resampled by nearest neighbour at the very coordinates the image is
    /// interpolated at: on a 0/1 image equal to the mask, the nearest of the four bilinear
    /// corners carries weight >= 1/4, so mask 1 means image >= 1/4 and mask 0 means image <= 3/4.
    #[test]
    fn elastic_deformation_keeps_image_and_mask_aligned(
        s in any::<u64>(), alpha in 1.0f32..8.0, sigma in 1.0f32..5.0,
    ) {
        let (h, w) = (24, 20);
        let mut rng = seed::rng(s, &[1]);
        let cells: Vec<u32> = (0..h * w).map(|p| u32::from(((p / w) / 4 + (p % w) / 5 + (rand::Rng::gen::<u8>(&mut rng) as usize % 2)).is_multiple_of(2))).collect();
        let mut x = Image::new(cells.iter().map(|&v| v as f32).collect(), [1, h, w]).unwrap();
        let mut m = Mask::new(cells.clone(), [1, h, w]).unwrap();
        apply(&Elastic { alpha, sigma }, &mut x, Some(&mut m), s);
        prop_assert_ne!(&m.data, &cells, "the deformation moved something");
        for p in 0..h * w {
            if m.data[p] == 1 {
                prop_assert!(x.data[p] >= 0.25 - 1e-5, "pixel {}: mask 1, image {}", p, x.data[p]);
            } else {
                prop_assert!(x.data[p] <= 0.75 + 1e-5, "pixel {}: mask 0, image {}", p, x.data[p]);
            }
        }
    }
}

#[test]
fn translate_and_rotate_by_right_angles_are_exact() {
    let orig = numbered(1, 5, 5);
    let mut x = orig.clone();
    translate(&mut x, None, 1, -2).unwrap();
    assert_eq!(x.data[5], orig.data[2]); // (1, 0) <- (0, 2)
    assert_eq!(x.data[0], 0.0);
    let mut r = orig.clone();
    let mut m = Mask::new((0..25).collect(), [1, 5, 5]).unwrap();
    rotate(&mut r, Some(&mut m), 90.0).unwrap();
    for y in 0..5 {
        for j in 0..5 {
            // Output (y, j) reads input (j, 4 - y): a quarter turn.
            let v = orig.data[j * 5 + (4 - y)];
            assert!((r.data[y * 5 + j] - v).abs() < 1e-4, "({y},{j})");
            assert_eq!(m.data[y * 5 + j] as f32, v - 1.0);
        }
    }
    let mut zero = orig.clone();
    rotate(&mut zero, None, 0.0).unwrap();
    assert_eq!(zero, orig);
}

#[test]
fn resize_to_the_same_size_is_identity_and_halving_averages_pairs() {
    let orig = numbered(2, 4, 6);
    let mut x = orig.clone();
    apply(
        &Resize {
            height: 4,
            width: 6,
        },
        &mut x,
        None,
        0,
    );
    assert_eq!(x, orig);
    let mut y = Image::new(vec![0.0, 2.0, 4.0, 6.0], [1, 1, 4]).unwrap();
    apply(
        &Resize {
            height: 1,
            width: 2,
        },
        &mut y,
        None,
        0,
    );
    assert_eq!(y.data, vec![1.0, 5.0]);
    assert_eq!(y.shape, [1, 1, 2]);
}

#[test]
fn normalize_standardises_per_channel_and_checks_its_arguments() {
    let mut x = Image::new(vec![1.0, 3.0, 10.0, 20.0], [2, 1, 2]).unwrap();
    let n = Normalize {
        mean: vec![2.0, 15.0],
        std: vec![1.0, 5.0],
    };
    apply(&n, &mut x, None, 0);
    assert_eq!(x.data, vec![-1.0, 1.0, -1.0, 1.0]);
    let bad = Normalize {
        mean: vec![0.0],
        std: vec![1.0],
    };
    assert!(bad.apply(&mut x, None, &mut seed::rng(0, &[])).is_err());
}

#[test]
fn corruptions_have_the_promised_statistics() {
    let n = 100_000;
    let flat = || Image::new(vec![0.5; n], [1, 1, n]).unwrap();
    let mut g = flat();
    apply(&GaussianNoise { std: 0.2 }, &mut g, None, 1);
    let mean = g.data.iter().sum::<f32>() / n as f32;
    let var = g.data.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n as f32;
    assert!(
        (mean - 0.5).abs() < 0.005 && (var.sqrt() - 0.2).abs() < 0.005,
        "{mean} {var}"
    );

    let mut m = flat();
    apply(&MaskingNoise { p: 0.3 }, &mut m, None, 2);
    let zeros = m.data.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
    assert!((zeros - 0.3).abs() < 0.01, "{zeros}");
    assert!(m.data.iter().all(|&v| v == 0.0 || v == 0.5));

    let mut d = Image::new(
        (0..n).map(|i| (i % 256) as f32 / 255.0).collect(),
        [1, 1, n],
    )
    .unwrap();
    apply(&Dequantize, &mut d, None, 3);
    for (i, v) in d.data.iter().enumerate() {
        assert_eq!(
            (v * 256.0).floor() as usize,
            i % 256,
            "dequantized value stays in its bin"
        );
    }

    let mut b = flat();
    apply(&Binarize::Dynamic, &mut b, None, 4);
    let ones = b.data.iter().sum::<f32>() / n as f32;
    assert!((ones - 0.5).abs() < 0.01, "{ones}");
    let mut st = Image::new(vec![0.2, 0.6, 0.5], [1, 1, 3]).unwrap();
    apply(&Binarize::Static(0.5), &mut st, None, 0);
    assert_eq!(st.data, vec![0.0, 1.0, 0.0]);
}

#[test]
fn logit_transform_is_finite_on_the_closed_unit_interval_and_inverts() {
    let xs = vec![0.0, 0.25, 0.5, 1.0];
    let mut x = Image::new(xs.clone(), [1, 1, 4]).unwrap();
    apply(
        &Compose(vec![Box::new(Logit { alpha: 0.05 })]),
        &mut x,
        None,
        0,
    );
    assert!(x.data.iter().all(|v| v.is_finite()));
    assert!(x.data[2].abs() < 1e-6);
    for (y, orig) in x.data.iter().zip(xs) {
        assert!((logit_inverse(*y, 0.05) - orig).abs() < 1e-5);
    }
}
