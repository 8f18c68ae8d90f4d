//! Parcels: creation with assignment, every later transition, pickup codes.

use chrono::{DateTime, Duration, Utc};
use lockerfleet_shared::envelope::{CompartmentSize, CourierBody, CourierTask};
use lockerfleet_shared::{CabinetId, CompartmentId, CourierId, Envelope, ParcelId};
use rand::Rng;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Ctx;
use super::outbox::{CHANNEL_CABINET, CHANNEL_MQTT, CHANNEL_WEBHOOK, enqueue};
use crate::domain::allocation::{self, CabinetSlots, Need, Slot};
use crate::domain::parcel::{Effect, Parcel, ParcelState, PickupPolicy, Transition, TransitionError};
use crate::store::entities::{
    cabinet, cabinet_desired, compartment, courier, parcel, parcel_event, recipient, sealed_template, tenant,
};
use crate::store::{StoreError, now};

/// Why a parcel use case failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{what} {id:?} does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("no free compartment fits a {size} parcel{low} in cabinet {cabinet} or any cabinet within {km} km")]
    NoRoom { cabinet: String, size: &'static str, low: &'static str, km: f64 },
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("the parcel changed while this request ran; try again")]
    Conflict,
    #[error(transparent)]
    Template(#[from] super::templates::TemplateError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DbErr> for ServiceError {
    fn from(e: DbErr) -> Self {
        ServiceError::Store(StoreError::Db(e))
    }
}

/// Who caused a transition, for the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Api,
    Cabinet,
    Timer,
}

impl Source {
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Cabinet => "cabinet",
            Source::Timer => "timer",
        }
    }
}

/// A parcel to create and assign.
#[derive(Debug, Clone)]
pub struct NewParcel {
    pub tenant: String,
    pub reference: String,
    pub recipient: Option<Uuid>,
    pub courier: CourierId,
    pub size: CompartmentSize,
    pub need_low: bool,
    pub cabinet: CabinetId,
}

/// The result of creating a parcel.
#[derive(Debug, Clone)]
pub struct Created {
    pub parcel: parcel::Model,
    /// The pickup code in the clear: returned this once, stored only as a slow hash.
    pub pickup_code: String,
    /// The chosen cabinet was full and a nearby one was used.
    pub alternative: bool,
}

// ───────────────────────────── pickup codes ─────────────────────────────

/// Digits in a pickup code: 10^8 codes, with keypad lockout after a few failures.
pub const CODE_DIGITS: usize = 8;

/// A fresh random pickup code.
pub fn generate_code() -> String {
    let mut rng = rand::rngs::OsRng;
    (0..CODE_DIGITS).map(|_| char::from(b'0' + rng.gen_range(0..10u8))).collect()
}

/// The PHC string of a code's argon2id hash.
pub fn hash_code(code: &str) -> String {
    lockerfleet_shared::codes::hash(code)
}

/// Whether `code` matches a stored hash.
pub fn verify_code(code: &str, phc: &str) -> bool {
    lockerfleet_shared::codes::verify(code, phc)
}

// ───────────────────────────── helpers ─────────────────────────────

fn size_of(s: &str) -> Option<CompartmentSize> {
    match s {
        "s" => Some(CompartmentSize::S),
        "m" => Some(CompartmentSize::M),
        "l" => Some(CompartmentSize::L),
        "xl" => Some(CompartmentSize::Xl),
        _ => None,
    }
}

fn policy_of(t: &tenant::Model, ctx: &Ctx) -> PickupPolicy {
    let window = match ctx.pickup_window_s {
        Some(s) => Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX)),
        None => Duration::hours(i64::from(t.pickup_window_hours)),
    };
    PickupPolicy {
        window,
        extension: Duration::hours(i64::from(t.extension_hours)),
        reservation: Duration::hours(i64::from(t.reservation_hours)),
    }
}

fn domain_of(p: &parcel::Model) -> Parcel {
    Parcel {
        state: ParcelState::parse(&p.state).unwrap_or(ParcelState::Created),
        deadline: p.deadline,
        extended: p.extended,
    }
}

