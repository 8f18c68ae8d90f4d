//! Simulated time (`[day]` in a scenario): instead of stocking every cabinet at once and
//! then handing everything out, each cabinet lives through a day of its own. Parcels
//! arrive at it at random (a Poisson process at `arrivals_per_hour`, shaped by an
//! optional 24-hour `profile`), each recipient comes `pickup_after_h` later, and the
//! cabinet plays its timeline in time order, one courier or recipient at a time, with
//! simulated time running `speed` times faster than real time.
//!
//! ```text
//!   per cabinet i (no state shared between cabinets; same file, same schedule):
//!     arrivals  t₀ < t₁ < … < hours      unit exponentials from hash(seed, i, k), mapped
//!                                        through the day's cumulative arrival rate
//!     pickup    tₖ + U(pickup_after_h)   U from hash(seed, i, k); none for a no-show
//!     room      an arrival finding every compartment taken is refused (counted; its
//!               courier takes it elsewhere); a no-show holds its compartment all day
//!               (the run refuses besides when a failed pickup left a parcel behind)
//!   run: item due at traffic start + t / speed (real time) ─► sleep until then ─► deposit
//!        (`stock`) or pickup (the phase mode's roles) ─► lateness = started − due
//!   after the day: no-shows as in the phase mode (code after expiry, courier collects)
//! ```
//!
//! The server's own timers run in real time: its pickup window, learnt from the first
//! parcel made ready, lasts `window_s × speed` simulated seconds (see [`notes`]).

use serde::{Deserialize, Serialize};

use crate::scenario::ScenarioError;

/// A run kept up with its schedule when the p99 of the items' lateness stays under this
/// much real time, s.
pub const KEPT_UP_S: f64 = 1.0;

const MAX_HOURS: f64 = 744.0;
const MAX_ARRIVALS_PER_HOUR: f64 = 3600.0;
const MAX_PARCELS_PER_CABINET: f64 = 100_000.0;
const MAX_PICKUP_AFTER_H: f64 = 720.0;
const MAX_SPEED: f64 = 1_000_000.0;
pub const MAX_COMPARTMENTS: usize = 64;

/// Salts of the schedule's draws, one per kind of choice.
const SALT_ARRIVAL: u64 = 0xa77;
const SALT_PICKUP: u64 = 0x91c;

/// `[day]` in a scenario: simulated time, with parcel arrivals per hour per cabinet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Day {
    /// Simulated hours during which parcels arrive (their recipients may come later).
    pub hours: f64,
    /// Parcels arriving at each cabinet per simulated hour; with a `profile`, the mean
    /// over the 24 hours of the day.
    pub arrivals_per_hour: f64,
    /// Relative weights of the 24 hours of the day; hour h of the run (from 0) takes
    /// `profile[h mod 24]`. Unset: the same rate all day.
    #[serde(default)]
    pub profile: Option<Vec<f64>>,
    /// `[min, max]`: the recipient comes this many simulated hours after the deposit
    /// (uniform in between).
    pub pickup_after_h: Vec<f64>,
    /// Simulated seconds per real second (1: real time).
    pub speed: f64,
    /// Compartments of each simulated cabinet (sizes s, m, l, xl in turn; every parcel
    /// is an s, so it fits any of them).
    #[serde(default = "default_compartments")]
    pub compartments: usize,
    /// Another seed, another day with the same rates.
    #[serde(default)]
    pub seed: u64,
}

/// Compartments of a simulated cabinet unless a scenario says otherwise.
pub const DEFAULT_COMPARTMENTS: usize = 4;

fn default_compartments() -> usize {
    DEFAULT_COMPARTMENTS
}

/// What a schedule's item does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Step {
    /// The courier deposits the parcel (created just before, as in the phase mode).
    Deposit,
    /// Its recipient comes.
    Pickup,
}

/// One thing that happens at a cabinet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Item {
    /// Simulated seconds from the start of the traffic.
    pub at_s: f64,
    /// The parcel: its arrival's index at this cabinet (`Scenario::role(i, parcel)`).
    pub parcel: usize,
    pub step: Step,
}

