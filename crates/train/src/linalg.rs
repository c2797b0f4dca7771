//! Small dense linear algebra on the host, in f64: sample moments and the symmetric eigen
//! decomposition behind PCA and the Fréchet distance.

/// The mean and the unbiased covariance (row-major `dim` x `dim`) of `data.len() / dim` points.
pub fn mean_cov(data: &[f32], dim: usize) -> (Vec<f64>, Vec<f64>) {
    let rows = data.len() / dim.max(1);
    let mut mean = vec![0.0; dim];
    for row in data.chunks(dim) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += x as f64 / rows as f64;
        }
    }
    let mut cov = vec![0.0; dim * dim];
    for row in data.chunks(dim) {
        let centred: Vec<f64> = row.iter().zip(&mean).map(|(&x, m)| x as f64 - m).collect();
        for i in 0..dim {
            for j in i..dim {
                cov[i * dim + j] += centred[i] * centred[j];
            }
        }
    }
    let denom = rows.saturating_sub(1).max(1) as f64;
    for i in 0..dim {
        for j in i..dim {
            cov[i * dim + j] /= denom;
            cov[j * dim + i] = cov[i * dim + j];
        }
    }
    (mean, cov)
}

/// Eigenvalues (descending) and unit eigenvectors (as rows, in the same order) of a symmetric
/// `n` x `n` matrix, by cyclic Jacobi rotations: exact to rounding, fine for n up to a few
/// hundred.
pub fn symmetric_eigen(matrix: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    assert_eq!(matrix.len(), n * n, "a {n}x{n} matrix has {} values", n * n);
    let mut a = matrix.to_vec();
    let mut v: Vec<f64> = (0..n * n)
        .map(|k| f64::from(u8::from(k / n == k % n)))
        .collect();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
        if off <= 1e-26 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let sign = if theta >= 0.0 { 1.0 } else { -1.0 };
                let t = sign / (theta.abs() + (theta * theta + 1.0).sqrt());
                let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let vectors = order
        .iter()
        .map(|&i| (0..n).map(|k| v[k * n + i]).collect())
        .collect();
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_recovers_the_eigen_decomposition_of_a_known_matrix() {
        // Q diag(5, 2, 0.5) Q^T for a rotation Q.
        let (c, s) = (0.6f64, 0.8f64);
        let q = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
        let d = [5.0, 2.0, 0.5];
        let m: Vec<f64> = (0..9)
            .map(|ij| (0..3).map(|k| q[ij / 3][k] * d[k] * q[ij % 3][k]).sum())
            .collect();
        let (values, vectors) = symmetric_eigen(&m, 3);
        for (v, e) in values.iter().zip(d) {
            assert!((v - e).abs() < 1e-12, "{values:?}");
        }
        let first: f64 = vectors[0].iter().zip([c, s, 0.0]).map(|(a, b)| a * b).sum();
        assert!((first.abs() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn mean_and_covariance_of_four_points() {
        let (mean, cov) = mean_cov(&[0.0, 0.0, 2.0, 0.0, 0.0, 2.0, 2.0, 2.0], 2);
        assert_eq!(mean, [1.0, 1.0]);
        // Each coordinate: values 0, 2, 0, 2 -> variance 4/3; the two are uncorrelated.
        assert_eq!(cov, [4.0 / 3.0, 0.0, 0.0, 4.0 / 3.0]);
    }
}
