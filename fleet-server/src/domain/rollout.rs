//! The rollout conductor: a pure state machine that moves an OTA release through a fleet
//! in waves. It is fed events (cabinet reports, heartbeats, health verdicts, operator
//! commands) and the current time, and answers with actions (offer the update to a
//! cabinet, withdraw an offer). It never reads a clock, a database or a broker, so a
//! rollout over 10,000 cabinets with simulated time runs in milliseconds in tests.
//!
//! ```text
//!   cabinet: pending ─offer─► offered ─► downloading(%) ─► downloaded ─► waiting_window
//!              ▲                 │             │                │              │
//!              └─retry (backoff+jitter)◄─ timed out / failed ◄──┴──────────────┤
//!                                                                              ▼
//!            confirmed ◄─ restarting ◄─ installing ◄──────────────────── (in window)
//!            failed(reason) | rolled_back | rejected   (terminal, counted by kind)
//!
//!   rollout: running(wave k) ─► [awaiting approval] ─► running(k+1) … ─► completed
//!            paused (operator, threshold, or a wave settled short of its success share)
//!              ⇄ running;  aborted (operator or threshold)
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Distinct reasons kept per failure kind; more are counted as `other`.
const MAX_REASONS: usize = 20;

/// How big a wave is: a share of the whole target, or a fixed number of cabinets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaveSize {
    /// Cumulative percentage of the target reached by the end of this wave.
    Percent(f64),
    /// This many more cabinets.
    Count(usize),
}

/// What crossing a failure threshold does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnThreshold {
    Pause,
    Abort,
}

/// Why a cabinet's update did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The cabinet reported a failure (download, install).
    Failed,
    /// The cabinet refused the artifact (signature, hash, hardware, downgrade).
    Rejected,
    /// No progress within the in-progress timeout.
    TimedOut,
    /// Went quiet after installing (no report or heartbeat within the silence window).
    Silent,
    /// Health after the update regressed against the cabinet's own baseline.
    Regressed,
    /// The cabinet rolled itself back (its health check failed after the restart).
    RolledBack,
}

impl FailureKind {
    pub const ALL: [FailureKind; 6] = [
        FailureKind::Failed,
        FailureKind::Rejected,
        FailureKind::TimedOut,
        FailureKind::Silent,
        FailureKind::Regressed,
        FailureKind::RolledBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Failed => "failed",
            FailureKind::Rejected => "rejected",
            FailureKind::TimedOut => "timed_out",
            FailureKind::Silent => "silent",
            FailureKind::Regressed => "regressed",
            FailureKind::RolledBack => "rolled_back",
        }
    }

    /// Whether another attempt might succeed (a transient problem, not a bad release).
    fn retriable(self) -> bool {
        matches!(self, FailureKind::Failed | FailureKind::TimedOut)
    }
}

/// A failure threshold: more than `share` of a wave failing this way triggers `action`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub share: f64,
    pub action: OnThreshold,
}

/// A daily maintenance window in the cabinet's local time; installs happen only inside
/// it (downloads may happen any time). The contract's type: the offer carries it as is.
pub use lockerfleet_shared::envelope::InstallWindow as Window;

/// Offers per minute, optionally growing while nothing fails.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_minute: f64,
    /// Multiply the rate by this after each minute without a new failure (1 = constant).
    pub growth: f64,
    pub max_per_minute: f64,
}

/// The longest duration a plan may name: beyond it a deadline (`now + timeout`) could leave
/// the calendar, and no rollout waits that long on purpose.
pub const MAX_PLAN_DURATION: Duration = Duration::days(366);

/// Durations travel as whole seconds.
mod secs {
    use chrono::Duration;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(d.num_seconds())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = i64::deserialize(d)?;
        Duration::try_seconds(v).ok_or_else(|| serde::de::Error::custom("duration out of range"))
    }
}

/// Everything that decides how a rollout moves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Plan {
    pub waves: Vec<WaveSize>,
    pub rate: Rate,
    /// Share of a wave that must be confirmed before the next wave starts.
    pub success_share: f64,
    /// Time a wave's success must hold (health watched) before the next wave starts.
    #[serde(rename = "soak_s", with = "secs")]
    pub soak: Duration,
    /// Wait for an operator's approval between waves.
    pub manual_approval: bool,
    pub thresholds: BTreeMap<FailureKind, Threshold>,
    /// A cabinet that makes no progress for this long has timed out.
    #[serde(rename = "progress_timeout_s", with = "secs")]
    pub progress_timeout: Duration,
    /// Attempts after the first, for retriable failures.
    pub max_retries: u32,
    /// First retry delay; doubled per attempt, with ±25 % jitter.
    #[serde(rename = "retry_base_s", with = "secs")]
    pub retry_base: Duration,
    /// After confirming, a cabinet must be heard from within this window or it counts
    /// as silent.
    #[serde(rename = "silence_after_s", with = "secs")]
    pub silence_after: Duration,
    /// How long a cabinet's traffic is watched after it confirms before its health is
    /// compared with its own week before the update.
    #[serde(rename = "health_watch_s", with = "secs")]
    pub health_watch: Duration,
    pub window: Option<Window>,
}

impl Default for Plan {
    fn default() -> Self {
        let t = |share, action| Threshold { share, action };
        Self {
            waves: vec![
                WaveSize::Percent(1.0),
                WaveSize::Percent(10.0),
                WaveSize::Percent(50.0),
                WaveSize::Percent(100.0),
            ],
            rate: Rate { per_minute: 100.0, growth: 1.0, max_per_minute: 100.0 },
            success_share: 0.95,
            soak: Duration::minutes(15),
            manual_approval: false,
            thresholds: BTreeMap::from([
                (FailureKind::Failed, t(0.05, OnThreshold::Pause)),
                (FailureKind::Rejected, t(0.01, OnThreshold::Abort)),
                (FailureKind::TimedOut, t(0.10, OnThreshold::Pause)),
                (FailureKind::Silent, t(0.02, OnThreshold::Abort)),
                (FailureKind::Regressed, t(0.05, OnThreshold::Pause)),
                (FailureKind::RolledBack, t(0.05, OnThreshold::Abort)),
            ]),
            progress_timeout: Duration::hours(2),
            max_retries: 3,
            retry_base: Duration::minutes(5),
            silence_after: Duration::minutes(15),
            health_watch: Duration::minutes(10),
            window: None,
        }
    }
}

impl Plan {
    /// The plan's first problem, named.
    pub fn check(&self) -> Result<(), String> {
        if self.waves.is_empty() {
            return Err("waves: at least one wave".into());
        }
        let mut last = 0.0;
        for w in &self.waves {
            match *w {
                WaveSize::Percent(p) if !(p > last && p <= 100.0) => {
                    return Err("waves: percentages rise, up to 100".into());
                }
                WaveSize::Percent(p) => last = p,
                WaveSize::Count(0) => return Err("waves: a counted wave has at least one cabinet".into()),
                WaveSize::Count(_) => {}
            }
        }
        if !(self.rate.per_minute > 0.0 && self.rate.growth >= 1.0 && self.rate.max_per_minute >= self.rate.per_minute)
        {
            return Err("rate: per_minute > 0, growth ≥ 1, max_per_minute ≥ per_minute".into());
        }
        if !(0.0..=1.0).contains(&self.success_share)
            || self.thresholds.values().any(|t| !(0.0..=1.0).contains(&t.share))
        {
            return Err("success_share and threshold shares lie between 0 and 1".into());
        }
        for (name, d) in [
            ("soak_s", self.soak),
            ("progress_timeout_s", self.progress_timeout),
            ("retry_base_s", self.retry_base),
            ("silence_after_s", self.silence_after),
            ("health_watch_s", self.health_watch),
        ] {
            if d > MAX_PLAN_DURATION {
                return Err(format!("{name} is at most {} s (366 days)", MAX_PLAN_DURATION.num_seconds()));
            }
        }
        if self.health_watch < Duration::zero() {
            return Err("health_watch_s must not be negative".into());
        }
        if self.progress_timeout <= Duration::zero() || self.retry_base < Duration::zero() {
            return Err("progress_timeout must be positive".into());
        }
        if let Some(w) = self.window
            && (w.start_min >= 1440 || w.end_min >= 1440)
        {
            return Err("window: minutes after midnight, below 1440".into());
        }
        Ok(())
    }
}

