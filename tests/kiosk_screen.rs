//! The kiosk screen in a real browser (issue #12): `civis kiosk run` serving its page, headless
//! Chromium driven over WebDriver (chromedriver), a registry validator the kiosk syncs from in
//! the background, phone answers through the scanner route and through Chromium's fake camera
//! (a Y4M file rendered from the wallet's real answer), and the virtual card tapped through
//! pcscd. Every verdict is checked in the page's DOM; screenshots of the three verdict screens
//! in each language are saved under `$CARGO_TARGET_DIR/kiosk-screens/`. Needs chromium,
//! chromium-driver and pcscd with vpcd (`scripts/test.sh` installs and starts them).
#![cfg(feature = "nfc")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod registry_util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use civis_core::Timestamp;
use civis_core::chain::state::{Genesis, status_uri};
use civis_core::crypto::{EcPublicKey, SoftwareKey};
use civis_core::did::Did;
use civis_core::mdoc::citizen::{self, CitizenRecord};
use civis_core::mdoc::{self, IssueParams, IssuerKeyId, StatusRef, TDate, ValidityInfo};
use civis_core::qr::KioskEngagement;
use civis_firmware_bridge::nfc::{self, NfcTransport};
use civis_firmware_bridge::reader::{CardClient, Personalizer};
use civis_registry_client::keyfile::read_key;
use civis_wallet_core::holder::{Consent, Release, Requested, StoredCredential, Wallet, codes};
use fantoccini::{Client, ClientBuilder, Locator};
use rand_core::OsRng;
use registry_util::{Cluster, civis};
use serde_json::{Value, json};

const READER: &str = "Virtual PCD 00 00";
const LIST: &str = "main";
const PORT: u16 = 18951;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn today(offset_years: i32) -> String {
    let d = time::OffsetDateTime::now_utc().date();
    let d = d.replace_year(d.year() + offset_years).unwrap_or(d);
    d.format(time::macros::format_description!("[year]-[month]-[day]"))
        .unwrap()
}

/// An issuer on the test chain: its key file, DID and signing key.
struct Issuer {
    did: Did,
    kid: String,
    key: SoftwareKey,
}

impl Issuer {
    fn create(reg: &Cluster, name: &str) -> Self {
        let file = reg.dir.join(format!("{name}.jwk"));
        let out = civis(&["registry", "keygen", "--out", file.to_str().unwrap()]);
        let did = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        reg.tx(&file, &["create-did"]).unwrap();
        let (key, _) = read_key(&file).unwrap();
        let did = Did::parse(&did).unwrap();
        Self {
            kid: did.key_url(1).to_string(),
            did,
            key,
        }
    }

    /// A citizen credential for `device` (full, or the minimal phone one), with status entry
    /// `idx` and the validity window `[from, until]`.
    fn mint(
        &self,
        device: &EcPublicKey,
        record: &CitizenRecord,
        minimal: bool,
        idx: u64,
        from: i64,
        until: i64,
    ) -> Vec<u8> {
        let day = today(0);
        let ns = if minimal {
            record.to_minimal_name_spaces(&day).unwrap()
        } else {
            record.to_name_spaces(&day).unwrap()
        };
        let signed = mdoc::issue(
            &IssueParams {
                doc_type: citizen::DOC_TYPE,
                name_spaces: &ns,
                device_key: device,
                validity: ValidityInfo {
                    signed: TDate::new(Timestamp(from)),
                    valid_from: TDate::new(Timestamp(from)),
                    valid_until: TDate::new(Timestamp(until)),
                    expected_update: None,
                },
                status: Some(StatusRef {
                    idx,
                    uri: status_uri(&self.did, LIST),
                }),
                key_authorizations: None,
            },
            &self.key,
            &IssuerKeyId::Kid(self.kid.clone()),
            &mut OsRng,
        )
        .unwrap();
        mdoc::issue::encode_issuer_signed(&signed)
    }
}

/// The chain the kiosks trust: an accredited issuer with a status list (entry 1 revoked,
/// entry 2 suspended), an issuer accredited for another docType only, and the kiosk's DID
/// accredited to read two elements.
struct World {
    reg: Cluster,
    issuer: Issuer,
    other: Issuer,
    rotated: Issuer,
    dir: PathBuf,
    genesis: Genesis,
}

