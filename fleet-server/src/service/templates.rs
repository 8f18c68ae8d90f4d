//! Face templates on the server side, in both custody modes.
//!
//! * **recipient-held** (default): the recipient's app seals the template for the one
//!   cabinet (see `lockerfleet_shared::sdk`); [`accept_sealed`] checks that the blob is
//!   bound to this parcel, its cabinet and that cabinet's key, and stores ciphertext the
//!   server cannot open.
//! * **operator-held**: [`enrol`] keeps the enrolment template under envelope encryption
//!   (a fresh data key per recipient, wrapped by the key-encryption key from
//!   `templates.kek`); when a parcel becomes ready the server unwraps it in memory, seals
//!   it for the cabinet and zeroises the plaintext ([`seal_for_ready_parcel`]).
//!
//! Either way a sealed template exists only while its parcel waits: pickup, expiry,
//! cancellation and erasure delete it and bump the cabinet's template version, and the
//! cabinet confirms by reporting that version as applied.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use chrono::{DateTime, Utc};
use lockerfleet_shared::sdk::TEMPLATE_GRACE;
use lockerfleet_shared::seal::{self, CabinetPublicKey, FaceTemplate, ModelRef, SealedTemplate, TemplateBinding};
use lockerfleet_shared::{CabinetId, ParcelId};
use rand::RngCore;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::Ctx;
use super::parcels::{ServiceError, bump_desired};
use crate::store::entities::{cabinet, cabinet_desired, parcel, recipient, sealed_template, tenant};
use crate::store::{StoreError, now};

/// The key-encryption key for operator-held templates. Zeroised on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Kek([u8; 32]);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(redacted)")
    }
}

impl Kek {
    /// From the base64 configuration value.
    pub fn from_base64(s: &str) -> Result<Self, String> {
        let bytes = Zeroizing::new(B64.decode(s.trim()).map_err(|_| "is not base64".to_owned())?);
        let arr: [u8; 32] =
            bytes.as_slice().try_into().map_err(|_| format!("is {} bytes; it must be 32", bytes.len()))?;
        Ok(Self(arr))
    }
}

/// Largest sealed template accepted (a 512-float template seals to about 3.2 KB).
pub const MAX_SEALED_BYTES: usize = 16 * 1024;

/// Why a template operation failed (beyond the parcel errors).
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{0}")]
    Refused(String),
    #[error("operator-held templates need `templates.kek` in the configuration")]
    NoKek,
    #[error("the stored template could not be decrypted: wrong key-encryption key or damaged data")]
    Undecryptable,
}

/// An operator-held template at rest: the template under a per-recipient data key, the
/// data key wrapped by the KEK. The recipient id and model are authenticated data, so a
/// blob cannot be moved to another recipient or model.
#[derive(Debug, Serialize, Deserialize)]
struct AtRest {
    wrapped_key: String,
    key_nonce: String,
    nonce: String,
    ciphertext: String,
}

