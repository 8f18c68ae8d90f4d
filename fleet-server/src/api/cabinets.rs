//! Tenants and cabinets: registration and the operator's view of each cabinet.

use std::collections::HashSet;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use lockerfleet_shared::envelope::{CabinetSettings, CompartmentSize};
use lockerfleet_shared::seal::CabinetPublicKey;
use lockerfleet_shared::{CabinetId, CompartmentId, TenantId};
use sea_orm::EntityTrait;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::{Action, Caller};
use super::body::Body;
use super::error::ApiError;
use crate::actors::presence::{Registered, Snapshot};
use crate::config::BrokerMode;
use crate::gateway::credentials::{IssuedCredential, Principal};
use crate::store::CabinetRecord;
use crate::store::entities::{cabinet, compartment};

/// Most compartments one cabinet may declare.
const MAX_COMPARTMENTS: usize = 500;
/// Largest page of a listing.
const MAX_PAGE: u64 = 500;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", request_body = NewTenant,
    responses((status = 201, body = TenantView), (status = 409, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn create_tenant(
    state: web::Data<AppState>,
    caller: Caller,
    body: Body<NewTenant>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ManageTenants)?;
    if caller.tenant.is_some() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "only a fleet admin creates tenants"));
    }
    let id = TenantId::new(body.id.clone()).map_err(|e| ApiError::field("id", e.to_string()))?;
    let name = check_name("name", &body.name)?;
    let t = state.store.create_tenant(id.as_str(), name).await?;
    Ok(HttpResponse::Created().json(TenantView { id: t.id, name: t.name, created_at: t.created_at }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCompartment {
    pub id: String,
    /// `s`, `m`, `l` or `xl`.
    #[schema(value_type = String, example = "m")]
    pub size: CompartmentSize,
    #[serde(default)]
    pub low: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCabinet {
    pub id: String,
    pub tenant: String,
    #[serde(default)]
    pub name: Option<String>,
    /// The cabinet's X25519 template key, base64 (made by the cabinet at provisioning).
    pub public_key: String,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub location: Option<Location>,
    pub compartments: Vec<NewCompartment>,
    /// Labels for targeting rollouts (`indoor`, `pilot-berlin`): up to 20, each 1-40 of
    /// `a-z 0-9 - _ :`.
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompartmentView {
    pub id: String,
    pub size: String,
    pub low: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CabinetView {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub public_key: String,
    pub key_fingerprint: String,
    pub timezone: String,
    pub location: Option<Location>,
    pub online: bool,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub firmware: Option<String>,
    pub hardware: Option<String>,
    pub slot: Option<String>,
    pub registered_at: DateTime<Utc>,
    /// Remote settings the operator changed (door timings, lockout policy).
    #[schema(value_type = Object)]
    pub settings: CabinetSettings,
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compartments: Option<Vec<CompartmentView>>,
    /// Desired-state versions sent and applied (only on the single-cabinet view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired: Option<DesiredView>,
    /// The cabinet's MQTT login: only in the registration response, the one time its
    /// secret is shown (a new one: `POST /api/v1/cabinets/{id}/mqtt-credentials`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_credentials: Option<IssuedCredential>,
}

/// Which desired-state versions the server has sent and the cabinet has confirmed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DesiredView {
    pub parcels_version: i64,
    pub parcels_applied: i64,
    pub templates_version: i64,
    pub templates_applied: i64,
}

impl CabinetView {
    fn from_model(c: cabinet::Model, compartments: Option<Vec<compartment::Model>>) -> Self {
        let location = match (c.latitude, c.longitude) {
            (Some(lat), Some(lon)) => Some(Location { lat, lon }),
            _ => None,
        };
        Self {
            id: c.id,
            tenant: c.tenant_id,
            name: c.name,
            public_key: c.public_key,
            key_fingerprint: c.key_fingerprint,
            timezone: c.timezone,
            location,
            online: c.online,
            last_seen_at: c.last_seen_at,
            firmware: c.firmware,
            hardware: c.hardware,
            slot: c.slot,
            registered_at: c.registered_at,
            settings: c.settings.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default(),
            tags: c.tags.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default(),
            compartments: compartments
                .map(|cs| cs.into_iter().map(|k| CompartmentView { id: k.id, size: k.size, low: k.low }).collect()),
            desired: None,
            mqtt_credentials: None,
        }
    }

    fn from_record(r: CabinetRecord) -> Self {
        Self::from_model(r.cabinet, Some(r.compartments))
    }
}

fn check_name<'a>(field: &'static str, name: &'a str) -> Result<&'a str, ApiError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.len() > 200 {
        return Err(ApiError::field(field, "must be 1-200 characters"));
    }
    Ok(trimmed)
}

/// Tags, checked and without duplicates; the error names the bad one.
pub fn check_tags(tags: &[String]) -> Result<Vec<String>, ApiError> {
    if tags.len() > 20 {
        return Err(ApiError::field("tags", "at most 20"));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for (i, t) in tags.iter().enumerate() {
        let ok = (1..=40).contains(&t.len())
            && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b':'));
        if !ok {
            return Err(ApiError::field(format!("tags[{i}]"), "is 1-40 of a-z, 0-9, -, _ and :"));
        }
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    Ok(out)
}

fn check_timezone(tz: &str) -> Result<(), ApiError> {
    let ok = !tz.is_empty()
        && tz.len() <= 64
        && tz.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
    if ok { Ok(()) } else { Err(ApiError::field("timezone", "must be an IANA zone name such as Europe/Berlin")) }
}

/// Turns a request into rows, or names the first bad field. Pure (no database), so the
/// fuzz target `api_bodies` runs it on every `NewCabinet` it decodes.
pub fn validate(body: &NewCabinet) -> Result<(cabinet::Model, Vec<compartment::Model>), ApiError> {
    let id = CabinetId::new(body.id.clone()).map_err(|e| ApiError::field("id", e.to_string()))?;
    let tenant = TenantId::new(body.tenant.clone()).map_err(|e| ApiError::field("tenant", e.to_string()))?;
    let name = match &body.name {
        Some(n) => check_name("name", n)?.to_owned(),
        None => id.to_string(),
    };
    let key =
        CabinetPublicKey::from_base64(&body.public_key).map_err(|e| ApiError::field("public_key", e.to_string()))?;
    // A key HPKE cannot seal to (all zeros, or another low-order point) would make every
    // template for this cabinet fail later; refuse it now.
    let probe = lockerfleet_shared::seal::TemplateBinding {
        cabinet: id.clone(),
        parcel: lockerfleet_shared::ParcelId::generate(),
        expires_at: Utc::now() + chrono::Duration::minutes(1),
        model: lockerfleet_shared::seal::ModelRef { id: "probe".into(), sha256: String::new() },
    };
    lockerfleet_shared::seal::seal(&key, probe, &lockerfleet_shared::seal::FaceTemplate::new(vec![0.0]))
        .map_err(|e| ApiError::field("public_key", format!("is not a usable X25519 key: {e}")))?;
    let timezone = body.timezone.clone().unwrap_or_else(|| "UTC".into());
    check_timezone(&timezone)?;
    if let Some(loc) = body.location {
        if !(-90.0..=90.0).contains(&loc.lat) {
            return Err(ApiError::field("location.lat", "must be between -90 and 90"));
        }
        if !(-180.0..=180.0).contains(&loc.lon) {
            return Err(ApiError::field("location.lon", "must be between -180 and 180"));
        }
    }
    if body.compartments.is_empty() || body.compartments.len() > MAX_COMPARTMENTS {
        return Err(ApiError::field("compartments", format!("a cabinet has 1-{MAX_COMPARTMENTS} compartments")));
    }
    let mut seen = HashSet::new();
    let mut compartments = Vec::with_capacity(body.compartments.len());
    for (i, c) in body.compartments.iter().enumerate() {
        let cid = CompartmentId::new(c.id.clone())
            .map_err(|e| ApiError::field(format!("compartments[{i}].id"), e.to_string()))?;
        if !seen.insert(cid.clone()) {
            return Err(ApiError::field(format!("compartments[{i}].id"), format!("{cid} appears twice")));
        }
        compartments.push(compartment::Model {
            cabinet_id: id.to_string(),
            id: cid.to_string(),
            size: c.size.as_str().to_owned(),
            low: c.low,
            parcel_id: None,
            reserved_until: None,
        });
    }
    let cab = cabinet::Model {
        id: id.to_string(),
        tenant_id: tenant.to_string(),
        name,
        public_key: key.to_base64(),
        key_fingerprint: key.fingerprint(),
        timezone,
        latitude: body.location.map(|l| l.lat),
        longitude: body.location.map(|l| l.lon),
        firmware: None,
        hardware: None,
        slot: None,
        online: false,
        session: None,
        last_seen_at: None,
        registered_at: crate::store::now(),
        settings: None,
        tags: Some(serde_json::to_string(&check_tags(&body.tags)?).expect("tags serialise")),
        presence_changed_at: None,
    };
    Ok((cab, compartments))
}

#[utoipa::path(post, path = "/api/v1/cabinets", tag = "cabinets", request_body = NewCabinet,
    responses((status = 201, body = CabinetView), (status = 409, body = super::error::ErrorEnvelope),
              (status = 422, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn register(
    state: web::Data<AppState>,
    caller: Caller,
    body: Body<NewCabinet>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::RegisterCabinets)?;
    let (cab, compartments) = validate(&body)?;
    caller.owning_tenant(Some(&cab.tenant_id))?;
    let mqtt = &state.config.mqtt;
    if mqtt.mode == BrokerMode::Embedded {
        // Keep admission inside the embedded broker's connection limit (see broker.rs).
        let limit = (mqtt.max_connections - mqtt.reserved_connections) as u64;
        if state.store.count_cabinets().await? >= limit {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "broker_capacity",
                format!(
                    "the embedded broker admits {limit} cabinets (mqtt.max_connections minus mqtt.reserved_connections); raise the limit or use an external broker"
                ),
            ));
        }
    }
    let record = state.store.register_cabinet(cab, compartments).await?;
    let id = CabinetId::new(record.cabinet.id.clone()).map_err(ApiError::internal)?;
    // Issued after the row exists; should this fail, the operator asks for a rotation.
    let issued = state.mqtt_credentials.issue(&state.store, &Principal::Cabinet(id.clone())).await?;
    state.presence.do_send(Registered(id.clone(), record.cabinet.tenant_id.clone()));
    tracing::info!(cabinet = %id, tenant = %record.cabinet.tenant_id, "cabinet registered");
    // Rollouts that take cabinets registered later hear of this one.
    if let Err(e) = crate::service::rollouts::joined(&state.service(), &record.cabinet).await {
        tracing::error!(cabinet = %id, error = %e, "could not add the cabinet to matching rollouts");
    }
    let mut view = CabinetView::from_record(record);
    view.mqtt_credentials = Some(issued);
    Ok(HttpResponse::Created().insert_header(("Location", format!("/api/v1/cabinets/{id}"))).json(view))
}

#[utoipa::path(post, path = "/api/v1/cabinets/{id}/mqtt-credentials", tag = "cabinets", params(("id" = String, Path)),
    responses((status = 200, body = IssuedCredential), (status = 404, body = super::error::ErrorEnvelope)),
    security(("bearer" = [])))]
