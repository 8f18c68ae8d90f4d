//! An edge agent with simulated hardware against a real fleet-server (embedded broker,
//! SQLite): assignment, courier deposit, code pickup at the right compartment, wrong
//! codes and lockout, courier confinement, and a code pickup while the server is down
//! whose event arrives once it is back.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use edge_agent::actors::cabinet::{CourierDeposit, CourierTasks, DoorSensed, EnterCode, GetDesired, WatchDesired};
use edge_agent::config::{AgentConfig, CompartmentConfig};
use edge_agent::domain::keypad::CodeOutcome;
use edge_agent::hw::SimLock;
use fleet_server::config::{BrokerMode, Config};
use lockerfleet_shared::envelope::{CompartmentSize, ParcelStage};
use lockerfleet_shared::{CompartmentId, ParcelId};
use serde_json::{Value, json};
use uuid::Uuid;

const TOKEN: &str = "lf_edge-test-admin-token-0123456789";

struct Server {
    server: fleet_server::RunningServer,
    base: String,
    http: awc::Client,
}

impl Server {
    async fn start(db: &str, broker_port: u16) -> Self {
        let mut c = Config::default();
        c.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c.database.url = db.to_owned();
        c.mqtt.mode = BrokerMode::External;
        c.mqtt.url = Some(format!("mqtt://127.0.0.1:{broker_port}"));
        c.mqtt.probe_interval_s = 1;
        c.presence.flush_interval_ms = 100;
        c.auth.bootstrap_token = Some(TOKEN.into());
        let server = fleet_server::start(c).await.unwrap();
        // Pooled connections are dropped well before the server's 5 s keep-alive, so a
        // request never goes out on one the server is closing (seen as Connect(Disconnected)
        // on a loaded machine).
        let http = awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .connector(awc::Connector::new().conn_keep_alive(Duration::from_secs(1)))
            .finish();
        let s = Self { base: format!("http://{}", server.http_addr), http, server };
        s.until("ready", || async { s.call("GET", "/readyz", None).await.0 == 200 }).await;
        s
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        }
        .bearer_auth(TOKEN);
        let mut res = match body {
            Some(b) => req.send_json(&b).await.unwrap(),
            None => req.send().await.unwrap(),
        };
        let bytes = res.body().await.unwrap();
        (res.status().as_u16(), serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !check().await {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn pass(&self, courier: &str) -> String {
        let (status, body) = self.call("POST", &format!("/api/v1/couriers/{courier}/pass"), None).await;
        assert_eq!(status, 200, "{body}");
        body["pass"].as_str().unwrap().to_owned()
    }

    async fn parcel_state(&self, id: ParcelId) -> String {
        self.call("GET", &format!("/api/v1/parcels/{}", id.0), None).await.1["state"].as_str().unwrap_or("").to_owned()
    }
}

fn agent_config(dir: &std::path::Path, broker_port: u16) -> AgentConfig {
    AgentConfig {
        cabinet: "cab-e1".into(),
        data_dir: dir.to_owned(),
        heartbeat_s: 1,
        resend_s: 1,
        door_left_open_s: 1,
        mqtt: edge_agent::config::MqttSettings { port: broker_port, ..Default::default() },
        compartments: vec![
            CompartmentConfig { id: "A1".into(), size: CompartmentSize::S, low: false },
            CompartmentConfig { id: "A2".into(), size: CompartmentSize::M, low: false },
        ],
        ..AgentConfig::default()
    }
}

/// Provisions the cabinet of `config`, registers it with tenant `acme`, and adds
/// courier `k-1` (Kim).
async fn register(server: &Server, config: &AgentConfig) {
    let mut registration = edge_agent::provision(config).unwrap();
    registration["tenant"] = json!("acme");
    server.call("POST", "/api/v1/tenants", Some(json!({"id": "acme", "name": "Acme"}))).await;
    let (status, body) = server.call("POST", "/api/v1/cabinets", Some(registration)).await;
    assert_eq!(status, 201, "{body}");
    server.call("POST", "/api/v1/couriers", Some(json!({"id": "k-1", "tenant": "acme", "name": "Kim"}))).await;
}

async fn wait_desired(
    agent: &edge_agent::Agent,
    what: &str,
    check: impl Fn(&edge_agent::domain::desired::DesiredState) -> bool,
) {
    // Woken by the cabinet's own change notice (`WatchDesired`), never by a timer: a
    // change the cabinet does not announce fails the test at the deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut changes = agent.cabinet.send(WatchDesired).await.unwrap();
        let d = agent.cabinet.send(GetDesired).await.unwrap();
        if check(&d) {
            return;
        }
        let changed = tokio::time::timeout_at(deadline, changes.changed()).await;
        assert!(changed.is_ok(), "the cabinet never got {what}: {d:?}");
        changed.unwrap().expect("the cabinet actor is still there");
    }
}

/// A parcel of courier `k-1` at `cab-e1`, deposited through the agent (pass, door
/// opened and closed) and ready: its id, pickup code and compartment.
async fn deposited_parcel(server: &Server, agent: &edge_agent::Agent, size: &str) -> (ParcelId, String, CompartmentId) {
    let (_, created) = server
        .call(
            "POST",
            "/api/v1/parcels",
            Some(json!({"tenant": "acme", "reference": "T", "courier": "k-1", "size": size, "cabinet": "cab-e1"})),
        )
        .await;
    let parcel = ParcelId(Uuid::parse_str(created["id"].as_str().unwrap()).unwrap());
    let code = created["pickup_code"].as_str().unwrap().to_owned();
    wait_desired(agent, "the expected parcel", |d| {
        d.parcels.as_ref().is_some_and(|s| s.parcels.iter().any(|p| p.parcel == parcel))
    })
    .await;
    let kim = server.pass("k-1").await;
    let comp = agent.cabinet.send(CourierDeposit { pass: kim, parcel }).await.unwrap().unwrap();
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: true }).await.unwrap();
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: false }).await.unwrap();
    wait_desired(agent, "the code hash", |d| {
        d.parcels.as_ref().is_some_and(|s| s.parcels.iter().any(|p| p.parcel == parcel && p.code_hash.is_some()))
    })
    .await;
    (parcel, code, comp)
}

