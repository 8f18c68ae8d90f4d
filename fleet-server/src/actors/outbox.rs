//! The outbox relay: delivers what the use cases queued in the `outbox` table.
//!
//! ```text
//!   outbox rows ──► relay pass ──► mqtt:    courier topics (PUBACK-confirmed)
//!   (committed)         │         cabinet: the cabinet's current desired state → down topic
//!                       │         webhook: POST, HMAC-SHA256 signed, retried with backoff
//!                       └──► delivered_at set only after the broker or endpoint accepted
//! ```
//!
//! A pass runs when kicked (after a commit that queued something) and every second. A
//! row that fails is retried with capped exponential backoff and jitter (at most one
//! attempt an hour once it has failed a dozen times); its last error is kept on the row
//! for the operator. Webhooks are posted off the pass, each bounded by a 5 s timeout, and
//! one webhook batch is in flight at a time: a slow or dead endpoint never holds up the
//! MQTT notifications and desired-state pushes of the passes after it. Delivery is at least once: a crash after the
//! broker accepted and before `delivered_at` was written sends that message again, and
//! receivers deduplicate on the envelope id.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use hmac::{Hmac, Mac};
use lockerfleet_shared::envelope::DownBody;
use lockerfleet_shared::{CabinetId, Envelope, TopicSpace};
use rand::Rng;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use sha2::Sha256;

use super::publisher::{MAX_BATCH, Publisher};
use crate::metrics::Metrics;
use crate::service::desired;
use crate::service::outbox::{CHANNEL_CABINET, CHANNEL_MQTT, CHANNEL_WEBHOOK};
use crate::store::entities::{outbox, tenant};
use crate::store::{Store, now};

/// Something was queued: run a pass soon.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Kick;

pub struct OutboxRelay {
    store: Store,
    metrics: Metrics,
    topics: TopicSpace,
    /// Courier-pass verifying keys, sent with every parcel set.
    pass_keys: Vec<String>,
    /// `webhooks.allow_private_targets`.
    allow_private_webhooks: bool,
    /// `outbox.claim_lease_s`: how long claimed rows stay this relay's.
    claim_lease: chrono::Duration,
    publisher: Option<Publisher>,
    http: awc::Client,
    running: bool,
    again: bool,
    /// A batch of webhooks is being posted (off the pass); until it settles, passes claim
    /// no further webhook rows, so the number of open webhook requests stays bounded.
    webhooks_busy: bool,
    /// Set by `Shutdown`: finish the pass under way (so its claimed rows are settled
    /// rather than left to their lease), then stop.
    stopping: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay").field("running", &self.running).finish_non_exhaustive()
    }
}

impl OutboxRelay {
    /// Lets webhooks reach loopback and private addresses (`webhooks.allow_private_targets`).
    pub fn allow_private_webhooks(mut self, allow: bool) -> Self {
        self.allow_private_webhooks = allow;
        self
    }

    /// How long rows claimed by a pass stay this relay's (`outbox.claim_lease_s`).
    pub fn claim_lease(mut self, lease: Duration) -> Self {
        self.claim_lease = chrono::Duration::from_std(lease).unwrap_or(DEFAULT_CLAIM_LEASE);
        self
    }

    pub fn new(
        store: Store,
        metrics: Metrics,
        topics: TopicSpace,
        pass_keys: Vec<String>,
        broker: crate::broker::BrokerLink,
    ) -> Self {
        Self {
            store,
            metrics,
            topics,
            pass_keys,
            allow_private_webhooks: false,
            claim_lease: DEFAULT_CLAIM_LEASE,
            publisher: Some(Publisher::new(broker, "lf-outbox")),
            http: awc::Client::builder().timeout(Duration::from_secs(5)).finish(),
            running: false,
            again: false,
            webhooks_busy: false,
            stopping: Vec::new(),
        }
    }

