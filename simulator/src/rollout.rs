//! An OTA rollout through the simulated fleet (`[rollout]` in a scenario): the
//! simulator signs a small release with the operator's release key, uploads it, and
//! rolls it out in waves to every cabinet it runs, while the fleet run's traffic goes
//! on. The cabinets take it as real ones do — offer checked, download with resume,
//! sha256 and size, install into the other slot, restart (see [`crate::cabinets`]),
//! trial boot confirmed by health — and the report says what happened to each.
//!
//! ```text
//!   sign + upload ─► POST /rollouts (waves) ─► poll progress every 500 ms (wave start/end)
//!        cabinets: offer → download → install → restart → confirm ─┘
//!   finish: rollout settled, every cabinet back online on its confirmed slot
//!           ─► updated / failed / stuck / lost, bytes served, server CPU and memory
//! ```
//!
//! * **updated**: the server counts it confirmed and the cabinet's own slot pointer
//!   runs the new version with nothing on trial.
//! * **failed**: the rollout gave up on it for a reason it names (rolled back, refused…).
//! * **stuck**: neither, when the run ends (still in flight, or the two sides disagree).
//! * **lost**: not running or not connected at the end (a restart that did not come back).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use edge_agent::config::AgentConfig;
use lockerfleet_shared::artifact::SignedManifest;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cabinets::SimCabinet;
use crate::fleet::{Api, rss_mib};
use crate::scenario::ScenarioError;

/// How often the rollout's progress is read: the resolution of the wave times.
const POLL: Duration = Duration::from_millis(500);
/// Waiting for the end stops when the rollout's progress has not changed for this long
/// (a wedged broker, a stopped server): the report then says so, with what was stuck,
/// instead of waiting out the whole `--timeout-s`.
const STALL: Duration = Duration::from_secs(900);
/// The name of the release key variable, which wins over `rollout.release_key`.
pub const RELEASE_KEY_ENV: &str = "LOCKERFLEET_RELEASE_KEY";

/// `[rollout]` in a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutPlan {
    /// The release signing key (`fleet-server artifact keygen`); the server must trust
    /// its public half (`artifacts.trusted_keys`). `LOCKERFLEET_RELEASE_KEY` wins.
    pub release_key: Option<PathBuf>,
    /// The version released; unset: `2.0.<unix seconds>`, newer than any earlier run.
    pub version: Option<String>,
    /// Size of the artifact, KiB.
    pub artifact_kib: u64,
    /// Cumulative shares of the cabinets, in percent, one per wave; the last is 100.
    pub waves: Vec<f64>,
    /// Offers per minute (the conductor's rate limit).
    pub per_minute: f64,
    /// How long a cabinet's new slot has to reach the server before it rolls back, s.
    pub health_deadline_s: u64,
}

impl Default for RolloutPlan {
    fn default() -> Self {
        Self {
            release_key: None,
            version: None,
            artifact_kib: 256,
            waves: vec![1.0, 10.0, 100.0],
            per_minute: 60_000.0,
            health_deadline_s: 60,
        }
    }
}

impl RolloutPlan {
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |key, reason: String| Err(ScenarioError::Invalid { key, reason });
        if !(1..=65_536).contains(&self.artifact_kib) {
            return bad("rollout.artifact_kib", format!("{} is not between 1 and 65536", self.artifact_kib));
        }
        if self.waves.is_empty() || self.waves.last() != Some(&100.0) {
            return bad("rollout.waves", "must end with 100 (every cabinet)".into());
        }
        if self.waves.iter().any(|w| !(*w > 0.0 && *w <= 100.0)) || self.waves.windows(2).any(|p| p[0] >= p[1]) {
            return bad("rollout.waves", format!("{:?} must rise, each above 0 and at most 100", self.waves));
        }
        if !(self.per_minute > 0.0 && self.per_minute.is_finite()) {
            return bad("rollout.per_minute", "must be more than 0".into());
        }
        if self.health_deadline_s == 0 {
            return bad("rollout.health_deadline_s", "must be at least 1".into());
        }
        if let Some(v) = &self.version {
            v.parse::<lockerfleet_shared::artifact::Version>()
                .map_err(|e| ScenarioError::Invalid { key: "rollout.version", reason: e.to_string() })?;
        }
        Ok(())
    }
}

