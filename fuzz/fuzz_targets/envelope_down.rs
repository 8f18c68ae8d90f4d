//! Envelopes the fleet-server publishes (a cabinet's `down` topic and a courier's
//! `assignments` topic), as the edge agent and courier apps decode them.
//!
//! Asserts: an input over the limit is refused as `too_large` whatever its bytes;
//! whatever decodes has schema version 1 and a UUIDv7 id, re-encodes to bytes that decode
//! to the same value and re-encode to the same bytes; no payload decodes both as a `down`
//! body and as an `up` body; and the settings a decoded parcel set carries either pass
//! their bounds check or are refused by name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockerfleet_fuzz::LIMIT;
use lockerfleet_shared::envelope::{CourierBody, DownBody, UpBody, decode};
use lockerfleet_shared::{DecodeError, Envelope, SCHEMA_VERSION};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn decoded<B>(data: &[u8]) -> Option<Envelope<B>>
where
    B: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if !data.is_empty() {
        let limit = data.len() - 1;
        assert_eq!(decode::<B>(data, limit), Err(DecodeError::TooLarge { size: data.len(), limit }));
    }
    let env = decode::<B>(data, LIMIT).ok()?;
    assert_eq!(env.v, SCHEMA_VERSION);
    assert_eq!(env.id.get_version_num(), 7);
    let bytes = env.encode();
    let again = decode::<B>(&bytes, usize::MAX).expect("an encoded envelope decodes");
    assert_eq!(again, env, "decode(encode(x)) == x");
    assert_eq!(again.encode(), bytes, "encoding is stable");
    Some(env)
}

fuzz_target!(|data: &[u8]| {
    if let Some(env) = decoded::<DownBody>(data) {
        assert!(decode::<UpBody>(data, LIMIT).is_err(), "a down body also decoded as an up body");
        if let DownBody::Parcels(set) = &env.body
            && let Err((name, reason)) = set.settings.check()
        {
            assert!(!name.is_empty() && !reason.is_empty());
        }
    }
    decoded::<CourierBody>(data);
});
