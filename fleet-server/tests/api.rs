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
    remote_settings_reach_the_cabinet_and_events_are_listed,
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
    // The MQTT login is shown once, at registration, and never again.
    let mut created = created;
    let login = created.as_object_mut().unwrap().remove("mqtt_credentials").unwrap();
    assert_eq!(login["username"], "cab-7");
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
    // A wrong type deep in the body is named by its path.
    assert_eq!(err["error"]["field"], "compartments[0].size", "{err}");
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
        ("get", "/api/v1/cabinets/{id}/events"),
        ("put", "/api/v1/cabinets/{id}/settings"),
        ("put", "/api/v1/cabinets/{id}/tags"),
        ("post", "/api/v1/cabinets/{id}/mqtt-credentials"),
        ("post", "/api/v1/artifacts"),
        ("get", "/api/v1/artifacts"),
        ("get", "/api/v1/artifacts/{id}"),
        ("put", "/api/v1/artifacts/{id}/content"),
        ("post", "/api/v1/rollouts"),
        ("get", "/api/v1/rollouts"),
        ("get", "/api/v1/rollouts/{id}"),
        ("get", "/api/v1/rollouts/{id}/cabinets"),
        ("post", "/api/v1/rollouts/{id}/{action}"),
        ("post", "/api/v1/couriers"),
        ("get", "/api/v1/couriers"),
        ("get", "/api/v1/couriers/{id}/assignments/stream"),
        ("post", "/api/v1/couriers/{id}/pass"),
        ("post", "/api/v1/couriers/{id}/mqtt-credentials"),
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
        ("get", "/api/v1/me"),
        ("get", "/api/v1/fleet/summary"),
        ("get", "/api/v1/live"),
        ("get", "/api/v1/alarms"),
        ("post", "/api/v1/alarms/{id}/acknowledge"),
        ("get", "/api/v1/cabinets/{id}/compartments"),
        ("post", "/api/v1/cabinets/{id}/compartments/{compartment}/open"),
        ("get", "/api/v1/couriers/{id}/tasks"),
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

async fn remote_settings_reach_the_cabinet_and_events_are_listed(backend: Backend) {
    use lockerfleet_shared::envelope::EventKind;
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("acme").await;
    ts.create_tenant("other").await;
    ts.register_cabinet("acme", "cab-s").await;
    let mut cab = ts.connect_cabinet("cab-s").await;

    // Settings are checked, stored, shown and pushed with a newer parcel-set version.
    let (status, body) =
        ts.request("PUT", "/api/v1/cabinets/cab-s/settings", Some(&ts.token), Some(&json!({"lockout_s": 5}))).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "lockout_s", "{body}");
    let (status, body) =
        ts.request("PUT", "/api/v1/cabinets/cab-s/settings", Some(&ts.token), Some(&json!({"colour": "red"}))).await;
    assert_eq!(status, 400, "unknown settings are refused: {body}");
    let settings = json!({"door_left_open_s": 300, "max_failed_attempts": 4});
    let (status, body) = ts.request("PUT", "/api/v1/cabinets/cab-s/settings", Some(&ts.token), Some(&settings)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["settings"], settings);
    assert_eq!(ts.cabinet_view("cab-s").await["settings"], settings);
    let view = cab
        .wait_view("the settings", |v| v.parcels.as_ref().is_some_and(|p| p.settings.max_failed_attempts == Some(4)))
        .await;
    assert_eq!(view.parcels.unwrap().settings.door_left_open_s, Some(300));
    let other = ts.make_token("admin", Some("other"), None).await;
    let (status, _) = ts.request("PUT", "/api/v1/cabinets/cab-s/settings", Some(&other), Some(&settings)).await;
    assert_eq!(status, 404, "another tenant does not see the cabinet");
    let auditor = ts.make_token("auditor", Some("acme"), None).await;
    let (status, _) = ts.request("PUT", "/api/v1/cabinets/cab-s/settings", Some(&auditor), Some(&settings)).await;
    assert_eq!(status, 403, "an auditor may not change settings");

    // Tags: replaced whole, checked, duplicates dropped.
    let (status, body) = ts
        .request(
            "PUT",
            "/api/v1/cabinets/cab-s/tags",
            Some(&ts.token),
            Some(&json!(["indoor", "pilot:berlin", "indoor"])),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tags"], json!(["indoor", "pilot:berlin"]));
    assert_eq!(ts.cabinet_view("cab-s").await["tags"], json!(["indoor", "pilot:berlin"]));
    let (status, body) =
        ts.request("PUT", "/api/v1/cabinets/cab-s/tags", Some(&ts.token), Some(&json!(["ok", "Not OK"]))).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("tags[1]")), "{body}");

    // Events the cabinet reports are listed newest first, filtered by kind; alarms count.
    let forced = EventKind::Alarm { code: "door_forced".into(), detail: "A1".into() };
    let odd = EventKind::Alarm { code: "made-up code".into(), detail: String::new() };
    let failed = EventKind::FailedMatch { reason: "wrong pickup code".into() };
    for (seq, what) in [(1, forced), (2, failed), (3, odd)] {
        let id = uuid::Uuid::now_v7();
        cab.send_event(id, seq, what).await;
        cab.wait_view("the ack", |v| v.acked.contains(&id)).await;
    }
    let (status, all) = ts.get("/api/v1/cabinets/cab-s/events").await;
    assert_eq!(status, 200, "{all}");
    let seqs: Vec<i64> = all.as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [3, 2, 1]);
    let (_, alarms) = ts.get("/api/v1/cabinets/cab-s/events?kind=alarm&limit=1").await;
    assert_eq!(alarms.as_array().unwrap().len(), 1);
    assert_eq!(alarms[0]["detail"]["code"], "made-up code");
    assert_eq!(ts.metric("lockerfleet_cabinet_alarms_total{code=\"door_forced\"}").await, 1.0);
    assert_eq!(ts.metric("lockerfleet_cabinet_alarms_total{code=\"other\"}").await, 1.0, "codes cannot mint labels");
    assert_eq!(ts.metric("lockerfleet_cabinet_alarms_total{code=\"failed_match\"}").await, 1.0);
    for (query, field) in [("kind=nonsense", "kind"), ("limit=0", "limit"), ("limit=501", "limit")] {
        let (status, body) = ts.get(&format!("/api/v1/cabinets/cab-s/events?{query}")).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    let (status, _) = ts.request("GET", "/api/v1/cabinets/cab-s/events", Some(&other), None).await;
    assert_eq!(status, 404);
    ts.server.stop().await;
    fx.cleanup().await;
}
