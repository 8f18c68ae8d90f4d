//! Writes the seed corpus, `fuzz/corpus/<target>/`, from real messages made with the real
//! encoders and the fixture keys, plus a few malformed ones per target.
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus -- fuzz/corpus
//! ```
//!
//! Sealing is randomised (HPKE), so a re-run rewrites the sealed seeds with new bytes;
//! everything else comes out the same.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use chrono::Duration;
use lockerfleet_fuzz as fx;
use lockerfleet_shared::artifact;
use lockerfleet_shared::envelope::*;
use lockerfleet_shared::pass;
use lockerfleet_shared::{CabinetId, CompartmentId, CourierId, Envelope, ParcelId};
use serde_json::{Value, json};
use uuid::Uuid;

struct Out {
    dir: PathBuf,
    count: usize,
}

impl Out {
    fn new(root: &Path, target: &str) -> Self {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        Self { dir, count: 0 }
    }

    fn put(&mut self, name: &str, bytes: impl AsRef<[u8]>) {
        std::fs::write(self.dir.join(name), bytes).expect("write seed");
        self.count += 1;
    }

    fn json(&mut self, name: &str, v: &impl serde::Serialize) {
        self.put(name, serde_json::to_vec(v).expect("serialises"));
    }
}

fn cab() -> CabinetId {
    fx::cabinet()
}

fn comp(s: &str) -> CompartmentId {
    CompartmentId::new(s).expect("a valid id")
}

fn parcel(n: u128) -> ParcelId {
    ParcelId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0100 + n))
}

fn env<B: serde::Serialize>(seq: u64, body: B) -> Envelope<B> {
    let mut e = Envelope::new(cab(), seq, body);
    e.ts = fx::now();
    e
}

fn up(root: &Path) -> usize {
    let mut o = Out::new(root, "envelope_up");
    let hello = UpBody::Hello(Hello {
        firmware: "1.4.0".into(),
        slot: Slot::A,
        hardware: "lf-cab-2".into(),
        compartments: vec![
            CompartmentInfo { id: comp("A1"), size: CompartmentSize::S, low: true },
            CompartmentInfo { id: comp("B2"), size: CompartmentSize::Xl, low: false },
        ],
        key_fingerprint: fx::cabinet_keys().public().fingerprint(),
        model: Some(fx::model()),
    });
    o.put("hello.json", env(1, hello.clone()).encode());
    let state = UpBody::State(Heartbeat {
        open_doors: vec![comp("A1")],
        occupied: vec![comp("A1"), comp("B2")],
        temperature_c: Some(21.5),
        journal_depth: 3,
        uptime_s: 86_400,
    });
    o.put("state.json", env(2, state.clone()).encode());
    let at = fx::now();
    let ev = |seq, what| CabinetEvent { id: Uuid::now_v7(), seq, at, what };
    let courier = CourierId::new("k-1").expect("a valid id");
    let events = UpBody::Events(EventBatch {
        events: vec![
            ev(1, EventKind::Deposit { parcel: parcel(1), compartment: comp("A1"), courier: courier.clone() }),
            ev(2, EventKind::Pickup { parcel: parcel(1), compartment: comp("A1"), method: PickupMethod::Face }),
            ev(3, EventKind::Collected { parcel: parcel(2), compartment: comp("B2"), courier }),
            ev(4, EventKind::FailedMatch { reason: "wrong_code".into() }),
            ev(5, EventKind::Alarm { code: "door_forced".into(), detail: "A1".into() }),
        ],
    });
    o.put("events.json", env(3, events).encode());
    let ota = UpBody::Ota(OtaReport {
        rollout: Uuid::now_v7(),
        status: OtaStatus::Downloading,
        detail: Some("resumed at byte 4096".into()),
        percent: Some(40),
    });
    o.put("ota.json", env(4, ota).encode());
    o.put("applied.json", env(5, UpBody::Applied(Applied { templates: Some(7), parcels: None })).encode());
    let session = Session { session: Uuid::now_v7() };
    o.put("presence_online.json", env(0, PresenceBody::Online(session)).encode());
    o.put("presence_offline.json", env(0, PresenceBody::Offline(session)).encode());

    // Malformed: each a different refusal.
    let good: Value = serde_json::from_slice(&env(2, state).encode()).expect("json");
    let mut v = good.clone();
    v["v"] = 2.into();
    o.json("bad_version.json", &v);
    let mut v = good.clone();
    v.as_object_mut().expect("object").remove("v");
    o.json("bad_missing_version.json", &v);
    let mut v = good.clone();
    v["body"]["data"]["surprise"] = true.into();
    o.json("bad_unknown_field.json", &v);
    let mut v = good.clone();
    v["id"] = Uuid::new_v4().to_string().into();
    o.json("bad_v4_id.json", &v);
    let mut v = good;
    v["cabinet"] = "a/#".into();
    o.json("bad_cabinet_id.json", &v);
    o.put("bad_wrong_direction.json", env(9, DownBody::Ack(Ack { events: vec![Uuid::now_v7()] })).encode());
    o.put("bad_not_json.txt", "{\"v\":1,");
    o.count
}

