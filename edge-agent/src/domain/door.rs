//! One compartment door as a state machine without I/O.
//!
//! ```text
//!   locked ──unlock──► unlocking ──sensor open──► open ──sensor closed──► locked
//!     │                   │  (not opened within unlock_window: relock)    │
//!     └─sensor open: FORCED alarm           open longer than left_open_after: LEFT OPEN alarm
//!   lock refuses to release: JAMMED alarm
//! ```
//!
//! The caller feeds commands, sensor readings and the time, and performs the returned
//! [`DoorEffect`]s (drive the lock, record an alarm, tell the flow the door closed).

use chrono::{DateTime, Duration, Utc};

/// Where the door is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorState {
    Locked,
    /// The lock was released; waiting for the door to be opened.
    Unlocking {
        since: DateTime<Utc>,
    },
    Open {
        since: DateTime<Utc>,
        alarmed: bool,
    },
}

/// What happened at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorInput {
    /// A flow (pickup, deposit, operator command) wants the door open.
    Unlock,
    /// The lock reported it could not release.
    LockFailed,
    SensorOpened,
    SensorClosed,
    Tick,
}

/// Alarms a door raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorAlarm {
    LeftOpen,
    Forced,
    Jammed,
}

impl DoorAlarm {
    pub fn code(&self) -> &'static str {
        match self {
            DoorAlarm::LeftOpen => "door_left_open",
            DoorAlarm::Forced => "door_forced",
            DoorAlarm::Jammed => "lock_jammed",
        }
    }
}

/// What the caller must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorEffect {
    ReleaseLock,
    EngageLock,
    Alarm(DoorAlarm),
    /// The door was opened and shut again: the flow that opened it is complete.
    Closed,
    /// The door was released but never opened, and locked again: the flow did not happen.
    Abandoned,
}

/// Timings of one door.
#[derive(Debug, Clone, Copy)]
pub struct DoorTimings {
    pub unlock_window: Duration,
    pub left_open_after: Duration,
}

impl DoorTimings {
    /// These timings with the operator's remote settings applied over them.
    pub fn with(self, s: &lockerfleet_shared::envelope::CabinetSettings) -> Self {
        let secs = |v: Option<u32>, d: Duration| v.map_or(d, |v| Duration::seconds(i64::from(v)));
        Self {
            unlock_window: secs(s.unlock_window_s, self.unlock_window),
            left_open_after: secs(s.door_left_open_s, self.left_open_after),
        }
    }
}

impl Default for DoorTimings {
    fn default() -> Self {
        Self { unlock_window: Duration::seconds(10), left_open_after: Duration::seconds(120) }
    }
}

#[derive(Debug, Clone)]
pub struct Door {
    pub state: DoorState,
    timings: DoorTimings,
}

impl Door {
    pub fn new(timings: DoorTimings) -> Self {
        Self { state: DoorState::Locked, timings }
    }

    /// A door whose flow was under way when the agent stopped: its lock was released and
    /// it may be open; it completes on the next close, or relocks after the window.
    pub fn resumed(timings: DoorTimings, now: DateTime<Utc>) -> Self {
        Self { state: DoorState::Unlocking { since: now }, timings }
    }

    /// New timings; a flow under way is measured by them from now on.
    pub fn set_timings(&mut self, timings: DoorTimings) {
        self.timings = timings;
    }

    /// Whether a flow holds this door (an update must not restart under it).
    pub fn busy(&self) -> bool {
        self.state != DoorState::Locked
    }

