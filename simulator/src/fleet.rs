//! `simulator run`: N virtual cabinets in one process against a real fleet-server. Each
//! is the edge agent itself (`edge_agent::start_parts`: the same journal, door, keypad,
//! courier and link code as on a cabinet) with simulated hardware and no camera, its own
//! MQTT connection, identity and keys. The simulator registers them (or reuses those it
//! registered before), connects them, drives parcels through them — assignment, courier
//! deposit, code pickup — and reports what arrived where, and how fast.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use edge_agent::actors::cabinet::{CourierDeposit, DoorSensed, EnterCode, GetDesired, GetStatus};
use edge_agent::actors::link::GetLinkState;
use edge_agent::config::{AgentConfig, CompartmentConfig, MqttSettings};
use edge_agent::domain::keypad::CodeOutcome;
use lockerfleet_shared::ParcelId;
use lockerfleet_shared::envelope::{CompartmentSize, ParcelStage};
use serde::Serialize;
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
    /// How long to wait for everything to arrive, seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
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
    fn of(mut ms: Vec<f64>) -> Self {
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
    pub cabinets: usize,
    pub connected: usize,
    pub seconds_to_all_connected: f64,
    pub parcels_picked_up: usize,
    pub pickups_refused: usize,
    /// Journal events the cabinets made (deposits and pickups).
    pub events_made: usize,
    /// Events the server acknowledged (the journals are empty of them).
    pub events_acked: usize,
    /// Made but not stored by the server; stored twice. Both must be zero.
    pub events_lost: usize,
    pub events_duplicated: usize,
    /// Parcel created → the cabinet holds it in its desired state.
    pub assignment_to_cabinet: Latency,
    /// Door closed after the deposit → the pickup code's hash is at the cabinet.
    pub code_to_cabinet: Latency,
    pub errors: Vec<String>,
    pub seconds: f64,
}

