//! # edge-agent
//!
//! The process that runs on every cabinet, as an actix actor system:
//!
//! ```text
//!   hardware (locks, door sensors, keypad) ──► cabinet actor ──► journal on disk (fsync)
//!                                                   ▲  │
//!                                  desired state,   │  ▼ events, applied versions
//!                                  acks             link actor ◄──MQTT──► fleet-server
//! ```
//!
//! * `domain/` — sans-IO cores: journal, door state machine, keypad lockout, desired state.
//! * `actors/` — the cabinet actor (owns the cores) and the link actor (MQTT).
//! * `hw/` — hardware traits and simulated implementations.
//!
//! Works offline: pickup codes are checked against the hashes in the desired state on
//! disk, events wait in the journal, and everything drains in order on reconnect.
//! The face path and updates arrive with their own issues.

pub mod actors;
pub mod camera;
pub mod cli;
pub mod config;
pub mod domain;
pub mod face;
pub mod http;
pub mod hw;
pub mod ota;
pub mod sdnotify;
pub mod vision;

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use actix::{Actor, Addr};
use lockerfleet_shared::CompartmentId;
use lockerfleet_shared::envelope::CompartmentInfo;
use lockerfleet_shared::seal::CabinetKeyPair;
use ota::SlotBackend;

use actors::cabinet::Cabinet;
use actors::link::{Identity, Link, LinkSettings};
use config::AgentConfig;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the cabinet key {path} is missing: run `edge-agent provision` first")]
    NoKey { path: String },
    #[error("the cabinet key {path} is unreadable or not a key: {reason}")]
    BadKey { path: String, reason: String },
    #[error(transparent)]
    Journal(#[from] domain::journal::JournalError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("face pickup cannot start: {reason}")]
    Face { reason: String },
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("the agent's actors were still running {waited_ms} ms after being powered off")]
    StillRunning { waited_ms: u128 },
}

/// Whether a typed code matches a pickup-code hash from the server (argon2id PHC).
pub fn verify_code(code: &str, phc: &str) -> bool {
    lockerfleet_shared::codes::verify(code, phc)
}

/// Verifications running at once in this process: one per core. A cabinet has one
/// keypad; a simulator runs thousands of agents in one process, and each verification
/// works in 19 MiB.
static VERIFYING: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();

/// The first of `candidates` whose pickup-code hash `code` matches, checked on a worker
/// thread so the actors' thread (MQTT keep-alives, doors) never waits on argon2.
pub async fn find_code(
    code: String,
    candidates: Vec<lockerfleet_shared::envelope::ExpectedParcel>,
) -> Option<lockerfleet_shared::envelope::ExpectedParcel> {
    let slots = VERIFYING.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
    });
    let _slot = slots.acquire().await.ok()?;
    let code = zeroize::Zeroizing::new(code);
    tokio::task::spawn_blocking(move || {
        candidates.into_iter().find(|p| p.code_hash.as_deref().is_some_and(|h| verify_code(&code, h)))
    })
    .await
    .ok()
    .flatten()
}

/// Creates the cabinet's key pair (private key file mode 0600) unless it exists, and
/// returns the registration request for the fleet-server.
pub fn provision(config: &AgentConfig) -> Result<serde_json::Value, AgentError> {
    let path = config.key_path();
    let keys = if path.exists() {
        load_key(&path)?
    } else {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| AgentError::Io { path: config.data_dir.display().to_string(), source })?;
        let keys = CabinetKeyPair::generate();
        let io = |source| AgentError::Io { path: path.display().to_string(), source };
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(io)?;
        std::io::Write::write_all(&mut f, &keys.secret_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        keys
    };
    Ok(serde_json::json!({
        "id": config.cabinet,
        "public_key": keys.public().to_base64(),
        "compartments": config.compartments,
    }))
}

/// Reads the cabinet's key pair from its file (mode 0600, written by [`provision`]).
pub fn load_key(path: &Path) -> Result<CabinetKeyPair, AgentError> {
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => AgentError::NoKey { path: path.display().to_string() },
        _ => AgentError::BadKey { path: path.display().to_string(), reason: e.to_string() },
    })?);
    CabinetKeyPair::from_secret_bytes(&bytes)
        .map_err(|e| AgentError::BadKey { path: path.display().to_string(), reason: e.to_string() })
}

