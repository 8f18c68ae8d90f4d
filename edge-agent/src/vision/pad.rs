//! The presentation-attack gate: the RGB liveness model combined with the frame's depth
//! and near-infrared channels when the camera has them.
//!
//! * **Depth**: a face has relief (the nose stands 15–30 mm in front of the cheeks); a
//!   print or a screen is a plane, even when bent or tilted. A plane is fitted to the
//!   face region's depth by least squares; too little residual relief is flat.
//! * **IR**: skin reflects the camera's near-infrared illuminator; a phone or monitor
//!   screen emits visible light only, so a replayed face is dark and featureless in IR.
//! * **RGB model**: a learned liveness score; weak alone on its own (see
//!   `docs/face-matching.md`), so it votes with the physical cues.

use serde::{Deserialize, Serialize};

use super::imageops::Rect;

/// Which cues the gate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PadMode {
    /// RGB model, depth and IR; frames without depth or IR are refused.
    Full,
    /// The RGB model only (a camera without depth or IR): weak, say so to the operator.
    RgbOnly,
    /// No presentation-attack detection at all. Allowed only with `allow_no_pad`.
    Off,
}

/// Thresholds of the gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PadPolicy {
    pub mode: PadMode,
    /// Must be `true` for `mode = "off"`: running face pickup without a gate is a choice.
    pub allow_no_pad: bool,
    /// Least RGB liveness probability accepted.
    pub min_rgb_live: f32,
    /// Least relief (RMS distance from the fitted plane, mm) of a real face.
    pub min_relief_mm: f32,
    /// Least distance by which the nose tip stands in front of the cheeks, mm (a flat
    /// mask with eye holes has relief at the holes but none here).
    pub min_nose_mm: f32,
    /// Least mean IR level in the face region (0..255) of lit skin.
    pub min_ir_level: f32,
    /// Least IR contrast (standard deviation) in the face region.
    pub min_ir_contrast: f32,
}

impl Default for PadPolicy {
    fn default() -> Self {
        Self {
            mode: PadMode::Full,
            allow_no_pad: false,
            min_rgb_live: 0.05,
            min_relief_mm: 4.0,
            min_nose_mm: 6.0,
            min_ir_level: 40.0,
            min_ir_contrast: 6.0,
        }
    }
}

impl PadPolicy {
    /// The configuration error, if any: no gate without saying so.
    pub fn check(&self) -> Result<(), String> {
        if self.mode == PadMode::Off && !self.allow_no_pad {
            return Err("face pickup without presentation-attack detection needs `allow_no_pad = true`".into());
        }
        for (name, v) in [("min_rgb_live", self.min_rgb_live)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("`{name}` is a probability between 0 and 1"));
            }
        }
        Ok(())
    }
}

/// The channels of one frame the gate looks at.
#[derive(Debug, Clone, Copy)]
pub struct Channels<'a> {
    pub width: u32,
    pub height: u32,
    pub ir: Option<&'a [u8]>,
    pub depth: Option<&'a [u16]>,
}

/// What each cue measured, for logs, metrics and calibration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PadEvidence {
    pub rgb_live: Option<f32>,
    pub relief_mm: Option<f32>,
    /// How far the nose tip stands in front of the cheeks.
    pub nose_mm: Option<f32>,
    pub ir_level: Option<f32>,
    pub ir_contrast: Option<f32>,
}

/// The gate's verdict: `Ok` for live, or the reasons it is an attack.
pub fn judge(policy: &PadPolicy, evidence: &PadEvidence) -> Result<(), String> {
    if policy.mode == PadMode::Off {
        return Ok(());
    }
    let mut reasons = Vec::new();
    if let Some(live) = evidence.rgb_live
        && live < policy.min_rgb_live
    {
        reasons.push(format!("RGB liveness {live:.2} below {:.2}", policy.min_rgb_live));
    }
    if policy.mode == PadMode::Full {
        match evidence.relief_mm {
            None => reasons.push("no depth channel".into()),
            Some(r) if r < policy.min_relief_mm => {
                reasons.push(format!("flat depth ({r:.1} mm relief, a print or a screen)"))
            }
            Some(_) => match evidence.nose_mm {
                Some(n) if n < policy.min_nose_mm => {
                    reasons.push(format!("no nose relief ({n:.1} mm, a mask or a cut-out)"))
                }
                Some(_) => {}
                None => reasons.push("no depth at the nose or cheeks".into()),
            },
        }
        match (evidence.ir_level, evidence.ir_contrast) {
            (Some(level), Some(contrast)) => {
                if level < policy.min_ir_level {
                    reasons.push(format!("no IR reflection (level {level:.0}, a screen)"));
                } else if contrast < policy.min_ir_contrast {
                    reasons.push(format!("featureless IR (contrast {contrast:.1})"));
                }
            }
            _ => reasons.push("no IR channel".into()),
        }
    }
    if reasons.is_empty() { Ok(()) } else { Err(reasons.join("; ")) }
}

