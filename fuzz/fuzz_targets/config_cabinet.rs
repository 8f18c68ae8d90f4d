//! The edge agent's `cabinet.toml`, loaded from TOML text by `AgentConfig::from_toml_str`:
//! the same layering, deserialisation and validation as `AgentConfig::load`, without the
//! file system or the environment.
//!
//! Asserts: what loads is valid (validating again passes), and what the agent derives
//! from a validated config on the promise of validation (its cabinet id, topic space,
//! trusted release keys, compartment ids, factory floor) never panics; and a loaded
//! config written back as TOML loads again to the same values.
#![no_main]

use edge_agent::config::AgentConfig;
use libfuzzer_sys::fuzz_target;
use lockerfleet_shared::CompartmentId;
use lockerfleet_shared::artifact::Version;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = AgentConfig::from_toml_str(text) else { return };
    cfg.validate().expect("a loaded config validates");
    let _ = (cfg.cabinet_id(), cfg.topics(), cfg.key_path());
    cfg.ota.keys().expect("validated release keys decode");
    cfg.ota.factory_floor.parse::<Version>().expect("a validated floor parses");
    for c in &cfg.compartments {
        CompartmentId::new(c.id.clone()).expect("validated compartment ids");
    }

    let Ok(written) = toml::to_string(&cfg) else { return };
    let again =
        AgentConfig::from_toml_str(&written).unwrap_or_else(|e| panic!("written config does not load: {e}\n{written}"));
    assert_eq!(toml::to_string(&again).expect("serialises"), written, "round trip changed the config");
});
