//! QR codes at the kiosk: the engagement QR drawn as SVG for the screen, and a phone's answer
//! read from a camera frame (8-bit grey, as the page sends it). The decoder is rxing, chosen by
//! measurement against rqrr on camera-like frames (specs/kiosk-screen.md, "Decoder and payload
//! size").

pub use qrcode::EcLevel;
use qrcode::{Color, QrCode};
use rxing::{BarcodeFormat, DecodeHints};

/// Largest frame accepted: 1280 × 720 grey pixels (the page asks the camera for 640 × 480;
/// the decoder's work grows with the area, and a crafted frame is costly).
pub const MAX_FRAME_PIXELS: usize = 1280 * 720;
/// Smallest side accepted.
pub const MIN_SIDE: u32 = 64;
/// Longest side accepted (a thin, very wide frame makes the decoder allocate per column).
pub const MAX_SIDE: u32 = 1920;

/// Why a frame gave no text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Width × height does not match the bytes, or is out of bounds.
    #[error(
        "frame of {width}×{height} with {len} bytes: expected width × height grey bytes, at most {MAX_FRAME_PIXELS} pixels"
    )]
    Shape {
        /// Claimed width.
        width: u32,
        /// Claimed height.
        height: u32,
        /// Bytes given.
        len: usize,
    },
    /// No QR code found or decodable in the frame.
    #[error("no readable QR code in the frame")]
    NoCode,
    /// More finder-like patterns than any camera frame of one code holds: not decoded (a
    /// frame tiled with finder patterns costs the decoder seconds to minutes).
    #[error(
        "{centres} finder-like patterns in the frame (at most {MAX_FINDER_CENTRES}): not decoded"
    )]
    Crowded {
        /// How many were counted.
        centres: usize,
    },
}

/// Most finder-like centres ([`finder_like_centres`]) a frame may hold to be decoded. Camera-like
/// frames of a phone's answer hold up to about 270 (noise included, `benches/qr_frames.rs`); a
/// crafted frame at this limit costs rxing about 0.25 s per size tried, against 8–210 s for a
/// frame tiled with finder patterns.
pub const MAX_FINDER_CENTRES: usize = 600;

/// Scales a frame is tried at, as `numerator / denominator`, in order. At 640×480 a phone's
/// answer has 3–4 pixels per module, coarse for the binarizer's 8×8 blocks once the camera
/// blurs it; enlarged 1.5× and 2× it reads far more often (98.7 % of camera-like frames for
/// `age-over-18` against 87 % at 1×, `benches/qr_frames.rs`).
pub const SCALES: [(usize, usize); 3] = [(1, 1), (3, 2), (2, 1)];

/// Largest enlarged frame decoded: a 1280×720 frame is tried at 1× and 1.5× only.
const MAX_SCALED_PIXELS: usize = 2_100_000;

/// Read the QR code in a grey frame (`width × height` bytes, row by row): at its own size,
/// then enlarged 1.5× and 2× until one reads.
pub fn decode_grey(grey: &[u8], width: u32, height: u32) -> Result<String, FrameError> {
    let pixels = usize::try_from(u64::from(width) * u64::from(height)).unwrap_or(usize::MAX);
    if width < MIN_SIDE
        || height < MIN_SIDE
        || width > MAX_SIDE
        || height > MAX_SIDE
        || pixels > MAX_FRAME_PIXELS
        || grey.len() != pixels
    {
        return Err(FrameError::Shape {
            width,
            height,
            len: grey.len(),
        });
    }
    let (w, h) = (width as usize, height as usize);
    let centres = finder_like_centres(grey, w, h);
    if centres > MAX_FINDER_CENTRES {
        return Err(FrameError::Crowded { centres });
    }
    for (num, den) in SCALES {
        let text = if num == den {
            decode_once(grey, width, height)
        } else {
            let (sw, sh) = (w * num / den, h * num / den);
            if sw * sh > MAX_SCALED_PIXELS {
                break;
            }
            let scaled = resize(grey, w, h, sw, sh);
            decode_once(&scaled, sw as u32, sh as u32)
        };
        if let Some(text) = text {
            return Ok(text);
        }
    }
    Err(FrameError::NoCode)
}

