//! The cabinet actor: owns the journal, the desired state, the doors and the keypad.
//!
//! ```text
//!   keypad ─EnterCode─►┐                      ┌─► lock (release / engage)
//!   courier ─Deposit──►│  cabinet actor       ├─► journal (fsync) ─► link: EventsRecorded
//!   sensors ─DoorSensed►│ (doors, keypad,     │
//!   link ─FromServer──►│  desired, journal)   └─► link: Applied versions
//! ```
//!
//! A pickup or deposit is recorded when its door closes again, so the event says what
//! really happened. A parcel whose pickup was recorded is remembered on disk, so no code
//! opens its door a second time — not after a restart, and not before the server's new
//! desired state arrives.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use lockerfleet_shared::envelope::{CabinetEvent, DownBody, EventKind, ExpectedParcel, ParcelStage, PickupMethod};
use lockerfleet_shared::{CompartmentId, CourierId, ParcelId};

use crate::domain::clock::ServerClock;
use crate::domain::desired::DesiredStore;
use crate::domain::door::{Door, DoorEffect, DoorInput, DoorTimings};
use crate::domain::journal::{Journal, Recorded};
use crate::domain::keypad::{CodeOutcome, Keypad, KeypadPolicy, Lockout};
use crate::hw::Lock;

/// Who a door was opened for, so that its closing records the right event. Kept on disk
/// (written before the lock is released), so a flow survives a crash of the agent.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Purpose {
    Pickup {
        parcel: ExpectedParcel,
        method: PickupMethod,
    },
    Deposit {
        parcel: ParcelId,
        courier: CourierId,
    },
    Collect {
        parcel: ParcelId,
        courier: CourierId,
    },
    /// The operator opened it remotely (command id); nothing is recorded when it closes.
    Operator {
        command: uuid::Uuid,
    },
}

/// A code typed on the keypad.
#[derive(Debug, Message)]
#[rtype(result = "CodeOutcome")]
pub struct EnterCode(pub String);

/// A courier shows its pass (the QR code from its app) and deposits a parcel it was
/// assigned.
#[derive(Debug, Message)]
#[rtype(result = "Result<CompartmentId, String>")]
pub struct CourierDeposit {
    pub pass: String,
    pub parcel: ParcelId,
}

/// A courier shows its pass and takes back a parcel it is to collect (expired or
/// cancelled).
#[derive(Debug, Message)]
#[rtype(result = "Result<CompartmentId, String>")]
pub struct CourierCollect {
    pub pass: String,
    pub parcel: ParcelId,
}

/// A courier shows its pass: the compartments this courier may open here, and nothing
/// of anybody else's.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<ExpectedParcel>, String>")]
pub struct CourierTasks {
    pub pass: String,
}

/// A door sensor reading.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DoorSensed {
    pub compartment: CompartmentId,
    pub open: bool,
}

/// The timestamp of a `down` envelope: the server's clock, which expiry is judged by
/// (see [`crate::domain::clock`]).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ServerTime(pub chrono::DateTime<Utc>);

impl Handler<ServerTime> for Cabinet {
    type Result = ();

    fn handle(&mut self, msg: ServerTime, _ctx: &mut Self::Context) {
        self.clock.observe(msg.0);
        if let Some(skew) = self.clock.skew(self.local_now())
            && skew.num_minutes().abs() >= 5
            && !self.skew_reported
        {
            self.skew_reported = true;
            tracing::warn!(
                skew_s = skew.num_seconds(),
                "this cabinet's clock is off; expiry follows the server's clock"
            );
        }
    }
}

/// A desired-state or ack message from the server.
#[derive(Debug, Message)]
#[rtype(result = "Option<lockerfleet_shared::envelope::Applied>")]
pub struct FromServer(pub DownBody);

/// The events not yet acked, oldest first.
#[derive(Debug, Message)]
#[rtype(result = "Vec<CabinetEvent>")]
pub struct Pending;

/// What a heartbeat reports.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Status")]
pub struct GetStatus;

