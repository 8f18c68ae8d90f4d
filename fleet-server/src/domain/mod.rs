//! Sans-IO cores: the rules of the business as plain functions and state machines.
//!
//! Nothing here touches the database, the broker or the clock; callers pass `now` and
//! perform the effects that come back. That keeps every rule testable exhaustively in
//! microseconds, and gives each rule one home:
//!
//! ```text
//!   parcel.rs      the parcel lifecycle and pickup window (with its single extension)
//!   allocation.rs  which compartment a parcel gets: size fit, low-height need,
//!                  nearest cabinet with room
//!   health.rs      whether a cabinet got worse after an update, against its own past
//!   rollout.rs     the OTA rollout conductor: waves, rate limit, thresholds per
//!                  failure kind, timeouts, retries with backoff, maintenance windows
//! ```

pub mod allocation;
pub mod health;
pub mod parcel;
pub mod rollout;
