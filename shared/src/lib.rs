//! # The Lockerfleet contract
//!
//! Everything that crosses a process boundary between the fleet-server, the edge agents,
//! the simulator and the recipients' apps is defined here, once:
//!
//! ```text
//!   ids.rs       validated identifiers (cabinet, compartment, parcel, courier, recipient, tenant)
//!   topic.rs     the only place an MQTT topic string is spelled or parsed
//!   envelope.rs  the versioned envelope, every message body, the size limit, decode errors
//!   seal.rs      face templates sealed (HPKE) for exactly one cabinet
//!   artifact.rs  Ed25519-signed OTA artifact manifests
//! ```
//!
//! The crate does no I/O; it is safe to use from a phone SDK, a CLI, the server or the
//! cabinet alike.

pub mod artifact;
pub mod envelope;
pub mod ids;
pub mod seal;
pub mod topic;

pub use envelope::{DecodeError, Envelope, MessageId, SCHEMA_VERSION};
pub use ids::{CabinetId, CompartmentId, CourierId, IdError, ParcelId, RecipientId, TenantId};
pub use topic::{Topic, TopicError, TopicSpace};
