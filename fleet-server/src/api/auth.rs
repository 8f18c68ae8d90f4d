//! API tokens, roles and tenant scoping.
//!
//! Every `/api/v1` request carries `Authorization: Bearer lf_…`. The secret is shown once
//! when the token is made; the database keeps only its sha256. A token has one role and,
//! except for fleet-wide admins, one tenant: every query it makes is confined to that
//! tenant, and another tenant's resources answer 404 exactly as if they did not exist.
//!
//! | role | may |
//! |---|---|
//! | admin | everything in its tenant (fleet admin: every tenant, tenants, tokens) |
//! | dispatcher | parcels, couriers, recipients; read cabinets; answer alarms, open compartments |
//! | engineer | register and read cabinets; read parcels; answer alarms, open compartments |
//! | auditor | read everything in its tenant |
//! | courier | its own assignment feed |

use std::future::Future;
use std::pin::Pin;

use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, dev::Payload, web};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::AppState;
use super::body::Body;
use super::error::ApiError;
use crate::store::entities::api_token;
use crate::store::{Store, StoreError};

/// What a token may do, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Dispatcher,
    Courier,
    Engineer,
    Auditor,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Dispatcher => "dispatcher",
            Role::Courier => "courier",
            Role::Engineer => "engineer",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Role::Admin, Role::Dispatcher, Role::Courier, Role::Engineer, Role::Auditor]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// Things a caller may try to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ManageTenants,
    ManageTokens,
    RegisterCabinets,
    ReadCabinets,
    ManageParcels,
    ReadParcels,
    ManageCouriers,
    ManageRecipients,
    /// A courier's own notification feed (checked against the courier id separately).
    ReadCourierFeed,
    /// Register and upload OTA artifacts, run rollouts (fleet-wide callers only).
    ManageReleases,
    /// Acknowledge the alarms cabinets raise.
    AcknowledgeAlarms,
    /// Send a cabinet a remote command (open a compartment).
    OperateCabinets,
}

impl Action {
    pub const ALL: [Action; 12] = [
        Action::ManageTenants,
        Action::ManageTokens,
        Action::RegisterCabinets,
        Action::ReadCabinets,
        Action::ManageParcels,
        Action::ReadParcels,
        Action::ManageCouriers,
        Action::ManageRecipients,
        Action::ReadCourierFeed,
        Action::ManageReleases,
        Action::AcknowledgeAlarms,
        Action::OperateCabinets,
    ];

    /// The action's name in `GET /api/v1/me`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::ManageTenants => "manage_tenants",
            Action::ManageTokens => "manage_tokens",
            Action::RegisterCabinets => "register_cabinets",
            Action::ReadCabinets => "read_cabinets",
            Action::ManageParcels => "manage_parcels",
            Action::ReadParcels => "read_parcels",
            Action::ManageCouriers => "manage_couriers",
            Action::ManageRecipients => "manage_recipients",
            Action::ReadCourierFeed => "read_courier_feed",
            Action::ManageReleases => "manage_releases",
            Action::AcknowledgeAlarms => "acknowledge_alarms",
            Action::OperateCabinets => "operate_cabinets",
        }
    }
}

/// The permission table in one place.
pub fn allows(role: Role, action: Action) -> bool {
    use Action::*;
    match role {
        Role::Admin => true,
        Role::Dispatcher => matches!(
            action,
            ReadCabinets
                | ManageParcels
                | ReadParcels
                | ManageCouriers
                | ManageRecipients
                | ReadCourierFeed
                | AcknowledgeAlarms
                | OperateCabinets
        ),
        Role::Engineer => matches!(
            action,
            RegisterCabinets | ReadCabinets | ReadParcels | ManageReleases | AcknowledgeAlarms | OperateCabinets
        ),
        Role::Auditor => matches!(action, ReadCabinets | ReadParcels),
        Role::Courier => matches!(action, ReadCourierFeed),
    }
}

/// Who is calling, established from the bearer token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: Uuid,
    pub role: Role,
    /// `None` for a fleet-wide admin.
    pub tenant: Option<String>,
    pub courier: Option<String>,
}