/// A registered cabinet running against a server, with everything a test reaches for.
struct Running {
    broker: fleet_server::broker::EmbeddedBroker,
    dir: tempfile::TempDir,
    db: String,
    port: u16,
    server: Server,
    config: AgentConfig,
    lock: SimLock,
    agent: edge_agent::Agent,
}

/// A standalone broker (so the server can be stopped while the cabinet stays connected),
/// a server on a fresh SQLite file, and cabinet `cab-e1` provisioned, registered and
/// online.
async fn running() -> Running {
    running_with_clock_offset(0).await
}

/// [`running`], with the cabinet's own clock `offset_s` off (ahead when positive).
async fn running_with_clock_offset(offset_s: i64) -> Running {
    let broker_cfg =
        fleet_server::config::MqttConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..Default::default() };
    let broker = fleet_server::broker::start_embedded(&broker_cfg).unwrap();
    let port = broker.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("fleet.db").display());
    let server = Server::start(&db, port).await;
    let config = AgentConfig { sim_clock_offset_s: offset_s, ..agent_config(&dir.path().join("cabinet"), port) };
    register(&server, &config).await;
    let lock = SimLock::default();
    let agent = edge_agent::start(&config, Box::new(lock.clone())).unwrap();
    server
        .until("the cabinet is online", || async {
            server.call("GET", "/api/v1/cabinets/cab-e1", None).await.1["online"] == true
        })
        .await;
    Running { broker, dir, db, port, server, config, lock, agent }
}

#[actix_rt::test]
async fn a_parcel_goes_in_and_out_through_the_cabinet() {
    // Provision, register, run.
    let Running { broker: _broker, dir: _dir, db, port, server, config, lock, agent } = running().await;
    let key_mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(config.key_path()).unwrap().permissions());
    assert_eq!(key_mode & 0o777, 0o600, "the private key is readable by its owner only");
    server.call("POST", "/api/v1/couriers", Some(json!({"id": "k-2", "tenant": "acme", "name": "Lee"}))).await;

    // A parcel is assigned; the cabinet learns to expect it.
    let (_, created) = server
        .call(
            "POST",
            "/api/v1/parcels",
            Some(json!({"tenant": "acme", "reference": "T1", "courier": "k-1", "size": "m", "cabinet": "cab-e1"})),
        )
        .await;
    let parcel = ParcelId(Uuid::parse_str(created["id"].as_str().unwrap()).unwrap());
    let code = created["pickup_code"].as_str().unwrap().to_owned();
    assert_eq!(created["compartment"], "A2");
    wait_desired(&agent, "the expected parcel", |d| {
        d.parcels
            .as_ref()
            .is_some_and(|s| s.parcels.iter().any(|p| p.parcel == parcel && p.stage == ParcelStage::Expected))
    })
    .await;

    // Couriers log in with their pass: each sees only its own tasks, a forged pass
    // nothing, and another courier cannot open the compartment.
    let (kim, lee) = (server.pass("k-1").await, server.pass("k-2").await);
    let kims = agent.cabinet.send(CourierTasks { pass: kim.clone() }).await.unwrap().unwrap();
    assert_eq!(kims.iter().map(|p| p.parcel).collect::<Vec<_>>(), vec![parcel]);
    assert!(agent.cabinet.send(CourierTasks { pass: lee.clone() }).await.unwrap().unwrap().is_empty());
    assert!(agent.cabinet.send(CourierTasks { pass: "forged".into() }).await.unwrap().is_err());
    let other = agent.cabinet.send(CourierDeposit { pass: lee, parcel }).await.unwrap();
    assert!(other.is_err(), "{other:?}");
    assert!(lock.releases().is_empty(), "no door opened for the wrong courier");
    let comp = agent.cabinet.send(CourierDeposit { pass: kim, parcel }).await.unwrap().unwrap();
    assert_eq!(comp.as_str(), "A2");
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: true }).await.unwrap();
    // The courier holds the door open past door_left_open_s (1 s here): an alarm.
    server
        .until("the left-open alarm is journalled", || async {
            let s = agent.cabinet.send(edge_agent::actors::cabinet::GetStatus).await.unwrap();
            s.journal_depth >= 1 || server.server.store.count_cabinet_events().await.unwrap() >= 1
        })
        .await;
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: false }).await.unwrap();
    server.until("the parcel is ready", || async { server.parcel_state(parcel).await == "ready" }).await;
    wait_desired(&agent, "the ready parcel with its code hash", |d| {
        d.parcels.as_ref().is_some_and(|s| s.parcels.iter().any(|p| p.parcel == parcel && p.code_hash.is_some()))
    })
    .await;

    // The server orders a soft restart: the cabinet actor comes back from disk under its
    // supervisor, holding the same parcels, and keeps working.
    let reboot = lockerfleet_shared::envelope::DownBody::Cmd(lockerfleet_shared::envelope::Command {
        id: Uuid::now_v7(),
        action: lockerfleet_shared::envelope::CommandAction::Reboot,
    });
    agent.cabinet.send(edge_agent::actors::cabinet::FromServer(reboot)).await.unwrap();
    server
        .until("the cabinet actor restarted", || async {
            agent.cabinet.send(edge_agent::actors::cabinet::GetStatus).await.map(|s| s.restarts).unwrap_or(0) == 1
        })
        .await;
    wait_desired(&agent, "the parcels, reloaded from disk", |d| {
        d.parcels.as_ref().is_some_and(|s| s.parcels.iter().any(|p| p.parcel == parcel && p.code_hash.is_some()))
    })
    .await;

    // The server goes away; the cabinet keeps working.
    server.server.stop().await;

    // A wrong code opens nothing; the right one opens exactly A2.
    let wrong = agent.cabinet.send(EnterCode("00000000".into())).await.unwrap();
    assert!(matches!(wrong, CodeOutcome::Rejected { remaining: 4 }), "{wrong:?}");
    assert_eq!(lock.releases(), vec![CompartmentId::new("A2").unwrap()], "only the courier's opening so far");
    let right = agent.cabinet.send(EnterCode(code.clone())).await.unwrap();
    assert!(matches!(right, CodeOutcome::Accepted(ref p) if p.parcel == parcel), "{right:?}");
    assert_eq!(lock.releases().last().unwrap().as_str(), "A2");
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: true }).await.unwrap();
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: false }).await.unwrap();
    // The same code never opens the door twice.
    let again = agent.cabinet.send(EnterCode(code.clone())).await.unwrap();
    assert!(matches!(again, CodeOutcome::Rejected { .. }), "{again:?}");
    let releases = lock.releases().len();

    // Wrong codes until lockout: an alarm is recorded.
    let mut outcome = again;
    for _ in 0..5 {
        outcome = agent.cabinet.send(EnterCode("11111111".into())).await.unwrap();
        if matches!(outcome, CodeOutcome::LockedOutNow { .. }) {
            break;
        }
    }
    assert!(matches!(outcome, CodeOutcome::LockedOutNow { .. }), "{outcome:?}");
    assert_eq!(lock.releases().len(), releases, "no door opened during the attempts");

    // The server returns: the pickup and the alarms recorded offline arrive, once each.
    let server = Server::start(&db, port).await;
    server.until("the offline pickup arrives", || async { server.parcel_state(parcel).await == "picked_up" }).await;
    let (_, timeline) = server.call("GET", &format!("/api/v1/parcels/{}/events", parcel.0), None).await;
    let kinds: Vec<&str> = timeline["items"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "assign", "deposit", "ready", "pickup"]);
    server
        .until("every event is acked and the journal is empty", || async {
            agent.cabinet.send(edge_agent::actors::cabinet::GetStatus).await.unwrap().journal_depth == 0
        })
        .await;
    let status = agent.cabinet.send(edge_agent::actors::cabinet::GetStatus).await.unwrap();
    assert!(status.open_doors.is_empty());
    // Each event stored exactly once, in the order it happened: the door left open
    // during the deposit, the deposit, a wrong code,
    // the pickup, then five wrong codes (the right code had reset the count, so the
    // reused one is the first of five) and the lockout alarm.
    use sea_orm::{EntityTrait, QueryOrder};
    let kinds: Vec<String> = fleet_server::store::entities::cabinet_event::Entity::find()
        .order_by_asc(fleet_server::store::entities::cabinet_event::Column::Seq)
        .all(server.server.store.connection())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    let mut expected = vec!["alarm", "deposit", "failed_match", "pickup"];
    expected.extend(["failed_match"; 4]);
    expected.push("alarm");
    assert_eq!(kinds, expected);
    server.server.stop().await;
}

