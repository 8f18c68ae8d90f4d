//! Sealed face templates through the server, in both custody modes: delivered only to the
//! parcel's cabinet, opened only with its key, revoked at pickup and on erasure, and never
//! stored in a form the server could open.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use chrono::{Duration, Utc};
use common::{Backend, FakeCabinet, Fixture, TestServer};
use lockerfleet_shared::envelope::{DownBody, EventKind, PickupMethod, TemplateSet};
use lockerfleet_shared::sdk::{ReadyNotice, seal_for_parcel};
use lockerfleet_shared::seal::{self, CabinetKeyPair, CabinetPublicKey, FaceTemplate, ModelRef, OpenPolicy};
use lockerfleet_shared::{CabinetId, CompartmentId, CourierId, ParcelId};
use serde_json::json;
use uuid::Uuid;

backend_tests!(
    expiry_revokes_the_template_and_sends_a_courier_to_collect,
    a_recipient_held_template_reaches_only_its_cabinet_and_is_revoked_at_pickup,
    an_operator_held_template_is_sealed_at_ready_and_erasure_leaves_nothing,
    a_template_sealed_for_another_cabinet_is_refused,
    a_replayed_or_expired_sealed_template_is_refused,
);

const KEK: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes, base64

fn model() -> ModelRef {
    ModelRef { id: "fr_feature".into(), sha256: "ab".repeat(32) }
}

fn face() -> FaceTemplate {
    FaceTemplate::new((0..512).map(|i| ((i * 7) % 13) as f32 / 13.0).collect())
}

struct World {
    keys_a: CabinetKeyPair,
    keys_b: CabinetKeyPair,
    recipient: Uuid,
}

async fn world(ts: &TestServer, custody: &str) -> World {
    ts.create_tenant("acme").await;
    let (status, body) =
        ts.request("PATCH", "/api/v1/tenants/acme", Some(&ts.token), Some(&json!({"custody": custody}))).await;
    assert_eq!(status, 200, "{body}");
    let keys_a = ts.register_cabinet("acme", "cab-a").await;
    let keys_b = ts.register_cabinet("acme", "cab-b").await;
    assert_eq!(ts.post("/api/v1/couriers", &json!({"id": "k-1", "tenant": "acme", "name": "Kim"})).await.0, 201);
    let (_, r) = ts.post("/api/v1/recipients", &json!({"tenant": "acme", "reference": "cust-1"})).await;
    World { keys_a, keys_b, recipient: Uuid::parse_str(r["id"].as_str().unwrap()).unwrap() }
}

