//! Test harness: a real fleet-server in-process, on real backends.
//!
//! Every suite runs against SQLite + the embedded rumqttd, and additionally against
//! PostgreSQL when `DATABASE_URL` is set and against an external broker (Mosquitto in CI)
//! when `MQTT_EXTERNAL_URL` is set. A variable named in `LOCKERFLEET_REQUIRE_BACKENDS`
//! (set by `.ci/run` for the services it finds) must be set, or the test fails instead
//! of skipping, so CI can never pass by silently leaving a backend out.
//!
//! Isolation: each test gets its own SQLite file or its own PostgreSQL database, and
//! on an external broker its own topic namespace.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use fleet_server::config::{BrokerMode, Config};
use fleet_server::{RunningServer, start};
use lockerfleet_shared::envelope::{
    CompartmentInfo, CompartmentSize, DownBody, Heartbeat, Hello, PresenceBody, Session, Slot, UpBody, decode,
};
use lockerfleet_shared::{CabinetId, CompartmentId, Envelope, TopicSpace};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

/// The fleet-admin token every test server is bootstrapped with.
pub const ADMIN_TOKEN: &str = "lf_test-admin-token-0123456789abcdef";

/// Which database a test runs on.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite,
    Postgres { admin_url: String },
}

/// Which broker a test runs on.
#[derive(Debug, Clone)]
pub enum Mqtt {
    Embedded,
    External { url: String },
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub db: Db,
    pub mqtt: Mqtt,
}

fn required(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let required = std::env::var("LOCKERFLEET_REQUIRE_BACKENDS").unwrap_or_default();
            if required.split([' ', ',']).any(|r| r == var) {
                panic!("{var} is not set but LOCKERFLEET_REQUIRE_BACKENDS requires this backend");
            }
            eprintln!("skipped: {var} is not set");
            None
        }
    }
}

impl Backend {
    pub fn sqlite_embedded() -> Option<Self> {
        Some(Self { db: Db::Sqlite, mqtt: Mqtt::Embedded })
    }

    pub fn postgres_embedded() -> Option<Self> {
        Some(Self { db: Db::Postgres { admin_url: required("DATABASE_URL")? }, mqtt: Mqtt::Embedded })
    }

    /// PostgreSQL and the external broker together: what replicas run on.
    pub fn postgres_external() -> Option<Self> {
        let db = required("DATABASE_URL");
        let mqtt = required("MQTT_EXTERNAL_URL");
        Some(Self { db: Db::Postgres { admin_url: db? }, mqtt: Mqtt::External { url: mqtt? } })
    }

    pub fn sqlite_external() -> Option<Self> {
        Some(Self { db: Db::Sqlite, mqtt: Mqtt::External { url: required("MQTT_EXTERNAL_URL")? } })
    }
}

/// Generates one `#[actix_rt::test]` per backend for each named scenario
/// `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite_embedded {
            $(#[actix_rt::test] async fn $name() {
                if let Some(b) = $crate::common::Backend::sqlite_embedded() { super::$name(b).await }
            })*
        }
        mod postgres_embedded {
            $(#[actix_rt::test] async fn $name() {
                if let Some(b) = $crate::common::Backend::postgres_embedded() { super::$name(b).await }
            })*
        }
        mod sqlite_external_broker {
            $(#[actix_rt::test] async fn $name() {
                if let Some(b) = $crate::common::Backend::sqlite_external() { super::$name(b).await }
            })*
        }
    };
}

/// Replaces the database name in a PostgreSQL URL.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

