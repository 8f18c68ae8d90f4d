//! Courier notifications on every channel: the MQTT topic (see pickup_flow), the
//! server-sent-event stream, and the tenant's webhook with its HMAC signature and
//! retries.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use common::{Backend, Fixture, TestServer};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

backend_tests!(
    the_courier_sees_its_assignment_on_its_event_stream,
    the_webhook_is_signed_and_retried_until_accepted,
    webhooks_to_internal_addresses_are_refused,
    a_pass_for_more_cabinets_than_one_mqtt_batch_delivers_every_push_at_once,
);

/// A pass claims up to 200 rows and each cabinet's push is two messages: a pass for 150
/// cabinets publishes 300, more than one confirmed batch of the publisher. Every push
/// goes out on its first attempt (the second batch's cabinets were once reported failed
/// and waited out a backoff).
async fn a_pass_for_more_cabinets_than_one_mqtt_batch_delivers_every_push_at_once(backend: Backend) {
    use fleet_server::store::entities::outbox;
    use sea_orm::EntityTrait;
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("acme").await;
    let db = ts.server.store.connection();
    let at = fleet_server::store::now();
    // One transaction: the relay's next pass sees all of them at once.
    let txn = sea_orm::TransactionTrait::begin(db).await.unwrap();
    for k in 0..150 {
        fleet_server::service::outbox::enqueue(&txn, "acme", "cabinet", &format!("cab-{k:03}"), String::new(), at)
            .await
            .unwrap();
    }
    txn.commit().await.unwrap();
    ts.wait_until("every push is delivered", || async {
        outbox::Entity::find()
            .all(db)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.channel == "cabinet")
            .all(|r| r.delivered_at.is_some())
    })
    .await;
    let rows = outbox::Entity::find().all(db).await.unwrap();
    let retried: Vec<_> =
        rows.iter().filter(|r| r.channel == "cabinet" && (r.attempts != 1 || r.last_error.is_some())).collect();
    assert!(retried.is_empty(), "{} pushes needed another attempt, e.g. {:?}", retried.len(), retried.first());
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn setup(ts: &TestServer) {
    ts.create_tenant("acme").await;
    ts.register_cabinet("acme", "cab-a").await;
    for (id, name) in [("k-1", "Kim"), ("k-2", "Lee")] {
        assert_eq!(ts.post("/api/v1/couriers", &json!({"id": id, "tenant": "acme", "name": name})).await.0, 201);
    }
}

