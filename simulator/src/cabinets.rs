//! The simulator's cabinets, as handles that outlive a restart.
//!
//! A [`SimCabinet`] is one virtual cabinet: its configuration, the simulated hardware the
//! simulator plays (a [`SimLock`] it can jam and whose releases it counts; a simulated
//! camera's [`Stage`] when it has face parcels) and whichever agent runs it now. Two things
//! stop a cabinet's actors and start them again from the same data dir, with the same
//! hardware — the start-up path a real cabinet runs ([`edge_agent::start_parts`]):
//!
//! - a restart into the other slot during an OTA update. A real cabinet restarts by
//!   exiting; systemd starts the process again, which reads the slot pointer the updater
//!   wrote and boots the new version on trial. A simulated cabinet shares its process with
//!   thousands of others, so the updater's `restart` hook asks the fleet's restarter, which
//!   powers that one agent off cleanly ([`edge_agent::Agent::power_off`]: its actors gone,
//!   journal closed, MQTT connection dropped) and starts it again;
//! - a power loss (`power_loss_s` scenarios): the cabinet runs on an arbiter (thread) of
//!   its own, which stops where it stands — no clean shutdown, no goodbye (the broker
//!   publishes the last will); what is on disk stays — and starts again after a while.
//!
//! ```text
//!   updater ──restart()──► channel (cabinet index) ──► restarter task
//!                                                       ├─ the update lock held? (door, flow)
//!                                                       └─ restart: stop(Clean) ─► start_again
//!   power loss ─────────────────────────────────────────► stop(PowerCut) … start_again
//!                                   SimCabinet now points at the new agent
//! ```
//!
//! Callers never keep an agent's addresses: they go through [`SimCabinet`], which sends
//! to whichever agent runs now; during the moment a cabinet is down a send fails as it
//! would against a rebooting cabinet, and [`SimCabinet::send_patiently`] tries again.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::{Handler, MailboxError, Message};
use anyhow::{Context, bail};
use edge_agent::actors::cabinet::{Cabinet, DoorSensed, GetDesired, GetStatus, WatchDesired};
use edge_agent::actors::link::GetLinkState;
use edge_agent::config::AgentConfig;
use edge_agent::domain::desired::DesiredState;
use edge_agent::hw::SimLock;
use lockerfleet_shared::CompartmentId;
use tokio::sync::mpsc;

use crate::face::{SimCamera, SimMatcher, Stage};

/// How long a powered-off agent may take to be gone.
const POWER_OFF_WITHIN: Duration = Duration::from_secs(10);
/// How long a flow told "the cabinet is updating" waits before trying again.
pub(crate) const RETRY_AFTER_UPDATE: Duration = Duration::from_millis(200);
/// How long a recipient at a cabinet that keeps saying "updating" goes on trying (an
/// install and the restart after it take seconds; this is far beyond).
pub(crate) const UPDATE_PATIENCE: Duration = Duration::from_secs(300);
/// How often a cabinet that is down is asked again about its desired state.
const DOWN_POLL: Duration = Duration::from_millis(100);
/// How long a power loss waits for a restart under way to finish first.
const RESTART_FINISHES_WITHIN: Duration = Duration::from_secs(30);

/// One restart of one cabinet into its other slot, as the restarter saw it.
#[derive(Debug, Clone)]
pub struct RestartRecord {
    pub at: Instant,
    /// The cabinet said a door was open or a flow under way (its own status).
    pub busy: bool,
    /// The simulator had a door open there (it opened it and had not closed it).
    pub door_open: bool,
}

/// How a cabinet's actors stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The agent powers itself off (a restart into the other slot).
    Clean,
    /// The cabinet's thread stops where it stands (a power loss).
    PowerCut,
}

struct Inner {
    config: AgentConfig,
    /// Its place in the fleet: what its updater's restart hook names.
    index: usize,
    restart_tx: mpsc::UnboundedSender<usize>,
    /// Shared with the agent's lock, across restarts: jam a compartment, count releases.
    lock: SimLock,
    /// What its camera sees, when it has one (cabinets with face parcels).
    stage: Option<Stage>,
    /// Runs on an arbiter of its own, so that it can lose power without taking the other
    /// cabinets along.
    own_thread: bool,
    /// The agent running now; `None` while it is down (or if it failed to start again).
    agent: RefCell<Option<edge_agent::Agent>>,
    /// The thread of a cabinet that can lose power.
    arbiter: RefCell<Option<actix_rt::Arbiter>>,
    /// Restarting or powered off: a second restart request is the same restart.
    down: Cell<bool>,
    restarts: RefCell<Vec<RestartRecord>>,
    /// Why the last restart failed, if it did: the cabinet is then lost.
    restart_error: RefCell<Option<String>>,
    /// Doors the simulator opened here and has not closed yet.
    open_doors: RefCell<Vec<CompartmentId>>,
    /// Flows refused because an update held the cabinet, and tried again.
    waited_for_update: Cell<usize>,
}

