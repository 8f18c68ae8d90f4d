//! Pickup-code entry: which parcel a typed code opens, and brute-force lockout.
//!
//! A code is checked against the slow hashes of the parcels ready in this cabinet (the
//! server never sends the codes). After `max_failures` wrong codes within `window` the
//! keypad locks for `lockout` and the caller records an alarm. Works offline: everything
//! it needs is in the cabinet's desired state on disk.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use lockerfleet_shared::envelope::{ExpectedParcel, ParcelStage};

/// Lockout policy.
#[derive(Debug, Clone, Copy)]
pub struct KeypadPolicy {
    pub max_failures: usize,
    pub window: Duration,
    pub lockout: Duration,
}

impl KeypadPolicy {
    /// This policy with the operator's remote settings applied over it.
    pub fn with(self, s: &lockerfleet_shared::envelope::CabinetSettings) -> Self {
        let secs = |v: Option<u32>, d: Duration| v.map_or(d, |v| Duration::seconds(i64::from(v)));
        Self {
            max_failures: s.max_failed_attempts.map_or(self.max_failures, |v| v as usize),
            window: secs(s.attempt_window_s, self.window),
            lockout: secs(s.lockout_s, self.lockout),
        }
    }
}

impl Default for KeypadPolicy {
    fn default() -> Self {
        Self { max_failures: 5, window: Duration::minutes(10), lockout: Duration::minutes(15) }
    }
}

/// The outcome of one code entry.
#[derive(Debug, Clone, PartialEq)]
pub enum CodeOutcome {
    /// The code opens this parcel's compartment.
    Accepted(ExpectedParcel),
    /// Wrong code; `remaining` tries before lockout.
    Rejected { remaining: usize },
    /// This entry used up the last try: locked until the time given (raise an alarm).
    LockedOutNow { until: DateTime<Utc> },
    /// Still locked; the code was not even checked.
    LockedOut { until: DateTime<Utc> },
    /// The keypad is unavailable for a moment (an update holds the cabinet); the code was
    /// not checked and does not count.
    Unavailable,
}

/// Counts failed attempts and locks out after too many (the keypad's codes and the face
/// path each have one).
#[derive(Debug, Clone)]
pub struct Lockout {
    policy: KeypadPolicy,
    failures: VecDeque<DateTime<Utc>>,
    locked_until: Option<DateTime<Utc>>,
}

impl Lockout {
    pub fn new(policy: KeypadPolicy) -> Self {
        Self { policy, failures: VecDeque::new(), locked_until: None }
    }

    /// Changes the policy; failures counted so far and a lockout under way stay.
    pub fn set_policy(&mut self, policy: KeypadPolicy) {
        self.policy = policy;
    }

    /// Until when attempts are refused, if they are now.
    pub fn locked(&mut self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.locked_until {
            Some(until) if now < until => Some(until),
            Some(_) => {
                self.locked_until = None;
                self.failures.clear();
                None
            }
            None => None,
        }
    }

    /// Records a failure; returns the lockout's end when this one triggered it.
    pub fn fail(&mut self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        while self.failures.front().is_some_and(|t| now - *t > self.policy.window) {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        if self.failures.len() >= self.policy.max_failures {
            let until = now + self.policy.lockout;
            self.locked_until = Some(until);
            return Some(until);
        }
        None
    }

    pub fn succeed(&mut self) {
        self.failures.clear();
    }

    /// Failures still allowed before a lockout.
    pub fn remaining(&self) -> usize {
        self.policy.max_failures.saturating_sub(self.failures.len())
    }
}

#[derive(Debug, Clone)]
pub struct Keypad {
    lockout: Lockout,
}

impl Keypad {
    pub fn new(policy: KeypadPolicy) -> Self {
        Self { lockout: Lockout::new(policy) }
    }

    pub fn set_policy(&mut self, policy: KeypadPolicy) {
        self.lockout.set_policy(policy);
    }

