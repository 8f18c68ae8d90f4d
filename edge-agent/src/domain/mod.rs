//! Sans-IO cores of the cabinet: the journal (durable, but a plain struct over a file),
//! the door state machine, pickup-code entry, the desired state on disk, and the clock
//! expiry is judged by.

pub mod clock;
pub mod desired;
pub mod door;
pub mod journal;
pub mod keypad;
