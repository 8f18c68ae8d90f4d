//! OTA artifacts: a signed manifest is registered, then its file uploaded and checked
//! against it; cabinets download the file from `/ota/{sha256}` with `Range` (resume),
//! `ETag` (the sha256) and immutable caching.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use futures_util::StreamExt;
use lockerfleet_shared::artifact::{ArtifactManifest, DigestCheck, SignedManifest, Version};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use uuid::Uuid;

use super::AppState;
use super::auth::{Action, Caller};
use super::body::Body;
use super::error::ApiError;
use crate::store::StoreError;
use crate::store::entities::artifact;

/// An artifact as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ArtifactView {
    pub id: Uuid,
    pub name: String,
    pub version: String,
    pub hardware: Vec<String>,
    pub size: u64,
    pub sha256: String,
    pub security_floor: String,
    pub release_notes: String,
    pub key_id: String,
    /// The file has been uploaded and matches the manifest.
    pub uploaded: bool,
    /// Where cabinets download it.
    pub url: String,
    pub created_at: DateTime<Utc>,
}

fn db(e: sea_orm::DbErr) -> ApiError {
    StoreError::from(e).into()
}

/// Base URL cabinets download from.
fn public_base(state: &AppState, req: &HttpRequest) -> String {
    match &state.config.artifacts.public_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    }
}

fn view(m: artifact::Model, base: &str) -> Result<ArtifactView, ApiError> {
    let signed: SignedManifest = serde_json::from_str(&m.manifest)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt_manifest", e.to_string()))?;
    let man = signed.manifest;
    Ok(ArtifactView {
        id: m.id,
        url: format!("{base}/ota/{}", m.sha256),
        name: man.name,
        version: man.version,
        hardware: man.hardware,
        size: man.size,
        sha256: m.sha256,
        security_floor: man.security_floor,
        release_notes: man.release_notes,
        key_id: signed.key_id,
        uploaded: m.uploaded,
        created_at: m.created_at,
    })
}

/// Releases are fleet-wide: only fleet-level callers (no tenant) manage them.
fn require_release_manager(caller: &Caller) -> Result<(), ApiError> {
    caller.require(Action::ManageReleases)?;
    if caller.tenant.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "releases are managed fleet-wide, not per tenant",
        ));
    }
    Ok(())
}

/// What registering a release checks before anything is stored: the signature under one
/// of the server's `trusted` keys, then each manifest field (the error names it). Pure,
/// so the fuzz target `api_bodies` runs it on every manifest it decodes.
pub fn check_release<'a>(
    signed: &'a SignedManifest,
    trusted: &[VerifyingKey],
    max_bytes: u64,
) -> Result<&'a ArtifactManifest, ApiError> {
    let man = signed.verify(trusted).map_err(|e| ApiError::field("signature", e.to_string()))?;
    man.version.parse::<Version>().map_err(|e| ApiError::field("manifest.version", e.to_string()))?;
    man.security_floor.parse::<Version>().map_err(|e| ApiError::field("manifest.security_floor", e.to_string()))?;
    if man.name.trim().is_empty() || man.name.len() > 100 {
        return Err(ApiError::field("manifest.name", "must be 1-100 characters"));
    }
    if man.hardware.is_empty() {
        return Err(ApiError::field("manifest.hardware", "names at least one hardware model"));
    }
    if man.sha256.len() != 64 || !man.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::field("manifest.sha256", "is 64 hex digits"));
    }
    if man.size == 0 || man.size > max_bytes {
        return Err(ApiError::field(
            "manifest.size",
            format!("must be between 1 and {max_bytes} bytes (artifacts.max_bytes)"),
        ));
    }
    Ok(man)
}

