//! Simulated faces: a camera and a matcher for virtual cabinets that go through the
//! agent's real face flow without running ONNX models for thousands of cabinets.
//!
//! ```text
//!   simulator puts a presentation ─► Stage ─► SimCamera::next_frame (a frame with no pixels:
//!   (genuine, unrecognised,                   the probe embedding and the cues the
//!    impostor, print/screen/mask)             attack gate measures)
//!   cabinet actor: FacePickup ─► camera actor ─► face actor ─► SimMatcher::decide
//!        ─► edge_agent::vision::Judge: the real attack gate (pad::judge), the sealed
//!           templates opened with the cabinet's own key, the real 1:N match with margin
//!        ─► FaceDecision ─► the cabinet's real lockout, door and journal
//! ```
//!
//! A recipient is a fixed random unit vector in [`DIM`] dimensions (seeded by the parcel,
//! so a run is reproducible); a genuine attempt is that vector plus a little noise, an
//! unrecognised one (scarf, angle) the vector plus much noise, an impostor someone else's
//! vector, a spoof the recipient's own vector shown on a print, a screen or a mask — so
//! only the attack gate stands between a spoof and the door.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use edge_agent::camera::{CameraError, Frame, FrameSource};
use edge_agent::face::{Candidate, FaceDecision, FaceMatcher};
use edge_agent::vision::Judge;
use edge_agent::vision::matching::MatchPolicy;
use edge_agent::vision::pad::{PadEvidence, PadPolicy};
use lockerfleet_shared::CabinetId;
use lockerfleet_shared::seal::{CabinetKeyPair, ModelRef};

/// Embedding size of the synthetic model (a MobileFaceNet-sized embedding is 128).
pub const DIM: usize = 128;

/// The synthetic embedding model every simulated template and probe names.
pub fn model() -> ModelRef {
    ModelRef { id: "lockerfleet-sim-embedding-128".into(), sha256: "5173".repeat(16) }
}

/// A small reproducible generator (splitmix64): the simulator needs no cryptographic
/// randomness, only the same run from the same scenario.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// The face of person `seed`: a fixed random unit vector.
pub fn person(seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed ^ 0x5eed_face);
    normalised((0..DIM).map(|_| rng.normal()).collect())
}

/// `face` seen through the camera: plus noise of norm about `noise`, normalised again.
fn seen(face: &[f32], noise: f32, rng: &mut Rng) -> Vec<f32> {
    let per = noise / (DIM as f32).sqrt();
    normalised(face.iter().map(|x| x + per * rng.normal()).collect())
}

/// Noise of a genuine attempt (cosine to the template about 0.93) and of an
/// unrecognised one (about 0.3, under any calibrated threshold).
const GENUINE_NOISE: f32 = 0.4;
const UNRECOGNISED_NOISE: f32 = 3.0;

/// A presentation attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spoof {
    /// A printed photo: flat, IR reflected by the paper.
    Print,
    /// A phone or monitor replaying a video: flat and dark in IR.
    Screen,
    /// A mask: relief and IR, but no nose standing out of it.
    Mask,
}

impl Spoof {
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "print" => Some(Spoof::Print),
            "screen" => Some(Spoof::Screen),
            "mask" => Some(Spoof::Mask),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Spoof::Print => "print",
            Spoof::Screen => "screen",
            Spoof::Mask => "mask",
        }
    }
}

/// What stands in front of the camera.
#[derive(Debug, Clone, PartialEq)]
pub enum Presentation {
    /// The person whose face this is, live; `noise` says how well the camera sees them.
    Live { face: Vec<f32>, noise: f32 },
    /// The face shown by an attack.
    Attack { face: Vec<f32>, kind: Spoof },
}

impl Presentation {
    pub fn genuine(face: Vec<f32>) -> Self {
        Presentation::Live { face, noise: GENUINE_NOISE }
    }

    pub fn unrecognised(face: Vec<f32>) -> Self {
        Presentation::Live { face, noise: UNRECOGNISED_NOISE }
    }

