//! Rollouts: creating one from an artifact, a target and a plan; passing operator
//! commands and cabinet reports to its conductor (through the `rollout_inputs` table, so
//! whichever replica conducts it sees them in order); and the conductor's pass, run by
//! the replica that holds the rollout's lease.

use chrono::{DateTime, Duration, Utc};
use lockerfleet_shared::artifact::SignedManifest;
use lockerfleet_shared::envelope::{Command, CommandAction, DownBody, OtaOffer, OtaReport, OtaStatus};
use lockerfleet_shared::{CabinetId, Envelope};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Ctx;
use super::outbox::{CHANNEL_MQTT, enqueue};
use crate::domain::health::{Counts, HealthPolicy};
use crate::domain::rollout::{Action, Conductor, Input, Phase, Plan, Report};
use crate::store::entities::{artifact, cabinet, cabinet_event, cabinet_session, rollout, rollout_input};
use crate::store::{StoreError, now};

/// Inputs a conductor takes in one pass.
const INPUTS_PER_PASS: u64 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sea_orm::DbErr> for RolloutError {
    fn from(e: sea_orm::DbErr) -> Self {
        RolloutError::Store(e.into())
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> RolloutError {
    RolloutError::Invalid { field, reason: reason.into() }
}

/// Which cabinets a rollout is for. Every given criterion must hold; none given means
/// the whole fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Target {
    pub tenant: Option<String>,
    /// Tags the cabinet must all carry.
    pub tags: Vec<String>,
    /// Hardware models (as the cabinets report them).
    pub hardware: Vec<String>,
    /// A region as a time-zone prefix, e.g. `Europe/` or `America/New_York`.
    pub region: Option<String>,
    /// Explicit cabinet ids.
    pub cabinets: Vec<String>,
}

impl Target {
    pub fn matches(&self, c: &cabinet::Model) -> bool {
        self.tenant.as_ref().is_none_or(|t| &c.tenant_id == t)
            && (self.hardware.is_empty() || c.hardware.as_ref().is_some_and(|h| self.hardware.contains(h)))
            && self.region.as_ref().is_none_or(|r| c.timezone.starts_with(r.as_str()))
            && (self.cabinets.is_empty() || self.cabinets.contains(&c.id))
            && (self.tags.is_empty() || {
                let has: Vec<String> = c.tags.as_deref().and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
                self.tags.iter().all(|t| has.contains(t))
            })
    }
}

/// A cabinet's UTC offset in minutes, from its time zone when that is a fixed offset
/// (`UTC`, `UTC+02:00`, `Etc/GMT-2`); named zones count as UTC (see docs/ota.md).
pub fn utc_offset_min(tz: &str) -> i32 {
    let parse = |s: &str| -> Option<i32> {
        let (sign, rest) = match s.as_bytes().first()? {
            b'+' => (1, &s[1..]),
            b'-' => (-1, &s[1..]),
            _ => return None,
        };
        let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
        Some(sign * (h.parse::<i32>().ok()? * 60 + m.parse::<i32>().ok()?))
    };
    if let Some(rest) = tz.strip_prefix("UTC").or_else(|| tz.strip_prefix("GMT")) {
        return if rest.is_empty() { 0 } else { parse(rest).unwrap_or(0) };
    }
    // POSIX-style Etc zones have the sign inverted: Etc/GMT-2 is UTC+2.
    if let Some(rest) = tz.strip_prefix("Etc/GMT") {
        return parse(rest).map(|m| -m).unwrap_or(0);
    }
    0
}

/// A new rollout, as the API takes it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRollout {
    pub name: String,
    pub artifact: Uuid,
    #[serde(default)]
    pub target: Target,
    /// Waves, rate, thresholds, timeouts, retries, window (defaults: 1 % → 10 % → 50 % →
    /// 100 %, see docs/ota.md).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub plan: Plan,
    /// Cabinets registered later that match the target join the last wave.
    #[serde(default)]
    pub include_new: bool,
}

