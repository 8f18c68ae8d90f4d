//! # edge-agent
//!
//! The process that runs on every cabinet: camera, face, door, keypad, link (MQTT with a
//! durable journal) and updater actors over hardware traits. Not built yet; it will speak
//! the contract in `lockerfleet-shared` (topics, envelope, sealed templates, signed
//! artifacts), which is complete and tested.