/// Where one cabinet is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CabinetState {
    Pending,
    Offered,
    Downloading {
        percent: u8,
    },
    Downloaded,
    WaitingWindow,
    Installing,
    Restarting,
    Confirmed,
    /// Waiting to be offered again.
    RetryAt {
        at: DateTime<Utc>,
    },
    Failed {
        kind: FailureKind,
    },
    /// Withdrawn by an abort before it installed.
    Cancelled,
}

impl CabinetState {
    pub fn label(&self) -> &'static str {
        match self {
            CabinetState::Pending => "pending",
            CabinetState::Offered => "offered",
            CabinetState::Downloading { .. } => "downloading",
            CabinetState::Downloaded => "downloaded",
            CabinetState::WaitingWindow => "waiting_window",
            CabinetState::Installing => "installing",
            CabinetState::Restarting => "restarting",
            CabinetState::Confirmed => "confirmed",
            CabinetState::RetryAt { .. } => "retry_wait",
            CabinetState::Failed { kind } => kind.as_str(),
            CabinetState::Cancelled => "cancelled",
        }
    }

    /// Between the offer and the end: the cabinet is working on it.
    fn in_flight(&self) -> bool {
        matches!(
            self,
            CabinetState::Offered
                | CabinetState::Downloading { .. }
                | CabinetState::Downloaded
                | CabinetState::WaitingWindow
                | CabinetState::Installing
                | CabinetState::Restarting
        )
    }
}

/// A progress report from a cabinet (the contract's `OtaStatus`, plus percentages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Report {
    Downloading { percent: u8 },
    Downloaded,
    WaitingWindow,
    Installing,
    Restarting,
    Succeeded,
    RolledBack,
    Failed,
    Refused,
}

/// What the conductor is told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Input {
    Report {
        cabinet: String,
        report: Report,
        /// The cabinet's reason, for failures.
        #[serde(default)]
        detail: Option<String>,
    },
    /// Any sign of life (heartbeat, hello) from a cabinet.
    Heard {
        cabinet: String,
    },
    /// An offered cabinet started a new MQTT session since its offer was sent, or has
    /// been heard from well after it without a word about the update. An offer reaches
    /// only a cabinet subscribed at that moment (a clean session keeps nothing for it),
    /// so the cabinet is offered again instead of waiting out the progress timeout.
    Reconnected {
        cabinet: String,
    },
    /// The health watcher found this cabinet worse than its own baseline since updating.
    Regressed {
        cabinet: String,
        #[serde(default)]
        reason: String,
    },
    /// A cabinet that matches the target joined the fleet (it goes into the last wave).
    Joined {
        cabinet: String,
        utc_offset_min: i32,
    },
    Pause,
    Resume,
    Abort,
    /// Failed cabinets (retriable kinds) go back to pending.
    RetryFailed,
    /// Start the next wave (with `manual_approval`).
    Approve,
}

/// What the conductor asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send the offer to this cabinet (attempt 0 is the first).
    Offer { cabinet: String, attempt: u32 },
    /// Withdraw the offer (the rollout was aborted before it installed).
    Withdraw { cabinet: String },
}

/// Where the rollout is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    Running {
        wave: usize,
    },
    /// The wave succeeded; the operator approves the next.
    AwaitingApproval {
        wave: usize,
    },
    Paused {
        wave: usize,
        reason: String,
        /// The wave settled short of its success share (`approve` accepts it as it is).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        short_wave: bool,
    },
    Aborted {
        reason: String,
    },
    Completed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cab {
    wave: usize,
    state: CabinetState,
    attempt: u32,
    /// Last progress, for the timeout; confirmation time, for the silence watch.
    since: DateTime<Utc>,
    offset_min: i32,
    /// Heard from after confirming.
    heard_after: bool,
    /// Bumped at every state change (see `timers`).
    generation: u64,
    /// Its health after the update has been judged.
    #[serde(default)]
    judged: bool,
    /// Why its last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Running totals of one wave, kept as states change (so no step scans the fleet).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct WaveCounts {
    confirmed: usize,
    /// Confirmed, failed or cancelled.
    settled: usize,
    failures: BTreeMap<FailureKind, usize>,
}

fn settled(s: CabinetState) -> bool {
    matches!(s, CabinetState::Confirmed | CabinetState::Failed { .. } | CabinetState::Cancelled)
}

/// One rollout's conductor. It serialises whole, so the replica that owns a rollout
/// can store it and another can take over from the stored copy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conductor {
    plan: Plan,
    cabs: HashMap<String, Cab>,
    counts: Vec<WaveCounts>,
    /// When each cabinet must next be looked at (timeout, silence, retry), tagged with
    /// the cabinet's state generation; entries of an older generation are stale.
    timers: std::collections::BinaryHeap<std::cmp::Reverse<(DateTime<Utc>, u64, String)>>,
    /// Cabinets of each wave, in offer order.
    waves: Vec<Vec<String>>,
    queue: VecDeque<String>,
    phase: Phase,
    tokens: f64,
    rate: f64,
    last_tick: Option<DateTime<Utc>>,
    minute_start: Option<DateTime<Utc>>,
    failures_this_minute: usize,
    wave_succeeded_at: Option<DateTime<Utc>>,
    jitter_state: u64,
    /// Why cabinets failed: by kind, then by reason, counted.
    #[serde(default)]
    reasons: BTreeMap<FailureKind, BTreeMap<String, usize>>,
    /// A wave that settled short of the success share and the operator let go on.
    #[serde(default)]
    accepted_short: Option<usize>,
}

/// Splits `n` shuffled cabinets into waves.
fn wave_sizes(plan: &[WaveSize], n: usize) -> Vec<usize> {
    let mut sizes = Vec::with_capacity(plan.len());
    let mut placed = 0usize;
    for (i, w) in plan.iter().enumerate() {
        let until = match *w {
            WaveSize::Percent(p) => ((p / 100.0) * n as f64).ceil() as usize,
            WaveSize::Count(c) => placed.saturating_add(c),
        };
        let until = if i + 1 == plan.len() { n } else { until.min(n).max(placed + usize::from(placed < n)) };
        sizes.push(until - placed);
        placed = until;
    }
    sizes
}