pub fn phase_label(p: &Phase) -> &'static str {
    match p {
        Phase::Running { .. } => "running",
        Phase::AwaitingApproval { .. } => "awaiting_approval",
        Phase::Paused { .. } => "paused",
        Phase::Aborted { .. } => "aborted",
        Phase::Completed => "completed",
    }
}

const ACTIVE: [&str; 3] = ["running", "awaiting_approval", "paused"];

pub async fn create(ctx: &Ctx, req: NewRollout) -> Result<rollout::Model, RolloutError> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(invalid("name", "must be 1-200 characters"));
    }
    req.plan.check().map_err(|e| invalid("plan", e))?;
    let db = ctx.store.connection();
    let art = artifact::Entity::find_by_id(req.artifact)
        .one(db)
        .await?
        .ok_or_else(|| RolloutError::NotFound { what: "artifact", id: req.artifact.to_string() })?;
    if !art.uploaded {
        return Err(invalid("artifact", "its file has not been uploaded and checked yet"));
    }
    let signed: SignedManifest =
        serde_json::from_str(&art.manifest).map_err(|e| invalid("artifact", format!("stored manifest: {e}")))?;
    let cabinets: Vec<(String, i32)> = cabinet::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .filter(|c| req.target.matches(c))
        // A cabinet known to be other hardware would only refuse it.
        .filter(|c| c.hardware.as_ref().is_none_or(|h| signed.manifest.hardware.contains(h)))
        .map(|c| (c.id.clone(), utc_offset_min(&c.timezone)))
        .collect();
    if cabinets.is_empty() {
        return Err(invalid("target", "matches no cabinet that can run this artifact"));
    }
    let at = now();
    let conductor = Conductor::new(req.plan.clone(), cabinets, rand::random(), at);
    let row = rollout::ActiveModel {
        id: Set(Uuid::now_v7()),
        artifact_id: Set(art.id),
        name: Set(name.to_owned()),
        target: Set(serde_json::to_string(&req.target).expect("target serialises")),
        plan: Set(serde_json::to_string(&req.plan).expect("plan serialises")),
        include_new: Set(req.include_new),
        phase: Set(phase_label(conductor.phase()).to_owned()),
        snapshot: Set(serde_json::to_string(&conductor).expect("conductor serialises")),
        owner: Set(None),
        lease_until: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
    }
    .insert(db)
    .await?;
    Ok(row)
}