/// Where a test's data lives; kept so a restarted server finds the same data.
#[derive(Debug)]
pub struct Fixture {
    pub backend: Backend,
    pub database_url: String,
    pub namespace: Option<String>,
    pg_cleanup: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (database_url, pg_cleanup) = match &backend.db {
            Db::Sqlite => (format!("sqlite://{}?mode=rwc", dir.path().join("fleet.db").display()), None),
            Db::Postgres { admin_url } => {
                let name = format!("lf_t_{}", Uuid::new_v4().simple());
                let admin = Database::connect(admin_url.as_str()).await.expect("connect to DATABASE_URL");
                admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create test database");
                (with_database(admin_url, &name), Some((admin_url.clone(), name)))
            }
        };
        let namespace = match backend.mqtt {
            Mqtt::Embedded => None,
            Mqtt::External { .. } => Some(format!("t{}", Uuid::new_v4().simple())),
        };
        Self { backend, database_url, namespace, pg_cleanup, _dir: dir }
    }

    /// A configuration for this fixture; tests adjust it before starting.
    pub fn config(&self) -> Config {
        let mut c = Config::default();
        c.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c.database.url = self.database_url.clone();
        c.database.max_connections = 4;
        c.mqtt.namespace = self.namespace.clone();
        c.mqtt.probe_interval_s = 1;
        c.presence.flush_interval_ms = 100;
        c.auth.bootstrap_token = Some(ADMIN_TOKEN.to_owned());
        match &self.backend.mqtt {
            Mqtt::Embedded => {
                c.mqtt.mode = BrokerMode::Embedded;
                c.mqtt.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            }
            Mqtt::External { url } => {
                c.mqtt.mode = BrokerMode::External;
                c.mqtt.url = Some(url.clone());
            }
        }
        c
    }

    pub async fn start(&self, config: Config) -> TestServer {
        // `LF_TEST_LOG=debug` shows the server's logs for a failing test.
        if let Ok(filter) = std::env::var("LF_TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let server = start(config.clone()).await.expect("server starts");
        let ts = TestServer {
            base: format!("http://{}", server.http_addr),
            topics: config.topics(),
            // Pooled connections go well before the server's 5 s keep-alive, so no request
            // is sent on a connection the server is just closing.
            http: awc::Client::builder()
                .timeout(Duration::from_secs(10))
                .connector(awc::Connector::new().conn_keep_alive(Duration::from_secs(1)))
                .finish(),
            token: ADMIN_TOKEN.to_owned(),
            server,
        };
        ts.wait_until("the server is ready", || async { ts.get("/readyz").await.0 == 200 }).await;
        ts
    }

    /// Drops the PostgreSQL test database (SQLite files go with the temp dir).
    pub async fn cleanup(self) {
        if let Some((admin_url, name)) = &self.pg_cleanup
            && let Ok(admin) = Database::connect(admin_url.as_str()).await
        {
            let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
        }
    }
}

/// A running server and an HTTP client for it.
pub struct TestServer {
    pub server: RunningServer,
    pub base: String,
    pub topics: TopicSpace,
    http: awc::Client,
    /// The bearer token requests are made with.
    pub token: String,
}

