//! Couriers, recipients and parcels: the dispatcher's side of the pickup flow.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use lockerfleet_shared::envelope::CompartmentSize;
use lockerfleet_shared::{CabinetId, CourierId, TenantId};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::AppState;
use super::auth::{Action, Caller};
use super::body::Body;
use super::error::ApiError;
use crate::domain::parcel::{ParcelState, Transition};
use crate::service::parcels::{self, NewParcel, ServiceError, Source};
use crate::service::templates::{self, TemplateError};
use crate::store::entities::{courier, parcel, parcel_event, recipient, tenant};
use crate::store::{StoreError, now};

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound { what, ref id } => {
                let mut err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_reference", e.to_string());
                err.body.field = Some(what.to_owned());
                let _ = id;
                err
            }
            ServiceError::NoRoom { .. } => ApiError::new(StatusCode::CONFLICT, "no_room", e.to_string()),
            ServiceError::Transition(_) => ApiError::new(StatusCode::CONFLICT, "invalid_transition", e.to_string()),
            ServiceError::Conflict => ApiError::new(StatusCode::CONFLICT, "concurrent_change", e.to_string()),
            ServiceError::Template(TemplateError::NoKek) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_configured", e.to_string())
            }
            ServiceError::Template(TemplateError::Undecryptable) => ApiError::internal(e),
            ServiceError::Template(TemplateError::Refused(_)) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "template_refused", e.to_string())
            }
            ServiceError::Store(s) => s.into(),
        }
    }
}

fn db(e: sea_orm::DbErr) -> ApiError {
    StoreError::from(e).into()
}

// ─────────────────────────────── couriers ───────────────────────────────

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCourier {
    pub id: String,
    #[serde(default)]
    pub tenant: Option<String>,
    pub name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CourierView {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl From<courier::Model> for CourierView {
    fn from(c: courier::Model) -> Self {
        Self { id: c.id, tenant: c.tenant_id, name: c.name, created_at: c.created_at }
    }
}

async fn existing_tenant(state: &AppState, id: &str) -> Result<tenant::Model, ApiError> {
    state.store.tenant(id).await?.ok_or_else(|| ApiError::field("tenant", format!("tenant {id:?} does not exist")))
}

#[utoipa::path(post, path = "/api/v1/couriers", tag = "couriers", request_body = NewCourier, responses((status = 201, body = CourierView), (status = 409, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn create_courier(
    state: web::Data<AppState>,
    caller: Caller,
    body: Body<NewCourier>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ManageCouriers)?;
    let id = CourierId::new(body.id.clone()).map_err(|e| ApiError::field("id", e.to_string()))?;
    let tenant = caller.owning_tenant(body.tenant.as_deref())?;
    existing_tenant(&state, &tenant).await?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::field("name", "must be 1-200 characters"));
    }
    let conn = state.store.connection();
    if courier::Entity::find_by_id(id.to_string()).one(conn).await.map_err(db)?.is_some() {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", format!("courier {id} already exists")));
    }
    let model = courier::Model { id: id.to_string(), tenant_id: tenant, name: name.to_owned(), created_at: now() };
    courier::Entity::insert(courier::ActiveModel::from(model.clone()))
        .exec_without_returning(conn)
        .await
        .map_err(db)?;
    Ok(HttpResponse::Created().json(CourierView::from(model)))
}

