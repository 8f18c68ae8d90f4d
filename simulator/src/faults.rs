//! Field faults in a fleet run: the simulated cabinet with its hardware handles, door
//! faults, power losses, recipients who never come, and clock drift.
//!
//! ```text
//!   SimCabinet (`cabinets`) ── agent + SimLock (jam it, count releases)
//!              └─ [Stage: what its simulated camera sees]  [own thread: can lose power]
//!   door fault   jammed: the code is right, the lock refuses → `lock_jammed`; freed after
//!                door_fault_repair_s, the recipient tries again and takes the parcel
//!                sensor: a locked door's sensor reads open for a moment → `door_forced`
//!   power loss   right after a pickup: the cabinet's thread stops where it stands (no clean
//!                shutdown; the journal is on disk), after power_loss_s it starts again
//!                from the same data dir, reconnects and sends what waited
//!   no-show      the code is typed once the pickup window is over (refused: the cabinet
//!                judges expiry by the server's clock); after the server expires it the
//!                courier collects it (`collected`) and the server returns it
//!   clock drift  the cabinet's own clock is off (`sim_clock_offset_s`); pickups, expiry and
//!                event timestamps must not notice
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use edge_agent::actors::cabinet::{CourierCollect, GetDesired, GetStatus};
use edge_agent::domain::keypad::CodeOutcome;
use lockerfleet_shared::envelope::{ExpectedParcel, ParcelStage};
use lockerfleet_shared::{CompartmentId, ParcelId};
use serde::Serialize;

use crate::cabinets::SimCabinet;
use crate::fleet::{Latency, Stocked};

/// What the field faults of one cabinet's flows came to.
#[derive(Debug, Default)]
pub struct Tally {
    // ── face ──
    pub face_parcels: usize,
    pub face_decision_ms: Vec<f64>,
    pub genuine_accepted: usize,
    /// Genuine recipients the face path refused (unrecognised, locked out): code instead.
    pub genuine_refused: BTreeMap<String, usize>,
    pub impostors: usize,
    pub impostors_refused: usize,
    pub spoofs: BTreeMap<String, usize>,
    pub spoofs_refused: BTreeMap<String, usize>,
    /// Doors released for an impostor or a spoof (the lock's own log): must stay 0.
    pub doors_opened_by_attacks: usize,
    pub face_lockouts: usize,
    // ── door faults ──
    pub door_faults: BTreeMap<String, usize>,
    /// Fault alarms the flows provoked, by code.
    pub alarms_made: BTreeMap<String, usize>,
    /// A jammed door whose code was accepted but whose lock did release: must stay 0.
    pub jammed_doors_released: usize,
    // ── no-shows ──
    pub no_show_parcels: usize,
    /// Those still to be collected.
    pub no_shows: Vec<Stocked>,
    pub codes_refused_after_expiry: usize,
    /// … of which while the cabinet still listed the parcel as ready: refused on the
    /// strength of its (server) clock alone.
    pub refused_by_clock: usize,
    /// An expired parcel's door opened by its code: must stay 0.
    pub codes_opened_after_expiry: usize,
    pub expiry_to_collect_task_ms: Vec<f64>,
    pub collected: usize,
    /// Collected parcels, for the server's view of them.
    pub no_shows_done: Vec<ParcelId>,
    // ── power ──
    pub power_loss: Option<PowerLoss>,
}

/// One cabinet's power loss.
#[derive(Debug, Clone, Copy)]
pub struct PowerLoss {
    pub journal_depth_at_loss: u32,
    pub seconds_off: f64,
    pub seconds_to_reconnect: f64,
}

/// The alarms a fleet run provokes on purpose and counts, by code.
pub const COUNTED_ALARMS: [&str; 3] = ["door_left_open", "lock_jammed", "door_forced"];

/// The code of a stored `alarm` event the run counts (the API's event view).
pub fn counted_alarm(event: &serde_json::Value) -> Option<&'static str> {
    if event["kind"].as_str() != Some("alarm") {
        return None;
    }
    let text = event.to_string();
    COUNTED_ALARMS.into_iter().find(|code| text.contains(code))
}