/// A simulated cabinet: its configuration, its simulated hardware and whichever agent
/// runs it now.
#[derive(Clone)]
pub struct SimCabinet(Rc<Inner>);

impl std::fmt::Debug for SimCabinet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCabinet")
            .field("cabinet", &self.0.config.cabinet)
            .field("running", &self.running())
            .finish_non_exhaustive()
    }
}

impl SimCabinet {
    pub fn id(&self) -> &str {
        &self.0.config.cabinet
    }

    pub fn config(&self) -> &AgentConfig {
        &self.0.config
    }

    /// The simulated lock, the same across restarts.
    pub fn lock(&self) -> &SimLock {
        &self.0.lock
    }

    /// What its simulated camera sees, when it has one.
    pub fn stage(&self) -> Option<&Stage> {
        self.0.stage.as_ref()
    }

    /// Sends to the cabinet actor running now; `Closed` while the cabinet is down.
    pub async fn send<M>(&self, msg: M) -> Result<M::Result, MailboxError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Cabinet: Handler<M>,
    {
        let addr = self.0.agent.borrow().as_ref().map(|a| a.cabinet.clone());
        match addr {
            Some(a) => a.send(msg).await,
            None => Err(MailboxError::Closed),
        }
    }

    /// The door sensor of `compartment` reads open or closed; the simulator remembers
    /// which doors it holds open, to check the update lock against.
    pub async fn door(&self, compartment: &CompartmentId, open: bool) -> Result<(), MailboxError> {
        {
            let mut doors = self.0.open_doors.borrow_mut();
            doors.retain(|c| c != compartment);
            if open {
                doors.push(compartment.clone());
            }
        }
        self.send(DoorSensed { compartment: compartment.clone(), open }).await
    }

    /// Sends `make()` until the answer is not `refused` (an update holds the cabinet) and
    /// the cabinet is running, as a courier or recipient told "try again in a moment"
    /// would; gives up at `deadline` with the last answer.
    pub async fn send_patiently<M>(
        &self,
        make: impl Fn() -> M,
        refused: impl Fn(&M::Result) -> bool,
        deadline: Instant,
    ) -> Result<M::Result, MailboxError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Cabinet: Handler<M>,
    {
        loop {
            let answer = self.send(make()).await;
            let again = match &answer {
                Ok(a) => refused(a),
                Err(_) => true,
            };
            if !again || Instant::now() > deadline {
                return answer;
            }
            self.note_update_wait();
            tokio::time::sleep(RETRY_AFTER_UPDATE).await;
        }
    }

    /// Waits until the cabinet's desired state satisfies `holds`, or `deadline` passes
    /// (false). The state is read once now and again after each change the cabinet
    /// announces, so the moment it holds is seen at once and thousands of waiting
    /// cabinets cost nothing between changes; while the cabinet is down it is asked
    /// again every [`DOWN_POLL`].
    pub async fn until_desired(&self, deadline: Instant, holds: impl Fn(&DesiredState) -> bool) -> bool {
        loop {
            // Subscribed before the read: a change landing between the two is not missed.
            let watch = self.send(WatchDesired).await.ok();
            if let Ok(state) = self.send(GetDesired).await
                && holds(&state)
            {
                return true;
            }
            let now = Instant::now();
            if now > deadline {
                return false;
            }
            let changed = async {
                match watch {
                    // A closed channel: the cabinet was replaced (power cycle); ask the new one.
                    Some(mut w) => {
                        if w.changed().await.is_err() {
                            tokio::time::sleep(DOWN_POLL).await;
                        }
                    }
                    None => tokio::time::sleep(DOWN_POLL).await,
                }
            };
            // At the deadline the state is read once more before giving up.
            let _ = tokio::time::timeout_at(deadline.into(), changed).await;
        }
    }

