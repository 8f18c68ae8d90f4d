//! Actors: thin shells that own live state and do the work.
//!
//! ```text
//!   broker ──► link (rumqttc event loop) ──► ingress::route ──► Presence actor ──► Store
//!                 ▲                         (size, decode,        (online/offline,
//!                 │                          topic ⇔ cabinet)      last seen, firmware)
//!   API handlers ─┘ publish                    │ rejected → lockerfleet_rejected_messages_total
//! ```
//!
//! Every actor runs inside the actix `System` started by `main` (or by a test's
//! `#[actix_rt::test]`).

pub mod conductor;
pub mod ingest;
pub mod ingress;
pub mod link;
pub mod outbox;
pub mod presence;
pub mod publisher;
pub mod sweeper;

/// Asks an actor to finish what it holds and stop (sent by `RunningServer::stop`).
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct Shutdown;
