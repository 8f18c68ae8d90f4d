//! Sans-IO cores of the cabinet: the journal (durable, but a plain struct over a file),
//! the door state machine, pickup-code entry, and the desired state on disk.

pub mod desired;
pub mod door;
pub mod journal;
pub mod keypad;
