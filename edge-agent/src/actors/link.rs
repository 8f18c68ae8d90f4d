//! The link actor: the cabinet's MQTT connection.
//!
//! On every (re)connect it subscribes to its `down` topic, publishes `online` (retained;
//! its last will is the matching `offline`), says `hello` (which makes the server send the
//! whole desired state), and sends every journal event not yet acked. A newly recorded
//! event goes out at once, on its own; one still unacked goes out again `resend` after it
//! was sent, then after twice and four times that (see [`InFlight`]), so a server that is
//! slow to ack is not buried under copies of what it already has. The server stores each
//! once by id. Reconnects back off with jitter so a fleet returning after an outage does
//! not arrive all at once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use actix::prelude::*;
use lockerfleet_shared::envelope::{
    Applied, CabinetEvent, CompartmentInfo, DownBody, EventBatch, Heartbeat, Hello, PresenceBody, Session, Slot,
    UpBody, decode,
};
use lockerfleet_shared::{CabinetId, Envelope, TopicSpace};
use rand::Rng;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use uuid::Uuid;

use super::cabinet::{Cabinet, EventsRecorded, FromServer, GetStatus, Pending, ServerTime};

/// Largest number of events in one `events` message.
const EVENTS_PER_MESSAGE: usize = 100;
/// Largest payload accepted on the down topic.
const MAX_DOWN_BYTES: usize = 4 * 1024 * 1024;
/// A remote open older than this (by the server's stamp) is ignored.
const MAX_OPEN_COMMAND_AGE: chrono::Duration = chrono::Duration::minutes(2);

#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
struct Connected;

#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
struct Disconnected;

#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Incoming(Vec<u8>);

/// Where and how often the link talks.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub host: String,
    pub port: u16,
    pub keep_alive: Duration,
    /// One connection attempt, TCP to CONNACK (also a write's limit).
    pub connect_timeout: Duration,
    pub heartbeat: Duration,
    pub resend: Duration,
    /// The MQTT password (the username is the cabinet id), when the broker wants one.
    pub password: Option<String>,
    /// Present: TLS, trusting the configured CA.
    pub tls: Option<std::sync::Arc<lockerfleet_shared::tls::rustls::ClientConfig>>,
    /// How far the simulator sets this cabinet's own clock off (`sim_clock_offset_s`);
    /// zero on a real cabinet.
    pub clock_offset: chrono::Duration,
}

/// What the link needs to say hello.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cabinet: CabinetId,
    pub firmware: String,
    pub hardware: String,
    pub compartments: Vec<CompartmentInfo>,
    pub key_fingerprint: String,
    /// The face embedding model, when face pickup is on (reported in `hello`).
    pub model: Option<lockerfleet_shared::seal::ModelRef>,
}

pub struct Link {
    id: Identity,
    topics: TopicSpace,
    settings: LinkSettings,
    client: AsyncClient,
    cabinet: Addr<Cabinet>,
    session: Uuid,
    seq: u64,
    connected: bool,
    heartbeat: Duration,
    resend: Duration,
    started: Instant,
    eventloop: Option<rumqttc::EventLoop>,
    restarts: u32,
    /// Where offers and cancellations of updates go.
    updater: Option<Recipient<crate::ota::ToUpdater>>,
    /// Powered off ([`super::PowerOff`]): no connection, only waiting to be dropped.
    off: bool,
    /// The server's clock, carried forward from the stamps of `down` messages: a remote
    /// open's age is judged by it, so a cabinet whose own clock runs ahead does not take
    /// every fresh command for a stale one.
    clock: crate::domain::clock::ServerClock,
    /// Events sent on this connection and not acked yet.
    in_flight: InFlight,
}

/// Why unacked events are being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sending {
    /// A new connection: everything unacked.
    All,
    /// Something was recorded: what was never sent on this connection.
    New,
    /// The resend timer: what has waited for its ack long enough.
    Due,
}

