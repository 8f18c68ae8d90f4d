//! Use cases: one database transaction each, applying the domain cores' decisions.
//!
//! A handler (HTTP route or actor) calls one function here; the function loads what the
//! domain needs, asks the domain core, and writes every consequence — the new state, the
//! timeline entry, the freed compartment, the outbox notification, the bumped
//! desired-state version — in the same transaction. Either all of it happened or none.
//!
//! ```text
//!   parcels.rs   create + assign (allocation, compartment claim), transitions, pickup codes
//!   outbox.rs    the transactional outbox rows (courier MQTT, webhook, cabinet push)
//!   rollouts.rs  OTA rollouts: creation, inputs for the conductor, the conductor's pass
//! ```

pub mod code_hashing;
pub mod desired;
pub mod outbox;
pub mod parcels;
pub mod passes;
pub mod rollouts;
pub mod templates;
pub mod webhooks;

use lockerfleet_shared::TopicSpace;

use crate::store::Store;

/// What a use case needs besides its arguments.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub store: Store,
    pub topics: TopicSpace,
    /// How far away an alternative cabinet may be when the chosen one is full, in km.
    pub max_alternative_km: f64,
    /// `parcels.pickup_window_s`: a pickup window in seconds that replaces the tenants'
    /// hours (simulations and tests).
    pub pickup_window_s: Option<u64>,
    /// Key-encryption key for operator-held templates, when configured.
    pub kek: Option<std::sync::Arc<templates::Kek>>,
    /// Where use cases count what they did (templates sealed and revoked).
    pub metrics: crate::metrics::Metrics,
    /// Signs courier passes; its verifying key goes to every cabinet.
    pub passes: std::sync::Arc<passes::PassSigner>,
}