fn down(root: &Path) -> usize {
    let mut o = Out::new(root, "envelope_down");
    o.put("ack.json", env(1, DownBody::Ack(Ack { events: vec![Uuid::now_v7(), Uuid::now_v7()] })).encode());
    let mut ours = fx::seal_ours();
    ours.truncate(1); // the 4-float one keeps the seed small
    let templates = DownBody::Templates(TemplateSet { version: 4, add: ours, revoke: vec![parcel(9)] });
    o.put("templates.json", env(2, templates).encode());
    let parcels = DownBody::Parcels(ParcelSet {
        version: 12,
        parcels: vec![
            ExpectedParcel {
                parcel: parcel(1),
                compartment: comp("A1"),
                stage: ParcelStage::Ready,
                courier: None,
                code_hash: Some(
                    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY"
                        .into(),
                ),
                expires_at: fx::now() + Duration::hours(72),
            },
            ExpectedParcel {
                parcel: parcel(2),
                compartment: comp("B2"),
                stage: ParcelStage::Expected,
                courier: Some(CourierId::new("k-1").expect("a valid id")),
                code_hash: None,
                expires_at: fx::now() + Duration::hours(24),
            },
        ],
        courier_pass_keys: vec![pass::key_to_base64(&fx::pass_key().verifying_key())],
        settings: CabinetSettings { door_left_open_s: Some(300), lockout_s: Some(900), ..Default::default() },
    });
    o.put("parcels.json", env(3, parcels).encode());
    let offer = DownBody::Ota(OtaOffer {
        rollout: Uuid::now_v7(),
        url: "https://fleet.example.net/ota/0000000000000000000000000000000000000000000000000000000000001000".into(),
        manifest: fx::signed_manifests().remove(0),
        deadline: fx::now() + Duration::days(7),
        window: Some(InstallWindow { start_min: 120, end_min: 300 }),
    });
    o.put("ota_offer.json", env(4, offer).encode());
    let cmd = |action| DownBody::Cmd(Command { id: Uuid::now_v7(), action });
    o.put("cmd_open.json", env(5, cmd(CommandAction::OpenCompartment { compartment: comp("A1") })).encode());
    o.put("cmd_reboot.json", env(6, cmd(CommandAction::Reboot)).encode());
    o.put("cmd_cancel.json", env(7, cmd(CommandAction::CancelUpdate { rollout: Uuid::now_v7() })).encode());
    let task = CourierTask { parcel: parcel(3), cabinet: cab(), compartment: comp("B2"), due: fx::now() };
    o.put("courier_assignment.json", env(1, CourierBody::Assignment(task.clone())).encode());
    o.put("courier_collection.json", env(2, CourierBody::Collection(task.clone())).encode());
    o.put("courier_withdrawn.json", env(3, CourierBody::Withdrawn(task)).encode());

    let mut v: Value = serde_json::from_slice(&env(3, DownBody::Ack(Ack { events: vec![] })).encode()).expect("json");
    v["body"]["kind"] = "teleport".into();
    o.json("bad_unknown_kind.json", &v);
    let bad_settings = DownBody::Parcels(ParcelSet {
        version: 1,
        parcels: vec![],
        courier_pass_keys: vec![],
        settings: CabinetSettings { unlock_window_s: Some(1), ..Default::default() },
    });
    o.put("bad_settings_out_of_bounds.json", env(8, bad_settings).encode());
    o.put("bad_wrong_direction.json", env(9, UpBody::Applied(Applied { templates: None, parcels: Some(1) })).encode());
    o.count
}

