//! The sweeper: moves parcels on when time alone decides.
//!
//! Every `parcels.expiry_sweep_s`: a ready parcel past its pickup deadline expires (a
//! courier is sent to collect it, its template is revoked), and an assigned parcel whose
//! courier did not deposit in time gives its compartment back. Each parcel moves in its
//! own transaction through the same lifecycle as everything else; the optimistic check
//! in the transition makes two replicas sweeping at once harmless.
//!
//! Each pass also takes the fleet census for the `lockerfleet_fleet_*` gauges (cabinets
//! by region, state, offline age and firmware), so every replica reports the fleet-wide
//! numbers from the database, whichever cabinets its own MQTT session hears.

use std::time::Duration;

use actix::prelude::*;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde_json::json;

use crate::domain::parcel::{ParcelState, Transition};
use crate::service::Ctx;
use crate::service::parcels::{ServiceError, Source, transition};
use crate::store::entities::parcel;
use crate::store::now;

pub struct Sweeper {
    ctx: Ctx,
    every: Duration,
    busy: bool,
    outbox: Option<Recipient<super::outbox::Kick>>,
}

impl std::fmt::Debug for Sweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweeper").field("every", &self.every).finish_non_exhaustive()
    }
}

impl Sweeper {
    pub fn new(ctx: Ctx, every: Duration, outbox: Option<Recipient<super::outbox::Kick>>) -> Self {
        Self { ctx, every, busy: false, outbox }
    }
}

impl Actor for Sweeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.every, |act, ctx| {
            if act.busy {
                return;
            }
            act.busy = true;
            let service = act.ctx.clone();
            async move {
                if let Err(e) = census(&service).await {
                    tracing::warn!(error = %e, "fleet census failed");
                }
                sweep(&service).await
            }
            .into_actor(act)
            .map(|result, act, _| {
                act.busy = false;
                match result {
                    Ok(n) if n > 0 => {
                        tracing::info!(parcels = n, "sweeper moved parcels on");
                        if let Some(o) = &act.outbox {
                            o.do_send(super::outbox::Kick);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "sweep failed"),
                }
            })
            .spawn(ctx);
        });
    }
}

/// Reads every registered cabinet's presence columns and sets the census gauges.
pub async fn census(ctx: &Ctx) -> Result<(), sea_orm::DbErr> {
    use crate::store::entities::cabinet::{Column, Entity};
    type Row = (String, bool, Option<chrono::DateTime<chrono::Utc>>, Option<String>);
    let rows: Vec<Row> = Entity::find()
        .select_only()
        .columns([Column::Timezone, Column::Online, Column::LastSeenAt, Column::Firmware])
        .into_tuple()
        .all(ctx.store.connection())
        .await?;
    let rows: Vec<_> = rows
        .into_iter()
        .map(|(timezone, online, last_seen_at, firmware)| crate::metrics::CensusRow {
            timezone,
            online,
            last_seen_at,
            firmware,
        })
        .collect();
    ctx.metrics.set_fleet_census(&rows, now());
    Ok(())
}

/// One sweep; returns how many parcels moved.
pub async fn sweep(ctx: &Ctx) -> Result<usize, ServiceError> {
    let at = now();
    let mut moved = 0;
    for (state, t) in [(ParcelState::Ready, Transition::Expire), (ParcelState::Assigned, Transition::ReservationLapsed)]
    {
        let due = parcel::Entity::find()
            .filter(parcel::Column::State.eq(state.as_str()))
            .filter(parcel::Column::Deadline.lte(at))
            .limit(500)
            .all(ctx.store.connection())
            .await
            .map_err(crate::store::StoreError::from)?;
        for p in due {
            match transition(ctx, None, p.id, t.clone(), Source::Timer, json!({"deadline": p.deadline})).await {
                Ok(_) => moved += 1,
                Err(ServiceError::Conflict | ServiceError::Transition(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(moved)
}

impl Handler<super::Shutdown> for Sweeper {
    type Result = ();

    fn handle(&mut self, _: super::Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