/// Counts places in the frame that look like the centre of a QR finder pattern: runs of dark,
/// light, dark, light, dark in the ratio 1:1:3:1:1 across a row, confirmed down the column
/// through the middle of the centre run, against a local threshold (the mean of the 33×33
/// window around each pixel; rxing's binarizer thresholds locally too). A real code gives a few
/// dozen; a frame tiled with finder patterns gives thousands, and rxing's search over their
/// combinations then takes seconds to minutes.
pub fn finder_like_centres(grey: &[u8], width: usize, height: usize) -> usize {
    if grey.len() != width * height || width < 7 || height < 7 {
        return 0;
    }
    // Integral image for the local means.
    let stride = width + 1;
    let mut integral = vec![0u64; stride * (height + 1)];
    for y in 0..height {
        let mut row = 0u64;
        for x in 0..width {
            row += u64::from(grey.get(y * width + x).copied().unwrap_or(0));
            let above = integral.get(y * stride + x + 1).copied().unwrap_or(0);
            if let Some(v) = integral.get_mut((y + 1) * stride + x + 1) {
                *v = above + row;
            }
        }
    }
    let at = |x: usize, y: usize| integral.get(y * stride + x).copied().unwrap_or(0);
    const R: usize = 16;
    let dark = |x: usize, y: usize| {
        let (x0, x1) = (x.saturating_sub(R), (x + R + 1).min(width));
        let (y0, y1) = (y.saturating_sub(R), (y + R + 1).min(height));
        let area = ((y1 - y0) * (x1 - x0)) as u64;
        let sum = at(x1, y1) + at(x0, y0) - at(x0, y1) - at(x1, y0);
        u64::from(grey.get(y * width + x).copied().unwrap_or(0)) * area < sum
    };
    // Whether five run lengths are in the ratio 1:1:3:1:1, each within half a unit.
    let finder = |r: [usize; 5]| {
        let total: usize = r.iter().sum();
        total >= 7
            && r.iter()
                .zip([1, 1, 3, 1, 1])
                .all(|(&n, units)| (n * 7).abs_diff(units * total) * 2 <= total * units)
    };
    // Down the column `x` from `y` (dark): the centre run and two runs each way, given up once
    // longer than `limit` (twice the row's pattern: no match then), so a frame of long
    // vertical runs costs no more than the rows it has.
    let column = |x: usize, y: usize, limit: usize| -> Option<[usize; 5]> {
        let mut walked = 0usize;
        let mut up = [0usize; 3];
        let mut yy = y;
        for (run, want) in up.iter_mut().zip([true, false, true]) {
            while dark(x, yy) == want {
                *run += 1;
                walked += 1;
                if walked > limit {
                    return None;
                }
                if yy == 0 {
                    break;
                }
                yy -= 1;
            }
            if *run == 0 {
                return None;
            }
        }
        let mut down = [0usize; 3];
        let mut yy = y + 1;
        for (i, (run, want)) in down.iter_mut().zip([true, false, true]).enumerate() {
            while yy < height && dark(x, yy) == want {
                *run += 1;
                yy += 1;
                walked += 1;
                if walked > limit {
                    return None;
                }
            }
            if i > 0 && *run == 0 {
                return None;
            }
        }
        let ([u0, u1, u2], [d0, d1, d2]) = (up, down);
        Some([u2, u1, u0 + d0, d1, d2])
    };
    let mut hits = 0;
    let mut runs: Vec<(bool, usize, usize)> = Vec::with_capacity(width);
    for y in 0..height {
        runs.clear();
        for x in 0..width {
            let d = dark(x, y);
            match runs.last_mut() {
                Some((c, n, _)) if *c == d => *n += 1,
                _ => runs.push((d, 1, x)),
            }
        }
        for w in runs.windows(5) {
            let &[a, b, c, d, e] = w else { continue };
            if !a.0 || !finder([a.1, b.1, c.1, d.1, e.1]) {
                continue;
            }
            let centre = c.2 + c.1 / 2;
            let horizontal = a.1 + b.1 + c.1 + d.1 + e.1;
            if let Some(v) = column(centre, y, horizontal * 2) {
                let vertical: usize = v.iter().sum();
                if finder(v) && vertical * 2 >= horizontal && horizontal * 2 >= vertical {
                    hits += 1;
                }
            }
        }
    }
    hits
}

/// One decode attempt with rxing.
fn decode_once(grey: &[u8], width: u32, height: u32) -> Option<String> {
    // The frame comes from outside: a decoder bug must cost one frame, not the kiosk.
    std::panic::catch_unwind(|| {
        let mut hints = DecodeHints {
            TryHarder: Some(true),
            ..DecodeHints::default()
        };
        rxing::helpers::detect_in_luma_slice_with_hints(
            grey,
            width,
            height,
            Some(BarcodeFormat::QR_CODE),
            &mut hints,
        )
        .map(|r| r.getText().to_owned())
    })
    .ok()?
    .ok()
}