#[utoipa::path(get, path = "/api/v1/couriers", tag = "couriers", responses((status = 200, body = CourierList)), security(("bearer" = [])))]
pub async fn list_couriers(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadParcels)?;
    let mut q = courier::Entity::find().order_by_asc(courier::Column::Id);
    if let Some(t) = caller.list_scope(None)? {
        q = q.filter(courier::Column::TenantId.eq(t));
    }
    let items: Vec<CourierView> =
        q.limit(1000).all(state.store.connection()).await.map_err(db)?.into_iter().map(Into::into).collect();
    Ok(HttpResponse::Ok().json(CourierList { items }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CourierList {
    pub items: Vec<CourierView>,
}

// ─────────────────────────────── recipients ───────────────────────────────

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRecipient {
    /// The operator's own reference for the person; no names or addresses are stored.
    pub reference: String,
    #[serde(default)]
    pub tenant: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecipientView {
    pub id: Uuid,
    pub tenant: String,
    pub reference: String,
    /// `recipient`: the template lives on the recipient's phone; `operator`: the server
    /// keeps it encrypted.
    pub custody: String,
    pub consent_at: Option<DateTime<Utc>>,
    pub has_template: bool,
    pub created_at: DateTime<Utc>,
}

impl From<recipient::Model> for RecipientView {
    fn from(r: recipient::Model) -> Self {
        Self {
            id: r.id,
            tenant: r.tenant_id,
            reference: r.reference,
            custody: r.custody,
            consent_at: r.consent_at,
            has_template: r.template_ciphertext.is_some(),
            created_at: r.created_at,
        }
    }
}

#[utoipa::path(post, path = "/api/v1/recipients", tag = "recipients", request_body = NewRecipient, responses((status = 201, body = RecipientView), (status = 409, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn create_recipient(
    state: web::Data<AppState>,
    caller: Caller,
    body: Body<NewRecipient>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ManageRecipients)?;
    let tenant = caller.owning_tenant(body.tenant.as_deref())?;
    let t = existing_tenant(&state, &tenant).await?;
    let reference = body.reference.trim();
    if reference.is_empty() || reference.len() > 200 {
        return Err(ApiError::field("reference", "must be 1-200 characters"));
    }
    let conn = state.store.connection();
    let model = recipient::Model {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        reference: reference.to_owned(),
        custody: t.custody,
        consent_at: None,
        template_ciphertext: None,
        template_model_id: None,
        template_model_sha256: None,
        created_at: now(),
    };
    recipient::Entity::insert(recipient::ActiveModel::from(model.clone())).exec_without_returning(conn).await.map_err(
        |e| match e.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("a recipient with reference {reference:?} exists"),
            ),
            _ => db(e),
        },
    )?;
    Ok(HttpResponse::Created().json(RecipientView::from(model)))
}

