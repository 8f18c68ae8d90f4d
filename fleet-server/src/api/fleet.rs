//! The fleet at a glance: cabinets counted by state, tenant, region and firmware, a
//! coarse map, and the open alarms, in one small answer however large the fleet.

use actix_web::{HttpResponse, web};
use lockerfleet_shared::TenantId;
use serde::Deserialize;

use super::AppState;
use super::auth::{Action, Caller};
use super::error::ApiError;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    /// A fleet admin may narrow the summary to one tenant; others always see their own.
    pub tenant: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/fleet/summary", tag = "cabinets", params(SummaryQuery),
    responses((status = 200, body = crate::store::fleet_view::FleetSummary)), security(("bearer" = [])))]
pub async fn summary(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<SummaryQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadCabinets)?;
    if let Some(t) = &q.tenant {
        TenantId::new(t.clone()).map_err(|e| ApiError::field("tenant", e.to_string()))?;
    }
    let tenant = caller.list_scope(q.tenant.as_deref())?;
    Ok(HttpResponse::Ok().json(state.store.fleet_summary(tenant.as_deref()).await?))
}