    fn pass(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            self.again = true;
            return;
        }
        self.running = true;
        self.again = false;
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let topics = self.topics.clone();
        let pass_keys = self.pass_keys.clone();
        let include_webhooks = !self.webhooks_busy && self.stopping.is_empty();
        let lease = self.claim_lease;
        let mut publisher = self.publisher.take().expect("the publisher is home whenever no pass runs");
        async move {
            let pass = Pass { store: &store, metrics: &metrics, topics: &topics, pass_keys: &pass_keys };
            let result = deliver(&pass, include_webhooks, lease, &mut publisher).await;
            (publisher, result)
        }
        .into_actor(self)
        .map(|(publisher, result), act, ctx| {
            act.publisher = Some(publisher);
            act.running = false;
            let more = match result {
                Ok((more, webhooks)) => {
                    act.post_webhooks(webhooks, ctx);
                    more
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox pass failed; retrying on the next tick");
                    false
                }
            };
            if !act.stopping.is_empty() {
                act.stop_when_settled(ctx);
                return;
            }
            if more || act.again {
                act.pass(ctx);
            }
        })
        .spawn(ctx);
    }

    /// Posts a claimed batch of webhooks without holding up the next passes.
    fn post_webhooks(&mut self, rows: Vec<outbox::Model>, ctx: &mut Context<Self>) {
        if rows.is_empty() {
            return;
        }
        self.webhooks_busy = true;
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let http = self.http.clone();
        let allow_private = self.allow_private_webhooks;
        async move { deliver_webhooks(&store, &metrics, &http, allow_private, rows).await }
            .into_actor(self)
            .map(|result, act, ctx| {
                act.webhooks_busy = false;
                if let Err(e) = result {
                    tracing::warn!(error = %e, "could not record webhook outcomes; the rows retry after their lease");
                }
                if !act.stopping.is_empty() {
                    act.stop_when_settled(ctx);
                }
            })
            .spawn(ctx);
    }

    /// Stops once neither a pass nor a webhook batch is under way, so every claimed row
    /// is settled rather than left to its lease.
    fn stop_when_settled(&mut self, ctx: &mut Context<Self>) {
        if self.running || self.webhooks_busy {
            return;
        }
        for w in self.stopping.drain(..) {
            let _ = w.send(());
        }
        ctx.stop();
    }
}

impl Actor for OutboxRelay {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.pass(ctx);
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.pass(ctx));
    }
}

impl Handler<Kick> for OutboxRelay {
    type Result = ();

    fn handle(&mut self, _: Kick, ctx: &mut Self::Context) {
        self.pass(ctx);
    }
}

/// What a pass works with.
struct Pass<'a> {
    store: &'a Store,
    metrics: &'a Metrics,
    topics: &'a TopicSpace,
    pass_keys: &'a [String],
}

/// Backoff after `attempts` failures: 2^n seconds capped at an hour, with ±20% jitter.
fn retry_delay(attempts: i32) -> chrono::Duration {
    let base = 2f64.powi(attempts.clamp(0, 12)).min(3600.0);
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    chrono::Duration::milliseconds((base * jitter * 1000.0) as i64)
}

