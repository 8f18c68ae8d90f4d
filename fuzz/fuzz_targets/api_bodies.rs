//! Request bodies of the fleet-server's REST API. The input is `kind\n` and a JSON body;
//! the body is decoded by `api::body::from_json` (what the handlers' `Body` extractor
//! does) into the handler's own request type, then run through the handler's own pure
//! checks.
//!
//! Kinds and what is asserted besides "no panic":
//! * `cabinet` (`POST /cabinets`, `api::cabinets::validate`): an accepted cabinet has a
//!   valid id, 1-500 compartments with unique valid ids, the fingerprint of its key, a
//!   location inside the globe, and tags that pass their own check unchanged.
//! * `tags` (`PUT /cabinets/{id}/tags`, `check_tags`): accepted tags are unique, valid,
//!   and checking them again changes nothing.
//! * `settings` (`PUT /cabinets/{id}/settings`, `CabinetSettings::check`): the decoded
//!   settings re-encode to the same value; accepted ones lie inside their bounds.
//! * `manifest` (`POST /artifacts`, `api::artifacts::check_release`): an accepted release
//!   is one the fixture signed with the trusted key.
//! * `rollout` (`POST /rollouts`, `Plan::check`): a plan that passes its check drives a
//!   rollout conductor over a small fleet for a month of ticks without a panic, and every
//!   cabinet stays in exactly one wave.
//! * `enrolment` (`PUT /recipients/{id}/template`, `Enrolment::check`): an accepted
//!   template holds finite values only and the consent names its text.
//! * `tenant`, `tenant_settings`, `courier`, `recipient`, `parcel`, `token`: decoding and
//!   the id and URL checks the handlers apply.
#![no_main]

use std::collections::HashSet;
use std::sync::LazyLock;

use chrono::Duration;
use ed25519_dalek::VerifyingKey;
use fleet_server::api::auth::NewToken;
use fleet_server::api::cabinets::{NewCabinet, NewTenant, check_tags, validate};
use fleet_server::api::parcels::{CreateParcel, Enrolment, NewCourier, NewRecipient, TenantSettings};
use fleet_server::domain::rollout::Conductor;
use fleet_server::service::rollouts::NewRollout;
use libfuzzer_sys::fuzz_target;
use lockerfleet_fuzz as fx;
use lockerfleet_shared::artifact::{ArtifactManifest, SignedManifest};
use lockerfleet_shared::envelope::CabinetSettings;
use lockerfleet_shared::seal::CabinetPublicKey;
use lockerfleet_shared::{CabinetId, CompartmentId, CourierId, TenantId};

static RELEASES: LazyLock<(Vec<VerifyingKey>, Vec<ArtifactManifest>)> =
    LazyLock::new(|| (vec![fx::release_key().verifying_key()], fx::manifests()));

fn body<T: serde::de::DeserializeOwned>(json: &[u8]) -> Option<T> {
    fleet_server::api::body::from_json(std::str::from_utf8(json).ok()?).ok()
}

fn tags_hold(tags: &[String]) {
    let unique: HashSet<&String> = tags.iter().collect();
    assert_eq!(unique.len(), tags.len(), "duplicate tags kept");
    assert!(tags.len() <= 20);
    for t in tags {
        assert!(
            (1..=40).contains(&t.len())
                && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_:".contains(&b))
        );
    }
    assert_eq!(check_tags(tags).expect("checked tags pass again"), tags);
}

fn cabinet(b: NewCabinet) {
    let Ok((cab, compartments)) = validate(&b) else { return };
    CabinetId::new(cab.id.clone()).expect("an accepted cabinet id is valid");
    TenantId::new(cab.tenant_id.clone()).expect("an accepted tenant id is valid");
    let key = CabinetPublicKey::from_base64(&cab.public_key).expect("an accepted key decodes");
    assert_eq!(key.fingerprint(), cab.key_fingerprint);
    assert!((1..=500).contains(&compartments.len()));
    let ids: HashSet<&str> = compartments.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), compartments.len(), "duplicate compartments accepted");
    for c in &compartments {
        CompartmentId::new(c.id.clone()).expect("an accepted compartment id is valid");
        assert_eq!(c.cabinet_id, cab.id);
    }
    if let (Some(lat), Some(lon)) = (cab.latitude, cab.longitude) {
        assert!((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon));
    }
    let tags: Vec<String> = serde_json::from_str(cab.tags.as_deref().expect("tags are stored")).expect("tags are JSON");
    tags_hold(&tags);
}

