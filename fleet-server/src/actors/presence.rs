//! The presence actor: which registered cabinets are online, since when, running what.
//!
//! It owns an in-memory map of every registered cabinet (a few hundred bytes each) and
//! is the only writer of the presence columns of `cabinets`. Transitions (online, offline,
//! hello) are written at once; heartbeats only move `last_seen_at`, which is written in
//! batches every `presence.flush_interval_ms`. A cabinet silent for `stale_after_s` is
//! marked offline even if its last will never arrived.
//!
//! Messages for a cabinet this replica has not seen registered are held while the
//! database is asked (another replica may have registered it), then replayed in order
//! or counted as `unregistered_cabinet`. Negative answers are remembered for a short
//! while, so a stranger flooding its topic costs one query per period, not per message.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use lockerfleet_shared::envelope::{PresenceBody, Slot, UpBody};
use lockerfleet_shared::{CabinetId, Envelope};
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::store::{OnlineChange, PresenceRow, PresenceUpdate, Store};

/// How long "this cabinet is not registered" is believed before asking the database again.
const NEGATIVE_CACHE: Duration = Duration::from_secs(10);

/// How long a silence sweep waits for the database's word before judging alone.
const SWEEP_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One cabinet's live state.
#[derive(Debug, Clone, Default)]
struct Live {
    online: bool,
    /// The MQTT session that last came online: orders `online` against late wills.
    session: Option<Uuid>,
    last_seen: Option<DateTime<Utc>>,
    firmware: Option<String>,
    hardware: Option<String>,
    slot: Option<String>,
    /// The tenant it belongs to, so live-feed events can be confined to it.
    tenant: String,
    /// The doors its last heartbeat reported open, and when (absent before the first).
    doors: Option<Box<Doors>>,
    /// Why and when this replica last saw it go offline (`will`, `silent`).
    went_offline: Option<(&'static str, DateTime<Utc>)>,
    /// What changed since the last flush.
    pending: Pending,
}

/// Door states from a heartbeat: usually an empty list, so a few bytes per cabinet.
#[derive(Debug, Clone, PartialEq)]
pub struct Doors {
    pub at: DateTime<Utc>,
    pub open: Vec<String>,
}

/// Changes of one cabinet not yet written.
#[derive(Debug, Clone, Default)]
struct Pending {
    seen: bool,
    hello: bool,
    online: Option<OnlineChange>,
    /// When this replica saw that change (the time a flip is stamped with).
    online_at: Option<DateTime<Utc>>,
    sessions: Vec<(Uuid, DateTime<Utc>)>,
}

impl Pending {
    fn any(&self) -> bool {
        self.seen || self.hello || self.online.is_some() || !self.sessions.is_empty()
    }
}

impl Live {
    fn from_row(row: PresenceRow) -> (CabinetId, Self) {
        let id = CabinetId::new(row.cabinet).unwrap_or_else(|e| {
            // Ids are validated on registration; a bad one in the database is a bug worth
            // seeing, but not worth crashing the server for.
            tracing::error!(error = %e, "invalid cabinet id in the database");
            CabinetId::new("invalid").expect("literal id is valid")
        });
        (
            id,
            Self {
                online: row.online,
                session: row.session,
                last_seen: row.last_seen_at,
                firmware: row.firmware,
                hardware: row.hardware,
                slot: row.slot,
                tenant: row.tenant,
                doors: None,
                went_offline: None,
                pending: Pending::default(),
            },
        )
    }

    fn update(&self, id: &CabinetId) -> PresenceUpdate {
        PresenceUpdate {
            cabinet: id.to_string(),
            seen: if self.pending.seen { self.last_seen } else { None },
            hello: if self.pending.hello {
                Some((
                    self.firmware.clone().unwrap_or_default(),
                    self.hardware.clone().unwrap_or_default(),
                    self.slot.clone().unwrap_or_default(),
                ))
            } else {
                None
            },
            online: self.pending.online.clone(),
            online_at: self.pending.online_at,
            sessions: self.pending.sessions.clone(),
        }
    }
}

/// What a cabinet said, after the ingress checked size, format and topic.
#[derive(Debug)]
pub enum Inbound {
    Up(Box<Envelope<UpBody>>),
    Presence(Envelope<PresenceBody>),
}

/// A checked message from a cabinet.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FromCabinet {
    pub cabinet: CabinetId,
    pub inbound: Inbound,
}

/// A cabinet was registered (on this replica), with its tenant.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Registered(pub CabinetId, pub String);