    /// What the gate's sensors measure: a live face has relief, a nose and lit skin in IR.
    fn cues(&self) -> PadEvidence {
        let (rgb_live, relief, nose, ir_level, ir_contrast) = match self {
            Presentation::Live { .. } => (0.9, 14.0, 22.0, 120.0, 24.0),
            Presentation::Attack { kind: Spoof::Print, .. } => (0.4, 1.2, 0.8, 95.0, 14.0),
            Presentation::Attack { kind: Spoof::Screen, .. } => (0.6, 0.6, 0.3, 6.0, 1.5),
            Presentation::Attack { kind: Spoof::Mask, .. } => (0.7, 9.0, 2.5, 80.0, 10.0),
        };
        PadEvidence {
            rgb_live: Some(rgb_live),
            relief_mm: Some(relief),
            nose_mm: Some(nose),
            ir_level: Some(ir_level),
            ir_contrast: Some(ir_contrast),
        }
    }
}

/// The place in front of one cabinet's camera, shared by the simulator (who steps up)
/// and the cabinet's camera (which sees them).
#[derive(Debug, Clone, Default)]
pub struct Stage(Arc<Mutex<Option<Presentation>>>);

impl Stage {
    pub fn step_up(&self, who: Presentation) {
        if let Ok(mut s) = self.0.lock() {
            *s = Some(who);
        }
    }

    pub fn step_away(&self) {
        if let Ok(mut s) = self.0.lock() {
            *s = None;
        }
    }

    fn current(&self) -> Option<Presentation> {
        self.0.lock().ok().and_then(|s| s.clone())
    }
}

/// A simulated frame carries no pixels: `rgb` holds the probe embedding (f32, little
/// endian), `ir` the IR level and contrast, `depth` the relief, the nose depth (0.1 mm
/// units) and the RGB liveness score (per mille) — what the real pipeline would measure.
fn encode(probe: &[f32], cues: &PadEvidence) -> Frame {
    let tenth = |v: Option<f32>| (v.unwrap_or(0.0) * 10.0).clamp(0.0, 65_535.0) as u16;
    Frame {
        width: DIM as u32,
        height: 1,
        rgb: probe.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ir: Some(vec![
            cues.ir_level.unwrap_or(0.0).clamp(0.0, 255.0) as u8,
            cues.ir_contrast.unwrap_or(0.0).clamp(0.0, 255.0) as u8,
        ]),
        depth: Some(vec![
            tenth(cues.relief_mm),
            tenth(cues.nose_mm),
            (cues.rgb_live.unwrap_or(0.0) * 1000.0).clamp(0.0, 1000.0) as u16,
        ]),
        at: Utc::now(),
    }
}

/// The probe and the cues of a simulated frame, if it is one.
fn decode(frame: &Frame) -> Option<(Vec<f32>, PadEvidence)> {
    if frame.rgb.len() != DIM * 4 {
        return None;
    }
    let probe = frame.rgb.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let ir = frame.ir.as_deref().filter(|v| v.len() == 2)?;
    let depth = frame.depth.as_deref().filter(|v| v.len() == 3)?;
    let cues = PadEvidence {
        rgb_live: Some(f32::from(depth[2]) / 1000.0),
        relief_mm: Some(f32::from(depth[0]) / 10.0),
        nose_mm: Some(f32::from(depth[1]) / 10.0),
        ir_level: Some(f32::from(ir[0])),
        ir_contrast: Some(f32::from(ir[1])),
    };
    Some((probe, cues))
}

/// The cabinet's camera: frames of whoever stands on the stage.
#[derive(Debug)]
pub struct SimCamera {
    stage: Stage,
    rng: Rng,
}

impl SimCamera {
    pub fn new(stage: Stage, seed: u64) -> Self {
        Self { stage, rng: Rng::new(seed) }
    }
}