impl World {
    fn build() -> Self {
        let mut reg = Cluster::init("kiosk-screen", 1, 18940);
        reg.start(0, None);
        let dir = reg.dir.join("kiosk");
        std::fs::create_dir_all(&dir).unwrap();
        let gov = reg.dir.join("governance.jwk");
        let valid_until = now() + 365 * 86_400;
        let until = valid_until.to_string();
        let issuer = Issuer::create(&reg, "issuer");
        reg.tx(
            &gov,
            &[
                "accredit-issuer",
                "--issuer",
                issuer.did.as_str(),
                "--doc-type",
                citizen::DOC_TYPE,
                "--until",
                &until,
            ],
        )
        .unwrap();
        let file = reg.dir.join("issuer.jwk");
        reg.tx(
            &file,
            &[
                "create-status-list",
                "--list",
                LIST,
                "--bits",
                "2",
                "--size",
                "64",
            ],
        )
        .unwrap();
        reg.tx(
            &file,
            &[
                "status-update",
                "--list",
                LIST,
                "--set",
                "1=1",
                "--set",
                "2=2",
            ],
        )
        .unwrap();
        let other = Issuer::create(&reg, "other");
        reg.tx(
            &gov,
            &[
                "accredit-issuer",
                "--issuer",
                other.did.as_str(),
                "--doc-type",
                "org.example.library.1",
                "--until",
                &until,
            ],
        )
        .unwrap();
        // An issuer that rotated its key: key-1 is retired on chain from then on.
        let rotated = Issuer::create(&reg, "rotated");
        reg.tx(
            &gov,
            &[
                "accredit-issuer",
                "--issuer",
                rotated.did.as_str(),
                "--doc-type",
                citizen::DOC_TYPE,
                "--until",
                &until,
            ],
        )
        .unwrap();
        reg.tx(&reg.dir.join("rotated.jwk"), &["rotate"]).unwrap();
        // The kiosk: its DID, accredited for the age and district elements.
        let key_file = dir.join("kiosk.jwk");
        let out = civis(&["registry", "keygen", "--out", key_file.to_str().unwrap()]);
        let kiosk_did = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        reg.tx(&key_file, &["create-did"]).unwrap();
        let element = |e: &str| format!("{0}/{0}/{e}", citizen::DOC_TYPE);
        reg.accredit_kiosk(
            &gov,
            &kiosk_did,
            &[element("age_over_18"), element("resident_district")],
            "age check",
            (now() - 60, valid_until),
            &dir.join("kiosk.accreditation"),
        )
        .unwrap();
        let genesis =
            Genesis::from_json(&std::fs::read_to_string(reg.dir.join("genesis.json")).unwrap())
                .unwrap();
        Self {
            reg,
            issuer,
            other,
            rotated,
            dir,
            genesis,
        }
    }
}

/// A `civis kiosk run` process, killed on drop.
struct Kiosk {
    child: Option<Child>,
    url: String,
    log: PathBuf,
    db: PathBuf,
}