/// One cabinet's day.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schedule {
    /// In time order: the order the cabinet plays them in.
    pub items: Vec<Item>,
    /// Parcels that arrived, including those refused.
    pub arrived: usize,
    /// Arrivals that found every compartment taken.
    pub refused: usize,
    /// Deposited parcels whose recipient never comes (no pickup item).
    pub no_shows: usize,
}

impl Schedule {
    /// The parcels deposited, in time order.
    pub fn deposits(&self) -> impl Iterator<Item = usize> + '_ {
        self.items.iter().filter(|it| it.step == Step::Deposit).map(|it| it.parcel)
    }

    /// When the last item is due, simulated s.
    pub fn end_s(&self) -> f64 {
        self.items.last().map_or(0.0, |it| it.at_s)
    }
}

/// splitmix64's finaliser: a well-mixed u64 from any u64.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A draw in (0, 1] for choice `k` of cabinet `i` under `salt`: a pure function of its
/// indices, like [`crate::scenario::Scenario::draw`], but independent from one `k` to
/// the next (exponential gaps need that).
fn unit(seed: u64, i: usize, k: usize, salt: u64) -> f64 {
    let z = mix(mix(mix(seed ^ salt) ^ i as u64) ^ k as u64);
    ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

impl Day {
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |key, reason: String| Err(ScenarioError::Invalid { key, reason });
        if !(self.hours > 0.0 && self.hours <= MAX_HOURS) {
            return bad("day.hours", format!("{} is not more than 0 and at most {MAX_HOURS} (a month)", self.hours));
        }
        if !(self.arrivals_per_hour >= 0.0 && self.arrivals_per_hour <= MAX_ARRIVALS_PER_HOUR) {
            return bad(
                "day.arrivals_per_hour",
                format!("{} is not between 0 and {MAX_ARRIVALS_PER_HOUR}", self.arrivals_per_hour),
            );
        }
        if self.arrivals_per_hour * self.hours > MAX_PARCELS_PER_CABINET {
            return bad(
                "day.arrivals_per_hour",
                format!(
                    "{} an hour for {} hours is over {MAX_PARCELS_PER_CABINET} parcels per cabinet",
                    self.arrivals_per_hour, self.hours
                ),
            );
        }
        if let Some(p) = &self.profile {
            if p.len() != 24 {
                return bad("day.profile", format!("has {} weights; it takes one per hour of the day, 24", p.len()));
            }
            if p.iter().any(|w| !(*w >= 0.0 && w.is_finite())) || p.iter().sum::<f64>() <= 0.0 {
                return bad("day.profile", "weights must be 0 or more, and not all 0".into());
            }
        }
        match self.pickup_after_h[..] {
            [lo, hi] if lo >= 0.0 && lo <= hi && hi > 0.0 && hi <= MAX_PICKUP_AFTER_H => {}
            _ => {
                return bad(
                    "day.pickup_after_h",
                    format!(
                        "{:?} is not [min, max] hours with 0 <= min <= max, max more than 0 and at most \
                         {MAX_PICKUP_AFTER_H}",
                        self.pickup_after_h
                    ),
                );
            }
        }
        if !(self.speed > 0.0 && self.speed <= MAX_SPEED) {
            return bad(
                "day.speed",
                format!("{} is not more than 0 (1: real time) and at most {MAX_SPEED}", self.speed),
            );
        }
        if !(1..=MAX_COMPARTMENTS).contains(&self.compartments) {
            return bad("day.compartments", format!("{} is not between 1 and {MAX_COMPARTMENTS}", self.compartments));
        }
        Ok(())
    }

    /// Arrivals per simulated hour during hour `h` of the run.
    fn rate(&self, h: usize) -> f64 {
        match &self.profile {
            Some(p) => {
                let mean = p.iter().sum::<f64>() / p.len() as f64;
                self.arrivals_per_hour * p[h % p.len()] / mean
            }
            None => self.arrivals_per_hour,
        }
    }

    /// Cabinet `i`'s arrivals, simulated s from the start, rising: unit-rate exponential
    /// gaps in "expected arrivals", mapped back to time through the day's cumulative
    /// rate (hour by hour), which makes a Poisson process following the profile.
    pub fn arrivals(&self, i: usize) -> Vec<f64> {
        let mut out = Vec::new();
        // Expected arrivals up to the next arrival, and up to the start of hour `h`.
        let (mut target, mut h, mut before_h) = (0.0f64, 0usize, 0.0f64);
        for k in 0.. {
            target += -unit(self.seed, i, k, SALT_ARRIVAL).ln();
            loop {
                let start = h as f64;
                if start >= self.hours {
                    return out;
                }
                let end = (start + 1.0).min(self.hours);
                let rate = self.rate(h);
                let here = rate * (end - start);
                if rate > 0.0 && before_h + here > target {
                    let t = start + (target - before_h) / rate;
                    if t < self.hours {
                        out.push(t * 3600.0);
                    }
                    break;
                }
                before_h += here;
                h += 1;
            }
        }
        out
    }

    /// Cabinet `i`'s day: its arrivals, each deposited if a compartment is free then (a
    /// compartment frees when its recipient comes; a no-show's stays taken all day), and
    /// each recipient's visit; `no_show(k)` says whether arrival `k`'s recipient never
    /// comes. In time order; at the same moment a pickup goes before a deposit.
    pub fn schedule(&self, i: usize, no_show: impl Fn(usize) -> bool) -> Schedule {
        let (lo, hi) = match self.pickup_after_h[..] {
            [lo, hi] => (lo, hi),
            _ => (0.0, 0.0),
        };
        let mut s = Schedule::default();
        // When each taken compartment frees, simulated s.
        let mut taken: Vec<f64> = Vec::new();
        for (k, at) in self.arrivals(i).into_iter().enumerate() {
            s.arrived += 1;
            taken.retain(|free_at| *free_at > at);
            if taken.len() >= self.compartments {
                s.refused += 1;
                continue;
            }
            s.items.push(Item { at_s: at, parcel: k, step: Step::Deposit });
            if no_show(k) {
                s.no_shows += 1;
                taken.push(f64::INFINITY);
            } else {
                let after_h = lo + (hi - lo) * unit(self.seed, i, k, SALT_PICKUP);
                // At least a simulated millisecond after the deposit, so it sorts after it.
                let pickup = (at + after_h * 3600.0).max(at + 0.001);
                taken.push(pickup);
                s.items.push(Item { at_s: pickup, parcel: k, step: Step::Pickup });
            }
        }
        let order = |st: Step| match st {
            Step::Pickup => 0,
            Step::Deposit => 1,
        };
        s.items.sort_by(|a, b| {
            a.at_s.total_cmp(&b.at_s).then(order(a.step).cmp(&order(b.step))).then(a.parcel.cmp(&b.parcel))
        });
        s
    }

    /// `h` simulated hours in real seconds at this speed.
    pub fn real_s(&self, simulated_h: f64) -> f64 {
        simulated_h * 3600.0 / self.speed
    }
}

