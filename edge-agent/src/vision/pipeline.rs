//! One frame in, one face's embedding out: detection → landmarks → quality gate →
//! alignment → embedding, and the RGB liveness score for the presentation-attack gate.
//! Each stage is timed, so benchmarks can report where the time goes.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::imageops::{Rect, RgbView, Similarity, grey, laplacian_variance, planar};
use super::models::{Model, ModelError, ModelSet};

/// The ArcFace 112 × 112 template: eye centres, nose tip, mouth corners.
pub const ARCFACE_112: [(f32, f32); 5] =
    [(38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041)];

const DETECT_W: usize = 320;
const DETECT_H: usize = 240;
const LANDMARK_SIDE: usize = 64;
const ALIGNED_SIDE: usize = 112;
const LIVENESS_SIDE: usize = 128;
/// The liveness model looks at the face with its surroundings: the box scaled by this.
const LIVENESS_CONTEXT: f32 = 2.7;

/// Thresholds of the detector and of the quality gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityPolicy {
    /// Detector confidence for a face.
    pub min_detection: f32,
    /// Overlap above which two detections are one face.
    pub nms_iou: f32,
    /// Smallest face, in pixels of the box's shorter side.
    pub min_face_px: f32,
    /// Mean grey level of the face box must lie in this range.
    pub min_brightness: f32,
    pub max_brightness: f32,
    /// Variance of the Laplacian of the aligned face (focus).
    pub min_sharpness: f32,
    /// |nose offset from the eyes' midline| / eye distance (head turned left/right).
    pub max_yaw: f32,
    /// Tilt of the eye line, degrees.
    pub max_roll_deg: f32,
    /// (nose − eyes) / (mouth − eyes) vertically (head up/down) must lie in this range.
    pub min_pitch: f32,
    pub max_pitch: f32,
    /// A second face at least this fraction of the first's area means two people in view.
    pub second_face_ratio: f32,
}

impl Default for QualityPolicy {
    fn default() -> Self {
        Self {
            min_detection: 0.7,
            nms_iou: 0.4,
            min_face_px: 60.0,
            min_brightness: 40.0,
            max_brightness: 225.0,
            min_sharpness: 15.0,
            max_yaw: 0.45,
            max_roll_deg: 25.0,
            min_pitch: 0.2,
            max_pitch: 0.8,
            second_face_ratio: 0.5,
        }
    }
}

/// Why a frame was not good enough to judge; each names what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QualityRefusal {
    #[error("no face found")]
    NoFace,
    #[error("more than one face in view")]
    SeveralFaces,
    #[error("face too small ({px:.0} px, at least {min:.0})")]
    TooSmall { px: f32, min: f32 },
    #[error("too dark (brightness {value:.0}, at least {min:.0})")]
    TooDark { value: f32, min: f32 },
    #[error("too bright (brightness {value:.0}, at most {max:.0})")]
    TooBright { value: f32, max: f32 },
    #[error("blurred (sharpness {value:.1}, at least {min:.1})")]
    Blurred { value: f32, min: f32 },
    #[error("head turned ({what} {value:.2}, limit {limit:.2})")]
    Pose { what: &'static str, value: f32, limit: f32 },
}

impl QualityRefusal {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NoFace => "no_face",
            Self::SeveralFaces => "several_faces",
            Self::TooSmall { .. } => "too_small",
            Self::TooDark { .. } => "too_dark",
            Self::TooBright { .. } => "too_bright",
            Self::Blurred { .. } => "blurred",
            Self::Pose { .. } => "pose",
        }
    }
}

/// A failed analysis: the frame's quality, or the models themselves.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AnalysisError {
    #[error("{0}")]
    Quality(#[from] QualityRefusal),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("frame is not {0}")]
    Frame(String),
}

/// Measurements of the face that passed the gate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quality {
    pub detection: f32,
    pub face_px: f32,
    pub brightness: f32,
    pub sharpness: f32,
    pub yaw: f32,
    pub roll_deg: f32,
    pub pitch: f32,
}

