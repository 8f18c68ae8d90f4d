//! Health after an update, judged against the cabinet's own history: a cabinet can say
//! "updated" and still be broken in ways only its traffic shows. Pure arithmetic on
//! event counts; the caller counts the events (before the update, and during the watch
//! after it) and feeds a regression to the rollout conductor.

use serde::{Deserialize, Serialize};

/// Events of one cabinet in one period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub pickups: u32,
    pub failed_matches: u32,
    /// `door_forced` and `lock_jammed` alarms.
    pub door_faults: u32,
    /// MQTT sessions started: a cabinet that keeps restarting or losing its link.
    pub reconnects: u32,
}

/// When a change counts as a regression.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthPolicy {
    /// Fewer events than this after the update prove nothing either way.
    pub min_events: u32,
    /// The rate after must exceed this multiple of the rate before…
    pub factor: f64,
    /// …plus this many per hour (so a cabinet with a spotless past is not failed for
    /// one alarm).
    pub slack_per_hour: f64,
    /// The share of face attempts that fail may rise by at most this much.
    pub max_failed_share_rise: f64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self { min_events: 3, factor: 3.0, slack_per_hour: 1.0, max_failed_share_rise: 0.25 }
    }
}

fn share(failed: u32, ok: u32) -> f64 {
    let n = failed + ok;
    if n == 0 { 0.0 } else { f64::from(failed) / f64::from(n) }
}

/// The regression, if there is one, named.
pub fn regression(p: &HealthPolicy, before: Counts, before_h: f64, after: Counts, after_h: f64) -> Option<String> {
    let (before_h, after_h) = (before_h.max(1.0), after_h.max(0.25));
    let worse = |b: u32, a: u32| {
        a >= p.min_events && f64::from(a) / after_h > p.factor * (f64::from(b) / before_h) + p.slack_per_hour
    };
    if worse(before.door_faults, after.door_faults) {
        return Some(format!(
            "door faults rose to {} in {after_h:.1} h (had {} in {before_h:.0} h)",
            after.door_faults, before.door_faults
        ));
    }
    if worse(before.reconnects, after.reconnects) {
        return Some(format!(
            "reconnects rose to {} in {after_h:.1} h (had {} in {before_h:.0} h)",
            after.reconnects, before.reconnects
        ));
    }
    if worse(before.failed_matches, after.failed_matches) {
        return Some(format!(
            "failed matches rose to {} in {after_h:.1} h (had {} in {before_h:.0} h)",
            after.failed_matches, before.failed_matches
        ));
    }
    let (b, a) = (share(before.failed_matches, before.pickups), share(after.failed_matches, after.pickups));
    if after.failed_matches >= p.min_events && a > b + p.max_failed_share_rise {
        return Some(format!("{:.0} % of attempts fail now, {:.0} % before", a * 100.0, b * 100.0));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(pickups: u32, failed_matches: u32, door_faults: u32) -> Counts {
        Counts { pickups, failed_matches, door_faults, reconnects: 0 }
    }

    #[test]
    fn only_a_clear_change_against_the_cabinets_own_past_is_a_regression() {
        let p = HealthPolicy::default();
        // A busy cabinet with a few failures a day, the same after: fine.
        assert_eq!(regression(&p, c(700, 70, 2), 168.0, c(8, 1, 0), 2.0), None);
        // Door faults every few minutes since the update.
        let r = regression(&p, c(700, 70, 2), 168.0, c(3, 0, 12), 2.0).unwrap();
        assert!(r.contains("door faults"), "{r}");
        // Face matching broke: most attempts fail.
        let r = regression(&p, c(700, 70, 0), 168.0, c(2, 6, 0), 2.0).unwrap();
        assert!(r.contains("failed matches") || r.contains("attempts fail"), "{r}");
        // One alarm on a cabinet that never had one is not enough.
        assert_eq!(regression(&p, c(100, 0, 0), 168.0, c(1, 0, 1), 1.0), None);
        // Restarting over and over since the update (each restart a new MQTT session).
        let calm = Counts { reconnects: 3, ..c(700, 70, 0) };
        let looping = Counts { reconnects: 9, ..c(2, 0, 0) };
        assert!(regression(&p, calm, 168.0, looping, 1.0).unwrap().contains("reconnects"));
        // A cabinet with a noisy past is judged by its own standard.
        assert_eq!(regression(&p, c(100, 0, 500), 168.0, c(1, 0, 8), 2.0), None);
    }
}