/// A cabinet and its compartments as allocation sees them (rows with bad ids or sizes,
/// which registration never writes, are skipped).
fn cabinet_slots(cab: &cabinet::Model, comps: Vec<compartment::Model>) -> Option<CabinetSlots> {
    Some(CabinetSlots {
        cabinet: CabinetId::new(cab.id.clone()).ok()?,
        location: cab.latitude.zip(cab.longitude),
        slots: comps
            .into_iter()
            .filter_map(|c| {
                Some(Slot {
                    size: size_of(&c.size)?,
                    compartment: CompartmentId::new(c.id).ok()?,
                    low: c.low,
                    free: c.parcel_id.is_none(),
                })
            })
            .collect(),
    })
}

async fn slots_of<C: ConnectionTrait>(db: &C, cab: &cabinet::Model) -> Result<CabinetSlots, DbErr> {
    let comps = compartment::Entity::find().filter(compartment::Column::CabinetId.eq(cab.id.as_str())).all(db).await?;
    cabinet_slots(cab, comps).ok_or_else(|| DbErr::Custom(format!("cabinet {:?} has an invalid id", cab.id)))
}

/// Every other located cabinet of the tenant with its compartments, in two queries.
async fn nearby_slots<C: ConnectionTrait>(
    db: &C,
    tenant: &str,
    chosen: &cabinet::Model,
) -> Result<Vec<CabinetSlots>, DbErr> {
    let others = cabinet::Entity::find()
        .filter(cabinet::Column::TenantId.eq(tenant))
        .filter(cabinet::Column::Id.ne(chosen.id.as_str()))
        .filter(cabinet::Column::Latitude.is_not_null())
        .filter(cabinet::Column::Longitude.is_not_null())
        .all(db)
        .await?;
    let ids: Vec<String> = others.iter().map(|c| c.id.clone()).collect();
    let mut by_cabinet: std::collections::HashMap<String, Vec<compartment::Model>> = std::collections::HashMap::new();
    if !ids.is_empty() {
        for c in compartment::Entity::find()
            .filter(compartment::Column::CabinetId.is_in(ids))
            .filter(compartment::Column::ParcelId.is_null())
            .all(db)
            .await?
        {
            by_cabinet.entry(c.cabinet_id.clone()).or_default().push(c);
        }
    }
    Ok(others
        .into_iter()
        .filter_map(|cab| {
            let comps = by_cabinet.remove(&cab.id)?;
            cabinet_slots(&cab, comps)
        })
        .collect())
}

/// Claims a compartment if it is still free: the one statement that makes double
/// booking impossible, whatever runs concurrently on any replica.
async fn claim<C: ConnectionTrait>(
    db: &C,
    cabinet: &str,
    compartment_id: &str,
    parcel: Uuid,
    until: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let res = compartment::Entity::update_many()
        .col_expr(compartment::Column::ParcelId, Expr::value(Some(parcel)))
        .col_expr(compartment::Column::ReservedUntil, Expr::value(Some(until)))
        .filter(compartment::Column::CabinetId.eq(cabinet))
        .filter(compartment::Column::Id.eq(compartment_id))
        .filter(compartment::Column::ParcelId.is_null())
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// One step on a parcel's timeline: what happened, from which state, to which.
type Step<'a> = (&'a str, Option<ParcelState>, ParcelState);

