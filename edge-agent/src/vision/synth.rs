//! Camera frames made from real photos, for tests, the simulator and benchmarks: a live
//! capture (the photo with the depth of a head and its near-infrared image) and the
//! presentation attacks we can make without an attack lab — a print, a screen replay and
//! a cut-out mask. `docs/face-matching.md` says what passing these proves and what not.

use chrono::Utc;

use super::imageops::Rect;
use crate::camera::Frame;

/// Where the face is in the photo (from the pipeline's own analysis).
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub face: Rect,
    /// Eyes, nose tip, mouth corners.
    pub points: [(f32, f32); 5],
}

/// Distance of the nose tip from the camera, mm.
const NOSE_DISTANCE_MM: f32 = 450.0;
/// Distance of the wall behind the recipient, mm.
const BACKGROUND_MM: f32 = 1800.0;
/// A face box is about this wide in reality, mm.
const FACE_WIDTH_MM: f32 = 150.0;

fn grey_of(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks(3)
        .map(|p| (0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])).round() as u8)
        .collect()
}

fn frame(photo: &Frame, rgb: Vec<u8>, ir: Vec<u8>, depth: Vec<u16>) -> Frame {
    Frame { width: photo.width, height: photo.height, rgb, ir: Some(ir), depth: Some(depth), at: Utc::now() }
}

/// The depth a head at `at` gives each pixel: a head curving back to its sides, the nose
/// standing out, the wall far behind.
fn head_depth(w: u32, h: u32, at: &Placement) -> Vec<u16> {
    let (cx, cy) = (at.face.x + at.face.w / 2.0, at.face.y + at.face.h / 2.0);
    let (rx, ry) = (at.face.w * 0.55, at.face.h * 0.6);
    let nose = at.points[2];
    let nose_r = at.face.w * 0.12;
    let mut depth = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        for x in 0..w {
            let (xf, yf) = (x as f32, y as f32);
            let r2 = ((xf - cx) / rx).powi(2) + ((yf - cy) / ry).powi(2);
            if r2 >= 1.0 {
                depth.push(BACKGROUND_MM as u16);
                continue;
            }
            // A sphere-like head: ~60 % of the face width deep at its rim.
            let back = 0.6 * FACE_WIDTH_MM * (1.0 - (1.0 - r2).sqrt());
            let dn = ((xf - nose.0).powi(2) + (yf - nose.1).powi(2)) / (nose_r * nose_r);
            let nose_out = 20.0 * (-dn).exp();
            depth.push((NOSE_DISTANCE_MM + 20.0 + back - nose_out) as u16);
        }
    }
    depth
}

/// A real person in front of the camera, looking like the photo.
pub fn live(photo: &Frame, at: &Placement) -> Frame {
    let depth = head_depth(photo.width, photo.height, at);
    frame(photo, photo.rgb.clone(), grey_of(&photo.rgb), depth)
}

/// A flat plane at `distance` tilted by `tilt` mm per pixel across.
fn plane(w: u32, h: u32, distance: f32, tilt: f32) -> Vec<u16> {
    (0..h).flat_map(|_| (0..w).map(move |x| (distance + tilt * x as f32) as u16)).collect()
}

/// A 3 × 3 box blur (the softening of printing and re-photographing).
fn blur(w: u32, h: u32, rgb: &[u8]) -> Vec<u8> {
    let (w, h) = (w as usize, h as usize);
    let mut out = vec![0u8; rgb.len()];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut sum = 0u32;
                let mut n = 0u32;
                for dy in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                    for dx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                        sum += u32::from(rgb[(dy * w + dx) * 3 + c]);
                        n += 1;
                    }
                }
                out[(y * w + x) * 3 + c] = (sum / n) as u8;
            }
        }
    }
    out
}

/// A printed photo held up to the camera: recaptured (blurred twice, gamma-shifted,
/// washed out), flat and a little tilted in depth, and reflecting IR like paper does.
pub fn print(photo: &Frame, _at: &Placement) -> Frame {
    let soft = blur(photo.width, photo.height, &blur(photo.width, photo.height, &photo.rgb));
    let rgb: Vec<u8> = soft.iter().map(|&v| (255.0 * (f32::from(v) / 255.0).powf(1.25) * 0.85 + 20.0) as u8).collect();
    let ir = grey_of(&rgb);
    frame(photo, rgb, ir, plane(photo.width, photo.height, NOSE_DISTANCE_MM, 0.05))
}

/// The photo replayed on a phone or monitor: moiré from the screen's pixel grid, a
/// brighter picture, a flat glass surface, and no IR reflection from the image.
pub fn screen(photo: &Frame, _at: &Placement) -> Frame {
    let w = photo.width as usize;
    let rgb: Vec<u8> = photo
        .rgb
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let (x, y) = ((i / 3) % w, (i / 3) / w);
            let moire = 18.0 * ((x as f32 * 0.9 + y as f32 * 0.35).sin() * (y as f32 * 0.8).cos());
            (f32::from(v) * 1.1 + 10.0 + moire).clamp(0.0, 255.0) as u8
        })
        .collect();
    let ir = vec![6u8; (photo.width * photo.height) as usize];
    frame(photo, rgb, ir, plane(photo.width, photo.height, NOSE_DISTANCE_MM - 50.0, 0.0))
}

/// A printed face with the eyes cut out, held in front of a real face: flat in depth
/// except where the real eyes show through, paper-like in IR.
pub fn cutout_mask(photo: &Frame, at: &Placement) -> Frame {
    let mut depth = plane(photo.width, photo.height, NOSE_DISTANCE_MM, 0.0);
    let hole = at.face.w * 0.09;
    for eye in [at.points[0], at.points[1]] {
        for y in (eye.1 - hole).max(0.0) as u32..((eye.1 + hole) as u32).min(photo.height) {
            for x in (eye.0 - hole).max(0.0) as u32..((eye.0 + hole) as u32).min(photo.width) {
                depth[(y * photo.width + x) as usize] = (NOSE_DISTANCE_MM + 35.0) as u16;
            }
        }
    }
    frame(photo, photo.rgb.clone(), grey_of(&photo.rgb), depth)
}
