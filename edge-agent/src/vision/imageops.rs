//! The few image operations the face pipeline needs, on row-major 8-bit RGB: bilinear
//! resampling of a rectangle, a similarity warp, grey levels and simple statistics.
//! Pixel centres follow OpenCV's convention (`src = (dst + 0.5) * scale - 0.5`), so crops
//! match what the models were used with.

/// A borrowed RGB image.
#[derive(Clone, Copy)]
pub struct RgbView<'a> {
    pub width: u32,
    pub height: u32,
    pub data: &'a [u8],
}

impl std::fmt::Debug for RgbView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Pixels are biometric data: never printed.
        write!(f, "RgbView({}x{})", self.width, self.height)
    }
}

/// An axis-aligned rectangle in pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl Rect {
    pub fn from_corners(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        Self { x: x1.min(x2), y: y1.min(y2), w: (x2 - x1).abs(), h: (y2 - y1).abs() }
    }

    pub fn area(&self) -> f32 {
        self.w * self.h
    }

    pub fn iou(&self, o: &Rect) -> f32 {
        let ix = (self.x + self.w).min(o.x + o.w) - self.x.max(o.x);
        let iy = (self.y + self.h).min(o.y + o.h) - self.y.max(o.y);
        if ix <= 0.0 || iy <= 0.0 {
            return 0.0;
        }
        let inter = ix * iy;
        inter / (self.area() + o.area() - inter)
    }

    /// This rectangle scaled by `factor` about its centre, then shrunk (keeping its centre
    /// where possible) and shifted to lie inside a `width` × `height` image.
    pub fn scaled_within(&self, factor: f32, width: u32, height: u32) -> Rect {
        let (iw, ih) = ((width.max(1) - 1) as f32, (height.max(1) - 1) as f32);
        let factor = factor.min(ih / self.h.max(1.0)).min(iw / self.w.max(1.0));
        let (w, h) = (self.w * factor, self.h * factor);
        let (cx, cy) = (self.x + self.w / 2.0, self.y + self.h / 2.0);
        let x = (cx - w / 2.0).clamp(0.0, (iw - w).max(0.0));
        let y = (cy - h / 2.0).clamp(0.0, (ih - h).max(0.0));
        Rect { x, y, w, h }
    }
}

impl<'a> RgbView<'a> {
    pub fn new(width: u32, height: u32, data: &'a [u8]) -> Option<Self> {
        (data.len() == width as usize * height as usize * 3 && width > 0 && height > 0).then_some(Self {
            width,
            height,
            data,
        })
    }

    #[inline]
    fn px(&self, x: i64, y: i64, c: usize) -> f32 {
        let x = x.clamp(0, i64::from(self.width) - 1) as usize;
        let y = y.clamp(0, i64::from(self.height) - 1) as usize;
        f32::from(self.data[(y * self.width as usize + x) * 3 + c])
    }

    /// Bilinear sample at a sub-pixel position; positions outside repeat the border.
    #[inline]
    pub fn sample(&self, x: f32, y: f32) -> [f32; 3] {
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        let mut out = [0.0; 3];
        for (c, o) in out.iter_mut().enumerate() {
            let top = self.px(x0, y0, c) * (1.0 - fx) + self.px(x0 + 1, y0, c) * fx;
            let bottom = self.px(x0, y0 + 1, c) * (1.0 - fx) + self.px(x0 + 1, y0 + 1, c) * fx;
            *o = top * (1.0 - fy) + bottom * fy;
        }
        out
    }

    /// The rectangle resampled to `out_w` × `out_h`, as interleaved RGB floats (0..255).
    pub fn resize_rect(&self, r: Rect, out_w: usize, out_h: usize) -> Vec<[f32; 3]> {
        let (sx, sy) = (r.w / out_w as f32, r.h / out_h as f32);
        let mut out = Vec::with_capacity(out_w * out_h);
        for oy in 0..out_h {
            let y = r.y + (oy as f32 + 0.5) * sy - 0.5;
            for ox in 0..out_w {
                let x = r.x + (ox as f32 + 0.5) * sx - 0.5;
                out.push(self.sample(x, y));
            }
        }
        out
    }

