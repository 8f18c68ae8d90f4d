//! The fleet-server's configuration file (`fleet-server.toml`), loaded from TOML text by
//! `Config::from_toml_str`: the same layering, deserialisation and validation as
//! `Config::load`, without the file system or the environment.
//!
//! Asserts: what loads is valid (validating again passes), and what the server derives
//! from a validated config on the promise of validation (the topic space, the
//! key-encryption key, the trusted release keys, the broker address) never panics; and a
//! loaded config written back as TOML loads again to the same values (secrets, which are
//! never written out, aside).
#![no_main]

use fleet_server::config::{BrokerMode, Config, parse_broker_url};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = Config::from_toml_str(text) else { return };
    cfg.validate().expect("a loaded config validates");
    let _ = cfg.topics();
    let _ = cfg.kek();
    cfg.artifacts.keys().expect("validated release keys decode");
    if cfg.mqtt.mode == BrokerMode::External {
        parse_broker_url(cfg.mqtt.url.as_deref().expect("validated")).expect("a validated broker url parses");
    }

    // Written back (secrets are skipped on purpose, so a login without its password would
    // not load again: leave those out of the round trip).
    if cfg.mqtt.username.is_some() {
        return;
    }
    let Ok(written) = toml::to_string(&cfg) else { return };
    let again =
        Config::from_toml_str(&written).unwrap_or_else(|e| panic!("written config does not load: {e}\n{written}"));
    assert_eq!(toml::to_string(&again).expect("serialises"), written, "round trip changed the config");
});
