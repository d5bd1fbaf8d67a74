//! QR decoding at the kiosk on camera-like frames: the decode rate and time per frame of rxing
//! (the kiosk's decoder, `frames::decode_grey`: at frame size, then enlarged 1.5× and 2×) and
//! rqrr (given the same enlargements), side by side on the same frames, for the real answers of
//! each policy (a phone wallet's sealed DeviceResponse, base45 text); the time from a frame to
//! the verdict (decode, open the sealed answer, verify and judge); and the cost of a frame that
//! holds no code (what the kiosk spends while idle).
//!
//! `cargo bench -p civis-verifier --bench qr_frames` (`CIVIS_BENCH_FRAMES`, default 100 per
//! payload). Frames are 640×480 grey, the code 3–4 px per module before scaling, turned ±6°,
//! scaled 0.8–1.1, blurred, noised and with reduced contrast, on a mid-grey desk — what a kiosk
//! camera sees of a phone held up to it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    missing_docs
)]

use std::time::Instant;

use civis_core::Timestamp;
use civis_core::crypto::SoftwareKey;
use civis_core::mdoc::citizen::{self, CitizenRecord};
use civis_core::mdoc::{self, IssueParams, IssuerKeyId, StatusRef, TDate, ValidityInfo};
use civis_core::qr::{KioskEngagement, QrPresentation};
use civis_core::status::{Bits, StatusList};
use civis_core::verify::{TrustSnapshot, Verdict};
use civis_verifier::frames;
use civis_verifier::policy::KioskPolicy;
use civis_verifier::station::{self, Trust};
use civis_wallet_core::holder::{Consent, Release, Requested, StoredCredential, Wallet};
use rand_core::OsRng;

struct Yes;
impl Consent for Yes {
    fn decide(&mut self, _item: Requested<'_>, _purpose: Option<&str>) -> Release {
        Release::Release
    }
}

/// xorshift64*: reproducible frames.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * self.unit()
    }
    fn gauss(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

const W: usize = 640;
const H: usize = 480;

/// A camera-like 640×480 frame of `code` (`side`×`side` grey).
fn frame(code: &[u8], side: usize, rng: &mut Rng) -> Vec<u8> {
    let angle = rng.range(-6.0, 6.0).to_radians();
    // Fit the code to 70–95 % of the frame height, then jitter.
    let fit = (H as f64 * rng.range(0.70, 0.95)) / side as f64;
    let (sin, cos) = angle.sin_cos();
    let (cx, cy) = (
        W as f64 / 2.0 + rng.range(-30.0, 30.0),
        H as f64 / 2.0 + rng.range(-20.0, 20.0),
    );
    let (lo, hi) = (rng.range(30.0, 70.0), rng.range(170.0, 230.0));
    let desk = rng.range(90.0, 150.0);
    let mut out = vec![0f64; W * H];
    let half = side as f64 / 2.0;
    for y in 0..H {
        for x in 0..W {
            // Inverse map into the code, bilinear.
            let (dx, dy) = ((x as f64 - cx) / fit, (y as f64 - cy) / fit);
            let (u, v) = (cos * dx + sin * dy + half, -sin * dx + cos * dy + half);
            let value = if u < 0.0 || v < 0.0 || u >= side as f64 - 1.0 || v >= side as f64 - 1.0 {
                desk
            } else {
                let (x0, y0) = (u.floor() as usize, v.floor() as usize);
                let (fx, fy) = (u - x0 as f64, v - y0 as f64);
                let p = |xx: usize, yy: usize| f64::from(code[yy * side + xx]) / 255.0;
                let t = p(x0, y0) * (1.0 - fx) * (1.0 - fy)
                    + p(x0 + 1, y0) * fx * (1.0 - fy)
                    + p(x0, y0 + 1) * (1.0 - fx) * fy
                    + p(x0 + 1, y0 + 1) * fx * fy;
                lo + (hi - lo) * t
            };
            out[y * W + x] = value;
        }
    }
    // A 3×3 box blur (focus), once or twice.
    for _ in 0..(1 + rng.next() % 2) {
        let src = out.clone();
        for y in 1..H - 1 {
            for x in 1..W - 1 {
                let mut s = 0.0;
                for (ox, oy) in [
                    (0, 0),
                    (1, 0),
                    (0, 1),
                    (1, 1),
                    (2, 0),
                    (0, 2),
                    (2, 1),
                    (1, 2),
                    (2, 2),
                ] {
                    s += src[(y + oy - 1) * W + (x + ox - 1)];
                }
                out[y * W + x] = s / 9.0;
            }
        }
    }
    let sigma = rng.range(4.0, 14.0);
    out.iter()
        .map(|v| (v + sigma * rng.gauss()).clamp(0.0, 255.0) as u8)
        .collect()
}

/// A phone's answer to one kiosk, and what that kiosk knows to judge it.
struct Answer {
    text: String,
    policy: KioskPolicy,
    engagement: KioskEngagement,
    key: SoftwareKey,
    trust: Trust,
}

const NOW: i64 = 1_796_000_000;

impl Answer {
    /// What the kiosk does with a frame: decode, open, verify, judge.
    fn verdict(&self, frame: &[u8]) -> Option<Verdict> {
        let text = frames::decode_grey(frame, W as u32, H as u32).ok()?;
        let response = QrPresentation::from_text(&text)
            .ok()?
            .open(&self.engagement, &self.key)
            .ok()?;
        let transcript = self.engagement.transcript();
        Some(
            station::judge(
                &self.policy,
                Some(&self.trust),
                &response,
                &transcript,
                None,
                NOW + 60,
            )
            .0,
        )
    }
}

fn answer(policy: &str, minimal: bool) -> Answer {
    let issuer = SoftwareKey::generate(&mut OsRng);
    let device = SoftwareKey::generate(&mut OsRng);
    let kid = civis_core::did::Did::from_inception(
        issuer.public_key(),
        &civis_core::did::KeyCommitment::to(issuer.public_key()),
    );
    let record = CitizenRecord::example();
    let status_uri = civis_core::chain::state::status_uri(&kid, "cards");
    let ns = if minimal {
        record.to_minimal_name_spaces("2026-12-05").unwrap()
    } else {
        record.to_name_spaces("2026-12-05").unwrap()
    };
    let now = Timestamp(NOW);
    let signed = mdoc::issue(
        &IssueParams {
            doc_type: citizen::DOC_TYPE,
            name_spaces: &ns,
            device_key: device.public_key(),
            validity: ValidityInfo {
                signed: TDate::new(now),
                valid_from: TDate::new(now),
                valid_until: TDate::new(now.plus_secs(365 * 86_400)),
                expected_update: None,
            },
            status: Some(StatusRef {
                idx: 4711,
                uri: status_uri.clone(),
            }),
            key_authorizations: None,
        },
        &issuer,
        &IssuerKeyId::Kid(kid.key_url(1).to_string()),
        &mut OsRng,
    )
    .unwrap();
    let wallet = Wallet {
        credentials: vec![
            StoredCredential::from_bytes(&mdoc::issue::encode_issuer_signed(&signed)).unwrap(),
        ],
        never_retain: Vec::new(),
    };
    let p = KioskPolicy::parse(policy).unwrap();
    let (e, key) = KioskEngagement::new(p.items_request(), &mut OsRng);
    let text = wallet
        .present_qr(&e, &device, &mut Yes, &mut OsRng)
        .unwrap()
        .to_text();
    let trust = TrustSnapshot {
        anchors: vec![mdoc::TrustAnchor::DidKey {
            kid: kid.key_url(1),
            key: issuer.public_key().clone(),
        }],
        accreditations: None,
        status_lists: [(
            status_uri,
            StatusList::new(Bits::new(2).unwrap(), 8192).unwrap(),
        )]
        .into_iter()
        .collect(),
        as_of: Some(now),
        retired_keys: Default::default(),
    };
    Answer {
        text,
        policy: p,
        engagement: e,
        key,
        trust: Trust {
            trust,
            height: 1,
            state_time: NOW,
        },
    }
}

/// rqrr at frame size, then on the frame enlarged 1.5× and 2× (the kiosk's own resize), as the
/// kiosk gives rxing.
fn rqrr_decode(grey: &[u8]) -> Option<String> {
    frames::SCALES.into_iter().find_map(|(num, den)| {
        let (w, h) = (W * num / den, H * num / den);
        let img = if num == den {
            grey.to_vec()
        } else {
            frames::resize(grey, W, H, w, h)
        };
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| img[y * w + x]);
        img.detect_grids()
            .into_iter()
            .find_map(|g| g.decode().ok().map(|(_, text)| text))
    })
}