#[utoipa::path(post, path = "/api/v1/artifacts", tag = "ota", request_body(content = Object, description = "A signed manifest (`fleet-server artifact sign`)"),
    responses((status = 201, body = ArtifactView), (status = 409, body = super::error::ErrorEnvelope), (status = 422, body = super::error::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn register(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: Body<SignedManifest>,
) -> Result<HttpResponse, ApiError> {
    require_release_manager(&caller)?;
    let signed = body.into_inner();
    let keys = state.config.artifacts.keys().map_err(|e| ApiError::field("artifacts.trusted_keys", e))?;
    if keys.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_trusted_keys",
            "the server trusts no release key yet: add the release public key to artifacts.trusted_keys",
        ));
    }
    let man = check_release(&signed, &keys, state.config.artifacts.max_bytes)?.clone();
    let sha = man.sha256.to_ascii_lowercase();
    let conn = state.store.connection();
    if artifact::Entity::find().filter(artifact::Column::Sha256.eq(&sha)).one(conn).await.map_err(db)?.is_some() {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", format!("an artifact with sha256 {sha} exists")));
    }
    let row = artifact::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(man.name.clone()),
        version: Set(man.version.clone()),
        sha256: Set(sha),
        size: Set(i64::try_from(man.size).unwrap_or(i64::MAX)),
        manifest: Set(serde_json::to_string(&signed).expect("manifest serialises")),
        uploaded: Set(false),
        created_at: Set(crate::store::now()),
    }
    .insert(conn)
    .await
    .map_err(db)?;
    state.metrics.artifacts.with_label_values(&["registered"]).inc();
    Ok(HttpResponse::Created().json(view(row, &public_base(&state, &req))?))
}

#[utoipa::path(put, path = "/api/v1/artifacts/{id}/content", tag = "ota", params(("id" = Uuid, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = ArtifactView), (status = 422, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
/// The artifact's bytes, streamed to disk and checked against the signed manifest
/// (size and sha256) before it can be offered to any cabinet.
pub async fn upload(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<Uuid>,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    require_release_manager(&caller)?;
    let id = path.into_inner();
    let conn = state.store.connection();
    let row = artifact::Entity::find_by_id(id)
        .one(conn)
        .await
        .map_err(db)?
        .ok_or_else(|| ApiError::not_found("artifact", &id.to_string()))?;
    let signed: SignedManifest = serde_json::from_str(&row.manifest)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt_manifest", e.to_string()))?;
    let dir = &state.config.artifacts.dir;
    let io = |e: std::io::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string());
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    let part = dir.join(format!("{}.{}.part", row.sha256, Uuid::new_v4()));
    let result = async {
        let mut file = tokio::fs::File::create(&part).await.map_err(io)?;
        let mut check = DigestCheck::new();
        let mut written: u64 = 0;
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.to_string()))?;
            written += chunk.len() as u64;
            if written > signed.manifest.size {
                return Err(ApiError::field(
                    "content",
                    format!("is longer than the manifest's {} bytes", signed.manifest.size),
                ));
            }
            check.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        check.finish(&signed.manifest).map_err(|e| ApiError::field("content", e.to_string()))?;
        file.sync_all().await.map_err(io)?;
        tokio::fs::rename(&part, dir.join(&row.sha256)).await.map_err(io)?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&part).await;
        state.metrics.artifacts.with_label_values(&["refused"]).inc();
        return Err(e);
    }
    let mut active: artifact::ActiveModel = row.into();
    active.uploaded = Set(true);
    let row = active.update(conn).await.map_err(db)?;
    state.metrics.artifacts.with_label_values(&["uploaded"]).inc();
    Ok(HttpResponse::Ok().json(view(row, &public_base(&state, &req))?))
}

#[utoipa::path(get, path = "/api/v1/artifacts", tag = "ota", responses((status = 200, body = [ArtifactView])), security(("bearer" = [])))]
pub async fn list(state: web::Data<AppState>, caller: Caller, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadCabinets)?;
    let rows = artifact::Entity::find()
        .order_by_desc(artifact::Column::CreatedAt)
        .all(state.store.connection())
        .await
        .map_err(db)?;
    let base = public_base(&state, &req);
    let items: Result<Vec<ArtifactView>, ApiError> = rows.into_iter().map(|r| view(r, &base)).collect();
    Ok(HttpResponse::Ok().json(items?))
}

#[utoipa::path(get, path = "/api/v1/artifacts/{id}", tag = "ota", params(("id" = Uuid, Path)),
    responses((status = 200, body = ArtifactView), (status = 404, body = super::error::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadCabinets)?;
    let id = path.into_inner();
    let row = artifact::Entity::find_by_id(id)
        .one(state.store.connection())
        .await
        .map_err(db)?
        .ok_or_else(|| ApiError::not_found("artifact", &id.to_string()))?;
    Ok(HttpResponse::Ok().json(view(row, &public_base(&state, &req))?))
}