// ─────────────────────────────── parcels ───────────────────────────────

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateParcel {
    #[serde(default)]
    pub tenant: Option<String>,
    /// The sender's tracking reference.
    pub reference: String,
    #[serde(default)]
    pub recipient: Option<Uuid>,
    pub courier: String,
    /// `s`, `m`, `l` or `xl`.
    #[schema(value_type = String, example = "s")]
    pub size: CompartmentSize,
    /// The recipient needs a low compartment (wheelchair, child).
    #[serde(default)]
    pub need_low: bool,
    /// The cabinet the recipient chose; a nearby one is used when it is full.
    pub cabinet: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ParcelView {
    pub id: Uuid,
    pub tenant: String,
    pub reference: String,
    pub recipient: Option<Uuid>,
    pub courier: Option<String>,
    pub state: String,
    pub size: String,
    pub need_low: bool,
    pub cabinet: Option<String>,
    pub compartment: Option<String>,
    /// Deposit deadline while assigned; pickup deadline while ready.
    pub deadline: Option<DateTime<Utc>>,
    pub extended: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<parcel::Model> for ParcelView {
    fn from(p: parcel::Model) -> Self {
        Self {
            id: p.id,
            tenant: p.tenant_id,
            reference: p.reference,
            recipient: p.recipient_id,
            courier: p.courier_id,
            state: p.state,
            size: p.size,
            need_low: p.need_low,
            cabinet: p.cabinet_id,
            compartment: p.compartment_id,
            deadline: p.deadline,
            extended: p.extended,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedParcel {
    #[serde(flatten)]
    pub parcel: ParcelView,
    /// Shown this once: the server keeps only a slow hash.
    pub pickup_code: String,
    /// The chosen cabinet was full; the parcel went to the nearest one with room.
    pub alternative_cabinet: bool,
}

#[utoipa::path(post, path = "/api/v1/parcels", tag = "parcels", request_body = CreateParcel, responses((status = 201, body = CreatedParcel), (status = 409, description = "no free compartment fits (`no_room`)", body = super::error::ErrorEnvelope), (status = 422, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn create_parcel(
    state: web::Data<AppState>,
    caller: Caller,
    body: Body<CreateParcel>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ManageParcels)?;
    let tenant = caller.owning_tenant(body.tenant.as_deref())?;
    TenantId::new(tenant.clone()).map_err(|e| ApiError::field("tenant", e.to_string()))?;
    let reference = body.reference.trim();
    if reference.is_empty() || reference.len() > 200 {
        return Err(ApiError::field("reference", "must be 1-200 characters"));
    }
    let courier = CourierId::new(body.courier.clone()).map_err(|e| ApiError::field("courier", e.to_string()))?;
    let cabinet = CabinetId::new(body.cabinet.clone()).map_err(|e| ApiError::field("cabinet", e.to_string()))?;
    let created = parcels::create_and_assign(
        &state.service(),
        NewParcel {
            tenant,
            reference: reference.to_owned(),
            recipient: body.recipient,
            courier,
            size: body.size,
            need_low: body.need_low,
            cabinet,
        },
    )
    .await?;
    state.metrics.assignments.with_label_values(&[if created.alternative { "alternative" } else { "chosen" }]).inc();
    state.outbox_kick();
    let id = created.parcel.id;
    Ok(HttpResponse::Created().insert_header(("Location", format!("/api/v1/parcels/{id}"))).json(CreatedParcel {
        parcel: created.parcel.into(),
        pickup_code: created.pickup_code,
        alternative_cabinet: created.alternative,
    }))
}

async fn visible_parcel(state: &AppState, caller: &Caller, raw: &str) -> Result<parcel::Model, ApiError> {
    let id = Uuid::parse_str(raw).map_err(|_| ApiError::field("id", format!("{raw:?} is not a parcel id")))?;
    parcel::Entity::find_by_id(id)
        .one(state.store.connection())
        .await
        .map_err(db)?
        .filter(|p| caller.sees(&p.tenant_id))
        .ok_or_else(|| ApiError::not_found("parcel", raw))
}

#[utoipa::path(get, path = "/api/v1/parcels/{id}", tag = "parcels", params(("id" = Uuid, Path)), responses((status = 200, body = ParcelView), (status = 404, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn get_parcel(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadParcels)?;
    let p = visible_parcel(&state, &caller, &path).await?;
    Ok(HttpResponse::Ok().json(ParcelView::from(p)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub from: Option<String>,
    pub to: String,
    pub source: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[utoipa::path(get, path = "/api/v1/parcels/{id}/events", tag = "parcels", params(("id" = Uuid, Path)), responses((status = 200, body = Timeline), (status = 404, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn parcel_timeline(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadParcels)?;
    let p = visible_parcel(&state, &caller, &path).await?;
    let events = parcel_event::Entity::find()
        .filter(parcel_event::Column::ParcelId.eq(p.id))
        .order_by_asc(parcel_event::Column::Id)
        .all(state.store.connection())
        .await
        .map_err(db)?;
    let items: Vec<TimelineEntry> = events
        .into_iter()
        .map(|e| TimelineEntry {
            at: e.at,
            kind: e.kind,
            from: e.from_state,
            to: e.to_state,
            source: e.source,
            detail: serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::Null),
        })
        .collect();
    Ok(HttpResponse::Ok().json(Timeline { parcel: p.id, items }))
}

/// A parcel's timeline, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Timeline {
    pub parcel: Uuid,
    pub items: Vec<TimelineEntry>,
}

/// One page of parcels.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ParcelPage {
    pub items: Vec<ParcelView>,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next: Option<Uuid>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ParcelQuery {
    pub tenant: Option<String>,
    pub state: Option<String>,
    pub cabinet: Option<String>,
    pub courier: Option<String>,
    /// Only parcels whose reference starts with this (the sender's tracking number).
    pub reference: Option<String>,
    /// `created` (oldest first, the default) or `-created` (newest first).
    pub sort: Option<String>,
    /// Cursor: the last id of the previous page.
    pub after: Option<Uuid>,
    pub limit: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/parcels", tag = "parcels", params(ParcelQuery), responses((status = 200, body = ParcelPage), (status = 422, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn list_parcels(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<ParcelQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadParcels)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 500 {
        return Err(ApiError::field("limit", "must be 1-500"));
    }
    let newest_first = match q.sort.as_deref() {
        None | Some("created") => false,
        Some("-created") => true,
        Some(other) => return Err(ApiError::field("sort", format!("{other:?} is not one of created, -created"))),
    };
    let mut query = parcel::Entity::find();
    if let Some(t) = caller.list_scope(q.tenant.as_deref())? {
        query = query.filter(parcel::Column::TenantId.eq(t));
    }
    if let Some(s) = &q.state {
        let st =
            ParcelState::parse(s).ok_or_else(|| ApiError::field("state", format!("{s:?} is not a parcel state")))?;
        query = query.filter(parcel::Column::State.eq(st.as_str()));
    }
    if let Some(c) = &q.cabinet {
        query = query.filter(parcel::Column::CabinetId.eq(c.as_str()));
    }
    if let Some(c) = &q.courier {
        query = query.filter(parcel::Column::CourierId.eq(c.as_str()));
    }
    if let Some(r) = q.reference.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
        if r.len() > 200 {
            return Err(ApiError::field("reference", "at most 200 characters"));
        }
        query = query.filter(parcel::Column::Reference.starts_with(r));
    }
    // Ids are UUIDv7: ordering by id is ordering by creation time, and the id is a stable
    // cursor.
    if let Some(after) = q.after {
        query = if newest_first {
            query.filter(parcel::Column::Id.lt(after))
        } else {
            query.filter(parcel::Column::Id.gt(after))
        };
    }
    query = if newest_first { query.order_by_desc(parcel::Column::Id) } else { query.order_by_asc(parcel::Column::Id) };
    let rows = query.limit(limit + 1).all(state.store.connection()).await.map_err(db)?;
    let more = rows.len() as u64 > limit;
    let items: Vec<ParcelView> = rows.into_iter().take(limit as usize).map(Into::into).collect();
    let next = if more { items.last().map(|p| p.id) } else { None };
    Ok(HttpResponse::Ok().json(ParcelPage { items, next }))
}

async fn act(state: &AppState, caller: &Caller, raw: &str, t: Transition) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ManageParcels)?;
    let p = visible_parcel(state, caller, raw).await?;
    let updated = parcels::transition(
        &state.service(),
        Some(&p.tenant_id),
        p.id,
        t,
        Source::Api,
        json!({"token": caller.token_id}),
    )
    .await?;
    state.outbox_kick();
    Ok(HttpResponse::Ok().json(ParcelView::from(updated)))
}

#[utoipa::path(post, path = "/api/v1/parcels/{id}/cancel", tag = "parcels", params(("id" = Uuid, Path)), responses((status = 200, body = ParcelView), (status = 409, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn cancel_parcel(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    act(&state, &caller, &path, Transition::Cancel).await
}

#[utoipa::path(post, path = "/api/v1/parcels/{id}/extend", tag = "parcels", params(("id" = Uuid, Path)), responses((status = 200, body = ParcelView), (status = 409, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn extend_parcel(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    act(&state, &caller, &path, Transition::Extend).await
}