/// A running agent.
#[derive(Debug, Clone)]
pub struct Agent {
    pub cabinet: Addr<Cabinet>,
    pub link: Addr<Link>,
    pub updater: Addr<ota::Updater>,
}

impl Agent {
    /// Powers the agent off inside this process, as a power cut would end the process:
    /// link first (no more traffic reaches the cabinet), then the updater, then the
    /// cabinet. Returns once every actor is gone — its journal and files closed, its MQTT
    /// connection dropped — so that [`start_parts`] can start the cabinet again from its
    /// data dir; an error if they are not gone within `within`. A real cabinet never does
    /// this: its process exits ([`exit_restart`]).
    pub async fn power_off(self, within: Duration) -> Result<(), AgentError> {
        let gone = (self.link.downgrade(), self.updater.downgrade(), self.cabinet.downgrade());
        let _ = self.link.send(actors::PowerOff).await;
        let _ = self.updater.send(actors::PowerOff).await;
        let _ = self.cabinet.send(actors::PowerOff).await;
        drop(self);
        let asked = std::time::Instant::now();
        // Actix tells nobody when an actor is dropped; a weak address that no longer
        // upgrades is the sign that its mailbox (and the actor with it) is gone.
        while gone.0.upgrade().is_some() || gone.1.upgrade().is_some() || gone.2.upgrade().is_some() {
            if asked.elapsed() > within {
                return Err(AgentError::StillRunning { waited_ms: asked.elapsed().as_millis() });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

/// Starts the agent with the camera from the configuration and face pickup disabled
/// (the face pipeline arrives with its own issue).
pub fn start(config: &AgentConfig, lock: Box<dyn hw::Lock>) -> Result<Agent, AgentError> {
    if config.camera == "none" {
        return start_parts(config, lock, None, exit_restart());
    }
    let camera: Box<dyn camera::FrameSource> = match config.camera.strip_prefix("dir:") {
        Some(dir) => Box::new(
            camera::DirectorySource::open(Path::new(dir))
                .map_err(|e| AgentError::Io { path: dir.to_owned(), source: std::io::Error::other(e.to_string()) })?,
        ),
        None => Box::new(camera::SyntheticSource::new(320, 240, true, true)),
    };
    let matcher: Box<dyn face::FaceMatcher> = match (&config.face.models, config.face.enabled) {
        (Some(models), true) => {
            let fail = |reason: String| AgentError::Face { reason };
            let pipeline = vision::pipeline::FacePipeline::load(models, config.face.quality.clone())
                .map_err(|e| fail(e.to_string()))?;
            let keys = load_key(&config.key_path())?;
            Box::new(
                vision::OnnxMatcher::new(
                    pipeline,
                    keys,
                    config.cabinet_id(),
                    config.face.pad.clone(),
                    config.face.matching,
                )
                .map_err(fail)?,
            )
        }
        _ => Box::new(face::Disabled),
    };
    start_with(config, lock, camera, matcher)
}

/// How a cabinet process restarts into its other slot: it exits, and the service
/// manager (systemd: `Restart=always`) starts it again.
pub fn exit_restart() -> ota::Restart {
    Box::new(|| {
        tracing::warn!("restarting into the other slot");
        std::process::exit(0)
    })
}

/// Starts the cabinet, link, camera and face actors in the current actix system.
pub fn start_with(
    config: &AgentConfig,
    lock: Box<dyn hw::Lock>,
    camera: Box<dyn camera::FrameSource>,
    matcher: Box<dyn face::FaceMatcher>,
) -> Result<Agent, AgentError> {
    start_parts(config, lock, Some((camera, matcher)), exit_restart())
}

/// Starts a cabinet from its parts: without a camera no camera or face threads are
/// started (the simulator runs thousands of cabinets in one process), and `restart`
/// says what "restart into the other slot" means here.
pub fn start_parts(
    config: &AgentConfig,
    lock: Box<dyn hw::Lock>,
    face: Option<(Box<dyn camera::FrameSource>, Box<dyn face::FaceMatcher>)>,
    restart: ota::Restart,
) -> Result<Agent, AgentError> {
    let keys = load_key(&config.key_path())?;
    // The slots first: a trial slot that keeps failing to confirm is abandoned here.
    let slots_dir = config.data_dir.join("slots");
    let io = |source| AgentError::Io { path: slots_dir.display().to_string(), source };
    let mut slots = ota::DirSlots::open(&slots_dir, &config.ota.factory_floor).map_err(io)?;
    if let Some(r) = slots.count_boot().map_err(io)? {
        tracing::error!(detail = r.detail.as_deref().unwrap_or(""), "gave up on the new slot; running the old one");
    }
    let firmware = ota::Updater::running_version(&slots).unwrap_or_else(|| config.firmware.clone());
    let journal = domain::journal::Journal::open(&config.data_dir.join("journal.log"), config.journal_max_bytes)?;
    let desired = domain::desired::DesiredStore::open(&config.data_dir.join("desired.json"));
    let compartments: Vec<CompartmentId> =
        config.compartments.iter().map(|c| CompartmentId::new(c.id.clone()).expect("validated")).collect();
    let timings = domain::door::DoorTimings {
        unlock_window: chrono::Duration::seconds(i64::try_from(config.unlock_window_s).unwrap_or(i64::MAX)),
        left_open_after: chrono::Duration::seconds(i64::try_from(config.door_left_open_s).unwrap_or(i64::MAX)),
    };
    let done = config.data_dir.join("done.json");
    let for_cabinet = compartments.clone();
    let offset = chrono::Duration::seconds(config.sim_clock_offset_s);
    let cabinet = actix::Supervisor::start(move |_| {
        Cabinet::new(journal, desired, &for_cabinet, lock, done, timings).with_clock_offset(offset)
    });
    let identity = Identity {
        cabinet: config.cabinet_id(),
        firmware,
        hardware: config.hardware.clone(),
        compartments: config
            .compartments
            .iter()
            .map(|c| CompartmentInfo {
                id: CompartmentId::new(c.id.clone()).expect("validated"),
                size: c.size,
                low: c.low,
            })
            .collect(),
        key_fingerprint: keys.public().fingerprint(),
        model: config.face.enabled.then(|| config.face.models.as_ref().map(|m| m.embedding_ref())).flatten(),
    };
    let settings = LinkSettings {
        host: config.mqtt.host.clone(),
        port: config.mqtt.port,
        keep_alive: Duration::from_secs(config.mqtt.keep_alive_s),
        connect_timeout: Duration::from_secs(config.mqtt.connect_timeout_s),
        heartbeat: Duration::from_secs(config.heartbeat_s),
        resend: Duration::from_secs(config.resend_s),
        password: match &config.mqtt.password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| AgentError::Io { path: path.display().to_string(), source })?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        },
        tls: config.mqtt.tls()?,
        clock_offset: offset,
    };
    let topics = config.topics();
    let for_link = cabinet.clone();
    let link = actix::Supervisor::start(move |_| Link::new(identity, topics, &settings, for_link));
    // Events recorded before this arrives are not lost: the link sends everything
    // pending when it connects.
    cabinet.do_send(actors::cabinet::SetLink(link.clone().recipient()));
    if let Some((camera, matcher)) = face {
        start_face(&cabinet, camera, matcher);
    }

    let updater = ota::Updater::new(
        Box::new(slots),
        config.ota.clone(),
        config.hardware.clone(),
        config.data_dir.join("ota"),
        cabinet.clone(),
        link.clone(),
        restart,
    )
    .start();
    link.do_send(actors::link::SetUpdater(updater.clone().recipient()));
    Ok(Agent { cabinet, link, updater })
}

/// The camera and face actors, one thread each: blocking sensor reads and model
/// inference stay off the actors.
fn start_face(cabinet: &Addr<Cabinet>, camera: Box<dyn camera::FrameSource>, matcher: Box<dyn face::FaceMatcher>) {
    let camera = std::sync::Mutex::new(Some(camera));
    let camera = actix::SyncArbiter::start(1, move || {
        let source = camera.lock().ok().and_then(|mut c| c.take()).expect("the camera thread is started once");
        actors::face::Camera::new(source)
    });
    let matcher = std::sync::Mutex::new(Some(matcher));
    let face = actix::SyncArbiter::start(1, move || {
        let m = matcher.lock().ok().and_then(|mut m| m.take()).expect("the face thread is started once");
        actors::face::Face::new(m)
    });
    cabinet.do_send(actors::cabinet::SetFace(camera, face));
}
