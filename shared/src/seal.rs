//! Face templates sealed for exactly one cabinet.
//!
//! ```text
//!  sender (recipient's app or the server)            cabinet
//!  ───────────────────────────────────────           ──────────────────────────────────
//!  binding = {cabinet, parcel, expiry, model}
//!  (enc, ctx) = HPKE-SetupBaseS(cabinet pk, INFO)
//!  tag  = HMAC(ctx.export("binding"), binding)   ─►  check key fingerprint, cabinet,
//!  ct   = ctx.seal(template, aad = binding)          expiry, model; SetupBaseR(sk, enc);
//!                                                    check tag; open ct → zeroised template
//! ```
//!
//! HPKE (RFC 9180) base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and
//! ChaCha20-Poly1305, from the `hpke` crate. The binding is the AEAD's associated data, so
//! changing any bound field makes opening fail. The extra HMAC over the binding, keyed
//! from the HPKE exporter, adds no security of its own; it lets the cabinet tell an
//! altered binding from a corrupted ciphertext, which is what a field engineer needs to
//! know. Plaintext templates live in [`FaceTemplate`], which is zeroised on drop.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as KemTrait, OpModeR, OpModeS, Serializable};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::ids::{CabinetId, ParcelId};

type Kem = X25519HkdfSha256;
type Kdf = HkdfSha256;
type Aead = ChaCha20Poly1305;

/// HPKE `info`: names the protocol and its version, so a key used for something else
/// can never open a template.
const INFO: &[u8] = b"lockerfleet template seal v1";
/// Exporter context for the binding tag key.
const BINDING_EXPORT: &[u8] = b"lockerfleet binding tag";

/// Which embedding model made a template: only probes of the same model compare.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    pub id: String,
    /// Hex sha256 of the model file.
    pub sha256: String,
}

/// What a sealed template is bound to; all of it is authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateBinding {
    pub cabinet: CabinetId,
    pub parcel: ParcelId,
    pub expires_at: DateTime<Utc>,
    pub model: ModelRef,
}

impl TemplateBinding {
    /// The exact bytes authenticated as associated data.
    fn aad(&self) -> Vec<u8> {
        let mut out = b"lockerfleet binding v1\n".to_vec();
        // Field order is fixed by the struct, so the bytes are canonical.
        out.extend(serde_json::to_vec(self).expect("binding always serialises"));
        out
    }
}

/// A template sealed for one cabinet. Safe to store and relay anywhere: only that
/// cabinet's private key opens it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedTemplate {
    pub binding: TemplateBinding,
    /// Fingerprint of the cabinet public key it was sealed to.
    pub key_fingerprint: String,
    /// HPKE encapsulated key, base64.
    pub enc: String,
    /// HMAC-SHA256 of the binding under an exporter key, base64.
    pub binding_tag: String,
    /// AEAD ciphertext of the template, base64.
    pub ciphertext: String,
}

/// A face embedding in the clear. Zeroised on drop; never serialised.
#[derive(Clone, PartialEq, Zeroize, ZeroizeOnDrop)]
pub struct FaceTemplate {
    values: Vec<f32>,
}

impl std::fmt::Debug for FaceTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaceTemplate({} values, redacted)", self.values.len())
    }
}

impl FaceTemplate {
    pub fn new(values: Vec<f32>) -> Self {
        Self { values }
    }

    pub fn values(&self) -> &[f32] {
        &self.values
    }

    fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if !bytes.len().is_multiple_of(4) {
            return None;
        }
        Some(Self::new(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()))
    }
}

/// A cabinet's public template key (X25519).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CabinetPublicKey([u8; 32]);

impl CabinetPublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Base64 form, as the API and the database carry it.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        let bytes = B64.decode(s.trim()).map_err(|_| KeyError::NotBase64)?;
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::WrongLength(bytes.len()))?;
        Ok(Self(arr))
    }

    /// Short stable fingerprint: hex of the first 16 bytes of sha256(key).
    pub fn fingerprint(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..16])
    }
}

impl Serialize for CabinetPublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for CabinetPublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_base64(&s).map_err(serde::de::Error::custom)
    }
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is not valid base64")]
    NotBase64,
    #[error("key is {0} bytes; an X25519 key is 32")]
    WrongLength(usize),
}

/// A cabinet's key pair. The private half never leaves the cabinet and is zeroised on drop.
pub struct CabinetKeyPair {
    secret: <Kem as KemTrait>::PrivateKey,
    public: CabinetPublicKey,
}

impl std::fmt::Debug for CabinetKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CabinetKeyPair").field("public", &self.public.fingerprint()).finish_non_exhaustive()
    }
}

