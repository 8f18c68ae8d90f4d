//! The simulator as a library: `fleet` runs virtual cabinets (the edge agent itself, with
//! simulated hardware) against a real fleet-server. The `simulator` binary wraps it and
//! the benchmarks.

pub mod face;
pub mod faults;
pub mod fleet;
pub mod plot;
pub mod proxy;
pub mod scenario;
