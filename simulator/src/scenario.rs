//! Scenarios: what a fleet run does, written as a TOML file a field engineer can keep
//! beside a bug report (`simulator/scenarios/` has examples).
//!
//! ```toml
//! name = "partition"
//! cabinets = 200
//! parcels_per_cabinet = 2
//! compartments = 4                # per cabinet (default 4): all parcels are stocked before the first pickup
//! wrong_code_share = 0.1          # recipients who mistype their code once first
//! door_left_open_share = 0.05     # pickups where the door stays open past the alarm
//! door_left_open_s = 2
//! connect_per_s = 400             # cabinets started per second (admission pacing)
//! parcels_per_s = 50              # parcels created per second, fleet-wide (0: as fast as the API answers)
//! [partition]
//! share = 0.25                    # cabinets cut off from the broker after their parcels are ready
//! seconds = 20                    # how long the cut lasts; they collect offline meanwhile
//! [flaps]                         # links that drop again and again during the traffic
//! share = 0.1                     # of the cabinets (others than the partitioned ones)
//! every_s = 20                    # one drop every this many seconds
//! down_s = 3                      # each lasting this long
//! [rollout]                       # an OTA rollout to every cabinet, during the traffic
//! release_key = "release.key"     # `fleet-server artifact keygen`; the server must trust it
//! artifact_kib = 256
//! waves = [1, 10, 100]            # cumulative percent of the cabinets
//! per_minute = 60000              # offers per minute
//! ```
//!
//! Field faults and pickup mixes (see `simulator/scenarios/field.toml`; each parcel plays
//! one role, in this order: no-show, door fault, face, code):
//!
//! ```toml
//! face_share = 0.5                # recipients enrolled with a face (operator-held template)
//! face_unrecognised_share = 0.1   # of those, faces the matcher does not recognise → code
//! impostor_share = 0.2            # face parcels an impostor tries to open first
//! spoof_share = 0.2               # face parcels a spoof of the recipient is tried at first
//! spoof_kinds = ["print", "screen", "mask"]
//! no_show_share = 0.1             # recipients who never come: expiry, courier collection
//! door_fault_share = 0.1          # pickups at a faulty door
//! door_fault_kinds = ["jammed", "sensor"]
//! door_fault_repair_s = 1         # a jammed lock is freed this long after its alarm
//! power_loss_share = 0.1          # cabinets that lose power once, mid-traffic
//! power_loss_s = 2                # and come back after this long, from their data dir
//! clock_drift_share = 0.2         # cabinets whose own clock is off,
//! clock_drift_s = 3600            # by this much (half of them ahead, half behind)
//! ```
//!
//! Simulated time (see `simulator/scenarios/day.toml` and [`crate::day`]): with a `[day]`
//! each cabinet lives through a day of its own instead of the stock and pickup phases —
//! parcels arrive at random, each recipient comes some hours later, in time order, one at
//! a time at the cabinet, and simulated time runs `speed` times faster than real time.
//! The pickup roles above apply to its parcels; `[partition]`, `parcels_per_cabinet` and
//! `parcels_per_s` do not go with it (an error says so); the report gets a `day` section.
//!
//! ```toml
//! [day]
//! hours = 24                      # simulated hours during which parcels arrive
//! arrivals_per_hour = 1.5         # per cabinet (Poisson); with a profile, the day's mean
//! profile = [0.1, 0.1, …]         # optional: 24 relative weights, one per hour of the day
//! pickup_after_h = [0.5, 10]      # the recipient comes this long after the deposit (uniform)
//! speed = 600                     # simulated seconds per real second (1: real time)
//! compartments = 24               # per cabinet (default 4): an arrival finding all taken is refused
//! seed = 1                        # optional: another seed, another day at the same rates
//! ```
//!
//! The server's timers run in real time: its pickup window (learnt from the first parcel,
//! reported in simulated hours) is `window_s × speed` long in simulated time, so no-show
//! scenarios want a short `parcels.pickup_window_s`.
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
    /// Compartments of each simulated cabinet in the stock-and-pickup phases (default 4).
    /// Every parcel is deposited before the first pickup, so a cabinet takes at most
    /// this many parcels (a `[day]` sets `day.compartments` instead).
    pub compartments: Option<usize>,
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
    /// A flapping network: some cabinets' links drop for a moment again and again while
    /// the traffic runs.
    pub flaps: Option<Flaps>,
    /// An OTA rollout to every cabinet, started once all are connected (see
    /// [`crate::rollout`]).
    pub rollout: Option<crate::rollout::RolloutPlan>,
    /// Share of parcels whose recipient enrolled a face template; they pick up by face.
    pub face_share: f64,
    /// Share of face pickups where the matcher does not recognise the recipient (a scarf,
    /// an odd angle): the recipient falls back to the code.
    pub face_unrecognised_share: f64,
    /// Share of face parcels an impostor (another person's face) tries to open first.
    pub impostor_share: f64,
    /// Share of face parcels where a spoof of the recipient's own face is tried first.
    pub spoof_share: f64,
    /// Which presentation attacks the spoofs are, in turn: `print`, `screen`, `mask`.
    pub spoof_kinds: Vec<String>,
    /// Share of parcels whose recipient never comes: they expire on the server (its
    /// pickup window; `parcels.pickup_window_s` makes it short) and the courier collects.
    pub no_show_share: f64,
    /// Share of pickups at a faulty door.
    pub door_fault_share: f64,
    /// Which faults, in turn: `jammed` (the lock does not release), `sensor` (a locked
    /// door's sensor reads open for a moment).
    pub door_fault_kinds: Vec<String>,
    /// A jammed lock is freed this long after its alarm, and the recipient tries again (s).
    pub door_fault_repair_s: f64,
    /// Share of cabinets that lose power once, right after a pickup.
    pub power_loss_share: f64,
    /// How long they stay off before starting again from their data dir (s).
    pub power_loss_s: f64,
    /// Share of cabinets whose own clock is off by `clock_drift_s`.
    pub clock_drift_share: f64,
    /// How far off, in s; half of the drifting cabinets are ahead, half behind.
    pub clock_drift_s: i64,
    /// Simulated time: each cabinet lives through a day of parcels arriving at random and
    /// recipients coming later, instead of the stock-then-pick-up phases (see
    /// [`crate::day`]).
    pub day: Option<crate::day::Day>,
}

