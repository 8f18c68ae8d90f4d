//! The fleet-server's one typed configuration.
//!
//! Loaded in three layers, later ones winning: built-in defaults → an optional TOML file
//! (`--config`, or `fleet-server.toml` in the working directory if present) →
//! environment variables prefixed `FLEET_` with `__` between levels
//! (`FLEET_DATABASE__URL`, `FLEET_MQTT__URL`, `FLEET_HTTP__LISTEN`). Unknown keys are
//! refused, and [`Config::validate`] checks every value before anything starts, so a typo
//! ends the process with a message that names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lockerfleet_shared::envelope::DEFAULT_MAX_PAYLOAD_BYTES;
use lockerfleet_shared::{TopicSpace, tls};
use serde::{Deserialize, Serialize};

/// Why the configuration cannot be used.
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

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub mqtt: MqttConfig,
    pub database: DatabaseConfig,
    pub presence: PresenceConfig,
    pub auth: AuthConfig,
    pub parcels: ParcelsConfig,
    pub ingest: IngestConfig,
    pub outbox: OutboxConfig,
    pub templates: TemplatesConfig,
    pub couriers: CouriersConfig,
    pub webhooks: WebhooksConfig,
    pub artifacts: ArtifactsConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArtifactsConfig {
    /// Where uploaded OTA artifacts are kept, named by their sha256.
    pub dir: PathBuf,
    /// Release public keys (base64 Ed25519) whose signatures the server accepts; an
    /// upload signed by any other key is refused. Cabinets trust their own list.
    pub trusted_keys: Vec<String>,
    /// Largest artifact accepted, bytes.
    pub max_bytes: u64,
    /// Base URL cabinets download from (`{public_url}/ota/{sha256}`); default: the
    /// API's own address.
    pub public_url: Option<String>,
    /// How often this replica runs the rollout conductors it holds, milliseconds.
    pub conduct_interval_ms: u64,
}

impl Default for ArtifactsConfig {
    fn default() -> Self {
        Self {
            dir: "artifacts".into(),
            trusted_keys: Vec::new(),
            max_bytes: 1 << 30,
            public_url: None,
            conduct_interval_ms: 1000,
        }
    }
}

