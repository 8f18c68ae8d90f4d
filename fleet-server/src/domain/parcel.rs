//! The parcel lifecycle.
//!
//! ```text
//!   created ──assign──► assigned ──deposit──► deposited ──ready──► ready ──pickup──► picked_up
//!      ▲                   │                                        │  ▲
//!      └─reservation lapses┘                                  expire│  │extend (once, before the deadline)
//!                                                                   ▼  │
//!                                                                expired ──collect──► returned
//!   cancel: from any state before pickup; a parcel already in its compartment is then
//!   collected by a courier (cancelled ──collect──► returned is recorded as `collected`).
//! ```
//!
//! [`Parcel::apply`] checks one [`Transition`] against the current state and returns the
//! [`Effect`]s the caller must carry out in the same database transaction (free the
//! compartment, revoke the template, tell the courier…). Every accepted transition is
//! also an entry on the parcel's timeline.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Where a parcel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParcelState {
    Created,
    Assigned,
    Deposited,
    Ready,
    PickedUp,
    Expired,
    Returned,
    Cancelled,
}

impl ParcelState {
    pub const ALL: [ParcelState; 8] = [
        ParcelState::Created,
        ParcelState::Assigned,
        ParcelState::Deposited,
        ParcelState::Ready,
        ParcelState::PickedUp,
        ParcelState::Expired,
        ParcelState::Returned,
        ParcelState::Cancelled,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ParcelState::Created => "created",
            ParcelState::Assigned => "assigned",
            ParcelState::Deposited => "deposited",
            ParcelState::Ready => "ready",
            ParcelState::PickedUp => "picked_up",
            ParcelState::Expired => "expired",
            ParcelState::Returned => "returned",
            ParcelState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The parcel is physically inside its compartment.
    pub fn in_compartment(&self) -> bool {
        matches!(self, ParcelState::Deposited | ParcelState::Ready | ParcelState::Expired)
    }

    /// Nothing more will happen to the parcel.
    pub fn is_final(&self) -> bool {
        matches!(self, ParcelState::PickedUp | ParcelState::Returned)
    }
}

/// Per-tenant pickup rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PickupPolicy {
    /// How long a recipient has from deposit (e.g. 48 h).
    pub window: Duration,
    /// How much one extension adds.
    pub extension: Duration,
    /// How long a courier has to deposit after assignment.
    pub reservation: Duration,
}

impl Default for PickupPolicy {
    fn default() -> Self {
        Self { window: Duration::hours(48), extension: Duration::hours(24), reservation: Duration::hours(24) }
    }
}

/// A request to move the parcel on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// A compartment was reserved for it and a courier told to bring it.
    Assign,
    /// The courier's reservation ran out before a deposit.
    ReservationLapsed,
    /// The courier closed the door on it.
    Deposit,
    /// The recipient was notified; the pickup window starts.
    Ready,
    /// The recipient asked for more time.
    Extend,
    /// The recipient took it.
    Pickup,
    /// The pickup window ended.
    Expire,
    /// A courier took it back out (after expiry or cancellation).
    Collect,
    /// The sender or operator cancelled it.
    Cancel,
}

impl Transition {
    pub const ALL: [Transition; 9] = [
        Transition::Assign,
        Transition::ReservationLapsed,
        Transition::Deposit,
        Transition::Ready,
        Transition::Extend,
        Transition::Pickup,
        Transition::Expire,
        Transition::Collect,
        Transition::Cancel,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Transition::Assign => "assign",
            Transition::ReservationLapsed => "reservation_lapsed",
            Transition::Deposit => "deposit",
            Transition::Ready => "ready",
            Transition::Extend => "extend",
            Transition::Pickup => "pickup",
            Transition::Expire => "expire",
            Transition::Collect => "collect",
            Transition::Cancel => "cancel",
        }
    }
}