fn settings(s: CabinetSettings) {
    let json = serde_json::to_vec(&s).expect("settings serialise");
    assert_eq!(serde_json::from_slice::<CabinetSettings>(&json).expect("re-encoded settings decode"), s);
    if s.check().is_ok() {
        let within = |v: Option<u32>, lo, hi| v.is_none_or(|v| (lo..=hi).contains(&v));
        assert!(within(s.door_left_open_s, 5, 3600));
        assert!(within(s.unlock_window_s, 3, 120));
        assert!(within(s.max_failed_attempts, 3, 20));
        assert!(within(s.attempt_window_s, 60, 86_400));
        assert!(within(s.lockout_s, 60, 86_400));
    }
}

fn rollout(r: NewRollout) {
    if r.plan.check().is_err() {
        return;
    }
    let fleet: Vec<(String, i32)> =
        [("c1", 0), ("c2", 60), ("c3", -300), ("c4", 840), ("c5", 0), ("c1", 0)].map(|(c, o)| (c.into(), o)).into();
    let start = fx::now();
    let mut conductor = Conductor::new(r.plan, fleet, 0x5eed, start);
    for minutes in [0, 1, 61, 60 * 25, 60 * 24 * 7, 60 * 24 * 30] {
        conductor.tick(start + Duration::minutes(minutes));
    }
    let summary = conductor.summary();
    let placed: usize = summary.waves.iter().map(|w| w.size).sum();
    assert_eq!(placed, 5, "every distinct cabinet is in exactly one wave");
    assert_eq!(conductor.cabinets().count(), 5);
}

fuzz_target!(|data: &[u8]| {
    let Some((kind, json)) = fx::split_header(data) else { return };
    match kind {
        "cabinet" => {
            if let Some(b) = body::<NewCabinet>(json) {
                cabinet(b);
            }
        }
        "tags" => {
            if let Some(tags) = body::<Vec<String>>(json)
                && let Ok(checked) = check_tags(&tags)
            {
                tags_hold(&checked);
            }
        }
        "settings" => {
            if let Some(s) = body::<CabinetSettings>(json) {
                settings(s);
            }
        }
        "manifest" => {
            if let Some(signed) = body::<SignedManifest>(json) {
                let (keys, genuine) = &*RELEASES;
                if let Ok(m) = fleet_server::api::artifacts::check_release(&signed, keys, 1 << 30) {
                    assert!(genuine.contains(m), "an unsigned release was accepted: {m:?}");
                }
            }
        }
        "rollout" => {
            if let Some(r) = body::<NewRollout>(json) {
                rollout(r);
            }
        }
        "enrolment" => {
            if let Some(e) = body::<Enrolment>(json)
                && e.check(fx::now()).is_ok()
            {
                assert!(e.template.iter().all(|v| v.is_finite()));
                assert!(!e.consent.text_version.trim().is_empty());
            }
        }
        "tenant" => {
            if let Some(t) = body::<NewTenant>(json) {
                let _ = TenantId::new(t.id);
            }
        }
        "tenant_settings" => {
            if let Some(t) = body::<TenantSettings>(json)
                && let Some(url) = &t.webhook_url
            {
                let _ = fleet_server::service::webhooks::check_url(url, false);
            }
        }
        "courier" => {
            if let Some(c) = body::<NewCourier>(json) {
                let _ = CourierId::new(c.id);
            }
        }
        "recipient" => {
            let _ = body::<NewRecipient>(json);
        }
        "parcel" => {
            if let Some(p) = body::<CreateParcel>(json) {
                let _ = (CourierId::new(p.courier), CabinetId::new(p.cabinet));
            }
        }
        "token" => {
            if let Some(t) = body::<NewToken>(json)
                && let Some(c) = t.courier
            {
                let _ = CourierId::new(c);
            }
        }
        _ => {}
    }
});
