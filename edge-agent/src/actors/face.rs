//! The camera and face actors. Both do blocking work (reading a sensor, running models),
//! so each runs on its own thread under a `SyncArbiter` and never stalls the cabinet.

use actix::prelude::*;

use crate::camera::{Frame, FrameSource};
use crate::face::{Candidate, FaceDecision, FaceMatcher};

/// Takes `count` frames.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Frame>, String>")]
pub struct Capture {
    pub count: usize,
}

pub struct Camera {
    source: Box<dyn FrameSource>,
}

impl std::fmt::Debug for Camera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Camera")
    }
}

impl Camera {
    pub fn new(source: Box<dyn FrameSource>) -> Self {
        Self { source }
    }
}

impl Actor for Camera {
    type Context = SyncContext<Self>;
}

impl Handler<Capture> for Camera {
    type Result = Result<Vec<Frame>, String>;

    fn handle(&mut self, msg: Capture, _ctx: &mut Self::Context) -> Self::Result {
        (0..msg.count.clamp(1, 10)).map(|_| self.source.next_frame().map_err(|e| e.to_string())).collect()
    }
}

/// Decides whether the frames show the recipient of one of the candidates.
#[derive(Debug, Message)]
#[rtype(result = "FaceDecision")]
pub struct Decide {
    pub frames: Vec<Frame>,
    pub candidates: Vec<Candidate>,
    /// The time to judge template expiry by (the cabinet's estimate of the server's).
    pub now: chrono::DateTime<chrono::Utc>,
}

pub struct Face {
    matcher: Box<dyn FaceMatcher>,
}

impl std::fmt::Debug for Face {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Face")
    }
}

impl Face {
    pub fn new(matcher: Box<dyn FaceMatcher>) -> Self {
        Self { matcher }
    }
}

impl Actor for Face {
    type Context = SyncContext<Self>;
}

impl Handler<Decide> for Face {
    type Result = MessageResult<Decide>;

    fn handle(&mut self, msg: Decide, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.matcher.decide(&msg.frames, &msg.candidates, msg.now))
    }
}