/// Presentation attacks a simulated spoof can be.
pub const SPOOF_KINDS: [&str; 3] = ["print", "screen", "mask"];
/// Door faults the simulated hardware can have.
pub const DOOR_FAULT_KINDS: [&str; 2] = ["jammed", "sensor"];

/// What a parcel is for in a run (each parcel plays one role).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Picked up by code (maybe mistyped first, maybe the door left open).
    Code,
    /// Its recipient enrolled a face.
    Face,
    /// Its door has a fault at pickup: index into `door_fault_kinds`.
    DoorFault(usize),
    /// Nobody comes: it expires and the courier collects it.
    NoShow,
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

/// Cabinets whose link to the broker drops for `down_s` every `every_s` while the traffic
/// runs (a mobile link at the edge of its cell): they journal meanwhile and deliver on
/// each reconnect, with nothing lost or stored twice.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flaps {
    /// Share of the cabinets whose link flaps (others than the partitioned ones).
    pub share: f64,
    /// One drop every this many seconds.
    pub every_s: f64,
    /// Each drop lasts this long, s.
    pub down_s: f64,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "default".into(),
            cabinets: None,
            parcels_per_cabinet: None,
            compartments: None,
            wrong_code_share: 0.0,
            door_left_open_share: 0.0,
            door_left_open_s: 120,
            connect_per_s: 0.0,
            parcels_per_s: 0.0,
            partition: None,
            flaps: None,
            rollout: None,
            face_share: 0.0,
            face_unrecognised_share: 0.0,
            impostor_share: 0.0,
            spoof_share: 0.0,
            spoof_kinds: SPOOF_KINDS.iter().map(|k| (*k).to_owned()).collect(),
            no_show_share: 0.0,
            door_fault_share: 0.0,
            door_fault_kinds: DOOR_FAULT_KINDS.iter().map(|k| (*k).to_owned()).collect(),
            door_fault_repair_s: 1.0,
            power_loss_share: 0.0,
            power_loss_s: 2.0,
            clock_drift_share: 0.0,
            clock_drift_s: 0,
            day: None,
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

