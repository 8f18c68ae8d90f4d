//! Hardware behind traits, with simulated implementations for tests and the simulator.
//!
//! A real cabinet drives its locks over GPIO or a CAN bus and reads reed switches; those
//! drivers implement the same traits. Door sensors report through
//! [`crate::actors::cabinet::DoorSensed`] messages, whatever their source.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use lockerfleet_shared::CompartmentId;

/// Why a hardware action failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HwError {
    #[error("the lock of compartment {0} did not release")]
    LockStuck(CompartmentId),
}

/// The compartment locks.
pub trait Lock: Send + 'static {
    fn release(&mut self, compartment: &CompartmentId) -> Result<(), HwError>;
    fn engage(&mut self, compartment: &CompartmentId);
}

/// What a simulated lock was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockAction {
    Release(CompartmentId),
    Engage(CompartmentId),
}

/// A lock that records every action and can be told to jam.
#[derive(Debug, Clone, Default)]
pub struct SimLock {
    pub log: Arc<Mutex<Vec<LockAction>>>,
    pub jammed: Arc<Mutex<HashSet<CompartmentId>>>,
}

impl SimLock {
    /// Every compartment released so far, in order.
    pub fn releases(&self) -> Vec<CompartmentId> {
        self.log
            .lock()
            .expect("the lock log is never poisoned: no code panics while holding it")
            .iter()
            .filter_map(|a| match a {
                LockAction::Release(c) => Some(c.clone()),
                LockAction::Engage(_) => None,
            })
            .collect()
    }
}

impl Lock for SimLock {
    fn release(&mut self, compartment: &CompartmentId) -> Result<(), HwError> {
        if self.jammed.lock().expect("never poisoned").contains(compartment) {
            return Err(HwError::LockStuck(compartment.clone()));
        }
        self.log.lock().expect("never poisoned").push(LockAction::Release(compartment.clone()));
        Ok(())
    }

    fn engage(&mut self, compartment: &CompartmentId) {
        self.log.lock().expect("never poisoned").push(LockAction::Engage(compartment.clone()));
    }
}