/// Tenant settings a tenant admin may change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    pub pickup_window_hours: Option<i32>,
    pub extension_hours: Option<i32>,
    pub reservation_hours: Option<i32>,
    pub custody: Option<String>,
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<String>,
}

#[utoipa::path(patch, path = "/api/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path)), request_body = TenantSettings, responses((status = 200, description = "the tenant's settings"), (status = 422, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn update_tenant(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: Body<TenantSettings>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ManageTokens)?;
    let id = path.into_inner();
    if !caller.sees(&id) {
        return Err(ApiError::not_found("tenant", &id));
    }
    let t = state.store.tenant(&id).await?.ok_or_else(|| ApiError::not_found("tenant", &id))?;
    let mut active: tenant::ActiveModel = t.into();
    for (field, v) in [
        ("pickup_window_hours", body.pickup_window_hours),
        ("extension_hours", body.extension_hours),
        ("reservation_hours", body.reservation_hours),
    ] {
        if let Some(h) = v
            && !(1..=24 * 30).contains(&h)
        {
            return Err(ApiError::field(field, "must be 1-720 hours"));
        }
    }
    if let Some(h) = body.pickup_window_hours {
        active.pickup_window_hours = Set(h);
    }
    if let Some(h) = body.extension_hours {
        active.extension_hours = Set(h);
    }
    if let Some(h) = body.reservation_hours {
        active.reservation_hours = Set(h);
    }
    if let Some(c) = &body.custody {
        if c != "recipient" && c != "operator" {
            return Err(ApiError::field("custody", "must be recipient or operator"));
        }
        active.custody = Set(c.clone());
    }
    if let Some(url) = &body.webhook_url {
        if url.len() > 500 {
            return Err(ApiError::field("webhook_url", "must be at most 500 characters"));
        }
        crate::service::webhooks::check_url(url, state.config.webhooks.allow_private_targets)
            .map_err(|e| ApiError::field("webhook_url", e.to_string()))?;
        active.webhook_url = Set(Some(url.clone()));
    }
    if let Some(secret) = &body.webhook_secret {
        if secret.len() < 16 {
            return Err(ApiError::field("webhook_secret", "must be at least 16 characters"));
        }
        active.webhook_secret = Set(Some(secret.clone()));
    }
    let updated = tenant::Entity::update(active).exec(state.store.connection()).await.map_err(db)?;
    Ok(HttpResponse::Ok().json(json!({
        "id": updated.id, "name": updated.name,
        "pickup_window_hours": updated.pickup_window_hours, "extension_hours": updated.extension_hours,
        "reservation_hours": updated.reservation_hours, "custody": updated.custody,
        "webhook_url": updated.webhook_url,
    })))
}