/// The release the run rolls out: signed, not yet uploaded.
#[derive(Debug)]
pub struct Release {
    plan: RolloutPlan,
    public_key: String,
    signed: SignedManifest,
    bytes: Vec<u8>,
}

impl Release {
    /// Signs an artifact of `artifact_kib` KiB for the simulated cabinets' hardware.
    pub fn prepare(plan: &RolloutPlan) -> anyhow::Result<Self> {
        let path = match std::env::var_os(RELEASE_KEY_ENV) {
            Some(p) => PathBuf::from(p),
            None => plan.release_key.clone().with_context(|| {
                format!("scenario key `rollout.release_key` (or {RELEASE_KEY_ENV}) must name the release key")
            })?,
        };
        let key = fleet_server::release::load_key(&path).map_err(|e| anyhow::anyhow!("release key: {e}"))?;
        let version = match &plan.version {
            Some(v) => v.clone(),
            None => format!("2.0.{}", chrono::Utc::now().timestamp()),
        };
        // A stand-in image: a header naming the version, then filler; it never carries
        // the marker that makes a simulated image fail its health check.
        let size = usize::try_from(plan.artifact_kib * 1024).context("artifact size")?;
        let mut bytes = format!("lockerfleet simulated edge-agent image {version}\n").into_bytes();
        let mut x: u32 = 0x9e37_79b9;
        while bytes.len() < size {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bytes.push(b'a' + (x % 26) as u8);
        }
        bytes.truncate(size);
        let hardware = AgentConfig::default().hardware;
        let mut manifest =
            lockerfleet_shared::artifact::describe("edge-agent", &version, &[hardware.as_str()], "0.0.0", &bytes);
        manifest.release_notes = "simulator rollout".into();
        let signed = lockerfleet_shared::artifact::sign(manifest, &key);
        let public_key = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes());
        Ok(Self { plan: plan.clone(), public_key, signed, bytes })
    }

    /// Makes a cabinet trust this release's key.
    pub fn trust(&self, config: &mut AgentConfig) {
        config.ota.trusted_keys.push(self.public_key.clone());
        config.ota.health_deadline_s = self.plan.health_deadline_s;
    }

    pub fn version(&self) -> &str {
        &self.signed.manifest.version
    }
}

/// One wave, seconds from the rollout's creation (to the poll's resolution).
#[derive(Debug, Clone, Default, Serialize)]
pub struct WaveReport {
    pub cabinets: usize,
    /// The first of its cabinets was offered the release.
    pub started_s: Option<f64>,
    /// Every one of its cabinets had been offered it (the conductor's part done).
    pub all_offered_s: Option<f64>,
    /// Every one of its cabinets confirmed or failed.
    pub ended_s: Option<f64>,
}

/// What the rollout did.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    pub rollout: String,
    pub version: String,
    pub artifact_bytes: u64,
    /// The cabinets of the rollout: with several simulator processes sharing one
    /// rollout, the whole fleet's.
    pub cabinets: usize,
    /// The cabinets this process ran and checked: `updated` to `lost` count these.
    pub cabinets_here: usize,
    /// The rollout's phase at the end (`completed`, `paused`, `aborted`…).
    pub phase: String,
    pub waves: Vec<WaveReport>,
    /// From the rollout's creation to every cabinet confirmed (`None`: not all did).
    pub seconds_to_all_updated: Option<f64>,
    pub updated: usize,
    pub failed: usize,
    /// Must be zero.
    pub stuck: usize,
    /// Must be zero.
    pub lost: usize,
    /// Failed cabinets by the rollout's failure kind.
    pub failures: BTreeMap<String, usize>,
    /// Restarts into another slot played by the simulator.
    pub restarts: usize,
    /// Of those, while parcels were being deposited or picked up somewhere in the fleet.
    pub restarts_during_traffic: usize,
    /// Restarts while that cabinet said a door was open or a flow under way, or while
    /// the simulator held one of its doors open: the update lock failing. Must be zero.
    pub restarts_while_busy: usize,
    pub restarts_while_door_open: usize,
    /// Couriers' and recipients' attempts told to wait because an update held the
    /// cabinet, and tried again.
    pub flows_waited_for_update: usize,
    /// Bytes the server sent from `/ota/…` during the rollout (server-wide: with several
    /// simulator processes it counts them all; a follower's count starts a little late).
    pub bytes_served: Option<u64>,
    /// The server's CPU time during the rollout (with `--server-pid`), and the average
    /// number of cores that is.
    pub server_cpu_s: Option<f64>,
    pub server_cpu_cores: Option<f64>,
    pub server_rss_mib_max: Option<f64>,
    pub seconds: f64,
    pub poll_ms: u64,
    /// Cabinets that were stuck or lost, and why (the first 20).
    pub problems: Vec<String>,
}

