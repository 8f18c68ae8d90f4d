//! Fixtures shared by the fuzz targets and the seed-corpus generator
//! (`examples/gen_corpus.rs`).
//!
//! Every key here is derived from a fixed seed, so a target knows exactly what was really
//! sealed or signed for it: a sealed template that opens must be one the fixture sealed
//! for this cabinet, a manifest or pass that verifies must be one the fixture signed. The
//! corpus is made with the same keys, so its valid seeds take the deep paths (HPKE open,
//! signature check) and the mutations around them probe the checks that guard them.
//!
//! The input of a multi-part target (`topic`, `api_bodies`) is a header line and a body:
//! [`split_header`] cuts it.

use chrono::{DateTime, Duration, TimeZone, Utc};
use ed25519_dalek::SigningKey;
use lockerfleet_shared::artifact::{self, ArtifactManifest, SignedManifest};
use lockerfleet_shared::pass::{self, PassClaims};
use lockerfleet_shared::seal::{self, CabinetKeyPair, FaceTemplate, ModelRef, SealedTemplate, TemplateBinding};
use lockerfleet_shared::{CabinetId, CourierId, ParcelId, TenantId};
use uuid::Uuid;

/// The payload limit the envelope targets decode with (the production default).
pub const LIMIT: usize = lockerfleet_shared::envelope::DEFAULT_MAX_PAYLOAD_BYTES;

/// The fixed "now" of every target: expiry checks are deterministic.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).single().expect("a valid fixed date")
}

/// The cabinet the sealed-template target opens as.
pub fn cabinet() -> CabinetId {
    CabinetId::new("cab-fuzz").expect("a valid id")
}

/// The embedding model the cabinet runs.
pub fn model() -> ModelRef {
    ModelRef { id: "fr_feature".into(), sha256: "ab".repeat(32) }
}

/// The cabinet's X25519 key pair, from a fixed secret.
pub fn cabinet_keys() -> CabinetKeyPair {
    CabinetKeyPair::from_secret_bytes(&[7u8; 32]).expect("32 bytes make an X25519 secret")
}

/// Another cabinet's key pair.
pub fn other_cabinet_keys() -> CabinetKeyPair {
    CabinetKeyPair::from_secret_bytes(&[8u8; 32]).expect("32 bytes make an X25519 secret")
}

/// The release key the cabinet and the server trust.
pub fn release_key() -> SigningKey {
    SigningKey::from_bytes(&[9u8; 32])
}

/// A release key nobody trusts.
pub fn stranger_key() -> SigningKey {
    SigningKey::from_bytes(&[10u8; 32])
}

/// The server's courier-pass key.
pub fn pass_key() -> SigningKey {
    SigningKey::from_bytes(&[11u8; 32])
}

fn template(n: usize, phase: f32) -> FaceTemplate {
    FaceTemplate::new((0..n).map(|i| (i as f32 * 0.37 + phase).sin()).collect())
}

/// Templates the fixture seals for [`cabinet`] under [`cabinet_keys`], each with its
/// binding; valid at [`now`]. Nothing else may ever open there.
pub fn sealed_for_us() -> Vec<(TemplateBinding, FaceTemplate)> {
    [(4, 0.0f32), (16, 1.0), (512, 2.0)]
        .into_iter()
        .enumerate()
        .map(|(i, (n, phase))| {
            let binding = TemplateBinding {
                cabinet: cabinet(),
                parcel: ParcelId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001 + i as u128)),
                expires_at: now() + Duration::hours(48),
                model: model(),
            };
            (binding, template(n, phase))
        })
        .collect()
}

/// Seals each of [`sealed_for_us`] (HPKE is randomised: every call gives new blobs).
pub fn seal_ours() -> Vec<SealedTemplate> {
    let public = cabinet_keys().public();
    sealed_for_us().into_iter().map(|(binding, t)| seal::seal(&public, binding, &t).expect("fixture seals")).collect()
}

/// Sealed templates that must be refused at [`cabinet`], each with the reason label.
pub fn seal_refused() -> Vec<(&'static str, SealedTemplate)> {
    let ours = cabinet_keys().public();
    let mk = |cab: &str, hours: i64, model: ModelRef| TemplateBinding {
        cabinet: CabinetId::new(cab).expect("a valid id"),
        parcel: ParcelId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00ff)),
        expires_at: now() + Duration::hours(hours),
        model,
    };
    let t = template(8, 3.0);
    let seal_to = |pk, b| seal::seal(pk, b, &t).expect("fixture seals");
    let other_model = ModelRef { id: "other".into(), sha256: "cd".repeat(32) };
    vec![
        ("wrong_key", seal_to(&other_cabinet_keys().public(), mk("cab-fuzz", 48, model()))),
        ("wrong_cabinet", seal_to(&ours, mk("cab-other", 48, model()))),
        ("expired", seal_to(&ours, mk("cab-fuzz", -1, model()))),
        ("model_mismatch", seal_to(&ours, mk("cab-fuzz", 48, other_model))),
    ]
}

/// Manifests the fixture signs with [`release_key`]: a verifying manifest is one of these.
pub fn manifests() -> Vec<ArtifactManifest> {
    let created = now() - Duration::days(3);
    let mut out = Vec::new();
    for (version, floor, size) in
        [("1.4.0", "1.2.0", 4096u64), ("2.0.1-rc.1", "2.0.0", 1), ("0.9.12", "0.0.0", 1 << 20)]
    {
        let mut m = artifact::describe("edge-agent", version, &["lf-cab-2"], floor, b"");
        m.size = size;
        m.sha256 = format!("{:064x}", size);
        m.created_at = created;
        m.release_notes = format!("release {version}");
        out.push(m);
    }
    out
}

/// [`manifests`], signed (Ed25519 is deterministic: the same bytes every time).
pub fn signed_manifests() -> Vec<SignedManifest> {
    let key = release_key();
    manifests().into_iter().map(|m| artifact::sign(m, &key)).collect()
}

/// Claims the fixture signs with [`pass_key`]: a pass that verifies carries one of these.
pub fn pass_claims() -> Vec<PassClaims> {
    let claim = |courier: &str, tenant: &str, from_h: i64, to_h: i64| PassClaims {
        courier: CourierId::new(courier).expect("a valid id"),
        tenant: TenantId::new(tenant).expect("a valid id"),
        issued_at: now() + Duration::hours(from_h),
        expires_at: now() + Duration::hours(to_h),
    };
    vec![claim("k-1", "acme", -1, 11), claim("courier.2", "north_post", -11, 1), claim("k-3", "acme", -20, -8)]
}

/// [`pass_claims`], issued as the text a QR code carries.
pub fn passes() -> Vec<String> {
    let key = pass_key();
    pass_claims().into_iter().map(|c| pass::issue(c, &key)).collect()
}

/// Splits `data` into its first line (the header, UTF-8) and the rest.
pub fn split_header(data: &[u8]) -> Option<(&str, &[u8])> {
    let nl = data.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&data[..nl]).ok()?;
    Some((header, &data[nl + 1..]))
}
