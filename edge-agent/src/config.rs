//! The agent's configuration: defaults → `--config cabinet.toml` → `EDGE_*` environment
//! variables (`EDGE_MQTT__HOST`). Validated at start; a bad value names its key.

use std::path::{Path, PathBuf};

use lockerfleet_shared::envelope::CompartmentSize;
use lockerfleet_shared::{CabinetId, TopicSpace};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}` is invalid: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("configuration key `{0}` is not a key of ours: key names hold no `[` or `]`")]
    BracketedKey(String),
}

/// Refuses a key the `config` crate would read as an array index (see
/// [`lockerfleet_shared::config_text`]).
fn check_text(text: &str) -> Result<(), ConfigError> {
    match lockerfleet_shared::config_text::bracketed_key(text) {
        Some(key) => Err(ConfigError::BracketedKey(key)),
        None => Ok(()),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompartmentConfig {
    pub id: String,
    pub size: CompartmentSize,
    #[serde(default)]
    pub low: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub namespace: Option<String>,
    pub keep_alive_s: u64,
    /// How long one connection attempt may take, TCP to CONNACK, and how long a write to
    /// the broker may block. A broker admitting thousands of cabinets at once answers
    /// late; an attempt given up too early only adds a retry to its queue.
    pub connect_timeout_s: u64,
    /// A file holding this cabinet's MQTT password (its username is the cabinet id): the
    /// one the fleet-server issued at registration (`mqtt_credentials.password`).
    pub password_file: Option<PathBuf>,
    /// The CA certificate(s) (PEM) the broker's certificate must chain to. Set: the link
    /// speaks TLS (and `host` must be a name or address in the broker's certificate).
    pub ca_file: Option<PathBuf>,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1884,
            namespace: None,
            keep_alive_s: 30,
            connect_timeout_s: 20,
            password_file: None,
            ca_file: None,
        }
    }
}

impl MqttSettings {
    /// The link's TLS settings, when `ca_file` is set; the error names the key.
    pub fn tls(&self) -> Result<Option<std::sync::Arc<lockerfleet_shared::tls::rustls::ClientConfig>>, ConfigError> {
        let Some(path) = &self.ca_file else { return Ok(None) };
        let pem =
            std::fs::read(path).map_err(|e| invalid("mqtt.ca_file", format!("cannot read {}: {e}", path.display())))?;
        lockerfleet_shared::tls::client_config(&pem).map(Some).map_err(|e| invalid("mqtt.ca_file", e.to_string()))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// This cabinet's id, as registered with the fleet-server.
    pub cabinet: String,
    pub mqtt: MqttSettings,
    /// Where the journal, the key and the desired state live.
    pub data_dir: PathBuf,
    pub firmware: String,
    pub hardware: String,
    pub heartbeat_s: u64,
    /// How often unacked events are sent again while connected, in seconds.
    pub resend_s: u64,
    /// A released door not opened within this many seconds locks again.
    pub unlock_window_s: u64,
    /// A door open longer than this many seconds raises `door_left_open`.
    pub door_left_open_s: u64,
    /// Journal size limit in bytes (see the journal's documented policy when full).
    pub journal_max_bytes: u64,
    pub compartments: Vec<CompartmentConfig>,
    /// The local endpoint (`/healthz`, `/status`, `/metrics`).
    pub http_listen: std::net::SocketAddr,
    /// Serve `/sim/*` routes that play the simulated hardware. Never on a real cabinet.
    pub sim_control: bool,
    /// Where frames come from: `synthetic`, `dir:/path/to/frames` (PPM, JPEG, PNG), or
    /// `none` (no camera: face pickup is off and no camera or face thread runs).
    pub camera: String,
    /// `text` or `json` logs (on stderr, for journald).
    pub log_format: String,
    /// Face pickup with the ONNX pipeline (off unless enabled, with its models).
    pub face: FaceConfig,
    /// Updates: trusted release keys, health deadline, download retries.
    pub ota: crate::ota::OtaConfig,
    /// Simulation only: how far this cabinet's own clock is off the true time, in s
    /// (positive: ahead), as a dead RTC battery leaves it. Expiry still follows the
    /// server's clock once the server has spoken; the simulator's drift scenarios check it.
    pub sim_clock_offset_s: i64,
}

/// The `[face]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaceConfig {
    pub enabled: bool,
    /// The ONNX Runtime library and each model with its sha256 (see `docs/models.md`).
    pub models: Option<crate::vision::models::ModelSet>,
    pub quality: crate::vision::pipeline::QualityPolicy,
    pub pad: crate::vision::pad::PadPolicy,
    pub matching: crate::vision::matching::MatchPolicy,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            cabinet: String::new(),
            mqtt: MqttSettings::default(),
            data_dir: "data".into(),
            firmware: env!("CARGO_PKG_VERSION").into(),
            hardware: "lf-cab-sim".into(),
            heartbeat_s: 30,
            resend_s: 10,
            unlock_window_s: 10,
            door_left_open_s: 120,
            journal_max_bytes: 64 * 1024 * 1024,
            compartments: Vec::new(),
            http_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9110)),
            sim_control: false,
            camera: "synthetic".into(),
            log_format: "text".into(),
            face: FaceConfig::default(),
            ota: crate::ota::OtaConfig::default(),
            sim_clock_offset_s: 0,
        }
    }
}

/// The largest simulated clock error: ten years.
const MAX_CLOCK_OFFSET_S: u64 = 10 * 365 * 86_400;

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

impl AgentConfig {
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// [`AgentConfig::load`] with the environment given. Only `EDGE_*` variables that
    /// name one of the configuration's own keys are read: others (the command line's
    /// `EDGE_CONFIG`, a deployment's own) would be taken for unknown keys and stop the
    /// cabinet.
    pub fn load_with_env(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        // An unreadable file is left to the `config` crate, which names it in its error.
        if let Some(text) = file.and_then(|f| std::fs::read_to_string(f).ok()) {
            check_text(&text)?;
        }
        let mut b = config::Config::builder();
        if let Some(f) = file {
            b = b.add_source(config::File::from(f).required(true));
        }
        let known: std::collections::HashSet<String> = match serde_json::to_value(Self::default()) {
            Ok(serde_json::Value::Object(keys)) => keys.into_iter().map(|(k, _)| k).collect(),
            _ => std::collections::HashSet::new(),
        };
        let ours: config::Map<String, String> = vars
            .into_iter()
            .filter(|(k, _)| {
                k.strip_prefix("EDGE_")
                    .is_some_and(|rest| known.contains(&rest.split("__").next().unwrap_or(rest).to_ascii_lowercase()))
            })
            .collect();
        Self::from_builder(
            b.add_source(
                config::Environment::with_prefix("EDGE")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(ours)),
            ),
        )
    }

    /// Loads defaults → the TOML `text` of a `cabinet.toml`, without the file system or the
    /// environment: the same parsing and validation as [`AgentConfig::load`] (the fuzz
    /// target `config_cabinet` feeds it arbitrary text).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        check_text(text)?;
        Self::from_builder(config::Config::builder().add_source(config::File::from_str(text, config::FileFormat::Toml)))
    }

    /// Deserialises the layered sources and validates the result.
    fn from_builder(builder: config::ConfigBuilder<config::builder::DefaultState>) -> Result<Self, ConfigError> {
        let cfg: Self = builder.build()?.try_deserialize()?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        CabinetId::new(self.cabinet.clone()).map_err(|e| invalid("cabinet", e.to_string()))?;
        TopicSpace::new(self.mqtt.namespace.as_deref()).map_err(|e| invalid("mqtt.namespace", e.to_string()))?;
        self.mqtt.tls()?;
        if self.compartments.is_empty() {
            return Err(invalid("compartments", "a cabinet has at least one compartment"));
        }
        for c in &self.compartments {
            lockerfleet_shared::CompartmentId::new(c.id.clone()).map_err(|e| invalid("compartments", e.to_string()))?;
        }
        if self.unlock_window_s == 0 || self.door_left_open_s == 0 {
            return Err(invalid("door_left_open_s", "door timings must be at least 1 s"));
        }
        // Each timing becomes a deadline (`now + timing`); an unbounded one (`inf` in TOML
        // loads as the largest integer) would overflow the clock at its first use.
        for (key, value, lo, hi) in [
            ("unlock_window_s", self.unlock_window_s, 1, 3_600),
            ("door_left_open_s", self.door_left_open_s, 1, 86_400),
            ("heartbeat_s", self.heartbeat_s, 1, 86_400),
            ("resend_s", self.resend_s, 1, 86_400),
            ("mqtt.keep_alive_s", self.mqtt.keep_alive_s, 5, 65_535),
            ("mqtt.connect_timeout_s", self.mqtt.connect_timeout_s, 1, 600),
            ("ota.health_deadline_s", self.ota.health_deadline_s, 1, 86_400),
        ] {
            if !(lo..=hi).contains(&value) {
                return Err(invalid(key, format!("must be between {lo} and {hi} seconds")));
            }
        }
        if self.log_format != "text" && self.log_format != "json" {
            return Err(invalid("log_format", "is `text` or `json`"));
        }
        if self.camera != "synthetic" && self.camera != "none" && !self.camera.starts_with("dir:") {
            return Err(invalid("camera", "is `synthetic`, `none` or `dir:/path/to/frames`"));
        }
        if self.face.enabled {
            if self.face.models.is_none() {
                return Err(invalid("face.models", "face pickup needs the ONNX Runtime library and the four models"));
            }
            self.face.pad.check().map_err(|e| invalid("face.pad", e))?;
            self.face.matching.check().map_err(|e| invalid("face.matching", e))?;
        }
        self.ota.keys().map_err(|e| invalid("ota.trusted_keys", e))?;
        self.ota
            .factory_floor
            .parse::<lockerfleet_shared::artifact::Version>()
            .map_err(|e| invalid("ota.factory_floor", e.to_string()))?;
        if self.ota.restart != "exit" {
            return Err(invalid("ota.restart", "is `exit` (the service manager starts the agent again)"));
        }
        if self.sim_clock_offset_s.unsigned_abs() > MAX_CLOCK_OFFSET_S {
            return Err(invalid(
                "sim_clock_offset_s",
                format!("must be within ±{MAX_CLOCK_OFFSET_S} seconds (10 years)"),
            ));
        }
        if self.journal_max_bytes < 64 * 1024 {
            return Err(invalid("journal_max_bytes", "must be at least 65536"));
        }
        Ok(())
    }

    pub fn cabinet_id(&self) -> CabinetId {
        CabinetId::new(self.cabinet.clone()).expect("validated")
    }

    pub fn topics(&self) -> TopicSpace {
        TopicSpace::new(self.mqtt.namespace.as_deref()).expect("validated")
    }

    pub fn key_path(&self) -> PathBuf {
        self.data_dir.join("cabinet.key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_variables_set_keys_and_others_are_left_alone() {
        let vars = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cabinet.toml");
        std::fs::write(&file, "cabinet = \"cab-file\"\n[[compartments]]\nid = \"A1\"\nsize = \"s\"\n").unwrap();
        let cfg = AgentConfig::load_with_env(
            Some(&file),
            vars(&[
                ("EDGE_CABINET", "cab-env"),
                ("EDGE_MQTT__HOST", "broker.example"),
                ("EDGE_HEARTBEAT_S", "7"),
                // The command line's own variable, and someone else's.
                ("EDGE_CONFIG", "/etc/lockerfleet/cabinet.toml"),
                ("EDGE_ROUTER_MODEL", "x200"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.cabinet, "cab-env");
        assert_eq!(cfg.mqtt.host, "broker.example");
        assert_eq!(cfg.heartbeat_s, 7);
        // A known key with a bad value is still refused, and named.
        let err = AgentConfig::load_with_env(Some(&file), vars(&[("EDGE_HEARTBEAT_S", "often")])).unwrap_err();
        assert!(err.to_string().contains("heartbeat_s"), "{err}");
    }

    #[test]
    fn a_cabinet_toml_loads_from_text_and_a_bad_key_is_named() {
        let cfg = AgentConfig::from_toml_str(
            "cabinet = \"cab-0017\"\n[mqtt]\nport = 1885\n[[compartments]]\nid = \"A1\"\nsize = \"s\"\nlow = true\n",
        )
        .unwrap();
        assert_eq!(cfg.cabinet_id().as_str(), "cab-0017");
        assert_eq!(cfg.mqtt.port, 1885);
        assert_eq!(cfg.heartbeat_s, AgentConfig::default().heartbeat_s, "unset keys keep their defaults");

        let err = AgentConfig::from_toml_str("cabinet = \"c1\"\nheartbeat = 5\n").unwrap_err().to_string();
        assert!(err.contains("heartbeat"), "{err}");
        let err =
            AgentConfig::from_toml_str("cabinet = \"a/b\"\n[[compartments]]\nid = \"A1\"\nsize = \"s\"\n").unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { key: "cabinet", .. }), "{err}");
    }

    #[test]
    fn a_key_the_config_crate_reads_as_an_index_is_refused_not_a_panic() {
        // Found by the fuzz target `config_cabinet`: a capacity-overflow panic in `config`.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cabinet.toml");
        std::fs::write(&path, "'c[-9223372036854775808]' = ''\n").unwrap();
        let err = AgentConfig::load(Some(&path)).unwrap_err();
        assert!(matches!(err, ConfigError::BracketedKey(ref k) if k == "c[-9223372036854775808]"), "{err}");
        let err = AgentConfig::from_toml_str("[ota]\n'trusted_keys[99999999999]' = 'x'\n").unwrap_err();
        assert!(matches!(err, ConfigError::BracketedKey(_)), "{err}");
    }

    #[test]
    fn an_infinite_timing_is_refused_at_start_not_at_first_use() {
        // Found by the fuzz target `config_cabinet`: `inf` loaded as u64::MAX seconds, and
        // the first update's health deadline (`Instant::now() + that`) panicked.
        let base = "cabinet = \"c1\"\n[[compartments]]\nid = \"A1\"\nsize = \"s\"\n";
        for (key, extra) in [
            ("ota.health_deadline_s", "[ota]\nhealth_deadline_s = inf\n"),
            ("heartbeat_s", "heartbeat_s = 1e30\n"),
            ("mqtt.keep_alive_s", "[mqtt]\nkeep_alive_s = 0\n"),
        ] {
            let text = if extra.starts_with('[') { format!("{base}{extra}") } else { format!("{extra}{base}") };
            match AgentConfig::from_toml_str(&text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: expected a refusal naming it, got {other:?}"),
            }
        }
    }
}