impl RolloutReport {
    /// A few lines for the terminal.
    pub fn summary(&self) -> String {
        let s = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} s"));
        let mut out = format!(
            "rollout {} ({} bytes) to {} cabinets, {} of them here: {}; updated {}, failed {}, stuck {}, lost {}; all updated after {}\n",
            self.version,
            self.artifact_bytes,
            self.cabinets,
            self.cabinets_here,
            self.phase,
            self.updated,
            self.failed,
            self.stuck,
            self.lost,
            s(self.seconds_to_all_updated)
        );
        for (i, w) in self.waves.iter().enumerate() {
            out += &format!(
                "  wave {}: {} cabinets, started {}, all offered {}, ended {}\n",
                i + 1,
                w.cabinets,
                s(w.started_s),
                s(w.all_offered_s),
                s(w.ended_s)
            );
        }
        out += &format!(
            "  restarts {} ({} during traffic; {} with the cabinet busy, {} with a door open); flows that waited for an update {}\n",
            self.restarts,
            self.restarts_during_traffic,
            self.restarts_while_busy,
            self.restarts_while_door_open,
            self.flows_waited_for_update
        );
        let mib = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0} MiB"));
        out += &format!(
            "  served {} bytes; server CPU {} ({} cores), RSS max {}\n",
            self.bytes_served.map_or("-".to_owned(), |b| b.to_string()),
            s(self.server_cpu_s),
            self.server_cpu_cores.map_or("-".to_owned(), |c| format!("{c:.2}")),
            mib(self.server_rss_mib_max)
        );
        for p in &self.problems {
            out += &format!("  {p}\n");
        }
        out
    }
}

/// What the progress poller saw.
#[derive(Debug, Default)]
struct Seen {
    phase: String,
    waves: Vec<WaveReport>,
    all_updated_s: Option<f64>,
    rss_max: Option<f64>,
    /// The last progress read, and when it last changed (s since the start).
    progress: Value,
    changed_s: f64,
}

/// A rollout under way.
#[derive(Debug)]
pub struct RolloutRun {
    id: String,
    version: String,
    artifact_bytes: u64,
    cabinets: usize,
    here: usize,
    created: Instant,
    served_before: Option<u64>,
    cpu_before: Option<f64>,
    server_pid: Option<u32>,
    seen: Rc<RefCell<Seen>>,
    poller: actix_rt::task::JoinHandle<()>,
}

