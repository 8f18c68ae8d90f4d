//! The bad-input matrix: one test per way a cabinet's message or an API request can be
//! wrong, each proving the outcome `docs/security.md` documents for it. A refused MQTT
//! message is counted once under its reason in `lockerfleet_rejected_messages_total`
//! (and only there), its decode error names the problem, and the good events the same
//! cabinet sends just before and just after it are stored and acked: nothing good is lost.
//! A refused API request answers a status and an error body that name the problem, is
//! counted in `lockerfleet_http_requests_total` by status class, and stores nothing.
//!
//! Rows covered completely elsewhere are listed in the table in `docs/security.md`
//! with the test that covers them (unregistered cabinets, a resent deposit, templates for
//! another cabinet, forged releases, unknown tenants, expired tokens).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Backend, FakeCabinet, Fixture, TestServer};
use lockerfleet_shared::envelope::{CabinetEvent, DecodeError, EventBatch, EventKind, PickupMethod, UpBody, decode};
use lockerfleet_shared::{CabinetId, CompartmentId, CourierId, Envelope, ParcelId};
use serde_json::{Value, json};
use uuid::Uuid;

backend_tests!(
    an_oversized_payload_is_refused_before_parsing,
    a_truncated_payload_is_refused,
    a_payload_of_another_schema_version_is_refused,
    an_unknown_body_kind_is_refused,
    an_unknown_field_is_refused,
    an_envelope_naming_another_cabinet_than_its_topic_is_refused,
    a_replayed_batch_is_acked_again_and_stored_once,
    out_of_order_and_reused_sequence_numbers_lose_nothing,
    a_replayed_pickup_changes_nothing,
    api_bodies_with_wrong_types_are_refused,
    huge_strings_and_bodies_are_refused,
    sql_and_script_injection_stays_inert_text,
);

/// A server with cabinets `cab-a` and `cab-b` of tenant `acme`, `cab-a` connected and one
/// good event of it stored and acked.
struct Row {
    fx: Fixture,
    ts: TestServer,
    cab: FakeCabinet,
    good: Vec<Uuid>,
}

fn alarm(detail: &str) -> EventKind {
    EventKind::Alarm { code: "door_left_open".into(), detail: detail.into() }
}

fn rejected(reason: &str) -> String {
    format!("lockerfleet_rejected_messages_total{{reason=\"{reason}\"}}")
}