fn sealed(root: &Path) -> usize {
    let mut o = Out::new(root, "sealed_template");
    for (i, s) in fx::seal_ours().iter().enumerate() {
        o.json(&format!("ours_{i}.json"), s);
    }
    for (reason, s) in fx::seal_refused() {
        o.json(&format!("refused_{reason}.json"), &s);
    }
    let base = fx::seal_ours().remove(0);
    let mut flipped = base.clone();
    let mut ct = B64.decode(&flipped.ciphertext).expect("base64");
    ct[0] ^= 1;
    flipped.ciphertext = B64.encode(ct);
    o.json("bad_ciphertext_altered.json", &flipped);
    let mut later = base.clone();
    later.binding.expires_at += Duration::hours(100);
    o.json("bad_binding_altered.json", &later);
    let mut enc = base;
    enc.enc = "not base64!".into();
    o.json("bad_enc.json", &enc);
    o.count
}

fn manifests(root: &Path) -> usize {
    let mut o = Out::new(root, "artifact_manifest");
    for (i, s) in fx::signed_manifests().iter().enumerate() {
        o.json(&format!("signed_{i}.json"), s);
    }
    o.json("bad_untrusted_key.json", &artifact::sign(fx::manifests().remove(0), &fx::stranger_key()));
    let mut altered = fx::signed_manifests().remove(0);
    altered.manifest.security_floor = "0.0.1".into();
    o.json("bad_altered.json", &altered);
    let mut garbled = fx::signed_manifests().remove(1);
    garbled.signature = "AAAA".into();
    o.json("bad_signature.json", &garbled);
    o.count
}

fn passes(root: &Path) -> usize {
    let mut o = Out::new(root, "courier_pass");
    for (i, p) in fx::passes().iter().enumerate() {
        o.put(&format!("pass_{i}.txt"), p);
    }
    let genuine = fx::passes().remove(0);
    let mut p: Value = serde_json::from_slice(&B64URL.decode(&genuine).expect("base64url")).expect("json");
    p["claims"]["courier"] = "k-2".into();
    o.put("bad_forged.txt", B64URL.encode(serde_json::to_vec(&p).expect("json")));
    o.put("bad_other_key.txt", pass::issue(fx::pass_claims().remove(0), &fx::stranger_key()));
    o.put("bad_not_a_pass.txt", "not a pass");
    o.count
}

fn topics(root: &Path) -> usize {
    let mut o = Out::new(root, "topic");
    for (name, text) in [
        ("up", "\nlf/v1/cab/cab-0017/up"),
        ("presence", "\nlf/v1/cab/c1/presence"),
        ("down", "\nlf/v1/cab/C_1.b/down"),
        ("courier", "\nlf/v1/courier/k-9/assignments"),
        ("namespaced", "staging\nstaging/lf/v1/cab/c1/up"),
        ("bad_wildcard", "\nlf/v1/cab/+/up"),
        ("bad_layout", "\nlf/v1/cab/c1/up/extra"),
        ("bad_foreign", "staging\nlf/v1/cab/c1/up"),
        ("bad_namespace", "a/b\na/b/lf/v1/cab/c1/up"),
        ("bad_sys", "\n$SYS/broker/clients"),
    ] {
        o.put(&format!("{name}.txt"), text);
    }
    o.count
}

