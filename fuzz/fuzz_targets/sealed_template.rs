//! Sealed face templates (the JSON the recipient's app uploads and the cabinet receives in
//! its desired state), opened as the cabinet `cab-fuzz` with its own key.
//!
//! Asserts: a template that opens was sealed for this cabinet — its binding names this
//! cabinet, its key fingerprint and model, it has not expired, and binding and plaintext
//! are exactly one of those the fixture sealed here; a refusal has a stable reason; and a
//! decoded blob re-encodes to JSON that decodes to the same blob.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use lockerfleet_fuzz as fx;
use lockerfleet_shared::CabinetId;
use lockerfleet_shared::seal::{self, CabinetKeyPair, FaceTemplate, OpenPolicy, SealedTemplate, TemplateBinding};

struct Fixture {
    keys: CabinetKeyPair,
    cabinet: CabinetId,
    model: lockerfleet_shared::seal::ModelRef,
    ours: Vec<(TemplateBinding, FaceTemplate)>,
}

static FX: LazyLock<Fixture> = LazyLock::new(|| Fixture {
    keys: fx::cabinet_keys(),
    cabinet: fx::cabinet(),
    model: fx::model(),
    ours: fx::sealed_for_us(),
});

fuzz_target!(|data: &[u8]| {
    let Ok(sealed) = serde_json::from_slice::<SealedTemplate>(data) else { return };
    let json = serde_json::to_vec(&sealed).expect("a sealed template serialises");
    assert_eq!(serde_json::from_slice::<SealedTemplate>(&json).expect("re-encoded blob decodes"), sealed);

    let f = &*FX;
    let now = fx::now();
    let policy = OpenPolicy { cabinet: &f.cabinet, model: &f.model, now };
    match seal::open(&f.keys, &sealed, &policy) {
        Ok(template) => {
            let b = &sealed.binding;
            assert_eq!(b.cabinet, f.cabinet);
            assert_eq!(sealed.key_fingerprint, f.keys.public().fingerprint());
            assert_eq!(b.model, f.model);
            assert!(b.expires_at > now);
            assert!(
                f.ours.iter().any(|(binding, t)| binding == b && t == &template),
                "opened a template the fixture never sealed for this cabinet: {b:?}"
            );
        }
        Err(e) => assert!(!e.reason().is_empty() && !e.to_string().is_empty()),
    }
});