/// Every rejected message, whatever its reason.
async fn all_rejected(ts: &TestServer) -> f64 {
    ts.get_text("/metrics")
        .await
        .lines()
        .filter(|l| l.starts_with("lockerfleet_rejected_messages_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The ids of the events stored for a cabinet, by its sequence number (newest first).
async fn stored(ts: &TestServer, cabinet: &str) -> Vec<(i64, Uuid)> {
    let (status, body) = ts.get(&format!("/api/v1/cabinets/{cabinet}/events?limit=500")).await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|e| (e["seq"].as_i64().unwrap(), Uuid::parse_str(e["id"].as_str().unwrap()).unwrap()))
        .collect()
}

impl Row {
    async fn new(backend: Backend) -> Self {
        let fx = Fixture::new(backend).await;
        let ts = fx.start(fx.config()).await;
        ts.create_tenant("acme").await;
        ts.register_cabinet("acme", "cab-a").await;
        ts.register_cabinet("acme", "cab-b").await;
        let cab = ts.connect_cabinet("cab-a").await;
        let mut row = Self { fx, ts, cab, good: Vec::new() };
        row.good_event("before").await;
        row
    }

    /// Sends one good event and waits for its ack.
    async fn good_event(&mut self, detail: &str) {
        let id = Uuid::now_v7();
        let seq = self.good.len() as u64 + 100;
        self.cab.send_event(id, seq, alarm(detail)).await;
        self.cab.wait_view(&format!("the ack of the good event {detail}"), |v| v.acked.contains(&id)).await;
        self.good.push(id);
    }

    /// The documented outcome of a refused MQTT message: counted once under `reason` and
    /// nowhere else, and the good events before and after it stored and acked.
    async fn assert_refused_once_and_nothing_lost(mut self, reason: &str) {
        // Messages of one connection are routed in order: once the good event sent after
        // the bad one is acked, the bad one has been judged.
        self.good_event("after").await;
        assert_eq!(self.ts.metric(&rejected(reason)).await, 1.0, "{reason} counted exactly once");
        assert_eq!(all_rejected(&self.ts).await, 1.0, "no other rejection was counted");
        let ids: Vec<Uuid> = stored(&self.ts, "cab-a").await.into_iter().map(|(_, id)| id).collect();
        for good in &self.good {
            assert!(ids.contains(good), "good event {good} is stored: {ids:?}");
        }
        assert_eq!(self.ts.server.store.count_cabinet_events().await.unwrap(), self.good.len() as u64);
        self.ts.server.stop().await;
        self.fx.cleanup().await;
    }
}

/// An envelope with one event of `cab-a`, as JSON to be spoiled by a test.
fn envelope_json(cabinet: &str) -> Value {
    let env = Envelope::new(
        CabinetId::new(cabinet).unwrap(),
        7,
        UpBody::Events(EventBatch {
            events: vec![CabinetEvent { id: Uuid::now_v7(), seq: 7, at: chrono::Utc::now(), what: alarm("bad") }],
        }),
    );
    serde_json::to_value(env).unwrap()
}

fn decode_error(payload: &[u8], limit: usize) -> DecodeError {
    decode::<UpBody>(payload, limit).unwrap_err()
}

async fn an_oversized_payload_is_refused_before_parsing(backend: Backend) {
    let row = Row::new(backend).await;
    let limit = row.fx.config().mqtt.max_payload_bytes;
    // Not even JSON: the size is judged before a byte is parsed.
    let payload = vec![b'{'; limit + 1];
    let err = decode_error(&payload, limit);
    assert_eq!(err.to_string(), format!("payload is {} bytes; the limit is {limit}", limit + 1));
    row.cab.publish_up(payload).await;
    row.assert_refused_once_and_nothing_lost("too_large").await;
}

async fn a_truncated_payload_is_refused(backend: Backend) {
    let row = Row::new(backend).await;
    let whole = serde_json::to_vec(&envelope_json("cab-a")).unwrap();
    let cut = whole[..whole.len() / 2].to_vec();
    let err = decode_error(&cut, 1 << 20);
    assert!(err.to_string().contains("EOF while parsing"), "{err}");
    row.cab.publish_up(cut).await;
    row.assert_refused_once_and_nothing_lost("not_json").await;
}

async fn a_payload_of_another_schema_version_is_refused(backend: Backend) {
    let row = Row::new(backend).await;
    let mut v = envelope_json("cab-a");
    v["v"] = json!(2);
    let payload = serde_json::to_vec(&v).unwrap();
    assert_eq!(decode_error(&payload, 1 << 20).to_string(), "schema version 2 is not supported (this build reads 1)");
    row.cab.publish_up(payload).await;
    row.assert_refused_once_and_nothing_lost("unsupported_version").await;
}

async fn an_unknown_body_kind_is_refused(backend: Backend) {
    let row = Row::new(backend).await;
    let mut v = envelope_json("cab-a");
    v["body"] = json!({"kind": "open_all_doors", "data": {}});
    let payload = serde_json::to_vec(&v).unwrap();
    let err = decode_error(&payload, 1 << 20);
    assert!(err.to_string().contains("unknown variant `open_all_doors`"), "{err}");
    row.cab.publish_up(payload).await;
    row.assert_refused_once_and_nothing_lost("unknown_kind").await;
}

async fn an_unknown_field_is_refused(backend: Backend) {
    let row = Row::new(backend).await;
    let mut v = envelope_json("cab-a");
    v["body"]["data"]["events"][0]["open_door"] = json!("A1");
    let payload = serde_json::to_vec(&v).unwrap();
    let err = decode_error(&payload, 1 << 20);
    assert!(err.to_string().contains("unknown field `open_door`"), "{err}");
    row.cab.publish_up(payload).await;
    row.assert_refused_once_and_nothing_lost("unknown_field").await;
}

async fn an_envelope_naming_another_cabinet_than_its_topic_is_refused(backend: Backend) {
    let row = Row::new(backend).await;
    // cab-a's connection and topic, but an envelope (and an event) claiming to be cab-b's.
    let forged = envelope_json("cab-b");
    let forged_event = Uuid::parse_str(forged["body"]["data"]["events"][0]["id"].as_str().unwrap()).unwrap();
    row.cab.publish_up(serde_json::to_vec(&forged).unwrap()).await;
    row.ts.wait_for_metric(&rejected("cabinet_mismatch"), 1.0).await;
    let for_b = stored(&row.ts, "cab-b").await;
    assert!(for_b.is_empty(), "nothing is stored for cab-b: {for_b:?}");
    assert!(!row.cab.view.acked.contains(&forged_event));
    row.assert_refused_once_and_nothing_lost("cabinet_mismatch").await;
}

async fn a_replayed_batch_is_acked_again_and_stored_once(backend: Backend) {
    let mut row = Row::new(backend).await;
    // A cabinet that missed an ack resends the whole batch, events in a new envelope.
    let events: Vec<CabinetEvent> = (1..=3)
        .map(|seq| CabinetEvent { id: Uuid::now_v7(), seq, at: chrono::Utc::now(), what: alarm("batch") })
        .collect();
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    row.cab.send(UpBody::Events(EventBatch { events: events.clone() })).await;
    row.cab.wait_view("the batch's acks", |v| ids.iter().all(|id| v.acked.contains(id))).await;
    let duplicates = "lockerfleet_ingest_events_total{outcome=\"duplicate\"}";
    assert_eq!(row.ts.metric(duplicates).await, 0.0);
    row.cab.view.acked.clear();
    row.cab.send(UpBody::Events(EventBatch { events })).await;
    row.cab.wait_view("the replayed batch's acks", |v| ids.iter().all(|id| v.acked.contains(id))).await;
    assert_eq!(row.ts.metric(duplicates).await, 3.0, "each replayed event is counted as a duplicate");
    row.good.extend(&ids);
    // Stored once each: the good event before and the three.
    assert_eq!(row.ts.server.store.count_cabinet_events().await.unwrap(), 4);
    assert_eq!(all_rejected(&row.ts).await, 0.0, "a replay is not an error");
    row.good_event("after").await;
    assert_eq!(row.ts.server.store.count_cabinet_events().await.unwrap(), 5);
    row.ts.server.stop().await;
    row.fx.cleanup().await;
}

async fn out_of_order_and_reused_sequence_numbers_lose_nothing(backend: Backend) {
    let mut row = Row::new(backend).await;
    // Seq 3 arrives before 1 and 2 (a resend after a reconnect), and a cabinet whose
    // journal was reset starts again at 1 with new ids: the event id is the idempotency
    // key, so every one of them is a fact to keep.
    let made: Vec<(u64, Uuid)> = [3, 1, 2, 1].into_iter().map(|seq| (seq, Uuid::now_v7())).collect();
    for (seq, id) in &made {
        row.cab.send_event(*id, *seq, alarm("order")).await;
    }
    row.cab.wait_view("every ack", |v| made.iter().all(|(_, id)| v.acked.contains(id))).await;
    let list = stored(&row.ts, "cab-a").await;
    let ours: Vec<(i64, Uuid)> = list.into_iter().filter(|(_, id)| made.iter().any(|(_, m)| m == id)).collect();
    assert_eq!(ours.len(), 4, "all four are stored: {ours:?}");
    let seqs: Vec<i64> = ours.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [3, 2, 1, 1], "listed by the cabinet's sequence number, whatever the arrival order");
    assert_eq!(all_rejected(&row.ts).await, 0.0);
    row.good.extend(made.iter().map(|(_, id)| *id));
    row.good_event("after").await;
    assert_eq!(row.ts.server.store.count_cabinet_events().await.unwrap(), row.good.len() as u64);
    row.ts.server.stop().await;
    row.fx.cleanup().await;
}

/// A parcel at `cab-a` for courier `k-1`, deposited: ready for pickup.
async fn ready_parcel(row: &mut Row) -> (ParcelId, CompartmentId) {
    let ts = &row.ts;
    assert_eq!(ts.post("/api/v1/couriers", &json!({"id": "k-1", "tenant": "acme", "name": "Kim"})).await.0, 201);
    let (status, created) = ts
        .post(
            "/api/v1/parcels",
            &json!({"tenant": "acme", "reference": "TRK-R", "courier": "k-1", "size": "s", "cabinet": "cab-a"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let parcel = ParcelId(Uuid::parse_str(created["id"].as_str().unwrap()).unwrap());
    let compartment = CompartmentId::new(created["compartment"].as_str().unwrap()).unwrap();
    let deposit = Uuid::now_v7();
    row.cab
        .send_event(
            deposit,
            1,
            EventKind::Deposit { parcel, compartment: compartment.clone(), courier: CourierId::new("k-1").unwrap() },
        )
        .await;
    row.cab.wait_view("the deposit's ack", |v| v.acked.contains(&deposit)).await;
    row.good.push(deposit);
    (parcel, compartment)
}

/// The kinds on a parcel's timeline, oldest first.
async fn timeline(ts: &TestServer, parcel: ParcelId) -> Vec<Value> {
    let (_, body) = ts.get(&format!("/api/v1/parcels/{}/events", parcel.0)).await;
    body["items"].as_array().unwrap().iter().map(|e| e["kind"].clone()).collect()
}

async fn a_replayed_pickup_changes_nothing(backend: Backend) {
    let mut row = Row::new(backend).await;
    let (parcel, compartment) = ready_parcel(&mut row).await;
    let pickup = Uuid::now_v7();
    let what = EventKind::Pickup { parcel, compartment, method: PickupMethod::Code };
    row.cab.send_event(pickup, 2, what.clone()).await;
    row.cab.wait_view("the pickup's ack", |v| v.acked.contains(&pickup)).await;
    row.good.push(pickup);
    let before = timeline(&row.ts, parcel).await;
    assert_eq!(before.last().unwrap(), "pickup");
    let refused = "lockerfleet_ingest_refused_transitions_total{kind=\"pickup\"}";

    // The same pickup again (same id): acked, stored once, nothing changes.
    row.cab.view.acked.clear();
    row.cab.send_event(pickup, 2, what.clone()).await;
    row.cab.wait_view("the replayed pickup's ack", |v| v.acked.contains(&pickup)).await;
    assert_eq!(row.ts.metric("lockerfleet_ingest_events_total{outcome=\"duplicate\"}").await, 1.0);
    assert_eq!(row.ts.metric(refused).await, 0.0);

    // A pickup of the same parcel under a new id (a replayed event rewritten, or a
    // cabinet's second record of one opening): stored as the fact it is, its transition
    // refused and counted, the parcel and its timeline unchanged.
    let second = Uuid::now_v7();
    row.cab.send_event(second, 3, what).await;
    row.cab.wait_view("the second pickup's ack", |v| v.acked.contains(&second)).await;
    row.good.push(second);
    assert_eq!(row.ts.metric(refused).await, 1.0);
    let (_, p) = row.ts.get(&format!("/api/v1/parcels/{}", parcel.0)).await;
    assert_eq!(p["state"], "picked_up");
    assert_eq!(timeline(&row.ts, parcel).await, before, "the timeline holds one pickup");
    let cabinet = row.ts.server.store.cabinet("cab-a").await.unwrap().unwrap();
    assert!(cabinet.compartments.iter().all(|c| c.parcel_id.is_none()), "no compartment was re-reserved");
    assert_eq!(all_rejected(&row.ts).await, 0.0);
    row.good_event("after").await;
    assert_eq!(row.ts.server.store.count_cabinet_events().await.unwrap(), row.good.len() as u64);
    row.ts.server.stop().await;
    row.fx.cleanup().await;
}

/// `lockerfleet_http_requests_total` of a route and status class.
async fn http_count(ts: &TestServer, route: &str, class: &str) -> f64 {
    ts.metric(&format!("lockerfleet_http_requests_total{{route=\"{route}\",status=\"{class}\"}}")).await
}

/// The courier list of tenant `acme`, by id.
async fn couriers(ts: &TestServer) -> Vec<Value> {
    let (status, body) = ts.get("/api/v1/couriers").await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_else(|| body.as_array().cloned().unwrap_or_default())
}

async fn api_bodies_with_wrong_types_are_refused(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("acme").await;
    let cases = [
        (json!({"id": 42, "tenant": "acme", "name": "Kim"}), "invalid type: integer `42`, expected a string"),
        (json!({"id": "k-1", "tenant": "acme", "name": ["Kim"]}), "invalid type: sequence, expected a string"),
        (json!({"id": "k-1", "tenant": {"$ne": null}, "name": "Kim"}), "invalid type: map, expected a string"),
        (json!("k-1"), "expected struct NewCourier"),
    ];
    for (i, (body, problem)) in cases.iter().enumerate() {
        let (status, err) = ts.post("/api/v1/couriers", body).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["code"], "invalid_body");
        assert!(err["error"]["message"].as_str().unwrap().contains(problem), "{body}: {err}");
        assert_eq!(http_count(&ts, "/api/v1/couriers", "4xx").await, (i + 1) as f64);
    }
    assert!(couriers(&ts).await.is_empty(), "nothing was stored");
    // The well-typed body afterwards is accepted.
    assert_eq!(ts.post("/api/v1/couriers", &json!({"id": "k-1", "tenant": "acme", "name": "Kim"})).await.0, 201);
    assert_eq!(couriers(&ts).await.len(), 1);
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn huge_strings_and_bodies_are_refused(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let config = fx.config();
    let max_body = config.http.max_body_bytes;
    let ts = fx.start(config).await;
    ts.create_tenant("acme").await;
    // A string far over its field's limit, inside the body limit: named, not stored
    // (PostgreSQL's column limits would otherwise make it a 500).
    let (status, err) =
        ts.post("/api/v1/couriers", &json!({"id": "k-1", "tenant": "acme", "name": "K".repeat(100_000)})).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["field"], "name");
    let (status, err) =
        ts.post("/api/v1/couriers", &json!({"id": "k".repeat(10_000), "tenant": "acme", "name": "Kim"})).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["field"], "id");
    // A body over `http.max_body_bytes`: 413, refused before it is parsed.
    let (status, err) =
        ts.post("/api/v1/couriers", &json!({"id": "k-1", "tenant": "acme", "name": "K".repeat(max_body)})).await;
    assert_eq!(status, 413, "{err}");
    assert_eq!(err["error"]["code"], "body_too_large");
    assert!(err["error"]["message"].as_str().unwrap().contains(&max_body.to_string()), "{err}");
    assert_eq!(http_count(&ts, "/api/v1/couriers", "4xx").await, 3.0);
    assert!(couriers(&ts).await.is_empty(), "nothing was stored");
    assert_eq!(ts.post("/api/v1/couriers", &json!({"id": "k-1", "tenant": "acme", "name": "Kim"})).await.0, 201);
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn sql_and_script_injection_stays_inert_text(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("acme").await;
    ts.create_tenant("other").await;
    ts.register_cabinet("other", "cab-o").await;
    // Identifiers are a strict alphabet: injection in an id is refused with the field named.
    let (status, err) = ts
        .post("/api/v1/couriers", &json!({"id": "k-1'; DROP TABLE couriers;--", "tenant": "acme", "name": "x"}))
        .await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["field"], "id");
    // Free text is bound as a parameter and comes back exactly as sent, as a JSON string.
    let sql = "Robert'); DROP TABLE couriers;--";
    let script = "<script>alert(document.cookie)</script>";
    for (id, name) in [("k-1", sql), ("k-2", script)] {
        let (status, body) = ts.post("/api/v1/couriers", &json!({"id": id, "tenant": "acme", "name": name})).await;
        assert_eq!(status, 201, "{body}");
    }
    let names: Vec<String> = couriers(&ts).await.iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect();
    assert!(names.contains(&sql.to_owned()) && names.contains(&script.to_owned()), "{names:?}");
    let mut res =
        awc::Client::default().get(format!("{}/api/v1/couriers", ts.base)).bearer_auth(&ts.token).send().await.unwrap();
    assert_eq!(res.headers().get("content-type").unwrap(), "application/json", "never served as HTML");
    let raw = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    assert!(raw.contains(r#""<script>alert(document.cookie)</script>""#), "inside a JSON string: {raw}");
    // A query parameter is a value, never SQL: no other tenant's cabinet leaks.
    let (status, body) = ts.get("/api/v1/cabinets?tenant=acme'%20OR%20'1'='1").await;
    assert!(status == 200 || status == 422, "{status} {body}");
    assert!(!body.to_string().contains("cab-o"), "{body}");
    // And the tables are all still there.
    assert_eq!(ts.server.store.count_cabinets().await.unwrap(), 1);
    assert_eq!(couriers(&ts).await.len(), 2);
    ts.server.stop().await;
    fx.cleanup().await;
}