async fn the_courier_sees_its_assignment_on_its_event_stream(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    setup(&ts).await;
    let kim = ts.make_token("courier", Some("acme"), Some("k-1")).await;

    // Another courier's stream is closed to Kim.
    let (status, _) = ts.request("GET", "/api/v1/couriers/k-2/assignments/stream", Some(&kim), None).await;
    assert_eq!(status, 403);

    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let mut stream = client
        .get(format!("{}/api/v1/couriers/k-1/assignments/stream", ts.base))
        .bearer_auth(&kim)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    assert_eq!(stream.headers().get("content-type").unwrap(), "text/event-stream");

    // One parcel for Lee, then one for Kim: Kim's stream carries only Kim's.
    for (courier, reference) in [("k-2", "FOR-LEE"), ("k-1", "FOR-KIM")] {
        let (status, body) = ts
            .post(
                "/api/v1/parcels",
                &json!({"tenant": "acme", "reference": reference, "courier": courier, "size": "s", "cabinet": "cab-a"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (_, kims) = ts.get("/api/v1/parcels?courier=k-1").await;
    let kims_parcel = kims["items"][0]["id"].as_str().unwrap().to_owned();

    let mut text = String::new();
    let frame = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let chunk = stream.next().await.expect("stream open").unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
            if let Some(end) = text.find("\n\n") {
                let frame = text[..end].to_owned();
                text.drain(..end + 2);
                if frame.starts_with(':') {
                    continue; // keep-alive
                }
                return frame;
            }
        }
    })
    .await
    .expect("an event within 10 s");
    assert!(frame.contains("event: assignment"), "{frame}");
    let data = frame.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let envelope: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(envelope["body"]["data"]["parcel"], kims_parcel.as_str(), "Kim's stream carried another parcel first");
    ts.server.stop().await;
    fx.cleanup().await;
}

/// A webhook receiver that refuses the first delivery and accepts the rest.
async fn receiver() -> (String, mpsc::UnboundedReceiver<(u16, String, String)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let calls = Arc::new(Mutex::new(0u32));
    let server = HttpServer::new(move || {
        let tx = tx.clone();
        let calls = calls.clone();
        App::new().route(
            "/hook",
            web::post().to(move |req: HttpRequest, body: web::Bytes| {
                let tx = tx.clone();
                let calls = calls.clone();
                async move {
                    let n = {
                        let mut c = calls.lock().unwrap();
                        *c += 1;
                        *c
                    };
                    let status = if n == 1 { 500 } else { 200 };
                    let sig = req
                        .headers()
                        .get("x-lockerfleet-signature")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    tx.send((status, sig, String::from_utf8(body.to_vec()).unwrap())).unwrap();
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    actix_rt::spawn(server.run());
    (format!("http://{addr}/hook"), rx)
}

async fn next_call(calls: &mut mpsc::UnboundedReceiver<(u16, String, String)>) -> (u16, String, String) {
    tokio::time::timeout(Duration::from_secs(15), calls.recv()).await.expect("a webhook call").unwrap()
}

async fn the_webhook_is_signed_and_retried_until_accepted(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let mut config = fx.config();
    // The test's receiver listens on loopback.
    config.webhooks.allow_private_targets = true;
    let ts = fx.start(config).await;
    setup(&ts).await;
    let (url, mut calls) = receiver().await;
    let secret = "whsec-0123456789abcdef";
    let (status, body) = ts
        .request(
            "PATCH",
            "/api/v1/tenants/acme",
            Some(&ts.token),
            Some(&json!({"webhook_url": url, "webhook_secret": secret})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, created) = ts
        .post(
            "/api/v1/parcels",
            &json!({"tenant": "acme", "reference": "TRK-W", "courier": "k-1", "size": "s", "cabinet": "cab-a"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");

    let (first_status, _, first_body) = next_call(&mut calls).await;
    assert_eq!(first_status, 500);
    let (second_status, signature, body) = next_call(&mut calls).await;
    assert_eq!(second_status, 200);
    assert_eq!(body, first_body, "a retry delivers the same event");
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["type"], "courier.assignment");
    assert_eq!(event["task"]["parcel"], created["id"]);
    // The signature verifies with the tenant's secret over "<timestamp>.<body>".
    let t: i64 = signature.split(',').next().unwrap().strip_prefix("t=").unwrap().parse().unwrap();
    assert_eq!(signature, fleet_server::actors::outbox::webhook_signature(secret, t, &body));
    assert_ne!(signature, fleet_server::actors::outbox::webhook_signature("another-secret-000", t, &body));
    ts.wait_for_metric("lockerfleet_notifications_total{channel=\"webhook\",outcome=\"failed\"}", 1.0).await;
    ts.wait_for_metric("lockerfleet_notifications_total{channel=\"webhook\",outcome=\"delivered\"}", 1.0).await;
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn webhooks_to_internal_addresses_are_refused(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    setup(&ts).await;
    for url in
        ["http://127.0.0.1:8080/", "http://169.254.169.254/latest/meta-data", "http://[::1]/", "http://localhost/x"]
    {
        let (status, err) =
            ts.request("PATCH", "/api/v1/tenants/acme", Some(&ts.token), Some(&json!({"webhook_url": url}))).await;
        assert_eq!(status, 422, "{url}: {err}");
        assert_eq!(err["error"]["field"], "webhook_url");
        assert!(err["error"]["message"].as_str().unwrap().contains("non-public"), "{err}");
    }
    let (status, _) = ts
        .request(
            "PATCH",
            "/api/v1/tenants/acme",
            Some(&ts.token),
            Some(&json!({"webhook_url": "https://hooks.example.com/lf"})),
        )
        .await;
    assert_eq!(status, 200, "a public name is accepted when set (and checked again at each delivery)");
    ts.server.stop().await;
    fx.cleanup().await;
}