/// Time spent in each stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTimes {
    pub detect: Duration,
    pub landmarks: Duration,
    pub align: Duration,
    pub embed: Duration,
    pub liveness: Duration,
}

/// An L2-normalised embedding, wiped from memory when dropped.
pub type Embedding = Zeroizing<Vec<f32>>;

/// One analysed face.
pub struct Analysis {
    pub face: Rect,
    /// The five alignment points in frame coordinates.
    pub points: [(f32, f32); 5],
    pub quality: Quality,
    pub embedding: Embedding,
    pub times: StageTimes,
}

impl std::fmt::Debug for Analysis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analysis").field("face", &self.face).field("quality", &self.quality).finish_non_exhaustive()
    }
}

/// The loaded models and the gate's thresholds.
pub struct FacePipeline {
    detector: Model,
    landmarks: Model,
    embedder: Model,
    liveness: Model,
    /// Which detector output holds the scores (the other holds the boxes).
    scores_output: usize,
    /// The embedding's length as the model declares it (`None`: left free in the model,
    /// known only from its output).
    embedding_dim: Option<usize>,
    pub policy: QualityPolicy,
    pub models: ModelSet,
}

impl std::fmt::Debug for FacePipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FacePipeline").field("models", &self.models).finish_non_exhaustive()
    }
}

/// A detection in frame coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub rect: Rect,
    pub score: f32,
}

impl FacePipeline {
    pub fn load(models: &ModelSet, policy: QualityPolicy) -> Result<Self, ModelError> {
        let lib = &models.ort_lib;
        let detector = Model::load("detector", lib, &models.detector)?;
        let scores_output = detector.output_names().iter().position(|n| n == "scores").unwrap_or(0);
        let embedder = Model::load("embedding", lib, &models.embedding)?;
        let embedding_dim = embedding_contract(&embedder, &models.embedding.path)?;
        Ok(Self {
            detector,
            landmarks: Model::load("landmarks", lib, &models.landmarks)?,
            embedder,
            liveness: Model::load("liveness", lib, &models.liveness)?,
            scores_output,
            embedding_dim,
            policy,
            models: models.clone(),
        })
    }

    /// The embedding's length as the embedding model declares it (512 for the reference
    /// model); `None` if the model leaves it free.
    pub fn embedding_dim(&self) -> Option<usize> {
        self.embedding_dim
    }

    /// Faces in the frame, most confident first, overlapping boxes merged.
    pub fn detect(&mut self, img: RgbView<'_>) -> Result<Vec<Detection>, ModelError> {
        let pixels = img.resize(DETECT_W, DETECT_H);
        let input = planar(&pixels, |v| (v - 127.0) / 128.0);
        let out = self.detector.run([1, 3, DETECT_H, DETECT_W], input)?;
        if out.len() != 2 {
            return Err(ModelError::Shape { model: "detector", expected: 2, found: out.len() });
        }
        let (scores, boxes) = (&out[self.scores_output], &out[1 - self.scores_output]);
        let n = scores.len() / 2;
        if boxes.len() != n * 4 {
            return Err(ModelError::Shape { model: "detector", expected: n * 4, found: boxes.len() });
        }
        let (w, h) = (img.width as f32, img.height as f32);
        let mut found: Vec<Detection> = (0..n)
            .filter(|&i| scores[i * 2 + 1] >= self.policy.min_detection)
            .map(|i| {
                let b = &boxes[i * 4..i * 4 + 4];
                let rect = Rect::from_corners(
                    b[0].clamp(0.0, 1.0) * w,
                    b[1].clamp(0.0, 1.0) * h,
                    b[2].clamp(0.0, 1.0) * w,
                    b[3].clamp(0.0, 1.0) * h,
                );
                Detection { rect, score: scores[i * 2 + 1] }
            })
            .filter(|d| d.rect.w >= 1.0 && d.rect.h >= 1.0)
            .collect();
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut kept: Vec<Detection> = Vec::new();
        for d in found {
            if kept.iter().all(|k| k.rect.iou(&d.rect) < self.policy.nms_iou) {
                kept.push(d);
            }
        }
        Ok(kept)
    }

