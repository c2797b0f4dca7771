//! Cell segmentation on the host: the U-Net paper's weight map (from an exact Euclidean
//! distance transform of each cell), connected components, and the scores that say whether
//! touching cells came out separated.

/// A large finite "no seed" distance: infinities would turn the parabola intersections of the
/// distance transform into NaN.
const FAR: f64 = 1e30;

/// Squared Euclidean distance from every pixel of an `h` x `w` grid to the nearest pixel where
/// `seed` is true (Felzenszwalb & Huttenlocher 2012: exact, two passes of 1-D lower envelopes
/// of parabolas). Pixels of a grid without seeds get a huge value (about 1e30).
pub fn squared_distance_transform(seed: &[bool], h: usize, w: usize) -> Vec<f64> {
    assert_eq!(
        seed.len(),
        h * w,
        "seed mask of {} pixels for {h}x{w}",
        seed.len()
    );
    let mut d: Vec<f64> = seed.iter().map(|&s| if s { 0.0 } else { FAR }).collect();
    let mut line = Vec::new();
    for y in 0..h {
        line.clear();
        line.extend_from_slice(&d[y * w..(y + 1) * w]);
        lower_envelope(&line, &mut d[y * w..(y + 1) * w]);
    }
    let mut out = vec![0.0; h];
    for x in 0..w {
        line.clear();
        line.extend((0..h).map(|y| d[y * w + x]));
        lower_envelope(&line, &mut out);
        for (y, v) in out.iter().enumerate() {
            d[y * w + x] = *v;
        }
    }
    d
}

/// `d[q] = min_p (q - p)^2 + f[p]`, in linear time.
fn lower_envelope(f: &[f64], d: &mut [f64]) {
    let n = f.len();
    if n == 0 {
        return;
    }
    let mut v = vec![0usize; n];
    let mut z = vec![0f64; n + 1];
    let mut k = 0;
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    let key = |q: usize| f[q] + (q * q) as f64;
    let intersect = |q: usize, p: usize| (key(q) - key(p)) / (2.0 * (q as f64 - p as f64));
    for q in 1..n {
        // z[0] = -inf stops the loop at k = 0: all values are finite.
        let mut s = intersect(q, v[k]);
        while s <= z[k] {
            k -= 1;
            s = intersect(q, v[k]);
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f64::INFINITY;
    }
    k = 0;
    for (q, out) in d.iter_mut().enumerate() {
        while z[k + 1] < q as f64 {
            k += 1;
        }
        let p = v[k];
        *out = (q as f64 - p as f64).powi(2) + f[p];
    }
}

/// The paper's two classes from `synth-cells` masks: per pixel 1 for a cell interior, 0 for
/// everything else (borders between touching cells included), and the cell each interior
/// pixel belongs to (0 elsewhere).
pub fn cell_masks(semantic: &[u32], instances: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let labels: Vec<u32> = semantic
        .iter()
        .map(|&s| u32::from(s == forja_data::synth_cells::CELL))
        .collect();
    let cells = instances
        .iter()
        .zip(&labels)
        .map(|(&id, &l)| id * l)
        .collect();
    (labels, cells)
}

/// The paper's weight map w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightMap {
    pub w0: f64,
    /// In pixels.
    pub sigma: f64,
}

impl WeightMap {
    /// w0 = 10, sigma = 5 pixels (Ronneberger et al. 2015).
    pub const PAPER: Self = Self {
        w0: 10.0,
        sigma: 5.0,
    };

    /// Per-pixel weights of an `h` x `w` image whose pixels have class `labels[p]` (of
    /// `classes`) and belong to cell `cells[p]` (0: no cell). `w_c` balances the classes
    /// (`N / (K * N_k)` over the K classes present, so the mean weight is 1); the separation
    /// term is added on background pixels (class 0), where d1 and d2 are the distances to the
    /// nearest and second-nearest cell, so it peaks in narrow gaps between touching cells.
    pub fn compute(
        &self,
        labels: &[u32],
        cells: &[u32],
        h: usize,
        w: usize,
        classes: usize,
    ) -> Vec<f32> {
        let n = h * w;
        assert!(
            labels.len() == n && cells.len() == n,
            "masks of {}/{} pixels for {h}x{w}",
            labels.len(),
            cells.len()
        );
        let mut counts = vec![0usize; classes];
        for &l in labels {
            counts[l as usize] += 1;
        }
        let present = counts.iter().filter(|&&c| c > 0).count().max(1);
        let class_weight: Vec<f64> = counts
            .iter()
            .map(|&c| {
                if c == 0 {
                    0.0
                } else {
                    n as f64 / (present * c) as f64
                }
            })
            .collect();
        let mut ids: Vec<u32> = cells.iter().copied().filter(|&c| c != 0).collect();
        ids.sort_unstable();
        ids.dedup();
        // The two smallest distances to a cell, per pixel.
        let mut d1 = vec![f64::INFINITY; n];
        let mut d2 = vec![f64::INFINITY; n];
        for id in &ids {
            let seed: Vec<bool> = cells.iter().map(|c| c == id).collect();
            for (p, sq) in squared_distance_transform(&seed, h, w)
                .into_iter()
                .enumerate()
            {
                let d = sq.sqrt();
                if d < d1[p] {
                    d2[p] = d1[p];
                    d1[p] = d;
                } else if d < d2[p] {
                    d2[p] = d;
                }
            }
        }
        let two_sigma_sq = 2.0 * self.sigma * self.sigma;
        (0..n)
            .map(|p| {
                let mut wt = class_weight[labels[p] as usize];
                if labels[p] == 0 && d2[p].is_finite() {
                    wt += self.w0 * (-(d1[p] + d2[p]).powi(2) / two_sigma_sq).exp();
                }
                wt as f32
            })
            .collect()
    }
}

