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
//!   tls.rs       rustls (ring) client and server settings for MQTT over TLS
//! ```
//!
//! The crate does no I/O (the TLS helpers take PEM bytes, not paths); it is safe to use from a phone SDK, a CLI, the server or the
//! cabinet alike.
//!
//! A template sealed by a recipient's app opens only on the one cabinet it is bound to:
//!
//! ```
//! use lockerfleet_shared::seal::{self, CabinetKeyPair, FaceTemplate, ModelRef, OpenPolicy, TemplateBinding};
//! use lockerfleet_shared::{CabinetId, ParcelId};
//!
//! let cabinet = CabinetId::new("cab-17").unwrap();
//! let keys = CabinetKeyPair::generate(); // on the cabinet, at provisioning
//! let model = ModelRef { id: "fr_feature".into(), sha256: "ab".repeat(32) };
//! let binding = TemplateBinding {
//!     cabinet: cabinet.clone(),
//!     parcel: ParcelId::generate(),
//!     expires_at: chrono::Utc::now() + chrono::Duration::hours(48),
//!     model: model.clone(),
//! };
//! // In the recipient's app: only the cabinet's public key is needed.
//! let sealed = seal::seal(&keys.public(), binding, &FaceTemplate::new(vec![0.1; 512])).unwrap();
//! // On the cabinet:
//! let policy = OpenPolicy { cabinet: &cabinet, model: &model, now: chrono::Utc::now() };
//! let template = seal::open(&keys, &sealed, &policy).unwrap();
//! assert_eq!(template.values().len(), 512);
//! ```

pub mod artifact;
pub mod codes;
pub mod config_text;
pub mod envelope;
pub mod ids;
pub mod pass;
pub mod sdk;
pub mod seal;
pub mod tls;
pub mod topic;

pub use envelope::{DecodeError, Envelope, MessageId, SCHEMA_VERSION};
pub use ids::{CabinetId, CompartmentId, CourierId, IdError, ParcelId, RecipientId, TenantId};
pub use topic::{Topic, TopicError, TopicSpace};
