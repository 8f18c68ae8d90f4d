//! The cabinet's desired state, kept on disk so the cabinet works after a restart while
//! offline: the parcels it expects or holds (with pickup-code hashes) and the sealed
//! templates for them. Sets replace older ones only when their version is newer.

use std::path::{Path, PathBuf};

use lockerfleet_shared::envelope::{ParcelSet, TemplateSet};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DesiredState {
    pub parcels: Option<ParcelSet>,
    pub templates: Option<TemplateSet>,
}

/// The on-disk copy.
#[derive(Debug)]
pub struct DesiredStore {
    path: PathBuf,
    pub state: DesiredState,
}

impl DesiredStore {
    /// Loads the saved state; a missing or unreadable file starts empty (the server
    /// sends the whole state again on the next hello).
    pub fn open(path: &Path) -> Self {
        let state = std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Self { path: path.to_owned(), state }
    }

    fn save(&self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.state).expect("desired state serialises"))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Applies a parcel set if it is newer; returns whether it was.
    pub fn apply_parcels(&mut self, set: ParcelSet) -> std::io::Result<bool> {
        if self.state.parcels.as_ref().is_some_and(|p| p.version > set.version) {
            return Ok(false);
        }
        self.state.parcels = Some(set);
        self.save()?;
        Ok(true)
    }

    /// Applies a template set if it is newer; templates not in it are dropped with it.
    pub fn apply_templates(&mut self, set: TemplateSet) -> std::io::Result<bool> {
        if self.state.templates.as_ref().is_some_and(|t| t.version > set.version) {
            return Ok(false);
        }
        self.state.templates = Some(set);
        self.save()?;
        Ok(true)
    }
}
