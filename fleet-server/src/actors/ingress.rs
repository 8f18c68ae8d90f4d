//! Ingress: the checks every message from the broker passes before any actor sees it.
//!
//! In order: the topic must be one of ours; the payload must fit the size limit (checked
//! before parsing); it must decode as the envelope for that topic, with a supported
//! version and no unknown fields; its `cabinet` must be the cabinet named by the topic.
//! A message failing any check is counted in
//! `lockerfleet_rejected_messages_total{reason}`, logged at debug with the cause, and
//! dropped; the connection and every other cabinet carry on.

use actix::Addr;
use lockerfleet_shared::envelope::{PresenceBody, UpBody, decode};
use lockerfleet_shared::{Topic, TopicSpace};

use super::presence::{FromCabinet, Inbound, Presence};
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct Ingress {
    pub topics: TopicSpace,
    pub max_payload_bytes: usize,
    pub metrics: Metrics,
    pub presence: Addr<Presence>,
    pub ingest: Addr<super::ingest::Ingest>,
    /// Courier notifications seen on the broker, for this replica's SSE streams.
    pub courier_feed: tokio::sync::broadcast::Sender<CourierNote>,
}

/// A courier notification as published by the outbox relay.
#[derive(Debug, Clone)]
pub struct CourierNote {
    pub courier: lockerfleet_shared::CourierId,
    /// The envelope's JSON, passed to SSE clients unchanged.
    pub payload: std::sync::Arc<str>,
}

impl Ingress {
    fn reject(&self, reason: &'static str, topic: &str, detail: &dyn std::fmt::Display) {
        self.metrics.rejected_messages.with_label_values(&[reason]).inc();
        tracing::debug!(topic, reason, %detail, "message rejected");
    }

    /// Checks one message and hands it to the actor that owns its kind.
    pub fn route(&self, topic: &str, payload: &[u8]) {
        let parsed = match self.topics.parse(topic) {
            Ok(t) => t,
            Err(e) => return self.reject("bad_topic", topic, &e),
        };
        let (cabinet, inbound) = match parsed {
            Topic::CabinetUp(cabinet) => match decode::<UpBody>(payload, self.max_payload_bytes) {
                Ok(env) => (cabinet, Inbound::Up(Box::new(env))),
                Err(e) => return self.reject(e.reason(), topic, &e),
            },
            Topic::CabinetPresence(cabinet) => {
                if payload.is_empty() {
                    // An empty retained message clears presence (cabinet decommissioned).
                    return;
                }
                match decode::<PresenceBody>(payload, self.max_payload_bytes) {
                    Ok(env) => (cabinet, Inbound::Presence(env)),
                    Err(e) => return self.reject(e.reason(), topic, &e),
                }
            }
            Topic::CourierAssignments(courier) => {
                // Our own relay published it; only check it is one of ours and pass it on.
                match decode::<lockerfleet_shared::envelope::CourierBody>(payload, self.max_payload_bytes) {
                    Ok(env) => {
                        // Re-serialised, so the text is compact JSON on one line and
                        // cannot smuggle extra fields into an SSE frame.
                        let payload = String::from_utf8(env.encode()).expect("JSON is UTF-8").into();
                        // No receiver is fine: nobody is streaming right now.
                        let _ = self.courier_feed.send(CourierNote { courier, payload });
                    }
                    Err(e) => self.reject(e.reason(), topic, &e),
                }
                return;
            }
            Topic::CabinetDown(_) => {
                return self.reject("unexpected_topic", topic, &"server-to-edge topic");
            }
        };
        let claimed = match &inbound {
            Inbound::Up(env) => &env.cabinet,
            Inbound::Presence(env) => &env.cabinet,
        };
        if claimed != &cabinet {
            let detail = format!("envelope names cabinet {claimed}");
            return self.reject("cabinet_mismatch", topic, &detail);
        }
        if let Inbound::Up(env) = &inbound {
            match &env.body {
                UpBody::Events(batch) => self.ingest.do_send(super::ingest::Events {
                    cabinet: cabinet.clone(),
                    events: batch.events.clone(),
                    received_at: crate::store::now(),
                }),
                UpBody::Hello(_) => self.ingest.do_send(super::ingest::Hello { cabinet: cabinet.clone() }),
                UpBody::Ota(r) => self.ingest.do_send(super::ingest::OtaProgress {
                    cabinet: cabinet.clone(),
                    report: r.clone(),
                    received_at: crate::store::now(),
                }),
                UpBody::Applied(a) => self.ingest.do_send(super::ingest::AppliedVersions {
                    cabinet: cabinet.clone(),
                    templates: a.templates,
                    parcels: a.parcels,
                }),
                _ => {}
            }
        }
        self.presence.do_send(FromCabinet { cabinet, inbound });
    }
}
