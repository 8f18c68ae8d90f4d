//! # fleet-server
//!
//! The central actix actor system of Lockerfleet: it registers cabinets, follows their
//! presence over MQTT and serves the operator API.
//!
//! ```text
//!   config.rs   one typed Config: defaults → TOML file → FLEET_* environment
//!   broker.rs   the embedded rumqttd and the broker readiness probe
//!   gateway/    the embedded broker's front door: TLS, logins, per-topic confinement
//!   store/      sea-orm entities and queries (SQLite or PostgreSQL)
//!   actors/     MQTT link, ingress checks, presence actor
//!   api/        actix-web routes, JSON errors, health and metrics
//!   console/    the operator console's files, embedded and served at /console/
//!   live.rs     the console's live feed (presence, alarms, rollout progress)
//!   metrics.rs  every Prometheus metric the server exports
//! ```
//!
//! [`start`] brings everything up inside the current actix `System` and returns a
//! [`RunningServer`]; `main` waits for SIGINT/SIGTERM and calls [`RunningServer::stop`].

pub mod actors;
pub mod api;
pub mod broker;
pub mod config;
pub mod console;
pub mod domain;
pub mod gateway;
pub mod live;
pub mod metrics;
pub mod release;
pub mod service;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::{App, HttpServer, dev::ServerHandle};
use tokio::sync::watch;