impl ArtifactsConfig {
    /// The trusted release keys, decoded.
    pub fn keys(&self) -> Result<Vec<ed25519_dalek::VerifyingKey>, String> {
        lockerfleet_shared::artifact::parse_keys("trusted_keys", &self.trusted_keys)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// How long a relay owns the rows it claimed before another replica may deliver them,
    /// in s: how long notifications claimed by a replica that died wait to be taken over.
    /// Longer than a pass can take (a slow webhook is bounded by its 5 s timeout).
    pub claim_lease_s: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { claim_lease_s: 30 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParcelsConfig {
    /// How far away a cabinet may be to take a parcel when the chosen one is full, in km.
    pub max_alternative_km: f64,
    /// How often parcels past their deadline are expired (and lapsed reservations freed), in s.
    pub expiry_sweep_s: u64,
    /// Replaces every tenant's pickup window (whole hours) by this many seconds, for the
    /// simulator and tests that need parcels to expire within a run. Unset in production.
    pub pickup_window_s: Option<u64>,
}

impl Default for ParcelsConfig {
    fn default() -> Self {
        Self { max_alternative_km: 5.0, expiry_sweep_s: 30, pickup_window_s: None }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Allow webhook URLs on loopback, private or link-local addresses. Off by default:
    /// a tenant's URL must not reach the operator's internal services.
    pub allow_private_targets: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CouriersConfig {
    /// Ed25519 seed (32 bytes, base64) that signs courier passes. Unset: one is made on
    /// first start and kept in the database, shared by every replica.
    #[serde(skip_serializing)]
    pub pass_signing_key: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplatesConfig {
    /// Key-encryption key (32 bytes, base64) for operator-held templates. Needed only by
    /// tenants with operator custody; keep it in a secret store, not in a file.
    #[serde(skip_serializing)]
    pub kek: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Most events written in one transaction.
    pub max_batch: usize,
    /// Longest an event waits for its batch to fill, in ms.
    pub max_wait_ms: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self { max_batch: 1000, max_wait_ms: 5 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A fleet-admin API token secret to register at start (for automation). Unset: if no
    /// fleet admin exists yet, one is generated and written to `token_file`.
    pub bootstrap_token: Option<String>,
    /// Where a generated admin token is written (mode 0600).
    pub token_file: PathBuf,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { bootstrap_token: None, token_file: "lockerfleet-admin.token".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where the REST API, `/metrics`, `/healthz` and `/readyz` listen.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

/// Which broker the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerMode {
    /// Run rumqttd inside this process (the single-node default).
    Embedded,
    /// Connect to the broker at `mqtt.url` (Mosquitto, EMQX, VerneMQ…).
    External,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    pub mode: BrokerMode,
    /// Embedded mode: where the broker's front door listens (cabinets and couriers log in
    /// there with the credentials registration issued; rumqttd itself listens on an
    /// internal loopback port).
    pub listen: SocketAddr,
    /// Embedded mode: certificate chain (PEM, leaf first) of the front door. With
    /// `tls_key`, the listener speaks only TLS.
    pub tls_cert: Option<PathBuf>,
    /// Embedded mode: the private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Embedded mode: refuse connections without a login. Default: true unless `listen`
    /// is a loopback address; false is refused for any other address.
    pub require_auth: Option<bool>,
    /// Embedded mode: put the front door (logins, per-topic ACL, TLS) in front of
    /// rumqttd. `false` lets rumqttd itself listen on `mqtt.listen`, with no login and no
    /// per-topic checks, and is refused unless `listen` is a loopback address. It exists
    /// for measuring the broker alone (BENCHMARKS.md): the front door holds two more
    /// descriptors per connection (its socket to rumqttd and rumqttd's end).
    pub front_door: bool,
    /// HMAC key (32 bytes, base64) that issued MQTT secrets are hashed under. Unset: one
    /// is made on first start and kept in the database.
    #[serde(skip_serializing)]
    pub credential_key: Option<String>,
    /// External mode: `mqtt://host:port`, or `mqtts://host:port` for TLS.
    pub url: Option<String>,
    /// External mode with `mqtts://`: the CA certificate(s) (PEM) the broker's
    /// certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// Optional topic namespace, so several deployments can share one broker.
    pub namespace: Option<String>,
    /// Shared-subscription group: set it when several replicas consume one broker, so each
    /// cabinet message reaches exactly one of them.
    pub shared_group: Option<String>,
    /// The server's MQTT client id; a random one per process when unset.
    pub client_id: Option<String>,
    /// Payloads above this are refused before parsing (counted as `too_large`).
    pub max_payload_bytes: usize,
    /// Embedded broker: most simultaneous connections. Registration stops short of it, so
    /// the broker is never driven into refusing a registered cabinet.
    pub max_connections: usize,
    /// Connections kept free for the server's own link, the readiness probe and tools.
    pub reserved_connections: usize,
    /// Embedded broker: pause between accepted connections, in ms (0 = none).
    pub next_connection_delay_ms: u64,
    /// Embedded broker: how much cabinet traffic (MiB) may wait for the server to read it
    /// during a burst; beyond it the broker drops the oldest and cabinets resend it from
    /// their journals.
    pub ingest_buffer_mib: usize,
    /// Keep-alive of the server's own connection, in seconds.
    pub keep_alive_s: u64,
    /// How often the readiness probe opens a fresh connection to the broker, in seconds.
    pub probe_interval_s: u64,
    /// Login on an external broker that wants one (deploy/mosquitto: `lockerfleet-server`).
    pub username: Option<String>,
    /// Its password; never printed by `check-config`.
    #[serde(skip_serializing)]
    pub password: Option<String>,
}

impl MqttConfig {
    /// The login the server's MQTT clients use, if any.
    pub fn credentials(&self) -> Option<(String, String)> {
        self.username.clone().zip(self.password.clone())
    }

    /// Whether the embedded broker's front door refuses connections without a login.
    pub fn require_auth(&self) -> bool {
        self.require_auth.unwrap_or(!self.listen.ip().is_loopback())
    }

    /// The front door's TLS settings, read from `tls_cert` and `tls_key`, when both are set.
    pub fn server_tls(&self) -> Result<Option<Arc<tls::rustls::ServerConfig>>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let cert_pem = read_file("mqtt.tls_cert", cert)?;
        let key_pem = read_file("mqtt.tls_key", key)?;
        tls::server_config(&cert_pem, &key_pem).map(Some).map_err(|e| {
            let key_named = matches!(e, tls::TlsError::NoKey);
            invalid(if key_named { "mqtt.tls_key" } else { "mqtt.tls_cert" }, e.to_string())
        })
    }

    /// TLS settings for the server's own clients of an external `mqtts://` broker.
    pub fn client_tls(&self) -> Result<Option<Arc<tls::rustls::ClientConfig>>, ConfigError> {
        let Some(url) = &self.url else { return Ok(None) };
        if !parse_broker_url(url)?.tls {
            return Ok(None);
        }
        let ca = self.ca_file.as_ref().ok_or_else(|| invalid("mqtt.ca_file", "must be set for an mqtts:// url"))?;
        let pem = read_file("mqtt.ca_file", ca)?;
        tls::client_config(&pem).map(Some).map_err(|e| invalid("mqtt.ca_file", e.to_string()))
    }
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path?mode=rwc` (default) or `postgres://user@host/db`.
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// How often heartbeat times are written to the database, in ms. Transitions
    /// (online, offline, hello) are written at once.
    pub flush_interval_ms: u64,
    /// A cabinet silent for this long is marked offline even without a last will, in s.
    pub stale_after_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `info,fleet_server=debug`.
    pub level: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 8080)), max_body_bytes: 1024 * 1024 }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            mode: BrokerMode::Embedded,
            // 1883 is left to a system broker (many machines run Mosquitto there).
            listen: SocketAddr::from(([127, 0, 0, 1], 1884)),
            tls_cert: None,
            tls_key: None,
            require_auth: None,
            front_door: true,
            credential_key: None,
            url: None,
            ca_file: None,
            namespace: None,
            shared_group: None,
            client_id: None,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_connections: 10_100,
            reserved_connections: 50,
            next_connection_delay_ms: 0,
            ingest_buffer_mib: 128,
            keep_alive_s: 30,
            probe_interval_s: 10,
            username: None,
            password: None,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: "sqlite://lockerfleet.db?mode=rwc".into(), max_connections: 8 }
    }
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { flush_interval_ms: 2_000, stale_after_s: 90 }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            // rumqttd logs every dropped client as an error; its health is watched by the
            // readiness probe instead. `log.level = "info,rumqttd=warn"` brings it back.
            level: "info,rumqttd=off,sqlx=warn".into(),
        }
    }
}