fn kinds(key: &'static str, given: &[String], known: &[&str], used: bool) -> Result<(), ScenarioError> {
    if used && given.is_empty() {
        return Err(ScenarioError::Invalid { key, reason: "names at least one kind".into() });
    }
    match given.iter().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ScenarioError::Invalid { key, reason: format!("{k:?} is not one of {}", known.join(", ")) }),
        None => Ok(()),
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
        if let Some(n) = self.compartments
            && !(1..=crate::day::MAX_COMPARTMENTS).contains(&n)
        {
            let reason = format!("{n} is not between 1 and {}", crate::day::MAX_COMPARTMENTS);
            return Err(ScenarioError::Invalid { key: "compartments", reason });
        }
        if self.day.is_none()
            && let Some(parcels) = self.parcels_per_cabinet
        {
            self.check_room(parcels)?;
        }
        if let Some(p) = &self.partition {
            share("partition.share", p.share)?;
            if !(p.seconds > 0.0 && p.seconds.is_finite()) {
                return Err(ScenarioError::Invalid { key: "partition.seconds", reason: "must be more than 0".into() });
            }
        }
        if let Some(f) = &self.flaps {
            share("flaps.share", f.share)?;
            if !(f.every_s > 0.0 && f.every_s <= 3600.0) {
                return Err(ScenarioError::Invalid {
                    key: "flaps.every_s",
                    reason: "must be more than 0 and at most 3600".into(),
                });
            }
            if !(f.down_s > 0.0 && f.down_s < f.every_s) {
                return Err(ScenarioError::Invalid {
                    key: "flaps.down_s",
                    reason: "must be more than 0 and less than flaps.every_s".into(),
                });
            }
            if self.partition.as_ref().is_some_and(|p| p.share + f.share > 1.0) {
                return Err(ScenarioError::Invalid {
                    key: "flaps.share",
                    reason: "partition.share and flaps.share together exceed 1".into(),
                });
            }
        }
        if let Some(r) = &self.rollout {
            r.validate()?;
        }
        for (key, v) in [
            ("face_share", self.face_share),
            ("face_unrecognised_share", self.face_unrecognised_share),
            ("impostor_share", self.impostor_share),
            ("spoof_share", self.spoof_share),
            ("no_show_share", self.no_show_share),
            ("door_fault_share", self.door_fault_share),
            ("power_loss_share", self.power_loss_share),
            ("clock_drift_share", self.clock_drift_share),
        ] {
            share(key, v)?;
        }
        if self.no_show_share + self.door_fault_share > 1.0 {
            return Err(ScenarioError::Invalid {
                key: "no_show_share",
                reason: "no_show_share and door_fault_share together exceed 1".into(),
            });
        }
        kinds("spoof_kinds", &self.spoof_kinds, &SPOOF_KINDS, self.spoof_share > 0.0)?;
        kinds("door_fault_kinds", &self.door_fault_kinds, &DOOR_FAULT_KINDS, self.door_fault_share > 0.0)?;
        if !(0.0..=3600.0).contains(&self.door_fault_repair_s) {
            return Err(ScenarioError::Invalid { key: "door_fault_repair_s", reason: "must be 0-3600 s".into() });
        }
        if !(self.power_loss_s > 0.0 && self.power_loss_s <= 3600.0) {
            return Err(ScenarioError::Invalid {
                key: "power_loss_s",
                reason: "must be more than 0 and at most 3600 s".into(),
            });
        }
        if self.clock_drift_s.unsigned_abs() > 10 * 365 * 86_400 {
            return Err(ScenarioError::Invalid { key: "clock_drift_s", reason: "must be within ±10 years".into() });
        }
        if self.clock_drift_share > 0.0 && self.clock_drift_s == 0 {
            return Err(ScenarioError::Invalid {
                key: "clock_drift_s",
                reason: "clock_drift_share is set but the drift is 0 s".into(),
            });
        }
        if let Some(day) = &self.day {
            day.validate()?;
            // The partition's cut falls between the phase mode's stocking and pickups,
            // which a day does not have.
            let clash = [
                (
                    self.partition.is_some(),
                    "partition",
                    "a [partition] cannot be combined with a timed [day] (its cut comes between the stocking and pickup phases, which a day has not): drop one of the two tables",
                ),
                (
                    self.parcels_per_cabinet.is_some(),
                    "parcels_per_cabinet",
                    "a timed [day] makes its parcels from day.arrivals_per_hour: drop parcels_per_cabinet",
                ),
                (
                    self.parcels_per_s > 0.0,
                    "parcels_per_s",
                    "a timed [day] paces its parcels by day.arrivals_per_hour: drop parcels_per_s",
                ),
                (
                    self.compartments.is_some(),
                    "compartments",
                    "a timed [day] has its own day.compartments: move the value there",
                ),
            ];
            if let Some((_, key, reason)) = clash.into_iter().find(|(clashes, _, _)| *clashes) {
                return Err(ScenarioError::Invalid { key, reason: reason.into() });
            }
        }
        Ok(())
    }

    /// Compartments of each simulated cabinet.
    pub fn compartments(&self) -> usize {
        match &self.day {
            Some(day) => day.compartments,
            None => self.compartments.unwrap_or(crate::day::DEFAULT_COMPARTMENTS),
        }
    }

    /// In the stock-and-pickup phases every parcel is deposited before the first pickup:
    /// more parcels per cabinet than compartments could never all be stocked.
    pub fn check_room(&self, parcels: usize) -> Result<(), ScenarioError> {
        let room = self.compartments();
        if self.day.is_none() && parcels > room {
            return Err(ScenarioError::Invalid {
                key: "parcels_per_cabinet",
                reason: format!(
                    "{parcels} parcels per cabinet do not fit its {room} compartments (every parcel is stocked \
                     before the first pickup): set `compartments` to at least {parcels}, or fewer parcels"
                ),
            });
        }
        Ok(())
    }

    /// The role of parcel `n` of cabinet `i`: reproducible, and each share drawn from its
    /// own part of the sequence.
    pub fn role(&self, i: usize, n: usize) -> Role {
        if Self::picks_salted(self.no_show_share, i, n, 1) {
            return Role::NoShow;
        }
        // The door-fault draw is shifted past the no-show one, so the two never overlap.
        let u = Self::draw(i, n, 1);
        if u >= self.no_show_share && u < self.no_show_share + self.door_fault_share {
            let k = (i + n) % self.door_fault_kinds.len().max(1);
            return Role::DoorFault(k);
        }
        if Self::picks_salted(self.face_share, i, n, 3) { Role::Face } else { Role::Code }
    }

    /// A draw in 0..1 for parcel `n` of cabinet `i` under `salt`.
    pub fn draw(i: usize, n: usize, salt: usize) -> f64 {
        let k = (i.wrapping_mul(7919) ^ salt.wrapping_mul(0x9e37_79b9)).wrapping_add(n.wrapping_mul(104_729)) as f64;
        (k * 0.618_033_988_75 + salt as f64 * 0.414_213_562_37).fract()
    }

    /// Like [`Scenario::picks`], from the part of the sequence `salt` names.
    pub fn picks_salted(share: f64, i: usize, n: usize, salt: usize) -> bool {
        Self::draw(i, n, salt) < share
    }

    /// Whether cabinet `i` loses power once.
    pub fn loses_power(&self, i: usize) -> bool {
        Self::picks_salted(self.power_loss_share, i, 0, 11)
    }

    /// Cabinet `i`'s own clock error in s (0 for most).
    pub fn clock_offset_s(&self, i: usize) -> i64 {
        if !Self::picks_salted(self.clock_drift_share, i, 0, 13) {
            return 0;
        }
        if i.is_multiple_of(2) { self.clock_drift_s } else { -self.clock_drift_s }
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

    /// How many cabinets' links flap: the ones after the partitioned ones.
    pub fn flapping(&self, cabinets: usize) -> usize {
        let n = self.flaps.as_ref().map_or(0, |f| ((cabinets as f64) * f.share).round() as usize);
        n.min(cabinets - self.partitioned(cabinets).min(cabinets))
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
        assert!(n >= 4, "the examples are there");
        // The field example exercises every fault and pickup-mix key.
        let field = Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/field.toml")).unwrap();
        for (key, v) in [
            ("face_share", field.face_share),
            ("impostor_share", field.impostor_share),
            ("spoof_share", field.spoof_share),
            ("no_show_share", field.no_show_share),
            ("door_fault_share", field.door_fault_share),
            ("power_loss_share", field.power_loss_share),
            ("clock_drift_share", field.clock_drift_share),
        ] {
            assert!(v > 0.0, "field.toml sets {key}");
        }
        assert_ne!(field.clock_drift_s, 0);
        // The day example runs on simulated time, with a profile.
        let day = Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/day.toml")).unwrap();
        let plan = day.day.as_ref().expect("day.toml has a [day]");
        assert!(plan.profile.as_ref().is_some_and(|p| p.len() == 24) && plan.speed > 1.0, "{plan:?}");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        for (text, key) in [
            ("wrong_code_share = 1.5", "wrong_code_share"),
            ("door_left_open_s = 0", "door_left_open_s"),
            ("[partition]\nshare = 0.5\nseconds = 0", "partition.seconds"),
            ("[flaps]\nshare = 1.5\nevery_s = 10\ndown_s = 1", "flaps.share"),
            ("[flaps]\nshare = 0.5\nevery_s = 0\ndown_s = 1", "flaps.every_s"),
            ("[flaps]\nshare = 0.5\nevery_s = 5\ndown_s = 5", "flaps.down_s"),
            ("[partition]\nshare = 0.6\nseconds = 1\n[flaps]\nshare = 0.6\nevery_s = 5\ndown_s = 1", "flaps.share"),
            ("[partition]\nshare = -1\nseconds = 3", "partition.share"),
            ("cabinets = 0", "cabinets"),
            ("[rollout]\nwaves = [10, 50]", "rollout.waves"),
            ("[rollout]\nwaves = [50, 10, 100]", "rollout.waves"),
            ("[rollout]\nartifact_kib = 0", "rollout.artifact_kib"),
            ("[rollout]\nversion = \"two\"", "rollout.version"),
            ("parcels_per_s = -2", "parcels_per_s"),
            ("face_share = 2", "face_share"),
            ("impostor_share = -0.1", "impostor_share"),
            ("spoof_share = 0.1\nspoof_kinds = [\"photo\"]", "spoof_kinds"),
            ("spoof_share = 0.1\nspoof_kinds = []", "spoof_kinds"),
            ("no_show_share = 1.1", "no_show_share"),
            ("no_show_share = 0.6\ndoor_fault_share = 0.6", "no_show_share"),
            ("door_fault_share = 0.1\ndoor_fault_kinds = [\"stuck\"]", "door_fault_kinds"),
            ("door_fault_repair_s = -1", "door_fault_repair_s"),
            ("power_loss_share = 0.1\npower_loss_s = 0", "power_loss_s"),
            ("clock_drift_share = 0.5", "clock_drift_s"),
            ("clock_drift_s = 999999999999", "clock_drift_s"),
        ] {
            let err = Scenario::parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = Scenario::parse("wrong_code = 0.1").unwrap_err().to_string();
        assert!(err.contains("wrong_code"), "unknown keys are refused: {err}");
    }

    #[test]
    fn roles_follow_their_shares_and_never_overlap() {
        let s = Scenario::parse("no_show_share = 0.1\ndoor_fault_share = 0.2\nface_share = 0.5").unwrap();
        let roles: Vec<Role> = (0..2000).map(|i| s.role(i, i % 3)).collect();
        let count = |f: fn(&Role) -> bool| roles.iter().filter(|r| f(r)).count();
        let no_show = count(|r| *r == Role::NoShow);
        let fault = count(|r| matches!(r, Role::DoorFault(_)));
        let face = count(|r| *r == Role::Face);
        assert!((150..=250).contains(&no_show), "{no_show} no-shows of 2000");
        assert!((300..=500).contains(&fault), "{fault} door faults of 2000");
        // Face draws among the rest (about 70 % of parcels), half of them.
        assert!((550..=850).contains(&face), "{face} face parcels of 2000");
        assert!(roles.contains(&Role::DoorFault(0)) && roles.contains(&Role::DoorFault(1)));
        let none = Scenario::default();
        assert!((0..500).all(|i| none.role(i, 0) == Role::Code));
        let drift = Scenario::parse("clock_drift_share = 1\nclock_drift_s = 60").unwrap();
        assert_eq!((drift.clock_offset_s(0), drift.clock_offset_s(1)), (60, -60), "half ahead, half behind");
    }

    #[test]
    fn more_parcels_than_compartments_are_refused_in_the_phase_mode() {
        let err = Scenario::parse("parcels_per_cabinet = 10").unwrap_err().to_string();
        assert!(err.contains("parcels_per_cabinet") && err.contains("4 compartments"), "{err}");
        let roomy = Scenario::parse("parcels_per_cabinet = 10\ncompartments = 12").unwrap();
        assert_eq!(roomy.compartments(), 12);
        assert!(roomy.check_room(12).is_ok() && roomy.check_room(13).is_err(), "--parcels is checked too");
        let err = Scenario::parse("compartments = 0").unwrap_err().to_string();
        assert!(err.contains("compartments"), "{err}");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let day = std::fs::read_to_string(dir.join("day.toml")).unwrap();
        let err = Scenario::parse(&format!("compartments = 8\n{day}")).unwrap_err().to_string();
        assert!(err.contains("day.compartments"), "{err}");
        // Every shipped scenario still loads.
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }

    #[test]
    fn picks_spread_a_share_evenly() {
        let hits = (0..1000).filter(|i| Scenario::picks(0.1, *i, 0)).count();
        assert!((80..=120).contains(&hits), "{hits} of 1000 for a share of 0.1");
        assert_eq!((0..100).filter(|i| Scenario::picks(0.0, *i, 1)).count(), 0);
        assert_eq!((0..100).filter(|i| Scenario::picks(1.0, *i, 1)).count(), 100);
    }
}