    /// Checks `code` against the ready parcels with `verify(code, hash)`.
    pub fn enter(
        &mut self,
        code: &str,
        parcels: &[ExpectedParcel],
        now: DateTime<Utc>,
        verify: impl Fn(&str, &str) -> bool,
    ) -> CodeOutcome {
        let candidates = match self.candidates(parcels, now) {
            Ok(c) => c,
            Err(locked) => return locked,
        };
        let hit = candidates.into_iter().find(|p| p.code_hash.as_deref().is_some_and(|h| verify(code, h)));
        self.settle(hit, now)
    }

    /// The first half of [`Keypad::enter`], for callers that verify elsewhere (argon2 is
    /// slow on purpose; a cabinet verifies on a worker thread): the parcels a typed code
    /// may open, or the lockout that refuses it.
    pub fn candidates(
        &mut self,
        parcels: &[ExpectedParcel],
        now: DateTime<Utc>,
    ) -> Result<Vec<ExpectedParcel>, CodeOutcome> {
        if let Some(until) = self.lockout.locked(now) {
            return Err(CodeOutcome::LockedOut { until });
        }
        Ok(parcels
            .iter()
            .filter(|p| p.stage == ParcelStage::Ready && p.expires_at > now && p.code_hash.is_some())
            .cloned()
            .collect())
    }

    /// The second half: `hit` is the candidate the code matched, if any.
    pub fn settle(&mut self, hit: Option<ExpectedParcel>, now: DateTime<Utc>) -> CodeOutcome {
        if let Some(p) = hit {
            self.lockout.succeed();
            return CodeOutcome::Accepted(p);
        }
        match self.lockout.fail(now) {
            Some(until) => CodeOutcome::LockedOutNow { until },
            None => CodeOutcome::Rejected { remaining: self.lockout.remaining() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockerfleet_shared::{CompartmentId, ParcelId};

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn parcel(code: &str, stage: ParcelStage) -> ExpectedParcel {
        ExpectedParcel {
            parcel: ParcelId::generate(),
            compartment: CompartmentId::new("A1").unwrap(),
            stage,
            courier: None,
            // The test "hash" is the code itself; real hashes are argon2.
            code_hash: Some(code.to_owned()),
            expires_at: t(100_000),
        }
    }

    fn eq(code: &str, hash: &str) -> bool {
        code == hash
    }

    #[test]
    fn the_right_code_opens_its_parcel_only_while_ready() {
        let mut k = Keypad::new(KeypadPolicy::default());
        let ready = parcel("12345678", ParcelStage::Ready);
        let collect = parcel("87654321", ParcelStage::Collect);
        let all = [ready.clone(), collect];
        assert_eq!(k.enter("12345678", &all, t(0), eq), CodeOutcome::Accepted(ready));
        assert_eq!(k.enter("87654321", &all, t(1), eq), CodeOutcome::Rejected { remaining: 4 });
    }

    #[test]
    fn repeated_wrong_codes_lock_the_keypad_out() {
        let mut k = Keypad::new(KeypadPolicy::default());
        let all = [parcel("12345678", ParcelStage::Ready)];
        for i in 0..4 {
            assert!(matches!(k.enter("00000000", &all, t(i), eq), CodeOutcome::Rejected { .. }));
        }
        let until = match k.enter("00000000", &all, t(5), eq) {
            CodeOutcome::LockedOutNow { until } => until,
            other => panic!("{other:?}"),
        };
        // Even the right code is not checked while locked.
        assert_eq!(k.enter("12345678", &all, t(6), eq), CodeOutcome::LockedOut { until });
        assert!(matches!(k.enter("12345678", &all, until, eq), CodeOutcome::Accepted(_)));
    }

    #[test]
    fn old_failures_fall_out_of_the_window() {
        let mut k = Keypad::new(KeypadPolicy::default());
        let all = [parcel("12345678", ParcelStage::Ready)];
        for i in 0..4 {
            k.enter("0", &all, t(i), eq);
        }
        assert_eq!(k.enter("0", &all, t(4 + 11 * 60), eq), CodeOutcome::Rejected { remaining: 4 });
    }

    #[test]
    fn an_expired_parcel_does_not_open() {
        let mut k = Keypad::new(KeypadPolicy::default());
        let mut p = parcel("12345678", ParcelStage::Ready);
        p.expires_at = t(10);
        assert!(matches!(k.enter("12345678", &[p], t(11), eq), CodeOutcome::Rejected { .. }));
    }
}
