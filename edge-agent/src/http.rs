//! The cabinet's local HTTP endpoint: `/healthz`, `/status` and `/metrics` for the field
//! engineer, and — only with `sim_control = true` — `/sim/*` routes that play the
//! simulated hardware (keypad, door sensors, courier deposit) for tests, demos and the
//! simulator. It listens on loopback by default.

use std::net::SocketAddr;

use actix::Addr;
use actix_web::{App, HttpResponse, HttpServer, web};
use lockerfleet_shared::{CompartmentId, ParcelId};
use prometheus::{Encoder, IntGauge, Registry, TextEncoder};
use serde::Deserialize;
use serde_json::json;

use crate::actors::cabinet::{Cabinet, CourierCollect, CourierDeposit, CourierTasks, DoorSensed, EnterCode, GetStatus};
use crate::domain::keypad::CodeOutcome;

#[derive(Clone)]
struct State {
    cabinet: Addr<Cabinet>,
    registry: Registry,
    journal_depth: IntGauge,
    open_doors: IntGauge,
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn status(state: web::Data<State>) -> HttpResponse {
    match state.cabinet.send(GetStatus).await {
        Ok(s) => HttpResponse::Ok().json(json!({
            "journal_depth": s.journal_depth, "journal_dropped": s.journal_dropped, "open_doors": s.open_doors, "occupied": s.occupied, "busy": s.busy,
            "ready": s.ready, "templates": s.templates, "settings": s.settings, "restarts": s.restarts,
        })),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({"error": e.to_string()})),
    }
}

async fn metrics(state: web::Data<State>) -> HttpResponse {
    if let Ok(s) = state.cabinet.send(GetStatus).await {
        state.journal_depth.set(i64::from(s.journal_depth));
        state.open_doors.set(s.open_doors.len() as i64);
    }
    let mut buf = Vec::new();
    if TextEncoder::new().encode(&state.registry.gather(), &mut buf).is_err() {
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(buf)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Code {
    code: String,
}

async fn sim_keypad(state: web::Data<State>, body: web::Json<Code>) -> HttpResponse {
    match state.cabinet.send(EnterCode(body.code.clone())).await {
        Ok(CodeOutcome::Accepted(p)) => {
            HttpResponse::Ok().json(json!({"outcome": "accepted", "parcel": p.parcel, "compartment": p.compartment}))
        }
        Ok(CodeOutcome::Rejected { remaining }) => {
            HttpResponse::Ok().json(json!({"outcome": "rejected", "remaining": remaining}))
        }
        Ok(CodeOutcome::LockedOutNow { until } | CodeOutcome::LockedOut { until }) => {
            HttpResponse::Ok().json(json!({"outcome": "locked_out", "until": until}))
        }
        Ok(CodeOutcome::Unavailable) => HttpResponse::Ok().json(json!({"outcome": "unavailable"})),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({"error": e.to_string()})),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DoorReading {
    compartment: CompartmentId,
    open: bool,
}

async fn sim_door(state: web::Data<State>, body: web::Json<DoorReading>) -> HttpResponse {
    let DoorReading { compartment, open } = body.into_inner();
    match state.cabinet.send(DoorSensed { compartment, open }).await {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({"error": e.to_string()})),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CourierAction {
    /// The courier's pass, as scanned from its app.
    pass: String,
    parcel: ParcelId,
}

fn opened(result: Result<Result<CompartmentId, String>, actix::MailboxError>) -> HttpResponse {
    match result {
        Ok(Ok(c)) => HttpResponse::Ok().json(json!({"compartment": c})),
        Ok(Err(reason)) => HttpResponse::Conflict().json(json!({"error": reason})),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({"error": e.to_string()})),
    }
}

async fn sim_deposit(state: web::Data<State>, body: web::Json<CourierAction>) -> HttpResponse {
    let CourierAction { pass, parcel } = body.into_inner();
    opened(state.cabinet.send(CourierDeposit { pass, parcel }).await)
}

async fn sim_collect(state: web::Data<State>, body: web::Json<CourierAction>) -> HttpResponse {
    let CourierAction { pass, parcel } = body.into_inner();
    opened(state.cabinet.send(CourierCollect { pass, parcel }).await)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pass {
    pass: String,
}

async fn sim_tasks(state: web::Data<State>, body: web::Json<Pass>) -> HttpResponse {
    match state.cabinet.send(CourierTasks { pass: body.into_inner().pass }).await {
        Ok(Ok(tasks)) => HttpResponse::Ok().json(json!({"tasks": tasks})),
        Ok(Err(reason)) => HttpResponse::Forbidden().json(json!({"error": reason})),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({"error": e.to_string()})),
    }
}

/// Starts the endpoint; returns the address it listens on.
pub fn serve(listen: SocketAddr, cabinet: Addr<Cabinet>, sim_control: bool) -> std::io::Result<SocketAddr> {
    let registry = Registry::new();
    let journal_depth =
        IntGauge::new("lockerfleet_edge_journal_depth", "Events recorded and not yet acked").expect("valid metric");
    let open_doors = IntGauge::new("lockerfleet_edge_open_doors", "Doors open or unlocking").expect("valid metric");
    registry.register(Box::new(journal_depth.clone())).expect("registered once");
    registry.register(Box::new(open_doors.clone())).expect("registered once");
    let state = State { cabinet, registry, journal_depth, open_doors };
    let server = HttpServer::new(move || {
        let mut app = App::new()
            .app_data(web::Data::new(state.clone()))
            .route("/healthz", web::get().to(healthz))
            .route("/status", web::get().to(status))
            .route("/metrics", web::get().to(metrics));
        if sim_control {
            app = app
                .route("/sim/keypad", web::post().to(sim_keypad))
                .route("/sim/door", web::post().to(sim_door))
                .route("/sim/courier/deposit", web::post().to(sim_deposit))
                .route("/sim/courier/collect", web::post().to(sim_collect))
                .route("/sim/courier/tasks", web::post().to(sim_tasks));
        }
        app
    })
    .workers(1)
    .disable_signals()
    .bind(listen)?;
    let addr = server.addrs().first().copied().unwrap_or(listen);
    actix_rt::spawn(server.run());
    Ok(addr)
}