#[derive(Debug, Clone, MessageResponse)]
pub struct Status {
    pub open_doors: Vec<CompartmentId>,
    pub occupied: Vec<CompartmentId>,
    pub journal_depth: u32,
    /// A door is open or a pickup is under way: updates must wait.
    pub busy: bool,
    /// An update holds the cabinet.
    pub updating: bool,
    /// Times the cabinet actor was restarted from disk since the process started.
    pub restarts: u32,
    /// Events dropped because the journal was too full, not yet reported to the server.
    pub journal_dropped: u64,
    /// Parcels a pickup code opens right now.
    pub ready: Vec<ParcelId>,
    /// Sealed templates held (a count only: never anything biometric).
    pub templates: usize,
    /// The operator's settings in force.
    pub settings: lockerfleet_shared::envelope::CabinetSettings,
}

/// A recipient stands in front of the camera and asks for a face pickup.
#[derive(Debug, Message)]
#[rtype(result = "FaceOutcome")]
pub struct FacePickup;

/// The outcome of a face pickup attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum FaceOutcome {
    Accepted(ExpectedParcel),
    Refused { reason: String },
    LockedOut { until: chrono::DateTime<Utc> },
}

/// The updater asks to restart the cabinet: granted only when no door is open and no
/// flow is under way; until `EndUpdate`, no new flow starts (codes, faces and couriers
/// are told to try again shortly).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), String>")]
pub struct BeginUpdate;

/// The update is over (installed and restarting, or abandoned).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct EndUpdate;

impl Handler<BeginUpdate> for Cabinet {
    type Result = Result<(), String>;

    fn handle(&mut self, _: BeginUpdate, _ctx: &mut Self::Context) -> Self::Result {
        if let Some((c, _)) = self.doors.iter().find(|(_, d)| d.busy()) {
            return Err(format!("compartment {c} is open or opening"));
        }
        if let Some(c) = self.purposes.keys().next() {
            return Err(format!("a flow at compartment {c} is under way"));
        }
        self.updating = true;
        Ok(())
    }
}

impl Handler<EndUpdate> for Cabinet {
    type Result = ();

    fn handle(&mut self, _: EndUpdate, _ctx: &mut Self::Context) {
        self.updating = false;
    }
}

const UPDATING: &str = "the cabinet is updating; try again in a minute";

/// Connects the cabinet to its camera and face actors.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetFace(pub Addr<super::face::Camera>, pub Addr<super::face::Face>);

impl Handler<SetFace> for Cabinet {
    type Result = ();

    fn handle(&mut self, msg: SetFace, _ctx: &mut Self::Context) {
        self.face = Some((msg.0, msg.1));
    }
}

impl Handler<FacePickup> for Cabinet {
    type Result = ResponseActFuture<Self, FaceOutcome>;