async fn door_cycle(sim: &SimCabinet, compartment: &CompartmentId) -> anyhow::Result<()> {
    for open in [true, false] {
        sim.door(compartment, open).await?;
    }
    Ok(())
}

/// A pickup at a faulty door. Returns the pickup method and the alarms it raised.
pub async fn pick_up_at_faulty_door(
    sim: &SimCabinet,
    s: &Stocked,
    kind: &str,
    repair_s: f64,
    tally: &mut Tally,
) -> anyhow::Result<(&'static str, usize)> {
    *tally.door_faults.entry(kind.to_owned()).or_default() += 1;
    let method = match kind {
        "jammed" => {
            sim.lock().jammed.lock().map_err(|_| anyhow::anyhow!("lock state poisoned"))?.insert(s.compartment.clone());
            let released = sim.lock().releases().len();
            match crate::face::enter_code(sim, &s.code).await? {
                CodeOutcome::Accepted(p) if p.parcel == s.parcel => {}
                other => bail!("the code at a jammed door was not taken: {other:?}"),
            }
            if sim.lock().releases().len() != released {
                tally.jammed_doors_released += 1;
            }
            *tally.alarms_made.entry("lock_jammed".into()).or_default() += 1;
            // The technician frees it; the recipient tries again.
            tokio::time::sleep(Duration::from_secs_f64(repair_s)).await;
            sim.lock().jammed.lock().map_err(|_| anyhow::anyhow!("lock state poisoned"))?.remove(&s.compartment);
            match crate::face::enter_code(sim, &s.code).await? {
                CodeOutcome::Accepted(p) if p.parcel == s.parcel => {}
                other => bail!("pickup refused after the jam was freed: {other:?}"),
            }
            door_cycle(sim, &s.compartment).await?;
            "code_after_door_fault"
        }
        _ => {
            // A reed switch that reads open on a locked door for a moment.
            door_cycle(sim, &s.compartment).await?;
            *tally.alarms_made.entry("door_forced".into()).or_default() += 1;
            match crate::face::enter_code(sim, &s.code).await? {
                CodeOutcome::Accepted(p) if p.parcel == s.parcel => {}
                other => bail!("pickup refused after a sensor fault: {other:?}"),
            }
            door_cycle(sim, &s.compartment).await?;
            "code"
        }
    };
    Ok((method, 1))
}

/// `parcel` in a cabinet's desired state, if it is there.
fn parcel_in(d: &edge_agent::domain::desired::DesiredState, parcel: ParcelId) -> Option<&ExpectedParcel> {
    d.parcels.as_ref()?.parcels.iter().find(|p| p.parcel == parcel)
}

/// The parcel as this cabinet holds it now.
async fn held(sim: &SimCabinet, parcel: ParcelId) -> Option<ExpectedParcel> {
    let desired = sim.send(GetDesired).await.ok()?;
    parcel_in(&desired, parcel).cloned()
}

