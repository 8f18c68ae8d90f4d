//! The ingest actor: cabinet events into the database, exactly once, then acked.
//!
//! ```text
//!   ingress ──Events──► buffer ──(max_batch or max_wait_ms)──► one transaction:
//!                                   known ids? → duplicates (acked, not stored again)
//!                                   new ids    → INSERT … ON CONFLICT DO NOTHING
//!                                               + parcel transitions (deposit, pickup, collect)
//!                         commit ──► ack on each cabinet's down topic (ids of new + duplicates)
//! ```
//!
//! The ack is sent only after the commit: a crash before it means the cabinet resends,
//! and the primary key on the event id makes the resend a duplicate. A transition the
//! lifecycle refuses (a pickup for a parcel already picked up) is counted and logged; the
//! event itself is stored and acked, so one odd fact can never block a cabinet's journal.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use lockerfleet_shared::envelope::{Ack, CabinetEvent, DownBody, EventKind, PickupMethod};
use lockerfleet_shared::{CabinetId, Envelope, TopicSpace};
use rumqttc::{AsyncClient, QoS};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};
use serde_json::json;
use uuid::Uuid;

use crate::domain::parcel::Transition;
use crate::metrics::Metrics;
use crate::service::Ctx;
use crate::service::parcels::{ServiceError, Source, transition_in};
use crate::store::entities::{cabinet_desired, cabinet_event, parcel};
use crate::store::now;
use sea_orm::sea_query::Expr;

/// Rows per multi-row insert (7 columns each, well inside PostgreSQL's 65,535 parameters).
const INSERT_CHUNK: usize = 1000;

/// A batch of events one cabinet sent.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Events {
    pub cabinet: CabinetId,
    pub events: Vec<CabinetEvent>,
    /// When the server received them: stored as each event's `received_at`, the same
    /// clock an OTA report is dated by, so the health watch sorts a cabinet's events
    /// before and after its confirmation in the order they arrived.
    pub received_at: chrono::DateTime<chrono::Utc>,
}

/// An event in the buffer: its cabinet, itself, when it arrived.
type Arrived = (CabinetId, CabinetEvent, chrono::DateTime<chrono::Utc>);

#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Flush;

/// A cabinet (re)connected and said hello: send it its current desired state, so a
/// cabinet that missed pushes while offline converges at once.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Hello {
    pub cabinet: CabinetId,
}

/// A cabinet reports the desired-state versions it has applied.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AppliedVersions {
    pub cabinet: CabinetId,
    pub templates: Option<u64>,
    pub parcels: Option<u64>,
}

/// A cabinet's OTA progress, for its rollout's conductor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct OtaProgress {
    pub cabinet: CabinetId,
    pub report: lockerfleet_shared::envelope::OtaReport,
    /// When the server received it (the conductor dates a confirmation by it).
    pub received_at: chrono::DateTime<chrono::Utc>,
}

impl Handler<OtaProgress> for Ingest {
    type Result = ();

    fn handle(&mut self, msg: OtaProgress, ctx: &mut Self::Context) {
        self.ota_pending.push((msg.cabinet, msg.report, msg.received_at));
        self.write_ota(ctx);
    }
}

/// OTA reports recorded in one write.
const OTA_BATCH: usize = 2_000;
/// Attempts at one batch of OTA reports before it is given up (about a minute in all).
const OTA_ATTEMPTS: u32 = 10;

