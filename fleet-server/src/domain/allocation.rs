//! Which compartment a parcel gets.
//!
//! Rules, in order:
//! 1. the compartment must be free and at least as large as the parcel;
//! 2. a recipient who needs a low compartment gets only low ones; everyone else gets
//!    non-low ones first, so low compartments stay free for those who need them;
//! 3. the smallest fitting size wins, so large compartments stay free for large parcels;
//! 4. when the chosen cabinet has no fitting compartment, the nearest other cabinet of
//!    the same tenant with one is offered, within a distance limit.
//!
//! [`rank`] returns candidates best first. The caller tries to claim them in that order
//! with a conditional update (`… WHERE parcel_id IS NULL`), so two concurrent
//! assignments can both rank the same compartment first and still never share it.

use lockerfleet_shared::envelope::CompartmentSize;
use lockerfleet_shared::{CabinetId, CompartmentId};

/// A compartment as allocation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub compartment: CompartmentId,
    pub size: CompartmentSize,
    pub low: bool,
    pub free: bool,
}

/// A cabinet with its compartments.
#[derive(Debug, Clone, PartialEq)]
pub struct CabinetSlots {
    pub cabinet: CabinetId,
    /// (latitude, longitude) in degrees, when known.
    pub location: Option<(f64, f64)>,
    pub slots: Vec<Slot>,
}

/// What the parcel needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub size: CompartmentSize,
    pub low: bool,
}

/// One place the parcel could go.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub cabinet: CabinetId,
    pub compartment: CompartmentId,
    /// Distance from the chosen cabinet in km (0 for the chosen cabinet itself).
    pub distance_km: f64,
}

fn fits(slot: &Slot, need: Need) -> bool {
    slot.free && slot.size >= need.size && (!need.low || slot.low)
}

/// The free compartments of one cabinet that fit, best first.
fn rank_in(cab: &CabinetSlots, need: Need) -> Vec<&Slot> {
    let mut fitting: Vec<&Slot> = cab.slots.iter().filter(|s| fits(s, need)).collect();
    // Smallest size first; for a recipient without the need, non-low before low; then id.
    fitting.sort_by(|a, b| {
        a.size
            .cmp(&b.size)
            .then_with(|| if need.low { std::cmp::Ordering::Equal } else { a.low.cmp(&b.low) })
            .then_with(|| a.compartment.cmp(&b.compartment))
    });
    fitting
}

/// Great-circle distance in km.
pub fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0;
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().asin()
}

/// Every candidate, best first: the chosen cabinet's fitting compartments, then (only if
/// it has none) those of the nearest other cabinets within `max_km`, nearest first.
pub fn rank(chosen: &CabinetSlots, others: &[CabinetSlots], need: Need, max_km: f64) -> Vec<Candidate> {
    let here: Vec<Candidate> = rank_in(chosen, need)
        .into_iter()
        .map(|s| Candidate { cabinet: chosen.cabinet.clone(), compartment: s.compartment.clone(), distance_km: 0.0 })
        .collect();
    if !here.is_empty() {
        return here;
    }
    let Some(origin) = chosen.location else {
        return Vec::new();
    };
    let mut nearby: Vec<(f64, &CabinetSlots)> = others
        .iter()
        .filter(|c| c.cabinet != chosen.cabinet)
        .filter_map(|c| c.location.map(|loc| (haversine_km(origin, loc), c)))
        .filter(|(d, _)| *d <= max_km)
        .collect();
    nearby.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cabinet.cmp(&b.1.cabinet)));
    nearby
        .into_iter()
        .flat_map(|(d, cab)| {
            rank_in(cab, need).into_iter().map(move |s| Candidate {
                cabinet: cab.cabinet.clone(),
                compartment: s.compartment.clone(),
                distance_km: d,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use CompartmentSize::*;

    fn slot(id: &str, size: CompartmentSize, low: bool, free: bool) -> Slot {
        Slot { compartment: CompartmentId::new(id).unwrap(), size, low, free }
    }

    fn cab(id: &str, loc: Option<(f64, f64)>, slots: Vec<Slot>) -> CabinetSlots {
        CabinetSlots { cabinet: CabinetId::new(id).unwrap(), location: loc, slots }
    }

    fn ids(c: &[Candidate]) -> Vec<String> {
        c.iter().map(|c| format!("{}/{}", c.cabinet, c.compartment)).collect()
    }

    #[test]
    fn the_smallest_free_fitting_compartment_comes_first() {
        let c = cab(
            "c",
            None,
            vec![
                slot("L1", L, false, true),
                slot("S1", S, false, false),
                slot("M1", M, false, true),
                slot("S2", S, false, true),
            ],
        );
        assert_eq!(ids(&rank(&c, &[], Need { size: S, low: false }, 5.0)), ["c/S2", "c/M1", "c/L1"]);
        assert_eq!(ids(&rank(&c, &[], Need { size: M, low: false }, 5.0)), ["c/M1", "c/L1"]);
        assert!(rank(&c, &[], Need { size: Xl, low: false }, 5.0).is_empty());
    }

    #[test]
    fn low_compartments_go_to_those_who_need_them() {
        let c = cab("c", None, vec![slot("A-low", M, true, true), slot("B-high", M, false, true)]);
        assert_eq!(ids(&rank(&c, &[], Need { size: M, low: false }, 5.0)), ["c/B-high", "c/A-low"]);
        assert_eq!(ids(&rank(&c, &[], Need { size: M, low: true }, 5.0)), ["c/A-low"]);
        let high_only = cab("c", None, vec![slot("B-high", L, false, true)]);
        assert!(rank(&high_only, &[], Need { size: S, low: true }, 5.0).is_empty());
    }

    #[test]
    fn a_full_cabinet_offers_the_nearest_one_with_room() {
        let berlin = (52.5200, 13.4050);
        let full = cab("home", Some(berlin), vec![slot("A1", M, false, false)]);
        let near = cab("near", Some((52.5300, 13.4100)), vec![slot("N1", M, false, true)]);
        let nearer_but_full = cab("nearer", Some((52.5210, 13.4060)), vec![slot("F1", M, false, false)]);
        let far = cab("far", Some((48.1351, 11.5820)), vec![slot("F1", M, false, true)]);
        let unknown = cab("nowhere", None, vec![slot("U1", M, false, true)]);
        let ranked = rank(&full, &[far, unknown, near, nearer_but_full], Need { size: S, low: false }, 5.0);
        assert_eq!(ids(&ranked), ["near/N1"]);
        assert!(ranked[0].distance_km > 1.0 && ranked[0].distance_km < 1.5, "{}", ranked[0].distance_km);
    }

    #[test]
    fn no_location_means_no_alternative() {
        let full = cab("home", None, vec![slot("A1", M, false, false)]);
        let near = cab("near", Some((0.0, 0.0)), vec![slot("N1", M, false, true)]);
        assert!(rank(&full, &[near], Need { size: S, low: false }, 5.0).is_empty());
    }

    #[test]
    fn haversine_matches_a_known_distance() {
        // Berlin to Munich is about 504 km.
        let d = haversine_km((52.5200, 13.4050), (48.1351, 11.5820));
        assert!((d - 504.0).abs() < 5.0, "{d}");
        assert_eq!(haversine_km((1.0, 2.0), (1.0, 2.0)), 0.0);
    }
}