/// Bilinear resize of a grey `w × h` image to `sw × sh`, in 8-bit fixed point; empty when the
/// source is smaller than 2×2 or `grey` is not `w × h` bytes.
pub fn resize(grey: &[u8], w: usize, h: usize, sw: usize, sh: usize) -> Vec<u8> {
    if w < 2 || h < 2 || grey.len() != w * h {
        return Vec::new();
    }
    let px = |x: usize, y: usize| u32::from(grey.get(y * w + x).copied().unwrap_or(0));
    let mut out = Vec::with_capacity(sw * sh);
    for y in 0..sh {
        // Source position in 1/256 pixel; the last row and column pair with their neighbour.
        let sy = y * h * 256 / sh;
        let (y0, fy) = ((sy >> 8).min(h - 2), (sy & 255) as u32);
        for x in 0..sw {
            let sx = x * w * 256 / sw;
            let (x0, fx) = ((sx >> 8).min(w - 2), (sx & 255) as u32);
            let top = px(x0, y0) * (256 - fx) + px(x0 + 1, y0) * fx;
            let bottom = px(x0, y0 + 1) * (256 - fx) + px(x0 + 1, y0 + 1) * fx;
            // At most 255 · 256 · 256 before the shift: fits, and the result fits a byte.
            out.push(((top * (256 - fy) + bottom * fy) >> 16) as u8);
        }
    }
    out
}

/// The QR code of `text` at error correction M: `(side, dark modules row by row)`, without
/// the quiet zone.
pub fn modules(text: &str) -> Option<(usize, Vec<bool>)> {
    modules_at(text, EcLevel::M)
}

/// The QR code of `text` at error correction `ec` (a phone's answer is drawn at L: it is shown
/// on a bright, flat screen, and fewer modules read better from a camera frame).
pub fn modules_at(text: &str, ec: EcLevel) -> Option<(usize, Vec<bool>)> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), ec).ok()?;
    let side = code.width();
    let dark = code
        .to_colors()
        .into_iter()
        .map(|c| c == Color::Dark)
        .collect();
    Some((side, dark))
}

/// `text` as an SVG QR code (4-module quiet zone), scaled by the page.
pub fn svg(text: &str) -> Option<String> {
    let (side, dark) = modules(text)?;
    let full = side + 8;
    let mut path = String::with_capacity(dark.len() * 4);
    for (i, _) in dark.iter().enumerate().filter(|(_, d)| **d) {
        let (x, y) = (i % side + 4, i / side + 4);
        path.push_str(&format!("M{x} {y}h1v1h-1z"));
    }
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {full} {full}\" shape-rendering=\"crispEdges\" role=\"img\"><rect width=\"{full}\" height=\"{full}\" fill=\"#fff\"/><path d=\"{path}\" fill=\"#000\"/></svg>"
    ))
}

/// Render `text` as a grey image with `px` pixels per module and a 4-module quiet zone:
/// `(side, grey bytes)`. For tests and benchmarks that build camera frames.
pub fn render_grey(text: &str, px: usize) -> Option<(usize, Vec<u8>)> {
    render_grey_at(text, px, EcLevel::M)
}

