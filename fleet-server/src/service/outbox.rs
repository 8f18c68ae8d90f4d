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
    outbox::Entity::insert(outbox::ActiveModel {
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
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}
