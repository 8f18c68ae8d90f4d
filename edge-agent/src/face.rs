//! The face path's interface on the cabinet.
//!
//! ```text
//!   camera frames ─┐
//!   sealed templates of ready parcels ─► FaceMatcher::decide ─► FaceDecision ─► door
//! ```
//!
//! The real matcher (detection, landmarks, quality gate, alignment, ONNX embedding,
//! liveness gate, 1:N cosine match with margin, calibrated threshold) is the "Face pickup
//! with real models" issue; it implements [`FaceMatcher`] and plugs into the face actor,
//! which runs it on its own threads so inference never blocks the cabinet. Until then a
//! cabinet runs [`Disabled`], which refuses every attempt and leaves the code path to do
//! the work.

use chrono::{DateTime, Utc};
use lockerfleet_shared::envelope::ExpectedParcel;
use lockerfleet_shared::seal::SealedTemplate;

use crate::camera::Frame;

/// A parcel a face could open, with the template sealed for this cabinet.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub parcel: ExpectedParcel,
    pub template: SealedTemplate,
}

/// What the face path decided. No image leaves the cabinet: only this does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaceDecision {
    /// The face matches this parcel's template, by at least the calibrated margin.
    Match { parcel: lockerfleet_shared::ParcelId, score: f32 },
    /// No face, or not good enough to judge (light, angle, size).
    LowQuality { reason: String },
    /// The liveness gate refused the presentation (print, screen, mask).
    Spoof { reason: String },
    /// A live face that matches nobody waiting here.
    NoMatch { reason: String },
}

impl FaceDecision {
    /// The reason recorded in a `failed_match` event, for anything but a match.
    pub fn failure(&self) -> Option<String> {
        match self {
            FaceDecision::Match { .. } => None,
            FaceDecision::LowQuality { reason } => Some(format!("low quality: {reason}")),
            FaceDecision::Spoof { reason } => Some(format!("presentation attack: {reason}")),
            FaceDecision::NoMatch { reason } => Some(format!("no match: {reason}")),
        }
    }
}

/// The face pipeline, as the cabinet sees it.
pub trait FaceMatcher: Send + 'static {
    /// Decides on `frames` among `candidates`. `now` is the time their templates' expiry
    /// is judged by: the cabinet's estimate of the server's clock, never its own (a
    /// cabinet clock an hour ahead would otherwise refuse valid templates).
    fn decide(&mut self, frames: &[Frame], candidates: &[Candidate], now: DateTime<Utc>) -> FaceDecision;
}

/// The matcher of a cabinet without face pickup.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disabled;

impl FaceMatcher for Disabled {
    fn decide(&mut self, _frames: &[Frame], _candidates: &[Candidate], _now: DateTime<Utc>) -> FaceDecision {
        FaceDecision::NoMatch { reason: "face pickup is not enabled on this cabinet".into() }
    }
}