    fn handle(&mut self, _: FacePickup, _ctx: &mut Self::Context) -> Self::Result {
        let now = self.now();
        if self.updating {
            return Box::pin(fut::ready(FaceOutcome::Refused { reason: UPDATING.into() }));
        }
        if let Some(until) = self.face_lockout.locked(now) {
            return Box::pin(fut::ready(FaceOutcome::LockedOut { until }));
        }
        let Some((camera, face)) = self.face.clone() else {
            return Box::pin(fut::ready(FaceOutcome::Refused { reason: "this cabinet has no camera".into() }));
        };
        // The candidates: parcels waiting here whose recipient's sealed template is held.
        let templates = self.desired.state.templates.as_ref().map(|t| t.add.clone()).unwrap_or_default();
        let candidates: Vec<crate::face::Candidate> = self
            .parcels()
            .into_iter()
            .filter(|p| p.stage == ParcelStage::Ready && p.expires_at > now && !self.done.contains(&p.parcel))
            .filter(|p| !self.purposes.contains_key(&p.compartment))
            .filter_map(|p| {
                let template = templates.iter().find(|t| t.binding.parcel == p.parcel)?.clone();
                Some(crate::face::Candidate { parcel: p, template })
            })
            .collect();
        Box::pin(
            async move {
                let frames = camera.send(super::face::Capture { count: 3 }).await.map_err(|e| e.to_string())??;
                face.send(super::face::Decide { frames, candidates, now }).await.map_err(|e| e.to_string())
            }
            .into_actor(self)
            .map(move |decision: Result<crate::face::FaceDecision, String>, act, _| {
                let decision = match decision {
                    Ok(d) => d,
                    Err(e) => return FaceOutcome::Refused { reason: format!("camera or face path failed: {e}") },
                };
                // An update (or a power-off) may have taken the cabinet while the face path
                // decided: no door opens now.
                if act.updating || act.off {
                    return FaceOutcome::Refused { reason: UPDATING.into() };
                }
                if let crate::face::FaceDecision::Match { parcel, .. } = &decision
                    && let Some(p) =
                        act.parcels().into_iter().find(|p| p.parcel == *parcel && !act.done.contains(parcel))
                    && !act.purposes.contains_key(&p.compartment)
                {
                    act.face_lockout.succeed();
                    act.open_for(
                        p.compartment.clone(),
                        Purpose::Pickup { parcel: p.clone(), method: PickupMethod::Face },
                    );
                    return FaceOutcome::Accepted(p);
                }
                let reason = decision.failure().unwrap_or_else(|| "the matched parcel is no longer here".into());
                act.record(EventKind::FailedMatch { reason: reason.clone() });
                if let Some(until) = act.face_lockout.fail(act.now()) {
                    act.record(EventKind::Alarm { code: "face_lockout".into(), detail: format!("until {until}") });
                }
                FaceOutcome::Refused { reason }
            }),
        )
    }
}

/// Connects the cabinet to its link.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetLink(pub Recipient<EventsRecorded>);

impl Handler<SetLink> for Cabinet {
    type Result = ();

    fn handle(&mut self, msg: SetLink, _ctx: &mut Self::Context) {
        self.link = Some(msg.0);
    }
}

/// The desired state the cabinet holds (for diagnostics and tests).
#[derive(Debug, Message)]
#[rtype(result = "crate::domain::desired::DesiredState")]
pub struct GetDesired;

impl Handler<GetDesired> for Cabinet {
    type Result = MessageResult<GetDesired>;

    fn handle(&mut self, _: GetDesired, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.desired.state.clone())
    }
}

/// A receiver that sees every later change to the desired state (a new parcel set or
/// template set applied, expired templates pruned, the state re-read after a restart):
/// a screen, or the simulator, waits on it instead of asking again and again. The
/// value is a change counter; the state itself is read with [`GetDesired`]. It stays
/// valid across supervisor restarts; it closes when the actor is dropped.
#[derive(Debug, Message)]
#[rtype(result = "tokio::sync::watch::Receiver<u64>")]
pub struct WatchDesired;

impl Handler<WatchDesired> for Cabinet {
    type Result = MessageResult<WatchDesired>;

    fn handle(&mut self, _: WatchDesired, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.changes.subscribe())
    }
}

/// Tells the link there is something new to send.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct EventsRecorded;

pub struct Cabinet {
    journal: Journal,
    desired: DesiredStore,
    doors: BTreeMap<CompartmentId, Door>,
    purposes: BTreeMap<CompartmentId, Purpose>,
    /// Parcels taken out here whose removal the server has not yet confirmed.
    done: BTreeSet<ParcelId>,
    done_path: std::path::PathBuf,
    purposes_path: std::path::PathBuf,
    keypad: Keypad,
    /// Failed face attempts, locked out like the keypad.
    face_lockout: Lockout,
    face: Option<(Addr<super::face::Camera>, Addr<super::face::Face>)>,
    /// An update holds the cabinet: no new door flow starts until it ends.
    updating: bool,
    lock: Box<dyn Lock>,
    link: Option<Recipient<EventsRecorded>>,
    compartments: Vec<CompartmentId>,
    /// The configuration file's door timings; the server's settings apply over them.
    base_timings: DoorTimings,
    timings: DoorTimings,
    /// Writing to disk failed: the actor stops and its supervisor restarts it from disk.
    broken: bool,
    /// How often the supervisor has restarted this actor.
    restarts: u32,
    /// The server's clock, carried forward: what expiry and lockouts are judged by.
    clock: ServerClock,
    /// A large clock skew was logged (once per process).
    skew_reported: bool,
    /// Powered off ([`super::PowerOff`]): the actor only waits to be dropped.
    off: bool,
    /// How far the cabinet's own clock is off (simulated RTC error; zero on hardware).
    local_offset: chrono::Duration,
    /// Counts changes to the desired state, for whoever waits on one ([`WatchDesired`]).
    changes: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Cabinet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cabinet").field("journal_depth", &self.journal.depth()).finish_non_exhaustive()
    }
}