/// Creates a parcel for the recipient at cab-a and deposits it.
async fn ready_parcel(ts: &TestServer, cab: &mut FakeCabinet, recipient: Uuid) -> ParcelId {
    let (status, created) = ts
        .post(
            "/api/v1/parcels",
            &json!({"tenant": "acme", "reference": "TRK", "recipient": recipient, "courier": "k-1", "size": "s", "cabinet": "cab-a"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let parcel = ParcelId(Uuid::parse_str(created["id"].as_str().unwrap()).unwrap());
    let compartment = CompartmentId::new(created["compartment"].as_str().unwrap()).unwrap();
    cab.send_event(
        Uuid::now_v7(),
        1,
        EventKind::Deposit { parcel, compartment, courier: CourierId::new("k-1").unwrap() },
    )
    .await;
    ts.wait_until("the parcel is ready", || async {
        ts.get(&format!("/api/v1/parcels/{}", parcel.0)).await.1["state"] == "ready"
    })
    .await;
    parcel
}

async fn next_templates(cab: &mut FakeCabinet, what: &str, pick: impl Fn(&TemplateSet) -> bool) -> TemplateSet {
    cab.expect_down(what, |b| match b {
        DownBody::Templates(t) if pick(t) => Some(t.clone()),
        _ => None,
    })
    .await
}

async fn a_recipient_held_template_reaches_only_its_cabinet_and_is_revoked_at_pickup(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    let w = world(&ts, "recipient").await;
    let mut cab_a = ts.connect_cabinet("cab-a").await;
    let mut cab_b = ts.connect_cabinet("cab-b").await;
    let parcel = ready_parcel(&ts, &mut cab_a, w.recipient).await;

    // The recipient's app learns the cabinet's key and seals on the phone.
    let (status, notice) = ts.get(&format!("/api/v1/parcels/{}/ready-notice", parcel.0)).await;
    assert_eq!(status, 200, "{notice}");
    let notice = ReadyNotice {
        parcel,
        cabinet: CabinetId::new(notice["cabinet"].as_str().unwrap()).unwrap(),
        cabinet_public_key: CabinetPublicKey::from_base64(notice["cabinet_public_key"].as_str().unwrap()).unwrap(),
        deadline: notice["deadline"].as_str().unwrap().parse().unwrap(),
    };
    assert_eq!(notice.cabinet_public_key, w.keys_a.public());
    let sealed = seal_for_parcel(&notice, &face(), &model(), Utc::now()).unwrap();
    let (status, body) = ts.post(&format!("/api/v1/parcels/{}/sealed-template", parcel.0), &json!(sealed)).await;
    assert_eq!(status, 202, "{body}");

    // cab-a gets it and can open it; cab-b's key cannot, and cab-b never hears of it.
    let set = next_templates(&mut cab_a, "templates with the sealed blob", |t| !t.add.is_empty()).await;
    assert_eq!(set.add.len(), 1);
    let cabinet_a = CabinetId::new("cab-a").unwrap();
    let policy = OpenPolicy { cabinet: &cabinet_a, model: &model(), now: Utc::now() };
    assert_eq!(seal::open(&w.keys_a, &set.add[0], &policy).unwrap(), face());
    assert!(seal::open(&w.keys_b, &set.add[0], &policy).is_err());

    // The server holds only ciphertext: the stored blob is what the app made, and the
    // server has no private key to open it with (it stores public keys only).
    let stored = ts.server.store.sealed_templates_of("cab-a").await.unwrap();
    assert_eq!(stored, vec![sealed.clone()]);
    let record = ts.server.store.cabinet("cab-a").await.unwrap().unwrap();
    assert_eq!(record.cabinet.public_key, w.keys_a.public().to_base64());
    assert!(seal::open(&CabinetKeyPair::generate(), &stored[0], &policy).is_err());

    // Pickup revokes it: the next template set is empty and has a higher version.
    cab_a
        .send_event(
            Uuid::now_v7(),
            2,
            EventKind::Pickup { parcel, compartment: CompartmentId::new("A1").unwrap(), method: PickupMethod::Face },
        )
        .await;
    let after = next_templates(&mut cab_a, "templates without the blob", |t| t.add.is_empty()).await;
    assert!(after.version > set.version);
    assert!(ts.server.store.sealed_templates_of("cab-a").await.unwrap().is_empty());
    assert_eq!(ts.metric("lockerfleet_templates_total{op=\"revoked\"}").await, 1.0);

    // The cabinet confirms the revocation by reporting the version applied.
    cab_a
        .send(lockerfleet_shared::envelope::UpBody::Applied(lockerfleet_shared::envelope::Applied {
            templates: Some(after.version),
            parcels: None,
        }))
        .await;
    ts.wait_until("cab-a confirms the revocation", || async {
        ts.cabinet_view("cab-a").await["desired"]["templates_applied"] == json!(after.version)
    })
    .await;
    let nothing = cab_b.down.try_recv();
    assert!(nothing.is_err(), "cab-b received {nothing:?}");
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn an_operator_held_template_is_sealed_at_ready_and_erasure_leaves_nothing(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let mut config = fx.config();
    config.templates.kek = Some(KEK.into());
    let ts = fx.start(config).await;
    let w = world(&ts, "operator").await;
    let mut cab_a = ts.connect_cabinet("cab-a").await;

    let enrolment = json!({
        "template": face().values(),
        "model": model(),
        "consent": {"given_at": Utc::now() - Duration::minutes(1), "text_version": "2026-11 v3"},
    });
    let (status, body) = ts
        .request("PUT", &format!("/api/v1/recipients/{}/template", w.recipient), Some(&ts.token), Some(&enrolment))
        .await;
    assert_eq!(status, 204, "{body}");
    // At rest it is encrypted: no value of the template appears in the stored text.
    let at_rest = ts.server.store.recipient_template(w.recipient).await.unwrap().unwrap();
    assert!(!at_rest.contains("0.07692"), "plaintext values in the stored template");

    let parcel = ready_parcel(&ts, &mut cab_a, w.recipient).await;
    let set = next_templates(&mut cab_a, "the template sealed by the server", |t| !t.add.is_empty()).await;
    let cabinet_a = CabinetId::new("cab-a").unwrap();
    let policy = OpenPolicy { cabinet: &cabinet_a, model: &model(), now: Utc::now() };
    let opened = seal::open(&w.keys_a, &set.add[0], &policy).unwrap();
    assert_eq!(opened, face());
    assert_eq!(set.add[0].binding.parcel, parcel);

    // Erasure: the receipt names the version that confirms removal at cab-a.
    let (status, receipt) =
        ts.request("DELETE", &format!("/api/v1/recipients/{}", w.recipient), Some(&ts.token), None).await;
    assert_eq!(status, 202, "{receipt}");
    assert_eq!(receipt["cabinets"][0]["cabinet"], "cab-a");
    let version = receipt["cabinets"][0]["templates_version"].as_u64().unwrap();
    let after = next_templates(&mut cab_a, "templates without the erased recipient", |t| t.version >= version).await;
    assert!(after.add.is_empty());
    assert!(ts.server.store.recipient_template(w.recipient).await.unwrap().is_none(), "the recipient is gone");
    assert!(ts.server.store.sealed_templates_of("cab-a").await.unwrap().is_empty());
    let (_, p) = ts.get(&format!("/api/v1/parcels/{}", parcel.0)).await;
    assert!(p["recipient"].is_null(), "the parcel no longer points at the erased recipient");
    // A second erasure finds nothing.
    assert_eq!(
        ts.request("DELETE", &format!("/api/v1/recipients/{}", w.recipient), Some(&ts.token), None).await.0,
        422
    );
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn a_template_sealed_for_another_cabinet_is_refused(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    let w = world(&ts, "recipient").await;
    let mut cab_a = ts.connect_cabinet("cab-a").await;
    let parcel = ready_parcel(&ts, &mut cab_a, w.recipient).await;
    let wrong = ReadyNotice {
        parcel,
        cabinet: CabinetId::new("cab-b").unwrap(),
        cabinet_public_key: w.keys_b.public(),
        deadline: Utc::now() + Duration::hours(40),
    };
    let sealed = seal_for_parcel(&wrong, &face(), &model(), Utc::now()).unwrap();
    let (status, err) = ts.post(&format!("/api/v1/parcels/{}/sealed-template", parcel.0), &json!(sealed)).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["code"], "template_refused");
    assert!(err["error"]["message"].as_str().unwrap().contains("cab-b"));
    // Same cabinet id, another key: refused too.
    let forged = ReadyNotice { cabinet: CabinetId::new("cab-a").unwrap(), ..wrong };
    let sealed = seal_for_parcel(&forged, &face(), &model(), Utc::now()).unwrap();
    let (status, err) = ts.post(&format!("/api/v1/parcels/{}/sealed-template", parcel.0), &json!(sealed)).await;
    assert_eq!(status, 422, "{err}");
    assert!(ts.server.store.sealed_templates_of("cab-a").await.unwrap().is_empty());
    assert_eq!(ts.metric("lockerfleet_templates_total{op=\"refused\"}").await, 2.0, "each refusal is counted");
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn a_replayed_or_expired_sealed_template_is_refused(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    let w = world(&ts, "recipient").await;
    let mut cab_a = ts.connect_cabinet("cab-a").await;
    let parcel = ready_parcel(&ts, &mut cab_a, w.recipient).await;
    let upload = format!("/api/v1/parcels/{}/sealed-template", parcel.0);
    let refused = "lockerfleet_templates_total{op=\"refused\"}";

    // Sealed for the right cabinet and parcel, but already expired.
    let binding = seal::TemplateBinding {
        cabinet: CabinetId::new("cab-a").unwrap(),
        parcel,
        expires_at: Utc::now() - Duration::minutes(1),
        model: model(),
    };
    let expired = seal::seal(&w.keys_a.public(), binding, &face()).unwrap();
    let (status, err) = ts.post(&upload, &json!(expired)).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["code"], "template_refused");
    assert!(err["error"]["message"].as_str().unwrap().contains("must expire after now"), "{err}");
    assert_eq!(ts.metric(refused).await, 1.0);
    assert!(ts.server.store.sealed_templates_of("cab-a").await.unwrap().is_empty());

    // A good one, uploaded twice while the parcel waits: the same blob replaces itself.
    let notice = ReadyNotice {
        parcel,
        cabinet: CabinetId::new("cab-a").unwrap(),
        cabinet_public_key: w.keys_a.public(),
        deadline: Utc::now() + Duration::hours(40),
    };
    let sealed = seal_for_parcel(&notice, &face(), &model(), Utc::now()).unwrap();
    for _ in 0..2 {
        assert_eq!(ts.post(&upload, &json!(sealed)).await.0, 202);
    }
    assert_eq!(ts.server.store.sealed_templates_of("cab-a").await.unwrap(), vec![sealed.clone()]);
    next_templates(&mut cab_a, "the template", |t| t.add.len() == 1).await;

    // After the pickup the same blob replayed is refused: the template never returns.
    cab_a
        .send_event(
            Uuid::now_v7(),
            2,
            EventKind::Pickup { parcel, compartment: CompartmentId::new("A1").unwrap(), method: PickupMethod::Code },
        )
        .await;
    next_templates(&mut cab_a, "the revocation", |t| t.add.is_empty()).await;
    let (status, err) = ts.post(&upload, &json!(sealed)).await;
    assert_eq!(status, 422, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("picked_up"), "{err}");
    assert_eq!(ts.metric(refused).await, 2.0);
    assert_eq!(ts.metric("lockerfleet_templates_total{op=\"accepted\"}").await, 2.0);
    assert!(ts.server.store.sealed_templates_of("cab-a").await.unwrap().is_empty());
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn expiry_revokes_the_template_and_sends_a_courier_to_collect(backend: Backend) {
    use sea_orm::EntityTrait;
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    let w = world(&ts, "recipient").await;
    let mut cab_a = ts.connect_cabinet("cab-a").await;
    let topic = ts.topics.courier_assignments(&CourierId::new("k-1").unwrap());
    let mut courier = common::Subscriber::new(&ts.server.mqtt_host, ts.server.mqtt_port, &topic).await;
    let parcel = ready_parcel(&ts, &mut cab_a, w.recipient).await;
    let (_, notice) = ts.get(&format!("/api/v1/parcels/{}/ready-notice", parcel.0)).await;
    let notice = ReadyNotice {
        parcel,
        cabinet: CabinetId::new("cab-a").unwrap(),
        cabinet_public_key: w.keys_a.public(),
        deadline: notice["deadline"].as_str().unwrap().parse().unwrap(),
    };
    let sealed = seal_for_parcel(&notice, &face(), &model(), Utc::now()).unwrap();
    assert_eq!(ts.post(&format!("/api/v1/parcels/{}/sealed-template", parcel.0), &json!(sealed)).await.0, 202);
    next_templates(&mut cab_a, "the template", |t| !t.add.is_empty()).await;

    // The pickup window ends (moved into the past rather than waited for).
    let mut row: fleet_server::store::entities::parcel::ActiveModel =
        fleet_server::store::entities::parcel::Entity::find_by_id(parcel.0)
            .one(ts.server.store.connection())
            .await
            .unwrap()
            .unwrap()
            .into();
    row.deadline = sea_orm::ActiveValue::Set(Some(Utc::now() - Duration::minutes(1)));
    fleet_server::store::entities::parcel::Entity::update(row).exec(ts.server.store.connection()).await.unwrap();
    let ctx = fleet_server::service::Ctx {
        store: ts.server.store.clone(),
        topics: ts.topics.clone(),
        max_alternative_km: 5.0,
        pickup_window_s: None,
        kek: None,
        metrics: ts.server.metrics.clone(),
        passes: std::sync::Arc::new(fleet_server::service::passes::PassSigner::generate()),
    };
    assert_eq!(fleet_server::actors::sweeper::sweep(&ctx).await.unwrap(), 1);
    assert_eq!(ts.get(&format!("/api/v1/parcels/{}", parcel.0)).await.1["state"], "expired");

    // The template is gone from the cabinet, the parcel waits there for collection...
    let view = cab_a
        .wait_view("the expired parcel's state", |v| {
            v.templates.as_ref().is_some_and(|t| t.add.is_empty() && t.version >= 2)
                && v.parcels.as_ref().is_some_and(|s| {
                    s.parcels
                        .iter()
                        .any(|p| p.parcel == parcel && p.stage == lockerfleet_shared::envelope::ParcelStage::Collect)
                })
        })
        .await;
    let collect = view.parcels.unwrap().parcels.into_iter().find(|p| p.parcel == parcel).unwrap();
    assert_eq!(collect.code_hash, None, "an expired parcel's code opens nothing");
    // ...and the courier is sent to collect it.
    loop {
        let (_, payload) = courier.next("the collection task").await;
        if let lockerfleet_shared::envelope::CourierBody::Collection(t) =
            lockerfleet_shared::envelope::decode::<lockerfleet_shared::envelope::CourierBody>(&payload, 1 << 20)
                .unwrap()
                .body
        {
            assert_eq!(t.parcel, parcel);
            break;
        }
    }
    // A second sweep finds nothing to do.
    assert_eq!(fleet_server::actors::sweeper::sweep(&ctx).await.unwrap(), 0);
    ts.server.stop().await;
    fx.cleanup().await;
}