impl Caller {
    /// 403 unless the role allows `action`.
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        if allows(self.role, action) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("a {} token may not do this", self.role.as_str()),
            ))
        }
    }

    /// Whether a resource of `tenant` is visible to this caller.
    pub fn sees(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
    }

    /// The tenant a listing is confined to: the caller's own, or for a fleet admin the one
    /// asked for (if any). Asking for another tenant than one's own is refused.
    pub fn list_scope(&self, requested: Option<&str>) -> Result<Option<String>, ApiError> {
        match (&self.tenant, requested) {
            (None, r) => Ok(r.map(str::to_owned)),
            (Some(own), None) => Ok(Some(own.clone())),
            (Some(own), Some(r)) if r == own => Ok(Some(own.clone())),
            (Some(_), Some(_)) => {
                Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this token is bound to another tenant"))
            }
        }
    }

    /// The tenant a new resource belongs to: the caller's own (a body naming another is
    /// refused); a fleet admin must name one.
    pub fn owning_tenant(&self, requested: Option<&str>) -> Result<String, ApiError> {
        match (&self.tenant, requested) {
            (Some(own), None) => Ok(own.clone()),
            (Some(own), Some(r)) if r == own => Ok(own.clone()),
            (Some(_), Some(_)) => {
                Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this token is bound to another tenant"))
            }
            (None, Some(r)) => Ok(r.to_owned()),
            (None, None) => Err(ApiError::field("tenant", "a fleet admin must name the tenant")),
        }
    }
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", msg)
}

/// sha256 of a token secret, as stored.
pub fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random token secret: `lf_` + 32 random bytes, base64url.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    format!("lf_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Looks a bearer secret up; `None` when unknown, revoked or expired.
pub async fn authenticate(store: &Store, secret: &str, now: DateTime<Utc>) -> Result<Option<Caller>, StoreError> {
    let Some(t) = api_token::Entity::find()
        .filter(api_token::Column::TokenHash.eq(token_hash(secret)))
        .one(store.connection())
        .await?
    else {
        return Ok(None);
    };
    if t.revoked_at.is_some() || t.expires_at.is_some_and(|e| e <= now) {
        return Ok(None);
    }
    let Some(role) = Role::parse(&t.role) else {
        tracing::error!(token = %t.id, role = %t.role, "token with an unknown role");
        return Ok(None);
    };
    Ok(Some(Caller { token_id: t.id, role, tenant: t.tenant_id, courier: t.courier_id }))
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let header =
            req.headers().get(actix_web::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal("application state missing"))?;
            let header = header.ok_or_else(|| unauthorized("missing Authorization: Bearer token"))?;
            let secret =
                header.strip_prefix("Bearer ").ok_or_else(|| unauthorized("Authorization must be `Bearer <token>`"))?;
            match authenticate(&state.store, secret.trim(), crate::store::now()).await? {
                Some(caller) => Ok(caller),
                None => {
                    state.metrics.auth_failures.inc();
                    Err(unauthorized("token is unknown, revoked or expired"))
                }
            }
        })
    }
}

/// Stores a token; returns its id.
pub async fn insert_token(
    store: &Store,
    secret: &str,
    name: &str,
    role: Role,
    tenant: Option<String>,
    courier: Option<String>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    api_token::Entity::insert(api_token::ActiveModel {
        id: Set(id),
        token_hash: Set(token_hash(secret)),
        name: Set(name.to_owned()),
        role: Set(role.as_str().to_owned()),
        tenant_id: Set(tenant),
        courier_id: Set(courier),
        created_at: Set(crate::store::now()),
        expires_at: Set(expires_at),
        revoked_at: Set(None),
    })
    .exec(store.connection())
    .await?;
    Ok(id)
}