impl Ingest {
    /// Records the OTA reports that arrived, a batch at a time: reports that come while
    /// one batch is written wait for the next, so a whole wave reporting at once costs a
    /// few statements on one pool connection instead of a connection per report. A
    /// database failure is retried with backoff; only after every attempt failed are the
    /// reports dropped (logged and counted; a cabinet's next report still arrives).
    fn write_ota(&mut self, ctx: &mut Context<Self>) {
        if self.ota_writing || self.ota_pending.is_empty() || !self.stopping.is_empty() {
            return;
        }
        self.ota_writing = true;
        let take = self.ota_pending.len().min(OTA_BATCH);
        let batch: Vec<_> = self.ota_pending.drain(..take).collect();
        let service = self.ctx.clone();
        let metrics = self.metrics.clone();
        async move {
            let mut wait = Duration::from_millis(100);
            for attempt in 1..=OTA_ATTEMPTS {
                match crate::service::rollouts::report_many(&service, &batch).await {
                    Ok(done) => {
                        metrics.ota_reports.with_label_values(&["queued"]).inc_by(done.queued as u64);
                        metrics.ota_reports.with_label_values(&["unknown_rollout"]).inc_by(done.unknown as u64);
                        return;
                    }
                    Err(e) if attempt < OTA_ATTEMPTS => {
                        metrics.ota_reports.with_label_values(&["retried"]).inc_by(batch.len() as u64);
                        tracing::warn!(error = %e, reports = batch.len(), attempt, "could not record OTA reports; trying again");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(10));
                    }
                    Err(e) => {
                        metrics.ota_reports.with_label_values(&["dropped"]).inc_by(batch.len() as u64);
                        tracing::error!(error = %e, reports = batch.len(), attempts = attempt, "could not record OTA reports; they are dropped");
                    }
                }
            }
        }
        .into_actor(self)
        .map(|(), act, ctx| {
            act.ota_writing = false;
            act.write_ota(ctx);
            act.finish_when_idle(ctx);
        })
        .spawn(ctx);
    }
}

pub struct Ingest {
    ctx: Ctx,
    metrics: Metrics,
    client: AsyncClient,
    topics: TopicSpace,
    max_batch: usize,
    max_wait: Duration,
    buffer: Vec<Arrived>,
    flush_scheduled: bool,
    writing: bool,
    outbox: Option<Recipient<super::outbox::Kick>>,
    /// OTA reports waiting for the next write, oldest first, and whether one is running.
    ota_pending: Vec<(CabinetId, lockerfleet_shared::envelope::OtaReport, chrono::DateTime<chrono::Utc>)>,
    ota_writing: bool,
    /// Hellos and applied versions waiting to be written, whether a write runs, and the
    /// wait after the last failed one.
    cabinet_state: CabinetState,
    cabinet_state_writing: bool,
    cabinet_state_backoff: Option<Duration>,
    /// Set by `Shutdown`: no new writes start; once those under way are done, everything
    /// still waiting is written in one last round, then the actor stops.
    stopping: Vec<tokio::sync::oneshot::Sender<()>>,
    finishing: bool,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest").field("buffered", &self.buffer.len()).finish_non_exhaustive()
    }
}

impl Ingest {
    pub fn new(
        ctx: Ctx,
        metrics: Metrics,
        client: AsyncClient,
        max_batch: usize,
        max_wait: Duration,
        outbox: Option<Recipient<super::outbox::Kick>>,
    ) -> Self {
        Self {
            topics: ctx.topics.clone(),
            ctx,
            metrics,
            client,
            max_batch,
            max_wait,
            buffer: Vec::new(),
            flush_scheduled: false,
            writing: false,
            outbox,
            ota_pending: Vec::new(),
            ota_writing: false,
            cabinet_state: CabinetState::default(),
            cabinet_state_writing: false,
            cabinet_state_backoff: None,
            stopping: Vec::new(),
            finishing: false,
        }
    }

