//! The embedded broker's front door confines every login to its own topics: tested over
//! TLS (certificates made here, at test time) with the credentials registration issues —
//! another cabinet's templates are never readable, publishing as another cabinet ends the
//! connection and stores nothing, bad logins are refused at CONNECT, a rotated password
//! stops working, plain TCP on the TLS port gets nowhere, couriers hear only their own
//! assignments, and a real edge agent works end to end over TLS with its issued login.
//!
//! The same confinement on Mosquitto with the shipped ACL is `broker_acl.rs`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{Backend, Fixture, MqttAuth, TestPki as Pki, TestServer};
use lockerfleet_shared::envelope::{CabinetEvent, EventBatch, EventKind, UpBody};
use lockerfleet_shared::{CabinetId, Envelope};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use serde_json::json;
use tokio::sync::mpsc;
use uuid::Uuid;

/// One test per embedded backend (the front door exists only with the embedded broker).
macro_rules! embedded_tests {
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
    };
}

embedded_tests!(
    a_cabinet_cannot_read_another_cabinets_templates_or_publish_as_it,
    bad_logins_are_refused_at_connect_and_a_rotated_password_stops_working,
    a_courier_listens_only_to_its_own_assignments,
    a_real_edge_agent_works_over_tls_with_its_issued_login,
    a_clean_disconnect_publishes_no_will_and_a_dropped_connection_does,
    without_the_front_door_rumqttd_serves_the_listen_address_itself,
);

/// A server whose front door speaks only TLS and wants a login (as on a public address).
async fn tls_server(fx: &Fixture, pki: &Pki) -> TestServer {
    let mut config = fx.config();
    config.mqtt.tls_cert = Some(pki.cert.clone());
    config.mqtt.tls_key = Some(pki.key.clone());
    config.mqtt.require_auth = Some(true);
    fx.start(config).await
}

/// A plain MQTT client whose every event is observable: what a curious or hostile
/// cabinet would run.
struct Probe {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Packet, String>>,
}

impl Probe {
    /// Connects; the CONNACK's code, or the transport error, when refused.
    async fn connect(ts: &TestServer, auth: &MqttAuth) -> Result<Self, String> {
        let mut opts = MqttOptions::new(
            format!("probe-{}", Uuid::new_v4().simple()),
            ts.server.mqtt_host.clone(),
            ts.server.mqtt_port,
        );
        opts.set_keep_alive(Duration::from_secs(5)).set_max_packet_size(1 << 20, 1 << 20);
        auth.apply(&mut opts);
        let (client, mut eventloop) = AsyncClient::new(opts, 16);
        let (tx, mut events) = mpsc::unbounded_channel();
        actix_rt::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(Ok(p)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return; // one error ends the probe: no reconnects
                    }
                }
            }
        });
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(Ok(Packet::ConnAck(ack)))) if ack.code == ConnectReturnCode::Success => Ok(Self { client, events }),
            Ok(Some(Ok(Packet::ConnAck(ack)))) => Err(format!("refused: {:?}", ack.code)),
            Ok(Some(Ok(other))) => panic!("first packet is not a CONNACK: {other:?}"),
            Ok(Some(Err(e))) => Err(e),
            Ok(None) => Err("connection task ended".into()),
            Err(_) => Err("no CONNACK within 10 s".into()),
        }
    }

    /// Subscribes to one filter and returns the broker's (or the front door's) verdict.
    async fn subscribe(&mut self, filter: &str) -> SubscribeReasonCode {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        loop {
            match self.next(&format!("the SUBACK for {filter}")).await {
                Ok(Packet::SubAck(ack)) => return ack.return_codes[0],
                Ok(_) => {}
                Err(e) => panic!("connection failed while subscribing to {filter}: {e}"),
            }
        }
    }

    async fn next(&mut self, what: &str) -> Result<Packet, String> {
        tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("nothing within 10 s while waiting for {what}"))
            .unwrap_or_else(|| Err("connection task ended".into()))
    }

    /// Topics of every message received until one on `topic` arrives, then for `linger`
    /// more: so a message that should never come has had its chance.
    async fn topics_until(&mut self, topic: &str, linger: Duration) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.next(&format!("a message on {topic}")).await.unwrap() {
                Packet::Publish(p) => {
                    let done = p.topic == topic;
                    seen.push(p.topic);
                    if done {
                        break;
                    }
                }
                _ => continue,
            }
        }
        let deadline = tokio::time::Instant::now() + linger;
        while let Ok(Some(Ok(p))) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if let Packet::Publish(p) = p {
                seen.push(p.topic);
            }
        }
        seen
    }

    /// Waits until the connection has been closed from the other side.
    async fn closed(&mut self) -> String {
        loop {
            if let Err(e) = self.next("the connection to close").await {
                return e;
            }
        }
    }
}