/// At start: make sure a fleet admin can log in. A configured bootstrap secret is
/// registered (once); with none configured and no fleet admin yet, one is generated and
/// written to `token_file` (mode 0600) so the operator can read it exactly once.
pub async fn bootstrap(
    store: &Store,
    configured: Option<&str>,
    token_file: &std::path::Path,
) -> Result<(), anyhow::Error> {
    if let Some(secret) = configured {
        let existing = api_token::Entity::find()
            .filter(api_token::Column::TokenHash.eq(token_hash(secret)))
            .one(store.connection())
            .await?;
        match existing {
            None => match insert_token(store, secret, "bootstrap (configuration)", Role::Admin, None, None, None).await
            {
                Ok(_) => tracing::info!("bootstrap admin token from the configuration registered"),
                // Another replica starting at the same moment registered it first.
                Err(e) => {
                    let now_there = api_token::Entity::find()
                        .filter(api_token::Column::TokenHash.eq(token_hash(secret)))
                        .one(store.connection())
                        .await?;
                    if now_there.is_none() {
                        return Err(e.into());
                    }
                }
            },
            // A revoked bootstrap token stays revoked: it is never silently brought back.
            Some(t) if t.revoked_at.is_some() => {
                tracing::warn!("the configured auth.bootstrap_token was revoked; it is not registered again");
            }
            Some(_) => {}
        }
        return Ok(());
    }
    let admins = api_token::Entity::find()
        .filter(api_token::Column::Role.eq("admin"))
        .filter(api_token::Column::TenantId.is_null())
        .filter(api_token::Column::RevokedAt.is_null())
        .one(store.connection())
        .await?;
    if admins.is_some() {
        return Ok(());
    }
    let secret = new_secret();
    write_secret_file(token_file, &secret)?;
    insert_token(store, &secret, "bootstrap (generated)", Role::Admin, None, None, None).await?;
    tracing::warn!(file = %token_file.display(), "no admin token existed: generated one and wrote it to the file (mode 0600); read it, store it safely, delete the file");
    Ok(())
}

fn write_secret_file(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

// ─────────────────────────────── routes ────────────────────────────────

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub courier: Option<String>,
    /// Lifetime in hours; none means until revoked.
    #[serde(default)]
    pub expires_in_hours: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub id: Uuid,
    /// The secret: shown this once, never again.
    pub token: String,
    pub role: Role,
    pub tenant: Option<String>,
    pub courier: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 403, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn create_token(
    state: web::Data<AppState>,
    caller: Caller,
    body: Body<NewToken>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ManageTokens)?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::field("name", "must be 1-200 characters"));
    }
    // A tenant admin makes tokens for its own tenant only; only a fleet admin may make a
    // fleet-wide (tenant-less) token, and only of the admin role.
    let tenant = match (&caller.tenant, body.tenant.as_deref()) {
        (None, None) if body.role == Role::Admin => None,
        (None, None) => return Err(ApiError::field("tenant", "only an admin token may be fleet-wide")),
        _ => Some(caller.owning_tenant(body.tenant.as_deref())?),
    };
    if let Some(t) = &tenant
        && state.store.tenant(t).await?.is_none()
    {
        return Err(ApiError::field("tenant", format!("tenant {t:?} does not exist")));
    }
    let courier = match (body.role, &body.courier) {
        (Role::Courier, Some(c)) => {
            let c =
                lockerfleet_shared::CourierId::new(c.clone()).map_err(|e| ApiError::field("courier", e.to_string()))?;
            Some(c.to_string())
        }
        (Role::Courier, None) => return Err(ApiError::field("courier", "a courier token names its courier")),
        (_, Some(_)) => return Err(ApiError::field("courier", "only courier tokens name a courier")),
        (_, None) => None,
    };
    let expires_at = body.expires_in_hours.map(|h| crate::store::now() + Duration::hours(i64::from(h)));
    let secret = new_secret();
    let id = insert_token(&state.store, &secret, name, body.role, tenant.clone(), courier.clone(), expires_at).await?;
    tracing::info!(token = %id, role = body.role.as_str(), tenant = ?tenant, by = %caller.token_id, "API token created");
    Ok(HttpResponse::Created().json(CreatedToken { id, token: secret, role: body.role, tenant, courier, expires_at }))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = Uuid, Path, description = "token id")),
    responses((status = 204), (status = 404, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn revoke_token(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ManageTokens)?;
    let id = path.into_inner();
    let token = api_token::Entity::find_by_id(id)
        .one(state.store.connection())
        .await
        .map_err(StoreError::from)?
        .filter(|t| {
            t.tenant_id.as_deref().is_none_or(|t| caller.sees(t)) && (caller.tenant.is_none() || t.tenant_id.is_some())
        })
        .ok_or_else(|| ApiError::not_found("token", &id.to_string()))?;
    let mut active: api_token::ActiveModel = token.into();
    active.revoked_at = Set(Some(crate::store::now()));
    api_token::Entity::update(active).exec(state.store.connection()).await.map_err(StoreError::from)?;
    Ok(HttpResponse::NoContent().finish())
}

/// Who the caller is and what it may do: the console shows only these.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    pub token: Uuid,
    /// The token's name, as given when it was made.
    pub name: String,
    pub role: Role,
    /// `null` for a fleet-wide admin.
    pub tenant: Option<String>,
    pub courier: Option<String>,
    /// Every action this token may take (`read_cabinets`, `manage_releases`…).
    /// `manage_releases` is listed only for fleet-wide callers, since rollouts run
    /// fleet-wide.
    pub actions: Vec<&'static str>,
}

