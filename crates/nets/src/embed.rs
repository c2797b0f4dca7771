//! Low-dimensional views of codes: PCA (exact, by Jacobi eigen-decomposition of the
//! covariance), t-SNE (the `bhtsne` crate) and UMAP (written here, see [`umap_2d`]), plus
//! principal angles between subspaces, which test that a linear autoencoder learns PCA.

use forja_train::linalg::{mean_cov, symmetric_eigen};

/// Principal component analysis of `rows` points of `dim` values (row-major).
#[derive(Debug, Clone)]
pub struct Pca {
    pub mean: Vec<f64>,
    /// Unit principal axes, largest variance first.
    pub components: Vec<Vec<f64>>,
    /// Variance along each axis.
    pub variances: Vec<f64>,
}

impl Pca {
    /// The top `k` components.
    pub fn fit(data: &[f32], dim: usize, k: usize) -> Self {
        let (mean, cov) = mean_cov(data, dim);
        let (values, vectors) = symmetric_eigen(&cov, dim);
        Self {
            mean,
            components: vectors.into_iter().take(k).collect(),
            variances: values.into_iter().take(k).collect(),
        }
    }

    /// The first two coordinates of each point (0 for a missing second component): a map.
    pub fn plane(&self, data: &[f32]) -> Vec<[f64; 2]> {
        self.project(data)
            .into_iter()
            .map(|c| [c[0], c.get(1).copied().unwrap_or(0.0)])
            .collect()
    }

    /// Coordinates of each point along the components.
    pub fn project(&self, data: &[f32]) -> Vec<Vec<f64>> {
        data.chunks(self.mean.len())
            .map(|row| {
                self.components
                    .iter()
                    .map(|c| {
                        row.iter()
                            .zip(&self.mean)
                            .zip(c)
                            .map(|((&x, m), w)| (x as f64 - m) * w)
                            .sum()
                    })
                    .collect()
            })
            .collect()
    }
}

/// Gram-Schmidt: an orthonormal basis of the span of `vectors` (dependent ones dropped).
fn orthonormal(vectors: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut basis: Vec<Vec<f64>> = Vec::new();
    for v in vectors {
        let mut u = v.clone();
        for _ in 0..2 {
            for b in &basis {
                let dot: f64 = u.iter().zip(b).map(|(x, y)| x * y).sum();
                u.iter_mut().zip(b).for_each(|(x, y)| *x -= dot * y);
            }
        }
        let norm = u.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 1e-10 {
            basis.push(u.into_iter().map(|x| x / norm).collect());
        }
    }
    basis
}

