//! The fleet-wide alarm inbox: the alarms cabinets raised (door forced, left open, lock
//! jammed, keypad lockout…), newest first across every cabinet the caller sees, and the
//! operator's acknowledgement, kept with who made it and when.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AppState;
use super::auth::{Action, Caller};
use super::error::ApiError;
use crate::store::StoreError;
use crate::store::entities::{alarm_ack, api_token};
use crate::store::fleet_view::{AlarmFilter, AlarmRow};

/// Largest page of the inbox.
const MAX_PAGE: u64 = 200;
/// Longest note an acknowledgement may carry.
const MAX_NOTE: usize = 500;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlarmQuery {
    /// `open` (the default), `acknowledged` or `all`.
    pub state: Option<String>,
    pub tenant: Option<String>,
    pub cabinet: Option<String>,
    /// Cursor: the id of the last alarm of the previous page.
    pub before: Option<Uuid>,
    /// At most this many (default 50, at most 200).
    pub limit: Option<u64>,
}

/// Who acknowledged an alarm, and when.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AckView {
    /// The name of the token that acknowledged it.
    pub by: String,
    pub token: Uuid,
    pub at: DateTime<Utc>,
    pub note: Option<String>,
}

/// One alarm in the inbox.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlarmView {
    /// The cabinet's event id.
    pub id: Uuid,
    pub cabinet: String,
    pub tenant: String,
    /// `door_forced`, `door_left_open`, `lock_jammed`, `keypad_lockout`…
    pub code: String,
    /// What the cabinet added (usually the compartment).
    pub detail: String,
    /// When it happened, by the cabinet's clock.
    pub at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub acknowledged: Option<AckView>,
}

impl From<AlarmRow> for AlarmView {
    fn from(a: AlarmRow) -> Self {
        let (code, detail) = a.code_and_detail();
        Self {
            id: a.event.id,
            cabinet: a.event.cabinet_id,
            tenant: a.tenant,
            code,
            detail,
            at: a.event.at,
            received_at: a.event.received_at,
            acknowledged: a.ack.map(|k| AckView { by: k.token_name, token: k.token_id, at: k.acked_at, note: k.note }),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlarmPage {
    pub items: Vec<AlarmView>,
    /// How many alarms match in all (every page).
    pub total: u64,
    /// Pass as `before` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<Uuid>,
}

#[utoipa::path(get, path = "/api/v1/alarms", tag = "alarms", params(AlarmQuery),
    responses((status = 200, body = AlarmPage), (status = 422, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
/// Alarms across every cabinet the caller sees, newest first.
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<AlarmQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadCabinets)?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::field("limit", format!("must be 1-{MAX_PAGE}")));
    }
    let acknowledged = match q.state.as_deref() {
        None | Some("open") => Some(false),
        Some("acknowledged") => Some(true),
        Some("all") => None,
        Some(other) => {
            return Err(ApiError::field("state", format!("{other:?} is not one of open, acknowledged, all")));
        }
    };
    let before = match q.before {
        Some(id) => {
            let a = state.store.alarm(id).await?.ok_or_else(|| ApiError::field("before", "is not an alarm id"))?;
            Some((a.event.received_at, a.event.id))
        }
        None => None,
    };
    let filter = AlarmFilter {
        tenant: caller.list_scope(q.tenant.as_deref())?,
        cabinet: q.cabinet.clone(),
        acknowledged,
        before: None,
        received_after: None,
    };
    let total = state.store.count_alarms(&filter).await?;
    let rows = state.store.alarms(&AlarmFilter { before, ..filter }, limit + 1).await?;
    let more = rows.len() as u64 > limit;
    let items: Vec<AlarmView> = rows.into_iter().take(limit as usize).map(AlarmView::from).collect();
    let next = if more { items.last().map(|a| a.id) } else { None };
    Ok(HttpResponse::Ok().json(AlarmPage { items, total, next }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acknowledge {
    /// What the operator did about it (up to 500 characters).
    #[serde(default)]
    pub note: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/alarms/{id}/acknowledge", tag = "alarms", params(("id" = Uuid, Path, description = "the alarm's event id")),
    request_body = Acknowledge,
    responses((status = 200, body = AlarmView), (status = 404, body = super::error::ErrorEnvelope),
              (status = 409, description = "already acknowledged", body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
/// Acknowledges one alarm; the acknowledgement names the caller's token and the time.
pub async fn acknowledge(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::AcknowledgeAlarms)?;
    let id = path.into_inner();
    // The body is optional: none, or `{"note": …}`.
    let body: Acknowledge = if body.iter().all(u8::is_ascii_whitespace) {
        Acknowledge::default()
    } else {
        let text = std::str::from_utf8(&body).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("request body is not UTF-8: {e}"))
        })?;
        super::body::from_json(text)?
    };
    let note = body.note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if note.as_ref().is_some_and(|n| n.chars().count() > MAX_NOTE) {
        return Err(ApiError::field("note", format!("at most {MAX_NOTE} characters")));
    }
    let alarm = state
        .store
        .alarm(id)
        .await?
        .filter(|a| caller.sees(&a.tenant))
        .ok_or_else(|| ApiError::not_found("alarm", &id.to_string()))?;
    if let Some(k) = &alarm.ack {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_acknowledged",
            format!("alarm {id} was acknowledged by {} at {}", k.token_name, k.acked_at.to_rfc3339()),
        ));
    }
    let name = <api_token::Entity as sea_orm::EntityTrait>::find_by_id(caller.token_id)
        .one(state.store.connection())
        .await
        .map_err(StoreError::from)?
        .map(|t| t.name)
        .unwrap_or_else(|| caller.token_id.to_string());
    let ack = alarm_ack::Model {
        event_id: id,
        cabinet_id: alarm.event.cabinet_id.clone(),
        token_id: caller.token_id,
        token_name: name,
        note,
        acked_at: crate::store::now(),
    };
    match state.store.acknowledge_alarm(ack.clone()).await {
        Ok(()) => {}
        // Someone else was a moment quicker.
        Err(StoreError::Conflict { .. }) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_acknowledged",
                format!("alarm {id} was just acknowledged"),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(alarm = %id, cabinet = %ack.cabinet_id, by = %caller.token_id, "alarm acknowledged");
    Ok(HttpResponse::Ok().json(AlarmView::from(AlarmRow { ack: Some(ack), ..alarm })))
}