    fn write(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.buffer.is_empty() || !self.stopping.is_empty() {
            return;
        }
        self.writing = true;
        let take = self.buffer.len().min(self.max_batch);
        let batch: Vec<_> = self.buffer.drain(..take).collect();
        self.metrics.ingest_buffered.set(self.buffer.len() as i64);
        let service = self.ctx.clone();
        let metrics = self.metrics.clone();
        async move {
            let timer = metrics.ingest_batch_seconds.start_timer();
            metrics.ingest_batch_size.observe(batch.len() as f64);
            let result = store_batch(&service, &metrics, &batch).await;
            timer.observe_duration();
            (batch, result)
        }
        .into_actor(self)
        .map(|(batch, result), act, ctx| {
            act.writing = false;
            match result {
                Ok(registered) => {
                    let ackable: Vec<_> =
                        batch.into_iter().filter(|(c, _, _)| registered.contains(c.as_str())).collect();
                    act.ack(&ackable);
                    if let Some(o) = &act.outbox {
                        o.do_send(super::outbox::Kick);
                    }
                }
                // Not acked: the cabinets resend, and the next attempt may succeed.
                Err(e) => tracing::warn!(error = %e, events = batch.len(), "ingest batch failed; not acked"),
            }
            act.write(ctx);
            act.finish_when_idle(ctx);
        })
        .spawn(ctx);
    }

    fn ack(&self, batch: &[Arrived]) {
        let mut per_cabinet: BTreeMap<&CabinetId, Vec<Uuid>> = BTreeMap::new();
        for (cabinet, event, _) in batch {
            per_cabinet.entry(cabinet).or_default().push(event.id);
        }
        // Acks the link's request queue has no room for now wait for room instead of being
        // dropped (a dropped ack costs the cabinet a resend and the server a duplicate).
        let mut waiting = Vec::new();
        for (cabinet, events) in per_cabinet {
            let envelope = Envelope::new(cabinet.clone(), 0, DownBody::Ack(Ack { events }));
            let topic = self.topics.cabinet_down(cabinet);
            match self.client.try_publish(topic.clone(), QoS::AtLeastOnce, false, envelope.encode()) {
                Ok(()) => self.metrics.acks_sent.inc(),
                // A full queue, mostly; also a closed link or an invalid topic, which the
                // publish that waits below then reports.
                Err(rumqttc::ClientError::TryRequest(rumqttc::Request::Publish(refused))) => {
                    waiting.push((topic, Vec::from(refused.payload)))
                }
                // The cabinet will resend; its events are already stored and will be acked then.
                Err(e) => tracing::warn!(error = %e, %cabinet, "could not queue an ack"),
            }
        }
        if !waiting.is_empty() {
            let (client, metrics) = (self.client.clone(), self.metrics.clone());
            actix::spawn(async move {
                for (topic, payload) in waiting {
                    match client.publish(topic, QoS::AtLeastOnce, false, payload).await {
                        Ok(()) => metrics.acks_sent.inc(),
                        Err(e) => tracing::warn!(error = %e, "could not queue an ack"),
                    }
                }
            });
        }
    }
}

impl Actor for Ingest {
    type Context = Context<Self>;
}

impl Handler<Events> for Ingest {
    type Result = ();

    fn handle(&mut self, msg: Events, ctx: &mut Self::Context) {
        let Events { cabinet, events, received_at } = msg;
        self.buffer.extend(events.into_iter().map(|e| (cabinet.clone(), e, received_at)));
        self.metrics.ingest_buffered.set(self.buffer.len() as i64);
        if self.buffer.len() >= self.max_batch {
            self.write(ctx);
        } else if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.notify_later(Flush, self.max_wait);
        }
    }
}

impl Handler<Flush> for Ingest {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) {
        self.flush_scheduled = false;
        self.write(ctx);
    }
}

impl Handler<Hello> for Ingest {
    type Result = ();

    fn handle(&mut self, msg: Hello, ctx: &mut Self::Context) {
        self.cabinet_state.hellos.insert(msg.cabinet);
        self.write_cabinet_state(ctx);
    }
}

impl Handler<AppliedVersions> for Ingest {
    type Result = ();

