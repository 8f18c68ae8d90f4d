//! 1:N matching of one probe embedding against the open templates of this cabinet.
//!
//! A match needs both a score at or above the calibrated per-comparison threshold and a
//! margin over the second-best template: a probe that resembles two recipients opens
//! neither door.

use serde::{Deserialize, Serialize};

use super::pipeline::cosine;

/// How a decision is made. The threshold follows from the number of templates open at
/// the moment: with more candidates each comparison must be stricter for the same
/// per-attempt false-accept rate. `edge-agent calibrate` measures the impostor model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchPolicy {
    /// Target false-accept rate per attempt.
    pub target_far: f64,
    /// The impostor score model (normal; use the calibration's upper bounds).
    pub impostor_mean: f64,
    pub impostor_sd: f64,
    /// The threshold never goes below this, whatever the model says.
    pub min_threshold: f32,
    /// Least difference between the best and the second-best score.
    pub margin: f32,
}

impl Default for MatchPolicy {
    /// Calibrated on the reference models with 61 photos of 7 people (BENCHMARKS.md).
    fn default() -> Self {
        Self { target_far: 1e-7, impostor_mean: 0.0177, impostor_sd: 0.1181, min_threshold: 0.5, margin: 0.1 }
    }
}

impl MatchPolicy {
    /// The per-comparison threshold with `open` templates in the gallery.
    pub fn threshold(&self, open: usize) -> f32 {
        let p = super::calibrate::per_comparison_rate(self.target_far, open);
        let t = self.impostor_mean + self.impostor_sd * super::calibrate::normal_quantile(1.0 - p);
        (t as f32).max(self.min_threshold)
    }

    pub fn check(&self) -> Result<(), String> {
        if !(self.target_far > 0.0 && self.target_far < 1.0) {
            return Err("target_far lies between 0 and 1".into());
        }
        if self.impostor_sd.is_nan() || self.impostor_sd <= 0.0 || !(-1.0..=1.0).contains(&self.impostor_mean) {
            return Err("the impostor model needs a mean in -1..1 and a positive sd".into());
        }
        if !(-1.0..=1.0).contains(&self.min_threshold) || !(0.0..=2.0).contains(&self.margin) {
            return Err("min_threshold is a cosine (-1..1) and margin lies in 0..2".into());
        }
        Ok(())
    }
}

/// The outcome of one 1:N comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MatchOutcome {
    /// Candidate `index` matched with this score.
    Match { index: usize, score: f32 },
    /// The best score was below the threshold.
    BelowThreshold { best: f32, threshold: f32 },
    /// Two candidates were too close to tell apart.
    Ambiguous { best: f32, second: f32 },
    /// Nobody to compare with.
    NoCandidates,
}

/// Compares `probe` with each gallery embedding (all L2-normalised).
pub fn match_one<'a>(
    policy: &MatchPolicy,
    probe: &[f32],
    gallery: impl IntoIterator<Item = &'a [f32]>,
) -> MatchOutcome {
    let mut best: Option<(usize, f32)> = None;
    let mut second = f32::MIN;
    let mut open = 0;
    for (i, g) in gallery.into_iter().enumerate() {
        open += 1;
        let s = cosine(probe, g);
        match best {
            Some((_, b)) if s <= b => second = second.max(s),
            Some((_, b)) => {
                second = b;
                best = Some((i, s));
            }
            None => best = Some((i, s)),
        }
    }
    let Some((index, score)) = best else { return MatchOutcome::NoCandidates };
    let threshold = policy.threshold(open);
    if score < threshold {
        return MatchOutcome::BelowThreshold { best: score, threshold };
    }
    if second > f32::MIN && score - second < policy.margin {
        return MatchOutcome::Ambiguous { best: score, second };
    }
    MatchOutcome::Match { index, score }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        super::super::pipeline::normalise(v).to_vec()
    }

    #[test]
    fn the_best_clear_match_wins_and_close_calls_open_nothing() {
        // An impostor model that puts the threshold at 0.6 for a small gallery.
        let p = MatchPolicy { impostor_mean: 0.0, impostor_sd: 0.01, min_threshold: 0.6, ..Default::default() };
        let probe = unit(&[1.0, 0.1, 0.0]);
        let alice = unit(&[1.0, 0.0, 0.0]);
        let bob = unit(&[0.0, 1.0, 0.0]);
        let twin = unit(&[1.0, 0.15, 0.0]);
        let g = [alice.as_slice(), bob.as_slice()];
        assert!(matches!(match_one(&p, &probe, g), MatchOutcome::Match { index: 0, .. }));
        let g = [bob.as_slice(), alice.as_slice(), twin.as_slice()];
        assert!(matches!(match_one(&p, &probe, g), MatchOutcome::Ambiguous { .. }));
        let g = [bob.as_slice()];
        assert!(matches!(match_one(&p, &probe, g), MatchOutcome::BelowThreshold { .. }));
        assert_eq!(match_one(&p, &probe, std::iter::empty()), MatchOutcome::NoCandidates);
        // A single candidate has no second best: the threshold alone decides.
        let g = [alice.as_slice()];
        assert!(matches!(match_one(&p, &probe, g), MatchOutcome::Match { index: 0, .. }));
    }

    #[test]
    fn more_open_templates_need_a_stricter_threshold() {
        let p = MatchPolicy { impostor_mean: 0.0, impostor_sd: 0.1, min_threshold: -1.0, ..Default::default() };
        // z(1 − 1e-7) = 5.1993: one template needs 0.5199.
        assert!((p.threshold(1) - 0.5199).abs() < 1e-3, "{}", p.threshold(1));
        assert!(p.threshold(10) > p.threshold(1) && p.threshold(50) > p.threshold(10));
        let floor = MatchPolicy { min_threshold: 0.9, ..p };
        assert_eq!(floor.threshold(1), 0.9);
        assert!(MatchPolicy { impostor_sd: 0.0, ..p }.check().is_err());
        assert!(MatchPolicy::default().check().is_ok());
    }
}
