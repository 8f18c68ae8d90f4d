//! A cabinet's desired state, built from the database at push time.
//!
//! The cabinet receives complete sets with versions (see `ParcelSet` and `TemplateSet`
//! in the contract): a cabinet that was offline for a week converges with one message,
//! and a lost message is repaired by the next one.

use std::collections::{BTreeMap, HashMap};

use lockerfleet_shared::envelope::{CabinetSettings, ExpectedParcel, ParcelSet, ParcelStage, TemplateSet};
use lockerfleet_shared::seal::SealedTemplate;
use lockerfleet_shared::{CompartmentId, CourierId, ParcelId};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::domain::parcel::ParcelState;
use crate::store::entities::{cabinet_desired, compartment, parcel, sealed_template};
use crate::store::{Store, StoreError};

/// Both halves of one cabinet's desired state.
#[derive(Debug, Clone)]
pub struct Desired {
    pub parcels: ParcelSet,
    pub templates: TemplateSet,
}

/// Cabinets whose states one round of queries builds (each query names them all).
const CHUNK: usize = 500;

/// The desired states of `cabinets`, five queries for up to [`CHUNK`] of them (one more
/// per further [`CHUNK`] parcels they hold; before, five for each cabinet: a relay pass of
/// 200 pushes made a thousand round trips). Every cabinet asked for has a state in the
/// answer, empty for one the database does not know. Versions are read before contents,
/// as one cabinet's build always did: a confirmation of version v covers what v named.
pub async fn build_many(
    store: &Store,
    cabinets: &[&str],
    pass_keys: &[String],
) -> Result<BTreeMap<String, Desired>, StoreError> {
    let mut states = BTreeMap::new();
    for chunk in cabinets.chunks(CHUNK) {
        build_chunk(store, chunk, pass_keys, &mut states).await?;
    }
    Ok(states)
}

async fn build_chunk(
    store: &Store,
    cabinets: &[&str],
    pass_keys: &[String],
    states: &mut BTreeMap<String, Desired>,
) -> Result<(), StoreError> {
    let db = store.connection();
    let ids = || cabinets.iter().map(|c| (*c).to_owned());
    let versions: HashMap<String, (i64, i64)> = cabinet_desired::Entity::find()
        .filter(cabinet_desired::Column::CabinetId.is_in(ids()))
        .all(db)
        .await?
        .into_iter()
        .map(|v| (v.cabinet_id, (v.parcels_version, v.templates_version)))
        .collect();
    let mut settings: HashMap<String, CabinetSettings> = crate::store::entities::cabinet::Entity::find()
        .filter(crate::store::entities::cabinet::Column::Id.is_in(ids()))
        .all(db)
        .await?
        .into_iter()
        .filter_map(|c| Some((c.id, serde_json::from_str::<CabinetSettings>(&c.settings?).ok()?)))
        .collect();
    let occupied: Vec<(String, uuid::Uuid)> = compartment::Entity::find()
        .filter(compartment::Column::CabinetId.is_in(ids()))
        .filter(compartment::Column::ParcelId.is_not_null())
        // A stable order: the same state is the same message.
        .order_by_asc(compartment::Column::CabinetId)
        .order_by_asc(compartment::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .filter_map(|c| Some((c.cabinet_id, c.parcel_id?)))
        .collect();
    let mut parcels: HashMap<uuid::Uuid, parcel::Model> = HashMap::with_capacity(occupied.len());
    for some in occupied.chunks(CHUNK) {
        let found =
            parcel::Entity::find().filter(parcel::Column::Id.is_in(some.iter().map(|(_, p)| *p))).all(db).await?;
        parcels.extend(found.into_iter().map(|p| (p.id, p)));
    }
    let mut expected: HashMap<String, Vec<ExpectedParcel>> = HashMap::new();
    for (cabinet, parcel_id) in occupied {
        if let Some(e) = parcels.remove(&parcel_id).and_then(expected_parcel) {
            expected.entry(cabinet).or_default().push(e);
        }
    }
    let mut templates: HashMap<String, Vec<SealedTemplate>> = HashMap::new();
    for t in sealed_template::Entity::find().filter(sealed_template::Column::CabinetId.is_in(ids())).all(db).await? {
        match serde_json::from_str::<SealedTemplate>(&t.blob) {
            Ok(s) => templates.entry(t.cabinet_id).or_default().push(s),
            Err(e) => tracing::error!(parcel = %t.parcel_id, error = %e, "stored sealed template does not parse"),
        }
    }
    for cabinet in cabinets {
        let (pv, tv) = versions.get(*cabinet).copied().unwrap_or((0, 0));
        let state = Desired {
            parcels: ParcelSet {
                version: u64::try_from(pv).unwrap_or(0),
                parcels: expected.remove(*cabinet).unwrap_or_default(),
                courier_pass_keys: pass_keys.to_vec(),
                settings: settings.remove(*cabinet).unwrap_or_default(),
            },
            templates: TemplateSet {
                version: u64::try_from(tv).unwrap_or(0),
                add: templates.remove(*cabinet).unwrap_or_default(),
                revoke: Vec::new(),
            },
        };
        states.insert((*cabinet).to_owned(), state);
    }
    Ok(())
}

/// What a cabinet is told of one parcel in one of its compartments, if anything.
fn expected_parcel(p: parcel::Model) -> Option<ExpectedParcel> {
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
}
