//! Runs the rollout conductors this replica holds the lease of, every
//! `artifacts.conduct_interval_ms`. With several replicas each rollout has exactly one
//! conductor: leases (ten intervals, at least a second) are claimed and renewed through
//! the database, and a replica that dies loses its rollouts to another once its lease
//! runs out.

use std::time::Duration;

use actix::prelude::*;

use crate::service::Ctx;
use crate::service::rollouts::conduct;

pub struct RolloutConductor {
    ctx: Ctx,
    /// This replica's name in the `owner` column.
    me: String,
    /// Where cabinets download artifacts from.
    base_url: String,
    every: Duration,
    busy: bool,
    outbox: Option<Recipient<super::outbox::Kick>>,
}

impl std::fmt::Debug for RolloutConductor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RolloutConductor").field("me", &self.me).finish_non_exhaustive()
    }
}

impl RolloutConductor {
    pub fn new(
        ctx: Ctx,
        me: String,
        base_url: String,
        every: Duration,
        outbox: Option<Recipient<super::outbox::Kick>>,
    ) -> Self {
        Self { ctx, me, base_url, every, busy: false, outbox }
    }
}

impl Actor for RolloutConductor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.every, |act, ctx| {
            if act.busy {
                return;
            }
            act.busy = true;
            let (service, me, base) = (act.ctx.clone(), act.me.clone(), act.base_url.clone());
            let lease = chrono::Duration::from_std(act.every * 10)
                .unwrap_or(chrono::Duration::seconds(10))
                .max(chrono::Duration::seconds(1));
            async move { conduct(&service, &me, &base, lease).await }
                .into_actor(act)
                .map(|result, act, _| {
                    act.busy = false;
                    match result {
                        Ok(pass) => {
                            if pass.offers > 0 {
                                tracing::debug!(offers = pass.offers, inputs = pass.inputs, "rollout pass");
                            }
                            if pass.rollouts > 0
                                && let Some(o) = &act.outbox
                            {
                                o.do_send(super::outbox::Kick);
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "rollout pass failed; retrying"),
                    }
                })
                .spawn(ctx);
        });
    }
}

impl Handler<super::Shutdown> for RolloutConductor {
    type Result = ();

    fn handle(&mut self, _: super::Shutdown, ctx: &mut Self::Context) {
        // The lease lapses by itself; another replica (or this one restarted) goes on.
        ctx.stop();
    }
}