/// Where an external broker is, parsed from `mqtt.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS, trusting `mqtt.ca_file`.
    pub tls: bool,
}

impl Config {
    /// Loads defaults → `file` (if given; else `fleet-server.toml` if present) → `FLEET_*`.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        // An unreadable file is left to the `config` crate, which names it in its error.
        if let Ok(text) = std::fs::read_to_string(file.unwrap_or(Path::new("fleet-server.toml"))) {
            check_text(&text)?;
        }
        let mut builder = config::Config::builder();
        match file {
            Some(path) => builder = builder.add_source(config::File::from(path).required(true)),
            None => builder = builder.add_source(config::File::with_name("fleet-server").required(false)),
        }
        // Only `FLEET_<SECTION>__<KEY>` are configuration. Other `FLEET_*` variables (the
        // command line's own `FLEET_CONFIG`, or a deployment's) would otherwise be read as
        // unknown top-level keys and stop the server.
        let keys: config::Map<String, String> = std::env::vars()
            .filter(|(k, _)| k.strip_prefix("FLEET_").is_some_and(|rest| rest.contains("__")))
            .collect();
        Self::from_builder(
            builder.add_source(
                config::Environment::with_prefix("FLEET")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(keys)),
            ),
        )
    }

    /// Loads defaults → the TOML `text`, without the file system or the environment: the
    /// same parsing and validation as [`Config::load`] (the fuzz target `config_server`
    /// feeds it arbitrary text).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        check_text(text)?;
        Self::from_builder(config::Config::builder().add_source(config::File::from_str(text, config::FileFormat::Toml)))
    }

    /// Deserialises the layered sources and validates the result.
    fn from_builder(builder: config::ConfigBuilder<config::builder::DefaultState>) -> Result<Self, ConfigError> {
        let cfg: Config = builder.build()?.try_deserialize()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The configuration as `check-config` shows it: secrets are never serialised, and the
    /// ones that sit inside other values (a database URL's password, the bootstrap token)
    /// are masked.
    pub fn redacted(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(url) = v.pointer_mut("/database/url") {
            *url = serde_json::Value::String(mask_url_password(&self.database.url));
        }
        if let Some(t) = v.pointer_mut("/auth/bootstrap_token")
            && !t.is_null()
        {
            *t = serde_json::Value::String("(set, not shown)".into());
        }
        v
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.artifacts.keys().map_err(|e| invalid("artifacts.trusted_keys", e))?;
        if !(50..=60_000).contains(&self.artifacts.conduct_interval_ms) {
            return Err(invalid("artifacts.conduct_interval_ms", "must be between 50 and 60000"));
        }
        if self.artifacts.max_bytes == 0 {
            return Err(invalid("artifacts.max_bytes", "must be positive"));
        }
        if let Some(u) = &self.artifacts.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(invalid("artifacts.public_url", "is an http:// or https:// URL"));
        }
        if self.http.max_body_bytes < 1024 {
            return Err(invalid("http.max_body_bytes", "must be at least 1024"));
        }
        let m = &self.mqtt;
        match m.mode {
            BrokerMode::External => {
                let url = m
                    .url
                    .as_deref()
                    .ok_or_else(|| invalid("mqtt.url", "must be set when mqtt.mode is \"external\""))?;
                parse_broker_url(url)?;
                self.mqtt.client_tls()?;
                for (key, set) in [
                    ("mqtt.tls_cert", m.tls_cert.is_some()),
                    ("mqtt.tls_key", m.tls_key.is_some()),
                    ("mqtt.require_auth", m.require_auth.is_some()),
                    ("mqtt.front_door", !m.front_door),
                ] {
                    if set {
                        return Err(invalid(
                            key,
                            "is for the embedded broker; an external broker has its own settings",
                        ));
                    }
                }
            }
            BrokerMode::Embedded => {
                if m.tls_cert.is_some() != m.tls_key.is_some() {
                    let key = if m.tls_cert.is_some() { "mqtt.tls_key" } else { "mqtt.tls_cert" };
                    return Err(invalid(key, "mqtt.tls_cert and mqtt.tls_key are set together"));
                }
                m.server_tls()?;
                if m.require_auth == Some(false) && !m.listen.ip().is_loopback() {
                    return Err(invalid(
                        "mqtt.require_auth",
                        format!(
                            "may be false only on a loopback mqtt.listen (not {}): anyone who reaches the port could publish as any cabinet",
                            m.listen
                        ),
                    ));
                }
                if !m.front_door {
                    if !m.listen.ip().is_loopback() {
                        return Err(invalid(
                            "mqtt.front_door",
                            format!(
                                "may be false only on a loopback mqtt.listen (not {}): without it anyone who reaches the port could publish as any cabinet",
                                m.listen
                            ),
                        ));
                    }
                    if m.tls_cert.is_some() || m.require_auth == Some(true) {
                        return Err(invalid(
                            "mqtt.front_door",
                            "is false, but TLS and logins (mqtt.tls_cert, mqtt.require_auth) are the front door's",
                        ));
                    }
                }
                if m.ca_file.is_some() {
                    return Err(invalid("mqtt.ca_file", "is for an external mqtts:// broker"));
                }
                if m.url.is_some() {
                    return Err(invalid(
                        "mqtt.url",
                        "is only used with mqtt.mode = \"external\"; set the mode or remove the url",
                    ));
                }
                if m.max_connections <= m.reserved_connections {
                    return Err(invalid(
                        "mqtt.max_connections",
                        format!("must exceed mqtt.reserved_connections ({})", m.reserved_connections),
                    ));
                }
            }
        }
        if m.username.is_some() != m.password.is_some() {
            return Err(invalid("mqtt.username", "is given together with mqtt.password"));
        }
        if m.username.is_some() && m.mode == BrokerMode::Embedded {
            return Err(invalid("mqtt.username", "is for an external broker; the embedded one takes no login"));
        }
        TopicSpace::new(m.namespace.as_deref()).map_err(|e| invalid("mqtt.namespace", e.to_string()))?;
        if let Some(g) = &m.shared_group {
            TopicSpace::default()
                .filter(lockerfleet_shared::topic::Filter::AllCabinetUp, Some(g))
                .map_err(|e| invalid("mqtt.shared_group", e.to_string()))?;
        }
        if let Some(k) = &m.credential_key {
            crate::gateway::credentials::parse_key(k).map_err(|e| invalid("mqtt.credential_key", e))?;
        }
        if let Some(id) = &m.client_id
            && (id.is_empty() || id.len() > 64)
        {
            return Err(invalid("mqtt.client_id", "must be 1-64 characters"));
        }
        if !(4096..=64 * 1024 * 1024).contains(&m.max_payload_bytes) {
            return Err(invalid("mqtt.max_payload_bytes", "must be between 4096 and 67108864"));
        }
        if !(16..=4096).contains(&m.ingest_buffer_mib) {
            return Err(invalid("mqtt.ingest_buffer_mib", "must be 16-4096"));
        }
        if m.keep_alive_s < 5 {
            return Err(invalid("mqtt.keep_alive_s", "must be at least 5"));
        }
        if m.probe_interval_s == 0 {
            return Err(invalid("mqtt.probe_interval_s", "must be at least 1"));
        }
        let url = &self.database.url;
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid("database.url", format!("{url:?} is neither sqlite:… nor postgres://…")));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if self.presence.flush_interval_ms == 0 {
            return Err(invalid("presence.flush_interval_ms", "must be at least 1"));
        }
        if let Some(t) = &self.auth.bootstrap_token
            && t.len() < 24
        {
            return Err(invalid("auth.bootstrap_token", "must be at least 24 characters"));
        }
        if !(0.0..=1000.0).contains(&self.parcels.max_alternative_km) {
            return Err(invalid("parcels.max_alternative_km", "must be between 0 and 1000"));
        }
        if self.outbox.claim_lease_s < 10 {
            return Err(invalid(
                "outbox.claim_lease_s",
                "must be at least 10 (a pass with a slow webhook takes up to 5 s)",
            ));
        }
        if self.parcels.expiry_sweep_s == 0 {
            return Err(invalid("parcels.expiry_sweep_s", "must be at least 1"));
        }
        if let Some(w) = self.parcels.pickup_window_s
            && !(1..=30 * 86_400).contains(&w)
        {
            return Err(invalid("parcels.pickup_window_s", "must be 1-2592000 seconds (30 days)"));
        }
        if !(1..=10_000).contains(&self.ingest.max_batch) {
            return Err(invalid("ingest.max_batch", "must be 1-10000"));
        }
        if let Some(k) = &self.couriers.pass_signing_key {
            crate::service::passes::PassSigner::from_base64(k).map_err(|e| invalid("couriers.pass_signing_key", e))?;
        }
        if let Some(k) = &self.templates.kek {
            crate::service::templates::Kek::from_base64(k).map_err(|e| invalid("templates.kek", e))?;
        }
        if self.presence.stale_after_s == 0 {
            return Err(invalid("presence.stale_after_s", "must be at least 1"));
        }
        // Each period becomes a timer deadline (`now + period`); an unbounded one (`inf` in
        // TOML loads as the largest integer) would overflow the clock when the timer is set.
        for (key, value, hi) in [
            ("presence.flush_interval_ms", self.presence.flush_interval_ms, 3_600_000),
            ("presence.stale_after_s", self.presence.stale_after_s, 86_400),
            ("parcels.expiry_sweep_s", self.parcels.expiry_sweep_s, 86_400),
            ("ingest.max_wait_ms", self.ingest.max_wait_ms, 60_000),
            ("mqtt.keep_alive_s", m.keep_alive_s, 65_535),
            ("mqtt.probe_interval_s", m.probe_interval_s, 86_400),
            ("mqtt.next_connection_delay_ms", m.next_connection_delay_ms, 60_000),
        ] {
            if value > hi {
                return Err(invalid(key, format!("must be at most {hi}")));
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| invalid("log.level", e.to_string()))?;
        Ok(())
    }

    /// The topic space all topics are built in.
    pub fn topics(&self) -> TopicSpace {
        TopicSpace::new(self.mqtt.namespace.as_deref()).expect("validated in Config::validate")
    }

    /// The key-encryption key, when configured (validated in [`Config::validate`]).
    pub fn kek(&self) -> Option<Arc<crate::service::templates::Kek>> {
        self.templates
            .kek
            .as_deref()
            .map(|k| Arc::new(crate::service::templates::Kek::from_base64(k).expect("validated")))
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.presence.flush_interval_ms)
    }

    pub fn stale_after(&self) -> Duration {
        Duration::from_secs(self.presence.stale_after_s)
    }
}

