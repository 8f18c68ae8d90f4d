//! `simulator run`: N virtual cabinets in one process against a real fleet-server. Each
//! is the edge agent itself (`edge_agent::start_parts`: the same journal, door, keypad,
//! courier and link code as on a cabinet) with simulated hardware (a simulated camera
//! where it has face parcels), its own MQTT connection, identity and keys, held as a
//! [`SimCabinet`] that survives restarts (`cabinets`). The simulator registers them (or reuses those it
//! registered before), connects them, drives parcels through them — assignment, courier
//! deposit, code pickup — and reports what arrived where, and how fast.
//!
//! ```text
//!   scenario ─► register + start agents (paced) ─► all connected?
//!            ─► [rollout: starts now, runs through the traffic (see `rollout`)]
//!            ─► stock: parcel created → at the cabinet → courier deposit → code ready
//!            ─► [partition: cut a share of the cabinets off the broker]
//!            ─► pickups by code (some mistyped first, some doors left open → alarm), by
//!               face (impostors and spoofs first), at faulty doors; [power losses];
//!               no-show codes typed after expiry            (see `face`, `faults`)
//!            ─► [heal: the cut cabinets' journals must drain]
//!            ─► [no-shows: the courier collects what expired]
//!            ─► [rollout: every cabinet updated, or failed, stuck or lost]
//!            ─► every journal empty; the server stored each event once
//!   a sampler records connected cabinets, journal depth and pickups every second
//! ```
//!
//! A scenario with a `[day]` runs on simulated time instead of the stock and pickup
//! phases: each cabinet plays its own schedule of arrivals (deposits) and recipients
//! (pickups, by the same roles), each item when it is due at the day's speed, and the
//! report's `day` section says whether the fleet kept up (see [`crate::day`]). The
//! no-shows, the rollout and the accounting after it are the same.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use edge_agent::actors::cabinet::{CourierDeposit, EnterCode, GetStatus};
use edge_agent::config::{AgentConfig, CompartmentConfig, MqttSettings};
use edge_agent::domain::desired::DesiredState;
use edge_agent::domain::keypad::CodeOutcome;
use lockerfleet_shared::envelope::{CompartmentSize, ParcelStage};
use lockerfleet_shared::{CompartmentId, ParcelId};
use serde::Serialize;

use crate::cabinets::{SimCabinet, SimFleet};
use crate::day::{Day, DayObserved, DayReport, Schedule, Step};
use crate::faults::Tally;
use crate::proxy::CutProxy;
use crate::rollout::RolloutReport;
use crate::scenario::{Role, Scenario};
use serde_json::{Value, json};

/// What a fleet run does.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// The fleet-server's API, e.g. http://127.0.0.1:8080
    #[arg(long)]
    pub server: String,
    /// An admin API token.
    #[arg(long, env = "LOCKERFLEET_TOKEN")]
    pub token: String,
    /// The broker the cabinets connect to.
    #[arg(long, default_value = "127.0.0.1")]
    pub mqtt_host: String,
    #[arg(long, default_value_t = 1884)]
    pub mqtt_port: u16,
    #[arg(long, default_value_t = 100)]
    pub cabinets: usize,
    /// Cabinet ids are `{prefix}-00000`…; the tenant and courier are named after it.
    #[arg(long, default_value = "sim")]
    pub prefix: String,
    /// Parcels each cabinet takes in and hands out (deposit and code pickup).
    #[arg(long, default_value_t = 1)]
    pub parcels: usize,
    /// Where the cabinets keep their keys, journals and state.
    #[arg(long, default_value = "sim-data")]
    pub data: PathBuf,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// How long to wait for everything to arrive, seconds. A scenario's `[day]` adds
    /// its own length in real time (its simulated hours at its speed).
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
    /// A scenario file (TOML; see `simulator/scenarios/`). Its `cabinets` and
    /// `parcels_per_cabinet` win over the flags.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Write an HTML page plotting the run over time here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// The fleet-server's process id, when it runs on this machine: its memory is
    /// sampled with the timeline (`/proc/<pid>/status`).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Most API requests in flight at once while stocking. More only queue inside the
    /// server (behind its code hashing) until the client's timeout ends them.
    #[arg(long, default_value_t = 16)]
    pub api_concurrency: usize,
    /// Several simulator processes running one fleet: each registers its cabinets, says
    /// so in this folder, and starts its cabinets once `--barrier-of` processes have, so
    /// the whole fleet connects in the same window. A scenario's rollout is then one
    /// rollout for the whole fleet (see `barrier.rs`). Use a fresh folder for every run.
    #[arg(long, requires = "barrier_of")]
    pub barrier: Option<PathBuf>,
    #[arg(long, requires = "barrier")]
    pub barrier_of: Option<usize>,
}

/// Latencies of one kind, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut ms: Vec<f64>) -> Self {
        if ms.is_empty() {
            return Self::default();
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        Self { count: ms.len(), p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1.0) }
    }
}

/// The run's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    pub scenario: String,
    pub cabinets: usize,
    pub connected: usize,
    /// From the first cabinet started to the last one connected.
    pub seconds_to_all_connected: f64,
    /// The same two moments as Unix time (ms), to merge the reports of several processes.
    pub connect_started_unix_ms: i64,
    pub all_connected_unix_ms: i64,
    pub parcels_picked_up: usize,
    pub pickups_refused: usize,
    /// Pickups by how they went: `code` (first try), `code_after_wrong_code`, `face`,
    /// `code_after_face_failed`, `code_after_door_fault`.
    pub pickups: BTreeMap<String, usize>,
    /// Wrong codes typed and refused by the keypad.
    pub wrong_codes_refused: usize,
    /// Journal events the cabinets made (deposits, pickups, door alarms).
    pub events_made: usize,
    /// Events the server acknowledged (the journals are empty of them).
    pub events_acked: usize,
    /// Made but not stored by the server; stored twice. Both must be zero.
    pub events_lost: usize,
    pub events_duplicated: usize,
    /// `door_left_open` alarms the scenario provoked, and how many the server stored.
    pub door_alarms_made: usize,
    pub door_alarms_stored: usize,
    /// Parcel created → the cabinet holds it in its desired state.
    pub assignment_to_cabinet: Latency,
    /// Door closed after the deposit → the pickup code's hash is at the cabinet.
    pub code_to_cabinet: Latency,
    /// Door closed after the deposit → the recipient's sealed template is at the cabinet
    /// (face parcels; DESIGN.md's budget: p99 < 100 ms at 10,000 cabinets). Polled every
    /// 25 ms, like `code_to_cabinet`.
    pub template_to_cabinet: Latency,
    pub partition: Option<PartitionReport>,
    /// The flapping links (`[flaps]`): how often they dropped and what waited meanwhile.
    pub flaps: Option<FlapReport>,
    /// The simulated day the scenario ran (`[day]`): arrivals, refusals for want of a
    /// free compartment, lateness against the schedule, the server's pickup window in
    /// simulated time.
    pub day: Option<DayReport>,
    /// The OTA rollout the scenario ran during the traffic (`[rollout]`).
    pub rollout: Option<RolloutReport>,
    pub face: Option<crate::faults::FaceReport>,
    pub no_show: Option<crate::faults::NoShowReport>,
    pub door_faults: Option<crate::faults::DoorFaultReport>,
    pub power_loss: Option<crate::faults::PowerLossReport>,
    pub clock_drift: Option<crate::faults::ClockDriftReport>,
    /// Errors grouped by their kind (the text before the first colon).
    pub errors_by_kind: BTreeMap<String, usize>,
    pub errors: Vec<String>,
    /// `/healthz` probes (one a second) that failed or took over a second, and the slowest.
    pub healthz_failures: usize,
    pub healthz_max_ms: f64,
    /// The server's resident memory before the cabinets started and once all were
    /// connected (MiB; with `--server-pid`), and the growth per connected cabinet (KiB).
    pub server_rss_mib_before: Option<f64>,
    pub server_rss_mib_connected: Option<f64>,
    pub server_kib_per_cabinet: Option<f64>,
    /// One sample a second.
    pub timeline: Vec<Sample>,
    pub seconds: f64,
}