/// Queues an input for a rollout's conductor.
pub async fn submit<C: ConnectionTrait>(db: &C, rollout: Uuid, input: &Input) -> Result<(), RolloutError> {
    rollout_input::Entity::insert(rollout_input::ActiveModel {
        rollout_id: Set(rollout),
        input: Set(serde_json::to_string(input).expect("inputs serialise")),
        at: Set(now()),
        ..Default::default()
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// An operator command for an existing rollout.
pub async fn command(ctx: &Ctx, id: Uuid, input: Input) -> Result<(), RolloutError> {
    let db = ctx.store.connection();
    rollout::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| RolloutError::NotFound { what: "rollout", id: id.to_string() })?;
    submit(db, id, &input).await
}

/// What [`report_many`] did with a batch of OTA reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Reports queued for their rollout's conductor.
    pub queued: usize,
    /// Reports naming a rollout that does not exist (deleted, or another deployment's).
    pub unknown: usize,
}

fn report_input(cabinet: &CabinetId, r: &OtaReport) -> Input {
    let report = match r.status {
        OtaStatus::Downloading => Report::Downloading { percent: r.percent.unwrap_or(0) },
        OtaStatus::Downloaded => Report::Downloaded,
        OtaStatus::WaitingWindow => Report::WaitingWindow,
        OtaStatus::Installing => Report::Installing,
        OtaStatus::Rebooting => Report::Restarting,
        OtaStatus::Succeeded => Report::Succeeded,
        OtaStatus::RolledBack => Report::RolledBack,
        OtaStatus::Failed => Report::Failed,
        OtaStatus::Refused => Report::Refused,
    };
    Input::Report { cabinet: cabinet.to_string(), report, detail: r.detail.clone() }
}

/// Rows per multi-row insert of conductor inputs (four columns each).
const INPUT_CHUNK: usize = 1000;

/// Cabinets' OTA progress reports, each with the time it arrived, for their rollouts'
/// conductors: one lookup of the rollouts they name and one multi-row insert, in arrival
/// order, all or nothing. A wave of a thousand cabinets reports within seconds; one
/// statement per report took a pool connection each and those that waited too long were
/// lost (BENCHMARKS.md, rollout).
///
/// A report is dated by its arrival, not by its write: the health watch splits a
/// cabinet's events at its confirmation, and events it sent after confirming, stored
/// while the report waited for its batch, counted as before the update.
pub async fn report_many(
    ctx: &Ctx,
    reports: &[(CabinetId, OtaReport, DateTime<Utc>)],
) -> Result<Recorded, RolloutError> {
    if reports.is_empty() {
        return Ok(Recorded::default());
    }
    let named: std::collections::BTreeSet<Uuid> = reports.iter().map(|(_, r, _)| r.rollout).collect();
    let db = ctx.store.connection();
    let known: std::collections::HashSet<Uuid> = rollout::Entity::find()
        .select_only()
        .column(rollout::Column::Id)
        .filter(rollout::Column::Id.is_in(named))
        .into_tuple::<Uuid>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    let mut recorded = Recorded::default();
    let mut rows = Vec::with_capacity(reports.len());
    for (cabinet, r, at) in reports {
        if !known.contains(&r.rollout) {
            tracing::warn!(%cabinet, rollout = %r.rollout, "OTA report for an unknown rollout");
            recorded.unknown += 1;
            continue;
        }
        rows.push(rollout_input::ActiveModel {
            rollout_id: Set(r.rollout),
            input: Set(serde_json::to_string(&report_input(cabinet, r)).expect("inputs serialise")),
            at: Set(*at),
            ..Default::default()
        });
    }
    recorded.queued = rows.len();
    if rows.is_empty() {
        return Ok(recorded);
    }
    let txn = ctx.store.begin_write().await?;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<_> = rows.by_ref().take(INPUT_CHUNK).collect();
        rollout_input::Entity::insert_many(chunk).exec_without_returning(&txn).await?;
    }
    txn.commit().await?;
    Ok(recorded)
}

/// A newly registered cabinet joins the running rollouts that want it.
pub async fn joined(ctx: &Ctx, c: &cabinet::Model) -> Result<(), RolloutError> {
    let db = ctx.store.connection();
    let active = rollout::Entity::find()
        .filter(rollout::Column::Phase.is_in(ACTIVE.iter().chain(["completed"].iter()).copied()))
        .filter(rollout::Column::IncludeNew.eq(true))
        .all(db)
        .await?;
    for r in active {
        let target: Target = serde_json::from_str(&r.target).unwrap_or_default();
        if target.matches(c) {
            submit(db, r.id, &Input::Joined { cabinet: c.id.clone(), utc_offset_min: utc_offset_min(&c.timezone) })
                .await?;
        }
    }
    Ok(())
}

/// An offered cabinet heard from this long after its offer, without a word about the
/// update, is offered again (a heartbeat comes every 30 s by default).
const REOFFER_AFTER: Duration = Duration::seconds(45);

/// Cabinets whose health one pass judges at most.
const HEALTH_CHECKS_PER_PASS: usize = 200;