impl Cabinet {
    pub fn new(
        journal: Journal,
        desired: DesiredStore,
        compartments: &[CompartmentId],
        lock: Box<dyn Lock>,
        done_path: std::path::PathBuf,
        timings: DoorTimings,
    ) -> Self {
        let mut cabinet = Self {
            journal,
            desired,
            doors: BTreeMap::new(),
            purposes: BTreeMap::new(),
            done: BTreeSet::new(),
            purposes_path: done_path.with_file_name("doors.json"),
            done_path,
            keypad: Keypad::new(KeypadPolicy::default()),
            face_lockout: Lockout::new(KeypadPolicy::default()),
            face: None,
            updating: false,
            lock,
            link: None,
            compartments: compartments.to_vec(),
            base_timings: timings,
            timings,
            broken: false,
            restarts: 0,
            clock: ServerClock::default(),
            skew_reported: false,
            off: false,
            local_offset: chrono::Duration::zero(),
            changes: tokio::sync::watch::Sender::new(0),
        };
        cabinet.apply_settings();
        cabinet.load_flows();
        cabinet
    }

    /// Tells whoever watches the desired state ([`WatchDesired`]) that it changed.
    fn desired_changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Applies the operator's settings from the desired state over the configuration file.
    fn apply_settings(&mut self) {
        let settings = self.desired.state.parcels.as_ref().map(|p| p.settings.clone()).unwrap_or_default();
        self.timings = self.base_timings.with(&settings);
        for door in self.doors.values_mut() {
            door.set_timings(self.timings);
        }
        let policy = KeypadPolicy::default().with(&settings);
        self.keypad.set_policy(policy);
        self.face_lockout.set_policy(policy);
    }

    /// Reads the picked-up parcels and the door flows under way from disk, and sets each
    /// door accordingly (a door with a flow resumes as unlocking).
    fn load_flows(&mut self) {
        self.done =
            std::fs::read(&self.done_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        self.purposes =
            std::fs::read(&self.purposes_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let now = self.now();
        self.doors = self
            .compartments
            .iter()
            .map(|c| {
                let door = if self.purposes.contains_key(c) {
                    tracing::warn!(compartment = %c, "resuming a door flow interrupted by a restart");
                    Door::resumed(self.timings, now)
                } else {
                    Door::new(self.timings)
                };
                (c.clone(), door)
            })
            .collect();
    }

    fn save_done(&self) {
        let tmp = self.done_path.with_extension("tmp");
        let ok = std::fs::write(&tmp, serde_json::to_vec(&self.done).expect("ids serialise"))
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &self.done_path));
        if let Err(e) = ok {
            tracing::error!(error = %e, "could not save the picked-up parcels");
        }
    }