/// What a partition did.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    pub cabinets: usize,
    pub seconds_cut: f64,
    /// Pickups the cut cabinets handed out while offline.
    pub pickups_while_cut: usize,
    /// Their journals' depth just before the cut healed: events waiting for the server.
    pub journal_depth_at_heal: u64,
    /// From the heal to every cut cabinet's journal empty (every event acked).
    pub seconds_to_drain: f64,
}

/// What the flapping links went through.
#[derive(Debug, Clone, Serialize)]
pub struct FlapReport {
    pub cabinets: usize,
    pub every_s: f64,
    pub down_s: f64,
    /// Drops made during the traffic.
    pub drops: usize,
    /// The most events the flapping cabinets' journals held halfway through a drop.
    pub journal_depth_mid_drop_max: u64,
    /// Their connections through the flapping link after each one's first: reconnects
    /// after drops, and any after a power loss or an update's restart.
    pub reconnects: usize,
}

/// Cuts the flapping cabinets' proxy for `down_s` every `every_s` until stopped.
struct Flapper {
    proxy: Rc<CutProxy>,
    every_s: f64,
    down_s: f64,
    drops: Rc<Cell<usize>>,
    depth_max: Rc<Cell<u64>>,
    task: actix_rt::task::JoinHandle<()>,
}

impl Flapper {
    fn start(proxy: Rc<CutProxy>, plan: &crate::scenario::Flaps, cabinets: Vec<SimCabinet>) -> Self {
        let (drops, depth_max) = (Rc::new(Cell::new(0usize)), Rc::new(Cell::new(0u64)));
        let (up, down) = (Duration::from_secs_f64(plan.every_s - plan.down_s), Duration::from_secs_f64(plan.down_s));
        let task = {
            let (proxy, drops, depth_max) = (proxy.clone(), drops.clone(), depth_max.clone());
            actix_rt::spawn(async move {
                loop {
                    tokio::time::sleep(up).await;
                    proxy.cut();
                    let back = tokio::time::Instant::now() + down;
                    drops.set(drops.get() + 1);
                    // Read halfway through the drop (asking thousands of cabinets takes a
                    // moment: it must not lengthen the drop).
                    tokio::time::sleep(down / 2).await;
                    depth_max.set(depth_max.get().max(journal_depth(&cabinets).await));
                    tokio::time::sleep_until(back).await;
                    proxy.heal();
                }
            })
        };
        Self { proxy, every_s: plan.every_s, down_s: plan.down_s, drops, depth_max, task }
    }

    /// Stops flapping with the link up.
    fn stop(self, cabinets: usize) -> FlapReport {
        self.task.abort();
        self.proxy.heal();
        FlapReport {
            cabinets,
            every_s: self.every_s,
            down_s: self.down_s,
            drops: self.drops.get(),
            journal_depth_mid_drop_max: self.depth_max.get(),
            reconnects: self.proxy.connections().saturating_sub(cabinets),
        }
    }
}

/// The fleet at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub connected: usize,
    /// Events waiting in journals, all cabinets together.
    pub journal_depth: u64,
    pub picked_up: usize,
    /// Assignment latencies that completed in this second (ms).
    pub assignment_ms: Vec<f64>,
    /// `/healthz` round trip (ms); `None` when it failed or took over a second.
    pub healthz_ms: Option<f64>,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthz_error: Option<String>,
    pub server_rss_mib: Option<f64>,
}

/// Resident memory of a process, MiB (Linux).
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

