//! Replicas for real: three `fleet-server` processes on one PostgreSQL database and the
//! external broker (Mosquitto in CI) share the cabinets' traffic through an MQTT shared
//! subscription. While cabinets stream journal events, parcels are being created and
//! expiry timers are due, one replica is killed with SIGKILL. Afterwards:
//!
//! * every event a cabinet journaled is stored exactly once and was acked (cabinets resend
//!   what was not acked, as the edge agent's journal does, and the other replicas take it);
//! * every courier notification was delivered — at least once, each with one envelope id
//!   receivers deduplicate on — and none is left in the outbox;
//! * every expiry fired exactly once, whichever replica's sweeper got there first.
//!
//! Needs `DATABASE_URL` and `MQTT_EXTERNAL_URL`; skipped (or failed, when
//! `LOCKERFLEET_REQUIRE_BACKENDS` names them) without them.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

use common::{Backend, FakeCabinet, Fixture, Mqtt, Subscriber};
use fleet_server::store::entities::{cabinet_event, outbox, parcel, parcel_event};
use lockerfleet_shared::envelope::{CabinetEvent, CourierBody, DownBody, EventBatch, EventKind, UpBody, decode};
use lockerfleet_shared::{CompartmentId, CourierId, ParcelId, TopicSpace};
use sea_orm::{ColumnTrait, ConnectionTrait, Database, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect};
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

const REPLICAS: usize = 3;
const CABINETS: usize = 24;
const EVENTS_PER_CABINET: usize = 120;
/// Where in each cabinet's stream its first parcel's deposit comes.
const DEPOSIT_AT: usize = 3;
/// Each cabinet holds its stream here until the test lets it go on, so the kill always
/// lands while events are in flight.
const HOLD_AT: usize = 40;