/// A cabinet's pickups, failed matches, door faults and MQTT sessions received in the
/// week before `since` and from `since` until now.
async fn health_counts<C: ConnectionTrait>(
    db: &C,
    cabinet: &str,
    since: DateTime<Utc>,
) -> Result<(Counts, Counts), RolloutError> {
    let rows = cabinet_event::Entity::find()
        .filter(cabinet_event::Column::CabinetId.eq(cabinet))
        // Server time of arrival: the cabinet's own clock may be off.
        .filter(cabinet_event::Column::ReceivedAt.gte(since - Duration::days(7)))
        .filter(cabinet_event::Column::Kind.is_in(["pickup", "failed_match", "alarm"]))
        .all(db)
        .await?;
    let (mut before, mut after) = (Counts::default(), Counts::default());
    let sessions = cabinet_session::Entity::find()
        .filter(cabinet_session::Column::CabinetId.eq(cabinet))
        .filter(cabinet_session::Column::StartedAt.gte(since - Duration::days(7)))
        .all(db)
        .await?;
    for s in sessions {
        if s.started_at >= since { after.reconnects += 1 } else { before.reconnects += 1 }
    }
    for e in rows {
        let c = if e.received_at >= since { &mut after } else { &mut before };
        match e.kind.as_str() {
            "pickup" => c.pickups += 1,
            "failed_match" => c.failed_matches += 1,
            _ => {
                let code = serde_json::from_str::<serde_json::Value>(&e.body).ok();
                let code = code.as_ref().and_then(|v| v["code"].as_str()).unwrap_or("");
                if code == "door_forced" || code == "lock_jammed" {
                    c.door_faults += 1;
                }
            }
        }
    }
    Ok((before, after))
}

/// What one pass did, for logs and metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassReport {
    pub rollouts: usize,
    pub offers: usize,
    pub inputs: usize,
}

/// One conductor pass of replica `me`: claims the rollouts whose lease is free or its
/// own, feeds each its queued inputs and the cabinets heard from, ticks it, and stores
/// the new state together with the messages it asked for — all in one transaction that
/// commits only while `me` still holds the lease.
pub async fn conduct(ctx: &Ctx, me: &str, base_url: &str, lease: Duration) -> Result<PassReport, RolloutError> {
    let db = ctx.store.connection();
    let at = now();
    rollout::Entity::update_many()
        .col_expr(rollout::Column::Owner, Expr::value(Some(me.to_owned())))
        .col_expr(rollout::Column::LeaseUntil, Expr::value(Some(at + lease)))
        .filter(rollout::Column::Phase.is_in(ACTIVE))
        .filter(
            sea_orm::Condition::any()
                .add(rollout::Column::Owner.is_null())
                .add(rollout::Column::Owner.eq(me))
                .add(rollout::Column::LeaseUntil.lt(at)),
        )
        .exec(db)
        .await?;
    // Completed rollouts still take late joiners.
    let mine = rollout::Entity::find()
        .filter(rollout::Column::Owner.eq(me))
        .filter(rollout::Column::Phase.is_in(ACTIVE))
        .all(db)
        .await?;
    let mut pass = PassReport::default();
    let waiting_completed: Vec<Uuid> = rollout::Entity::find()
        .filter(rollout::Column::Phase.eq("completed"))
        .filter(rollout::Column::IncludeNew.eq(true))
        .all(db)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    let mut rows = mine;
    // This replica exports the rollouts it conducts now, and only those.
    ctx.metrics.rollout_cabinets.reset();
    ctx.metrics.rollout_failures.reset();
    ctx.metrics.rollout_phase.reset();
    for id in waiting_completed {
        let has_input =
            rollout_input::Entity::find().filter(rollout_input::Column::RolloutId.eq(id)).one(db).await?.is_some();
        if has_input {
            // Claim it back (conditionally, like any claim).
            let claimed = rollout::Entity::update_many()
                .col_expr(rollout::Column::Owner, Expr::value(Some(me.to_owned())))
                .col_expr(rollout::Column::LeaseUntil, Expr::value(Some(at + lease)))
                .col_expr(rollout::Column::Phase, Expr::value("running"))
                .filter(rollout::Column::Id.eq(id))
                .filter(rollout::Column::Phase.eq("completed"))
                .exec(db)
                .await?;
            if claimed.rows_affected == 1
                && let Some(r) = rollout::Entity::find_by_id(id).one(db).await?
            {
                rows.push(r);
            }
        }
    }
    for row in rows {
        pass.rollouts += 1;
        let (offers, inputs) = conduct_one(ctx, me, base_url, row, at, lease).await?;
        pass.offers += offers;
        pass.inputs += inputs;
    }
    Ok(pass)
}