/// A TCP proxy in front of the broker that the test can cut and restore: a network
/// partition between the cabinet and everything else.
struct Partition {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::broadcast::Sender<()>,
}

impl Partition {
    async fn new(broker_port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::broadcast::channel(4);
        let (up2, cut2) = (up.clone(), cut.clone());
        actix_rt::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped at once: the network is down
                }
                let mut stop = cut2.subscribe();
                actix_rt::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", broker_port)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = stop.recv() => {}
                    }
                });
            }
        });
        Self { port, up, cut }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        let _ = self.cut.send(());
    }

    fn heal(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[actix_rt::test]
async fn a_code_pickup_works_while_the_network_is_down_and_arrives_after() {
    let broker_cfg =
        fleet_server::config::MqttConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..Default::default() };
    let broker = fleet_server::broker::start_embedded(&broker_cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("fleet.db").display());
    let server = Server::start(&db, broker.addr.port()).await;
    // The cabinet reaches the broker only through the partition.
    let partition = Partition::new(broker.addr.port()).await;
    let config = agent_config(&dir.path().join("cabinet"), partition.port);
    register(&server, &config).await;
    let lock = SimLock::default();
    let agent = edge_agent::start(&config, Box::new(lock.clone())).unwrap();

    let (_, created) = server
        .call(
            "POST",
            "/api/v1/parcels",
            Some(json!({"tenant": "acme", "reference": "T", "courier": "k-1", "size": "s", "cabinet": "cab-e1"})),
        )
        .await;
    let parcel = ParcelId(Uuid::parse_str(created["id"].as_str().unwrap()).unwrap());
    let code = created["pickup_code"].as_str().unwrap().to_owned();
    wait_desired(&agent, "the expected parcel", |d| {
        d.parcels.as_ref().is_some_and(|s| s.parcels.iter().any(|p| p.parcel == parcel))
    })
    .await;
    let kim = server.pass("k-1").await;
    let comp = agent.cabinet.send(CourierDeposit { pass: kim, parcel }).await.unwrap().unwrap();
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: true }).await.unwrap();
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: false }).await.unwrap();
    wait_desired(&agent, "the code hash", |d| {
        d.parcels.as_ref().is_some_and(|s| s.parcels.iter().any(|p| p.parcel == parcel && p.code_hash.is_some()))
    })
    .await;

    // The cabinet is cut off from the broker.
    partition.cut();
    let right = agent.cabinet.send(EnterCode(code)).await.unwrap();
    assert!(matches!(right, CodeOutcome::Accepted(_)), "{right:?}");
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: true }).await.unwrap();
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: false }).await.unwrap();
    let status = agent.cabinet.send(edge_agent::actors::cabinet::GetStatus).await.unwrap();
    assert_eq!(status.journal_depth, 1, "the pickup waits in the journal");
    // A door opened without being unlocked was forced: an alarm, also while offline.
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: true }).await.unwrap();
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: false }).await.unwrap();
    let status = agent.cabinet.send(edge_agent::actors::cabinet::GetStatus).await.unwrap();
    assert_eq!(status.journal_depth, 2, "the pickup and the forced-door alarm wait in the journal");
    assert_eq!(server.parcel_state(parcel).await, "ready", "the server cannot know yet");

    // The network heals: the queued pickup drains and is acked.
    partition.heal();
    server.until("the pickup arrives", || async { server.parcel_state(parcel).await == "picked_up" }).await;
    server
        .until("the journal is empty", || async {
            agent.cabinet.send(edge_agent::actors::cabinet::GetStatus).await.unwrap().journal_depth == 0
        })
        .await;

    // The link's connection breaks for good: its supervisor restarts it with a new MQTT
    // session, and what the cabinet records afterwards still reaches the server.
    use edge_agent::actors::link::{Broken, GetLinkState};
    let stored = server.server.store.count_cabinet_events().await.unwrap();
    let before = agent.link.send(GetLinkState).await.unwrap();
    assert_eq!(before.restarts, 0);
    agent.link.send(Broken).await.unwrap();
    server
        .until("the link is back", || async {
            let now = agent.link.send(GetLinkState).await.unwrap();
            now.connected && now.restarts == 1
        })
        .await;
    assert_ne!(agent.link.send(GetLinkState).await.unwrap().session, before.session, "a new MQTT session");
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: true }).await.unwrap();
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: false }).await.unwrap();
    server
        .until("the alarm after the restart arrives", || async {
            server.server.store.count_cabinet_events().await.unwrap() == stored + 1
        })
        .await;
    server.server.stop().await;
}

