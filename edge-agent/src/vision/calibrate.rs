//! Choosing the match threshold from measured scores (the math is in
//! `docs/face-matching.md`).
//!
//! A face attempt compares the probe with every open template of the cabinet, so the
//! per-attempt false-accept rate with `N` templates is `1 − (1 − p)^N ≈ N·p` for a
//! per-comparison rate `p`. The target is per attempt; `p` follows from it and `N`.
//! A few thousand impostor pairs cannot show rates like 1e-9, so the impostor score
//! distribution's tail is modelled: a normal fitted to the impostor scores (cosine
//! scores of unrelated faces are sums of hundreds of weakly dependent products, and
//! their histogram is close to normal), with the fit's parameters taken at their upper
//! confidence bounds so that the threshold errs on the safe side.

use serde::Serialize;

/// Inverse of the standard normal CDF (Acklam's rational approximation, relative error
/// below 1.2e-9 over (0, 1)).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] =
        [7.784_695_709_041_462e-3, 3.224_671_290_700_398e-1, 2.445_134_137_142_996, 3.754_408_661_907_416];
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let low = 0.02425;
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -normal_quantile(1.0 - p)
    }
}

/// Upper tail of the standard normal, `P(Z > z)` (complementary error function by the
/// Numerical Recipes Chebyshev fit, relative error below 1.2e-7).
pub fn normal_upper_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let y = t
        * (-x * x - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    let erfc = if x >= 0.0 { y } else { 2.0 - y };
    erfc / 2.0
}

/// The per-comparison false-accept rate that keeps the per-attempt rate at `target`
/// with `n` templates open.
pub fn per_comparison_rate(target: f64, n: usize) -> f64 {
    1.0 - (1.0 - target).powf(1.0 / n.max(1) as f64)
}

/// Wilson score interval for `k` events in `n` trials at ~95 % (z = 1.96).
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n, z) = (k as f64, n as f64, 1.96f64);
    let p = k / n;
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// A normal fitted to impostor scores, with 95 % upper bounds for its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TailFit {
    pub n: usize,
    pub mean: f64,
    pub sd: f64,
    /// Upper 95 % bound of the mean (normal approximation of the sample mean).
    pub mean_upper: f64,
    /// Upper 95 % bound of the standard deviation (chi-square, Wilson–Hilferty).
    pub sd_upper: f64,
}

impl TailFit {
    pub fn fit(scores: &[f64]) -> Option<Self> {
        let n = scores.len();
        if n < 30 {
            return None;
        }
        let nf = n as f64;
        let mean = scores.iter().sum::<f64>() / nf;
        let var = scores.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / (nf - 1.0);
        let sd = var.sqrt();
        // chi2 lower 5 % quantile with k = n − 1 degrees of freedom (Wilson–Hilferty).
        let k = nf - 1.0;
        let z = normal_quantile(0.05);
        let chi2_low = k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3);
        Some(Self { n, mean, sd, mean_upper: mean + 1.645 * sd / nf.sqrt(), sd_upper: sd * (k / chi2_low).sqrt() })
    }

    /// The score above which impostors fall with probability `p`, by the fit itself and
    /// by its upper confidence bounds (the threshold to use).
    pub fn threshold(&self, p: f64) -> (f64, f64) {
        let z = normal_quantile(1.0 - p);
        (self.mean + self.sd * z, self.mean_upper + self.sd_upper * z)
    }

    /// The modelled per-comparison false-accept rate at `t` (with the upper-bound fit).
    pub fn far_at(&self, t: f64) -> f64 {
        normal_upper_tail((t - self.mean_upper) / self.sd_upper)
    }
}

/// One row of the report: a gallery size and the threshold it needs.
#[derive(Debug, Clone, Serialize)]
pub struct GalleryRow {
    pub templates: usize,
    pub per_comparison_far: f64,
    /// The threshold by the fitted normal, and by its upper bounds (recommended).
    pub threshold_fit: f64,
    pub threshold: f64,
    /// Genuine pairs at or below the threshold, and the 95 % interval.
    pub frr: f64,
    pub frr_interval: (f64, f64),
}

