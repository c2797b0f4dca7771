//! Branch-free f32 elementary functions for element-wise kernels: written with selects
//! instead of branches, so loops over them vectorize (glibc's `expf`, `log1pf` and `tanhf`
//! are one scalar call per element).

/// `e^y` for `y` in `[-87, 88]` (callers clamp; the result stays a normal f32), within
/// 1.2 ulp (every 64th f32 checked): `e^y = 2^n e^r` with `r = y - n ln 2` in `[-0.35, 0.35]` and `e^r` a Taylor
/// polynomial (its remainder below 6e-9 relative).
pub(crate) fn exp_f32(y: f32) -> f32 {
    // Round y / ln 2 to an integer n by adding and removing 1.5 * 2^23 (no `round` call); the
    // low bits of the shifted value are n itself, from which 2^n's exponent bits follow.
    const SHIFT: f32 = 12_582_912.0;
    let shifted = y * std::f32::consts::LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    // ln 2 in two parts, the first with 9 significant bits, so that `n * LN2_HI` is exact.
    const LN2_HI: f32 = 355.0 / 512.0;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let r = (y - n * LN2_HI) - n * LN2_LO;
    let exp_r = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let biased = (shifted.to_bits() as i32 - SHIFT.to_bits() as i32 + 127) as u32;
    exp_r * f32::from_bits(biased << 23)
}

/// `e^-|o|` in `(0, 1]`, 0 where it falls below f32's normal range.
fn exp_neg_abs(o: f32) -> f32 {
    // -ln(f32::MIN_POSITIVE), rounded down.
    const LIMIT: f32 = 87.336_54;
    let a = o.abs();
    let e = exp_f32(-a.min(LIMIT));
    if a > LIMIT {
        0.0
    } else {
        e
    }
}

/// `ln(1 + u)` for `u` in `[0, 1]`: `2 atanh(s)` with `s = u / (2 + u)` in `[0, 1/3]`, by its
/// series up to `s^17` (the next term is below 1e-10 relative); `s` is computed without
/// cancellation, so small `u` keep their relative accuracy.
fn ln_1p_unit(u: f32) -> f32 {
    let s = u / (2.0 + u);
    let z = s * s;
    s * (2.0
        + z * (2.0 / 3.0
            + z * (2.0 / 5.0
                + z * (2.0 / 7.0
                    + z * (2.0 / 9.0
                        + z * (2.0 / 11.0
                            + z * (2.0 / 13.0 + z * (2.0 / 15.0 + z * (2.0 / 17.0)))))))))
}

/// `ln(1 + e^o)` without overflow: `max(o, 0) + ln(1 + e^-|o|)`, within 3.5 ulp (every 64th
/// f32 checked; results below f32's normal range flush to zero). NaN stays NaN.
pub(crate) fn softplus_f32(o: f32) -> f32 {
    let v = o.max(0.0) + ln_1p_unit(exp_neg_abs(o));
    if o.is_nan() {
        o
    } else {
        v
    }
}

/// `1 / (1 + e^-o)`, from `e = e^-|o|`: `1 / (1 + e)` for `o >= 0`, `e / (1 + e)` below
/// (no cancellation in either tail), within 2.7 ulp (as [`softplus_f32`]). NaN stays NaN.
pub(crate) fn sigmoid_f32(o: f32) -> f32 {
    let e = exp_neg_abs(o);
    let p = 1.0 / (1.0 + e);
    let v = if o >= 0.0 { p } else { e * p };
    if o.is_nan() {
        o
    } else {
        v
    }
}