    fn handle(&mut self, msg: AppliedVersions, ctx: &mut Self::Context) {
        let reported = Applied {
            templates: msg.templates.and_then(|v| i64::try_from(v).ok()),
            parcels: msg.parcels.and_then(|v| i64::try_from(v).ok()),
        };
        self.cabinet_state.applied.entry(msg.cabinet).or_default().merge(reported);
        self.write_cabinet_state(ctx);
    }
}

/// Cabinets per kind in one cabinet-state write.
const CABINET_STATE_BATCH: usize = 1_000;
/// The longest wait before a failed cabinet-state write is tried again.
const CABINET_STATE_MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Versions a cabinet reported applied, the highest of each seen since the last write.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Applied {
    templates: Option<i64>,
    parcels: Option<i64>,
}

impl Applied {
    fn merge(&mut self, other: Applied) {
        self.templates = self.templates.max(other.templates);
        self.parcels = self.parcels.max(other.parcels);
    }
}

/// Hellos (each owed its desired state) and applied versions waiting for the next write.
/// Keyed by cabinet: a cabinet that says hello twice, or reports twice, before the write
/// costs one row, and what waits is bounded by the fleet's size.
#[derive(Debug, Default)]
struct CabinetState {
    hellos: std::collections::BTreeSet<CabinetId>,
    applied: BTreeMap<CabinetId, Applied>,
}

impl CabinetState {
    fn is_empty(&self) -> bool {
        self.hellos.is_empty() && self.applied.is_empty()
    }

    /// Hellos and reports waiting, for the gauge.
    fn len(&self) -> i64 {
        i64::try_from(self.hellos.len() + self.applied.len()).unwrap_or(i64::MAX)
    }

    /// Takes up to `max` of each kind.
    fn take(&mut self, max: usize) -> CabinetState {
        let mut taken = CabinetState::default();
        while taken.hellos.len() < max {
            let Some(c) = self.hellos.pop_first() else { break };
            taken.hellos.insert(c);
        }
        while taken.applied.len() < max {
            let Some((c, a)) = self.applied.pop_first() else { break };
            taken.applied.insert(c, a);
        }
        taken
    }

    /// Puts back what a failed write took, merged with what arrived meanwhile.
    fn restore(&mut self, failed: CabinetState) {
        self.hellos.extend(failed.hellos);
        for (c, a) in failed.applied {
            self.applied.entry(c).or_default().merge(a);
        }
    }
}

impl Ingest {
    /// Writes the waiting hellos and applied versions in one transaction, one write at a
    /// time: what arrives during a write goes into the next. Before, each was a write of
    /// its own, and ten thousand cabinets' hellos and push confirmations were twenty
    /// thousand commits queueing for SQLite's one writer ahead of the event batches. A
    /// failed write is put back and tried again with backoff; nothing is dropped.
    fn write_cabinet_state(&mut self, ctx: &mut Context<Self>) {
        self.metrics.cabinet_state_pending.set(self.cabinet_state.len());
        if self.cabinet_state_writing || self.cabinet_state.is_empty() || !self.stopping.is_empty() {
            return;
        }
        self.cabinet_state_writing = true;
        let batch = self.cabinet_state.take(CABINET_STATE_BATCH);
        self.metrics.cabinet_state_pending.set(self.cabinet_state.len());
        let service = self.ctx.clone();
        async move {
            let result = store_cabinet_state(&service, &batch).await;
            (batch, result)
        }
        .into_actor(self)
        .map(|(batch, result), act, ctx| {
            let m = &act.metrics.cabinet_state_writes;
            let (hellos, applied) = (batch.hellos.len() as u64, batch.applied.len() as u64);
            match result {
                Ok(()) => {
                    act.cabinet_state_backoff = None;
                    m.with_label_values(&["hello", "written"]).inc_by(hellos);
                    m.with_label_values(&["applied", "written"]).inc_by(applied);
                    if hellos > 0
                        && let Some(o) = &act.outbox
                    {
                        o.do_send(super::outbox::Kick);
                    }
                    act.cabinet_state_writing = false;
                    act.write_cabinet_state(ctx);
                    act.finish_when_idle(ctx);
                }
                Err(e) => {
                    m.with_label_values(&["hello", "retried"]).inc_by(hellos);
                    m.with_label_values(&["applied", "retried"]).inc_by(applied);
                    let wait = act
                        .cabinet_state_backoff
                        .map_or(Duration::from_millis(100), |w| (w * 2).min(CABINET_STATE_MAX_BACKOFF));
                    act.cabinet_state_backoff = Some(wait);
                    tracing::warn!(error = %e, hellos, applied, retry_in = ?wait, "could not record hellos and applied versions; trying again");
                    act.cabinet_state.restore(batch);
                    ctx.run_later(wait, |act, ctx| {
                        act.cabinet_state_writing = false;
                        act.write_cabinet_state(ctx);
                        act.finish_when_idle(ctx);
                    });
                }
            }
        })
        .spawn(ctx);
    }
}

