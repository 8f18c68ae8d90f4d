//! Frames from the cabinet's camera, behind a trait.
//!
//! A frame carries the colour image and, when the camera has them, an infrared and a
//! depth channel: the liveness gate looks at those to tell a face from a photo or a
//! screen. Sources:
//! * [`SyntheticSource`] — generated frames for tests and the simulator;
//! * [`DirectorySource`] — binary PPM (P6) images from a folder, in name order, looping;
//!   a field engineer replays captured frames with it. (Real cameras, V4L2, come later.)

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

/// One captured frame.
#[derive(Clone, PartialEq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// Row-major RGB, 3 bytes a pixel.
    pub rgb: Vec<u8>,
    /// Near-infrared intensity, one byte a pixel, when the camera has an IR channel.
    pub ir: Option<Vec<u8>>,
    /// Depth in millimetres, one value a pixel, when the camera has a depth channel.
    pub depth: Option<Vec<u16>>,
    pub at: DateTime<Utc>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print pixels: a frame is biometric data.
        f.debug_struct("Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("ir", &self.ir.is_some())
            .field("depth", &self.depth.is_some())
            .finish()
    }
}

/// Why a frame could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    #[error("no frames in {0}")]
    Empty(PathBuf),
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
}

/// Anything that produces frames.
pub trait FrameSource: Send + 'static {
    fn next_frame(&mut self) -> Result<Frame, CameraError>;
}

/// Generated frames: a gradient with a brighter oval where a face would be, and (if
/// asked) IR and depth channels with the same oval, as a live face would show.
#[derive(Debug, Clone)]
pub struct SyntheticSource {
    pub width: u32,
    pub height: u32,
    pub with_ir: bool,
    pub with_depth: bool,
    counter: u32,
}

impl SyntheticSource {
    pub fn new(width: u32, height: u32, with_ir: bool, with_depth: bool) -> Self {
        Self { width, height, with_ir, with_depth, counter: 0 }
    }
}

impl FrameSource for SyntheticSource {
    fn next_frame(&mut self) -> Result<Frame, CameraError> {
        self.counter = self.counter.wrapping_add(1);
        let (w, h) = (self.width, self.height);
        let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
        let inside = |x: u32, y: u32| {
            let dx = (x as f32 - cx) / (w as f32 * 0.2);
            let dy = (y as f32 - cy) / (h as f32 * 0.3);
            dx * dx + dy * dy <= 1.0
        };
        let mut rgb = Vec::with_capacity((w * h * 3) as usize);
        let mut ir = Vec::with_capacity((w * h) as usize);
        let mut depth = Vec::with_capacity((w * h) as usize);
        for y in 0..h {
            for x in 0..w {
                let face = inside(x, y);
                let base = ((x + y + self.counter) % 64) as u8;
                let v = if face { 180u8.saturating_add(base / 4) } else { base };
                rgb.extend([v, v.saturating_sub(10), v.saturating_sub(20)]);
                ir.push(if face { 200 } else { 30 });
                depth.push(if face { 450 } else { 1200 });
            }
        }
        Ok(Frame {
            width: w,
            height: h,
            rgb,
            ir: self.with_ir.then_some(ir),
            depth: self.with_depth.then_some(depth),
            at: Utc::now(),
        })
    }
}

/// What stands in front of a simulated camera: tests and the simulator put a scene (a
/// frame) in front of it, and every capture sees that scene until it changes.
#[derive(Debug, Clone, Default)]
pub struct Scene(std::sync::Arc<std::sync::Mutex<Option<Frame>>>);

impl Scene {
    /// Puts `frame` in front of the camera (`None`: nobody there).
    pub fn show(&self, frame: Option<Frame>) {
        if let Ok(mut s) = self.0.lock() {
            *s = frame;
        }
    }
}

impl FrameSource for Scene {
    fn next_frame(&mut self) -> Result<Frame, CameraError> {
        let scene = self.0.lock().ok().and_then(|s| s.clone());
        match scene {
            Some(mut f) => {
                f.at = Utc::now();
                Ok(f)
            }
            None => Err(CameraError::Unreadable {
                path: PathBuf::from("scene"),
                reason: "nobody in front of the camera".into(),
            }),
        }
    }
}

/// Image files from a folder (binary PPM, JPEG or PNG), in name order, looping.
#[derive(Debug, Clone)]
pub struct DirectorySource {
    files: Vec<PathBuf>,
    next: usize,
}

impl DirectorySource {
    pub fn open(dir: &Path) -> Result<Self, CameraError> {
        let unreadable = |e: std::io::Error| CameraError::Unreadable { path: dir.to_owned(), reason: e.to_string() };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(unreadable)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| ["ppm", "jpg", "jpeg", "png"].iter().any(|e| x.eq_ignore_ascii_case(e)))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(CameraError::Empty(dir.to_owned()));
        }
        Ok(Self { files, next: 0 })
    }
}

