//! The server's own MQTT connection.
//!
//! One rumqttc client per server process. A task drives its event loop: on every
//! (re)connect it subscribes to the cabinet wildcards (through `$share/{group}/` when
//! replicas share the work), and it hands each incoming publish to [`Ingress::route`].
//! rumqttc reconnects by itself when polled after an error; the task waits with a capped,
//! jittered backoff between attempts so a broker outage is not met with a storm.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lockerfleet_shared::topic::Filter;
use rand_backoff::Backoff;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS, SubscribeFilter};
use tokio::sync::watch;

use super::ingress::Ingress;
use crate::config::Config;
use crate::metrics::Metrics;

/// Largest packet the server's client accepts: far above the broker's and the ingress's
/// limits, so an oversized payload is counted and dropped by the ingress instead of
/// tearing down the server's connection.
const CLIENT_MAX_PACKET: usize = 64 * 1024 * 1024;

/// Handle to the server's MQTT link.
#[derive(Debug, Clone)]
pub struct Link {
    client: AsyncClient,
    up: Arc<AtomicBool>,
}

impl Link {
    /// True while connected and subscribed.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn client(&self) -> &AsyncClient {
        &self.client
    }

    /// Sends DISCONNECT; the event loop task then ends.
    pub async fn disconnect(&self) {
        let _ = self.client.disconnect().await;
    }
}

/// Connects to `host:port` and starts the event loop task on the current actix arbiter.
/// Creates the server's MQTT client; nothing is sent until [`run`] drives it.
pub fn connect(config: &Config, broker: &crate::broker::BrokerLink) -> (Link, Pending) {
    let client_id =
        config.mqtt.client_id.clone().unwrap_or_else(|| format!("lf-server-{}", uuid::Uuid::new_v4().simple()));
    let mut opts = broker.options(client_id);
    opts.set_keep_alive(Duration::from_secs(config.mqtt.keep_alive_s))
        .set_clean_session(true)
        .set_max_packet_size(CLIENT_MAX_PACKET, CLIENT_MAX_PACKET)
        .set_inflight(200);
    let (client, eventloop) = crate::broker::BrokerLink::client(opts, 4096);
    let topics = config.topics();
    let group = config.mqtt.shared_group.clone();
    let mut filters: Vec<String> = [Filter::AllCabinetUp, Filter::AllCabinetPresence]
        .into_iter()
        .map(|f| topics.filter(f, group.as_deref()).expect("validated in Config::validate"))
        .collect();
    // Courier notifications fan out to this replica's own SSE clients: no shared group.
    filters.push(topics.filter(Filter::AllCourierAssignments, None).expect("no group, always valid"));
    let up = Arc::new(AtomicBool::new(false));
    let link = Link { client: client.clone(), up: up.clone() };
    (link, Pending { eventloop, client, filters, up })
}

/// The event loop of a connected-but-not-yet-running link.
pub struct Pending {
    eventloop: EventLoop,
    client: AsyncClient,
    filters: Vec<String>,
    up: Arc<AtomicBool>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("filters", &self.filters).finish_non_exhaustive()
    }
}

/// Starts the event loop task on the current actix arbiter, handing publishes to `ingress`.
pub fn run(pending: Pending, ingress: Ingress, metrics: Metrics, mut stop: watch::Receiver<bool>) {
    let Pending { eventloop, client, filters, up } = pending;
    actix_rt::spawn(async move {
        tokio::select! {
            () = drive(eventloop, client, filters, ingress, metrics, up) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    });
}

async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    filters: Vec<String>,
    ingress: Ingress,
    metrics: Metrics,
    up: Arc<AtomicBool>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                let subs = filters.iter().map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                if let Err(e) = client.subscribe_many(subs).await {
                    tracing::error!(error = %e, "could not queue subscriptions");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                up.store(true, Ordering::Relaxed);
                metrics.mqtt_link_up.set(1);
                tracing::info!(filters = ?filters, "MQTT link subscribed");
            }
            Ok(Event::Incoming(Packet::Publish(p))) => ingress.route(&p.topic, &p.payload),
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                up.store(false, Ordering::Relaxed);
                metrics.mqtt_link_up.set(0);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                if up.swap(false, Ordering::Relaxed) {
                    metrics.mqtt_link_reconnects.inc();
                }
                metrics.mqtt_link_up.set(0);
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?wait, "MQTT link down");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Capped exponential backoff with full jitter.
mod rand_backoff {
    use std::time::Duration;

    #[derive(Debug)]
    pub struct Backoff {
        base: Duration,
        cap: Duration,
        attempt: u32,
    }

    impl Backoff {
        pub fn new(base: Duration, cap: Duration) -> Self {
            Self { base, cap, attempt: 0 }
        }

        pub fn reset(&mut self) {
            self.attempt = 0;
        }

        pub fn next_delay(&mut self) -> Duration {
            let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
            self.attempt = self.attempt.saturating_add(1);
            let ceiling = exp.min(self.cap);
            // Full jitter: uniform in [ceiling/2, ceiling].
            let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(rand::Rng::gen_range(&mut rand::thread_rng(), nanos / 2..=nanos))
        }
    }
}