/// Everything `edge-agent calibrate` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub target_far_per_attempt: f64,
    pub genuine_pairs: usize,
    pub impostor_pairs: usize,
    pub impostor_fit: TailFit,
    /// Highest impostor score seen, and lowest genuine score.
    pub impostor_max: f64,
    pub genuine_min: f64,
    pub rows: Vec<GalleryRow>,
    /// With a keypad hint (e.g. the last two digits of the phone) that keeps only the
    /// templates whose hint matches, the gallery shrinks by `hint_classes` on average.
    pub hint_classes: usize,
    pub rows_with_hint: Vec<GalleryRow>,
}

fn frr(genuine: &[f64], t: f64) -> (f64, (f64, f64)) {
    let k = genuine.iter().filter(|&&s| s < t).count();
    (k as f64 / genuine.len().max(1) as f64, wilson(k, genuine.len()))
}

fn rows(fit: &TailFit, genuine: &[f64], target: f64, galleries: &[usize], shrink: usize) -> Vec<GalleryRow> {
    galleries
        .iter()
        .map(|&n| {
            let effective = n.div_ceil(shrink.max(1));
            let p = per_comparison_rate(target, effective);
            let (threshold_fit, threshold) = fit.threshold(p);
            let (frr, frr_interval) = frr(genuine, threshold);
            GalleryRow { templates: n, per_comparison_far: p, threshold_fit, threshold, frr, frr_interval }
        })
        .collect()
}

/// Calibrates from scores. `None` when there are too few impostor scores to fit (30).
pub fn calibrate(
    genuine: &[f64],
    impostor: &[f64],
    target: f64,
    galleries: &[usize],
    hint_classes: usize,
) -> Option<Calibration> {
    let fit = TailFit::fit(impostor)?;
    Some(Calibration {
        target_far_per_attempt: target,
        genuine_pairs: genuine.len(),
        impostor_pairs: impostor.len(),
        impostor_fit: fit,
        impostor_max: impostor.iter().copied().fold(f64::MIN, f64::max),
        genuine_min: genuine.iter().copied().fold(f64::MAX, f64::min),
        rows: rows(&fit, genuine, target, galleries, 1),
        hint_classes,
        rows_with_hint: rows(&fit, genuine, target, galleries, hint_classes),
    })
}

/// Empirical error rates at one threshold, with 95 % intervals.
#[derive(Debug, Clone, Serialize)]
pub struct OperatingPoint {
    pub threshold: f64,
    pub far: f64,
    pub far_interval: (f64, f64),
    pub far_modelled: f64,
    pub frr: f64,
    pub frr_interval: (f64, f64),
}

pub fn operating_points(genuine: &[f64], impostor: &[f64], fit: &TailFit, thresholds: &[f64]) -> Vec<OperatingPoint> {
    thresholds
        .iter()
        .map(|&t| {
            let fa = impostor.iter().filter(|&&s| s >= t).count();
            let (frr, frr_interval) = frr(genuine, t);
            OperatingPoint {
                threshold: t,
                far: fa as f64 / impostor.len().max(1) as f64,
                far_interval: wilson(fa, impostor.len()),
                far_modelled: fit.far_at(t),
                frr,
                frr_interval,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_normal_quantile_and_tail_agree_with_tables() {
        assert!(normal_quantile(0.5).abs() < 1e-9);
        assert!((normal_quantile(0.975) - 1.959_963_985).abs() < 1e-8);
        assert!((normal_quantile(1.0 - 1e-7) - 5.199_337_582).abs() < 1e-6);
        assert!((normal_quantile(1e-9) + 5.997_807_015).abs() < 1e-5);
        for z in [0.5, 1.96, 3.0, 5.2] {
            let p = normal_upper_tail(z);
            assert!((normal_quantile(1.0 - p) - z).abs() < 1e-4, "{z}");
        }
    }

    #[test]
    fn the_per_attempt_target_spreads_over_the_gallery() {
        let p = per_comparison_rate(1e-7, 50);
        assert!((p - 2e-9).abs() < 1e-12, "{p}");
        assert_eq!(per_comparison_rate(1e-7, 0), per_comparison_rate(1e-7, 1));
    }

    #[test]
    fn wilson_intervals_contain_the_rate_and_shrink_with_more_trials() {
        let (lo, hi) = wilson(5, 100);
        assert!(lo < 0.05 && 0.05 < hi);
        let (lo2, hi2) = wilson(50, 1000);
        assert!(hi2 - lo2 < hi - lo);
        assert_eq!(wilson(0, 100).0, 0.0);
    }
}