/// When each unacked event was last sent on this connection, and how often. An event is
/// sent again `resend` after its first send, then `2 × resend`, then every `4 × resend`.
#[derive(Debug, Default)]
struct InFlight(HashMap<Uuid, (Instant, u32)>);

impl InFlight {
    /// The events of `pending` (the journal's unacked ones) to send now, which it notes as
    /// sent at `now`; it forgets the events no longer pending (acked).
    fn select(
        &mut self,
        pending: Vec<CabinetEvent>,
        why: Sending,
        now: Instant,
        resend: Duration,
    ) -> Vec<CabinetEvent> {
        if why == Sending::All {
            self.0.clear();
        }
        let ids: HashSet<Uuid> = pending.iter().map(|e| e.id).collect();
        self.0.retain(|id, _| ids.contains(id));
        let chosen: Vec<CabinetEvent> = pending
            .into_iter()
            .filter(|e| match self.0.get(&e.id) {
                None => true,
                Some(_) if why == Sending::New => false,
                Some(&(at, sends)) => now.saturating_duration_since(at) >= resend * (1 << sends.clamp(1, 3)) / 2,
            })
            .collect();
        for e in &chosen {
            let entry = self.0.entry(e.id).or_insert((now, 0));
            *entry = (now, entry.1.saturating_add(1));
        }
        chosen
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("cabinet", &self.id.cabinet).field("connected", &self.connected).finish()
    }
}

impl Link {
    pub fn new(id: Identity, topics: TopicSpace, settings: &LinkSettings, cabinet: Addr<Cabinet>) -> Self {
        let session = Uuid::now_v7();
        let (client, eventloop) = Self::client(&id, &topics, settings, session);
        // Sequence numbers of up messages: milliseconds since the epoch at start, so they
        // keep increasing across restarts without being stored.
        let seq = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0) * 1000;
        Self {
            id,
            topics,
            settings: settings.clone(),
            client,
            cabinet,
            session,
            seq,
            connected: false,
            heartbeat: settings.heartbeat,
            resend: settings.resend,
            started: Instant::now(),
            eventloop: Some(eventloop),
            restarts: 0,
            updater: None,
            off: false,
            clock: crate::domain::clock::ServerClock::default(),
            in_flight: InFlight::default(),
        }
    }

    /// A new MQTT client for one session; its last will marks exactly this session offline.
    fn client(
        id: &Identity,
        topics: &TopicSpace,
        settings: &LinkSettings,
        session: Uuid,
    ) -> (AsyncClient, rumqttc::EventLoop) {
        let will = Envelope::new(id.cabinet.clone(), 0, PresenceBody::Offline(Session { session })).encode();
        let mut opts = MqttOptions::new(format!("cab-{}", id.cabinet), settings.host.clone(), settings.port);
        opts.set_keep_alive(settings.keep_alive)
            .set_clean_session(true)
            .set_max_packet_size(MAX_DOWN_BYTES, MAX_DOWN_BYTES)
            .set_last_will(LastWill::new(topics.cabinet_presence(&id.cabinet), will, QoS::AtLeastOnce, true));
        if let Some(p) = &settings.password {
            opts.set_credentials(id.cabinet.as_str(), p.as_str());
        }
        if let Some(tls) = &settings.tls {
            opts.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls.clone())));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        let mut network = eventloop.network_options();
        network.set_connection_timeout(settings.connect_timeout.as_secs().max(1));
        // Events, acks and reports are small and each waits for its PUBACK: without this,
        // one written before the last was acknowledged waits for the broker's delayed ACK
        // (up to 40 ms), on the way of every deposit to the server.
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        (client, eventloop)
    }

    fn publish(&mut self, body: UpBody, qos: QoS) {
        self.seq += 1;
        let env = Envelope::new(self.id.cabinet.clone(), self.seq, body);
        if let Err(e) = self.client.try_publish(self.topics.cabinet_up(&self.id.cabinet), qos, false, env.encode()) {
            tracing::warn!(error = %e, "could not queue a message; it is sent again later");
        }
    }

    fn send_pending(&mut self, ctx: &mut Context<Self>, why: Sending) {
        if !self.connected {
            return;
        }
        self.cabinet
            .send(Pending)
            .into_actor(self)
            .map(move |pending, act, _| {
                let Ok(pending) = pending else { return };
                let events = act.in_flight.select(pending, why, Instant::now(), act.resend);
                for chunk in events.chunks(EVENTS_PER_MESSAGE) {
                    act.publish(UpBody::Events(EventBatch { events: chunk.to_vec() }), QoS::AtLeastOnce);
                }
            })
            .wait(ctx);
    }
}

