//! Signed OTA manifests (what an offer carries and `POST /api/v1/artifacts` takes),
//! verified as a cabinet does, against the fixture's one trusted release key.
//!
//! Asserts: a manifest that verifies names the trusted key's id, its signature checks
//! out under that key over the documented signing bytes (checked here independently of
//! `verify`), and its content is exactly one the fixture signed (no forgery); a decoded
//! manifest re-encodes to JSON that decodes to the same value; a refusal has a message;
//! and the installability check on a verified manifest never panics.
#![no_main]

use std::sync::LazyLock;

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use libfuzzer_sys::fuzz_target;
use lockerfleet_fuzz as fx;
use lockerfleet_shared::artifact::{self, ArtifactManifest, SignedManifest, Version};

static TRUSTED: LazyLock<(Vec<VerifyingKey>, Vec<ArtifactManifest>)> =
    LazyLock::new(|| (vec![fx::release_key().verifying_key()], fx::manifests()));

fn signature_holds(signed: &SignedManifest, key: &VerifyingKey) -> bool {
    use base64::Engine;
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(&signed.signature) else { return false };
    let Ok(sig) = Signature::from_slice(&raw) else { return false };
    let mut msg = b"lockerfleet artifact manifest v1\n".to_vec();
    msg.extend(serde_json::to_vec(&signed.manifest).expect("a manifest serialises"));
    key.verify(&msg, &sig).is_ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(signed) = serde_json::from_slice::<SignedManifest>(data) else { return };
    let json = serde_json::to_vec(&signed).expect("a signed manifest serialises");
    assert_eq!(serde_json::from_slice::<SignedManifest>(&json).expect("re-encoded manifest decodes"), signed);

    let (keys, genuine) = &*TRUSTED;
    match signed.verify(keys) {
        Ok(m) => {
            let key = &keys[0];
            assert_eq!(signed.key_id, artifact::key_id(key));
            assert!(signature_holds(&signed, key), "verify accepted a signature that does not hold");
            assert!(genuine.contains(m), "a manifest the fixture never signed verified: {m:?}");
            let _ = m.installable_on("lf-cab-2", Version(0, 0, 0));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