/// What the caller must do because of a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Hold the compartment until the given time (the courier's reservation).
    ReserveCompartment { until: DateTime<Utc> },
    /// The compartment is free again.
    ReleaseCompartment,
    /// Tell the assigned courier to bring the parcel.
    NotifyCourierAssignment,
    /// Tell a courier to collect the parcel from its compartment.
    NotifyCourierCollection,
    /// Tell the courier an assignment was withdrawn.
    NotifyCourierWithdrawn,
    /// Tell the recipient the parcel is ready (with the cabinet's key for sealing).
    NotifyRecipientReady,
    /// Put the parcel, its code hash and template into the cabinet's desired state.
    PushToCabinet,
    /// Take the parcel and its template out of the cabinet's desired state.
    RevokeFromCabinet,
}

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("a parcel that is {from} cannot {transition}")]
    NotAllowed { from: &'static str, transition: &'static str },
    #[error("the pickup window was already extended once")]
    AlreadyExtended,
    #[error("the pickup window has already ended")]
    WindowEnded,
    #[error("the pickup window has not ended yet (it ends at {deadline})")]
    NotYetExpired { deadline: DateTime<Utc> },
}

/// The lifecycle state of one parcel, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parcel {
    pub state: ParcelState,
    /// Courier's deposit deadline while assigned; recipient's pickup deadline while ready.
    pub deadline: Option<DateTime<Utc>>,
    /// The single extension has been used.
    pub extended: bool,
}

impl Default for Parcel {
    fn default() -> Self {
        Self::new()
    }
}

impl Parcel {
    pub fn new() -> Self {
        Self { state: ParcelState::Created, deadline: None, extended: false }
    }

