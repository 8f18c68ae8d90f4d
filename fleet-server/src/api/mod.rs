//! The HTTP surface: operator REST API under `/api/v1`, plus `/healthz`, `/readyz` and
//! `/metrics`.

pub mod cabinets;
pub mod error;
pub mod health;

use std::sync::Arc;

use actix::Addr;
use actix_web::web;

use crate::actors::link::Link;
use crate::actors::presence::Presence;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;
use error::ApiError;

/// What every handler may use; one per server.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub metrics: Metrics,
    pub presence: Addr<Presence>,
    pub link: Link,
}

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig, state: AppState) {
    let max_body = state.config.http.max_body_bytes;
    cfg.app_data(web::Data::new(state))
        .app_data(
            web::JsonConfig::default()
                .limit(max_body)
                .error_handler(|err, _req| {
                    ApiError::new(
                        actix_web::http::StatusCode::BAD_REQUEST,
                        "invalid_body",
                        format!("request body is not valid: {err}"),
                    )
                    .into()
                }),
        )
        .app_data(web::QueryConfig::default().error_handler(|err, _req| {
            ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("query string is not valid: {err}"),
            )
            .into()
        }))
        .app_data(web::PathConfig::default().error_handler(|err, _req| {
            ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "invalid_path",
                format!("path is not valid: {err}"),
            )
            .into()
        }))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .service(
            web::scope("/api/v1")
                .route("/tenants", web::post().to(cabinets::create_tenant))
                .route("/cabinets", web::post().to(cabinets::register))
                .route("/cabinets", web::get().to(cabinets::list))
                .route("/cabinets/{id}", web::get().to(cabinets::get)),
        )
        .default_service(web::to(|| async {
            Err::<actix_web::HttpResponse, _>(ApiError::new(
                actix_web::http::StatusCode::NOT_FOUND,
                "no_route",
                "no such endpoint",
            ))
        }));
}