use actors::ingress::Ingress;
use actors::link::Link;
use actors::presence::{FlushNow, Presence};
use config::{BrokerMode, Config};
use metrics::Metrics;
use store::Store;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot open the database (database.url): {0}")]
    Database(#[source] sea_orm::DbErr),
    #[error("cannot load cabinets from the database: {0}")]
    Store(#[from] store::StoreError),
    #[error("cannot set up the bootstrap admin token (auth.*): {0:#}")]
    Auth(anyhow::Error),
    #[error("cannot serve the MQTT front door (mqtt.listen): {0}")]
    FrontDoor(#[source] std::io::Error),
    #[error("cannot listen on {addr} (http.listen): {source}")]
    HttpListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A started server.
#[derive(Debug)]
pub struct RunningServer {
    /// Where the HTTP API answers (the real port when `http.listen` asked for port 0).
    pub http_addr: SocketAddr,
    /// Where cabinets connect: the embedded broker's front door (its real address), or
    /// the external broker.
    pub mqtt_host: String,
    pub mqtt_port: u16,
    pub metrics: Metrics,
    pub store: Store,
    http: ServerHandle,
    presence: Addr<Presence>,
    relay: Addr<actors::outbox::OutboxRelay>,
    ingest: Addr<actors::ingest::Ingest>,
    sweeper: Addr<actors::sweeper::Sweeper>,
    conductor: Addr<actors::conductor::RolloutConductor>,
    link: Link,
    /// The threads ingest and the outbox relay run on; stopped last.
    threads: Threads,
    stop_tx: watch::Sender<bool>,
    closing_tx: watch::Sender<bool>,
}

impl RunningServer {
    /// Graceful stop: finish HTTP requests in flight, write pending presence, say
    /// goodbye to the broker.
    pub async fn stop(self) {
        tracing::info!("shutting down");
        // Long-lived streams end first, so the graceful HTTP stop does not wait on them.
        let _ = self.closing_tx.send(true);
        // No new requests; the HTTP workers themselves stop last. Database connections a
        // request opened live on its worker's runtime and die with it, so the actors'
        // final writes below must run while the workers still do.
        self.http.pause().await;
        self.sweeper.do_send(actors::Shutdown);
        self.conductor.do_send(actors::Shutdown);
        // Buffered events are written and acked before the link goes.
        let _ = self.ingest.send(actors::Shutdown).await;
        // The relay settles the rows of a pass under way before it stops.
        let _ = self.relay.send(actors::Shutdown).await;
        let _ = self.presence.send(FlushNow).await;
        self.presence.do_send(actors::Shutdown);
        self.link.disconnect().await;
        self.http.stop(true).await;
        let _ = self.stop_tx.send(true);
        // Database connections opened on these threads die with them, so they go after
        // every final write above.
        drop(self.threads);
        tracing::info!("stopped");
    }
}

/// Starts every part of the server inside the current actix `System`.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    config.validate()?;
    let config = Arc::new(config);
    let metrics = Metrics::new();

    let (broker_link, front_door) = match config.mqtt.mode {
        BrokerMode::Embedded if config.mqtt.front_door => {
            let (b, public) = broker::start_behind_front_door(&config.mqtt)?;
            let internal =
                broker::BrokerLink { host: b.addr.ip().to_string(), port: b.addr.port(), credentials: None, tls: None };
            (internal, Some((public, b.addr)))
        }
        BrokerMode::Embedded => {
            // Validated: loopback only. rumqttd serves mqtt.listen itself.
            tracing::warn!(listen = %config.mqtt.listen, "embedded broker without its front door: no logins, no per-topic checks (mqtt.front_door = false)");
            let b = broker::start_embedded(&config.mqtt)?;
            (
                broker::BrokerLink { host: b.addr.ip().to_string(), port: b.addr.port(), credentials: None, tls: None },
                None,
            )
        }
        BrokerMode::External => {
            let url = config.mqtt.url.as_deref().expect("validated: external mode has a url");
            let a = config::parse_broker_url(url)?;
            let external = broker::BrokerLink {
                host: a.host,
                port: a.port,
                credentials: config.mqtt.credentials(),
                tls: config.mqtt.client_tls()?,
            };
            (external, None)
        }
    };

    let store =
        Store::connect(&config.database.url, config.database.max_connections).await.map_err(StartError::Database)?;
    tracing::info!(backend = store.backend(), "database ready, migrations applied");
    service::code_hashing::start();
    api::auth::bootstrap(&store, config.auth.bootstrap_token.as_deref(), &config.auth.token_file)
        .await
        .map_err(StartError::Auth)?;

    let mqtt_credentials =
        gateway::credentials::Credentials::load(&store, config.mqtt.credential_key.as_deref()).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (mqtt_host, mqtt_port) = match front_door {
        Some((public, internal)) => {
            let settings = gateway::Settings {
                tls: config.mqtt.server_tls()?,
                require_auth: config.mqtt.require_auth(),
                upstream: internal,
                topics: config.topics(),
                // As rumqttd's own limit, plus room for the topic and header.
                max_packet_bytes: config.mqtt.max_payload_bytes.saturating_mul(2) + 64 * 1024,
                max_connections: config.mqtt.max_connections - config.mqtt.reserved_connections,
            };
            let addr = gateway::spawn(public, settings, mqtt_credentials.clone(), metrics.clone(), stop_rx.clone())
                .map_err(StartError::FrontDoor)?;
            (addr.ip().to_string(), addr.port())
        }
        None => (broker_link.host.clone(), broker_link.port),
    };

    let live = live::LiveFeed::new();
    let presence =
        Presence::load(store.clone(), metrics.clone(), config.flush_interval(), config.stale_after()).await?.start();
    let (link, pending) = actors::link::connect(&config, &broker_link);
    let passes =
        Arc::new(service::passes::PassSigner::load(&store, config.couriers.pass_signing_key.as_deref()).await?);
    // The relay and ingest each run on a thread (arbiter) of their own: on the one System
    // arbiter they queued behind each other, the MQTT link and presence, and a busy
    // fleet kept that one thread at 100 % of a core while the other core had room.
    let mut threads = Threads::default();
    let relay_arbiter = threads.spawn();
    let relay = {
        let (store, metrics, topics, keys, broker) =
            (store.clone(), metrics.clone(), config.topics(), vec![passes.public_base64()], broker_link.clone());
        let (private, lease) =
            (config.webhooks.allow_private_targets, Duration::from_secs(config.outbox.claim_lease_s));
        // Built on its own thread: its HTTP client for webhooks is bound to the thread.
        actors::outbox::OutboxRelay::start_in_arbiter(&relay_arbiter, move |_| {
            actors::outbox::OutboxRelay::new(store, metrics, topics, keys, broker)
                .allow_private_webhooks(private)
                .claim_lease(lease)
        })
    };
    let service = service::Ctx {
        store: store.clone(),
        topics: config.topics(),
        max_alternative_km: config.parcels.max_alternative_km,
        pickup_window_s: config.parcels.pickup_window_s,
        kek: config.kek(),
        metrics: metrics.clone(),
        passes,
    };
    let ingest_arbiter = threads.spawn();
    let ingest = {
        let ingest = actors::ingest::Ingest::new(
            service.clone(),
            metrics.clone(),
            link.client().clone(),
            config.ingest.max_batch,
            Duration::from_millis(config.ingest.max_wait_ms),
            Some(relay.clone().recipient()),
        );
        actors::ingest::Ingest::start_in_arbiter(&ingest_arbiter, move |_| ingest)
    };
    let ingest_addr = ingest.clone();
    let (courier_feed, _) = tokio::sync::broadcast::channel(1024);
    let (closing_tx, closing_rx) = watch::channel(false);
    let ingress = Ingress {
        topics: config.topics(),
        max_payload_bytes: config.mqtt.max_payload_bytes,
        metrics: metrics.clone(),
        presence: presence.clone(),
        ingest,
        courier_feed: courier_feed.clone(),
    };
    actors::link::run(pending, ingress, metrics.clone(), stop_rx.clone());
    live.spawn_poller(store.clone(), Duration::from_secs(1), stop_rx.clone());
    let sweeper = actors::sweeper::Sweeper::new(
        service.clone(),
        Duration::from_secs(config.parcels.expiry_sweep_s),
        Some(relay.clone().recipient()),
    )
    .start();
    spawn_probe(broker_link.clone(), Duration::from_secs(config.mqtt.probe_interval_s), metrics.clone(), stop_rx);

    let state = api::AppState {
        config: config.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        presence: presence.clone(),
        link: link.clone(),
        outbox: Some(relay.clone().recipient()),
        ctx: service.clone(),
        courier_feed: courier_feed.clone(),
        closing: closing_rx,
        live,
        mqtt_credentials,
    };
    let http_metrics = metrics.clone();
    let server = HttpServer::new(move || {
        let m = http_metrics.clone();
        App::new()
            .wrap_fn(move |req, srv| {
                use actix_web::dev::Service;
                let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
                let m = m.clone();
                let fut = srv.call(req);
                async move {
                    let res = fut.await?;
                    let class = format!("{}xx", res.status().as_u16() / 100);
                    m.http_requests.with_label_values(&[route.as_str(), class.as_str()]).inc();
                    Ok(res)
                }
            })
            .configure(console::configure)
            .configure(|cfg| api::configure(cfg, state.clone()))
    })
    .disable_signals()
    .workers(2)
    .shutdown_timeout(10)
    .bind(config.http.listen)
    .map_err(|source| StartError::HttpListen { addr: config.http.listen, source })?;
    let http_addr = server.addrs().first().copied().unwrap_or(config.http.listen);
    let server = server.run();
    let http = server.handle();
    actix_rt::spawn(server);
    let base_url = config.artifacts.public_url.clone().unwrap_or_else(|| format!("http://{http_addr}"));
    let conductor = actors::conductor::RolloutConductor::new(
        service.clone(),
        format!("{}-{}", hostname(), uuid::Uuid::new_v4().simple()),
        base_url,
        Duration::from_millis(config.artifacts.conduct_interval_ms),
        Some(relay.clone().recipient()),
    )
    .start();
    tracing::info!(%http_addr, mqtt = %format!("{mqtt_host}:{mqtt_port}"), "fleet-server started");

    Ok(RunningServer {
        http_addr,
        mqtt_host,
        mqtt_port,
        metrics,
        store,
        http,
        presence,
        relay,
        ingest: ingest_addr,
        sweeper,
        conductor,
        link,
        threads,
        stop_tx,
        closing_tx,
    })
}

/// Threads (actix arbiters) of the server's own, stopped when dropped: at the end of a
/// graceful stop, and also when `start` fails part way or a server is dropped unstopped.
#[derive(Debug, Default)]
struct Threads(Vec<actix_rt::Arbiter>);

impl Threads {
    /// A new thread with its own runtime, for actors to start on.
    fn spawn(&mut self) -> actix_rt::ArbiterHandle {
        let arbiter = actix_rt::Arbiter::new();
        let handle = arbiter.handle();
        self.0.push(arbiter);
        handle
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        for arbiter in &self.0 {
            arbiter.stop();
        }
    }
}

/// This machine's name, for the rollout lease owner (readable in the database).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "replica".into())
}

/// Checks every `interval` that the broker accepts a fresh connection (in embedded mode,
/// rumqttd's internal port: the front door is this process's own code).
fn spawn_probe(broker: broker::BrokerLink, interval: Duration, metrics: Metrics, mut stop: watch::Receiver<bool>) {
    actix_rt::spawn(async move {
        loop {
            match broker::probe_broker(&broker, Duration::from_secs(3)).await {
                Ok(()) => metrics.broker_accepting.set(1),
                Err(e) => {
                    if metrics.broker_accepting.get() == 1 {
                        tracing::error!(error = %e, "MQTT broker no longer accepts connections");
                    }
                    metrics.broker_accepting.set(0);
                    metrics.broker_probe_failures.inc();
                }
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}
