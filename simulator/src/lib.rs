//! The simulator as a library: `fleet` runs virtual cabinets (the edge agent itself, with
//! simulated hardware) against a real fleet-server; `cabinets` keeps them as handles that
//! survive a restart into the other slot; `rollout` runs an OTA rollout through them;
//! `day` plans a scenario's simulated day of arrivals and pickups. The `simulator` binary
//! wraps it and the benchmarks.

pub mod barrier;
pub mod cabinets;
pub mod day;
pub mod face;
pub mod faults;
pub mod fleet;
pub mod plot;
pub mod proxy;
pub mod rollout;
pub mod scenario;
