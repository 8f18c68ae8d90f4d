//! The courier-pass signing key: from `couriers.pass_signing_key` when configured
//! (production, so it can live in a secret store), else made once and kept in the
//! database so every replica and every restart signs with the same key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::SigningKey;
use lockerfleet_shared::pass::{self, PassClaims};
use lockerfleet_shared::{CourierId, TenantId};
use zeroize::Zeroizing;

use crate::store::{Store, StoreError};

/// How long a courier pass is valid.
pub const PASS_LIFETIME: Duration = Duration::hours(12);

pub struct PassSigner {
    key: SigningKey,
}

impl std::fmt::Debug for PassSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassSigner")
            .field("key_id", &lockerfleet_shared::artifact::key_id(&self.key.verifying_key()))
            .finish()
    }
}

impl PassSigner {
    pub fn generate() -> Self {
        Self { key: SigningKey::generate(&mut rand::rngs::OsRng) }
    }

    /// Parses a base64 32-byte seed.
    pub fn from_base64(s: &str) -> Result<Self, String> {
        let bytes = Zeroizing::new(B64.decode(s.trim()).map_err(|_| "is not base64".to_owned())?);
        let seed: [u8; 32] =
            bytes.as_slice().try_into().map_err(|_| format!("is {} bytes; it must be 32", bytes.len()))?;
        Ok(Self { key: SigningKey::from_bytes(&seed) })
    }

    /// The configured key, or the one in the database (made on first use).
    pub async fn load(store: &Store, configured: Option<&str>) -> Result<Self, StoreError> {
        if let Some(k) = configured {
            return Ok(Self::from_base64(k).expect("validated in Config::validate"));
        }
        let seed = store
            .server_secret("courier_pass_signing_key", || {
                B64.encode(SigningKey::generate(&mut rand::rngs::OsRng).to_bytes())
            })
            .await?;
        Self::from_base64(&seed).map_err(|e| StoreError::Missing { what: "valid courier pass key", id: e })
    }

    /// The verifying key, as cabinets receive it.
    pub fn public_base64(&self) -> String {
        pass::key_to_base64(&self.key.verifying_key())
    }

    /// A pass for `courier` of `tenant`, valid from `now` for [`PASS_LIFETIME`].
    pub fn issue(&self, courier: CourierId, tenant: TenantId, now: DateTime<Utc>) -> (String, DateTime<Utc>) {
        let expires_at = now + PASS_LIFETIME;
        (pass::issue(PassClaims { courier, tenant, issued_at: now, expires_at }, &self.key), expires_at)
    }
}