async fn a_cabinet_cannot_read_another_cabinets_templates_or_publish_as_it(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let pki = Pki::generate();
    let ts = tls_server(&fx, &pki).await;
    ts.create_tenant("acme").await;
    let (_, a_auth) = ts.register_cabinet_with_login("acme", "cab-a").await;
    let (_, b_auth) = ts.register_cabinet_with_login("acme", "cab-b").await;
    let (a_auth, b_auth) = (a_auth.with_tls(pki.client.clone()), b_auth.with_tls(pki.client.clone()));
    let (a_id, b_id) = (CabinetId::new("cab-a").unwrap(), CabinetId::new("cab-b").unwrap());

    // A, logged in as itself, tries B's down topic and every wildcard that covers it.
    let mut spy = Probe::connect(&ts, &a_auth).await.unwrap();
    for filter in
        [ts.topics.cabinet_down(&b_id), "lf/v1/cab/+/down".into(), "#".into(), "$share/g/lf/v1/cab/+/up".into()]
    {
        assert_eq!(spy.subscribe(&filter).await, SubscribeReasonCode::Failure, "{filter}");
    }
    assert!(matches!(spy.subscribe(&ts.topics.cabinet_down(&a_id)).await, SubscribeReasonCode::Success(_)));
    assert_eq!(
        ts.metric("lockerfleet_mqtt_packets_denied_total{packet=\"subscribe\",reason=\"other_owner\"}").await,
        1.0
    );
    assert_eq!(
        ts.metric("lockerfleet_mqtt_packets_denied_total{packet=\"subscribe\",reason=\"not_permitted\"}").await,
        3.0
    );

    // B comes online: the server publishes B's desired state, templates included. B gets
    // it; A's spy hears only its own topic (A's state, published after B's).
    let mut b = ts.connect_cabinet_as("cab-b", &b_auth).await;
    b.hello("1.0.0").await;
    b.wait_view("B's templates", |v| v.templates.is_some()).await;
    let mut a = ts.connect_cabinet_as("cab-a", &a_auth).await;
    a.hello("1.0.0").await;
    a.wait_view("A's templates", |v| v.templates.is_some()).await;
    let seen = spy.topics_until(&ts.topics.cabinet_down(&a_id), Duration::from_millis(500)).await;
    assert!(seen.iter().all(|t| *t == ts.topics.cabinet_down(&a_id)), "A's login read {seen:?}");

    // A publishes an event as B, on B's topic and naming B: the connection ends, and the
    // server stores nothing from it. B's own event, sent after, is stored and acked.
    let forged = Uuid::now_v7();
    let batch = |id| {
        UpBody::Events(EventBatch {
            events: vec![CabinetEvent {
                id,
                seq: 1,
                at: chrono::Utc::now(),
                what: EventKind::Alarm { code: "door_forced".into(), detail: "A1".into() },
            }],
        })
    };
    let payload = Envelope::new(b_id.clone(), 1, batch(forged)).encode();
    spy.client.publish(ts.topics.cabinet_up(&b_id), QoS::AtLeastOnce, false, payload).await.unwrap();
    let why = spy.closed().await;
    assert_eq!(
        ts.metric("lockerfleet_mqtt_packets_denied_total{packet=\"publish\",reason=\"other_owner\"}").await,
        1.0,
        "{why}"
    );
    let genuine = Uuid::now_v7();
    b.send(batch(genuine)).await;
    b.wait_view("the ack of B's own event", |v| v.acked.contains(&genuine)).await;
    let (status, events) = ts.get("/api/v1/cabinets/cab-b/events").await;
    assert_eq!(status, 200, "{events}");
    let ids: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [genuine.to_string()], "only B's own event is stored");

    // A's real link, with a last will on B's presence, is refused at CONNECT.
    let mut opts = MqttOptions::new("cab-a-will", ts.server.mqtt_host.clone(), ts.server.mqtt_port);
    opts.set_last_will(rumqttc::LastWill::new(ts.topics.cabinet_presence(&b_id), "gone", QoS::AtLeastOnce, true));
    a_auth.apply(&mut opts);
    assert_eq!(connect_outcome(opts).await, Err(ConnectReturnCode::NotAuthorized));
    assert_eq!(ts.metric("lockerfleet_mqtt_connects_refused_total{reason=\"will_outside_acl\"}").await, 1.0);
    ts.server.stop().await;
    fx.cleanup().await;
}