    /// 68 landmarks of the face in `rect`, in frame coordinates.
    pub fn landmarks(&mut self, img: RgbView<'_>, rect: Rect) -> Result<Vec<(f32, f32)>, ModelError> {
        let pixels = img.resize_rect(rect, LANDMARK_SIDE, LANDMARK_SIDE);
        let input: Vec<f32> = pixels.iter().map(|p| grey(*p).round() / 256.0).collect();
        let out = self.landmarks.run([1, 1, LANDMARK_SIDE, LANDMARK_SIDE], input)?;
        let v = out.into_iter().next().unwrap_or_default();
        if v.len() != 136 {
            return Err(ModelError::Shape { model: "landmarks", expected: 136, found: v.len() });
        }
        Ok(v.chunks(2).map(|p| (p[0] * rect.w + rect.x, p[1] * rect.h + rect.y)).collect())
    }

    /// The aligned 112 × 112 face for the embedding model (interleaved RGB, 0..255).
    pub fn align(img: RgbView<'_>, points: &[(f32, f32); 5]) -> Option<Vec<[f32; 3]>> {
        let m = Similarity::estimate(points, &ARCFACE_112)?;
        Some(img.warp(&m, ALIGNED_SIDE))
    }

    /// The embedding model's input for an aligned face: planar RGB, `(x − 127) / 128`.
    pub fn embedding_input(aligned: &[[f32; 3]]) -> Zeroizing<Vec<f32>> {
        Zeroizing::new(planar(aligned, |v| (v - 127.0) / 128.0))
    }

    /// The embedding model's raw output for a prepared input (before normalisation).
    pub fn embed_raw(&mut self, input: &[f32]) -> Result<Embedding, ModelError> {
        let out = self.embedder.run([1, 3, ALIGNED_SIDE, ALIGNED_SIDE], input.to_vec())?;
        let v = Zeroizing::new(out.into_iter().next().unwrap_or_default());
        match self.embedding_dim {
            Some(d) if v.len() != d => Err(ModelError::Shape { model: "embedding", expected: d, found: v.len() }),
            None if v.is_empty() => Err(ModelError::Shape { model: "embedding", expected: 1, found: 0 }),
            _ => Ok(v),
        }
    }

    /// The L2-normalised embedding of an aligned face.
    pub fn embed(&mut self, aligned: &[[f32; 3]]) -> Result<Embedding, ModelError> {
        let input = Self::embedding_input(aligned);
        Ok(normalise(&self.embed_raw(&input)?))
    }

    /// The RGB liveness model's probability that the face in `rect` is live.
    pub fn liveness(&mut self, img: RgbView<'_>, rect: Rect) -> Result<f32, ModelError> {
        let crop = rect.scaled_within(LIVENESS_CONTEXT, img.width, img.height);
        let pixels = img.resize_rect(crop, LIVENESS_SIDE, LIVENESS_SIDE);
        let input = planar(&pixels, |v| v.round());
        let out = self.liveness.run([1, 3, LIVENESS_SIDE, LIVENESS_SIDE], input)?;
        let v = out.into_iter().next().unwrap_or_default();
        if v.len() < 2 {
            return Err(ModelError::Shape { model: "liveness", expected: 3, found: v.len() });
        }
        let max = v.iter().copied().fold(f32::MIN, f32::max);
        let exp: Vec<f32> = v.iter().map(|x| (x - max).exp()).collect();
        Ok(exp[0] / exp.iter().sum::<f32>())
    }

