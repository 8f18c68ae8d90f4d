//! Rollouts through the API: create, list, progress per wave and state with failures
//! grouped by kind, the cabinets in each state, and the operator's commands.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AppState;
use super::auth::{Action, Caller};
use super::body::Body;
use super::error::ApiError;
use crate::domain::rollout::{Conductor, Input, Summary};
use crate::service::rollouts::{self, NewRollout, RolloutError};
use crate::store::StoreError;
use crate::store::entities::{rollout, rollout_input};

impl From<RolloutError> for ApiError {
    fn from(e: RolloutError) -> Self {
        match e {
            RolloutError::NotFound { what, id } => ApiError::not_found(what, &id),
            RolloutError::Invalid { field, reason } => ApiError::field(field, reason),
            RolloutError::Store(s) => s.into(),
        }
    }
}

/// A rollout's progress.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RolloutView {
    pub id: Uuid,
    pub name: String,
    pub artifact: Uuid,
    pub include_new: bool,
    #[schema(value_type = Object)]
    pub target: serde_json::Value,
    #[schema(value_type = Object)]
    pub plan: serde_json::Value,
    /// Phase, cabinets per wave and state, failures by kind.
    #[schema(value_type = Object)]
    pub progress: Summary,
    /// Operator commands and cabinet reports not yet taken in by the conductor.
    pub queued_inputs: u64,
    /// The replica conducting it and until when its lease runs.
    pub owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn conductor_of(row: &rollout::Model) -> Result<Conductor, ApiError> {
    serde_json::from_str(&row.snapshot)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt_rollout", e.to_string()))
}

async fn view(state: &AppState, row: rollout::Model) -> Result<RolloutView, ApiError> {
    use sea_orm::PaginatorTrait;
    let queued = rollout_input::Entity::find()
        .filter(rollout_input::Column::RolloutId.eq(row.id))
        .count(state.store.connection())
        .await
        .map_err(StoreError::from)?;
    Ok(RolloutView {
        id: row.id,
        progress: conductor_of(&row)?.summary(),
        name: row.name,
        artifact: row.artifact_id,
        include_new: row.include_new,
        target: serde_json::from_str(&row.target).unwrap_or_default(),
        plan: serde_json::from_str(&row.plan).unwrap_or_default(),
        queued_inputs: queued,
        owner: row.owner,
        lease_until: row.lease_until,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn fleet_level(caller: &Caller) -> Result<(), ApiError> {
    caller.require(Action::ManageReleases)?;
    if caller.tenant.is_some() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "rollouts are run fleet-wide, not per tenant"));
    }
    Ok(())
}

async fn find(state: &AppState, id: Uuid) -> Result<rollout::Model, ApiError> {
    rollout::Entity::find_by_id(id)
        .one(state.store.connection())
        .await
        .map_err(StoreError::from)?
        .ok_or_else(|| ApiError::not_found("rollout", &id.to_string()))
}

/// Rollouts run fleet-wide; a tenant's token sees only those whose target is confined to
/// its own tenant (a fleet-wide one would show other tenants' cabinets and progress).
fn visible_to(caller: &Caller, row: &rollout::Model) -> bool {
    match &caller.tenant {
        None => true,
        Some(t) => serde_json::from_str::<rollouts::Target>(&row.target)
            .is_ok_and(|target| target.tenant.as_deref() == Some(t.as_str())),
    }
}

/// A rollout the caller may see, or 404 as for one that does not exist.
async fn find_visible(state: &AppState, caller: &Caller, id: Uuid) -> Result<rollout::Model, ApiError> {
    let row = find(state, id).await?;
    if visible_to(caller, &row) { Ok(row) } else { Err(ApiError::not_found("rollout", &id.to_string())) }
}

#[utoipa::path(post, path = "/api/v1/rollouts", tag = "ota", request_body = NewRollout,
    responses((status = 201, body = RolloutView), (status = 422, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Body<NewRollout>,
) -> Result<HttpResponse, ApiError> {
    fleet_level(&caller)?;
    let row = rollouts::create(&state.service(), body.into_inner()).await?;
    tracing::info!(rollout = %row.id, name = %row.name, "rollout created");
    Ok(HttpResponse::Created().json(view(&state, row).await?))
}

#[utoipa::path(get, path = "/api/v1/rollouts", tag = "ota", responses((status = 200, body = [RolloutView])), security(("bearer" = [])))]
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadCabinets)?;
    let rows = rollout::Entity::find()
        .order_by_desc(rollout::Column::CreatedAt)
        .all(state.store.connection())
        .await
        .map_err(StoreError::from)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows.into_iter().filter(|r| visible_to(&caller, r)) {
        out.push(view(&state, r).await?);
    }
    Ok(HttpResponse::Ok().json(out))
}

#[utoipa::path(get, path = "/api/v1/rollouts/{id}", tag = "ota", params(("id" = Uuid, Path)),
    responses((status = 200, body = RolloutView), (status = 404, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn get(state: web::Data<AppState>, caller: Caller, path: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadCabinets)?;
    let row = find_visible(&state, &caller, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(view(&state, row).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CabinetsQuery {
    /// Only cabinets in this state (`pending`, `offered`, `downloading`, `confirmed`,
    /// `failed`, `rolled_back`, `timed_out`…).
    pub state: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RolloutCabinet {
    pub cabinet: String,
    pub wave: usize,
    pub state: String,
    /// Retries so far.
    pub retries: u32,
    /// Why its last attempt failed (`kind: reason`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/rollouts/{id}/cabinets", tag = "ota", params(("id" = Uuid, Path), CabinetsQuery),
    responses((status = 200, body = [RolloutCabinet])), security(("bearer" = [])))]
pub async fn cabinets(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    query: web::Query<CabinetsQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadCabinets)?;
    let row = find_visible(&state, &caller, path.into_inner()).await?;
    let c = conductor_of(&row)?;
    let mut out: Vec<RolloutCabinet> = c
        .cabinets()
        .filter(|(_, _, s, _, _)| query.state.as_deref().is_none_or(|want| s.label() == want))
        .map(|(id, wave, s, retries, reason)| RolloutCabinet {
            cabinet: id.to_owned(),
            wave,
            state: s.label().to_owned(),
            retries,
            reason: reason.map(str::to_owned),
        })
        .collect();
    out.sort_by(|a, b| (a.wave, &a.cabinet).cmp(&(b.wave, &b.cabinet)));
    Ok(HttpResponse::Ok().json(out))
}

#[utoipa::path(post, path = "/api/v1/rollouts/{id}/{action}", tag = "ota",
    params(("id" = Uuid, Path), ("action" = String, Path, description = "pause, resume, abort, retry-failed or approve")),
    responses((status = 202), (status = 404, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
/// Queues an operator command; the rollout's conductor applies it on its next pass.
pub async fn command(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(Uuid, String)>,
) -> Result<HttpResponse, ApiError> {
    fleet_level(&caller)?;
    let (id, action) = path.into_inner();
    let input = match action.as_str() {
        "pause" => Input::Pause,
        "resume" => Input::Resume,
        "abort" => Input::Abort,
        "retry-failed" => Input::RetryFailed,
        "approve" => Input::Approve,
        other => {
            return Err(ApiError::field(
                "action",
                format!("{other:?} is not one of pause, resume, abort, retry-failed, approve"),
            ));
        }
    };
    rollouts::command(&state.service(), id, input).await?;
    tracing::info!(rollout = %id, action, "rollout command queued");
    Ok(HttpResponse::Accepted().json(serde_json::json!({"rollout": id, "action": action})))
}