// ─────────────────────────────── templates ───────────────────────────────

/// Recipient-held custody: the recipient's app (through the operator's backend) hands in
/// the template it sealed for this parcel's cabinet. The server relays it unopened.
#[utoipa::path(post, path = "/api/v1/parcels/{id}/sealed-template", tag = "templates", params(("id" = Uuid, Path)), request_body(content = Object, description = "a `SealedTemplate` made with the recipient SDK (`lockerfleet_shared::sdk`)"), responses((status = 202, description = "queued for the cabinet"), (status = 422, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn upload_sealed_template(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: Body<lockerfleet_shared::seal::SealedTemplate>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ManageRecipients)?;
    let p = visible_parcel(&state, &caller, &path).await?;
    let accepted = templates::accept_sealed(&state.service(), Some(&p.tenant_id), p.id, body.into_inner()).await;
    if let Err(ServiceError::Template(TemplateError::Refused(_))) = &accepted {
        state.metrics.templates.with_label_values(&["refused"]).inc();
    }
    accepted?;
    state.metrics.templates.with_label_values(&["accepted"]).inc();
    state.outbox_kick();
    Ok(HttpResponse::Accepted().json(json!({"parcel": p.id, "status": "queued for the cabinet"})))
}

/// What the recipient's app needs to seal its template: the cabinet and its public key.
#[utoipa::path(get, path = "/api/v1/parcels/{id}/ready-notice", tag = "templates", params(("id" = Uuid, Path)), responses((status = 200, description = "cabinet id, its public key and the pickup deadline"), (status = 409, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn ready_notice(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ManageRecipients)?;
    let p = visible_parcel(&state, &caller, &path).await?;
    let (Some(cab), Some(deadline)) = (&p.cabinet_id, p.deadline) else {
        return Err(ApiError::new(StatusCode::CONFLICT, "not_ready", "the parcel has no cabinet yet"));
    };
    if p.state != "ready" {
        return Err(ApiError::new(StatusCode::CONFLICT, "not_ready", format!("the parcel is {}", p.state)));
    }
    let record = state.store.cabinet(cab).await?.ok_or_else(|| ApiError::not_found("cabinet", cab))?;
    Ok(HttpResponse::Ok().json(json!({
        "parcel": p.id, "cabinet": cab, "cabinet_public_key": record.cabinet.public_key, "deadline": deadline,
    })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// When the recipient gave explicit consent (GDPR art. 9(2)(a)).
    pub given_at: DateTime<Utc>,
    /// Which consent text they agreed to.
    pub text_version: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Enrolment {
    pub template: Vec<f32>,
    /// `{"id": "...", "sha256": "..."}` of the embedding model that made the template.
    #[schema(value_type = Object)]
    pub model: lockerfleet_shared::seal::ModelRef,
    pub consent: Consent,
}

impl Enrolment {
    /// What an enrolment must satisfy before it is sealed and stored; the error names the
    /// field. Pure, so the fuzz target `api_bodies` runs it on every enrolment it decodes.
    pub fn check(&self, now: DateTime<Utc>) -> Result<(), ApiError> {
        if self.consent.text_version.trim().is_empty() {
            return Err(ApiError::field("consent.text_version", "names the consent text the recipient agreed to"));
        }
        if self.consent.given_at > now + chrono::Duration::minutes(5) {
            return Err(ApiError::field("consent.given_at", "lies in the future"));
        }
        if self.template.iter().any(|v| !v.is_finite()) {
            return Err(ApiError::field("template", "holds a value that is not a finite number"));
        }
        Ok(())
    }
}

/// Operator-held custody: stores the enrolment template encrypted, with the consent.
#[utoipa::path(put, path = "/api/v1/recipients/{id}/template", tag = "templates", params(("id" = Uuid, Path)), request_body = Enrolment, responses((status = 204), (status = 422, body = super::error::ErrorEnvelope), (status = 503, description = "templates.kek is not configured", body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn enrol_template(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    body: Body<Enrolment>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ManageRecipients)?;
    let id = path.into_inner();
    body.check(now())?;
    let Enrolment { template, model, consent } = body.into_inner();
    let t = lockerfleet_shared::seal::FaceTemplate::new(template);
    templates::enrol(&state.service(), caller.tenant.as_deref(), id, &t, &model, consent.given_at).await?;
    state.metrics.templates.with_label_values(&["enrolled"]).inc();
    tracing::info!(recipient = %id, consent = %consent.text_version, "operator-held template enrolled");
    Ok(HttpResponse::NoContent().finish())
}

/// Erasure on request: nothing of the recipient is left on the server; every cabinet
/// holding a copy gets a template version without it, and the receipt says which
/// version confirms the removal at each cabinet.
#[utoipa::path(delete, path = "/api/v1/recipients/{id}", tag = "recipients", params(("id" = Uuid, Path)), responses((status = 202, description = "erased; the receipt names the template version that confirms removal at each cabinet"), (status = 422, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn erase_recipient(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ManageRecipients)?;
    let id = path.into_inner();
    let receipts = templates::erase(&state.service(), caller.tenant.as_deref(), id).await?;
    state.metrics.templates.with_label_values(&["erased"]).inc();
    state.outbox_kick();
    Ok(HttpResponse::Accepted().json(json!({"recipient": id, "cabinets": receipts})))
}