impl Actor for Link {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.off {
            // Restarted while something still held its address: stop again shortly,
            // until the last holder is gone and the supervisor lets it end.
            ctx.run_later(Duration::from_millis(100), |_, ctx| ctx.stop());
            return;
        }
        let Some(mut eventloop) = self.eventloop.take() else {
            tracing::error!("link started without an event loop");
            ctx.stop();
            return;
        };
        let me = ctx.address();
        // The loop belongs to this actor's context: when the actor stops, the loop ends
        // with it, and the supervisor starts a fresh one.
        let poll = async move {
            let mut failures: u32 = 0;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        failures = 0;
                        me.do_send(Connected);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => me.do_send(Incoming(p.payload.to_vec())),
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::RequestsDone) => {
                        // Every client handle is gone: this connection cannot be used again.
                        me.do_send(Broken);
                        return;
                    }
                    Err(e) => {
                        me.do_send(Disconnected);
                        failures = failures.saturating_add(1);
                        let cap = 200u64.saturating_mul(1 << failures.min(7)).min(30_000);
                        let wait = rand::thread_rng().gen_range(cap / 2..=cap);
                        tracing::warn!(error = %e, retry_in_ms = wait, "link down");
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                }
            }
        };
        ctx.spawn(poll.into_actor(self));
        ctx.run_interval(self.heartbeat, |act, ctx| {
            if !act.connected {
                return;
            }
            let uptime = act.started.elapsed().as_secs();
            act.cabinet
                .send(GetStatus)
                .into_actor(act)
                .map(move |status, act, _| {
                    let Ok(s) = status else { return };
                    act.publish(
                        UpBody::State(Heartbeat {
                            open_doors: s.open_doors,
                            occupied: s.occupied,
                            temperature_c: None,
                            journal_depth: s.journal_depth,
                            uptime_s: uptime,
                        }),
                        QoS::AtMostOnce,
                    );
                })
                .spawn(ctx);
        });
        // Unacked events are sent again periodically until the server acks them.
        ctx.run_interval(self.resend, |act, ctx| act.send_pending(ctx, Sending::Due));
    }
}

/// The link's state, for `/status` and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    pub connected: bool,
    /// The MQTT session of the current connection.
    pub session: Uuid,
    /// How often the supervisor restarted the link.
    pub restarts: u32,
}

#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "LinkState")]
pub struct GetLinkState;

impl Handler<GetLinkState> for Link {
    type Result = MessageResult<GetLinkState>;

    fn handle(&mut self, _: GetLinkState, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(LinkState { connected: self.connected, session: self.session, restarts: self.restarts })
    }
}

/// Connects the link to the updater.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetUpdater(pub Recipient<crate::ota::ToUpdater>);

impl Handler<SetUpdater> for Link {
    type Result = ();

    fn handle(&mut self, msg: SetUpdater, _ctx: &mut Self::Context) {
        self.updater = Some(msg.0);
    }
}

/// An update report goes out now if the link is up (`false`: try again later).
impl Handler<crate::ota::Report> for Link {
    type Result = bool;

    fn handle(&mut self, msg: crate::ota::Report, _ctx: &mut Self::Context) -> bool {
        if !self.connected {
            return false;
        }
        self.publish(UpBody::Ota(msg.0), QoS::AtLeastOnce);
        true
    }
}