/// Parses a binary PPM.
pub fn parse_ppm(bytes: &[u8]) -> Result<(u32, u32, Vec<u8>), String> {
    let mut fields = Vec::with_capacity(4);
    let mut i = 0;
    while fields.len() < 4 {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if start == i {
            return Err("truncated header".into());
        }
        fields.push(std::str::from_utf8(&bytes[start..i]).map_err(|_| "header is not text")?.to_owned());
    }
    if fields[0] != "P6" {
        return Err(format!("not a binary PPM (magic {:?})", fields[0]));
    }
    let num = |s: &str| s.parse::<u32>().map_err(|_| format!("bad number {s:?} in header"));
    let (w, h, max) = (num(&fields[1])?, num(&fields[2])?, num(&fields[3])?);
    if max != 255 {
        return Err(format!("only 8-bit PPM is supported (maxval {max})"));
    }
    if w == 0 || h == 0 || w > 8192 || h > 8192 {
        return Err(format!("unreasonable size {w}x{h}"));
    }
    let pixels = &bytes[(i + 1).min(bytes.len())..];
    let need = (w * h * 3) as usize;
    if pixels.len() < need {
        return Err(format!("pixel data is {} bytes, {need} expected", pixels.len()));
    }
    Ok((w, h, pixels[..need].to_vec()))
}

impl FrameSource for DirectorySource {
    fn next_frame(&mut self) -> Result<Frame, CameraError> {
        let path = self.files[self.next % self.files.len()].clone();
        self.next += 1;
        let bytes =
            std::fs::read(&path).map_err(|e| CameraError::Unreadable { path: path.clone(), reason: e.to_string() })?;
        let unreadable = |reason| CameraError::Unreadable { path: path.clone(), reason };
        if path.extension().is_some_and(|x| x.eq_ignore_ascii_case("ppm")) {
            let (width, height, rgb) = parse_ppm(&bytes).map_err(unreadable)?;
            Ok(Frame { width, height, rgb, ir: None, depth: None, at: Utc::now() })
        } else {
            crate::vision::decode_photo(&bytes).map_err(unreadable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_frames_have_the_channels_asked_for() {
        let mut s = SyntheticSource::new(32, 24, true, false);
        let f = s.next_frame().unwrap();
        assert_eq!(f.rgb.len(), 32 * 24 * 3);
        assert_eq!(f.ir.as_ref().map(Vec::len), Some(32 * 24));
        assert!(f.depth.is_none());
        assert_ne!(f.rgb, s.next_frame().unwrap().rgb, "frames change over time");
        assert!(!format!("{f:?}").contains("rgb"), "pixels never reach a log");
    }

    #[test]
    fn a_directory_of_ppm_files_plays_in_order_and_loops() {
        let dir = tempfile::tempdir().unwrap();
        for (name, v) in [("b.ppm", 20u8), ("a.ppm", 10u8)] {
            let mut bytes = b"P6\n# test\n2 1\n255\n".to_vec();
            bytes.extend([v; 6]);
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let mut s = DirectorySource::open(dir.path()).unwrap();
        let firsts: Vec<u8> = (0..3).map(|_| s.next_frame().unwrap().rgb[0]).collect();
        assert_eq!(firsts, vec![10, 20, 10]);
    }

    #[test]
    fn bad_images_are_refused_with_the_reason() {
        assert!(parse_ppm(b"P3\n1 1\n255\n0 0 0").unwrap_err().contains("magic"));
        assert!(parse_ppm(b"P6\n2 2\n255\n\x00\x00").unwrap_err().contains("expected"));
        assert!(parse_ppm(b"P6\n1 1\n65535\n").unwrap_err().contains("8-bit"));
        assert!(matches!(DirectorySource::open(tempfile::tempdir().unwrap().path()), Err(CameraError::Empty(_))));
    }

    #[test]
    fn png_frames_play_and_a_corrupt_jpeg_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8 * 10, y as u8 * 20, 7]));
        img.save(dir.path().join("a.png")).unwrap();
        std::fs::write(dir.path().join("b.jpg"), b"\xff\xd8 not really a jpeg").unwrap();
        let mut src = DirectorySource::open(dir.path()).unwrap();
        let f = src.next_frame().unwrap();
        assert_eq!((f.width, f.height), (4, 3));
        assert_eq!(&f.rgb[..6], &[0, 0, 7, 10, 0, 7]);
        let err = src.next_frame().unwrap_err().to_string();
        assert!(err.contains("b.jpg") && err.contains("JPEG or PNG"), "{err}");
    }
}