/// Records a batch: a desired-state push queued for every cabinet that said hello (so a
/// cabinet that missed pushes while offline converges at once), and the applied versions.
///
/// On SQLite in one transaction: one commit (one fsync) for the batch, and its lock is
/// the whole database's, so nothing can deadlock with it. On PostgreSQL statement by
/// statement: a transaction holding a thousand `cabinet_desired` rows would deadlock with
/// event batches bumping the same rows in another order, and PostgreSQL commits
/// concurrently anyway. A failure part way is retried whole; a second push of the same
/// state is harmless and the version updates are idempotent.
async fn store_cabinet_state(ctx: &Ctx, batch: &CabinetState) -> Result<(), sea_orm::DbErr> {
    if ctx.store.is_postgres() {
        return cabinet_state_in(ctx.store.connection(), batch).await;
    }
    let txn = ctx.store.begin_write().await?;
    cabinet_state_in(&txn, batch).await?;
    txn.commit().await
}

async fn cabinet_state_in<C: sea_orm::ConnectionTrait>(db: &C, batch: &CabinetState) -> Result<(), sea_orm::DbErr> {
    use crate::store::entities::cabinet;
    if !batch.hellos.is_empty() {
        let ids: Vec<&str> = batch.hellos.iter().map(CabinetId::as_str).collect();
        // Cabinets nobody registered are owed nothing.
        let known: Vec<(String, String)> = cabinet::Entity::find()
            .filter(cabinet::Column::Id.is_in(ids))
            .all(db)
            .await?
            .into_iter()
            .map(|c| (c.tenant_id, c.id))
            .collect();
        crate::service::outbox::enqueue_cabinets(db, &known, now()).await?;
    }
    for (cabinet, applied) in &batch.applied {
        // Versions only move forward: a late report never lowers what was confirmed.
        // A cabinet cannot confirm a version it was never sent.
        let columns = [
            (cabinet_desired::Column::TemplatesApplied, cabinet_desired::Column::TemplatesVersion, applied.templates),
            (cabinet_desired::Column::ParcelsApplied, cabinet_desired::Column::ParcelsVersion, applied.parcels),
        ];
        for (column, sent, version) in columns {
            let Some(v) = version else { continue };
            cabinet_desired::Entity::update_many()
                .col_expr(column, Expr::value(v))
                .filter(cabinet_desired::Column::CabinetId.eq(cabinet.as_str()))
                .filter(column.lt(v))
                .filter(sent.gte(v))
                .exec(db)
                .await?;
        }
    }
    Ok(())
}

fn kind_of(e: &EventKind) -> &'static str {
    match e {
        EventKind::Deposit { .. } => "deposit",
        EventKind::Pickup { .. } => "pickup",
        EventKind::Collected { .. } => "collected",
        EventKind::FailedMatch { .. } => "failed_match",
        EventKind::Alarm { .. } => "alarm",
    }
}