/// A face pipeline that answers from a script: what the real matcher will decide. It
/// keeps the times it was told to judge expiry by.
struct Scripted(
    std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<&'static str>>>,
    std::sync::Arc<std::sync::Mutex<Vec<chrono::DateTime<chrono::Utc>>>>,
);

impl edge_agent::face::FaceMatcher for Scripted {
    fn decide(
        &mut self,
        frames: &[edge_agent::camera::Frame],
        candidates: &[edge_agent::face::Candidate],
        now: chrono::DateTime<chrono::Utc>,
    ) -> edge_agent::face::FaceDecision {
        use edge_agent::face::FaceDecision;
        self.1.lock().unwrap().push(now);
        assert!(!frames.is_empty() && frames[0].ir.is_some(), "frames with an IR channel reach the matcher");
        match self.0.lock().unwrap().pop_front() {
            Some("match") => match candidates.first() {
                Some(c) => FaceDecision::Match { parcel: c.parcel.parcel, score: 0.82 },
                None => FaceDecision::NoMatch { reason: "no candidates".into() },
            },
            Some("spoof") => FaceDecision::Spoof { reason: "flat IR response (print)".into() },
            _ => FaceDecision::NoMatch { reason: "nobody waiting here".into() },
        }
    }
}

#[actix_rt::test]
async fn a_face_opens_only_after_the_pipeline_matches_and_spoofs_are_recorded() {
    use edge_agent::actors::cabinet::{FaceOutcome, FacePickup};
    let broker_cfg =
        fleet_server::config::MqttConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..Default::default() };
    let broker = fleet_server::broker::start_embedded(&broker_cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("fleet.db").display());
    let server = Server::start(&db, broker.addr.port()).await;
    let mut config = agent_config(&dir.path().join("cabinet"), broker.addr.port());
    // This cabinet's own clock is two hours ahead; templates are judged by the server's.
    config.sim_clock_offset_s = 7200;
    register(&server, &config).await;
    let (_, r) = server.call("POST", "/api/v1/recipients", Some(json!({"tenant": "acme", "reference": "p-1"}))).await;
    let script = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(["spoof", "match"])));
    let judged_at = std::sync::Arc::<std::sync::Mutex<Vec<chrono::DateTime<chrono::Utc>>>>::default();
    let lock = SimLock::default();
    let agent = edge_agent::start_with(
        &config,
        Box::new(lock.clone()),
        Box::new(edge_agent::camera::SyntheticSource::new(64, 48, true, true)),
        Box::new(Scripted(script.clone(), judged_at.clone())),
    )
    .unwrap();

    let (_, created) = server
        .call("POST", "/api/v1/parcels", Some(json!({"tenant": "acme", "reference": "F", "recipient": r["id"], "courier": "k-1", "size": "s", "cabinet": "cab-e1"})))
        .await;
    let parcel = ParcelId(Uuid::parse_str(created["id"].as_str().unwrap()).unwrap());
    wait_desired(&agent, "the expected parcel", |d| {
        d.parcels.as_ref().is_some_and(|s| s.parcels.iter().any(|p| p.parcel == parcel))
    })
    .await;
    let comp = agent.cabinet.send(CourierDeposit { pass: server.pass("k-1").await, parcel }).await.unwrap().unwrap();
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: true }).await.unwrap();
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: false }).await.unwrap();
    server.until("ready", || async { server.parcel_state(parcel).await == "ready" }).await;

    // No template yet: the pipeline has no candidate and nothing opens.
    // The recipient's app seals the template for this cabinet; it arrives.
    let (_, notice) = server.call("GET", &format!("/api/v1/parcels/{}/ready-notice", parcel.0), None).await;
    let notice = lockerfleet_shared::sdk::ReadyNotice {
        parcel,
        cabinet: lockerfleet_shared::CabinetId::new("cab-e1").unwrap(),
        cabinet_public_key: lockerfleet_shared::seal::CabinetPublicKey::from_base64(
            notice["cabinet_public_key"].as_str().unwrap(),
        )
        .unwrap(),
        deadline: notice["deadline"].as_str().unwrap().parse().unwrap(),
    };
    let model = lockerfleet_shared::seal::ModelRef { id: "fr_feature".into(), sha256: "ab".repeat(32) };
    let sealed = lockerfleet_shared::sdk::seal_for_parcel(
        &notice,
        &lockerfleet_shared::seal::FaceTemplate::new(vec![0.5; 512]),
        &model,
        chrono::Utc::now(),
    )
    .unwrap();
    assert_eq!(
        server.call("POST", &format!("/api/v1/parcels/{}/sealed-template", parcel.0), Some(json!(sealed))).await.0,
        202
    );
    wait_desired(&agent, "the sealed template", |d| d.templates.as_ref().is_some_and(|t| t.add.len() == 1)).await;
    let releases_before = lock.releases().len();

    // A printed photo: refused, recorded, nothing opens.
    let spoof = agent.cabinet.send(FacePickup).await.unwrap();
    assert!(matches!(&spoof, FaceOutcome::Refused { reason } if reason.contains("presentation attack")), "{spoof:?}");
    assert_eq!(lock.releases().len(), releases_before);
    // The recipient: the door of their parcel opens.
    let ok = agent.cabinet.send(FacePickup).await.unwrap();
    assert!(matches!(&ok, FaceOutcome::Accepted(p) if p.parcel == parcel), "{ok:?}");
    assert_eq!(lock.releases().last().unwrap(), &comp);
    // The matcher judged by the server's clock (this machine's), not the cabinet's.
    let judged = judged_at.lock().unwrap().clone();
    assert_eq!(judged.len(), 2);
    for at in judged {
        let off = (at - chrono::Utc::now()).num_seconds().abs();
        assert!(off < 60, "the matcher judged expiry {off} s away from the server's clock");
    }
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: true }).await.unwrap();
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: false }).await.unwrap();
    server.until("picked up", || async { server.parcel_state(parcel).await == "picked_up" }).await;
    let (_, timeline) = server.call("GET", &format!("/api/v1/parcels/{}/events", parcel.0), None).await;
    let last = timeline["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "pickup");
    assert_eq!(last["detail"]["what"]["method"], "face");
    // An update may start only while no door is open; while it runs, nothing opens.
    use edge_agent::actors::cabinet::{BeginUpdate, EndUpdate};
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: true }).await.unwrap();
    assert!(agent.cabinet.send(BeginUpdate).await.unwrap().is_err(), "an update began with a door open");
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: false }).await.unwrap();
    agent.cabinet.send(BeginUpdate).await.unwrap().unwrap();
    let during = agent.cabinet.send(FacePickup).await.unwrap();
    assert!(matches!(&during, FaceOutcome::Refused { reason } if reason.contains("updating")), "{during:?}");
    agent.cabinet.send(EndUpdate).await.unwrap();
    // The same face never opens the door twice.
    script.lock().unwrap().push_back("match");
    let again = agent.cabinet.send(FacePickup).await.unwrap();
    assert!(matches!(&again, FaceOutcome::Refused { reason } if reason.contains("no candidates")), "{again:?}");
    server.server.stop().await;
}