/// The live view of one cabinet, for the API.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveView {
    pub online: bool,
    pub last_seen: Option<DateTime<Utc>>,
    pub firmware: Option<String>,
    pub hardware: Option<String>,
    pub slot: Option<String>,
    /// Doors open at the last heartbeat this replica received.
    pub doors: Option<Doors>,
    /// Why (`will`: its connection dropped; `silent`: nothing heard for too long) and
    /// when this replica saw it go offline; absent when it did not see that happen.
    pub went_offline: Option<(&'static str, DateTime<Utc>)>,
}

#[derive(Debug, Message)]
#[rtype(result = "Option<LiveView>")]
pub struct Snapshot(pub CabinetId);

/// Write everything pending now (used at shutdown); resolves when it is written.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FlushNow;

/// Result of asking the database about a cabinet this replica did not know.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Resolved {
    cabinet: CabinetId,
    row: Option<PresenceRow>,
}

#[derive(Debug)]
pub struct Presence {
    store: Store,
    metrics: Metrics,
    flush_interval: Duration,
    stale_after: Duration,
    cabinets: HashMap<CabinetId, Live>,
    /// Messages held while the database is asked whether their cabinet exists.
    pending: HashMap<CabinetId, Vec<Inbound>>,
    /// Cabinets the database said it does not know, and when it said so.
    strangers: HashMap<CabinetId, Instant>,
    /// A flush is being written; the next waits for it so writes stay in order.
    flushing: bool,
    /// A transition is waiting to be written at the next opportunity.
    urgent: bool,
    /// Told when the flush under way has finished (used by `FlushNow`).
    flush_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    /// Shutting down: the final flush is the only write left to start.
    closing: bool,
    /// A silence sweep is asking the database what other replicas heard.
    sweeping: bool,
}

impl Presence {
    /// Loads every registered cabinet's last known presence.
    pub async fn load(
        store: Store,
        metrics: Metrics,
        flush_interval: Duration,
        stale_after: Duration,
    ) -> Result<Self, crate::store::StoreError> {
        let cabinets: HashMap<_, _> = store.all_presence().await?.into_iter().map(Live::from_row).collect();
        metrics.cabinets_known.set(cabinets.len() as i64);
        metrics.cabinets_online.set(cabinets.values().filter(|l| l.online).count() as i64);
        Ok(Self {
            store,
            metrics,
            flush_interval,
            stale_after,
            cabinets,
            pending: HashMap::new(),
            strangers: HashMap::new(),
            flushing: false,
            urgent: false,
            flush_waiters: Vec::new(),
            closing: false,
            sweeping: false,
        })
    }

    fn set_online(&mut self, id: &CabinetId, change: OnlineChange, cause: &'static str) {
        let Some(live) = self.cabinets.get_mut(id) else {
            return;
        };
        let online = matches!(change, OnlineChange::Online { .. });
        // A session change is always written (it orders later wills), even when the
        // cabinet was already online.
        let new_session = matches!(change, OnlineChange::Online { session: Some(_) } | OnlineChange::Will { .. });
        if live.online == online && !new_session {
            return;
        }
        live.pending.online = Some(change);
        live.pending.online_at = Some(crate::store::now());
        self.urgent = true;
        if live.online == online {
            return;
        }
        live.online = online;
        live.went_offline = if online { None } else { Some((cause, crate::store::now())) };
        if online {
            self.metrics.cabinets_online.inc();
            tracing::info!(cabinet = %id, "cabinet online");
        } else {
            self.metrics.cabinets_online.dec();
            self.metrics.cabinets_went_offline.with_label_values(&[cause]).inc();
            tracing::info!(cabinet = %id, cause, "cabinet offline");
        }
    }

    fn apply(&mut self, id: &CabinetId, inbound: Inbound) {
        let now = crate::store::now();
        match inbound {
            Inbound::Up(env) => {
                self.metrics.received_messages.with_label_values(&[env.body.kind()]).inc();
                if let Some(live) = self.cabinets.get_mut(id) {
                    live.last_seen = Some(now);
                    live.pending.seen = true;
                    if let UpBody::State(hb) = &env.body {
                        live.doors = Some(Box::new(Doors {
                            at: now,
                            open: hb.open_doors.iter().map(ToString::to_string).collect(),
                        }));
                    }
                    if let UpBody::Hello(h) = &env.body {
                        live.pending.hello = true;
                        live.firmware = Some(h.firmware.clone());
                        live.hardware = Some(h.hardware.clone());
                        live.slot = Some(
                            match h.slot {
                                Slot::A => "a",
                                Slot::B => "b",
                            }
                            .to_owned(),
                        );
                        self.urgent = true;
                    }
                }
                // Anything a cabinet sends proves it is connected.
                self.set_online(id, OnlineChange::Online { session: None }, "");
            }
            Inbound::Presence(env) => {
                self.metrics.received_messages.with_label_values(&["presence"]).inc();
                let Some(live) = self.cabinets.get_mut(id) else {
                    return;
                };
                match env.body {
                    PresenceBody::Online(s) => {
                        if live.session.is_some_and(|cur| s.session < cur) {
                            // A retained online of an older session: a newer one is known.
                            return;
                        }
                        if live.session != Some(s.session) {
                            live.pending.sessions.push((s.session, now));
                        }
                        live.session = Some(s.session);
                        live.last_seen = Some(now);
                        live.pending.seen = true;
                        self.urgent = true;
                        self.set_online(id, OnlineChange::Online { session: Some(s.session) }, "");
                    }
                    PresenceBody::Offline(s) => {
                        if live.session.is_some_and(|cur| s.session < cur) {
                            self.metrics.stale_wills.inc();
                            return;
                        }
                        live.session = Some(s.session);
                        self.urgent = true;
                        self.set_online(id, OnlineChange::Will { session: s.session }, "will");
                    }
                }
            }
        }
    }

