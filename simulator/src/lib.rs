//! # simulator
//!
//! Thousands of virtual cabinets, built from the edge-agent library with simulated
//! hardware, driven by scenario scripts with fault injection against a real deployment.
//! Not built yet: it needs the edge agent first.
