//! The whole pickup flow in one test, as the issue describes it, with two scripted MQTT
//! cabinets: register both → assign (courier told over MQTT and SSE) → deposit → the
//! sealed template reaches only the right cabinet and opens only with its key → pickup →
//! parcel closed, compartment free, template revoked, and every event stored once and
//! acked even when resent. A second variant kills the server between each commit and
//! its publish and starts a new one on the same database and broker.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use common::{Backend, FakeCabinet, Fixture, Mqtt, Subscriber, TestServer};
use futures_util::StreamExt;
use lockerfleet_shared::envelope::{CourierBody, EventKind, ParcelStage, PickupMethod, decode};
use lockerfleet_shared::sdk::{ReadyNotice, seal_for_parcel};
use lockerfleet_shared::seal::{self, CabinetPublicKey, FaceTemplate, ModelRef, OpenPolicy};
use lockerfleet_shared::{CabinetId, CompartmentId, CourierId, ParcelId};
use serde_json::json;
use uuid::Uuid;

backend_tests!(the_whole_pickup_flow, the_whole_pickup_flow_with_a_crash_after_every_commit);

async fn the_whole_pickup_flow(backend: Backend) {
    run(backend, false).await;
}

async fn the_whole_pickup_flow_with_a_crash_after_every_commit(backend: Backend) {
    run(backend, true).await;
}

fn model() -> ModelRef {
    ModelRef { id: "fr_feature".into(), sha256: "ab".repeat(32) }
}

/// Stops `ts` and starts a fresh server on the same database and broker.
async fn restart(fx: &Fixture, ts: TestServer, config: &fleet_server::config::Config) -> TestServer {
    ts.server.stop().await;
    fx.start(config.clone()).await
}

