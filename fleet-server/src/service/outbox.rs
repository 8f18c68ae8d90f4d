//! The transactional outbox: notifications written in the same transaction as the state
//! change that causes them, and delivered afterwards by the outbox relay actor. A crash
//! between commit and delivery loses nothing: the row is still there.
//!
//! Channels:
//! * `mqtt` — `target` is a topic (a courier's `assignments`), payload the envelope bytes;
//! * `webhook` — `target` is the tenant's URL, payload a JSON event, signed at delivery;
//! * `cabinet` — `target` is a cabinet id; the relay publishes the cabinet's *current*
//!   desired state (parcels and templates) when it delivers, so several changes in a row
//!   cost one push carrying the latest versions.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait};

use crate::store::entities::outbox;

pub const CHANNEL_MQTT: &str = "mqtt";
pub const CHANNEL_WEBHOOK: &str = "webhook";
pub const CHANNEL_CABINET: &str = "cabinet";

/// Adds one outbox row inside the caller's transaction.
pub async fn enqueue<C: ConnectionTrait>(
    db: &C,
    tenant: &str,
    channel: &str,
    target: &str,
    payload: String,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    outbox::Entity::insert(row(tenant, channel, target, payload, now)).exec_without_returning(db).await?;
    Ok(())
}

/// Rows per multi-row insert (9 columns each: well inside PostgreSQL's 65,535 and
/// SQLite's 32,766 parameters).
const INSERT_CHUNK: usize = 1000;

/// Adds a desired-state push for each `(tenant, cabinet)` inside the caller's
/// transaction, with one multi-row insert per thousand.
pub async fn enqueue_cabinets<C: ConnectionTrait>(
    db: &C,
    cabinets: &[(String, String)],
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    for chunk in cabinets.chunks(INSERT_CHUNK) {
        let rows = chunk.iter().map(|(tenant, cabinet)| row(tenant, CHANNEL_CABINET, cabinet, String::new(), now));
        outbox::Entity::insert_many(rows).exec_without_returning(db).await?;
    }
    Ok(())
}

fn row(tenant: &str, channel: &str, target: &str, payload: String, now: DateTime<Utc>) -> outbox::ActiveModel {
    outbox::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        channel: Set(channel.to_owned()),
        target: Set(target.to_owned()),
        payload: Set(payload),
        created_at: Set(now),
        attempts: Set(0),
        next_attempt_at: Set(now),
        delivered_at: Set(None),
        last_error: Set(None),
        ..Default::default()
    }
}