    fn save_purposes(&self) {
        let tmp = self.purposes_path.with_extension("tmp");
        let ok = std::fs::write(&tmp, serde_json::to_vec(&self.purposes).expect("purposes serialise"))
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &self.purposes_path));
        if let Err(e) = ok {
            tracing::error!(error = %e, "could not save the door flows");
        }
    }

    /// A cabinet whose own clock is `offset` off the true time (the simulator's clock
    /// drift; `sim_clock_offset_s`).
    pub fn with_clock_offset(mut self, offset: chrono::Duration) -> Self {
        self.local_offset = offset;
        self
    }

    /// The cabinet's own clock.
    fn local_now(&self) -> chrono::DateTime<Utc> {
        Utc::now() + self.local_offset
    }

    /// The time to judge by: the server's clock once it has spoken, else our own.
    fn now(&self) -> chrono::DateTime<Utc> {
        self.clock.now(self.local_now())
    }

    /// Starts a flow at a door: the purpose is on disk before the lock releases.
    fn open_for(&mut self, compartment: CompartmentId, purpose: Purpose) {
        self.purposes.insert(compartment.clone(), purpose);
        self.save_purposes();
        self.drive(&compartment, DoorInput::Unlock);
    }

    fn record(&mut self, what: EventKind) {
        let kind = match &what {
            EventKind::FailedMatch { .. } => "failed match",
            _ => "alarm",
        };
        match self.journal.record(what, self.now()) {
            Ok(Recorded::Kept(e)) => {
                tracing::info!(seq = e.seq, id = %e.id, "event recorded");
                if let Some(l) = &self.link {
                    l.do_send(EventsRecorded);
                }
            }
            Ok(Recorded::Dropped) => {
                tracing::warn!(
                    kind,
                    dropped = self.journal.dropped().total(),
                    "journal too full: event dropped and counted"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "event NOT recorded; restarting the cabinet actor from disk");
                self.broken = true;
            }
        }
    }

    /// The courier a pass names, if the pass verifies under a key from the server.
    fn courier_of(&self, pass: &str) -> Result<CourierId, String> {
        let keys: Vec<_> = self
            .desired
            .state
            .parcels
            .as_ref()
            .map(|p| p.courier_pass_keys.iter().filter_map(|k| lockerfleet_shared::pass::key_from_base64(k)).collect())
            .unwrap_or_default();
        if keys.is_empty() {
            return Err("this cabinet has no courier-pass key yet".into());
        }
        lockerfleet_shared::pass::verify(pass, &keys, self.now()).map(|c| c.courier).map_err(|e| e.to_string())
    }

    /// Opens the compartment of `parcel` for `courier` if it is at `stage` and theirs.
    fn open_for_courier(&mut self, pass: &str, parcel: ParcelId, stage: ParcelStage) -> Result<CompartmentId, String> {
        if self.updating {
            return Err(UPDATING.into());
        }
        let courier = self.courier_of(pass)?;
        let p = self
            .parcels()
            .into_iter()
            .find(|p| p.parcel == parcel && p.stage == stage)
            .ok_or_else(|| format!("parcel {parcel} is not here for this"))?;
        // A courier opens only the compartments of its own tasks.
        if p.courier.as_ref() != Some(&courier) {
            return Err(format!("parcel {parcel} belongs to another courier"));
        }
        if self.purposes.contains_key(&p.compartment) {
            return Err(format!("compartment {} is already open", p.compartment));
        }
        let purpose = match stage {
            ParcelStage::Expected => Purpose::Deposit { parcel, courier },
            _ => Purpose::Collect { parcel, courier },
        };
        self.open_for(p.compartment.clone(), purpose);
        Ok(p.compartment)
    }

    /// Opens a compartment on the operator's command, unless a flow holds it or an
    /// update is under way.
    fn open_for_operator(&mut self, compartment: CompartmentId, command: uuid::Uuid) -> Result<(), &'static str> {
        if self.updating {
            return Err(UPDATING);
        }
        if !self.doors.contains_key(&compartment) {
            return Err("no such compartment");
        }
        if self.purposes.contains_key(&compartment) || self.doors.get(&compartment).is_some_and(Door::busy) {
            return Err("the compartment is already open");
        }
        tracing::warn!(%command, %compartment, "compartment opened by the operator");
        self.open_for(compartment, Purpose::Operator { command });
        Ok(())
    }

    fn parcels(&self) -> Vec<ExpectedParcel> {
        self.desired.state.parcels.as_ref().map(|p| p.parcels.clone()).unwrap_or_default()
    }

    fn drive(&mut self, compartment: &CompartmentId, input: DoorInput) {
        let now = self.now();
        let Some(door) = self.doors.get_mut(compartment) else {
            tracing::warn!(%compartment, "input for an unknown compartment");
            return;
        };
        let effects = door.step(input, now);
        for effect in effects {
            match effect {
                DoorEffect::ReleaseLock => {
                    if let Err(e) = self.lock.release(compartment) {
                        tracing::error!(error = %e, "lock did not release");
                        if self.purposes.remove(compartment).is_some() {
                            self.save_purposes();
                        }
                        self.drive(compartment, DoorInput::LockFailed);
                        return;
                    }
                }
                DoorEffect::EngageLock => self.lock.engage(compartment),
                DoorEffect::Alarm(a) => {
                    self.record(EventKind::Alarm { code: a.code().into(), detail: compartment.to_string() })
                }
                DoorEffect::Abandoned => {
                    if self.purposes.remove(compartment).is_some() {
                        self.save_purposes();
                    }
                }
                DoorEffect::Closed => match self.purposes.remove(compartment) {
                    // The event is on disk before the flow is forgotten. A crash exactly in
                    // between resumes the flow and records the pickup a second time under a
                    // new id; the server refuses that second transition and counts it.
                    // Recording after forgetting could lose the event instead.
                    Some(Purpose::Pickup { parcel: p, method }) => {
                        self.done.insert(p.parcel);
                        self.save_done();
                        self.record(EventKind::Pickup { parcel: p.parcel, compartment: compartment.clone(), method });
                        self.save_purposes();
                    }
                    Some(Purpose::Deposit { parcel, courier }) => {
                        self.record(EventKind::Deposit { parcel, compartment: compartment.clone(), courier });
                        self.save_purposes();
                    }
                    Some(Purpose::Collect { parcel, courier }) => {
                        self.done.insert(parcel);
                        self.save_done();
                        self.record(EventKind::Collected { parcel, compartment: compartment.clone(), courier });
                        self.save_purposes();
                    }
                    Some(Purpose::Operator { .. }) => self.save_purposes(),
                    None => {}
                },
            }
        }
    }
}