/// Issues the cabinet a new MQTT login; the old secret stops working at once (a cabinet
/// connected with it stays connected until it reconnects). The secret is in this
/// response only.
pub async fn mqtt_credentials(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::RegisterCabinets)?;
    let raw = path.into_inner();
    let id = CabinetId::new(raw.clone()).map_err(|e| ApiError::field("id", e.to_string()))?;
    state
        .store
        .cabinet(id.as_str())
        .await?
        .filter(|r| caller.sees(&r.cabinet.tenant_id))
        .ok_or_else(|| ApiError::not_found("cabinet", &raw))?;
    let issued = state.mqtt_credentials.issue(&state.store, &Principal::Cabinet(id.clone())).await?;
    tracing::info!(cabinet = %id, "cabinet MQTT credentials rotated");
    Ok(HttpResponse::Ok().json(issued))
}

/// The cabinet `raw` names, if the caller may see it (another tenant's answers 404).
async fn visible_cabinet(state: &AppState, caller: &Caller, raw: &str) -> Result<(CabinetId, CabinetRecord), ApiError> {
    let id = CabinetId::new(raw.to_owned()).map_err(|e| ApiError::field("id", e.to_string()))?;
    let record = state
        .store
        .cabinet(id.as_str())
        .await?
        .filter(|r| caller.sees(&r.cabinet.tenant_id))
        .ok_or_else(|| ApiError::not_found("cabinet", raw))?;
    Ok((id, record))
}