impl CabinetKeyPair {
    /// A fresh random key pair (done once, at provisioning).
    pub fn generate() -> Self {
        let (secret, public) = Kem::gen_keypair();
        Self::from_parts(secret, &public)
    }

    /// Restores a key pair from its 32 secret bytes (as kept in the cabinet's key file).
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let secret =
            <Kem as KemTrait>::PrivateKey::from_bytes(bytes).map_err(|_| KeyError::WrongLength(bytes.len()))?;
        let public = <Kem as KemTrait>::sk_to_pk(&secret);
        Ok(Self::from_parts(secret, &public))
    }

    fn from_parts(secret: <Kem as KemTrait>::PrivateKey, public: &<Kem as KemTrait>::PublicKey) -> Self {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&public.to_bytes());
        Self { secret, public: CabinetPublicKey(pk) }
    }

    /// The secret bytes, for writing the key file; zeroised when dropped.
    pub fn secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.secret.to_bytes().to_vec())
    }

    pub fn public(&self) -> CabinetPublicKey {
        self.public
    }
}

/// Why sealing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the cabinet public key is not a valid X25519 key")]
    BadPublicKey,
    #[error("the template is empty")]
    EmptyTemplate,
    #[error("HPKE failed: {0}")]
    Hpke(String),
}

/// Why a cabinet refused a sealed template. Each cause is its own variant so the
/// cabinet's event log tells an engineer exactly what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("template is bound to cabinet {found}, not to this cabinet ({expected})")]
    WrongCabinet { expected: CabinetId, found: CabinetId },
    #[error("template was sealed to key {found}, this cabinet's key is {expected}")]
    WrongKey { expected: String, found: String },
    #[error("template expired at {expired_at}")]
    Expired { expired_at: DateTime<Utc> },
    #[error("template was made with model {found:?}; this cabinet runs {expected:?}")]
    ModelMismatch { expected: ModelRef, found: ModelRef },
    #[error("the bound data (cabinet, parcel, expiry, model) was altered after sealing")]
    BindingAltered,
    #[error("the ciphertext was altered or corrupted")]
    CiphertextAltered,
    #[error("sealed template is malformed: {0}")]
    Malformed(&'static str),
}

impl OpenError {
    /// A short, stable label for metrics and events.
    pub fn reason(&self) -> &'static str {
        match self {
            OpenError::WrongCabinet { .. } => "wrong_cabinet",
            OpenError::WrongKey { .. } => "wrong_key",
            OpenError::Expired { .. } => "expired",
            OpenError::ModelMismatch { .. } => "model_mismatch",
            OpenError::BindingAltered => "binding_altered",
            OpenError::CiphertextAltered => "ciphertext_altered",
            OpenError::Malformed(_) => "malformed",
        }
    }
}

fn binding_tag(ctx_export: &[u8; 32], binding: &TemplateBinding) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(ctx_export).expect("HMAC takes any key length");
    mac.update(&binding.aad());
    mac
}

/// Seals `template` for the cabinet holding `public_key`, bound to `binding`.
pub fn seal(
    public_key: &CabinetPublicKey,
    binding: TemplateBinding,
    template: &FaceTemplate,
) -> Result<SealedTemplate, SealError> {
    if template.values.is_empty() {
        return Err(SealError::EmptyTemplate);
    }
    let pk = <Kem as KemTrait>::PublicKey::from_bytes(&public_key.0).map_err(|_| SealError::BadPublicKey)?;
    let (enc, mut ctx) =
        hpke::setup_sender::<Aead, Kdf, Kem>(&OpModeS::Base, &pk, INFO).map_err(|e| SealError::Hpke(e.to_string()))?;
    let mut tag_key = Zeroizing::new([0u8; 32]);
    ctx.export(BINDING_EXPORT, tag_key.as_mut()).map_err(|e| SealError::Hpke(e.to_string()))?;
    let tag = binding_tag(&tag_key, &binding).finalize().into_bytes();
    let ciphertext = ctx.seal(&template.to_bytes(), &binding.aad()).map_err(|e| SealError::Hpke(e.to_string()))?;
    Ok(SealedTemplate {
        binding,
        key_fingerprint: public_key.fingerprint(),
        enc: B64.encode(enc.to_bytes()),
        binding_tag: B64.encode(tag),
        ciphertext: B64.encode(ciphertext),
    })
}

/// What the opening cabinet expects of a template.
#[derive(Debug, Clone)]
pub struct OpenPolicy<'a> {
    pub cabinet: &'a CabinetId,
    pub model: &'a ModelRef,
    pub now: DateTime<Utc>,
}