async fn run(backend: Backend, crash: bool) {
    let fx = Fixture::new(backend).await;
    let mut config = fx.config();
    if crash && matches!(fx.backend.mqtt, Mqtt::Embedded) {
        // The broker must outlive the server: run rumqttd standalone and point the
        // server at it as an external broker.
        let mut broker = config.mqtt.clone();
        broker.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let b = fleet_server::broker::start_embedded(&broker).unwrap();
        config.mqtt.mode = fleet_server::config::BrokerMode::External;
        config.mqtt.url = Some(format!("mqtt://127.0.0.1:{}", b.addr.port()));
    }
    let mut ts = fx.start(config.clone()).await;

    // Register both cabinets, a courier and a recipient.
    ts.create_tenant("acme").await;
    let keys_a = ts.register_cabinet("acme", "cab-a").await;
    let keys_b = ts.register_cabinet("acme", "cab-b").await;
    assert_eq!(ts.post("/api/v1/couriers", &json!({"id": "k-1", "tenant": "acme", "name": "Kim"})).await.0, 201);
    let (_, r) = ts.post("/api/v1/recipients", &json!({"tenant": "acme", "reference": "cust-1"})).await;
    let recipient = r["id"].as_str().unwrap().to_owned();
    let mut cab_a = ts.connect_cabinet("cab-a").await;
    let cab_b = ts.connect_cabinet("cab-b").await;
    // Anything published to cab-b's down topic, seen by a second listener.
    let cab_b_id = CabinetId::new("cab-b").unwrap();
    let mut cab_b_spy =
        Subscriber::new(&ts.server.mqtt_host, ts.server.mqtt_port, &ts.topics.cabinet_down(&cab_b_id)).await;
    let mut courier_mqtt = Subscriber::new(
        &ts.server.mqtt_host,
        ts.server.mqtt_port,
        &ts.topics.courier_assignments(&CourierId::new("k-1").unwrap()),
    )
    .await;
    let courier_token = ts.make_token("courier", Some("acme"), Some("k-1")).await;

    // Assign: over the API, or (crash variant) committed while no server runs.
    let parcel_body = json!({"tenant": "acme", "reference": "TRK-1", "recipient": recipient, "courier": "k-1",
                             "size": "s", "cabinet": "cab-a"});
    let sse_client = awc::Client::builder().timeout(Duration::from_secs(60)).finish();
    let (parcel, code, mut sse) = if crash {
        ts.server.stop().await;
        let store = fleet_server::store::Store::connect(&fx.database_url, 2).await.unwrap();
        let ctx = common::service_ctx(store, &config);
        let created = fleet_server::service::parcels::create_and_assign(
            &ctx,
            fleet_server::service::parcels::NewParcel {
                tenant: "acme".into(),
                reference: "TRK-1".into(),
                recipient: Some(Uuid::parse_str(&recipient).unwrap()),
                courier: CourierId::new("k-1").unwrap(),
                size: lockerfleet_shared::envelope::CompartmentSize::S,
                need_low: false,
                cabinet: CabinetId::new("cab-a").unwrap(),
            },
        )
        .await
        .unwrap();
        // The SSE client connects to the restarted server before it relays the outbox.
        ts = fx.start(config.clone()).await;
        let sse = open_sse(&sse_client, &ts, &courier_token).await;
        (ParcelId(created.parcel.id), created.pickup_code, sse)
    } else {
        let sse = open_sse(&sse_client, &ts, &courier_token).await;
        let (status, created) = ts.post("/api/v1/parcels", &parcel_body).await;
        assert_eq!(status, 201, "{created}");
        let id = ParcelId(Uuid::parse_str(created["id"].as_str().unwrap()).unwrap());
        (id, created["pickup_code"].as_str().unwrap().to_owned(), sse)
    };

    // The courier is told on both channels.
    let (_, payload) = courier_mqtt.next("the assignment over MQTT").await;
    match decode::<CourierBody>(&payload, 1 << 20).unwrap().body {
        CourierBody::Assignment(t) => assert_eq!(t.parcel, parcel),
        other => panic!("{other:?}"),
    }
    let frame = next_sse_event(&mut sse).await;
    assert!(frame.contains("event: assignment") && frame.contains(&parcel.0.to_string()), "{frame}");

    // Deposit.
    let deposit = Uuid::now_v7();
    let compartment = CompartmentId::new("A1").unwrap();
    let deposit_what =
        EventKind::Deposit { parcel, compartment: compartment.clone(), courier: CourierId::new("k-1").unwrap() };
    cab_a.send_event(deposit, 1, deposit_what.clone()).await;
    wait_ack(&mut cab_a, deposit).await;
    if crash {
        // Killed after the commit; the cabinet never saw the ack and sends it again.
        ts = restart(&fx, ts, &config).await;
        cab_a.send_event(deposit, 1, deposit_what).await;
        wait_ack(&mut cab_a, deposit).await;
    }
    ts.wait_until("the parcel is ready", || async {
        ts.get(&format!("/api/v1/parcels/{}", parcel.0)).await.1["state"] == "ready"
    })
    .await;

    // The recipient's app seals for cab-a; the blob reaches cab-a only.
    let (_, notice) = ts.get(&format!("/api/v1/parcels/{}/ready-notice", parcel.0)).await;
    let notice = ReadyNotice {
        parcel,
        cabinet: CabinetId::new(notice["cabinet"].as_str().unwrap()).unwrap(),
        cabinet_public_key: CabinetPublicKey::from_base64(notice["cabinet_public_key"].as_str().unwrap()).unwrap(),
        deadline: notice["deadline"].as_str().unwrap().parse().unwrap(),
    };
    let face = FaceTemplate::new((0..512).map(|i| (i as f32).cos()).collect());
    let sealed = seal_for_parcel(&notice, &face, &model(), Utc::now()).unwrap();
    assert_eq!(ts.post(&format!("/api/v1/parcels/{}/sealed-template", parcel.0), &json!(sealed)).await.0, 202);
    if crash {
        ts = restart(&fx, ts, &config).await;
    }
    let view = cab_a
        .wait_view("the sealed template and the ready parcel", |v| {
            v.templates.as_ref().is_some_and(|t| !t.add.is_empty())
                && v.parcels
                    .as_ref()
                    .is_some_and(|s| s.parcels.iter().any(|p| p.parcel == parcel && p.stage == ParcelStage::Ready))
        })
        .await;
    let set = view.templates.unwrap();
    let cabinet_a = CabinetId::new("cab-a").unwrap();
    let policy = OpenPolicy { cabinet: &cabinet_a, model: &model(), now: Utc::now() };
    assert_eq!(seal::open(&keys_a, &set.add[0], &policy).unwrap(), face);
    assert!(seal::open(&keys_b, &set.add[0], &policy).is_err(), "cab-b's key opens cab-a's template");
    // The code hash at cab-a is the hash of the code the dispatcher got.
    let ready = view.parcels.unwrap().parcels.into_iter().find(|p| p.parcel == parcel).unwrap();
    assert!(fleet_server::service::parcels::verify_code(&code, ready.code_hash.as_deref().unwrap()));

    // Pickup, sent twice (the first ack "lost"): stored once, acked each time.
    let pickup = Uuid::now_v7();
    let pickup_what = EventKind::Pickup { parcel, compartment, method: PickupMethod::Face };
    cab_a.send_event(pickup, 2, pickup_what.clone()).await;
    wait_ack(&mut cab_a, pickup).await;
    if crash {
        ts = restart(&fx, ts, &config).await;
    }
    cab_a.send_event(pickup, 2, pickup_what).await;
    wait_ack(&mut cab_a, pickup).await;
    let after = cab_a
        .wait_view("templates and parcels without the picked-up parcel", |v| {
            v.templates.as_ref().is_some_and(|t| t.add.is_empty() && t.version > set.version)
                && v.parcels.as_ref().is_some_and(|s| s.parcels.iter().all(|p| p.parcel != parcel))
        })
        .await;
    assert!(after.templates.unwrap().add.is_empty());

    let (_, p) = ts.get(&format!("/api/v1/parcels/{}", parcel.0)).await;
    assert_eq!(p["state"], "picked_up");
    let record = ts.server.store.cabinet("cab-a").await.unwrap().unwrap();
    assert!(record.compartments.iter().all(|c| c.parcel_id.is_none()), "the compartment is free");
    assert!(ts.server.store.sealed_templates_of("cab-a").await.unwrap().is_empty(), "the template is revoked");
    let (_, timeline) = ts.get(&format!("/api/v1/parcels/{}/events", parcel.0)).await;
    let kinds: Vec<&str> = timeline["items"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "assign", "deposit", "ready", "pickup"], "each event applied exactly once");
    assert_eq!(ts.server.store.count_cabinet_events().await.unwrap(), 2, "deposit and pickup, each stored once");

    // Nothing of any of this reached cab-b.
    assert!(cab_b_spy.rx.try_recv().is_err(), "a message was published on cab-b's down topic");
    drop(cab_b);
    drop(sse);
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn wait_ack(cab: &mut FakeCabinet, event: Uuid) {
    // Forget earlier acks of this event: a resend must be acked again.
    cab.view.acked.remove(&event);
    cab.wait_view("the ack", |v| v.acked.contains(&event)).await;
}

type Sse = awc::ClientResponse;

async fn open_sse(client: &awc::Client, ts: &TestServer, token: &str) -> Sse {
    let res = client
        .get(format!("{}/api/v1/couriers/k-1/assignments/stream", ts.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    res
}

async fn next_sse_event(sse: &mut Sse) -> String {
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let chunk = sse.next().await.expect("stream open").unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = text.find("\n\n") {
                let frame: String = text.drain(..end + 2).collect();
                if !frame.starts_with(':') {
                    return frame;
                }
            }
        }
    })
    .await
    .expect("an SSE event within 10 s")
}
