//! The face pipeline with real ONNX models, used by the cabinet, the enrolment command
//! and the simulator alike:
//!
//! ```text
//! decode → detect → landmarks → quality gate → align (5-point similarity) → embed
//!        → presentation-attack gate (RGB liveness + depth + IR) → 1:N match → decision
//! ```
//!
//! No image leaves the cabinet; frames and embeddings are wiped from memory when dropped.

pub mod calibrate;
pub mod imageops;
pub mod matching;
pub mod models;
pub mod pad;
pub mod pipeline;
pub mod synth;

use chrono::Utc;
use lockerfleet_shared::CabinetId;
use lockerfleet_shared::seal::{CabinetKeyPair, FaceTemplate, OpenPolicy};
use zeroize::Zeroizing;

use crate::camera::Frame;
use crate::face::{Candidate, FaceDecision, FaceMatcher};
use imageops::RgbView;
use matching::{MatchOutcome, MatchPolicy};
use pad::{Channels, PadPolicy};
use pipeline::{AnalysisError, FacePipeline};

/// Decodes a JPEG or PNG photo into an RGB frame (no IR, no depth).
pub fn decode_photo(bytes: &[u8]) -> Result<Frame, String> {
    let img = image::load_from_memory(bytes).map_err(|e| format!("not a readable JPEG or PNG image: {e}"))?;
    let rgb = img.to_rgb8();
    let (width, height) = rgb.dimensions();
    Ok(Frame { width, height, rgb: rgb.into_raw(), ir: None, depth: None, at: Utc::now() })
}

/// Enrolment: one photo of the recipient → the quality-gated template. The caller seals
/// it for one cabinet (`lockerfleet_shared::sdk::seal_for_parcel`).
pub fn enrol(pipeline: &mut FacePipeline, photo: &[u8]) -> Result<FaceTemplate, String> {
    let frame = decode_photo(photo)?;
    let view = RgbView::new(frame.width, frame.height, &frame.rgb).ok_or("the photo has no pixels")?;
    let analysis = pipeline.analyse(view).map_err(|e| e.to_string())?;
    Ok(FaceTemplate::new(analysis.embedding.to_vec()))
}

/// The cabinet's real matcher: the pipeline, the gate, and this cabinet's key to open
/// the templates of the parcels waiting here.
pub struct OnnxMatcher {
    pipeline: FacePipeline,
    keys: CabinetKeyPair,
    cabinet: CabinetId,
    pub pad: PadPolicy,
    pub matching: MatchPolicy,
}

impl std::fmt::Debug for OnnxMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxMatcher").field("cabinet", &self.cabinet).finish_non_exhaustive()
    }
}

impl OnnxMatcher {
    pub fn new(
        pipeline: FacePipeline,
        keys: CabinetKeyPair,
        cabinet: CabinetId,
        pad: PadPolicy,
        matching: MatchPolicy,
    ) -> Result<Self, String> {
        pad.check()?;
        matching.check()?;
        Ok(Self { pipeline, keys, cabinet, pad, matching })
    }

    /// Decides on one frame.
    fn decide_frame(&mut self, frame: &Frame, candidates: &[Candidate], now: chrono::DateTime<Utc>) -> FaceDecision {
        let Some(view) = RgbView::new(frame.width, frame.height, &frame.rgb) else {
            return FaceDecision::LowQuality { reason: "frame has no pixels".into() };
        };
        let analysis = match self.pipeline.analyse(view) {
            Ok(a) => a,
            Err(AnalysisError::Quality(q)) => return FaceDecision::LowQuality { reason: q.to_string() },
            Err(e) => {
                tracing::error!(error = %e, "face pipeline failed");
                return FaceDecision::LowQuality { reason: format!("pipeline error: {e}") };
            }
        };
        // The gate, before any template is opened.
        let mut evidence = pad::measure(
            &Channels {
                width: frame.width,
                height: frame.height,
                ir: frame.ir.as_deref(),
                depth: frame.depth.as_deref(),
            },
            analysis.face,
            &analysis.points,
        );
        if self.pad.mode != pad::PadMode::Off {
            match self.pipeline.liveness(view, analysis.face) {
                Ok(live) => evidence.rgb_live = Some(live),
                Err(e) => return FaceDecision::LowQuality { reason: format!("liveness model failed: {e}") },
            }
        }
        let model = self.pipeline.models.embedding_ref();
        let judge =
            Judge { keys: &self.keys, cabinet: &self.cabinet, model: &model, pad: &self.pad, matching: &self.matching };
        judge.decide(&evidence, &analysis.embedding, candidates, now)
    }
}

/// The end of the face path, after the pipeline has measured a probe: the
/// presentation-attack gate on the evidence, then the candidates' templates opened with
/// this cabinet's key (bound to it, its model and their expiry), then the 1:N match with
/// its margin. The real matcher ends here, and so does the simulator's synthetic one.
#[derive(Debug, Clone, Copy)]
pub struct Judge<'a> {
    pub keys: &'a CabinetKeyPair,
    pub cabinet: &'a CabinetId,
    /// The embedding model that made the probe: templates of another are refused.
    pub model: &'a lockerfleet_shared::seal::ModelRef,
    pub pad: &'a PadPolicy,
    pub matching: &'a MatchPolicy,
}

impl Judge<'_> {
    /// Decides on one probe; `now` judges the templates' expiry.
    pub fn decide(
        &self,
        evidence: &pad::PadEvidence,
        embedding: &[f32],
        candidates: &[Candidate],
        now: chrono::DateTime<Utc>,
    ) -> FaceDecision {
        if let Err(reason) = pad::judge(self.pad, evidence) {
            return FaceDecision::Spoof { reason };
        }
        let policy = OpenPolicy { cabinet: self.cabinet, model: self.model, now };
        let mut opened: Vec<(usize, Zeroizing<Vec<f32>>)> = Vec::with_capacity(candidates.len());
        for (i, c) in candidates.iter().enumerate() {
            match lockerfleet_shared::seal::open(self.keys, &c.template, &policy) {
                Ok(t) => opened.push((i, Zeroizing::new(t.values().to_vec()))),
                Err(e) => tracing::warn!(parcel = %c.parcel.parcel, error = %e, "template refused"),
            }
        }
        match matching::match_one(self.matching, embedding, opened.iter().map(|(_, v)| v.as_slice())) {
            MatchOutcome::Match { index, score } => {
                FaceDecision::Match { parcel: candidates[opened[index].0].parcel.parcel, score }
            }
            MatchOutcome::BelowThreshold { best, threshold } => {
                FaceDecision::NoMatch { reason: format!("best score {best:.2} below {threshold:.2}") }
            }
            MatchOutcome::Ambiguous { best, second } => {
                FaceDecision::NoMatch { reason: format!("ambiguous ({best:.2} vs {second:.2})") }
            }
            MatchOutcome::NoCandidates => FaceDecision::NoMatch { reason: "no candidates".into() },
        }
    }
}

impl FaceMatcher for OnnxMatcher {
    /// The first frame good enough to judge decides; low-quality frames give way to the
    /// next one.
    fn decide(&mut self, frames: &[Frame], candidates: &[Candidate], now: chrono::DateTime<Utc>) -> FaceDecision {
        let mut last = FaceDecision::LowQuality { reason: "no frames".into() };
        for frame in frames {
            last = self.decide_frame(frame, candidates, now);
            if !matches!(last, FaceDecision::LowQuality { .. }) {
                return last;
            }
        }
        last
    }
}
