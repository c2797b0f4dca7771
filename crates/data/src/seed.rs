//! Deterministic seed derivation: every random stream in forja (an epoch's shuffle, one synthetic
//! sample) gets its own seed from a root seed and a path of integers, so streams never depend on
//! the order in which they are consumed. That is what makes resumed runs repeat uninterrupted ones.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// SplitMix64 finaliser: a cheap bijective mix with good avalanche.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives a child seed from `seed` and a path of integers.
pub fn derive(seed: u64, path: &[u64]) -> u64 {
    path.iter()
        .fold(splitmix(seed), |acc, &p| splitmix(acc ^ splitmix(p)))
}

/// A fast, portable RNG for the stream `derive(seed, path)`.
pub fn rng(seed: u64, path: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive(seed, path))
}

/// A standard normal draw (Box-Muller), so the generators need no distribution crate.
pub fn normal(rng: &mut impl rand::Rng) -> f64 {
    let u: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]: the log stays finite
    let v: f64 = rng.gen();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}
