//! 1:N matching of one probe embedding against the open templates of this cabinet.
//!
//! A match needs both a score at or above the calibrated per-comparison threshold and a
//! margin over the second-best template: a probe that resembles two recipients opens
//! neither door.

use serde::{Deserialize, Serialize};

use super::pipeline::cosine;

/// The thresholds of a decision (`edge-agent calibrate` chooses the threshold).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchPolicy {
    /// Least cosine similarity for a match.
    pub threshold: f32,
    /// Least difference between the best and the second-best score.
    pub margin: f32,
}

impl Default for MatchPolicy {
    fn default() -> Self {
        Self { threshold: 0.55, margin: 0.1 }
    }
}

/// The outcome of one 1:N comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MatchOutcome {
    /// Candidate `index` matched with this score.
    Match { index: usize, score: f32 },
    /// The best score was below the threshold.
    BelowThreshold { best: f32 },
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
    for (i, g) in gallery.into_iter().enumerate() {
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
    if score < policy.threshold {
        return MatchOutcome::BelowThreshold { best: score };
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
        let p = MatchPolicy { threshold: 0.6, margin: 0.1 };
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
}