/// Principal angles (radians, ascending) between the spans of two sets of vectors: the arc
/// cosines of the singular values of Q_a^T Q_b.
pub fn principal_angles(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<f64> {
    let (qa, qb) = (orthonormal(a), orthonormal(b));
    let m: Vec<Vec<f64>> = qa
        .iter()
        .map(|x| {
            qb.iter()
                .map(|y| x.iter().zip(y).map(|(p, q)| p * q).sum())
                .collect()
        })
        .collect();
    // Singular values squared: eigenvalues of M M^T.
    let k = m.len();
    let mmt: Vec<f64> = (0..k * k)
        .map(|ij| m[ij / k].iter().zip(&m[ij % k]).map(|(p, q)| p * q).sum())
        .collect();
    let (values, _) = symmetric_eigen(&mmt, k);
    values
        .into_iter()
        .map(|s2| s2.clamp(0.0, 1.0).sqrt().acos())
        .collect()
}

fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

/// A 2-D t-SNE embedding (Barnes-Hut, perplexity 30, 1000 iterations) started from the PCA
/// projection, so it is deterministic.
pub fn tsne_2d(data: &[f32], dim: usize) -> Vec<[f64; 2]> {
    let rows: Vec<&[f32]> = data.chunks(dim).collect();
    let perplexity = 30f32.min((rows.len().saturating_sub(1) / 3).max(1) as f32);
    // t-SNE's customary start: the first coordinate with standard deviation 1e-4.
    let pca = Pca::fit(data, dim, 2);
    let sd = pca.variances.first().map_or(1.0, |v| v.sqrt().max(1e-12));
    let init: Vec<f32> = scaled(&pca.plane(data), 1e-4 / sd)
        .iter()
        .flat_map(|p| p.map(|v| v as f32))
        .collect();
    let mut tsne = bhtsne::tSNE::<f32, &[f32], 2>::new(&rows);
    tsne.perplexity(perplexity)
        .epochs(1000)
        .initial_embedding(init)
        .barnes_hut(0.5, |a, b| squared_distance(a, b).sqrt());
    tsne.embedding()
        .chunks(2)
        .map(|p| [p[0] as f64, p[1] as f64])
        .collect()
}

fn scaled(points: &[[f64; 2]], factor: f64) -> Vec<[f64; 2]> {
    points.iter().map(|p| p.map(|v| v * factor)).collect()
}

/// UMAP's curve 1 / (1 + a d^(2b)) for min_dist 0.1 and spread 1 (the values umap-learn fits).
const UMAP_A: f64 = 1.576_943_5;
const UMAP_B: f64 = 0.895_060_6;

/// A 2-D UMAP embedding (McInnes et al. 2018): the fuzzy graph of the 15 exact nearest
/// neighbours, then 500 epochs of SGD with 5 negative samples per edge, started from the PCA
/// projection and seeded, as umap-learn does it. (The `umap-rs` crate was tried first: its
/// 0.4.5 layout gradients carry an extra factor d^2 in the denominator, so clusters do not
/// contract; its embedding failed the three-blob test below.)
pub fn umap_2d(data: &[f32], dim: usize) -> Vec<[f64; 2]> {
    let n = data.len() / dim;
    let rows: Vec<&[f32]> = data.chunks(dim).collect();
    let k = 15.min(n.saturating_sub(1));
    if k == 0 {
        return vec![[0.0, 0.0]; n];
    }
    // Fuzzy memberships of each point's neighbours (self excluded).
    let mut weights = std::collections::HashMap::<(usize, usize), f64>::new();
    for i in 0..n {
        let mut d: Vec<(f64, usize)> = (0..n)
            .filter(|&j| j != i)
            .map(|j| (f64::from(squared_distance(rows[i], rows[j])).sqrt(), j))
            .collect();
        d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        d.truncate(k);
        let rho = d.iter().map(|p| p.0).find(|&x| x > 0.0).unwrap_or(0.0);
        let sigma = bandwidth(&d, rho, (k as f64).log2());
        for &(dist, j) in &d {
            weights.insert((i, j), (-(dist - rho).max(0.0) / sigma).exp());
        }
    }
    // Fuzzy union: w_ij + w_ji - w_ij w_ji, both directions kept as edges.
    let mut edges: Vec<(usize, usize, f64)> = Vec::new();
    for (&(i, j), &w) in &weights {
        let back = weights.get(&(j, i)).copied().unwrap_or(0.0);
        edges.push((i, j, w + back - w * back));
        if back == 0.0 {
            edges.push((j, i, w));
        }
    }
    edges.sort_by_key(|e| (e.0, e.1));
    let epochs = 500;
    let max_w = edges.iter().map(|e| e.2).fold(0.0, f64::max);
    edges.retain(|e| e.2 >= max_w / epochs as f64);
    let per_sample: Vec<f64> = edges.iter().map(|e| max_w / e.2).collect();
    let per_negative: Vec<f64> = per_sample.iter().map(|p| p / 5.0).collect();
    let mut next_sample = per_sample.clone();
    let mut next_negative = per_negative.clone();

    // Started within [-10, 10], as umap-learn scales its spectral start.
    let start = Pca::fit(data, dim, 2).plane(data);
    let peak = start
        .iter()
        .flatten()
        .fold(1e-12, |m: f64, v| m.max(v.abs()));
    let mut y = scaled(&start, 10.0 / peak);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0x0_5EED);
    let (a, b) = (UMAP_A, UMAP_B);
    for epoch in 1..=epochs {
        let alpha = 1.0 - (epoch - 1) as f64 / epochs as f64;
        let e = epoch as f64;
        for (s, &(i, j, _)) in edges.iter().enumerate() {
            if next_sample[s] > e {
                continue;
            }
            let diff = [y[i][0] - y[j][0], y[i][1] - y[j][1]];
            let d2 = diff[0] * diff[0] + diff[1] * diff[1];
            if d2 > 0.0 {
                let coeff = -2.0 * a * b * d2.powf(b - 1.0) / (1.0 + a * d2.powf(b));
                for c in 0..2 {
                    let g = (coeff * diff[c]).clamp(-4.0, 4.0) * alpha;
                    y[i][c] += g;
                    y[j][c] -= g;
                }
            }
            next_sample[s] += per_sample[s];
            let negatives = ((e - next_negative[s]) / per_negative[s]).floor().max(0.0) as usize;
            for _ in 0..negatives {
                let other = rand::Rng::gen_range(&mut rng, 0..n);
                if other == i {
                    continue;
                }
                let diff = [y[i][0] - y[other][0], y[i][1] - y[other][1]];
                let d2 = diff[0] * diff[0] + diff[1] * diff[1];
                let coeff = 2.0 * b / ((0.001 + d2) * (1.0 + a * d2.powf(b)));
                for c in 0..2 {
                    y[i][c] += (coeff * diff[c]).clamp(-4.0, 4.0) * alpha;
                }
            }
            next_negative[s] += negatives as f64 * per_negative[s];
        }
    }
    y
}