/// A `Range` header that no byte of the file satisfies (answered with 416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// A byte range of a file of `size` bytes, from a `Range` header; `None` for a header
/// we serve in full instead (absent, several ranges, another unit), `Err` for one
/// that cannot be satisfied.
pub fn parse_range(value: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| Unsatisfiable)?;
            if n == 0 {
                return Err(Unsatisfiable);
            }
            (size.saturating_sub(n), size.checked_sub(1).ok_or(Unsatisfiable)?)
        }
        (s, "") => (s.parse().map_err(|_| Unsatisfiable)?, size.checked_sub(1).ok_or(Unsatisfiable)?),
        (s, e) => {
            let (s, e): (u64, u64) = (s.parse().map_err(|_| Unsatisfiable)?, e.parse().map_err(|_| Unsatisfiable)?);
            (s, e.min(size.saturating_sub(1)))
        }
    };
    if start >= size || start > end {
        return Err(Unsatisfiable);
    }
    Ok(Some((start, end)))
}

/// `GET /ota/{sha256}`: the artifact file. Public like a package mirror: the file is
/// useless without a signature the cabinet trusts, and names nothing secret.
pub async fn download(state: web::Data<AppState>, req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let sha = path.into_inner().to_ascii_lowercase();
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return HttpResponse::NotFound().finish();
    }
    let uploaded = artifact::Entity::find()
        .filter(artifact::Column::Sha256.eq(&sha))
        .filter(artifact::Column::Uploaded.eq(true))
        .one(state.store.connection())
        .await;
    let Ok(Some(row)) = uploaded else { return HttpResponse::NotFound().finish() };
    let Ok(mut file) = tokio::fs::File::open(state.config.artifacts.dir.join(&row.sha256)).await else {
        return HttpResponse::NotFound().finish();
    };
    let size = u64::try_from(row.size).unwrap_or(0);
    let etag = format!("\"{sha}\"");
    let header_str = |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    if header_str(header::IF_NONE_MATCH).is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
        return HttpResponse::NotModified().insert_header((header::ETAG, etag)).finish();
    }
    // A resumed download whose validator no longer matches gets the whole file.
    let range_header = match header_str(header::IF_RANGE) {
        Some(v) if v.trim() != etag => None,
        _ => header_str(header::RANGE),
    };
    let (status, start, end) = match parse_range(range_header, size) {
        Ok(None) => (StatusCode::OK, 0, size.saturating_sub(1)),
        Ok(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
        Err(Unsatisfiable) => {
            return HttpResponse::RangeNotSatisfiable()
                .insert_header((header::CONTENT_RANGE, format!("bytes */{size}")))
                .finish();
        }
    };
    if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return HttpResponse::InternalServerError().finish();
    }
    let length = if size == 0 { 0 } else { end - start + 1 };
    let served = state.metrics.ota_bytes_served.clone();
    let stream = futures_util::stream::unfold((file, length), move |(mut file, left)| {
        let served = served.clone();
        async move {
            if left == 0 {
                return None;
            }
            let mut buf = vec![0u8; left.min(64 * 1024) as usize];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    served.inc_by(n as u64);
                    Some((Ok::<_, std::io::Error>(web::Bytes::from(buf)), (file, left - n as u64)))
                }
                Err(e) => Some((Err(e), (file, 0))),
            }
        }
    });
    state
        .metrics
        .artifacts
        .with_label_values(&[if status == StatusCode::OK { "served" } else { "served_range" }])
        .inc();
    let mut res = HttpResponse::build(status);
    res.insert_header((header::ETAG, etag))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::CONTENT_TYPE, "application/octet-stream"))
        .no_chunking(length);
    if status == StatusCode::PARTIAL_CONTENT {
        res.insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")));
    }
    res.streaming(stream)
}

#[cfg(test)]
mod tests {
    use super::{Unsatisfiable, parse_range};

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Some((0, 9))));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=50-500"), 100), Ok(Some((50, 99))), "the end is clamped");
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Ok(None), "several ranges: the whole file");
        assert_eq!(parse_range(Some("items=0-1"), 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=9-3"), 100), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=x-3"), 100), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=-0"), 100), Err(Unsatisfiable));
    }
}
