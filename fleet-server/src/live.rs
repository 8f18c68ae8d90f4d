//! The live feed behind the operator console: cabinets going online and offline, alarms
//! raised and acknowledged, rollout progress.
//!
//! ```text
//!   poller ── every second, only while someone listens: presence transitions, new
//!             alarms, new acknowledgements, changed rollouts (all from the database)
//!      └──► LiveFeed (broadcast) ──► GET /api/v1/live (SSE, per caller: tenant and role filtered)
//! ```
//!
//! Everything is read from the database, so a console sees what happened whichever
//! replica handled it. That matters most for presence: replicas share the cabinets'
//! messages (one shared subscription), so each replica's presence actor sees only some
//! of a cabinet's messages, and its own idea of "went silent" may be wrong where the
//! database's conditional write is not; only a flip the database took
//! (`cabinets.presence_changed_at`) is announced. The poll looks back [`LOOK_BACK`]
//! past its last run (a batch committed a little after the time stamped on its rows is
//! still caught) and forgets what it has already sent only once it is older than that
//! window.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::store::Store;
use crate::store::entities::rollout;
use crate::store::fleet_view::AlarmFilter;

/// How far before its last run each poll looks.
pub const LOOK_BACK: chrono::Duration = chrono::Duration::seconds(10);

/// Most items of one kind (presence flips, alarms, acknowledgements) a poll reads, the
/// newest. When more may have been left out, the tenants concerned get `lagged`.
const POLL_LIMIT: u64 = 500;

/// One thing that changed, as a console receives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LiveEvent {
    Presence {
        cabinet: String,
        tenant: String,
        online: bool,
        at: DateTime<Utc>,
    },
    Alarm {
        id: Uuid,
        cabinet: String,
        tenant: String,
        code: String,
        detail: String,
        at: DateTime<Utc>,
        received_at: DateTime<Utc>,
    },
    AlarmAcknowledged {
        id: Uuid,
        cabinet: String,
        tenant: String,
        by: String,
        at: DateTime<Utc>,
    },
    /// Some events did not reach this console: it fell behind the feed (`missed` of
    /// them), or more changed in a tenant's fleet within a poll's window than one poll
    /// reads (an alarm storm, a fleet reconnecting). It reads its data again.
    Lagged {
        what: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        tenant: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        missed: Option<u64>,
    },
    /// Rollouts run fleet-wide: no tenant.
    Rollout {
        id: Uuid,
        name: String,
        phase: String,
        progress: serde_json::Value,
        updated_at: DateTime<Utc>,
    },
}

impl LiveEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            LiveEvent::Presence { .. } => "presence",
            LiveEvent::Alarm { .. } => "alarm",
            LiveEvent::AlarmAcknowledged { .. } => "alarm_acknowledged",
            LiveEvent::Rollout { .. } => "rollout",
            LiveEvent::Lagged { .. } => "lagged",
        }
    }

    /// The tenant whose callers may see it; `None` for fleet-wide facts.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            LiveEvent::Presence { tenant, .. }
            | LiveEvent::Alarm { tenant, .. }
            | LiveEvent::AlarmAcknowledged { tenant, .. } => Some(tenant),
            LiveEvent::Lagged { tenant, .. } => tenant.as_deref(),
            LiveEvent::Rollout { .. } => None,
        }
    }
}

/// The hub: cheap to clone, one per server.
#[derive(Debug, Clone)]
pub struct LiveFeed {
    tx: broadcast::Sender<Arc<LiveEvent>>,
}

impl Default for LiveFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveFeed {
    /// A feed whose slowest listener may fall 1,024 events behind before it is told it
    /// missed some (the console then reloads what it shows).
    pub fn new() -> Self {
        Self { tx: broadcast::channel(1024).0 }
    }

    pub fn publish(&self, event: LiveEvent) {
        // Nobody listening is fine.
        let _ = self.tx.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.tx.subscribe()
    }

    /// Whether any console is listening.
    pub fn listened(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Starts the database poller; it ends when `stop` turns true.
    pub fn spawn_poller(&self, store: Store, every: Duration, mut stop: watch::Receiver<bool>) {
        let feed = self.clone();
        actix_rt::spawn(async move {
            let mut poller = Poller::new(crate::store::now());
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let now = crate::store::now();
                if !feed.listened() {
                    // Nothing to tell anyone: start afresh when someone connects.
                    poller = Poller::new(now);
                    continue;
                }
                match poller.poll(&store, now).await {
                    Ok(events) => events.into_iter().for_each(|e| feed.publish(e)),
                    Err(e) => tracing::warn!(error = %e, "live feed poll failed; retrying"),
                }
            }
        });
    }
}