    pub fn step(&mut self, input: DoorInput, now: DateTime<Utc>) -> Vec<DoorEffect> {
        use DoorEffect::*;
        use DoorInput as I;
        use DoorState as S;
        match (self.state, input) {
            (S::Locked, I::Unlock) => {
                self.state = S::Unlocking { since: now };
                vec![ReleaseLock]
            }
            (S::Unlocking { .. } | S::Open { .. }, I::Unlock) => vec![],
            (S::Unlocking { .. }, I::LockFailed) => {
                self.state = S::Locked;
                vec![Alarm(DoorAlarm::Jammed)]
            }
            (S::Locked, I::SensorOpened) => {
                self.state = S::Open { since: now, alarmed: true };
                vec![Alarm(DoorAlarm::Forced)]
            }
            (S::Unlocking { .. }, I::SensorOpened) => {
                self.state = S::Open { since: now, alarmed: false };
                vec![]
            }
            (S::Open { .. }, I::SensorClosed) => {
                self.state = S::Locked;
                vec![EngageLock, Closed]
            }
            (S::Unlocking { since }, I::Tick) if now - since >= self.timings.unlock_window => {
                self.state = S::Locked;
                vec![EngageLock, Abandoned]
            }
            // After a restart a door whose flow was under way starts as unlocking: a
            // close reading means it was opened before the restart.
            (S::Unlocking { .. }, I::SensorClosed) => {
                self.state = S::Locked;
                vec![EngageLock, Closed]
            }
            (S::Open { since, alarmed: false }, I::Tick) if now - since >= self.timings.left_open_after => {
                self.state = S::Open { since, alarmed: true };
                vec![Alarm(DoorAlarm::LeftOpen)]
            }
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DoorEffect::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_normal_opening_releases_then_engages_and_reports_closed() {
        let mut d = Door::new(DoorTimings::default());
        assert_eq!(d.step(DoorInput::Unlock, t(0)), vec![ReleaseLock]);
        assert!(d.busy());
        assert_eq!(d.step(DoorInput::SensorOpened, t(2)), vec![]);
        assert_eq!(d.step(DoorInput::Tick, t(30)), vec![]);
        assert_eq!(d.step(DoorInput::SensorClosed, t(40)), vec![EngageLock, Closed]);
        assert_eq!(d.state, DoorState::Locked);
        assert!(!d.busy());
    }

    #[test]
    fn an_unopened_door_relocks_after_the_window() {
        let mut d = Door::new(DoorTimings::default());
        d.step(DoorInput::Unlock, t(0));
        assert_eq!(d.step(DoorInput::Tick, t(9)), vec![]);
        assert_eq!(d.step(DoorInput::Tick, t(10)), vec![EngageLock, Abandoned]);
        assert_eq!(d.state, DoorState::Locked);
    }

    #[test]
    fn a_door_held_open_raises_one_alarm() {
        let mut d = Door::new(DoorTimings::default());
        d.step(DoorInput::Unlock, t(0));
        d.step(DoorInput::SensorOpened, t(1));
        assert_eq!(d.step(DoorInput::Tick, t(121)), vec![Alarm(DoorAlarm::LeftOpen)]);
        assert_eq!(d.step(DoorInput::Tick, t(500)), vec![], "raised once, not every tick");
    }

    #[test]
    fn opening_a_locked_door_is_forced_and_a_stuck_lock_is_jammed() {
        let mut d = Door::new(DoorTimings::default());
        assert_eq!(d.step(DoorInput::SensorOpened, t(0)), vec![Alarm(DoorAlarm::Forced)]);
        assert_eq!(d.step(DoorInput::SensorClosed, t(5)), vec![EngageLock, Closed]);
        d.step(DoorInput::Unlock, t(10));
        assert_eq!(d.step(DoorInput::LockFailed, t(10)), vec![Alarm(DoorAlarm::Jammed)]);
        assert_eq!(d.state, DoorState::Locked);
    }

    #[test]
    fn a_second_unlock_while_open_does_nothing() {
        let mut d = Door::new(DoorTimings::default());
        d.step(DoorInput::Unlock, t(0));
        assert_eq!(d.step(DoorInput::Unlock, t(1)), vec![], "no double release");
        d.step(DoorInput::SensorOpened, t(2));
        assert_eq!(d.step(DoorInput::Unlock, t(3)), vec![]);
    }
}
