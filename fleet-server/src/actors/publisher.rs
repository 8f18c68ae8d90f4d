//! An MQTT publisher that knows which messages the broker has accepted.
//!
//! rumqttc's `publish` only queues a message. For the outbox a message counts as sent
//! when the broker's PUBACK for it arrives, so this publisher drives its own connection
//! and matches acknowledgements to messages: within one connection rumqttc hands out
//! packet ids in the order messages were queued, and reports each as
//! `Outgoing::Publish(pkid)` in that order. After any error the connection is thrown
//! away (never reconnected in place, which would resend old packets and break the
//! matching) and the unacknowledged messages are reported as not sent, to be retried.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS};

use crate::broker::BrokerLink;

/// Most messages queued at once; below the client's request channel capacity.
pub const MAX_BATCH: usize = 200;

/// Largest message the publisher sends; desired-state sets of full cabinets are large.
const MAX_PACKET: usize = 16 * 1024 * 1024;

pub struct Publisher {
    broker: BrokerLink,
    client_id_prefix: String,
    conn: Option<(AsyncClient, EventLoop, Instant)>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("host", &self.broker.host)
            .field("port", &self.broker.port)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(broker: BrokerLink, client_id_prefix: &str) -> Self {
        Self { broker, client_id_prefix: client_id_prefix.to_owned(), conn: None }
    }

    async fn connect(&mut self) -> Result<(), String> {
        // Reuse a connection used recently; one idle longer than its keep-alive may have
        // been dropped by the broker, so start afresh.
        if let Some((_, _, used)) = &self.conn
            && used.elapsed() < Duration::from_secs(20)
        {
            return Ok(());
        }
        self.conn = None;
        let id = format!("{}-{}", self.client_id_prefix, uuid::Uuid::new_v4().simple());
        let mut opts = self.broker.options(id);
        // The default 10 KiB limit would refuse a cabinet's template set.
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_inflight(100)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        let (client, mut eventloop) = BrokerLink::client(opts, MAX_BATCH * 2);
        let wait = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait).await.map_err(|_| "CONNACK timed out".to_owned())??;
        self.conn = Some((client, eventloop, Instant::now()));
        Ok(())
    }

    /// Publishes every message (QoS 1) and returns, per message, whether the broker
    /// acknowledged it within `timeout`.
    pub async fn publish_all(&mut self, messages: &[(String, Vec<u8>)], timeout: Duration) -> Vec<bool> {
        let mut acked = vec![false; messages.len()];
        if messages.is_empty() {
            return acked;
        }
        if let Err(e) = self.connect().await {
            tracing::warn!(error = %e, "outbox publisher cannot reach the broker");
            return acked;
        }
        let Some((client, eventloop, used)) = self.conn.as_mut() else { return acked };
        for (topic, payload) in messages.iter().take(MAX_BATCH) {
            if client.try_publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone()).is_err() {
                break;
            }
        }
        let queued = messages.len().min(MAX_BATCH);
        let mut next_outgoing = 0usize;
        let mut by_pkid: HashMap<u16, usize> = HashMap::new();
        let mut remaining = queued;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut failed = false;
        while remaining > 0 {
            match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                Err(_) => {
                    failed = true;
                    break;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "outbox publisher connection failed");
                    failed = true;
                    break;
                }
                Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                    by_pkid.insert(pkid, next_outgoing);
                    next_outgoing += 1;
                }
                Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                    if let Some(i) = by_pkid.remove(&ack.pkid)
                        && !acked[i]
                    {
                        acked[i] = true;
                        remaining -= 1;
                    }
                }
                Ok(Ok(_)) => {}
            }
        }
        *used = Instant::now();
        if failed {
            self.conn = None;
        }
        acked
    }
}