/// One pass: delivers up to one batch of MQTT messages and cabinet pushes; returns
/// whether more may be waiting, and the webhook rows it claimed (posted by the caller).
async fn deliver(
    pass: &Pass<'_>,
    include_webhooks: bool,
    lease: chrono::Duration,
    publisher: &mut Publisher,
) -> Result<(bool, Vec<outbox::Model>), sea_orm::DbErr> {
    let (store, metrics) = (pass.store, pass.metrics);
    let rows = claim(store, now(), include_webhooks, lease).await?;
    if rows.is_empty() {
        let pending = outbox::Entity::find().filter(outbox::Column::DeliveredAt.is_null()).count(store.connection());
        metrics.outbox_pending.set(i64::try_from(pending.await?).unwrap_or(i64::MAX));
        return Ok((false, Vec::new()));
    }
    let full = rows.len() == MAX_BATCH;
    let mut settled = std::collections::HashSet::new();
    match relay_claimed(pass, publisher, &rows, &mut settled).await {
        Ok(webhooks) => Ok((full, webhooks)),
        Err(e) => {
            // Rows this pass claimed and did not settle (delivered, or failed with their
            // backoff) would otherwise wait out the claim lease (30 s) before anyone tried
            // them again; give them back now. Webhooks too: nobody will post them.
            let unsettled: Vec<i64> = rows.iter().map(|r| r.id).filter(|id| !settled.contains(id)).collect();
            if let Err(again) = release(store, &unsettled).await {
                tracing::warn!(error = %again, rows = unsettled.len(), "could not release claimed outbox rows; they retry after their lease");
            }
            Err(e)
        }
    }
}

/// Delivers the MQTT messages and cabinet pushes among `rows` (claimed by this pass) and
/// returns the webhook rows, which the caller posts.
async fn relay_claimed(
    pass: &Pass<'_>,
    publisher: &mut Publisher,
    rows: &[outbox::Model],
    settled: &mut std::collections::HashSet<i64>,
) -> Result<Vec<outbox::Model>, sea_orm::DbErr> {
    let Pass { store, metrics, topics, pass_keys } = *pass;
    let db = store.connection();
    let pending = outbox::Entity::find().filter(outbox::Column::DeliveredAt.is_null()).count(db).await?;
    metrics.outbox_pending.set(i64::try_from(pending).unwrap_or(i64::MAX));

    // MQTT messages and cabinet pushes go out through one confirmed batch.
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new();
    let mut sent: Vec<Sent> = Vec::new();
    let mut cabinets: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut webhooks = Vec::new();
    for row in rows {
        match row.channel.as_str() {
            CHANNEL_MQTT => {
                messages.push((row.target.clone(), row.payload.clone().into_bytes()));
                sent.push(Sent::Message(row.id));
            }
            CHANNEL_CABINET => cabinets.entry(row.target.clone()).or_default().push(row.id),
            CHANNEL_WEBHOOK => webhooks.push(row.clone()),
            other => {
                tracing::error!(id = row.id, channel = other, "outbox row with an unknown channel");
                mark_failed(store, row, &format!("unknown channel {other:?}")).await?;
                settled.insert(row.id);
            }
        }
    }
    // Every state of the pass from one round of queries. Should that fail, each cabinet's
    // alone, so one cabinet whose state cannot be built (a row that does not decode, say)
    // costs its own rows a retry and not every other row of every pass.
    let names: Vec<&str> = cabinets.keys().map(String::as_str).collect();
    let mut states: BTreeMap<String, Result<desired::Desired, String>> = match desired::build_many(
        store, &names, pass_keys,
    )
    .await
    {
        Ok(states) => states.into_iter().map(|(c, s)| (c, Ok(s))).collect(),
        Err(e) => {
            tracing::warn!(error = %e, cabinets = names.len(), "cannot build the pass's desired states together; building them one by one");
            let mut one_by_one = BTreeMap::new();
            for name in &names {
                let state = desired::build_many(store, &[name], pass_keys)
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|mut s| s.remove(*name).ok_or_else(|| "no desired state was built".to_owned()));
                one_by_one.insert((*name).to_owned(), state);
            }
            one_by_one
        }
    };
    for (cabinet, ids) in &cabinets {
        let built = match (CabinetId::new(cabinet.clone()), states.remove(cabinet)) {
            (Ok(cab), Some(Ok(state))) => Ok((cab, state)),
            (Err(e), _) => Err(format!("not a cabinet id: {e}")),
            (Ok(_), Some(Err(e))) => {
                tracing::warn!(error = %e, %cabinet, "cannot build desired state");
                Err(format!("cannot build the desired state: {e}"))
            }
            (Ok(_), None) => Err("no desired state was built".to_owned()),
        };
        let (cab, state) = match built {
            Ok(built) => built,
            Err(why) => {
                for row in rows.iter().filter(|r| ids.contains(&r.id)) {
                    mark_failed(store, row, &why).await?;
                    settled.insert(row.id);
                }
                continue;
            }
        };
        let topic = topics.cabinet_down(&cab);
        // Sequence numbers for server → cabinet messages: the versions order them.
        let seq = state.parcels.version;
        messages.push((topic.clone(), Envelope::new(cab.clone(), seq, DownBody::Parcels(state.parcels)).encode()));
        sent.push(Sent::Parcels);
        messages.push((topic, Envelope::new(cab, seq, DownBody::Templates(state.templates)).encode()));
        sent.push(Sent::Templates(ids.clone()));
    }
    // Two messages per cabinet: a pass of 200 rows may hold more than one batch.
    let mut acked = Vec::with_capacity(messages.len());
    for batch in messages.chunks(MAX_BATCH) {
        acked.extend(publisher.publish_all(batch, Duration::from_secs(5)).await);
    }
    let mut delivered = Vec::new();
    for (i, (what, ok)) in sent.iter().zip(&acked).enumerate() {
        let (channel, ids) = match what {
            Sent::Message(id) => (CHANNEL_MQTT, std::slice::from_ref(id)),
            Sent::Parcels => {
                if *ok {
                    metrics.desired_pushes.with_label_values(&["parcels"]).inc();
                }
                continue;
            }
            Sent::Templates(ids) => {
                if *ok {
                    metrics.desired_pushes.with_label_values(&["templates"]).inc();
                }
                (CHANNEL_CABINET, ids.as_slice())
            }
        };
        // A cabinet's rows count as delivered only when both halves were accepted (the
        // parcel set is the message just before its template set).
        let ok = *ok && (channel != CHANNEL_CABINET || (i > 0 && acked[i - 1]));
        metrics.notifications.with_label_values(&[channel, if ok { "delivered" } else { "failed" }]).inc();
        if ok {
            delivered.extend(ids.iter().copied());
            for row in rows.iter().filter(|r| ids.contains(&r.id)) {
                observe_delivery(metrics, channel, row);
            }
        } else {
            for row in rows.iter().filter(|r| ids.contains(&r.id)) {
                mark_failed(store, row, "the broker did not acknowledge the message").await?;
                settled.insert(row.id);
            }
        }
    }
    if !delivered.is_empty() {
        outbox::Entity::update_many()
            .col_expr(outbox::Column::DeliveredAt, Expr::value(Some(now())))
            .col_expr(outbox::Column::Attempts, Expr::col(outbox::Column::Attempts).add(1))
            .filter(outbox::Column::Id.is_in(delivered.iter().copied()))
            .exec(db)
            .await?;
        settled.extend(delivered);
    }

    Ok(webhooks)
}