impl FrameSource for SimCamera {
    fn next_frame(&mut self) -> Result<Frame, CameraError> {
        Ok(match self.stage.current() {
            // Nobody there: a frame the matcher judges as no face.
            None => Frame { width: 0, height: 0, rgb: Vec::new(), ir: None, depth: None, at: Utc::now() },
            Some(p) => {
                let probe = match &p {
                    Presentation::Live { face, noise } => seen(face, *noise, &mut self.rng),
                    // The attack shows the recipient's own face, as well as a camera sees it.
                    Presentation::Attack { face, .. } => seen(face, GENUINE_NOISE, &mut self.rng),
                };
                encode(&probe, &p.cues())
            }
        })
    }
}

/// The cabinet's matcher on synthetic embeddings: the agent's own [`Judge`] with this
/// cabinet's key, the default (full) attack gate and the default calibrated match policy.
pub struct SimMatcher {
    keys: CabinetKeyPair,
    cabinet: CabinetId,
    pad: PadPolicy,
    matching: MatchPolicy,
    model: ModelRef,
}

impl std::fmt::Debug for SimMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimMatcher").field("cabinet", &self.cabinet).finish_non_exhaustive()
    }
}

impl SimMatcher {
    pub fn new(keys: CabinetKeyPair, cabinet: CabinetId) -> Self {
        Self { keys, cabinet, pad: PadPolicy::default(), matching: MatchPolicy::default(), model: model() }
    }
}

impl FaceMatcher for SimMatcher {
    fn decide(&mut self, frames: &[Frame], candidates: &[Candidate], now: chrono::DateTime<Utc>) -> FaceDecision {
        let judge = Judge {
            keys: &self.keys,
            cabinet: &self.cabinet,
            model: &self.model,
            pad: &self.pad,
            matching: &self.matching,
        };
        let mut last = FaceDecision::LowQuality { reason: "no frames".into() };
        for frame in frames {
            last = match decode(frame) {
                Some((probe, cues)) => judge.decide(&cues, &probe, candidates, now),
                None => FaceDecision::LowQuality { reason: "no face in the frame".into() },
            };
            if !matches!(last, FaceDecision::LowQuality { .. }) {
                return last;
            }
        }
        last
    }
}

// ───────────────────────────── the flows ─────────────────────────────

/// The face of the recipient of parcel `n` at cabinet `i`, and of an impostor there.
pub fn recipient_seed(i: usize, n: usize) -> u64 {
    ((i as u64) << 24) | (n as u64 & 0xff_ffff)
}

fn impostor_seed(i: usize, n: usize) -> u64 {
    recipient_seed(i, n) | (1 << 63)
}

/// Enrols a recipient for every face parcel: the tenant keeps templates operator-held,
/// each recipient is created and its synthetic template enrolled with consent. Returns
/// the recipient of each face parcel `(cabinet index, parcel index)`.
pub async fn enrol_recipients(
    api: &crate::fleet::Api,
    tenant: &str,
    parcels: &[(usize, usize, String)],
) -> anyhow::Result<std::collections::HashMap<(usize, usize), uuid::Uuid>> {
    use anyhow::{Context, bail};
    use futures_util::StreamExt;
    if parcels.is_empty() {
        return Ok(Default::default());
    }
    let (status, body) = api
        .call("PATCH", &format!("/api/v1/tenants/{tenant}"), Some(serde_json::json!({"custody": "operator"})))
        .await?;
    if status != 200 {
        bail!("making tenant {tenant}'s templates operator-held: {status} {body}");
    }
    let enrol = |(i, n, cabinet): &(usize, usize, String)| {
        let (i, n, reference) = (*i, *n, format!("{cabinet}-face-{n}-{}", uuid::Uuid::new_v4().simple()));
        async move {
            let (status, created) = api
                .call("POST", "/api/v1/recipients", Some(serde_json::json!({"tenant": tenant, "reference": reference})))
                .await?;
            if status != 201 {
                bail!("creating a recipient: {status} {created}");
            }
            let id: uuid::Uuid = created["id"].as_str().context("recipient id")?.parse()?;
            let body = serde_json::json!({
                "template": person(recipient_seed(i, n)),
                "model": model(),
                "consent": {"given_at": Utc::now(), "text_version": "simulator-consent-v1"},
            });
            let (status, answer) = api.call("PUT", &format!("/api/v1/recipients/{id}/template"), Some(body)).await?;
            match status {
                204 => Ok(((i, n), id)),
                503 => bail!(
                    "face_share needs operator-held templates, and the fleet-server has no templates.kek: {answer}"
                ),
                _ => bail!("enrolling a template: {status} {answer}"),
            }
        }
    };
    let results: Vec<anyhow::Result<((usize, usize), uuid::Uuid)>> =
        futures_util::stream::iter(parcels).map(enrol).buffer_unordered(16).collect().await;
    results.into_iter().collect()
}

