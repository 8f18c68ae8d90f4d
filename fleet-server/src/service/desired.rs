//! A cabinet's desired state, built from the database at push time.
//!
//! The cabinet receives complete sets with versions (see `ParcelSet` and `TemplateSet`
//! in the contract): a cabinet that was offline for a week converges with one message,
//! and a lost message is repaired by the next one.

use lockerfleet_shared::envelope::{CabinetSettings, ExpectedParcel, ParcelSet, ParcelStage, TemplateSet};
use lockerfleet_shared::seal::SealedTemplate;
use lockerfleet_shared::{CompartmentId, CourierId, ParcelId};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::domain::parcel::ParcelState;
use crate::store::entities::{cabinet_desired, compartment, parcel, sealed_template};
use crate::store::{Store, StoreError};

/// Both halves of one cabinet's desired state.
#[derive(Debug, Clone)]
pub struct Desired {
    pub parcels: ParcelSet,
    pub templates: TemplateSet,
}

pub async fn build(store: &Store, cabinet: &str, pass_keys: &[String]) -> Result<Desired, StoreError> {
    let db = store.connection();
    let versions = cabinet_desired::Entity::find_by_id(cabinet.to_owned()).one(db).await?;
    let (pv, tv) = versions.map(|v| (v.parcels_version, v.templates_version)).unwrap_or((0, 0));
    let settings = crate::store::entities::cabinet::Entity::find_by_id(cabinet.to_owned())
        .one(db)
        .await?
        .and_then(|c| c.settings)
        .and_then(|s| serde_json::from_str::<CabinetSettings>(&s).ok())
        .unwrap_or_default();
    let occupied: Vec<uuid::Uuid> = compartment::Entity::find()
        .filter(compartment::Column::CabinetId.eq(cabinet))
        .filter(compartment::Column::ParcelId.is_not_null())
        .all(db)
        .await?
        .into_iter()
        .filter_map(|c| c.parcel_id)
        .collect();
    let parcels = if occupied.is_empty() {
        Vec::new()
    } else {
        parcel::Entity::find().filter(parcel::Column::Id.is_in(occupied)).all(db).await?
    };
    let expected = parcels
        .into_iter()
        .filter_map(|p| {
            let stage = match ParcelState::parse(&p.state)? {
                ParcelState::Assigned => ParcelStage::Expected,
                ParcelState::Deposited | ParcelState::Ready => ParcelStage::Ready,
                ParcelState::Expired | ParcelState::Cancelled => ParcelStage::Collect,
                _ => return None,
            };
            Some(ExpectedParcel {
                parcel: ParcelId(p.id),
                compartment: CompartmentId::new(p.compartment_id?).ok()?,
                stage,
                courier: p.courier_id.and_then(|c| CourierId::new(c).ok()),
                // The code opens the door only while the parcel waits for its recipient.
                code_hash: if stage == ParcelStage::Ready { p.code_hash } else { None },
                expires_at: p.deadline.unwrap_or(p.updated_at),
            })
        })
        .collect();
    let templates = sealed_template::Entity::find()
        .filter(sealed_template::Column::CabinetId.eq(cabinet))
        .all(db)
        .await?
        .into_iter()
        .filter_map(|t| match serde_json::from_str::<SealedTemplate>(&t.blob) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(parcel = %t.parcel_id, error = %e, "stored sealed template does not parse");
                None
            }
        })
        .collect();
    Ok(Desired {
        parcels: ParcelSet {
            version: u64::try_from(pv).unwrap_or(0),
            parcels: expected,
            courier_pass_keys: pass_keys.to_vec(),
            settings,
        },
        templates: TemplateSet { version: u64::try_from(tv).unwrap_or(0), add: templates, revoke: Vec::new() },
    })
}
