//! API access by role and tenant: a token sees and changes only its own tenant, each role
//! only what it may, and unknown, revoked or expired tokens nothing at all.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Backend, Fixture};
use serde_json::json;

backend_tests!(
    a_revoked_bootstrap_token_stays_revoked_across_restarts,
    a_token_of_one_tenant_cannot_see_or_change_another,
    roles_limit_what_a_token_may_do,
    unknown_revoked_and_expired_tokens_are_refused,
);

fn cabinet(id: &str, tenant: &str) -> serde_json::Value {
    json!({
        "id": id, "tenant": tenant,
        "public_key": lockerfleet_shared::seal::CabinetKeyPair::generate().public().to_base64(),
        "compartments": [{"id": "A1", "size": "m"}],
    })
}

async fn a_token_of_one_tenant_cannot_see_or_change_another(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("alpha").await;
    ts.create_tenant("beta").await;
    let alpha = ts.with_token(&ts.make_token("admin", Some("alpha"), None).await);
    let beta = ts.with_token(&ts.make_token("admin", Some("beta"), None).await);

    assert_eq!(alpha.post("/api/v1/cabinets", &cabinet("a-1", "alpha")).await.0, 201);
    // Registering into another tenant is refused, and nothing is stored.
    let (status, err) = beta.post("/api/v1/cabinets", &cabinet("b-sneaky", "alpha")).await;
    assert_eq!(status, 403, "{err}");
    assert!(ts.server.store.cabinet("b-sneaky").await.unwrap().is_none());
    // Another tenant's cabinet does not exist for beta.
    let (status, err) = beta.get("/api/v1/cabinets/a-1").await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(beta.get("/api/v1/cabinets").await.1["items"], json!([]));
    assert_eq!(beta.get("/api/v1/cabinets?tenant=alpha").await.0, 403);
    // Alpha sees its own.
    assert_eq!(alpha.get("/api/v1/cabinets/a-1").await.0, 200);
    assert_eq!(alpha.get("/api/v1/cabinets").await.1["items"][0]["id"], "a-1");
    // Parcels too: beta can neither read nor change alpha's parcel, nor list it.
    alpha.post("/api/v1/couriers", &json!({"id": "ka", "name": "A"})).await;
    let (status, parcel) =
        alpha.post("/api/v1/parcels", &json!({"reference": "P", "courier": "ka", "size": "s", "cabinet": "a-1"})).await;
    assert_eq!(status, 201, "{parcel}");
    let id = parcel["id"].as_str().unwrap();
    assert_eq!(beta.get(&format!("/api/v1/parcels/{id}")).await.0, 404);
    assert_eq!(beta.get(&format!("/api/v1/parcels/{id}/events")).await.0, 404);
    assert_eq!(beta.post(&format!("/api/v1/parcels/{id}/cancel"), &json!({})).await.0, 404);
    assert_eq!(beta.get("/api/v1/parcels").await.1["items"], json!([]));
    assert_eq!(beta.get("/api/v1/couriers").await.1["items"], json!([]));
    // Nor use alpha's cabinet or courier for a parcel of its own.
    beta.post("/api/v1/couriers", &json!({"id": "kb", "name": "B"})).await;
    let (status, err) =
        beta.post("/api/v1/parcels", &json!({"reference": "P", "courier": "kb", "size": "s", "cabinet": "a-1"})).await;
    assert_eq!(status, 422, "{err}");
    let (status, _) =
        beta.post("/api/v1/parcels", &json!({"reference": "P", "courier": "ka", "size": "s", "cabinet": "a-1"})).await;
    assert_eq!(status, 422);
    assert_eq!(alpha.get(&format!("/api/v1/parcels/{id}")).await.1["state"], "assigned", "untouched");
    // A tenant admin may not make tenants or tokens for another tenant.
    assert_eq!(beta.post("/api/v1/tenants", &json!({"id": "gamma", "name": "g"})).await.0, 403);
    let (status, _) = beta.post("/api/v1/tokens", &json!({"name": "x", "role": "auditor", "tenant": "alpha"})).await;
    assert_eq!(status, 403);
    let (status, _) = beta.post("/api/v1/tokens", &json!({"name": "x", "role": "admin"})).await;
    assert_eq!(status, 201, "a tenant admin's token without a tenant is bound to its own tenant");
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn roles_limit_what_a_token_may_do(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("alpha").await;
    let engineer = ts.with_token(&ts.make_token("engineer", Some("alpha"), None).await);
    let auditor = ts.with_token(&ts.make_token("auditor", Some("alpha"), None).await);
    let dispatcher = ts.with_token(&ts.make_token("dispatcher", Some("alpha"), None).await);
    ts.post("/api/v1/couriers", &json!({"id": "k-1", "tenant": "alpha", "name": "Kim"})).await;
    let courier = ts.with_token(&ts.make_token("courier", Some("alpha"), Some("k-1")).await);

    assert_eq!(engineer.post("/api/v1/cabinets", &cabinet("c-1", "alpha")).await.0, 201);
    for (who, client) in [("auditor", &auditor), ("dispatcher", &dispatcher), ("courier", &courier)] {
        let (status, err) = client.post("/api/v1/cabinets", &cabinet("c-2", "alpha")).await;
        assert_eq!(status, 403, "{who}: {err}");
        assert_eq!(err["error"]["code"], "forbidden");
    }
    assert_eq!(auditor.get("/api/v1/cabinets/c-1").await.0, 200);
    assert_eq!(courier.get("/api/v1/cabinets/c-1").await.0, 403);
    assert_eq!(engineer.post("/api/v1/tokens", &json!({"name": "x", "role": "admin"})).await.0, 403);
    // A courier token must name its courier, and only courier tokens may.
    let (status, err) = ts.post("/api/v1/tokens", &json!({"name": "x", "role": "courier", "tenant": "alpha"})).await;
    assert_eq!((status, err["error"]["field"].as_str()), (422, Some("courier")));
    let (status, _) =
        ts.post("/api/v1/tokens", &json!({"name": "x", "role": "auditor", "tenant": "alpha", "courier": "k-1"})).await;
    assert_eq!(status, 422);
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn unknown_revoked_and_expired_tokens_are_refused(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("alpha").await;
    assert_eq!(ts.request("GET", "/api/v1/cabinets", None, None).await.0, 401);
    assert_eq!(ts.request("GET", "/api/v1/cabinets", Some("lf_made-up"), None).await.0, 401);

    let (status, made) =
        ts.post("/api/v1/tokens", &json!({"name": "temp", "role": "auditor", "tenant": "alpha"})).await;
    assert_eq!(status, 201);
    let secret = made["token"].as_str().unwrap();
    assert_eq!(ts.request("GET", "/api/v1/cabinets", Some(secret), None).await.0, 200);
    let id = made["id"].as_str().unwrap();
    assert_eq!(ts.request("DELETE", &format!("/api/v1/tokens/{id}"), Some(&ts.token), None).await.0, 204);
    assert_eq!(ts.request("GET", "/api/v1/cabinets", Some(secret), None).await.0, 401);

    let expired = "lf_expired-token-for-the-test-000000";
    fleet_server::api::auth::insert_token(
        &ts.server.store,
        expired,
        "expired",
        fleet_server::api::auth::Role::Admin,
        None,
        None,
        Some(chrono::Utc::now() - chrono::Duration::minutes(1)),
    )
    .await
    .unwrap();
    let (status, err) = ts.request("GET", "/api/v1/cabinets", Some(expired), None).await;
    assert_eq!(status, 401, "{err}");
    assert!(ts.metric("lockerfleet_auth_failures_total").await >= 3.0);
    // The database never holds a secret, only its hash.
    let hashes = ts.server.store.token_hashes().await.unwrap();
    assert!(!hashes.iter().any(|h| h.contains("lf_")));
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn a_revoked_bootstrap_token_stays_revoked_across_restarts(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    // A second fleet admin revokes the bootstrap token.
    let (status, made) = ts.post("/api/v1/tokens", &json!({"name": "ops", "role": "admin"})).await;
    assert_eq!(status, 201);
    let ops = made["token"].as_str().unwrap().to_owned();
    let (_, me) = ts.request("GET", "/api/v1/cabinets", Some(&ops), None).await;
    assert!(me["items"].is_array());
    let bootstrap_id = ts.server.store.token_id_of(common::ADMIN_TOKEN).await.unwrap().unwrap();
    assert_eq!(ts.request("DELETE", &format!("/api/v1/tokens/{bootstrap_id}"), Some(&ops), None).await.0, 204);
    ts.server.stop().await;
    // The configuration still names it: the server starts, and the token stays dead.
    let ts = fx.start(fx.config()).await;
    assert_eq!(ts.request("GET", "/api/v1/cabinets", Some(common::ADMIN_TOKEN), None).await.0, 401);
    assert_eq!(ts.request("GET", "/api/v1/cabinets", Some(&ops), None).await.0, 200);
    ts.server.stop().await;
    fx.cleanup().await;
}