/// Powered off: the MQTT connection ends with the event loop (dropped with the actor's
/// futures when it stops; no DISCONNECT, so the broker publishes the last will, as after
/// a power cut).
impl Handler<super::PowerOff> for Link {
    type Result = ();

    fn handle(&mut self, _: super::PowerOff, ctx: &mut Self::Context) {
        self.off = true;
        self.connected = false;
        self.updater = None;
        self.eventloop = None;
        ctx.stop();
    }
}

/// The connection cannot recover: the link stops and its supervisor restarts it.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Broken;

impl Handler<Broken> for Link {
    type Result = ();

    fn handle(&mut self, _: Broken, ctx: &mut Self::Context) {
        tracing::error!("link broken; restarting it");
        ctx.stop();
    }
}

/// A restarted link starts a new MQTT session (new client, new last will); events not
/// yet acked are in the cabinet's journal and go out again on connect.
impl Supervised for Link {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.connected = false;
        if self.off {
            return;
        }
        self.session = Uuid::now_v7();
        let (client, eventloop) = Self::client(&self.id, &self.topics, &self.settings, self.session);
        self.client = client;
        self.eventloop = Some(eventloop);
        self.restarts += 1;
    }
}

impl Handler<Connected> for Link {
    type Result = ();

    fn handle(&mut self, _: Connected, ctx: &mut Self::Context) {
        self.connected = true;
        let down = self.topics.cabinet_down(&self.id.cabinet);
        if let Err(e) = self.client.try_subscribe(down, QoS::AtLeastOnce) {
            tracing::error!(error = %e, "could not subscribe to the down topic");
        }
        let online = Envelope::new(self.id.cabinet.clone(), 0, PresenceBody::Online(Session { session: self.session }));
        let _ = self.client.try_publish(
            self.topics.cabinet_presence(&self.id.cabinet),
            QoS::AtLeastOnce,
            true,
            online.encode(),
        );
        let hello = UpBody::Hello(Hello {
            firmware: self.id.firmware.clone(),
            slot: Slot::A,
            hardware: self.id.hardware.clone(),
            compartments: self.id.compartments.clone(),
            key_fingerprint: self.id.key_fingerprint.clone(),
            model: self.id.model.clone(),
        });
        self.publish(hello, QoS::AtLeastOnce);
        tracing::info!(cabinet = %self.id.cabinet, "link up");
        self.send_pending(ctx, Sending::All);
    }
}

impl Handler<Disconnected> for Link {
    type Result = ();

    fn handle(&mut self, _: Disconnected, _ctx: &mut Self::Context) {
        self.connected = false;
    }
}

impl Handler<EventsRecorded> for Link {
    type Result = ();

    fn handle(&mut self, _: EventsRecorded, ctx: &mut Self::Context) {
        self.send_pending(ctx, Sending::New);
    }
}

impl Handler<Incoming> for Link {
    type Result = ();