/// The face issue's check at a whole cabinet, with the real models: a recipient enrolled
/// from `obama.jpg`, sealed for this cabinet, collects with a live capture of
/// `obama2.jpg`; `biden.jpg` and a print of `obama2.jpg` open nothing and are reported;
/// repeated failures lock the face path out with an alarm.
#[actix_rt::test]
async fn a_real_face_opens_exactly_its_parcel_and_failures_are_reported() {
    use edge_agent::actors::cabinet::{FaceOutcome, FacePickup};
    use edge_agent::vision::{OnnxMatcher, decode_photo, imageops::RgbView, models::Assets, synth};
    let assets = Assets::locate().unwrap_or_else(|e| panic!("{e}"));
    let models = assets.models();
    let broker_cfg =
        fleet_server::config::MqttConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..Default::default() };
    let broker = fleet_server::broker::start_embedded(&broker_cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("fleet.db").display());
    let server = Server::start(&db, broker.addr.port()).await;
    let config = agent_config(&dir.path().join("cabinet"), broker.addr.port());
    register(&server, &config).await;
    let (_, r) = server.call("POST", "/api/v1/recipients", Some(json!({"tenant": "acme", "reference": "bo"}))).await;

    // The cabinet runs the real pipeline; a scene stands in front of its camera.
    let mut pipeline = edge_agent::vision::pipeline::FacePipeline::load(&models, config.face.quality.clone()).unwrap();
    let photo = |name: &str| decode_photo(&std::fs::read(assets.photo("face_recognition", name)).unwrap()).unwrap();
    let mut placed = |f: &edge_agent::camera::Frame| {
        let a = pipeline.analyse(RgbView::new(f.width, f.height, &f.rgb).unwrap()).unwrap();
        synth::Placement { face: a.face, points: a.points }
    };
    let (obama2, biden) = (photo("obama2.jpg"), photo("biden.jpg"));
    let (at_obama2, at_biden) = (placed(&obama2), placed(&biden));
    let keys = lockerfleet_shared::seal::CabinetKeyPair::from_secret_bytes(&std::fs::read(config.key_path()).unwrap())
        .unwrap();
    let matcher = OnnxMatcher::new(
        edge_agent::vision::pipeline::FacePipeline::load(&models, config.face.quality.clone()).unwrap(),
        keys,
        config.cabinet_id(),
        config.face.pad.clone(),
        config.face.matching,
    )
    .unwrap();
    let scene = edge_agent::camera::Scene::default();
    let lock = SimLock::default();
    let agent =
        edge_agent::start_with(&config, Box::new(lock.clone()), Box::new(scene.clone()), Box::new(matcher)).unwrap();

    // Two parcels in two compartments; the recipient of the first enrols her face.
    let mut parcels = Vec::new();
    for (reference, size) in [("F1", "s"), ("F2", "m")] {
        let body = json!({"tenant": "acme", "reference": reference, "recipient": r["id"], "courier": "k-1",
                          "size": size, "cabinet": "cab-e1"});
        let (status, created) = server.call("POST", "/api/v1/parcels", Some(body)).await;
        assert_eq!(status, 201, "{created}");
        parcels.push(ParcelId(Uuid::parse_str(created["id"].as_str().unwrap()).unwrap()));
    }
    wait_desired(&agent, "both expected parcels", |d| d.parcels.as_ref().is_some_and(|s| s.parcels.len() == 2)).await;
    let mut compartments = Vec::new();
    for &parcel in &parcels {
        let comp =
            agent.cabinet.send(CourierDeposit { pass: server.pass("k-1").await, parcel }).await.unwrap().unwrap();
        agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: true }).await.unwrap();
        agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: false }).await.unwrap();
        compartments.push(comp);
    }
    server.until("ready", || async { server.parcel_state(parcels[0]).await == "ready" }).await;
    let (_, notice) = server.call("GET", &format!("/api/v1/parcels/{}/ready-notice", parcels[0].0), None).await;
    let notice = lockerfleet_shared::sdk::ReadyNotice {
        parcel: parcels[0],
        cabinet: lockerfleet_shared::CabinetId::new("cab-e1").unwrap(),
        cabinet_public_key: lockerfleet_shared::seal::CabinetPublicKey::from_base64(
            notice["cabinet_public_key"].as_str().unwrap(),
        )
        .unwrap(),
        deadline: notice["deadline"].as_str().unwrap().parse().unwrap(),
    };
    let template = edge_agent::vision::enrol(
        &mut pipeline,
        &std::fs::read(assets.photo("face_recognition", "obama.jpg")).unwrap(),
    )
    .unwrap();
    let sealed =
        lockerfleet_shared::sdk::seal_for_parcel(&notice, &template, &models.embedding_ref(), chrono::Utc::now())
            .unwrap();
    let path = format!("/api/v1/parcels/{}/sealed-template", parcels[0].0);
    assert_eq!(server.call("POST", &path, Some(json!(sealed))).await.0, 202);
    wait_desired(&agent, "the sealed template", |d| d.templates.as_ref().is_some_and(|t| t.add.len() == 1)).await;
    let releases = lock.releases().len();

    // Someone else: nothing opens, the failure is reported.
    scene.show(Some(synth::live(&biden, &at_biden)));
    let other = agent.cabinet.send(FacePickup).await.unwrap();
    assert!(matches!(&other, FaceOutcome::Refused { reason } if reason.contains("no match")), "{other:?}");
    // A print of the recipient's face: refused by the attack gate.
    scene.show(Some(synth::print(&obama2, &at_obama2)));
    let print = agent.cabinet.send(FacePickup).await.unwrap();
    assert!(matches!(&print, FaceOutcome::Refused { reason } if reason.contains("presentation attack")), "{print:?}");
    assert_eq!(lock.releases().len(), releases, "no door opened");
    // The recipient herself: exactly her parcel's compartment opens.
    scene.show(Some(synth::live(&obama2, &at_obama2)));
    let ok = agent.cabinet.send(FacePickup).await.unwrap();
    assert!(matches!(&ok, FaceOutcome::Accepted(p) if p.parcel == parcels[0]), "{ok:?}");
    assert_eq!(lock.releases()[releases..], [compartments[0].clone()]);
    agent.cabinet.send(DoorSensed { compartment: compartments[0].clone(), open: true }).await.unwrap();
    agent.cabinet.send(DoorSensed { compartment: compartments[0].clone(), open: false }).await.unwrap();
    server.until("picked up by face", || async { server.parcel_state(parcels[0]).await == "picked_up" }).await;
    let (_, timeline) = server.call("GET", &format!("/api/v1/parcels/{}/events", parcels[0].0), None).await;
    assert_eq!(timeline["items"].as_array().unwrap().last().unwrap()["detail"]["what"]["method"], "face");

    // Repeated failures lock the face path out and raise an alarm; the server has both.
    scene.show(Some(synth::live(&biden, &at_biden)));
    let mut last = None;
    for _ in 0..6 {
        last = Some(agent.cabinet.send(FacePickup).await.unwrap());
    }
    assert!(matches!(last, Some(FaceOutcome::LockedOut { .. })), "{last:?}");
    server
        .until("the failures and the lockout are at the server", || async {
            let (_, events) = server.call("GET", "/api/v1/cabinets/cab-e1/events?limit=500", None).await;
            let events = events.as_array().cloned().unwrap_or_default();
            let failed = events.iter().filter(|e| e["kind"] == "failed_match").count();
            let lockouts = events.iter().filter(|e| e["detail"]["code"] == "face_lockout").count();
            failed >= 3 && lockouts == 1
        })
        .await;
    assert_eq!(lock.releases().len(), releases + 1, "only the recipient's door ever opened");
    server.server.stop().await;
}

