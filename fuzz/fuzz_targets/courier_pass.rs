//! Courier passes (the text of the QR code a courier shows a cabinet), verified offline
//! as the cabinet does, against the fixture's pass key at a fixed time.
//!
//! Asserts: a pass longer than 4096 bytes is refused as malformed; a pass that verifies
//! carries exactly claims the fixture issued, and they have not expired.
#![no_main]

use std::sync::LazyLock;

use ed25519_dalek::VerifyingKey;
use libfuzzer_sys::fuzz_target;
use lockerfleet_fuzz as fx;
use lockerfleet_shared::pass::{self, PassClaims, PassError};

static TRUSTED: LazyLock<(Vec<VerifyingKey>, Vec<PassClaims>)> =
    LazyLock::new(|| (vec![fx::pass_key().verifying_key()], fx::pass_claims()));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (keys, issued) = &*TRUSTED;
    let now = fx::now();
    match pass::verify(text, keys, now) {
        Ok(claims) => {
            assert!(text.len() <= 4096);
            assert!(claims.expires_at > now);
            assert!(issued.contains(&claims), "a pass the fixture never issued verified: {claims:?}");
        }
        Err(e) => {
            if text.len() > 4096 {
                assert_eq!(e, PassError::Malformed);
            }
        }
    }
});
