//! A polling station's authentication: tap to pseudonym recorded.
//!
//! `cargo bench -p civis --features nfc --bench evote_tap` (pcscd with vsmartcard-vpcd running
//! for the real-stack figures; `CIVIS_BENCH_TAPS`, default 100). Each tap: the NDEF handover, an
//! mdoc session with the station's ReaderAuth asking for the eligibility elements, the VRF key
//! and the pseudonym with the PIN (two state commits on the card: the spent try, the try given
//! back), the card's ECDSA device signature and VRF proof; then the station verifies the
//! DeviceResponse with core, checks eligibility and the proof against the issuer-bound key, and
//! records the pseudonym in its SQLite ledger (a transaction with its commit).
//! 1. through the real stack: `nfc1` → libnfc's PC/SC driver → pcscd → vpcd → a release
//!    `civis card serve` process;
//! 2. the same path on a modeled real tap: link setup 30–50 ms, 424 kbit/s, 1 ms per exchange,
//!    the card's ECDSA 24–60 ms, and its VRF proof modeled as one more pair of P-256 scalar
//!    multiplications on the secure element (2 × 24–60 ms).
//!
//! The trust anchors are the issuer key itself (no chain snapshot): the chain lookups a kiosk
//! adds are in-memory tree reads, measured with the kiosk's other figures.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "../firmware-bridge/tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use civis_core::card::TransportKey;
use civis_core::crypto::SoftwareKey;
use civis_core::evote::{self, Election, Reauth};
use civis_firmware_bridge::CardTransport;
use civis_firmware_bridge::nfc::{self, NfcTransport};
use civis_firmware_bridge::reader::CardClient;
use civis_firmware_bridge::transport::{InProcess, ModeledLink};
use civis_verifier::ledger::Authentication;
use civis_verifier::store::KioskStore;
use civis_wallet_core::applet::CardState;
use common::*;
use rand_core::{OsRng, RngCore};

const READER: &str = "Virtual PCD 00 00";
const ELECTION: &str = "council-2027";

struct Station {
    key: SoftwareKey,
    statement: Vec<u8>,
    election: Election,
    store: KioskStore,
    rt: tokio::runtime::Runtime,
}

impl Station {
    /// One tap to a recorded pseudonym.
    fn tap<T: CardTransport>(&self, client: &mut CardClient<T>, world: &World, at: i64) {
        let (response, transcript, request) =
            evote_read(client, &self.key, &self.statement, ELECTION, Some(PIN));
        let docs = world.verify(&response, &transcript, &request).unwrap();
        let doc = &docs[0];
        assert!(self.election.open_at(NOW));
        self.election.eligible(doc).unwrap();
        let pseudonym = evote::pseudonym(doc, CHAIN, ELECTION).unwrap();
        self.rt
            .block_on(self.store.record_authentication(
                ELECTION,
                &Authentication {
                    pseudonym,
                    station: "bench".into(),
                    at,
                },
            ))
            .unwrap();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "{what}: {} taps; p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        times.len(),
        percentile(&times, 0.50).as_secs_f64() * 1e3,
        percentile(&times, 0.95).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3,
    );
}

fn main() {
    let taps: usize = std::env::var("CIVIS_BENCH_TAPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let world = World::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("civis-evote-tap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = rt
        .block_on(KioskStore::open(&dir.join("station.db")))
        .unwrap();
    let key = SoftwareKey::generate(&mut OsRng);
    let station = Station {
        statement: evote_statement(&world, &key, true),
        key,
        election: Election {
            id: ELECTION.into(),
            eligibility: vec![
                ("age_over_18".into(), ciborium::Value::Bool(true)),
                (
                    "resident_district".into(),
                    ciborium::Value::Array(vec![
                        ciborium::Value::Text("Harbour".into()),
                        ciborium::Value::Text("Old Town".into()),
                    ]),
                ),
            ],
            opens: NOW - 60,
            closes: NOW + 86_400,
            reauth: Reauth::Refuse,
        },
        store,
        rt,
    };

    let mut voter = CardClient::new(InProcess::new(CardState::blank(
        [6; 16],
        TransportKey([0x42; 32]),
    )));
    personalize_voter(&world, &mut voter);
    let state = voter.transport().state().clone();
    let mut at = 0;

    // 2. Modeled real tap, in process.
    let mut times = Vec::new();
    let mut r = [0u8; 3];
    for _ in 0..taps {
        OsRng.fill_bytes(&mut r);
        let setup = Duration::from_millis(30 + u64::from(r[0]) % 21);
        let ecdsa = Duration::from_millis(24 + u64::from(r[1]) % 37);
        let vrf = 2 * Duration::from_millis(24 + u64::from(r[2]) % 37);
        let start = Instant::now();
        let mut client = CardClient::new(ModeledLink::new(
            InProcess::new(state.clone()),
            setup,
            ecdsa + vrf,
        ));
        at += 1;
        station.tap(&mut client, &world, at);
        times.push(start.elapsed());
    }
    report(
        "modeled polling-station tap (setup 30-50 ms, 424 kbit/s, ECDSA 24-60 ms, VRF 2 x 24-60 ms)",
        times,
    );

    // 1. Through pcscd + vpcd.
    if !nfc::list_readers()
        .map(|r| r.iter().any(|n| n.ends_with(READER)))
        .unwrap_or(false)
    {
        eprintln!("no {READER:?}: start pcscd with vsmartcard-vpcd for the real-stack figures");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let state_file = dir.join("card.state");
    civis_firmware_bridge::virtual_card::save(&state_file, &state).unwrap();
    let mut host = Command::new(env!("CARGO_BIN_EXE_civis"))
        .args(["card", "serve", "--state"])
        .arg(&state_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !nfc::card_present(READER).unwrap_or(false) {
        assert!(Instant::now() < deadline, "the virtual card never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut times = Vec::new();
    for _ in 0..taps {
        let start = Instant::now();
        let mut client =
            CardClient::new(NfcTransport::open(READER, Duration::from_secs(5)).unwrap());
        at += 1;
        station.tap(&mut client, &world, at);
        times.push(start.elapsed());
    }
    report(
        "polling-station tap, real stack (nfc1 -> libnfc pcsc -> pcscd -> vpcd -> civis card serve)",
        times,
    );
    let _ = host.kill();
    let _ = host.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