/// A cabinet with an MQTT password connects to a Mosquitto that confines cabinets
/// (`deploy/mosquitto/lockerfleet.acl`); with a wrong one it does not.
#[actix_rt::test]
async fn a_cabinet_logs_in_to_a_confining_broker_with_its_own_password() {
    use edge_agent::actors::link::GetLinkState;
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let status = std::process::Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwd)
        .args(["cab-e1", "the-right-one"])
        .status()
        .expect("mosquitto_passwd is installed");
    assert!(status.success());
    let acl = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto/lockerfleet.acl");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nlistener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n",
            passwd.display(),
            acl.display()
        ),
    )
    .unwrap();
    let mut broker = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut outcomes = Vec::new();
    for (name, password) in [("right", "the-right-one"), ("wrong", "a-guess")] {
        let mut config = agent_config(&dir.path().join(name), port);
        config.camera = "none".into();
        let file = dir.path().join(format!("{name}.pw"));
        std::fs::write(&file, format!("{password}\n")).unwrap();
        config.mqtt.password_file = Some(file);
        edge_agent::provision(&config).unwrap();
        let restart: edge_agent::ota::Restart = Box::new(|| {});
        let agent = edge_agent::start_parts(&config, Box::new(SimLock::default()), None, restart).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut connected = false;
        while tokio::time::Instant::now() < deadline && !connected {
            connected = agent.link.send(GetLinkState).await.unwrap().connected;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        outcomes.push(connected);
    }
    let _ = broker.kill();
    let _ = broker.wait();
    assert_eq!(outcomes, [true, false], "the right password connects, a wrong one does not");
}