/// 4-connected components of `mask`: a label per pixel (0 outside) and their number.
pub fn components(mask: &[bool], h: usize, w: usize) -> (Vec<u32>, usize) {
    let mut label = vec![0u32; h * w];
    let mut count = 0;
    let mut stack = Vec::new();
    for start in 0..h * w {
        if !mask[start] || label[start] != 0 {
            continue;
        }
        count += 1;
        label[start] = count as u32;
        stack.push(start);
        while let Some(p) = stack.pop() {
            let (y, x) = (p / w, p % w);
            let neighbours = [
                (y > 0).then(|| p - w),
                (y + 1 < h).then(|| p + w),
                (x > 0).then(|| p - 1),
                (x + 1 < w).then(|| p + 1),
            ];
            for q in neighbours.into_iter().flatten() {
                if mask[q] && label[q] == 0 {
                    label[q] = count as u32;
                    stack.push(q);
                }
            }
        }
    }
    (label, count)
}

/// Ids of the instances that share an edge (4-neighbourhood) with another instance.
pub fn touching(instances: &[u32], h: usize, w: usize) -> Vec<u32> {
    let mut ids = Vec::new();
    for p in 0..h * w {
        let a = instances[p];
        let (y, x) = (p / w, p % w);
        for q in [(x + 1 < w).then(|| p + 1), (y + 1 < h).then(|| p + w)]
            .into_iter()
            .flatten()
        {
            let b = instances[q];
            if a != 0 && b != 0 && a != b {
                ids.extend([a, b]);
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// How many cells of an image came out as their own predicted component.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Separation {
    pub cells: usize,
    /// Cells matched by a predicted component with IoU > 0.5 (a merged pair of similar cells
    /// falls below, so each match is one cell told apart).
    pub matched: usize,
    /// Cells that touch another cell, and how many of those are matched.
    pub touching: usize,
    pub touching_matched: usize,
}

impl std::ops::AddAssign for Separation {
    fn add_assign(&mut self, o: Self) {
        self.cells += o.cells;
        self.matched += o.matched;
        self.touching += o.touching;
        self.touching_matched += o.touching_matched;
    }
}

/// Scores the predicted foreground against cells (`cells[p]`: the cell whose interior holds
/// pixel p, 0 for none) and full instances (`instances[p]`, borders included, for touching).
pub fn separation(
    predicted: &[bool],
    cells: &[u32],
    instances: &[u32],
    h: usize,
    w: usize,
) -> Separation {
    let (comp, n_comp) = components(predicted, h, w);
    let n_cells = cells.iter().copied().max().unwrap_or(0) as usize;
    // overlap[cell][component], sizes of both.
    let mut overlap = vec![vec![0usize; n_comp + 1]; n_cells + 1];
    let mut cell_size = vec![0usize; n_cells + 1];
    let mut comp_size = vec![0usize; n_comp + 1];
    for p in 0..h * w {
        overlap[cells[p] as usize][comp[p] as usize] += 1;
        cell_size[cells[p] as usize] += 1;
        comp_size[comp[p] as usize] += 1;
    }
    let touching = touching(instances, h, w);
    let mut s = Separation::default();
    for id in 1..=n_cells {
        if cell_size[id] == 0 {
            continue;
        }
        let matched = (1..=n_comp).any(|c| {
            let inter = overlap[id][c];
            2 * inter > cell_size[id] + comp_size[c] - inter
        });
        let touches = touching.binary_search(&(id as u32)).is_ok();
        s.cells += 1;
        s.matched += usize::from(matched);
        s.touching += usize::from(touches);
        s.touching_matched += usize::from(touches && matched);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brute_force(seed: &[bool], h: usize, w: usize) -> Vec<f64> {
        (0..h * w)
            .map(|p| {
                (0..h * w)
                    .filter(|&q| seed[q])
                    .map(|q| {
                        let dy = (p / w) as f64 - (q / w) as f64;
                        let dx = (p % w) as f64 - (q % w) as f64;
                        dy * dy + dx * dx
                    })
                    .fold(FAR, f64::min)
            })
            .collect()
    }

    proptest! {
        #[test]
        fn distance_transform_equals_the_brute_force_minimum(
            (h, w, seed) in (1usize..12, 1usize..12).prop_flat_map(|(h, w)| {
                (Just(h), Just(w), proptest::collection::vec(proptest::bool::weighted(0.15), h * w))
            })
        ) {
            let fast = squared_distance_transform(&seed, h, w);
            let slow = brute_force(&seed, h, w);
            for (a, b) in fast.iter().zip(&slow) {
                prop_assert!((a - b).abs() <= 1e-9 * b.max(1.0), "{a} vs {b}");
            }
        }
    }

    /// Two 10x10 squares side by side with a 2-pixel gap, in a 40x40 image.
    fn two_squares() -> (Vec<u32>, Vec<u32>, usize) {
        let n = 40;
        let mut cells = vec![0u32; n * n];
        for y in 15..25 {
            for x in 8..18 {
                cells[y * n + x] = 1;
            }
            for x in 20..30 {
                cells[y * n + x] = 2;
            }
        }
        let labels = cells.iter().map(|&c| u32::from(c != 0)).collect();
        (labels, cells, n)
    }

    #[test]
    fn weight_peaks_in_the_gap_between_touching_cells_and_is_w_c_far_away() {
        let (labels, cells, n) = two_squares();
        let wm = WeightMap::PAPER.compute(&labels, &cells, n, n, 2);
        let background = labels.iter().filter(|&&l| l == 0).count() as f64;
        let w_bg = (n * n) as f64 / (2.0 * background);
        let w_fg = (n * n) as f64 / (2.0 * (n * n) as f64 - 2.0 * background);
        let (peak_at, peak) = wm
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(p, v)| (p, *v as f64))
            .unwrap();
        // The gap is columns 18 and 19 of rows 15..25: d1 = 1, d2 = 2 there.
        let (y, x) = (peak_at / n, peak_at % n);
        assert!(
            (15..25).contains(&y) && (18..20).contains(&x),
            "peak at ({y}, {x})"
        );
        let expected = w_bg + 10.0 * (-(3.0f64).powi(2) / 50.0).exp();
        assert!((peak - expected).abs() < 1e-4, "{peak} vs {expected}");
        // Far corner: d1 + d2 > 30 px, the separation term is below 1e-7.
        assert!((wm[0] as f64 - w_bg).abs() < 1e-5, "{} vs {w_bg}", wm[0]);
        // Inside a cell: only the class weight.
        assert!((wm[20 * n + 10] as f64 - w_fg).abs() < 1e-5);
        // Class balancing: the mean of w_c over the image is 1.
        let mean_wc = (background * w_bg + ((n * n) as f64 - background) * w_fg) / (n * n) as f64;
        assert!((mean_wc - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_single_cell_adds_no_separation_weight() {
        let (labels, mut cells, n) = two_squares();
        cells.iter_mut().for_each(|c| *c = u32::from(*c == 1));
        let labels: Vec<u32> = labels.iter().zip(&cells).map(|(_, &c)| c).collect();
        let wm = WeightMap::PAPER.compute(&labels, &cells, n, n, 2);
        let distinct: std::collections::BTreeSet<u32> = wm.iter().map(|v| v.to_bits()).collect();
        assert_eq!(distinct.len(), 2, "only the two class weights");
    }

    #[test]
    fn merged_touching_cells_are_not_separated_and_split_ones_are() {
        let (labels, cells, n) = two_squares();
        // Instances including the gap: each square grows by one column into it, so they touch.
        let mut instances = cells.clone();
        for y in 15..25 {
            instances[y * n + 18] = 1;
            instances[y * n + 19] = 2;
        }
        let split: Vec<bool> = labels.iter().map(|&l| l == 1).collect();
        let s = separation(&split, &cells, &instances, n, n);
        assert_eq!(
            (s.cells, s.matched, s.touching, s.touching_matched),
            (2, 2, 2, 2)
        );
        let merged: Vec<bool> = instances.iter().map(|&i| i != 0).collect();
        let s = separation(&merged, &cells, &instances, n, n);
        assert_eq!((s.matched, s.touching_matched), (0, 0));
        assert_eq!(components(&merged, n, n).1, 1);
        assert_eq!(components(&split, n, n).1, 2);
    }
}
