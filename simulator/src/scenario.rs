//! Scenarios: what a fleet run does, written as a TOML file a field engineer can keep
//! beside a bug report (`simulator/scenarios/` has examples).
//!
//! ```toml
//! name = "partition"
//! cabinets = 200
//! parcels_per_cabinet = 2
//! wrong_code_share = 0.1          # recipients who mistype their code once first
//! door_left_open_share = 0.05     # pickups where the door stays open past the alarm
//! door_left_open_s = 2
//! connect_per_s = 400             # cabinets started per second (admission pacing)
//! parcels_per_s = 50              # parcels created per second, fleet-wide (0: as fast as the API answers)
//! [partition]
//! share = 0.25                    # cabinets cut off from the broker after their parcels are ready
//! seconds = 20                    # how long the cut lasts; they collect offline meanwhile
//! ```
//!
//! Every value is checked when the file is read, and an error names the key.

use std::path::Path;

use serde::Deserialize;

/// One run's plan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Shown in the report.
    pub name: String,
    /// How many cabinets; `--cabinets` when unset.
    pub cabinets: Option<usize>,
    /// Parcels each cabinet takes in and hands out; `--parcels` when unset.
    pub parcels_per_cabinet: Option<usize>,
    /// Share of pickups where a wrong code is typed first (refused, then the right one).
    pub wrong_code_share: f64,
    /// Share of pickups where the recipient leaves the door open past `door_left_open_s`,
    /// so the cabinet raises its `door_left_open` alarm.
    pub door_left_open_share: f64,
    /// The cabinets' door-left-open alarm delay, in s.
    pub door_left_open_s: u64,
    /// Cabinets started per second (0: all at once). rumqttd refuses bursts past its
    /// listen backlog (MEASURED.md); real fleets come back at a bounded rate too.
    pub connect_per_s: f64,
    /// Parcels created per second across the fleet (0: as fast as the API answers, with
    /// at most `--api-concurrency` requests in flight). Each creation hashes a pickup
    /// code with argon2id, which bounds the server's creation rate (BENCHMARKS.md).
    pub parcels_per_s: f64,
    /// A network partition between some cabinets and the broker.
    pub partition: Option<Partition>,
}

/// Cabinets cut off from the broker after their parcels are ready: they hand parcels out
/// by code while offline and their journals must drain when the cut heals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Share of the cabinets cut off.
    pub share: f64,
    /// How long the cut lasts, in s.
    pub seconds: f64,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "default".into(),
            cabinets: None,
            parcels_per_cabinet: None,
            wrong_code_share: 0.0,
            door_left_open_share: 0.0,
            door_left_open_s: 120,
            connect_per_s: 0.0,
            parcels_per_s: 0.0,
            partition: None,
        }
    }
}

/// A scenario that cannot run, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("scenario {path}: {message}")]
    Parse { path: String, message: String },
    #[error("scenario key `{key}` is invalid: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn share(key: &'static str, v: f64) -> Result<(), ScenarioError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(ScenarioError::Invalid { key, reason: format!("{v} is not a share between 0 and 1") })
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text).map_err(|e| match e {
            ScenarioError::Parse { message, .. } => ScenarioError::Parse { path: path.display().to_string(), message },
            other => other,
        })
    }

    /// Parses and checks scenario TOML.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let s: Self =
            toml::from_str(text).map_err(|e| ScenarioError::Parse { path: "(text)".into(), message: e.to_string() })?;
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), ScenarioError> {
        share("wrong_code_share", self.wrong_code_share)?;
        share("door_left_open_share", self.door_left_open_share)?;
        if self.door_left_open_s == 0 {
            return Err(ScenarioError::Invalid { key: "door_left_open_s", reason: "must be at least 1".into() });
        }
        if !(self.connect_per_s >= 0.0 && self.connect_per_s.is_finite()) {
            return Err(ScenarioError::Invalid { key: "connect_per_s", reason: "must be 0 or more".into() });
        }
        if !(self.parcels_per_s >= 0.0 && self.parcels_per_s.is_finite()) {
            return Err(ScenarioError::Invalid { key: "parcels_per_s", reason: "must be 0 or more".into() });
        }
        if self.cabinets == Some(0) {
            return Err(ScenarioError::Invalid { key: "cabinets", reason: "must be at least 1".into() });
        }
        if let Some(p) = &self.partition {
            share("partition.share", p.share)?;
            if !(p.seconds > 0.0 && p.seconds.is_finite()) {
                return Err(ScenarioError::Invalid { key: "partition.seconds", reason: "must be more than 0".into() });
            }
        }
        Ok(())
    }

    /// Whether pickup `n` of cabinet `i` gets a wrong code first, or a door left open:
    /// spread evenly and reproducibly over the fleet (same file, same run).
    pub fn picks(share: f64, i: usize, n: usize) -> bool {
        // Golden-ratio sequence: evenly spread, no generator state to carry around.
        let k = (i * 7919 + n * 104_729) as f64;
        (k * 0.618_033_988_75).fract() < share
    }

    /// How many of `cabinets` the partition cuts off (the first ones, by index).
    pub fn partitioned(&self, cabinets: usize) -> usize {
        self.partition.as_ref().map_or(0, |p| ((cabinets as f64) * p.share).round() as usize)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_example_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
        assert!(n >= 3, "the examples are there");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        for (text, key) in [
            ("wrong_code_share = 1.5", "wrong_code_share"),
            ("door_left_open_s = 0", "door_left_open_s"),
            ("[partition]\nshare = 0.5\nseconds = 0", "partition.seconds"),
            ("[partition]\nshare = -1\nseconds = 3", "partition.share"),
            ("cabinets = 0", "cabinets"),
            ("parcels_per_s = -2", "parcels_per_s"),
        ] {
            let err = Scenario::parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = Scenario::parse("wrong_code = 0.1").unwrap_err().to_string();
        assert!(err.contains("wrong_code"), "unknown keys are refused: {err}");
    }

    #[test]
    fn picks_spread_a_share_evenly() {
        let hits = (0..1000).filter(|i| Scenario::picks(0.1, *i, 0)).count();
        assert!((80..=120).contains(&hits), "{hits} of 1000 for a share of 0.1");
        assert_eq!((0..100).filter(|i| Scenario::picks(0.0, *i, 1)).count(), 0);
        assert_eq!((0..100).filter(|i| Scenario::picks(1.0, *i, 1)).count(), 100);
    }
}