/// The sigma with sum_j exp(-(d_j - rho) / sigma) = target, by bisection (umap-learn's
/// smooth_knn_dist), floored at 1e-3 of the mean distance.
fn bandwidth(neighbours: &[(f64, usize)], rho: f64, target: f64) -> f64 {
    let (mut lo, mut hi, mut mid) = (0.0, f64::INFINITY, 1.0);
    for _ in 0..64 {
        let total: f64 = neighbours
            .iter()
            .map(|&(d, _)| (-(d - rho).max(0.0) / mid).exp())
            .sum();
        if (total - target).abs() < 1e-5 {
            break;
        }
        if total > target {
            hi = mid;
            mid = (lo + hi) / 2.0;
        } else {
            lo = mid;
            mid = if hi.is_finite() {
                (lo + hi) / 2.0
            } else {
                mid * 2.0
            };
        }
    }
    let mean = neighbours.iter().map(|p| p.0).sum::<f64>() / neighbours.len().max(1) as f64;
    mid.max(1e-3 * mean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn principal_angles_are_zero_for_one_span_and_right_for_orthogonal_spans() {
        let a = vec![vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0]];
        let same = vec![vec![1.0, 1.0, 0.0], vec![1.0, -2.0, 0.0]];
        assert!(principal_angles(&a, &same).iter().all(|t| t.abs() < 1e-6));
        let tilted = vec![vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 1.0]];
        let angles = principal_angles(&a, &tilted);
        assert!(
            angles[0].abs() < 1e-6 && (angles[1] - std::f64::consts::FRAC_PI_4).abs() < 1e-6,
            "{angles:?}"
        );
    }

    /// Three tight 10-D blobs far apart: `n` points each, labelled by blob.
    fn blobs(n: usize) -> (Vec<f32>, Vec<usize>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (mut data, mut labels) = (Vec::new(), Vec::new());
        for blob in 0..3 {
            for _ in 0..n {
                data.extend((0..10).map(|d| {
                    let centre = if d == blob { 20.0 } else { 0.0 };
                    centre + rng.gen_range(-1.0f32..1.0)
                }));
                labels.push(blob);
            }
        }
        (data, labels)
    }

    /// Every point is nearer to its own blob's centroid than to any other blob's.
    fn separates(points: &[[f64; 2]], labels: &[usize]) -> bool {
        let centroid = |b: usize| {
            let members: Vec<_> = points.iter().zip(labels).filter(|(_, &l)| l == b).collect();
            let n = members.len() as f64;
            members
                .iter()
                .fold([0.0, 0.0], |c, (p, _)| [c[0] + p[0] / n, c[1] + p[1] / n])
        };
        let centres: Vec<[f64; 2]> = (0..3).map(centroid).collect();
        points.iter().zip(labels).all(|(p, &l)| {
            let d = |c: &[f64; 2]| (p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2);
            (0..3).all(|b| b == l || d(&centres[l]) < d(&centres[b]))
        })
    }

    #[test]
    fn tsne_and_umap_keep_separate_clusters_apart() {
        let (data, labels) = blobs(60);
        assert!(separates(&tsne_2d(&data, 10), &labels), "t-SNE");
        assert!(separates(&umap_2d(&data, 10), &labels), "UMAP");
    }

    #[test]
    fn pca_finds_the_axis_of_largest_variance() {
        // Points on the line y = 2x plus a little orthogonal spread.
        let data: Vec<f32> = (0..200)
            .flat_map(|i| {
                let t = i as f32 / 20.0 - 5.0;
                let e = if i % 2 == 0 { 0.01 } else { -0.01 };
                [t - 2.0 * e, 2.0 * t + e]
            })
            .collect();
        let pca = Pca::fit(&data, 2, 2);
        let axis = &pca.components[0];
        let cos = (axis[0] + 2.0 * axis[1]).abs() / 5f64.sqrt();
        assert!((cos - 1.0).abs() < 1e-6, "{axis:?}");
        assert!(pca.variances[0] > 1000.0 * pca.variances[1]);
    }
}