// ─────────────────────────────── courier stream ───────────────────────────────

/// How often an idle stream sends a comment line, so proxies keep it open.
const SSE_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// The courier a courier-feed request names, if the caller may reach it: a courier token
/// only its own (`refusal` otherwise), other roles any courier of a tenant they see.
async fn own_courier(state: &AppState, caller: &Caller, raw: String, refusal: &str) -> Result<CourierId, ApiError> {
    caller.require(Action::ReadCourierFeed)?;
    let id = CourierId::new(raw.clone()).map_err(|e| ApiError::field("id", e.to_string()))?;
    if caller.role == super::auth::Role::Courier && caller.courier.as_deref() != Some(id.as_str()) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", refusal));
    }
    courier::Entity::find_by_id(id.to_string())
        .one(state.store.connection())
        .await
        .map_err(db)?
        .filter(|c| caller.sees(&c.tenant_id))
        .ok_or_else(|| ApiError::not_found("courier", &raw))?;
    Ok(id)
}

/// `GET /api/v1/couriers/{id}/assignments/stream`: the courier's assignment, collection
/// and withdrawal notifications as server-sent events (`event: assignment`, `data:` the
/// envelope JSON, `id:` the envelope id). A stream starts with the courier's open tasks,
/// so an app that reconnects misses nothing. A courier token sees only its own stream.
#[utoipa::path(get, path = "/api/v1/couriers/{id}/assignments/stream", tag = "couriers", params(("id" = String, Path)), responses((status = 200, description = "server-sent events: assignment, collection, withdrawn", content_type = "text/event-stream")), security(("bearer" = [])))]
pub async fn courier_stream(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = own_courier(&state, &caller, path.into_inner(), "a courier sees only its own assignments").await?;
    // Subscribe first, then read the open tasks: a notification relayed in between shows
    // up twice (the app deduplicates by parcel), never not at all.
    let rx = state.courier_feed.subscribe();
    let open = parcel::Entity::find()
        .filter(parcel::Column::CourierId.eq(id.as_str()))
        .filter(parcel::Column::State.is_in(["assigned", "expired"]))
        .order_by_asc(parcel::Column::Id)
        .limit(500)
        .all(state.store.connection())
        .await
        .map_err(db)?;
    let snapshot: Vec<Result<web::Bytes, actix_web::Error>> = open
        .into_iter()
        .filter_map(|p| {
            let task = lockerfleet_shared::envelope::CourierTask {
                parcel: lockerfleet_shared::ParcelId(p.id),
                cabinet: CabinetId::new(p.cabinet_id?).ok()?,
                compartment: lockerfleet_shared::CompartmentId::new(p.compartment_id?).ok()?,
                due: p.deadline.unwrap_or(p.updated_at),
            };
            let (kind, body) = match p.state.as_str() {
                "assigned" => ("assignment", lockerfleet_shared::envelope::CourierBody::Assignment(task.clone())),
                // An expired parcel stays in its compartment until a courier collects it.
                "expired" => ("collection", lockerfleet_shared::envelope::CourierBody::Collection(task.clone())),
                _ => return None,
            };
            let env = lockerfleet_shared::Envelope::new(task.cabinet.clone(), 0, body);
            let json = String::from_utf8(env.encode()).ok()?;
            Some(Ok(web::Bytes::from(format!("id: {}\nevent: {kind}\ndata: {json}\n\n", env.id))))
        })
        .collect();
    let closing = state.closing.clone();
    let stream = futures_util::stream::unfold((rx, id, closing), |(mut rx, id, mut closing)| async move {
        loop {
            let next = tokio::select! {
                r = tokio::time::timeout(SSE_KEEPALIVE, rx.recv()) => r,
                _ = closing.wait_for(|c| *c) => return None,
            };
            match next {
                Err(_) => {
                    return Some((
                        Ok::<_, actix_web::Error>(web::Bytes::from_static(b": keep-alive\n\n")),
                        (rx, id, closing),
                    ));
                }
                Ok(Ok(note)) if note.courier == id => {
                    let kind = serde_json::from_str::<serde_json::Value>(&note.payload)
                        .ok()
                        .and_then(|v| v["body"]["kind"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| "message".into());
                    let event_id = serde_json::from_str::<serde_json::Value>(&note.payload)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    let frame = format!("id: {event_id}\nevent: {kind}\ndata: {}\n\n", note.payload);
                    return Some((Ok(web::Bytes::from(frame)), (rx, id, closing)));
                }
                Ok(Ok(_)) => continue,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                    let frame = format!("event: lagged\ndata: {{\"missed\":{n}}}\n\n");
                    return Some((Ok(web::Bytes::from(frame)), (rx, id, closing)));
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return None,
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(futures_util::stream::iter(snapshot).chain(stream)))
}

/// A courier pass: what the courier's app shows a cabinet as a QR code.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CourierPassView {
    /// The pass text (base64url); cabinets verify it offline.
    pub pass: String,
    pub expires_at: DateTime<Utc>,
}

/// `POST /api/v1/couriers/{id}/pass`: issues a short-lived pass. A courier token gets
/// only its own; dispatchers and admins of the courier's tenant may issue one.
#[utoipa::path(post, path = "/api/v1/couriers/{id}/pass", tag = "couriers", params(("id" = String, Path)),
    responses((status = 200, body = CourierPassView), (status = 403, body = super::error::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn courier_pass(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadCourierFeed)?;
    let raw = path.into_inner();
    let id = CourierId::new(raw.clone()).map_err(|e| ApiError::field("id", e.to_string()))?;
    if caller.role == super::auth::Role::Courier && caller.courier.as_deref() != Some(id.as_str()) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "a courier gets only its own pass"));
    }
    let c = courier::Entity::find_by_id(id.to_string())
        .one(state.store.connection())
        .await
        .map_err(db)?
        .filter(|c| caller.sees(&c.tenant_id))
        .ok_or_else(|| ApiError::not_found("courier", &raw))?;
    let tenant = TenantId::new(c.tenant_id).map_err(ApiError::internal)?;
    let (pass, expires_at) = state.ctx.passes.issue(id, tenant, now());
    Ok(HttpResponse::Ok().json(CourierPassView { pass, expires_at }))
}

/// One thing a courier has to do.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CourierTaskView {
    /// `deliver` (bring it to its compartment) or `collect` (take it back out).
    pub task: &'static str,
    pub parcel: Uuid,
    pub reference: String,
    pub state: String,
    pub cabinet: String,
    pub compartment: String,
    /// By when: the deposit deadline, or when the pickup window closed.
    pub due: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CourierTasks {
    pub courier: String,
    pub items: Vec<CourierTaskView>,
}

#[utoipa::path(get, path = "/api/v1/couriers/{id}/tasks", tag = "couriers", params(("id" = String, Path)),
    responses((status = 200, body = CourierTasks), (status = 404, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
/// A courier's open tasks: parcels to deliver to their reserved compartment, and expired
/// or cancelled parcels still in a compartment to collect. A courier token sees its own.
pub async fn courier_tasks(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let id = CourierId::new(raw.clone()).map_err(|e| ApiError::field("id", e.to_string()))?;
    if caller.role == super::auth::Role::Courier {
        caller.require(Action::ReadCourierFeed)?;
        if caller.courier.as_deref() != Some(id.as_str()) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "a courier sees only its own tasks"));
        }
    } else {
        caller.require(Action::ReadParcels)?;
    }
    let conn = state.store.connection();
    courier::Entity::find_by_id(id.to_string())
        .one(conn)
        .await
        .map_err(db)?
        .filter(|c| caller.sees(&c.tenant_id))
        .ok_or_else(|| ApiError::not_found("courier", &raw))?;
    let open = parcel::Entity::find()
        .filter(parcel::Column::CourierId.eq(id.as_str()))
        .filter(parcel::Column::State.is_in(["assigned", "expired", "cancelled"]))
        .filter(parcel::Column::CompartmentId.is_not_null())
        .order_by_asc(parcel::Column::Id)
        .limit(500)
        .all(conn)
        .await
        .map_err(db)?;
    // A cancelled parcel is a task only while its compartment still holds it.
    let held: std::collections::HashSet<Uuid> = if open.iter().any(|p| p.state == "cancelled") {
        crate::store::entities::compartment::Entity::find()
            .filter(crate::store::entities::compartment::Column::ParcelId.is_in(open.iter().map(|p| p.id)))
            .all(conn)
            .await
            .map_err(db)?
            .into_iter()
            .filter_map(|c| c.parcel_id)
            .collect()
    } else {
        Default::default()
    };
    let items = open
        .into_iter()
        .filter_map(|p| {
            let task = match p.state.as_str() {
                "assigned" => "deliver",
                "expired" => "collect",
                "cancelled" if held.contains(&p.id) => "collect",
                _ => return None,
            };
            Some(CourierTaskView {
                task,
                parcel: p.id,
                reference: p.reference,
                state: p.state,
                cabinet: p.cabinet_id?,
                compartment: p.compartment_id?,
                due: p.deadline.unwrap_or(p.updated_at),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(CourierTasks { courier: id.to_string(), items }))
}

/// `POST /api/v1/couriers/{id}/mqtt-credentials`: issues the courier's MQTT login for its
/// assignment topic (username `courier@{id}`), replacing any earlier one. The secret is in
/// this response only. Who may ask: as for a pass.
#[utoipa::path(post, path = "/api/v1/couriers/{id}/mqtt-credentials", tag = "couriers", params(("id" = String, Path)),
    responses((status = 200, body = crate::gateway::credentials::IssuedCredential),
              (status = 403, body = super::error::ErrorEnvelope), (status = 404, body = super::error::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn courier_mqtt_credentials(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = own_courier(&state, &caller, path.into_inner(), "a courier gets only its own MQTT login").await?;
    let issued =
        state.mqtt_credentials.issue(&state.store, &crate::gateway::credentials::Principal::Courier(id)).await?;
    Ok(HttpResponse::Ok().json(issued))
}
