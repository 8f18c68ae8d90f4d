//! `/healthz` (the process answers), `/readyz` (it can do its job: database, MQTT link and
//! broker all reachable) and `/metrics` (Prometheus text format).

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "the process answers")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "database, MQTT link and broker ready"), (status = 503, description = "a check failed; the body names it")))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = matches!(tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await, Ok(Ok(())));
    let mqtt_link = state.link.is_up();
    let broker_accepting = state.metrics.broker_accepting.get() == 1;
    let body = json!({
        "status": if database && mqtt_link && broker_accepting { "ready" } else { "not_ready" },
        "checks": {
            "database": database,
            "mqtt_link": mqtt_link,
            "broker_accepting": broker_accepting,
        }
    });
    if database && mqtt_link && broker_accepting {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}