fn api(root: &Path) -> usize {
    let mut o = Out::new(root, "api_bodies");
    let mut put = |name: &str, kind: &str, body: Value| {
        let mut bytes = format!("{kind}\n").into_bytes();
        bytes.extend(serde_json::to_vec(&body).expect("json"));
        o.put(&format!("{name}.txt"), bytes);
    };
    let key = fx::cabinet_keys().public().to_base64();
    put(
        "cabinet",
        "cabinet",
        json!({"id": "cab-1", "tenant": "acme", "name": "Main station", "public_key": key,
               "timezone": "Europe/Berlin", "location": {"lat": 52.52, "lon": 13.40},
               "compartments": [{"id": "A1", "size": "s"}, {"id": "A2", "size": "m", "low": true}],
               "tags": ["indoor", "pilot-berlin"]}),
    );
    put(
        "cabinet_minimal",
        "cabinet",
        json!({"id": "c2", "tenant": "t", "public_key": key, "compartments": [{"id": "X", "size": "xl"}]}),
    );
    put(
        "bad_cabinet_zero_key",
        "cabinet",
        json!({"id": "c3", "tenant": "t", "public_key": B64.encode([0u8; 32]), "compartments": [{"id": "X", "size": "l"}]}),
    );
    put(
        "bad_cabinet_duplicate",
        "cabinet",
        json!({"id": "c4", "tenant": "t", "public_key": key,
        "compartments": [{"id": "A", "size": "s"}, {"id": "A", "size": "m"}]}),
    );
    put("tags", "tags", json!(["indoor", "zone:north", "indoor"]));
    put("bad_tags", "tags", json!(["Indoor"]));
    put(
        "settings",
        "settings",
        json!({"door_left_open_s": 300, "unlock_window_s": 15, "max_failed_attempts": 5,
        "attempt_window_s": 600, "lockout_s": 900}),
    );
    put("bad_settings", "settings", json!({"lockout_s": 5}));
    put("manifest", "manifest", serde_json::to_value(fx::signed_manifests().remove(0)).expect("json"));
    put("rollout_default", "rollout", json!({"name": "spring", "artifact": Uuid::now_v7()}));
    put(
        "rollout_plan",
        "rollout",
        json!({"name": "canary", "artifact": Uuid::now_v7(), "include_new": true,
               "target": {"tags": ["pilot"], "hardware": ["lf-cab-2"], "region": "Europe/"},
               "plan": {"waves": [{"count": 1}, {"percent": 50.0}, {"percent": 100.0}],
                        "rate": {"per_minute": 2.0, "growth": 1.5, "max_per_minute": 20.0},
                        "success_share": 0.9, "soak_s": 600, "manual_approval": true,
                        "thresholds": {"failed": {"share": 0.1, "action": "pause"}},
                        "progress_timeout_s": 3600, "max_retries": 2, "retry_base_s": 60,
                        "silence_after_s": 900, "health_watch_s": 300,
                        "window": {"start_min": 1380, "end_min": 240}}}),
    );
    put(
        "enrolment",
        "enrolment",
        json!({"template": [0.1, -0.2, 0.3, 0.4], "model": fx::model(),
        "consent": {"given_at": fx::now(), "text_version": "consent-v3"}}),
    );
    put("tenant", "tenant", json!({"id": "acme", "name": "Acme Logistics"}));
    put(
        "tenant_settings",
        "tenant_settings",
        json!({"pickup_window_hours": 72, "custody": "operator",
        "webhook_url": "https://hooks.example.net/lockerfleet", "webhook_secret": "0123456789abcdef0123"}),
    );
    put("bad_tenant_settings_private", "tenant_settings", json!({"webhook_url": "http://[::1]:8080/x"}));
    put("courier", "courier", json!({"id": "k-1", "tenant": "acme", "name": "Kim"}));
    put("recipient", "recipient", json!({"reference": "R-1", "tenant": "acme"}));
    put(
        "parcel",
        "parcel",
        json!({"tenant": "acme", "reference": "TRK-1", "courier": "k-1", "size": "s",
        "need_low": true, "cabinet": "cab-1", "recipient": Uuid::now_v7()}),
    );
    put(
        "token",
        "token",
        json!({"name": "courier app", "role": "courier", "tenant": "acme", "courier": "k-1",
        "expires_in_hours": 12}),
    );
    o.count
}

