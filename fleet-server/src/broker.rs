//! The MQTT broker side: the embedded rumqttd, and the probe that tells whether a broker
//! (embedded or external) still accepts connections.
//!
//! rumqttd 0.20 has a known failure (upstream issue #1062): after a client refused for
//! `max_connections` reconnects with the same id, the router panics under a lock and the
//! broker refuses every later connection. Two things keep the embedded default out of it
//! and make it visible if it happens anyway:
//! * admission stays inside the limit: registration stops `reserved_connections` short of
//!   `max_connections` (see the cabinet registration handler);
//! * [`probe`] opens a fresh connection every `probe_interval_s`; `/readyz` and the
//!   `lockerfleet_broker_accepting` gauge report a broker that no longer accepts.
//!
//! It has a second one, found in our 10,000-cabinet rollout: its router can fall asleep
//! with connections still waiting in its ready queue. A connection that goes away while
//! queued stays in the queue; when the router's loop takes that stale entry first, it
//! finds nothing to do and blocks until the next event, however many live connections
//! are queued behind it. One of those may be a new connection whose CONNACK the listener
//! waits for synchronously (`LinkBuilder::build`), on the thread that also runs every
//! other remote connection: no event can come, and the broker is wedged for good. The
//! [`ticker`] keeps the router from sleeping longer than [`TICK`]: a local link that
//! publishes an empty message on a topic outside every namespace the server serves (no
//! client through the front door may subscribe to it).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockerfleet_shared::tls::rustls::ClientConfig;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, TlsConfiguration, Transport};

use crate::config::MqttConfig;
use lockerfleet_shared::topic::Filter;

/// Why the broker could not be started or reached.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot listen on {addr} (mqtt.listen): {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the embedded broker did not start listening on {0} within 5 s")]
    NotListening(SocketAddr),
    #[error("could not start the embedded broker thread: {0}")]
    Thread(std::io::Error),
}

/// How the server's own MQTT clients (link, outbox publisher, probe) reach the broker:
/// rumqttd's internal port in embedded mode, `mqtt.url` with its login and TLS otherwise.
#[derive(Debug, Clone)]
pub struct BrokerLink {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
    /// Present for an `mqtts://` broker.
    pub tls: Option<Arc<ClientConfig>>,
}

impl BrokerLink {
    /// A client with `opts` and its event loop, its socket without Nagle's delay.
    ///
    /// Every message the server sends is small and waits for an answer (a PUBACK, a
    /// SUBACK): with Nagle's algorithm on, a second message written before the first was
    /// acknowledged waits for the peer's delayed ACK, up to 40 ms on Linux — twice in a
    /// template's way to its cabinet. Measured at 1,000 cabinets on Mosquitto: see
    /// BENCHMARKS.md (sealed templates).
    pub fn client(opts: MqttOptions, capacity: usize) -> (AsyncClient, rumqttc::EventLoop) {
        let (client, mut eventloop) = AsyncClient::new(opts, capacity);
        let mut network = eventloop.network_options();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        (client, eventloop)
    }

    /// Client options with this address, login and transport.
    pub fn options(&self, client_id: String) -> MqttOptions {
        let mut opts = MqttOptions::new(client_id, self.host.clone(), self.port);
        if let Some((user, password)) = &self.credentials {
            opts.set_credentials(user.as_str(), password.as_str());
        }
        if let Some(tls) = &self.tls {
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone())));
        }
        opts
    }
}

/// A running embedded broker. Its threads live until the process exits: rumqttd 0.20 has
/// no way to stop a broker, so a graceful shutdown stops accepting work upstream of it.
#[derive(Debug)]
pub struct EmbeddedBroker {
    /// Where rumqttd itself listens.
    pub addr: SocketAddr,
}

/// rumqttd's settings derived from ours. rumqttd keeps one log per subscription filter
/// and holds at most `max_segment_size × max_segment_count` bytes of it; a reader that
/// falls further behind loses the oldest data. So the server's two wildcard filters (all
/// cabinets' `up` and `presence`) get `mqtt.ingest_buffer_mib` — a burst of cabinet
/// traffic waits there while the server commits — and every other filter (a cabinet's
/// own `down`, a courier's topic) 2 × 1 MiB, instead of the example config's 1 GB each.
fn rumqttd_config(cfg: &MqttConfig) -> rumqttd::Config {
    const SEGMENT: usize = 16 * 1024 * 1024;
    let topics = lockerfleet_shared::TopicSpace::new(cfg.namespace.as_deref()).unwrap_or_default();
    let server_log = rumqttd::SegmentConfig {
        max_segment_size: SEGMENT,
        max_segment_count: (cfg.ingest_buffer_mib * 1024 * 1024 / SEGMENT).max(1),
    };
    let custom: HashMap<String, rumqttd::SegmentConfig> = [Filter::AllCabinetUp, Filter::AllCabinetPresence]
        .into_iter()
        .filter_map(|f| topics.filter(f, None).ok())
        .map(|f| (f, server_log.clone()))
        .collect();
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        // Twice the server's own limit: payloads in between reach the server, which counts
        // and drops them (`too_large`) without the broker cutting the sender off.
        max_payload_size: cfg.max_payload_bytes.saturating_mul(2),
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "lockerfleet-v4".into(),
        listen: cfg.listen,
        tls: None,
        next_connection_delay_ms: cfg.next_connection_delay_ms,
        connections,
    };
    rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: cfg.max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: 1024 * 1024,
            max_segment_count: 2,
            custom_segment: Some(custom),
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Default::default()
    }
}