impl Actor for Cabinet {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.off {
            // Restarted while something still held its address: stop again shortly,
            // until the last holder is gone and the supervisor lets it end.
            ctx.run_later(Duration::from_millis(100), |_, ctx| ctx.stop());
            return;
        }
        ctx.run_interval(Duration::from_secs(1), |act, ctx| {
            if act.broken {
                ctx.stop();
                return;
            }
            let ids: Vec<CompartmentId> = act.doors.keys().cloned().collect();
            for c in ids {
                act.drive(&c, DoorInput::Tick);
            }
        });
        ctx.run_interval(Duration::from_secs(60), |act, _| match act.desired.prune_expired(act.now()) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(removed = n, "expired sealed templates deleted");
                act.desired_changed();
            }
            Err(e) => {
                act.desired_changed();
                tracing::error!(error = %e, "could not delete expired templates");
            }
        });
    }
}

/// Started under a `Supervisor`: when the actor stops (a failed disk write, or a soft
/// restart commanded by the server) it comes back with everything re-read from disk —
/// journal, desired state, picked-up parcels, door flows — the same state a process
/// restart would give. Lockout counters survive, so a restart never resets a brute-force
/// lockout.
impl Supervised for Cabinet {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        if self.off {
            return;
        }
        self.restarts += 1;
        self.broken = false;
        let journal_path = self.journal.path().to_owned();
        match Journal::open(&journal_path, self.journal.max_bytes()) {
            Ok(j) => self.journal = j,
            Err(e) => {
                tracing::error!(error = %e, "journal could not be reopened; retrying");
                self.broken = true;
            }
        }
        self.desired = DesiredStore::open(self.desired.path());
        self.apply_settings();
        self.load_flows();
        self.desired_changed();
        tracing::warn!(restarts = self.restarts, "cabinet actor restarted from disk");
    }
}

impl Handler<super::PowerOff> for Cabinet {
    type Result = ();

    fn handle(&mut self, _: super::PowerOff, ctx: &mut Self::Context) {
        self.off = true;
        // A message that still reaches it (sent before the power-off) starts no flow.
        self.updating = true;
        self.link = None;
        self.face = None;
        ctx.stop();
    }
}

