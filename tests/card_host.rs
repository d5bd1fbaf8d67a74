//! `civis card serve` killed while it stores the card's state: against a stand-in for vpcd
//! (same TCP framing), so the host process, its state file and real SIGKILLs are tested without
//! pcscd in the loop.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "../firmware-bridge/tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use civis_core::apdu::{Command as Apdu, Response, StatusWord};
use civis_core::card::{self, CardInfo, TransportKey};
use civis_wallet_core::applet::CardState;
use common::*;
use rand_core::{OsRng, RngCore};

/// The vpcd side of one card connection.
struct Vpcd {
    listener: TcpListener,
}

struct Link(TcpStream);

impl Link {
    fn send(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = (payload.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        self.0.write_all(&frame)
    }

    fn recv(&mut self) -> std::io::Result<Vec<u8>> {
        let mut len = [0u8; 2];
        self.0.read_exact(&mut len)?;
        let mut payload = vec![0u8; usize::from(u16::from_be_bytes(len))];
        self.0.read_exact(&mut payload)?;
        Ok(payload)
    }

    fn apdu(&mut self, cmd: &Apdu) -> std::io::Result<Response> {
        self.send(&cmd.encode().unwrap())?;
        Ok(Response::parse(&self.recv()?).unwrap())
    }
}

impl Vpcd {
    fn new() -> Self {
        Self {
            listener: TcpListener::bind("127.0.0.1:0").unwrap(),
        }
    }

    /// Start `civis card serve` against this stand-in and take its connection.
    fn insert(&self, state: &Path, crash_at: Option<&str>) -> (Child, Link) {
        let key = state.with_extension("transport");
        std::fs::write(&key, hex::encode([0x42u8; 32])).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_civis"));
        if let Some(p) = crash_at {
            cmd.env("CIVIS_CARD_CRASH_AT", p);
        }
        let child = cmd
            .args(["card", "serve", "--once", "--state"])
            .arg(state)
            .arg("--transport-key")
            .arg(&key)
            .arg("--vpcd")
            .arg(self.listener.local_addr().unwrap().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (stream, _) = self.listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut link = Link(stream);
        link.send(&[1]).unwrap();
        link.send(&[4]).unwrap();
        assert_eq!(link.recv().unwrap(), virtual_card_atr());
        (child, link)
    }
}

fn virtual_card_atr() -> Vec<u8> {
    civis_firmware_bridge::virtual_card::ATR.to_vec()
}

fn select_civis(link: &mut Link) {
    let r = link
        .apdu(&Apdu::new(0, 0xA4, 4, 0).with_data(card::AID_CIVIS))
        .unwrap();
    assert_eq!(r.sw, StatusWord::Ok);
}

fn info(link: &mut Link) -> std::io::Result<CardInfo> {
    let r = link.apdu(&Apdu::new(0x80, card::ins::GET_DATA, 0, 0).with_le(256))?;
    CardInfo::decode(&r.data).map_err(std::io::Error::other)
}

/// A MAC'd personalization command (chained at 255 bytes) for the card's current counter.
fn perso(link: &mut Link, ins: u8, p1: u8, p2: u8, body: &[u8]) -> std::io::Result<Response> {
    let i = info(link)?;
    let mac = TransportKey([0x42; 32]).mac(&i.serial, i.perso_counter, [0x84, ins, p1, p2], body);
    let data = [body, &mac].concat();
    let mut last = None;
    for cmd in civis_core::apdu::chain(0x84, ins, p1, p2, &data, 255, Some(256)) {
        last = Some(link.apdu(&cmd)?);
    }
    Ok(last.unwrap())
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("civis-host-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stored(state: &Path) -> CardState {
    CardState::decode(&std::fs::read(state).unwrap()).unwrap()
}

#[test]
fn a_host_killed_while_storing_keeps_the_old_or_the_new_credential() {
    let dir = temp_dir("kill");
    let state = dir.join("card.state");
    let vpcd = Vpcd::new();
    let world = World::new();
    // A card with a key and a first credential.
    let (mut child, mut link) = vpcd.insert(&state, None);
    select_civis(&mut link);
    let key = perso(&mut link, card::ins::GENERATE_KEY, 0, 0, &[])
        .unwrap()
        .data;
    // The card key and the VRF key made beside it (card-applet.md §4.4).
    let (key, _) = civis_firmware_bridge::reader::split_generated(&key).unwrap();
    let first = world.credential(&key);
    assert_eq!(
        perso(&mut link, card::ins::PUT_CREDENTIAL, 0, 0, &first)
            .unwrap()
            .sw,
        StatusWord::Ok
    );
    drop(link);
    child.wait().unwrap();
    let mut current = first;

    // Dying at each named point of the write.
    for point in ["mid-write", "before-rename", "before-answer"] {
        let next = world.credential(&key);
        let (mut child, mut link) = vpcd.insert(&state, Some(point));
        select_civis(&mut link);
        let answer = perso(&mut link, card::ins::PUT_CREDENTIAL, 0, 0, &next);
        assert!(answer.is_err(), "{point}: the host answered");
        assert!(!child.wait().unwrap().success());
        let slot = stored(&state).credentials[0].clone().unwrap();
        if point == "before-answer" {
            assert_eq!(slot, next, "{point}: stored, then lost");
            current = next;
        } else {
            assert_eq!(slot, current, "{point}: not the old credential");
        }
    }

    // Real SIGKILLs at random moments while credentials are written back to back.
    let candidates: Vec<Vec<u8>> = (0..2).map(|_| world.credential(&key)).collect();
    let mut kills_mid_write = 0;
    for round in 0..20u64 {
        let (mut child, mut link) = vpcd.insert(&state, None);
        select_civis(&mut link);
        let creds = candidates.clone();
        let writer = std::thread::spawn(move || {
            let mut n = 0usize;
            loop {
                if perso(&mut link, card::ins::PUT_CREDENTIAL, 0, 0, &creds[n % 2]).is_err() {
                    return n;
                }
                n += 1;
            }
        });
        let mut delay = [0u8; 1];
        OsRng.fill_bytes(&mut delay);
        std::thread::sleep(Duration::from_millis(20 + u64::from(delay[0]) % 80 + round));
        child.kill().unwrap();
        child.wait().unwrap();
        let writes = writer.join().unwrap();
        let after = CardState::decode(&std::fs::read(&state).unwrap())
            .unwrap_or_else(|e| panic!("round {round}: state does not decode: {e}"));
        let slot = after.credentials[0].clone().unwrap();
        assert!(
            candidates.contains(&slot) || slot == current,
            "round {round}: slot 0 is none of the written credentials after {writes} writes"
        );
        if state.with_file_name("card.state.tmp").exists() {
            kills_mid_write += 1;
        }
    }
    eprintln!("{kills_mid_write} of 20 kills left a temporary file behind");
    let _ = std::fs::remove_dir_all(&dir);
}
