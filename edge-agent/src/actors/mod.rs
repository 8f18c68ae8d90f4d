//! The cabinet's actors: `cabinet` (journal, desired state, doors, keypad) and `link`
//! (MQTT). Camera, face and updater actors plug in beside them in later issues.

pub mod cabinet;
pub mod face;
pub mod link;