/// Depth relief and IR statistics of the face region (the inner 60 % of the box, away
/// from the hair and the background), and the nose's depth against the cheeks, placed
/// from the five alignment points (eyes, nose, mouth corners).
pub fn measure(ch: &Channels<'_>, face: Rect, points: &[(f32, f32); 5]) -> PadEvidence {
    let inner = Rect { x: face.x + face.w * 0.2, y: face.y + face.h * 0.2, w: face.w * 0.6, h: face.h * 0.6 };
    let (w, h) = (ch.width as usize, ch.height as usize);
    let x0 = (inner.x.max(0.0) as usize).min(w.saturating_sub(1));
    let y0 = (inner.y.max(0.0) as usize).min(h.saturating_sub(1));
    let x1 = ((inner.x + inner.w).max(0.0) as usize).clamp(x0 + 1, w);
    let y1 = ((inner.y + inner.h).max(0.0) as usize).clamp(y0 + 1, h);
    let mut ev = PadEvidence::default();
    if let Some(depth) = ch.depth.filter(|d| d.len() == w * h) {
        let mut pts = Vec::new();
        for y in y0..y1 {
            for x in x0..x1 {
                let d = depth[y * w + x];
                if d > 0 {
                    pts.push((x as f64, y as f64, f64::from(d)));
                }
            }
        }
        ev.relief_mm = plane_residual(&pts).map(|r| r as f32);
        let eye = (points[1].0 - points[0].0).hypot(points[1].1 - points[0].1);
        let around = |p: (f32, f32)| -> Option<f32> {
            let r = (eye * 0.08).max(1.0) as i64;
            let (cx, cy) = (p.0 as i64, p.1 as i64);
            let vals: Vec<f32> = (cy - r..=cy + r)
                .flat_map(|y| (cx - r..=cx + r).map(move |x| (x, y)))
                .filter(|&(x, y)| x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h)
                .map(|(x, y)| depth[y as usize * w + x as usize])
                .filter(|&d| d > 0)
                .map(f32::from)
                .collect();
            (!vals.is_empty()).then(|| vals.iter().sum::<f32>() / vals.len() as f32)
        };
        // Cheeks: below each eye, level with the nose tip, a little outward.
        let (nose, (l, r)) = (points[2], (points[0], points[1]));
        let left = (l.0 - eye * 0.1, nose.1);
        let right = (r.0 + eye * 0.1, nose.1);
        if let (Some(n), Some(a), Some(b)) = (around(nose), around(left), around(right)) {
            ev.nose_mm = Some((a + b) / 2.0 - n);
        }
    }
    if let Some(ir) = ch.ir.filter(|i| i.len() == w * h) {
        let vals: Vec<f32> = (y0..y1).flat_map(|y| (x0..x1).map(move |x| f32::from(ir[y * w + x]))).collect();
        if !vals.is_empty() {
            let n = vals.len() as f32;
            let mean = vals.iter().sum::<f32>() / n;
            let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            ev.ir_level = Some(mean);
            ev.ir_contrast = Some(var.sqrt());
        }
    }
    ev
}

