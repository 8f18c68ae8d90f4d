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

    pub fn path(&self) -> &Path {
        &self.path
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

    /// Deletes sealed templates past their expiry, even while offline: a recipient's
    /// template must not outlive its pickup window. Returns how many were removed.
    pub fn prune_expired(&mut self, now: chrono::DateTime<chrono::Utc>) -> std::io::Result<usize> {
        let Some(t) = self.state.templates.as_mut() else { return Ok(0) };
        let before = t.add.len();
        t.add.retain(|s| s.binding.expires_at > now);
        let removed = before - t.add.len();
        if removed > 0 {
            self.save()?;
        }
        Ok(removed)
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};
    use lockerfleet_shared::seal::{CabinetKeyPair, FaceTemplate, ModelRef, TemplateBinding, seal};
    use lockerfleet_shared::{CabinetId, ParcelId};

    fn sealed(hours: i64) -> lockerfleet_shared::seal::SealedTemplate {
        let binding = TemplateBinding {
            cabinet: CabinetId::new("c").unwrap(),
            parcel: ParcelId::generate(),
            expires_at: Utc::now() + Duration::hours(hours),
            model: ModelRef { id: "m".into(), sha256: "00".into() },
        };
        seal(&CabinetKeyPair::generate().public(), binding, &FaceTemplate::new(vec![1.0])).unwrap()
    }

    #[test]
    fn expired_templates_are_deleted_from_disk_even_offline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("desired.json");
        let mut store = DesiredStore::open(&path);
        let (keep, old) = (sealed(5), sealed(-1));
        store.apply_templates(TemplateSet { version: 3, add: vec![keep.clone(), old], revoke: vec![] }).unwrap();
        assert_eq!(store.prune_expired(Utc::now()).unwrap(), 1);
        let reopened = DesiredStore::open(&path);
        assert_eq!(reopened.state.templates.unwrap().add, vec![keep]);
    }

    #[test]
    fn an_older_set_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = DesiredStore::open(&dir.path().join("d.json"));
        assert!(store.apply_templates(TemplateSet { version: 5, add: vec![], revoke: vec![] }).unwrap());
        assert!(!store.apply_templates(TemplateSet { version: 4, add: vec![sealed(1)], revoke: vec![] }).unwrap());
        assert!(store.state.templates.unwrap().add.is_empty());
    }
}