    /// The whole path for one frame: the single face in view, gated on quality, aligned
    /// and embedded.
    pub fn analyse(&mut self, img: RgbView<'_>) -> Result<Analysis, AnalysisError> {
        let p = self.policy.clone();
        let mut times = StageTimes::default();
        let t = Instant::now();
        let faces = self.detect(img)?;
        times.detect = t.elapsed();
        let Some(best) = faces.iter().copied().max_by(|a, b| a.rect.area().total_cmp(&b.rect.area())) else {
            return Err(QualityRefusal::NoFace.into());
        };
        if faces.iter().any(|f| f != &best && f.rect.area() >= best.rect.area() * p.second_face_ratio) {
            return Err(QualityRefusal::SeveralFaces.into());
        }
        let face_px = best.rect.w.min(best.rect.h);
        if face_px < p.min_face_px {
            return Err(QualityRefusal::TooSmall { px: face_px, min: p.min_face_px }.into());
        }
        let brightness = mean_grey(img, best.rect);
        if brightness < p.min_brightness {
            return Err(QualityRefusal::TooDark { value: brightness, min: p.min_brightness }.into());
        }
        if brightness > p.max_brightness {
            return Err(QualityRefusal::TooBright { value: brightness, max: p.max_brightness }.into());
        }
        let t = Instant::now();
        let marks = self.landmarks(img, best.rect)?;
        times.landmarks = t.elapsed();
        let points = five_points(&marks);
        let pose = Pose::of(&points);
        if pose.yaw.abs() > p.max_yaw {
            return Err(QualityRefusal::Pose { what: "yaw", value: pose.yaw, limit: p.max_yaw }.into());
        }
        if pose.roll_deg.abs() > p.max_roll_deg {
            return Err(QualityRefusal::Pose { what: "roll", value: pose.roll_deg, limit: p.max_roll_deg }.into());
        }
        if !(p.min_pitch..=p.max_pitch).contains(&pose.pitch) {
            let limit = if pose.pitch < p.min_pitch { p.min_pitch } else { p.max_pitch };
            return Err(QualityRefusal::Pose { what: "pitch", value: pose.pitch, limit }.into());
        }
        let t = Instant::now();
        let aligned = Zeroizing::new(Self::align(img, &points).ok_or(QualityRefusal::Pose {
            what: "landmarks",
            value: 0.0,
            limit: 0.0,
        })?);
        times.align = t.elapsed();
        let grey_face: Vec<f32> = aligned.iter().map(|p| grey(*p)).collect();
        let sharpness = laplacian_variance(&grey_face, ALIGNED_SIDE);
        if sharpness < p.min_sharpness {
            return Err(QualityRefusal::Blurred { value: sharpness, min: p.min_sharpness }.into());
        }
        let t = Instant::now();
        let embedding = self.embed(&aligned)?;
        times.embed = t.elapsed();
        Ok(Analysis {
            face: best.rect,
            points,
            quality: Quality {
                detection: best.score,
                face_px,
                brightness,
                sharpness,
                yaw: pose.yaw,
                roll_deg: pose.roll_deg,
                pitch: pose.pitch,
            },
            embedding,
            times,
        })
    }
}

/// Checks what the embedding model declares against the contract (`docs/models.md`): its
/// one input is `[1,3,112,112]` float (a dimension the model leaves free is accepted), its
/// first output `[1,D]`. Returns D when the model fixes it. Names and D are read from the
/// model, so any embedding model of this contract can be configured.
fn embedding_contract(model: &Model, path: &std::path::Path) -> Result<Option<usize>, ModelError> {
    let broken = |reason: String| ModelError::Contract { path: path.display().to_string(), role: "embedding", reason };
    let want = [1, 3, ALIGNED_SIDE as i64, ALIGNED_SIDE as i64];
    let input = model.input_dims().ok_or_else(|| broken("its input is not a tensor".into()))?;
    if input.len() != want.len() || input.iter().zip(want).any(|(&d, w)| d != w && d >= 0) {
        return Err(broken(format!("its input is {input:?}, [1, 3, 112, 112] expected")));
    }
    let output = model.output_dims().into_iter().next().flatten();
    let output = output.ok_or_else(|| broken("it has no tensor output".into()))?;
    match output.as_slice() {
        [batch, d] if *batch == 1 || *batch < 0 => Ok(usize::try_from(*d).ok().filter(|&d| d > 0)),
        other => Err(broken(format!("its output is {other:?}, [1, D] expected"))),
    }
}