/// Once each no-show parcel's pickup window is over, its recipient turns up after all
/// and types the code: it must not open.
pub async fn codes_after_expiry(sim: &SimCabinet, tally: &mut Tally, deadline: Instant) -> anyhow::Result<()> {
    tally.no_show_parcels = tally.no_shows.len();
    for s in &tally.no_shows {
        let p = held(sim, s.parcel).await.context("a no-show parcel is not at its cabinet")?;
        let wait = (p.expires_at - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(300);
        if Instant::now() + wait > deadline {
            bail!(
                "no-show parcel {} expires at {} (the server's pickup window), after the run's timeout: \
                 start the fleet-server with parcels.pickup_window_s for no-show scenarios",
                s.parcel,
                p.expires_at
            );
        }
        tokio::time::sleep(wait).await;
        let still_ready = held(sim, s.parcel).await.is_some_and(|p| p.stage == ParcelStage::Ready);
        match crate::face::enter_code(sim, &s.code).await? {
            CodeOutcome::Accepted(_) => {
                tally.codes_opened_after_expiry += 1;
                sim.door(&s.compartment.clone(), true).await?;
                // Left shut: the parcel stays for the courier (the flow relocks unopened).
                sim.door(&s.compartment.clone(), false).await?;
                bail!("the code opened expired parcel {}", s.parcel);
            }
            _ => {
                tally.codes_refused_after_expiry += 1;
                tally.refused_by_clock += usize::from(still_ready);
            }
        }
    }
    Ok(())
}

/// The courier collects the expired parcels once the server's collection task has
/// reached the cabinet (one `collected` event each, counted in `tally.collected`).
pub async fn collect_no_shows(
    sim: &SimCabinet,
    pass: &str,
    tally: &mut Tally,
    deadline: Instant,
) -> anyhow::Result<()> {
    for s in std::mem::take(&mut tally.no_shows) {
        let expired_at = std::cell::Cell::new(None);
        let looks = std::cell::Cell::new(0usize);
        let task = sim
            .until_desired(deadline, |d| {
                looks.set(looks.get() + 1);
                let p = parcel_in(d, s.parcel);
                if let Some(p) = p {
                    expired_at.set(Some(p.expires_at));
                }
                p.is_some_and(|p| p.stage == ParcelStage::Collect)
            })
            .await;
        if !task {
            bail!("the collection task for {} never reached the cabinet", s.parcel);
        }
        // Timed only if it arrived while watched: already there at the first look, it
        // came at some unknown moment before.
        if let Some(at) = expired_at.get().filter(|_| looks.get() > 1) {
            let ms = (chrono::Utc::now() - at).num_milliseconds() as f64;
            tally.expiry_to_collect_task_ms.push(ms.max(0.0));
        }
        // A cabinet that is updating tells the courier to try again in a moment.
        let compartment = sim
            .send_patiently(
                || CourierCollect { pass: pass.to_owned(), parcel: s.parcel },
                |r| r.as_ref().is_err_and(|e| e.contains("updating")),
                deadline,
            )
            .await?
            .map_err(|e| anyhow::anyhow!("collection refused: {e}"))?;
        door_cycle(sim, &compartment).await?;
        tally.collected += 1;
        tally.no_shows_done.push(s.parcel);
    }
    Ok(())
}

/// How many of the collected parcels the server shows as returned (waiting for the
/// `collected` events to be stored).
pub async fn returned_on_server(api: &crate::fleet::Api, parcels: &[ParcelId], deadline: Instant) -> usize {
    let mut n = 0;
    for p in parcels {
        let returned = crate::fleet::until(deadline, || async {
            api.call("GET", &format!("/api/v1/parcels/{p}"), None)
                .await
                .is_ok_and(|(status, body)| status == 200 && body["state"] == "returned")
        })
        .await;
        n += usize::from(returned);
    }
    n
}

/// The cabinet loses power right now and comes back after `off_s`.
pub async fn power_loss(sim: &SimCabinet, off_s: f64, tally: &mut Tally, deadline: Instant) -> anyhow::Result<()> {
    let depth = sim.send(GetStatus).await.map(|s| s.journal_depth).unwrap_or(0);
    let off = Instant::now();
    sim.power_off().await?;
    tokio::time::sleep(Duration::from_secs_f64(off_s)).await;
    let seconds_off = off.elapsed().as_secs_f64();
    let on = Instant::now();
    sim.power_on().await?;
    let back = crate::fleet::until(deadline, || sim.connected()).await;
    if !back {
        bail!("did not reconnect after its power loss");
    }
    tally.power_loss =
        Some(PowerLoss { journal_depth_at_loss: depth, seconds_off, seconds_to_reconnect: on.elapsed().as_secs_f64() });
    Ok(())
}

// ───────────────────────────── report ─────────────────────────────

/// Face pickups, impostors and spoofs.
#[derive(Debug, Clone, Serialize)]
pub struct FaceReport {
    /// Parcels whose recipient enrolled a face (operator-held template).
    pub parcels: usize,
    /// `FacePickup` asked → the cabinet's decision (camera, face actor, gate, match).
    pub decision: Latency,
    pub genuine_accepted: usize,
    /// Genuine recipients refused by the face path, by why; they used their code.
    pub genuine_refused: BTreeMap<String, usize>,
    pub impostors: usize,
    pub impostors_refused: usize,
    pub spoofs: BTreeMap<String, usize>,
    pub spoofs_refused: BTreeMap<String, usize>,
    /// Doors released for an impostor or a spoof, from the lock's own log. Must be 0.
    pub doors_opened_by_attacks: usize,
    /// Face lockouts (too many failed attempts) the attempts caused.
    pub lockouts: usize,
}

/// Recipients who never came.
#[derive(Debug, Clone, Serialize)]
pub struct NoShowReport {
    pub parcels: usize,
    pub codes_refused_after_expiry: usize,
    /// Refused while the cabinet still listed the parcel ready: by its clock alone.
    pub refused_by_clock: usize,
    /// Must be 0.
    pub codes_opened_after_expiry: usize,
    /// The pickup deadline → the courier's collection task at the cabinet (bounded by
    /// the server's `parcels.expiry_sweep_s`), for the tasks that arrived while the
    /// simulator was watching; one already there when it first looked (a timed day looks
    /// only after the day) gives no figure, since when it came is not known.
    pub expiry_to_collect_task: Latency,
    pub collected: usize,
    /// The server's view: parcels in state `returned`.
    pub returned_on_server: usize,
}

/// Faulty doors.
#[derive(Debug, Clone, Serialize)]
pub struct DoorFaultReport {
    pub pickups: BTreeMap<String, usize>,
    pub alarms_made: BTreeMap<String, usize>,
    pub alarms_stored: BTreeMap<String, usize>,
    /// A jammed door's lock that released anyway. Must be 0.
    pub jammed_doors_released: usize,
}

/// Cabinets that lost power.
#[derive(Debug, Clone, Serialize)]
pub struct PowerLossReport {
    pub cabinets: usize,
    /// Events waiting in their journals the moment the power went.
    pub journal_depth_at_loss: u64,
    pub seconds_off_max: f64,
    pub seconds_to_reconnect_max: f64,
    /// Their events: made, stored by the server, stored twice (must equal, and be 0).
    pub events_made: usize,
    pub events_stored: usize,
    pub events_duplicated: usize,
}

/// Cabinets whose own clock was off.
#[derive(Debug, Clone, Serialize)]
pub struct ClockDriftReport {
    pub cabinets: usize,
    pub offset_s: i64,
    pub pickups: usize,
    /// The largest difference between a stored event's cabinet timestamp and its arrival
    /// at the server, over the drifting cabinets that were neither cut off nor powered
    /// off (their events arrive late by design).
    pub max_event_clock_error_s: f64,
    /// Expired parcels opened by code at a drifting cabinet. Must be 0.
    pub codes_opened_after_expiry: usize,
}

/// How far a stored event's cabinet timestamp (`at`) is from its arrival (`received_at`), s.
pub fn event_clock_error_s(event: &serde_json::Value) -> Option<f64> {
    let at = chrono::DateTime::parse_from_rfc3339(event["at"].as_str()?).ok()?;
    let received = chrono::DateTime::parse_from_rfc3339(event["received_at"].as_str()?).ok()?;
    Some((received - at).num_milliseconds().abs() as f64 / 1000.0)
}

fn sum_maps<'a>(maps: impl Iterator<Item = &'a BTreeMap<String, usize>>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in maps {
        for (k, v) in m {
            *out.entry(k.clone()).or_insert(0) += v;
        }
    }
    out
}