#[actix_rt::test]
async fn the_operator_opens_a_compartment_remotely_and_a_stale_open_is_ignored() {
    // Every part is bound: the temp folder and the broker live until the test ends.
    let Running { broker: _broker, dir: _dir, db: _, port, server, config: _config, lock, agent } = running().await;

    // Through the API: the command travels over MQTT and releases exactly A1's lock.
    let (status, body) = server.call("POST", "/api/v1/cabinets/cab-e1/compartments/A1/open", None).await;
    assert_eq!(status, 202, "{body}");
    server.until("A1 is released", || async { lock.releases() == vec![CompartmentId::new("A1").unwrap()] }).await;
    let status = agent.cabinet.send(edge_agent::actors::cabinet::GetStatus).await.unwrap();
    assert!(status.busy, "the door is unlocked, waiting to be opened");
    // A second open while the first is under way opens nothing more.
    let again = lockerfleet_shared::envelope::DownBody::Cmd(lockerfleet_shared::envelope::Command {
        id: Uuid::now_v7(),
        action: lockerfleet_shared::envelope::CommandAction::OpenCompartment {
            compartment: CompartmentId::new("A1").unwrap(),
        },
    });
    agent.cabinet.send(edge_agent::actors::cabinet::FromServer(again)).await.unwrap();
    assert_eq!(lock.releases().len(), 1, "the repeated command was refused while A1 was open");
    agent.cabinet.send(DoorSensed { compartment: CompartmentId::new("A1").unwrap(), open: true }).await.unwrap();
    agent.cabinet.send(DoorSensed { compartment: CompartmentId::new("A1").unwrap(), open: false }).await.unwrap();
    server
        .until("the door is shut again", || async {
            !agent.cabinet.send(edge_agent::actors::cabinet::GetStatus).await.unwrap().busy
        })
        .await;
    // Opening and closing on the operator's command is no parcel event and no alarm.
    let (_, events) = server.call("GET", "/api/v1/cabinets/cab-e1/events", None).await;
    assert_eq!(events, json!([]));

    // A command queued long ago (a cabinet back from a week offline) is ignored.
    let topics = lockerfleet_shared::TopicSpace::new(None).unwrap();
    let cab = lockerfleet_shared::CabinetId::new("cab-e1").unwrap();
    let mut env = lockerfleet_shared::Envelope::new(
        cab.clone(),
        1,
        lockerfleet_shared::envelope::DownBody::Cmd(lockerfleet_shared::envelope::Command {
            id: Uuid::now_v7(),
            action: lockerfleet_shared::envelope::CommandAction::OpenCompartment {
                compartment: CompartmentId::new("A2").unwrap(),
            },
        }),
    );
    env.ts -= chrono::Duration::minutes(10);
    let fresh = lockerfleet_shared::Envelope::new(
        cab.clone(),
        2,
        lockerfleet_shared::envelope::DownBody::Cmd(lockerfleet_shared::envelope::Command {
            id: Uuid::now_v7(),
            action: lockerfleet_shared::envelope::CommandAction::OpenCompartment {
                compartment: CompartmentId::new("A1").unwrap(),
            },
        }),
    );
    let (client, mut eventloop) =
        rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("stale-sender", "127.0.0.1", port), 10);
    let down = topics.cabinet_down(&cab);
    client.publish(down.clone(), rumqttc::QoS::AtLeastOnce, false, env.encode()).await.unwrap();
    // The fresh command after it proves the stale one was delivered and passed over.
    client.publish(down, rumqttc::QoS::AtLeastOnce, false, fresh.encode()).await.unwrap();
    let pump = actix_rt::spawn(async move { while eventloop.poll().await.is_ok() {} });
    server.until("the fresh open arrives", || async { lock.releases().len() == 2 }).await;
    assert_eq!(lock.releases(), vec![CompartmentId::new("A1").unwrap(), CompartmentId::new("A1").unwrap()]);
    pump.abort();
    server.server.stop().await;
}

/// A cabinet whose own clock runs an hour ahead still obeys a fresh remote open: the link
/// judges a command's age by the server's clock, carried from its `down` messages.
#[actix_rt::test]
async fn a_cabinet_clock_an_hour_ahead_still_obeys_a_fresh_remote_open() {
    let Running { broker: _broker, dir: _dir, db: _, port: _, server, config: _config, lock, agent } =
        running_with_clock_offset(3600).await;
    // The server has spoken: the desired state it sends after every hello.
    wait_desired(&agent, "the first desired state", |d| d.parcels.is_some()).await;
    let (status, body) = server.call("POST", "/api/v1/cabinets/cab-e1/compartments/A1/open", None).await;
    assert_eq!(status, 202, "{body}");
    server.until("A1 is released", || async { lock.releases() == vec![CompartmentId::new("A1").unwrap()] }).await;
    server.server.stop().await;
}

