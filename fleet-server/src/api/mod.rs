//! The HTTP surface: operator REST API under `/api/v1`, plus `/healthz`, `/readyz` and
//! `/metrics`.

pub mod alarms;
pub mod artifacts;
pub mod auth;
pub mod body;
pub mod cabinets;
pub mod error;
pub mod fleet;
pub mod health;
pub mod live;
pub mod openapi;
pub mod parcels;
pub mod rollouts;

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
    /// Flips to `true` when the server stops, ending long-lived streams.
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// Courier notifications for server-sent-event streams.
    pub courier_feed: tokio::sync::broadcast::Sender<crate::actors::ingress::CourierNote>,
    /// What the use cases need (store, topics, keys).
    pub ctx: crate::service::Ctx,
    /// Wakes the outbox relay after a commit that queued notifications.
    pub outbox: Option<actix::Recipient<crate::actors::outbox::Kick>>,
    /// What changes in the fleet, for the console's live stream.
    pub live: crate::live::LiveFeed,
    /// Issued MQTT logins (shared with the embedded broker's front door).
    pub mqtt_credentials: crate::gateway::credentials::Credentials,
}

impl AppState {
    /// The context the use cases in `service` need.
    pub fn service(&self) -> crate::service::Ctx {
        self.ctx.clone()
    }

    /// Tells the outbox relay there is something to deliver (it also polls).
    pub fn outbox_kick(&self) {
        if let Some(r) = &self.outbox {
            r.do_send(crate::actors::outbox::Kick);
        }
    }
}

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig, state: AppState) {
    let max_body = state.config.http.max_body_bytes;
    cfg.app_data(web::Data::new(state))
        .app_data(web::JsonConfig::default().limit(max_body).error_handler(move |err, _req| {
            use actix_web::error::JsonPayloadError;
            match err {
                // Too big is not malformed: 413, so a client knows resending will not help.
                JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => ApiError::new(
                    actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("request body is larger than the limit of {max_body} bytes (http.max_body_bytes)"),
                ),
                err => ApiError::new(
                    actix_web::http::StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!("request body is not valid: {err}"),
                ),
            }
            .into()
        }))
        .app_data(web::QueryConfig::default().error_handler(|err, _req| {
            ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("query string is not valid: {err}"),
            )
            .into()
        }))
        .app_data(web::PathConfig::default().error_handler(|err, _req| {
            ApiError::new(actix_web::http::StatusCode::BAD_REQUEST, "invalid_path", format!("path is not valid: {err}"))
                .into()
        }))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/ota/{sha256}", web::get().to(artifacts::download))
        .service(
            web::scope("/api/v1")
                .route("/openapi.json", web::get().to(openapi::document))
                .route("/tokens", web::post().to(auth::create_token))
                .route("/tokens/{id}", web::delete().to(auth::revoke_token))
                .route("/tenants", web::post().to(cabinets::create_tenant))
                .route("/tenants/{id}", web::patch().to(parcels::update_tenant))
                .route("/couriers", web::post().to(parcels::create_courier))
                .route("/couriers", web::get().to(parcels::list_couriers))
                .route("/couriers/{id}/assignments/stream", web::get().to(parcels::courier_stream))
                .route("/couriers/{id}/pass", web::post().to(parcels::courier_pass))
                .route("/couriers/{id}/mqtt-credentials", web::post().to(parcels::courier_mqtt_credentials))
                .route("/recipients", web::post().to(parcels::create_recipient))
                .route("/recipients/{id}", web::delete().to(parcels::erase_recipient))
                .route("/recipients/{id}/template", web::put().to(parcels::enrol_template))
                .route("/parcels/{id}/sealed-template", web::post().to(parcels::upload_sealed_template))
                .route("/parcels/{id}/ready-notice", web::get().to(parcels::ready_notice))
                .route("/parcels", web::post().to(parcels::create_parcel))
                .route("/parcels", web::get().to(parcels::list_parcels))
                .route("/parcels/{id}", web::get().to(parcels::get_parcel))
                .route("/parcels/{id}/events", web::get().to(parcels::parcel_timeline))
                .route("/parcels/{id}/cancel", web::post().to(parcels::cancel_parcel))
                .route("/parcels/{id}/extend", web::post().to(parcels::extend_parcel))
                .route("/cabinets", web::post().to(cabinets::register))
                .route("/cabinets", web::get().to(cabinets::list))
                .route("/cabinets/{id}", web::get().to(cabinets::get))
                .route("/cabinets/{id}/events", web::get().to(cabinets::events))
                .route("/cabinets/{id}/settings", web::put().to(cabinets::put_settings))
                .route("/cabinets/{id}/tags", web::put().to(cabinets::put_tags))
                .route("/cabinets/{id}/mqtt-credentials", web::post().to(cabinets::mqtt_credentials))
                .route("/artifacts", web::post().to(artifacts::register))
                .route("/artifacts", web::get().to(artifacts::list))
                .route("/artifacts/{id}", web::get().to(artifacts::get))
                .route("/artifacts/{id}/content", web::put().to(artifacts::upload))
                .route("/rollouts", web::post().to(rollouts::create))
                .route("/rollouts", web::get().to(rollouts::list))
                .route("/rollouts/{id}", web::get().to(rollouts::get))
                .route("/rollouts/{id}/cabinets", web::get().to(rollouts::cabinets))
                .route("/rollouts/{id}/{action}", web::post().to(rollouts::command))
                .configure(operator_routes),
        )
        .default_service(web::to(|| async {
            Err::<actix_web::HttpResponse, _>(ApiError::new(
                actix_web::http::StatusCode::NOT_FOUND,
                "no_route",
                "no such endpoint",
            ))
        }));
}

/// What the operator console needs beyond the resources above: who am I, the fleet in
/// numbers, the alarm inbox, the compartment grid and remote open, courier tasks, and
/// the live stream.
fn operator_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/me", web::get().to(auth::me))
        .route("/fleet/summary", web::get().to(fleet::summary))
        .route("/live", web::get().to(live::stream))
        .route("/alarms", web::get().to(alarms::list))
        .route("/alarms/{id}/acknowledge", web::post().to(alarms::acknowledge))
        .route("/cabinets/{id}/compartments", web::get().to(cabinets::compartments))
        .route("/cabinets/{id}/compartments/{compartment}/open", web::post().to(cabinets::open_compartment))
        .route("/couriers/{id}/tasks", web::get().to(parcels::courier_tasks));
}