impl Conductor {
    /// A rollout over `cabinets` (id, UTC offset in minutes), shuffled by `seed` so the
    /// canary is a random sample, not the oldest cabinets.
    pub fn new(plan: Plan, mut cabinets: Vec<(String, i32)>, seed: u64, now: DateTime<Utc>) -> Self {
        let mut state = seed | 1;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        cabinets.sort();
        cabinets.dedup_by(|a, b| a.0 == b.0);
        for i in (1..cabinets.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            cabinets.swap(i, j);
        }
        let sizes = wave_sizes(&plan.waves, cabinets.len());
        let mut waves = Vec::with_capacity(sizes.len());
        let mut cabs = HashMap::with_capacity(cabinets.len());
        let mut it = cabinets.into_iter();
        for (w, size) in sizes.iter().enumerate() {
            let mut ids = Vec::with_capacity(*size);
            for (id, offset_min) in it.by_ref().take(*size) {
                cabs.insert(
                    id.clone(),
                    Cab {
                        wave: w,
                        state: CabinetState::Pending,
                        attempt: 0,
                        since: now,
                        offset_min,
                        heard_after: false,
                        generation: 0,
                        judged: false,
                        reason: None,
                    },
                );
                ids.push(id);
            }
            waves.push(ids);
        }
        let rate = plan.rate.per_minute;
        let counts = vec![WaveCounts::default(); waves.len()];
        let mut c = Self {
            plan,
            cabs,
            counts,
            timers: std::collections::BinaryHeap::new(),
            waves,
            queue: VecDeque::new(),
            phase: Phase::Running { wave: 0 },
            tokens: 1.0,
            rate,
            last_tick: None,
            minute_start: None,
            failures_this_minute: 0,
            wave_succeeded_at: None,
            reasons: BTreeMap::new(),
            accepted_short: None,
            jitter_state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        };
        c.queue.extend(c.waves.first().cloned().unwrap_or_default());
        c
    }

    /// Confirmed cabinets not yet heard from since, with when they confirmed (the caller
    /// feeds `Heard` for those it has heard from since then).
    pub fn awaiting_word(&self) -> Vec<(String, DateTime<Utc>)> {
        self.cabs
            .iter()
            .filter(|(_, c)| c.state == CabinetState::Confirmed && !c.heard_after)
            .map(|(id, c)| (id.clone(), c.since))
            .collect()
    }

    /// Offered cabinets with nothing heard of their update yet, and when the offer was
    /// sent (the caller feeds `Reconnected` for those that started a new session since).
    pub fn awaiting_offer(&self) -> Vec<(String, DateTime<Utc>)> {
        self.cabs
            .iter()
            .filter(|(_, c)| c.state == CabinetState::Offered)
            .map(|(id, c)| (id.clone(), c.since))
            .collect()
    }

    /// Confirmed cabinets whose watch after the update (`health_watch`) is over and whose
    /// health has not been judged: (id, confirmed at).
    pub fn due_for_health(&self, now: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)> {
        let watch = self.plan.health_watch;
        self.cabs
            .iter()
            .filter(|(_, c)| c.state == CabinetState::Confirmed && !c.judged && now - c.since >= watch)
            .map(|(id, c)| (id.clone(), c.since))
            .collect()
    }

    /// The health of `cabinet` has been judged (healthy, or `Regressed` was fed).
    pub fn judged(&mut self, cabinet: &str) {
        if let Some(c) = self.cabs.get_mut(cabinet) {
            c.judged = true;
        }
    }