/// `v / |v|` (a zero vector stays zero).
pub fn normalise(v: &[f32]) -> Embedding {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    Zeroizing::new(if norm > 0.0 { v.iter().map(|x| x / norm).collect() } else { v.to_vec() })
}

/// Cosine similarity of two L2-normalised vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::MIN;
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn mean_grey(img: RgbView<'_>, r: Rect) -> f32 {
    let pixels = img.resize_rect(r, 32, 32);
    pixels.iter().map(|p| grey(*p)).sum::<f32>() / pixels.len() as f32
}

/// Eye centres, nose tip and mouth corners from the 68-point layout (iBUG 300-W).
pub fn five_points(m: &[(f32, f32)]) -> [(f32, f32); 5] {
    let avg = |idx: &[usize]| {
        let (sx, sy) = idx.iter().fold((0.0, 0.0), |a, &i| (a.0 + m[i].0, a.1 + m[i].1));
        (sx / idx.len() as f32, sy / idx.len() as f32)
    };
    [avg(&[37, 38, 40, 41]), avg(&[43, 44, 46, 47]), m[30], avg(&[48, 60]), avg(&[54, 64])]
}

/// Head pose estimated from the five points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    pub yaw: f32,
    pub roll_deg: f32,
    pub pitch: f32,
}

impl Pose {
    pub fn of(p: &[(f32, f32); 5]) -> Pose {
        let (l, r, nose) = (p[0], p[1], p[2]);
        let mouth = ((p[3].0 + p[4].0) / 2.0, (p[3].1 + p[4].1) / 2.0);
        let roll = (r.1 - l.1).atan2(r.0 - l.0);
        // Undo the roll about the eyes' midpoint, then measure offsets.
        let mid = ((l.0 + r.0) / 2.0, (l.1 + r.1) / 2.0);
        let (c, s) = (roll.cos(), roll.sin());
        let unroll = |q: (f32, f32)| {
            let (dx, dy) = (q.0 - mid.0, q.1 - mid.1);
            (c * dx + s * dy, -s * dx + c * dy)
        };
        let eye_dist = (r.0 - l.0).hypot(r.1 - l.1).max(1e-3);
        let n = unroll(nose);
        let m = unroll(mouth);
        Pose { yaw: n.0 / eye_dist, roll_deg: roll.to_degrees(), pitch: if m.1.abs() < 1e-3 { 0.0 } else { n.1 / m.1 } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arcface_template_is_a_frontal_face() {
        let pose = Pose::of(&ARCFACE_112);
        assert!(pose.yaw.abs() < 0.05 && pose.roll_deg.abs() < 1.0, "{pose:?}");
        assert!((0.4..0.6).contains(&pose.pitch), "{pose:?}");
        // The same face turned: the nose moves toward one eye.
        let mut turned = ARCFACE_112;
        turned[2].0 += 20.0;
        assert!(Pose::of(&turned).yaw > 0.5);
    }

    #[test]
    fn embeddings_are_unit_length_and_cosine_is_their_dot_product() {
        let a = normalise(&[3.0, 4.0]);
        assert!((a[0] - 0.6).abs() < 1e-6 && (a[1] - 0.8).abs() < 1e-6);
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&a, &[1.0]), f32::MIN, "different lengths never match");
        assert_eq!(normalise(&[0.0, 0.0]).to_vec(), vec![0.0, 0.0]);
    }
}