/// One `fleet-server` process, killed when the test ends however it ends.
struct Replica {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts replica `i`; [`Replica::ready`] waits for it.
fn spawn_replica(dir: &Path, i: usize, fx: &Fixture) -> Replica {
    let Mqtt::External { url } = &fx.backend.mqtt else { unreachable!("replicas run on the external broker") };
    let port = free_port();
    let config = dir.join(format!("replica-{i}.toml"));
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n\
             [mqtt]\nmode = \"external\"\nurl = \"{url}\"\nnamespace = \"{ns}\"\nshared_group = \"fleet\"\n\
             client_id = \"{ns}-replica-{i}\"\nprobe_interval_s = 1\n\
             [database]\nurl = \"{db}\"\nmax_connections = 4\n\
             [presence]\nflush_interval_ms = 200\n\
             [parcels]\nexpiry_sweep_s = 1\n\
             [outbox]\nclaim_lease_s = 10\n\
             [artifacts]\ndir = \"{art}\"\n\
             [auth]\nbootstrap_token = \"{token}\"\ntoken_file = \"{tf}\"\n",
            ns = fx.namespace.as_deref().unwrap(),
            db = fx.database_url,
            art = dir.join(format!("artifacts-{i}")).display(),
            token = common::ADMIN_TOKEN,
            tf = dir.join(format!("admin-{i}.token")).display(),
        ),
    )
    .unwrap();
    let log_path = dir.join(format!("replica-{i}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_fleet-server"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Replica { child, base: format!("http://127.0.0.1:{port}"), log: log_path }
}

impl Replica {
    async fn ready(&mut self, http: &awc::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while call(http, "GET", &format!("{}/readyz", self.base), None).await.0 != 200 {
            if let Some(exit) = self.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("replica {} exited while starting: {exit}\n{log}", self.base);
            }
            assert!(Instant::now() < deadline, "replica {} not ready within 60 s", self.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn call(http: &awc::Client, method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let req = if method == "GET" { http.get(url) } else { http.post(url) }.bearer_auth(common::ADMIN_TOKEN);
    let res = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    };
    match res {
        Ok(mut res) => {
            let bytes = res.body().await.unwrap_or_default();
            (res.status().as_u16(), serde_json::from_slice(&bytes).unwrap_or(Value::Null))
        }
        // A replica that was just killed answers nothing.
        Err(_) => (0, Value::Null),
    }
}

async fn until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates a parcel for `cabinet` through the first replica in `bases` that answers.
async fn create_parcel(http: &awc::Client, bases: &[String], cabinet: &str, reference: &str) -> ParcelId {
    for base in bases {
        let body = json!({"tenant": "acme", "reference": reference, "courier": "k-1", "size": "s", "cabinet": cabinet});
        let (status, created) = call(http, "POST", &format!("{base}/api/v1/parcels"), Some(body)).await;
        if status == 201 {
            assert_eq!(created["cabinet"], cabinet, "{created}");
            return ParcelId(Uuid::parse_str(created["id"].as_str().unwrap()).unwrap());
        }
        assert_eq!(status, 0, "only a dead replica may fail to create a parcel: {created}");
    }
    panic!("no replica created the parcel {reference}");
}

/// A cabinet's journal: sends its events in small batches (holding at [`HOLD_AT`] until
/// `go`), resends whatever has not been acked within a second and a half, and ends when
/// every event is acked.
async fn stream(
    mut cab: FakeCabinet,
    events: Vec<CabinetEvent>,
    acked_total: Rc<Cell<usize>>,
    go: tokio::sync::watch::Receiver<bool>,
) -> usize {
    let mut acked = HashSet::new();
    let mut sent_at: HashMap<Uuid, Instant> = HashMap::new();
    let mut next = 0;
    let mut resent = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut tick = tokio::time::interval(Duration::from_millis(40));
    while acked.len() < events.len() {
        assert!(Instant::now() < deadline, "{}: only {} of {} events acked", cab.id, acked.len(), events.len());
        let batch = tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                let mut batch: Vec<CabinetEvent> = Vec::new();
                for e in &events[..next] {
                    if batch.len() < 50 && !acked.contains(&e.id) && now - sent_at[&e.id] > Duration::from_millis(1500) {
                        batch.push(e.clone());
                        resent += 1;
                    }
                }
                while next < events.len() && batch.len() < 2 && (next < HOLD_AT || *go.borrow()) {
                    batch.push(events[next].clone());
                    next += 1;
                }
                for e in &batch {
                    sent_at.insert(e.id, now);
                }
                batch
            }
            Some(env) = cab.down.recv() => {
                if let DownBody::Ack(a) = env.body {
                    for id in a.events {
                        if sent_at.contains_key(&id) && acked.insert(id) {
                            acked_total.set(acked_total.get() + 1);
                        }
                    }
                }
                Vec::new()
            }
        };
        if !batch.is_empty() {
            cab.send(UpBody::Events(EventBatch { events: batch })).await;
        }
    }
    resent
}

/// `n` replicas on one PostgreSQL database and the external broker, and what a test
/// needs to talk to them.
struct Cluster {
    fx: Fixture,
    dir: tempfile::TempDir,
    http: awc::Client,
    broker: fleet_server::config::BrokerAddr,
    topics: TopicSpace,
    replicas: Vec<Replica>,
}

impl Cluster {
    /// Started all at once on an empty database, as a deployment starts them: the
    /// migrations run once (the others wait for them) and the bootstrap token is
    /// registered once. `None` without PostgreSQL and an external broker.
    async fn start(n: usize, http_timeout: Duration) -> Option<Self> {
        let fx = Fixture::new(Backend::postgres_external()?).await;
        let dir = tempfile::tempdir().unwrap();
        let http = awc::Client::builder().timeout(http_timeout).finish();
        let Mqtt::External { url } = &fx.backend.mqtt else { unreachable!() };
        let broker = fleet_server::config::parse_broker_url(url).unwrap();
        let topics = TopicSpace::new(fx.namespace.as_deref()).unwrap();
        let mut replicas: Vec<Replica> = (0..n).map(|i| spawn_replica(dir.path(), i, &fx)).collect();
        for r in &mut replicas {
            r.ready(&http).await;
        }
        Some(Self { fx, dir, http, broker, topics, replicas })
    }
}

#[actix_rt::test]
async fn three_replicas_lose_nothing_when_one_is_killed_mid_stream() {
    let Some(Cluster { fx, dir: _dir, http, broker, topics, mut replicas }) =
        Cluster::start(REPLICAS, Duration::from_secs(10)).await
    else {
        return;
    };
    let bases: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();
    let api = |path: &str| format!("{}/api/v1{path}", bases[0]);
    assert_eq!(call(&http, "POST", &api("/tenants"), Some(json!({"id": "acme", "name": "Acme"}))).await.0, 201);
    let courier_body = json!({"id": "k-1", "tenant": "acme", "name": "Kim"});
    assert_eq!(call(&http, "POST", &api("/couriers"), Some(courier_body)).await.0, 201);
    let ids: Vec<String> = (0..CABINETS).map(|i| format!("cab-{i:02}")).collect();
    for id in &ids {
        let keys = lockerfleet_shared::seal::CabinetKeyPair::generate();
        let body = json!({"id": id, "tenant": "acme", "public_key": keys.public().to_base64(),
                          "compartments": [{"id": "A1", "size": "s"}, {"id": "A2", "size": "s"}]});
        let (status, r) = call(&http, "POST", &api("/cabinets"), Some(body)).await;
        assert_eq!(status, 201, "{r}");
    }
    let courier_topic = topics.courier_assignments(&CourierId::new("k-1").unwrap());
    let mut courier = Subscriber::new(&broker.host, broker.port, &courier_topic).await;

    // Each cabinet's first parcel, spread over the replicas' APIs.
    let mut first = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let spread: Vec<String> = bases.iter().cycle().skip(i).take(REPLICAS).cloned().collect();
        first.insert(id.clone(), create_parcel(&http, &spread, id, &format!("first-{id}")).await);
    }

    // Every cabinet's journal: a deposit of its first parcel early on, then traffic.
    let acked_total = Rc::new(Cell::new(0usize));
    let (go, gate) = tokio::sync::watch::channel(false);
    let mut journaled: HashMap<Uuid, String> = HashMap::new();
    let mut streams = Vec::new();
    for id in &ids {
        let cab = FakeCabinet::connect(&broker.host, broker.port, topics.clone(), id).await;
        let events: Vec<CabinetEvent> = (0..EVENTS_PER_CABINET)
            .map(|n| CabinetEvent {
                id: Uuid::now_v7(),
                seq: n as u64 + 1,
                at: chrono::Utc::now(),
                what: if n == DEPOSIT_AT {
                    EventKind::Deposit {
                        parcel: first[id],
                        compartment: CompartmentId::new("A1").unwrap(),
                        courier: CourierId::new("k-1").unwrap(),
                    }
                } else {
                    EventKind::FailedMatch { reason: format!("no_face #{n}") }
                },
            })
            .collect();
        journaled.extend(events.iter().map(|e| (e.id, id.clone())));
        streams.push(actix_rt::spawn(stream(cab, events, acked_total.clone(), gate.clone())));
    }

    // The first parcels become ready as their deposits are ingested; then their pickup
    // windows are made to run out, so every sweeper has expiries due when the kill comes.
    let db = Database::connect(fx.database_url.as_str()).await.unwrap();
    let first_ids: Vec<Uuid> = first.values().map(|p| p.0).collect();
    until("every first parcel is ready", Duration::from_secs(60), || async {
        let ready = parcel::Entity::find()
            .filter(parcel::Column::Id.is_in(first_ids.clone()))
            .filter(parcel::Column::State.eq("ready"))
            .count(&db)
            .await
            .unwrap();
        ready == CABINETS as u64
    })
    .await;
    let past = chrono::Utc::now() - chrono::Duration::minutes(1);
    let moved = parcel::Entity::update_many()
        .col_expr(parcel::Column::Deadline, sea_orm::sea_query::Expr::value(Some(past)))
        .filter(parcel::Column::Id.is_in(first_ids.clone()))
        .exec(&db)
        .await
        .unwrap();
    assert_eq!(moved.rows_affected, CABINETS as u64);

    // Mid-stream: the held part acked, the rest let go and starting to arrive. The replica
    // that dies holds some events in its ingest buffer, some expiries and notifications.
    until("the held part of every stream is acked", Duration::from_secs(60), || async {
        acked_total.get() >= CABINETS * HOLD_AT
    })
    .await;
    go.send(true).unwrap();
    until("the rest of the streams is under way", Duration::from_secs(60), || async {
        acked_total.get() >= CABINETS * (HOLD_AT + 10)
    })
    .await;
    let mut victim = replicas.remove(1);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    assert!(
        acked_total.get() < CABINETS * EVENTS_PER_CABINET,
        "the kill came after the stream ended: nothing was tested"
    );
    let survivors: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();

    // Parcels keep coming through the surviving replicas while the stream goes on.
    let mut second = BTreeMap::new();
    for id in &ids {
        second.insert(id.clone(), create_parcel(&http, &survivors, id, &format!("second-{id}")).await);
    }
    let mut resent = 0;
    for s in streams {
        resent += s.await.unwrap();
    }

    // Every journaled event stored exactly once.
    let stored: Vec<(Uuid, String)> = cabinet_event::Entity::find()
        .select_only()
        .column(cabinet_event::Column::Id)
        .column(cabinet_event::Column::CabinetId)
        .into_tuple()
        .all(&db)
        .await
        .unwrap();
    assert_eq!(stored.len(), journaled.len(), "stored {} events of {} journaled", stored.len(), journaled.len());
    for (id, cabinet) in &stored {
        assert_eq!(journaled.get(id), Some(cabinet), "event {id} stored for the wrong cabinet or never journaled");
    }
    let dupes = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) AS n FROM (SELECT cabinet_id, seq FROM cabinet_events GROUP BY cabinet_id, seq HAVING count(*) > 1) d",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(dupes, 0, "a (cabinet, seq) stored twice");

    // Every first parcel expired exactly once, by a timer.
    until("every first parcel has expired", Duration::from_secs(30), || async {
        let expired = parcel_event::Entity::find()
            .filter(parcel_event::Column::ParcelId.is_in(first_ids.clone()))
            .filter(parcel_event::Column::ToState.eq("expired"))
            .count(&db)
            .await
            .unwrap();
        expired >= CABINETS as u64
    })
    .await;
    let expiries: Vec<(Uuid, String)> = parcel_event::Entity::find()
        .select_only()
        .column(parcel_event::Column::ParcelId)
        .column(parcel_event::Column::Source)
        .filter(parcel_event::Column::ToState.eq("expired"))
        .into_tuple()
        .all(&db)
        .await
        .unwrap();
    let mut per_parcel: BTreeMap<Uuid, usize> = BTreeMap::new();
    for (parcel, source) in &expiries {
        assert_eq!(source, "timer");
        *per_parcel.entry(*parcel).or_default() += 1;
    }
    assert_eq!(per_parcel.len(), CABINETS, "{per_parcel:?}");
    assert!(per_parcel.values().all(|n| *n == 1), "an expiry fired twice: {per_parcel:?}");

    // Every notification delivered: an assignment for each parcel, a collection for each
    // expired one, each with exactly one envelope id however often it arrived.
    let mut wanted: BTreeSet<(&str, Uuid)> = BTreeSet::new();
    wanted.extend(first.values().chain(second.values()).map(|p| ("assignment", p.0)));
    wanted.extend(first.values().map(|p| ("collection", p.0)));
    let mut envelopes: BTreeMap<(&str, Uuid), BTreeSet<Uuid>> = BTreeMap::new();
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(40);
    while !wanted.iter().all(|k| envelopes.contains_key(k)) {
        let missing = wanted.iter().filter(|k| !envelopes.contains_key(*k)).count();
        assert!(Instant::now() < deadline, "{missing} courier notifications never arrived");
        let Ok(Some((_, payload))) = tokio::time::timeout_at(deadline, courier.rx.recv()).await else { continue };
        let env = decode::<CourierBody>(&payload, 1 << 20).unwrap();
        received += 1;
        let key = match env.body {
            CourierBody::Assignment(t) => ("assignment", t.parcel.0),
            CourierBody::Collection(t) => ("collection", t.parcel.0),
            CourierBody::Withdrawn(t) => ("withdrawn", t.parcel.0),
        };
        envelopes.entry(key).or_default().insert(env.id);
    }
    assert!(!envelopes.keys().any(|(kind, _)| *kind == "withdrawn"), "nothing was withdrawn: {envelopes:?}");
    for (key, ids) in &envelopes {
        assert_eq!(ids.len(), 1, "{key:?} was queued more than once: {ids:?}");
    }
    until("the outbox is empty", Duration::from_secs(30), || async {
        outbox::Entity::find().filter(outbox::Column::DeliveredAt.is_null()).count(&db).await.unwrap() == 0
    })
    .await;
    eprintln!(
        "{} events stored once ({resent} resent after the kill or a slow ack); {received} notifications received \
         for {} distinct ones",
        stored.len(),
        wanted.len()
    );

    drop(replicas);
    drop(db);
    fx.cleanup().await;
}