/// The `day` section of the report.
#[derive(Debug, Clone, Serialize)]
pub struct DayReport {
    /// Simulated hours during which parcels arrived (`day.hours`), and to the last
    /// scheduled pickup.
    pub hours: f64,
    pub simulated_hours: f64,
    pub speed: f64,
    pub arrivals_per_hour: f64,
    pub compartments: usize,
    /// Real seconds the schedule takes at this speed (`simulated_hours` × 3600 / speed),
    /// and from the traffic's start until every cabinet had played its last item.
    pub real_seconds_planned: f64,
    pub real_seconds: f64,
    /// Parcels that arrived at the cabinets; those refused because every compartment was
    /// taken (as the schedule planned it); those the run refused besides, because a
    /// failed pickup left its parcel in a compartment the schedule counted free; those
    /// deposited (arrived − refused − failed deposits).
    pub parcels_arrived: usize,
    pub parcels_refused_no_room: usize,
    pub parcels_refused_unplanned: usize,
    pub parcels_deposited: usize,
    /// Deposited parcels picked up during the day, and those whose recipients never
    /// came (collected afterwards: see `no_show`).
    pub parcels_picked_up: usize,
    pub no_shows: usize,
    /// Deposits and pickups started, and how late they started against their due time
    /// (real s): the cabinet was still busy with the one before, or the server slow.
    pub items: usize,
    pub lateness_p50_s: f64,
    pub lateness_p99_s: f64,
    pub lateness_max_s: f64,
    pub items_late_over_1s: usize,
    /// Whether the run kept up with simulated time: p99 lateness under [`KEPT_UP_S`].
    pub kept_up: bool,
    /// The server's pickup window (deadline − ready, from the first parcel made ready),
    /// in real s and in simulated hours at this speed.
    pub pickup_window_s: Option<f64>,
    pub pickup_window_simulated_h: Option<f64>,
    /// What the figures mean for this run (the server's window against the day).
    pub notes: Vec<String>,
}