pub struct Api {
    pub(crate) http: awc::Client,
    pub(crate) base: String,
    pub(crate) token: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Api {
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "PUT" => self.http.put(url),
            "PATCH" => self.http.patch(url),
            _ => self.http.post(url),
        }
        .bearer_auth(&self.token);
        let mut res = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        }
        .map_err(|e| anyhow::anyhow!("{method} {path}: {e}"))?;
        let bytes = res.body().limit(16 << 20).await.map_err(|e| anyhow::anyhow!("{method} {path}: {e}"))?;
        Ok((res.status().as_u16(), serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// Registers a cabinet and returns the MQTT password the registration issued; a
    /// cabinet registered before (409) gets a new one.
    async fn cabinet_login(&self, id: &str, registration: Value) -> anyhow::Result<String> {
        let (status, answer) = self.call("POST", "/api/v1/cabinets", Some(registration)).await?;
        let (status, answer) = match status {
            201 => (status, answer["mqtt_credentials"].clone()),
            409 => self.call("POST", &format!("/api/v1/cabinets/{id}/mqtt-credentials"), Some(json!({}))).await?,
            _ => bail!("POST /api/v1/cabinets: {status} {answer}"),
        };
        match answer["password"].as_str() {
            Some(p) if (200..300).contains(&status) => Ok(p.to_owned()),
            _ => bail!("no MQTT password for {id}: {status} {answer}"),
        }
    }

    /// Creates something; an existing one (409) is fine.
    async fn ensure(&self, path: &str, body: Value) -> anyhow::Result<()> {
        let (status, answer) = self.call("POST", path, Some(body)).await?;
        if status != 201 && status != 409 {
            bail!("POST {path}: {status} {answer}");
        }
        Ok(())
    }
}

fn agent_config(args: &FleetArgs, i: usize, port: u16, scenario: &Scenario) -> AgentConfig {
    let id = format!("{}-{i:05}", args.prefix);
    AgentConfig {
        data_dir: args.data.join(&id),
        cabinet: id,
        mqtt: MqttSettings { host: args.mqtt_host.clone(), port, ..Default::default() },
        camera: "none".into(),
        resend_s: 5,
        door_left_open_s: scenario.door_left_open_s,
        sim_clock_offset_s: scenario.clock_offset_s(i),
        compartments: ["s", "m", "l", "xl"]
            .iter()
            .cycle()
            .take(scenario.compartments())
            .enumerate()
            .map(|(k, size)| CompartmentConfig {
                id: format!("C{k}"),
                size: match *size {
                    "s" => CompartmentSize::S,
                    "m" => CompartmentSize::M,
                    "l" => CompartmentSize::L,
                    _ => CompartmentSize::Xl,
                },
                low: false,
            })
            .collect(),
        ..AgentConfig::default()
    }
}

pub(crate) async fn until<F, Fut>(deadline: Instant, check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    until_every(deadline, Duration::from_millis(25), check).await
}

/// How often a check that asks every cabinet of the process (connected? journals
/// empty?) runs: one sweep asks thousands of actors, and sweeping every 25 ms would
/// take the cores the cabinets' MQTT loops and the server need. It is the resolution
/// of "all online" and "drained" in the report.
const SWEEP_EVERY: Duration = Duration::from_millis(200);

/// [`until`], checking every `period`.
pub(crate) async fn until_every<F, Fut>(deadline: Instant, period: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    while !check().await {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(period).await;
    }
    true
}

/// Runs the fleet: register, connect, traffic, report. Call inside an actix system.
pub async fn run(args: &FleetArgs) -> anyhow::Result<FleetReport> {
    let result = run_fleet(args).await;
    // The other processes of the fleet would wait at the barrier until their deadline:
    // tell them at once, and why.
    if let (Err(e), Some(dir)) = (&result, &args.barrier) {
        crate::barrier::fail(dir, &args.prefix, &format!("{e:#}"));
    }
    result
}

async fn run_fleet(args: &FleetArgs) -> anyhow::Result<FleetReport> {
    let scenario = match &args.scenario {
        Some(path) => Scenario::load(path)?,
        None => Scenario::default(),
    };
    let cabinets = scenario.cabinets.unwrap_or(args.cabinets);
    let parcels = scenario.parcels_per_cabinet.unwrap_or(args.parcels);
    scenario.check_room(parcels)?;
    // A timed day: every cabinet's schedule, planned before anything starts.
    let schedules: Vec<Schedule> = match &scenario.day {
        Some(day) => (0..cabinets).map(|i| day.schedule(i, |k| scenario.role(i, k) == Role::NoShow)).collect(),
        None => Vec::new(),
    };
    // The parcels cabinet `i` takes in, by index.
    let parcels_of = |i: usize| -> Vec<usize> {
        match schedules.get(i) {
            Some(s) => s.deposits().collect(),
            None => (0..parcels).collect(),
        }
    };
    let day_real_s = scenario
        .day
        .as_ref()
        .map_or(0.0, |d| d.real_s(schedules.iter().map(Schedule::end_s).fold(0.0, f64::max) / 3600.0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_s) + Duration::from_secs_f64(day_real_s);
    let api = Api {
        http: awc::Client::builder().timeout(Duration::from_secs(30)).finish(),
        base: args.server.trim_end_matches('/').to_owned(),
        token: args.token.clone(),
    };
    let (tenant, courier) = (args.prefix.clone(), format!("{}-courier", args.prefix));
    api.ensure("/api/v1/tenants", json!({"id": tenant, "name": "Simulated fleet"})).await?;
    api.ensure("/api/v1/couriers", json!({"id": courier, "tenant": tenant, "name": "Simulated courier"})).await?;

    // The partitioned cabinets reach the broker through a proxy that can cut them off;
    // the flapping ones (right after them) through another, cut again and again.
    let cut_n = scenario.partitioned(cabinets);
    let flap_n = scenario.flapping(cabinets);
    let upstream = if cut_n + flap_n > 0 {
        Some(
            tokio::net::lookup_host((args.mqtt_host.as_str(), args.mqtt_port))
                .await?
                .next()
                .with_context(|| format!("{} does not resolve", args.mqtt_host))?,
        )
    } else {
        None
    };
    let proxy = match upstream {
        Some(up) if cut_n > 0 => Some(CutProxy::start(up).await?),
        _ => None,
    };
    let flap_proxy = match upstream {
        Some(up) if flap_n > 0 => Some(Rc::new(CutProxy::start(up).await?)),
        _ => None,
    };

    // The release a `[rollout]` rolls out: every cabinet trusts its key.
    let release = scenario.rollout.as_ref().map(crate::rollout::Release::prepare).transpose()?;

    // Register every cabinet, then start them, paced when the scenario says so.
    let bar = indicatif::ProgressBar::new(cabinets as u64);
    bar.set_message("registering");
    let mut configs = Vec::with_capacity(cabinets);
    for i in 0..cabinets {
        let port = match (&proxy, &flap_proxy) {
            (Some(p), _) if i < cut_n => p.addr.port(),
            (_, Some(f)) if (cut_n..cut_n + flap_n).contains(&i) => f.addr.port(),
            _ => args.mqtt_port,
        };
        let mut config = agent_config(args, i, port, &scenario);
        if let Some(r) = &release {
            r.trust(&mut config);
        }
        config.validate().context("cabinet configuration")?;
        let mut registration = edge_agent::provision(&config)?;
        registration["tenant"] = json!(tenant);
        let password = api.cabinet_login(&config.cabinet, registration).await?;
        let password_file = config.data_dir.join("mqtt.password");
        std::fs::write(&password_file, password).with_context(|| format!("writing {}", password_file.display()))?;
        config.mqtt.password_file = Some(password_file);
        configs.push(config);
        bar.inc(1);
    }
    let barrier = match (&args.barrier, args.barrier_of) {
        (Some(dir), Some(of)) => {
            bar.set_message("waiting for the other simulator processes");
            let b = crate::barrier::Barrier::new(dir, &args.prefix, of)?;
            let ids: Vec<String> = configs.iter().map(|c| c.cabinet.clone()).collect();
            b.registered(&ids, deadline).await?;
            Some(b)
        }
        _ => None,
    };
    bar.set_position(0);
    bar.set_message("starting and connecting");
    let connect_started_unix_ms = chrono::Utc::now().timestamp_millis();
    let rss_before = args.server_pid.and_then(rss_mib);
    let connect_started = Instant::now();
    let fleet = SimFleet::new();
    let mut agents: Vec<SimCabinet> = Vec::with_capacity(cabinets);
    for (i, config) in configs.iter().enumerate() {
        if scenario.connect_per_s > 0.0 {
            let due = connect_started + Duration::from_secs_f64(i as f64 / scenario.connect_per_s);
            tokio::time::sleep_until(due.into()).await;
        }
        let with_camera = parcels_of(i).into_iter().any(|n| scenario.role(i, n) == Role::Face);
        agents.push(fleet.start(config.clone(), with_camera, scenario.loses_power(i)).await?);
        bar.inc(1);
    }

    // One sample a second, until the run ends.
    let picked = Rc::new(Cell::new(0usize));
    let assigned_now: Rc<RefCell<Vec<f64>>> = Rc::default();
    let timeline: Rc<RefCell<Vec<Sample>>> = Rc::default();
    let sampler = {
        let handles = agents.clone();
        let (picked, assigned_now, timeline) = (picked.clone(), assigned_now.clone(), timeline.clone());
        let health = format!("{}/healthz", api.base);
        // A fresh connection for every probe (as a load balancer's health check): a
        // pooled one could be the one the server is just closing, a failure of the probe's.
        let probe = awc::Client::builder()
            .timeout(Duration::from_secs(1))
            .connector(awc::Connector::new().conn_keep_alive(Duration::from_millis(500)))
            .finish();
        let pid = args.server_pid;
        actix_rt::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let asked = Instant::now();
                let (healthz_ms, healthz_error) = match probe.get(&health).send().await {
                    Ok(r) if r.status().is_success() => (Some(asked.elapsed().as_secs_f64() * 1000.0), None),
                    Ok(r) => (None, Some(format!("status {}", r.status()))),
                    Err(e) => (None, Some(e.to_string())),
                };
                let (mut connected, mut depth) = (0, 0u64);
                for cabinet in &handles {
                    connected += usize::from(cabinet.connected().await);
                    depth += cabinet.send(GetStatus).await.map_or(0, |s| u64::from(s.journal_depth));
                }
                timeline.borrow_mut().push(Sample {
                    t_s: started.elapsed().as_secs_f64(),
                    connected,
                    journal_depth: depth,
                    picked_up: picked.get(),
                    assignment_ms: std::mem::take(&mut *assigned_now.borrow_mut()),
                    healthz_ms,
                    healthz_error,
                    server_rss_mib: pid.and_then(rss_mib),
                });
            }
        })
    };

    bar.set_position(0);
    bar.set_message("connecting");
    let connected = Cell::new(0usize);
    let all = until_every(deadline, SWEEP_EVERY, || async {
        let n = connected_count(&agents).await;
        connected.set(n);
        bar.set_position(n as u64);
        n == agents.len()
    })
    .await;
    let connected = connected.get();
    let seconds_to_all_connected = connect_started.elapsed().as_secs_f64();
    let all_connected_unix_ms = chrono::Utc::now().timestamp_millis();
    let rss_connected = args.server_pid.and_then(rss_mib);
    if !all {
        bar.finish_and_clear();
        sampler.abort();
        bail!("only {connected} of {} cabinets connected before the timeout", agents.len());
    }
    // With several processes, the traffic starts once the whole fleet is online: the
    // server's memory each process read above is then that of connected cabinets only,
    // not of another process's parcels already under way (their code hashing alone
    // takes tens of MiB), and a rollout finds every cabinet subscribed.
    if let Some(b) = &barrier {
        bar.set_message("waiting for the fleet to be online");
        b.connected(deadline).await?;
    }

    // Face parcels' recipients enrol first: the server seals their template for the
    // parcel's cabinet when the parcel becomes ready.
    let face_parcels: Vec<(usize, usize, String)> = (0..agents.len())
        .flat_map(|i| parcels_of(i).into_iter().map(move |n| (i, n)))
        .filter(|(i, n)| scenario.role(*i, *n) == Role::Face)
        .map(|(i, n)| (i, n, configs[i].cabinet.clone()))
        .collect();
    bar.set_message("enrolling faces");
    let recipients = crate::face::enrol_recipients(&api, &tenant, &face_parcels).await?;

    // The rollout starts now and runs through the traffic.
    // With several simulator processes, one rollout for the whole fleet: the leading
    // process starts it (every process's cabinets are online by now), the others follow it.
    let here = agents.len();
    let rollout = match (&release, &barrier) {
        (None, _) => None,
        (Some(r), None) => {
            let ids: Vec<String> = agents.iter().map(|a| a.id().to_owned()).collect();
            Some(crate::rollout::start(&api, r, &ids, here, args.server_pid).await?)
        }
        (Some(r), Some(b)) => {
            let fleet = b.fleet()?;
            if b.leads() {
                let run = crate::rollout::start(&api, r, &fleet, here, args.server_pid).await?;
                b.share_rollout(run.id(), run.version())?;
                Some(run)
            } else {
                let (id, version) = b.rollout(deadline).await?;
                Some(crate::rollout::follow(&api, &id, &version, r, fleet.len(), here, args.server_pid).await)
            }
        }
    };
    let traffic_from = Instant::now();
    let flapper = match (&flap_proxy, &scenario.flaps) {
        (Some(f), Some(plan)) => Some(Flapper::start(f.clone(), plan, agents[cut_n..cut_n + flap_n].to_vec())),
        _ => None,
    };

    // Stock: every cabinet takes its parcels in, all at once.
    let (_, pass) = api.call("POST", &format!("/api/v1/couriers/{courier}/pass"), None).await?;
    let pass = pass["pass"].as_str().context("no courier pass")?.to_owned();
    bar.set_position(0);
    bar.set_length((agents.len() * parcels) as u64);
    bar.set_message("deposits");
    // Parcels are created in order (parcel n of every cabinet before parcel n + 1 of
    // any), at the scenario's rate, with a bounded number of requests in flight.
    let gate = Gate::new(args.api_concurrency, scenario.parcels_per_s);
    let stocking = agents.iter().zip(&configs).enumerate().map(|(i, (agent, config))| {
        let (api, pass, tenant, courier, bar, assigned_now, recipients, gate) =
            (&api, pass.clone(), tenant.clone(), courier.clone(), &bar, assigned_now.clone(), &recipients, &gate);
        let fleet = agents.len();
        async move {
            let mut out = Flow::default();
            for n in 0..parcels {
                let recipient = recipients.get(&(i, n)).copied();
                let create = gate.turn(n * fleet + i);
                let made =
                    stock(api, agent, &config.cabinet, &tenant, &courier, &pass, n, recipient, create, deadline).await;
                if let Some(s) = record_stock(&mut out, made, &config.cabinet, &assigned_now) {
                    out.stocked.push(s);
                }
                bar.inc(1);
            }
            out
        }
    });
    // A timed day plays each cabinet's schedule instead; its flows come out with every
    // pickup done, the no-shows left for after the day, as in the phase mode.
    let mut day_seen = None;
    let mut flows: Vec<Flow> = match &scenario.day {
        Some(day) => {
            let traffic = DayTraffic {
                api: &api,
                agents: &agents,
                configs: &configs,
                tenant: &tenant,
                courier: &courier,
                pass: &pass,
                recipients: &recipients,
                bar: &bar,
                assigned_now: &assigned_now,
                picked: &picked,
                scenario: &scenario,
                deadline,
                api_concurrency: args.api_concurrency,
            };
            let (flows, seen) = day_traffic(&traffic, day, &schedules).await;
            day_seen = Some(seen);
            flows
        }
        None => futures_util::future::join_all(stocking).await,
    };

    // The partition: cut, then the cut cabinets hand parcels out offline.
    let cut_at = Instant::now();
    if let Some(p) = &proxy {
        p.cut();
        let cut_off =
            until_every(deadline, SWEEP_EVERY, || async { connected_count(&agents[..cut_n]).await == 0 }).await;
        if !cut_off {
            flows[0].errors.push("partition: the cut cabinets still said they were connected".into());
        }
    }

    bar.set_position(0);
    bar.set_message("pickups");
    let pickups = agents.iter().zip(flows.iter_mut()).enumerate().map(|(i, (sim, flow))| {
        let (bar, picked, scenario) = (&bar, picked.clone(), &scenario);
        async move {
            let stocked = std::mem::take(&mut flow.stocked);
            for (n, s) in stocked.into_iter().enumerate() {
                hand_out(sim, s, scenario, (i, n), flow, &picked, deadline).await;
                bar.inc(1);
            }
            // The recipients who never came turn up after their window, code in hand.
            if let Err(e) = crate::faults::codes_after_expiry(sim, &mut flow.faults, deadline).await {
                flow.errors.push(format!("{}: no-show: {e:#}", sim.id()));
            }
            if scenario.loses_power(i) {
                match crate::faults::power_loss(sim, scenario.power_loss_s, &mut flow.faults, deadline).await {
                    Ok(()) => flow.restarted = true,
                    Err(e) => flow.errors.push(format!("{}: power loss: {e:#}", sim.id())),
                }
            }
        }
    });
    futures_util::future::join_all(pickups).await;
    bar.finish_and_clear();
    let traffic = Some((traffic_from, Instant::now()));
    // The flapping stops with the traffic; the journals' drain is checked with everyone's.
    let flaps = flapper.map(|f| f.stop(flap_n));

    let partition = match &proxy {
        Some(p) => {
            let seconds = scenario.partition.as_ref().map_or(0.0, |p| p.seconds);
            tokio::time::sleep_until((cut_at + Duration::from_secs_f64(seconds)).into()).await;
            let depth = journal_depth(&agents[..cut_n]).await;
            let pickups_while_cut = flows[..cut_n].iter().map(|f| f.pickups.values().sum::<usize>()).sum();
            let seconds_cut = cut_at.elapsed().as_secs_f64();
            p.heal();
            let healed = Instant::now();
            if !until_every(deadline, SWEEP_EVERY, || async { journal_depth(&agents[..cut_n]).await == 0 }).await {
                flows[0].errors.push("partition: the cut cabinets' journals did not drain before the timeout".into());
            }
            Some(PartitionReport {
                cabinets: cut_n,
                seconds_cut,
                pickups_while_cut,
                journal_depth_at_heal: depth,
                seconds_to_drain: healed.elapsed().as_secs_f64(),
            })
        }
        None => None,
    };

    // The no-shows: the courier collects what expired, once the server says so.
    let collecting = agents.iter().zip(flows.iter_mut()).map(|(sim, flow)| {
        let pass = &pass;
        async move {
            let before = flow.faults.collected;
            let done = crate::faults::collect_no_shows(sim, pass, &mut flow.faults, deadline).await;
            flow.events += flow.faults.collected - before;
            if let Err(e) = done {
                flow.errors.push(format!("{}: no-show: {e:#}", sim.id()));
            }
        }
    });
    futures_util::future::join_all(collecting).await;
    let collected: Vec<ParcelId> = flows.iter().flat_map(|f| f.faults.no_shows_done.iter().copied()).collect();
    let returned_on_server = crate::faults::returned_on_server(&api, &collected, deadline).await;

    let rollout = match rollout {
        Some(r) => Some(r.finish(&api, &agents, traffic, deadline).await),
        None => None,
    };

    // Every event acked (journals empty) and stored exactly once.
    let acked = until_every(deadline, SWEEP_EVERY, || async { journal_depth(&agents).await == 0 }).await;
    let (mut stored, mut duplicated, mut alarms_stored) = (0, 0, 0);
    let (mut per_cabinet, mut fault_alarms_stored, mut clock_error_s) = (Vec::new(), BTreeMap::new(), 0.0f64);
    for (i, c) in configs.iter().enumerate() {
        let (_, events) = api.call("GET", &format!("/api/v1/cabinets/{}/events?limit=500", c.cabinet), None).await?;
        let events = events.as_array().cloned().unwrap_or_default();
        let mut ids = HashSet::new();
        // A drifting cabinet's timestamps are judged where nothing else delays its events.
        let judge_clock = c.sim_clock_offset_s != 0 && i >= cut_n + flap_n && !flows[i].restarted;
        let mut here = crate::faults::Stored { made: flows[i].events, ..Default::default() };
        for e in &events {
            let kind = e["kind"].as_str().unwrap_or_default();
            let alarm = crate::faults::counted_alarm(e);
            if matches!(kind, "deposit" | "pickup" | "collected") || alarm.is_some() {
                if ids.insert(e["id"].as_str().unwrap_or_default().to_owned()) {
                    here.stored += 1;
                    match alarm {
                        Some("door_left_open") => alarms_stored += 1,
                        Some(code) => *fault_alarms_stored.entry(code.to_owned()).or_insert(0) += 1,
                        None => {}
                    }
                } else {
                    here.duplicated += 1;
                }
                if judge_clock && let Some(err) = crate::faults::event_clock_error_s(e) {
                    clock_error_s = clock_error_s.max(err);
                }
            }
        }
        stored += here.stored;
        duplicated += here.duplicated;
        per_cabinet.push(here);
    }
    sampler.abort();
    let sections = crate::faults::Sections::build(&crate::faults::Observed {
        tallies: flows.iter().map(|f| &f.faults).collect(),
        stored: per_cabinet,
        fault_alarms_stored,
        returned_on_server,
        offsets: configs.iter().map(|c| c.sim_clock_offset_s).collect(),
        pickups: flows.iter().map(|f| f.pickups.values().sum()).collect(),
        max_event_clock_error_s: clock_error_s,
    });
    let made: usize = flows.iter().map(|f| f.events).sum();
    let mut errors: Vec<String> = flows.iter().flat_map(|f| f.errors.iter().cloned()).collect();
    if !acked {
        errors.push("some journals were not empty before the timeout".into());
    }
    errors.extend(rollout.iter().flat_map(RolloutReport::errors));
    let mut errors_by_kind = BTreeMap::new();
    for e in &errors {
        let after_cabinet = e.split_once(": ").map_or(e.as_str(), |(_, rest)| rest);
        let kind = after_cabinet.split([':', ' ']).take(3).collect::<Vec<_>>().join(" ");
        *errors_by_kind.entry(kind).or_insert(0) += 1;
    }
    let mut pickups = BTreeMap::new();
    for f in &flows {
        for (k, v) in &f.pickups {
            *pickups.entry(k.clone()).or_insert(0) += v;
        }
    }
    let timeline = timeline.borrow().clone();
    let healthz_failures = timeline.iter().filter(|s| s.healthz_ms.is_none()).count();
    let healthz_max_ms = timeline.iter().filter_map(|s| s.healthz_ms).fold(0.0, f64::max);
    let server_kib_per_cabinet = match (rss_before, rss_connected) {
        (Some(b), Some(c)) if connected > 0 => Some((c - b) * 1024.0 / connected as f64),
        _ => None,
    };
    Ok(FleetReport {
        scenario: scenario.name.clone(),
        cabinets: agents.len(),
        connected,
        seconds_to_all_connected,
        connect_started_unix_ms,
        all_connected_unix_ms,
        parcels_picked_up: picked.get(),
        pickups_refused: errors.iter().filter(|e| e.contains("pickup refused")).count(),
        pickups,
        wrong_codes_refused: flows.iter().map(|f| f.wrong_refused).sum(),
        events_made: made,
        events_acked: if acked { made } else { 0 },
        events_lost: made.saturating_sub(stored),
        events_duplicated: duplicated,
        door_alarms_made: flows.iter().map(|f| f.door_alarms).sum(),
        door_alarms_stored: alarms_stored,
        assignment_to_cabinet: Latency::of(flows.iter().flat_map(|f| f.assigned.iter().copied()).collect()),
        code_to_cabinet: Latency::of(flows.iter().flat_map(|f| f.coded.iter().copied()).collect()),
        template_to_cabinet: Latency::of(flows.iter().flat_map(|f| f.templated.iter().copied()).collect()),
        partition,
        flaps,
        day: scenario
            .day
            .as_ref()
            .zip(day_seen.as_ref())
            .map(|(d, seen)| DayReport::build(d, &schedules, seen, scenario.no_show_share)),
        rollout,
        face: sections.face,
        no_show: sections.no_show,
        door_faults: sections.door_faults,
        power_loss: sections.power_loss,
        clock_drift: sections.clock_drift,
        errors_by_kind,
        errors,
        healthz_failures,
        healthz_max_ms,
        server_rss_mib_before: rss_before,
        server_rss_mib_connected: rss_connected,
        server_kib_per_cabinet,
        timeline,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn connected_count(agents: &[SimCabinet]) -> usize {
    let mut n = 0;
    for a in agents {
        n += usize::from(a.connected().await);
    }
    n
}

async fn journal_depth(agents: &[SimCabinet]) -> u64 {
    let mut depth = 0;
    for a in agents {
        // An agent that does not answer counts as not drained.
        depth += a.send(GetStatus).await.map_or(1, |s| u64::from(s.journal_depth));
    }
    depth
}

#[derive(Debug, Default)]
struct Flow {
    assigned: Vec<f64>,
    coded: Vec<f64>,
    templated: Vec<f64>,
    stocked: Vec<Stocked>,
    pickups: BTreeMap<String, usize>,
    wrong_refused: usize,
    door_alarms: usize,
    events: usize,
    /// Parcels deposited, their codes at the cabinet.
    deposited: usize,
    /// A timed day: how late each deposit and pickup started against its due time (real s).
    late_s: Vec<f64>,
    /// A timed day: arrivals refused because parcels not picked up filled the cabinet.
    refused_full: usize,
    errors: Vec<String>,
    /// Face, door-fault, no-show and power-loss flows.
    faults: Tally,
    /// The cabinet lost power and runs as new actors.
    restarted: bool,
}

/// A parcel in its compartment, its code at the cabinet.
#[derive(Debug)]
pub struct Stocked {
    pub cabinet: String,
    pub parcel: ParcelId,
    pub code: String,
    pub compartment: CompartmentId,
    assigned_ms: f64,
    coded_ms: f64,
    /// Face parcels: door closed → sealed template at the cabinet.
    template_ms: Option<f64>,
}

/// One parcel into one cabinet: created, at the cabinet, deposited, its code ready.
#[allow(clippy::too_many_arguments)]
async fn stock(
    api: &Api,
    agent: &SimCabinet,
    cabinet: &str,
    tenant: &str,
    courier: &str,
    pass: &str,
    n: usize,
    recipient: Option<uuid::Uuid>,
    create: impl Future<Output = tokio::sync::SemaphorePermit<'_>>,
    deadline: Instant,
) -> anyhow::Result<Stocked> {
    let reference = format!("{cabinet}-{n}-{}", uuid::Uuid::new_v4().simple());
    let mut body =
        json!({"tenant": tenant, "reference": reference, "courier": courier, "size": "s", "cabinet": cabinet});
    if let Some(r) = recipient {
        body["recipient"] = json!(r);
    }
    let permit = create.await;
    let t0 = Instant::now();
    let mut answer = api.call("POST", "/api/v1/parcels", Some(body.clone())).await;
    // A server whose database is busy says so (503 "busy", nothing created); a courier's
    // app tries again a moment later. The creation permit is kept through the waits on
    // purpose: it bounds the creations in flight, retries included.
    for _ in 0..5 {
        match &answer {
            Ok((503, e)) if e["error"]["code"] == fleet_server::api::error::BUSY && Instant::now() < deadline => {
                tracing::warn!(%cabinet, "the server's database is busy; creating the parcel again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                answer = api.call("POST", "/api/v1/parcels", Some(body.clone())).await;
            }
            _ => break,
        }
    }
    drop(permit);
    let (status, created) = answer?;
    if status != 201 {
        bail!("creating a parcel: {status} {created}");
    }
    let parcel = ParcelId(created["id"].as_str().context("parcel id")?.parse()?);
    let code = created["pickup_code"].as_str().context("pickup code")?.to_owned();
    let has = |stage: Option<ParcelStage>| {
        move |d: &DesiredState| {
            d.parcels.as_ref().is_some_and(|s| {
                s.parcels
                    .iter()
                    .any(|p| p.parcel == parcel && stage.is_none_or(|st| p.stage == st && p.code_hash.is_some()))
            })
        }
    };
    if !agent.until_desired(deadline, has(None)).await {
        bail!("parcel {parcel} never reached the cabinet");
    }
    let assigned_ms = t0.elapsed().as_secs_f64() * 1000.0;
    // A cabinet that is updating tells the courier to try again in a moment.
    let compartment = agent
        .send_patiently(
            || CourierDeposit { pass: pass.to_owned(), parcel },
            |r| r.as_ref().is_err_and(|e| e.contains("updating")),
            deadline,
        )
        .await?
        .map_err(|e| anyhow::anyhow!("deposit refused: {e}"))?;
    for open in [true, false] {
        agent.door(&compartment, open).await?;
    }
    let t1 = Instant::now();
    // The code and (for a face parcel) the sealed template travel separately: both watched.
    let coded = async {
        let ok = agent.until_desired(deadline, has(Some(ParcelStage::Ready))).await;
        (ok, t1.elapsed().as_secs_f64() * 1000.0)
    };
    let templated = async {
        if recipient.is_none() {
            return (true, None);
        }
        let ok = agent
            .until_desired(deadline, |d| {
                d.templates.as_ref().is_some_and(|t| t.add.iter().any(|s| s.binding.parcel == parcel))
            })
            .await;
        (ok, Some(t1.elapsed().as_secs_f64() * 1000.0))
    };
    let ((code_ok, coded_ms), (template_ok, template_ms)) = futures_util::future::join(coded, templated).await;
    if !code_ok {
        return Err(anyhow::Error::new(Made(1)).context(format!("the code for {parcel} never reached the cabinet")));
    }
    if !template_ok {
        return Err(anyhow::Error::new(Made(1)).context(format!("the template for {parcel} never reached the cabinet")));
    }
    Ok(Stocked { cabinet: cabinet.to_owned(), parcel, code, compartment, assigned_ms, coded_ms, template_ms })
}

/// The recipient at the keypad: maybe a wrong code first, then the right one; the door
/// opens, and is closed at once or after `left_open_s` plus a margin (the alarm's delay).
async fn pick_up(
    agent: &SimCabinet,
    s: &Stocked,
    wrong_first: bool,
    left_open_s: Option<u64>,
    deadline: Instant,
) -> anyhow::Result<()> {
    // A keypad held by an update is unavailable for a moment: the recipient types again.
    let unavailable = |o: &CodeOutcome| matches!(o, CodeOutcome::Unavailable);
    if wrong_first {
        let wrong: String = s.code.chars().map(|c| if c == '9' { '0' } else { char::from(c as u8 + 1) }).collect();
        match agent.send_patiently(|| EnterCode(wrong.clone()), unavailable, deadline).await? {
            CodeOutcome::Rejected { .. } => {}
            other => bail!("wrong code not refused: {other:?}"),
        }
    }
    match agent.send_patiently(|| EnterCode(s.code.clone()), unavailable, deadline).await? {
        CodeOutcome::Accepted(p) if p.parcel == s.parcel => {}
        other => bail!("pickup refused: {other:?}"),
    }
    agent.door(&s.compartment, true).await?;
    if let Some(after) = left_open_s {
        // The tick that raises the alarm runs every second.
        tokio::time::sleep(Duration::from_secs(after) + Duration::from_millis(1500)).await;
    }
    agent.door(&s.compartment, false).await?;
    Ok(())
}

/// Books one [`stock`] into `out`: its latencies and its event, or its error with the
/// events it had made before it failed.
fn record_stock(
    out: &mut Flow,
    made: anyhow::Result<Stocked>,
    cabinet: &str,
    assigned_now: &RefCell<Vec<f64>>,
) -> Option<Stocked> {
    match made {
        Ok(s) => {
            out.assigned.push(s.assigned_ms);
            assigned_now.borrow_mut().push(s.assigned_ms);
            out.coded.push(s.coded_ms);
            out.templated.extend(s.template_ms);
            out.events += 1;
            out.deposited += 1;
            Some(s)
        }
        Err(e) => {
            out.errors.push(format!("{cabinet}: {e:#}"));
            out.events += e.downcast_ref::<Made>().map_or(0, |m| m.0);
            None
        }
    }
}

/// Parcel `n` of cabinet `i` meets its recipient as its role says: by code (maybe
/// mistyped first, maybe the door left open), by face, at a faulty door; a no-show's
/// parcel waits for the courier ([`crate::faults::codes_after_expiry`] and
/// [`crate::faults::collect_no_shows`]). Whether the recipient took the parcel.
async fn hand_out(
    sim: &SimCabinet,
    s: Stocked,
    scenario: &Scenario,
    (i, n): (usize, usize),
    flow: &mut Flow,
    picked: &Cell<usize>,
    deadline: Instant,
) -> bool {
    let outcome = match scenario.role(i, n) {
        Role::NoShow => {
            flow.faults.no_shows.push(s);
            return false;
        }
        Role::Face => crate::face::pick_up(sim, &s, scenario, (i, n), &mut flow.faults).await.map(|m| (m, 0)),
        Role::DoorFault(k) => {
            let kind = scenario.door_fault_kinds.get(k).map_or("jammed", String::as_str);
            crate::faults::pick_up_at_faulty_door(sim, &s, kind, scenario.door_fault_repair_s, &mut flow.faults).await
        }
        Role::Code => {
            let wrong = Scenario::picks(scenario.wrong_code_share, i, n);
            let door = Scenario::picks(scenario.door_left_open_share, i, n);
            pick_up(sim, &s, wrong, door.then_some(scenario.door_left_open_s), deadline).await.map(|()| {
                flow.door_alarms += usize::from(door);
                flow.wrong_refused += usize::from(wrong);
                (if wrong { "code_after_wrong_code" } else { "code" }, usize::from(door))
            })
        }
    };
    match outcome {
        Ok((method, alarms)) => {
            flow.events += 1 + alarms;
            *flow.pickups.entry(method.into()).or_default() += 1;
            picked.set(picked.get() + 1);
            true
        }
        Err(e) => {
            flow.errors.push(format!("{}: {e:#}", s.cabinet));
            false
        }
    }
}

/// What a timed day's cabinets share.
struct DayTraffic<'a> {
    api: &'a Api,
    agents: &'a [SimCabinet],
    configs: &'a [AgentConfig],
    tenant: &'a str,
    courier: &'a str,
    pass: &'a str,
    recipients: &'a HashMap<(usize, usize), uuid::Uuid>,
    bar: &'a indicatif::ProgressBar,
    assigned_now: &'a RefCell<Vec<f64>>,
    picked: &'a Cell<usize>,
    scenario: &'a Scenario,
    deadline: Instant,
    api_concurrency: usize,
}

/// A timed day: every cabinet plays its schedule in time order, one item at a time (one
/// courier or recipient at its keypad), each not before it is due — the traffic's start
/// plus its simulated time over the day's speed — and records how late it started.
/// A deposit waits until the server shows a compartment free (the pickup that freed it
/// stored), then goes as in the phase mode ([`stock`]); a pickup by its parcel's role
/// ([`hand_out`]). A pickup that failed leaves its parcel in its compartment, which the
/// schedule counted free: an arrival that finds the cabinet full for that reason — every
/// compartment taken by a parcel not picked up — is refused then, and counted. The first
/// parcel made ready tells the server's pickup window.
async fn day_traffic(t: &DayTraffic<'_>, day: &Day, schedules: &[Schedule]) -> (Vec<Flow>, DayObserved) {
    let gate = Gate::new(t.api_concurrency, 0.0);
    let (window, probing) = (Cell::new(None), Cell::new(false));
    t.bar.set_position(0);
    t.bar.set_length(schedules.iter().map(|s| s.items.len()).sum::<usize>() as u64);
    t.bar.set_message("simulated day");
    let start = Instant::now();
    let cabinets = t.agents.iter().zip(t.configs).zip(schedules).enumerate().map(|(i, ((agent, config), schedule))| {
        let (gate, window, probing) = (&gate, &window, &probing);
        async move {
            let mut out = Flow::default();
            let mut held: HashMap<usize, Stocked> = HashMap::new();
            // Parcels picked up here: the server may not have stored their pickups yet.
            let mut gone: HashSet<ParcelId> = HashSet::new();
            let compartments = config.compartments.len();
            for item in &schedule.items {
                let due = start + Duration::from_secs_f64(item.at_s / day.speed);
                tokio::time::sleep_until(due.into()).await;
                let late_s = Instant::now().saturating_duration_since(due).as_secs_f64();
                let n = item.parcel;
                match item.step {
                    Step::Deposit => {
                        out.late_s.push(late_s);
                        let full = Cell::new(false);
                        let free = agent
                            .until_desired(t.deadline, |d| {
                                let taken = d.parcels.as_ref().map_or(&[][..], |p| &p.parcels[..]);
                                full.set(taken.iter().filter(|p| !gone.contains(&p.parcel)).count() >= compartments);
                                full.get() || taken.len() < compartments
                            })
                            .await;
                        if full.get() {
                            out.refused_full += 1;
                        } else if !free {
                            out.errors.push(format!(
                                "{}: no compartment free on the server for parcel {n} before the timeout",
                                config.cabinet
                            ));
                        } else {
                            let recipient = t.recipients.get(&(i, n)).copied();
                            let made = stock(
                                t.api,
                                agent,
                                &config.cabinet,
                                t.tenant,
                                t.courier,
                                t.pass,
                                n,
                                recipient,
                                gate.turn(0),
                                t.deadline,
                            )
                            .await;
                            if let Some(s) = record_stock(&mut out, made, &config.cabinet, t.assigned_now) {
                                if window.get().is_none() && !probing.replace(true) {
                                    window.set(pickup_window_s(t.api, s.parcel).await);
                                    probing.set(false);
                                }
                                if t.scenario.role(i, n) == Role::NoShow {
                                    out.faults.no_shows.push(s);
                                } else {
                                    held.insert(n, s);
                                }
                            }
                        }
                    }
                    // A parcel whose deposit failed has its error already.
                    Step::Pickup => {
                        if let Some(s) = held.remove(&n) {
                            out.late_s.push(late_s);
                            let parcel = s.parcel;
                            if hand_out(agent, s, t.scenario, (i, n), &mut out, t.picked, t.deadline).await {
                                gone.insert(parcel);
                            }
                        }
                    }
                }
                t.bar.inc(1);
            }
            out
        }
    });
    let flows: Vec<Flow> = futures_util::future::join_all(cabinets).await;
    let seen = DayObserved {
        deposited: flows.iter().map(|f| f.deposited).sum(),
        refused_full: flows.iter().map(|f| f.refused_full).sum(),
        picked_up: flows.iter().map(|f| f.pickups.values().sum::<usize>()).sum(),
        lateness_s: flows.iter().flat_map(|f| f.late_s.iter().copied()).collect(),
        real_seconds: start.elapsed().as_secs_f64(),
        pickup_window_s: window.get(),
    };
    (flows, seen)
}

/// The server's pickup window, from a parcel it has just made ready: its deadline minus
/// the moment it became ready, s.
async fn pickup_window_s(api: &Api, parcel: ParcelId) -> Option<f64> {
    let (status, p) = api.call("GET", &format!("/api/v1/parcels/{parcel}"), None).await.ok()?;
    if status != 200 || p["state"] != "ready" {
        return None;
    }
    let at = |key: &str| chrono::DateTime::parse_from_rfc3339(p[key].as_str()?).ok();
    Some((at("deadline")? - at("updated_at")?).num_milliseconds() as f64 / 1000.0)
}

/// Paces the API calls of a run: at most `concurrency` in flight, and call `k` (fleet-wide
/// order) not before `k / rate` seconds after the gate was made.
struct Gate {
    slots: tokio::sync::Semaphore,
    rate: f64,
    started: Instant,
}

impl Gate {
    fn new(concurrency: usize, rate: f64) -> Self {
        Self { slots: tokio::sync::Semaphore::new(concurrency.max(1)), rate, started: Instant::now() }
    }

    /// Waits for call `k`'s time, then for a free slot; the permit frees it.
    async fn turn(&self, k: usize) -> tokio::sync::SemaphorePermit<'_> {
        if self.rate > 0.0 {
            tokio::time::sleep_until((self.started + Duration::from_secs_f64(k as f64 / self.rate)).into()).await;
        }
        self.slots.acquire().await.expect("the gate's semaphore stays open")
    }
}

/// How many events a failed flow had made before it failed.
#[derive(Debug)]
struct Made(usize);

impl std::fmt::Display for Made {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} events made", self.0)
    }
}

impl std::error::Error for Made {}