/// Replicas share the cabinets' presence messages, so each sees only some of them; the
/// console's live stream must still show every cabinet going online and offline,
/// whichever replica the console is connected to, and nothing that did not happen.
#[actix_rt::test]
async fn every_replicas_live_stream_shows_every_cabinets_presence() {
    const N: usize = 8;
    let Some(Cluster { fx, dir: _dir, http, broker, topics, replicas }) =
        Cluster::start(2, Duration::from_secs(60)).await
    else {
        return;
    };
    let api = |path: &str| format!("{}/api/v1{path}", replicas[0].base);
    assert_eq!(call(&http, "POST", &api("/tenants"), Some(json!({"id": "acme", "name": "Acme"}))).await.0, 201);
    let ids: BTreeSet<String> = (0..N).map(|i| format!("cab-{i:02}")).collect();
    for id in &ids {
        let keys = lockerfleet_shared::seal::CabinetKeyPair::generate();
        let body = json!({"id": id, "tenant": "acme", "public_key": keys.public().to_base64(),
                          "compartments": [{"id": "A1", "size": "s"}]});
        assert_eq!(call(&http, "POST", &api("/cabinets"), Some(body)).await.0, 201);
    }
    let mut streams = Vec::new();
    for r in &replicas {
        let mut res =
            http.get(format!("{}/api/v1/live", r.base)).bearer_auth(common::ADMIN_TOKEN).send().await.unwrap();
        let mut buf = String::new();
        common::next_frame(&mut res, &mut buf, |f| f.starts_with("event: ready")).await;
        streams.push((res, buf));
    }
    // The presence frames each stream carries, until every cabinet has shown `online`.
    async fn transitions<S, E>(stream: &mut (S, String), ids: &BTreeSet<String>, online: bool) -> Vec<(String, bool)>
    where
        S: futures_util::Stream<Item = Result<actix_web::web::Bytes, E>> + Unpin,
        E: std::fmt::Debug,
    {
        let mut got = Vec::new();
        let mut pending = ids.clone();
        while !pending.is_empty() {
            let f = common::next_frame(&mut stream.0, &mut stream.1, |f| f.starts_with("event: presence")).await;
            let data: Value = serde_json::from_str(f.split_once("data: ").unwrap().1).unwrap();
            let (cabinet, is_online) = (data["cabinet"].as_str().unwrap().to_owned(), data["online"] == true);
            if is_online == online {
                pending.remove(&cabinet);
            }
            got.push((cabinet, is_online));
        }
        got
    }

    let mut cabinets = Vec::new();
    for id in &ids {
        cabinets.push(FakeCabinet::connect(&broker.host, broker.port, topics.clone(), id).await);
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        let seen = transitions(stream, &ids, true).await;
        assert!(
            seen.iter().all(|(_, online)| *online),
            "replica {i} showed a cabinet offline while all were up: {seen:?}"
        );
    }
    for cab in cabinets {
        cab.kill();
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        let seen = transitions(stream, &ids, false).await;
        let mut offline: Vec<&String> = seen.iter().filter(|(_, online)| !online).map(|(c, _)| c).collect();
        offline.sort();
        offline.dedup();
        assert_eq!(offline.len(), N, "replica {i}: {seen:?}");
    }
    drop(streams);
    drop(replicas);
    fx.cleanup().await;
}