/// What one cabinet's stored events came to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stored {
    pub made: usize,
    pub stored: usize,
    pub duplicated: usize,
}

/// The fault sections of the report, from every cabinet's tally; a section is `None`
/// when its scenario key did not come into play.
#[derive(Debug, Clone, Default)]
pub struct Sections {
    pub face: Option<FaceReport>,
    pub no_show: Option<NoShowReport>,
    pub door_faults: Option<DoorFaultReport>,
    pub power_loss: Option<PowerLossReport>,
    pub clock_drift: Option<ClockDriftReport>,
}

/// The inputs besides the tallies.
#[derive(Debug)]
pub struct Observed<'a> {
    pub tallies: Vec<&'a Tally>,
    /// Per cabinet: its events made and what the server stored.
    pub stored: Vec<Stored>,
    pub fault_alarms_stored: BTreeMap<String, usize>,
    pub returned_on_server: usize,
    /// Per cabinet: its clock offset, and the pickups it handed out.
    pub offsets: Vec<i64>,
    pub pickups: Vec<usize>,
    pub max_event_clock_error_s: f64,
}

impl Sections {
    pub fn build(o: &Observed<'_>) -> Self {
        let t = &o.tallies;
        let face = (t.iter().map(|t| t.face_parcels).sum::<usize>() > 0).then(|| FaceReport {
            parcels: t.iter().map(|t| t.face_parcels).sum(),
            decision: Latency::of(t.iter().flat_map(|t| t.face_decision_ms.iter().copied()).collect()),
            genuine_accepted: t.iter().map(|t| t.genuine_accepted).sum(),
            genuine_refused: sum_maps(t.iter().map(|t| &t.genuine_refused)),
            impostors: t.iter().map(|t| t.impostors).sum(),
            impostors_refused: t.iter().map(|t| t.impostors_refused).sum(),
            spoofs: sum_maps(t.iter().map(|t| &t.spoofs)),
            spoofs_refused: sum_maps(t.iter().map(|t| &t.spoofs_refused)),
            doors_opened_by_attacks: t.iter().map(|t| t.doors_opened_by_attacks).sum(),
            lockouts: t.iter().map(|t| t.face_lockouts).sum(),
        });
        let no_shows: usize = t.iter().map(|t| t.no_show_parcels).sum();
        let no_show = (no_shows > 0).then(|| NoShowReport {
            parcels: no_shows,
            codes_refused_after_expiry: t.iter().map(|t| t.codes_refused_after_expiry).sum(),
            refused_by_clock: t.iter().map(|t| t.refused_by_clock).sum(),
            codes_opened_after_expiry: t.iter().map(|t| t.codes_opened_after_expiry).sum(),
            expiry_to_collect_task: Latency::of(
                t.iter().flat_map(|t| t.expiry_to_collect_task_ms.iter().copied()).collect(),
            ),
            collected: t.iter().map(|t| t.collected).sum(),
            returned_on_server: o.returned_on_server,
        });
        let door_faults = t.iter().any(|t| !t.door_faults.is_empty()).then(|| DoorFaultReport {
            pickups: sum_maps(t.iter().map(|t| &t.door_faults)),
            alarms_made: sum_maps(t.iter().map(|t| &t.alarms_made)),
            alarms_stored: o.fault_alarms_stored.clone(),
            jammed_doors_released: t.iter().map(|t| t.jammed_doors_released).sum(),
        });
        let lost: Vec<(PowerLoss, Stored)> =
            t.iter().zip(&o.stored).filter_map(|(t, s)| t.power_loss.map(|p| (p, *s))).collect();
        let power_loss = (!lost.is_empty()).then(|| PowerLossReport {
            cabinets: lost.len(),
            journal_depth_at_loss: lost.iter().map(|(p, _)| u64::from(p.journal_depth_at_loss)).sum(),
            seconds_off_max: lost.iter().map(|(p, _)| p.seconds_off).fold(0.0, f64::max),
            seconds_to_reconnect_max: lost.iter().map(|(p, _)| p.seconds_to_reconnect).fold(0.0, f64::max),
            events_made: lost.iter().map(|(_, s)| s.made).sum(),
            events_stored: lost.iter().map(|(_, s)| s.stored).sum(),
            events_duplicated: lost.iter().map(|(_, s)| s.duplicated).sum(),
        });
        let drifting: Vec<usize> = (0..o.offsets.len()).filter(|i| o.offsets[*i] != 0).collect();
        let clock_drift = (!drifting.is_empty()).then(|| ClockDriftReport {
            cabinets: drifting.len(),
            offset_s: o.offsets[drifting[0]].abs(),
            pickups: drifting.iter().map(|i| o.pickups.get(*i).copied().unwrap_or(0)).sum(),
            max_event_clock_error_s: o.max_event_clock_error_s,
            codes_opened_after_expiry: drifting
                .iter()
                .filter_map(|i| t.get(*i))
                .map(|t| t.codes_opened_after_expiry)
                .sum(),
        });
        Self { face, no_show, door_faults, power_loss, clock_drift }
    }
}