/// [`render_grey`] at error correction `ec`.
pub fn render_grey_at(text: &str, px: usize, ec: EcLevel) -> Option<(usize, Vec<u8>)> {
    let (side, dark) = modules_at(text, ec)?;
    let full = (side + 8) * px;
    let mut img = vec![255u8; full * full];
    for (i, d) in dark.iter().enumerate() {
        if !*d {
            continue;
        }
        let (mx, my) = (i % side + 4, i / side + 4);
        for y in my * px..(my + 1) * px {
            let row = y * full;
            img.get_mut(row + mx * px..row + (mx + 1) * px)?.fill(0);
        }
    }
    Some((full, img))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn a_rendered_code_reads_back_and_bad_frames_are_refused() {
        let text = "CVP1:ABC%/ +-.1234567890";
        let (side, img) = render_grey(text, 4).unwrap();
        // On a 640×480 grey background.
        let (w, h) = (640u32, 480u32);
        let mut frame = vec![180u8; (w * h) as usize];
        for y in 0..side {
            let at = (y + 40) * w as usize + 100;
            frame[at..at + side].copy_from_slice(&img[y * side..(y + 1) * side]);
        }
        assert_eq!(decode_grey(&frame, w, h).unwrap(), text);
        // Blank, wrong shape, oversized.
        assert_eq!(
            decode_grey(&vec![128u8; (w * h) as usize], w, h),
            Err(FrameError::NoCode)
        );
        assert!(matches!(
            decode_grey(&frame[1..], w, h),
            Err(FrameError::Shape { .. })
        ));
        assert!(matches!(
            decode_grey(&[], 100_000, 100_000),
            Err(FrameError::Shape { .. })
        ));
        assert!(matches!(
            decode_grey(&[0], 1, 1),
            Err(FrameError::Shape { .. })
        ));
        assert!(svg(text).unwrap().starts_with("<svg"));
    }

    /// A frame tiled with finder patterns (7×7 rings with a 3×3 centre, 2 modules apart).
    fn tiled(w: usize, h: usize, px: usize) -> Vec<u8> {
        let cell = 9 * px;
        (0..w * h)
            .map(|i| {
                let (cx, cy) = (((i % w) % cell) / px, ((i / w) % cell) / px);
                let ring = cx < 7 && cy < 7 && (cx == 0 || cx == 6 || cy == 0 || cy == 6);
                let centre = (2..=4).contains(&cx) && (2..=4).contains(&cy);
                if ring || centre { 0 } else { 255 }
            })
            .collect()
    }

    #[test]
    fn a_frame_tiled_with_finder_patterns_is_refused_before_decoding() {
        // Decoded, these frames took rxing 8 s (2 px) and 30 s (1 px).
        for px in [1, 2, 3, 4] {
            let f = tiled(640, 480, px);
            match decode_grey(&f, 640, 480) {
                Err(FrameError::Crowded { centres }) => assert!(centres > MAX_FINDER_CENTRES),
                other => panic!("{px} px: {other:?}"),
            }
        }
        // A real code counts a few dozen, and reads.
        let text = "CVP1:ABC%/ +-.1234567890";
        let (side, img) = render_grey(text, 4).unwrap();
        let mut frame = vec![180u8; 640 * 480];
        for y in 0..side {
            let at = (y + 40) * 640 + 100;
            frame[at..at + side].copy_from_slice(&img[y * side..(y + 1) * side]);
        }
        let centres = finder_like_centres(&frame, 640, 480);
        assert!((3..100).contains(&centres), "{centres}");
        assert_eq!(decode_grey(&frame, 640, 480).unwrap(), text);
    }

    #[test]
    fn resizing_keeps_flat_areas_and_stays_in_bounds() {
        let flat = vec![77u8; 64 * 48];
        let big = resize(&flat, 64, 48, 96, 72);
        assert_eq!(big.len(), 96 * 72);
        assert!(big.iter().all(|&v| v == 77));
        // A left-dark, right-light image keeps its two sides.
        let halves: Vec<u8> = (0..64 * 48)
            .map(|i| if i % 64 < 32 { 0 } else { 255 })
            .collect();
        let big = resize(&halves, 64, 48, 128, 96);
        assert_eq!((big[0], big[127]), (0, 255));
        assert_eq!(resize(&halves[..4], 2, 2, 4, 4).len(), 16);
        assert!(resize(&[1], 1, 1, 4, 4).is_empty());
        assert!(
            resize(&halves, 2, 2, 4, 4).is_empty(),
            "length does not match 2×2"
        );
    }

    #[test]
    fn a_code_too_fine_to_read_at_frame_size_reads_enlarged() {
        // A phone's answer at 2.25 pixels per module, softened by the camera: too fine for the
        // binarizer at 1×, read once the frame is enlarged.
        let text = format!("CVP1:{}", "ABCDEFGHIJ0123456789".repeat(40));
        let (side, img) = render_grey(&text, 4).unwrap();
        let small = side * 9 / 16;
        let code = resize(&img, side, side, small, small);
        let (w, h) = (640usize, 480usize);
        let mut frame = vec![200u8; w * h];
        for y in 0..small {
            let at = (y + 10) * w + 100;
            frame[at..at + small].copy_from_slice(&code[y * small..(y + 1) * small]);
        }
        let soft: Vec<u8> = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                if x == 0 || y == 0 || x == w - 1 || y == h - 1 {
                    return frame[i];
                }
                let sum: u32 = [
                    i - w - 1,
                    i - w,
                    i - w + 1,
                    i - 1,
                    i,
                    i + 1,
                    i + w - 1,
                    i + w,
                    i + w + 1,
                ]
                .iter()
                .map(|&j| u32::from(frame[j]))
                .sum();
                (sum / 9) as u8
            })
            .collect();
        assert_eq!(
            decode_once(&soft, w as u32, h as u32),
            None,
            "read at 1×: this frame does not test enlarging"
        );
        assert_eq!(decode_grey(&soft, w as u32, h as u32).unwrap(), text);
    }
}