/// What the run saw, for [`DayReport::build`].
#[derive(Debug, Clone, Default)]
pub struct DayObserved {
    pub deposited: usize,
    pub refused_full: usize,
    pub picked_up: usize,
    pub lateness_s: Vec<f64>,
    pub real_seconds: f64,
    pub pickup_window_s: Option<f64>,
}

impl DayReport {
    pub fn build(day: &Day, schedules: &[Schedule], seen: &DayObserved, no_show_share: f64) -> Self {
        let simulated_hours = schedules.iter().map(Schedule::end_s).fold(0.0, f64::max) / 3600.0;
        let mut late = seen.lateness_s.clone();
        late.sort_by(f64::total_cmp);
        let at = |q: f64| if late.is_empty() { 0.0 } else { late[((late.len() - 1) as f64 * q).round() as usize] };
        let window_h = seen.pickup_window_s.map(|w| w * day.speed / 3600.0);
        Self {
            hours: day.hours,
            simulated_hours,
            speed: day.speed,
            arrivals_per_hour: day.arrivals_per_hour,
            compartments: day.compartments,
            real_seconds_planned: day.real_s(simulated_hours),
            real_seconds: seen.real_seconds,
            parcels_arrived: schedules.iter().map(|s| s.arrived).sum(),
            parcels_refused_no_room: schedules.iter().map(|s| s.refused).sum(),
            parcels_refused_unplanned: seen.refused_full,
            parcels_deposited: seen.deposited,
            parcels_picked_up: seen.picked_up,
            no_shows: schedules.iter().map(|s| s.no_shows).sum(),
            items: late.len(),
            lateness_p50_s: at(0.5),
            lateness_p99_s: at(0.99),
            lateness_max_s: at(1.0),
            items_late_over_1s: late.iter().filter(|l| **l > 1.0).count(),
            kept_up: at(0.99) < KEPT_UP_S,
            pickup_window_s: seen.pickup_window_s,
            pickup_window_simulated_h: window_h,
            notes: notes(day, simulated_hours, seen.pickup_window_s, no_show_share, at(1.0)),
        }
    }
}