/// What one published message of a pass stands for.
enum Sent {
    /// A row's own MQTT message (a courier notice, an OTA offer).
    Message(i64),
    /// The parcel half of a cabinet's desired state.
    Parcels,
    /// The template half, which settles the cabinet's rows.
    Templates(Vec<i64>),
}

/// Gives claimed rows back: due again now, as if never claimed (their attempts unchanged).
pub(crate) async fn release(store: &Store, ids: &[i64]) -> Result<(), sea_orm::DbErr> {
    if ids.is_empty() {
        return Ok(());
    }
    outbox::Entity::update_many()
        .col_expr(outbox::Column::NextAttemptAt, Expr::value(now()))
        .filter(outbox::Column::Id.is_in(ids.iter().copied()))
        .filter(outbox::Column::DeliveredAt.is_null())
        .exec(store.connection())
        .await?;
    Ok(())
}

/// Posts a batch of webhook rows concurrently, each bounded by the client's timeout, and
/// records each outcome.
async fn deliver_webhooks(
    store: &Store,
    metrics: &Metrics,
    http: &awc::Client,
    allow_private: bool,
    webhooks: Vec<outbox::Model>,
) -> Result<(), sea_orm::DbErr> {
    let db = store.connection();
    let mut attempts = Vec::with_capacity(webhooks.len());
    for row in webhooks {
        let secret = tenant::Entity::find_by_id(row.tenant_id.clone()).one(db).await?.and_then(|t| t.webhook_secret);
        attempts.push(async move {
            let result = post_webhook(http, &row.target, &row.payload, secret.as_deref(), allow_private).await;
            (row, result)
        });
    }
    for (row, result) in futures_util::future::join_all(attempts).await {
        match result {
            Ok(()) => {
                metrics.notifications.with_label_values(&[CHANNEL_WEBHOOK, "delivered"]).inc();
                observe_delivery(metrics, CHANNEL_WEBHOOK, &row);
                outbox::Entity::update_many()
                    .col_expr(outbox::Column::DeliveredAt, Expr::value(Some(now())))
                    .col_expr(outbox::Column::Attempts, Expr::value(row.attempts + 1))
                    .filter(outbox::Column::Id.eq(row.id))
                    .exec(db)
                    .await?;
            }
            Err(e) => {
                metrics.notifications.with_label_values(&[CHANNEL_WEBHOOK, "failed"]).inc();
                mark_failed(store, &row, &e).await?;
            }
        }
    }
    Ok(())
}

