//! Envelopes a cabinet publishes (`up` and `presence` topics), as the fleet-server's
//! ingress decodes them.
//!
//! Asserts: an input over the limit is refused as `too_large` whatever its bytes (the
//! size is checked before parsing); whatever decodes has schema version 1 and a UUIDv7
//! id, re-encodes to bytes that decode to the same value and re-encode to the same bytes;
//! and no payload decodes both as an `up` body and as a `down` body (a body of the wrong
//! direction does not decode).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockerfleet_fuzz::LIMIT;
use lockerfleet_shared::envelope::{DownBody, PresenceBody, UpBody, decode};
use lockerfleet_shared::{DecodeError, Envelope, SCHEMA_VERSION};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<B>(data: &[u8]) -> bool
where
    B: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if !data.is_empty() {
        // One byte under the input's size: refused on size alone, before any parsing.
        let limit = data.len() - 1;
        assert_eq!(decode::<B>(data, limit), Err(DecodeError::TooLarge { size: data.len(), limit }));
    }
    match decode::<B>(data, LIMIT) {
        Ok(env) => {
            check::<B>(&env);
            true
        }
        Err(e) => {
            assert!(!e.reason().is_empty());
            false
        }
    }
}

fn check<B>(env: &Envelope<B>)
where
    B: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(env.v, SCHEMA_VERSION);
    assert_eq!(env.id.get_version_num(), 7);
    let bytes = env.encode();
    let again = decode::<B>(&bytes, usize::MAX).expect("an encoded envelope decodes");
    assert_eq!(&again, env, "decode(encode(x)) == x");
    assert_eq!(again.encode(), bytes, "encoding is stable");
}

fuzz_target!(|data: &[u8]| {
    let up = round_trip::<UpBody>(data);
    round_trip::<PresenceBody>(data);
    if up {
        assert!(decode::<DownBody>(data, LIMIT).is_err(), "an up body also decoded as a down body");
    }
});