fn config_server(root: &Path) -> usize {
    let mut o = Out::new(root, "config_server");
    o.put("default.toml", toml::to_string(&fleet_server::config::Config::default()).expect("toml"));
    o.put("empty.toml", "");
    o.put(
        "production.toml",
        "[http]\nlisten = \"0.0.0.0:8080\"\nmax_body_bytes = 2097152\n\n[mqtt]\nmode = \"external\"\n\
         url = \"mqtt://broker.internal:1883\"\nshared_group = \"fleet\"\nnamespace = \"prod\"\n\
         username = \"lockerfleet-server\"\npassword = \"secret\"\n\n[database]\n\
         url = \"postgres://fleet@db.internal/fleet\"\nmax_connections = 16\n\n[log]\nformat = \"json\"\n\
         level = \"info,sqlx=warn\"\n",
    );
    o.put(
        "keys.toml",
        format!(
            "[artifacts]\ntrusted_keys = [\"{}\"]\npublic_url = \"https://fleet.example.net\"\n\n[templates]\n\
             kek = \"{}\"\n\n[couriers]\npass_signing_key = \"{}\"\n\n[auth]\n\
             bootstrap_token = \"0123456789abcdef0123456789\"\n",
            B64.encode(fx::release_key().verifying_key().as_bytes()),
            B64.encode([3u8; 32]),
            B64.encode([4u8; 32]),
        ),
    );
    o.put("bad_unknown_key.toml", "[mqtt]\nlisten_adress = \"127.0.0.1:1\"\n");
    o.put("bad_type.toml", "[http]\nlisten = \"not an address\"\n");
    o.put("bad_value.toml", "[mqtt]\nnamespace = \"a/b\"\n");
    o.count
}

fn config_cabinet(root: &Path) -> usize {
    let mut o = Out::new(root, "config_cabinet");
    let mut cfg = edge_agent::config::AgentConfig::default();
    cfg.cabinet = "cab-0017".into();
    cfg.compartments =
        vec![edge_agent::config::CompartmentConfig { id: "A1".into(), size: CompartmentSize::M, low: true }];
    cfg.ota.trusted_keys = vec![B64.encode(fx::release_key().verifying_key().as_bytes())];
    o.put("default.toml", toml::to_string(&cfg).expect("toml"));
    o.put(
        "documented.toml",
        "cabinet = \"cab-0017\"\ndata_dir = \"/var/lib/lockerfleet\"\nheartbeat_s = 30\nresend_s = 10\n\
         journal_max_bytes = 67108864\nhttp_listen = \"127.0.0.1:9110\"\nsim_control = false\n\
         camera = \"synthetic\"\nlog_format = \"text\"\nunlock_window_s = 10\ndoor_left_open_s = 120\n\
         [mqtt]\nhost = \"fleet.example.net\"\nport = 1884\nnamespace = \"staging\"\n\
         [[compartments]]\nid = \"A1\"\nsize = \"s\"\nlow = true\n[[compartments]]\nid = \"B2\"\nsize = \"xl\"\n",
    );
    o.put("bad_no_compartments.toml", "cabinet = \"c1\"\n");
    o.put("bad_cabinet_id.toml", "cabinet = \"a/b\"\n[[compartments]]\nid = \"A1\"\nsize = \"s\"\n");
    o.put(
        "bad_face_without_models.toml",
        "cabinet = \"c1\"\n[face]\nenabled = true\n[[compartments]]\nid = \"A1\"\nsize = \"m\"\n",
    );
    o.count
}

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    let made = [
        ("envelope_up", up(&root)),
        ("envelope_down", down(&root)),
        ("sealed_template", sealed(&root)),
        ("artifact_manifest", manifests(&root)),
        ("courier_pass", passes(&root)),
        ("topic", topics(&root)),
        ("api_bodies", api(&root)),
        ("config_server", config_server(&root)),
        ("config_cabinet", config_cabinet(&root)),
    ];
    for (target, n) in made {
        eprintln!("{target}: {n} seeds");
    }
}
