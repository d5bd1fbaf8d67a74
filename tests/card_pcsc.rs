//! The citizen card through the real reader stack: `nfc1` → libnfc's PC/SC driver → pcscd →
//! vpcd → `civis card serve` (a separate process). Needs pcscd running with the vpcd reader
//! (`scripts/test.sh` installs and starts it); the tests share vpcd's first slot, so they run
//! one at a time.
#![cfg(feature = "nfc")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "../firmware-bridge/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use civis_core::apdu::{Command as Apdu, StatusWord};
use civis_core::card::{self, TransportKey};
use civis_firmware_bridge::Error;
use civis_firmware_bridge::nfc::{self, NfcTransport};
use civis_firmware_bridge::reader::{CardClient, MdocSession, Personalizer};
use civis_firmware_bridge::virtual_card;
use civis_wallet_core::applet::CardState;
use civis_wallet_core::holder::codes;
use common::*;
use rand_core::{OsRng, RngCore};

const READER: &str = "Virtual PCD 00 00";

/// vpcd has one slot for these tests: one card process at a time.
static SLOT: Mutex<()> = Mutex::new(());

/// A `civis card serve` process, killed on drop.
struct VirtualCard {
    child: Option<Child>,
    state: PathBuf,
}

impl VirtualCard {
    fn start(state: &Path) -> Self {
        let reachable = nfc::list_readers()
            .map(|r| r.iter().any(|n| n.ends_with(READER)))
            .unwrap_or(false);
        assert!(
            reachable,
            "no PC/SC reader {READER:?}: start pcscd with vsmartcard-vpcd (scripts/test.sh does)"
        );
        // The previous card's removal must be seen before the next insertion.
        let deadline = Instant::now() + Duration::from_secs(10);
        while nfc::card_present(READER).unwrap_or(false) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let key = state.with_extension("transport");
        std::fs::write(&key, hex::encode([0x42u8; 32])).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_civis"))
            .args(["card", "serve", "--state"])
            .arg(state)
            .arg("--transport-key")
            .arg(&key)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(state.with_extension("log"))
                    .unwrap(),
            ))
            .spawn()
            .unwrap();
        // Owned before waiting, so a failed wait still kills the process.
        let card = Self {
            child: Some(child),
            state: state.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !nfc::card_present(READER).unwrap_or(false) {
            assert!(
                Instant::now() < deadline,
                "the virtual card never appeared (reader state {:?}): {}",
                nfc::reader_state(READER),
                std::fs::read_to_string(state.with_extension("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        card
    }

    /// SIGKILL, as a pulled card or a crashed host would end it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn state(&self) -> CardState {
        CardState::decode(&std::fs::read(&self.state).unwrap()).unwrap()
    }
}

impl Drop for VirtualCard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("civis-pcsc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One tap: libnfc opens the reader and selects the card (resetting it).
fn tap() -> CardClient<NfcTransport> {
    CardClient::new(NfcTransport::open(READER, Duration::from_secs(10)).unwrap())
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SLOT.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn personalize_read_pin_and_internal_authenticate_through_pcscd() {
    let _slot = lock();
    let dir = temp_dir("flow");
    let world = World::new();
    let card = VirtualCard::start(&dir.join("card.state"));
    let key = {
        let mut client = tap();
        // Personalization without the batch transport key is refused.
        let mut wrong = Personalizer::start(&mut client, TransportKey([0x43; 32])).unwrap();
        assert!(matches!(
            wrong.generate_key(),
            Err(Error::Status {
                status: StatusWord::SecurityStatusNotSatisfied,
                ..
            })
        ));
        world.personalize(&mut client)
    };
    let stored = card.state();
    assert!(stored.locked, "the state file holds the personalized card");
    assert_eq!(stored.public_key(), Some(&key));

    // A kiosk reads with ReaderAuth: accredited elements only, the PIN element after the PIN.
    let mut client = tap();
    check_accredited_read_then_pin(&mut client, &world);

    // INTERNAL AUTHENTICATE under the key the credential binds: a locked card answers it only
    // inside a session whose reader proved an accreditation (its signatures would identify it).
    let mut challenge = [0u8; 16];
    OsRng.fill_bytes(&mut challenge);
    assert!(matches!(
        client.internal_authenticate(&challenge),
        Err(Error::Status {
            status: StatusWord::SecurityStatusNotSatisfied,
            ..
        })
    ));
    drop(client);
    let mut client = tap();
    let (mut session, _, _, _) = read(&mut client, &world, &["age_over_18"], None, true);
    let sig = session
        .authenticate_card(&mut client, &challenge)
        .unwrap()
        .unwrap();
    card::verify_internal_authenticate(&key, &challenge, &sig).unwrap();
    session.end(&mut client).unwrap();

    // PUT CREDENTIAL after LOCK is refused.
    let mut p = Personalizer::start(&mut client, world.transport.clone()).unwrap();
    assert!(matches!(
        p.put_credential(1, &world.credential(&key)),
        Err(Error::Status {
            status: StatusWord::ConditionsNotSatisfied,
            ..
        })
    ));
    drop(client);

    // Without ReaderAuth: nothing.
    let mut client = tap();
    let (_, response, _, _) = read(&mut client, &world, &["age_over_18"], None, false);
    assert_eq!(
        document_error(&response, civis_core::mdoc::citizen::DOC_TYPE),
        Some(codes::READER_NOT_AUTHENTICATED)
    );
    drop(client);

    // Three wrong PINs block it; `civis card info` with the batch's transport key shows it
    // (without the key a locked card shows only that it is locked).
    let transport_key_file = dir.join("batch.key");
    std::fs::write(&transport_key_file, hex::encode(world.transport.0)).unwrap();
    for _ in 0..3 {
        let mut client = tap();
        read(
            &mut client,
            &world,
            &["document_number"],
            Some("999999"),
            true,
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_civis"))
        .args(["card", "info", "--reader", READER, "--transport-key"])
        .arg(&transport_key_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["pinTriesLeft"], 0);
    assert_eq!(info["state"], "locked");
    assert_eq!(info["publicKey"], hex::encode(key.uncompressed()));
    let out = Command::new(env!("CARGO_BIN_EXE_civis"))
        .args(["card", "info", "--reader", READER])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["state"], "locked");
    assert_eq!(info["sealed"], true);
    assert!(
        info.get("serial").is_none() && info.get("publicKey").is_none(),
        "{info}"
    );
    let mut client = tap();
    let (_, response, transcript, request) =
        read(&mut client, &world, &["document_number"], Some(PIN), true);
    let docs = world.verify(&response, &transcript, &request).unwrap();
    assert_eq!(
        withheld(&docs[0], "document_number"),
        Some(codes::PIN_BLOCKED)
    );
    drop(client);

    // At the counter: `civis card unblock-pin` with the counter's accredited key. A wrong PUK
    // is counted; the right one sets a new PIN, which then releases the element.
    let dir = temp_dir("unblock");
    let key_file = dir.join("counter.jwk");
    civis_registry_client::keyfile::write_key(&key_file, &world.kiosk, None).unwrap();
    std::fs::write(dir.join("accreditation.cose"), &world.statement).unwrap();
    std::fs::write(dir.join("new.pin"), "864200\n").unwrap();
    let unblock = |puk: &str| {
        std::fs::write(dir.join("puk"), format!("{puk}\n")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_civis"))
            .args(["card", "unblock-pin", "--reader", READER, "--reader-key"])
            .arg(&key_file)
            .arg("--accreditation")
            .arg(dir.join("accreditation.cose"))
            .arg("--puk-file")
            .arg(dir.join("puk"))
            .arg("--new-pin-file")
            .arg(dir.join("new.pin"))
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (out.status.success(), json)
    };
    let (ok, answer) = unblock("0000000000");
    assert!(!ok);
    assert_eq!(answer["result"], "wrong");
    assert_eq!(answer["triesLeft"], u64::from(card::PUK_TRIES) - 1);
    let (ok, answer) = unblock(PUK);
    assert!(ok, "{answer}");
    assert_eq!(
        (answer["result"].as_str(), answer["triesLeft"].as_u64()),
        (Some("ok"), Some(3))
    );
    let mut client = tap();
    let (_, response, transcript, request) = read(
        &mut client,
        &world,
        &["document_number"],
        Some("864200"),
        true,
    );
    let docs = world.verify(&response, &transcript, &request).unwrap();
    assert!(disclosed(&docs[0]).contains(&"document_number".to_owned()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_old_sessions_envelope_is_refused_on_the_next_tap() {
    let _slot = lock();
    let dir = temp_dir("replay");
    let world = World::new();
    let _card = VirtualCard::start(&dir.join("card.state"));
    world.personalize(&mut tap());
    // Record the session establishment of one tap …
    let mut client = tap();
    let engaged = client.read_engagement().unwrap();
    let (mut session, e_reader, e_reader_bytes) = MdocSession::start(&engaged, &mut OsRng);
    let request = world.request(session.transcript(), &["age_over_18"], None, true);
    let answer = session
        .establish(&mut client, e_reader.public_key(), e_reader_bytes, &request)
        .unwrap();
    assert!(!answer.is_empty());
    drop(client);
    // … and replay it on the next: it was encrypted for another engagement key.
    let mut client = tap();
    let next = client.read_engagement().unwrap();
    assert_ne!(
        next.device_engagement_bytes,
        engaged.device_engagement_bytes
    );
    let (mut replay, _, _) = MdocSession::start(&engaged, &mut OsRng);
    let result = replay.establish(
        &mut client,
        e_reader.public_key(),
        civis_core::cbor::encode(&civis_core::cose::cose_key_value(e_reader.public_key())),
        &request,
    );
    assert!(
        matches!(result, Err(Error::SessionStatus(10))),
        "replay accepted: {result:?}"
    );
}

#[test]
fn a_clone_with_another_key_fails_device_authentication() {
    let _slot = lock();
    let dir = temp_dir("clone");
    let world = World::new();
    let genuine_state = dir.join("genuine.state");
    let key = {
        let _card = VirtualCard::start(&genuine_state);
        world.personalize(&mut tap())
    };
    // The cloner's card: its own key, the genuine card's credential copied into its memory.
    let clone_state = dir.join("clone.state");
    {
        let _card = VirtualCard::start(&clone_state);
        let mut client = tap();
        let mut p = Personalizer::start(&mut client, TransportKey([0x42; 32])).unwrap();
        p.generate_key().unwrap();
    }
    let genuine = CardState::decode(&std::fs::read(&genuine_state).unwrap()).unwrap();
    let mut clone = CardState::decode(&std::fs::read(&clone_state).unwrap()).unwrap();
    assert_ne!(clone.public_key(), Some(&key));
    clone.credentials = genuine.credentials.clone();
    clone.governance = genuine.governance.clone();
    clone.pin = genuine.pin.clone();
    clone.puk = genuine.puk.clone();
    clone.locked = true;
    virtual_card::save(&clone_state, &clone).unwrap();
    let _card = VirtualCard::start(&clone_state);
    let mut client = tap();
    let (_, response, transcript, request) =
        read(&mut client, &world, &["age_over_18"], None, true);
    assert!(
        world.verify(&response, &transcript, &request).is_err(),
        "the clone passed device authentication"
    );
    // INTERNAL AUTHENTICATE, asked by an accredited reader in the session, tells it too.
    let mut challenge = [7u8; 16];
    OsRng.fill_bytes(&mut challenge);
    let mut client = tap();
    let (mut session, ..) = read(&mut client, &world, &["age_over_18"], None, true);
    let sig = session
        .authenticate_card(&mut client, &challenge)
        .unwrap()
        .unwrap();
    assert!(card::verify_internal_authenticate(&key, &challenge, &sig).is_err());
}

/// The chained PUT CREDENTIAL (≤ 255 bytes a command) for `credential`, MAC'd for the card's
/// current counter.
fn put_credential_chain(
    client: &mut CardClient<NfcTransport>,
    world: &World,
    credential: &[u8],
) -> Vec<Apdu> {
    let info = client.info_with(&world.transport).unwrap();
    let mac = world.transport.mac(
        &info.serial,
        info.perso_counter,
        [card::CLA_PERSO, card::ins::PUT_CREDENTIAL, 0, 0],
        credential,
    );
    let data = [credential, &mac].concat();
    civis_core::apdu::chain(
        card::CLA_PERSO,
        card::ins::PUT_CREDENTIAL,
        0,
        0,
        &data,
        255,
        Some(256),
    )
}

#[test]
fn a_write_cut_after_any_apdu_leaves_the_old_credential() {
    let _slot = lock();
    let dir = temp_dir("tear");
    let world = World::new();
    let state = dir.join("card.state");
    let card = VirtualCard::start(&state);
    let (key, old) = {
        let mut client = tap();
        let mut p = Personalizer::start(&mut client, world.transport.clone()).unwrap();
        let key = p.generate_key().unwrap();
        let old = world.credential(&key);
        p.put_credential(0, &old).unwrap();
        (key, old)
    };
    let new = world.credential(&key);
    // Cut the link (a new tap resets the card) after every APDU of the chain.
    let chain = {
        let mut client = tap();
        put_credential_chain(&mut client, &world, &new)
    };
    assert!(chain.len() > 5);
    for cut in 0..chain.len() - 1 {
        let mut client = tap();
        client.select(card::AID_CIVIS).unwrap();
        for cmd in &chain[..=cut] {
            assert_eq!(client.send(cmd).unwrap().sw, StatusWord::Ok);
        }
        drop(client);
        assert_eq!(
            card.state().credentials[0].as_deref(),
            Some(old.as_slice()),
            "cut after APDU {cut}"
        );
    }
    // Killing the host during its state write is tested in tests/card_host.rs, against a
    // vpcd stand-in: a card that dies mid-APDU here leaves pcscd 1.9.9's vpcd reader without
    // presence polling (no card seen again until pcscd restarts), which would only test pcscd.
    drop(card);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_transport_error_is_reported_not_hidden() {
    let _slot = lock();
    // No card in the reader: opening fails with a clear link error after the wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    while nfc::card_present(READER).unwrap_or(false) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let err = NfcTransport::open(READER, Duration::from_millis(300))
        .err()
        .expect("opened a reader without a card");
    assert!(matches!(err, Error::Link(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A card taken away and put back while a kiosk was busy with the first read is a new tap:
/// pcscd's event count moved, though the reader shows "present" both times. The kiosk's
/// one-verdict-per-tap wait (`wait_card_change`) ends for it, and not for the card that stayed.
#[test]
fn a_card_put_back_is_told_from_one_that_stayed() {
    let _slot = lock();
    let dir = temp_dir("retap");
    let first = VirtualCard::start(&dir.join("card.state"));
    let seen = nfc::wait_card_event(READER, true, Duration::from_secs(10))
        .unwrap()
        .expect("the card is in the reader");
    // Reading it (libnfc connects, selects, and resets it on close) is not a card event …
    for _ in 0..2 {
        let mut client = tap();
        let _ = client.read_engagement();
    }
    // … so the same card lying on the reader shows no change, however long one waits.
    assert!(!nfc::wait_card_change(READER, seen, Duration::from_millis(300)).unwrap());
    drop(first);
    let _again = VirtualCard::start(&dir.join("card.state"));
    assert!(nfc::card_present(READER).unwrap());
    assert!(
        nfc::wait_card_change(READER, seen, Duration::ZERO).unwrap(),
        "a card put back looks like the one that stayed"
    );
    let now = nfc::wait_card_event(READER, true, Duration::ZERO)
        .unwrap()
        .unwrap();
    assert_ne!(now, seen);
    assert!(!nfc::wait_card_change(READER, now, Duration::from_millis(300)).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}