/// Opens a sealed template on the cabinet it was sealed for.
pub fn open(
    keys: &CabinetKeyPair,
    sealed: &SealedTemplate,
    policy: &OpenPolicy<'_>,
) -> Result<FaceTemplate, OpenError> {
    let b = &sealed.binding;
    let ours = keys.public.fingerprint();
    if sealed.key_fingerprint != ours {
        return Err(OpenError::WrongKey { expected: ours, found: sealed.key_fingerprint.clone() });
    }
    if &b.cabinet != policy.cabinet {
        return Err(OpenError::WrongCabinet { expected: policy.cabinet.clone(), found: b.cabinet.clone() });
    }
    if b.expires_at <= policy.now {
        return Err(OpenError::Expired { expired_at: b.expires_at });
    }
    if &b.model != policy.model {
        return Err(OpenError::ModelMismatch { expected: policy.model.clone(), found: b.model.clone() });
    }
    let enc_bytes = B64.decode(&sealed.enc).map_err(|_| OpenError::Malformed("enc is not base64"))?;
    let tag = B64.decode(&sealed.binding_tag).map_err(|_| OpenError::Malformed("binding_tag is not base64"))?;
    let ciphertext = B64.decode(&sealed.ciphertext).map_err(|_| OpenError::Malformed("ciphertext is not base64"))?;
    let enc = <Kem as KemTrait>::EncappedKey::from_bytes(&enc_bytes)
        .map_err(|_| OpenError::Malformed("enc is not an X25519 encapsulated key"))?;
    let mut ctx = hpke::setup_receiver::<Aead, Kdf, Kem>(&OpModeR::Base, &keys.secret, &enc, INFO)
        .map_err(|_| OpenError::Malformed("enc does not decapsulate"))?;
    let mut tag_key = Zeroizing::new([0u8; 32]);
    ctx.export(BINDING_EXPORT, tag_key.as_mut()).map_err(|_| OpenError::Malformed("exporter failed"))?;
    binding_tag(&tag_key, b).verify_slice(&tag).map_err(|_| OpenError::BindingAltered)?;
    let plain = Zeroizing::new(ctx.open(&ciphertext, &b.aad()).map_err(|_| OpenError::CiphertextAltered)?);
    FaceTemplate::from_bytes(&plain).ok_or(OpenError::Malformed("template length is not a whole number of floats"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn model() -> ModelRef {
        ModelRef { id: "fr_feature".into(), sha256: "ab".repeat(32) }
    }

    fn binding(cabinet: &str, hours: i64) -> TemplateBinding {
        TemplateBinding {
            cabinet: CabinetId::new(cabinet).unwrap(),
            parcel: ParcelId(Uuid::now_v7()),
            expires_at: Utc::now() + Duration::hours(hours),
            model: model(),
        }
    }

    fn template() -> FaceTemplate {
        FaceTemplate::new((0..512).map(|i| (i as f32).sin()).collect())
    }

    fn policy<'a>(cabinet: &'a CabinetId, model: &'a ModelRef) -> OpenPolicy<'a> {
        OpenPolicy { cabinet, model, now: Utc::now() }
    }

    #[test]
    fn the_right_cabinet_opens_its_template() {
        let keys = CabinetKeyPair::generate();
        let sealed = seal(&keys.public(), binding("c1", 48), &template()).unwrap();
        let (c, m) = (CabinetId::new("c1").unwrap(), model());
        assert_eq!(open(&keys, &sealed, &policy(&c, &m)).unwrap(), template());
    }

    #[test]
    fn a_key_restored_from_its_bytes_still_opens() {
        let keys = CabinetKeyPair::generate();
        let sealed = seal(&keys.public(), binding("c1", 1), &template()).unwrap();
        let restored = CabinetKeyPair::from_secret_bytes(&keys.secret_bytes()).unwrap();
        assert_eq!(restored.public(), keys.public());
        let (c, m) = (CabinetId::new("c1").unwrap(), model());
        assert!(open(&restored, &sealed, &policy(&c, &m)).is_ok());
    }

    #[test]
    fn another_cabinets_key_is_refused() {
        let keys = CabinetKeyPair::generate();
        let other = CabinetKeyPair::generate();
        let sealed = seal(&keys.public(), binding("c1", 1), &template()).unwrap();
        let (c, m) = (CabinetId::new("c1").unwrap(), model());
        assert!(matches!(open(&other, &sealed, &policy(&c, &m)), Err(OpenError::WrongKey { .. })));

        // Even with the fingerprint forged to match, the other key cannot open it.
        let mut forged = sealed.clone();
        forged.key_fingerprint = other.public().fingerprint();
        let err = open(&other, &forged, &policy(&c, &m)).unwrap_err();
        assert!(matches!(err, OpenError::BindingAltered), "{err}");
    }

    #[test]
    fn a_blob_bound_to_another_cabinet_is_refused() {
        let keys = CabinetKeyPair::generate();
        let sealed = seal(&keys.public(), binding("c2", 1), &template()).unwrap();
        let (c, m) = (CabinetId::new("c1").unwrap(), model());
        assert!(matches!(open(&keys, &sealed, &policy(&c, &m)), Err(OpenError::WrongCabinet { .. })));
    }

    #[test]
    fn an_expired_blob_is_refused() {
        let keys = CabinetKeyPair::generate();
        let sealed = seal(&keys.public(), binding("c1", -1), &template()).unwrap();
        let (c, m) = (CabinetId::new("c1").unwrap(), model());
        assert!(matches!(open(&keys, &sealed, &policy(&c, &m)), Err(OpenError::Expired { .. })));
    }

    #[test]
    fn a_template_of_another_model_is_refused() {
        let keys = CabinetKeyPair::generate();
        let sealed = seal(&keys.public(), binding("c1", 1), &template()).unwrap();
        let c = CabinetId::new("c1").unwrap();
        let m = ModelRef { id: "other".into(), sha256: "cd".repeat(32) };
        assert!(matches!(open(&keys, &sealed, &policy(&c, &m)), Err(OpenError::ModelMismatch { .. })));
    }

    #[test]
    fn altered_associated_data_is_refused() {
        let keys = CabinetKeyPair::generate();
        let sealed = seal(&keys.public(), binding("c1", 1), &template()).unwrap();
        let (c, m) = (CabinetId::new("c1").unwrap(), model());

        let mut later = sealed.clone();
        later.binding.expires_at += Duration::hours(100);
        assert_eq!(open(&keys, &later, &policy(&c, &m)), Err(OpenError::BindingAltered));

        let mut moved = sealed;
        moved.binding.parcel = ParcelId(Uuid::now_v7());
        assert_eq!(open(&keys, &moved, &policy(&c, &m)), Err(OpenError::BindingAltered));
    }

    #[test]
    fn a_sealed_template_is_not_the_plaintext() {
        let keys = CabinetKeyPair::generate();
        let t = template();
        let sealed = seal(&keys.public(), binding("c1", 1), &t).unwrap();
        let ct = B64.decode(&sealed.ciphertext).unwrap();
        let plain: Vec<u8> = t.values().iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_ne!(&ct[..plain.len()], plain.as_slice());
        // Two seals of the same template differ (fresh ephemeral key each time).
        let again = seal(&keys.public(), sealed.binding.clone(), &t).unwrap();
        assert_ne!(again.ciphertext, sealed.ciphertext);
    }

    #[test]
    fn public_keys_parse_strictly() {
        assert_eq!(CabinetPublicKey::from_base64("!!"), Err(KeyError::NotBase64));
        assert_eq!(CabinetPublicKey::from_base64(&B64.encode([1u8; 31])), Err(KeyError::WrongLength(31)));
        let k = CabinetKeyPair::generate().public();
        assert_eq!(CabinetPublicKey::from_base64(&k.to_base64()).unwrap(), k);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn any_single_bit_flip_in_the_ciphertext_is_caught(byte in 0usize..2048, bit in 0u8..8) {
            let keys = CabinetKeyPair::generate();
            let sealed = seal(&keys.public(), binding("c1", 1), &template()).unwrap();
            let mut ct = B64.decode(&sealed.ciphertext).unwrap();
            let i = byte % ct.len();
            ct[i] ^= 1 << bit;
            let mut bad = sealed;
            bad.ciphertext = B64.encode(ct);
            let (c, m) = (CabinetId::new("c1").unwrap(), model());
            prop_assert_eq!(open(&keys, &bad, &policy(&c, &m)), Err(OpenError::CiphertextAltered));
        }

        #[test]
        fn templates_of_any_length_round_trip(values in proptest::collection::vec(-1.0f32..1.0, 1..600)) {
            let keys = CabinetKeyPair::generate();
            let t = FaceTemplate::new(values);
            let sealed = seal(&keys.public(), binding("c1", 1), &t).unwrap();
            let json = serde_json::to_string(&sealed).unwrap();
            let back: SealedTemplate = serde_json::from_str(&json).unwrap();
            let (c, m) = (CabinetId::new("c1").unwrap(), model());
            prop_assert_eq!(open(&keys, &back, &policy(&c, &m)).unwrap(), t);
        }
    }
}