    /// The whole image resampled.
    pub fn resize(&self, out_w: usize, out_h: usize) -> Vec<[f32; 3]> {
        self.resize_rect(Rect { x: 0.0, y: 0.0, w: self.width as f32, h: self.height as f32 }, out_w, out_h)
    }

    /// The image warped by the similarity `m` (source → destination) into an
    /// `out` × `out` square; destination pixels whose source lies outside are black.
    pub fn warp(&self, m: &Similarity, out: usize) -> Vec<[f32; 3]> {
        let inv = m.inverse();
        let (w, h) = (self.width as f32, self.height as f32);
        let mut pixels = Vec::with_capacity(out * out);
        for oy in 0..out {
            for ox in 0..out {
                let (x, y) = inv.apply(ox as f32, oy as f32);
                if x < -1.0 || y < -1.0 || x > w || y > h {
                    pixels.push([0.0; 3]);
                } else {
                    pixels.push(self.sample(x, y));
                }
            }
        }
        pixels
    }
}

/// Grey level of an RGB triple (ITU-R BT.601 weights).
#[inline]
pub fn grey(p: [f32; 3]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

/// Interleaved pixels to planar (NCHW) floats with `f(value)` applied.
pub fn planar(pixels: &[[f32; 3]], f: impl Fn(f32) -> f32) -> Vec<f32> {
    let n = pixels.len();
    let mut out = vec![0.0; n * 3];
    for (i, p) in pixels.iter().enumerate() {
        for c in 0..3 {
            out[c * n + i] = f(p[c]);
        }
    }
    out
}

/// Mean and variance of the Laplacian of a square grey image: a focus measure (a blurred
/// or recaptured face has little high-frequency energy).
pub fn laplacian_variance(grey: &[f32], side: usize) -> f32 {
    if side < 3 {
        return 0.0;
    }
    let mut values = Vec::with_capacity((side - 2) * (side - 2));
    for y in 1..side - 1 {
        for x in 1..side - 1 {
            let c = grey[y * side + x];
            let l =
                grey[(y - 1) * side + x] + grey[(y + 1) * side + x] + grey[y * side + x - 1] + grey[y * side + x + 1]
                    - 4.0 * c;
            values.push(l);
        }
    }
    let n = values.len() as f32;
    let mean = values.iter().sum::<f32>() / n;
    values.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n
}

/// A 2-D similarity transform `[a -b tx; b a ty]` (rotation, uniform scale, shift).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f32,
    pub b: f32,
    pub tx: f32,
    pub ty: f32,
}

impl Similarity {
    #[inline]
    pub fn apply(&self, x: f32, y: f32) -> (f32, f32) {
        (self.a * x - self.b * y + self.tx, self.b * x + self.a * y + self.ty)
    }

    pub fn scale(&self) -> f32 {
        self.a.hypot(self.b)
    }

    pub fn inverse(&self) -> Similarity {
        let d = self.a * self.a + self.b * self.b;
        let (a, b) = (self.a / d, -self.b / d);
        Similarity { a, b, tx: -(a * self.tx - b * self.ty), ty: -(b * self.tx + a * self.ty) }
    }