/// What a face-pickup attempt did, and how long the cabinet took to decide.
async fn attempt(
    sim: &crate::cabinets::SimCabinet,
    stage: &Stage,
    who: Presentation,
    tally: &mut crate::faults::Tally,
) -> anyhow::Result<edge_agent::actors::cabinet::FaceOutcome> {
    use edge_agent::actors::cabinet::FaceOutcome;
    let patience = std::time::Instant::now() + crate::cabinets::UPDATE_PATIENCE;
    stage.step_up(who);
    let outcome = loop {
        let asked = std::time::Instant::now();
        let outcome = sim.send(edge_agent::actors::cabinet::FacePickup).await;
        // An update holds the cabinet, or it is restarting into its other slot: the
        // recipient waits a moment and looks again (no part of the decision's latency).
        let held = match &outcome {
            Ok(FaceOutcome::Refused { reason }) => reason.contains("updating"),
            Ok(_) => false,
            Err(_) => true,
        };
        if held && std::time::Instant::now() < patience {
            sim.note_update_wait();
            tokio::time::sleep(crate::cabinets::RETRY_AFTER_UPDATE).await;
            continue;
        }
        tally.face_decision_ms.push(asked.elapsed().as_secs_f64() * 1000.0);
        break outcome;
    };
    stage.step_away();
    Ok(outcome?)
}

/// Types `code`, again while an update holds the keypad.
pub(crate) async fn enter_code(
    sim: &crate::cabinets::SimCabinet,
    code: &str,
) -> Result<edge_agent::domain::keypad::CodeOutcome, actix::MailboxError> {
    use edge_agent::domain::keypad::CodeOutcome;
    let patience = std::time::Instant::now() + crate::cabinets::UPDATE_PATIENCE;
    sim.send_patiently(
        || edge_agent::actors::cabinet::EnterCode(code.to_owned()),
        |o| matches!(o, CodeOutcome::Unavailable),
        patience,
    )
    .await
}

