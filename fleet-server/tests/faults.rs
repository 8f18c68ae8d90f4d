//! Faults, each proving its documented outcome (`docs/security.md`, "Faults") and that
//! no event the server acknowledged is lost:
//!
//! * the broker restarts (a private Mosquitto, stopped and started again on its port);
//! * PostgreSQL restarts (a private instance, only where `DATABASE_URL` says PostgreSQL
//!   is installed — the shared one is never touched);
//! * the fleet-server process is killed with `kill -9` while cabinets publish;
//! * a cabinet's clock is hours off;
//! * a webhook endpoint is slow (accepts and never answers) or dead (refuses).
//!
//! Cabinets are played by [`JournalCabinet`]: a plain MQTT client that keeps every event
//! it made until an ack names it, and resends the unacked ones on a timer, as the edge
//! agent's journal does.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ADMIN_TOKEN, Backend, Db, Fixture, Mqtt, Subscriber, TestServer};
use lockerfleet_shared::envelope::{CabinetEvent, DownBody, EventBatch, EventKind, UpBody, decode};
use lockerfleet_shared::{CabinetId, CourierId, Envelope, TopicSpace};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` until it holds; fails with `what` after 20 s.
async fn until<F, Fut>(what: &str, mut check: F)
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

// ───────────────────────────── a cabinet with a journal ─────────────────────────────

/// A cabinet that keeps what it made until acked and survives reconnects.
struct JournalCabinet {
    id: CabinetId,
    topics: TopicSpace,
    client: AsyncClient,
    /// Event ids the server acked.
    acked: Arc<Mutex<HashSet<Uuid>>>,
    /// Bumped on every ack, so a waiter wakes without polling.
    ack_tick: watch::Receiver<u64>,
    /// Bumped every time the cabinet is (re)subscribed to its `down` topic.
    sessions: watch::Receiver<u64>,
    made: Vec<CabinetEvent>,
    task: actix_rt::task::JoinHandle<()>,
}

impl JournalCabinet {
    async fn connect(port: u16, topics: TopicSpace, id: &str) -> Self {
        let id = CabinetId::new(id).unwrap();
        let mut opts = MqttOptions::new(format!("jc-{id}-{}", Uuid::new_v4().simple()), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5)).set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        let acked = Arc::new(Mutex::new(HashSet::new()));
        let (tick_tx, ack_tick) = watch::channel(0u64);
        let (session_tx, sessions) = watch::channel(0u64);
        let (task_client, task_acked, down) = (client.clone(), acked.clone(), topics.cabinet_down(&id));
        let task = actix_rt::spawn(async move {
            loop {
                match eventloop.poll().await {
                    // A clean session each time: subscribe again after every reconnect.
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = task_client.try_subscribe(down.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => session_tx.send_modify(|n| *n += 1),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(env) = decode::<DownBody>(&p.payload, 1 << 20)
                            && let DownBody::Ack(a) = env.body
                        {
                            task_acked.lock().unwrap().extend(a.events);
                            tick_tx.send_modify(|n| *n += 1);
                        }
                    }
                    Ok(_) => {}
                    // Broker gone: rumqttc reconnects on the next poll.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let mut cab = Self { id, topics, client, acked, ack_tick, sessions, made: Vec::new(), task };
        cab.wait_session(1).await;
        cab
    }

    async fn wait_session(&mut self, at_least: u64) {
        tokio::time::timeout(Duration::from_secs(20), self.sessions.wait_for(|n| *n >= at_least))
            .await
            .expect("the cabinet (re)connects and subscribes within 20 s")
            .unwrap();
    }

    fn session_count(&self) -> u64 {
        *self.sessions.borrow()
    }

    fn publish(&self, events: Vec<CabinetEvent>) {
        let seq = events.last().map_or(0, |e| e.seq);
        let env = Envelope::new(self.id.clone(), seq, UpBody::Events(EventBatch { events }));
        // While the broker is away the request may not even be queued: the event stays
        // in the journal and goes out with the next resend.
        let _ = self.client.try_publish(self.topics.cabinet_up(&self.id), QoS::AtLeastOnce, false, env.encode());
    }

    /// Records one event (with the cabinet's clock `at`) and sends it at once.
    fn record_at(&mut self, at: chrono::DateTime<chrono::Utc>) -> Uuid {
        let event = CabinetEvent {
            id: Uuid::now_v7(),
            seq: self.made.len() as u64 + 1,
            at,
            what: EventKind::FailedMatch { reason: format!("attempt #{}", self.made.len() + 1) },
        };
        self.made.push(event.clone());
        self.publish(vec![event.clone()]);
        event.id
    }

    fn record(&mut self) -> Uuid {
        self.record_at(chrono::Utc::now())
    }

    fn acked(&self) -> HashSet<Uuid> {
        self.acked.lock().unwrap().clone()
    }

    fn unacked(&self) -> Vec<CabinetEvent> {
        let acked = self.acked.lock().unwrap();
        self.made.iter().filter(|e| !acked.contains(&e.id)).cloned().collect()
    }

    /// Resends what is unacked every second (the agent's `resend_s`) until all is acked.
    async fn drain(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
        loop {
            let unacked = self.unacked();
            if unacked.is_empty() {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{}: {} events never acked", self.id, unacked.len());
            for chunk in unacked.chunks(100) {
                self.publish(chunk.to_vec());
            }
            // The resend timer; an ack wakes us earlier.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.ack_tick.changed()).await;
        }
    }
}

impl Drop for JournalCabinet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every stored event id, with how often it is stored.
async fn stored_ids(database_url: &str) -> Vec<Uuid> {
    let store = fleet_server::store::Store::connect(database_url, 2).await.unwrap();
    fleet_server::store::entities::cabinet_event::Entity::find()
        .all(store.connection())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

/// Every event the cabinets made is stored exactly once, and nothing else is.
async fn assert_stored_exactly_once(database_url: &str, cabinets: &[&JournalCabinet]) {
    let ids = stored_ids(database_url).await;
    let unique: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no event is stored twice");
    let made: HashSet<Uuid> = cabinets.iter().flat_map(|c| c.made.iter().map(|e| e.id)).collect();
    assert_eq!(unique, made, "exactly the events the cabinets made are stored");
}

// ─────────────────────────────── private services ───────────────────────────────

/// A private Mosquitto on a fixed port, stopped and started by the test.
struct Mosquitto {
    port: u16,
    child: Option<Child>,
}

impl Mosquitto {
    fn start(port: u16) -> Self {
        let mut m = Self { port, child: None };
        m.restart();
        m
    }

    fn restart(&mut self) {
        let child = Command::new("mosquitto")
            .args(["-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "mosquitto did not start on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Gone at once, as a crashed broker is.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private PostgreSQL cluster in a temp dir, run as the `postgres` user.
struct Postgres {
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

/// The directory of PostgreSQL's server binaries (`initdb`, `pg_ctl`), newest version first.
fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|d| d.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|d| d.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()).unwrap_or(0));
    dirs.pop()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root (initdb refuses root).
fn as_postgres(program: &str, args: &[&str]) {
    let out = pg_tool(program, args);
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn pg_tool(program: &str, args: &[&str]) -> std::process::Output {
    let bin = pg_bin().expect("PostgreSQL binaries").join(program);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args).stdin(Stdio::null()).output().expect("the PostgreSQL tool runs")
}

impl Postgres {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if is_root() {
            let chown = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(chown.success());
        }
        as_postgres("initdb", &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-sync"]);
        Self { data, port: free_port(), _dir: dir }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the cluster, in a blocking thread: the server under test shares this
    /// test's runtime and must keep running meanwhile.
    async fn up(&self) {
        let opts = format!("-p {} -c listen_addresses=127.0.0.1 -k {}", self.port, self.data.display());
        let (data, log) = (self.data.display().to_string(), self.data.join("server.log").display().to_string());
        actix_rt::task::spawn_blocking(move || {
            as_postgres("pg_ctl", &["-D", &data, "-o", &opts, "-l", &log, "-w", "start"]);
        })
        .await
        .unwrap();
    }

    /// An immediate stop: like a crash, committed data is only in the WAL.
    async fn crash(&self) {
        let data = self.data.display().to_string();
        actix_rt::task::spawn_blocking(move || as_postgres("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]))
            .await
            .unwrap();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        // Fails harmlessly when it is stopped already.
        let _ = pg_tool("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

// ─────────────────────────────────── the tests ───────────────────────────────────

#[actix_rt::test]
async fn a_broker_restart_loses_no_event() {
    let mut broker = Mosquitto::start(free_port());
    let backend = Backend { db: Db::Sqlite, mqtt: Mqtt::External { url: format!("mqtt://127.0.0.1:{}", broker.port) } };
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("acme").await;
    ts.register_cabinet("acme", "cab-a").await;
    let mut cab = JournalCabinet::connect(broker.port, ts.topics.clone(), "cab-a").await;
    for _ in 0..5 {
        cab.record();
    }
    cab.drain().await;

    broker.kill();
    ts.wait_until("readyz says the broker is gone", || async { ts.get("/readyz").await.0 == 503 }).await;
    // The cabinet keeps working while the broker is away: events wait in its journal.
    for _ in 0..5 {
        cab.record();
    }
    let sessions = cab.session_count();
    broker.restart();
    ts.wait_until("readyz is ready again", || async { ts.get("/readyz").await.0 == 200 }).await;
    cab.wait_session(sessions + 1).await;
    cab.drain().await;
    assert_eq!(cab.acked().len(), 10);
    assert_stored_exactly_once(&fx.database_url, &[&cab]).await;
    assert!(ts.metric("lockerfleet_mqtt_link_reconnects_total").await >= 1.0);
    ts.server.stop().await;
    fx.cleanup().await;
}

#[actix_rt::test]
async fn a_postgres_restart_mid_ingest_loses_no_acked_event() {
    // Only where PostgreSQL is installed (CI sets DATABASE_URL then); never the shared one.
    if Backend::postgres_embedded().is_none() {
        return;
    }
    if pg_bin().is_none() {
        // PostgreSQL answers somewhere, but its binaries are not on this machine.
        eprintln!("skipped: no PostgreSQL binaries under /usr/lib/postgresql to run a private instance");
        return;
    }
    let pg = Postgres::start();
    pg.up().await;
    let fx = Fixture::new(Backend { db: Db::Postgres { admin_url: pg.url() }, mqtt: Mqtt::Embedded }).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("acme").await;
    ts.register_cabinet("acme", "cab-a").await;
    let mut cab = JournalCabinet::connect(ts.server.mqtt_port, ts.topics.clone(), "cab-a").await;
    for _ in 0..20 {
        cab.record();
    }
    cab.drain().await;
    let acked_before = cab.acked();

    // Events in flight while the database goes down.
    for _ in 0..20 {
        cab.record();
    }
    pg.crash().await;
    ts.wait_until("readyz names the database", || async {
        let (status, body) = ts.get("/readyz").await;
        status == 503 && body["checks"]["database"] == false
    })
    .await;
    for _ in 0..20 {
        cab.record();
    }
    pg.up().await;
    ts.wait_until("readyz is ready again", || async { ts.get("/readyz").await.0 == 200 }).await;
    cab.drain().await;
    let ids: HashSet<Uuid> = stored_ids(&fx.database_url).await.into_iter().collect();
    assert!(acked_before.is_subset(&ids), "every event acked before the restart survived it");
    assert_stored_exactly_once(&fx.database_url, &[&cab]).await;
    ts.server.stop().await;
    fx.cleanup().await;
}

/// A fleet-server process on its embedded broker, on fixed ports and `database_url`.
struct ServerProcess {
    config: PathBuf,
    base: String,
    mqtt_port: u16,
    child: Option<Child>,
}

impl ServerProcess {
    fn new(dir: &Path, database_url: &str) -> Self {
        let (http_port, mqtt_port) = (free_port(), free_port());
        let config = dir.join("fleet-server.toml");
        std::fs::write(
            &config,
            format!(
                "[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
                 [mqtt]\nmode = \"embedded\"\nlisten = \"127.0.0.1:{mqtt_port}\"\n\
                 [database]\nurl = \"{database_url}\"\n\
                 [auth]\nbootstrap_token = \"{ADMIN_TOKEN}\"\ntoken_file = \"{}\"\n[log]\nlevel = \"error\"\n",
                dir.join("admin.token").display(),
            ),
        )
        .unwrap();
        Self { config, base: format!("http://127.0.0.1:{http_port}"), mqtt_port, child: None }
    }

    async fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_fleet-server"))
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        until("the fleet-server is ready", || async { self.call("GET", "/readyz", None).await.0 == 200 }).await;
    }

    fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let client = awc::Client::builder().timeout(Duration::from_secs(5)).finish();
        let url = format!("{}{path}", self.base);
        let req = if method == "GET" { client.get(url) } else { client.post(url) }.bearer_auth(ADMIN_TOKEN);
        let res = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        };
        match res {
            Ok(mut r) => {
                let bytes = r.body().await.unwrap_or_default();
                (r.status().as_u16(), serde_json::from_slice(&bytes).unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill_9();
    }
}

async fn kill_9_during_ingest(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::new(dir.path(), &fx.database_url);
    server.start().await;
    let (status, body) = server.call("POST", "/api/v1/tenants", Some(json!({"id": "acme", "name": "Acme"}))).await;
    assert_eq!(status, 201, "{body}");
    let names = ["cab-1", "cab-2", "cab-3"];
    for id in names {
        let key = lockerfleet_shared::seal::CabinetKeyPair::generate().public().to_base64();
        let (status, body) = server
            .call(
                "POST",
                "/api/v1/cabinets",
                Some(
                    json!({"id": id, "tenant": "acme", "public_key": key, "compartments": [{"id": "A1", "size": "s"}]}),
                ),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let topics = TopicSpace::new(None).unwrap();
    let mut cabs = Vec::new();
    for id in names {
        cabs.push(JournalCabinet::connect(server.mqtt_port, topics.clone(), id).await);
    }
    // Ingest under way: a first part acked, then a burst still in flight at the kill.
    for _ in 0..20 {
        for c in cabs.iter_mut() {
            c.record();
        }
    }
    until("some events are acked", || async { cabs.iter().map(|c| c.acked().len()).sum::<usize>() >= 30 }).await;
    for _ in 0..50 {
        for c in cabs.iter_mut() {
            c.record();
        }
    }
    let sessions: Vec<u64> = cabs.iter().map(JournalCabinet::session_count).collect();
    server.kill_9();
    let acked_at_kill: HashSet<Uuid> = cabs.iter().flat_map(|c| c.acked()).collect();
    let made: usize = cabs.iter().map(|c| c.made.len()).sum();
    assert!(acked_at_kill.len() < made, "some events were still unacked at the kill");
    let ids: HashSet<Uuid> = stored_ids(&fx.database_url).await.into_iter().collect();
    assert!(acked_at_kill.is_subset(&ids), "every event acked before the kill is in the database");

    server.start().await;
    for (c, sessions) in cabs.iter_mut().zip(sessions) {
        c.wait_session(sessions + 1).await;
        c.drain().await;
    }
    let all: Vec<&JournalCabinet> = cabs.iter().collect();
    assert_stored_exactly_once(&fx.database_url, &all).await;
    server.kill_9();
    fx.cleanup().await;
}

#[actix_rt::test]
async fn kill_9_of_the_server_during_ingest_loses_no_acked_event_sqlite() {
    kill_9_during_ingest(Backend::sqlite_embedded().unwrap()).await;
}

#[actix_rt::test]
async fn kill_9_of_the_server_during_ingest_loses_no_acked_event_postgres() {
    if let Some(b) = Backend::postgres_embedded() {
        kill_9_during_ingest(b).await;
    }
}

#[actix_rt::test]
async fn a_cabinet_clock_hours_off_keeps_its_order_and_the_server_keeps_its_own_time() {
    let fx = Fixture::new(Backend::sqlite_embedded().unwrap()).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("acme").await;
    ts.register_cabinet("acme", "cab-a").await;
    let mut cab = JournalCabinet::connect(ts.server.mqtt_port, ts.topics.clone(), "cab-a").await;
    let now = chrono::Utc::now();
    let hours = chrono::Duration::hours(6);
    // Its clock jumps ahead, then back behind real time (an NTP fix, a dead RTC battery).
    let ahead = cab.record_at(now + hours);
    let behind = cab.record_at(now - hours);
    let right = cab.record_at(now);
    cab.drain().await;
    let (status, list) = ts.get("/api/v1/cabinets/cab-a/events").await;
    assert_eq!(status, 200, "{list}");
    let list = list.as_array().unwrap();
    let ids: Vec<&str> = list.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let expected = [right, behind, ahead].map(|u| u.to_string());
    assert_eq!(ids, expected.iter().map(String::as_str).collect::<Vec<_>>(), "ordered by seq, not by clock");
    for e in list {
        let received: chrono::DateTime<chrono::Utc> = e["received_at"].as_str().unwrap().parse().unwrap();
        assert!((received - now).num_seconds().abs() < 60, "received_at is the server's clock: {e}");
    }
    let at_of = |id: Uuid| -> chrono::DateTime<chrono::Utc> {
        let e = list.iter().find(|e| e["id"] == id.to_string()).unwrap();
        e["at"].as_str().unwrap().parse().unwrap()
    };
    assert_eq!(at_of(ahead), now + hours, "the cabinet's own time is kept as reported");
    assert_eq!(at_of(behind), now - hours);
    ts.server.stop().await;
    fx.cleanup().await;
}

/// A server whose tenant `acme` (cabinet `cab-a`, courier `k-1`) has its webhooks at
/// `url`, and the courier's MQTT topic subscribed.
async fn webhook_world(url: &str) -> (Fixture, TestServer, Subscriber) {
    let fx = Fixture::new(Backend::sqlite_embedded().unwrap()).await;
    let mut config = fx.config();
    // The test's endpoints listen on loopback.
    config.webhooks.allow_private_targets = true;
    let ts = fx.start(config).await;
    ts.create_tenant("acme").await;
    ts.register_cabinet("acme", "cab-a").await;
    assert_eq!(ts.post("/api/v1/couriers", &json!({"id": "k-1", "tenant": "acme", "name": "Kim"})).await.0, 201);
    let (status, body) =
        ts.request("PATCH", "/api/v1/tenants/acme", Some(&ts.token), Some(&json!({"webhook_url": url}))).await;
    assert_eq!(status, 200, "{body}");
    let topic = ts.topics.courier_assignments(&CourierId::new("k-1").unwrap());
    let courier = Subscriber::new(&ts.server.mqtt_host, ts.server.mqtt_port, &topic).await;
    (fx, ts, courier)
}

async fn new_parcel(ts: &TestServer, reference: &str) -> String {
    let (status, created) = ts
        .post(
            "/api/v1/parcels",
            &json!({"tenant": "acme", "reference": reference, "courier": "k-1", "size": "s", "cabinet": "cab-a"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

/// The parcel an MQTT courier note is about.
fn note_parcel(payload: &[u8]) -> String {
    let v: Value = serde_json::from_slice(payload).unwrap();
    v["body"]["data"]["parcel"].as_str().unwrap().to_owned()
}

async fn webhook_rows(ts: &TestServer) -> Vec<fleet_server::store::entities::outbox::Model> {
    use fleet_server::store::entities::outbox;
    use sea_orm::{ColumnTrait, QueryFilter};
    outbox::Entity::find()
        .filter(outbox::Column::Channel.eq("webhook"))
        .all(ts.server.store.connection())
        .await
        .unwrap()
}

#[actix_rt::test]
async fn a_slow_webhook_times_out_without_holding_up_other_notifications() {
    // An endpoint that accepts the connection and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (fx, ts, mut courier) = webhook_world(&url).await;

    let first = new_parcel(&ts, "TRK-1").await;
    assert_eq!(note_parcel(&courier.next("the first assignment").await.1), first);
    let (mut held, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the webhook is attempted")
        .unwrap();
    // Read the request and never answer; note when the client hangs up.
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let closed_by_client = closed.clone();
    actix_rt::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while tokio::io::AsyncReadExt::read(&mut held, &mut buf).await.is_ok_and(|n| n > 0) {}
        closed_by_client.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    // While that request hangs, the next parcel's courier note goes out all the same.
    let second = new_parcel(&ts, "TRK-2").await;
    assert_eq!(note_parcel(&courier.next("the second assignment").await.1), second);
    assert!(
        !closed.load(std::sync::atomic::Ordering::SeqCst),
        "the second note arrived while the first webhook was still hanging"
    );
    // The hanging request is given up after the client's timeout (5 s) and retried later.
    ts.wait_until("the client hangs up", || async { closed.load(std::sync::atomic::Ordering::SeqCst) }).await;
    ts.wait_until("the failure is recorded on its row", || async {
        webhook_rows(&ts).await.iter().any(|r| r.last_error.is_some())
    })
    .await;
    assert!(ts.metric("lockerfleet_notifications_total{channel=\"webhook\",outcome=\"failed\"}").await >= 1.0);
    let rows = webhook_rows(&ts).await;
    let failed = rows.iter().find(|r| r.last_error.is_some()).unwrap();
    assert!(failed.attempts >= 1);
    assert!(failed.delivered_at.is_none());
    assert!(failed.last_error.as_deref().unwrap_or("").contains("webhook request failed"), "{:?}", failed.last_error);
    assert!(failed.next_attempt_at > chrono::Utc::now(), "retried later, not at once");
    ts.server.stop().await;
    fx.cleanup().await;
}

#[actix_rt::test]
async fn a_dead_webhook_is_retried_with_bounded_backoff_and_blocks_nothing() {
    // Nothing listens on this port: every attempt is refused at once.
    let url = format!("http://127.0.0.1:{}/hook", free_port());
    let (fx, ts, mut courier) = webhook_world(&url).await;
    let mut parcels = Vec::new();
    // The cabinet has room for two small parcels.
    for i in 0..2 {
        parcels.push(new_parcel(&ts, &format!("TRK-{i}")).await);
    }
    let mut noted = Vec::new();
    for _ in 0..2 {
        noted.push(note_parcel(&courier.next("an assignment").await.1));
    }
    assert_eq!(noted, parcels, "every courier note is delivered, in order");
    ts.wait_for_metric("lockerfleet_notifications_total{channel=\"webhook\",outcome=\"failed\"}", 2.0).await;
    ts.wait_until("both failures are recorded on their rows", || async {
        webhook_rows(&ts).await.iter().filter(|r| r.last_error.is_some()).count() == 2
    })
    .await;
    let rows = webhook_rows(&ts).await;
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert!(r.delivered_at.is_none());
        assert!(r.last_error.is_some());
        // After a failure the next attempt waits (2 s at first, with jitter) and never
        // more than an hour and a fifth.
        let wait = r.next_attempt_at - chrono::Utc::now();
        assert!(wait > chrono::Duration::zero() && wait <= chrono::Duration::seconds(4320), "{wait}");
    }
    ts.server.stop().await;
    fx.cleanup().await;
}