/// The metric label of an alarm code: the codes the agent sends, anything else `other`
/// (a cabinet must not be able to mint label values).
fn alarm_label(code: &str) -> &'static str {
    const KNOWN: [&str; 7] = [
        "door_forced",
        "door_left_open",
        "lock_jammed",
        "keypad_lockout",
        "face_lockout",
        "journal_near_full",
        "journal_dropped",
    ];
    KNOWN.iter().find(|k| **k == code).copied().unwrap_or("other")
}

/// Counts a pickup event's outcome; other events are not pickups.
fn count_pickup(metrics: &Metrics, what: &EventKind, outcome: &str) {
    if let EventKind::Pickup { method, .. } = what {
        let method = match method {
            PickupMethod::Face => "face",
            PickupMethod::Code => "code",
        };
        metrics.pickups.with_label_values(&[method, outcome]).inc();
    }
}

/// The method of a failed attempt: the agent reports a wrong code with this reason
/// (edge-agent `EnterCode`); every other failed match is a face attempt.
fn failed_method(reason: &str) -> &'static str {
    if reason == "wrong pickup code" { "code" } else { "face" }
}

/// Stores a batch; returns the cabinets whose events may be acked (the registered ones).
async fn store_batch(ctx: &Ctx, metrics: &Metrics, batch: &[Arrived]) -> Result<HashSet<String>, ServiceError> {
    let txn = ctx.store.begin_write().await?;
    let ids: Vec<Uuid> = batch.iter().map(|(_, e, _)| e.id).collect();
    let known: HashSet<Uuid> = cabinet_event::Entity::find()
        .filter(cabinet_event::Column::Id.is_in(ids))
        .all(&txn)
        .await?
        .into_iter()
        .map(|e| e.id)
        .collect();
    let at = now();
    // Events of cabinets nobody registered are neither stored nor acked.
    let cabinet_ids: Vec<String> = batch.iter().map(|(c, _, _)| c.to_string()).collect();
    let registered: HashSet<String> = crate::store::entities::cabinet::Entity::find()
        .filter(crate::store::entities::cabinet::Column::Id.is_in(cabinet_ids))
        .all(&txn)
        .await?
        .into_iter()
        .map(|c| c.id)
        .collect();
    // New events go in with multi-row inserts (one round trip per chunk, not per event);
    // ON CONFLICT keeps a concurrent replica's copy and ours from clashing.
    let mut seen_in_batch = HashSet::new();
    let mut fresh: Vec<&Arrived> = Vec::with_capacity(batch.len());
    for item in batch {
        let (cabinet, event, _) = item;
        if !registered.contains(cabinet.as_str()) {
            continue;
        }
        if known.contains(&event.id) || !seen_in_batch.insert(event.id) {
            metrics.ingest_events.with_label_values(&["duplicate"]).inc();
            continue;
        }
        fresh.push(item);
    }
    // Seconds from the cabinet's clock to now, observed once the batch has committed.
    let ages: Vec<f64> = fresh.iter().map(|(_, e, _)| (at - e.at).num_milliseconds().max(0) as f64 / 1000.0).collect();
    for chunk in fresh.chunks(INSERT_CHUNK) {
        let rows = chunk.iter().map(|(cabinet, event, received_at)| cabinet_event::ActiveModel {
            id: Set(event.id),
            cabinet_id: Set(cabinet.to_string()),
            seq: Set(i64::try_from(event.seq).unwrap_or(i64::MAX)),
            at: Set(event.at),
            kind: Set(kind_of(&event.what).to_owned()),
            body: Set(serde_json::to_string(&event.what).expect("event kinds serialise")),
            received_at: Set(*received_at),
        });
        let inserted = match cabinet_event::Entity::insert_many(rows)
            .on_conflict(sea_orm::sea_query::OnConflict::column(cabinet_event::Column::Id).do_nothing().to_owned())
            .exec_without_returning(&txn)
            .await
        {
            Ok(n) => n,
            Err(sea_orm::DbErr::RecordNotInserted) => 0,
            Err(e) => return Err(e.into()),
        };
        metrics.ingest_events.with_label_values(&["stored"]).inc_by(inserted);
        // Rows another replica stored in the meantime; their transitions are refused
        // below by the lifecycle, so nothing is applied twice.
        metrics
            .ingest_events
            .with_label_values(&["duplicate"])
            .inc_by(chunk.len() as u64 - inserted.min(chunk.len() as u64));
    }
    for (cabinet, event, _) in fresh {
        let (parcel_id, transition) = match &event.what {
            EventKind::Alarm { code, .. } => {
                metrics.cabinet_alarms.with_label_values(&[alarm_label(code)]).inc();
                tracing::warn!(%cabinet, code, "cabinet alarm");
                continue;
            }
            EventKind::FailedMatch { reason } => {
                metrics.cabinet_alarms.with_label_values(&["failed_match"]).inc();
                metrics.pickups.with_label_values(&[failed_method(reason), "failed"]).inc();
                continue;
            }
            EventKind::Deposit { parcel, .. } => (parcel.0, Transition::Deposit),
            EventKind::Pickup { parcel, .. } => (parcel.0, Transition::Pickup),
            EventKind::Collected { parcel, .. } => (parcel.0, Transition::Collect),
        };
        let kind = kind_of(&event.what);
        let Some(p) = parcel::Entity::find_by_id(parcel_id).one(&txn).await? else {
            metrics.ingest_refused_transitions.with_label_values(&[kind]).inc();
            count_pickup(metrics, &event.what, "refused");
            tracing::warn!(%cabinet, parcel = %parcel_id, kind, "event names an unknown parcel");
            continue;
        };
        if p.cabinet_id.as_deref() != Some(cabinet.as_str()) {
            metrics.ingest_refused_transitions.with_label_values(&[kind]).inc();
            count_pickup(metrics, &event.what, "refused");
            tracing::warn!(%cabinet, parcel = %parcel_id, kind, "event names a parcel of another cabinet");
            continue;
        }
        let detail = json!({"event": event.id, "seq": event.seq, "cabinet_time": event.at, "what": event.what});
        // A savepoint per event: whatever goes wrong with one parcel's consequences, the
        // event stays stored and the rest of the batch commits.
        let savepoint = txn.begin().await?;
        match transition_in(&savepoint, ctx, p, &transition, Source::Cabinet, detail, at).await {
            Ok(_) => {
                savepoint.commit().await?;
                count_pickup(metrics, &event.what, "picked_up");
            }
            Err(e) => {
                savepoint.rollback().await?;
                metrics.ingest_refused_transitions.with_label_values(&[kind]).inc();
                count_pickup(metrics, &event.what, "refused");
                tracing::warn!(%cabinet, parcel = %parcel_id, kind, error = %e, "transition not applied; event kept");
            }
        }
    }
    txn.commit().await?;
    for age in ages {
        metrics.ingest_lag_seconds.observe(age);
    }
    Ok(registered)
}