/// The embedded broker as the server runs it: `mqtt.listen` bound for the front door
/// (`crate::gateway`, which serves the returned socket), rumqttd on a free loopback port
/// that only the front door and the server's own clients reach.
pub fn start_behind_front_door(cfg: &MqttConfig) -> Result<(EmbeddedBroker, TcpListener), BrokerError> {
    let public = TcpListener::bind(cfg.listen).map_err(|source| BrokerError::Listen { addr: cfg.listen, source })?;
    let internal = MqttConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..cfg.clone() };
    Ok((start_embedded(&internal)?, public))
}

/// Starts rumqttd in its own threads on `cfg.listen`, with no login and no per-topic
/// checks (a standalone broker, as tests use it), and waits until it accepts TCP
/// connections.
pub fn start_embedded(cfg: &MqttConfig) -> Result<EmbeddedBroker, BrokerError> {
    // rumqttd only logs a bind failure from its own thread; bind here first so that a port
    // in use ends start-up with a message that names it.
    let listener = TcpListener::bind(cfg.listen).map_err(|source| BrokerError::Listen { addr: cfg.listen, source })?;
    let addr = listener.local_addr().map_err(|source| BrokerError::Listen { addr: cfg.listen, source })?;
    drop(listener);
    let mut settings = cfg.clone();
    settings.listen = addr;
    let mut broker = rumqttd::Broker::new(rumqttd_config(&settings));
    ticker(&broker)?;
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(BrokerError::Thread)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            tracing::debug!(%addr, "embedded MQTT broker (rumqttd) listening");
            return Ok(EmbeddedBroker { addr });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(BrokerError::NotListening(addr))
}

/// The longest the embedded router sleeps with work queued (see the module's notes).
pub const TICK: Duration = Duration::from_millis(25);
/// The topic the ticker publishes on: outside every namespace the server serves.
pub const TICK_TOPIC: &str = "lockerfleet-internal/router-tick";

/// Ticks the ticker's link may have waiting before the router is taken to have dropped
/// it (another unconfined client took its client id): about 25 s of ticks.
const MAX_TICKS_QUEUED: usize = 1_000;

/// Starts the thread that wakes rumqttd's router every [`TICK`]. Each wake is one empty
/// QoS 0 publish from a local link (no socket). With no subscriber the router keeps
/// nothing of it; what it costs is matching the topic against the broker's subscription
/// filters, 40 times a second.
fn ticker(broker: &rumqttd::Broker) -> Result<(), BrokerError> {
    let (mut tx, rx) = broker
        .link("lf-router-tick")
        .map_err(|e| BrokerError::Thread(std::io::Error::other(format!("the router's ticker link: {e}"))))?;
    std::thread::Builder::new()
        .name("rumqttd-tick".into())
        .spawn(move || {
            // Held for the thread's life: the router sends nothing to it (it subscribes
            // to nothing), but a dropped receiver would read as a closed link.
            let _rx = rx;
            loop {
                std::thread::sleep(TICK);
                // Waits only while the router's queue is full, that is while it is awake
                // anyway; fails only once the router is gone.
                match tx.publish(TICK_TOPIC, Vec::new()) {
                    Ok(queued) if queued > MAX_TICKS_QUEUED => {
                        // The router no longer reads this link: stop rather than fill it.
                        tracing::error!(
                            queued,
                            "the embedded broker's router ticker stopped: the router no longer takes its messages \
                             (another client connected as lf-router-tick?); /readyz still reports a broker that \
                             stops accepting"
                        );
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "the embedded broker's router ticker stopped");
                        return;
                    }
                }
            }
        })
        .map_err(BrokerError::Thread)?;
    Ok(())
}

/// Why a probe connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("broker refused or dropped the probe connection: {0}")]
    Connection(String),
    #[error("broker did not answer the probe's CONNECT within {0:?}")]
    Timeout(Duration),
}

/// [`probe_broker`] for a plain-TCP broker at `host:port`.
pub async fn probe(
    host: &str,
    port: u16,
    timeout: Duration,
    credentials: Option<&(String, String)>,
) -> Result<(), ProbeError> {
    let broker = BrokerLink { host: host.to_owned(), port, credentials: credentials.cloned(), tls: None };
    probe_broker(&broker, timeout).await
}

/// Opens a fresh MQTT connection with a unique client id and waits for its CONNACK.
pub async fn probe_broker(broker: &BrokerLink, timeout: Duration) -> Result<(), ProbeError> {
    let mut opts = broker.options(format!("lf-probe-{}", uuid::Uuid::new_v4().simple()));
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = BrokerLink::client(opts, 4);
    let wait = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(ProbeError::Connection(e.to_string())),
            }
        }
    };
    let result = match tokio::time::timeout(timeout, wait).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout(timeout)),
    };
    if result.is_ok() {
        // Say goodbye so the broker frees the slot at once.
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
    }
    result
}