struct Api {
    http: awc::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
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

fn agent_config(args: &FleetArgs, i: usize) -> AgentConfig {
    let id = format!("{}-{i:05}", args.prefix);
    AgentConfig {
        data_dir: args.data.join(&id),
        cabinet: id,
        mqtt: MqttSettings { host: args.mqtt_host.clone(), port: args.mqtt_port, ..Default::default() },
        camera: "none".into(),
        resend_s: 5,
        compartments: ["s", "m", "l", "xl"]
            .iter()
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

async fn until<F, Fut>(deadline: Instant, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    while !check().await {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    true
}

/// Runs the fleet: register, connect, traffic, report. Call inside an actix system.
pub async fn run(args: &FleetArgs) -> anyhow::Result<FleetReport> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_s);
    let api = Api {
        http: awc::Client::builder().timeout(Duration::from_secs(30)).finish(),
        base: args.server.trim_end_matches('/').to_owned(),
        token: args.token.clone(),
    };
    let (tenant, courier) = (args.prefix.clone(), format!("{}-courier", args.prefix));
    api.ensure("/api/v1/tenants", json!({"id": tenant, "name": "Simulated fleet"})).await?;
    api.ensure("/api/v1/couriers", json!({"id": courier, "tenant": tenant, "name": "Simulated courier"})).await?;

    // Register and start every cabinet.
    let bar = indicatif::ProgressBar::new(args.cabinets as u64);
    bar.set_message("registering");
    let mut agents = Vec::with_capacity(args.cabinets);
    let mut configs = Vec::with_capacity(args.cabinets);
    for i in 0..args.cabinets {
        let mut config = agent_config(args, i);
        config.validate().context("cabinet configuration")?;
        let mut registration = edge_agent::provision(&config)?;
        registration["tenant"] = json!(tenant);
        let password = api.cabinet_login(&config.cabinet, registration).await?;
        let password_file = config.data_dir.join("mqtt.password");
        std::fs::write(&password_file, password).with_context(|| format!("writing {}", password_file.display()))?;
        config.mqtt.password_file = Some(password_file);
        let restart: edge_agent::ota::Restart =
            Box::new(|| tracing::warn!("a simulated cabinet cannot restart into another slot yet"));
        let agent = edge_agent::start_parts(&config, Box::new(edge_agent::hw::SimLock::default()), None, restart)?;
        agents.push(agent);
        configs.push(config);
        bar.inc(1);
    }
    let connect_started = Instant::now();
    bar.set_position(0);
    bar.set_message("connecting");
    let connected = std::cell::Cell::new(0usize);
    let all = until(deadline, || {
        let (agents, bar, connected) = (&agents, &bar, &connected);
        async move {
            let mut n = 0;
            for a in agents {
                if a.link.send(GetLinkState).await.is_ok_and(|s| s.connected) {
                    n += 1;
                }
            }
            connected.set(n);
            bar.set_position(n as u64);
            n == agents.len()
        }
    })
    .await;
    let connected = connected.get();
    let seconds_to_all_connected = connect_started.elapsed().as_secs_f64();
    if !all {
        bar.finish_and_clear();
        bail!("only {connected} of {} cabinets connected before the timeout", agents.len());
    }

    // Traffic: every cabinet takes its parcels in and hands them out, all at once.
    let (_, pass) = api.call("POST", &format!("/api/v1/couriers/{courier}/pass"), None).await?;
    let pass = pass["pass"].as_str().context("no courier pass")?.to_owned();
    bar.set_position(0);
    bar.set_length((agents.len() * args.parcels) as u64);
    bar.set_message("parcels");
    let flows = agents.iter().zip(&configs).map(|(agent, config)| {
        let (api, pass, tenant, courier, bar) = (&api, pass.clone(), tenant.clone(), courier.clone(), &bar);
        async move {
            let mut out = Flow::default();
            for p in 0..args.parcels {
                match one_parcel(api, agent, &config.cabinet, &tenant, &courier, &pass, p, deadline).await {
                    Ok((assigned, coded)) => {
                        out.assigned.push(assigned);
                        out.coded.push(coded);
                        out.picked_up += 1;
                        out.events += 2;
                    }
                    Err(e) => {
                        out.errors.push(format!("{}: {e:#}", config.cabinet));
                        out.events += e.downcast_ref::<Made>().map_or(0, |m| m.0);
                    }
                }
                bar.inc(1);
            }
            out
        }
    });
    let flows: Vec<Flow> = futures_util::future::join_all(flows).await;
    bar.finish_and_clear();

    // Every event acked (journals empty) and stored exactly once.
    let acked = until(deadline, || async {
        for a in &agents {
            if a.cabinet.send(GetStatus).await.map(|s| s.journal_depth).unwrap_or(1) != 0 {
                return false;
            }
        }
        true
    })
    .await;
    let mut stored = 0;
    let mut duplicated = 0;
    for c in &configs {
        let (_, events) = api.call("GET", &format!("/api/v1/cabinets/{}/events?limit=500", c.cabinet), None).await?;
        let events = events.as_array().cloned().unwrap_or_default();
        let mut ids = HashSet::new();
        for e in &events {
            if matches!(e["kind"].as_str(), Some("deposit" | "pickup")) {
                if ids.insert(e["id"].as_str().unwrap_or_default().to_owned()) {
                    stored += 1;
                } else {
                    duplicated += 1;
                }
            }
        }
    }
    let made: usize = flows.iter().map(|f| f.events).sum();
    let mut errors: Vec<String> = flows.iter().flat_map(|f| f.errors.iter().cloned()).collect();
    if !acked {
        errors.push("some journals were not empty before the timeout".into());
    }
    Ok(FleetReport {
        cabinets: agents.len(),
        connected,
        seconds_to_all_connected,
        parcels_picked_up: flows.iter().map(|f| f.picked_up).sum(),
        pickups_refused: errors.iter().filter(|e| e.contains("pickup refused")).count(),
        events_made: made,
        events_acked: if acked { made } else { 0 },
        events_lost: made.saturating_sub(stored),
        events_duplicated: duplicated,
        assignment_to_cabinet: Latency::of(flows.iter().flat_map(|f| f.assigned.iter().copied()).collect()),
        code_to_cabinet: Latency::of(flows.iter().flat_map(|f| f.coded.iter().copied()).collect()),
        errors,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[derive(Debug, Default)]
struct Flow {
    assigned: Vec<f64>,
    coded: Vec<f64>,
    picked_up: usize,
    events: usize,
    errors: Vec<String>,
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

/// One parcel through one cabinet: returns the two latencies in milliseconds.
#[allow(clippy::too_many_arguments)]
async fn one_parcel(
    api: &Api,
    agent: &edge_agent::Agent,
    cabinet: &str,
    tenant: &str,
    courier: &str,
    pass: &str,
    n: usize,
    deadline: Instant,
) -> anyhow::Result<(f64, f64)> {
    let t0 = Instant::now();
    let reference = format!("{cabinet}-{n}-{}", uuid::Uuid::new_v4().simple());
    let body = json!({"tenant": tenant, "reference": reference, "courier": courier, "size": "s", "cabinet": cabinet});
    let (status, created) = api.call("POST", "/api/v1/parcels", Some(body)).await?;
    if status != 201 {
        bail!("creating a parcel: {status} {created}");
    }
    let parcel = ParcelId(created["id"].as_str().context("parcel id")?.parse()?);
    let code = created["pickup_code"].as_str().context("pickup code")?.to_owned();
    let has = |stage: Option<ParcelStage>| {
        let cab = agent.cabinet.clone();
        async move {
            cab.send(GetDesired).await.ok().and_then(|d| d.parcels).is_some_and(|s| {
                s.parcels
                    .iter()
                    .any(|p| p.parcel == parcel && stage.is_none_or(|st| p.stage == st && p.code_hash.is_some()))
            })
        }
    };
    if !until(deadline, || has(None)).await {
        bail!("parcel {parcel} never reached the cabinet");
    }
    let assigned = t0.elapsed().as_secs_f64() * 1000.0;
    let compartment = agent
        .cabinet
        .send(CourierDeposit { pass: pass.to_owned(), parcel })
        .await?
        .map_err(|e| anyhow::anyhow!("deposit refused: {e}"))?;
    for open in [true, false] {
        agent.cabinet.send(DoorSensed { compartment: compartment.clone(), open }).await?;
    }
    let t1 = Instant::now();
    if !until(deadline, || has(Some(ParcelStage::Ready))).await {
        return Err(anyhow::Error::new(Made(1)).context(format!("the code for {parcel} never reached the cabinet")));
    }
    let coded = t1.elapsed().as_secs_f64() * 1000.0;
    match agent.cabinet.send(EnterCode(code)).await? {
        CodeOutcome::Accepted(p) if p.parcel == parcel => {}
        other => return Err(anyhow::Error::new(Made(1)).context(format!("pickup refused: {other:?}"))),
    }
    for open in [true, false] {
        agent.cabinet.send(DoorSensed { compartment: compartment.clone(), open }).await?;
    }
    Ok((assigned, coded))
}
