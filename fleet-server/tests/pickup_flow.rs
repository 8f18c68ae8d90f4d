//! The whole pickup flow over the real broker, with two scripted cabinets: assignment
//! (courier notified over MQTT), the cabinet's desired state, deposit, pickup, and every
//! cabinet event stored once and acked — only ever at the right cabinet.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Backend, Fixture, Subscriber};
use lockerfleet_shared::envelope::{CourierBody, DownBody, EventKind, ParcelStage, PickupMethod, decode};
use lockerfleet_shared::{CompartmentId, CourierId, ParcelId};
use serde_json::json;
use uuid::Uuid;

backend_tests!(
    a_parcel_goes_from_assignment_to_pickup,
    a_full_cabinet_sends_the_parcel_to_the_nearest_one,
    desired_states_built_together_are_those_built_one_by_one,
);

async fn setup(ts: &common::TestServer) -> Uuid {
    ts.create_tenant("acme").await;
    for (id, lat) in [("cab-a", 52.520), ("cab-b", 52.530)] {
        let keys = lockerfleet_shared::seal::CabinetKeyPair::generate();
        let (status, body) = ts
            .post(
                "/api/v1/cabinets",
                &json!({"id": id, "tenant": "acme", "public_key": keys.public().to_base64(),
                        "location": {"lat": lat, "lon": 13.405},
                        "compartments": [{"id": "S1", "size": "s"}, {"id": "M1", "size": "m"}]}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    assert_eq!(ts.post("/api/v1/couriers", &json!({"id": "k-1", "tenant": "acme", "name": "Kim"})).await.0, 201);
    let (status, r) = ts.post("/api/v1/recipients", &json!({"tenant": "acme", "reference": "cust-991"})).await;
    assert_eq!(status, 201, "{r}");
    Uuid::parse_str(r["id"].as_str().unwrap()).unwrap()
}

/// Creates a parcel for courier k-1 at `cabinet` and returns the API's answer.
async fn assign(ts: &common::TestServer, reference: &str, size: &str, cabinet: &str) -> serde_json::Value {
    let body = json!({"tenant": "acme", "reference": reference, "courier": "k-1", "size": size, "cabinet": cabinet});
    let (status, created) = ts.post("/api/v1/parcels", &body).await;
    assert_eq!(status, 201, "{created}");
    created
}

async fn a_parcel_goes_from_assignment_to_pickup(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    let recipient = setup(&ts).await;
    let mut cab_a = ts.connect_cabinet("cab-a").await;
    let mut cab_b = ts.connect_cabinet("cab-b").await;
    let courier_topic = ts.topics.courier_assignments(&CourierId::new("k-1").unwrap());
    let mut courier = Subscriber::new(&ts.server.mqtt_host, ts.server.mqtt_port, &courier_topic).await;

    let (status, created) = ts
        .post(
            "/api/v1/parcels",
            &json!({"tenant": "acme", "reference": "TRK-1", "recipient": recipient, "courier": "k-1",
                    "size": "s", "cabinet": "cab-a"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["state"], "assigned");
    assert_eq!(created["cabinet"], "cab-a");
    assert_eq!(created["compartment"], "S1", "the smallest fitting compartment");
    let code = created["pickup_code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 8);
    let parcel = ParcelId(Uuid::parse_str(created["id"].as_str().unwrap()).unwrap());

    // The courier is told over MQTT.
    let (_, payload) = courier.next("courier assignment").await;
    let note = decode::<CourierBody>(&payload, 1 << 20).unwrap();
    match note.body {
        CourierBody::Assignment(task) => {
            assert_eq!(task.parcel, parcel);
            assert_eq!(task.compartment.as_str(), "S1");
        }
        other => panic!("expected an assignment, got {other:?}"),
    }

    // The cabinet learns to expect it; it holds no code hash yet.
    let expected = cab_a
        .expect_down("parcels with the expected parcel", |b| match b {
            DownBody::Parcels(set) => set.parcels.iter().find(|p| p.parcel == parcel).cloned(),
            _ => None,
        })
        .await;
    assert_eq!(expected.stage, ParcelStage::Expected);
    assert_eq!(expected.code_hash, None);

    // Deposit: stored, acked, and the parcel is ready with the code hash at the cabinet.
    let deposit = Uuid::now_v7();
    let what = EventKind::Deposit {
        parcel,
        compartment: CompartmentId::new("S1").unwrap(),
        courier: CourierId::new("k-1").unwrap(),
    };
    cab_a.send_event(deposit, 1, what.clone()).await;
    // The ack and the new desired state travel separately and may arrive in either order.
    let (mut acked, mut ready) = (None, None);
    while acked.is_none() || ready.is_none() {
        cab_a
            .expect_down("the deposit's ack and the ready parcel", |b| match b {
                DownBody::Ack(a) => {
                    acked = Some(a.events.clone());
                    Some(())
                }
                DownBody::Parcels(set) => {
                    if let Some(p) = set.parcels.iter().find(|p| p.parcel == parcel && p.stage == ParcelStage::Ready) {
                        ready = Some(p.clone());
                    }
                    Some(())
                }
                _ => None,
            })
            .await;
    }
    assert_eq!(acked.unwrap(), vec![deposit]);
    let ready = ready.unwrap();
    let hash = ready.code_hash.expect("a ready parcel carries its code hash");
    assert!(fleet_server::service::parcels::verify_code(&code, &hash), "the hash is of the code the caller got");
    assert!(!hash.contains(&code));
    let (_, p) = ts.get(&format!("/api/v1/parcels/{}", parcel.0)).await;
    assert_eq!(p["state"], "ready");
    assert!(p["deadline"].is_string());

    // The cabinet resends the deposit (it never saw the ack): acked again, stored once.
    cab_a.send_event(deposit, 1, what).await;
    let again = cab_a
        .expect_down("second ack of the deposit", |b| match b {
            DownBody::Ack(a) => Some(a.events.clone()),
            _ => None,
        })
        .await;
    assert_eq!(again, vec![deposit]);
    ts.wait_for_metric("lockerfleet_ingest_events_total{outcome=\"duplicate\"}", 1.0).await;
    assert_eq!(ts.metric("lockerfleet_ingest_events_total{outcome=\"stored\"}").await, 1.0);

    // Pickup: the parcel is closed, the compartment free, the cabinet's desired state empty.
    let pickup = Uuid::now_v7();
    cab_a
        .send_event(
            pickup,
            2,
            EventKind::Pickup { parcel, compartment: CompartmentId::new("S1").unwrap(), method: PickupMethod::Code },
        )
        .await;
    // The ack and the new desired state travel separately and may arrive in either order.
    let (mut acked, mut emptied) = (false, false);
    while !(acked && emptied) {
        cab_a
            .expect_down("the pickup's ack and the emptied desired state", |b| match b {
                DownBody::Ack(a) if a.events == vec![pickup] => {
                    acked = true;
                    Some(())
                }
                DownBody::Parcels(set) if set.parcels.iter().all(|p| p.parcel != parcel) => {
                    emptied = true;
                    Some(())
                }
                _ => None,
            })
            .await;
    }
    let (_, p) = ts.get(&format!("/api/v1/parcels/{}", parcel.0)).await;
    assert_eq!(p["state"], "picked_up");
    let record = ts.server.store.cabinet("cab-a").await.unwrap().unwrap();
    assert!(record.compartments.iter().all(|c| c.parcel_id.is_none()), "every compartment is free again");

    let (_, timeline) = ts.get(&format!("/api/v1/parcels/{}/events", parcel.0)).await;
    let kinds: Vec<&str> = timeline["items"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "assign", "deposit", "ready", "pickup"]);
    assert_eq!(timeline["items"][2]["source"], "cabinet");

    // Nothing of this reached the other cabinet.
    assert!(cab_b.down.try_recv().is_err(), "cab-b received a message meant for cab-a");
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn a_full_cabinet_sends_the_parcel_to_the_nearest_one(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    setup(&ts).await;
    let parcel = |r: &str| json!({"tenant": "acme", "reference": r, "courier": "k-1", "size": "m", "cabinet": "cab-a"});
    let (s1, first) = ts.post("/api/v1/parcels", &parcel("TRK-1")).await;
    assert_eq!(
        (s1, first["cabinet"].as_str(), first["alternative_cabinet"].as_bool()),
        (201, Some("cab-a"), Some(false))
    );
    let (s2, second) = ts.post("/api/v1/parcels", &parcel("TRK-2")).await;
    assert_eq!(s2, 201, "{second}");
    assert_eq!(second["cabinet"], "cab-b", "cab-a has no free M compartment; cab-b is 1.1 km away");
    assert_eq!(second["alternative_cabinet"], true);
    ts.post("/api/v1/parcels", &parcel("TRK-3")).await;
    let (s4, err) = ts.post("/api/v1/parcels", &parcel("TRK-4")).await;
    assert_eq!(s4, 409, "{err}");
    assert_eq!(err["error"]["code"], "no_room");
    let (_, list) = ts.get("/api/v1/parcels?tenant=acme").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "the refused parcel was not stored");
    ts.server.stop().await;
    fx.cleanup().await;
}

mod concurrency {
    use super::*;

    backend_tests!(
        concurrent_assignments_never_share_a_compartment,
        a_notification_committed_before_a_crash_is_delivered_after_restart,
    );
}

async fn concurrent_assignments_never_share_a_compartment(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("acme").await;
    let keys = lockerfleet_shared::seal::CabinetKeyPair::generate();
    let compartments: Vec<_> = (0..5).map(|i| json!({"id": format!("C{i}"), "size": "m"})).collect();
    let (status, _) = ts
        .post(
            "/api/v1/cabinets",
            &json!({"id": "busy", "tenant": "acme", "public_key": keys.public().to_base64(), "compartments": compartments}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(ts.post("/api/v1/couriers", &json!({"id": "k-1", "tenant": "acme", "name": "Kim"})).await.0, 201);

    // Twenty dispatchers press "assign" at the same moment for five compartments.
    let requests = (0..20).map(|i| {
        let body = json!({"tenant": "acme", "reference": format!("TRK-{i}"), "courier": "k-1", "size": "s", "cabinet": "busy"});
        let ts = &ts;
        async move { ts.post("/api/v1/parcels", &body).await }
    });
    let results = futures_util::future::join_all(requests).await;
    let won: Vec<&serde_json::Value> = results.iter().filter(|(s, _)| *s == 201).map(|(_, b)| b).collect();
    let lost = results.iter().filter(|(s, b)| *s == 409 && b["error"]["code"] == "no_room").count();
    assert_eq!(won.len(), 5, "{results:?}");
    assert_eq!(lost, 15, "{results:?}");
    let mut taken: Vec<&str> = won.iter().map(|b| b["compartment"].as_str().unwrap()).collect();
    taken.sort_unstable();
    taken.dedup();
    assert_eq!(taken.len(), 5, "a compartment was given twice: {won:?}");
    // The database agrees: each compartment holds exactly the parcel the API named.
    let record = ts.server.store.cabinet("busy").await.unwrap().unwrap();
    for b in won {
        let id = Uuid::parse_str(b["id"].as_str().unwrap()).unwrap();
        let comp = record.compartments.iter().find(|c| c.id == b["compartment"].as_str().unwrap()).unwrap();
        assert_eq!(comp.parcel_id, Some(id));
    }
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn a_notification_committed_before_a_crash_is_delivered_after_restart(backend: Backend) {
    let fx = Fixture::new(backend).await;
    // First life: set up, then stop.
    let ts = fx.start(fx.config()).await;
    setup(&ts).await;
    ts.server.stop().await;

    // The assignment commits while no relay runs — exactly the state a server killed
    // between commit and publish leaves behind.
    let store = fleet_server::store::Store::connect(&fx.database_url, 2).await.unwrap();
    let config = fx.config();
    let ctx = common::service_ctx(store.clone(), &config);
    let created = fleet_server::service::parcels::create_and_assign(
        &ctx,
        fleet_server::service::parcels::NewParcel {
            tenant: "acme".into(),
            reference: "TRK-crash".into(),
            recipient: None,
            courier: CourierId::new("k-1").unwrap(),
            size: lockerfleet_shared::envelope::CompartmentSize::S,
            need_low: false,
            cabinet: lockerfleet_shared::CabinetId::new("cab-a").unwrap(),
        },
    )
    .await
    .unwrap();

    // Second life: the courier is listening before the server comes back.
    let mut config = fx.config();
    if let common::Mqtt::Embedded = fx.backend.mqtt {
        // The embedded broker must be up before the courier can subscribe.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        config.mqtt.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        fleet_server::broker::start_embedded(&config.mqtt).unwrap();
        config.mqtt.mode = fleet_server::config::BrokerMode::External;
        config.mqtt.url = Some(format!("mqtt://127.0.0.1:{port}"));
    }
    let (host, port) = match &config.mqtt.url {
        Some(url) => {
            let a = fleet_server::config::parse_broker_url(url).unwrap();
            (a.host, a.port)
        }
        None => unreachable!("the embedded case was turned into an external one above"),
    };
    let topic = config.topics().courier_assignments(&CourierId::new("k-1").unwrap());
    let mut courier = Subscriber::new(&host, port, &topic).await;
    let ts = fx.start(config).await;
    let (_, payload) = courier.next("the assignment queued before the crash").await;
    match decode::<CourierBody>(&payload, 1 << 20).unwrap().body {
        CourierBody::Assignment(task) => assert_eq!(task.parcel.0, created.parcel.id),
        other => panic!("expected an assignment, got {other:?}"),
    }
    ts.wait_for_metric("lockerfleet_notifications_total{channel=\"mqtt\",outcome=\"delivered\"}", 1.0).await;
    ts.server.stop().await;
    fx.cleanup().await;
}

mod offline {
    use super::*;

    backend_tests!(
        a_cabinet_that_was_offline_converges_when_it_says_hello,
        cancelling_an_assigned_parcel_tells_the_cabinet_and_the_courier,
        events_of_an_unregistered_cabinet_are_neither_stored_nor_acked,
        a_hello_and_an_applied_report_written_while_the_database_is_locked_are_kept,
        a_graceful_stop_writes_and_acks_what_ingest_still_holds,
    );
}

/// Events that wait in ingest's buffer when the server is stopped are written and acked
/// before it goes, and so are the hello and applied report that arrived with them.
async fn a_graceful_stop_writes_and_acks_what_ingest_still_holds(backend: Backend) {
    use lockerfleet_shared::envelope::{Applied, UpBody};
    let fx = Fixture::new(backend).await;
    let mut config = fx.config();
    // Nothing is flushed on its own for a minute: only the stop can write it.
    config.ingest.max_wait_ms = 60_000;
    let ts = fx.start(config).await;
    setup(&ts).await;
    let mut cab_a = ts.connect_cabinet("cab-a").await;
    assign(&ts, "TRK-stop", "s", "cab-a").await;
    let set = cab_a
        .expect_down("the desired state", |b| match b {
            DownBody::Parcels(set) if !set.parcels.is_empty() => Some(set.clone()),
            _ => None,
        })
        .await;
    let event = Uuid::now_v7();
    cab_a.send_event(event, 1, EventKind::Alarm { code: "door_forced".into(), detail: "S1".into() }).await;
    cab_a.send(UpBody::Applied(Applied { templates: None, parcels: Some(set.version) })).await;
    ts.wait_for_metric("lockerfleet_ingest_buffered_events", 1.0).await;
    // The applied report is written at once (nothing else is being written).
    ts.wait_until("the applied version is recorded", || async {
        ts.cabinet_view("cab-a").await["desired"]["parcels_applied"] == set.version
    })
    .await;
    assert_eq!(ts.server.store.count_cabinet_events().await.unwrap(), 0, "the event waits in the buffer");

    let metrics = ts.server.metrics.clone();
    let acks_before = metrics.acks_sent.get();
    ts.server.stop().await;
    // A connection of our own: the server's pool holds connections of its stopped threads.
    let store = fleet_server::store::Store::connect(&fx.database_url, 1).await.unwrap();
    assert_eq!(store.count_cabinet_events().await.unwrap(), 1, "the buffered event was written at the stop");
    assert_eq!(metrics.acks_sent.get(), acks_before + 1, "and acked");
    fx.cleanup().await;
}

/// Hellos and applied-version reports are written in batches; a batch the database
/// refuses (SQLite's lock past its busy timeout) or holds up (a PostgreSQL table lock) is
/// put back and written later: the cabinet still gets its desired state, and what it
/// confirmed is recorded.
async fn a_hello_and_an_applied_report_written_while_the_database_is_locked_are_kept(backend: Backend) {
    use lockerfleet_shared::envelope::{Applied, UpBody};
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    setup(&ts).await;
    // A parcel for cab-a while it is away: its desired state moves to version 1 or more.
    let created = assign(&ts, "TRK-lock", "s", "cab-a").await;
    let parcel = ParcelId(Uuid::parse_str(created["id"].as_str().unwrap()).unwrap());
    ts.wait_for_metric("lockerfleet_desired_state_pushes_total{kind=\"parcels\"}", 1.0).await;
    let version = ts.cabinet_view("cab-a").await["desired"]["parcels_version"].as_i64().unwrap();
    assert!(version >= 1);

    // The cabinet-state writes fail: on SQLite another client holds the one write lock
    // past the busy timeout; on PostgreSQL the table is renamed away (a lock there would
    // only make the write wait).
    let other = sea_orm::Database::connect(fx.database_url.as_str()).await.unwrap();
    let postgres = fx.database_url.starts_with("postgres");
    let lock = if postgres {
        other.execute_unprepared("ALTER TABLE cabinet_desired RENAME TO cabinet_desired_away").await.unwrap();
        None
    } else {
        let lock = other.begin().await.unwrap();
        lock.execute_unprepared("CREATE TABLE state_blocker (x INTEGER)").await.unwrap();
        Some(lock)
    };
    let mut cab_a = ts.connect_cabinet("cab-a").await;
    cab_a.hello("1.0.0").await;
    cab_a.send(UpBody::Applied(Applied { templates: None, parcels: Some(version as u64) })).await;
    // On SQLite the hello's batch waits out the busy timeout (10 s) first, then the report's.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let retried = r#"lockerfleet_cabinet_state_writes_total{kind="applied",outcome="retried"}"#;
    while ts.metric(retried).await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "no cabinet-state write failed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    match lock {
        Some(lock) => lock.rollback().await.unwrap(),
        None => {
            other.execute_unprepared("ALTER TABLE cabinet_desired_away RENAME TO cabinet_desired").await.unwrap();
        }
    }

    let set = cab_a
        .expect_down("the desired state after hello", |b| match b {
            DownBody::Parcels(set) => Some(set.clone()),
            _ => None,
        })
        .await;
    assert!(set.parcels.iter().any(|p| p.parcel == parcel), "{set:?}");
    ts.wait_until("the applied version is recorded", || async {
        ts.cabinet_view("cab-a").await["desired"]["parcels_applied"] == version
    })
    .await;
    assert!(ts.metric(r#"lockerfleet_cabinet_state_writes_total{kind="applied",outcome="written"}"#).await >= 1.0);
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn cancelling_an_assigned_parcel_tells_the_cabinet_and_the_courier(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    setup(&ts).await;
    let mut cab_a = ts.connect_cabinet("cab-a").await;
    let topic = ts.topics.courier_assignments(&CourierId::new("k-1").unwrap());
    let mut courier = Subscriber::new(&ts.server.mqtt_host, ts.server.mqtt_port, &topic).await;
    let (_, created) = ts
        .post(
            "/api/v1/parcels",
            &json!({"tenant": "acme", "reference": "TRK-c", "courier": "k-1", "size": "s", "cabinet": "cab-a"}),
        )
        .await;
    let parcel = ParcelId(Uuid::parse_str(created["id"].as_str().unwrap()).unwrap());
    cab_a
        .wait_view("the expected parcel", |v| {
            v.parcels.as_ref().is_some_and(|s| s.parcels.iter().any(|p| p.parcel == parcel))
        })
        .await;
    let (status, cancelled) = ts.post(&format!("/api/v1/parcels/{}/cancel", parcel.0), &json!({})).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    // The cabinet stops expecting it, so the compartment cannot be filled twice.
    cab_a
        .wait_view("parcels without the cancelled one", |v| {
            v.parcels.as_ref().is_some_and(|s| s.parcels.iter().all(|p| p.parcel != parcel))
        })
        .await;
    let record = ts.server.store.cabinet("cab-a").await.unwrap().unwrap();
    assert!(record.compartments.iter().all(|c| c.parcel_id.is_none()));
    // The courier hears the assignment, then its withdrawal.
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let (_, payload) = courier.next("courier notifications").await;
        kinds.push(match decode::<CourierBody>(&payload, 1 << 20).unwrap().body {
            CourierBody::Assignment(_) => "assignment",
            CourierBody::Withdrawn(_) => "withdrawn",
            CourierBody::Collection(_) => "collection",
        });
    }
    assert_eq!(kinds, ["assignment", "withdrawn"]);
    // A second cancel is refused with a clear reason.
    let (status, err) = ts.post(&format!("/api/v1/parcels/{}/cancel", parcel.0), &json!({})).await;
    assert_eq!(status, 409);
    assert_eq!(err["error"]["code"], "invalid_transition");
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn events_of_an_unregistered_cabinet_are_neither_stored_nor_acked(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    setup(&ts).await;
    let mut stranger = ts.connect_cabinet("cab-x").await;
    let mut cab_a = ts.connect_cabinet("cab-a").await;
    let forged = Uuid::now_v7();
    stranger.send_event(forged, 1, EventKind::Alarm { code: "door_forced".into(), detail: "A1".into() }).await;
    ts.wait_for_metric("lockerfleet_rejected_messages_total{reason=\"unregistered_cabinet\"}", 1.0).await;
    // A registered cabinet's event, sent after the stranger's, is stored and acked...
    let real = Uuid::now_v7();
    cab_a.send_event(real, 1, EventKind::Alarm { code: "door_forced".into(), detail: "S1".into() }).await;
    cab_a.wait_view("the ack", |v| v.acked.contains(&real)).await;
    // ...while the stranger's was neither.
    assert_eq!(ts.server.store.count_cabinet_events().await.unwrap(), 1);
    assert!(!stranger.view.acked.contains(&forged) && stranger.down.try_recv().is_err());
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn a_cabinet_that_was_offline_converges_when_it_says_hello(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    setup(&ts).await;
    // cab-a is not connected while its parcel is assigned: the push goes nowhere.
    let created = assign(&ts, "TRK-off", "s", "cab-a").await;
    ts.wait_for_metric("lockerfleet_desired_state_pushes_total{kind=\"parcels\"}", 1.0).await;
    let parcel = ParcelId(Uuid::parse_str(created["id"].as_str().unwrap()).unwrap());

    // It comes back and says hello: it receives its whole current desired state.
    let mut cab_a = ts.connect_cabinet("cab-a").await;
    cab_a.hello("1.0.0").await;
    let set = cab_a
        .expect_down("the desired state after hello", |b| match b {
            DownBody::Parcels(set) => Some(set.clone()),
            _ => None,
        })
        .await;
    assert!(set.parcels.iter().any(|p| p.parcel == parcel && p.stage == ParcelStage::Expected), "{set:?}");
    assert!(set.version >= 1);
    ts.server.stop().await;
    fx.cleanup().await;
}

mod replicas {
    use super::*;

    backend_tests!(two_replicas_deliver_each_notification_once,);
}

async fn two_replicas_deliver_each_notification_once(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let mut config = fx.config();
    if matches!(fx.backend.mqtt, common::Mqtt::Embedded) {
        let mut broker = config.mqtt.clone();
        broker.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let b = fleet_server::broker::start_embedded(&broker).unwrap();
        config.mqtt.mode = fleet_server::config::BrokerMode::External;
        config.mqtt.url = Some(format!("mqtt://127.0.0.1:{}", b.addr.port()));
    }
    config.mqtt.shared_group = Some("fleet".into());
    let a = fx.start(config.clone()).await;
    let b = fx.start(config.clone()).await;
    setup(&a).await;
    let topic = a.topics.courier_assignments(&CourierId::new("k-1").unwrap());
    let mut courier = Subscriber::new(&a.server.mqtt_host, a.server.mqtt_port, &topic).await;
    // Ten parcels through replica A; both relays poll the same outbox.
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..10 {
        let size = if i % 2 == 0 { "s" } else { "m" };
        let cabinet = if i < 2 { "cab-a" } else { "cab-b" };
        let (status, created) = a
            .post("/api/v1/parcels", &json!({"tenant": "acme", "reference": format!("R{i}"), "courier": "k-1", "size": size, "cabinet": cabinet}))
            .await;
        if status == 201 {
            ids.insert(created["id"].as_str().unwrap().to_owned());
        }
    }
    assert!(ids.len() >= 4, "{ids:?}");
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < ids.len() {
        let (_, payload) = courier.next("every assignment").await;
        if let CourierBody::Assignment(t) = decode::<CourierBody>(&payload, 1 << 20).unwrap().body {
            seen.insert(t.parcel.0.to_string());
        }
    }
    assert_eq!(seen, ids);
    // Each row was claimed by one relay: together they delivered each exactly once.
    let series = "lockerfleet_notifications_total{channel=\"mqtt\",outcome=\"delivered\"}";
    let total = a.metric(series).await + b.metric(series).await;
    assert_eq!(total, ids.len() as f64);
    a.server.stop().await;
    b.server.stop().await;
    fx.cleanup().await;
}

/// A relay pass builds all its cabinets' desired states with one round of queries: each
/// cabinet gets exactly what it would get alone (its own parcels, versions and settings),
/// and a cabinet the database does not know gets an empty state.
async fn desired_states_built_together_are_those_built_one_by_one(backend: Backend) {
    use fleet_server::service::desired::build_many;
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    setup(&ts).await;
    let (status, body) = ts
        .request("PUT", "/api/v1/cabinets/cab-b/settings", Some(&ts.token), Some(&json!({"door_left_open_s": 90})))
        .await;
    assert!(status < 300, "{status}: {body}");
    let mut placed = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (i, (cabinet, size)) in [("cab-a", "s"), ("cab-a", "m"), ("cab-b", "s")].into_iter().enumerate() {
        let created = assign(&ts, &format!("TRK-{i}"), size, cabinet).await;
        placed.entry(cabinet.to_owned()).or_default().push(created["id"].as_str().unwrap().to_owned());
    }
    let keys = vec!["pass-key".to_owned()];
    let store = &ts.server.store;
    let together = build_many(store, &["cab-a", "cab-b", "cab-x"], &keys).await.unwrap();
    assert_eq!(together.len(), 3);
    for cabinet in ["cab-a", "cab-b", "cab-x"] {
        let alone = build_many(store, &[cabinet], &keys).await.unwrap().remove(cabinet).unwrap();
        let built = &together[cabinet];
        assert_eq!(built.parcels, alone.parcels, "{cabinet}");
        assert_eq!(built.templates, alone.templates, "{cabinet}");
        let mut ids: Vec<String> = built.parcels.parcels.iter().map(|p| p.parcel.0.to_string()).collect();
        ids.sort();
        let mut want = placed.get(cabinet).cloned().unwrap_or_default();
        want.sort();
        assert_eq!(ids, want, "{cabinet} holds its own parcels only");
        assert_eq!(built.parcels.courier_pass_keys, keys);
    }
    assert!(together["cab-a"].parcels.version >= 2);
    assert_eq!(together["cab-x"].parcels.version, 0, "an unknown cabinet's state is empty");
    assert_ne!(together["cab-b"].parcels.settings, together["cab-a"].parcels.settings, "cab-b's own settings");
    ts.server.stop().await;
    fx.cleanup().await;
}