/// How a connect with these options ends: `Ok` on success, the refusal code otherwise.
async fn connect_outcome(opts: MqttOptions) -> Result<(), ConnectReturnCode> {
    let (_client, mut eventloop) = AsyncClient::new(opts, 4);
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return ack.code,
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return code,
                Err(e) => panic!("the connect failed without a CONNACK: {e}"),
            }
        }
    })
    .await
    .expect("a CONNACK within 10 s");
    if outcome == ConnectReturnCode::Success { Ok(()) } else { Err(outcome) }
}

async fn bad_logins_are_refused_at_connect_and_a_rotated_password_stops_working(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let pki = Pki::generate();
    let ts = tls_server(&fx, &pki).await;
    ts.create_tenant("acme").await;
    let (_, a_auth) = ts.register_cabinet_with_login("acme", "cab-a").await;
    let a_auth = a_auth.with_tls(pki.client.clone());
    let opts = |auth: &MqttAuth| {
        let mut o = MqttOptions::new(
            format!("c-{}", Uuid::new_v4().simple()),
            ts.server.mqtt_host.clone(),
            ts.server.mqtt_port,
        );
        auth.apply(&mut o);
        o
    };
    let login = |user: &str, password: &str| MqttAuth {
        login: Some((user.to_owned(), password.to_owned())),
        tls: Some(pki.client.clone()),
    };
    let (_, issued) = a_auth.login.clone().unwrap();
    assert!(issued.len() >= 32, "a high-entropy secret: {issued}");

    assert_eq!(connect_outcome(opts(&a_auth)).await, Ok(()));
    assert_eq!(connect_outcome(opts(&login("cab-a", "guess"))).await, Err(ConnectReturnCode::BadUserNamePassword));
    assert_eq!(connect_outcome(opts(&login("cab-nobody", &issued))).await, Err(ConnectReturnCode::BadUserNamePassword));
    let anonymous = MqttAuth { login: None, tls: Some(pki.client.clone()) };
    assert_eq!(connect_outcome(opts(&anonymous)).await, Err(ConnectReturnCode::NotAuthorized));
    assert_eq!(ts.metric("lockerfleet_mqtt_connects_refused_total{reason=\"wrong_password\"}").await, 1.0);
    assert_eq!(ts.metric("lockerfleet_mqtt_connects_refused_total{reason=\"unknown_user\"}").await, 1.0);
    assert_eq!(ts.metric("lockerfleet_mqtt_connects_refused_total{reason=\"anonymous\"}").await, 1.0);

    // Rotation: the new password works, the old one no longer does.
    let (status, rotated) = ts.post("/api/v1/cabinets/cab-a/mqtt-credentials", &json!({})).await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["password"].as_str().unwrap();
    assert_ne!(new, issued);
    assert_eq!(connect_outcome(opts(&login("cab-a", &issued))).await, Err(ConnectReturnCode::BadUserNamePassword));
    assert_eq!(connect_outcome(opts(&login("cab-a", new))).await, Ok(()));
    // The database holds a keyed hash, never the secret.
    use sea_orm::EntityTrait;
    let row = fleet_server::store::entities::mqtt_credential::Entity::find_by_id("cab-a".to_owned())
        .one(ts.server.store.connection())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.secret_hash.len(), 64);
    assert!(!row.secret_hash.contains(new) && !format!("{row:?}").contains(new));
    // Another tenant's operator cannot rotate it.
    ts.create_tenant("other").await;
    let other = ts.make_token("admin", Some("other"), None).await;
    assert_eq!(ts.with_token(&other).post("/api/v1/cabinets/cab-a/mqtt-credentials", &json!({})).await.0, 404);

    // Plain TCP on the TLS port: no CONNACK ever comes, and the front door counts it.
    let plain = MqttAuth { login: Some(("cab-a".into(), new.to_owned())), tls: None };
    let (_client, mut eventloop) = AsyncClient::new(opts(&plain), 4);
    let outcome = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .expect("the front door ends a plain connection");
    assert!(outcome.is_err(), "plain TCP connected to the TLS port");
    ts.wait_for_metric("lockerfleet_mqtt_connects_refused_total{reason=\"tls\"}", 1.0).await;
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn a_courier_listens_only_to_its_own_assignments(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let pki = Pki::generate();
    let ts = tls_server(&fx, &pki).await;
    ts.create_tenant("acme").await;
    ts.register_cabinet_with_login("acme", "cab-a").await;
    for (id, name) in [("k-1", "Kim"), ("k-2", "Lee")] {
        assert_eq!(ts.post("/api/v1/couriers", &json!({"id": id, "tenant": "acme", "name": name})).await.0, 201);
    }
    // A courier's own token gets its own login, never another courier's.
    let kim_token = ts.make_token("courier", Some("acme"), Some("k-1")).await;
    let kim_api = ts.with_token(&kim_token);
    assert_eq!(kim_api.post("/api/v1/couriers/k-2/mqtt-credentials", &json!({})).await.0, 403);
    let (status, issued) = kim_api.post("/api/v1/couriers/k-1/mqtt-credentials", &json!({})).await;
    assert_eq!(status, 200, "{issued}");
    assert_eq!(issued["username"], "courier@k-1");
    let kim = MqttAuth {
        login: Some(("courier@k-1".into(), issued["password"].as_str().unwrap().to_owned())),
        tls: Some(pki.client.clone()),
    };
    let (k1, k2) =
        (lockerfleet_shared::CourierId::new("k-1").unwrap(), lockerfleet_shared::CourierId::new("k-2").unwrap());
    let mut phone = Probe::connect(&ts, &kim).await.unwrap();
    assert_eq!(phone.subscribe(&ts.topics.courier_assignments(&k2)).await, SubscribeReasonCode::Failure);
    assert_eq!(
        phone.subscribe(&ts.topics.cabinet_down(&CabinetId::new("cab-a").unwrap())).await,
        SubscribeReasonCode::Failure
    );
    assert!(matches!(phone.subscribe(&ts.topics.courier_assignments(&k1)).await, SubscribeReasonCode::Success(_)));

    // Lee's parcel first, then Kim's: Kim's phone hears Kim's assignment and nothing else.
    for courier in ["k-2", "k-1"] {
        let (status, body) = ts
            .post("/api/v1/parcels", &json!({"tenant": "acme", "reference": format!("T-{courier}"), "courier": courier, "size": "s", "cabinet": "cab-a"}))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let seen = phone.topics_until(&ts.topics.courier_assignments(&k1), Duration::from_millis(500)).await;
    assert_eq!(seen, [ts.topics.courier_assignments(&k1)]);

    // A courier's login publishes nothing, not even on its own topic.
    phone
        .client
        .publish(ts.topics.courier_assignments(&k1), QoS::AtLeastOnce, false, b"fake task".to_vec())
        .await
        .unwrap();
    phone.closed().await;
    assert_eq!(
        ts.metric("lockerfleet_mqtt_packets_denied_total{packet=\"publish\",reason=\"not_permitted\"}").await,
        1.0
    );
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn a_real_edge_agent_works_over_tls_with_its_issued_login(backend: Backend) {
    use edge_agent::actors::cabinet::{DoorSensed, GetStatus};
    use edge_agent::config::{AgentConfig, CompartmentConfig, MqttSettings};
    let fx = Fixture::new(backend).await;
    let pki = Pki::generate();
    let ts = tls_server(&fx, &pki).await;
    ts.create_tenant("acme").await;

    // Provision as the README says; the registration's answer holds the MQTT password.
    let password_file = pki.dir.path().join("mqtt.password");
    let config = AgentConfig {
        cabinet: "cab-e".into(),
        data_dir: pki.dir.path().join("cab-e"),
        heartbeat_s: 1,
        resend_s: 1,
        mqtt: MqttSettings {
            host: "127.0.0.1".into(),
            port: ts.server.mqtt_port,
            namespace: fx.namespace.clone(),
            password_file: Some(password_file.clone()),
            ca_file: Some(pki.ca_file.clone()),
            ..MqttSettings::default()
        },
        compartments: vec![CompartmentConfig {
            id: "A1".into(),
            size: lockerfleet_shared::envelope::CompartmentSize::M,
            low: false,
        }],
        ..AgentConfig::default()
    };
    config.validate().unwrap();
    let mut registration = edge_agent::provision(&config).unwrap();
    registration["tenant"] = json!("acme");
    let (status, body) = ts.post("/api/v1/cabinets", &registration).await;
    assert_eq!(status, 201, "{body}");
    std::fs::write(&password_file, body["mqtt_credentials"]["password"].as_str().unwrap()).unwrap();

    let agent = edge_agent::start_parts(
        &config,
        Box::new(edge_agent::hw::SimLock::default()),
        None,
        Box::new(|| panic!("no restart in this test")),
    )
    .unwrap();
    ts.wait_until("the agent is online over TLS", || async { ts.cabinet_view("cab-e").await["online"] == true }).await;
    assert_eq!(ts.metric("lockerfleet_mqtt_logins_total{kind=\"cabinet\"}").await, 1.0);

    // A door forced open: the alarm is journalled, sent, stored and acked.
    agent
        .cabinet
        .send(DoorSensed { compartment: lockerfleet_shared::CompartmentId::new("A1").unwrap(), open: true })
        .await
        .unwrap();
    ts.wait_until("the alarm is stored", || async {
        ts.get("/api/v1/cabinets/cab-e/events?kind=alarm").await.1.as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    ts.wait_until("the agent's journal is empty (acked)", || async {
        agent.cabinet.send(GetStatus).await.unwrap().journal_depth == 0
    })
    .await;
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn a_clean_disconnect_publishes_no_will_and_a_dropped_connection_does(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let pki = Pki::generate();
    let ts = tls_server(&fx, &pki).await;
    ts.create_tenant("acme").await;
    let (_, a_auth) = ts.register_cabinet_with_login("acme", "cab-a").await;
    let (_, b_auth) = ts.register_cabinet_with_login("acme", "cab-b").await;
    let mut a = ts.connect_cabinet_as("cab-a", &a_auth.with_tls(pki.client.clone())).await;
    let mut b = ts.connect_cabinet_as("cab-b", &b_auth.with_tls(pki.client.clone())).await;
    a.hello("1.0.0").await;
    b.hello("1.0.0").await;
    ts.wait_until("both online", || async {
        ts.cabinet_view("cab-a").await["online"] == true && ts.cabinet_view("cab-b").await["online"] == true
    })
    .await;
    assert_eq!(ts.metric("lockerfleet_mqtt_front_door_connections").await, 2.0);

    // A says goodbye; the front door passes the close on gently.
    a.client.disconnect().await.unwrap();
    ts.wait_until("A's connection is closed", || async {
        ts.metric("lockerfleet_mqtt_front_door_connections").await == 1.0
    })
    .await;
    // B loses power: its will comes, and A's never did.
    b.kill();
    ts.wait_until("B is offline by its will", || async { ts.cabinet_view("cab-b").await["online"] == false }).await;
    assert_eq!(ts.metric("lockerfleet_cabinets_went_offline_total{cause=\"will\"}").await, 1.0);
    assert_eq!(ts.cabinet_view("cab-a").await["online"], true, "a clean disconnect published the will");
    ts.server.stop().await;
    fx.cleanup().await;
}

/// `mqtt.front_door = false` (loopback only, for measuring the broker alone): rumqttd
/// answers on `mqtt.listen` itself, so a cabinet works without passing the front door,
/// which counts no connection.
async fn without_the_front_door_rumqttd_serves_the_listen_address_itself(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let mut config = fx.config();
    config.mqtt.front_door = false;
    let ts = fx.start(config).await;
    ts.create_tenant("acme").await;
    ts.register_cabinet("acme", "cab-1").await;

    let mut cab = ts.connect_cabinet("cab-1").await;
    cab.hello("2.0.0").await;
    ts.wait_until("cab-1 online through rumqttd alone", || async { ts.cabinet_view("cab-1").await["online"] == true })
        .await;
    assert_eq!(ts.metric("lockerfleet_mqtt_front_door_connections").await, 0.0, "the front door saw nothing");

    ts.server.stop().await;
    fx.cleanup().await;
}
