//! The cabinet's actors: `cabinet` (journal, desired state, doors, keypad) and `link`
//! (MQTT), the camera and face actors; the updater lives in `crate::ota`.

pub mod cabinet;
pub mod face;
pub mod link;

/// Switches an actor off inside a running process, as a power cut switches off the
/// whole process: it drops its handles on the other actors and stops, and a supervisor
/// that still finds it addressed restarts it only to stop it again, never to work. How
/// an agent is powered off and started again from its data dir without the process
/// exiting ([`crate::Agent::power_off`]): the simulator's cabinets restarting into
/// their other slot. Nothing is saved on the way out, just as a power cut saves nothing.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct PowerOff;