    /// Marks cabinets offline that have been silent for longer than `stale_after`, by
    /// what any replica heard: replicas share the cabinets' messages, so before calling
    /// a cabinet silent this one asks the database for the last time anyone saw it (and
    /// whether another replica already took it offline, which it then just adopts).
    /// Without the database's answer it decides alone; the write stays conditional on
    /// the stored last-seen time either way.
    fn sweep_silent(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping {
            return;
        }
        let Ok(limit) = chrono::Duration::from_std(self.stale_after) else {
            return;
        };
        let cutoff = crate::store::now() - limit;
        let silent: Vec<CabinetId> = self
            .cabinets
            .iter()
            .filter(|(_, l)| l.online && l.last_seen.is_none_or(|t| t < cutoff))
            .map(|(id, _)| id.clone())
            .collect();
        if silent.is_empty() {
            return;
        }
        self.sweeping = true;
        let store = self.store.clone();
        let ids: Vec<String> = silent.iter().map(ToString::to_string).collect();
        async move {
            match tokio::time::timeout(SWEEP_READ_TIMEOUT, store.presence_seen(&ids)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {SWEEP_READ_TIMEOUT:?}")),
            }
        }
        .into_actor(self)
        .map(move |stored, act, ctx| {
            act.sweeping = false;
            let stored = stored.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not read what other replicas saw; judging silence alone");
                HashMap::new()
            });
            for id in silent {
                let Some(live) = act.cabinets.get_mut(&id) else { continue };
                if !live.online || live.last_seen.is_some_and(|t| t >= cutoff) {
                    continue; // heard from here meanwhile, or already offline
                }
                match stored.get(id.as_str()) {
                    Some(&(false, _)) => {
                        // Another replica took it offline (its will, or its silence):
                        // nothing here is newer, so this one just agrees, and drops
                        // an online it may still hold unwritten (a failed flush).
                        live.online = false;
                        live.went_offline = None;
                        (live.pending.online, live.pending.online_at) = (None, None);
                        act.metrics.cabinets_online.dec();
                    }
                    Some(&(true, Some(seen))) if seen >= cutoff => live.last_seen = Some(seen),
                    _ => act.set_online(&id, OnlineChange::Silent { cutoff }, "silent"),
                }
            }
            // Silences are transitions: written now, not at the next tick.
            act.flush(ctx);
        })
        .spawn(ctx);
    }

    fn take_dirty(&mut self) -> Vec<PresenceUpdate> {
        self.cabinets
            .iter_mut()
            .filter(|(_, l)| l.pending.any())
            .map(|(id, l)| {
                let u = l.update(id);
                l.pending = Pending::default();
                u
            })
            .collect()
    }

    /// Starts writing what changed, unless a write is already under way.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || self.closing {
            return;
        }
        self.urgent = false;
        let rows = self.take_dirty();
        if rows.is_empty() {
            return;
        }
        self.flushing = true;
        let store = self.store.clone();
        let timer = self.metrics.presence_flush_seconds.start_timer();
        async move {
            let result = store.write_presence(&rows).await;
            timer.observe_duration();
            (rows, result)
        }
        .into_actor(self)
        .map(|(rows, result), act, ctx| {
            act.flushing = false;
            for w in act.flush_waiters.drain(..) {
                let _ = w.send(());
            }
            if let Err(e) = result {
                act.metrics.presence_flush_errors.inc();
                tracing::warn!(error = %e, rows = rows.len(), "presence flush failed; will retry");
                // Put the changes back unless something newer replaced them meanwhile.
                for u in rows {
                    if let Some(l) = CabinetId::new(u.cabinet).ok().and_then(|id| act.cabinets.get_mut(&id)) {
                        l.pending.seen |= u.seen.is_some();
                        l.pending.hello |= u.hello.is_some();
                        if l.pending.online.is_none() {
                            l.pending.online = u.online;
                            l.pending.online_at = u.online_at;
                        }
                        l.pending.sessions.extend(u.sessions);
                    }
                }
            }
            if act.urgent {
                act.flush(ctx);
            }
        })
        .spawn(ctx);
    }

    fn after_message(&mut self, ctx: &mut Context<Self>) {
        if self.urgent {
            self.flush(ctx);
        }
    }
}