fn aad(recipient: Uuid, model: &ModelRef) -> Vec<u8> {
    format!("lockerfleet operator template v1\n{recipient}\n{}\n{}", model.id, model.sha256).into_bytes()
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

fn cipher(key: &[u8]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new_from_slice(key).expect("keys are 32 bytes")
}

fn nonce(bytes: &[u8]) -> Result<Nonce, TemplateError> {
    Nonce::try_from(bytes).map_err(|_| TemplateError::Undecryptable)
}

/// Encrypts a template for storage.
pub fn encrypt_at_rest(kek: &Kek, recipient: Uuid, model: &ModelRef, t: &FaceTemplate) -> String {
    let dek = Zeroizing::new(random::<32>());
    let plain = Zeroizing::new(t.values().iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    let ad = aad(recipient, model);
    let (n1, n2) = (random::<12>(), random::<12>());
    let ct = cipher(dek.as_ref())
        .encrypt(&Nonce::from(n1), Payload { msg: &plain, aad: &ad })
        .expect("in-memory encryption of a bounded message cannot fail");
    let wrapped = cipher(&kek.0)
        .encrypt(&Nonce::from(n2), Payload { msg: dek.as_ref(), aad: &ad })
        .expect("in-memory encryption of a bounded message cannot fail");
    serde_json::to_string(&AtRest {
        wrapped_key: B64.encode(wrapped),
        key_nonce: B64.encode(n2),
        nonce: B64.encode(n1),
        ciphertext: B64.encode(ct),
    })
    .expect("plain strings serialise")
}

/// Decrypts a stored template into zeroised memory.
pub fn decrypt_at_rest(
    kek: &Kek,
    recipient: Uuid,
    model: &ModelRef,
    stored: &str,
) -> Result<FaceTemplate, TemplateError> {
    let at: AtRest = serde_json::from_str(stored).map_err(|_| TemplateError::Undecryptable)?;
    let d = |s: &str| B64.decode(s).map_err(|_| TemplateError::Undecryptable);
    let ad = aad(recipient, model);
    let dek = Zeroizing::new(
        cipher(&kek.0)
            .decrypt(&nonce(&d(&at.key_nonce)?)?, Payload { msg: &d(&at.wrapped_key)?, aad: &ad })
            .map_err(|_| TemplateError::Undecryptable)?,
    );
    if dek.len() != 32 {
        return Err(TemplateError::Undecryptable);
    }
    let plain = Zeroizing::new(
        cipher(&dek)
            .decrypt(&nonce(&d(&at.nonce)?)?, Payload { msg: &d(&at.ciphertext)?, aad: &ad })
            .map_err(|_| TemplateError::Undecryptable)?,
    );
    if !plain.len().is_multiple_of(4) {
        return Err(TemplateError::Undecryptable);
    }
    Ok(FaceTemplate::new(plain.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()))
}

fn refuse(msg: impl Into<String>) -> ServiceError {
    ServiceError::Template(TemplateError::Refused(msg.into()))
}

async fn store_sealed<C: ConnectionTrait>(
    db: &C,
    p: &parcel::Model,
    cabinet: &str,
    blob: &SealedTemplate,
) -> Result<(), DbErr> {
    sealed_template::Entity::delete_many().filter(sealed_template::Column::ParcelId.eq(p.id)).exec(db).await?;
    sealed_template::Entity::insert(sealed_template::ActiveModel {
        parcel_id: Set(p.id),
        cabinet_id: Set(cabinet.to_owned()),
        blob: Set(serde_json::to_string(blob).expect("sealed templates serialise")),
        created_at: Set(now()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Recipient-held custody: accepts a blob the recipient's app sealed for the parcel's
/// cabinet. Everything the server can check without opening it is checked.
pub async fn accept_sealed(
    ctx: &Ctx,
    tenant: Option<&str>,
    parcel_id: Uuid,
    blob: SealedTemplate,
) -> Result<(), ServiceError> {
    if serde_json::to_vec(&blob).map(|b| b.len()).unwrap_or(usize::MAX) > MAX_SEALED_BYTES {
        return Err(refuse(format!("a sealed template is at most {MAX_SEALED_BYTES} bytes")));
    }
    let txn = ctx.store.begin_write().await?;
    // Lock the parcel so a pickup committing meanwhile cannot leave this template behind.
    let p = parcel::Entity::find_by_id(parcel_id)
        .lock_exclusive()
        .one(&txn)
        .await?
        .filter(|p| tenant.is_none_or(|t| p.tenant_id == t))
        .ok_or_else(|| ServiceError::NotFound { what: "parcel", id: parcel_id.to_string() })?;
    let t = tenant::Entity::find_by_id(p.tenant_id.clone()).one(&txn).await?.ok_or(ServiceError::Conflict)?;
    if t.custody != "recipient" {
        return Err(refuse("this tenant keeps templates operator-held; enrol the recipient instead"));
    }
    if p.state != "ready" && p.state != "deposited" {
        return Err(refuse(format!(
            "the parcel is {}; templates are accepted only while it waits for pickup",
            p.state
        )));
    }
    let cab_id = p.cabinet_id.clone().ok_or_else(|| refuse("the parcel has no cabinet"))?;
    let cab = cabinet::Entity::find_by_id(cab_id.clone()).one(&txn).await?.ok_or(ServiceError::Conflict)?;
    let b = &blob.binding;
    if b.cabinet.as_str() != cab.id {
        return Err(refuse(format!("the template is bound to cabinet {}, the parcel is in {}", b.cabinet, cab.id)));
    }
    if b.parcel.0 != p.id {
        return Err(refuse(format!("the template is bound to parcel {}, not {}", b.parcel, p.id)));
    }
    if blob.key_fingerprint != cab.key_fingerprint {
        return Err(refuse("the template was sealed to another key than the cabinet's"));
    }
    let at = now();
    let latest = p.deadline.unwrap_or(at) + TEMPLATE_GRACE * 2;
    if b.expires_at <= at || b.expires_at > latest {
        return Err(refuse(format!("the template must expire after now and no later than {latest}")));
    }
    store_sealed(&txn, &p, &cab.id, &blob).await?;
    bump_desired(&txn, &p.tenant_id, &cab.id, true, at).await?;
    txn.commit().await?;
    Ok(())
}

/// Operator-held custody: stores a recipient's enrolment template encrypted, with the
/// consent that allows it.
pub async fn enrol(
    ctx: &Ctx,
    tenant: Option<&str>,
    recipient_id: Uuid,
    template: &FaceTemplate,
    model: &ModelRef,
    consent_at: DateTime<Utc>,
) -> Result<(), ServiceError> {
    let kek = ctx.kek.as_ref().ok_or(ServiceError::Template(TemplateError::NoKek))?;
    let db = ctx.store.connection();
    let r = recipient::Entity::find_by_id(recipient_id)
        .one(db)
        .await?
        .filter(|r| tenant.is_none_or(|t| r.tenant_id == t))
        .ok_or_else(|| ServiceError::NotFound { what: "recipient", id: recipient_id.to_string() })?;
    if r.custody != "operator" {
        return Err(refuse("this recipient's template is recipient-held; the app seals it for each parcel"));
    }
    if template.values().is_empty() || template.values().len() > 4096 {
        return Err(refuse("a template has 1-4096 values"));
    }
    let stored = encrypt_at_rest(kek, r.id, model, template);
    let mut active: recipient::ActiveModel = r.into();
    active.template_ciphertext = Set(Some(stored));
    active.template_model_id = Set(Some(model.id.clone()));
    active.template_model_sha256 = Set(Some(model.sha256.clone()));
    active.consent_at = Set(Some(consent_at));
    recipient::Entity::update(active).exec(db).await?;
    Ok(())
}

/// Called in the transaction that makes a parcel ready: seals the recipient's
/// operator-held template for the parcel's cabinet. Returns whether one was sealed.
pub async fn seal_for_ready_parcel<C: ConnectionTrait>(
    db: &C,
    ctx: &Ctx,
    p: &parcel::Model,
) -> Result<bool, ServiceError> {
    let Some(rid) = p.recipient_id else { return Ok(false) };
    // Locked, so an erasure running at the same time waits for this seal or prevents it.
    let Some(r) = recipient::Entity::find_by_id(rid).lock_exclusive().one(db).await? else { return Ok(false) };
    if r.tenant_id != p.tenant_id || r.custody != "operator" {
        return Ok(false);
    }
    let custody = tenant::Entity::find_by_id(p.tenant_id.clone()).one(db).await?.map(|t| t.custody);
    if custody.as_deref() != Some("operator") {
        return Ok(false);
    }
    let (Some(stored), Some(model_id), Some(model_sha)) =
        (&r.template_ciphertext, &r.template_model_id, &r.template_model_sha256)
    else {
        return Ok(false);
    };
    let Some(kek) = ctx.kek.as_ref() else {
        tracing::error!(recipient = %r.id, "an operator-held template exists but templates.kek is not configured");
        return Ok(false);
    };
    let (Some(cab_id), Some(deadline)) = (&p.cabinet_id, p.deadline) else { return Ok(false) };
    let Some(cab) = cabinet::Entity::find_by_id(cab_id.clone()).one(db).await? else { return Ok(false) };
    let model = ModelRef { id: model_id.clone(), sha256: model_sha.clone() };
    let template = decrypt_at_rest(kek, r.id, &model, stored).map_err(ServiceError::Template)?;
    let key = CabinetPublicKey::from_base64(&cab.public_key).map_err(|e| refuse(e.to_string()))?;
    let binding = TemplateBinding {
        cabinet: CabinetId::new(cab.id.clone()).map_err(|e| refuse(e.to_string()))?,
        parcel: ParcelId(p.id),
        expires_at: deadline + TEMPLATE_GRACE,
        model,
    };
    let sealed = seal::seal(&key, binding, &template).map_err(|e| refuse(e.to_string()))?;
    drop(template);
    store_sealed(db, p, &cab.id, &sealed).await?;
    ctx.metrics.templates.with_label_values(&["sealed"]).inc();
    Ok(true)
}

/// What erasure did at each cabinet: the template version that confirms it.
#[derive(Debug, Clone, Serialize)]
pub struct ErasureReceipt {
    pub cabinet: String,
    /// The erasure is confirmed when the cabinet reports this version (or later) applied.
    pub templates_version: i64,
}

/// Erases a recipient: the operator-held template, every sealed copy queued for a
/// cabinet (revoked there by a new template version), the link from their parcels, and
/// the recipient record itself.
pub async fn erase(ctx: &Ctx, tenant: Option<&str>, recipient_id: Uuid) -> Result<Vec<ErasureReceipt>, ServiceError> {
    let txn = ctx.store.begin_write().await?;
    let r = recipient::Entity::find_by_id(recipient_id)
        .lock_exclusive()
        .one(&txn)
        .await?
        .filter(|r| tenant.is_none_or(|t| r.tenant_id == t))
        .ok_or_else(|| ServiceError::NotFound { what: "recipient", id: recipient_id.to_string() })?;
    let parcels = parcel::Entity::find().filter(parcel::Column::RecipientId.eq(r.id)).all(&txn).await?;
    let ids: Vec<Uuid> = parcels.iter().map(|p| p.id).collect();
    let sealed =
        sealed_template::Entity::find().filter(sealed_template::Column::ParcelId.is_in(ids.clone())).all(&txn).await?;
    let mut cabinets: Vec<String> = sealed.iter().map(|s| s.cabinet_id.clone()).collect();
    cabinets.sort();
    cabinets.dedup();
    let removed = sealed_template::Entity::delete_many()
        .filter(sealed_template::Column::ParcelId.is_in(ids.clone()))
        .exec(&txn)
        .await?;
    ctx.metrics.templates.with_label_values(&["revoked"]).inc_by(removed.rows_affected);
    let at = now();
    let mut receipts = Vec::new();
    for cab in &cabinets {
        bump_desired(&txn, &r.tenant_id, cab, true, at).await?;
        let v =
            cabinet_desired::Entity::find_by_id(cab.clone()).one(&txn).await?.map(|d| d.templates_version).unwrap_or(0);
        receipts.push(ErasureReceipt { cabinet: cab.clone(), templates_version: v });
    }
    parcel::Entity::update_many()
        .col_expr(parcel::Column::RecipientId, Expr::value(Option::<Uuid>::None))
        .filter(parcel::Column::RecipientId.eq(r.id))
        .exec(&txn)
        .await?;
    recipient::Entity::delete_by_id(r.id).exec(&txn).await?;
    txn.commit().await?;
    tracing::info!(recipient = %recipient_id, cabinets = receipts.len(), "recipient erased");
    Ok(receipts)
}

/// Whether a cabinet has applied at least `version` of its templates.
pub async fn templates_applied(ctx: &Ctx, cabinet: &str) -> Result<(i64, i64), StoreError> {
    Ok(cabinet_desired::Entity::find_by_id(cabinet.to_owned())
        .one(ctx.store.connection())
        .await?
        .map(|d| (d.templates_version, d.templates_applied))
        .unwrap_or((0, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelRef {
        ModelRef { id: "fr_feature".into(), sha256: "ab".repeat(32) }
    }

    #[test]
    fn templates_at_rest_round_trip_only_with_the_right_key_recipient_and_model() {
        let kek = Kek(random());
        let id = Uuid::now_v7();
        let t = FaceTemplate::new((0..512).map(|i| i as f32 / 512.0).collect());
        let stored = encrypt_at_rest(&kek, id, &model(), &t);
        assert!(!stored.contains("0.5"));
        assert_eq!(decrypt_at_rest(&kek, id, &model(), &stored).unwrap(), t);
        assert!(decrypt_at_rest(&Kek(random()), id, &model(), &stored).is_err());
        assert!(decrypt_at_rest(&kek, Uuid::now_v7(), &model(), &stored).is_err());
        let other = ModelRef { id: "other".into(), sha256: "cd".repeat(32) };
        assert!(decrypt_at_rest(&kek, id, &other, &stored).is_err());
    }

    #[test]
    fn keks_parse_strictly() {
        assert!(Kek::from_base64(&B64.encode([7u8; 32])).is_ok());
        assert!(Kek::from_base64(&B64.encode([7u8; 16])).unwrap_err().contains("16 bytes"));
        assert!(Kek::from_base64("***").is_err());
    }
}