/// What the server's real-time pickup window means for a day at this speed: a window
/// longer than the simulated day means no-shows expire only after it (they are handled
/// then, as in the phase mode, and the run takes that long); a window shorter than the
/// latest recipients' wait — as scheduled, or with the run's worst lateness (real s) on
/// top — means their parcels may expire before they come.
pub fn notes(
    day: &Day,
    simulated_hours: f64,
    window_s: Option<f64>,
    no_show_share: f64,
    lateness_max_s: f64,
) -> Vec<String> {
    let mut out = Vec::new();
    let Some(w) = window_s else {
        return out;
    };
    let window_h = w * day.speed / 3600.0;
    if no_show_share > 0.0 && window_h > simulated_hours {
        out.push(format!(
            "the server's pickup window ({w:.0} s real) is {window_h:.1} simulated hours at speed {}, longer than \
             the simulated day ({simulated_hours:.1} h): no-shows expire after the day and are handled then \
             (parcels.pickup_window_s on the server shortens it)",
            day.speed
        ));
    }
    let latest = day.pickup_after_h.get(1).copied().unwrap_or(0.0);
    if day.real_s(latest) >= w {
        out.push(format!(
            "recipients come up to {latest} simulated hours after the deposit ({:.0} s real at speed {}), not \
             within the server's pickup window ({w:.0} s real): their parcels expire first",
            day.real_s(latest),
            day.speed
        ));
    } else if day.real_s(latest) + lateness_max_s >= w {
        out.push(format!(
            "the run fell up to {lateness_max_s:.1} s behind its schedule: recipients coming that late after a \
             wait of up to {:.0} s real may find their parcels expired (the server's pickup window is {w:.0} s real)",
            day.real_s(latest)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::scenario::{Role, Scenario};

    fn day(text: &str) -> Day {
        Scenario::parse(text).unwrap().day.unwrap()
    }

    const FLAT: &str = "[day]\nhours = 10\narrivals_per_hour = 3\npickup_after_h = [0.5, 2]\nspeed = 600\n";

    #[test]
    fn a_schedule_is_the_same_every_time_and_differs_by_cabinet_and_seed() {
        let d = day(FLAT);
        let a = d.schedule(7, |_| false);
        assert_eq!(a, d.schedule(7, |_| false));
        assert!(!a.items.is_empty());
        assert_ne!(a.items, d.schedule(8, |_| false).items, "another cabinet, another day");
        let seeded = day(&format!("{FLAT}seed = 5\n"));
        assert_ne!(a.items, seeded.schedule(7, |_| false).items, "another seed, another day");
    }

    #[test]
    fn arrivals_come_at_the_rate_and_spread_like_a_poisson_process() {
        let d = day(FLAT);
        let counts: Vec<f64> = (0..2000).map(|i| d.arrivals(i).len() as f64).collect();
        let mean = counts.iter().sum::<f64>() / counts.len() as f64;
        let var = counts.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / counts.len() as f64;
        assert!((29.0..=31.0).contains(&mean), "{mean} arrivals per cabinet, 30 expected");
        assert!((0.8..=1.2).contains(&(var / mean)), "variance {var} against mean {mean}");
        // Every hour of a flat day gets its share.
        let mut per_hour = [0usize; 10];
        for i in 0..2000 {
            for t in d.arrivals(i) {
                assert!((0.0..36_000.0).contains(&t), "{t} s is within the 10 h");
                per_hour[(t / 3600.0) as usize] += 1;
            }
        }
        assert!(per_hour.iter().all(|n| (5700..=6300).contains(n)), "{per_hour:?}");
    }

    #[test]
    fn a_profile_shapes_the_day_and_keeps_its_mean() {
        let mut weights = vec!["0"; 24];
        weights[2] = "1";
        weights[3] = "3";
        let d = day(&format!(
            "[day]\nhours = 24\narrivals_per_hour = 1\npickup_after_h = [1, 2]\nspeed = 600\nprofile = [{}]\n",
            weights.join(", ")
        ));
        let (mut hour2, mut hour3) = (0, 0);
        for i in 0..1000 {
            for t in d.arrivals(i) {
                match (t / 3600.0) as usize {
                    2 => hour2 += 1,
                    3 => hour3 += 1,
                    h => panic!("an arrival in hour {h}, whose weight is 0"),
                }
            }
        }
        // 24 a day per cabinet, all in hours 2 and 3, a quarter and three quarters.
        let total = f64::from(hour2 + hour3) / 1000.0;
        assert!((23.0..=25.0).contains(&total), "{total} a day");
        assert!((0.22..=0.28).contains(&(f64::from(hour2) / f64::from(hour2 + hour3))), "{hour2} / {hour3}");
    }

    #[test]
    fn every_pickup_follows_its_deposit_within_the_wait_and_items_are_in_order() {
        let d = day(FLAT);
        let s = Scenario::parse("no_show_share = 0.2").unwrap();
        for i in 0..200 {
            let sched = d.schedule(i, |k| s.role(i, k) == Role::NoShow);
            assert!(sched.items.windows(2).all(|w| w[0].at_s <= w[1].at_s), "in time order");
            let mut deposited = std::collections::HashMap::new();
            for it in &sched.items {
                match it.step {
                    Step::Deposit => {
                        assert!((0.0..36_000.0).contains(&it.at_s), "arrivals within the day's hours");
                        assert!(deposited.insert(it.parcel, it.at_s).is_none(), "deposited once");
                    }
                    Step::Pickup => {
                        let at = deposited.get(&it.parcel).expect("picked up after its deposit");
                        let after_h = (it.at_s - at) / 3600.0;
                        assert!((0.5..=2.0).contains(&after_h), "{after_h} h after the deposit");
                        assert_ne!(s.role(i, it.parcel), Role::NoShow, "a no-show's recipient never comes");
                    }
                }
            }
            let pickups = sched.items.iter().filter(|it| it.step == Step::Pickup).count();
            assert_eq!(deposited.len(), pickups + sched.no_shows);
            assert_eq!(sched.arrived, deposited.len() + sched.refused);
            assert!(sched.end_s() <= 12.0 * 3600.0, "the last recipient comes within hours + max wait");
        }
    }

    #[test]
    fn a_full_cabinet_refuses_arrivals_and_never_holds_more_than_its_compartments() {
        let d =
            day("[day]\nhours = 24\narrivals_per_hour = 4\npickup_after_h = [2, 6]\nspeed = 600\ncompartments = 3\n");
        let (mut refused, mut arrived) = (0, 0);
        for i in 0..100 {
            let sched = d.schedule(i, |k| k % 7 == 0);
            let mut held = 0usize;
            for it in &sched.items {
                match it.step {
                    Step::Deposit => held += 1,
                    Step::Pickup => held -= 1,
                }
                assert!(held <= 3, "cabinet {i} holds {held} parcels in 3 compartments");
            }
            refused += sched.refused;
            arrived += sched.arrived;
        }
        // About 16 parcels wanting a compartment at once, 3 compartments: most are refused.
        assert!(refused > arrived / 2 && refused < arrived, "{refused} of {arrived} refused");
        let roomy =
            day("[day]\nhours = 24\narrivals_per_hour = 4\npickup_after_h = [2, 6]\nspeed = 600\ncompartments = 64\n");
        assert_eq!((0..100).map(|i| roomy.schedule(i, |_| false).refused).sum::<usize>(), 0);
    }

    #[test]
    fn a_bad_day_names_its_key() {
        let ok = "arrivals_per_hour = 2\npickup_after_h = [1, 3]\nspeed = 60\n";
        for (text, key) in [
            (format!("[day]\nhours = 0\n{ok}"), "day.hours"),
            (format!("[day]\nhours = 1000\n{ok}"), "day.hours"),
            (
                "[day]\nhours = 2\narrivals_per_hour = -1\npickup_after_h = [1, 3]\nspeed = 60".into(),
                "day.arrivals_per_hour",
            ),
            (
                "[day]\nhours = 700\narrivals_per_hour = 3000\npickup_after_h = [1, 3]\nspeed = 60".into(),
                "day.arrivals_per_hour",
            ),
            (
                "[day]\nhours = 2\narrivals_per_hour = 2\npickup_after_h = [3, 1]\nspeed = 60".into(),
                "day.pickup_after_h",
            ),
            ("[day]\nhours = 2\narrivals_per_hour = 2\npickup_after_h = [1]\nspeed = 60".into(), "day.pickup_after_h"),
            (
                "[day]\nhours = 2\narrivals_per_hour = 2\npickup_after_h = [0, 0]\nspeed = 60".into(),
                "day.pickup_after_h",
            ),
            (
                "[day]\nhours = 2\narrivals_per_hour = 2\npickup_after_h = [-1, 2]\nspeed = 60".into(),
                "day.pickup_after_h",
            ),
            ("[day]\nhours = 2\narrivals_per_hour = 2\npickup_after_h = [1, 3]\nspeed = 0".into(), "day.speed"),
            (format!("[day]\nhours = 2\n{ok}profile = [1, 2, 3]"), "day.profile"),
            (format!("[day]\nhours = 2\n{ok}profile = [{}]", vec!["0"; 24].join(",")), "day.profile"),
            (format!("[day]\nhours = 2\n{ok}compartments = 0"), "day.compartments"),
            (format!("[partition]\nshare = 0.5\nseconds = 3\n[day]\nhours = 2\n{ok}"), "partition"),
            (format!("parcels_per_cabinet = 3\n[day]\nhours = 2\n{ok}"), "parcels_per_cabinet"),
            (format!("parcels_per_s = 10\n[day]\nhours = 2\n{ok}"), "parcels_per_s"),
        ] {
            let err = Scenario::parse(&text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = Scenario::parse(&format!("[day]\nhours = 2\n{ok}partition = 1")).unwrap_err().to_string();
        assert!(err.contains("partition"), "unknown keys are refused: {err}");
        let err = Scenario::parse("[day]\nhours = 2\narrivals_per_hour = 2\nspeed = 60").unwrap_err().to_string();
        assert!(err.contains("pickup_after_h"), "a missing key is named: {err}");
        let both = Scenario::parse(&format!("[partition]\nshare = 0.5\nseconds = 3\n[day]\nhours = 2\n{ok}"));
        assert!(both.unwrap_err().to_string().contains("[day]"), "the error names both tables");
    }

    #[test]
    fn the_report_counts_the_schedule_and_judges_the_lateness() {
        let d = day("[day]\nhours = 2\narrivals_per_hour = 3\npickup_after_h = [0.5, 1]\nspeed = 3600\n");
        let schedules: Vec<Schedule> = (0..4).map(|i| d.schedule(i, |k| k == 0)).collect();
        let deposits: usize = schedules.iter().map(|s| s.deposits().count()).sum();
        let mut seen = DayObserved {
            deposited: deposits,
            refused_full: 1,
            picked_up: deposits - 4,
            lateness_s: vec![0.01; 100],
            real_seconds: 3.0,
            pickup_window_s: Some(5.0),
        };
        let r = DayReport::build(&d, &schedules, &seen, 0.25);
        assert_eq!(r.parcels_arrived, schedules.iter().map(|s| s.arrived).sum::<usize>());
        assert_eq!((r.no_shows, r.parcels_refused_unplanned), (4, 1));
        assert!(r.kept_up && r.items == 100 && r.items_late_over_1s == 0, "{r:?}");
        assert!((r.pickup_window_simulated_h.unwrap() - 5.0).abs() < 1e-9, "5 s real are 5 h at 3600×");
        assert!((r.real_seconds_planned - r.simulated_hours).abs() < 1e-9, "an hour a second");
        assert!(r.simulated_hours > 1.0 && r.simulated_hours <= 3.0, "{r:?}");
        assert!(r.notes.iter().any(|n| n.contains("longer than the simulated day")), "{:?}", r.notes);
        seen.lateness_s.extend([2.0, 3.0]);
        let late = DayReport::build(&d, &schedules, &seen, 0.0);
        assert!(!late.kept_up && late.lateness_max_s == 3.0 && late.items_late_over_1s == 2, "{late:?}");
        assert!(late.notes.is_empty(), "no no-shows, and every recipient within the window: {:?}", late.notes);
        seen.lateness_s.push(4.5);
        let behind = DayReport::build(&d, &schedules, &seen, 0.0);
        assert!(
            behind.notes.iter().any(|n| n.contains("4.5 s behind")),
            "1 s of wait + 4.5 late > 5: {:?}",
            behind.notes
        );
        seen.pickup_window_s = Some(0.5);
        let expired = DayReport::build(&d, &schedules, &seen, 0.0);
        assert!(expired.notes.iter().any(|n| n.contains("expire first")), "{:?}", expired.notes);
    }
}