#[utoipa::path(get, path = "/api/v1/me", tag = "tokens",
    responses((status = 200, body = WhoAmI), (status = 401, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn me(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let name = api_token::Entity::find_by_id(caller.token_id)
        .one(state.store.connection())
        .await
        .map_err(StoreError::from)?
        .map(|t| t.name)
        .unwrap_or_default();
    let actions = Action::ALL
        .into_iter()
        .filter(|a| allows(caller.role, *a))
        .filter(|a| *a != Action::ManageReleases || caller.tenant.is_none())
        .map(|a| a.as_str())
        .collect();
    Ok(HttpResponse::Ok().json(WhoAmI {
        token: caller.token_id,
        name,
        role: caller.role,
        tenant: caller.tenant,
        courier: caller.courier,
        actions,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permission_table_holds() {
        use Action::*;
        for a in Action::ALL {
            assert!(allows(Role::Admin, a));
        }
        assert!(!allows(Role::Auditor, ManageParcels));
        assert!(allows(Role::Auditor, ReadParcels));
        assert!(!allows(Role::Courier, ReadCabinets));
        assert!(!allows(Role::Engineer, ManageParcels));
        assert!(allows(Role::Engineer, RegisterCabinets));
        assert!(!allows(Role::Dispatcher, RegisterCabinets));
        assert!(!allows(Role::Dispatcher, ManageTokens));
        assert!(allows(Role::Dispatcher, AcknowledgeAlarms) && allows(Role::Engineer, OperateCabinets));
        assert!(!allows(Role::Auditor, AcknowledgeAlarms) && !allows(Role::Courier, OperateCabinets));
        let names: std::collections::HashSet<_> = Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(names.len(), Action::ALL.len(), "every action has its own name");
    }

    #[test]
    fn tenant_scoping_never_widens() {
        let bound = Caller { token_id: Uuid::nil(), role: Role::Dispatcher, tenant: Some("a".into()), courier: None };
        assert_eq!(bound.list_scope(None).unwrap(), Some("a".into()));
        assert!(bound.list_scope(Some("b")).is_err());
        assert_eq!(bound.owning_tenant(None).unwrap(), "a");
        assert!(bound.owning_tenant(Some("b")).is_err());
        assert!(bound.sees("a") && !bound.sees("b"));
        let fleet = Caller { tenant: None, role: Role::Admin, ..bound };
        assert_eq!(fleet.list_scope(None).unwrap(), None);
        assert!(fleet.owning_tenant(None).is_err());
        assert!(fleet.sees("b"));
    }

    #[test]
    fn secrets_are_random_and_stored_hashed() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("lf_") && a.len() > 40);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
    }
}