async fn timeline<C: ConnectionTrait>(
    db: &C,
    parcel: Uuid,
    (kind, from, to): Step<'_>,
    source: Source,
    detail: Value,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    parcel_event::Entity::insert(parcel_event::ActiveModel {
        id: Set(Uuid::now_v7()),
        parcel_id: Set(parcel),
        at: Set(at),
        kind: Set(kind.to_owned()),
        from_state: Set(from.map(|s| s.as_str().to_owned())),
        to_state: Set(to.as_str().to_owned()),
        source: Set(source.as_str().to_owned()),
        detail: Set(detail.to_string()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Bumps the cabinet's desired-state versions and queues a push.
pub(crate) async fn bump_desired<C: ConnectionTrait>(
    db: &C,
    tenant: &str,
    cabinet: &str,
    templates_too: bool,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    let insert = cabinet_desired::Entity::insert(cabinet_desired::ActiveModel {
        cabinet_id: Set(cabinet.to_owned()),
        templates_version: Set(0),
        parcels_version: Set(0),
        templates_applied: Set(0),
        parcels_applied: Set(0),
    })
    .on_conflict(sea_orm::sea_query::OnConflict::column(cabinet_desired::Column::CabinetId).do_nothing().to_owned())
    .exec_without_returning(db)
    .await;
    match insert {
        Ok(_) | Err(DbErr::RecordNotInserted) => {}
        Err(e) => return Err(e),
    }
    let mut update = cabinet_desired::Entity::update_many()
        .col_expr(cabinet_desired::Column::ParcelsVersion, Expr::col(cabinet_desired::Column::ParcelsVersion).add(1));
    if templates_too {
        update = update.col_expr(
            cabinet_desired::Column::TemplatesVersion,
            Expr::col(cabinet_desired::Column::TemplatesVersion).add(1),
        );
    }
    update.filter(cabinet_desired::Column::CabinetId.eq(cabinet)).exec(db).await?;
    enqueue(db, tenant, CHANNEL_CABINET, cabinet, String::new(), at).await
}

/// Courier and webhook notifications for one effect.
async fn notify_courier<C: ConnectionTrait>(
    db: &C,
    ctx: &Ctx,
    t: &tenant::Model,
    p: &parcel::Model,
    kind: &str,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    let (Some(courier), Some(cabinet), Some(comp)) = (&p.courier_id, &p.cabinet_id, &p.compartment_id) else {
        return Ok(());
    };
    let (Ok(courier_id), Ok(cabinet_id), Ok(comp_id)) =
        (CourierId::new(courier.clone()), CabinetId::new(cabinet.clone()), CompartmentId::new(comp.clone()))
    else {
        return Ok(());
    };
    let task = CourierTask {
        parcel: ParcelId(p.id),
        cabinet: cabinet_id.clone(),
        compartment: comp_id,
        due: p.deadline.unwrap_or(at),
    };
    let body = match kind {
        "assignment" => CourierBody::Assignment(task.clone()),
        "collection" => CourierBody::Collection(task.clone()),
        _ => CourierBody::Withdrawn(task.clone()),
    };
    let envelope = Envelope::new(cabinet_id, 0, body);
    let payload = String::from_utf8(envelope.encode()).expect("JSON is UTF-8");
    enqueue(db, &t.id, CHANNEL_MQTT, &ctx.topics.courier_assignments(&courier_id), payload.clone(), at).await?;
    if let Some(url) = &t.webhook_url {
        let event =
            json!({"type": format!("courier.{kind}"), "id": envelope.id, "at": at, "courier": courier, "task": task});
        enqueue(db, &t.id, CHANNEL_WEBHOOK, url, event.to_string(), at).await?;
    }
    Ok(())
}

async fn notify_recipient_ready<C: ConnectionTrait>(
    db: &C,
    t: &tenant::Model,
    p: &parcel::Model,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    let Some(url) = &t.webhook_url else { return Ok(()) };
    let Some(cabinet_id) = &p.cabinet_id else { return Ok(()) };
    let public_key = cabinet::Entity::find_by_id(cabinet_id.clone()).one(db).await?.map(|c| c.public_key);
    let event = json!({
        "type": "parcel.ready", "id": Uuid::now_v7(), "at": at,
        "parcel": p.id, "reference": p.reference, "recipient": p.recipient_id,
        "cabinet": cabinet_id, "compartment": p.compartment_id, "deadline": p.deadline,
        // The recipient's app seals the face template for exactly this key.
        "cabinet_public_key": public_key,
    });
    enqueue(db, &t.id, CHANNEL_WEBHOOK, url, event.to_string(), at).await
}

// ───────────────────────────── use cases ─────────────────────────────

/// Creates a parcel and assigns it a compartment (the chosen cabinet, or the nearest one
/// with room), all in one transaction; the courier's notification is in the outbox.
pub async fn create_and_assign(ctx: &Ctx, req: NewParcel) -> Result<Created, ServiceError> {
    let code = generate_code();
    // The slow hash runs before the transaction so it never holds a lock, on the
    // low-priority hashing threads (see `code_hashing`).
    let code_hash = super::code_hashing::hash(code.clone())
        .await
        .map_err(|e| StoreError::Db(DbErr::Custom(format!("hashing the pickup code: {e}"))))?;

    let txn = ctx.store.begin_write().await?;
    let at = now();
    let t = tenant::Entity::find_by_id(req.tenant.clone())
        .one(&txn)
        .await?
        .ok_or_else(|| ServiceError::NotFound { what: "tenant", id: req.tenant.clone() })?;
    let chosen = cabinet::Entity::find_by_id(req.cabinet.to_string())
        .one(&txn)
        .await?
        .filter(|c| c.tenant_id == req.tenant)
        .ok_or_else(|| ServiceError::NotFound { what: "cabinet", id: req.cabinet.to_string() })?;
    courier::Entity::find_by_id(req.courier.to_string())
        .one(&txn)
        .await?
        .filter(|c| c.tenant_id == req.tenant)
        .ok_or_else(|| ServiceError::NotFound { what: "courier", id: req.courier.to_string() })?;
    if let Some(r) = req.recipient {
        recipient::Entity::find_by_id(r)
            .one(&txn)
            .await?
            .filter(|x| x.tenant_id == req.tenant)
            .ok_or_else(|| ServiceError::NotFound { what: "recipient", id: r.to_string() })?;
    }

    let id = Uuid::now_v7();
    let policy = policy_of(&t, ctx);
    let mut lifecycle = Parcel::new();
    let effects = lifecycle.apply(&Transition::Assign, at, &policy)?;
    let until = effects
        .iter()
        .find_map(|e| match e {
            Effect::ReserveCompartment { until } => Some(*until),
            _ => None,
        })
        .unwrap_or(at + policy.reservation);

    // Claim in the chosen cabinet first; only when every candidate there is taken (or
    // lost to a concurrent claim) are the nearby cabinets loaded and tried.
    let need = Need { size: req.size, low: req.need_low };
    let here = slots_of(&txn, &chosen).await?;
    let mut won = None;
    for c in allocation::rank(&here, &[], need, ctx.max_alternative_km) {
        if claim(&txn, c.cabinet.as_str(), c.compartment.as_str(), id, until).await? {
            won = Some(c);
            break;
        }
    }
    if won.is_none() && here.location.is_some() {
        let others = nearby_slots(&txn, &req.tenant, &chosen).await?;
        for c in allocation::rank(&here, &others, need, ctx.max_alternative_km) {
            if c.cabinet.as_str() == chosen.id {
                continue;
            }
            if claim(&txn, c.cabinet.as_str(), c.compartment.as_str(), id, until).await? {
                won = Some(c);
                break;
            }
        }
    }
    let Some(won) = won else {
        txn.rollback().await?;
        return Err(ServiceError::NoRoom {
            cabinet: chosen.id,
            size: req.size.as_str(),
            low: if req.need_low { " (low)" } else { "" },
            km: ctx.max_alternative_km,
        });
    };

    let model = parcel::Model {
        id,
        tenant_id: req.tenant.clone(),
        reference: req.reference.clone(),
        recipient_id: req.recipient,
        courier_id: Some(req.courier.to_string()),
        state: lifecycle.state.as_str().to_owned(),
        size: req.size.as_str().to_owned(),
        need_low: req.need_low,
        cabinet_id: Some(won.cabinet.to_string()),
        compartment_id: Some(won.compartment.to_string()),
        deadline: lifecycle.deadline,
        extended: false,
        code_hash: Some(code_hash),
        created_at: at,
        updated_at: at,
    };
    parcel::Entity::insert(parcel::ActiveModel::from(model.clone())).exec_without_returning(&txn).await?;
    timeline(&txn, id, ("created", None, ParcelState::Created), Source::Api, json!({"reference": req.reference}), at)
        .await?;
    timeline(
        &txn,
        id,
        (Transition::Assign.as_str(), Some(ParcelState::Created), lifecycle.state),
        Source::Api,
        json!({"cabinet": won.cabinet, "compartment": won.compartment, "courier": req.courier,
               "alternative": won.cabinet != req.cabinet, "distance_km": won.distance_km}),
        at,
    )
    .await?;
    for e in &effects {
        if *e == Effect::NotifyCourierAssignment {
            notify_courier(&txn, ctx, &t, &model, "assignment", at).await?;
        }
    }
    // The cabinet learns which compartment to expect the parcel in.
    bump_desired(&txn, &t.id, won.cabinet.as_str(), false, at).await?;
    txn.commit().await?;
    Ok(Created { alternative: won.cabinet != req.cabinet, parcel: model, pickup_code: code })
}

/// Applies one transition to a parcel in its own transaction. `tenant` confines the
/// lookup (another tenant's parcel is "not found").
pub async fn transition(
    ctx: &Ctx,
    tenant: Option<&str>,
    id: Uuid,
    t: Transition,
    source: Source,
    detail: Value,
) -> Result<parcel::Model, ServiceError> {
    let txn = ctx.store.begin_write().await?;
    // FOR UPDATE on PostgreSQL (SQLite's write transaction already excludes writers).
    let p = parcel::Entity::find_by_id(id)
        .lock_exclusive()
        .one(&txn)
        .await?
        .filter(|p| tenant.is_none_or(|t| p.tenant_id == t))
        .ok_or_else(|| ServiceError::NotFound { what: "parcel", id: id.to_string() })?;
    let updated = transition_in(&txn, ctx, p, &t, source, detail, now()).await?;
    txn.commit().await?;
    Ok(updated)
}

/// Applies one transition inside the caller's transaction (used by the ingest actor so
/// that storing a cabinet event and its consequences commit together).
pub async fn transition_in<C: ConnectionTrait>(
    db: &C,
    ctx: &Ctx,
    p: parcel::Model,
    t: &Transition,
    source: Source,
    detail: Value,
    at: DateTime<Utc>,
) -> Result<parcel::Model, ServiceError> {
    let ten = tenant::Entity::find_by_id(p.tenant_id.clone())
        .one(db)
        .await?
        .ok_or_else(|| ServiceError::NotFound { what: "tenant", id: p.tenant_id.clone() })?;
    let policy = policy_of(&ten, ctx);
    let mut lifecycle = domain_of(&p);
    let from = lifecycle.state;
    let mut effects = lifecycle.apply(t, at, &policy)?;
    let mut kinds = vec![(t.as_str(), from, lifecycle.state)];
    // A deposit makes the parcel ready at once: the recipient is told in this same
    // transaction, and the cabinet gets the code hash and template.
    if *t == Transition::Deposit {
        let before = lifecycle.state;
        effects.extend(lifecycle.apply(&Transition::Ready, at, &policy)?);
        kinds.push((Transition::Ready.as_str(), before, lifecycle.state));
    }
    let mut updated = p.clone();
    updated.state = lifecycle.state.as_str().to_owned();
    updated.deadline = lifecycle.deadline;
    updated.extended = lifecycle.extended;
    updated.updated_at = at;
    // Optimistic concurrency: the row must still be in the state we read.
    let res = parcel::Entity::update_many()
        .col_expr(parcel::Column::State, Expr::value(updated.state.clone()))
        .col_expr(parcel::Column::Deadline, Expr::value(updated.deadline))
        .col_expr(parcel::Column::Extended, Expr::value(updated.extended))
        .col_expr(parcel::Column::UpdatedAt, Expr::value(at))
        .filter(parcel::Column::Id.eq(p.id))
        .filter(parcel::Column::State.eq(p.state.as_str()))
        .filter(parcel::Column::UpdatedAt.eq(p.updated_at))
        .exec(db)
        .await?;
    if res.rows_affected != 1 {
        return Err(ServiceError::Conflict);
    }
    for (kind, from, to) in kinds {
        timeline(db, p.id, (kind, Some(from), to), source, detail.clone(), at).await?;
    }
    // Operator-held custody: the server seals the template for the cabinet as the parcel
    // becomes ready.
    // Sealing never blocks the transition: if it fails the parcel is still ready and the
    // pickup code still works; the failure is logged for the operator.
    let reseal = (from != ParcelState::Ready && lifecycle.state == ParcelState::Ready) || *t == Transition::Extend;
    let sealed_now = reseal
        && match super::templates::seal_for_ready_parcel(db, ctx, &updated).await {
            Ok(sealed) => sealed,
            Err(ServiceError::Store(e)) => return Err(ServiceError::Store(e)),
            Err(e) => {
                tracing::error!(parcel = %updated.id, error = %e, "could not seal the operator-held template; code pickup only");
                false
            }
        };
    let mut pushed = false;
    for e in &effects {
        match e {
            Effect::ReleaseCompartment => {
                if let (Some(cab), Some(comp)) = (&p.cabinet_id, &p.compartment_id) {
                    // The cabinet must stop expecting (or holding) the parcel as well.
                    if !pushed {
                        bump_desired(db, &ten.id, cab, false, at).await?;
                        pushed = true;
                    }
                    compartment::Entity::update_many()
                        .col_expr(compartment::Column::ParcelId, Expr::value(Option::<Uuid>::None))
                        .col_expr(compartment::Column::ReservedUntil, Expr::value(Option::<DateTime<Utc>>::None))
                        .filter(compartment::Column::CabinetId.eq(cab.as_str()))
                        .filter(compartment::Column::Id.eq(comp.as_str()))
                        .filter(compartment::Column::ParcelId.eq(p.id))
                        .exec(db)
                        .await?;
                }
            }
            Effect::ReserveCompartment { until } => {
                if let (Some(cab), Some(comp)) = (&p.cabinet_id, &p.compartment_id) {
                    compartment::Entity::update_many()
                        .col_expr(compartment::Column::ReservedUntil, Expr::value(Some(*until)))
                        .filter(compartment::Column::CabinetId.eq(cab.as_str()))
                        .filter(compartment::Column::Id.eq(comp.as_str()))
                        .exec(db)
                        .await?;
                }
            }
            Effect::NotifyCourierAssignment => notify_courier(db, ctx, &ten, &updated, "assignment", at).await?,
            Effect::NotifyCourierCollection => notify_courier(db, ctx, &ten, &updated, "collection", at).await?,
            Effect::NotifyCourierWithdrawn => notify_courier(db, ctx, &ten, &updated, "withdrawn", at).await?,
            Effect::NotifyRecipientReady => notify_recipient_ready(db, &ten, &updated, at).await?,
            Effect::RevokeFromCabinet => {
                let removed = sealed_template::Entity::delete_many()
                    .filter(sealed_template::Column::ParcelId.eq(p.id))
                    .exec(db)
                    .await?;
                ctx.metrics.templates.with_label_values(&["revoked"]).inc_by(removed.rows_affected);
                if let Some(cab) = &p.cabinet_id {
                    bump_desired(db, &ten.id, cab, removed.rows_affected > 0, at).await?;
                    pushed = true;
                }
            }
            Effect::PushToCabinet => {
                if let Some(cab) = &p.cabinet_id
                    && !pushed
                {
                    bump_desired(db, &ten.id, cab, sealed_now, at).await?;
                    pushed = true;
                }
            }
        }
    }
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_eight_random_digits() {
        let a = generate_code();
        assert_eq!(a.len(), CODE_DIGITS);
        assert!(a.chars().all(|c| c.is_ascii_digit()));
        let distinct: std::collections::HashSet<String> = (0..50).map(|_| generate_code()).collect();
        assert!(distinct.len() > 45, "codes repeat too often");
    }

    #[test]
    fn a_code_verifies_only_against_its_own_hash() {
        let code = generate_code();
        let phc = hash_code(&code);
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains(&code));
        assert!(verify_code(&code, &phc));
        assert!(!verify_code("00000000", &phc) || code == "00000000");
        assert!(!verify_code(&code, "not a hash"));
    }
}