impl TestServer {
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, Some(&self.token), None).await
    }

    pub async fn get_text(&self, path: &str) -> String {
        let mut res = self.http.get(format!("{}{path}", self.base)).send().await.expect("GET");
        let body = res.body().limit(16 * 1024 * 1024).await.expect("body");
        String::from_utf8_lossy(&body).into_owned()
    }

    /// The same server seen with another token.
    pub fn with_token(&self, token: &str) -> TestClient<'_> {
        TestClient { server: self, token: token.to_owned() }
    }

    pub async fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.http.get(url),
            "POST" => self.http.post(url),
            "PUT" => self.http.put(url),
            "DELETE" => self.http.delete(url),
            "PATCH" => self.http.patch(url),
            other => panic!("method {other}"),
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let mut res = match body {
            Some(b) => req.send_json(b).await.expect("request"),
            None => req.send().await.expect("request"),
        };
        let status = res.status().as_u16();
        let body = res.body().limit(16 * 1024 * 1024).await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Makes a token and returns its secret.
    pub async fn make_token(&self, role: &str, tenant: Option<&str>, courier: Option<&str>) -> String {
        let (status, body) = self
            .post(
                "/api/v1/tokens",
                &json!({"name": format!("{role} test"), "role": role, "tenant": tenant, "courier": courier}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().expect("token secret").to_owned()
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("POST", path, Some(&self.token), Some(body)).await
    }

    /// A sample value from `/metrics`, e.g. `lockerfleet_rejected_messages_total{reason="too_large"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        self.get_text("/metrics")
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .map(|v| v.trim().parse().expect("metric value is a number"))
            .unwrap_or(0.0)
    }

    /// Polls `check` until it holds; fails the test with `what` after 15 s.
    pub async fn wait_until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if check().await {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn wait_for_metric(&self, series: &str, at_least: f64) {
        self.wait_until(&format!("{series} >= {at_least}"), || async { self.metric(series).await >= at_least }).await;
    }

    pub async fn create_tenant(&self, id: &str) {
        let (status, body) = self.post("/api/v1/tenants", &json!({"id": id, "name": id})).await;
        assert_eq!(status, 201, "{body}");
    }

    /// Registers a cabinet with two compartments and returns its key pair.
    pub async fn register_cabinet(&self, tenant: &str, id: &str) -> lockerfleet_shared::seal::CabinetKeyPair {
        self.register_cabinet_with_login(tenant, id).await.0
    }

    /// Registers a cabinet with two compartments; returns its key pair and the MQTT
    /// login the registration issued.
    pub async fn register_cabinet_with_login(
        &self,
        tenant: &str,
        id: &str,
    ) -> (lockerfleet_shared::seal::CabinetKeyPair, MqttAuth) {
        let keys = lockerfleet_shared::seal::CabinetKeyPair::generate();
        let (status, body) = self
            .post(
                "/api/v1/cabinets",
                &json!({
                    "id": id, "tenant": tenant, "public_key": keys.public().to_base64(),
                    "compartments": [{"id": "A1", "size": "s"}, {"id": "A2", "size": "m", "low": true}],
                }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let login = &body["mqtt_credentials"];
        assert_eq!(login["username"], id, "{body}");
        let password = login["password"].as_str().expect("registration returns the MQTT password").to_owned();
        (keys, MqttAuth { login: Some((id.to_owned(), password)), tls: None })
    }

    pub async fn cabinet_view(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/cabinets/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Connects a scripted cabinet (a plain MQTT client, not the edge agent).
    pub async fn connect_cabinet(&self, id: &str) -> FakeCabinet {
        FakeCabinet::connect(&self.server.mqtt_host, self.server.mqtt_port, self.topics.clone(), id).await
    }

    /// Connects a scripted cabinet with a login and, optionally, TLS.
    pub async fn connect_cabinet_as(&self, id: &str, auth: &MqttAuth) -> FakeCabinet {
        FakeCabinet::connect_as(&self.server.mqtt_host, self.server.mqtt_port, self.topics.clone(), id, auth).await
    }
}

/// A CA, and a server certificate it signed for 127.0.0.1 and localhost, as PEM files
/// made at test time (no private key is ever committed).
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca_file: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// A client that trusts the CA.
    pub client: std::sync::Arc<lockerfleet_shared::tls::rustls::ClientConfig>,
}

impl TestPki {
    pub fn generate() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "Lockerfleet test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("server params");
        params.distinguished_name.push(DnType::CommonName, "lockerfleet broker");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("server certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let (ca_file, cert_file, key_file) =
            (dir.path().join("ca.pem"), dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&ca_file, ca.pem()).expect("write CA");
        std::fs::write(&cert_file, cert.pem()).expect("write certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        let client = lockerfleet_shared::tls::client_config(ca.pem().as_bytes()).expect("client TLS settings");
        Self { dir, ca_file, cert: cert_file, key: key_file, client }
    }
}

/// How a test client logs in to the broker: a username and password, and TLS settings.
/// The default is anonymous plain TCP (what the loopback front door lets through).
#[derive(Debug, Clone, Default)]
pub struct MqttAuth {
    pub login: Option<(String, String)>,
    pub tls: Option<std::sync::Arc<lockerfleet_shared::tls::rustls::ClientConfig>>,
}

impl MqttAuth {
    /// The same login over TLS.
    pub fn with_tls(mut self, tls: std::sync::Arc<lockerfleet_shared::tls::rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn apply(&self, opts: &mut MqttOptions) {
        if let Some((user, password)) = &self.login {
            opts.set_credentials(user.as_str(), password.as_str());
        }
        if let Some(tls) = &self.tls {
            opts.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls.clone())));
        }
    }
}

/// Requests made with a particular token.
pub struct TestClient<'a> {
    server: &'a TestServer,
    token: String,
}

impl TestClient<'_> {
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.server.request("GET", path, Some(&self.token), None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.server.request("POST", path, Some(&self.token), Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.server.request("PUT", path, Some(&self.token), Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.server.request("DELETE", path, Some(&self.token), None).await
    }
}

/// A cabinet played by a plain rumqttc client: retained `online` at connect, retained
/// `offline` as its last will, and the `down` topic subscribed.
/// What a scripted cabinet has learned from its `down` topic so far.
#[derive(Debug, Default, Clone)]
pub struct DownView {
    pub parcels: Option<lockerfleet_shared::envelope::ParcelSet>,
    pub templates: Option<lockerfleet_shared::envelope::TemplateSet>,
    pub acked: std::collections::HashSet<Uuid>,
}

impl DownView {
    fn absorb(&mut self, body: &DownBody) {
        match body {
            DownBody::Parcels(p) if self.parcels.as_ref().is_none_or(|old| old.version <= p.version) => {
                self.parcels = Some(p.clone())
            }
            DownBody::Templates(t) if self.templates.as_ref().is_none_or(|old| old.version <= t.version) => {
                self.templates = Some(t.clone())
            }
            DownBody::Ack(a) => self.acked.extend(a.events.iter().copied()),
            _ => {}
        }
    }
}

pub struct FakeCabinet {
    /// Everything received so far, newest desired state per kind.
    pub view: DownView,
    pub id: CabinetId,
    pub session: Uuid,
    pub client: AsyncClient,
    pub topics: TopicSpace,
    pub down: mpsc::UnboundedReceiver<Envelope<DownBody>>,
    seq: u64,
    task: actix_rt::task::JoinHandle<()>,
}

impl FakeCabinet {
    pub async fn connect(host: &str, port: u16, topics: TopicSpace, id: &str) -> Self {
        Self::connect_as(host, port, topics, id, &MqttAuth::default()).await
    }

    pub async fn connect_as(host: &str, port: u16, topics: TopicSpace, id: &str, auth: &MqttAuth) -> Self {
        let id = CabinetId::new(id).expect("valid id");
        let session = Uuid::now_v7();
        let will = Envelope::new(id.clone(), 0, PresenceBody::Offline(Session { session })).encode();
        let mut opts = MqttOptions::new(format!("{}-{}", topics, id).replace('/', "_"), host, port);
        opts.set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(8 * 1024 * 1024, 8 * 1024 * 1024)
            .set_last_will(LastWill::new(topics.cabinet_presence(&id), will, QoS::AtLeastOnce, true));
        auth.apply(&mut opts);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let (conn_tx, mut conn_rx) = mpsc::unbounded_channel();
        let (down_tx, down) = mpsc::unbounded_channel();
        let task = actix_rt::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = conn_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(env) = decode::<DownBody>(&p.payload, 16 * 1024 * 1024) {
                            let _ = down_tx.send(env);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        client.subscribe(topics.cabinet_down(&id), QoS::AtLeastOnce).await.expect("queue subscribe");
        tokio::time::timeout(Duration::from_secs(10), conn_rx.recv())
            .await
            .expect("cabinet connects and subscribes within 10 s");
        let online = Envelope::new(id.clone(), 0, PresenceBody::Online(Session { session })).encode();
        client.publish(topics.cabinet_presence(&id), QoS::AtLeastOnce, true, online).await.expect("publish online");
        Self { view: DownView::default(), id, session, client, topics, down, seq: 0, task }
    }

    pub async fn send(&mut self, body: UpBody) {
        self.seq += 1;
        let env = Envelope::new(self.id.clone(), self.seq, body);
        self.publish_up(env.encode()).await;
    }

    /// Publishes raw bytes on this cabinet's `up` topic.
    pub async fn publish_up(&self, payload: Vec<u8>) {
        self.client.publish(self.topics.cabinet_up(&self.id), QoS::AtLeastOnce, false, payload).await.expect("publish");
    }

    pub async fn hello(&mut self, firmware: &str) {
        self.send(UpBody::Hello(Hello {
            firmware: firmware.into(),
            slot: Slot::A,
            hardware: "lf-cab-2".into(),
            compartments: vec![CompartmentInfo {
                id: CompartmentId::new("A1").expect("valid"),
                size: CompartmentSize::S,
                low: false,
            }],
            key_fingerprint: "00".repeat(16),
            model: None,
        }))
        .await;
    }

    pub async fn heartbeat(&mut self) {
        self.send(UpBody::State(Heartbeat {
            open_doors: vec![],
            occupied: vec![],
            temperature_c: Some(20.0),
            journal_depth: 0,
            uptime_s: 1,
        }))
        .await;
    }

    /// Waits up to 10 s for a `down` message that `pick` accepts, skipping others.
    pub async fn expect_down<T>(&mut self, what: &str, mut pick: impl FnMut(&DownBody) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.down.recv()).await {
                Ok(Some(env)) => {
                    assert_eq!(env.cabinet, self.id, "a down message names another cabinet");
                    self.view.absorb(&env.body);
                    if let Some(t) = pick(&env.body) {
                        return t;
                    }
                }
                Ok(None) => panic!("{}: connection task ended while waiting for {what}", self.id),
                Err(_) => panic!("{}: no {what} within 10 s", self.id),
            }
        }
    }

    /// Waits up to 30 s until what the cabinet has received satisfies `check`, in
    /// whatever order the messages arrive. (Generous for a loaded machine. A push that
    /// needed about 30 s was a bug: rows claimed by a relay pass that failed waited out
    /// their claim lease.)
    pub async fn wait_view(&mut self, what: &str, check: impl Fn(&DownView) -> bool) -> DownView {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if check(&self.view) {
                return self.view.clone();
            }
            match tokio::time::timeout_at(deadline, self.down.recv()).await {
                Ok(Some(env)) => {
                    assert_eq!(env.cabinet, self.id, "a down message names another cabinet");
                    self.view.absorb(&env.body);
                }
                Ok(None) => panic!("{}: connection task ended while waiting for {what}", self.id),
                Err(_) => panic!("{}: no {what} within 30 s; received so far: {:?}", self.id, self.view),
            }
        }
    }

    /// Sends one journal event.
    pub async fn send_event(&mut self, id: Uuid, seq: u64, what: lockerfleet_shared::envelope::EventKind) {
        self.send(UpBody::Events(lockerfleet_shared::envelope::EventBatch {
            events: vec![lockerfleet_shared::envelope::CabinetEvent { id, seq, at: chrono::Utc::now(), what }],
        }))
        .await;
    }

    /// Drops the connection without DISCONNECT, as a power cut would: the broker then
    /// publishes the last will.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// A plain MQTT subscriber (a courier's phone, or an eavesdropper in tests).
pub struct Subscriber {
    pub rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    _client: AsyncClient,
    task: actix_rt::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn new(host: &str, port: u16, filter: &str) -> Self {
        Self::new_as(host, port, filter, &MqttAuth::default()).await
    }

    pub async fn new_as(host: &str, port: u16, filter: &str, auth: &MqttAuth) -> Self {
        let mut opts = MqttOptions::new(format!("sub-{}", Uuid::new_v4().simple()), host, port);
        opts.set_keep_alive(Duration::from_secs(5)).set_max_packet_size(8 * 1024 * 1024, 8 * 1024 * 1024);
        auth.apply(&mut opts);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        let task = actix_rt::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        client.subscribe(filter, QoS::AtLeastOnce).await.expect("queue subscribe");
        tokio::time::timeout(Duration::from_secs(10), ready_rx.recv()).await.expect("subscribed within 10 s");
        Self { rx, _client: client, task }
    }

    /// The next message within 10 s.
    pub async fn next(&mut self, what: &str) -> (String, Vec<u8>) {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} within 10 s"))
            .expect("subscriber task alive")
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The use-case context over a database, as a server would build it (for tests that act
/// while no server runs, the way a crash leaves things).
pub fn service_ctx(store: fleet_server::store::Store, config: &Config) -> fleet_server::service::Ctx {
    fleet_server::service::Ctx {
        store,
        topics: config.topics(),
        max_alternative_km: 5.0,
        pickup_window_s: None,
        kek: None,
        metrics: fleet_server::metrics::Metrics::new(),
        passes: std::sync::Arc::new(fleet_server::service::passes::PassSigner::generate()),
    }
}

/// Reads frames from a server-sent-event response until `pick` accepts one, within 10 s.
pub async fn next_frame<S, E>(stream: &mut S, buf: &mut String, mut pick: impl FnMut(&str) -> bool) -> String
where
    S: futures_util::Stream<Item = Result<actix_web::web::Bytes, E>> + Unpin,
    E: std::fmt::Debug,
{
    use futures_util::StreamExt;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            while let Some(end) = buf.find("\n\n") {
                let frame = buf[..end].to_owned();
                buf.drain(..end + 2);
                if pick(&frame) {
                    return frame;
                }
            }
            let chunk = stream.next().await.expect("stream open").unwrap();
            buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .expect("the frame arrives within 10 s")
}