/// A face parcel's pickup: maybe an impostor and a spoof try first (neither may open a
/// door: the lock's own log is checked), then the recipient shows their face, and types
/// the code if the face path refuses them. Returns the pickup method.
pub async fn pick_up(
    sim: &crate::cabinets::SimCabinet,
    s: &crate::fleet::Stocked,
    scenario: &crate::scenario::Scenario,
    (i, n): (usize, usize),
    tally: &mut crate::faults::Tally,
) -> anyhow::Result<&'static str> {
    use crate::scenario::Scenario;
    use anyhow::{Context, bail};
    use edge_agent::actors::cabinet::FaceOutcome;
    let stage = sim.stage().context("a face parcel in a cabinet without a camera")?;
    tally.face_parcels += 1;
    let face = person(recipient_seed(i, n));
    let mut attacks = Vec::new();
    if Scenario::picks_salted(scenario.impostor_share, i, n, 5) {
        attacks.push(("impostor", Presentation::genuine(person(impostor_seed(i, n)))));
    }
    if Scenario::picks_salted(scenario.spoof_share, i, n, 7) && !scenario.spoof_kinds.is_empty() {
        let kind = &scenario.spoof_kinds[(i + n) % scenario.spoof_kinds.len()];
        let kind = Spoof::parse(kind).context("a spoof kind the scenario check let through")?;
        attacks.push((kind.name(), Presentation::Attack { face: face.clone(), kind }));
    }
    for (what, who) in attacks {
        let released = sim.lock().releases().len();
        let outcome = attempt(sim, stage, who, tally).await?;
        let opened = sim.lock().releases().len() != released || matches!(outcome, FaceOutcome::Accepted(_));
        if what == "impostor" {
            tally.impostors += 1;
            tally.impostors_refused += usize::from(!opened);
        } else {
            *tally.spoofs.entry(what.to_owned()).or_default() += 1;
            *tally.spoofs_refused.entry(what.to_owned()).or_default() += usize::from(!opened);
        }
        if opened {
            tally.doors_opened_by_attacks += 1;
            // Shut it again so the run can go on; the report carries the failure.
            sim.door(&s.compartment, false).await?;
            bail!("a door opened for {what} at parcel {}", s.parcel);
        }
        if matches!(outcome, FaceOutcome::LockedOut { .. }) {
            tally.face_lockouts += 1;
        }
    }
    let unrecognised = Scenario::picks_salted(scenario.face_unrecognised_share, i, n, 9);
    let who = if unrecognised { Presentation::unrecognised(face) } else { Presentation::genuine(face) };
    let method = match attempt(sim, stage, who, tally).await? {
        FaceOutcome::Accepted(p) if p.parcel == s.parcel => {
            tally.genuine_accepted += 1;
            "face"
        }
        FaceOutcome::Accepted(p) => bail!("the face of parcel {}'s recipient opened parcel {}", s.parcel, p.parcel),
        refused => {
            let why = match refused {
                FaceOutcome::LockedOut { .. } => "locked out".to_owned(),
                FaceOutcome::Refused { reason } => {
                    reason.split([':', '(']).next().unwrap_or_default().trim().to_owned()
                }
                FaceOutcome::Accepted(_) => "another parcel".to_owned(),
            };
            *tally.genuine_refused.entry(why).or_default() += 1;
            match enter_code(sim, &s.code).await? {
                edge_agent::domain::keypad::CodeOutcome::Accepted(p) if p.parcel == s.parcel => {}
                other => bail!("pickup refused after the face failed: {other:?}"),
            }
            "code_after_face_failed"
        }
    };
    for open in [true, false] {
        sim.door(&s.compartment, open).await?;
    }
    Ok(method)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use edge_agent::vision::pad;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn genuine_probes_are_close_and_others_far_under_the_default_threshold() {
        let threshold = MatchPolicy::default().threshold(4);
        let mut rng = Rng::new(7);
        for seed in 0..200 {
            let face = person(seed);
            let genuine = cosine(&face, &seen(&face, GENUINE_NOISE, &mut rng));
            let unrecognised = cosine(&face, &seen(&face, UNRECOGNISED_NOISE, &mut rng));
            let impostor = cosine(&face, &seen(&person(seed + 10_000), GENUINE_NOISE, &mut rng));
            assert!(genuine > threshold + 0.1, "genuine {genuine} vs threshold {threshold}");
            assert!(unrecognised < threshold - 0.05, "unrecognised {unrecognised}");
            assert!(impostor < threshold - 0.2, "impostor {impostor}");
        }
    }

    #[test]
    fn the_real_gate_refuses_every_attack_and_passes_a_live_face() {
        let policy = PadPolicy::default();
        let face = person(1);
        let mut camera = SimCamera::new(Stage::default(), 3);
        for (who, live) in [
            (Presentation::genuine(face.clone()), true),
            (Presentation::Attack { face: face.clone(), kind: Spoof::Print }, false),
            (Presentation::Attack { face: face.clone(), kind: Spoof::Screen }, false),
            (Presentation::Attack { face: face.clone(), kind: Spoof::Mask }, false),
        ] {
            camera.stage.step_up(who.clone());
            let (probe, cues) = decode(&camera.next_frame().unwrap()).unwrap();
            assert_eq!(pad::judge(&policy, &cues).is_ok(), live, "{who:?}: {:?}", pad::judge(&policy, &cues));
            assert!(cosine(&face, &probe) > 0.8, "an attack shows the recipient's own face");
        }
        camera.stage.step_away();
        assert!(decode(&camera.next_frame().unwrap()).is_none(), "nobody there: no face");
    }
}
