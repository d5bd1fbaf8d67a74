//! The issuer service end to end, every part real and in its own process: a registry validator
//! (`civis registry run`), the issuer (`civis issuer run`, SQLite and PostgreSQL), the virtual
//! card behind pcscd + vpcd (`civis card serve`), and the counter's CLI
//! (`civis issuer personalize --reader`, through nfc1 → libnfc → PC/SC). Then a kiosk syncs and
//! verifies the card's presentation with core, the issuer revokes, the change is anchored, and
//! a new snapshot rejects. The personalization is also killed (SIGKILL-like abort) at each
//! crash point and resumed. Needs pcscd with vpcd (`scripts/test.sh` starts it).
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
use civis_core::chain::light::KioskSnapshot;
use civis_core::chain::state::Genesis;
use civis_core::crypto::SoftwareKey;
use civis_core::did::{Did, DidUrl, KeyCommitment};
use civis_core::kiosk::KioskAccreditation;
use civis_core::mdoc::citizen;
use civis_core::mdoc::{DeviceRequest, ItemsRequest, reader_auth};
use civis_core::verify::{Policy, Presentation, Verdict, verify_presentation};
use civis_firmware_bridge::nfc;
use civis_firmware_bridge::reader::{CardClient, MdocSession};
use civis_firmware_bridge::transport::InProcess;
use civis_registry_client::keyfile::read_key;
use civis_wallet_core::applet::CardState;
use rand_core::OsRng;
use registry_util::{Cluster, civis, fresh_postgres};
use serde_json::Value;

const READER: &str = "Virtual PCD 00 00";

/// vpcd has one slot: one card process at a time.
static SLOT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn slot() -> std::sync::MutexGuard<'static, ()> {
    SLOT.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A `civis issuer run` process, killed on drop.
struct Issuer {
    child: Option<Child>,
    log: PathBuf,
    url: String,
}