    /// Every cabinet with its wave, state, attempts after the first, and why its last
    /// attempt failed.
    pub fn cabinets(&self) -> impl Iterator<Item = (&str, usize, CabinetState, u32, Option<&str>)> {
        self.cabs.iter().map(|(id, c)| (id.as_str(), c.wave, c.state, c.attempt, c.reason.as_deref()))
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn state_of(&self, cabinet: &str) -> Option<CabinetState> {
        self.cabs.get(cabinet).map(|c| c.state)
    }

    pub fn wave_of(&self, cabinet: &str) -> Option<usize> {
        self.cabs.get(cabinet).map(|c| c.wave)
    }

    fn current_wave(&self) -> Option<usize> {
        match self.phase {
            Phase::Running { wave } | Phase::AwaitingApproval { wave } | Phase::Paused { wave, .. } => Some(wave),
            _ => None,
        }
    }

    fn jitter(&mut self) -> f64 {
        self.jitter_state ^= self.jitter_state << 13;
        self.jitter_state ^= self.jitter_state >> 7;
        self.jitter_state ^= self.jitter_state << 17;
        0.75 + (self.jitter_state % 10_000) as f64 / 20_000.0
    }

    /// The one place a cabinet's state changes: totals and the watch list follow.
    fn set(&mut self, id: &str, state: CabinetState, now: DateTime<Utc>) {
        let Some(c) = self.cabs.get_mut(id) else { return };
        let counts = &mut self.counts[c.wave];
        let old = c.state;
        if old == CabinetState::Confirmed {
            counts.confirmed -= 1;
        }
        if settled(old) {
            counts.settled -= 1;
        }
        if let CabinetState::Failed { kind } = old
            && let Some(n) = counts.failures.get_mut(&kind)
        {
            *n -= 1;
        }
        if state == CabinetState::Confirmed {
            counts.confirmed += 1;
            c.heard_after = false;
        }
        if settled(state) {
            counts.settled += 1;
        }
        if let CabinetState::Failed { kind } = state {
            *counts.failures.entry(kind).or_default() += 1;
        }
        c.state = state;
        c.since = now;
        c.generation += 1;
        let due = match state {
            // Waiting for the window is not a lack of progress: the clock starts when the
            // window opens.
            CabinetState::WaitingWindow => {
                let opens = self.plan.window.map_or(now, |w| w.next_open(now, c.offset_min).max(now));
                Some(opens + self.plan.progress_timeout)
            }
            s if s.in_flight() => Some(now + self.plan.progress_timeout),
            CabinetState::Confirmed => Some(now + self.plan.silence_after),
            CabinetState::RetryAt { at } => Some(at),
            _ => None,
        };
        if let Some(due) = due {
            self.timers.push(std::cmp::Reverse((due, c.generation, id.to_owned())));
        }
    }

    fn fail(&mut self, id: &str, kind: FailureKind, reason: &str, now: DateTime<Utc>) {
        let retry_at = {
            let Some(c) = self.cabs.get(id) else { return };
            if kind.retriable() && c.attempt < self.plan.max_retries {
                let base = self.plan.retry_base.num_milliseconds() as f64 * 2f64.powi(c.attempt as i32);
                // The doubling is capped, so many retries never push the date off the calendar.
                let delay = (base * self.jitter()).min(MAX_PLAN_DURATION.num_milliseconds() as f64);
                Some(now + Duration::milliseconds(delay as i64))
            } else {
                None
            }
        };
        if let Some(c) = self.cabs.get_mut(id) {
            c.reason = Some(format!("{}: {}", kind.as_str(), reason.chars().take(200).collect::<String>()));
        }
        match retry_at {
            Some(at) => {
                if let Some(c) = self.cabs.get_mut(id) {
                    c.attempt += 1;
                }
                self.set(id, CabinetState::RetryAt { at }, now);
            }
            None => {
                self.set(id, CabinetState::Failed { kind }, now);
                self.failures_this_minute += 1;
                // Reasons are grouped; a cabinet cannot flood the summary with new ones.
                let by_reason = self.reasons.entry(kind).or_default();
                let mut reason: String = reason.chars().take(120).collect();
                if !by_reason.contains_key(&reason) && by_reason.len() >= MAX_REASONS {
                    reason = "other".into();
                }
                *by_reason.entry(reason).or_default() += 1;
            }
        }
    }

    /// Feeds one input; returns what to do.
    pub fn handle(&mut self, input: Input, now: DateTime<Utc>) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::Report { cabinet, report, detail } => {
                let detail = detail.unwrap_or_default();
                let Some(c) = self.cabs.get_mut(&cabinet) else { return actions };
                // Late reports for a finished cabinet change nothing, except a rollback
                // or failure after a confirmation, which is a real regression.
                let finished = matches!(c.state, CabinetState::Failed { .. } | CabinetState::Cancelled);
                if finished {
                    return actions;
                }
                let confirmed = c.state == CabinetState::Confirmed;
                match report {
                    _ if confirmed && !matches!(report, Report::RolledBack | Report::Failed) => {}
                    Report::Downloading { percent } => {
                        self.set(&cabinet, CabinetState::Downloading { percent: percent.min(100) }, now)
                    }
                    Report::Downloaded => self.set(&cabinet, CabinetState::Downloaded, now),
                    Report::WaitingWindow => self.set(&cabinet, CabinetState::WaitingWindow, now),
                    Report::Installing => self.set(&cabinet, CabinetState::Installing, now),
                    Report::Restarting => self.set(&cabinet, CabinetState::Restarting, now),
                    Report::Succeeded => self.set(&cabinet, CabinetState::Confirmed, now),
                    Report::RolledBack => self.fail(&cabinet, FailureKind::RolledBack, &detail, now),
                    Report::Failed => self.fail(&cabinet, FailureKind::Failed, &detail, now),
                    Report::Refused => self.fail(&cabinet, FailureKind::Rejected, &detail, now),
                }
            }
            Input::Heard { cabinet } => {
                if let Some(c) = self.cabs.get_mut(&cabinet)
                    && c.state == CabinetState::Confirmed
                {
                    c.heard_after = true;
                    c.generation += 1;
                }
            }
            Input::Reconnected { cabinet } => {
                if let Some(c) = self.cabs.get_mut(&cabinet)
                    && c.state == CabinetState::Offered
                    && !matches!(self.phase, Phase::Aborted { .. })
                {
                    // The offer's time moves on, so the same session does not get it twice;
                    // the progress timer keeps running from the first offer.
                    c.since = now;
                    actions.push(Action::Offer { cabinet: cabinet.clone(), attempt: c.attempt });
                }
            }
            Input::Regressed { cabinet, reason } => {
                if self.cabs.get(&cabinet).is_some_and(|c| c.state == CabinetState::Confirmed) {
                    self.fail(&cabinet, FailureKind::Regressed, &reason, now);
                }
            }
            Input::Joined { cabinet, utc_offset_min } => {
                if !self.cabs.contains_key(&cabinet) && !matches!(self.phase, Phase::Aborted { .. }) {
                    let last = self.waves.len() - 1;
                    self.cabs.insert(
                        cabinet.clone(),
                        Cab {
                            wave: last,
                            state: CabinetState::Pending,
                            attempt: 0,
                            since: now,
                            offset_min: utc_offset_min,
                            heard_after: false,
                            generation: 0,
                            judged: false,
                            reason: None,
                        },
                    );
                    self.waves[last].push(cabinet.clone());
                    if self.current_wave() == Some(last) || self.phase == Phase::Completed {
                        self.queue.push_back(cabinet);
                        if self.phase == Phase::Completed {
                            self.phase = Phase::Running { wave: last };
                        }
                    }
                }
            }
            Input::Pause => {
                if let Phase::Running { wave } | Phase::AwaitingApproval { wave } = self.phase {
                    self.phase = Phase::Paused { wave, reason: "paused by the operator".into(), short_wave: false };
                }
            }
            Input::Resume => {
                if let Phase::Paused { wave, .. } = self.phase {
                    self.phase = Phase::Running { wave };
                }
            }
            Input::Abort => self.abort("aborted by the operator".into(), &mut actions, now),
            Input::RetryFailed => {
                let ids: Vec<String> = self
                    .cabs
                    .iter()
                    .filter(|(_, c)| matches!(c.state, CabinetState::Failed { kind } if kind.retriable()))
                    .map(|(id, _)| id.clone())
                    .collect();
                let any = !ids.is_empty();
                for id in ids {
                    if let Some(c) = self.cabs.get_mut(&id) {
                        c.attempt = 0;
                    }
                    self.set(&id, CabinetState::Pending, now);
                    self.queue.push_back(id);
                }
                // A finished rollout opens again for them.
                if any && self.phase == Phase::Completed {
                    self.phase = Phase::Running { wave: self.waves.len() - 1 };
                }
            }
            Input::Approve => match self.phase {
                Phase::AwaitingApproval { wave } => self.start_wave(wave + 1),
                // A wave that settled short: the operator accepts it as it is, and the
                // rollout goes on (after the soak) as if it had succeeded.
                Phase::Paused { wave, .. } if self.settled_short(wave) => {
                    self.accepted_short = Some(wave);
                    self.phase = Phase::Running { wave };
                }
                _ => {}
            },
        }
        actions.extend(self.tick(now));
        actions
    }

    fn abort(&mut self, reason: String, actions: &mut Vec<Action>, now: DateTime<Utc>) {
        if matches!(self.phase, Phase::Aborted { .. } | Phase::Completed) {
            return;
        }
        self.phase = Phase::Aborted { reason };
        self.queue.clear();
        let mut ids: Vec<(String, CabinetState)> = self.cabs.iter().map(|(id, c)| (id.clone(), c.state)).collect();
        ids.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, state) in ids {
            match state {
                // Not installing yet: withdrawn.
                CabinetState::Pending | CabinetState::RetryAt { .. } => self.set(&id, CabinetState::Cancelled, now),
                CabinetState::Offered
                | CabinetState::Downloading { .. }
                | CabinetState::Downloaded
                | CabinetState::WaitingWindow => {
                    self.set(&id, CabinetState::Cancelled, now);
                    actions.push(Action::Withdraw { cabinet: id });
                }
                // Installing or beyond: let it finish (or roll back) on its own.
                _ => {}
            }
        }
    }

    /// Every cabinet of `wave` has its outcome and too few confirmed.
    fn settled_short(&self, wave: usize) -> bool {
        let (size, counts) = (self.waves[wave].len(), &self.counts[wave]);
        size > 0 && counts.settled == size && (counts.confirmed as f64) < self.plan.success_share * size as f64
    }

    fn start_wave(&mut self, wave: usize) {
        if wave >= self.waves.len() {
            self.phase = Phase::Completed;
            return;
        }
        self.phase = Phase::Running { wave };
        self.wave_succeeded_at = None;
        self.queue.extend(self.waves[wave].iter().filter(|id| self.cabs[*id].state == CabinetState::Pending).cloned());
    }

    /// Advances time: timeouts, silence, retries, rate-limited offers, thresholds and
    /// waves. Call it periodically and after every input.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Action> {
        let mut actions = Vec::new();
        // Timeouts, silence and due retries: only the timers that are due.
        let mut timed_out = Vec::new();
        let mut silent = Vec::new();
        let mut due = Vec::new();
        while let Some(std::cmp::Reverse((at, generation, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let generation = *generation;
            let Some(std::cmp::Reverse((_, _, id))) = self.timers.pop() else { break };
            let Some(c) = self.cabs.get(&id).filter(|c| c.generation == generation) else { continue };
            match c.state {
                s if s.in_flight() => timed_out.push(id),
                CabinetState::Confirmed if !c.heard_after => silent.push(id),
                CabinetState::RetryAt { .. } => due.push(id),
                _ => {}
            }
        }
        // Sorted, so that the same inputs always give the same rollout.
        timed_out.sort();
        silent.sort();
        for id in timed_out {
            self.fail(&id, FailureKind::TimedOut, "no progress within the timeout", now);
        }
        for id in silent {
            self.fail(&id, FailureKind::Silent, "not heard from after updating", now);
        }
        due.sort();
        for id in due {
            self.set(&id, CabinetState::Pending, now);
            // Retries go first: they were already part of the wave's progress.
            self.queue.push_front(id);
        }

        // Thresholds of the current wave (and of every earlier one, still watched).
        if let Some(wave) = self.current_wave()
            && !matches!(self.phase, Phase::Paused { .. })
        {
            let counts = self.failure_counts(0..=wave);
            let counts: BTreeMap<FailureKind, usize> = counts;
            let size: usize = self.waves[..=wave].iter().map(Vec::len).sum();
            for (kind, t) in self.plan.thresholds.clone() {
                let n = counts.get(&kind).copied().unwrap_or(0);
                if size > 0 && n > 0 && n as f64 / size as f64 > t.share {
                    let reason = format!(
                        "{n} of {size} cabinets {} (threshold {:.1} %)",
                        kind.as_str().replace('_', " "),
                        t.share * 100.0
                    );
                    match t.action {
                        OnThreshold::Pause => self.phase = Phase::Paused { wave, reason, short_wave: false },
                        OnThreshold::Abort => self.abort(reason, &mut actions, now),
                    }
                    break;
                }
            }
        }

        // Offers, within the rate limit.
        if let Phase::Running { .. } = self.phase {
            let last = self.last_tick.unwrap_or(now);
            let minutes = (now - last).num_milliseconds().max(0) as f64 / 60_000.0;
            let minute_start = *self.minute_start.get_or_insert(now);
            if now - minute_start >= Duration::minutes(1) {
                if self.failures_this_minute == 0 {
                    self.rate = (self.rate * self.plan.rate.growth).min(self.plan.rate.max_per_minute);
                } else {
                    self.rate = self.plan.rate.per_minute;
                }
                self.failures_this_minute = 0;
                self.minute_start = Some(now);
            }
            self.tokens = (self.tokens + minutes * self.rate).min(self.rate.max(1.0));
            while self.tokens >= 1.0 {
                let Some(id) = self.queue.pop_front() else { break };
                let Some(attempt) = self.cabs.get(&id).filter(|c| c.state == CabinetState::Pending).map(|c| c.attempt)
                else {
                    continue;
                };
                self.set(&id, CabinetState::Offered, now);
                self.tokens -= 1.0;
                actions.push(Action::Offer { cabinet: id, attempt });
            }
        }
        self.last_tick = Some(now);

        // The wave's success, its soak, and the next wave.
        if let Phase::Running { wave } = self.phase {
            let size = self.waves[wave].len();
            let (confirmed, settled) = (self.counts[wave].confirmed, self.counts[wave].settled == size);
            let enough = size == 0
                || confirmed as f64 >= self.plan.success_share * size as f64
                || self.accepted_short == Some(wave);
            if enough && (settled || confirmed == size) {
                let since = *self.wave_succeeded_at.get_or_insert(now);
                if now - since >= self.plan.soak || wave + 1 == self.waves.len() {
                    if wave + 1 == self.waves.len() {
                        if settled {
                            self.phase = Phase::Completed;
                        }
                    } else if self.plan.manual_approval {
                        self.phase = Phase::AwaitingApproval { wave };
                    } else {
                        self.start_wave(wave + 1);
                    }
                }
            } else {
                self.wave_succeeded_at = None;
                if settled && size > 0 {
                    // Every cabinet of the wave has its outcome and too few confirmed:
                    // nothing more will happen by itself, so the operator decides
                    // (retry-failed and resume, or abort) instead of a rollout that
                    // stays "running" for ever.
                    let reason = format!(
                        "wave {} settled with {confirmed} of {size} cabinets confirmed ({:.1} % needed); \
                         retry-failed then resume, approve to go on as it is, or abort",
                        wave + 1,
                        self.plan.success_share * 100.0
                    );
                    self.phase = Phase::Paused { wave, reason, short_wave: true };
                }
            }
        }
        actions
    }

    fn failure_counts(&self, waves: std::ops::RangeInclusive<usize>) -> BTreeMap<FailureKind, usize> {
        let mut counts = BTreeMap::new();
        for w in &self.counts[waves] {
            for (kind, n) in &w.failures {
                *counts.entry(*kind).or_default() += n;
            }
        }
        counts
    }

    /// Counts per wave and state label, for the API and metrics.
    pub fn summary(&self) -> Summary {
        let waves = self
            .waves
            .iter()
            .map(|ids| {
                let mut states: BTreeMap<&'static str, usize> = BTreeMap::new();
                for id in ids {
                    *states.entry(self.cabs[id].state.label()).or_default() += 1;
                }
                WaveSummary { size: ids.len(), states }
            })
            .collect();
        let failures = self.failure_counts(0..=self.waves.len().saturating_sub(1));
        Summary {
            phase: self.phase.clone(),
            waves,
            failures: failures.into_iter().map(|(k, n)| (k.as_str(), n)).collect(),
            reasons: self.reasons.iter().map(|(k, r)| (k.as_str(), r.clone())).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaveSummary {
    pub size: usize,
    pub states: BTreeMap<&'static str, usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub phase: Phase,
    pub waves: Vec<WaveSummary>,
    pub failures: BTreeMap<&'static str, usize>,
    /// Failure reasons as the cabinets gave them, grouped by kind and counted.
    pub reasons: BTreeMap<&'static str, BTreeMap<String, usize>>,
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    use super::*;

    fn t0() -> DateTime<Utc> {
        "2026-11-25T10:00:00Z".parse().unwrap()
    }

    /// How a simulated cabinet behaves when offered the update.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Device {
        Good,
        /// Fails its first attempt (a flaky download), then succeeds.
        FlakyOnce,
        /// The new version fails its health check: rolls back.
        BadRelease,
        /// Confirms, then is never heard from again.
        GoesSilent,
        /// Never says anything.
        Stuck,
        /// Refuses the artifact.
        Refuses,
    }

    /// A device's next step: when, a tie-breaking sequence number, which cabinet, what.
    type Scheduled = (DateTime<Utc>, u64, String, Step);

    /// A fleet driven through the conductor with simulated time.
    struct Sim {
        c: Conductor,
        devices: HashMap<String, Device>,
        offsets: HashMap<String, i32>,
        events: BinaryHeap<Reverse<Scheduled>>,
        seq: u64,
        now: DateTime<Utc>,
        offers: HashMap<String, u32>,
        offer_times: Vec<(DateTime<Utc>, String)>,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Step {
        Report(u8),
        Heard,
    }

    const REPORTS: [Report; 7] = [
        Report::Downloading { percent: 50 },
        Report::Downloaded,
        Report::Installing,
        Report::Restarting,
        Report::Succeeded,
        Report::RolledBack,
        Report::WaitingWindow,
    ];

    impl Sim {
        fn new(plan: Plan, devices: Vec<(String, Device, i32)>) -> Self {
            let cabinets = devices.iter().map(|(id, _, off)| (id.clone(), *off)).collect();
            Self {
                c: Conductor::new(plan, cabinets, 42, t0()),
                offsets: devices.iter().map(|(id, _, off)| (id.clone(), *off)).collect(),
                devices: devices.into_iter().map(|(id, d, _)| (id, d)).collect(),
                events: BinaryHeap::new(),
                seq: 0,
                now: t0(),
                offers: HashMap::new(),
                offer_times: Vec::new(),
            }
        }

        fn at(&mut self, delay: Duration, id: &str, step: Step) {
            self.seq += 1;
            self.events.push(Reverse((self.now + delay, self.seq, id.to_owned(), step)));
        }

        fn apply(&mut self, actions: Vec<Action>) {
            for a in actions {
                let Action::Offer { cabinet, .. } = a else { continue };
                *self.offers.entry(cabinet.clone()).or_default() += 1;
                self.offer_times.push((self.now, cabinet.clone()));
                let device = self.devices[&cabinet];
                let m = Duration::minutes;
                match device {
                    Device::Stuck => {}
                    Device::Refuses => self.at(m(1), &cabinet, Step::Report(9)),
                    Device::FlakyOnce if self.offers[&cabinet] == 1 => self.at(m(3), &cabinet, Step::Report(8)),
                    _ => {
                        self.at(m(2), &cabinet, Step::Report(0));
                        self.at(m(4), &cabinet, Step::Report(1));
                        // Installs only in its window, if the plan has one.
                        let wait = match self.c.plan().window {
                            Some(w) => w.next_open(self.now + m(4), self.offsets[&cabinet]) - self.now,
                            None => m(4),
                        }
                        .max(m(4));
                        if wait > m(4) {
                            self.at(m(4) + Duration::seconds(1), &cabinet, Step::Report(6));
                        }
                        self.at(wait + m(1), &cabinet, Step::Report(2));
                        self.at(wait + m(3), &cabinet, Step::Report(3));
                        if device == Device::BadRelease {
                            self.at(wait + m(6), &cabinet, Step::Report(5));
                        } else {
                            self.at(wait + m(6), &cabinet, Step::Report(4));
                            if device != Device::GoesSilent {
                                self.at(wait + m(7), &cabinet, Step::Heard);
                            }
                        }
                    }
                }
            }
        }

        /// Runs until the rollout stops moving (or `limit` of simulated time).
        fn run(&mut self, limit: Duration) {
            let end = self.now + limit;
            let actions = self.c.tick(self.now);
            self.apply(actions);
            while self.now < end {
                if matches!(self.c.phase(), Phase::Completed | Phase::Aborted { .. } | Phase::Paused { .. })
                    && self.events.is_empty()
                {
                    break;
                }
                // The next event, or a tick a minute on.
                let next = self.events.peek().map(|Reverse((t, ..))| *t).unwrap_or(self.now + Duration::minutes(1));
                let tick_at = self.now + Duration::seconds(30);
                if next <= tick_at {
                    let Reverse((t, _, id, step)) = self.events.pop().unwrap();
                    self.now = t;
                    let input = match step {
                        Step::Report(8) => {
                            Input::Report { cabinet: id, report: Report::Failed, detail: Some("flaky download".into()) }
                        }
                        Step::Report(9) => {
                            Input::Report { cabinet: id, report: Report::Refused, detail: Some("untrusted key".into()) }
                        }
                        Step::Report(i) => Input::Report { cabinet: id, report: REPORTS[i as usize], detail: None },
                        Step::Heard => Input::Heard { cabinet: id },
                    };
                    let actions = self.c.handle(input, self.now);
                    self.apply(actions);
                } else {
                    self.now = tick_at;
                    let actions = self.c.tick(self.now);
                    self.apply(actions);
                }
            }
        }

        fn count(&self, label: &str) -> usize {
            self.c.summary().waves.iter().map(|w| w.states.get(label).copied().unwrap_or(0)).sum()
        }
    }

    fn fleet(n: usize, pick: impl Fn(usize) -> Device) -> Vec<(String, Device, i32)> {
        (0..n).map(|i| (format!("cab-{i:05}"), pick(i), [0, 60, -300, 540][i % 4])).collect()
    }

    fn fast_plan() -> Plan {
        Plan {
            rate: Rate { per_minute: 200.0, growth: 2.0, max_per_minute: 5_000.0 },
            soak: Duration::minutes(15),
            progress_timeout: Duration::minutes(30),
            retry_base: Duration::minutes(2),
            ..Plan::default()
        }
    }

    #[test]
    fn ten_thousand_cabinets_go_through_every_wave_with_flaky_ones_retried_and_a_window() {
        let started = std::time::Instant::now();
        let plan = Plan { window: Some(Window { start_min: 120, end_min: 300 }), ..fast_plan() };
        // One in 200 fails its first download; one in 500 is stuck forever.
        let mut sim = Sim::new(
            plan,
            fleet(10_000, |i| match i {
                i if i % 500 == 7 => Device::Stuck,
                i if i % 200 == 3 => Device::FlakyOnce,
                _ => Device::Good,
            }),
        );
        sim.run(Duration::days(5));
        assert_eq!(sim.c.phase(), &Phase::Completed, "{:?}", sim.c.summary());
        assert_eq!(sim.count("confirmed"), 10_000 - 20);
        assert_eq!(sim.count("timed_out"), 20, "the stuck ones, after their retries");
        // Stuck cabinets were offered 1 + max_retries times, never more.
        for (id, d) in &sim.devices {
            let offers = sim.offers.get(id).copied().unwrap_or(0);
            match d {
                Device::Stuck => assert_eq!(offers, 4, "{id}"),
                Device::FlakyOnce => assert_eq!(offers, 2, "{id}"),
                _ => assert_eq!(offers, 1, "{id}"),
            }
        }
        // Waves: 1 % canary, then 10 %, 50 %, 100 %.
        let sizes: Vec<usize> = sim.c.summary().waves.iter().map(|w| w.size).collect();
        assert_eq!(sizes, [100, 900, 4_000, 5_000]);
        // No cabinet of a later wave was offered before the earlier wave succeeded.
        let first_offer_of_wave = |w: usize| {
            sim.offer_times.iter().filter(|(_, id)| sim.c.wave_of(id) == Some(w)).map(|(t, _)| *t).min().unwrap()
        };
        for w in 1..4 {
            assert!(first_offer_of_wave(w) > first_offer_of_wave(w - 1) + Duration::minutes(15));
        }
        // The demo must stay fast: 10,000 cabinets and days of simulated time.
        eprintln!("10,000-cabinet rollout simulated in {:?}", started.elapsed());
    }

    #[test]
    fn a_bad_release_stops_after_the_canary_and_touches_nobody_else() {
        // 30 % of cabinets fail their health check on the new version and roll back.
        let mut sim =
            Sim::new(fast_plan(), fleet(2_000, |i| if i % 10 < 3 { Device::BadRelease } else { Device::Good }));
        sim.run(Duration::days(2));
        let Phase::Aborted { reason } = sim.c.phase().clone() else { panic!("{:?}", sim.c.phase()) };
        assert!(reason.contains("rolled back"), "{reason}");
        for (_, id) in &sim.offer_times {
            assert_eq!(sim.c.wave_of(id), Some(0), "{id} outside the canary wave was offered");
        }
        let s = sim.c.summary();
        assert!(s.failures["rolled_back"] >= 1);
        assert_eq!(s.waves[1].states.get("cancelled"), Some(&s.waves[1].size), "later waves are withdrawn");
    }

    #[test]
    fn a_wave_that_settles_short_of_its_success_share_pauses_with_the_count() {
        // No thresholds: nothing aborts, but 3 in 10 roll back, below the 95 % bar.
        let plan = Plan {
            waves: vec![WaveSize::Percent(50.0), WaveSize::Percent(100.0)],
            thresholds: BTreeMap::new(),
            ..fast_plan()
        };
        let mut sim = Sim::new(plan, fleet(20, |i| if i % 10 < 3 { Device::BadRelease } else { Device::Good }));
        sim.run(Duration::days(1));
        let Phase::Paused { wave: 0, reason, short_wave: true } = sim.c.phase().clone() else {
            panic!("{:?}", sim.c.phase())
        };
        let bad =
            sim.devices.iter().filter(|(id, d)| **d == Device::BadRelease && sim.c.wave_of(id) == Some(0)).count();
        assert!(bad > 0, "the first wave holds some of the bad cabinets");
        assert_eq!(sim.count("rolled_back"), bad);
        let expected = format!("wave 1 settled with {} of 10 cabinets confirmed (95.0 % needed)", 10 - bad);
        assert!(reason.starts_with(&expected), "{reason}");
        // The second wave was never offered.
        for (_, id) in &sim.offer_times {
            assert_eq!(sim.c.wave_of(id), Some(0), "{id} outside the first wave was offered");
        }
        // Resuming without retrying anything changes nothing: it pauses again.
        let _ = sim.c.handle(Input::Resume, sim.now);
        let _ = sim.c.tick(sim.now + Duration::minutes(1));
        assert!(matches!(sim.c.phase(), Phase::Paused { wave: 0, .. }), "{:?}", sim.c.phase());
        // Approving accepts the wave as it is: the next wave starts after the soak and the
        // rollout ends, the second wave's bad cabinets pausing it again on the way.
        sim.now += Duration::minutes(2);
        let _ = sim.c.handle(Input::Approve, sim.now);
        sim.run(Duration::days(1));
        assert!(matches!(sim.c.phase(), Phase::Paused { wave: 1, .. }), "{:?}", sim.c.phase());
        assert!(sim.offer_times.iter().any(|(_, id)| sim.c.wave_of(id) == Some(1)), "the second wave was offered");
        let _ = sim.c.handle(Input::Approve, sim.now);
        let _ = sim.c.tick(sim.now + Duration::minutes(1));
        assert_eq!(sim.c.phase(), &Phase::Completed);
    }

    #[test]
    fn approving_does_not_override_a_pause_that_is_not_a_short_wave() {
        let mut sim = Sim::new(fast_plan(), fleet(50, |_| Device::Good));
        sim.run(Duration::minutes(3));
        let _ = sim.c.handle(Input::Pause, sim.now);
        let _ = sim.c.handle(Input::Approve, sim.now);
        let _ = sim.c.tick(sim.now + Duration::minutes(1));
        assert!(matches!(sim.c.phase(), Phase::Paused { .. }), "{:?}", sim.c.phase());
    }

    #[test]
    fn cabinets_that_go_silent_after_updating_abort_the_rollout() {
        let mut sim =
            Sim::new(fast_plan(), fleet(1_000, |i| if i % 4 == 0 { Device::GoesSilent } else { Device::Good }));
        sim.run(Duration::days(1));
        let Phase::Aborted { reason } = sim.c.phase().clone() else { panic!("{:?}", sim.c.phase()) };
        assert!(reason.contains("silent"), "{reason}");
    }

    #[test]
    fn refusals_abort_and_are_never_retried() {
        let mut sim = Sim::new(fast_plan(), fleet(500, |_| Device::Refuses));
        sim.run(Duration::days(1));
        assert!(matches!(sim.c.phase(), Phase::Aborted { reason } if reason.contains("rejected")));
        let reasons = &sim.c.summary().reasons["rejected"];
        assert!(reasons["untrusted key"] >= 1, "reasons are grouped: {reasons:?}");
        assert!(sim.offers.values().all(|&n| n == 1), "a refused artifact is not offered again");
    }

    #[test]
    fn the_rate_limit_holds_and_grows_only_while_nothing_fails() {
        let plan = Plan {
            waves: vec![WaveSize::Percent(100.0)],
            rate: Rate { per_minute: 10.0, growth: 2.0, max_per_minute: 40.0 },
            ..fast_plan()
        };
        let mut sim = Sim::new(plan, fleet(400, |_| Device::Good));
        sim.run(Duration::days(1));
        assert_eq!(sim.c.phase(), &Phase::Completed);
        // Offers in any one minute never exceed the cap (plus the token the bucket starts with).
        let mut per_minute: BTreeMap<i64, usize> = BTreeMap::new();
        for (t, _) in &sim.offer_times {
            *per_minute.entry((*t - t0()).num_minutes()).or_default() += 1;
        }
        assert!(per_minute.values().all(|&n| n <= 41), "{per_minute:?}");
        // It started at 10 a minute and grew.
        assert!(per_minute.values().next().copied().unwrap() <= 11);
        assert!(per_minute.values().any(|&n| n > 20));
    }

    #[test]
    fn manual_approval_pause_resume_abort_and_retry_failed() {
        let plan = Plan { manual_approval: true, max_retries: 0, ..fast_plan() };
        let mut sim = Sim::new(plan, fleet(300, |i| if i == 5 { Device::FlakyOnce } else { Device::Good }));
        sim.run(Duration::days(1));
        assert!(matches!(sim.c.phase(), Phase::AwaitingApproval { wave: 0 }), "{:?}", sim.c.phase());
        let offered = sim.offer_times.len();
        sim.c.handle(Input::Pause, sim.now);
        sim.c.handle(Input::Approve, sim.now);
        assert!(matches!(sim.c.phase(), Phase::Paused { .. }), "approving a paused rollout does nothing");
        sim.c.handle(Input::Resume, sim.now);
        let actions = sim.c.handle(Input::Approve, sim.now);
        assert!(matches!(sim.c.phase(), Phase::Running { wave: 1 }));
        sim.apply(actions);
        sim.run(Duration::days(1));
        assert!(sim.offer_times.len() > offered, "wave 1 was offered after the approval");
        // Retry the failed cabinet (it failed with no retries allowed) once everything is done.
        while let Phase::AwaitingApproval { .. } = sim.c.phase() {
            let actions = sim.c.handle(Input::Approve, sim.now);
            sim.apply(actions);
            sim.run(Duration::days(1));
        }
        if sim.count("failed") == 1 {
            let actions = sim.c.handle(Input::RetryFailed, sim.now);
            sim.apply(actions);
            sim.run(Duration::days(1));
        }
        assert_eq!(sim.count("confirmed"), 300, "{:?}", sim.c.summary());
        // Abort after completion changes nothing.
        assert!(sim.c.handle(Input::Abort, sim.now).is_empty());
        assert_eq!(sim.c.phase(), &Phase::Completed);
    }

    #[test]
    fn an_offered_cabinet_that_reconnects_is_offered_again_once() {
        let plan = Plan { waves: vec![WaveSize::Percent(100.0)], ..fast_plan() };
        let mut c = Conductor::new(plan, vec![("cab-1".into(), 0)], 7, t0());
        let first = c.tick(t0());
        assert_eq!(first, vec![Action::Offer { cabinet: "cab-1".into(), attempt: 0 }]);
        let offered = c.awaiting_offer();
        assert_eq!(offered, vec![("cab-1".to_owned(), t0())]);
        // A new session after the offer: offered again, with the same attempt.
        let later = t0() + Duration::seconds(30);
        let again = c.handle(Input::Reconnected { cabinet: "cab-1".into() }, later);
        assert_eq!(again, vec![Action::Offer { cabinet: "cab-1".into(), attempt: 0 }]);
        assert_eq!(c.awaiting_offer(), vec![("cab-1".to_owned(), later)], "the same session does not get it twice");
        // Once the cabinet has started on it, a reconnect offers nothing.
        c.handle(
            Input::Report { cabinet: "cab-1".into(), report: Report::Downloading { percent: 10 }, detail: None },
            later,
        );
        assert!(c.awaiting_offer().is_empty());
        assert!(c.handle(Input::Reconnected { cabinet: "cab-1".into() }, later + Duration::seconds(5)).is_empty());
        assert_eq!(c.state_of("cab-1"), Some(CabinetState::Downloading { percent: 10 }));
    }

    #[test]
    fn an_aborted_rollout_withdraws_offers_not_yet_installing() {
        let mut sim = Sim::new(fast_plan(), fleet(100, |_| Device::Stuck));
        let actions = sim.c.tick(sim.now);
        sim.apply(actions);
        let withdrawn = sim.c.handle(Input::Abort, sim.now);
        assert!(!withdrawn.is_empty());
        assert!(withdrawn.iter().all(|a| matches!(a, Action::Withdraw { .. })));
        assert!(sim.c.summary().waves.iter().all(|w| w.states.keys().all(|k| *k == "cancelled")));
    }

    #[test]
    fn cabinets_that_join_later_go_into_the_last_wave() {
        let mut sim = Sim::new(fast_plan(), fleet(200, |_| Device::Good));
        sim.run(Duration::days(2));
        assert_eq!(sim.c.phase(), &Phase::Completed);
        sim.devices.insert("cab-new".into(), Device::Good);
        sim.offsets.insert("cab-new".into(), 0);
        let actions = sim.c.handle(Input::Joined { cabinet: "cab-new".into(), utc_offset_min: 0 }, sim.now);
        sim.apply(actions);
        sim.run(Duration::days(1));
        assert_eq!(sim.c.state_of("cab-new"), Some(CabinetState::Confirmed));
        assert_eq!(sim.c.wave_of("cab-new"), Some(3));
    }

    #[test]
    fn windows_cross_midnight_and_waiting_for_one_is_not_a_timeout() {
        let w = Window { start_min: 23 * 60, end_min: 2 * 60 };
        assert!(w.contains(23 * 60 + 30) && w.contains(60) && !w.contains(12 * 60));
        let noon: DateTime<Utc> = "2026-11-25T12:00:00Z".parse().unwrap();
        assert_eq!(w.next_open(noon, 0), "2026-11-25T23:00:00Z".parse::<DateTime<Utc>>().unwrap());
        // At UTC+9 it is 21:00 local: the window opens in two hours.
        assert_eq!(w.next_open(noon, 540), "2026-11-25T14:00:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(Window { start_min: 0, end_min: 0 }.next_open(noon, 0), noon);

        let plan = Plan {
            waves: vec![WaveSize::Percent(100.0)],
            window: Some(Window { start_min: 22 * 60, end_min: 23 * 60 }),
            progress_timeout: Duration::minutes(30),
            ..fast_plan()
        };
        let mut c = Conductor::new(plan, vec![("a".into(), 0)], 1, noon);
        c.tick(noon);
        c.handle(Input::Report { cabinet: "a".into(), report: Report::WaitingWindow, detail: None }, noon);
        // Nine hours later, still before the window: no timeout.
        c.tick(noon + Duration::hours(9));
        assert_eq!(c.state_of("a"), Some(CabinetState::WaitingWindow));
        // Silent past the window's opening plus the timeout: timed out (and retried).
        c.tick(noon + Duration::hours(10) + Duration::minutes(31));
        assert!(matches!(c.state_of("a"), Some(CabinetState::RetryAt { .. })));
    }

    #[test]
    fn a_counted_wave_near_the_largest_number_takes_the_rest_of_the_fleet() {
        // `placed + count` overflowed (a panic with overflow checks, a wrap without).
        let plan = Plan {
            waves: vec![WaveSize::Count(1), WaveSize::Count(usize::MAX), WaveSize::Percent(100.0)],
            ..Plan::default()
        };
        assert_eq!(plan.check(), Ok(()));
        assert_eq!(wave_sizes(&plan.waves, 5), vec![1, 4, 0]);
        let c = Conductor::new(plan, (0..5).map(|i| (format!("c{i}"), 0)).collect(), 1, t0());
        assert_eq!(c.summary().waves.iter().map(|w| w.size).sum::<usize>(), 5);
    }

    #[test]
    fn durations_beyond_any_calendar_are_refused_by_the_plan_check() {
        // A timeout of 9e12 s passed the check and made `now + progress_timeout` overflow
        // the calendar in the conductor's first tick.
        let huge = Duration::try_seconds(9_000_000_000_000).unwrap();
        for (name, plan) in [
            ("progress_timeout_s", Plan { progress_timeout: huge, ..Plan::default() }),
            ("silence_after_s", Plan { silence_after: huge, ..Plan::default() }),
            ("retry_base_s", Plan { retry_base: huge, ..Plan::default() }),
            ("soak_s", Plan { soak: huge, ..Plan::default() }),
            ("health_watch_s", Plan { health_watch: huge, ..Plan::default() }),
        ] {
            let err = plan.check().unwrap_err();
            assert!(err.contains(name), "{name}: {err}");
        }
        let year = Plan { progress_timeout: MAX_PLAN_DURATION, retry_base: MAX_PLAN_DURATION, ..fast_plan() };
        assert_eq!(year.check(), Ok(()));
        let mut c = Conductor::new(year, vec![("a".into(), 0)], 1, t0());
        c.tick(t0());
        c.handle(
            Input::Report { cabinet: "a".into(), report: Report::Downloading { percent: 10 }, detail: None },
            t0(),
        );
        c.tick(t0() + MAX_PLAN_DURATION + Duration::days(1));
        assert!(matches!(c.state_of("a"), Some(CabinetState::RetryAt { .. })));
    }

    #[test]
    fn a_stored_conductor_goes_on_exactly_as_the_original() {
        // Half-way through, the conductor is stored and loaded (as a replica taking over
        // does); both copies then see the same inputs and must act alike.
        let mut sim = Sim::new(fast_plan(), fleet(500, |i| if i % 50 == 1 { Device::FlakyOnce } else { Device::Good }));
        sim.run(Duration::hours(2));
        let copy: Conductor = serde_json::from_str(&serde_json::to_string(&sim.c).unwrap()).unwrap();
        let later = sim.now + Duration::minutes(30);
        let mut original = sim.c.clone();
        let mut loaded = copy;
        assert_eq!(original.tick(later), loaded.tick(later));
        assert_eq!(original.summary(), loaded.summary());
        let plan: Plan =
            serde_json::from_str(r#"{"soak_s": 60, "waves": [{"count": 2}, {"percent": 100.0}]}"#).unwrap();
        assert_eq!(plan.soak, Duration::minutes(1));
        assert_eq!(plan.max_retries, Plan::default().max_retries, "unset fields keep their defaults");
    }

    #[test]
    fn waves_split_the_target_as_planned() {
        let pct = Plan::default().waves;
        assert_eq!(wave_sizes(&pct, 200), [2, 18, 80, 100]);
        assert_eq!(wave_sizes(&pct, 3), [1, 1, 1, 0], "every wave before the last gets one cabinet when it can");
        assert_eq!(wave_sizes(&[WaveSize::Count(5), WaveSize::Percent(100.0)], 50), [5, 45]);
        assert!(
            Plan { waves: vec![WaveSize::Percent(50.0), WaveSize::Percent(10.0)], ..Plan::default() }.check().is_err()
        );
        assert!(Plan::default().check().is_ok());
    }
}