/// The latest thing the database knows about a cabinet's presence, from any replica: a
/// sighting, or a flip of `online` (a will or a silence carries no sighting).
fn last_stored_word(c: &cabinet::Model) -> Option<DateTime<Utc>> {
    c.last_seen_at.max(c.presence_changed_at)
}

/// The latest thing this replica knows: a sighting, or seeing it go offline.
fn live_word(l: &crate::actors::presence::LiveView) -> Option<DateTime<Utc>> {
    l.last_seen.max(l.went_offline.map(|(_, at)| at))
}

#[utoipa::path(get, path = "/api/v1/cabinets/{id}", tag = "cabinets", params(("id" = String, Path, description = "cabinet id")),
    responses((status = 200, body = CabinetView), (status = 404, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadCabinets)?;
    let (id, record) = visible_cabinet(&state, &caller, &path.into_inner()).await?;
    let stored_word = last_stored_word(&record.cabinet);
    let mut view = CabinetView::from_record(record);
    let d = crate::store::entities::cabinet_desired::Entity::find_by_id(id.to_string())
        .one(state.store.connection())
        .await
        .map_err(crate::store::StoreError::from)?;
    view.desired = Some(match d {
        Some(d) => DesiredView {
            parcels_version: d.parcels_version,
            parcels_applied: d.parcels_applied,
            templates_version: d.templates_version,
            templates_applied: d.templates_applied,
        },
        None => DesiredView { parcels_version: 0, parcels_applied: 0, templates_version: 0, templates_applied: 0 },
    });
    // The presence actor is ahead of the database by at most one flush interval.
    // With several replicas this one may have seen less than the database holds: its
    // view counts only when it is at least as fresh.
    if let Ok(Some(live)) = state.presence.send(Snapshot(id)).await
        && live_word(&live) >= stored_word
    {
        view.online = live.online;
        view.last_seen_at = live.last_seen.or(view.last_seen_at);
        view.firmware = live.firmware.or(view.firmware);
        view.hardware = live.hardware.or(view.hardware);
        view.slot = live.slot.or(view.slot);
    }
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub tenant: Option<String>,
    /// `online` or `offline`.
    pub state: Option<String>,
    /// Only cabinets carrying this tag (`region:berlin`).
    pub tag: Option<String>,
    /// Only cabinets running this firmware version.
    pub firmware: Option<String>,
    /// Case-insensitive part of the id or the name.
    pub q: Option<String>,
    /// Cursor: the last id of the previous page.
    pub after: Option<String>,
    pub limit: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// How many match the filters in all (every page).
    pub total: u64,
}