impl Kiosk {
    fn start(w: &World, name: &str, policy: &str, extra: &str) -> Self {
        let config = w.dir.join(format!("{name}.toml"));
        let genesis = w.reg.dir.join("genesis.json");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{PORT}\"\ndb = \"{name}.db\"\ngenesis = \"{}\"\npolicy = \"{policy}\"\n{extra}\n",
                genesis.display()
            ),
        )
        .unwrap();
        let log = w.dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_civis"))
            .args(["kiosk", "run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        let k = Self {
            child: Some(child),
            url: format!("http://127.0.0.1:{PORT}"),
            log,
            db: w.dir.join(format!("{name}.db")),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(&format!("{}/health", k.url)).is_none() {
            assert!(
                Instant::now() < deadline,
                "kiosk never up: {}",
                k.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        k
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn screen(&self) -> Value {
        http_get(&format!("{}/api/screen?lang=en", self.url)).unwrap()
    }

    fn engagement(&self) -> KioskEngagement {
        KioskEngagement::from_text(self.screen()["engagementText"].as_str().unwrap()).unwrap()
    }

    fn wait_height(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let h = http_get(&format!("{}/health", self.url)).unwrap()["height"].as_u64();
            if let Some(h) = h {
                return h;
            }
            assert!(Instant::now() < deadline, "no sync: {}", self.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// POST a scanner's text; the kiosk's JSON answer and status.
    fn scan(&self, text: &str) -> (u16, Value) {
        http_post(
            &format!("{}/api/scan", self.url),
            "text/plain",
            text.as_bytes(),
        )
    }

    fn done(&self) {
        http_post(&format!("{}/api/done", self.url), "text/plain", b"");
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Kiosk {
    fn drop(&mut self) {
        self.stop();
    }
}

fn http_get(url: &str) -> Option<Value> {
    registry_util::runtime().block_on(async {
        let r = reqwest::get(url).await.ok()?;
        r.json().await.ok()
    })
}

fn http_post(url: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let body = body.to_vec();
    registry_util::runtime().block_on(async move {
        let r = reqwest::Client::new()
            .post(url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    })
}

/// A registry that answers every request with 200 and bytes that are no sync bundle (with a
/// forged log line in them).
fn junk_registry() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(10_000) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = b"\x1b[2J not a bundle\nINFO forged line";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/cbor\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
        }
    });
    url
}

/// Releases everything, or withholds one element.
struct Consenting(Option<&'static str>);

impl Consent for Consenting {
    fn decide(&mut self, item: Requested<'_>, _purpose: Option<&str>) -> Release {
        if Some(item.element) == self.0 {
            Release::Withhold(codes::DATA_NOT_RETURNED)
        } else {
            Release::Release
        }
    }
}

/// A phone holding one credential for `device`.
fn answer(
    engagement: &KioskEngagement,
    credential: &[u8],
    device: &SoftwareKey,
    withhold: Option<&'static str>,
) -> String {
    let wallet = Wallet {
        credentials: vec![StoredCredential::from_bytes(credential).unwrap()],
        never_retain: Vec::new(),
    };
    wallet
        .present_qr(engagement, device, &mut Consenting(withhold), &mut OsRng)
        .unwrap()
        .to_text()
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group, so that dropping the driver ends the browsers it started too
        // (killing chromedriver alone left each run's Chromium behind, adopted by init).
        let child = std::os::unix::process::CommandExt::process_group(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            0,
        )
        .spawn()
        .expect("chromedriver (Debian chromium-driver; scripts/test.sh installs it)");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !http_get(&format!("{url}/status")).is_some_and(|s| s["value"]["ready"] == true) {
            assert!(Instant::now() < deadline, "chromedriver never ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and every Chromium it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, camera: Option<&Path>) -> Client {
    let mut args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--window-size=1024,743".to_owned(),
    ];
    if let Some(file) = camera {
        args.push("--use-fake-device-for-media-stream".into());
        args.push("--use-fake-ui-for-media-stream".into());
        args.push(format!(
            "--use-file-for-fake-video-capture={}",
            file.display()
        ));
    }
    let caps = json!({"goog:chromeOptions": {"args": args}});
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap()
}

async fn wait_css(c: &Client, css: &str) -> fantoccini::elements::Element {
    match c
        .wait()
        .at_most(Duration::from_secs(20))
        .every(Duration::from_millis(5))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => e,
        Err(e) => {
            let page = c.source().await.unwrap_or_default();
            panic!("{css}: {e}\n{page}")
        }
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Click the element `css` finds.
async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

fn shots_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = base.join("kiosk-screens");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Screenshots of the verdict on screen in each language; checks the page's language follows.
async fn screenshots(c: &Client, state: &str) {
    for lang in ["en", "de", "ko"] {
        click(c, &format!("button[data-lang='{lang}']")).await;
        wait_css(
            c,
            &format!("html[lang='{lang}'] body[data-state='{state}']"),
        )
        .await;
        let png = c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        std::fs::write(shots_dir().join(format!("{state}-{lang}.png")), png).unwrap();
    }
    click(c, "button[data-lang='en']").await;
    wait_css(c, "html[lang='en']").await;
}

/// A Y4M (4:2:0, `C420`) file of one 640×480 frame showing `text` as a QR code on a grey desk.
fn y4m_of(text: &str, path: &Path) {
    let (w, h) = (640usize, 480usize);
    // Drawn as a phone draws its answer: error correction L (specs/qr-presentation.md).
    let ec = civis_verifier::frames::EcLevel::L;
    let px = (440
        / civis_verifier::frames::modules_at(text, ec)
            .unwrap()
            .0
            .saturating_add(8))
    .max(2);
    let (side, code) = civis_verifier::frames::render_grey_at(text, px, ec).unwrap();
    assert!(side <= h, "the code does not fit the frame");
    let mut y = vec![170u8; w * h];
    let (x0, y0) = ((w - side) / 2, (h - side) / 2);
    for r in 0..side {
        y[(y0 + r) * w + x0..(y0 + r) * w + x0 + side]
            .copy_from_slice(&code[r * side..(r + 1) * side]);
    }
    let mut file = format!("YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420\nFRAME\n").into_bytes();
    file.extend(&y);
    file.extend(std::iter::repeat_n(128u8, w * h / 2));
    std::fs::write(path, file).unwrap();
}

/// The tests of this file share one vpcd reader: one at a time.
static READER_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn the_kiosk_screen_shows_every_verdict_from_phones_a_camera_and_a_card_tap() {
    let _reader = READER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::build();
    let registry = w.reg.url(0);
    let reader = format!(
        "[reader]\nname = \"{READER}\"\nkey = \"kiosk.jwk\"\naccreditation = \"kiosk.accreditation\"\n"
    );
    let device = SoftwareKey::generate(&mut OsRng);
    let adult = CitizenRecord::example();
    let (from, until) = (now() - 3600, now() + 365 * 86_400);
    let good = w
        .issuer
        .mint(device.public_key(), &adult, true, 0, from, until);
    let full = w
        .issuer
        .mint(device.public_key(), &adult, false, 0, from, until);

    // Payload sizes per policy (the numbers specs/kiosk-screen.md quotes).
    {
        let probe = |policy: &str, credential: &[u8]| {
            let p = civis_verifier::policy::KioskPolicy::parse(policy).unwrap();
            let (e, _) = KioskEngagement::new(p.items_request(), &mut OsRng);
            let text = answer(&e, credential, &device, None);
            let version = civis_verifier::frames::modules(&text).unwrap().0;
            println!(
                "QR answer for {policy} ({}): {} characters, {}×{} modules",
                if credential.len() == good.len() {
                    "minimal mdoc"
                } else {
                    "full mdoc"
                },
                text.len(),
                version,
                version
            );
            text.len()
        };
        let minimal = probe("age-over-18", &good);
        let bigger = probe("age-over-18", &full);
        probe("resident-of:Harbour", &good);
        probe("service:desk=family_name,given_name", &full);
        assert!(
            minimal < 1400 && minimal * 10 < bigger * 7,
            "{minimal} vs {bigger}"
        );
    }

    let junk = junk_registry();
    let mut kiosk = Kiosk::start(
        &w,
        "counter",
        "age-over-18",
        &format!(
            // Verdicts stay until "Done": screenshots under load must not outlast them.
            "registries = [\"{junk}\", \"http://127.0.0.1:9\", \"{registry}\"]\nsync_interval_secs = 1\nverdict_secs = 300\n{reader}"
        ),
    );
    // The first registry answers junk and the second is dead: the kiosk went on to the third.
    assert!(kiosk.wait_height() >= 1);
    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = rt.block_on(browser(&driver, None));
    rt.block_on(async {
        c.goto(&format!("{}/", kiosk.url)).await.unwrap();
        wait_css(&c, "body[data-ready][data-state='idle']").await;
        assert_eq!(
            text_of(&c, "#headline").await,
            "Tap your card or show your code"
        );
        let qr = wait_css(&c, "#qr[src^='/api/engagement.svg']").await;
        assert!(
            qr.attr("alt")
                .await
                .unwrap()
                .unwrap()
                .contains("scan this code")
        );
        assert!(
            text_of(&c, "#snapshot")
                .await
                .starts_with("Registry data from")
        );
        let png = c.screenshot().await.unwrap();
        std::fs::write(shots_dir().join("idle-en.png"), png).unwrap();
    });

    // Every phone case through the scanner route, each verdict checked in the DOM.
    let minor = CitizenRecord {
        birth_date: today(-10),
        ..CitizenRecord::example()
    };
    let clone = SoftwareKey::generate(&mut OsRng);
    let other_kiosk = KioskEngagement::new(
        civis_verifier::policy::KioskPolicy::parse("age-over-18")
            .unwrap()
            .items_request(),
        &mut OsRng,
    )
    .0;
    type Build<'a> = Box<dyn Fn(&KioskEngagement) -> String + 'a>;
    let cases: Vec<(&str, &str, &str, Build)> = vec![
        (
            "accept",
            "accept",
            "accepted",
            Box::new(|e| answer(e, &good, &device, None)),
        ),
        (
            "revoked",
            "reject",
            "revoked",
            Box::new(|e| {
                answer(
                    e,
                    &w.issuer
                        .mint(device.public_key(), &adult, true, 1, from, until),
                    &device,
                    None,
                )
            }),
        ),
        (
            "suspended",
            "reject",
            "suspended",
            Box::new(|e| {
                answer(
                    e,
                    &w.issuer
                        .mint(device.public_key(), &adult, true, 2, from, until),
                    &device,
                    None,
                )
            }),
        ),
        (
            "issuer not accredited for the docType",
            "reject",
            "issuer_not_trusted",
            Box::new(|e| {
                answer(
                    e,
                    &w.other
                        .mint(device.public_key(), &adult, true, 0, from, until),
                    &device,
                    None,
                )
            }),
        ),
        (
            "issuer key rotated out before signing",
            "reject",
            "issuer_not_trusted",
            Box::new(|e| {
                // Signed with key-1 after the chain moved the issuer to key-2.
                let late = w
                    .rotated
                    .mint(device.public_key(), &adult, true, 0, now(), until);
                answer(e, &late, &device, None)
            }),
        ),
        (
            "expired",
            "reject",
            "expired",
            Box::new(|e| {
                answer(
                    e,
                    &w.issuer.mint(
                        device.public_key(),
                        &adult,
                        true,
                        0,
                        now() - 90_000,
                        now() - 3600,
                    ),
                    &device,
                    None,
                )
            }),
        ),
        (
            "clone on another phone",
            "reject",
            "not_this_device",
            Box::new(|e| answer(e, &good, &clone, None)),
        ),
        (
            "element not disclosed",
            "reject",
            "not_shared",
            Box::new(|e| answer(e, &good, &device, Some("age_over_18"))),
        ),
        (
            "policy unmet (a minor)",
            "reject",
            "not_over_18",
            Box::new(|e| {
                answer(
                    e,
                    &w.issuer
                        .mint(device.public_key(), &minor, true, 0, from, until),
                    &device,
                    None,
                )
            }),
        ),
        (
            "answer made for another kiosk",
            "reject",
            "wrong_code",
            Box::new(|_| answer(&other_kiosk, &good, &device, None)),
        ),
        (
            "hostile payload",
            "reject",
            "unreadable",
            Box::new(|_| format!("CVP1:{}", "A".repeat(5000))),
        ),
    ];
    let mut replay = String::new();
    for (what, kind, reason, build) in &cases {
        let text = build(&kiosk.engagement());
        if *reason == "accepted" {
            replay = text.clone();
        }
        let (status, v) = kiosk.scan(&text);
        assert_eq!(status, 200, "{what}: {v}");
        assert_eq!(
            (v["verdict"].as_str(), v["reason"].as_str()),
            (Some(*kind), Some(*reason)),
            "{what}"
        );
        rt.block_on(async {
            wait_css(
                &c,
                &format!("body[data-state='{kind}'] #message[data-reason='{reason}']"),
            )
            .await;
            let shown = c.find_all(Locator::Css("#shown dd")).await.unwrap();
            if *kind == "accept" {
                // Only the policy's element, nothing else of the credential.
                assert_eq!(shown.len(), 1, "{what}");
                assert_eq!(
                    shown[0].attr("data-element").await.unwrap().as_deref(),
                    Some("age_over_18")
                );
                assert_eq!(shown[0].text().await.unwrap(), "Yes");
                assert_eq!(text_of(&c, "#headline").await, "Accepted");
                screenshots(&c, "accept").await;
            } else {
                assert!(shown.is_empty(), "{what}");
                assert_eq!(text_of(&c, "#headline").await, "Not accepted");
                assert!(!text_of(&c, "#message").await.is_empty());
                if *reason == "revoked" {
                    assert_eq!(
                        text_of(&c, "#message").await,
                        "This credential has been revoked."
                    );
                    screenshots(&c, "reject").await;
                }
            }
            click(&c, "#done").await;
            wait_css(&c, "body[data-ready][data-state='idle']").await;
        });
    }
    // The same refused code read again at once (a sticker in the camera's view): not shown
    // or counted a second time.
    let hostile = format!("CVP1:{}", "A".repeat(5000));
    assert_eq!(kiosk.scan(&hostile).0, 204);
    // The accepted answer shown again: the engagement it opened under is gone.
    let (_, v) = kiosk.scan(&replay);
    assert_eq!(v["reason"], "wrong_code", "{v}");
    kiosk.done();
    // Text that is not a Civis answer (someone's ticket), and bytes that are not text.
    assert_eq!(kiosk.scan("https://example.org/ticket").0, 422);
    assert_eq!(
        http_post(
            &format!("{}/api/scan", kiosk.url),
            "text/plain",
            &[0xff, 0xfe]
        )
        .0,
        400
    );
    // Camera frames: blank, a damaged code (its lower half cut), a wrong shape, oversized.
    let frame = |w_: u32, h_: u32, body: &[u8]| {
        http_post(
            &format!("{}/api/frame?w={w_}&h={h_}", kiosk.url),
            "application/octet-stream",
            body,
        )
        .0
    };
    assert_eq!(frame(640, 480, &vec![128u8; 640 * 480]), 204);
    {
        let text = answer(&kiosk.engagement(), &good, &device, None);
        let (side, mut img) = civis_verifier::frames::render_grey(&text, 3).unwrap();
        img[side * side / 2..].fill(255);
        let mut f = vec![200u8; 640 * 480];
        for r in 0..side.min(480) {
            f[r * 640..r * 640 + side.min(640)]
                .copy_from_slice(&img[r * side..r * side + side.min(640)]);
        }
        assert_eq!(frame(640, 480, &f), 204);
    }
    assert_eq!(frame(640, 480, &[0u8; 100]), 400);
    assert_eq!(frame(100_000, 100_000, &[0u8; 100]), 400);
    assert_eq!(frame(4000, 4000, &vec![0u8; 3 * 1024 * 1024]), 413);
    // Another origin posting into the kiosk, and another host name: refused.
    let cross = registry_util::runtime().block_on(async {
        reqwest::Client::new()
            .post(format!("{}/api/done", kiosk.url))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(cross, 403);
    let rebound = registry_util::runtime().block_on(async {
        reqwest::Client::new()
            .get(format!("{}/api/screen", kiosk.url))
            .header("host", "attacker.example:18951")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(rebound, 421);
    rt.block_on(async { c.close().await.unwrap() });

    // The phone's answer through the browser's camera: Chromium's fake camera shows a Y4M
    // frame rendered from the wallet's real answer to the engagement on screen.
    {
        let text = answer(&kiosk.engagement(), &good, &device, None);
        let y4m = w.dir.join("camera.y4m");
        y4m_of(&text, &y4m);
        let cam = rt.block_on(browser(&driver, Some(&y4m)));
        rt.block_on(async {
            cam.goto(&format!("{}/", kiosk.url)).await.unwrap();
            wait_css(
                &cam,
                "body[data-state='accept'] #message[data-reason='accepted']",
            )
            .await;
            assert_eq!(text_of(&cam, "#shown dd").await, "Yes");
            cam.close().await.unwrap();
        });
        kiosk.done();
    }

    // A tap of the virtual card through pcscd: personalized for the chain's governance set
    // (the card checks the kiosk's accreditation itself), then read by the running kiosk.
    let c = rt.block_on(browser(&driver, None));
    rt.block_on(async {
        c.goto(&format!("{}/", kiosk.url)).await.unwrap();
        wait_css(&c, "body[data-ready][data-state='idle']").await;
    });
    let card_state = w.dir.join("card.state");
    let mut taps = Vec::new();
    {
        // Personalized while the kiosk's reader loop would read it too: stop it first.
        kiosk.stop();
        let card = VirtualCard::start(&card_state);
        let mut client =
            CardClient::new(NfcTransport::open(READER, Duration::from_secs(10)).unwrap());
        let mut p =
            Personalizer::start(&mut client, civis_core::card::TransportKey([0x42; 32])).unwrap();
        let key = p.generate_key().unwrap();
        p.set_pin("246810").unwrap();
        p.set_puk("1357913579").unwrap();
        p.set_governance(&w.genesis.chain_id, &w.genesis.governance)
            .unwrap();
        p.put_credential(0, &w.issuer.mint(&key, &adult, false, 3, from, until))
            .unwrap();
        p.lock().unwrap();
        drop(client);
        drop(card);
        kiosk = Kiosk::start(
            &w,
            "counter",
            "age-over-18",
            &format!(
                "registries = [\"{registry}\"]\nsync_interval_secs = 1\nverdict_secs = 300\n{reader}"
            ),
        );
        rt.block_on(async {
            c.refresh().await.unwrap();
            wait_css(&c, "body[data-ready][data-state='idle']").await;
        });
        for _ in 0..5 {
            let card = VirtualCard::start(&card_state);
            let tapped = Instant::now();
            rt.block_on(async {
                wait_css(
                    &c,
                    "body[data-state='accept'] #message[data-reason='accepted']",
                )
                .await;
            });
            taps.push(tapped.elapsed());
            rt.block_on(async {
                assert_eq!(text_of(&c, "#shown dd").await, "Yes");
            });
            drop(card);
            kiosk.done();
            rt.block_on(async { wait_css(&c, "body[data-ready][data-state='idle']").await });
        }

        // "Read my card's log" on the screen: the PIN on the screen's pad, then the card. A
        // wrong PIN shows nothing; the right one shows the five reads above, newest first,
        // with the kiosk's purpose and the one element released, in each language.
        let enter_pin = |pin: &'static str| {
            let c = &c;
            async move {
                wait_css(c, "body[data-state='idle'] #review-open")
                    .await
                    .click()
                    .await
                    .unwrap();
                wait_css(c, "#pinpad:not(.hidden)").await;
                assert_eq!(
                    text_of(c, "#pin-label").await,
                    "Enter your PIN, then tap your card"
                );
                for d in pin.chars() {
                    click(c, &format!("#keys button[data-key='{d}']")).await;
                }
                assert_eq!(text_of(c, "#pin-dots").await, "●".repeat(pin.len()));
                click(c, "#keys button[data-key='ok']").await;
                wait_css(c, "body[data-state='review_tap']").await;
            }
        };
        rt.block_on(enter_pin("999999"));
        let card = VirtualCard::start(&card_state);
        rt.block_on(async {
            wait_css(
                &c,
                "body[data-state='review_refused'] #message[data-reason='wrong_pin']",
            )
            .await;
            assert!(c.find(Locator::Css("#log tbody tr")).await.is_err());
        });
        drop(card);
        kiosk.done();
        rt.block_on(enter_pin("246810"));
        let card = VirtualCard::start(&card_state);
        rt.block_on(async {
            wait_css(&c, "body[data-state='review'] #log:not(.hidden)").await;
            assert_eq!(text_of(&c, "#headline").await, "Who read your card");
            let rows = c.find_all(Locator::Css("#log tbody tr")).await.unwrap();
            // This visit and the wrong-PIN one (each released nothing), the five taps before.
            assert_eq!(rows.len(), 7);
            let seqs: Vec<u64> = {
                let mut v = Vec::new();
                for r in &rows {
                    v.push(r.attr("data-seq").await.unwrap().unwrap().parse().unwrap());
                }
                v
            };
            assert!(
                seqs.windows(2).all(|w| w[0] > w[1]),
                "newest first: {seqs:?}"
            );
            for row in [1, 2] {
                assert_eq!(
                    text_of(&c, &format!("#log tbody tr:nth-child({row}) td.what")).await,
                    "nothing"
                );
            }
            assert_eq!(
                text_of(&c, "#log tbody tr:nth-child(3) td.what").await,
                "Aged 18 or over"
            );
            let who = text_of(&c, "#log tbody tr:nth-child(3) td.who").await;
            assert!(who.starts_with("age check"), "{who}");
            assert!(who.contains("did:civis:"), "{who}");
            for (lang, title, released) in [
                ("de", "Wer Ihre Karte gelesen hat", "18 Jahre oder älter"),
                ("ko", "내 카드를 읽은 곳", "만 18세 이상"),
            ] {
                click(&c, &format!("button[data-lang='{lang}']")).await;
                wait_css(
                    &c,
                    &format!("html[lang='{lang}'] body[data-state='review']"),
                )
                .await;
                assert_eq!(text_of(&c, "#headline").await, title);
                assert_eq!(
                    text_of(&c, "#log tbody tr:nth-child(3) td.what").await,
                    released
                );
            }
            screenshots(&c, "review").await;
        });
        drop(card);
        kiosk.done();
        rt.block_on(async { wait_css(&c, "body[data-ready][data-state='idle']").await });
        // A verdict reached while a review waits (a phone's answer at the scanner, as another
        // resident's card tap would) ends the review: the verdict is shown alone, the PIN is
        // dropped, and the next card gets a plain verdict, not a PIN try.
        let (code, _) = http_post(
            &format!("{}/api/review", kiosk.url),
            "application/json",
            br#"{"pin":"999999"}"#,
        );
        assert_eq!(code, 202);
        rt.block_on(async { wait_css(&c, "body[data-state='review_tap']").await });
        let (_, v) = kiosk.scan("CVP1:not-an-answer");
        assert_eq!(v["verdict"], "reject", "{v}");
        rt.block_on(async {
            wait_css(
                &c,
                "body[data-state='reject'] #message[data-reason='unreadable']",
            )
            .await;
            assert!(c.find(Locator::Css("#log tbody tr")).await.is_err());
        });
        let screen = http_get(&format!("{}/api/screen", kiosk.url)).unwrap();
        assert_eq!(screen["state"], "reject", "{screen}");
        kiosk.done();
        let pin_tries = || {
            civis_wallet_core::applet::CardState::decode(&std::fs::read(&card_state).unwrap())
                .unwrap()
                .pin
                .unwrap()
                .tries_left
        };
        let tries_before = pin_tries();
        let card = VirtualCard::start(&card_state);
        rt.block_on(async {
            wait_css(
                &c,
                "body[data-state='accept'] #message[data-reason='accepted']",
            )
            .await;
        });
        drop(card);
        kiosk.done();
        let tries_after = pin_tries();
        assert_eq!(
            tries_after, tries_before,
            "the dropped PIN reached the card"
        );
        rt.block_on(async { wait_css(&c, "body[data-ready][data-state='idle']").await });
        // A blocked PIN is told apart from a wrong one: the third wrong PIN blocks it, and then
        // even the right one gets "blocked, use your PUK" (not "wrong PIN", which would only
        // invite more tries) and no log.
        let review_with = |pin: &str, reason: &str| {
            let (code, _) = http_post(
                &format!("{}/api/review", kiosk.url),
                "application/json",
                format!(r#"{{"pin":"{pin}"}}"#).as_bytes(),
            );
            assert_eq!(code, 202);
            rt.block_on(async { wait_css(&c, "body[data-state='review_tap']").await });
            let card = VirtualCard::start(&card_state);
            rt.block_on(async {
                wait_css(
                    &c,
                    &format!("body[data-state='review_refused'] #message[data-reason='{reason}']"),
                )
                .await;
                assert!(c.find(Locator::Css("#log tbody tr")).await.is_err());
                if reason == "pin_blocked" {
                    let m = text_of(&c, "#message").await;
                    assert!(m.contains("blocked") && m.contains("PUK"), "{m}");
                }
            });
            drop(card);
            kiosk.done();
            rt.block_on(async { wait_css(&c, "body[data-ready][data-state='idle']").await });
        };
        for _ in 1..civis_core::card::PIN_TRIES {
            review_with("999999", "wrong_pin");
        }
        // The wrong PIN that uses the last try already says so.
        review_with("999999", "pin_blocked");
        assert_eq!(pin_tries(), 0);
        review_with("246810", "pin_blocked");
        // A PIN of the wrong form never reaches a card.
        let (code, _) = http_post(
            &format!("{}/api/review", kiosk.url),
            "application/json",
            br#"{"pin":"12ab"}"#,
        );
        assert_eq!(code, 400);
        // Nor a body that is not exactly {"pin": …} (an array once passed serde's struct form).
        for body in [
            &br#"["246810"]"#[..],
            br#"{"pin":"246810","x":1}"#,
            br#"{"pin":246810}"#,
            // A repeated key: serde_json's maps kept the last one.
            br#"{"pin":"111111","pin":"246810"}"#,
        ] {
            let (code, _) = http_post(
                &format!("{}/api/review", kiosk.url),
                "application/json",
                body,
            );
            assert_eq!(code, 400, "{}", String::from_utf8_lossy(body));
        }
    }
    taps.sort();
    println!(
        "tap-to-verdict through pcscd into the DOM: p50 {:.0} ms, max {:.0} ms over {} taps",
        taps[taps.len() / 2].as_secs_f64() * 1e3,
        taps[taps.len() - 1].as_secs_f64() * 1e3,
        taps.len()
    );

    // The kiosk's database and log after all this: counts, verdicts, reasons — nothing of
    // the resident.
    kiosk.stop();
    let status = registry_util::json_of(&civis(&[
        "kiosk",
        "status",
        "--genesis",
        w.reg.dir.join("genesis.json").to_str().unwrap(),
        "--db",
        kiosk.db.to_str().unwrap(),
    ]));
    assert!(
        status["verdicts"]["accept"].as_i64().unwrap() >= 7,
        "{status}"
    );
    assert!(
        status["verdicts"]["reject"].as_i64().unwrap() >= 9,
        "{status}"
    );
    // A registry's text never forges a log line.
    assert!(!kiosk.log_text().contains("\nINFO forged line"));
    assert!(!kiosk.log_text().contains('\u{1b}'));
    let mut bytes = std::fs::read(&kiosk.db).unwrap();
    bytes.extend(std::fs::read(kiosk.db.with_extension("db-wal")).unwrap_or_default());
    bytes.extend(kiosk.log_text().into_bytes());
    let card =
        civis_wallet_core::applet::CardState::decode(&std::fs::read(&card_state).unwrap()).unwrap();
    let card_key = card.public_key().unwrap();
    let secrets: [&[u8]; 8] = [
        b"246810",
        b"Jansen",
        b"Mira",
        b"1990-04-12",
        b"CIV-000042",
        device.public_key().uncompressed(),
        card_key.uncompressed(),
        &card_key.compressed(),
    ];
    for s in secrets {
        assert!(
            !bytes.windows(s.len()).any(|w| w == s),
            "the kiosk keeps {s:?}"
        );
    }

    // A second kiosk, offline, on a copy of the first one's database, whose state is older
    // than its policy allows: undetermined, never accept, and the screen warns.
    for ext in ["db", "db-wal"] {
        let from = kiosk.db.with_extension(ext);
        if from.exists() {
            std::fs::copy(&from, w.dir.join("library").with_extension(ext)).unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(2100));
    let lib = Kiosk::start(
        &w,
        "library",
        "service:library=family_name,given_name",
        "max_age_secs = 1\nwarn_before_stale_secs = 1\nverdict_secs = 300\n",
    );
    let c2 = rt.block_on(browser(&driver, None));
    let (_, v) = lib.scan(&answer(&lib.engagement(), &full, &device, None));
    assert_eq!(
        (v["verdict"].as_str(), v["reason"].as_str()),
        (Some("undetermined"), Some("stale")),
        "{v}"
    );
    rt.block_on(async {
        c2.goto(&format!("{}/", lib.url)).await.unwrap();
        wait_css(&c2, "body[data-warning='stale']").await;
    });
    let (_, v) = lib.scan(&answer(&lib.engagement(), &full, &device, None));
    assert_eq!(v["verdict"], "undetermined", "{v}");
    rt.block_on(async {
        wait_css(
            &c2,
            "body[data-state='undetermined'] #message[data-reason='stale']",
        )
        .await;
        assert_eq!(text_of(&c2, "#headline").await, "Cannot check right now");
        assert!(
            c2.find_all(Locator::Css("#shown dd"))
                .await
                .unwrap()
                .is_empty()
        );
        screenshots(&c2, "undetermined").await;
        c2.close().await.unwrap();
    });
    // Closed, not just dropped: a dropped client leaves its browser session open.
    rt.block_on(async { c.close().await.unwrap() });
    let _ = kiosk;

    // A verdict times out on its own: a page waiting on the screen is woken with idle well
    // before its long poll would end (the same kiosk, verdicts kept for a second).
    drop(lib);
    let lib = Kiosk::start(
        &w,
        "library",
        "service:library=family_name,given_name",
        "max_age_secs = 1\nverdict_secs = 1\n",
    );
    let shown = (0..5)
        .find_map(|_| {
            lib.scan(&answer(&lib.engagement(), &full, &device, None));
            let s = lib.screen();
            (s["state"] == "undetermined").then(|| s["seq"].as_u64().unwrap())
        })
        .expect("the verdict never seen on screen");
    let asked = Instant::now();
    let after = http_get(&format!("{}/api/screen?lang=en&after={shown}", lib.url)).unwrap();
    assert_eq!(after["state"], "idle", "{after}");
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "woken only by the long-poll timeout"
    );
}

/// `civis card serve` behind vpcd, killed on drop.
struct VirtualCard {
    child: Option<Child>,
}

impl VirtualCard {
    fn start(state: &Path) -> Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        while nfc::card_present(READER).unwrap_or(false) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let key = state.with_extension("transport");
        std::fs::write(&key, hex::encode([0x42u8; 32])).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_civis"))
            .args(["card", "serve", "--state"])
            .arg(state)
            .arg("--transport-key")
            .arg(&key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let card = Self { child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !nfc::card_present(READER).unwrap_or(false) {
            assert!(Instant::now() < deadline, "the virtual card never appeared");
            std::thread::sleep(Duration::from_millis(2));
        }
        card
    }
}

impl Drop for VirtualCard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Gone only once pcscd says so (a kiosk started before that would see a card).
        let deadline = Instant::now() + Duration::from_secs(10);
        while nfc::card_present(READER).unwrap_or(false) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// `civis demo --keep-running`, stopped with SIGINT on drop.
struct KeptDemo(Option<Child>);

impl Drop for KeptDemo {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The newcomer's path: `civis demo --keep-running` leaves a kiosk screen up, prints where it
/// is and which card to tap; tapping that card (served behind vpcd) turns the screen green with
/// the policy's elements, and Ctrl-C stops everything and deletes the demo's folder.
#[test]
fn civis_demo_keep_running_leaves_a_kiosk_screen_that_reads_the_printed_card() {
    use std::io::BufRead;
    let _reader = READER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut child = Command::new(env!("CARGO_BIN_EXE_civis"))
        .args(["demo", "--keep-running"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut demo = KeptDemo(Some(child));
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let (mut screen, mut card, mut printed) = (None, None, Vec::new());
    while screen.is_none() || card.is_none() {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the demo never printed its kiosk: {printed:#?}"));
        if let Some(rest) = line.trim().strip_prefix("kiosk screen") {
            screen = rest.split_whitespace().next().map(str::to_owned);
        }
        if line.trim().starts_with("a card for") {
            card = line.rsplit(": ").next().map(PathBuf::from);
        }
        printed.push(line);
    }
    let (screen, card) = (screen.unwrap(), card.unwrap());
    let base = screen.trim_end_matches('/').to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    assert!(card.is_file(), "{}", card.display());
    let folder = card.parent().unwrap().to_owned();

    // The kiosk syncs from the demo's registry on its own.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = http_get(&format!("{base}/api/screen?lang=en")).unwrap_or(Value::Null);
        if s["state"] == "idle" && s["snapshot"]["height"].as_u64().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the kiosk never synced: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    while nfc::card_present(READER).unwrap_or(false) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut serve = Command::new(env!("CARGO_BIN_EXE_civis"))
        .args(["card", "serve", "--state"])
        .arg(&card)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let shown = loop {
        let s = http_get(&format!("{base}/api/screen?lang=en")).unwrap_or(Value::Null);
        // "reading" is shown while the tap is in progress; the verdict follows.
        if matches!(
            s["state"].as_str(),
            Some("accept" | "reject" | "undetermined")
        ) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the tap never reached the screen: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!(shown["state"], "accept", "{shown}");
    let text = shown["shown"].to_string();
    assert!(
        text.contains("Noor") && text.contains("Old Town"),
        "the policy's elements of the printed card: {text}"
    );
    assert!(
        !text.contains("Haddad"),
        "only the policy's elements: {text}"
    );

    // Ctrl-C: everything stops and the demo's folder is gone.
    let mut child = demo.0.take().unwrap();
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(!folder.exists(), "{} left behind", folder.display());
    assert!(
        http_get(&format!("{base}/api/screen?lang=en")).is_none(),
        "the kiosk screen is still up"
    );
}