impl Issuer {
    fn start(dir: &Path, port: u16, crash_at: Option<&str>) -> Self {
        let config = dir.join("issuer.toml");
        let log = dir.join("issuer.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_civis"));
        cmd.args(["issuer", "run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out));
        if let Some(at) = crash_at {
            cmd.env("CIVIS_ISSUER_CRASH_AT", at);
        }
        let issuer = Self {
            child: Some(cmd.spawn().unwrap()),
            log,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::blocking_get(&format!("{}/health", issuer.url)) {
                if r {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "issuer did not start: {}",
                issuer.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        issuer
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait for the process to end by itself (a crash point); true if it did.
    fn exited(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(c) = &mut self.child
                && c.try_wait().unwrap().is_some()
            {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn cli(&self, dir: &Path, args: &[&str]) -> (bool, Value, String) {
        let token = dir.join("operator.token");
        let mut all = vec!["issuer".to_owned(), args[0].to_owned()];
        let mut rest: Vec<String> = args[1..].iter().map(|s| (*s).to_owned()).collect();
        // `status` has a subcommand before its flags.
        if args[0] == "status" {
            all.push(rest.remove(0));
        }
        all.extend([
            "--url".to_owned(),
            self.url.clone(),
            "--token-file".to_owned(),
            token.display().to_string(),
        ]);
        all.extend(rest);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = civis(&refs);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        (
            out.status.success(),
            json,
            format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        )
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.stop();
    }
}

mod reqwest {
    /// A tiny blocking GET for readiness checks (true on 2xx).
    pub fn blocking_get(url: &str) -> Result<bool, ()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(drop)?;
        rt.block_on(async {
            ::reqwest::get(url)
                .await
                .map(|r| r.status().is_success())
                .map_err(drop)
        })
    }

    /// GET returning the JSON body (Null on any failure).
    pub fn json_of(url: &str) -> serde_json::Value {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            match ::reqwest::get(url).await {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            }
        })
    }

    /// GET returning the status code.
    pub fn status_of(url: &str) -> u16 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            ::reqwest::get(url)
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    }
}

/// `civis card serve` behind vpcd, killed on drop.
struct VirtualCard {
    child: Option<Child>,
    state: PathBuf,
}

impl VirtualCard {
    fn start(state: &Path) -> Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        while nfc::card_present(READER).unwrap_or(false) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let child = Command::new(env!("CARGO_BIN_EXE_civis"))
            .args(["card", "serve", "--state"])
            .arg(state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let card = Self {
            child: Some(child),
            state: state.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !nfc::card_present(READER).unwrap_or(false) {
            assert!(Instant::now() < deadline, "the virtual card never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
        card
    }

    fn state(&mut self) -> CardState {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        CardState::decode(&std::fs::read(&self.state).unwrap()).unwrap()
    }
}

impl Drop for VirtualCard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A kiosk's tap of the card (in-process, from the card's stored memory) and its verdict
/// against a freshly synced snapshot.
fn kiosk_verdict(reg: &Cluster, state: &CardState, genesis: &Genesis, dir: &Path) -> Verdict {
    let snapshot = dir.join("kiosk.snapshot");
    let _ = std::fs::remove_file(&snapshot);
    reg.sync(&reg.dir.join("genesis.json"), &snapshot).unwrap();
    let synced = KioskSnapshot::decode(genesis, &std::fs::read(&snapshot).unwrap()).unwrap();
    let snap = synced.trust_snapshot();
    let (kiosk, statement) = kiosk_accreditation(reg, genesis);
    let wanted = KIOSK_GRANTS;
    let mut card = CardClient::new(InProcess::new(state.clone()));
    // As every kiosk does: the governance rotations first, so a card personalized with the
    // genesis set follows the key that signed the accreditation.
    card.follow_governance(&synced.governance_rotations())
        .unwrap();
    let engaged = card.read_engagement().unwrap();
    let (mut session, e_reader, e_bytes) = MdocSession::start(&engaged, &mut OsRng);
    let transcript = session.transcript().clone();
    let items = ItemsRequest {
        doc_type: citizen::DOC_TYPE.into(),
        name_spaces: vec![(
            citizen::NAMESPACE.into(),
            wanted.iter().map(|e| ((*e).to_owned(), false)).collect(),
        )],
        request_info: None,
    };
    let request = DeviceRequest {
        version: "1.0".into(),
        doc_requests: vec![
            reader_auth::sign_with_accreditation(items, &transcript, &kiosk, &statement).unwrap(),
        ],
    };
    let response = session
        .establish(&mut card, e_reader.public_key(), e_bytes, &request)
        .unwrap();
    // The same presentation as files, for `civis kiosk verify`.
    use civis_core::cbor::CborForm as _;
    std::fs::write(dir.join("last.response"), &response).unwrap();
    std::fs::write(dir.join("last.transcript"), transcript.tagged_bytes()).unwrap();
    std::fs::write(dir.join("last.request"), request.to_vec()).unwrap();
    let p = Presentation {
        device_response: &response,
        transcript: &transcript,
        reader_key: None,
        request: Some(&request),
    };
    verify_presentation(&p, &snap, &Policy::default(), Timestamp(now()))
}

/// What the test kiosks may read.
const KIOSK_GRANTS: [&str; 3] = ["given_name", "age_over_18", "resident_district"];

/// A kiosk key and its accreditation for [`KIOSK_GRANTS`], signed by the registry's governance
/// key (the root the cards were given).
fn kiosk_accreditation(reg: &Cluster, genesis: &Genesis) -> (SoftwareKey, Vec<u8>) {
    let (gov, gov_kid) = read_key(&reg.dir.join("governance.jwk")).unwrap();
    let kiosk = SoftwareKey::generate(&mut OsRng);
    let statement = KioskAccreditation {
        chain: genesis.chain_id.clone(),
        kiosk: Did::from_inception(kiosk.public_key(), &KeyCommitment::to(kiosk.public_key())),
        key: kiosk.public_key().clone(),
        grants: vec![(
            citizen::DOC_TYPE.into(),
            vec![(
                citizen::NAMESPACE.into(),
                KIOSK_GRANTS.iter().map(|e| (*e).to_owned()).collect(),
            )],
        )],
        purpose: "counter".into(),
        not_before: now() - 60,
        not_after: now() + 86_400,
    }
    .sign(&DidUrl::parse(&gov_kid.unwrap()).unwrap(), &gov)
    .unwrap();
    (kiosk, statement)
}

/// The key index the card on `state` holds for the (single) governance member.
fn governance_index(state: &Path) -> u32 {
    let state = CardState::decode(&std::fs::read(state).unwrap()).unwrap();
    state.governance.unwrap().members[0].index
}

/// `civis kiosk sync` into the agency folder's kiosk database, then `civis kiosk verify` of the
/// last presentation [`kiosk_verdict`] saw, for `policy`: the exit code and the verdict line.
fn kiosk_cli(reg: &Cluster, dir: &Path, policy: &str, extra: &[&str]) -> (i32, Value) {
    let genesis = reg.dir.join("genesis.json");
    let db = dir.join("kiosk.db");
    let (g, d) = (genesis.to_str().unwrap(), db.to_str().unwrap());
    let url = reg.url(0);
    let out = civis(&[
        "kiosk",
        "sync",
        "--registry",
        &url,
        "--genesis",
        g,
        "--db",
        d,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    kiosk_verify(dir, g, d, policy, extra)
}

fn kiosk_verify(dir: &Path, genesis: &str, db: &str, policy: &str, extra: &[&str]) -> (i32, Value) {
    let (r, t, q) = (
        dir.join("last.response"),
        dir.join("last.transcript"),
        dir.join("last.request"),
    );
    let mut args = vec![
        "kiosk",
        "verify",
        "--policy",
        policy,
        "--response",
        r.to_str().unwrap(),
        "--session-transcript",
        t.to_str().unwrap(),
        "--request",
        q.to_str().unwrap(),
        "--genesis",
        genesis,
        "--db",
        db,
    ];
    args.extend_from_slice(extra);
    let out = civis(&args);
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
    )
}

/// A polling station through the real binary and pcscd (issue #13): `civis evote register`,
/// a station accredited for e-voting, `civis kiosk verify --policy evote:… --pin-stdin` with
/// the virtual card the issuer personalized (its VRF key bound by the issuer), the verdicts an
/// election can give, a double authentication at one station and across two after a signed
/// exchange, and a station database holding nothing about the voter.
fn polling_stations(reg: &Cluster, dir: &Path, card_state: &Path, name: &str) {
    let _card = VirtualCard::start(card_state);
    let g = reg.dir.join("genesis.json");
    let gov = reg.dir.join("governance.jwk");
    let node = reg.url(0);
    let (now, day) = (now(), 86_400);
    // Elections: one the card is eligible for, one for another district, one not open yet.
    let election = |id: &str, district: &str, opens: i64, closes: i64| {
        let out = civis(&[
            "evote",
            "register",
            "--node",
            &node,
            "--key",
            gov.to_str().unwrap(),
            "--id",
            id,
            "--age-over-18",
            "--district",
            district,
            "--district",
            "Old Town",
            "--opens",
            &opens.to_string(),
            "--closes",
            &closes.to_string(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (open, other, later) = (
        format!("council-{name}"),
        format!("riverside-{name}"),
        format!("later-{name}"),
    );
    election(&open, "Harbour", now - 60, now + day);
    election(&other, "Riverside", now - 60, now + day);
    election(&later, "Harbour", now + day, now + 2 * day);
    // Two stations, each with its own DID, accreditation and database.
    let element = |ns: &str, e: &str| format!("{}/{ns}/{e}", citizen::DOC_TYPE);
    let station = |n: &str, evote: bool| {
        let key = dir.join(format!("station-{n}.jwk"));
        let statement = dir.join(format!("station-{n}.accreditation"));
        let out = civis(&["registry", "keygen", "--out", key.to_str().unwrap()]);
        let did = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        reg.tx(&key, &["create-did"]).unwrap();
        let mut grants = vec![
            element(citizen::NAMESPACE, "age_over_18"),
            element(citizen::NAMESPACE, "resident_district"),
            element(citizen::NAMESPACE, "vrf_key"),
        ];
        if evote {
            grants.push(element("org.civis.evote.1", "pseudonym"));
        }
        reg.accredit_kiosk(
            &gov,
            &did,
            &grants,
            &format!("polling station {n}"),
            (now - 60, now + day),
            &statement,
        )
        .unwrap();
        (key, statement, dir.join(format!("station-{n}.db")), did)
    };
    let a = station("a", true);
    let b = station("b", true);
    let counter = station("counter", false);
    for db in [&a.2, &b.2, &counter.2] {
        let out = civis(&[
            "kiosk",
            "sync",
            "--registry",
            &node,
            "--genesis",
            g.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let vote = |s: &(PathBuf, PathBuf, PathBuf, String), id: &str, pin: &str| {
        use std::io::Write as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_civis"))
            .args([
                "kiosk",
                "verify",
                "--policy",
                &format!("evote:{id}"),
                "--reader",
                READER,
                "--reader-key",
                s.0.to_str().unwrap(),
                "--accreditation",
                s.1.to_str().unwrap(),
                "--pin-stdin",
                "--genesis",
                g.to_str().unwrap(),
                "--db",
                s.2.to_str().unwrap(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = writeln!(child.stdin.take().unwrap(), "{pin}");
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A wrong PIN: no pseudonym.
    let (code, v, text) = vote(&a, &open, "000000");
    assert_eq!(
        (code, v["code"].as_str()),
        (Some(1), Some("no_pseudonym")),
        "{v} {text}"
    );
    // The eligible voter with the PIN: accepted, the eligibility shown, nothing else.
    let (code, v, text) = vote(&a, &open, "246810");
    assert_eq!(code, Some(0), "{v} {text}");
    assert_eq!(v["disclosed"]["authentication"], "first", "{v}");
    assert_eq!(
        v["disclosed"]["org.civis.citizen.1"],
        serde_json::json!({"age_over_18": true, "resident_district": "Harbour"}),
        "{v}"
    );
    // Again at the same station: caught.
    let (code, v, text) = vote(&a, &open, "246810");
    assert_eq!(
        (code, v["code"].as_str()),
        (Some(1), Some("already_authenticated")),
        "{v} {text}"
    );
    // Another district's election; an election not open yet.
    let (code, v, _) = vote(&a, &other, "246810");
    assert_eq!(
        (code, v["code"].as_str()),
        (Some(1), Some("not_eligible")),
        "{v}"
    );
    let (code, v, _) = vote(&a, &later, "246810");
    assert_eq!(
        (code, v["code"].as_str()),
        (Some(1), Some("election_closed")),
        "{v}"
    );
    // Without the PIN on standard input the station does not even tap.
    let out = civis(&[
        "kiosk",
        "verify",
        "--policy",
        &format!("evote:{open}"),
        "--reader",
        READER,
        "--reader-key",
        a.0.to_str().unwrap(),
        "--accreditation",
        a.1.to_str().unwrap(),
        "--genesis",
        g.to_str().unwrap(),
        "--db",
        a.2.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pin-stdin"));
    // A kiosk not accredited for e-voting is refused before the tap.
    let (code, _, text) = vote(&counter, &open, "246810");
    assert_eq!(code, Some(64), "{text}");
    assert!(text.contains("not accredited for e-voting"), "{text}");
    // Station B, offline from A: accepts the same card.
    let (code, v, text) = vote(&b, &open, "246810");
    assert_eq!(code, Some(0), "{v} {text}");
    assert_eq!(v["disclosed"]["authentication"], "first", "{v}");
    // The signed exchange: A's records into B. A tampered file imports nothing.
    let file = dir.join("station-a.records");
    let out = civis(&[
        "evote",
        "export",
        "--election",
        &open,
        "--db",
        a.2.to_str().unwrap(),
        "--reader-key",
        a.0.to_str().unwrap(),
        "--accreditation",
        a.1.to_str().unwrap(),
        "--genesis",
        g.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let import = |f: &Path| {
        civis(&[
            "evote",
            "import",
            "--file",
            f.to_str().unwrap(),
            "--genesis",
            g.to_str().unwrap(),
            "--db",
            b.2.to_str().unwrap(),
        ])
    };
    let mut tampered = std::fs::read(&file).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let bad = dir.join("tampered.records");
    std::fs::write(&bad, &tampered).unwrap();
    let out = import(&bad);
    assert_eq!(
        out.status.code(),
        Some(65),
        "a tampered file is refused as data"
    );
    // A device or a FIFO is not read at all (it could stream forever or block).
    let out = import(Path::new("/dev/zero"));
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
    // Records A signed for an election the chain does not hold are refused.
    let (key_a, _) = read_key(&a.0).unwrap();
    let stray = civis_core::evote::StationRecords {
        chain: Genesis::from_json(&std::fs::read_to_string(&g).unwrap())
            .unwrap()
            .chain_id,
        election: "no-such-election".into(),
        station: a.3.clone(),
        records: vec![(civis_core::evote::Pseudonym([9; 32]), 1)],
    }
    .sign(&key_a, &std::fs::read(&a.1).unwrap())
    .unwrap();
    let stray_file = dir.join("stray.records");
    std::fs::write(&stray_file, stray).unwrap();
    let out = import(&stray_file);
    assert_eq!(out.status.code(), Some(65));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not on the synced chain"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = import(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["added"].as_u64(), v["station"].as_str()),
        (Some(2), Some(a.3.as_str())),
        "{v}"
    );
    assert!(v["duplicates"].as_u64().unwrap() >= 1, "{v}");
    let out = civis(&[
        "evote",
        "tally-auth",
        "--election",
        &open,
        "--db",
        b.2.to_str().unwrap(),
    ]);
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (t["authentications"].as_u64(), t["voters"].as_u64()),
        (Some(3), Some(1)),
        "{t}"
    );
    assert_eq!(
        t["duplicates"][0]["stations"].as_array().unwrap().len(),
        2,
        "{t}"
    );
    // What the stations keep: pseudonyms, never the voter's name, birth date, document
    // number, card key or VRF key.
    let state = CardState::decode(&std::fs::read(card_state).unwrap()).unwrap();
    let card_key = state.public_key().unwrap();
    let vrf_key = state.vrf_public_key().unwrap().to_bytes();
    for db in [&a.2, &b.2] {
        let mut bytes = std::fs::read(db).unwrap();
        bytes.extend(std::fs::read(db.with_extension("db-wal")).unwrap_or_default());
        let secrets: [&[u8]; 7] = [
            b"Jansen",
            b"Mira",
            b"1990-04-12",
            b"CIV-000042",
            card_key.uncompressed(),
            &card_key.compressed(),
            &vrf_key,
        ];
        for secret in secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "the station database holds {secret:?}"
            );
        }
    }
}

struct Agency {
    dir: PathBuf,
    did: String,
    port: u16,
    /// Keys on a SoftHSM2 token: (module, token, PIN, base label).
    hsm: Option<(String, String, String, String)>,
}

/// The SoftHSM2 token scripts/test.sh sets up, if any.
fn softhsm() -> Option<(String, String, String)> {
    Some((
        std::env::var("CIVIS_TEST_PKCS11_MODULE").ok()?,
        std::env::var("CIVIS_TEST_PKCS11_TOKEN").ok()?,
        std::env::var("CIVIS_TEST_PKCS11_PIN").ok()?,
    ))
}

fn init_agency(
    reg: &Cluster,
    name: &str,
    port: u16,
    database: Option<String>,
    hsm: Option<(String, String, String)>,
) -> Agency {
    let dir = std::env::temp_dir().join(format!("civis-issuer-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let genesis = reg.dir.join("genesis.json");
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "issuer",
        "init",
        "--dir",
        dir.to_str().unwrap(),
        "--genesis",
        genesis.to_str().unwrap(),
        // A dead node first: issuance and anchoring go on through the next.
        "--registry",
        "http://127.0.0.1:9",
        "--registry",
    ];
    let url = reg.url(0);
    args.push(&url);
    args.extend(["--listen", &listen, "--dev-batch", "--agency", name]);
    let db;
    if let Some(d) = &database {
        db = d.clone();
        args.extend(["--database", &db]);
    }
    let label = format!("{name}-{}", std::process::id());
    let pin_file = dir.join("hsm.pin");
    let pin_path = pin_file.to_str().unwrap().to_owned();
    if let Some((module, token, pin)) = &hsm {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&pin_file, format!("{pin}\n")).unwrap();
        args.extend([
            "--pkcs11-module",
            module,
            "--pkcs11-token",
            token,
            "--pkcs11-pin-file",
            &pin_path,
            "--pkcs11-label",
            &label,
        ]);
    }
    let out = civis(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let did = text
        .lines()
        .find_map(|l| l.strip_prefix("issuer DID"))
        .unwrap()
        .trim()
        .to_owned();
    // Secrets are 0600.
    use std::os::unix::fs::PermissionsExt as _;
    let files: &[&str] = if hsm.is_some() {
        // No key file at all: both keys live on the token.
        assert!(!dir.join("agency.jwk").exists() && !dir.join("agency.next.jwk").exists());
        &["operator.token", "batch-dev.key"]
    } else {
        &[
            "agency.jwk",
            "agency.next.jwk",
            "operator.token",
            "batch-dev.key",
        ]
    };
    for f in files {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    Agency {
        dir,
        did,
        port,
        hsm: hsm.map(|(m, t, p)| (m, t, p, label)),
    }
}

/// Register the agency on chain: the issuer creates its DID by itself, governance accredits
/// it, then the issuer creates its status list.
fn register(reg: &Cluster, agency: &Agency) {
    let did_url = format!("{}/v1/dids/{}", reg.url(0), agency.did);
    wait_until("the issuer's DID on chain", Duration::from_secs(60), || {
        reqwest::status_of(&did_url) == 200
    });
    reg.tx(
        &reg.dir.join("governance.jwk"),
        &[
            "accredit-issuer",
            "--issuer",
            &agency.did,
            "--doc-type",
            citizen::DOC_TYPE,
            "--until",
            &(now() + 365 * 86_400).to_string(),
        ],
    )
    .unwrap();
    // The issuer's health says when its DID and list are on chain (polling the registry's
    // status-list route here would spend the allowance the issuer shares on loopback).
    let health = format!("http://127.0.0.1:{}/health", agency.port);
    wait_until(
        "the issuer's status list on chain",
        Duration::from_secs(60),
        || {
            reqwest::json_of(&health)["unregistered"]
                .as_array()
                .is_some_and(Vec::is_empty)
        },
    );
}

fn personalize(
    issuer: &Issuer,
    agency: &Agency,
    resident: &str,
    key: &str,
) -> (bool, Value, String) {
    let pin = agency.dir.join("pin");
    let puk = agency.dir.join("puk");
    std::fs::write(&pin, "246810\n").unwrap();
    std::fs::write(&puk, "1357913579\n").unwrap();
    issuer.cli(
        &agency.dir,
        &[
            "personalize",
            "--reader",
            READER,
            "--resident",
            resident,
            "--batch",
            "dev",
            "--request-key",
            key,
            "--pin-file",
            pin.to_str().unwrap(),
            "--puk-file",
            puk.to_str().unwrap(),
        ],
    )
}

/// Wait until the credential's revocation is anchored and nothing is pending.
fn wait_revoked_on_chain(issuer: &Issuer, agency: &Agency, credential: &str) {
    wait_until("the revocation anchored", Duration::from_secs(60), || {
        let (_, s, _) = issuer.cli(&agency.dir, &["status", "show", "--credential", credential]);
        s["pending"].as_array().is_some_and(Vec::is_empty) && s["anchored"]["value"] == "revoked"
    });
}

fn enroll(issuer: &Issuer, agency: &Agency) -> String {
    let (ok, json, text) = issuer.cli(
        &agency.dir,
        &[
            "enroll",
            "--family-name",
            "Jansen",
            "--given-name",
            "Mira",
            "--birth-date",
            "1990-04-12",
            "--district",
            "Harbour",
            "--document-number",
            "CIV-000042",
        ],
    );
    assert!(ok, "{text}");
    json["resident"].as_str().unwrap().to_owned()
}

fn whole_flow(
    reg: &Cluster,
    genesis: &Genesis,
    name: &str,
    port: u16,
    db: Option<String>,
    hsm: Option<(String, String, String)>,
) {
    let agency = init_agency(reg, name, port, db, hsm);
    let mut issuer = Issuer::start(&agency.dir, agency.port, None);
    register(reg, &agency);
    let resident = enroll(&issuer, &agency);
    let mut card = VirtualCard::start(&agency.dir.join("card.state"));
    let (ok, step, text) = personalize(&issuer, &agency, &resident, "counter-1");
    assert!(ok && step["done"] == true, "{text}");
    let credential = step["credential"].as_str().unwrap().to_owned();
    let state = card.state();
    assert!(state.locked);

    // A kiosk that synced accepts the card; the issuer revokes; once anchored, a new
    // snapshot rejects.
    let v = kiosk_verdict(reg, &state, genesis, &agency.dir);
    assert!(matches!(v, Verdict::Accept(_)), "{v:?}");
    // The kiosk CLI on the same presentation, per policy: only the policy's elements shown.
    let (code, v) = kiosk_cli(reg, &agency.dir, "age-over-18", &[]);
    assert_eq!((code, &v["verdict"]), (0, &Value::from("accept")), "{v}");
    assert_eq!(
        v["disclosed"],
        serde_json::json!({"org.civis.citizen.1": {"age_over_18": true}}),
        "{v}"
    );
    let (code, v) = kiosk_cli(reg, &agency.dir, "resident-of:Harbour", &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["disclosed"],
        serde_json::json!({"org.civis.citizen.1": {"resident_district": "Harbour"}})
    );
    let (code, v) = kiosk_cli(reg, &agency.dir, "resident-of:Riverside", &[]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("not a resident of Riverside"),
        "{v}"
    );
    assert_eq!(v["disclosed"], serde_json::json!({}));
    let (code, v) = kiosk_cli(reg, &agency.dir, "service:desk=family_name,given_name", &[]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("family_name was not disclosed"),
        "{v}"
    );
    // A snapshot older than the policy allows: undetermined, never accept.
    let g = reg.dir.join("genesis.json");
    let db = agency.dir.join("kiosk.db");
    std::thread::sleep(Duration::from_secs(2));
    let (code, v) = kiosk_verify(
        &agency.dir,
        g.to_str().unwrap(),
        db.to_str().unwrap(),
        "age-over-18",
        &["--max-age", "1"],
    );
    assert_eq!(
        (code, &v["verdict"]),
        (2, &Value::from("undetermined")),
        "{v}"
    );

    // The issuer rotates its key on chain (pre-rotation). A card personalized afterwards
    // carries a credential signed with key-2; the card signed with key-1 before the rotation
    // stays valid; a kiosk that synced after the rotation accepts both.
    let out = civis(&[
        "issuer",
        "rotate-key",
        "--url",
        &issuer.url,
        "--token-file",
        agency.dir.join("operator.token").to_str().unwrap(),
    ]);
    let kid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(kid, format!("{}#key-2", agency.did));
    assert!(!agency.dir.join("agency.after.jwk").exists());
    if let Some((module, token, pin, label)) = &agency.hsm {
        // On the token: key 1 destroyed, key 2 signing, key 3 committed as the next.
        let keys = civis_issuer::hsm::keys(module.as_ref(), token, pin, label).unwrap();
        let numbers: Vec<u32> = keys.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [2, 3]);
    }
    let mut second = VirtualCard::start(&agency.dir.join("card2.state"));
    let (ok, step2, text) = personalize(&issuer, &agency, &resident, "counter-2");
    assert!(ok && step2["done"] == true, "{text}");
    let state2 = second.state();
    let stored = civis_wallet_core::holder::StoredCredential::from_bytes(
        state2.credentials[0].as_ref().unwrap(),
    )
    .unwrap();
    let signed_kid = &stored
        .issuer_signed
        .issuer_auth
        .cose
        .protected
        .header
        .key_id;
    assert_eq!(String::from_utf8_lossy(signed_kid), kid);
    for s in [&state, &state2] {
        let v = kiosk_verdict(reg, s, genesis, &agency.dir);
        assert!(matches!(v, Verdict::Accept(_)), "{v:?}");
    }

    // The second card's credential is renewed in place (the card stays locked): the new one
    // is sealed to the card and written whole, the card's receipt moves the renewal to
    // issued, and the replaced credential is revoked on chain. A memory image of the card
    // from before the renewal is then rejected, the renewed card accepted.
    drop(second);
    let mut second = VirtualCard::start(&agency.dir.join("card2.state"));
    let renew = ["renew", "--reader", READER, "--request-key", "renew-1"];
    let (ok, renewed, text) = issuer.cli(&agency.dir, &renew);
    assert!(ok && renewed["done"] == true, "{text}");
    assert_eq!(renewed["replaces"], step2["credential"]);
    let new_credential = renewed["credential"].as_str().unwrap().to_owned();
    assert_ne!(Some(new_credential.as_str()), step2["credential"].as_str());
    // Run again with the same key: the same renewal, nothing new written.
    let (ok, again, text) = issuer.cli(&agency.dir, &renew);
    assert!(ok && again == renewed, "{text}");
    let state3 = second.state();
    assert!(state3.locked);
    assert_ne!(state3.credentials[0], state2.credentials[0]);
    let old2 = step2["credential"].as_str().unwrap().to_owned();
    wait_revoked_on_chain(&issuer, &agency, &old2);
    let v = kiosk_verdict(reg, &state2, genesis, &agency.dir);
    assert!(matches!(v, Verdict::Reject(_)), "{v:?}");
    let v = kiosk_verdict(reg, &state3, genesis, &agency.dir);
    assert!(matches!(v, Verdict::Accept(_)), "{v:?}");
    // The kiosk reads the renewed card itself, through pcscd, for its policy — once the chain
    // accredits it: its own DID, then governance's accredit-kiosk for two elements.
    {
        let _card = VirtualCard::start(&agency.dir.join("card2.state"));
        let key_file = agency.dir.join("kiosk.jwk");
        let statement_file = agency.dir.join("kiosk.accreditation");
        let out = civis(&["registry", "keygen", "--out", key_file.to_str().unwrap()]);
        let kiosk_did = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        reg.tx(&key_file, &["create-did"]).unwrap();
        let element = |e: &str| format!("{0}/{0}/{e}", citizen::DOC_TYPE);
        let valid = (now() - 60, now() + 86_400);
        // Governance's accredit-kiosk for two elements, its statement written to `out`.
        let accredit = |out: &Path| {
            reg.accredit_kiosk(
                &reg.dir.join("governance.jwk"),
                &kiosk_did,
                &[element("age_over_18"), element("resident_district")],
                "counter",
                valid,
                out,
            )
            .unwrap();
        };
        accredit(&statement_file);
        let (code, _) = kiosk_cli(reg, &agency.dir, "age-over-18", &[]);
        assert_eq!(code, 0);
        let g = reg.dir.join("genesis.json");
        let db = agency.dir.join("kiosk.db");
        let tap = |policy: &str, statement: &Path| {
            let out = civis(&[
                "kiosk",
                "verify",
                "--policy",
                policy,
                "--reader",
                READER,
                "--reader-key",
                key_file.to_str().unwrap(),
                "--accreditation",
                statement.to_str().unwrap(),
                "--genesis",
                g.to_str().unwrap(),
                "--db",
                db.to_str().unwrap(),
            ]);
            (
                out.status.code(),
                serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        // A policy beyond the kiosk's grants, or a statement the chain does not hold: refused
        // before any tap.
        let (code, _, text) = tap("service:desk=family_name", &statement_file);
        assert_eq!(code, Some(64), "{text}");
        assert!(
            text.contains("not accredited on chain to read family_name"),
            "{text}"
        );
        let (_, forged) = kiosk_accreditation(reg, genesis);
        let forged_file = agency.dir.join("forged.accreditation");
        std::fs::write(&forged_file, &forged).unwrap();
        let (code, _, text) = tap("age-over-18", &forged_file);
        assert_eq!(code, Some(64), "{text}");
        assert!(
            text.contains("the chain holds no such accreditation"),
            "{text}"
        );
        let (code, v, text) = tap("age-over-18", &statement_file);
        assert_eq!(code, Some(0), "{v} {text}");
        assert_eq!(
            v["disclosed"],
            serde_json::json!({"org.civis.citizen.1": {"age_over_18": true}})
        );
        // The kiosk's database keeps counts, verdicts and reasons: nothing of the resident.
        let (status_out, db_bytes) = {
            let out = civis(&[
                "kiosk",
                "status",
                "--genesis",
                g.to_str().unwrap(),
                "--db",
                db.to_str().unwrap(),
            ]);
            let mut bytes = std::fs::read(&db).unwrap();
            bytes.extend(std::fs::read(agency.dir.join("kiosk.db-wal")).unwrap_or_default());
            (serde_json::from_slice::<Value>(&out.stdout).unwrap(), bytes)
        };
        for verdict in ["accept", "reject", "undetermined"] {
            assert!(
                status_out["verdicts"][verdict].as_i64().unwrap_or(0) >= 1,
                "{status_out}"
            );
        }
        let card_key = state3.public_key().unwrap();
        let secrets: [&[u8]; 6] = [
            b"Jansen",
            b"Mira",
            b"1990-04-12",
            b"CIV-000042",
            card_key.uncompressed(),
            &card_key.compressed(),
        ];
        for secret in secrets {
            assert!(
                !db_bytes.windows(secret.len()).any(|w| w == secret),
                "the kiosk database holds {secret:?}"
            );
        }

        // Governance rotates its key on chain. The statement it signed with the old key is
        // refused before any tap (cards that follow the rotation refuse it); accredited again
        // with the new key, the kiosk's next tap first pushes the recorded rotation, and the
        // card, personalized with the genesis set, follows it and honours the new statement.
        // (On the second run the card was personalized after the first run's rotation: its
        // first tap catches up on two.)
        let before = governance_index(&agency.dir.join("card2.state"));
        reg.tx(&reg.dir.join("governance.jwk"), &["rotate"])
            .unwrap();
        let (code, _) = kiosk_cli(reg, &agency.dir, "age-over-18", &[]);
        assert_eq!(code, 0);
        let (code, _, text) = tap("age-over-18", &statement_file);
        assert_eq!(code, Some(64), "{text}");
        assert!(text.contains("since rotated away"), "{text}");
        let renewed_statement = agency.dir.join("kiosk.accreditation.2");
        accredit(&renewed_statement);
        let (code, _) = kiosk_cli(reg, &agency.dir, "age-over-18", &[]);
        assert_eq!(code, 0);
        let (code, v, text) = tap("age-over-18", &renewed_statement);
        assert_eq!(code, Some(0), "{v} {text}");
        let after = governance_index(&agency.dir.join("card2.state"));
        assert!(
            after > before,
            "the card followed the rotation: {before} → {after}"
        );
        std::fs::rename(&renewed_statement, &statement_file).unwrap();
    }
    polling_stations(reg, &agency.dir, &agency.dir.join("card2.state"), name);
    // The new credential is the card's valid one.
    let (_, s, _) = issuer.cli(
        &agency.dir,
        &["status", "show", "--credential", &new_credential],
    );
    assert_eq!(s["wanted"], "valid");

    let (ok, _, text) = issuer.cli(
        &agency.dir,
        &[
            "status",
            "revoke",
            "--credential",
            &credential,
            "--request-key",
            "rv-1",
        ],
    );
    assert!(ok, "{text}");
    wait_revoked_on_chain(&issuer, &agency, &credential);
    let v = kiosk_verdict(reg, &state, genesis, &agency.dir);
    assert!(matches!(v, Verdict::Reject(_)), "{v:?}");
    let (code, v) = kiosk_cli(reg, &agency.dir, "age-over-18", &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["reason"], "credential revoked", "{v}");

    // The audit trail has the whole story, by the operator token's id.
    let (ok, _, lines) = issuer.cli(&agency.dir, &["audit"]);
    assert!(ok, "{lines}");
    for action in [
        "\"enroll\"",
        "\"personalize\"",
        "\"mint\"",
        "\"issue\"",
        "\"status\"",
        "\"renewal\"",
        "\"renew\"",
    ] {
        assert!(lines.contains(action), "{action}: {lines}");
    }

    // Nothing personal or secret in any log line.
    issuer.stop();
    let log = issuer.log_text();
    assert!(log.contains("issuer listening"), "{log}");
    let mut secrets = vec![
        "Jansen".to_owned(),
        "Mira".to_owned(),
        "1990-04-12".to_owned(),
        "246810".to_owned(),
        "1357913579".to_owned(),
        "CIV-000042".to_owned(),
    ];
    if agency.hsm.is_none() {
        let jwk: Value =
            serde_json::from_str(&std::fs::read_to_string(agency.dir.join("agency.jwk")).unwrap())
                .unwrap();
        secrets.push(jwk["d"].as_str().unwrap().to_owned());
    }
    for secret in &secrets {
        assert!(!log.contains(secret), "the log holds {secret:?}");
    }
    let token = std::fs::read_to_string(agency.dir.join("operator.token")).unwrap();
    let (_, secret) = token.trim().split_once('.').unwrap();
    assert!(!log.contains(secret), "the log holds the token");
    let _ = std::fs::remove_dir_all(&agency.dir);
}

#[test]
fn enroll_personalize_verify_revoke_on_sqlite_and_postgres() {
    let _slot = slot();
    let mut reg = Cluster::init("issuer-e2e", 1, 18200);
    reg.start(0, None);
    let genesis =
        Genesis::from_json(&std::fs::read_to_string(reg.dir.join("genesis.json")).unwrap())
            .unwrap();
    whole_flow(&reg, &genesis, "sqlite-agency", 18281, None, None);
    if let Ok(admin) = std::env::var("CIVIS_TEST_POSTGRES_URL") {
        let db = fresh_postgres(&admin, &format!("issuer_e2e_{}", std::process::id()));
        // On PostgreSQL the agency's keys live on the SoftHSM2 token (when the test script set
        // one up): init, minting, renewal and rotation all go through PKCS#11.
        whole_flow(
            &reg,
            &genesis,
            "postgres-agency",
            18282,
            Some(db),
            softhsm(),
        );
    }
}

#[test]
fn a_personalization_killed_at_each_crash_point_resumes_to_one_credential() {
    let _slot = slot();
    let mut reg = Cluster::init("issuer-crash", 1, 18400);
    reg.start(0, None);
    let agency = init_agency(&reg, "crash-agency", 18481, None, None);
    let mut issuer = Issuer::start(&agency.dir, agency.port, None);
    register(&reg, &agency);
    let resident = enroll(&issuer, &agency);
    issuer.stop();
    for point in ["after-index", "after-sign", "after-write", "before-lock"] {
        let mut card = VirtualCard::start(&agency.dir.join(format!("{point}.state")));
        let mut crashing = Issuer::start(&agency.dir, agency.port, Some(point));
        let key = format!("perso-{point}");
        let (ok, _, text) = personalize(&crashing, &agency, &resident, &key);
        assert!(!ok, "{point}: the crash point was not reached: {text}");
        assert!(
            crashing.exited(Duration::from_secs(10)),
            "{point}: still running"
        );
        assert!(
            crashing.log_text().contains("crash test: aborting"),
            "{point}"
        );
        drop(crashing);
        let again = Issuer::start(&agency.dir, agency.port, None);
        let (ok, step, text) = personalize(&again, &agency, &resident, &key);
        assert!(ok && step["done"] == true, "{point}: {text}");
        assert!(card.state().locked, "{point}");
        // Exactly one credential minted and issued for this personalization.
        let (ok, _, lines) = again.cli(&agency.dir, &["audit", "--limit", "1000"]);
        assert!(ok);
        let count = |action: &str| {
            lines
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|e| e["requestKey"] == key.as_str() && e["action"] == action)
                .count()
        };
        assert_eq!((count("mint"), count("issue")), (1, 1), "{point}: {lines}");
    }

    // The four cards share the batch: suspending it flips all their credentials to suspended
    // on chain in one step (one transaction, one height), and a kiosk rejects every card.
    let issuer = Issuer::start(&agency.dir, agency.port, None);
    let suspend = [
        "status",
        "suspend-batch",
        "--batch",
        "dev",
        "--request-key",
        "batch-1",
    ];
    let (ok, answer, text) = issuer.cli(&agency.dir, &suspend);
    assert!(ok && answer["credentials"] == 4, "{text}");
    let (_, _, lines) = issuer.cli(&agency.dir, &["audit", "--limit", "1000"]);
    let issued: Vec<String> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["action"] == "issue")
        .map(|e| e["object"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(issued.len(), 4, "{lines}");
    let mut heights = std::collections::BTreeSet::new();
    for id in &issued {
        wait_until(
            "the batch suspension anchored",
            Duration::from_secs(60),
            || {
                let (_, s, _) = issuer.cli(&agency.dir, &["status", "show", "--credential", id]);
                let done = s["pending"].as_array().is_some_and(Vec::is_empty)
                    && s["anchored"]["value"] == "suspended";
                if done {
                    heights.insert(s["anchored"]["height"].as_u64().unwrap());
                }
                done
            },
        );
    }
    assert_eq!(heights.len(), 1, "one step: {heights:?}");
    let genesis =
        Genesis::from_json(&std::fs::read_to_string(reg.dir.join("genesis.json")).unwrap())
            .unwrap();
    for point in ["after-index", "after-sign", "after-write", "before-lock"] {
        let state = std::fs::read(agency.dir.join(format!("{point}.state"))).unwrap();
        let state = CardState::decode(&state).unwrap();
        let v = kiosk_verdict(&reg, &state, &genesis, &agency.dir);
        assert!(matches!(v, Verdict::Reject(_)), "{point}: {v:?}");
    }
    let _ = std::fs::remove_dir_all(&agency.dir);
}

/// A fresh credential minted through the API for a new device key, with the key URL it names;
/// `None` while the service refuses (a rotation under way answers 503).
fn mint_kid(issuer: &Issuer, agency: &Agency, resident: &str, key: &str) -> Option<String> {
    let token = std::fs::read_to_string(agency.dir.join("operator.token")).unwrap();
    let client = civis_issuer::client::IssuerClient::new(&issuer.url, &token).unwrap();
    let device = SoftwareKey::generate(&mut OsRng);
    let req = civis_core::issuer_api::MintRequest {
        request_key: key.to_owned(),
        resident: resident.to_owned(),
        device_key: device.public_key().uncompressed().to_vec(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = match rt.block_on(client.mint(&req)) {
        Ok(a) => a,
        Err(civis_issuer::Error::Remote { status: 503, .. }) => return None,
        Err(e) => panic!("{e}"),
    };
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(answer.issuer_signed.unwrap())
        .unwrap();
    let stored = civis_wallet_core::holder::StoredCredential::from_bytes(&bytes).unwrap();
    let kid = &stored
        .issuer_signed
        .issuer_auth
        .cose
        .protected
        .header
        .key_id;
    Some(String::from_utf8_lossy(kid).into_owned())
}

#[test]
fn a_rotation_killed_before_or_after_its_transaction_finishes_once_on_restart() {
    let mut reg = Cluster::init("issuer-rotate", 1, 18600);
    reg.start(0, None);
    let mut flavours = vec![None];
    flavours.extend(softhsm().map(Some));
    let mut port = 18681;
    for hsm in flavours {
        for point in ["before-rotate-tx", "after-rotate-tx"] {
            port += 1;
            let pkcs11 = hsm.is_some();
            let name = format!("rot-{}-{point}", if pkcs11 { "hsm" } else { "file" });
            let agency = init_agency(&reg, &name, port, None, hsm.clone());
            let issuer = Issuer::start(&agency.dir, port, None);
            register(&reg, &agency);
            let resident = enroll(&issuer, &agency);
            drop(issuer);

            let mut crashing = Issuer::start(&agency.dir, port, Some(point));
            let (ok, _, text) = crashing.cli(&agency.dir, &["rotate-key"]);
            assert!(!ok, "{name}: the crash point was not reached: {text}");
            assert!(crashing.exited(Duration::from_secs(30)), "{name}");
            drop(crashing);

            // Restarted, the service signs nothing until the anchoring worker has finished the
            // rotation, then signs with key 2: one rotation, never a second.
            let again = Issuer::start(&agency.dir, port, None);
            let mut n = 0;
            let mut kid = None;
            wait_until("the rotation finished", Duration::from_secs(60), || {
                n += 1;
                kid = mint_kid(&again, &agency, &resident, &format!("m{n}"));
                kid.is_some()
            });
            assert_eq!(kid.unwrap(), format!("{}#key-2", agency.did), "{name}");
            let out = civis(&["registry", "resolve", "--node", &reg.url(0), &agency.did]);
            let doc = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && doc.contains("#key-2"),
                "{name}: {doc}"
            );
            assert!(!doc.contains("#key-3"), "{name}: {doc}");
            if let Some((module, token, pin, label)) = &agency.hsm {
                let keys = civis_issuer::hsm::keys(module.as_ref(), token, pin, label).unwrap();
                let numbers: Vec<u32> = keys.iter().map(|(n, _)| *n).collect();
                assert_eq!(numbers, [2, 3], "{name}");
            } else {
                assert!(!agency.dir.join("agency.after.jwk").exists(), "{name}");
            }
            let audit = again.cli(&agency.dir, &["audit"]).2;
            assert_eq!(
                audit.matches("\"rotate-key\"").count(),
                1,
                "{name}: {audit}"
            );
            drop(again);
            let _ = std::fs::remove_dir_all(&agency.dir);
        }
    }
}