    /// The least-squares similarity taking `src` onto `dst` (Umeyama's closed form for
    /// two dimensions). `None` when the source points coincide.
    pub fn estimate(src: &[(f32, f32)], dst: &[(f32, f32)]) -> Option<Similarity> {
        let n = src.len().min(dst.len());
        if n < 2 {
            return None;
        }
        let nf = n as f64;
        let mean = |p: &[(f32, f32)]| {
            let (sx, sy) = p[..n].iter().fold((0.0f64, 0.0f64), |a, q| (a.0 + f64::from(q.0), a.1 + f64::from(q.1)));
            (sx / nf, sy / nf)
        };
        let (msx, msy) = mean(src);
        let (mdx, mdy) = mean(dst);
        let (mut sxx, mut sab, mut sba) = (0.0f64, 0.0f64, 0.0f64);
        for i in 0..n {
            let (x, y) = (f64::from(src[i].0) - msx, f64::from(src[i].1) - msy);
            let (u, v) = (f64::from(dst[i].0) - mdx, f64::from(dst[i].1) - mdy);
            sxx += x * x + y * y;
            sab += x * u + y * v;
            sba += x * v - y * u;
        }
        if sxx < 1e-9 {
            return None;
        }
        let (a, b) = (sab / sxx, sba / sxx);
        let tx = mdx - (a * msx - b * msy);
        let ty = mdy - (b * msx + a * msy);
        Some(Similarity { a: a as f32, b: b as f32, tx: tx as f32, ty: ty as f32 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_similarity_is_recovered_from_its_points() {
        let truth = Similarity { a: 0.8, b: 0.3, tx: 12.0, ty: -4.0 };
        let src = [(10.0, 20.0), (50.0, 22.0), (30.0, 40.0), (15.0, 60.0), (45.0, 61.0)];
        let dst: Vec<(f32, f32)> = src.iter().map(|&(x, y)| truth.apply(x, y)).collect();
        let m = Similarity::estimate(&src, &dst).unwrap();
        for (p, q) in src.iter().zip(&dst) {
            let (x, y) = m.apply(p.0, p.1);
            assert!((x - q.0).abs() < 1e-3 && (y - q.1).abs() < 1e-3);
        }
        let back = m.inverse();
        let (x, y) = back.apply(dst[2].0, dst[2].1);
        assert!((x - 30.0).abs() < 1e-3 && (y - 40.0).abs() < 1e-3);
        assert!(Similarity::estimate(&[(1.0, 1.0), (1.0, 1.0)], &[(0.0, 0.0), (1.0, 1.0)]).is_none());
    }

    #[test]
    fn resampling_keeps_constant_images_constant_and_follows_gradients() {
        let data: Vec<u8> = (0..16u32 * 8).flat_map(|i| [(i % 16 * 16) as u8, 100, 7]).collect();
        let img = RgbView::new(16, 8, &data).unwrap();
        let half = img.resize(8, 4);
        assert_eq!(half.len(), 32);
        assert!(half.iter().all(|p| (p[1] - 100.0).abs() < 1e-3 && (p[2] - 7.0).abs() < 1e-3));
        // The red ramp stays monotone left to right.
        assert!(half[..8].windows(2).all(|w| w[1][0] > w[0][0]));
        assert!(RgbView::new(16, 8, &data[..10]).is_none());
    }

    #[test]
    fn rectangles_scale_inside_the_image() {
        let r = Rect { x: 90.0, y: 10.0, w: 20.0, h: 20.0 }.scaled_within(2.7, 120, 100);
        assert!(r.x >= 0.0 && r.y >= 0.0 && r.x + r.w <= 119.0 && r.y + r.h <= 99.0, "{r:?}");
        assert!((r.w - 54.0).abs() < 1e-3);
        let a = Rect::from_corners(0.0, 0.0, 10.0, 10.0);
        assert!((a.iou(&Rect::from_corners(5.0, 0.0, 15.0, 10.0)) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(a.iou(&Rect::from_corners(20.0, 20.0, 30.0, 30.0)), 0.0);
    }

    #[test]
    fn a_sharp_pattern_has_more_laplacian_energy_than_a_flat_one() {
        let checker: Vec<f32> = (0..64).map(|i| if (i % 8 + i / 8) % 2 == 0 { 0.0 } else { 255.0 }).collect();
        let flat = vec![128.0; 64];
        assert!(laplacian_variance(&checker, 8) > 1000.0);
        assert_eq!(laplacian_variance(&flat, 8), 0.0);
    }
}