impl Handler<EnterCode> for Cabinet {
    // Atomic: the cabinet takes no other message while a code is checked, so the parcel
    // it matches cannot be taken out by another flow meanwhile; the check itself runs on
    // a worker thread, so the agent's other actors (the MQTT link's keep-alives) go on.
    type Result = AtomicResponse<Self, CodeOutcome>;

    fn handle(&mut self, msg: EnterCode, _ctx: &mut Self::Context) -> Self::Result {
        let ready = |o: CodeOutcome| AtomicResponse::new(Box::pin(fut::ready(o)));
        if self.updating {
            return ready(CodeOutcome::Unavailable);
        }
        let parcels: Vec<ExpectedParcel> = self
            .parcels()
            .into_iter()
            .filter(|p| !self.done.contains(&p.parcel) && !self.purposes.contains_key(&p.compartment))
            .collect();
        let now = self.now();
        let candidates = match self.keypad.candidates(&parcels, now) {
            Ok(c) => c,
            Err(locked) => return ready(locked),
        };
        let check = crate::find_code(msg.0, candidates).into_actor(self).map(move |hit, act, _| {
            if act.updating || act.off {
                return CodeOutcome::Unavailable;
            }
            let outcome = act.keypad.settle(hit, now);
            match &outcome {
                CodeOutcome::Accepted(p) => {
                    act.open_for(
                        p.compartment.clone(),
                        Purpose::Pickup { parcel: p.clone(), method: PickupMethod::Code },
                    );
                }
                CodeOutcome::LockedOutNow { until } => {
                    act.record(EventKind::Alarm { code: "keypad_lockout".into(), detail: format!("until {until}") });
                }
                CodeOutcome::Rejected { .. } => {
                    act.record(EventKind::FailedMatch { reason: "wrong pickup code".into() });
                }
                CodeOutcome::LockedOut { .. } | CodeOutcome::Unavailable => {}
            }
            outcome
        });
        AtomicResponse::new(Box::pin(check))
    }
}

impl Handler<CourierDeposit> for Cabinet {
    type Result = Result<CompartmentId, String>;

    fn handle(&mut self, msg: CourierDeposit, _ctx: &mut Self::Context) -> Self::Result {
        self.open_for_courier(&msg.pass, msg.parcel, ParcelStage::Expected)
    }
}

impl Handler<CourierCollect> for Cabinet {
    type Result = Result<CompartmentId, String>;

    fn handle(&mut self, msg: CourierCollect, _ctx: &mut Self::Context) -> Self::Result {
        if self.done.contains(&msg.parcel) {
            return Err(format!("parcel {} was already taken out", msg.parcel));
        }
        self.open_for_courier(&msg.pass, msg.parcel, ParcelStage::Collect)
    }
}

impl Handler<CourierTasks> for Cabinet {
    type Result = Result<Vec<ExpectedParcel>, String>;

    fn handle(&mut self, msg: CourierTasks, _ctx: &mut Self::Context) -> Self::Result {
        let courier = self.courier_of(&msg.pass)?;
        Ok(self
            .parcels()
            .into_iter()
            .filter(|p| p.courier.as_ref() == Some(&courier) && p.stage != ParcelStage::Ready)
            .filter(|p| !self.done.contains(&p.parcel))
            .map(|mut p| {
                p.code_hash = None;
                p
            })
            .collect())
    }
}

impl Handler<DoorSensed> for Cabinet {
    type Result = ();

    fn handle(&mut self, msg: DoorSensed, _ctx: &mut Self::Context) {
        let input = if msg.open { DoorInput::SensorOpened } else { DoorInput::SensorClosed };
        self.drive(&msg.compartment, input);
    }
}

impl Handler<FromServer> for Cabinet {
    type Result = Option<lockerfleet_shared::envelope::Applied>;