/// Uploads the release and starts a rollout to `cabinets` (ids: this process's, or with
/// several processes the whole fleet's, see [`crate::barrier`]).
pub(crate) async fn start(
    api: &Api,
    release: &Release,
    cabinets: &[String],
    here: usize,
    server_pid: Option<u32>,
) -> anyhow::Result<RolloutRun> {
    let (status, created) = api.call("POST", "/api/v1/artifacts", Some(json!(release.signed))).await?;
    let artifact = match status {
        201 => created["id"].as_str().context("artifact id")?.to_owned(),
        // Another run registered the same release first: roll that one out (the upload
        // below is idempotent).
        409 => {
            let sha = &release.signed.manifest.sha256;
            let (status, all) = api.call("GET", "/api/v1/artifacts", None).await?;
            if status != 200 {
                bail!("listing the artifacts: {status} {all}");
            }
            all.as_array()
                .and_then(|a| a.iter().find(|x| x["sha256"].as_str() == Some(sha.as_str())))
                .and_then(|x| x["id"].as_str())
                .with_context(|| {
                    format!("registering the release: {status} {created}, and no artifact has its sha256")
                })?
                .to_owned()
        }
        _ => bail!("registering the release: {status} {created}"),
    };
    let mut res = api
        .http
        .put(format!("{}/api/v1/artifacts/{artifact}/content", api.base))
        .bearer_auth(&api.token)
        .send_body(release.bytes.clone())
        .await
        .map_err(|e| anyhow::anyhow!("uploading the release: {e}"))?;
    if res.status().as_u16() != 200 {
        let body = res.body().await.unwrap_or_default();
        bail!("uploading the release: {} {}", res.status(), String::from_utf8_lossy(&body));
    }
    let plan = &release.plan;
    let body = json!({
        "name": format!("simulator {} to {} cabinets", release.version(), cabinets.len()),
        "artifact": artifact,
        "target": {"cabinets": cabinets},
        "plan": {
            "waves": plan.waves.iter().map(|p| json!({"percent": p})).collect::<Vec<_>>(),
            "rate": {"per_minute": plan.per_minute, "growth": 1.0, "max_per_minute": plan.per_minute},
            "soak_s": 0,
        },
    });
    let before = Before::read(api, server_pid).await;
    let (status, created) = api.call("POST", "/api/v1/rollouts", Some(body)).await?;
    if status != 201 {
        bail!("creating the rollout: {status} {created}");
    }
    let id = created["id"].as_str().context("rollout id")?;
    Ok(watch(api, id, release.version(), release.bytes.len() as u64, cabinets.len(), here, before, server_pid))
}

/// Follows a rollout another simulator process of the same fleet started (see
/// [`crate::barrier`]): the waves are the fleet's, the cabinets checked at the end this
/// process's. Times count from when this process learnt of it.
pub(crate) async fn follow(
    api: &Api,
    id: &str,
    version: &str,
    release: &Release,
    fleet: usize,
    here: usize,
    server_pid: Option<u32>,
) -> RolloutRun {
    let before = Before::read(api, server_pid).await;
    watch(api, id, version, release.bytes.len() as u64, fleet, here, before, server_pid)
}

/// The server's counters as a rollout starts.
struct Before {
    at: Instant,
    served: Option<u64>,
    cpu: Option<f64>,
}

impl Before {
    async fn read(api: &Api, server_pid: Option<u32>) -> Self {
        let served = bytes_served(api).await;
        Self { at: Instant::now(), served, cpu: server_pid.and_then(cpu_seconds) }
    }
}

#[allow(clippy::too_many_arguments)]
fn watch(
    api: &Api,
    id: &str,
    version: &str,
    artifact_bytes: u64,
    total: usize,
    here: usize,
    before: Before,
    server_pid: Option<u32>,
) -> RolloutRun {
    let seen: Rc<RefCell<Seen>> = Rc::default();
    let created_at = before.at;
    let poller = {
        let (seen, id) = (seen.clone(), id.to_owned());
        let api = Api { http: api.http.clone(), base: api.base.clone(), token: api.token.clone() };
        actix_rt::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            loop {
                tick.tick().await;
                let rss = server_pid.and_then(rss_mib);
                let Ok((200, r)) = api.call("GET", &format!("/api/v1/rollouts/{id}"), None).await else { continue };
                observe(&mut seen.borrow_mut(), &r, created_at.elapsed().as_secs_f64(), total, rss);
            }
        })
    };
    RolloutRun {
        id: id.to_owned(),
        version: version.to_owned(),
        artifact_bytes,
        cabinets: total,
        here,
        created: created_at,
        served_before: before.served,
        cpu_before: before.cpu,
        server_pid,
        seen,
        poller,
    }
}

