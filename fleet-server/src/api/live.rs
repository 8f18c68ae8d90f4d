//! `GET /api/v1/live`: the console's server-sent-event stream of what changes in the
//! fleet (see [`crate::live`]), confined to what the caller may see: its own tenant's
//! cabinets and alarms, and rollout progress (fleet-wide).
//!
//! Frames: `event: ready` once subscribed, then `presence`, `alarm`,
//! `alarm_acknowledged`, `rollout`, each with the JSON event as `data`; `lagged` when
//! this client may have missed some (`{"kind":"lagged","what":"events","missed":n}`: it
//! fell too far behind; `{"kind":"lagged","what":"alarms","tenant":…}`: more changed in
//! its tenant than one poll reads) and should read its data again; a comment every 15 s
//! keeps proxies from closing an idle stream.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::auth::{Action, Caller};
use super::error::ApiError;
use crate::live::LiveEvent;

const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);

fn frame(event: &LiveEvent) -> web::Bytes {
    let json = serde_json::to_string(event).expect("live events serialise");
    web::Bytes::from(format!("event: {}\ndata: {json}\n\n", event.name()))
}

#[utoipa::path(get, path = "/api/v1/live", tag = "cabinets",
    responses((status = 200, description = "server-sent events: ready, presence, alarm, alarm_acknowledged, rollout, lagged (missed some: read the data again)", content_type = "text/event-stream"),
              (status = 403, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn stream(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadCabinets)?;
    let rx = state.live.subscribe();
    let tenant = caller.tenant.clone();
    let ready = futures_util::stream::once(async {
        Ok::<_, actix_web::Error>(web::Bytes::from_static(b"event: ready\ndata: {}\n\n"))
    });
    let closing = state.closing.clone();
    let events = futures_util::stream::unfold((rx, tenant, closing), |(mut rx, tenant, mut closing)| async move {
        loop {
            let next = tokio::select! {
                r = tokio::time::timeout(KEEPALIVE, rx.recv()) => r,
                _ = closing.wait_for(|c| *c) => return None,
            };
            let bytes = match next {
                Err(_) => web::Bytes::from_static(b": keep-alive\n\n"),
                Ok(Ok(event)) => {
                    let visible: Arc<LiveEvent> = event;
                    match (visible.tenant(), tenant.as_deref()) {
                        (Some(of), Some(mine)) if of != mine => continue,
                        _ => frame(&visible),
                    }
                }
                Ok(Err(RecvError::Lagged(n))) => {
                    frame(&LiveEvent::Lagged { what: "events", tenant: None, missed: Some(n) })
                }
                Ok(Err(RecvError::Closed)) => return None,
            };
            return Some((Ok::<_, actix_web::Error>(bytes), (rx, tenant, closing)));
        }
    });
    use futures_util::StreamExt;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(ready.chain(events)))
}