#[utoipa::path(get, path = "/api/v1/cabinets", tag = "cabinets", params(ListQuery),
    responses((status = 200, body = Page<CabinetView>)), security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadCabinets)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::field("limit", format!("must be 1-{MAX_PAGE}")));
    }
    if let Some(t) = &q.tenant {
        TenantId::new(t.clone()).map_err(|e| ApiError::field("tenant", e.to_string()))?;
    }
    let online = match q.state.as_deref() {
        None => None,
        Some("online") => Some(true),
        Some("offline") => Some(false),
        Some(other) => return Err(ApiError::field("state", format!("{other:?} is not one of online, offline"))),
    };
    if let Some(t) = &q.tag {
        check_tags(std::slice::from_ref(t)).map_err(|_| ApiError::field("tag", "is 1-40 of a-z, 0-9, -, _ and :"))?;
    }
    if q.q.as_ref().is_some_and(|t| t.chars().count() > 100) {
        return Err(ApiError::field("q", "at most 100 characters"));
    }
    let filter = crate::store::fleet_view::CabinetFilter {
        tenant: caller.list_scope(q.tenant.as_deref())?,
        online,
        tag: q.tag.clone(),
        firmware: q.firmware.clone(),
        text: q.q.as_ref().map(|t| t.trim().to_owned()),
    };
    let total = state.store.count_matching(&filter).await?;
    let rows = state.store.find_cabinets(&filter, q.after.as_deref(), limit + 1).await?;
    let more = rows.len() as u64 > limit;
    let items: Vec<CabinetView> =
        rows.into_iter().take(limit as usize).map(|c| CabinetView::from_model(c, None)).collect();
    let next = if more { items.last().map(|c| c.id.clone()) } else { None };
    Ok(HttpResponse::Ok().json(Page { items, next, total }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Only events of this kind: `deposit`, `pickup`, `collected`, `failed_match`, `alarm`.
    pub kind: Option<String>,
    /// At most this many (default 100, at most 500), newest first.
    pub limit: Option<u64>,
}

/// One event a cabinet reported, as stored.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CabinetEventView {
    pub id: uuid::Uuid,
    /// The cabinet's own sequence number.
    pub seq: i64,
    /// When it happened, by the cabinet's clock.
    pub at: DateTime<Utc>,
    /// When the server stored it.
    pub received_at: DateTime<Utc>,
    pub kind: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

const EVENT_KINDS: [&str; 5] = ["deposit", "pickup", "collected", "failed_match", "alarm"];

#[utoipa::path(get, path = "/api/v1/cabinets/{id}/events", tag = "cabinets", params(("id" = String, Path), EventQuery),
    responses((status = 200, body = [CabinetEventView]), (status = 404, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn events(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<EventQuery>,
) -> Result<HttpResponse, ApiError> {
    use crate::store::entities::cabinet_event;
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
    caller.require(Action::ReadCabinets)?;
    let (id, _) = visible_cabinet(&state, &caller, &path.into_inner()).await?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::field("limit", format!("must be between 1 and {MAX_PAGE}")));
    }
    let mut q = cabinet_event::Entity::find().filter(cabinet_event::Column::CabinetId.eq(id.as_str()));
    if let Some(kind) = &query.kind {
        if !EVENT_KINDS.contains(&kind.as_str()) {
            return Err(ApiError::field("kind", format!("is one of {}", EVENT_KINDS.join(", "))));
        }
        q = q.filter(cabinet_event::Column::Kind.eq(kind.as_str()));
    }
    let rows = q
        .order_by_desc(cabinet_event::Column::Seq)
        .limit(limit)
        .all(state.store.connection())
        .await
        .map_err(crate::store::StoreError::from)?;
    let items: Vec<CabinetEventView> = rows
        .into_iter()
        .map(|e| {
            // The stored body is the event's own JSON: `{"type": "alarm", "code": …}`.
            let detail = serde_json::from_str(&e.body).unwrap_or(serde_json::Value::Null);
            CabinetEventView { id: e.id, seq: e.seq, at: e.at, received_at: e.received_at, kind: e.kind, detail }
        })
        .collect();
    Ok(HttpResponse::Ok().json(items))
}

#[utoipa::path(put, path = "/api/v1/cabinets/{id}/settings", tag = "cabinets", params(("id" = String, Path)),
    request_body(content = Object, description = "CabinetSettings: door_left_open_s, unlock_window_s, max_failed_attempts, attempt_window_s, lockout_s"),
    responses((status = 200, body = CabinetView), (status = 404, body = super::error::ErrorEnvelope),
              (status = 422, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
/// Replaces the cabinet's remote settings; they reach the cabinet with its next desired
/// state (pushed now), and `desired.parcels_applied` tells when it has applied them.
pub async fn put_settings(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: Body<CabinetSettings>,
) -> Result<HttpResponse, ApiError> {
    use sea_orm::{ActiveModelTrait, IntoActiveModel, Set};
    caller.require(Action::RegisterCabinets)?;
    let raw = path.into_inner();
    let id = CabinetId::new(raw.clone()).map_err(|e| ApiError::field("id", e.to_string()))?;
    let settings = body.into_inner();
    settings.check().map_err(|(field, reason)| ApiError::field(field, reason))?;
    let txn = state.store.begin_write().await.map_err(crate::store::StoreError::from)?;
    let cab = cabinet::Entity::find_by_id(id.to_string())
        .one(&txn)
        .await
        .map_err(crate::store::StoreError::from)?
        .filter(|c| caller.sees(&c.tenant_id))
        .ok_or_else(|| ApiError::not_found("cabinet", &raw))?;
    let tenant = cab.tenant_id.clone();
    let mut active = cab.into_active_model();
    active.settings = Set(Some(serde_json::to_string(&settings).expect("settings serialise")));
    let updated = active.update(&txn).await.map_err(crate::store::StoreError::from)?;
    crate::service::parcels::bump_desired(&txn, &tenant, id.as_str(), false, crate::store::now())
        .await
        .map_err(crate::store::StoreError::from)?;
    txn.commit().await.map_err(crate::store::StoreError::from)?;
    tracing::info!(cabinet = %id, ?settings, "cabinet settings changed");
    Ok(HttpResponse::Ok().json(CabinetView::from_model(updated, None)))
}

#[utoipa::path(put, path = "/api/v1/cabinets/{id}/tags", tag = "cabinets", params(("id" = String, Path)),
    request_body = Vec<String>, responses((status = 200, body = CabinetView), (status = 404, body = super::error::ErrorEnvelope),
              (status = 422, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
/// Replaces the cabinet's tags.
pub async fn put_tags(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: Body<Vec<String>>,
) -> Result<HttpResponse, ApiError> {
    use sea_orm::{ActiveModelTrait, IntoActiveModel, Set};
    caller.require(Action::RegisterCabinets)?;
    let raw = path.into_inner();
    let tags = check_tags(&body)?;
    let cab = cabinet::Entity::find_by_id(raw.clone())
        .one(state.store.connection())
        .await
        .map_err(crate::store::StoreError::from)?
        .filter(|c| caller.sees(&c.tenant_id))
        .ok_or_else(|| ApiError::not_found("cabinet", &raw))?;
    let mut active = cab.into_active_model();
    active.tags = Set(Some(serde_json::to_string(&tags).expect("tags serialise")));
    let updated = active.update(state.store.connection()).await.map_err(crate::store::StoreError::from)?;
    Ok(HttpResponse::Ok().json(CabinetView::from_model(updated, None)))
}

/// A compartment as the console's grid shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompartmentStatus {
    pub id: String,
    pub size: String,
    pub low: bool,
    /// The parcel reserved for or held in it, with its state.
    pub parcel: Option<CompartmentParcel>,
    /// `open`, `closed`, or `unknown` before this replica heard a heartbeat.
    pub door: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompartmentParcel {
    pub id: uuid::Uuid,
    pub reference: String,
    pub state: String,
}

/// Compartments with their doors and parcels, and how many face templates the cabinet
/// holds (a count: templates themselves never leave their sealed store).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CabinetStatus {
    pub cabinet: String,
    pub online: bool,
    /// When the door states were reported (the last heartbeat); absent when unknown.
    pub doors_reported_at: Option<DateTime<Utc>>,
    pub templates_held: u64,
    /// Why it is offline, when this server saw it go (absent while online or unknown).
    pub offline: Option<OfflineView>,
    /// MQTT sessions it started in the last 24 hours: many means it keeps reconnecting.
    pub sessions_24h: u64,
    pub compartments: Vec<CompartmentStatus>,
}

/// How a cabinet went offline.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OfflineView {
    /// `will` (its connection dropped and the broker published its last will) or
    /// `silent` (nothing heard for `presence.stale_after_s`).
    pub cause: &'static str,
    pub since: DateTime<Utc>,
}

#[utoipa::path(get, path = "/api/v1/cabinets/{id}/compartments", tag = "cabinets", params(("id" = String, Path)),
    responses((status = 200, body = CabinetStatus), (status = 404, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
/// The compartment grid of one cabinet: door and occupancy of each, templates held.
pub async fn compartments(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    use crate::store::entities::{cabinet_session, parcel, sealed_template};
    use sea_orm::{ColumnTrait, PaginatorTrait, QueryFilter};
    caller.require(Action::ReadCabinets)?;
    let (id, record) = visible_cabinet(&state, &caller, &path.into_inner()).await?;
    let db = state.store.connection();
    let held: Vec<uuid::Uuid> = record.compartments.iter().filter_map(|c| c.parcel_id).collect();
    let parcels: std::collections::HashMap<uuid::Uuid, parcel::Model> = if held.is_empty() {
        Default::default()
    } else {
        parcel::Entity::find()
            .filter(parcel::Column::Id.is_in(held))
            .all(db)
            .await
            .map_err(crate::store::StoreError::from)?
            .into_iter()
            .map(|p| (p.id, p))
            .collect()
    };
    let templates_held = sealed_template::Entity::find()
        .filter(sealed_template::Column::CabinetId.eq(id.as_str()))
        .count(db)
        .await
        .map_err(crate::store::StoreError::from)?;
    let sessions_24h = cabinet_session::Entity::find()
        .filter(cabinet_session::Column::CabinetId.eq(id.as_str()))
        .filter(cabinet_session::Column::StartedAt.gt(crate::store::now() - chrono::Duration::hours(24)))
        .count(db)
        .await
        .map_err(crate::store::StoreError::from)?;
    let live = state.presence.send(Snapshot(id.clone())).await.ok().flatten();
    let doors = live.as_ref().and_then(|l| l.doors.clone());
    let offline = live.as_ref().and_then(|l| l.went_offline).map(|(cause, since)| OfflineView { cause, since });
    let compartments = record
        .compartments
        .into_iter()
        .map(|c| CompartmentStatus {
            door: match &doors {
                Some(d) if d.open.contains(&c.id) => "open",
                Some(_) => "closed",
                None => "unknown",
            },
            parcel: c.parcel_id.and_then(|p| parcels.get(&p)).map(|p| CompartmentParcel {
                id: p.id,
                reference: p.reference.clone(),
                state: p.state.clone(),
            }),
            id: c.id,
            size: c.size,
            low: c.low,
        })
        .collect();
    Ok(HttpResponse::Ok().json(CabinetStatus {
        cabinet: id.to_string(),
        online: live.as_ref().map_or(record.cabinet.online, |l| l.online),
        doors_reported_at: doors.map(|d| d.at),
        templates_held,
        offline,
        sessions_24h,
        compartments,
    }))
}

/// What a remote command became.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CommandSent {
    /// The command's id, as the cabinet logs it.
    pub command: uuid::Uuid,
    pub cabinet: String,
    pub compartment: String,
}

#[utoipa::path(post, path = "/api/v1/cabinets/{id}/compartments/{compartment}/open", tag = "cabinets",
    params(("id" = String, Path), ("compartment" = String, Path)),
    responses((status = 202, body = CommandSent), (status = 404, body = super::error::ErrorEnvelope),
              (status = 409, description = "the cabinet is offline (`cabinet_offline`)", body = super::error::ErrorEnvelope)),
    security(("bearer" = [])))]
/// Opens one compartment remotely: an `open_compartment` command to the cabinet over
/// MQTT, delivered by the outbox (broker-confirmed). Refused while the cabinet is
/// offline, so a door never opens hours later when nobody expects it; the cabinet itself
/// also ignores an open command older than two minutes.
pub async fn open_compartment(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    use lockerfleet_shared::envelope::{Command, CommandAction, DownBody};
    caller.require(Action::OperateCabinets)?;
    let (raw, raw_compartment) = path.into_inner();
    let (id, record) = visible_cabinet(&state, &caller, &raw).await?;
    let compartment =
        CompartmentId::new(raw_compartment.clone()).map_err(|e| ApiError::field("compartment", e.to_string()))?;
    if !record.compartments.iter().any(|c| c.id == compartment.as_str()) {
        return Err(ApiError::not_found("compartment", &raw_compartment));
    }
    // This replica's view counts only when it is at least as fresh as the database's
    // (another replica may have heard from the cabinet, or its will, since), as in the
    // cabinet view.
    let live = state.presence.send(Snapshot(id.clone())).await.ok().flatten();
    let online = match live {
        Some(l) if live_word(&l) >= last_stored_word(&record.cabinet) => l.online,
        _ => record.cabinet.online,
    };
    if !online {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "cabinet_offline",
            format!("cabinet {id} is offline; a remote open is only sent to a connected cabinet"),
        ));
    }
    let command = uuid::Uuid::now_v7();
    let at = crate::store::now();
    let body = DownBody::Cmd(Command {
        id: command,
        action: CommandAction::OpenCompartment { compartment: compartment.clone() },
    });
    let seq = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    let payload = String::from_utf8(lockerfleet_shared::Envelope::new(id.clone(), seq, body).encode())
        .map_err(ApiError::internal)?;
    crate::service::outbox::enqueue(
        state.store.connection(),
        &record.cabinet.tenant_id,
        crate::service::outbox::CHANNEL_MQTT,
        &state.config.topics().cabinet_down(&id),
        payload,
        at,
    )
    .await
    .map_err(crate::store::StoreError::from)?;
    state.outbox_kick();
    tracing::warn!(cabinet = %id, %compartment, %command, by = %caller.token_id, "remote open of a compartment sent");
    Ok(HttpResponse::Accepted().json(CommandSent {
        command,
        cabinet: id.to_string(),
        compartment: compartment.to_string(),
    }))
}
