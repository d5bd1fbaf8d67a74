//! Tap to verdict with the citizen card.
//!
//! `cargo bench -p civis --features nfc --bench card_tap` (pcscd with vsmartcard-vpcd running;
//! `CIVIS_BENCH_TAPS`, default 100):
//! 1. through the real stack — `nfc1` → libnfc's PC/SC driver → pcscd → vpcd → a release
//!    `civis card serve` process: libnfc opens the reader and selects the card, the kiosk reads
//!    the handover, runs an mdoc session with ReaderAuth for four elements and verifies the
//!    DeviceResponse with core;
//! 2. the same code path on a modeled real tap: the applet in process behind a transport that
//!    adds link setup (30–50 ms), 424 kbit/s transfer, 1 ms per exchange and the secure
//!    element's ECDSA signature (24–60 ms);
//! 3. the bytes the applet stores per citizen credential (no portrait).
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
use civis_firmware_bridge::CardTransport;
use civis_firmware_bridge::nfc::{self, NfcTransport};
use civis_firmware_bridge::reader::{CardClient, LinkStats};
use civis_firmware_bridge::transport::{InProcess, ModeledLink};
use civis_wallet_core::applet::CardState;
use common::*;
use rand_core::{OsRng, RngCore};

const READER: &str = "Virtual PCD 00 00";
const ELEMENTS: &[&str] = &[
    "age_over_18",
    "resident_city",
    "family_name",
    "document_number",
];

/// One tap: engagement, session, request, verification. Returns the link figures.
fn tap<T: CardTransport>(client: &mut CardClient<T>, world: &World) -> LinkStats {
    let (_, response, transcript, request) = read(client, world, ELEMENTS, Some(PIN), true);
    let docs = world.verify(&response, &transcript, &request).unwrap();
    assert_eq!(
        disclosed(&docs[0]).len(),
        4,
        "verdict: not every element released"
    );
    client.take_stats()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(what: &str, mut times: Vec<Duration>, stats: LinkStats) {
    times.sort();
    println!(
        "{what}: {} taps; p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms; per tap {} APDUs, {} bytes out, {} bytes in",
        times.len(),
        percentile(&times, 0.50).as_secs_f64() * 1e3,
        percentile(&times, 0.95).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3,
        stats.apdus,
        stats.bytes_out,
        stats.bytes_in,
    );
}

fn main() {
    let taps: usize = std::env::var("CIVIS_BENCH_TAPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let world = World::new();

    // 3. Storage per credential.
    let sample = civis_core::crypto::SoftwareKey::generate(&mut OsRng);
    let credential = world.credential(sample.public_key());
    println!(
        "stored citizen credential (IssuerSigned, all elements but the portrait): {} bytes",
        credential.len()
    );

    // 2. Modeled real tap, in process.
    let mut state_card = CardClient::new(InProcess::new(CardState::blank(
        [5; 16],
        TransportKey([0x42; 32]),
    )));
    world.personalize(&mut state_card);
    let state = state_card.transport().state().clone();
    println!(
        "whole card state with one credential: {} bytes",
        state.encode().len()
    );
    let mut times = Vec::new();
    let mut stats = LinkStats::default();
    let mut r = [0u8; 2];
    for _ in 0..taps {
        OsRng.fill_bytes(&mut r);
        let setup = Duration::from_millis(30 + u64::from(r[0]) % 21);
        let sign = Duration::from_millis(24 + u64::from(r[1]) % 37);
        let start = Instant::now();
        let mut client =
            CardClient::new(ModeledLink::new(InProcess::new(state.clone()), setup, sign));
        stats = tap(&mut client, &world);
        times.push(start.elapsed());
    }
    report(
        "modeled tap (setup 30-50 ms, 424 kbit/s, sign 24-60 ms)",
        times,
        stats,
    );

    // 1. Through pcscd + vpcd.
    if !nfc::list_readers()
        .map(|r| r.iter().any(|n| n.ends_with(READER)))
        .unwrap_or(false)
    {
        eprintln!("no {READER:?}: start pcscd with vsmartcard-vpcd for the real-stack figures");
        return;
    }
    let dir = std::env::temp_dir().join(format!("civis-tap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
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
        stats = tap(&mut client, &world);
        times.push(start.elapsed());
    }
    report(
        "real stack (nfc1 -> libnfc pcsc -> pcscd -> vpcd -> civis card serve)",
        times,
        stats,
    );
    let _ = host.kill();
    let _ = host.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