    fn handle(&mut self, msg: Incoming, ctx: &mut Self::Context) {
        let env = match decode::<DownBody>(&msg.0, MAX_DOWN_BYTES) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(reason = e.reason(), error = %e, "down message refused");
                return;
            }
        };
        if env.cabinet != self.id.cabinet {
            tracing::warn!(named = %env.cabinet, "down message for another cabinet refused");
            return;
        }
        // Judged before this message's own stamp counts: a stale command that arrives first
        // after a restart must not vouch for itself. Only messages stamped as they are
        // sent move the estimate (desired states are built at push time, acks made then);
        // a queued command or offer keeps the stamp it was queued with.
        let server_now = self.clock.now(chrono::Utc::now() + self.settings.clock_offset);
        if matches!(env.body, DownBody::Parcels(_) | DownBody::Templates(_) | DownBody::Ack(_)) {
            self.clock.observe(env.ts);
        }
        // Updates are the updater's business.
        match &env.body {
            DownBody::Ota(offer) => {
                if let Some(u) = &self.updater {
                    u.do_send(crate::ota::ToUpdater::Offer(Box::new(offer.clone())));
                }
                return;
            }
            DownBody::Cmd(lockerfleet_shared::envelope::Command {
                action: lockerfleet_shared::envelope::CommandAction::CancelUpdate { rollout },
                ..
            }) => {
                if let Some(u) = &self.updater {
                    u.do_send(crate::ota::ToUpdater::Cancel(*rollout));
                }
                return;
            }
            DownBody::Cmd(lockerfleet_shared::envelope::Command {
                id,
                action: lockerfleet_shared::envelope::CommandAction::OpenCompartment { .. },
            }) if server_now - env.ts > MAX_OPEN_COMMAND_AGE => {
                // Queued while the cabinet was away: opening a door now, when nobody
                // stands in front of it, would be worse than not opening it.
                tracing::warn!(command = %id, sent = %env.ts, "stale remote open ignored");
                return;
            }
            _ => {}
        }
        // Its timestamp is the server's clock, which expiry is judged by.
        self.cabinet.do_send(ServerTime(env.ts));
        self.cabinet
            .send(FromServer(env.body))
            .into_actor(self)
            .map(|applied, act, _| {
                if let Ok(Some(Applied { templates, parcels })) = applied {
                    act.publish(UpBody::Applied(Applied { templates, parcels }), QoS::AtLeastOnce);
                }
            })
            .wait(ctx);
    }
}

#[cfg(test)]
mod tests {
    use lockerfleet_shared::envelope::EventKind;

    use super::*;

    fn event(seq: u64) -> CabinetEvent {
        CabinetEvent {
            id: Uuid::now_v7(),
            seq,
            at: chrono::Utc::now(),
            what: EventKind::Alarm { code: "door_forced".into(), detail: "A1".into() },
        }
    }

    fn seqs(events: &[CabinetEvent]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn a_new_event_goes_out_alone_and_the_unacked_ones_again_ever_less_often() {
        let resend = Duration::from_secs(10);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let (a, b) = (event(1), event(2));
        let mut f = InFlight::default();
        assert_eq!(seqs(&f.select(vec![a.clone()], Sending::New, at(0), resend)), [1]);
        // b is recorded while a waits for its ack: only b goes out.
        assert_eq!(seqs(&f.select(vec![a.clone(), b.clone()], Sending::New, at(1), resend)), [2]);
        assert!(f.select(vec![a.clone(), b.clone()], Sending::Due, at(9), resend).is_empty(), "none waited 10 s");
        assert_eq!(seqs(&f.select(vec![a.clone(), b.clone()], Sending::Due, at(10), resend)), [1]);
        assert_eq!(seqs(&f.select(vec![a.clone(), b.clone()], Sending::Due, at(11), resend)), [2]);
        // Sent twice: the next wait is 20 s, then 40 s from then on.
        assert!(f.select(vec![a.clone()], Sending::Due, at(29), resend).is_empty());
        assert_eq!(seqs(&f.select(vec![a.clone()], Sending::Due, at(30), resend)), [1]);
        assert!(f.select(vec![a.clone()], Sending::Due, at(69), resend).is_empty());
        assert_eq!(seqs(&f.select(vec![a.clone()], Sending::Due, at(70), resend)), [1]);
        assert!(f.select(vec![a.clone()], Sending::Due, at(109), resend).is_empty());
        assert_eq!(seqs(&f.select(vec![a.clone()], Sending::Due, at(110), resend)), [1], "4 × resend at most");
        // b was acked meanwhile (no longer pending) and is forgotten.
        assert_eq!(f.0.len(), 1);
        // A new connection sends everything unacked at once and starts counting again.
        assert_eq!(seqs(&f.select(vec![a.clone()], Sending::All, at(111), resend)), [1]);
        assert_eq!(seqs(&f.select(vec![a], Sending::Due, at(121), resend)), [1]);
    }
}
