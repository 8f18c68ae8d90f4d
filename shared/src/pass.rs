//! Courier passes: what a courier shows a cabinet (as a QR code) to open its own
//! compartments.
//!
//! The fleet-server signs a short-lived pass (Ed25519) naming the courier and its
//! tenant; every cabinet holds the server's verifying keys (they arrive with its desired
//! state) and checks the pass offline. A cabinet opens, for a valid pass, only the
//! compartments of parcels assigned to that courier.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::artifact::key_id;
use crate::ids::{CourierId, TenantId};

const CONTEXT: &[u8] = b"lockerfleet courier pass v1\n";

/// What a pass asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassClaims {
    pub courier: CourierId,
    pub tenant: TenantId,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedPass {
    claims: PassClaims,
    key_id: String,
    signature: String,
}

/// Why a pass was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    #[error("the pass is not a courier pass")]
    Malformed,
    #[error("the pass was signed by key {0}, which this cabinet does not trust")]
    UnknownKey(String),
    #[error("the pass signature does not verify")]
    BadSignature,
    #[error("the pass expired at {0}")]
    Expired(DateTime<Utc>),
}

fn signed_bytes(claims: &PassClaims) -> Vec<u8> {
    let mut out = CONTEXT.to_vec();
    out.extend(serde_json::to_vec(claims).expect("claims serialise"));
    out
}

/// Issues a pass: the text a QR code carries.
pub fn issue(claims: PassClaims, key: &SigningKey) -> String {
    let signature = key.sign(&signed_bytes(&claims));
    let pass =
        SignedPass { key_id: key_id(&key.verifying_key()), signature: B64URL.encode(signature.to_bytes()), claims };
    B64URL.encode(serde_json::to_vec(&pass).expect("passes serialise"))
}

/// Checks a pass against the trusted keys and the time; returns its claims.
pub fn verify(pass: &str, trusted: &[VerifyingKey], now: DateTime<Utc>) -> Result<PassClaims, PassError> {
    if pass.len() > 4096 {
        return Err(PassError::Malformed);
    }
    let raw = B64URL.decode(pass.trim()).map_err(|_| PassError::Malformed)?;
    let p: SignedPass = serde_json::from_slice(&raw).map_err(|_| PassError::Malformed)?;
    let key = trusted.iter().find(|k| key_id(k) == p.key_id).ok_or_else(|| PassError::UnknownKey(p.key_id.clone()))?;
    let sig = B64URL.decode(&p.signature).map_err(|_| PassError::Malformed)?;
    let sig = Signature::from_slice(&sig).map_err(|_| PassError::Malformed)?;
    key.verify(&signed_bytes(&p.claims), &sig).map_err(|_| PassError::BadSignature)?;
    if p.claims.expires_at <= now {
        return Err(PassError::Expired(p.claims.expires_at));
    }
    Ok(p.claims)
}

/// A verifying key in the base64 form desired state carries.
pub fn key_to_base64(key: &VerifyingKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
}

/// Parses a verifying key from its base64 form.
pub fn key_from_base64(s: &str) -> Option<VerifyingKey> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    VerifyingKey::from_bytes(&bytes.try_into().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use rand::rngs::OsRng;

    fn claims(hours: i64) -> PassClaims {
        PassClaims {
            courier: CourierId::new("k-1").unwrap(),
            tenant: TenantId::new("acme").unwrap(),
            issued_at: Utc::now(),
            expires_at: Utc::now() + Duration::hours(hours),
        }
    }

    #[test]
    fn a_pass_verifies_with_the_issuing_key_only() {
        let key = SigningKey::generate(&mut OsRng);
        let pass = issue(claims(8), &key);
        assert_eq!(verify(&pass, &[key.verifying_key()], Utc::now()).unwrap().courier.as_str(), "k-1");
        let other = SigningKey::generate(&mut OsRng).verifying_key();
        assert!(matches!(verify(&pass, &[other], Utc::now()), Err(PassError::UnknownKey(_))));
        assert_eq!(key_from_base64(&key_to_base64(&key.verifying_key())), Some(key.verifying_key()));
    }

    #[test]
    fn expired_forged_and_garbled_passes_are_refused() {
        let key = SigningKey::generate(&mut OsRng);
        let trusted = [key.verifying_key()];
        assert!(matches!(verify(&issue(claims(-1), &key), &trusted, Utc::now()), Err(PassError::Expired(_))));
        // Another courier's name on a valid signature.
        let raw = B64URL.decode(issue(claims(8), &key)).unwrap();
        let mut p: SignedPass = serde_json::from_slice(&raw).unwrap();
        p.claims.courier = CourierId::new("k-2").unwrap();
        let forged = B64URL.encode(serde_json::to_vec(&p).unwrap());
        assert_eq!(verify(&forged, &trusted, Utc::now()), Err(PassError::BadSignature));
        assert_eq!(verify("not a pass", &trusted, Utc::now()), Err(PassError::Malformed));
    }
}
