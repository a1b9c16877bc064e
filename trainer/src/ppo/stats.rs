//! The running observation statistics and the explained variance.

use super::*;

/// Running mean and variance of the raw observations (parallel Welford, as
/// gymnasium's `RunningMeanStd`), in f64.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunningStats {
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    pub count: f64,
}

impl RunningStats {
    pub fn new(dim: usize) -> RunningStats {
        RunningStats { mean: vec![0.0; dim], var: vec![1.0; dim], count: 1e-4 }
    }

    /// Merges a batch of rows (`rows.len()` a multiple of the dimension).
    pub fn update(&mut self, rows: &[f32]) {
        let dim = self.mean.len();
        let n = rows.len() / dim;
        if n == 0 {
            return;
        }
        let mut b_mean = vec![0.0f64; dim];
        for row in rows.chunks_exact(dim) {
            for (m, x) in b_mean.iter_mut().zip(row) {
                *m += *x as f64;
            }
        }
        b_mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut b_var = vec![0.0f64; dim];
        for row in rows.chunks_exact(dim) {
            for ((v, x), m) in b_var.iter_mut().zip(row).zip(&b_mean) {
                *v += (*x as f64 - m).powi(2);
            }
        }
        b_var.iter_mut().for_each(|v| *v /= n as f64);
        let (na, nb) = (self.count, n as f64);
        let total = na + nb;
        for i in 0..dim {
            let delta = b_mean[i] - self.mean[i];
            let m2 = self.var[i] * na + b_var[i] * nb + delta * delta * na * nb / total;
            self.mean[i] += delta * nb / total;
            self.var[i] = m2 / total;
        }
        self.count = total;
    }

    /// Whether the statistics, and the f32 normaliser made from them, are finite.
    pub fn is_finite(&self) -> bool {
        let f32_finite = |x: &f64| x.is_finite() && (*x as f32).is_finite();
        self.count.is_finite()
            && self.mean.iter().all(f32_finite)
            && self.var.iter().all(f32_finite)
    }

    pub fn normaliser(&self, clip: f32) -> ObsNormaliser {
        ObsNormaliser {
            mean: self.mean.iter().map(|m| *m as f32).collect(),
            var: self.var.iter().map(|v| *v as f32).collect(),
            clip,
            epsilon: 1e-8,
        }
    }
}

/// 1 − Var(returns − values) / Var(returns); NaN when returns are constant.
pub(crate) fn explained_variance(values: &[f32], returns: &[f32]) -> f64 {
    let var = |x: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = x.collect();
        let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
        v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / v.len().max(1) as f64
    };
    let var_y = var(&mut returns.iter().map(|r| *r as f64));
    if var_y == 0.0 {
        return f64::NAN;
    }
    1.0 - var(&mut returns.iter().zip(values).map(|(r, v)| (*r - *v) as f64)) / var_y
}
