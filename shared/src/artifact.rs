//! Signed OTA artifact manifests (Ed25519).
//!
//! A release is a file plus a [`SignedManifest`]: name, version, the hardware it runs on,
//! size, sha256 and the security floor, signed by a release key. A cabinet installs an
//! artifact only when the signature verifies under a key it trusts **and** the bytes it
//! downloaded match the manifest's size and hash. Neither check is optional.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Domain separation: a signature over a manifest can never be replayed as anything else.
const SIGNING_CONTEXT: &[u8] = b"lockerfleet artifact manifest v1\n";

/// What an artifact is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactManifest {
    pub name: String,
    /// Semantic version, `major.minor.patch`.
    pub version: String,
    /// Hardware models this build runs on.
    pub hardware: Vec<String>,
    pub size: u64,
    /// Hex sha256 of the artifact file.
    pub sha256: String,
    /// Cabinets already at or above this version refuse to go below it.
    pub security_floor: String,
    pub created_at: DateTime<Utc>,
    /// What changed, for the operator (signed with the rest).
    #[serde(default)]
    pub release_notes: String,
}

impl ArtifactManifest {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut out = SIGNING_CONTEXT.to_vec();
        // Field order is fixed by the struct, so the bytes are canonical.
        out.extend(serde_json::to_vec(self).expect("manifest always serialises"));
        out
    }
}

/// A manifest with its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    pub manifest: ArtifactManifest,
    /// [`key_id`] of the signing key, so a cabinet can hold several trusted keys.
    pub key_id: String,
    /// Ed25519 signature, base64.
    pub signature: String,
}

/// Why an artifact or its manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    #[error("manifest is signed by key {0}, which this cabinet does not trust")]
    UnknownKey(String),
    #[error("signature is not 64 bytes of base64")]
    MalformedSignature,
    #[error("signature does not verify: the manifest was altered or signed by another key")]
    BadSignature,
    #[error("artifact is {found} bytes; the manifest says {expected}")]
    SizeMismatch { expected: u64, found: u64 },
    #[error("artifact sha256 is {found}; the manifest says {expected}")]
    HashMismatch { expected: String, found: String },
    #[error("version {version} is below this cabinet's security floor {floor}")]
    Downgrade { version: String, floor: String },
    #[error("artifact is built for {built_for:?}, not for hardware {hardware}")]
    WrongHardware { hardware: String, built_for: Vec<String> },
    #[error("`{0}` is not a version (major.minor.patch)")]
    BadVersion(String),
}

/// A `major.minor.patch` version, ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64, pub u64, pub u64);

impl std::str::FromStr for Version {
    type Err = ArtifactError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ArtifactError::BadVersion(s.to_owned());
        let core = s.split(['-', '+']).next().unwrap_or(s);
        let mut parts = core.split('.').map(|p| p.parse::<u64>().map_err(|_| bad()));
        let v = Version(parts.next().ok_or_else(bad)??, parts.next().ok_or_else(bad)??, parts.next().ok_or_else(bad)??);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl ArtifactManifest {
    /// Whether a cabinet of `hardware` whose anti-rollback floor is `floor` may install
    /// this release (the signature is checked separately, first).
    pub fn installable_on(&self, hardware: &str, floor: Version) -> Result<(), ArtifactError> {
        let version: Version = self.version.parse()?;
        let _: Version = self.security_floor.parse()?;
        if version < floor {
            return Err(ArtifactError::Downgrade { version: self.version.clone(), floor: floor.to_string() });
        }
        if !self.hardware.iter().any(|h| h == hardware) {
            return Err(ArtifactError::WrongHardware {
                hardware: hardware.to_owned(),
                built_for: self.hardware.clone(),
            });
        }
        Ok(())
    }
}

/// Decodes a configured list of release public keys (base64 Ed25519); the error names
/// the entry (`{what}[i]`).
pub fn parse_keys(what: &str, keys: &[String]) -> Result<Vec<VerifyingKey>, String> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let raw = B64.decode(k.trim()).map_err(|_| format!("{what}[{i}] is not base64"))?;
            let bytes: [u8; 32] = raw.try_into().map_err(|_| format!("{what}[{i}] is not 32 bytes"))?;
            VerifyingKey::from_bytes(&bytes).map_err(|e| format!("{what}[{i}]: {e}"))
        })
        .collect()
}

/// Short id of a verifying key: hex of the first 8 bytes of sha256(key).
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// Signs a manifest.
pub fn sign(manifest: ArtifactManifest, key: &SigningKey) -> SignedManifest {
    let signature = key.sign(&manifest.signed_bytes());
    SignedManifest { key_id: key_id(&key.verifying_key()), signature: B64.encode(signature.to_bytes()), manifest }
}

impl SignedManifest {
    /// Verifies the signature under one of `trusted` and returns the manifest.
    pub fn verify(&self, trusted: &[VerifyingKey]) -> Result<&ArtifactManifest, ArtifactError> {
        let key = trusted
            .iter()
            .find(|k| key_id(k) == self.key_id)
            .ok_or_else(|| ArtifactError::UnknownKey(self.key_id.clone()))?;
        let raw = B64.decode(&self.signature).map_err(|_| ArtifactError::MalformedSignature)?;
        let sig = Signature::from_slice(&raw).map_err(|_| ArtifactError::MalformedSignature)?;
        key.verify(&self.manifest.signed_bytes(), &sig).map_err(|_| ArtifactError::BadSignature)?;
        Ok(&self.manifest)
    }
}