/// One kind's page, read newest first: the items not sent before (oldest first), the
/// keys of the whole page (what counts as sent from now on), and whether items may have
/// been left out — the page is full and even its oldest item is new, so older new ones
/// may lie beyond it.
fn fresh<T, K: Eq + std::hash::Hash>(
    newest_first: Vec<T>,
    sent: &HashSet<K>,
    key: impl Fn(&T) -> K,
) -> (Vec<T>, HashSet<K>, bool) {
    let full = newest_first.len() as u64 >= POLL_LIMIT;
    let oldest_is_new = newest_first.last().is_some_and(|t| !sent.contains(&key(t)));
    let mut keys = HashSet::with_capacity(newest_first.len());
    let mut new = Vec::new();
    for t in newest_first.into_iter().rev() {
        let k = key(&t);
        if !sent.contains(&k) {
            new.push(t);
        }
        keys.insert(k);
    }
    (new, keys, full && oldest_is_new)
}

/// What the poller has sent, so the look-back window sends nothing twice.
struct Poller {
    since: DateTime<Utc>,
    /// Presence flips, by cabinet and time of the flip.
    presence: HashSet<(String, DateTime<Utc>)>,
    alarms: HashSet<Uuid>,
    acks: HashSet<Uuid>,
    /// The last progress sent per rollout.
    rollouts: HashMap<Uuid, serde_json::Value>,
}

impl Poller {
    fn new(now: DateTime<Utc>) -> Self {
        Self {
            since: now,
            presence: HashSet::new(),
            alarms: HashSet::new(),
            acks: HashSet::new(),
            rollouts: HashMap::new(),
        }
    }

    async fn poll(&mut self, store: &Store, now: DateTime<Utc>) -> Result<Vec<LiveEvent>, crate::store::StoreError> {
        let from = self.since - LOOK_BACK;
        let mut out = Vec::new();
        // Every read first; what was sent is remembered only once all of them worked, so
        // a failed poll is repeated whole instead of losing what it had read.
        let flips = store.presence_changes_after(from, POLL_LIMIT).await?;
        let alarms =
            store.alarms(&AlarmFilter { received_after: Some(from), ..Default::default() }, POLL_LIMIT).await?;
        let acks = store.acks_after(from, POLL_LIMIT).await?;
        let (flips, presence, presence_overflow) = fresh(flips, &self.presence, |f| (f.cabinet.clone(), f.at));
        let (alarms, alarm_ids, alarms_overflow) = fresh(alarms, &self.alarms, |a| a.event.id);
        let (acks, ack_ids, acks_overflow) = fresh(acks, &self.acks, |k| k.event_id);
        let mut ack_tenants = Vec::with_capacity(acks.len());
        for k in &acks {
            ack_tenants.push(store.cabinet_tenant(&k.cabinet_id).await?.unwrap_or_default());
        }

        let mut lagged: BTreeSet<(&'static str, String)> = BTreeSet::new();
        if presence_overflow {
            lagged.extend(flips.iter().map(|f| ("presence", f.tenant.clone())));
        }
        if alarms_overflow {
            lagged.extend(alarms.iter().map(|a| ("alarms", a.tenant.clone())));
        }
        if acks_overflow {
            lagged.extend(ack_tenants.iter().map(|t| ("alarm acknowledgements", t.clone())));
        }
        out.extend(lagged.into_iter().map(|(what, tenant)| LiveEvent::Lagged {
            what,
            tenant: Some(tenant),
            missed: None,
        }));
        out.extend(flips.into_iter().map(|f| LiveEvent::Presence {
            cabinet: f.cabinet,
            tenant: f.tenant,
            online: f.online,
            at: f.at,
        }));
        for a in alarms {
            let (code, detail) = a.code_and_detail();
            out.push(LiveEvent::Alarm {
                id: a.event.id,
                cabinet: a.event.cabinet_id,
                tenant: a.tenant,
                code,
                detail,
                at: a.event.at,
                received_at: a.event.received_at,
            });
        }
        for (k, tenant) in acks.into_iter().zip(ack_tenants) {
            out.push(LiveEvent::AlarmAcknowledged {
                id: k.event_id,
                cabinet: k.cabinet_id,
                tenant,
                by: k.token_name,
                at: k.acked_at,
            });
        }
        (self.presence, self.alarms, self.acks) = (presence, alarm_ids, ack_ids);
        let changed = rollout::Entity::find()
            .filter(rollout::Column::UpdatedAt.gt(from))
            .order_by_asc(rollout::Column::UpdatedAt)
            .limit(POLL_LIMIT)
            .all(store.connection())
            .await?;
        for r in changed {
            let Ok(conductor) = serde_json::from_str::<crate::domain::rollout::Conductor>(&r.snapshot) else {
                continue;
            };
            let progress = serde_json::to_value(conductor.summary()).unwrap_or_default();
            if self.rollouts.get(&r.id) == Some(&progress) {
                continue;
            }
            self.rollouts.insert(r.id, progress.clone());
            out.push(LiveEvent::Rollout { id: r.id, name: r.name, phase: r.phase, progress, updated_at: r.updated_at });
        }
        self.since = now;
        Ok(out)
    }
}