    /// Whether the agent running now has its MQTT link up.
    pub async fn connected(&self) -> bool {
        let link = self.0.agent.borrow().as_ref().map(|a| a.link.clone());
        match link {
            Some(l) => l.send(GetLinkState).await.is_ok_and(|s| s.connected),
            None => false,
        }
    }

    /// Whether an agent runs this cabinet now (false while it is down, or after a
    /// restart that failed).
    pub fn running(&self) -> bool {
        self.0.agent.borrow().is_some()
    }

    pub fn restarts(&self) -> Vec<RestartRecord> {
        self.0.restarts.borrow().clone()
    }

    pub fn restart_error(&self) -> Option<String> {
        self.0.restart_error.borrow().clone()
    }

    /// Counts one flow that was told "updating" and tries again.
    pub(crate) fn note_update_wait(&self) {
        self.0.waited_for_update.set(self.0.waited_for_update.get() + 1);
    }

    pub fn waited_for_update(&self) -> usize {
        self.0.waited_for_update.get()
    }

    /// Power off: the cabinet's thread stops where it stands. Every actor, the MQTT
    /// socket and anything in flight are dropped; no goodbye is sent (the broker
    /// publishes the last will). What is on disk stays. A restart under way finishes
    /// first. Only a cabinet on its own thread can lose power.
    pub async fn power_off(&self) -> anyhow::Result<()> {
        if !self.0.own_thread {
            bail!("only a cabinet on its own thread can lose power");
        }
        let asked = Instant::now();
        while self.0.down.replace(true) {
            if asked.elapsed() > RESTART_FINISHES_WITHIN {
                bail!("the cabinet was still restarting {} s after its power loss was due", asked.elapsed().as_secs());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let stopped = self.stop(Stop::PowerCut).await;
        if stopped.is_err() {
            self.0.down.set(false);
        }
        stopped
    }

    /// Power on after [`Self::power_off`]: the agent starts again from its data dir, with
    /// the same hardware.
    pub async fn power_on(&self) -> anyhow::Result<()> {
        let started = self.start_again().await;
        self.0.down.set(false);
        started
    }

    /// Restarts into the other slot, as the updater asked: powers the agent off and
    /// starts it again from its data dir.
    async fn restart(&self) {
        if self.0.down.replace(true) {
            return; // already restarting (or powered off: it boots the new slot on power-on)
        }
        // What the update lock must guarantee, checked from both sides: the cabinet's own
        // status, and the doors the simulator itself holds open there.
        let busy = self.send(GetStatus).await.is_ok_and(|s| s.busy);
        let door_open = !self.0.open_doors.borrow().is_empty();
        if busy || door_open {
            tracing::error!(cabinet = self.id(), busy, door_open, "restarting with a door open or a flow under way");
        }
        self.0.restarts.borrow_mut().push(RestartRecord { at: Instant::now(), busy, door_open });
        let error = match self.stop(Stop::Clean).await {
            Ok(()) => self.start_again().await.err().map(|e| format!("did not start again: {e:#}")),
            Err(e) => Some(format!("{e:#}")),
        };
        if let Some(e) = &error {
            tracing::error!(cabinet = self.id(), error = %e, "simulated restart failed");
        }
        *self.0.restart_error.borrow_mut() = error;
        self.0.down.set(false);
    }

    /// Stops the agent's actors (and its thread, when it has one of its own).
    async fn stop(&self, how: Stop) -> anyhow::Result<()> {
        let agent = self.0.agent.borrow_mut().take();
        let arbiter = self.0.arbiter.borrow_mut().take();
        match (how, agent) {
            (Stop::Clean, Some(agent)) => agent.power_off(POWER_OFF_WITHIN).await?,
            // The addresses go; the actors die with their thread.
            (Stop::PowerCut, agent) => drop(agent),
            (Stop::Clean, None) => {}
        }
        if let Some(arbiter) = arbiter {
            arbiter.stop();
            tokio::task::spawn_blocking(move || arbiter.join())
                .await
                .context("waiting for the cabinet's thread")?
                .map_err(|_| anyhow::anyhow!("the cabinet's thread panicked"))?;
        }
        Ok(())
    }

    /// Starts the agent again from its data dir, with the same hardware.
    async fn start_again(&self) -> anyhow::Result<()> {
        let (agent, arbiter) = start_agent(&self.0).await?;
        *self.0.agent.borrow_mut() = Some(agent);
        *self.0.arbiter.borrow_mut() = arbiter;
        Ok(())
    }
}

/// The simulator's cabinets and the task that restarts them when their updater asks.
#[derive(Debug)]
pub struct SimFleet {
    cabinets: Rc<RefCell<Vec<SimCabinet>>>,
    restart_tx: mpsc::UnboundedSender<usize>,
    restarter: actix_rt::task::JoinHandle<()>,
}

impl SimFleet {
    /// Starts the restarter. Call inside an actix system.
    pub fn new() -> Self {
        let cabinets: Rc<RefCell<Vec<SimCabinet>>> = Rc::default();
        let (restart_tx, mut rx) = mpsc::unbounded_channel::<usize>();
        let restarter = {
            let cabinets = cabinets.clone();
            actix_rt::spawn(async move {
                while let Some(i) = rx.recv().await {
                    let Some(cab) = cabinets.borrow().get(i).cloned() else { continue };
                    actix_rt::spawn(async move { cab.restart().await });
                }
            })
        };
        Self { cabinets, restart_tx, restarter }
    }

    /// Starts one cabinet's agent (simulated lock; a simulated camera `with_camera`; on a
    /// thread of its own, so that it can lose power, `own_thread`) and returns its handle.
    pub async fn start(&self, config: AgentConfig, with_camera: bool, own_thread: bool) -> anyhow::Result<SimCabinet> {
        let inner = Inner {
            config,
            index: self.cabinets.borrow().len(),
            restart_tx: self.restart_tx.clone(),
            lock: SimLock::default(),
            stage: with_camera.then(Stage::default),
            own_thread,
            agent: RefCell::default(),
            arbiter: RefCell::default(),
            down: Cell::new(false),
            restarts: RefCell::default(),
            restart_error: RefCell::default(),
            open_doors: RefCell::default(),
            waited_for_update: Cell::new(0),
        };
        let (agent, arbiter) = start_agent(&inner).await?;
        *inner.agent.borrow_mut() = Some(agent);
        *inner.arbiter.borrow_mut() = arbiter;
        let cab = SimCabinet(Rc::new(inner));
        self.cabinets.borrow_mut().push(cab.clone());
        Ok(cab)
    }
}

impl Default for SimFleet {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        self.restarter.abort();
    }
}

type FaceParts = Option<(Box<dyn edge_agent::camera::FrameSource>, Box<dyn edge_agent::face::FaceMatcher>)>;

/// The simulated camera and matcher of a cabinet: each a thread, so only cabinets with
/// face parcels get them.
fn face_parts(config: &AgentConfig, stage: &Stage) -> anyhow::Result<FaceParts> {
    let keys = edge_agent::load_key(&config.key_path())?;
    let seed = config.cabinet.bytes().fold(0xcafe_u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    Ok(Some((Box::new(SimCamera::new(stage.clone(), seed)), Box::new(SimMatcher::new(keys, config.cabinet_id())))))
}

/// Starts a cabinet's agent from its data dir, with its hardware; on a thread of its own
/// when it has one.
async fn start_agent(c: &Inner) -> anyhow::Result<(edge_agent::Agent, Option<actix_rt::Arbiter>)> {
    let face = match &c.stage {
        Some(s) => face_parts(&c.config, s)?,
        None => None,
    };
    // The updater calls this where a real cabinet's process would exit.
    let (i, restart_tx) = (c.index, c.restart_tx.clone());
    let restart: edge_agent::ota::Restart = Box::new(move || {
        if restart_tx.send(i).is_err() {
            tracing::error!(cabinet = i, "the simulator's restarter is gone; the cabinet cannot restart");
        }
    });
    let lock = Box::new(c.lock.clone());
    if !c.own_thread {
        return Ok((edge_agent::start_parts(&c.config, lock, face, restart)?, None));
    }
    let arbiter = actix_rt::Arbiter::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let config = c.config.clone();
    let spawned = arbiter.spawn_fn(move || {
        let _ = tx.send(edge_agent::start_parts(&config, lock, face, restart));
    });
    if !spawned {
        bail!("the cabinet's thread did not start");
    }
    let agent = rx.await.context("the cabinet's thread stopped while starting")??;
    Ok((agent, Some(arbiter)))
}