    /// Applies `t` at `now`, returning the effects to perform.
    pub fn apply(
        &mut self,
        t: &Transition,
        now: DateTime<Utc>,
        policy: &PickupPolicy,
    ) -> Result<Vec<Effect>, TransitionError> {
        use Effect::*;
        use ParcelState as S;
        let refuse = || TransitionError::NotAllowed { from: self.state.as_str(), transition: t.as_str() };
        let (next, deadline, effects) = match (self.state, t) {
            (S::Created, Transition::Assign) => {
                let until = now + policy.reservation;
                (S::Assigned, Some(until), vec![ReserveCompartment { until }, NotifyCourierAssignment])
            }
            (S::Assigned, Transition::ReservationLapsed) => {
                (S::Created, None, vec![ReleaseCompartment, NotifyCourierWithdrawn])
            }
            (S::Assigned, Transition::Deposit) => (S::Deposited, None, vec![]),
            (S::Deposited, Transition::Ready) => {
                (S::Ready, Some(now + policy.window), vec![PushToCabinet, NotifyRecipientReady])
            }
            (S::Ready, Transition::Extend) => {
                if self.extended {
                    return Err(TransitionError::AlreadyExtended);
                }
                let current = self.deadline.unwrap_or(now);
                if current <= now {
                    return Err(TransitionError::WindowEnded);
                }
                self.extended = true;
                (S::Ready, Some(current + policy.extension), vec![PushToCabinet])
            }
            // A pickup recorded by the cabinet counts even if the server's timer already
            // expired the parcel: the cabinet only opens for parcels it still holds.
            (S::Ready | S::Expired, Transition::Pickup) => {
                (S::PickedUp, None, vec![ReleaseCompartment, RevokeFromCabinet])
            }
            (S::Ready, Transition::Expire) => {
                if let Some(d) = self.deadline
                    && d > now
                {
                    return Err(TransitionError::NotYetExpired { deadline: d });
                }
                (S::Expired, None, vec![RevokeFromCabinet, NotifyCourierCollection])
            }
            (S::Expired | S::Cancelled, Transition::Collect) => {
                (S::Returned, None, vec![ReleaseCompartment, RevokeFromCabinet])
            }
            (S::Created, Transition::Cancel) => (S::Cancelled, None, vec![]),
            (S::Assigned, Transition::Cancel) => (S::Cancelled, None, vec![ReleaseCompartment, NotifyCourierWithdrawn]),
            (S::Deposited | S::Ready, Transition::Cancel) => {
                (S::Cancelled, None, vec![RevokeFromCabinet, NotifyCourierCollection])
            }
            (S::Expired, Transition::Cancel) => (S::Cancelled, None, vec![]),
            _ => return Err(refuse()),
        };
        self.state = next;
        self.deadline = deadline;
        Ok(effects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Effect::*;
    use ParcelState as S;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn policy() -> PickupPolicy {
        PickupPolicy::default()
    }

    fn walk(steps: &[Transition]) -> Parcel {
        let mut p = Parcel::new();
        for s in steps {
            // Expiry needs the window to have ended; everything else happens at t0.
            let now = if *s == Transition::Expire { t0() + Duration::days(30) } else { t0() };
            p.apply(s, now, &policy()).unwrap();
        }
        p
    }

    #[test]
    fn the_happy_path_reserves_notifies_pushes_and_frees() {
        let mut p = Parcel::new();
        let e = p.apply(&Transition::Assign, t0(), &policy()).unwrap();
        assert_eq!(e, vec![ReserveCompartment { until: t0() + Duration::hours(24) }, NotifyCourierAssignment]);
        assert_eq!(p.deadline, Some(t0() + Duration::hours(24)));
        assert!(p.apply(&Transition::Deposit, t0(), &policy()).unwrap().is_empty());
        assert_eq!(p.state, S::Deposited);
        assert_eq!(p.apply(&Transition::Ready, t0(), &policy()).unwrap(), vec![PushToCabinet, NotifyRecipientReady]);
        assert_eq!(p.deadline, Some(t0() + Duration::hours(48)));
        assert_eq!(p.apply(&Transition::Pickup, t0(), &policy()).unwrap(), vec![ReleaseCompartment, RevokeFromCabinet]);
        assert_eq!(p.state, S::PickedUp);
        assert!(p.state.is_final());
        assert_eq!(p.deadline, None);
    }

    #[test]
    fn the_window_extends_once_and_only_before_it_ends() {
        let mut p = walk(&[Transition::Assign, Transition::Deposit, Transition::Ready]);
        let ends = p.deadline.unwrap();
        p.apply(&Transition::Extend, t0() + Duration::hours(1), &policy()).unwrap();
        assert_eq!(p.deadline, Some(ends + Duration::hours(24)));
        assert_eq!(p.apply(&Transition::Extend, t0(), &policy()), Err(TransitionError::AlreadyExtended));

        let mut late = walk(&[Transition::Assign, Transition::Deposit, Transition::Ready]);
        assert_eq!(
            late.apply(&Transition::Extend, t0() + Duration::hours(48), &policy()),
            Err(TransitionError::WindowEnded)
        );
    }

    #[test]
    fn expiry_waits_for_the_deadline_then_sends_a_courier() {
        let mut p = walk(&[Transition::Assign, Transition::Deposit, Transition::Ready]);
        assert!(matches!(
            p.apply(&Transition::Expire, t0() + Duration::hours(47), &policy()),
            Err(TransitionError::NotYetExpired { .. })
        ));
        assert_eq!(
            p.apply(&Transition::Expire, t0() + Duration::hours(48), &policy()).unwrap(),
            vec![RevokeFromCabinet, NotifyCourierCollection]
        );
        assert_eq!(
            p.apply(&Transition::Collect, t0(), &policy()).unwrap(),
            vec![ReleaseCompartment, RevokeFromCabinet]
        );
        assert_eq!(p.state, S::Returned);
    }

    #[test]
    fn a_pickup_the_cabinet_recorded_after_server_side_expiry_still_counts() {
        let mut p = walk(&[Transition::Assign, Transition::Deposit, Transition::Ready]);
        p.apply(&Transition::Expire, t0() + Duration::hours(49), &policy()).unwrap();
        assert_eq!(p.apply(&Transition::Pickup, t0(), &policy()).unwrap(), vec![ReleaseCompartment, RevokeFromCabinet]);
    }

    #[test]
    fn a_lapsed_reservation_frees_the_compartment_and_returns_to_created() {
        let mut p = walk(&[Transition::Assign]);
        assert_eq!(
            p.apply(&Transition::ReservationLapsed, t0(), &policy()).unwrap(),
            vec![ReleaseCompartment, NotifyCourierWithdrawn]
        );
        assert_eq!(p, Parcel::new());
    }

    #[test]
    fn cancellation_depends_on_where_the_parcel_is() {
        let cases = [
            (vec![], vec![]),
            (vec![Transition::Assign], vec![ReleaseCompartment, NotifyCourierWithdrawn]),
            (vec![Transition::Assign, Transition::Deposit], vec![RevokeFromCabinet, NotifyCourierCollection]),
            (
                vec![Transition::Assign, Transition::Deposit, Transition::Ready],
                vec![RevokeFromCabinet, NotifyCourierCollection],
            ),
        ];
        for (steps, effects) in cases {
            let mut p = walk(&steps);
            assert_eq!(p.apply(&Transition::Cancel, t0(), &policy()).unwrap(), effects, "{steps:?}");
            assert_eq!(p.state, S::Cancelled);
        }
        // Cancelled with the parcel inside: a courier collects it.
        let mut p = walk(&[Transition::Assign, Transition::Deposit, Transition::Cancel]);
        assert_eq!(
            p.apply(&Transition::Collect, t0(), &policy()).unwrap(),
            vec![ReleaseCompartment, RevokeFromCabinet]
        );
        assert_eq!(p.state, S::Returned);
    }

    #[test]
    fn nothing_happens_after_pickup_or_return() {
        let all = Transition::ALL;
        for done in [
            walk(&[Transition::Assign, Transition::Deposit, Transition::Ready, Transition::Pickup]),
            walk(&[
                Transition::Assign,
                Transition::Deposit,
                Transition::Ready,
                Transition::Expire,
                Transition::Collect,
            ]),
        ] {
            for t in &all {
                let mut p = done.clone();
                assert!(
                    matches!(p.apply(t, t0(), &policy()), Err(TransitionError::NotAllowed { .. })),
                    "{:?} after {:?}",
                    t,
                    done.state
                );
                assert_eq!(p, done, "a refused transition changes nothing");
            }
        }
    }

    /// Every (state, transition) pair: exactly the pairs in the diagram are accepted.
    #[test]
    fn the_transition_table_is_exactly_the_diagram() {
        let allowed: &[(S, &str)] = &[
            (S::Created, "assign"),
            (S::Created, "cancel"),
            (S::Assigned, "reservation_lapsed"),
            (S::Assigned, "deposit"),
            (S::Assigned, "cancel"),
            (S::Deposited, "ready"),
            (S::Deposited, "cancel"),
            (S::Ready, "extend"),
            (S::Ready, "pickup"),
            (S::Ready, "expire"),
            (S::Ready, "cancel"),
            (S::Expired, "pickup"),
            (S::Expired, "collect"),
            (S::Expired, "cancel"),
            (S::Cancelled, "collect"),
        ];
        let all = Transition::ALL;
        for state in ParcelState::ALL {
            for t in &all {
                let mut p = Parcel {
                    state,
                    // A deadline already passed, so expiry is possible and extension is not
                    // refused for the window (it is refused for other reasons or allowed).
                    deadline: Some(t0() + Duration::hours(1)),
                    extended: false,
                };
                let now = if *t == Transition::Expire { t0() + Duration::hours(2) } else { t0() };
                let accepted = p.apply(t, now, &policy()).is_ok();
                let expected = allowed.contains(&(state, t.as_str()));
                assert_eq!(accepted, expected, "{state:?} + {t:?}");
            }
        }
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for s in ParcelState::ALL {
            assert_eq!(ParcelState::parse(s.as_str()), Some(s));
        }
        assert_eq!(ParcelState::parse("lost"), None);
    }
}