/// Folds one progress reading into what was seen.
fn observe(seen: &mut Seen, r: &Value, t: f64, total: usize, rss: Option<f64>) {
    if r["progress"] != seen.progress {
        seen.progress = r["progress"].clone();
        seen.changed_s = t;
    }
    seen.phase = r["progress"]["phase"]["phase"].as_str().unwrap_or_default().to_owned();
    seen.rss_max = match (seen.rss_max, rss) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let waves = r["progress"]["waves"].as_array().cloned().unwrap_or_default();
    seen.waves.resize(waves.len(), WaveReport::default());
    let mut confirmed = 0;
    for (w, wave) in seen.waves.iter_mut().zip(&waves) {
        let count = |label: &str| wave["states"][label].as_u64().unwrap_or(0) as usize;
        let size = wave["size"].as_u64().unwrap_or(0) as usize;
        let all: usize =
            wave["states"].as_object().map_or(0, |m| m.values().filter_map(Value::as_u64).sum::<u64>()) as usize;
        let in_flight: usize = ["offered", "downloading", "downloaded", "waiting_window", "installing", "restarting"]
            .iter()
            .map(|l| count(l))
            .sum();
        let not_offered = count("pending");
        w.cabinets = size;
        confirmed += count("confirmed");
        if w.started_s.is_none() && not_offered < size {
            w.started_s = Some(t);
        }
        if w.all_offered_s.is_none() && size > 0 && not_offered == 0 {
            w.all_offered_s = Some(t);
        }
        if w.ended_s.is_none()
            && size > 0
            && not_offered == 0
            && in_flight == 0
            && count("retry_wait") == 0
            && all == size
        {
            w.ended_s = Some(t);
        }
    }
    if seen.all_updated_s.is_none() && confirmed == total {
        seen.all_updated_s = Some(t);
    }
}

impl RolloutRun {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// Waits for the rollout to settle and every cabinet to be back, then reports.
    /// `traffic` is when parcels were moving, to count the restarts that fell within it.
    pub(crate) async fn finish(
        self,
        api: &Api,
        cabinets: &[SimCabinet],
        traffic: Option<(Instant, Instant)>,
        deadline: Instant,
    ) -> RolloutReport {
        // Settled: the rollout's phase is final, every cabinet is back on its confirmed
        // slot and online (a last restart may still be under way when the phase is), and
        // the server has the outcome of each.
        let final_phase = |phase: &str| matches!(phase, "completed" | "aborted" | "paused");
        let mut states;
        let mut stalled;
        loop {
            states = BTreeMap::new();
            let mut done = final_phase(&self.seen.borrow().phase);
            for c in cabinets {
                if !done {
                    break;
                }
                done = c.running() && slot_state(c).is_some_and(|s| s.pending.is_none()) && c.connected().await;
            }
            if done {
                states = server_states(api, &self.id).await;
                done = cabinets.iter().all(|c| states.get(c.id()).is_some_and(|s| s == "confirmed" || is_failure(s)));
            }
            let quiet_s = self.created.elapsed().as_secs_f64() - self.seen.borrow().changed_s;
            stalled = !done && quiet_s > STALL.as_secs_f64();
            if done || stalled || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        if states.is_empty() {
            states = server_states(api, &self.id).await;
        }
        self.poller.abort();
        let seconds = self.created.elapsed().as_secs_f64();
        let cpu = match (self.cpu_before, self.server_pid.and_then(cpu_seconds)) {
            (Some(b), Some(a)) => Some(a - b),
            _ => None,
        };
        let served = match (self.served_before, bytes_served(api).await) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b)),
            _ => None,
        };
        let (mut updated, mut failed, mut stuck, mut lost) = (0, 0, 0, 0);
        let mut failures = BTreeMap::new();
        let mut problems = Vec::new();
        if stalled {
            problems.push(format!(
                "stalled: the rollout's progress did not change for {} s; stopped waiting for it",
                STALL.as_secs()
            ));
        }
        for c in cabinets {
            let state = states.get(c.id()).map_or("unknown", String::as_str);
            let slots = slot_state(c);
            let running_new = slots.as_ref().is_some_and(|s| {
                s.pending.is_none() && s.versions[s.active as usize].as_deref() == Some(self.version.as_str())
            });
            let mut problem = None;
            if !c.running() || !c.connected().await {
                lost += 1;
                problem =
                    Some(format!("lost: {}", c.restart_error().unwrap_or_else(|| "not connected at the end".into())));
            } else if state == "confirmed" && running_new {
                updated += 1;
            } else if is_failure(state) {
                failed += 1;
                *failures.entry(state.to_owned()).or_insert(0) += 1;
            } else {
                stuck += 1;
                problem =
                    Some(format!("stuck: the server says {state}, the cabinet runs the new version: {running_new}"));
            }
            if let Some(p) = problem
                && problems.len() < 20
            {
                problems.push(format!("{}: {p}", c.id()));
            }
        }
        let restarts: Vec<_> = cabinets.iter().flat_map(SimCabinet::restarts).collect();
        let in_traffic = |at: Instant| traffic.is_some_and(|(from, to)| at >= from && at <= to);
        let seen = self.seen.borrow();
        RolloutReport {
            rollout: self.id.clone(),
            version: self.version.clone(),
            artifact_bytes: self.artifact_bytes,
            cabinets: self.cabinets,
            cabinets_here: self.here,
            phase: seen.phase.clone(),
            waves: seen.waves.clone(),
            seconds_to_all_updated: seen.all_updated_s,
            updated,
            failed,
            stuck,
            lost,
            failures,
            restarts: restarts.len(),
            restarts_during_traffic: restarts.iter().filter(|r| in_traffic(r.at)).count(),
            restarts_while_busy: restarts.iter().filter(|r| r.busy).count(),
            restarts_while_door_open: restarts.iter().filter(|r| r.door_open).count(),
            flows_waited_for_update: cabinets.iter().map(SimCabinet::waited_for_update).sum(),
            bytes_served: served,
            server_cpu_s: cpu,
            server_cpu_cores: cpu.map(|c| c / seconds.max(0.001)),
            server_rss_mib_max: seen.rss_max,
            seconds,
            poll_ms: POLL.as_millis() as u64,
            problems,
        }
    }
}