impl Handler<super::Shutdown> for Ingest {
    type Result = ResponseFuture<()>;

    /// Lets the writes under way finish, then writes and acks the buffered events and
    /// records the waiting hellos, applied versions and OTA reports, then stops.
    fn handle(&mut self, _: super::Shutdown, ctx: &mut Self::Context) -> Self::Result {
        let (done, stopped) = tokio::sync::oneshot::channel();
        self.stopping.push(done);
        self.finish_when_idle(ctx);
        Box::pin(async move {
            let _ = stopped.await;
        })
    }
}

impl Ingest {
    /// The last round of a shutdown, once no write is under way: whatever still waits,
    /// in batches of the usual sizes, each tried once (what fails is logged; events not
    /// acked are resent by their cabinets, a hello comes again with the next connection).
    fn finish_when_idle(&mut self, ctx: &mut Context<Self>) {
        if self.stopping.is_empty() || self.finishing || self.writing || self.ota_writing || self.cabinet_state_writing
        {
            return;
        }
        self.finishing = true;
        let events: Vec<Arrived> = self.buffer.drain(..).collect();
        let mut state = std::mem::take(&mut self.cabinet_state);
        let ota: Vec<_> = self.ota_pending.drain(..).collect();
        let (service, metrics, max_batch) = (self.ctx.clone(), self.metrics.clone(), self.max_batch.max(1));
        async move {
            let mut ackable = Vec::new();
            for batch in events.chunks(max_batch) {
                match store_batch(&service, &metrics, batch).await {
                    Ok(registered) => {
                        ackable.extend(batch.iter().filter(|(c, _, _)| registered.contains(c.as_str())).cloned())
                    }
                    Err(e) => tracing::warn!(error = %e, events = batch.len(), "ingest batch failed at shutdown; not acked"),
                }
            }
            while !state.is_empty() {
                let part = state.take(CABINET_STATE_BATCH);
                if let Err(e) = store_cabinet_state(&service, &part).await {
                    tracing::warn!(error = %e, hellos = part.hellos.len(), applied = part.applied.len(), "could not record hellos and applied versions at shutdown");
                }
            }
            for batch in ota.chunks(OTA_BATCH) {
                match crate::service::rollouts::report_many(&service, batch).await {
                    Ok(done) => {
                        metrics.ota_reports.with_label_values(&["queued"]).inc_by(done.queued as u64);
                        metrics.ota_reports.with_label_values(&["unknown_rollout"]).inc_by(done.unknown as u64);
                    }
                    Err(e) => {
                        metrics.ota_reports.with_label_values(&["dropped"]).inc_by(batch.len() as u64);
                        tracing::error!(error = %e, reports = batch.len(), "could not record OTA reports at shutdown; they are dropped");
                    }
                }
            }
            ackable
        }
        .into_actor(self)
        .map(|ackable, act, ctx| {
            act.ack(&ackable);
            for done in act.stopping.drain(..) {
                let _ = done.send(());
            }
            ctx.stop();
        })
        .spawn(ctx);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cab(id: &str) -> CabinetId {
        CabinetId::new(id).unwrap()
    }

    #[test]
    fn waiting_reports_keep_the_highest_version_of_each_kind() {
        let mut a = Applied { templates: Some(3), parcels: None };
        a.merge(Applied { templates: Some(2), parcels: Some(5) });
        assert_eq!(a, Applied { templates: Some(3), parcels: Some(5) });
        a.merge(Applied { templates: None, parcels: Some(4) });
        assert_eq!(a, Applied { templates: Some(3), parcels: Some(5) });
    }

    #[test]
    fn a_write_takes_at_most_its_share_and_a_failed_one_is_put_back_merged() {
        let mut waiting = CabinetState::default();
        for i in 0..5 {
            waiting.hellos.insert(cab(&format!("cab-{i}")));
            waiting.applied.insert(cab(&format!("cab-{i}")), Applied { templates: Some(1), parcels: Some(1) });
        }
        let taken = waiting.take(3);
        assert_eq!((taken.hellos.len(), taken.applied.len()), (3, 3));
        assert_eq!((waiting.hellos.len(), waiting.applied.len()), (2, 2));
        // While the write ran, cab-0 applied a newer parcel set.
        waiting.applied.insert(cab("cab-0"), Applied { templates: None, parcels: Some(2) });
        waiting.restore(taken);
        assert_eq!((waiting.hellos.len(), waiting.applied.len()), (5, 5));
        assert_eq!(waiting.applied[&cab("cab-0")], Applied { templates: Some(1), parcels: Some(2) });
        let rest = waiting.take(10);
        assert!(waiting.is_empty());
        assert_eq!(rest.hellos.len(), 5);
    }
}