    fn handle(&mut self, msg: FromServer, ctx: &mut Self::Context) -> Self::Result {
        match msg.0 {
            DownBody::Ack(a) => {
                if let Err(e) = self.journal.ack(&a.events) {
                    tracing::error!(error = %e, "could not record an ack; the events will be sent again");
                }
                // Room again after a full spell: tell the server what was dropped.
                match self.journal.report_dropped(self.now()) {
                    Ok(Some(_)) => {
                        if let Some(l) = &self.link {
                            l.do_send(EventsRecorded);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "could not record the dropped-events report"),
                }
                None
            }
            DownBody::Parcels(set) => {
                let version = set.version;
                // Parcels the server no longer lists need no protection from a second opening.
                let listed: BTreeSet<ParcelId> = set.parcels.iter().map(|p| p.parcel).collect();
                let before = self.done.len();
                self.done.retain(|p| listed.contains(p));
                if self.done.len() != before {
                    self.save_done();
                }
                match self.desired.apply_parcels(set) {
                    Ok(newer) => {
                        if newer {
                            self.apply_settings();
                            self.desired_changed();
                        }
                        Some(lockerfleet_shared::envelope::Applied { templates: None, parcels: Some(version) })
                    }
                    Err(e) => {
                        // Applied in memory all the same: whoever watches sees it.
                        self.desired_changed();
                        tracing::error!(error = %e, "could not save the parcels");
                        None
                    }
                }
            }
            DownBody::Templates(set) => {
                let version = set.version;
                match self.desired.apply_templates(set) {
                    Ok(newer) => {
                        if newer {
                            self.desired_changed();
                        }
                        Some(lockerfleet_shared::envelope::Applied { templates: Some(version), parcels: None })
                    }
                    Err(e) => {
                        self.desired_changed();
                        tracing::error!(error = %e, "could not save the templates");
                        None
                    }
                }
            }
            DownBody::Cmd(cmd) if matches!(cmd.action, lockerfleet_shared::envelope::CommandAction::Reboot) => {
                if self.purposes.is_empty() && !self.doors.values().any(Door::busy) {
                    tracing::warn!(command = %cmd.id, "soft restart commanded by the server");
                    ctx.stop();
                } else {
                    tracing::warn!(command = %cmd.id, "soft restart refused: a door flow is under way");
                }
                None
            }
            DownBody::Cmd(lockerfleet_shared::envelope::Command {
                id,
                action: lockerfleet_shared::envelope::CommandAction::OpenCompartment { compartment },
            }) => {
                if let Err(why) = self.open_for_operator(compartment.clone(), id) {
                    tracing::warn!(command = %id, %compartment, why, "remote open refused");
                }
                None
            }
            DownBody::Ota(_) | DownBody::Cmd(_) => None,
        }
    }
}

impl Handler<Pending> for Cabinet {
    type Result = Vec<CabinetEvent>;

    fn handle(&mut self, _: Pending, _ctx: &mut Self::Context) -> Self::Result {
        self.journal.pending().cloned().collect()
    }
}

impl Handler<GetStatus> for Cabinet {
    type Result = Status;

    fn handle(&mut self, _: GetStatus, _ctx: &mut Self::Context) -> Status {
        let occupied = self
            .parcels()
            .into_iter()
            .filter(|p| p.stage != ParcelStage::Expected && !self.done.contains(&p.parcel))
            .map(|p| p.compartment)
            .collect();
        let open_doors: Vec<CompartmentId> =
            self.doors.iter().filter(|(_, d)| d.busy()).map(|(c, _)| c.clone()).collect();
        let ready = self
            .parcels()
            .into_iter()
            .filter(|p| p.stage == ParcelStage::Ready && p.code_hash.is_some() && !self.done.contains(&p.parcel))
            .map(|p| p.parcel)
            .collect();
        Status {
            templates: self.desired.state.templates.as_ref().map_or(0, |t| t.add.len()),
            settings: self.desired.state.parcels.as_ref().map(|p| p.settings.clone()).unwrap_or_default(),
            restarts: self.restarts,
            updating: self.updating,
            ready,
            busy: !open_doors.is_empty() || !self.purposes.is_empty(),
            open_doors,
            occupied,
            journal_depth: u32::try_from(self.journal.depth()).unwrap_or(u32::MAX),
            journal_dropped: self.journal.dropped().total(),
        }
    }
}