/// Time from a row's enqueueing to its delivery, now.
fn observe_delivery(metrics: &Metrics, channel: &str, row: &outbox::Model) {
    let seconds = Ord::max((now() - row.created_at).num_milliseconds(), 0) as f64 / 1000.0;
    metrics.outbox_delivery_seconds.with_label_values(&[channel]).observe(seconds);
}

/// How long a claimed row belongs to this relay before another replica may take it
/// (a replica that died mid-delivery loses its claim after this), unless configured.
const DEFAULT_CLAIM_LEASE: chrono::Duration = chrono::Duration::seconds(30);

/// Claims up to a batch of due rows for this relay by pushing their next attempt past
/// the lease, in one statement. On PostgreSQL `FOR UPDATE SKIP LOCKED` lets replicas
/// claim disjoint batches without waiting on each other; SQLite has one writer anyway.
async fn claim(
    store: &Store,
    at: chrono::DateTime<Utc>,
    include_webhooks: bool,
    lease: chrono::Duration,
) -> Result<Vec<outbox::Model>, sea_orm::DbErr> {
    use sea_orm::{ConnectionTrait, FromQueryResult, Statement};
    let db = store.connection();
    let backend = db.get_database_backend();
    let lock = if store.is_postgres() { "FOR UPDATE SKIP LOCKED" } else { "" };
    let (p1, p2, p3) = if store.is_postgres() { ("$1", "$2", "$3") } else { ("?", "?", "?") };
    // The channel names are constants of ours, never input.
    let channels = if include_webhooks { String::new() } else { format!("AND channel <> '{CHANNEL_WEBHOOK}' ") };
    let sql = format!(
        "UPDATE outbox SET next_attempt_at = {p1} WHERE id IN (SELECT id FROM outbox \
         WHERE delivered_at IS NULL AND next_attempt_at <= {p2} {channels}ORDER BY id LIMIT {p3} {lock}) RETURNING *"
    );
    let stmt = Statement::from_sql_and_values(
        backend,
        sql,
        [(at + lease).into(), at.into(), i64::try_from(MAX_BATCH).unwrap_or(200).into()],
    );
    let mut rows: Vec<outbox::Model> = db
        .query_all_raw(stmt)
        .await?
        .iter()
        .map(|r| outbox::Model::from_query_result(r, ""))
        .collect::<Result<_, _>>()?;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

async fn mark_failed(store: &Store, row: &outbox::Model, error: &str) -> Result<(), sea_orm::DbErr> {
    let attempts = row.attempts + 1;
    outbox::Entity::update_many()
        .col_expr(outbox::Column::Attempts, Expr::value(attempts))
        .col_expr(outbox::Column::NextAttemptAt, Expr::value(now() + retry_delay(attempts)))
        .col_expr(outbox::Column::LastError, Expr::value(Some(error.chars().take(500).collect::<String>())))
        .filter(outbox::Column::Id.eq(row.id))
        .exec(store.connection())
        .await?;
    Ok(())
}

/// The signature header value: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
/// Binding the timestamp lets a receiver refuse replays older than a few minutes.
pub fn webhook_signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post_webhook(
    http: &awc::Client,
    url: &str,
    body: &str,
    secret: Option<&str>,
    allow_private: bool,
) -> Result<(), String> {
    crate::service::webhooks::check_resolved(url, allow_private).await.map_err(|e| format!("webhook URL {e}"))?;
    let mut req = http.post(url).insert_header(("content-type", "application/json"));
    if let Some(secret) = secret {
        req = req.insert_header(("x-lockerfleet-signature", webhook_signature(secret, Utc::now().timestamp(), body)));
    }
    let res = req.send_body(body.to_owned()).await.map_err(|e| format!("webhook request failed: {e}"))?;
    if res.status().is_success() { Ok(()) } else { Err(format!("webhook answered {}", res.status())) }
}

impl Handler<super::Shutdown> for OutboxRelay {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: super::Shutdown, ctx: &mut Self::Context) -> Self::Result {
        if !self.running && !self.webhooks_busy {
            ctx.stop();
            return Box::pin(async {});
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.stopping.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;

    #[test]
    fn signatures_bind_the_body_and_the_time() {
        let a = webhook_signature("s3cret-s3cret-s3cret", 1_800_000_000, "{}");
        assert!(a.starts_with("t=1800000000,v1="));
        assert_ne!(a, webhook_signature("s3cret-s3cret-s3cret", 1_800_000_001, "{}"));
        assert_ne!(a, webhook_signature("s3cret-s3cret-s3cret", 1_800_000_000, "{ }"));
        assert_ne!(a, webhook_signature("another-secret-value", 1_800_000_000, "{}"));
    }

    #[actix_rt::test]
    async fn rows_a_failed_pass_claimed_are_due_again_at_once_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("fleet.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        let at = now();
        for target in ["cab-1", "cab-2"] {
            crate::service::outbox::enqueue(store.connection(), "t", CHANNEL_CABINET, target, String::new(), at)
                .await
                .unwrap();
        }
        let lease = chrono::Duration::seconds(30);
        let claimed = claim(&store, now(), true, lease).await.unwrap();
        assert_eq!(claimed.len(), 2);
        assert!(claim(&store, now(), true, lease).await.unwrap().is_empty(), "claimed rows are this pass's");
        // One row was delivered meanwhile: releasing must not make it due again.
        outbox::Entity::update_many()
            .col_expr(outbox::Column::DeliveredAt, Expr::value(Some(now())))
            .filter(outbox::Column::Id.eq(claimed[0].id))
            .exec(store.connection())
            .await
            .unwrap();
        release(&store, &claimed.iter().map(|r| r.id).collect::<Vec<_>>()).await.unwrap();
        let again = claim(&store, now(), true, lease).await.unwrap();
        assert_eq!(again.iter().map(|r| r.id).collect::<Vec<_>>(), [claimed[1].id], "only the unsettled row");
        assert_eq!(again[0].attempts, 0, "a release is not a failed attempt");
    }

    #[test]
    fn retries_back_off_up_to_an_hour() {
        assert!(retry_delay(1) < retry_delay(5));
        assert!(retry_delay(40) <= chrono::Duration::seconds(4320));
        assert!(retry_delay(0) >= chrono::Duration::milliseconds(800));
    }
}