/// Incremental check of downloaded bytes against a manifest, for files too large to hold.
#[derive(Debug, Clone)]
pub struct DigestCheck {
    hasher: Sha256,
    size: u64,
}

impl Default for DigestCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl DigestCheck {
    pub fn new() -> Self {
        Self { hasher: Sha256::new(), size: 0 }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
    }

    /// Compares what was fed in with the manifest's size and hash.
    pub fn finish(self, manifest: &ArtifactManifest) -> Result<(), ArtifactError> {
        if self.size != manifest.size {
            return Err(ArtifactError::SizeMismatch { expected: manifest.size, found: self.size });
        }
        let found = hex::encode(self.hasher.finalize());
        if !found.eq_ignore_ascii_case(&manifest.sha256) {
            return Err(ArtifactError::HashMismatch { expected: manifest.sha256.clone(), found });
        }
        Ok(())
    }
}

/// Checks a whole artifact held in memory.
pub fn check_bytes(manifest: &ArtifactManifest, bytes: &[u8]) -> Result<(), ArtifactError> {
    let mut d = DigestCheck::new();
    d.update(bytes);
    d.finish(manifest)
}

/// A manifest describing `bytes`.
pub fn describe(name: &str, version: &str, hardware: &[&str], security_floor: &str, bytes: &[u8]) -> ArtifactManifest {
    ArtifactManifest {
        name: name.to_owned(),
        version: version.to_owned(),
        hardware: hardware.iter().map(|s| (*s).to_owned()).collect(),
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(bytes)),
        security_floor: security_floor.to_owned(),
        created_at: Utc::now(),
        release_notes: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::OsRng;

    #[test]
    fn versions_order_numerically_and_downgrades_and_foreign_hardware_are_refused() {
        let v = |s: &str| s.parse::<Version>().unwrap();
        assert!(v("1.10.0") > v("1.9.9"));
        assert_eq!(v("2.0.1-rc.1"), v("2.0.1"));
        for bad in ["1.2", "1.2.x", "", "1.2.3.4"] {
            assert!(matches!(bad.parse::<Version>(), Err(ArtifactError::BadVersion(_))), "{bad}");
        }
        let m = describe("edge-agent", "1.4.0", &["lf-cab-2"], "1.2.0", b"x");
        assert!(m.installable_on("lf-cab-2", v("1.2.0")).is_ok());
        assert!(m.installable_on("lf-cab-2", v("1.4.0")).is_ok(), "re-installing the floor version is fine");
        assert!(matches!(m.installable_on("lf-cab-2", v("1.5.0")), Err(ArtifactError::Downgrade { .. })));
        assert!(matches!(m.installable_on("lf-cab-9", v("1.0.0")), Err(ArtifactError::WrongHardware { .. })));
    }

    fn release() -> (SigningKey, Vec<u8>, SignedManifest) {
        let key = SigningKey::generate(&mut OsRng);
        let bytes = b"firmware image bytes".repeat(100);
        let m = describe("edge-agent", "1.4.0", &["lf-cab-2"], "1.2.0", &bytes);
        let signed = sign(m, &key);
        (key, bytes, signed)
    }

    #[test]
    fn a_signed_manifest_verifies_and_its_bytes_match() {
        let (key, bytes, signed) = release();
        let m = signed.verify(&[key.verifying_key()]).unwrap();
        assert_eq!(check_bytes(m, &bytes), Ok(()));
    }

    #[test]
    fn an_untrusted_key_is_refused() {
        let (_, _, signed) = release();
        let stranger = SigningKey::generate(&mut OsRng).verifying_key();
        assert!(matches!(signed.verify(&[stranger]), Err(ArtifactError::UnknownKey(_))));
    }

    #[test]
    fn an_altered_manifest_is_refused() {
        let (key, _, mut signed) = release();
        signed.manifest.security_floor = "0.0.1".into();
        assert_eq!(signed.verify(&[key.verifying_key()]), Err(ArtifactError::BadSignature));
    }

    #[test]
    fn a_garbled_signature_is_refused() {
        let (key, _, mut signed) = release();
        signed.signature = "AAAA".into();
        assert_eq!(signed.verify(&[key.verifying_key()]), Err(ArtifactError::MalformedSignature));
    }

    #[test]
    fn truncated_or_corrupt_artifacts_are_refused() {
        let (_, mut bytes, signed) = release();
        let m = &signed.manifest;
        assert!(matches!(check_bytes(m, &bytes[..10]), Err(ArtifactError::SizeMismatch { .. })));
        bytes[5] ^= 0xff;
        assert!(matches!(check_bytes(m, &bytes), Err(ArtifactError::HashMismatch { .. })));
    }

    #[test]
    fn chunked_digest_equals_whole_digest() {
        let (_, bytes, signed) = release();
        let mut d = DigestCheck::new();
        for chunk in bytes.chunks(7) {
            d.update(chunk);
        }
        assert_eq!(d.finish(&signed.manifest), Ok(()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn signed_manifests_round_trip_through_json(version in "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}", hw in "[a-z0-9-]{1,12}") {
            let key = SigningKey::generate(&mut OsRng);
            let signed = sign(describe("edge-agent", &version, &[hw.as_str()], "0.0.0", b"x"), &key);
            let back: SignedManifest = serde_json::from_str(&serde_json::to_string(&signed).unwrap()).unwrap();
            prop_assert_eq!(&back, &signed);
            prop_assert!(back.verify(&[key.verifying_key()]).is_ok());
        }
    }
}