impl RolloutReport {
    /// What must hold for the run to pass, as error lines.
    pub fn errors(&self) -> Vec<String> {
        let mut e = Vec::new();
        if self.stuck > 0 || self.lost > 0 {
            e.push(format!("rollout: {} cabinets stuck and {} lost", self.stuck, self.lost));
        }
        if self.restarts_while_busy > 0 || self.restarts_while_door_open > 0 {
            e.push(format!(
                "rollout: the update lock failed: {} restarts with the cabinet busy, {} with a door open",
                self.restarts_while_busy, self.restarts_while_door_open
            ));
        }
        if self.phase != "completed" {
            e.push(format!("rollout: ended {}, not completed", self.phase));
        }
        e
    }
}

/// The server's word on each cabinet of the rollout: its state's label.
async fn server_states(api: &Api, id: &str) -> BTreeMap<String, String> {
    match api.call("GET", &format!("/api/v1/rollouts/{id}/cabinets"), None).await {
        Ok((200, Value::Array(rows))) => rows
            .iter()
            .filter_map(|r| Some((r["cabinet"].as_str()?.to_owned(), r["state"].as_str()?.to_owned())))
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn is_failure(state: &str) -> bool {
    matches!(state, "failed" | "rejected" | "timed_out" | "silent" | "regressed" | "rolled_back" | "cancelled")
}

/// The cabinet's slot pointer as its updater last wrote it.
fn slot_state(c: &SimCabinet) -> Option<edge_agent::ota::SlotState> {
    let bytes = std::fs::read(c.config().data_dir.join("slots").join("state.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `lockerfleet_ota_bytes_served_total` from the server's `/metrics`.
async fn bytes_served(api: &Api) -> Option<u64> {
    let mut res = api.http.get(format!("{}/metrics", api.base)).send().await.ok()?;
    let body = res.body().limit(8 << 20).await.ok()?;
    let text = String::from_utf8_lossy(&body);
    text.lines().find_map(|l| l.strip_prefix("lockerfleet_ota_bytes_served_total ")).and_then(|v| v.trim().parse().ok())
}

/// A process's user + system CPU time, s (Linux `/proc/<pid>/stat`, in USER_HZ = 100).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the first.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_of_the_last_change_moves_only_when_the_progress_changes() {
        let mut seen = Seen::default();
        let at = |confirmed: u64| {
            json!({"progress": {"phase": {"phase": "running", "wave": 0},
                                "waves": [{"size": 2, "states": {"confirmed": confirmed, "downloading": 2 - confirmed}}]}})
        };
        observe(&mut seen, &at(0), 1.0, 2, None);
        assert_eq!(seen.changed_s, 1.0);
        observe(&mut seen, &at(0), 50.0, 2, None);
        assert_eq!(seen.changed_s, 1.0, "the same progress read again is no change");
        observe(&mut seen, &at(1), 60.0, 2, None);
        assert_eq!((seen.changed_s, seen.phase.as_str()), (60.0, "running"));
    }
}
