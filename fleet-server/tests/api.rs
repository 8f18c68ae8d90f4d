//! The cabinet registration API: validation that names the field, conflicts, tenants,
//! pagination, and the health endpoints.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Backend, Fixture};
use serde_json::json;

backend_tests!(
    registration_returns_the_cabinet_with_its_compartments,
    every_bad_registration_field_is_named,
    duplicates_and_unknown_tenants_are_refused,
    cabinets_page_by_cursor_and_filter_by_tenant,
    health_readiness_and_metrics_answer,
    registration_stops_inside_the_embedded_brokers_connection_limit,
);

fn cabinet(id: &str, tenant: &str) -> serde_json::Value {
    json!({
        "id": id, "tenant": tenant, "name": "Main Street 4",
        "public_key": lockerfleet_shared::seal::CabinetKeyPair::generate().public().to_base64(),
        "timezone": "Europe/Berlin", "location": {"lat": 52.52, "lon": 13.40},
        "compartments": [{"id": "A1", "size": "s"}, {"id": "B1", "size": "xl", "low": true}],
    })
}

async fn registration_returns_the_cabinet_with_its_compartments(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("acme").await;
    let body = cabinet("cab-7", "acme");
    let (status, created) = ts.post("/api/v1/cabinets", &body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["tenant"], "acme");
    assert_eq!(created["timezone"], "Europe/Berlin");
    assert_eq!(created["location"]["lat"], 52.52);
    assert_eq!(created["public_key"], body["public_key"]);
    assert_eq!(created["key_fingerprint"].as_str().unwrap().len(), 32);
    assert_eq!(
        created["compartments"],
        json!([{"id": "A1", "size": "s", "low": false}, {"id": "B1", "size": "xl", "low": true}])
    );
    assert_eq!(created["online"], false);
    let mut fetched = ts.cabinet_view("cab-7").await;
    assert_eq!(fetched["desired"]["templates_version"], 0);
    fetched.as_object_mut().unwrap().remove("desired");
    assert_eq!(fetched, created);
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn every_bad_registration_field_is_named(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("acme").await;
    type Mutation = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("id", Box::new(|b| b["id"] = json!("cab/1"))),
        ("id", Box::new(|b| b["id"] = json!("+"))),
        ("tenant", Box::new(|b| b["tenant"] = json!(""))),
        ("public_key", Box::new(|b| b["public_key"] = json!("not-base64!"))),
        ("public_key", Box::new(|b| b["public_key"] = json!("AAAA"))),
        // 32 zero bytes decode fine but no template could ever be sealed to them.
        ("public_key", Box::new(|b| b["public_key"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="))),
        ("timezone", Box::new(|b| b["timezone"] = json!("Mars Base; DROP"))),
        ("location.lat", Box::new(|b| b["location"]["lat"] = json!(91.0))),
        ("location.lon", Box::new(|b| b["location"]["lon"] = json!(-181.0))),
        ("compartments", Box::new(|b| b["compartments"] = json!([]))),
        ("compartments[1].id", Box::new(|b| b["compartments"][1]["id"] = json!("A1"))),
        ("compartments[0].id", Box::new(|b| b["compartments"][0]["id"] = json!("a b"))),
        ("name", Box::new(|b| b["name"] = json!("   "))),
    ];
    for (field, mutate) in cases {
        let mut body = cabinet("cab-x", "acme");
        mutate(&mut body);
        let (status, err) = ts.post("/api/v1/cabinets", &body).await;
        assert_eq!(status, 422, "{field}: {err}");
        assert_eq!(err["error"]["code"], "invalid_field", "{err}");
        assert_eq!(err["error"]["field"], field, "{err}");
        assert!(err["error"]["message"].as_str().unwrap().contains(field), "{err}");
    }
    // Structural problems are 400 with the serde message, which names the field.
    let mut body = cabinet("cab-x", "acme");
    body.as_object_mut().unwrap().remove("tenant");
    let (status, err) = ts.post("/api/v1/cabinets", &body).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "invalid_body");
    assert!(err["error"]["message"].as_str().unwrap().contains("tenant"), "{err}");
    let mut body = cabinet("cab-x", "acme");
    body["compartments"][0]["size"] = json!("huge");
    let (status, err) = ts.post("/api/v1/cabinets", &body).await;
    assert_eq!(status, 400);
    assert!(err["error"]["message"].as_str().unwrap().contains("huge"), "{err}");
    let mut body = cabinet("cab-x", "acme");
    body["colour"] = json!("red");
    let (status, err) = ts.post("/api/v1/cabinets", &body).await;
    assert_eq!(status, 400);
    assert!(err["error"]["message"].as_str().unwrap().contains("colour"), "{err}");
    // Nothing was stored by any of the refused requests.
    assert_eq!(ts.server.store.count_cabinets().await.unwrap(), 0);
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn duplicates_and_unknown_tenants_are_refused(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    let (status, err) = ts.post("/api/v1/cabinets", &cabinet("cab-1", "ghost")).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["code"], "unknown_reference");
    assert!(err["error"]["message"].as_str().unwrap().contains("ghost"));

    ts.create_tenant("acme").await;
    let (status, err) = ts.post("/api/v1/tenants", &json!({"id": "acme", "name": "again"})).await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "conflict");

    assert_eq!(ts.post("/api/v1/cabinets", &cabinet("cab-1", "acme")).await.0, 201);
    let (status, err) = ts.post("/api/v1/cabinets", &cabinet("cab-1", "acme")).await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "conflict");

    let (status, err) = ts.get("/api/v1/cabinets/nope").await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "not_found");
    let (status, err) = ts.get("/api/v1/nothing-here").await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "no_route");
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn cabinets_page_by_cursor_and_filter_by_tenant(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("acme").await;
    ts.create_tenant("zeta").await;
    for i in 0..7 {
        assert_eq!(ts.post("/api/v1/cabinets", &cabinet(&format!("a-{i:02}"), "acme")).await.0, 201);
    }
    assert_eq!(ts.post("/api/v1/cabinets", &cabinet("z-00", "zeta")).await.0, 201);

    let mut seen = Vec::new();
    let mut path = "/api/v1/cabinets?tenant=acme&limit=3".to_owned();
    loop {
        let (status, page) = ts.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|c| c["id"].as_str().unwrap().to_owned()));
        assert!(items.iter().all(|c| c["tenant"] == "acme"));
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/cabinets?tenant=acme&limit=3&after={next}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).map(|i| format!("a-{i:02}")).collect();
    assert_eq!(seen, expected);
    let (status, err) = ts.get("/api/v1/cabinets?limit=0").await;
    assert_eq!(status, 422);
    assert_eq!(err["error"]["field"], "limit");
    let (status, err) = ts.get("/api/v1/cabinets?limit=many").await;
    assert_eq!(status, 400, "{err}");
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn health_readiness_and_metrics_answer(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    assert_eq!(ts.get("/healthz").await, (200, json!({"status": "ok"})));
    let (status, ready) = ts.get("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(ready["checks"], json!({"database": true, "mqtt_link": true, "broker_accepting": true}));
    let text = ts.get_text("/metrics").await;
    for name in [
        "lockerfleet_broker_accepting 1",
        "lockerfleet_mqtt_link_up 1",
        "process_resident_memory_bytes",
        "lockerfleet_http_requests_total{route=\"/readyz\",status=\"2xx\"}",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn registration_stops_inside_the_embedded_brokers_connection_limit(backend: Backend) {
    if !matches!(backend.mqtt, common::Mqtt::Embedded) {
        // The limit belongs to the embedded broker; an external broker has its own.
        return;
    }
    let fx = Fixture::new(backend).await;
    let mut config = fx.config();
    config.mqtt.max_connections = 12;
    config.mqtt.reserved_connections = 10;
    let ts = fx.start(config).await;
    ts.create_tenant("acme").await;
    assert_eq!(ts.post("/api/v1/cabinets", &cabinet("c-1", "acme")).await.0, 201);
    assert_eq!(ts.post("/api/v1/cabinets", &cabinet("c-2", "acme")).await.0, 201);
    let (status, err) = ts.post("/api/v1/cabinets", &cabinet("c-3", "acme")).await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "broker_capacity");
    ts.server.stop().await;
    fx.cleanup().await;
}

#[actix_rt::test]
async fn the_openapi_document_describes_every_route() {
    let fx = Fixture::new(Backend::sqlite_embedded().unwrap()).await;
    let ts = fx.start(fx.config()).await;
    // Public, like /healthz: it describes the API, it holds no data.
    let (status, doc) = ts.request("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let routes = [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("post", "/api/v1/tokens"),
        ("delete", "/api/v1/tokens/{id}"),
        ("post", "/api/v1/tenants"),
        ("patch", "/api/v1/tenants/{id}"),
        ("post", "/api/v1/cabinets"),
        ("get", "/api/v1/cabinets"),
        ("get", "/api/v1/cabinets/{id}"),
        ("post", "/api/v1/couriers"),
        ("get", "/api/v1/couriers"),
        ("get", "/api/v1/couriers/{id}/assignments/stream"),
        ("post", "/api/v1/couriers/{id}/pass"),
        ("post", "/api/v1/recipients"),
        ("delete", "/api/v1/recipients/{id}"),
        ("put", "/api/v1/recipients/{id}/template"),
        ("post", "/api/v1/parcels"),
        ("get", "/api/v1/parcels"),
        ("get", "/api/v1/parcels/{id}"),
        ("get", "/api/v1/parcels/{id}/events"),
        ("post", "/api/v1/parcels/{id}/cancel"),
        ("post", "/api/v1/parcels/{id}/extend"),
        ("post", "/api/v1/parcels/{id}/sealed-template"),
        ("get", "/api/v1/parcels/{id}/ready-notice"),
    ];
    for (method, path) in routes {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is missing from the document");
    }
    let distinct: std::collections::BTreeSet<&str> = routes.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        doc["paths"].as_object().unwrap().len(),
        distinct.len(),
        "a documented path that the test does not know"
    );
    for schema in ["CabinetView", "NewCabinet", "ParcelView", "CreatedParcel", "ErrorEnvelope", "Role"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "schema {schema} missing");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    ts.server.stop().await;
    fx.cleanup().await;
}