/// A cabinet offline for days fills its journal (here a forced door, opened again and
/// again): failed matches and then alarms are dropped and counted, the parcel events are
/// all kept, and when the server is back everything recorded arrives, with one
/// `journal_near_full` and one `journal_dropped` alarm telling the operator what happened.
#[actix_rt::test]
async fn a_cabinet_offline_with_a_full_journal_keeps_every_parcel_event() {
    use edge_agent::actors::cabinet::GetStatus;
    let broker_cfg =
        fleet_server::config::MqttConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..Default::default() };
    let broker = fleet_server::broker::start_embedded(&broker_cfg).unwrap();
    let port = broker.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("fleet.db").display());
    let server = Server::start(&db, port).await;
    let config = AgentConfig { journal_max_bytes: 65_536, ..agent_config(&dir.path().join("cabinet"), port) };
    register(&server, &config).await;
    let lock = SimLock::default();
    let agent = edge_agent::start(&config, Box::new(lock.clone())).unwrap();
    let (parcel, code, comp) = deposited_parcel(&server, &agent, "m").await;
    server.server.stop().await;

    // Days offline, compressed: the other door is forced open until the journal is full.
    let a1 = CompartmentId::new("A1").unwrap();
    let mut forced = 0;
    loop {
        agent.cabinet.send(DoorSensed { compartment: a1.clone(), open: true }).await.unwrap();
        agent.cabinet.send(DoorSensed { compartment: a1.clone(), open: false }).await.unwrap();
        forced += 1;
        if agent.cabinet.send(GetStatus).await.unwrap().journal_dropped >= 3 {
            break;
        }
        assert!(forced < 2000, "the journal never filled");
    }
    // A wrong code is dropped too (failed matches go first)...
    let wrong = agent.cabinet.send(EnterCode("00000000".into())).await.unwrap();
    assert!(matches!(wrong, CodeOutcome::Rejected { .. }), "{wrong:?}");
    assert_eq!(agent.cabinet.send(GetStatus).await.unwrap().journal_dropped, 4);
    // ...but the recipient still collects, and that pickup is kept.
    let depth = agent.cabinet.send(GetStatus).await.unwrap().journal_depth;
    let right = agent.cabinet.send(EnterCode(code)).await.unwrap();
    assert!(matches!(right, CodeOutcome::Accepted(_)), "{right:?}");
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: true }).await.unwrap();
    agent.cabinet.send(DoorSensed { compartment: comp.clone(), open: false }).await.unwrap();
    assert_eq!(agent.cabinet.send(GetStatus).await.unwrap().journal_depth, depth + 1);

    // Back online: everything recorded arrives once, then the report of what was dropped.
    let server = Server::start(&db, port).await;
    server.until("the offline pickup arrives", || async { server.parcel_state(parcel).await == "picked_up" }).await;
    server
        .until("the journal is drained and the drop reported", || async {
            let s = agent.cabinet.send(GetStatus).await.unwrap();
            s.journal_depth == 0 && s.journal_dropped == 0
        })
        .await;
    let (_, events) = server.call("GET", "/api/v1/cabinets/cab-e1/events?kind=alarm&limit=500", None).await;
    let events = events.as_array().unwrap();
    let of = |code: &str| events.iter().filter(|e| e["detail"]["code"] == code).collect::<Vec<_>>();
    assert_eq!(of("journal_near_full").len(), 1);
    let dropped = of("journal_dropped");
    assert_eq!(dropped.len(), 1);
    let detail = dropped[0]["detail"]["detail"].as_str().unwrap();
    assert!(detail.contains("1 failed matches, 3 alarms"), "{detail}");
    assert_eq!(of("door_forced").len() as u32 + 3, forced, "every forced opening is stored or counted as dropped");
    server.server.stop().await;
}

/// A cabinet whose clock is hours off judges pickup windows by the server's clock (the
/// timestamps of its `down` messages, carried forward), not by its own: ahead, it would
/// refuse parcels still in their window; behind, it would open parcels past theirs.
#[actix_rt::test]
async fn expiry_follows_the_servers_clock_when_the_cabinets_is_hours_off() {
    use actix::Actor;
    use edge_agent::actors::cabinet::{Cabinet, FromServer, ServerTime};
    use lockerfleet_shared::envelope::{DownBody, ExpectedParcel, ParcelSet};
    let dir = tempfile::tempdir().unwrap();
    let journal = edge_agent::domain::journal::Journal::open(&dir.path().join("journal.log"), 1 << 20).unwrap();
    let desired = edge_agent::domain::desired::DesiredStore::open(&dir.path().join("desired.json"));
    let (a1, a2) = (CompartmentId::new("A1").unwrap(), CompartmentId::new("A2").unwrap());
    let lock = SimLock::default();
    let cabinet = Cabinet::new(
        journal,
        desired,
        &[a1.clone(), a2.clone()],
        Box::new(lock.clone()),
        dir.path().join("done.json"),
        edge_agent::domain::door::DoorTimings::default(),
    )
    .start();
    let local = chrono::Utc::now();
    let hours = chrono::Duration::hours;
    let ready = |compartment: &CompartmentId, code: &str, expires_at| ExpectedParcel {
        parcel: ParcelId::generate(),
        compartment: compartment.clone(),
        stage: ParcelStage::Ready,
        courier: None,
        code_hash: Some(lockerfleet_shared::codes::hash(code)),
        expires_at,
    };
    // Parcel 1's window ended 3 h ago by the cabinet's clock; parcel 2's ends in 3 h.
    let (one, two) = (ready(&a1, "11112222", local - hours(3)), ready(&a2, "33334444", local + hours(3)));
    let set = ParcelSet {
        version: 1,
        parcels: vec![one.clone(), two.clone()],
        courier_pass_keys: vec![],
        settings: Default::default(),
    };
    cabinet.send(FromServer(DownBody::Parcels(set))).await.unwrap();

    // Before the server has spoken the cabinet has only its own clock.
    let early = cabinet.send(EnterCode("11112222".into())).await.unwrap();
    assert!(matches!(early, CodeOutcome::Rejected { .. }), "{early:?}");
    // The server's clock is 6 h behind this cabinet's: parcel 1 is still in its window.
    cabinet.send(ServerTime(local - hours(6))).await.unwrap();
    let opened = cabinet.send(EnterCode("11112222".into())).await.unwrap();
    assert!(matches!(opened, CodeOutcome::Accepted(ref p) if p.parcel == one.parcel), "{opened:?}");
    assert_eq!(lock.releases(), vec![a1]);
    // Later the server says it is 6 h ahead of this cabinet: parcel 2's window has ended.
    cabinet.send(ServerTime(local + hours(6))).await.unwrap();
    let late = cabinet.send(EnterCode("33334444".into())).await.unwrap();
    assert!(matches!(late, CodeOutcome::Rejected { .. }), "{late:?}");
    assert_eq!(lock.releases().len(), 1, "nothing opened past its window");
}
