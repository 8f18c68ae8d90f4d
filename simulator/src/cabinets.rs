//! The simulator's cabinets, as handles that outlive a restart.
//!
//! A real cabinet restarts into its other slot by exiting; systemd starts the process
//! again, which reads the slot pointer the updater wrote and boots the new version on
//! trial. A simulated cabinet shares its process with thousands of others, so its
//! restart is played here instead: the updater's `restart` hook asks the fleet's
//! restarter, which powers that one agent off ([`edge_agent::Agent::power_off`]: its
//! actors gone, journal closed, MQTT connection dropped) and starts it again with
//! [`edge_agent::start_parts`] from the same data dir — the start-up path a real cabinet
//! runs. Nothing else about the agent is simulator-specific.
//!
//! ```text
//!   updater ──restart()──► channel (cabinet index) ──► restarter task
//!                                                       ├─ the update lock held? (door, flow)
//!                                                       ├─ power_off(old agent)
//!                                                       └─ start_parts(config) ─► SimCabinet now points at it
//! ```
//!
//! Callers never keep an agent's addresses: they go through [`SimCabinet`], which sends
//! to whichever agent runs now; during the moment a cabinet is down a send fails as it
//! would against a rebooting cabinet, and [`SimCabinet::send_patiently`] tries again.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::{Handler, MailboxError, Message};
use edge_agent::actors::cabinet::{Cabinet, DoorSensed, GetStatus};
use edge_agent::actors::link::GetLinkState;
use edge_agent::config::AgentConfig;
use lockerfleet_shared::CompartmentId;
use tokio::sync::mpsc;

/// How long a powered-off agent may take to be gone.
const POWER_OFF_WITHIN: Duration = Duration::from_secs(10);
/// How long a flow told "the cabinet is updating" waits before trying again.
const RETRY_AFTER_UPDATE: Duration = Duration::from_millis(200);

/// One restart of one cabinet, as the restarter saw it.
#[derive(Debug, Clone)]
pub struct RestartRecord {
    pub at: Instant,
    /// The cabinet said a door was open or a flow under way (its own status).
    pub busy: bool,
    /// The simulator had a door open there (it opened it and had not closed it).
    pub door_open: bool,
}

#[derive(Debug)]
struct Inner {
    config: AgentConfig,
    /// The agent running now; `None` while it restarts (or if it failed to start again).
    agent: RefCell<Option<edge_agent::Agent>>,
    restarting: Cell<bool>,
    restarts: RefCell<Vec<RestartRecord>>,
    /// Why the last restart failed, if it did: the cabinet is then lost.
    restart_error: RefCell<Option<String>>,
    /// Doors the simulator opened here and has not closed yet.
    open_doors: RefCell<Vec<CompartmentId>>,
    /// Flows refused because an update held the cabinet, and tried again.
    waited_for_update: Cell<usize>,
}

/// A simulated cabinet: its configuration and whichever agent runs it now.
#[derive(Debug, Clone)]
pub struct SimCabinet(Rc<Inner>);

impl SimCabinet {
    pub fn id(&self) -> &str {
        &self.0.config.cabinet
    }

    pub fn config(&self) -> &AgentConfig {
        &self.0.config
    }

    /// Sends to the cabinet actor running now; `Closed` while the cabinet restarts.
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
            self.0.waited_for_update.set(self.0.waited_for_update.get() + 1);
            tokio::time::sleep(RETRY_AFTER_UPDATE).await;
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

    /// Whether an agent runs this cabinet now (false while restarting, or after a
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

    pub fn waited_for_update(&self) -> usize {
        self.0.waited_for_update.get()
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
            let (cabinets, tx) = (cabinets.clone(), restart_tx.clone());
            actix_rt::spawn(async move {
                while let Some(i) = rx.recv().await {
                    let Some(cab) = cabinets.borrow().get(i).cloned() else { continue };
                    actix_rt::spawn(restart(cab, i, tx.clone()));
                }
            })
        };
        Self { cabinets, restart_tx, restarter }
    }

    /// Starts one cabinet's agent (simulated lock, no camera) and returns its handle.
    pub fn start(&self, config: AgentConfig) -> Result<SimCabinet, edge_agent::AgentError> {
        let i = self.cabinets.borrow().len();
        let agent = start_agent(&config, i, self.restart_tx.clone())?;
        let cab = SimCabinet(Rc::new(Inner {
            config,
            agent: RefCell::new(Some(agent)),
            restarting: Cell::new(false),
            restarts: RefCell::default(),
            restart_error: RefCell::default(),
            open_doors: RefCell::default(),
            waited_for_update: Cell::new(0),
        }));
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

fn start_agent(
    config: &AgentConfig,
    i: usize,
    restart_tx: mpsc::UnboundedSender<usize>,
) -> Result<edge_agent::Agent, edge_agent::AgentError> {
    // The updater calls this where a real cabinet's process would exit.
    let restart: edge_agent::ota::Restart = Box::new(move || {
        if restart_tx.send(i).is_err() {
            tracing::error!(cabinet = i, "the simulator's restarter is gone; the cabinet cannot restart");
        }
    });
    edge_agent::start_parts(config, Box::new(edge_agent::hw::SimLock::default()), None, restart)
}

/// Powers one cabinet off and starts it again from its data dir.
async fn restart(cab: SimCabinet, i: usize, restart_tx: mpsc::UnboundedSender<usize>) {
    if cab.0.restarting.replace(true) {
        return; // already restarting: the second request is the same restart
    }
    // What the update lock must guarantee, checked from both sides: the cabinet's own
    // status, and the doors the simulator itself holds open there.
    let busy = cab.send(GetStatus).await.is_ok_and(|s| s.busy);
    let door_open = !cab.0.open_doors.borrow().is_empty();
    if busy || door_open {
        tracing::error!(cabinet = cab.id(), busy, door_open, "restarting with a door open or a flow under way");
    }
    cab.0.restarts.borrow_mut().push(RestartRecord { at: Instant::now(), busy, door_open });
    let old = cab.0.agent.borrow_mut().take();
    let mut error = None;
    if let Some(agent) = old
        && let Err(e) = agent.power_off(POWER_OFF_WITHIN).await
    {
        error = Some(e.to_string());
    }
    if error.is_none() {
        match start_agent(&cab.0.config, i, restart_tx) {
            Ok(agent) => *cab.0.agent.borrow_mut() = Some(agent),
            Err(e) => error = Some(format!("did not start again: {e}")),
        }
    }
    if let Some(e) = &error {
        tracing::error!(cabinet = cab.id(), error = %e, "simulated restart failed");
    }
    *cab.0.restart_error.borrow_mut() = error;
    cab.0.restarting.set(false);
}