impl Actor for Presence {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.flush_interval, |act, ctx| {
            act.sweep_silent(ctx);
            act.flush(ctx);
        });
    }
}

impl Handler<FromCabinet> for Presence {
    type Result = ();

    fn handle(&mut self, msg: FromCabinet, ctx: &mut Self::Context) {
        let FromCabinet { cabinet, inbound } = msg;
        if self.cabinets.contains_key(&cabinet) {
            self.apply(&cabinet, inbound);
            self.after_message(ctx);
            return;
        }
        if let Some(queue) = self.pending.get_mut(&cabinet) {
            queue.push(inbound);
            return;
        }
        if self.strangers.get(&cabinet).is_some_and(|t| t.elapsed() < NEGATIVE_CACHE) {
            self.metrics.rejected_messages.with_label_values(&["unregistered_cabinet"]).inc();
            return;
        }
        self.pending.insert(cabinet.clone(), vec![inbound]);
        let store = self.store.clone();
        let me = ctx.address();
        actix::spawn(async move {
            let row = match store.presence_of(cabinet.as_str()).await {
                Ok(row) => row,
                Err(e) => {
                    tracing::warn!(error = %e, %cabinet, "could not look up cabinet");
                    None
                }
            };
            me.do_send(Resolved { cabinet, row });
        });
    }
}

impl Handler<Resolved> for Presence {
    type Result = ();

    fn handle(&mut self, msg: Resolved, ctx: &mut Self::Context) {
        let queued = self.pending.remove(&msg.cabinet).unwrap_or_default();
        match msg.row {
            Some(row) => {
                let (id, live) = Live::from_row(row);
                if live.online {
                    self.metrics.cabinets_online.inc();
                }
                self.cabinets.insert(id, live);
                self.metrics.cabinets_known.set(self.cabinets.len() as i64);
                for inbound in queued {
                    self.apply(&msg.cabinet, inbound);
                }
                self.after_message(ctx);
            }
            None => {
                tracing::debug!(cabinet = %msg.cabinet, dropped = queued.len(), "messages from an unregistered cabinet");
                self.metrics.rejected_messages.with_label_values(&["unregistered_cabinet"]).inc_by(queued.len() as u64);
                self.strangers.insert(msg.cabinet, Instant::now());
            }
        }
    }
}

impl Handler<Registered> for Presence {
    type Result = ();

    fn handle(&mut self, msg: Registered, _ctx: &mut Self::Context) {
        self.strangers.remove(&msg.0);
        self.cabinets.entry(msg.0).or_default().tenant = msg.1;
        self.metrics.cabinets_known.set(self.cabinets.len() as i64);
    }
}

impl Handler<Snapshot> for Presence {
    type Result = Option<LiveView>;

    fn handle(&mut self, msg: Snapshot, _ctx: &mut Self::Context) -> Self::Result {
        self.cabinets.get(&msg.0).map(|l| LiveView {
            online: l.online,
            last_seen: l.last_seen,
            firmware: l.firmware.clone(),
            hardware: l.hardware.clone(),
            slot: l.slot.clone(),
            doors: l.doors.as_deref().cloned(),
            went_offline: l.went_offline,
        })
    }
}

impl Handler<super::Shutdown> for Presence {
    type Result = ();

    fn handle(&mut self, _: super::Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<FlushNow> for Presence {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: FlushNow, _ctx: &mut Self::Context) -> Self::Result {
        self.closing = true;
        // A flush under way finishes first: two writes in flight could land out of order.
        let waiting = if self.flushing {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.flush_waiters.push(tx);
            Some(rx)
        } else {
            None
        };
        Box::pin(
            async move {
                if let Some(rx) = waiting {
                    let _ = rx.await;
                }
            }
            .into_actor(self)
            .then(|(), act, _| {
                let rows = act.take_dirty();
                let store = act.store.clone();
                async move {
                    if !rows.is_empty()
                        && let Err(e) = store.write_presence(&rows).await
                    {
                        tracing::warn!(error = %e, "final presence flush failed");
                    }
                }
                .into_actor(act)
            }),
        )
    }
}