async fn conduct_one(
    ctx: &Ctx,
    me: &str,
    base_url: &str,
    row: rollout::Model,
    at: DateTime<Utc>,
    lease: Duration,
) -> Result<(usize, usize), RolloutError> {
    let db = ctx.store.connection();
    let mut conductor: Conductor =
        serde_json::from_str(&row.snapshot).map_err(|e| invalid("snapshot", format!("stored state: {e}")))?;
    let inputs = rollout_input::Entity::find()
        .filter(rollout_input::Column::RolloutId.eq(row.id))
        .order_by_asc(rollout_input::Column::Id)
        .limit(INPUTS_PER_PASS)
        .all(db)
        .await?;
    let mut actions = Vec::new();
    for i in &inputs {
        // Each input at the time it was received (not when this pass runs).
        match serde_json::from_str::<Input>(&i.input) {
            Ok(input) => actions.extend(conductor.handle(input, i.at.min(at))),
            Err(e) => tracing::error!(rollout = %row.id, error = %e, "unreadable rollout input skipped"),
        }
    }
    // Confirmed cabinets heard from since they confirmed (heartbeats, hellos).
    let awaiting = conductor.awaiting_word();
    for chunk in awaiting.chunks(500) {
        let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
        let seen = last_seen(db, ids).await?;
        for (id, since) in chunk {
            if seen.get(id).copied().flatten().is_some_and(|t| t > *since) {
                actions.extend(conductor.handle(Input::Heard { cabinet: id.clone() }, at));
            }
        }
    }
    // Offered cabinets that have said nothing of the update: an offer reaches only a
    // cabinet subscribed at that moment (a clean session keeps nothing; one connecting
    // may not have subscribed yet), so one that started a new session since, or that
    // has been talking to us for a while since without a word about it, gets it again.
    let offered = conductor.awaiting_offer();
    for chunk in offered.chunks(500) {
        let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
        let Some(oldest) = chunk.iter().map(|(_, since)| *since).min() else { continue };
        let mut session: std::collections::HashMap<String, DateTime<Utc>> = std::collections::HashMap::new();
        for s in cabinet_session::Entity::find()
            .filter(cabinet_session::Column::CabinetId.is_in(ids.clone()))
            .filter(cabinet_session::Column::StartedAt.gt(oldest))
            .all(db)
            .await?
        {
            let t = session.entry(s.cabinet_id).or_insert(s.started_at);
            *t = (*t).max(s.started_at);
        }
        let seen = last_seen(db, ids).await?;
        for (id, since) in chunk {
            let reconnected = session.get(id).is_some_and(|t| t > since);
            let silent = seen.get(id).copied().flatten().is_some_and(|t| t > *since + REOFFER_AFTER);
            if reconnected || silent {
                actions.extend(conductor.handle(Input::Reconnected { cabinet: id.clone() }, at));
            }
        }
    }
    // Health after the update, against each cabinet's own week before it.
    for (id, confirmed_at) in conductor.due_for_health(at).into_iter().take(HEALTH_CHECKS_PER_PASS) {
        let (before, after) = health_counts(db, &id, confirmed_at).await?;
        let before_h = 24.0 * 7.0;
        let after_h = (at - confirmed_at).num_seconds() as f64 / 3600.0;
        if let Some(why) = crate::domain::health::regression(&HealthPolicy::default(), before, before_h, after, after_h)
        {
            tracing::warn!(rollout = %row.id, cabinet = %id, why, "cabinet regressed after updating");
            actions.extend(conductor.handle(Input::Regressed { cabinet: id.clone(), reason: why.clone() }, at));
        }
        conductor.judged(&id);
    }
    actions.extend(conductor.tick(at));

    let art = artifact::Entity::find_by_id(row.artifact_id).one(db).await?;
    let manifest: Option<SignedManifest> = art.as_ref().and_then(|a| serde_json::from_str(&a.manifest).ok());
    let txn = ctx.store.begin_write().await.map_err(StoreError::from)?;
    let phase = phase_label(conductor.phase());
    let saved = rollout::Entity::update_many()
        .col_expr(rollout::Column::Snapshot, Expr::value(serde_json::to_string(&conductor).expect("serialises")))
        .col_expr(rollout::Column::Phase, Expr::value(phase))
        .col_expr(rollout::Column::UpdatedAt, Expr::value(at))
        .col_expr(rollout::Column::LeaseUntil, Expr::value(Some(at + lease)))
        .filter(rollout::Column::Id.eq(row.id))
        .filter(rollout::Column::Owner.eq(me))
        .exec(&txn)
        .await?;
    if saved.rows_affected != 1 {
        // Another replica took the rollout over; our work is discarded.
        txn.rollback().await?;
        tracing::warn!(rollout = %row.id, "lost the rollout's lease; another replica conducts it now");
        return Ok((0, 0));
    }
    if let Some(last) = inputs.last() {
        rollout_input::Entity::delete_many()
            .filter(rollout_input::Column::RolloutId.eq(row.id))
            .filter(rollout_input::Column::Id.lte(last.id))
            .exec(&txn)
            .await?;
    }
    // Outbox rows belong to the cabinet's tenant, like every message to a cabinet.
    let ids: Vec<&str> = actions
        .iter()
        .map(|a| match a {
            Action::Offer { cabinet, .. } | Action::Withdraw { cabinet } => cabinet.as_str(),
        })
        .collect();
    let mut tenants = std::collections::HashMap::new();
    for chunk in ids.chunks(500) {
        for c in cabinet::Entity::find().filter(cabinet::Column::Id.is_in(chunk.to_vec())).all(&txn).await? {
            tenants.insert(c.id, c.tenant_id);
        }
    }
    let mut offers = 0;
    for a in &actions {
        let (cab, body) = match a {
            Action::Offer { cabinet, .. } => {
                let (Some(art), Some(m)) = (&art, &manifest) else { continue };
                offers += 1;
                let offer = OtaOffer {
                    rollout: row.id,
                    url: format!("{}/ota/{}", base_url.trim_end_matches('/'), art.sha256),
                    manifest: m.clone(),
                    deadline: at + Duration::days(7),
                    window: conductor.plan().window,
                };
                (cabinet, DownBody::Ota(offer))
            }
            Action::Withdraw { cabinet } => (
                cabinet,
                DownBody::Cmd(Command { id: Uuid::now_v7(), action: CommandAction::CancelUpdate { rollout: row.id } }),
            ),
        };
        let (Ok(id), Some(tenant)) = (CabinetId::new(cab.clone()), tenants.get(cab)) else { continue };
        let seq = u64::try_from(at.timestamp_millis()).unwrap_or(0);
        let payload = String::from_utf8(Envelope::new(id.clone(), seq, body).encode()).expect("JSON is UTF-8");
        enqueue(&txn, tenant, CHANNEL_MQTT, &ctx.topics.cabinet_down(&id), payload, at).await?;
    }
    txn.commit().await?;
    let summary = conductor.summary();
    let rid = row.id.to_string();
    let m = &ctx.metrics;
    m.rollout_phase.with_label_values(&[rid.as_str(), row.name.as_str(), phase]).set(1);
    for (w, wave) in summary.waves.iter().enumerate() {
        let w = w.to_string();
        for (state, n) in &wave.states {
            m.rollout_cabinets
                .with_label_values(&[rid.as_str(), w.as_str(), state])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }
    for (kind, n) in &summary.failures {
        m.rollout_failures.with_label_values(&[rid.as_str(), kind]).set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    if phase != row.phase {
        tracing::info!(rollout = %row.id, from = %row.phase, to = phase, "rollout phase changed");
    }
    Ok((offers, inputs.len()))
}

/// When each of these cabinets was last heard from (absent: unknown cabinet).
async fn last_seen<C: ConnectionTrait>(
    db: &C,
    ids: Vec<&str>,
) -> Result<std::collections::HashMap<String, Option<DateTime<Utc>>>, sea_orm::DbErr> {
    Ok(cabinet::Entity::find()
        .filter(cabinet::Column::Id.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|c| (c.id, c.last_seen_at))
        .collect())
}