fn main() {
    let n: usize = std::env::var("CIVIS_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    println!("QR decode on {n} camera-like 640x480 frames per payload (same frames for both)");
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    use frames::EcLevel::{L, M};
    for (policy, minimal, ec) in [
        ("age-over-18", true, L),
        ("age-over-18", true, M),
        ("resident-of:Harbour", true, L),
        ("age-over-18", false, L),
        ("service:desk=family_name,given_name", false, L),
    ] {
        let a = answer(policy, minimal);
        let text = a.text.as_str();
        let (modules, _) = frames::modules_at(text, ec).unwrap();
        let (side, code) = frames::render_grey_at(text, 4, ec).unwrap();
        let mut rng = Rng(0x5eed_0000 + text.len() as u64);
        let (mut ok_rx, mut ok_rq, mut t_rx, mut t_rq) = (0, 0, Vec::new(), Vec::new());
        let mut to_verdict = Vec::new();
        let mut finders = 0;
        for _ in 0..n {
            let f = frame(&code, side, &mut rng);
            finders = finders.max(frames::finder_like_centres(&f, W, H));
            let t = Instant::now();
            if frames::decode_grey(&f, W as u32, H as u32).ok().as_deref() == Some(text) {
                ok_rx += 1;
            }
            t_rx.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            if let Some(v) = a.verdict(&f) {
                assert!(matches!(v, Verdict::Accept(_)), "{policy}: {v:?}");
                to_verdict.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let t = Instant::now();
            if rqrr_decode(&f).as_deref() == Some(text) {
                ok_rq += 1;
            }
            t_rq.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "RESULT {policy} ({} mdoc, EC {ec:?}): {} chars, {modules}x{modules} modules: rxing {ok_rx}/{n} ({:.1} %) median {:.1} ms, frame to verdict median {:.1} ms; rqrr {ok_rq}/{n} ({:.1} %) median {:.1} ms; finder-like centres at most {finders}",
            if minimal { "minimal" } else { "full" },
            text.len(),
            100.0 * ok_rx as f64 / n as f64,
            med(t_rx),
            if to_verdict.is_empty() {
                f64::NAN
            } else {
                med(to_verdict)
            },
            100.0 * ok_rq as f64 / n as f64,
            med(t_rq),
        );
    }
    // While nobody shows a code, every frame is tried at all three sizes.
    let mut rng = Rng(0x1d1e);
    let blank = vec![255u8; 16];
    let mut t_idle = Vec::new();
    for _ in 0..20 {
        let f = frame(&blank, 4, &mut rng);
        let t = Instant::now();
        assert!(frames::decode_grey(&f, W as u32, H as u32).is_err());
        t_idle.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "RESULT a frame without a code (idle): rxing median {:.1} ms",
        med(t_idle)
    );
}