/// `scheme://user:password@host/…` with the password replaced by `***`.
fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let masked = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    match path {
        Some(p) => format!("{scheme}://{masked}/{p}"),
        None => format!("{scheme}://{masked}"),
    }
}

/// Parses `mqtt://host:port` (port defaults to 1883) or `mqtts://host:port` (8883).
pub fn parse_broker_url(url: &str) -> Result<BrokerAddr, ConfigError> {
    let (rest, tls) = if let Some(r) = url.strip_prefix("mqtts://").or_else(|| url.strip_prefix("ssl://")) {
        (r, true)
    } else {
        let r = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
            .ok_or_else(|| invalid("mqtt.url", format!("{url:?} must start with mqtt:// or mqtts://")))?;
        (r, false)
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| invalid("mqtt.url", format!("port {p:?} is not a number")))?),
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err(invalid("mqtt.url", format!("{url:?} has no host")));
    }
    Ok(BrokerAddr { host: host.trim_start_matches('[').trim_end_matches(']').to_owned(), port, tls })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_embedded() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.mqtt.mode, BrokerMode::Embedded);
        assert!(c.database.url.starts_with("sqlite:"));
    }

    #[test]
    fn check_config_shows_no_secret() {
        let mut c = Config::default();
        c.database.url = "postgres://lf:hunter2@db.internal:5432/lockerfleet?sslmode=require".into();
        c.auth.bootstrap_token = Some("lf_bootstrap-secret-0123456789abcdef".into());
        c.mqtt.password = Some("mqtt-secret".into());
        c.templates.kek = Some("a2VrLXNlY3JldA==".into());
        let shown = c.redacted().to_string();
        for secret in ["hunter2", "lf_bootstrap-secret", "mqtt-secret", "a2VrLXNlY3JldA"] {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
        }
        assert!(shown.contains("postgres://lf:***@db.internal:5432/lockerfleet?sslmode=require"), "{shown}");
        assert_eq!(mask_url_password("sqlite://lockerfleet.db?mode=rwc"), "sqlite://lockerfleet.db?mode=rwc");
    }

    #[test]
    fn each_bad_value_names_its_key() {
        type Mutation = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("mqtt.url", Box::new(|c| c.mqtt.mode = BrokerMode::External)),
            (
                "mqtt.url",
                Box::new(|c| {
                    c.mqtt.mode = BrokerMode::External;
                    c.mqtt.url = Some("http://x".into());
                }),
            ),
            ("mqtt.namespace", Box::new(|c| c.mqtt.namespace = Some("a/b".into()))),
            ("mqtt.shared_group", Box::new(|c| c.mqtt.shared_group = Some("#".into()))),
            ("database.url", Box::new(|c| c.database.url = "mysql://x".into())),
            ("log.level", Box::new(|c| c.log.level = "info,=[".into())),
            ("mqtt.max_connections", Box::new(|c| c.mqtt.max_connections = 10)),
            ("mqtt.tls_key", Box::new(|c| c.mqtt.tls_cert = Some("cert.pem".into()))),
            ("mqtt.tls_cert", Box::new(|c| c.mqtt.tls_key = Some("key.pem".into()))),
            (
                "mqtt.tls_cert",
                Box::new(|c| {
                    c.mqtt.tls_cert = Some("/nonexistent/cert.pem".into());
                    c.mqtt.tls_key = Some("/nonexistent/key.pem".into());
                }),
            ),
            (
                "mqtt.require_auth",
                Box::new(|c| {
                    c.mqtt.listen = SocketAddr::from(([0, 0, 0, 0], 1884));
                    c.mqtt.require_auth = Some(false);
                }),
            ),
            (
                "mqtt.front_door",
                Box::new(|c| {
                    c.mqtt.listen = SocketAddr::from(([0, 0, 0, 0], 1884));
                    c.mqtt.front_door = false;
                }),
            ),
            (
                "mqtt.front_door",
                Box::new(|c| {
                    c.mqtt.front_door = false;
                    c.mqtt.require_auth = Some(true);
                }),
            ),
            ("mqtt.credential_key", Box::new(|c| c.mqtt.credential_key = Some("c2hvcnQ=".into()))),
            (
                "mqtt.ca_file",
                Box::new(|c| {
                    c.mqtt.mode = BrokerMode::External;
                    c.mqtt.url = Some("mqtts://broker:8883".into());
                }),
            ),
            ("outbox.claim_lease_s", Box::new(|c| c.outbox.claim_lease_s = 2)),
            // `inf` in a TOML file loads as u64::MAX; as a timer period it overflows the clock.
            ("presence.stale_after_s", Box::new(|c| c.presence.stale_after_s = u64::MAX)),
            ("mqtt.keep_alive_s", Box::new(|c| c.mqtt.keep_alive_s = u64::MAX)),
        ];
        for (key, mutate) in cases {
            let mut c = Config::default();
            mutate(&mut c);
            match c.validate() {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("expected {key} to be refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_front_door_requires_a_login_unless_on_loopback() {
        let mut m = MqttConfig::default();
        assert!(!m.require_auth(), "the loopback default stays open for local tools");
        m.listen = SocketAddr::from(([0, 0, 0, 0], 1884));
        assert!(m.require_auth());
        m.listen = SocketAddr::from(([127, 0, 0, 1], 1884));
        m.require_auth = Some(true);
        assert!(m.require_auth());
    }

    #[test]
    fn an_unknown_key_in_a_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[mqtt]\nlisten_adress = \"127.0.0.1:1\"\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("listen_adress"), "{err}");
    }

    #[test]
    fn a_wrong_type_in_a_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[http]\nlisten = \"not an address\"\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn toml_text_loads_like_a_file() {
        let cfg = Config::from_toml_str("[mqtt]\nmode = \"external\"\nurl = \"mqtt://b:1883\"\n").unwrap();
        assert_eq!(cfg.mqtt.mode, BrokerMode::External);
        assert_eq!(cfg.http.max_body_bytes, HttpConfig::default().max_body_bytes, "unset keys keep their defaults");
        let err = Config::from_toml_str("[mqtt]\nlisten_adress = \"127.0.0.1:1\"\n").unwrap_err().to_string();
        assert!(err.contains("listen_adress"), "{err}");
        let err = Config::from_toml_str("[mqtt]\nnamespace = \"a/b\"\n").unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { key: "mqtt.namespace", .. }), "{err}");
        // Found by `config_cabinet` (the same loader): the `config` crate panicked on it.
        let err = Config::from_toml_str("'c[-9223372036854775808]' = ''\n").unwrap_err();
        assert!(matches!(err, ConfigError::BracketedKey(ref k) if k == "c[-9223372036854775808]"), "{err}");
        let err = Config::from_toml_str("[parcels]\nexpiry_sweep_s = inf\n").unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { key: "parcels.expiry_sweep_s", .. }), "{err}");
    }

    #[test]
    fn broker_urls_parse() {
        assert_eq!(
            parse_broker_url("mqtt://127.0.0.1:1883").unwrap(),
            BrokerAddr { host: "127.0.0.1".into(), port: 1883, tls: false }
        );
        assert_eq!(parse_broker_url("mqtt://broker").unwrap().port, 1883);
        assert_eq!(
            parse_broker_url("mqtts://broker").unwrap(),
            BrokerAddr { host: "broker".into(), port: 8883, tls: true }
        );
        assert!(parse_broker_url("mqtt://:1883").is_err());
        assert!(parse_broker_url("mqtt://h:x").is_err());
    }
}