/// RMS distance of points from their least-squares plane `z = a·x + b·y + c`.
fn plane_residual(pts: &[(f64, f64, f64)]) -> Option<f64> {
    if pts.len() < 16 {
        return None;
    }
    let n = pts.len() as f64;
    let (mx, my, mz) = pts.iter().fold((0.0, 0.0, 0.0), |a, p| (a.0 + p.0 / n, a.1 + p.1 / n, a.2 + p.2 / n));
    let (mut sxx, mut sxy, mut syy, mut sxz, mut syz) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(x, y, z) in pts {
        let (x, y, z) = (x - mx, y - my, z - mz);
        sxx += x * x;
        sxy += x * y;
        syy += y * y;
        sxz += x * z;
        syz += y * z;
    }
    let det = sxx * syy - sxy * sxy;
    let (a, b) =
        if det.abs() < 1e-9 { (0.0, 0.0) } else { ((sxz * syy - syz * sxy) / det, (syz * sxx - sxz * sxy) / det) };
    let ss: f64 = pts
        .iter()
        .map(|&(x, y, z)| {
            let r = (z - mz) - a * (x - mx) - b * (y - my);
            r * r
        })
        .sum();
    Some((ss / n).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(depth: impl Fn(f32, f32) -> u16, ir: impl Fn(f32, f32) -> u8) -> (Vec<u16>, Vec<u8>) {
        let (w, h) = (100usize, 100usize);
        let mut d = Vec::with_capacity(w * h);
        let mut i = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                d.push(depth(x as f32, y as f32));
                i.push(ir(x as f32, y as f32));
            }
        }
        (d, i)
    }

    const FACE: Rect = Rect { x: 20.0, y: 20.0, w: 60.0, h: 60.0 };

    /// Depth of a head in FACE relative to its nose tip's plane, mm.
    fn head(x: f32, y: f32) -> f32 {
        let r2 = (((x - 50.0) / 32.0).powi(2) + ((y - 50.0) / 40.0).powi(2)).min(1.0);
        let nose = 20.0 * (-((x - 50.0).powi(2) + (y - 52.0).powi(2)) / 18.0).exp();
        60.0 * (1.0 - (1.0 - r2).sqrt()) - nose
    }

    fn evidence(d: &[u16], i: &[u8]) -> PadEvidence {
        // A frontal face in FACE: eyes, nose tip, mouth corners.
        let points = [(38.0, 40.0), (62.0, 40.0), (50.0, 52.0), (40.0, 64.0), (60.0, 64.0)];
        measure(&Channels { width: 100, height: 100, ir: Some(i), depth: Some(d) }, FACE, &points)
    }

    #[test]
    fn a_tilted_print_is_flat_and_a_face_is_not() {
        let lit = |x: f32, y: f32| (120.0 + 40.0 * ((x + y) / 9.0).sin()) as u8;
        // A photo held at an angle: a plane, however tilted.
        let (d, i) = frame(|x, y| (500.0 + 1.5 * x + 0.7 * y) as u16, lit);
        let print = evidence(&d, &i);
        assert!(print.relief_mm.unwrap() < 1.0, "{print:?}");
        assert!(judge(&PadPolicy::default(), &print).unwrap_err().contains("flat depth"));
        // A face over the same tilt: a head curving back 60 mm to its sides (1 px ≈ 2 mm
        // here), and a nose standing 20 mm out.
        let (d, i) = frame(|x, y| (500.0 + 1.5 * x + 0.7 * y + head(x, y)) as u16, lit);
        let face = evidence(&d, &i);
        assert!(face.relief_mm.unwrap() > 4.0, "{face:?}");
        assert!(face.nose_mm.unwrap() > 6.0, "{face:?}");
        assert_eq!(judge(&PadPolicy::default(), &face), Ok(()));
        // A flat mask with eye holes: relief at the holes, none at the nose.
        let (d, i) = frame(
            |x, y| {
                let hole = |cx: f32| (x - cx).powi(2) + (y - 40.0).powi(2) < 36.0;
                if hole(38.0) || hole(62.0) { 530 } else { 500 }
            },
            lit,
        );
        let mask = evidence(&d, &i);
        assert!(mask.relief_mm.unwrap() > 4.0, "the holes give relief: {mask:?}");
        assert!(judge(&PadPolicy::default(), &mask).unwrap_err().contains("no nose relief"), "{mask:?}");
    }

    #[test]
    fn a_screen_is_dark_in_ir_and_missing_channels_are_refused_in_full_mode() {
        let (d, i) = frame(|x, y| (500.0 + head(x, y)) as u16, |_, _| 8);
        assert!(judge(&PadPolicy::default(), &evidence(&d, &i)).unwrap_err().contains("no IR reflection"));
        let rgb_only = PadEvidence { rgb_live: Some(0.9), ..Default::default() };
        let err = judge(&PadPolicy::default(), &rgb_only).unwrap_err();
        assert!(err.contains("no depth channel") && err.contains("no IR channel"), "{err}");
        let weak = PadPolicy { mode: PadMode::RgbOnly, ..Default::default() };
        assert_eq!(judge(&weak, &rgb_only), Ok(()));
        let fooled = PadEvidence { rgb_live: Some(0.01), ..Default::default() };
        assert!(judge(&weak, &fooled).unwrap_err().contains("RGB liveness"));
    }

    #[test]
    fn no_gate_must_be_chosen_explicitly() {
        let off = PadPolicy { mode: PadMode::Off, ..Default::default() };
        assert!(off.check().unwrap_err().contains("allow_no_pad"));
        assert!(PadPolicy { allow_no_pad: true, ..off }.check().is_ok());
        assert!(PadPolicy::default().check().is_ok());
    }
}
